"""The outbox through the real binary: an entry for a PACS that is down
fails with a clear error and waits, a retry through the API sends it once
storescp is up (the data set arrives unchanged), a sent entry is never
sent again across a restart, and an entry left "sending" by a crash is
sent after the next start. Entries are put in the node's index directly,
as the analysis does when it stores a result."""

import json
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import vigil


def post(node, path):
    """(status, parsed JSON) of POST path."""
    req = urllib.request.Request("http://%s:%d%s" % (vigil.HOST, node.http_port, path),
                                 data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def queue_object(node, src, n):
    """Copies SRC into the node's data directory and queues it for [ae
    pacs]; returns the SOP Instance UID."""
    study, series, sop, _ = vigil.read_uids(src)
    rel = "results/%d.dcm" % n
    (node.data / "results").mkdir(exist_ok=True)
    shutil.copyfile(src, node.data / rel)
    now = int(time.time() * 1000)
    with sqlite3.connect(str(node.data / "index.sqlite"), timeout=10) as db:
        db.execute("INSERT INTO outbox(study_uid, series_uid, sop_uid, sop_class_uid, path,"
                   " destination, state, next_attempt_ms, created_ms)"
                   " VALUES(?, ?, ?, '1.2.840.10008.5.1.4.1.1.2', ?, 'pacs', 'queued', ?, ?)",
                   (study, series, sop, rel, now, now))
    return sop


class StoreSCP:
    """DCMTK's storescp on PORT, writing into DIR; stopped by PID."""

    def __init__(self, port, out, log):
        out.mkdir(exist_ok=True)
        self.out = out
        self.log_path = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                ["storescp", "-v", "+B", "-aet", "PACS", "-od", str(out), str(port)],
                env=vigil.DCMTK_ENV, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((vigil.HOST, port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("storescp did not listen")

    def received(self):
        return self.log_path.read_text(errors="replace").count("Received Store Request")

    def file_of(self, sop):
        found = [p for p in self.out.iterdir() if p.name.endswith("." + sop)]
        return found[0] if found else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def pacs_port():
    return vigil.free_port()


@pytest.fixture
def node_with_pacs(node, pacs_port):
    node.aes["pacs"] = {"ae_title": "PACS", "host": vigil.HOST, "port": pacs_port,
                        "role": "destination"}
    return node.start()


def entry(node, entry_id, state=None, tried=False):
    """Entry ENTRY_ID of GET /api/v1/outbox; None when it is absent, not
    in STATE, or (TRIED) not yet tried."""
    for e in node.get_json("/api/v1/outbox")["outbox"]:
        if e["id"] == entry_id and (state is None or e["state"] == state) \
                and (not tried or e["attempts"] >= 1):
            return e
    return None


def test_down_then_retry_then_never_again(node_with_pacs, pacs_port, small_series, tmp_path):
    node = node_with_pacs
    series = small_series(slices=1, size=32)
    src = series["files"][0]
    sop = queue_object(node, src, 1)

    # Nothing listens: one failed attempt, a clear error, a wait of 10 s.
    e = node.wait_for(lambda: entry(node, 1, tried=True), timeout=15, interval=0.2,
                      what="first attempt")
    assert e["state"] == "queued"
    assert "connection refused %s:%d" % (vigil.HOST, pacs_port) in e["last_error"]
    assert e["next_attempt"] is not None and e["sent"] is None
    assert e["sop_uid"] == sop and e["destination"] == "pacs"
    assert node.metric("vigil_outbox_failed_total") == 1
    assert node.metric("vigil_outbox", state="queued") == 1

    scp = StoreSCP(pacs_port, tmp_path / "pacs", tmp_path / "storescp.log")
    try:
        status, body = post(node, "/api/v1/outbox/1/retry")
        assert status == 200, body
        assert body["state"] == "queued" and body["attempts"] == 0
        # Woken by the retry: well before the 10 s backoff would end.
        e = node.wait_for(lambda: entry(node, 1, "sent"), timeout=5, interval=0.1,
                          what="sent after retry")
        assert e["sent"] is not None and e["last_error"] is None
        got = scp.file_of(sop)
        assert got is not None
        assert vigil.dataset_sha256(got) == vigil.dataset_sha256(src)
        assert node.metric("vigil_outbox_sent_total") == 1
        assert node.metric("vigil_outbox", state="sent") == 1
        assert "outbox 1: sent %s" % sop in node.log()

        status, body = post(node, "/api/v1/outbox/1/retry")
        assert status == 409 and body["error"] == "already sent"
        assert post(node, "/api/v1/outbox/77/retry")[0] == 404

        # A restart sends nothing again.
        node.restart()
        time.sleep(2.5)
        assert scp.received() == 1
        assert entry(node, 1, "sent") is not None
    finally:
        scp.stop()


def test_interrupted_send_goes_again_after_restart(node_with_pacs, pacs_port, small_series,
                                                   tmp_path):
    node = node_with_pacs
    scp = StoreSCP(pacs_port, tmp_path / "pacs", tmp_path / "storescp.log")
    try:
        node.stop()
        src = small_series(slices=1, size=32)["files"][0]
        sop = queue_object(node, src, 1)
        # As a crash during the C-STORE leaves it: taken, not acknowledged.
        with sqlite3.connect(str(node.data / "index.sqlite")) as db:
            db.execute("UPDATE outbox SET state = 'sending'")
        node.start()
        node.wait_for(lambda: entry(node, 1, "sent"), timeout=10, interval=0.1,
                      what="resent after restart")
        assert scp.file_of(sop) is not None
        assert scp.received() == 1
        assert "1 result object whose sending was interrupted will be sent again" in node.log()
        assert node.get_json("/api/v1/outbox?state=sent")["outbox"][0]["sop_uid"] == sop
        assert node.get_json("/api/v1/outbox?state=failed")["outbox"] == []
    finally:
        scp.stop()


def test_stop_abandons_a_stuck_send(node, pacs_port, small_series, tmp_path):
    """A PACS that never answers does not hold up a stop beyond
    shutdown_timeout; what was in flight goes again at the next start."""
    node.node["shutdown_timeout"] = 1
    node.aes["pacs"] = {"ae_title": "PACS", "host": vigil.HOST, "port": pacs_port,
                        "role": "destination"}
    node.start()
    log = tmp_path / "slow.log"
    with open(log, "wb") as f:
        slow = subprocess.Popen(["storescp", "-v", "--sleep-during", "60", "-od", str(tmp_path),
                                 str(pacs_port)], env=vigil.DCMTK_ENV, stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        node.wait_for(lambda: socket.create_connection((vigil.HOST, pacs_port), 0.2).close()
                      or True, timeout=10, what="storescp listening")
        src = small_series(slices=1, size=32)["files"][0]
        sop = queue_object(node, src, 1)
        node.wait_for(lambda: entry(node, 1, "sending"), timeout=10, interval=0.05,
                      what="send in flight")
        # "sending" is set when the entry is taken, before the association:
        # stop only once the C-STORE is on the wire (a stop before it is
        # a clean release, which another test covers).
        node.wait_for(lambda: "Received Store Request" in log.read_text(errors="replace"),
                      timeout=10, interval=0.05, what="C-STORE request at the PACS")
        t0 = time.monotonic()
        assert node.stop(timeout=15) == 0
        assert time.monotonic() - t0 < 6
        assert "a send was still running" in node.log()
    finally:
        slow.kill()
        slow.wait()
    with sqlite3.connect(str(node.data / "index.sqlite")) as db:
        assert db.execute("SELECT state FROM outbox").fetchone()[0] == "sending"
    scp = StoreSCP(pacs_port, tmp_path / "pacs", tmp_path / "storescp.log")
    try:
        node.start()
        node.wait_for(lambda: entry(node, 1, "sent"), timeout=10, interval=0.1,
                      what="sent after restart")
        assert scp.file_of(sop) is not None
    finally:
        scp.stop()
