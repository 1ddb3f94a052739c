"""The bone-lesion CT phantom's contract (scripts/phantom_ct.py and
scripts/make-bone-phantom): reproducible from a seed, anatomy independent
of the lesions, lesions inside bone with type-typical attenuation, and
DICOM/labels/truth that agree with each other. Runs on the 1.5 mm training
grid and small scanner grids so that it stays fast."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                       "scripts")
sys.path.insert(0, SCRIPTS)
import phantom_ct as P  # noqa: E402

pydicom = pytest.importorskip("pydicom")

# Lesions at least this long are compared with the per-type HU ranges;
# smaller ones are dominated by partial volume with their surroundings.
MIN_D = 8.0


def _dilate(mask, n):
    m = mask.copy()
    for _ in range(n):
        d = m.copy()
        d[1:] |= m[:-1]
        d[:-1] |= m[1:]
        d[:, 1:] |= m[:, :-1]
        d[:, :-1] |= m[:, 1:]
        d[:, :, 1:] |= m[:, :, :-1]
        d[:, :, :-1] |= m[:, :, 1:]
        m = d
    return m


def _centres(c):
    """z, y, x voxel-centre coordinates (mm) of a case."""
    return [o + s * np.arange(n) for o, s, n in zip(c.origin[::-1], c.spacing,
                                                    c.hu.shape)]


@pytest.fixture(scope="module")
def by_type():
    """One training case per lesion type, two lesions of that type each."""
    return {t: P.sample_training_case(500 + i, n_lesions=2, lesion_types=[t])
            for i, t in enumerate(P.LESION_TYPES)}


def test_api_constants():
    assert len(P.LESION_TYPES) == 8
    assert P.METASTATIC == {"osteoblastic_metastasis",
                            "osteolytic_metastasis", "mixed_metastasis"}
    rng = np.random.default_rng(1)
    for _ in range(50):
        g = P.sample_geometry(rng)
        assert g["rows"] == g["cols"] == 512
        assert 0.6 <= g["pixel_spacing"] <= 0.9
        assert g["slice_thickness"] in P.THICKNESSES
        assert g["spacing_between_slices"] == g["slice_thickness"]
        assert 145 <= g["n_slices"] * g["slice_thickness"] <= 405


def test_same_seed_same_case_and_seeds_differ():
    a = P.sample_training_case(11)
    b = P.sample_training_case(11)
    assert np.array_equal(a.hu, b.hu)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.bone, b.bone)
    assert a.lesions == b.lesions
    assert a.hu.dtype == np.int16 and a.labels.dtype == np.uint16
    assert a.bone.dtype == np.bool_
    assert a.spacing == (1.5, 1.5, 1.5)
    c = P.sample_training_case(12)
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)


def test_plausible_ct(by_type):
    c = by_type["haemangioma"]
    hu, bone = c.hu, c.bone
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert (hu < -900).mean() > 0.05                  # air around the body
    assert 0.01 < bone.mean() < 0.2
    canc = c.anatomy["cancellous_hu"]
    assert 140 <= canc <= 280
    # bone is far denser than the rest of the body on average
    body = hu > -500
    assert hu[bone].mean() > hu[body & ~bone].mean() + 150
    # vertebral levels are ordered from S1 upwards
    v = c.anatomy["vertebrae"]
    names = ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10"]
    z = [v[n][0] for n in names]
    assert z == sorted(z)


def test_lesions_in_bone_and_anatomy_unchanged(by_type):
    for t, c in by_type.items():
        assert c.lesions, t
        clean = P.sample_training_case(c.seed, n_lesions=0)
        assert clean.hu.shape == c.hu.shape
        assert not clean.labels.any() and clean.lesions == []
        zc, yc, xc = _centres(c)
        outside = np.ones(c.hu.shape, bool)
        for L in c.lesions:
            m = c.labels == L["id"]
            assert m.sum() == L["voxels"] >= 3, (t, L)
            reach = {"degenerative": 7, "osteolytic_metastasis": 3}.get(t, 1)
            inside = (m & _dilate(clean.bone, reach)).sum() / m.sum()
            assert inside > 0.97, (t, L, inside)
            if t in ("osteoblastic_metastasis", "mixed_metastasis",
                     "bone_island", "haemangioma"):
                assert (m & clean.bone).sum() / m.sum() > 0.8, (t, L)
            lo, hi = np.array(L["bbox_mm"])
            mg = 0.4 * L["diameter_mm"] + 12.0
            near = ((xc >= lo[0] - mg) & (xc <= hi[0] + mg))[None, None, :] \
                & ((yc >= lo[1] - mg) & (yc <= hi[1] + mg))[None, :, None] \
                & ((zc >= lo[2] - mg) & (zc <= hi[2] + mg))[:, None, None]
            outside &= ~near
        # the lesions change nothing but their own surroundings
        assert np.array_equal(c.hu[outside], clean.hu[outside]), t
        assert np.array_equal(c.bone[outside], clean.bone[outside]), t


def test_lesion_records(by_type):
    for t, c in by_type.items():
        ids = sorted(np.unique(c.labels[c.labels > 0]).tolist())
        assert ids == [L["id"] for L in c.lesions] == list(
            range(1, len(c.lesions) + 1))
        for L in c.lesions:
            assert L["type"] == t
            assert L["type_index"] == P.LESION_TYPES.index(t) + 1
            assert L["metastatic"] == (t in P.METASTATIC)
            assert L["site"] in P.SITES
            assert 4.0 <= L["diameter_mm"] <= 40.0
            m = c.labels == L["id"]
            zz, yy, xx = np.nonzero(m)
            pts = np.stack([c.origin[0] + xx * c.spacing[2],
                            c.origin[1] + yy * c.spacing[1],
                            c.origin[2] + zz * c.spacing[0]], 1)
            # the label voxels agree with the continuous truth
            tol = max(2.5, 0.15 * L["diameter_mm"])
            assert np.linalg.norm(pts.mean(0) - L["centroid_mm"]) < tol, L
            lo, hi = np.array(L["bbox_mm"])
            if (hi - lo).min() >= 5.0:        # thin lesions: partial volume
                vol = m.sum() * 1.5 ** 3
                assert 0.4 < vol / L["volume_mm3"] < 2.5, L
            ext = (pts.max(0) - pts.min(0) + 1.5).max()
            assert ext < L["diameter_mm"] + 4, L
            if L["voxels"] >= 20:
                assert ext > 0.6 * L["diameter_mm"] - 2, L
            assert np.all(pts >= lo - 1.6) and np.all(pts <= hi + 1.6), L
            assert abs(c.hu[m].mean() - L["mean_hu"]) < 0.1


def test_type_attenuation(by_type):
    """Ulano 2016: enostoses > 885 HU > untreated osteoblastic metastases;
    lytic = soft tissue; haemangioma fatty (below cancellous bone). mean_hu
    is over all label voxels (partial volume included), core_hu the median
    of the label eroded by a voxel."""
    seen = set()
    for t, c in by_type.items():
        canc = c.anatomy["cancellous_hu"]
        for L in c.lesions:
            if L["diameter_mm"] < MIN_D:
                continue
            seen.add(t)
            h, core = L["mean_hu"], L["core_hu"]
            if t == "bone_island":
                assert h > 885 and core > 1000, L
            elif t == "osteoblastic_metastasis":
                assert canc < h < 885 and core < 885, (canc, L)
            elif t == "osteolytic_metastasis":
                assert core < 100, L
                if L["site"] in ("vertebral_body", "pelvis"):
                    assert h < canc, (canc, L)
                if L["diameter_mm"] >= 15:
                    assert h < 100, L
            elif t == "haemangioma":
                assert h < canc and core < 100, (canc, L)
            elif t == "mixed_metastasis":
                assert 60 < h < 750, L
            elif t == "endplate_osteitis":
                assert canc < h < 950, (canc, L)
            elif t == "schmorl_node":
                assert core < 300 and h < 600, L
            elif t == "degenerative":
                assert h > canc + 100, (canc, L)
    assert len(seen) >= 6, seen


def test_small_lesion_still_labelled():
    c = P.sample_training_case(77, n_lesions=6, lesion_types=["bone_island"])
    small = [L for L in c.lesions if L["diameter_mm"] < 6.5]
    for L in small:
        assert L["voxels"] >= 2, L
    assert all(L["voxels"] >= 1 for L in c.lesions)


def test_grid_independent_lesions():
    """The same seed gives the same lesions on any grid."""
    g = P.sample_geometry(np.random.default_rng([21, 1]))
    a = P.sample_training_case(21, n_lesions=2, lesion_types=["bone_island"])
    b = P.generate_case(21, geometry=dict(g, n_slices=max(
        1, int(g["n_slices"] * g["slice_thickness"] / 3.0)),
        slice_thickness=3.0, spacing_between_slices=3.0),
        spacing=(3.0, 3.0, 3.0), n_lesions=2, lesion_types=["bone_island"])
    ka = [(L["type"], L["vertebra"], L["diameter_mm"]) for L in a.lesions]
    kb = [(L["type"], L["vertebra"], L["diameter_mm"]) for L in b.lesions]
    assert ka == kb


def test_write_case_dicom_labels_truth(tmp_path):
    geo = dict(rows=128, cols=128, pixel_spacing=2.6, slice_thickness=2.5,
               spacing_between_slices=2.5, n_slices=60, top_frac=0.3,
               fov_dx=0.0, fov_dy=0.0)
    for seed in (31, 32, 36):          # ascending, descending, shuffled
        case = P.generate_case(seed, geometry=geo, n_lesions=3)
        out = str(tmp_path / ("c%d" % seed))
        truth = P.write_case(case, out, patient_id="PID%d" % seed)
        files = sorted(os.listdir(os.path.join(out, "dicom")))
        assert len(files) == case.hu.shape[0]
        assert files[0] == "CT00001.dcm"
        dss = [pydicom.dcmread(os.path.join(out, "dicom", f)) for f in files]
        dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
        assert np.allclose(np.diff(z), case.spacing[0], atol=1e-3)
        assert abs(z[0] - case.origin[2]) < 1e-3
        vol = np.stack([d.pixel_array.astype(np.int32) * float(d.RescaleSlope)
                        + float(d.RescaleIntercept) for d in dss])
        assert np.array_equal(vol, case.hu.astype(np.int32))
        d0 = dss[0]
        assert d0.Modality == "CT" and d0.Manufacturer == "Vigil phantom"
        assert d0.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert d0.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert list(d0.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert [float(v) for v in d0.ImageOrientationPatient] == [1, 0, 0,
                                                                  0, 1, 0]
        assert float(d0.PixelSpacing[0]) == pytest.approx(case.spacing[1])
        assert float(d0.SpacingBetweenSlices) == pytest.approx(2.5)
        assert d0.PatientID == "PID%d" % seed
        assert d0.StudyInstanceUID == truth["study_uid"]
        assert d0.SeriesInstanceUID == truth["series_uid"]
        assert len({d.SOPInstanceUID for d in dss}) == len(dss)
        assert sorted(int(d.InstanceNumber) for d in dss) == list(
            range(1, len(dss) + 1))
        # file names and instance numbers need not follow z
        by_name = [float(pydicom.dcmread(os.path.join(out, "dicom", f),
                                         stop_before_pixels=True)
                         .ImagePositionPatient[2]) for f in files]
        inst = [int(d.InstanceNumber) for d in dss]
        order = {31: "ascending", 32: "descending", 36: "shuffled"}[seed]
        assert truth["file_order"] == order
        assert (by_name == sorted(by_name)) == (order == "ascending")
        assert (inst == sorted(inst)) == (order == "ascending")
        # truth.json and labels.npz agree with each other and the case
        with open(os.path.join(out, "truth.json")) as f:
            t2 = json.load(f)
        assert t2["seed"] == seed and t2["shape"] == list(case.hu.shape)
        assert t2["positive"] == any(L["type"] in P.METASTATIC
                                     for L in t2["lesions"])
        npz = np.load(os.path.join(out, "labels.npz"))
        assert np.array_equal(npz["labels"], case.labels)
        assert np.allclose(npz["spacing"], t2["spacing"])
        assert np.allclose(npz["origin"], t2["origin"])
        for L in t2["lesions"]:
            m = npz["labels"] == L["id"]
            assert m.sum() == L["voxels"]
            # HU at the voxel nearest the centroid (a labelled one if the
            # centroid falls outside the lesion) matches the DICOM
            zz, yy, xx = np.nonzero(m)
            k = np.argmin((zz - (L["centroid_mm"][2] - case.origin[2])
                           / case.spacing[0]) ** 2
                          + (yy - (L["centroid_mm"][1] - case.origin[1])
                             / case.spacing[1]) ** 2
                          + (xx - (L["centroid_mm"][0] - case.origin[0])
                             / case.spacing[2]) ** 2)
            assert vol[zz[k], yy[k], xx[k]] == case.hu[zz[k], yy[k], xx[k]]
            assert abs(vol[m].mean() - L["mean_hu"]) < 0.1


def test_cli(tmp_path):
    exe = os.path.join(SCRIPTS, "make-bone-phantom")
    r = subprocess.run([exe, "--out", str(tmp_path), "--cases", "2",
                        "--seed", "40", "--spacing", "1.5", "--no-dicom",
                        "--lesion-type", "haemangioma"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("case-0000 seed=40 ")
    for i in range(2):
        d = tmp_path / ("case-%04d" % i)
        t = json.loads((d / "truth.json").read_text())
        assert t["seed"] == 40 + i and t["lesions"]
        assert {L["type"] for L in t["lesions"]} == {"haemangioma"}
        v = np.load(d / "volume.npz")["hu"]
        assert list(v.shape) == t["shape"]
        assert np.array_equal(
            np.unique(np.load(d / "labels.npz")["labels"]),
            np.arange(len(t["lesions"]) + 1))
