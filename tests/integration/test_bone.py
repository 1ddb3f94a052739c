"""Bone-lesion analysis through the real node: held-out phantoms (seeds
training never used) are sent with storescu, a vigil-worker process
analyses each completed series with the committed model, and the findings
in /api/v1/studies/{uid} are checked against the phantoms' truth. A broken
model, reader or post-processing cannot pass: detection, typing and the
patient-level call are asserted, not just that a result exists."""

import importlib.util
import json

import numpy as np
import pytest

import vigil

QUALITY = vigil.load_script("quality-bone")

MANIFEST = vigil.REPO / "models" / "bone" / "manifest.json"

# Held-out cases: two with lesions of every type between them, one clean.
CASES = [
    (950001, ["osteolytic_metastasis", "bone_island", "haemangioma", "schmorl_node"]),
    (950002, ["osteoblastic_metastasis", "mixed_metastasis", "endplate_osteitis",
              "degenerative"]),
    (950003, []),
]

# The floor the committed model meets on these cases (0.6.0: 6 of 8
# lesions found, all 6 typed right, 5 false positives, both metastatic
# patients called positive; 0.5.0 found the same 6 with 8 false
# positives, 0.4.0 found 5 with 4). They catch a broken reader, runtime
# or post-processing (no findings, wrong types, a flood of false
# positives); they are below the quality the model is meant to reach
# (scripts/quality-bone reports that on 60 held-out phantoms, where 0.6.0
# makes 1.30 false positives per case), and are to be raised with each
# better model. The clean patient may be called positive: at the
# operating threshold chosen for 95% patient-level sensitivity the model
# calls almost half of held-out clean patients positive (specificity
# 54.2%), and 0.6.0 calls this one positive on one false positive.
MIN_SENSITIVITY = 0.6
MIN_TYPE_ACCURACY = 0.85
MAX_FP_PER_CASE = 3.0


