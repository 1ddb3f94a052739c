/* The bone analysis's second stage, with tiny TorchScript models made at
 * test time by Debian's python3-torch: a segmentation that calls every
 * voxel above 500 HU an osteolytic metastasis, and a classifier that
 * answers from the HU at the centre of its crop (1000: a bone island,
 * 1500: a metastasis, 2000: not a lesion). Ten cubes of those densities
 * show candidates dropped, retyped and kept, across two classifier
 * batches; the two bands of an endplate lesion make one finding; a
 * manifest without a classifier gives the segmentation's findings as
 * before; a classifier that cannot be loaded makes the model
 * unavailable. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "inference/analyse.h"
#include "inference/bone.h"
#include "inference/manifest.h"
#include "inference/runtime.h"
#include "server/error.h"
#include "tests/unit/test.h"

#define NX 44
#define NY 24
#define NZ 24
#define NCUBES 10

/* Cube centres (x, y, z voxels) and densities; each cube is 3^3 voxels. */
static const int cube_x[5] = {4, 12, 20, 28, 36};
static const int row_yz[2] = {7, 16};
static const float cube_hu[NCUBES] = {1000, 2000, 1500, 1000, 2000,
                                      1500, 1000, 2000, 1000, 1500};

static int run_python(const char *body)
{
    char py[512], cmd[700];
    snprintf(py, sizeof py, "%s/export.py", test_tmpdir());
    FILE *f = fopen(py, "w");
    if (!f)
        return -1;
    fputs(body, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s", py);
    return system(cmd);
}

/* seg.pt, cls.pt (the centre-HU classifier), chan.pt (a classifier whose
 * lesion probability is the sum of its candidate channel / 100, where
 * the centre is dense), fine.pt (one whose lesion probability is the
 * count of its second channel's samples above 700 HU / 100, plus those
 * below -500 / 100000, where the centre is dense) and bad.pt (a classifier of the wrong output shape)
 * in the test's directory. */
static int make_models(void)
{
    char body[4000];
    snprintf(
        body, sizeof body,
        "import torch\n"
        "class Seg(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        fg = (x > 500).float() * 0.95\n"
        "        return torch.cat([1 - fg, fg, torch.zeros_like(fg)], dim=1)\n"
        "class Cls(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        c = x.shape[2] // 2\n"
        "        v = x[:, 0, c, c, c][:, None]\n"
        "        island = torch.tensor([[0.1, 0.2, 0.7]])\n"
        "        meta = torch.tensor([[0.3, 0.6, 0.1]])\n"
        "        none = torch.tensor([[0.9, 0.05, 0.05]])\n"
        "        return torch.where(v > 1750, none, torch.where(v > 1250, meta, island))\n"
        "class Chan(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        c = x.shape[2] // 2\n"
        "        a = x[:, 1].sum(dim=(1, 2, 3)) / 100 * (x[:, 0, c, c, c] > 900).float()\n"
        "        return torch.stack([1 - a, a, torch.zeros_like(a)], dim=1)\n"
        "class Fine(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        c = x.shape[2] // 2\n"
        "        a = (x[:, 1] > 700).float().sum(dim=(1, 2, 3)) / 100\n"
        "        a = a + (x[:, 1] < -500).float().sum(dim=(1, 2, 3)) / 100000\n"
        "        a = a * (x[:, 0, c, c, c] > 900).float()\n"
        "        return torch.stack([1 - a, a, torch.zeros_like(a)], dim=1)\n"
        "class Bad(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x[:, 0, 0, 0, :2]\n"
        "d = '%s'\n"
        "torch.jit.script(Seg()).save(d + '/seg.pt')\n"
        "torch.jit.script(Cls()).save(d + '/cls.pt')\n"
        "torch.jit.script(Chan()).save(d + '/chan.pt')\n"
        "torch.jit.script(Fine()).save(d + '/fine.pt')\n"
        "torch.jit.script(Bad()).save(d + '/bad.pt')\n",
        test_tmpdir());
    return run_python(body);
}

/* manifest.json in the test's directory; CLASSIFIER is the JSON of the
 * "classifier" member, or NULL for none; ISLAND more members of the
 * bone_island class. */
static int write_manifest_with(const char *classifier, const char *island, char *path,
                               size_t len)
{
    snprintf(path, len, "%s/manifest.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(
        f,
        "{\"name\": \"t\", \"version\": \"1\", \"task\": \"bone_lesions\","
        " \"model\": \"seg.pt\","
        " \"input\": {\"spacing_mm\": 1.5, \"hu_window\": [-1000, 2000],"
        " \"window_voxels\": 16, \"context_voxels\": 4, \"bone_threshold_hu\": 180,"
        " \"bone_margin_mm\": 3},"
        " \"classes\": [{\"name\": \"osteolytic_metastasis\", \"metastatic\": true,"
        " \"code\": {\"scheme\": \"SCT\", \"value\": \"14799000\", \"meaning\": \"m\"}},"
        " {\"name\": \"bone_island\", \"metastatic\": false%s,"
        " \"code\": {\"scheme\": \"99VIGIL\", \"value\": \"VG-BI\", \"meaning\": \"b\"}}],"
        " \"postprocess\": {\"lesion_threshold\": 0.5, \"min_volume_mm3\": 10},"
        " \"operating_threshold\": 0.5%s%s}\n",
        island, classifier ? ", \"classifier\": " : "", classifier ? classifier : "");
    fclose(f);
    return 0;
}

static int write_manifest(const char *classifier, char *path, size_t len)
{
    return write_manifest_with(classifier, "", path, len);
}

/* A 1.5 mm volume of water with the first N cubes: 800 HU with the
 * cube's density at the centre voxel only, so that a crop centred one
 * voxel off shows the classifier a bone island. Owned by the caller (free
 * v->hu). */
static void make_volume(vg_volume_t *v, int n)
{
    memset(v, 0, sizeof *v);
    v->nx = NX, v->ny = NY, v->nz = NZ;
    v->hu = calloc((size_t)NX * NY * NZ, sizeof *v->hu);
    for (int a = 0; a < 3; a++)
        v->spacing[a] = 1.5;
    v->row_dir[0] = v->col_dir[1] = v->normal[2] = 1;
    for (int c = 0; c < n; c++) {
        int cx = cube_x[c % 5], cyz = row_yz[c / 5];
        for (int z = cyz - 1; z <= cyz + 1; z++)
            for (int y = cyz - 1; y <= cyz + 1; y++)
                for (int x = cx - 1; x <= cx + 1; x++)
                    v->hu[((size_t)z * NY + y) * NX + x] =
                        x == cx && y == cyz && z == cyz ? cube_hu[c] : 800.0f;
    }
}

/* The cube a finding lies on (by its centroid), or -1. */
static int cube_of(const vg_finding_t *f)
{
    for (int c = 0; c < NCUBES; c++)
        if (fabs(f->centroid_mm[0] - 1.5 * cube_x[c % 5]) < 0.1 &&
            fabs(f->centroid_mm[1] - 1.5 * row_yz[c / 5]) < 0.1 &&
            fabs(f->centroid_mm[2] - 1.5 * row_yz[c / 5]) < 0.1)
            return c;
    return -1;
}

/* Analyses VOL (its hu freed here) as MANIFEST says, into R; T gets the
 * timings. */
static int analyse_volume(const char *manifest, int use_classifier, vg_volume_t *vol,
                          vg_result_t *r, vg_bone_timings_t *t, char *err, size_t errlen)
{
    vg_manifest_t man;
    vg_model_t *seg = NULL, *cls = NULL;
    int rc = vg_manifest_load(manifest, &man, err, errlen);
    if (rc == 0)
        rc = vg_model_load(man.model_path, "cpu", &seg, err, errlen);
    if (rc == 0 && use_classifier)
        rc = vg_model_load(man.classifier_path, "cpu", &cls, err, errlen);
    memset(r, 0, sizeof *r);
    if (rc == 0)
        rc = vg_bone_analyse(seg, cls, &man, vol, r, t, err, errlen);
    free(vol->hu);
    vg_model_destroy(seg);
    vg_model_destroy(cls);
    return rc;
}

static int analyse(const char *manifest, int use_classifier, int cubes, vg_result_t *r,
                   char *err, size_t errlen)
{
    vg_volume_t vol;
    vg_bone_timings_t t;
    make_volume(&vol, cubes);
    int rc = analyse_volume(manifest, use_classifier, &vol, r, &t, err, errlen);
    if (rc == 0 && use_classifier && t.candidates != cubes)
        rc = -1000 - t.candidates;
    return rc;
}

static int no_torch(void)
{
    return strcmp(vg_runtime_name(), "none") == 0;
}

TEST_IMPL(bone_classifier_drops_and_retypes)
{
    char path[512], err[512];
    if (no_torch())
        return 0;
    ASSERT_EQ(make_models(), 0);
    ASSERT_EQ(
        write_manifest("{\"model\": \"cls.pt\", \"crop_voxels\": 16,"
                       " \"min_lesion_probability\": 0.5, \"operating_threshold\": 0.99}",
                       path, sizeof path),
        0);
    vg_result_t r;
    ASSERT_EQ(analyse(path, 1, NCUBES, &r, err, sizeof err), 0);
    /* The 2000 HU cubes are gone; the 1000 HU ones are bone islands. */
    ASSERT_EQ(r.n_findings, 7);
    int seen[NCUBES] = {0};
    for (int i = 0; i < r.n_findings; i++) {
        const vg_finding_t *f = &r.findings[i];
        int c = cube_of(f);
        ASSERT(c >= 0);
        ASSERT(!seen[c]);
        seen[c] = 1;
        ASSERT(cube_hu[c] != 2000);
        ASSERT_STR_EQ(f->type,
                      cube_hu[c] == 1000 ? "bone_island" : "osteolytic_metastasis");
        ASSERT_DBL_NEAR(f->probability, cube_hu[c] == 1000 ? 0.9 : 0.7, 1e-5);
        ASSERT_DBL_NEAR(f->volume_mm3, 27 * 1.5 * 1.5 * 1.5, 1e-6);
    }
    /* Most probable first; the score from the classifier's metastatic
     * probabilities (0.2 for an island, 0.6 for a metastasis); the call
     * at the classifier's own operating threshold. */
    ASSERT_DBL_NEAR(r.findings[0].probability, 0.9, 1e-5);
    ASSERT_DBL_NEAR(r.patient_score, 1 - pow(0.8, 4) * pow(0.4, 3), 1e-5);
    ASSERT_EQ(r.positive, 0);
    vg_result_clear(&r);
    /* One candidate: a batch of one goes through as well. */
    ASSERT_EQ(analyse(path, 1, 1, &r, err, sizeof err), 0);
    ASSERT_EQ(r.n_findings, 1);
    ASSERT_STR_EQ(r.findings[0].type, "bone_island");
    vg_result_clear(&r);
    /* A threshold above every lesion probability drops everything. */
    ASSERT_EQ(write_manifest("{\"model\": \"cls.pt\", \"crop_voxels\": 16,"
                             " \"min_lesion_probability\": 0.95}",
                             path, sizeof path),
              0);
    ASSERT_EQ(analyse(path, 1, NCUBES, &r, err, sizeof err), 0);
    ASSERT_EQ(r.n_findings, 0);
    ASSERT_DBL_NEAR(r.patient_score, 0, 1e-9);
    vg_result_clear(&r);
    return 0;
}

/* Analyses the ten cubes with the classifier CLS (the manifest's JSON):
 * every cube is a finding of lesion probability P, those at x = 4 (next
 * to the volume's first column) of P_EDGE. */
static int expect_every_cube(const char *cls, double p, double p_edge)
{
    char path[512], err[512];
    ASSERT_EQ(write_manifest(cls, path, sizeof path), 0);
    vg_result_t r;
    ASSERT_EQ(analyse(path, 1, NCUBES, &r, err, sizeof err), 0);
    ASSERT_EQ(r.n_findings, NCUBES);
    for (int i = 0; i < r.n_findings; i++) {
        int c = cube_of(&r.findings[i]);
        ASSERT(c >= 0);
        ASSERT_DBL_NEAR(r.findings[i].probability, cube_x[c % 5] == 4 ? p_edge : p, 1e-6);
    }
    vg_result_clear(&r);
    return 0;
}

/* With candidate_channel the classifier's second channel holds the
 * candidate's own foreground (27 voxels at 0.95), not that of the cubes
 * beside it in the crop (8 voxels apart, so within a 16-voxel crop), nor
 * anything beyond the grid for the cubes at its edge. */
TEST_IMPL(bone_classifier_sees_its_candidate)
{
    char path[512], err[512];
    if (no_torch())
        return 0;
    ASSERT_EQ(make_models(), 0);
    ASSERT_EQ(expect_every_cube("{\"model\": \"chan.pt\", \"crop_voxels\": 16,"
                                " \"candidate_channel\": true, \"min_lesion_probability\": 0.1}",
                                27 * 0.95 / 100, 27 * 0.95 / 100),
              0);
    vg_result_t r;
    /* Without the flag the crop has one channel, which this model cannot
     * take: the analysis fails with the runtime's message. */
    ASSERT_EQ(write_manifest("{\"model\": \"chan.pt\", \"crop_voxels\": 16,"
                             " \"min_lesion_probability\": 0.1}",
                             path, sizeof path),
              0);
    ASSERT_EQ(analyse(path, 1, NCUBES, &r, err, sizeof err), VG_EMODEL);
    ASSERT(err[0] != 0);
    vg_result_clear(&r);
    /* The flag is a JSON boolean. */
    ASSERT_EQ(write_manifest("{\"model\": \"chan.pt\", \"crop_voxels\": 16,"
                             " \"candidate_channel\": 1, \"min_lesion_probability\": 0.1}",
                             path, sizeof path),
              0);
    vg_manifest_t man;
    ASSERT_EQ(vg_manifest_load(path, &man, err, sizeof err), VG_EINVAL_CFG);
    ASSERT(strstr(err, "candidate_channel") != NULL);
    return 0;
}

/* With fine_channel_mm the second channel samples the scanner's volume
 * (here 1.5 mm, as the grid) 0.75 mm apart about the crop's centre: a
 * 3-voxel cube of 800 HU and more then fills 4 samples along each axis
 * with more than 700 HU, 64 in all, for every cube (at 1.5 mm there
 * would be 27, and the 24 mm cube would reach the cubes beside it). For
 * the cubes at x = 4 the first plane of 16 x 16 samples lies before the
 * first column, and is air (not the water beside it). */
TEST_IMPL(bone_classifier_sees_the_scanner_volume)
{
    char path[512], err[512];
    if (no_torch())
        return 0;
    ASSERT_EQ(make_models(), 0);
    ASSERT_EQ(expect_every_cube("{\"model\": \"fine.pt\", \"crop_voxels\": 16,"
                                " \"fine_channel_mm\": 0.75, \"min_lesion_probability\": 0.1}",
                                0.64, 0.64 + 256 / 100000.0),
              0);
    /* A spacing that is not a number or out of range, or beside the
     * candidate channel, is a manifest error. */
    static const char *bad[] = {
        "\"fine_channel_mm\": \"0.75\"",
        "\"fine_channel_mm\": 0",
        "\"fine_channel_mm\": 20",
        "\"fine_channel_mm\": 0.75, \"candidate_channel\": true",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cls[256];
        snprintf(cls, sizeof cls,
                 "{\"model\": \"fine.pt\", \"crop_voxels\": 16, %s,"
                 " \"min_lesion_probability\": 0.1}",
                 bad[i]);
        ASSERT_EQ(write_manifest(cls, path, sizeof path), 0);
        vg_manifest_t man;
        ASSERT_EQ(vg_manifest_load(path, &man, err, sizeof err), VG_EINVAL_CFG);
        ASSERT_STR_CONTAINS(err, "fine_channel_mm");
    }
    return 0;
}

TEST_IMPL(bone_classifier_absent_is_segmentation_only)
{
    char path[512], err[512];
    if (no_torch())
        return 0;
    ASSERT_EQ(make_models(), 0);
    ASSERT_EQ(write_manifest(NULL, path, sizeof path), 0);
    vg_manifest_t man;
    ASSERT_EQ(vg_manifest_load(path, &man, err, sizeof err), 0);
    ASSERT_STR_EQ(man.classifier_path, "");
    ASSERT_DBL_NEAR(man.operating_threshold, 0.5, 1e-12);
    vg_result_t r;
    ASSERT_EQ(analyse(path, 0, NCUBES, &r, err, sizeof err), 0);
    ASSERT_EQ(r.n_findings, NCUBES);
    for (int i = 0; i < r.n_findings; i++) {
        ASSERT(cube_of(&r.findings[i]) >= 0);
        ASSERT_STR_EQ(r.findings[i].type, "osteolytic_metastasis");
        ASSERT_DBL_NEAR(r.findings[i].probability, 0.95, 1e-5);
    }
    ASSERT_DBL_NEAR(r.patient_score, 1 - pow(0.05, NCUBES), 1e-6);
    ASSERT_EQ(r.positive, 1);
    vg_result_clear(&r);
    /* A manifest that names a classifier, run without one: the same. */
    ASSERT_EQ(write_manifest("{\"model\": \"cls.pt\", \"crop_voxels\": 16,"
                             " \"min_lesion_probability\": 0.5}",
                             path, sizeof path),
              0);
    ASSERT_EQ(analyse(path, 0, NCUBES, &r, err, sizeof err), 0);
    ASSERT_EQ(r.n_findings, NCUBES);
    ASSERT_STR_EQ(r.findings[0].type, "osteolytic_metastasis");
    vg_result_clear(&r);
    return 0;
}

TEST_IMPL(bone_classifier_manifest)
{
    vg_manifest_t man;
    char path[512], err[512], want[sizeof man.dir + 16];
    ASSERT_EQ(
        write_manifest("{\"model\": \"cls.pt\", \"crop_voxels\": 32,"
                       " \"min_lesion_probability\": 0.4, \"operating_threshold\": 0.3,"
                       " \"lesion_threshold\": 0.2, \"min_volume_mm3\": 0}",
                       path, sizeof path),
        0);
    ASSERT_EQ(vg_manifest_load(path, &man, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/cls.pt", man.dir);
    ASSERT_STR_EQ(man.classifier_path, want);
    ASSERT_EQ(man.crop_voxels, 32);
    ASSERT_DBL_NEAR(man.min_lesion_probability, 0.4, 1e-12);
    /* The two-stage pipeline's own thresholds replace the segmentation's. */
    ASSERT_DBL_NEAR(man.operating_threshold, 0.3, 1e-12);
    ASSERT_DBL_NEAR(man.lesion_threshold, 0.2, 1e-12);
    ASSERT_DBL_NEAR(man.min_volume_mm3, 0, 1e-12);
    /* Without them the segmentation's stay. */
    ASSERT_EQ(write_manifest("{\"model\": \"cls.pt\", \"crop_voxels\": 32,"
                             " \"min_lesion_probability\": 0.4}",
                             path, sizeof path),
              0);
    ASSERT_EQ(vg_manifest_load(path, &man, err, sizeof err), 0);
    ASSERT_DBL_NEAR(man.operating_threshold, 0.5, 1e-12);
    ASSERT_DBL_NEAR(man.lesion_threshold, 0.5, 1e-12);
    ASSERT_DBL_NEAR(man.min_volume_mm3, 10, 1e-12);
    static const char *bad[] = {
        "{\"model\": \"cls.pt\", \"min_lesion_probability\": 0.4}",
        "{\"crop_voxels\": 32, \"min_lesion_probability\": 0.4}",
        "{\"model\": \"cls.pt\", \"crop_voxels\": 4, \"min_lesion_probability\": 0.4}",
        "{\"model\": \"cls.pt\", \"crop_voxels\": 32, \"min_lesion_probability\": 1.5}",
        "{\"model\": \"cls.pt\", \"crop_voxels\": 32, \"min_lesion_probability\": 0.5,"
        " \"lesion_threshold\": 0}",
        "\"cls.pt\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ(write_manifest(bad[i], path, sizeof path), 0);
        ASSERT_EQ(vg_manifest_load(path, &man, err, sizeof err), VG_EINVAL_CFG);
        ASSERT_STR_CONTAINS(err, "classifier");
    }
    return 0;
}

/* Sets the 3^3 cube at (X, Y, Z) of V to 800 HU, CENTRE at its centre. */
static void put_cube(vg_volume_t *v, int x, int y, int z, float centre)
{
    for (int k = z - 1; k <= z + 1; k++)
        for (int j = y - 1; j <= y + 1; j++)
            for (int i = x - 1; i <= x + 1; i++)
                v->hu[((size_t)k * NY + j) * NX + i] =
                    i == x && j == y && k == z ? centre : 800.0f;
}

/* The two bands of one lesion of a both_endplates class (here the bone
 * island) become one finding when they lie one above the other with a
 * disc (water) between them; not with bone between them, not when they
 * are offset across the body's axis, not for a type without the flag. */
TEST_IMPL(bone_classifier_merges_endplate_pairs)
{
    char path[512], err[512];
    if (no_torch())
        return 0;
    ASSERT_EQ(make_models(), 0);
    const char *cls = "{\"model\": \"cls.pt\", \"crop_voxels\": 16,"
                      " \"min_lesion_probability\": 0.5}";
    ASSERT_EQ(write_manifest_with(cls, ", \"both_endplates\": true", path, sizeof path), 0);
    vg_volume_t vol;
    make_volume(&vol, 0);
    /* 10 voxels (15 mm) apart along z: a pair over water at x = 6 ... */
    put_cube(&vol, 6, 6, 4, 1000), put_cube(&vol, 6, 6, 14, 1000);
    /* ... with cancellous bone (300 HU: no candidate) between at x = 18 ... */
    put_cube(&vol, 18, 6, 4, 1000), put_cube(&vol, 18, 6, 14, 1000);
    for (int z = 6; z <= 12; z++)
        for (int y = 5; y <= 7; y++)
            for (int x = 17; x <= 19; x++)
                vol.hu[((size_t)z * NY + y) * NX + x] = 300.0f;
    /* ... offset 8 voxels (12 mm) in y at x = 30, and metastases at x = 40. */
    put_cube(&vol, 30, 5, 4, 1000), put_cube(&vol, 30, 13, 14, 1000);
    put_cube(&vol, 40, 17, 4, 1500), put_cube(&vol, 40, 17, 14, 1500);
    vg_result_t r;
    vg_bone_timings_t t;
    ASSERT_EQ(analyse_volume(path, 1, &vol, &r, &t, err, sizeof err), 0);
    ASSERT_EQ(t.candidates, 8);
    ASSERT_EQ(r.n_findings, 7);
    int merged = 0;
    for (int i = 0; i < r.n_findings; i++) {
        const vg_finding_t *f = &r.findings[i];
        if (fabs(f->centroid_mm[0] - 1.5 * 6) > 0.1) {
            ASSERT_DBL_NEAR(f->volume_mm3, 27 * 1.5 * 1.5 * 1.5, 1e-6);
            continue;
        }
        merged++;
        ASSERT_STR_EQ(f->type, "bone_island");
        ASSERT_DBL_NEAR(f->probability, 0.9, 1e-5);
        ASSERT_DBL_NEAR(f->volume_mm3, 54 * 1.5 * 1.5 * 1.5, 1e-6);
        ASSERT_DBL_NEAR(f->centroid_mm[2], 1.5 * 9, 1e-6);
        ASSERT_DBL_NEAR(f->bbox_mm[0][2], 1.5 * 2.5, 1e-6);
        ASSERT_DBL_NEAR(f->bbox_mm[1][2], 1.5 * 15.5, 1e-6);
        /* The mask holds both bands and nothing between them. */
        int set = 0;
        for (size_t b = 0; b < f->mask_bytes * 8; b++)
            set += (f->mask[b >> 3] >> (b & 7)) & 1;
        ASSERT_EQ(set, 54);
        ASSERT_EQ(f->mask_box[5], 13);
    }
    ASSERT_EQ(merged, 1);
    vg_result_clear(&r);
    /* Without the flag the pair stays two findings. */
    ASSERT_EQ(write_manifest(cls, path, sizeof path), 0);
    make_volume(&vol, 0);
    put_cube(&vol, 6, 6, 4, 1000), put_cube(&vol, 6, 6, 14, 1000);
    ASSERT_EQ(analyse_volume(path, 1, &vol, &r, &t, err, sizeof err), 0);
    ASSERT_EQ(r.n_findings, 2);
    vg_result_clear(&r);
    return 0;
}

/* A classifier that is missing, corrupt or of the wrong output shape:
 * the analysis cannot run, and says why. */
TEST_IMPL(bone_classifier_unavailable)
{
    char path[512], err[512], out_path[600], series[600];
    if (no_torch())
        return 0;
    ASSERT_EQ(make_models(), 0);
    snprintf(out_path, sizeof out_path, "%s/out.json", test_tmpdir());
    snprintf(series, sizeof series, "%s/series", test_tmpdir());
    ASSERT_EQ(mkdir(series, 0700), 0);
    /* An empty series: with both models loaded the analysis answers
     * "not_analysable", so a failure below is the classifier's. */
    ASSERT_EQ(write_manifest("{\"model\": \"cls.pt\", \"crop_voxels\": 16,"
                             " \"min_lesion_probability\": 0.5}",
                             path, sizeof path),
              0);
    FILE *out = fopen(out_path, "w");
    ASSERT_EQ(vg_analyse_dir(series, path, "cpu", 1, out), 0);
    ASSERT_GT(ftell(out), 0);
    fclose(out);
    static const char *broken[] = {"missing.pt", "corrupt.pt"};
    snprintf(out_path, sizeof out_path, "%s/corrupt.pt", test_tmpdir());
    out = fopen(out_path, "w");
    fputs("not a model", out);
    fclose(out);
    for (int i = 0; i < 2; i++) {
        char cls[200];
        snprintf(cls, sizeof cls,
                 "{\"model\": \"%s\", \"crop_voxels\": 16,"
                 " \"min_lesion_probability\": 0.5}",
                 broken[i]);
        ASSERT_EQ(write_manifest(cls, path, sizeof path), 0);
        snprintf(out_path, sizeof out_path, "%s/out.json", test_tmpdir());
        out = fopen(out_path, "w");
        ASSERT_EQ(vg_analyse_dir(series, path, "cpu", 1, out), 1);
        ASSERT_EQ(ftell(out), 0);
        fclose(out);
    }
    vg_manifest_t man;
    vg_model_t *m = NULL;
    ASSERT_EQ(vg_manifest_load(path, &man, err, sizeof err), 0);
    ASSERT_LT(vg_model_load(man.classifier_path, "cpu", &m, err, sizeof err), 0);
    ASSERT_STR_CONTAINS(err, "corrupt.pt");
    /* Wrong output shape: an error at analysis, no findings. */
    ASSERT_EQ(write_manifest("{\"model\": \"bad.pt\", \"crop_voxels\": 16,"
                             " \"min_lesion_probability\": 0.5}",
                             path, sizeof path),
              0);
    vg_result_t r;
    ASSERT_EQ(analyse(path, 1, 3, &r, err, sizeof err), VG_EMODEL);
    ASSERT_STR_CONTAINS(err, "classifier output has shape");
    ASSERT_EQ(r.n_findings, 0);
    return 0;
}
