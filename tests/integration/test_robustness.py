"""What a hospital network throws at a node: malformed datasets, broken
associations, kill -9 in the middle of a series, a full disk."""

import os
import re
import socket
import time
import warnings

import pydicom
import pytest

import vigil
from vigil import assert_stored_identical, storescu

MiB = 1024 * 1024


def _variant(src, dst, **changes):
    """A copy of src with attributes changed (value None: deleted)."""
    ds = pydicom.dcmread(str(src))
    ds.SOPInstanceUID = pydicom.uid.generate_uid(prefix=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, v in changes.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # pydicom: "Invalid value for UI"
        ds.save_as(str(dst), write_like_original=False)
    return dst, str(ds.SOPInstanceUID)


def _files_named(root, name):
    return [p for p in root.rglob(name)]


BAD_CASES = [
    ("missing_series_uid", {"SeriesInstanceUID": None}, "missing_uid"),
    ("missing_study_uid", {"StudyInstanceUID": None}, "missing_uid"),
    ("letters_in_uid", {"StudyInstanceUID": "1.2.3.abc"}, "invalid_uid"),
    ("dotdot_uid", {"SeriesInstanceUID": "../../../../vigil-escape"},
     "invalid_uid"),
    ("slash_uid", {"SeriesInstanceUID": "1.2/3.4"}, "invalid_uid"),
    ("long_uid", {"SeriesInstanceUID": "1." + "2" * 70}, "invalid_uid"),
]


@pytest.mark.parametrize("name,changes,label", BAD_CASES,
                         ids=[c[0] for c in BAD_CASES])
def test_malformed_dataset_refused(node, small_series, tmp_path, name,
                                   changes, label):
    node.start()
    s = small_series(slices=2, size=64)
    bad, bad_sop = _variant(s["files"][0], tmp_path / "bad.dcm", **changes)
    good = s["files"][1]
    # -nh: go on after a failed C-STORE; -d: print the response's
    # status and Error Comment.
    res = storescu(node.port, [bad, good], extra=["-nh", "-d"])
    rs = vigil.store_responses(res.output)
    assert [os.path.basename(f) for f, _ in rs] == ["bad.dcm",
                                                   os.path.basename(good)]
    assert rs[0][1] is not None and rs[0][1].startswith("Error"), res
    assert rs[1][1] == "Success", res
    status = _statuses(res.output)
    assert len(status) == 2 and 0xC000 <= status[0] <= 0xCFFF, status
    comment = re.search(r"\(0000,0902\) LO \[([^\]]+)\]", res.output)
    assert comment, "no Error Comment (0000,0902) in the response:\n%s" % res

    assert bad_sop not in node.instance_rows()
    assert _files_named(tmp_path, bad_sop + "*") == []
    assert _files_named(tmp_path.parent, "*vigil-escape*") == []
    assert len(node.stored_files()) == 1
    assert_stored_identical(node, [good])
    assert node.tmp_files() == []
    assert node.metric("vigil_store_failures_total", reason=label) == 1
    ok = vigil.echoscu(node.port)
    assert ok.returncode == 0 and vigil.assoc_accepted(ok), ok
    assert node.alive()


def _statuses(output):
    """The DIMSE status of each C-STORE-RSP in `storescu -d` output."""
    out = []
    in_rsp = False
    for line in output.splitlines():
        if "Message Type" in line:
            in_rsp = "C-STORE RSP" in line
        m = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", line)
        if in_rsp and m:
            out.append(int(m.group(1), 16))
            in_rsp = False
    return out


def test_broken_associations_do_not_hurt(started, small_series):
    n = started
    s = small_series(slices=5, size=64)
    # Half an A-ASSOCIATE-RQ: PDU type 1, length 0x00CD, then 20 bytes.
    half = bytes([1, 0, 0, 0, 0, 0xCD, 0, 1, 0, 0]) + b"VIGIL".ljust(16)
    payloads = [half, b"GET / HTTP/1.0\r\n\r\n", b"\xff" * 64, b""]
    for data in payloads:
        with socket.create_connection((vigil.HOST, n.port), 5) as c:
            if data:
                c.sendall(data)
    res = storescu(n.port, s["files"], timeout=60)
    assert res.returncode == 0, res
    assert len(vigil.acknowledged(res.output)) == 5, res
    assert_stored_identical(n, s["files"])
    ok = vigil.echoscu(n.port)
    assert ok.returncode == 0 and vigil.assoc_accepted(ok), ok
    assert n.alive()


def test_silent_peer_does_not_block_others(node):
    """A peer that connects and never sends its A-ASSOCIATE-RQ (a port
    scanner, a half-open connection) must not hold up other scanners
    until acse_timeout."""
    node.node["acse_timeout"] = 30
    node.start()
    silent = [socket.create_connection((vigil.HOST, node.port), 5)
              for _ in range(2)]
    try:
        t0 = time.monotonic()
        res = vigil.run_tool(["echoscu", "-v", "-aet", vigil.SOURCE_AET,
                              "-aec", vigil.NODE_AET, "-ta", "3", "-td",
                              "3", vigil.HOST, node.port], timeout=20)
        took = time.monotonic() - t0
        assert res.returncode == 0 and vigil.assoc_accepted(res), \
            "echo blocked by a silent peer (%.1fs):\n%s" % (took, res)
    finally:
        for c in silent:
            c.close()
    ok = vigil.echoscu(node.port)
    assert ok.returncode == 0 and vigil.assoc_accepted(ok), ok


def test_kill9_during_send(node, ct_series, tmp_path):
    node.start()
    files = ct_series["files"]
    by_sop = dict(zip(ct_series["sop_uids"], files))
    log = tmp_path / "storescu.log"
    scu = vigil.storescu_popen(node.port, files, log)
    try:
        node.wait_for(lambda: node.metric("vigil_instances_stored_total")
                      >= 100, timeout=120, interval=0.01,
                      what="100 instances stored")
        node.kill9()
        scu.wait(60)
    finally:
        if scu.poll() is None:
            scu.kill()
            scu.wait()
    out = log.read_text(errors="replace")
    acked = vigil.acknowledged(out)
    assert 100 <= len(acked) < 300, "kill came too late to test: %d\n%s" \
        % (len(acked), out[-2000:])

    node.start()
    assert node.tmp_files() == []
    assert_stored_identical(node, acked)
    rows = node.instance_rows()
    on_disk = node.stored_files()
    assert {p for _, p in rows.values()} == on_disk
    assert len(rows) == len(on_disk) >= len(acked)
    for sop, (_, rel) in rows.items():
        p = node.data / rel
        ds = pydicom.dcmread(str(p))                # complete and parseable
        assert str(ds.SOPInstanceUID) == sop
        assert len(ds.PixelData) == 512 * 512 * 2
        assert vigil.dataset_sha256(p) == vigil.dataset_sha256(by_sop[sop])
    sizes = node.query("SELECT path, size FROM instances")
    for rel, size in sizes:
        assert size in ((node.data / rel).stat().st_size,
                        len(vigil.dataset_bytes(node.data / rel))), rel

    # The scanner resends the whole series; the node ends with all of it.
    res = storescu(node.port, files, timeout=600)
    assert res.returncode == 0, res
    assert len(vigil.acknowledged(res.output)) == 300
    assert len(node.instance_rows()) == 300
    assert_stored_identical(node, files)


def _free_bytes(path):
    st = os.statvfs(str(path))
    return st.f_bavail * st.f_frsize


def test_disk_watermark(node, ct_series, tmp_path):
    node.data.mkdir(parents=True, exist_ok=True)
    free = _free_bytes(node.data)
    assert free > 2 * 1024 * MiB, "needs 2 GiB free"
    node.storage["min_free_disk"] = str(free - 400 * MiB)
    node.start()
    ok = vigil.echoscu(node.port)
    assert ok.returncode == 0 and vigil.assoc_accepted(ok), ok

    filler = node.data.parent / "filler.bin"
    log = tmp_path / "storescu.log"
    # An association in progress when the disk fills: the C-STOREs
    # after that are refused with 0xA700 (Out of Resources).
    scu = vigil.start_paused_send(node, ct_series["files"], log, after=10,
                                  extra=["-nh"])
    try:
        fd = os.open(str(filler), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, 800 * MiB)
        finally:
            os.close(fd)
        vigil.finish_paused(scu)
        out = log.read_text(errors="replace")
        rs = vigil.store_responses(out)
        assert len(rs) == 300, out[-3000:]
        refused = [i for i, (_, r) in enumerate(rs)
                   if r and "OutOfResources" in r.replace(" ", "")]
        assert refused, out[-3000:]
        assert all(r != "Success" for _, r in rs[refused[0]:]), \
            "accepted after the disk filled"
        acked = vigil.acknowledged(out)
        assert_stored_identical(node, acked)
        assert len(node.instance_rows()) == len(acked)
        assert node.metric("vigil_store_failures_total",
                           reason="out_of_resources") == 300 - len(acked)

        rej_before = node.metric("vigil_associations_rejected_total",
                                 reason="disk_low")
        res = vigil.echoscu(node.port)
        assert res.returncode != 0, res
        text = res.output.lower()
        assert "rejected transient" in text, res
        assert "temporary congestion" in text, res
        assert node.metric("vigil_associations_rejected_total",
                           reason="disk_low") == rej_before + 1
        assert any("reject" in line.lower() and vigil.HOST in line
                   and vigil.SOURCE_AET in line and vigil.NODE_AET in line
                   for line in node.log().splitlines()), node.log_tail()
    finally:
        if scu.poll() is None:
            scu.kill()
            scu.wait()
        if filler.exists():
            filler.unlink()

    def accepted():
        r = vigil.echoscu(node.port)
        return r.returncode == 0 and vigil.assoc_accepted(r)
    node.wait_for(accepted, timeout=10, interval=0.5,
                  what="echo accepted after the filler went")
    res = storescu(node.port, ct_series["files"][:3])
    assert res.returncode == 0, res
