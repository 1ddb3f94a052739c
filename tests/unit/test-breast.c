/* The breast model's C side against the contract: header classification
 * and slot assignment, the pixel rendering (window, MONOCHROME1, the
 * mirroring of right breasts, colour, cine loops, compressed files), the
 * area resize against hand computation and torch, age and BMI from DICOM,
 * the manifest and its BI-RADS bands, the model's inputs with missing
 * modalities, and a whole analysis through the real runtime with a tiny
 * TorchScript model whose answer the test computes by hand. DICOM files
 * are made at test time with pydicom. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/analyse.h"
#include "inference/breast.h"
#include "inference/breast_input.h"
#include "inference/manifest.h"
#include "inference/runtime.h"
#include "server/error.h"
#include "storage/clinical.h"
#include "tests/unit/test.h"

/* The fixture writer: python3 fx.py DIR NAME kind=mg|us|ct key=value... */
static const char fixture_py[] =
    "# Breast fixtures: python3 fx.py DIR NAME [key=value ...]; one file DIR/NAME.dcm.\n"
    "import sys\n"
    "import zlib\n"
    "import numpy as np\n"
    "import pydicom\n"
    "from pydicom.dataset import Dataset, FileDataset, FileMetaDataset\n"
    "from pydicom.sequence import Sequence\n"
    "from pydicom.uid import ExplicitVRLittleEndian\n"
    "\n"
    "MG_FP = '1.2.840.10008.5.1.4.1.1.1.2'\n"
    "MG_PROC = '1.2.840.10008.5.1.4.1.1.1.2.1'\n"
    "US_1 = '1.2.840.10008.5.1.4.1.1.6.1'\n"
    "US_N = '1.2.840.10008.5.1.4.1.1.3.1'\n"
    "CT = '1.2.840.10008.5.1.4.1.1.2'\n"
    "ROOT = '1.2.826.0.1.3680043.10.1011.'\n"
    "\n"
    "def dataset(path, sop_class, modality, o):\n"
    "    sop_class = o.get('sop', sop_class)\n"
    "    uid = ROOT + o.get('uid', '3.' + str(zlib.crc32(path.encode())))\n"
    "    meta = FileMetaDataset()\n"
    "    meta.MediaStorageSOPClassUID = sop_class\n"
    "    meta.MediaStorageSOPInstanceUID = uid\n"
    "    meta.TransferSyntaxUID = ExplicitVRLittleEndian\n"
    "    ds = FileDataset(path, {}, file_meta=meta, preamble=b'\\0' * 128)\n"
    "    ds.is_little_endian = True\n"
    "    ds.is_implicit_VR = False\n"
    "    ds.SOPClassUID = sop_class\n"
    "    ds.SOPInstanceUID = uid\n"
    "    ds.Modality = modality\n"
    "    ds.StudyInstanceUID = ROOT + '1'\n"
    "    ds.SeriesInstanceUID = ROOT + {'MG': '2.1', 'US': '2.2', 'CT': '2.3'}[modality]\n"
    "    ds.PatientID = 'P1'\n"
    "    ds.PatientName = 'Test^Breast'\n"
    "    ds.InstanceNumber = int(o.get('instance', 1))\n"
    "    for key, tag in (('age', 'PatientAge'), ('birth', 'PatientBirthDate'),\n"
    "                     ('date', 'StudyDate'), ('size', 'PatientSize'),\n"
    "                     ('weight', 'PatientWeight'), ('desc', 'SeriesDescription'),\n"
    "                     ('comments', 'ImageComments'), ('orient', "
    "'PatientOrientation')):\n"
    "        if key in o:\n"
    "            setattr(ds, tag, o[key].split('/') if key == 'orient' else o[key])\n"
    "    lat = o.get('lat', '')\n"
    "    if lat and o.get('lat_tag', 'ImageLaterality') == 'ImageLaterality':\n"
    "        ds.ImageLaterality = lat\n"
    "    elif lat:\n"
    "        ds.Laterality = lat\n"
    "    return ds\n"
    "\n"
    "def grey(ds, a, bits):\n"
    "    ds.SamplesPerPixel = 1\n"
    "    ds.PhotometricInterpretation = 'MONOCHROME2'\n"
    "    ds.BitsAllocated = 16 if a.dtype == np.uint16 else 8\n"
    "    ds.BitsStored = bits\n"
    "    ds.HighBit = bits - 1\n"
    "    ds.PixelRepresentation = 0\n"
    "    ds.Rows, ds.Columns = a.shape[-2], a.shape[-1]\n"
    "    ds.PixelData = a.tobytes()\n"
    "\n"
    "def halves(o, h, w, dtype):\n"
    "    a = np.full((h, w), int(o.get('value', 1000)), dtype=dtype)\n"
    "    if 'left' in o:  # the left half of the image another value\n"
    "        a[:, : w // 2] = int(o['left'])\n"
    "    return a\n"
    "\n"
    "def mg(path, o):\n"
    "    sop = MG_PROC if o.get('processing') else MG_FP\n"
    "    ds = dataset(path, sop, 'MG', o)\n"
    "    ds.ViewPosition = o.get('view', 'CC')\n"
    "    ds.PresentationIntentType = 'FOR PROCESSING' if o.get('processing') else 'FOR "
    "PRESENTATION'\n"
    "    a = halves(o, int(o.get('rows', 16)), int(o.get('cols', 12)), np.uint16)\n"
    "    grey(ds, a, 12)\n"
    "    if o.get('mono1'):\n"
    "        ds.PhotometricInterpretation = 'MONOCHROME1'\n"
    "    if 'window' in o:\n"
    "        c, w = o['window'].split(',')\n"
    "        ds.WindowCenter, ds.WindowWidth = c, w\n"
    "    if 'rescale' in o:\n"
    "        s, i = o['rescale'].split(',')\n"
    "        ds.RescaleSlope, ds.RescaleIntercept = s, i\n"
    "    return ds\n"
    "\n"
    "def us(path, o):\n"
    "    frames = int(o.get('frames', 1))\n"
    "    ds = dataset(path, US_N if frames > 1 else US_1, 'US', o)\n"
    "    h, w = int(o.get('rows', 8)), int(o.get('cols', 10))\n"
    "    mode = o.get('mode', 'B')\n"
    "    region = Dataset()\n"
    "    region.RegionDataType = 2 if mode == 'D' else 1\n"
    "    region.RegionSpatialFormat = 1\n"
    "    ds.SequenceOfUltrasoundRegions = Sequence([region])\n"
    "    if mode == 'D' and not o.get('region_only'):\n"
    "        ds.UltrasoundColorDataPresent = 1\n"
    "    if 'ybr422' in o:  # uncompressed 4:2:2: Y1 Y2 Cb Cr per two pixels\n"
    "        y, cb, cr = [int(x) for x in o['ybr422'].split(',')]\n"
    "        ds.SamplesPerPixel = 3\n"
    "        ds.PhotometricInterpretation = 'YBR_FULL_422'\n"
    "        ds.PlanarConfiguration = 0\n"
    "        ds.BitsAllocated = ds.BitsStored = 8\n"
    "        ds.HighBit = 7\n"
    "        ds.PixelRepresentation = 0\n"
    "        ds.Rows, ds.Columns = h, w\n"
    "        ds.PixelData = bytes([y, y, cb, cr]) * (frames * h * w // 2)\n"
    "    elif 'rgb' in o or 'ybr' in o:\n"
    "        v = [int(x) for x in o.get('rgb', o.get('ybr')).split(',')]\n"
    "        a = np.zeros((frames, h, w, 3), dtype=np.uint8)\n"
    "        a[...] = v\n"
    "        ds.SamplesPerPixel = 3\n"
    "        ds.PhotometricInterpretation = 'YBR_FULL' if 'ybr' in o else 'RGB'\n"
    "        ds.PlanarConfiguration = 0\n"
    "        ds.BitsAllocated = ds.BitsStored = 8\n"
    "        ds.HighBit = 7\n"
    "        ds.PixelRepresentation = 0\n"
    "        ds.Rows, ds.Columns = h, w\n"
    "        ds.PixelData = a.tobytes()\n"
    "    else:\n"
    "        a = np.zeros((frames, h, w), dtype=np.uint8)\n"
    "        for f in range(frames):\n"
    "            a[f] = int(o.get('value', 51)) + 10 * f\n"
    "        grey(ds, a, 8)\n"
    "    if frames > 1:\n"
    "        ds.NumberOfFrames = frames\n"
    "        ds.FrameIncrementPointer = pydicom.tag.Tag('FrameTime')\n"
    "        ds.FrameTime = 33.3\n"
    "    return ds\n"
    "\n"
    "def ct(path, o):\n"
    "    ds = dataset(path, CT, 'CT', o)\n"
    "    grey(ds, np.zeros((4, 4), dtype=np.uint16), 12)\n"
    "    return ds\n"
    "\n"
    "out, name = sys.argv[1], sys.argv[2]\n"
    "o = dict(kv.split('=', 1) for kv in sys.argv[3:])\n"
    "kind = o.pop('kind')\n"
    "path = out + '/' + name + '.dcm'\n"
    "ds = {'mg': mg, 'us': us, 'ct': ct}[kind](path, o)\n"
    "ds.save_as(path, write_like_original=False)\n"
    "\n";

