"""Helpers for the integration tests: a Node that runs build/vigil on a
temporary configuration and data directory, DCMTK tool wrappers (always
with TCP_NODELAY=1: Debian's DCMTK leaves Nagle on), HTTP/metrics/SQLite
readers and DICOM file helpers. It starts and stops only its own
processes, by PID, and binds only 127.0.0.1.
"""

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VIGIL = REPO / "build" / "vigil"
HOST = "127.0.0.1"
NODE_AET = "VIGIL"
SOURCE_AET = "MODALITY1"          # the [ae modality1] source in every config

DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def load_script(name):
    """Imports scripts/NAME (a python file without .py suffix)."""
    path = str(REPO / "scripts" / name)
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"),
                                                  path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def load_module(filename):
    """Imports scripts/FILENAME (a .py module)."""
    path = str(REPO / "scripts" / filename)
    spec = importlib.util.spec_from_file_location(filename[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_ct = None


def make_ct_series(out, **kw):
    """scripts/make-ct-series' make_series(): dict with study_uid,
    series_uid, files, sop_uids."""
    global _ct
    if _ct is None:
        _ct = load_script("make-ct-series")
    return _ct.make_series(str(out), **kw)


# ---------------------------------------------------------------- DICOM


class ToolResult:
    def __init__(self, returncode, output):
        self.returncode = returncode
        self.output = output

    def __repr__(self):
        return "rc=%d\n%s" % (self.returncode, self.output[-4000:])


def run_tool(args, timeout=120):
    p = subprocess.run([str(a) for a in args], env=DCMTK_ENV,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return ToolResult(p.returncode, p.stdout.decode("utf-8", "replace"))


def echoscu(port, aet=SOURCE_AET, aec=NODE_AET, timeout=30, extra=()):
    return run_tool(["echoscu", "-v", "-aet", aet, "-aec", aec,
                     "-to", "10", "-ta", "10", *extra, HOST, port],
                    timeout=timeout)


def storescu_args(port, files, aet=SOURCE_AET, aec=NODE_AET, extra=()):
    return ["storescu", "-v", "-aet", aet, "-aec", aec, "-to", "20",
            "-ta", "20", "-td", "60", *extra, HOST, str(port),
            *[str(f) for f in files]]


def storescu(port, files, aet=SOURCE_AET, aec=NODE_AET, timeout=300,
             extra=()):
    return run_tool(storescu_args(port, files, aet, aec, extra),
                    timeout=timeout)


def storescu_popen(port, files, logfile, aet=SOURCE_AET, aec=NODE_AET,
                   extra=()):
    """Starts storescu in the background, output to logfile (a path)."""
    f = open(logfile, "wb")
    try:
        return subprocess.Popen(storescu_args(port, files, aet, aec, extra),
                                env=DCMTK_ENV, stdout=f,
                                stderr=subprocess.STDOUT)
    finally:
        f.close()


def start_paused_send(node, files, log, after=20, extra=()):
    """storescu sending FILES, stopped (SIGSTOP) once AFTER instances are
    stored, so that its association is certainly open. Resume it with
    finish_paused(), which returns its exit code."""
    scu = storescu_popen(node.port, files, log, extra=extra)
    try:
        node.wait_for(lambda: node.metric("vigil_instances_stored_total")
                      >= after, timeout=60, interval=0.01,
                      what="%d stored" % after)
    except BaseException:
        scu.kill()
        scu.wait()
        raise
    os.kill(scu.pid, signal.SIGSTOP)
    time.sleep(0.2)
    if scu.poll() is not None or \
            node.metric("vigil_instances_stored_total") >= len(files):
        finish_paused(scu)
        raise AssertionError("storescu finished before it could be paused")
    return scu


def finish_paused(scu, timeout=300):
    if scu.poll() is None:
        os.kill(scu.pid, signal.SIGCONT)
    try:
        return scu.wait(timeout)
    except Exception:
        scu.kill()
        scu.wait()
        raise


def store_responses(output):
    """[(file, response)] from `storescu -v` output, in order, where
    response is the text in "Received Store Response (...)" or None when
    the file was sent without a response."""
    out, cur = [], None
    for line in output.splitlines():
        m = re.search(r"Sending file: (.*)$", line)
        if m:
            if cur is not None:
                out.append((cur, None))
            cur = m.group(1).strip()
            continue
        m = re.search(r"Received Store Response(?: \((.*)\))?\s*$", line)
        if m and cur is not None:
            out.append((cur, m.group(1)))
            cur = None
            continue
        # With -d the response line is bare and the status comes in the
        # message dump: "DIMSE Status : 0xc000: Error: Cannot understand".
        m = re.search(r"DIMSE Status\s*:\s*0x[0-9a-fA-F]{4}: (.*)$", line)
        if m and out and out[-1][1] is None and cur is None:
            out[-1] = (out[-1][0], m.group(1).strip())
    if cur is not None:
        out.append((cur, None))
    return out


def acknowledged(output):
    """Files for which storescu saw a Success store response."""
    return [f for f, r in store_responses(output)
            if r is not None and r.startswith("Success")]


def assoc_accepted(res):
    return "Association Accepted" in res.output


def assoc_rejected(res):
    return "Association Rejected" in res.output


def dataset_offset(raw):
    """Offset of the dataset in the bytes of a DICOM file: after the
    preamble and the File Meta group, whose length (0002,0000) UL is the
    first element after "DICM". 0 for a file without a meta header."""
    if len(raw) < 144 or raw[128:132] != b"DICM":
        return 0
    tag, vr = raw[132:136], raw[136:138]
    if tag != b"\x02\x00\x00\x00" or vr != b"UL":
        raise ValueError("File Meta group does not start with (0002,0000)")
    glen = int.from_bytes(raw[140:144], "little")
    return 144 + glen


def dataset_bytes(path):
    raw = Path(path).read_bytes()
    return raw[dataset_offset(raw):]


def dataset_sha256(path):
    return hashlib.sha256(dataset_bytes(path)).hexdigest()


def read_uids(path):
    """(study, series, sop, transfer syntax) of a DICOM file."""
    import pydicom
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID))


# ----------------------------------------------------------------- Node


def _ini(sections):
    out = []
    for name, kv in sections:
        out.append("[%s]" % name)
        for k, v in kv.items():
            out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out)


