"""Breast-risk analysis through the real node: held-out phantom studies
(seeds training never used) of mammography and ultrasound are sent with
storescu, their clinical values posted through the API, and a
vigil-worker process analyses each completed study with the committed
model. Asserted: each breast's assessment against the phantom's truth
(benign/malignant accuracy at the issue's threshold), the node's numbers
against the same TorchScript model run in Python on the same files (so the
C reader, renderer, slot assignment and clinical vector are the ones the
model was trained for), missing modalities, grouping of separate studies
by patient, and the report delivered to a real storage SCP."""

import json
import subprocess
import time

import numpy as np
import pytest

import vigil

MANIFEST = vigil.REPO / "models" / "breast" / "manifest.json"
pytestmark = pytest.mark.skipif(not MANIFEST.exists(), reason="no committed breast model")

PB = vigil.load_module("phantom_breast.py")
QUALITY = vigil.load_script("quality-breast")

# Held-out seeds (training and validation use others; see scripts/train-breast).
SEEDS = [961001, 961002, 961003, 961004, 961005, 961006, 961007, 961008]
MIN_BM_ACCURACY = 0.92   # the target for full inputs


def make_case(seed, out, separate=False, **kw):
    case = PB.generate_case(seed, **kw)
    return case, PB.write_case(case, str(out), separate_studies=separate)


def send_dir(node, d):
    files = sorted(str(p) for p in d.iterdir() if p.suffix == ".dcm")
    res = vigil.storescu(node.port, files)
    assert res.returncode == 0, res
    return files


BOOLEAN = {"family_history", "palpable_lump", "nipple_discharge", "pain",
           "prior_biopsy", "hormone_therapy"}


def api_values(truth):
    """The phantom's clinical values as the API takes them (JSON booleans)."""
    return {k: bool(v) if k in BOOLEAN else v
            for k, v in truth["clinical"]["api"].items()}


def post_clinical(node, study_uid, values):
    status, body = node.post("/api/v1/studies/%s/clinical" % study_uid, values)
    assert status == 200, (status, body)
    return json.loads(body)


def breast_result(node, study_uid, want_clinical=()):
    """The study's finished breast result once it reflects the posted
    clinical values named in want_clinical."""
    def done():
        s = node.study(study_uid)
        for r in s.get("results", []):
            if r["model"] != "breast" or r["status"] not in ("done", "failed",
                                                             "not_analysable"):
                continue
            used = set()
            for a in r.get("assessments", []):
                used |= set(a["clinical_used"])
            if r["status"] != "done" or set(want_clinical) <= used:
                return r
        return None
    return node.wait_for(done, timeout=120, interval=0.5, what="breast result")


def python_probs(model, manifest, case_dir, clinical):
    """Per side, the committed model's probabilities on the files as the
    Python preprocessing reads them."""
    import torch
    got = PB.read_dicom_dir(str(case_dir))
    clin, clinp = QUALITY.clinical_from_manifest(clinical, manifest)
    size_mg = tuple(manifest["input"]["mg_size"])
    size_us = tuple(manifest["input"]["us_size"])
    out = {}
    for side, images in got.items():
        mg, mgp, us, usp = PB.breast_tensors(images, size_mg, size_us)
        with torch.no_grad():
            p = model(torch.from_numpy(mg)[None], torch.from_numpy(mgp)[None],
                      torch.from_numpy(us)[None], torch.from_numpy(usp)[None],
                      torch.from_numpy(clin)[None], torch.from_numpy(clinp)[None])
        out[side] = p[0].numpy()
    return out


@pytest.fixture
def breast_node(node):
    node.add_breast_route(group="study")
    node.start()
    node.wait_for(lambda: node.get_json("/healthz")["models"]["breast"]["available"],
                  timeout=60, what="breast model loaded")
    return node


def check_assessment(a, manifest):
    p = np.array(a["probabilities"])
    assert p.shape == (5,) and abs(p.sum() - 1) < 1e-4 and (p >= 0).all(), a
    assert abs(a["malignancy_probability"] - p[2:].sum()) < 1e-6, a
    m = a["malignancy_probability"]
    band = next(b["category"] for b in manifest["birads"] if m < b["below"])
    assert a["birads"] == band, a


def test_breast_assessments_match_truth(breast_node, tmp_path):
    import torch
    node = breast_node
    manifest = json.loads(MANIFEST.read_text())
    model = torch.jit.load(str(MANIFEST.parent / manifest["model"]))
    model.eval()
    right = total = 0
    for seed in SEEDS:
        d = tmp_path / ("case-%d" % seed)
        case, truth = make_case(seed, d)
        study = truth["study_uids"][0]
        send_dir(node, d)
        posted = api_values(truth)
        post_clinical(node, study, posted)
        r = breast_result(node, study, want_clinical=posted.keys())
        assert r["status"] == "done", r
        assert r["model_version"] == manifest["version"]
        got = {a["laterality"]: a for a in r["assessments"]}
        assert set(got) == set(truth["sides"]), r
        ref = python_probs(model, manifest, d, PB.truth_clinical(truth))
        for side, a in got.items():
            check_assessment(a, manifest)
            # The node reads, renders and assigns slots as training did.
            np.testing.assert_allclose(a["probabilities"], ref[side], atol=2e-3,
                                       err_msg="side %s of seed %d" % (side, seed))
            assert {"MG_CC", "MG_MLO"} <= set(a["modalities_used"]), a
            assert any(m.startswith("US_") for m in a["modalities_used"]), a
            assert set(a["clinical_used"]) == set(PB.CLINICAL), a
            truly = truth["sides"][side]["malignant"]
            right += (a["malignancy_probability"] >= 0.5) == truly
            total += 1
    acc = right / total
    assert acc >= MIN_BM_ACCURACY, "benign/malignant accuracy %.3f on %d breasts" % (
        acc, total)