/* Writes DIR/NAME.dcm with the fixture writer's ARGS. */
static int fixture(const char *dir, const char *name, const char *args)
{
    static int written;
    char py[512];
    snprintf(py, sizeof py, "%s/fx.py", test_tmpdir());
    if (!written) {
        FILE *f = fopen(py, "w");
        if (!f)
            return -1;
        fputs(fixture_py, f);
        fclose(f);
        written = 1;
    }
    return test_sh("mkdir -p %s && /usr/bin/python3 -W ignore %s %s %s %s", dir, py, dir,
                   name, args);
}

static const char *path_of(const char *dir, const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%.400s/%.64s.dcm", dir, name);
    return buf[k];
}

/* A breast manifest with MG and US sizes; the clinical list deliberately
 * not in the model's order (it is mapped by name). */
static int write_manifest(const char *dir, int mg_h, int mg_w, int us_h, int us_w)
{
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(
        f,
        "{\"name\": \"test-breast\", \"version\": \"0.0.1\", \"task\": \"breast_risk\","
        " \"model\": \"breast.pt\", \"not_for_clinical_use\": true,"
        " \"input\": {\"mg_size\": [%d, %d], \"us_size\": [%d, %d], \"clinical\": ["
        "{\"name\": \"bmi\", \"offset\": 25, \"scale\": 5},"
        "{\"name\": \"age\", \"offset\": 55, \"scale\": 15},"
        "{\"name\": \"family_history\", \"offset\": 0, \"scale\": 1},"
        "{\"name\": \"palpable_lump\", \"offset\": 0, \"scale\": 1},"
        "{\"name\": \"nipple_discharge\", \"offset\": 0, \"scale\": 1},"
        "{\"name\": \"pain\", \"offset\": 0, \"scale\": 1},"
        "{\"name\": \"prior_biopsy\", \"offset\": 0, \"scale\": 1},"
        "{\"name\": \"menopausal_status\", \"offset\": 0.5, \"scale\": 0.5},"
        "{\"name\": \"hormone_therapy\", \"offset\": 0, \"scale\": 1},"
        "{\"name\": \"breast_density\", \"offset\": 0.5, \"scale\": 0.5}]},"
        " \"classes\": [{\"name\": \"T1\", \"malignant\": false, \"meaning\": \"benign\"},"
        "{\"name\": \"T2\", \"malignant\": false}, {\"name\": \"T3\", \"malignant\": true},"
        "{\"name\": \"T4\", \"malignant\": true}, {\"name\": \"T5\", \"malignant\": true}],"
        " \"birads\": [{\"below\": 0.02, \"category\": \"3\"},"
        "{\"below\": 0.10, \"category\": \"4A\"}, {\"below\": 0.50, \"category\": \"4B\"},"
        "{\"below\": 0.95, \"category\": \"4C\"}, {\"below\": 1.01, \"category\": "
        "\"5\"}]}\n",
        mg_h, mg_w, us_h, us_w);
    fclose(f);
    return 0;
}

static int load_manifest(const char *dir, vg_manifest_t *m)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    int rc = vg_manifest_load(path, m, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "manifest: %s\n", err);
    return rc;
}

/* The tiny model: logits are five numbers the test can compute from what
 * it put in, softmax inside as the contract says. */
static int make_model(const char *path)
{
    char py[512];
    snprintf(py, sizeof py, "%s/export.py", test_tmpdir());
    FILE *f = fopen(py, "w");
    if (!f)
        return -1;
    fprintf(
        f,
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, mg, mg_present, us, us_present, clin, clin_present):\n"
        "        f0 = mg[:, 0].mean(dim=(1, 2, 3))\n"
        "        f1 = mg[:, 1].mean(dim=(1, 2, 3))\n"
        "        f2 = us_present.sum(dim=1) * 0.5\n"
        "        f3 = (clin * clin_present).sum(dim=1)\n"
        "        f4 = mg_present.sum(dim=1) + us[:, 0].mean(dim=(1, 2, 3))\n"
        "        return torch.softmax(torch.stack([f0, f1, f2, f3, f4], dim=1), dim=1)\n"
        "torch.jit.script(M()).save('%s')\n",
        path);
    fclose(f);
    return test_sh("/usr/bin/python3 %s", py);
}

TEST_IMPL(breast_age_bmi)
{
    double age = -1, bmi = -1;
    ASSERT_EQ(vg_breast_age("052Y", "", "", &age), 1);
    ASSERT_DBL_NEAR(age, 52, 1e-12);
    ASSERT_EQ(vg_breast_age("006M", NULL, NULL, &age), 1);
    ASSERT_DBL_NEAR(age, 0.5, 1e-12);
    ASSERT_EQ(vg_breast_age("010W", NULL, NULL, &age), 1);
    ASSERT_DBL_NEAR(age, 70 / 365.25, 1e-12);
    ASSERT_EQ(vg_breast_age("100D", NULL, NULL, &age), 1);
    ASSERT_DBL_NEAR(age, 100 / 365.25, 1e-12);
    /* Without PatientAge: completed years from the dates. */
    ASSERT_EQ(vg_breast_age("", "20240315", "19700316", &age), 1);
    ASSERT_DBL_NEAR(age, 53, 1e-12);
    ASSERT_EQ(vg_breast_age(NULL, "20240315", "19700315", &age), 1);
    ASSERT_DBL_NEAR(age, 54, 1e-12);
    /* PatientAge wins over the dates. */
    ASSERT_EQ(vg_breast_age("060Y", "20240315", "19700315", &age), 1);
    ASSERT_DBL_NEAR(age, 60, 1e-12);
    age = -1;
    ASSERT_EQ(vg_breast_age("", "2024", "19700315", &age), 0);
    ASSERT_EQ(vg_breast_age("YYYY", NULL, "19700315", &age), 0);
    ASSERT_DBL_NEAR(age, -1, 0);
    ASSERT_EQ(vg_breast_bmi(70, 1.75, &bmi), 1);
    ASSERT_DBL_NEAR(bmi, 70 / (1.75 * 1.75), 1e-12);
    bmi = -1;
    ASSERT_EQ(vg_breast_bmi(70, 175, &bmi), 0); /* centimetres: not a size in metres */
    ASSERT_EQ(vg_breast_bmi(0, 1.75, &bmi), 0);
    ASSERT_EQ(vg_breast_bmi(70, 0, &bmi), 0);
    ASSERT_DBL_NEAR(bmi, -1, 0);
    /* From a file's attributes: no PatientAge, dates and weight/size. */
    char dir[512], note[128];
    snprintf(dir, sizeof dir, "%s/d", test_tmpdir());
    ASSERT_EQ(fixture(dir, "a",
                      "kind=mg lat=L view=CC birth=19600701 date=20240630"
                      " weight=63 size=1.60"),
              0);
    ASSERT_EQ(fixture(dir, "b", "kind=mg lat=L view=MLO"), 0);
    vg_breast_image_t img;
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "a"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.has_age, 1);
    ASSERT_DBL_NEAR(img.age, 63, 1e-12);
    ASSERT_EQ(img.has_bmi, 1);
    ASSERT_DBL_NEAR(img.bmi, 63 / (1.6 * 1.6), 1e-9);
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "b"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.has_age, 0);
    ASSERT_EQ(img.has_bmi, 0);
    return 0;
}

