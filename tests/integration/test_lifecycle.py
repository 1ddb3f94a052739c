"""The node's life: configuration reload on SIGHUP without dropping
associations, graceful exit on SIGTERM/SIGINT, a series re-opened by a
late instance."""

import signal
import time

import pytest

import vigil
from vigil import echoscu, series_entry, storescu


def _accepted(node, aet):
    r = echoscu(node.port, aet=aet)
    return r.returncode == 0 and vigil.assoc_accepted(r)


def test_sighup_adds_source_without_dropping(node, ct_series, tmp_path):
    node.start()
    pid = node.pid
    assert not _accepted(node, "NEWSRC")
    log = tmp_path / "storescu.log"
    scu = vigil.start_paused_send(node, ct_series["files"], log)
    try:
        node.aes["newsrc"] = {"ae_title": "NEWSRC", "host": vigil.HOST,
                              "role": "source"}
        node.write_config()
        node.sighup()
        node.wait_for(lambda: _accepted(node, "NEWSRC"), timeout=10,
                      interval=0.3, what="NEWSRC accepted after SIGHUP")
        assert node.pid == pid and node.alive()
        time.sleep(0.5)           # the paused association outlives reload
    finally:
        rc = vigil.finish_paused(scu)
    out = log.read_text(errors="replace")
    assert rc == 0, out[-3000:]
    assert len(vigil.acknowledged(out)) == 300, out[-3000:]
    vigil.assert_stored_identical(node, ct_series["files"])

    # Removing a source takes effect the same way.
    del node.aes["newsrc"]
    node.write_config()
    node.sighup()
    node.wait_for(lambda: not _accepted(node, "NEWSRC"), timeout=10,
                  interval=0.3, what="NEWSRC rejected after removal")
    assert _accepted(node, vigil.SOURCE_AET)
    assert node.pid == pid and node.alive()


def test_sighup_with_broken_config_keeps_running(node):
    node.start()
    pid = node.pid
    good = node.config_path.read_text()
    node.config_path.write_text(good + "\n[ae broken]\nrole = source\n")
    node.sighup()
    time.sleep(1.0)
    assert node.alive() and node.pid == pid, node.log_tail()
    assert _accepted(node, vigil.SOURCE_AET)


def _shutdown_timeout(node):
    return int(node.node.get("shutdown_timeout", 30))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_graceful_exit_idle(node, sig):
    node.node["shutdown_timeout"] = 5
    node.start()
    assert _accepted(node, vigil.SOURCE_AET)
    t0 = time.monotonic()
    node.signal(sig)
    rc = node.proc.wait(_shutdown_timeout(node) + 5)
    assert rc == 0, node.log_tail()
    assert time.monotonic() - t0 < 3, "idle node took long to exit"


def test_sigterm_with_stalled_association(node, ct_series, tmp_path):
    node.node["shutdown_timeout"] = 3
    node.start()
    scu = vigil.start_paused_send(node, ct_series["files"],
                             tmp_path / "storescu.log")
    try:
        t0 = time.monotonic()
        node.signal(signal.SIGTERM)
        rc = node.proc.wait(_shutdown_timeout(node) + 5)
        took = time.monotonic() - t0
    finally:
        vigil.finish_paused(scu, timeout=30)
    assert rc == 0, node.log_tail()
    assert took <= _shutdown_timeout(node) + 2, took
    node.proc = None
    out = (tmp_path / "storescu.log").read_text(errors="replace")
    node.start()
    vigil.assert_stored_identical(node, vigil.acknowledged(out))
    assert node.tmp_files() == []


def test_late_instance_reopens_series(node, small_series, tmp_path):
    node.add_ct_route("bone-ct", min_slices=20)
    # No model to run: job versions stay visible in the queue.
    node.model_manifest = tmp_path / "no-model" / "manifest.json"
    node.storage["series_quiet_seconds"] = 2
    node.storage["study_quiet_seconds"] = 3
    node.start()
    s = small_series(slices=25, size=128)
    res = storescu(node.port, s["files"])
    assert res.returncode == 0, res

    def series_state():
        return series_entry(node.study(s["study_uid"]), s["series_uid"])

    e = series_state()
    assert e["state"] == "receiving" and e["instances"] == 25, e
    node.wait_for(lambda: series_state()["state"] == "complete",
                  timeout=15, what="series complete")
    node.wait_for(lambda: [j for j in node.jobs()
                           if j["series_uid"] == s["series_uid"]],
                  timeout=10, what="job v1")
    jobs = [j for j in node.jobs() if j["series_uid"] == s["series_uid"]]
    assert [(j["version"], j["state"]) for j in jobs] == [(1, "queued")]
    assert series_state()["route_state"] == "queued"

    late = vigil.make_ct_series(tmp_path / "late", slices=1, size=128,
                                study_uid=s["study_uid"],
                                series_uid=s["series_uid"], first_index=25)
    res = storescu(node.port, late["files"])
    assert res.returncode == 0, res
    e = series_state()
    assert e["state"] == "receiving" and e["instances"] == 26, e
    assert node.study(s["study_uid"])["state"] == "receiving"
    node.wait_for(lambda: series_state()["state"] == "complete",
                  timeout=15, what="series complete again")

    def two_versions():
        js = sorted((j for j in node.jobs()
                     if j["series_uid"] == s["series_uid"]),
                    key=lambda j: j["version"])
        return js if len(js) == 2 and js[1]["state"] == "queued" else None
    jobs = node.wait_for(two_versions, timeout=10, what="job v2")
    assert [(j["version"], j["state"]) for j in jobs] == \
        [(1, "superseded"), (2, "queued")], jobs
    assert all(j["route"] == "bone-ct" and j["model"] == "bone"
               for j in jobs)
    assert jobs[0]["id"] != jobs[1]["id"]
