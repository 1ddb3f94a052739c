"""Orthanc (the Debian package) as the PACS that receives Vigil's results:
its own temporary configuration, storage and index, DICOM and HTTP on free
ports, and only Vigil's node (at 127.0.0.1) allowed to store. Orthanc 1.10
cannot be told which address to bind, so access is limited instead: the
REST API answers only loopback clients and C-STORE is accepted only from
the declared modality at 127.0.0.1. Started and stopped by PID.

Used by scripts/demo, scripts/bench-e2e and the integration tests.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, workdir, aet="ORTHANC", dicom_port=None, http_port=None,
                 allowed=(("VIGIL", HOST),)):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.aet = aet
        self.dicom_port = dicom_port or _free_port()
        self.http_port = http_port or _free_port()
        self.allowed = allowed
        self.proc = None
        self.conf = os.path.join(self.dir, "orthanc.json")
        self.log_path = os.path.join(self.dir, "orthanc.log")

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.http_port)

    def write_config(self):
        modalities = {("node%d" % i): [aet, host, 104]
                      for i, (aet, host) in enumerate(self.allowed)}
        with open(self.conf, "w") as f:
            json.dump({
                "Name": "vigil-test-pacs",
                "DicomAet": self.aet,
                "DicomPort": self.dicom_port,
                "HttpPort": self.http_port,
                "StorageDirectory": os.path.join(self.dir, "storage"),
                "IndexDirectory": os.path.join(self.dir, "index"),
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "HttpServerEnabled": True,
                "Plugins": [],
                "DicomCheckCalledAet": True,
                "DicomAlwaysAllowEcho": False,
                "DicomAlwaysAllowStore": False,
                "DicomCheckModalityHost": True,
                "DicomModalities": modalities,
                "StorageCompression": False,
            }, f, indent=1)

    def start(self, timeout=30):
        if not os.path.exists(self.conf):
            self.write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["Orthanc", "--no-jobs", self.conf], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.dir, env=dict(os.environ, TCP_NODELAY="1"))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("Orthanc exited (%d); see %s"
                                   % (self.proc.returncode, self.log_path))
            try:
                self.get("/system")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("Orthanc did not answer within %d s; see %s"
                           % (timeout, self.log_path))

    def stop(self, timeout=20):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # ------------------------------------------------------------ REST

    def get(self, path, raw=False):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
        return body if raw else json.loads(body)

    def find_study(self, study_uid):
        """Orthanc's id of the study, or None."""
        req = urllib.request.Request(
            self.url + "/tools/lookup", data=study_uid.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            hits = json.loads(r.read())
        for h in hits:
            if h.get("Type") == "Study":
                return h["ID"]
        return None

    def study_instances(self, study_uid):
        """[(modality, series description, SOP Instance UID, orthanc id)]
        of every instance Orthanc holds for the study."""
        sid = self.find_study(study_uid)
        if sid is None:
            return []
        out = []
        for series in self.get("/studies/%s/series" % sid):
            tags = series["MainDicomTags"]
            for iid in series["Instances"]:
                inst = self.get("/instances/%s" % iid)
                out.append((tags.get("Modality"), tags.get("SeriesDescription", ""),
                            inst["MainDicomTags"]["SOPInstanceUID"], iid))
        return out

    def instance_file(self, orthanc_id):
        """The instance's Part 10 bytes."""
        return self.get("/instances/%s/file" % orthanc_id, raw=True)

    def statistics(self):
        return self.get("/statistics")