TEST_IMPL(breast_area_resize)
{
    /* 4 x 6 -> 3 x 4: rows {0,1} {1,2} {2,3}, columns {0,1} {1,2} {3,4} {4,5}. */
    float in[24], out[12];
    for (int i = 0; i < 24; i++)
        in[i] = (float)i; /* in[r][c] = 6r + c */
    vg_breast_area_resize(in, 1, 4, 6, out, 3, 4);
    ASSERT_DBL_NEAR(out[0 * 4 + 0], (0 + 1 + 6 + 7) / 4.0, 1e-6);
    ASSERT_DBL_NEAR(out[0 * 4 + 1], (1 + 2 + 7 + 8) / 4.0, 1e-6);
    ASSERT_DBL_NEAR(out[0 * 4 + 2], (3 + 4 + 9 + 10) / 4.0, 1e-6);
    ASSERT_DBL_NEAR(out[1 * 4 + 2], (9 + 10 + 15 + 16) / 4.0, 1e-6);
    ASSERT_DBL_NEAR(out[2 * 4 + 3], (16 + 17 + 22 + 23) / 4.0, 1e-6);
    /* Up: 2 x 2 -> 3 x 3; the middle averages all four. */
    float small[4] = {1, 2, 3, 5}, up[9];
    vg_breast_area_resize(small, 1, 2, 2, up, 3, 3);
    ASSERT_DBL_NEAR(up[0], 1, 1e-6);
    ASSERT_DBL_NEAR(up[4], (1 + 2 + 3 + 5) / 4.0, 1e-6);
    ASSERT_DBL_NEAR(up[8], 5, 1e-6);
    ASSERT_DBL_NEAR(up[1], 1.5, 1e-6);
    /* Two channels stay apart; and the same numbers as torch's
     * adaptive_avg_pool2d on an odd size. */
    char py[512], data[512];
    snprintf(py, sizeof py, "%s/pool.py", test_tmpdir());
    snprintf(data, sizeof data, "%s/pool.bin", test_tmpdir());
    FILE *f = fopen(py, "w");
    ASSERT(f != NULL);
    fprintf(f,
            "import torch\n"
            "x = torch.arange(2 * 13 * 11, dtype=torch.float32).reshape(1, 2, 13, 11)\n"
            "x = torch.sin(x) * 100\n"
            "y = torch.nn.functional.adaptive_avg_pool2d(x, (5, 7))\n"
            "open('%s', 'wb').write(x.numpy().tobytes() + y.numpy().tobytes())\n",
            data);
    fclose(f);
    ASSERT_EQ(test_sh("/usr/bin/python3 %s", py), 0);
    float x[2 * 13 * 11], y[2 * 5 * 7], mine[2 * 5 * 7];
    f = fopen(data, "rb");
    ASSERT(f != NULL);
    ASSERT_EQ(fread(x, sizeof x, 1, f), 1);
    ASSERT_EQ(fread(y, sizeof y, 1, f), 1);
    fclose(f);
    vg_breast_area_resize(x, 2, 13, 11, mine, 5, 7);
    for (int i = 0; i < 2 * 5 * 7; i++)
        ASSERT_DBL_NEAR(mine[i], y[i], 1e-4);
    return 0;
}

TEST_IMPL(breast_manifest)
{
    const char *dir = test_tmpdir();
    vg_manifest_t m;
    ASSERT_EQ(write_manifest(dir, 32, 24, 16, 20), 0);
    ASSERT_EQ(load_manifest(dir, &m), 0);
    ASSERT_STR_EQ(m.task, "breast_risk");
    ASSERT_EQ(m.mg_size[0], 32);
    ASSERT_EQ(m.mg_size[1], 24);
    ASSERT_EQ(m.us_size[0], 16);
    ASSERT_EQ(m.us_size[1], 20);
    ASSERT_EQ(m.n_clinical, VG_CLINICAL_N);
    /* Listed bmi first, kept in the model's order. */
    ASSERT_STR_EQ(m.clinical[VG_CLIN_AGE].name, "age");
    ASSERT_DBL_NEAR(m.clinical[VG_CLIN_AGE].offset, 55, 0);
    ASSERT_DBL_NEAR(m.clinical[VG_CLIN_AGE].scale, 15, 0);
    ASSERT_STR_EQ(m.clinical[VG_CLIN_BMI].name, "bmi");
    ASSERT_STR_EQ(m.clinical[VG_CLIN_BREAST_DENSITY].name, "breast_density");
    ASSERT_EQ(m.n_classes, 5);
    ASSERT_EQ(m.classes[1].malignant, 0);
    ASSERT_EQ(m.classes[2].malignant, 1);
    ASSERT_STR_EQ(m.classes[0].meaning, "benign");
    ASSERT_EQ(m.n_birads, 5);
    /* The band edges: "below" is exclusive. */
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.0), "3");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.0199), "3");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.02), "4A");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.0999), "4A");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.10), "4B");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.4999), "4B");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.50), "4C");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.9499), "4C");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 0.95), "5");
    ASSERT_STR_EQ(vg_manifest_birads(&m, 1.0), "5");
    /* A clinical value missing is an error that names the list. */
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    ASSERT_EQ(
        test_sh("sed -i 's/{\"name\": \"pain\", \"offset\": 0, \"scale\": 1},//' %s", path),
        0);
    ASSERT_EQ(vg_manifest_load(path, &m, err, sizeof err), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "input.clinical");
    /* Bands out of order are refused. */
    ASSERT_EQ(write_manifest(dir, 32, 24, 16, 20), 0);
    ASSERT_EQ(test_sh("sed -i 's/\"below\": 0.10,/\"below\": 0.01,/' %s", path), 0);
    ASSERT_EQ(vg_manifest_load(path, &m, err, sizeof err), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "birads[1]");
    /* A category the report cannot code is refused at load. */
    ASSERT_EQ(write_manifest(dir, 32, 24, 16, 20), 0);
    ASSERT_EQ(test_sh("sed -i 's/\"category\": \"4A\"/\"category\": \"2\"/' %s", path), 0);
    ASSERT_EQ(vg_manifest_load(path, &m, err, sizeof err), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "category \"2\" is not one of 3, 4A, 4B, 4C, 5");
    /* The bone manifest loads as before. */
    ASSERT_EQ(vg_manifest_load("models/bone/manifest.json", &m, err, sizeof err), 0);
    ASSERT_STR_EQ(m.task, "bone_lesions");
    ASSERT_EQ(m.n_classes, 8);
    ASSERT_DBL_NEAR(m.spacing_mm, 1.5, 1e-12);
    ASSERT_EQ(m.window_voxels, 64);
    ASSERT_STR_EQ(m.classes[0].code.value, "14799000");
    ASSERT_EQ(m.n_birads, 0);
    return 0;
}