def test_breast_missing_modalities(breast_node, tmp_path):
    node = breast_node
    manifest = json.loads(MANIFEST.read_text())
    cases = [(962001, "mg-only", dict(us=False), {"MG_CC", "MG_MLO"}),
             (962002, "us-only", dict(mg=False), None),
             (962003, "one-side", dict(sides=("R",)), None)]
    for seed, name, kw, exact in cases:
        d = tmp_path / name
        case, truth = make_case(seed, d, **kw)
        study = truth["study_uids"][0]
        send_dir(node, d)
        r = breast_result(node, study)
        assert r["status"] == "done", r
        sides = {a["laterality"] for a in r["assessments"]}
        assert sides == set(truth["sides"]), (name, r)
        for a in r["assessments"]:
            check_assessment(a, manifest)
            used = set(a["modalities_used"])
            if exact is not None:
                assert used == exact, (name, a)
            if "mg" in kw:
                assert not any(m.startswith("MG") for m in used), (name, a)
            # Nothing posted: only what DICOM gives (age, BMI), never a
            # silent zero for the rest.
            assert set(a["clinical_used"]) == {"age", "bmi"}, (name, a)


def test_clinical_values_refused_with_reason(breast_node, tmp_path):
    node = breast_node
    d = tmp_path / "case"
    _, truth = make_case(963001, d, us=False)
    study = truth["study_uids"][0]
    send_dir(node, d)
    path = "/api/v1/studies/%s/clinical" % study
    for body, reason in [({"smoker": True}, 'unknown clinical value "smoker"'),
                         ({"age": 250}, "age: 250 is out of range 18..110"),
                         ({"family_history": "yes"}, "family_history: expected true or false"),
                         ({"breast_density": "E"}, "breast_density")]:
        status, text = node.post(path, body)
        assert status == 400, (body, status, text)
        assert reason in json.loads(text)["error"], (body, text)
    status, _ = node.post("/api/v1/studies/1.2.3.4/clinical", {"age": 50})
    assert status == 404
    assert node.study(study)["clinical"] == {}


def test_separate_studies_grouped_by_patient(node, tmp_path):
    """MG and US arrive as two studies of one visit; with patient grouping
    the study completed last is assessed with both."""
    node.add_breast_route(group="patient", group_window_hours=24)
    node.start()
    node.wait_for(lambda: node.get_json("/healthz")["models"]["breast"]["available"],
                  timeout=60, what="breast model loaded")
    d = tmp_path / "visit"
    _, truth = make_case(964001, d, separate=True)
    mg_study, us_study = truth["studies"]["MG"]["study_uid"], truth["studies"]["US"]["study_uid"]
    assert mg_study != us_study
    mg = sorted(str(p) for p in d.glob("MG_*.dcm"))
    us = sorted(str(p) for p in d.glob("US_*.dcm"))
    assert vigil.storescu(node.port, mg).returncode == 0
    first = breast_result(node, mg_study)
    assert first["status"] == "done", first
    assert all(not any(m.startswith("US") for m in a["modalities_used"])
               for a in first["assessments"]), first
    assert vigil.storescu(node.port, us).returncode == 0
    second = breast_result(node, us_study)
    assert second["status"] == "done", second
    for a in second["assessments"]:
        used = set(a["modalities_used"])
        assert {"MG_CC", "MG_MLO"} <= used and any(m.startswith("US_") for m in used), a


def test_breast_report_reaches_the_destination(node, tmp_path):
    """The TID 1500 report goes through the outbox to a real storage SCP
    and is a valid DICOM object there."""
    port = vigil.free_port()
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "PACS", "-od", str(out), str(port)],
                           env=vigil.DCMTK_ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT)
    try:
        node.aes["pacs"] = {"ae_title": "PACS", "host": vigil.HOST, "port": port,
                            "role": "destination"}
        node.add_breast_route(group="study")
        node.start()
        d = tmp_path / "case"
        _, truth = make_case(965001, d)
        study = truth["study_uids"][0]
        send_dir(node, d)
        r = breast_result(node, study)
        assert r["status"] == "done", r
        assert len(r["objects"]) == 1, r
        sop = r["objects"][0]["sop_uid"]
        node.wait_for(lambda: node.study(study)["results"][0]["objects"][0]["state"] == "sent",
                      timeout=60, what="report sent")
        files = list(out.iterdir())
        assert len(files) == 1, files
        import pydicom
        ds = pydicom.dcmread(str(files[0]))
        assert ds.SOPInstanceUID == sop
        assert ds.StudyInstanceUID == study
        assert ds.Modality == "SR"
        v = subprocess.run(["dciodvfy", str(files[0])], capture_output=True, text=True)
        errors = [l for l in (v.stdout + v.stderr).splitlines() if l.startswith("Error")]
        assert not errors, errors
    finally:
        scp.terminate()
        scp.wait(10)