def phantom_module():
    spec = importlib.util.spec_from_file_location(
        "phantom_ct", str(vigil.REPO / "scripts" / "phantom_ct.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_case(ph, seed, types, out):
    rng = np.random.default_rng(seed)
    geometry = ph.sample_geometry(rng)
    # A quick scan: 2.5 mm slices over about 250 mm.
    geometry.update(slice_thickness=2.5, spacing_between_slices=2.5, n_slices=100)
    case = ph.generate_case(seed, geometry=geometry, n_lesions=len(types),
                            lesion_types=types or None)
    truth = ph.write_case(case, str(out))
    return truth


@pytest.mark.skipif(not MANIFEST.exists(), reason="no committed bone model")
def test_bone_findings_match_phantom_truth(node, tmp_path):
    ph = phantom_module()
    node.add_ct_route(min_slices=20)
    node.start()
    health = node.get_json("/healthz")
    node.wait_for(lambda: node.get_json("/healthz")["models"]["bone"]["available"],
                  timeout=60, what="bone model loaded")
    rows = []
    for seed, types in CASES:
        out = tmp_path / ("case-%d" % seed)
        truth = make_case(ph, seed, types, out)
        res = vigil.storescu(node.port, sorted(str(p) for p in (out / "dicom").iterdir()))
        assert res.returncode == 0, res

        def done():
            s = node.study(truth["study_uid"])
            r = [x for x in s.get("results", []) if x["status"] in ("done", "failed",
                                                                    "not_analysable")]
            return r[0] if r else None
        result = node.wait_for(done, timeout=240, interval=1.0, what="analysis result")
        assert result["status"] == "done", result
        assert result["model"] == "bone"
        assert result["model_version"]
        for f in result["findings"]:
            assert f["type"] in ph.LESION_TYPES
            assert 0.0 <= f["probability"] <= 1.0
            assert f["volume_mm3"] > 0
            lo, hi = f["bbox_mm"]
            assert all(lo[a] <= f["centroid_mm"][a] <= hi[a] for a in range(3)), f
        pairs, fps = QUALITY.match(result["findings"], truth["lesions"])
        typed = sum(result["findings"][i]["type"] == les["type"] for i, les in pairs)
        rows.append({"seed": seed, "lesions": len(truth["lesions"]), "found": len(pairs),
                     "typed": typed, "fp": len(fps), "positive": truth["positive"],
                     "called": result["positive"], "score": result["patient_score"]})
    print(json.dumps(rows, indent=1))
    lesions = sum(r["lesions"] for r in rows)
    found = sum(r["found"] for r in rows)
    assert lesions >= 6
    assert found / lesions >= MIN_SENSITIVITY, rows
    assert sum(r["typed"] for r in rows) / max(found, 1) >= MIN_TYPE_ACCURACY, rows
    assert sum(r["fp"] for r in rows) / len(rows) <= MAX_FP_PER_CASE, rows
    # The score is a probability, and every metastatic patient is called
    # positive (the node's call at the manifest's operating threshold).
    for r in rows:
        assert 0.0 <= r["score"] <= 1.0, rows
    pos = [r for r in rows if r["positive"]]
    assert len(pos) == 2 and all(r["called"] for r in pos), rows
    assert health["models"]["bone"]["devices"][0]["device"] == "cpu"


def test_matching_a_region_over_several_lesions_finds_none_of_them():
    """The quality script's matching: a finding centred in a lesion's box
    finds it; a second finding on it is neither a hit nor a false
    positive; a region spanning vertebrae finds none of the small lesions
    inside its box and is a false positive."""
    def box(c, d):
        return {"centroid_mm": c, "diameter_mm": d,
                "bbox_mm": [[v - d / 2 for v in c], [v + d / 2 for v in c]]}

    def lesion(i, c, d):
        return dict(box(c, d), id=i)

    def finding(c, d, p):
        return dict(box(c, d), probability=p)

    lesions = [lesion(1, [0, 0, 0], 6), lesion(2, [0, 0, 40], 6), lesion(3, [0, 0, 80], 6)]
    on_first = finding([1, 0, 1], 8, 0.9)
    again = finding([-1, 0, 0], 5, 0.8)
    halo = finding([0, 0, 46], 14, 0.7)          # lesion 2 in its box, 14 <= 2*6+6
    spine = finding([0, 0, 60], 120, 0.95)       # spans all three
    pairs, fps = QUALITY.match([on_first, again, halo, spine], lesions)
    assert sorted(les["id"] for _, les in pairs) == [1, 2]
    assert fps == [3]


def second_channel_manifest(tmp_path, channel):
    """A copy of the committed model whose classifier has a second
    CHANNEL ("candidate_channel" or "fine_channel"): the committed network
    widened (lesion_classifier.widen), with weights that make what the
    channel holds change the answers (the candidate channel's those of the
    bone window; the fine branch's head weights random)."""
    import torch
    lc = vigil.load_module("lesion_classifier.py")
    man = json.loads(MANIFEST.read_text())
    committed = torch.jit.load(str(MANIFEST.parent / man["classifier"]["model"]))
    net = committed.model if hasattr(committed, "dims") else committed
    torch.manual_seed(5)
    wide = lc.widen(lc.LesionClassifier(**{channel: True}), net.state_dict())
    with torch.no_grad():
        if channel == "candidate_channel":
            wide.stem[0].weight[:, 2] = wide.stem[0].weight[:, 1]
        else:
            n = net.fc1.weight.shape[1]
            wide.fc1.weight[:, n:] = torch.randn_like(wide.fc1.weight[:, n:]) * 2.0
    d = tmp_path / "model"
    d.mkdir()
    torch.jit.script(lc.Flips(wide.eval()).eval()).save(str(d / man["classifier"]["model"]))
    (d / man["model"]).symlink_to(MANIFEST.parent / man["model"])
    man["classifier"].pop("candidate_channel", None)
    man["classifier"].pop("fine_channel_mm", None)
    if channel == "candidate_channel":
        man["classifier"]["candidate_channel"] = True
    else:
        man["classifier"]["fine_channel_mm"] = lc.FINE_MM
    (d / "manifest.json").write_text(json.dumps(man))
    return d / "manifest.json"


@pytest.mark.skipif(not MANIFEST.exists(), reason="no committed bone model")
@pytest.mark.parametrize("classifier", ["committed", "candidate_channel", "fine_channel"])
def test_python_side_of_the_benchmark_computes_what_the_node_computes(tmp_path, classifier):
    """scripts/bench-bone compares the node with the same model in Python;
    that comparison (and training, which resamples the same way) means
    something only if both make the same grid, the same candidates and the
    same findings. vigil-worker --analyse runs a phantom series as a
    worker runs a job; the Python pipeline runs the same files. With a
    classifier that has the candidate channel or the fine channel, both
    also give it the same second channel."""
    import subprocess
    ph = phantom_module()
    seed, types = CASES[1]
    make_case(ph, seed, types, tmp_path)
    dicom = tmp_path / "dicom"
    manifest = MANIFEST if classifier == "committed" else \
        second_channel_manifest(tmp_path, classifier)
    out = subprocess.run([str(vigil.REPO / "build" / "vigil-worker"), "--analyse", str(dicom),
                          "--manifest", str(manifest), "--threads", "2"],
                         stdout=subprocess.PIPE, check=True, text=True, timeout=300).stdout
    node = json.loads(out)
    py = vigil.load_script("bench-bone").python_pipeline(str(dicom), str(manifest), 2)
    names = [c["name"] for c in json.loads(MANIFEST.read_text())["classes"]]
    assert node["status"] == "done", node
    assert node["timings"]["windows"] == py["windows"]
    assert node["timings"]["candidates"] == py["candidates"] > 0
    assert len(node["findings"]) == len(py["found"]) > 0, (node["findings"], py["found"])
    g = node["grid"]
    axes = np.array([g["normal"], g["col_dir"], g["row_dir"]], float)  # z, y, x
    for f, p in zip(node["findings"], py["found"]):
        voxel = axes @ (np.array(f["centroid_mm"]) - g["origin"]) / g["spacing_mm"]
        assert f["type"] == names[p["type_index"] - 1], (f, p)
        assert abs(f["probability"] - p["probability"]) < 1e-3, (f, p)
        assert np.abs(voxel - p["centroid"]).max() < 0.01, (voxel, p)
    assert abs(node["patient_score"] - py["patient_score"]) < 1e-3


def classifier_input(rng, n, classifier):
    """N random crops as the node sends them to CLASSIFIER (the manifest's
    "classifier"): HU, and the candidate's foreground where it has the
    candidate channel, a second cube of HU where it has the fine channel."""
    import torch
    x = [rng.normal(300, 400, (n, 1, 32, 32, 32))]
    if classifier.get("candidate_channel"):
        x.append(rng.uniform(0.3, 1, (n, 1, 32, 32, 32)) * (rng.random((n, 1, 32, 32, 32)) < 0.05))
    elif classifier.get("fine_channel") or classifier.get("fine_channel_mm"):
        x.append(rng.normal(300, 400, (n, 1, 32, 32, 32)))
    return torch.from_numpy(np.concatenate(x, axis=1).astype(np.float32))


@pytest.mark.parametrize("channel", ["candidate_channel", "fine_channel"])
def test_widened_classifier_starts_as_its_hu_only_network(channel):
    """A classifier with the candidate channel or the fine channel starts
    from a trained HU-only one (lesion_classifier.widen): the weights that
    bring in the new channel start at zero, so it answers as that network
    did, whatever the channel holds, until training teaches it the
    channel."""
    import torch
    lc = vigil.load_module("lesion_classifier.py")
    torch.manual_seed(4)
    hu_only = lc.LesionClassifier().eval()
    wide = lc.widen(lc.LesionClassifier(**{channel: True}), hu_only.state_dict()).eval()
    rng = np.random.default_rng(6)
    x = classifier_input(rng, 3, {channel: True})
    with torch.no_grad():
        assert torch.allclose(wide(x), hu_only(x[:, :1]), atol=1e-6)
        if channel == "candidate_channel":
            wide.stem[0].weight[:, 2].fill_(1.0)
        else:
            wide.fc1.weight[:, hu_only.fc1.weight.shape[1]:].fill_(0.1)
        assert not torch.allclose(wide(x), hu_only(x[:, :1]), atol=1e-5)
        # Started from a classifier that already has the channel, it keeps
        # what that one learnt.
        again = lc.widen(lc.LesionClassifier(**{channel: True}), wide.state_dict()).eval()
        assert torch.allclose(again(x), wide(x), atol=1e-6)


def test_fine_channel_setting_is_checked_as_the_node_checks_it():
    """bone_model reads the manifest's fine_channel_mm as
    inference/manifest.c does: absent is none; not a number, out of
    0.1..10 or beside the candidate channel is an error."""
    bm = vigil.load_module("bone_model.py")
    assert bm.fine_channel_mm({}) == 0.0
    assert bm.fine_channel_mm({"fine_channel_mm": 0.75}) == 0.75
    for bad in ({"fine_channel_mm": "0.75"}, {"fine_channel_mm": 0}, {"fine_channel_mm": 20},
                {"fine_channel_mm": True},
                {"fine_channel_mm": 0.75, "candidate_channel": True}):
        with pytest.raises(ValueError, match="fine_channel_mm"):
            bm.fine_channel_mm(bad)


def test_fine_crop_samples_the_scanner_volume_about_the_crop_centre():
    """The fine channel is the scanner's volume sampled FINE_MM apart about
    the centre of the HU crop: on a volume that is linear in millimetres
    (which trilinear sampling reproduces exactly) each sample holds the
    value at its own position, for slices and pixels of other sizes than
    the grid's; beyond the rows and columns it is air, beyond the first
    and last slice the nearest slice."""
    lc = vigil.load_module("lesion_classifier.py")
    spacing, step, size = (2.5, 0.7, 0.8), 1.5, 32   # z, y, x
    shape = (60, 200, 180)

    def ramp(z, y, x):
        return 3.0 * z + 2.0 * y + 1.0 * x
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)],
                             indexing="ij")
    native = ramp(zz, yy, xx).astype(np.float32)
    top = (shape[0] - 1) * spacing[0]
    # Inside the volume; then near its first slice and first column.
    for centroid in ([30.2, 40.6, 35.4], [40.0, 80.49, 60.5], [1.0, 40.0, 1.0]):
        crop_centre = np.array(lc.crop_origin(centroid, size)) + size / 2 - 0.5
        z, y, x = [(crop_centre[a] + (np.arange(size) - (size - 1) / 2) * lc.FINE_MM / step)
                   * step for a in range(3)]
        want = ramp(*np.meshgrid(np.clip(z, 0, top), y, x, indexing="ij"))
        want[:, :, x < 0] = lc.AIR
        got = lc.fine_crop(native, spacing, step, centroid, size)
        assert got.shape == (size,) * 3
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=0.05)
    assert (x < 0).any() and (z < 0).any()