TEST_IMPL(breast_classify)
{
    char dir[512], note[128];
    snprintf(dir, sizeof dir, "%s/d", test_tmpdir());
    ASSERT_EQ(fixture(dir, "lcc", "kind=mg lat=L view=CC window=2048,4096"), 0);
    ASSERT_EQ(fixture(dir, "rmlo", "kind=mg lat=R view=MLO processing=1"), 0);
    ASSERT_EQ(fixture(dir, "spot", "kind=mg lat=R view=ML"), 0);
    ASSERT_EQ(fixture(dir, "nolat", "kind=mg view=CC"), 0);
    ASSERT_EQ(fixture(dir, "b", "kind=us lat=R"), 0);
    ASSERT_EQ(
        fixture(dir, "dflag", "kind=us lat=L mode=D rgb=200,10,10 lat_tag=Laterality"), 0);
    ASSERT_EQ(fixture(dir, "dregion", "kind=us mode=D region_only=1"), 0);
    ASSERT_EQ(fixture(dir, "swe", "kind=us lat=L rgb=1,2,3 desc=BREAST comments=SWE"), 0);
    ASSERT_EQ(fixture(dir, "strain", "kind=us lat=L desc=ELASTOGRAPHY comments=STRAIN"), 0);
    ASSERT_EQ(fixture(dir, "ct", "kind=ct"), 0);
    ASSERT_EQ(fixture(dir, "sc", "kind=us lat=L sop=1.2.840.10008.5.1.4.1.1.7"), 0);
    ASSERT_EQ(fixture(dir, "dx", "kind=mg lat=R view=CC sop=1.2.840.10008.5.1.4.1.1.1.1"), 0);
    ASSERT_EQ(test_sh("echo 'not dicom' > %s/junk.dcm", dir), 0);
    vg_breast_image_t img;
    /* A screenshot with modality US is not used; a DX mammogram is. */
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "sc"), &img, note, sizeof note),
              VG_ENOTANALYSABLE);
    ASSERT_STR_CONTAINS(note, "1.2.840.10008.5.1.4.1.1.7");
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "dx"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.kind, VG_BREAST_MG);
    ASSERT_EQ(img.laterality, 'R');
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "lcc"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.kind, VG_BREAST_MG);
    ASSERT_EQ(img.laterality, 'L');
    ASSERT_EQ(img.view, VG_MG_CC);
    ASSERT_EQ(img.for_processing, 0);
    ASSERT_EQ(img.has_window, 1);
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "rmlo"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.laterality, 'R');
    ASSERT_EQ(img.view, VG_MG_MLO);
    ASSERT_EQ(img.for_processing, 1);
    ASSERT_EQ(img.has_window, 0);
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "spot"), &img, note, sizeof note),
              VG_ENOTANALYSABLE);
    ASSERT_STR_CONTAINS(note, "'ML'");
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "nolat"), &img, note, sizeof note),
              VG_ENOTANALYSABLE);
    ASSERT_STR_CONTAINS(note, "laterality");
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "b"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.kind, VG_BREAST_US);
    ASSERT_EQ(img.us_mode, VG_US_BMODE);
    ASSERT_EQ(img.laterality, 'R');
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "dflag"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.us_mode, VG_US_DOPPLER);
    ASSERT_EQ(img.laterality, 'L'); /* from Laterality (0020,0060) */
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "dregion"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.us_mode, VG_US_DOPPLER);
    ASSERT_EQ(img.laterality, 0);
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "swe"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.us_mode, VG_US_ELASTO);
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "strain"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.us_mode, VG_US_ELASTO);
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "ct"), &img, note, sizeof note),
              VG_ENOTANALYSABLE);
    ASSERT_STR_CONTAINS(note, "modality CT");
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "junk"), &img, note, sizeof note),
              VG_EPARSE);
    return 0;
}

static vg_breast_image_t mk(int kind, char lat, int view_or_mode, int fp, int number,
                            const char *sop)
{
    vg_breast_image_t m;
    memset(&m, 0, sizeof m);
    m.kind = kind;
    m.laterality = lat;
    if (kind == VG_BREAST_MG)
        m.view = view_or_mode;
    else
        m.us_mode = view_or_mode;
    m.for_processing = fp;
    m.instance_number = number;
    m.frames = 1;
    m.path = sop;
    snprintf(m.sop_uid, sizeof m.sop_uid, "%s", sop);
    return m;
}

TEST_IMPL(breast_assign_slots)
{
    vg_breast_image_t im[] = {
        mk(VG_BREAST_MG, 'L', VG_MG_CC, 1, 1, "lcc-proc"),   /* 0 */
        mk(VG_BREAST_MG, 'L', VG_MG_CC, 0, 5, "lcc-pres"),   /* 1: preferred */
        mk(VG_BREAST_MG, 'L', VG_MG_MLO, 1, 2, "lmlo-proc"), /* 2: alone */
        mk(VG_BREAST_US, 'L', VG_US_BMODE, 0, 3, "lb3"),     /* 3: third */
        mk(VG_BREAST_US, 'L', VG_US_BMODE, 0, 1, "lb1"),     /* 4 */
        mk(VG_BREAST_US, 'L', VG_US_BMODE, 0, 2, "lb2b"),    /* 5: same number */
        mk(VG_BREAST_US, 'L', VG_US_BMODE, 0, 2, "lb2a"),    /* 6: UID breaks the tie */
        mk(VG_BREAST_US, 0, VG_US_DOPPLER, 0, 1, "nolat-d"), /* 7: to L, the only MG side */
        mk(VG_BREAST_US, 'R', VG_US_ELASTO, 0, 4, "re2"),    /* 8 */
        mk(VG_BREAST_US, 'R', VG_US_ELASTO, 0, 1, "re1"),    /* 9 */
        mk(0, 'R', VG_MG_CC, 0, 1, "unusable"),              /* 10: kind 0 */
    };
    int n = (int)(sizeof im / sizeof im[0]);
    vg_breast_case_t c[2];
    char notes[512], mods[128];
    ASSERT_EQ(vg_breast_assign(im, n, c, notes, sizeof notes), 2);
    ASSERT_EQ(c[0].laterality, 'L');
    ASSERT(c[0].mg[VG_MG_CC] == &im[1]);
    ASSERT(c[0].mg[VG_MG_MLO] == &im[2]);
    ASSERT(c[0].us[0] == &im[4]);
    ASSERT(c[0].us[1] == &im[6]);
    ASSERT(c[0].us[2] == &im[7]);
    ASSERT(c[0].us[3] == NULL);
    ASSERT(c[0].us[4] == NULL);
    ASSERT_EQ(c[1].laterality, 'R');
    ASSERT(c[1].mg[0] == NULL && c[1].mg[1] == NULL);
    ASSERT(c[1].us[4] == &im[9]);
    ASSERT(c[1].us[5] == &im[8]);
    ASSERT(c[1].us[0] == NULL);
    vg_breast_modalities(&c[0], mods, sizeof mods);
    ASSERT_STR_EQ(mods, "MG_CC,MG_MLO,US_B1,US_B2,US_DOPPLER1");
    vg_breast_modalities(&c[1], mods, sizeof mods);
    ASSERT_STR_EQ(mods, "US_ELASTO1,US_ELASTO2");
    ASSERT_STR_CONTAINS(notes, "L MLO from a For Processing image");
    ASSERT_STR_CONTAINS(notes, "min-max");
    ASSERT_STR_CONTAINS(notes, "more than two");
    ASSERT(strstr(notes, "L CC from a For Processing") == NULL);
    /* With mammograms of both sides, an ultrasound without laterality
     * has no side: not used, and said so. */
    im[8] = mk(VG_BREAST_MG, 'R', VG_MG_CC, 0, 1, "rcc");
    ASSERT_EQ(vg_breast_assign(im, n, c, notes, sizeof notes), 2);
    ASSERT(c[0].us[2] == NULL);
    ASSERT(c[1].mg[VG_MG_CC] == &im[8]);
    ASSERT_STR_CONTAINS(notes, "without laterality not used");
    /* Nothing usable: no case. */
    ASSERT_EQ(vg_breast_assign(&im[10], 1, c, notes, sizeof notes), 0);
    return 0;
}