class Node:
    """build/vigil on a temporary config and data directory.

    Edit .node/.storage/.http/.aes/.routes (dicts) before start(), or
    call write_config() and sighup() to change a running node. A route
    with model = bone gets a [model bone] section whose manifest is
    .model_manifest (the repository's models/bone by default)."""

    def __init__(self, tmp_path, name="node"):
        self.base = Path(tmp_path) / name
        self.base.mkdir(parents=True, exist_ok=True)
        self.data = self.base / "data"
        self.config_path = self.base / "vigil.conf"
        self.log_path = self.base / "vigil.log"
        self.port = free_port()
        self.http_port = free_port()
        self.node = {"ae_title": NODE_AET, "bind": HOST, "port": self.port,
                     "max_associations": 16,
                     "accept_unknown_sources": "no"}
        self.storage = {"dir": str(self.data), "min_free_disk": "100M",
                        "series_quiet_seconds": 1,
                        "study_quiet_seconds": 2,
                        "on_duplicate": "keep"}
        self.http = {"bind": HOST, "port": self.http_port}
        self.aes = {"modality1": {"ae_title": SOURCE_AET, "host": HOST,
                                  "role": "source"}}
        self.routes = {}
        self.extra_sections = []   # [(name, dict)], e.g. ("outbox", {...})
        self.model_manifest = REPO / "models" / "bone" / "manifest.json"
        self.breast_manifest = REPO / "models" / "breast" / "manifest.json"
        self.proc = None
        self.exit_codes = []

    # -- configuration

    def config_text(self):
        sections = [("node", self.node), ("storage", self.storage),
                    ("http", self.http)]
        sections += [("ae %s" % k, v) for k, v in self.aes.items()]
        sections += [("route %s" % k, v) for k, v in self.routes.items()]
        sections += list(self.extra_sections)
        if any(r.get("model") == "bone" for r in self.routes.values()):
            sections.append(("model bone",
                             {"manifest": str(self.model_manifest)}))
        if any(r.get("model") == "breast" for r in self.routes.values()):
            sections.append(("model breast",
                             {"manifest": str(self.breast_manifest)}))
        return _ini(sections)

    def write_config(self):
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.config_text())
        os.replace(tmp, self.config_path)

    def add_ct_route(self, name="bone-ct", min_slices=20):
        """A route for CT series and the destination AE it names."""
        self.aes.setdefault("pacs", {"ae_title": "PACS", "host": HOST,
                                     "port": free_port(),
                                     "role": "destination"})
        self.routes[name] = {"model": "bone", "modality": "CT",
                             "min_slices": min_slices,
                             "max_slice_thickness": 5,
                             "destinations": "pacs"}

    def add_breast_route(self, name="breast", group="study", **extra):
        """A grouped route for mammography and ultrasound, and the
        destination AE it names."""
        self.aes.setdefault("pacs", {"ae_title": "PACS", "host": HOST,
                                     "port": free_port(),
                                     "role": "destination"})
        self.routes[name] = {"model": "breast", "modality": "MG,US",
                             "min_slices": 1, "group": group,
                             "destinations": "pacs", **extra}

    # -- process

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True, timeout=20):
        assert not self.alive(), "node already running"
        assert VIGIL.exists(), "%s not built (run make)" % VIGIL
        self.write_config()
        with open(self.log_path, "ab") as log:
            log.write(b"---- start %s\n" % time.ctime().encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(VIGIL), "-c", str(self.config_path)], cwd=self.base,
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "vigil exited with %d before /healthz answered:\n%s"
                    % (self.proc.returncode, self.log_tail()))
            try:
                if self.get("/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("vigil /healthz not 200 within %ss:\n%s"
                             % (timeout, self.log_tail()))

    def signal(self, sig):
        assert self.alive(), "node not running:\n" + self.log_tail()
        os.kill(self.proc.pid, sig)

    def sighup(self):
        self.signal(signal.SIGHUP)

    def stop(self, timeout=15):
        """SIGTERM, wait up to timeout, then SIGKILL. The exit code (or
        None when it had to be killed)."""
        if self.proc is None:
            return None
        code = None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            code = self.proc.returncode
        self.exit_codes.append(code)
        self.proc = None
        return code

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.exit_codes.append(self.proc.returncode)
        self.proc = None

    def restart(self, **kw):
        self.stop()
        return self.start(**kw)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    # -- HTTP

    def get(self, path, timeout=10):
        """(status, body bytes) of GET path."""
        url = "http://%s:%d%s" % (HOST, self.http_port, path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path, body, timeout=10):
        """(status, body bytes) of POST path with BODY (bytes, or an object
        sent as JSON)."""
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        url = "http://%s:%d%s" % (HOST, self.http_port, path)
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path, expect=200):
        status, body = self.get(path)
        assert status == expect, "GET %s: %d %r" % (path, status, body[:500])
        return json.loads(body)

    def metrics(self):
        """{'name{labels}': value} of GET /metrics (labels as written)."""
        status, body = self.get("/metrics")
        assert status == 200, (status, body[:300])
        out = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, val = line.rpartition(" ")
            out[key.strip()] = float(val)
        return out

    def metric(self, name, **labels):
        """One sample; 0 when absent (a counter never incremented)."""
        m = self.metrics()
        if labels:
            want = {k: str(v) for k, v in labels.items()}
            for key, val in m.items():
                if key.startswith(name + "{") and _labels(key) == want:
                    return val
            return 0.0
        return m.get(name, 0.0)

    def study(self, uid, expect=200):
        return self.get_json("/api/v1/studies/%s" % uid, expect)

    def jobs(self):
        return self.get_json("/api/v1/jobs")["jobs"]

    def wait_for(self, pred, timeout=20, interval=0.1, what="condition"):
        """Polls pred() until it returns a truthy value (returned)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = pred()
            except (AssertionError, KeyError, IndexError, OSError) as e:
                last = e
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError("timed out waiting for %s (last: %r)\n%s"
                             % (what, last, self.log_tail()))

    # -- storage

    def db(self):
        con = sqlite3.connect(str(self.data / "index.sqlite"), timeout=10)
        con.row_factory = sqlite3.Row
        return con

    def query(self, sql, args=()):
        con = self.db()
        try:
            return [tuple(r) for r in con.execute(sql, args).fetchall()]
        finally:
            con.close()

    def instance_rows(self):
        """{sop_instance_uid: (series_uid, path)} from the index."""
        return {r[0]: (r[1], r[2]) for r in self.query(
            "SELECT sop_instance_uid, series_uid, path FROM instances")}

    def stored_files(self):
        """Every file under <dir>/studies, as paths relative to dir."""
        root = self.data / "studies"
        if not root.exists():
            return set()
        return {str(p.relative_to(self.data)) for p in root.rglob("*")
                if p.is_file()}

    def stored_path(self, study, series, sop):
        return self.data / "studies" / study / series / (sop + ".dcm")

    def tmp_files(self):
        root = self.data / "tmp"
        if not root.exists():
            return []
        return [p for p in root.rglob("*") if p.is_file()]


def _labels(key):
    inner = key[key.index("{") + 1:key.rindex("}")]
    return dict(re.findall(r'(\w+)="([^"]*)"', inner))


def series_entry(study_json, series_uid):
    for s in study_json["series"]:
        if s["series_uid"] == series_uid:
            return s
    raise KeyError(series_uid)


def assert_stored_identical(node, files):
    """Each sent file is stored at its layout path with the same dataset
    bytes and the same transfer syntax, and indexed."""
    rows = node.instance_rows()
    for f in files:
        study, series, sop, ts = read_uids(f)
        p = node.stored_path(study, series, sop)
        assert p.is_file(), "not stored: %s (%s)" % (f, p)
        assert read_uids(p) == (study, series, sop, ts), p
        assert dataset_sha256(p) == dataset_sha256(f), \
            "dataset differs: %s vs %s" % (p, f)
        assert sop in rows, "not indexed: %s" % sop
        assert rows[sop][0] == series
        assert rows[sop][1] == str(p.relative_to(node.data)), rows[sop]