@pytest.mark.skipif(not MANIFEST.exists(), reason="no committed bone model")
def test_classifier_ensemble_is_the_mean_of_its_members(tmp_path):
    """scripts/train-bone-classifier --members exports an ensemble of
    trained classifiers as one TorchScript file (lesion_classifier.Ensemble):
    loaded back, it gives the mean of its members' probabilities, a
    distribution over "not a lesion" and the 8 types, batch by batch as
    the node sends crops."""
    import torch
    lc = vigil.load_module("lesion_classifier.py")
    man = json.loads(MANIFEST.read_text())
    committed = torch.jit.load(str(MANIFEST.parent / man["classifier"]["model"]))
    torch.manual_seed(3)
    other = torch.jit.script(lc.LesionClassifier(
        candidate_channel=bool(man["classifier"].get("candidate_channel")),
        fine_channel=bool(man["classifier"].get("fine_channel_mm"))).eval())
    path = tmp_path / "ensemble.pt"
    torch.jit.script(lc.Ensemble([committed, other])).save(str(path))
    model = torch.jit.load(str(path))
    rng = np.random.default_rng(5)
    hu = classifier_input(rng, 3, man["classifier"])
    with torch.no_grad():
        p = model(hu)
        each = [committed(hu), other(hu)]
    assert tuple(p.shape) == (3, 1 + len(man["classes"]))
    assert torch.allclose(p, (each[0] + each[1]) / 2, atol=1e-6)
    assert torch.allclose(p.sum(dim=1), torch.ones(3), atol=1e-5)
    assert (each[0] - each[1]).abs().max() > 1e-2