/* Renders one fixture at its own size (or H x W). */
static int render(const char *path, int h, int w, float *out)
{
    vg_breast_image_t img;
    char note[256];
    int rc = vg_breast_image_read(path, &img, note, sizeof note);
    if (rc == 0)
        rc = vg_breast_image_render(&img, h, w, out, note, sizeof note);
    if (rc < 0)
        fprintf(stderr, "%s: %s\n", path, note);
    return rc;
}

TEST_IMPL(breast_render_mg)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/d", test_tmpdir());
    /* 16 x 12, left half 4000, right half 1000, window 2048/4096. */
    const char *common = "kind=mg view=CC rows=16 cols=12 left=4000 value=1000";
    char args[512];
    snprintf(args, sizeof args, "%s lat=R orient=P/L window=2048,4096", common);
    ASSERT_EQ(fixture(dir, "r", args), 0);
    snprintf(args, sizeof args, "%s lat=L orient=A/R window=2048,4096", common);
    ASSERT_EQ(fixture(dir, "l", args), 0);
    snprintf(args, sizeof args, "%s lat=R window=2048,4096", common); /* no orientation */
    ASSERT_EQ(fixture(dir, "rnoorient", args), 0);
    snprintf(args, sizeof args, "%s lat=L orient=A/R window=2048,4096 mono1=1", common);
    ASSERT_EQ(fixture(dir, "mono1", args), 0);
    snprintf(args, sizeof args, "%s lat=L orient=A/R processing=1", common);
    ASSERT_EQ(fixture(dir, "proc", args), 0);
    snprintf(args, sizeof args, "%s lat=L orient=A/R window=2048,4096 rescale=0.5,100",
             common);
    ASSERT_EQ(fixture(dir, "rescale", args), 0);
    double bright = (4000 - 2047.5) / 4095 + 0.5, dark = (1000 - 2047.5) / 4095 + 0.5;
    float px[16 * 12];
    ASSERT_EQ(render(path_of(dir, "l"), 16, 12, px), 0);
    ASSERT_DBL_NEAR(px[0], bright, 1e-6);
    ASSERT_DBL_NEAR(px[11], dark, 1e-6);
    /* The right breast, nipple left ("P"), is mirrored: bright on the right. */
    ASSERT_EQ(render(path_of(dir, "r"), 16, 12, px), 0);
    ASSERT_DBL_NEAR(px[0], dark, 1e-6);
    ASSERT_DBL_NEAR(px[5], dark, 1e-6);
    ASSERT_DBL_NEAR(px[6], bright, 1e-6);
    ASSERT_DBL_NEAR(px[15 * 12 + 11], bright, 1e-6);
    /* Without PatientOrientation the laterality decides. */
    ASSERT_EQ(render(path_of(dir, "rnoorient"), 16, 12, px), 0);
    ASSERT_DBL_NEAR(px[0], dark, 1e-6);
    ASSERT_DBL_NEAR(px[11], bright, 1e-6);
    ASSERT_EQ(render(path_of(dir, "mono1"), 16, 12, px), 0);
    ASSERT_DBL_NEAR(px[0], 1 - bright, 1e-6);
    ASSERT_DBL_NEAR(px[11], 1 - dark, 1e-6);
    /* For Processing without a window: min-max. */
    ASSERT_EQ(render(path_of(dir, "proc"), 16, 12, px), 0);
    ASSERT_DBL_NEAR(px[0], 1, 1e-6);
    ASSERT_DBL_NEAR(px[11], 0, 1e-6);
    /* The rescale goes first: 4000 * 0.5 + 100 = 2100. */
    ASSERT_EQ(render(path_of(dir, "rescale"), 16, 12, px), 0);
    ASSERT_DBL_NEAR(px[0], (2100 - 2047.5) / 4095 + 0.5, 1e-6);
    ASSERT_DBL_NEAR(px[11], (600 - 2047.5) / 4095 + 0.5, 1e-6);
    /* Resized to 4 x 3 after the flip: columns {0..3} {4..7} {8..11}; the
     * middle one straddles the edge (2 dark, 2 bright). */
    float small[12];
    ASSERT_EQ(render(path_of(dir, "r"), 4, 3, small), 0);
    ASSERT_DBL_NEAR(small[0], dark, 1e-6);
    ASSERT_DBL_NEAR(small[1], (dark + bright) / 2, 1e-6);
    ASSERT_DBL_NEAR(small[2], bright, 1e-6);
    /* JPEG-LS and RLE copies decode to the same values. */
    float plain[16 * 12], other[16 * 12];
    ASSERT_EQ(render(path_of(dir, "r"), 16, 12, plain), 0);
    ASSERT_EQ(test_sh("dcmcjpls %s %s/jls.dcm && dcmcrle %s %s/rle.dcm", path_of(dir, "r"),
                      dir, path_of(dir, "r"), dir),
              0);
    ASSERT_EQ(render(path_of(dir, "jls"), 16, 12, other), 0);
    ASSERT_EQ(memcmp(plain, other, sizeof plain), 0);
    ASSERT_EQ(render(path_of(dir, "rle"), 16, 12, other), 0);
    ASSERT_EQ(memcmp(plain, other, sizeof plain), 0);
    return 0;
}

TEST_IMPL(breast_render_us)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/d", test_tmpdir());
    ASSERT_EQ(fixture(dir, "grey", "kind=us lat=L value=51"), 0);
    ASSERT_EQ(fixture(dir, "cine5", "kind=us lat=L value=10 frames=5"), 0);
    ASSERT_EQ(fixture(dir, "cine4", "kind=us lat=L value=10 frames=4"), 0);
    ASSERT_EQ(fixture(dir, "rgb", "kind=us lat=L mode=D rgb=255,0,51"), 0);
    ASSERT_EQ(fixture(dir, "ybr", "kind=us lat=L mode=D ybr=100,150,90"), 0);
    float px[3 * 8 * 10];
    const int plane = 8 * 10;
    ASSERT_EQ(render(path_of(dir, "grey"), 8, 10, px), 0);
    for (int c = 0; c < 3; c++)
        ASSERT_DBL_NEAR(px[c * plane + 17], 51 / 255.0, 1e-6);
    /* Frames hold 10, 20, 30, ...: the middle one is index n/2. */
    ASSERT_EQ(render(path_of(dir, "cine5"), 8, 10, px), 0);
    ASSERT_DBL_NEAR(px[0], 30 / 255.0, 1e-6);
    ASSERT_EQ(render(path_of(dir, "cine4"), 8, 10, px), 0);
    ASSERT_DBL_NEAR(px[2 * plane + 5], 30 / 255.0, 1e-6);
    ASSERT_EQ(render(path_of(dir, "rgb"), 8, 10, px), 0);
    ASSERT_DBL_NEAR(px[0], 1.0, 1e-6);
    ASSERT_DBL_NEAR(px[plane], 0.0, 1e-6);
    ASSERT_DBL_NEAR(px[2 * plane], 0.2, 1e-6);
    /* YBR_FULL: R = Y + 1.402 (Cr - 128), G = Y - 0.344136 (Cb - 128) -
     * 0.714136 (Cr - 128), B = Y + 1.772 (Cb - 128). */
    ASSERT_EQ(render(path_of(dir, "ybr"), 8, 10, px), 0);
    ASSERT_DBL_NEAR(px[0], (100 + 1.402 * -38) / 255, 1e-5);
    ASSERT_DBL_NEAR(px[plane], (100 - 0.344136 * 22 - 0.714136 * -38) / 255, 1e-5);
    ASSERT_DBL_NEAR(px[2 * plane], (100 + 1.772 * 22) / 255, 1e-5);
    ASSERT_EQ(fixture(dir, "ybr422", "kind=us lat=L mode=D ybr422=100,150,90"), 0);
    float y422[3 * 8 * 10];
    ASSERT_EQ(render(path_of(dir, "ybr422"), 8, 10, y422), 0);
    ASSERT_EQ(memcmp(px, y422, sizeof px), 0);
    /* Lossy JPEG (YBR_FULL_422 in the file) decodes to about the RGB it
     * was made from; the same decoded without colour conversion (YBR_FULL,
     * colour by plane) too. */
    ASSERT_EQ(
        test_sh("dcmcjpeg +eb %s %s/lossy.dcm && dcmdjpeg +cn %s/lossy.dcm %s/ybrp.dcm",
                path_of(dir, "rgb"), dir, dir, dir),
        0);
    ASSERT_EQ(render(path_of(dir, "lossy"), 8, 10, y422), 0);
    ASSERT_DBL_NEAR(y422[2 * 10 + 3], 1.0, 0.02);
    ASSERT_DBL_NEAR(y422[plane + 2 * 10 + 3], 0.0, 0.02);
    ASSERT_DBL_NEAR(y422[2 * plane + 2 * 10 + 3], 0.2, 0.02);
    ASSERT_EQ(render(path_of(dir, "ybrp"), 8, 10, y422), 0);
    ASSERT_DBL_NEAR(y422[2 * 10 + 3], 1.0, 0.02);
    ASSERT_DBL_NEAR(y422[plane + 2 * 10 + 3], 0.0, 0.02);
    ASSERT_DBL_NEAR(y422[2 * plane + 2 * 10 + 3], 0.2, 0.02);
    /* A lossless JPEG copy of the cine loop decodes the same. */
    float other[3 * 8 * 10];
    ASSERT_EQ(render(path_of(dir, "cine5"), 8, 10, px), 0);
    ASSERT_EQ(test_sh("dcmcjpeg +e1 %s %s/cinej.dcm", path_of(dir, "cine5"), dir), 0);
    ASSERT_EQ(render(path_of(dir, "cinej"), 8, 10, other), 0);
    ASSERT_EQ(memcmp(px, other, sizeof px), 0);
    return 0;
}

