"""Analysis runs in separate processes: build/vigil links no model
runtime, spawns one build/vigil-worker per (model, device), shows each
worker's state in /healthz from the index, restarts a worker that dies
(its interrupted job counts as a failed attempt, nothing is lost) and
stops every worker when it stops."""

import json
import os
import signal
import subprocess
import time

import vigil
from vigil import echoscu, storescu

WORKER = vigil.REPO / "build" / "vigil-worker"


def _ldd(path):
    return subprocess.run(["ldd", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=True,
                          universal_newlines=True).stdout


def _procs():
    """{pid: (ppid, comm, state, argv)} of every process readable now."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = [a.decode(errors="replace")
                        for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        out[int(d)] = (int(rest[1]), comm, rest[0], argv)
    return out


def _workers_of(node):
    """{pid: argv} of the live vigil-worker children of the node."""
    return {pid: argv for pid, (ppid, comm, state, argv) in _procs().items()
            if ppid == node.pid and comm == "vigil-worker" and state != "Z"}


def _workers_for_config(config_path):
    """Every live vigil-worker running on CONFIG_PATH, whoever its parent."""
    return [pid for pid, (_, comm, state, argv) in _procs().items()
            if comm == "vigil-worker" and state != "Z"
            and str(config_path) in argv]


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def _bone(node):
    status, body = node.get("/healthz")
    assert status == 200, (status, body[:300])
    return json.loads(body)["models"]["bone"]


def _use_missing_manifest(node, missing):
    node.add_ct_route("bone-ct", min_slices=20)
    if hasattr(node, "model_manifest"):
        node.model_manifest = missing
        return
    text = node.config_text

    def with_model():
        return text() + "\n[model bone]\nmanifest = %s\n" % missing
    node.config_text = with_model


def test_node_links_no_model_runtime():
    assert vigil.VIGIL.exists() and WORKER.exists(), "run make"
    node_libs = _ldd(vigil.VIGIL)
    assert "libsqlite3" in node_libs, node_libs    # ldd did list libraries
    assert "torch" not in node_libs and "libc10" not in node_libs, node_libs


def test_worker_state_restart_and_stop(node, small_series, tmp_path):
    missing = tmp_path / "no-such-model" / "manifest.json"
    _use_missing_manifest(node, missing)
    node.start()

    # The worker reports why the model is unavailable; the node is healthy.
    def unavailable():
        m = _bone(node)
        d = m["devices"][0]
        return (not m["available"] and d["device"] == "cpu"
                and not d["available"] and str(missing) in d["error"]
                and m)
    m = node.wait_for(unavailable, timeout=20, what="bone unavailable")
    assert len(m["devices"]) == 1
    assert (m["devices"][0]["jobs_done"], m["devices"][0]["jobs_failed"]) \
        == (0, 0)

    workers = _workers_of(node)
    assert len(workers) == 1, workers
    first, argv = next(iter(workers.items()))
    assert argv[0] == str(WORKER), argv
    assert argv[argv.index("--model") + 1] == "bone"
    assert argv[argv.index("--device") + 1] == "cpu"
    # The receiver stays small; the runtime's memory is the worker's.
    assert _rss_kib(node.pid) < 100 * 1024, _rss_kib(node.pid)

    # A routed series gets a job that waits for the model: queued, never
    # leased, and the SIGUSR1 that announced it did not kill the worker.
    s = small_series(slices=25)
    r = storescu(node.port, s["files"])
    assert r.returncode == 0, r
    jobs = node.wait_for(lambda: node.jobs(), timeout=20, what="a job")
    assert len(jobs) == 1 and jobs[0]["series_uid"] == s["series_uid"]
    time.sleep(2.5)                   # longer than the worker's poll
    (job,) = node.jobs()
    assert (job["state"], job["attempts"]) == ("queued", 0), job
    assert set(_workers_of(node)) == {first}, node.log_tail()

    # The worker dies while it holds a job (as a crash inside the runtime
    # would): the node restarts it, and the job is an attempt that failed,
    # back in the queue, not lost and not failed for good.
    con = node.db()
    with con:
        con.execute("UPDATE jobs SET state = 'running', attempts = 1,"
                    " lease_owner = 'bone@cpu',"
                    " lease_until_ms = 99999999999999 WHERE id = ?",
                    (job["id"],))
    con.close()
    os.kill(first, signal.SIGKILL)
    down = node.wait_for(
        lambda: [d for d in _bone(node)["devices"]
                 if d.get("error") == "worker not running"],
        timeout=5, interval=0.05, what="worker shown not running")
    assert down[0]["available"] is False
    workers = node.wait_for(lambda: {p: a for p, a in _workers_of(node).items()
                                     if p != first},
                            timeout=10, interval=0.1, what="a new worker")
    assert len(workers) == 1 and first not in _workers_of(node), workers
    second = next(iter(workers))
    node.wait_for(lambda: str(missing) in _bone(node)["devices"][0]["error"],
                  timeout=20, what="the new worker's state")

    def requeued():
        (j,) = node.jobs()
        return j["state"] == "queued" and j
    j = node.wait_for(requeued, timeout=10, what="the job back in the queue")
    assert j["attempts"] == 1 and "died" in j["last_error"], j
    assert _bone(node)["devices"][0]["jobs_failed"] == 1
    assert "(pid %d) was killed by signal 9" % first in node.log()

    # The node kept serving throughout.
    assert node.alive()
    assert echoscu(node.port).returncode == 0
    assert node.get("/healthz")[0] == 200

    # SIGTERM to the node stops its workers too.
    assert node.stop() == 0
    assert _workers_for_config(node.config_path) == []
    assert "worker bone@cpu (pid %d) exited with status 0" % second \
        in node.log()


def test_worker_follows_a_killed_node(node, tmp_path):
    """A node that dies without stopping its workers (kill -9) does not
    leave them behind: they get SIGTERM from the kernel and exit."""
    _use_missing_manifest(node, tmp_path / "absent" / "manifest.json")
    node.start()
    pids = node.wait_for(lambda: list(_workers_of(node)), timeout=10,
                         what="a worker")
    node.kill9()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            _workers_for_config(node.config_path):
        time.sleep(0.1)
    assert _workers_for_config(node.config_path) == [], pids
