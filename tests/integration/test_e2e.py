"""The whole path with real peers: storescu sends a phantom CT to the node,
a worker analyses it, and the Segmentation and TID 1500 report reach
Orthanc (the Debian package, as the PACS) through the outbox. The objects
are read back from Orthanc and compared with the stored findings and the
phantom's truth. Then the PACS goes down while a second study is analysed,
comes back, and receives that study's report once, while nothing of the
first study is sent again."""

import io
import time

import numpy as np
import pydicom
import pytest

import vigil
from test_bone import QUALITY, make_case, phantom_module

orthanc = vigil.load_module("orthanc_pacs.py")

MANIFEST = vigil.REPO / "models" / "bone" / "manifest.json"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def sr_items(ds):
    """(concept meaning, value) of every content item of an SR, depth first:
    numbers as floats, codes as their meaning, text as text."""
    out = []

    def walk(seq):
        for it in seq:
            name = it.ConceptNameCodeSequence[0].CodeMeaning \
                if "ConceptNameCodeSequence" in it else ""
            vt = it.ValueType
            if vt == "NUM" and "MeasuredValueSequence" in it:
                out.append((name, float(it.MeasuredValueSequence[0].NumericValue)))
            elif vt == "CODE":
                out.append((name, it.ConceptCodeSequence[0].CodeMeaning))
            elif vt in ("TEXT", "UIDREF"):
                out.append((name, it.TextValue if vt == "TEXT" else it.UID))
            if "ContentSequence" in it:
                walk(it.ContentSequence)
    walk(ds.ContentSequence)
    return out


def node_with_pacs(node, pacs):
    node.add_ct_route(min_slices=20)
    node.aes["pacs"] = {"ae_title": pacs.aet, "host": vigil.HOST, "port": pacs.dicom_port,
                        "role": "destination"}
    node.extra_sections = [("outbox", {"retry_initial_seconds": 1,
                                       "retry_max_seconds": 2})]
    return node


def outbox(node, study_uid):
    return [e for e in node.get_json("/api/v1/outbox")["outbox"]
            if e["study_uid"] == study_uid]


def wait_result(node, study_uid, timeout=300):
    def done():
        s = node.study(study_uid)
        r = [x for x in s.get("results", []) if x["status"] in ("done", "failed",
                                                                "not_analysable")]
        return r[0] if r else None
    return node.wait_for(done, timeout=timeout, interval=1.0, what="analysis result")