TEST_IMPL(breast_tensors_missing)
{
    char dir[512], err[256];
    snprintf(dir, sizeof dir, "%s/d", test_tmpdir());
    vg_manifest_t m;
    ASSERT_EQ(write_manifest(test_tmpdir(), 8, 8, 8, 10), 0);
    ASSERT_EQ(load_manifest(test_tmpdir(), &m), 0);
    ASSERT_EQ(fixture(dir, "lcc",
                      "kind=mg lat=L view=CC orient=A/R rows=16 cols=12"
                      " value=3000 window=2048,4096 age=047Y"),
              0);
    vg_breast_image_t img;
    char note[128];
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "lcc"), &img, note, sizeof note), 0);
    vg_breast_case_t c[2];
    ASSERT_EQ(vg_breast_assign(&img, 1, c, NULL, 0), 1);
    /* Posted: palpable lump yes, density C; age from DICOM; BMI missing. */
    vg_clinical_t posted;
    memset(&posted, 0, sizeof posted);
    posted.present[VG_CLIN_PALPABLE_LUMP] = 1;
    posted.value[VG_CLIN_PALPABLE_LUMP] = 1;
    posted.present[VG_CLIN_BREAST_DENSITY] = 1;
    posted.value[VG_CLIN_BREAST_DENSITY] = 2.0 / 3;
    posted.present[VG_CLIN_PAIN] = -1; /* cleared: missing */
    float clin[VG_CLINICAL_N], present[VG_CLINICAL_N];
    char used[256];
    vg_breast_clinical(&m, &img, 1, &posted, clin, present, used, sizeof used);
    ASSERT_STR_EQ(used, "age,palpable_lump,breast_density");
    ASSERT_DBL_NEAR(clin[VG_CLIN_AGE], (47 - 55) / 15.0, 1e-6);
    ASSERT_DBL_NEAR(present[VG_CLIN_AGE], 1, 0);
    ASSERT_DBL_NEAR(clin[VG_CLIN_BMI], 0, 0);
    ASSERT_DBL_NEAR(present[VG_CLIN_BMI], 0, 0);
    ASSERT_DBL_NEAR(clin[VG_CLIN_PALPABLE_LUMP], 1, 1e-6);
    ASSERT_DBL_NEAR(clin[VG_CLIN_BREAST_DENSITY], (2.0 / 3 - 0.5) / 0.5, 1e-6);
    ASSERT_DBL_NEAR(present[VG_CLIN_PAIN], 0, 0);
    ASSERT_DBL_NEAR(clin[VG_CLIN_PAIN], 0, 0);
    /* A posted age replaces the DICOM one. */
    posted.present[VG_CLIN_AGE] = 1;
    posted.value[VG_CLIN_AGE] = 70;
    vg_breast_clinical(&m, &img, 1, &posted, clin, present, NULL, 0);
    ASSERT_DBL_NEAR(clin[VG_CLIN_AGE], 1.0, 1e-6);
    vg_tensor_t in[6];
    const vg_breast_image_t *bad = NULL;
    ASSERT_EQ(vg_breast_tensors(&m, c, 1, clin, present, in, &bad, err, sizeof err), 0);
    ASSERT_EQ(in[0].ndim, 5);
    ASSERT_EQ(in[0].shape[0], 1);
    ASSERT_EQ(in[0].shape[1], 2);
    ASSERT_EQ(in[0].shape[2], 1);
    ASSERT_EQ(in[0].shape[3], 8);
    ASSERT_EQ(in[0].shape[4], 8);
    ASSERT_EQ(in[2].ndim, 5);
    ASSERT_EQ(in[2].shape[1], 6);
    ASSERT_EQ(in[2].shape[2], 3);
    ASSERT_EQ(in[2].shape[3], 8);
    ASSERT_EQ(in[2].shape[4], 10);
    ASSERT_EQ(in[4].shape[1], VG_CLINICAL_N);
    double y = (3000 - 2047.5) / 4095 + 0.5;
    for (int i = 0; i < 64; i++) {
        ASSERT_DBL_NEAR(in[0].data[i], y, 1e-6);   /* CC */
        ASSERT_DBL_NEAR(in[0].data[64 + i], 0, 0); /* MLO absent */
    }
    ASSERT_DBL_NEAR(in[1].data[0], 1, 0);
    ASSERT_DBL_NEAR(in[1].data[1], 0, 0);
    for (int i = 0; i < 6 * 3 * 8 * 10; i++)
        ASSERT_DBL_NEAR(in[2].data[i], 0, 0);
    for (int i = 0; i < 6; i++)
        ASSERT_DBL_NEAR(in[3].data[i], 0, 0);
    for (int k = 0; k < VG_CLINICAL_N; k++) {
        ASSERT_DBL_NEAR(in[4].data[k], clin[k], 0);
        ASSERT_DBL_NEAR(in[5].data[k], present[k], 0);
    }
    vg_breast_tensors_free(in);
    ASSERT(in[0].data == NULL);
    return 0;
}

/* softmax(F) summed over T3..T5. */
static void expected(const double f[5], double p[5], double *mal)
{
    double mx = f[0], sum = 0;
    for (int k = 1; k < 5; k++)
        mx = f[k] > mx ? f[k] : mx;
    for (int k = 0; k < 5; k++)
        sum += (p[k] = exp(f[k] - mx));
    for (int k = 0; k < 5; k++)
        p[k] /= sum;
    *mal = p[2] + p[3] + p[4];
}

/* The study of the model tests: left CC, MLO and one B-mode image, right
 * CC only, a CT image and a file that is not DICOM. */