@pytest.mark.skipif(not MANIFEST.exists(), reason="no committed bone model")
def test_committed_classifier_averages_its_mirror_images():
    """The committed classifier is lesion_classifier.Flips: the mean of its
    network's probabilities on the crop and on the crop mirrored left-right
    and head-feet, in the one TorchScript file the node loads. Its network
    alone answers differently for the mirror images, so the mean is not
    the network's answer. A crop's answer does not depend on the crops
    the node sends with it in one batch."""
    import torch
    man = json.loads(MANIFEST.read_text())
    assert man["classifier"]["flips"] is True
    model = torch.jit.load(str(MANIFEST.parent / man["classifier"]["model"]))
    assert list(model.dims) == [4, 2]
    rng = np.random.default_rng(7)
    hu = classifier_input(rng, 4, man["classifier"])
    with torch.no_grad():
        p = model(hu)
        views = [model.model(hu), model.model(hu.flip([4])), model.model(hu.flip([2]))]
        alone = model(hu[1:2])
    assert tuple(p.shape) == (4, 1 + len(man["classes"]))
    assert torch.allclose(p, sum(views) / 3, atol=1e-6)
    assert torch.allclose(alone, p[1:2], atol=1e-6)
    assert torch.allclose(p.sum(dim=1), torch.ones(4), atol=1e-5)
    assert (views[0] - views[1]).abs().max() > 1e-3
    assert (views[0] - views[2]).abs().max() > 1e-3