@pytest.mark.skipif(not MANIFEST.exists(), reason="no committed bone model")
def test_results_reach_orthanc_once(node, tmp_path, small_series):
    pacs = orthanc.Orthanc(tmp_path / "orthanc").start()
    try:
        node_with_pacs(node, pacs).start()
        node.wait_for(lambda: node.get_json("/healthz")["models"]["bone"]["available"],
                      timeout=60, what="bone model loaded")
        ph = phantom_module()
        out = tmp_path / "case"
        # A 32 mm osteoblastic metastasis in a vertebral body and endplate
        # osteitis: lesions whose detection is not in doubt, so that this
        # test is about the path; test_bone is about the model.
        truth = make_case(ph, 950018, ["osteoblastic_metastasis", "endplate_osteitis"], out)
        files = sorted(str(p) for p in (out / "dicom").iterdir())
        source = {}
        for f in files:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            source[ds.SOPInstanceUID] = [float(v) for v in ds.ImagePositionPatient]
        res = vigil.storescu(node.port, files)
        assert res.returncode == 0, res

        result = wait_result(node, truth["study_uid"])
        assert result["status"] == "done", result
        findings = result["findings"]
        assert findings, "the phantom's lesions gave no finding"

        def delivered():
            e = outbox(node, truth["study_uid"])
            return e if e and all(x["state"] == "sent" for x in e) else None
        entries = node.wait_for(delivered, timeout=60, interval=0.5, what="delivery")
        assert sorted(e["sop_class_uid"] for e in entries)[0] == SEG_CLASS or \
            any(e["sop_class_uid"] == SEG_CLASS for e in entries)
        assert len(entries) == 2 and all(e["destination"] == "pacs" for e in entries)
        # The study's result says where its objects went.
        objects = node.study(truth["study_uid"])["results"][0]["objects"]
        assert sorted(o["sop_uid"] for o in objects) == sorted(e["sop_uid"] for e in entries)
        assert all(o["state"] == "sent" and o["sent"] for o in objects), objects

        held = pacs.study_instances(truth["study_uid"])
        mods = sorted(m for m, _, _, _ in held)
        assert mods == ["SEG", "SR"], held
        seg_id = next(i for m, _, _, i in held if m == "SEG")
        sr_id = next(i for m, _, _, i in held if m == "SR")
        seg = pydicom.dcmread(io.BytesIO(pacs.instance_file(seg_id)))
        sr = pydicom.dcmread(io.BytesIO(pacs.instance_file(sr_id)))

        # The Segmentation: in the source study, one segment per finding,
        # each frame on a source slice, at that slice's position.
        assert seg.StudyInstanceUID == truth["study_uid"]
        assert seg.PatientID == pydicom.dcmread(files[0]).PatientID
        assert len(seg.SegmentSequence) == len(findings)
        for s, f in zip(seg.SegmentSequence, findings):
            assert s.SegmentLabel.lower().replace(" ", "_").startswith(f["type"][:8]) or \
                f["type"] in s.SegmentLabel, (s.SegmentLabel, f["type"])
            assert s.SegmentAlgorithmType == "AUTOMATIC"
            assert s.TrackingUID
        for fr in seg.PerFrameFunctionalGroupsSequence:
            ref = fr.DerivationImageSequence[0].SourceImageSequence[0]
            sop = ref.ReferencedSOPInstanceUID
            assert sop in source
            ipp = [float(v) for v in fr.PlanePositionSequence[0].ImagePositionPatient]
            assert np.allclose(ipp, source[sop], atol=1e-3), (ipp, source[sop])

        # The report: the same study, and the stored numbers.
        assert sr.StudyInstanceUID == truth["study_uid"]
        items = sr_items(sr)
        values = [v for _, v in items if isinstance(v, float)]
        for f in findings:
            assert any(abs(v - f["volume_mm3"]) <= 0.01 * f["volume_mm3"] + 0.1
                       for v in values), (f, values)
            assert any(abs(v - f["mean_hu"]) <= 0.5 for v in values), (f, values)
        tracking = {v for n, v in items if n == "Tracking Unique Identifier"}
        assert tracking == {s.TrackingUID for s in seg.SegmentSequence}

        # What the truth says: a metastasis, found where it was planted,
        # and the patient called positive.
        pairs, _ = QUALITY.match(findings, truth["lesions"])
        met = [les for _, les in pairs if les["type"] == "osteoblastic_metastasis"]
        assert met, (findings, truth["lesions"])
        assert result["positive"] is True or result["positive"] == 1

        # The PACS goes down; a second study is analysed meanwhile.
        pacs.stop()
        second = small_series(slices=30, size=96)
        res = vigil.storescu(node.port, second["files"])
        assert res.returncode == 0, res
        result2 = wait_result(node, second["study_uid"])
        assert result2["status"] == "done", result2

        def failing():
            e = outbox(node, second["study_uid"])
            return e if e and all(x["attempts"] >= 2 and x["last_error"] for x in e) else None
        pending = node.wait_for(failing, timeout=60, interval=0.5, what="failed attempts")
        assert all(x["state"] == "queued" for x in pending), pending

        pacs.start()
        entries2 = node.wait_for(
            lambda: (lambda e: e if e and all(x["state"] == "sent" for x in e) else None)(
                outbox(node, second["study_uid"])),
            timeout=60, interval=0.5, what="delivery after the PACS came back")
        held2 = pacs.study_instances(second["study_uid"])
        # Exactly the queued objects, each once (an SR, and a SEG if the
        # model found something in this plain series).
        assert sorted(sop for _, _, sop, _ in held2) == sorted(e["sop_uid"] for e in entries2)
        assert "SR" in [m for m, _, _, _ in held2], held2
        # Nothing of the first study went again: one attempt each.
        time.sleep(2)
        first = outbox(node, truth["study_uid"])
        assert all(x["state"] == "sent" and x["attempts"] == 1 for x in first), first
        assert node.metric("vigil_outbox_sent_total") == len(entries) + len(entries2)
    finally:
        pacs.stop()