static int make_study(const char *dir)
{
    if (fixture(dir, "lcc",
                "kind=mg lat=L view=CC orient=A/R value=3000 window=2048,4096"
                " age=052Y weight=70 size=1.75") ||
        fixture(dir, "lmlo",
                "kind=mg lat=L view=MLO orient=A/FR value=1000 window=2048,4096"
                " instance=2") ||
        fixture(dir, "lus", "kind=us lat=L value=51 rows=24 cols=32") ||
        fixture(dir, "rcc",
                "kind=mg lat=R view=CC orient=P/L value=3000 window=2048,4096"
                " instance=3") ||
        fixture(dir, "ct", "kind=ct"))
        return -1;
    return test_sh("echo 'not dicom' > %s/junk.dcm", dir);
}

TEST_IMPL(breast_model_run)
{
    char dir[512], model[512], err[512];
    snprintf(dir, sizeof dir, "%s/study", test_tmpdir());
    snprintf(model, sizeof model, "%s/breast.pt", test_tmpdir());
    ASSERT_EQ(write_manifest(test_tmpdir(), 16, 12, 8, 10), 0);
    vg_manifest_t m;
    ASSERT_EQ(load_manifest(test_tmpdir(), &m), 0);
    ASSERT_EQ(make_study(dir), 0);
    ASSERT_EQ(make_model(model), 0);
    vg_model_t *mod = NULL;
    int rc = vg_model_load(m.model_path, "cpu", &mod, err, sizeof err);
    if (strcmp(vg_runtime_name(), "none") == 0) {
        ASSERT_EQ(rc, VG_EMODEL);
        return 0;
    }
    ASSERT_EQ(rc, 0);
    static const char *const names[] = {"rcc", "junk", "lus", "lmlo", "ct", "lcc"};
    char files[6][512];
    const char *paths[6];
    for (int i = 0; i < 6; i++)
        snprintf(files[i], sizeof files[i], "%s", path_of(dir, names[i])),
            paths[i] = files[i];
    vg_clinical_t posted;
    memset(&posted, 0, sizeof posted);
    posted.present[VG_CLIN_FAMILY_HISTORY] = 1;
    posted.value[VG_CLIN_FAMILY_HISTORY] = 1;
    vg_result_t r;
    memset(&r, 0, sizeof r);
    const char *used[6];
    int n_used = 0;
    vg_breast_timings_t t;
    ASSERT_EQ(vg_breast_analyse(mod, &m, paths, 6, &posted, &r, used, &n_used, &t, err,
                                sizeof err),
              0);
    ASSERT_STR_EQ(r.status, "done");
    ASSERT_EQ(r.n_assessments, 2);
    ASSERT_EQ(n_used, 4);
    ASSERT_EQ(t.images, 4);
    ASSERT_EQ(t.skipped, 2);
    ASSERT_STR_CONTAINS(r.reason, "not used: cannot be read as DICOM");
    ASSERT_STR_CONTAINS(r.reason, "modality CT");
    ASSERT_STR_EQ(used[0], path_of(dir, "lcc"));
    ASSERT_STR_EQ(used[1], path_of(dir, "lmlo"));
    ASSERT_STR_EQ(used[2], path_of(dir, "lus"));
    ASSERT_STR_EQ(used[3], path_of(dir, "rcc"));
    /* The features the tiny model computes, by hand. */
    double cc = (3000 - 2047.5) / 4095 + 0.5, mlo = (1000 - 2047.5) / 4095 + 0.5;
    double clin = (52 - 55) / 15.0 + (70 / (1.75 * 1.75) - 25) / 5 + 1;
    double fl[5] = {cc, mlo, 0.5, clin, 2 + 0.2}, fr[5] = {cc, 0, 0, clin, 1};
    double pl[5], pr[5], ml, mr;
    expected(fl, pl, &ml);
    expected(fr, pr, &mr);
    const vg_assessment_t *a = &r.assessments[0], *b = &r.assessments[1];
    ASSERT_STR_EQ(a->laterality, "L");
    ASSERT_STR_EQ(b->laterality, "R");
    for (int k = 0; k < 5; k++) {
        ASSERT_DBL_NEAR(a->probabilities[k], pl[k], 1e-5);
        ASSERT_DBL_NEAR(b->probabilities[k], pr[k], 1e-5);
    }
    ASSERT_DBL_NEAR(a->malignancy_probability, ml, 1e-5);
    ASSERT_DBL_NEAR(b->malignancy_probability, mr, 1e-5);
    ASSERT_STR_EQ(a->birads, vg_manifest_birads(&m, ml));
    ASSERT_STR_EQ(b->birads, vg_manifest_birads(&m, mr));
    ASSERT_STR_EQ(a->birads, "4C"); /* ml is about 0.71 */
    ASSERT_STR_EQ(a->modalities_used, "MG_CC,MG_MLO,US_B1");
    ASSERT_STR_EQ(b->modalities_used, "MG_CC");
    ASSERT_STR_EQ(a->clinical_used, "age,bmi,family_history");
    ASSERT_DBL_NEAR(r.patient_score, ml > mr ? ml : mr, 1e-5);
    ASSERT_EQ(r.positive, 1);
    vg_result_clear(&r);
    /* Nothing usable: not analysable with the reason, no model call. */
    const char *none[] = {files[4], files[1]};
    memset(&r, 0, sizeof r);
    ASSERT_EQ(
        vg_breast_analyse(mod, &m, none, 2, NULL, &r, used, &n_used, &t, err, sizeof err),
        0);
    ASSERT_STR_EQ(r.status, "not_analysable");
    ASSERT_STR_CONTAINS(r.reason, "no usable mammogram or ultrasound image");
    ASSERT_STR_CONTAINS(r.reason, "modality CT");
    ASSERT_EQ(r.n_assessments, 0);
    ASSERT_EQ(n_used, 0);
    ASSERT_EQ(t.images, 0);
    ASSERT_EQ(t.skipped, 2);
    vg_model_destroy(mod);
    return 0;
}

/* The offline analysis of a directory with posted values from a file:
 * the JSON has both breasts, the posted value counted and timings. */
TEST_IMPL(breast_analyse_dir)
{
    char dir[512], model[512], clin[512], manifest[512], outp[512];
    snprintf(dir, sizeof dir, "%s/study", test_tmpdir());
    snprintf(model, sizeof model, "%s/breast.pt", test_tmpdir());
    snprintf(clin, sizeof clin, "%s/clinical.json", test_tmpdir());
    snprintf(manifest, sizeof manifest, "%s/manifest.json", test_tmpdir());
    snprintf(outp, sizeof outp, "%s/out.json", test_tmpdir());
    if (strcmp(vg_runtime_name(), "none") == 0)
        return 0;
    ASSERT_EQ(write_manifest(test_tmpdir(), 16, 12, 8, 10), 0);
    ASSERT_EQ(make_study(dir), 0);
    ASSERT_EQ(make_model(model), 0);
    FILE *f = fopen(clin, "w");
    ASSERT(f != NULL);
    fputs("{\"family_history\": true, \"age\": 40}\n", f);
    fclose(f);
    FILE *out = fopen(outp, "w+");
    ASSERT(out != NULL);
    ASSERT_EQ(vg_analyse_dir_clinical(dir, manifest, clin, "cpu", 1, out), 0);
    rewind(out);
    char buf[8192];
    size_t len = fread(buf, 1, sizeof buf - 1, out);
    fclose(out);
    buf[len] = '\0';
    cJSON *o = cJSON_Parse(buf);
    ASSERT(o != NULL);
    ASSERT_STR_EQ(cJSON_GetObjectItem(o, "status")->valuestring, "done");
    cJSON *as = cJSON_GetObjectItem(o, "assessments");
    ASSERT_EQ(cJSON_GetArraySize(as), 2);
    cJSON *l = cJSON_GetArrayItem(as, 0);
    ASSERT_STR_EQ(cJSON_GetObjectItem(l, "laterality")->valuestring, "L");
    ASSERT_STR_EQ(cJSON_GetObjectItem(l, "clinical_used")->valuestring,
                  "age,bmi,family_history");
    /* The posted age (40) replaced the DICOM one (52). */
    double cc = (3000 - 2047.5) / 4095 + 0.5, mlo = (1000 - 2047.5) / 4095 + 0.5;
    double cv = (40 - 55) / 15.0 + (70 / (1.75 * 1.75) - 25) / 5 + 1;
    double fl[5] = {cc, mlo, 0.5, cv, 2.2}, pl[5], ml;
    expected(fl, pl, &ml);
    ASSERT_DBL_NEAR(cJSON_GetObjectItem(l, "malignancy_probability")->valuedouble, ml,
                    1e-5);
    ASSERT_DBL_NEAR(
        cJSON_GetObjectItem(cJSON_GetObjectItem(l, "probabilities"), "T1")->valuedouble,
        pl[0], 1e-5);
    cJSON *t = cJSON_GetObjectItem(o, "timings");
    ASSERT(cJSON_IsNumber(cJSON_GetObjectItem(t, "decode_s")));
    ASSERT(cJSON_IsNumber(cJSON_GetObjectItem(t, "model_s")));
    ASSERT_EQ(cJSON_GetObjectItem(t, "images")->valueint, 4);
    ASSERT_GT(cJSON_GetObjectItem(o, "peak_rss_mb")->valuedouble, 1);
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(o, "images_used")), 4);
    cJSON_Delete(o);
    /* A clinical file with an unknown name is refused. */
    f = fopen(clin, "w");
    fputs("{\"shoe_size\": 40}\n", f);
    fclose(f);
    out = fopen(outp, "w");
    ASSERT_EQ(vg_analyse_dir_clinical(dir, manifest, clin, "cpu", 1, out), 1);
    fclose(out);
    return 0;
}

/* The worker warms a breast model up at load: the contract's inputs for
 * one and for two breasts go through; a model that does not take them is
 * refused there, before any study waits on it. */
TEST_IMPL(breast_warm_up)
{
    char model[512], bad[512], err[512];
    snprintf(model, sizeof model, "%s/breast.pt", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/bad.pt", test_tmpdir());
    ASSERT_EQ(write_manifest(test_tmpdir(), 16, 12, 8, 10), 0);
    vg_manifest_t m;
    ASSERT_EQ(load_manifest(test_tmpdir(), &m), 0);
    ASSERT_EQ(make_model(model), 0);
    /* torch.jit.script reads the class's source: it goes in a file. */
    char py[512];
    snprintf(py, sizeof py, "%s/bad.py", test_tmpdir());
    FILE *f = fopen(py, "w");
    ASSERT(f != NULL);
    fprintf(f,
            "import torch\n"
            "class B(torch.nn.Module):\n"
            "    def forward(self, x):\n"
            "        return x\n"
            "torch.jit.script(B()).save('%s')\n",
            bad);
    fclose(f);
    ASSERT_EQ(test_sh("/usr/bin/python3 %s", py), 0);
    vg_model_t *good = NULL, *wrong = NULL;
    if (vg_model_load(m.model_path, "cpu", &good, err, sizeof err) < 0) {
        ASSERT_STR_EQ(vg_runtime_name(), "none");
        return 0;
    }
    ASSERT_EQ(vg_breast_warm_up(good, &m, err, sizeof err), 0);
    ASSERT_EQ(vg_model_load(bad, "cpu", &wrong, err, sizeof err), 0);
    err[0] = '\0';
    ASSERT_EQ(vg_breast_warm_up(wrong, &m, err, sizeof err), VG_EMODEL);
    ASSERT_STR_CONTAINS(err, "forward");
    vg_model_destroy(good);
    vg_model_destroy(wrong);
    return 0;
}

/* Exports a model whose forward returns VALUE for every class. */
static int make_constant_model(const char *path, const char *value)
{
    char py[512];
    snprintf(py, sizeof py, "%s/constant.py", test_tmpdir());
    FILE *f = fopen(py, "w");
    if (!f)
        return -1;
    fprintf(f,
            "import torch\n"
            "class C(torch.nn.Module):\n"
            "    def forward(self, mg, mg_present, us, us_present, clin, clin_present):\n"
            "        return torch.full([mg.shape[0], 5], %s)\n"
            "torch.jit.script(C()).save('%s')\n",
            value, path);
    fclose(f);
    return test_sh("/usr/bin/python3 %s", py);
}

/* A model that overflows (NaN) or returns logits instead of
 * probabilities fails the job with the reason, never a silent call. */
TEST_IMPL(breast_model_output_checked)
{
    char dir[512], model[512], err[512];
    snprintf(dir, sizeof dir, "%s/study", test_tmpdir());
    snprintf(model, sizeof model, "%s/breast.pt", test_tmpdir());
    ASSERT_EQ(write_manifest(test_tmpdir(), 16, 12, 8, 10), 0);
    vg_manifest_t m;
    ASSERT_EQ(load_manifest(test_tmpdir(), &m), 0);
    ASSERT_EQ(make_study(dir), 0);
    const char *paths[1] = {path_of(dir, "lcc")};
    static const char *const values[] = {"float('nan')", "3.5"};
    for (int v = 0; v < 2; v++) {
        ASSERT_EQ(make_constant_model(model, values[v]), 0);
        vg_model_t *mod = NULL;
        if (vg_model_load(m.model_path, "cpu", &mod, err, sizeof err) < 0) {
            ASSERT_STR_EQ(vg_runtime_name(), "none");
            return 0;
        }
        vg_result_t r;
        memset(&r, 0, sizeof r);
        vg_breast_timings_t t;
        err[0] = '\0';
        ASSERT_EQ(vg_breast_analyse(mod, &m, paths, 1, NULL, &r, NULL, NULL, &t, err,
                                    sizeof err),
                  VG_EMODEL);
        ASSERT_STR_CONTAINS(err, "as a class probability");
        ASSERT_EQ(r.n_assessments, 0);
        vg_result_clear(&r);
        vg_model_destroy(mod);
    }
    return 0;
}

/* Without ViewPosition (optional in the mammography IOD) the view comes
 * from the View Code Sequence, which the IOD requires. */
TEST_IMPL(breast_view_from_code)
{
    char dir[512], note[128];
    snprintf(dir, sizeof dir, "%s/d", test_tmpdir());
    ASSERT_EQ(fixture(dir, "mlo", "kind=mg lat=L view=CC"), 0);
    ASSERT_EQ(fixture(dir, "odd", "kind=mg lat=L view=CC"), 0);
    ASSERT_EQ(test_sh("cd %s && dcmodify -nb -e \"(0018,5101)\""
                      " -i \"(0054,0220)[0].(0008,0100)=399368009\""
                      " -i \"(0054,0220)[0].(0008,0102)=SCT\""
                      " -i \"(0054,0220)[0].(0008,0104)=medio-lateral oblique\" mlo.dcm &&"
                      " dcmodify -nb -e \"(0018,5101)\""
                      " -i \"(0054,0220)[0].(0008,0100)=399260004\""
                      " -i \"(0054,0220)[0].(0008,0102)=SCT\""
                      " -i \"(0054,0220)[0].(0008,0104)=medio-lateral\" odd.dcm",
                      dir),
              0);
    vg_breast_image_t img;
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "mlo"), &img, note, sizeof note), 0);
    ASSERT_EQ(img.view, VG_MG_MLO);
    ASSERT_EQ(vg_breast_image_read(path_of(dir, "odd"), &img, note, sizeof note),
              VG_ENOTANALYSABLE);
    ASSERT_STR_CONTAINS(note, "code 399260004");
    return 0;
}
