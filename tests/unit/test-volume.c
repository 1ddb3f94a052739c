/* Series to volume: slice order from positions (not file order or
 * InstanceNumber), HU from the rescale, identical HU from losslessly
 * compressed copies, and a clear refusal for missing slices, gantry tilt
 * and mixed orientation. Series are made by scripts/make-ct-series and
 * altered with DCMTK's own tools. */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/volume.h"
#include "storage/store.h"
#include "server/error.h"
#include "tests/unit/test.h"

/* The .dcm files of DIR, in readdir order (not slice order). */
static int list_files(const char *dir, char paths[][512], int max)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)) != NULL && n < max)
        if (strstr(e->d_name, ".dcm"))
            snprintf(paths[n++], 512, "%s/%s", dir, e->d_name);
    if (d)
        closedir(d);
    return n;
}

static int read_dir(const char *dir, vg_volume_t **v, char *reason, size_t len)
{
    static char paths[64][512];
    const char *ptrs[64];
    int n = list_files(dir, paths, 64);
    /* Reverse the list so file order is certainly not slice order. */
    for (int i = 0; i < n; i++)
        ptrs[i] = paths[n - 1 - i];
    return vg_volume_read(ptrs, n, v, reason, len);
}

static int make_series(const char *dir, int slices)
{
    char n[16];
    snprintf(n, sizeof n, "%d", slices);
    return test_sh("/usr/bin/python3 scripts/make-ct-series --out %s --slices %s --size 64"
              " --thickness 2.5 --seed 7 >/dev/null",
              dir, n);
}

TEST_IMPL(volume_order_and_hu)
{
    char dir[512], reason[256];
    snprintf(dir, sizeof dir, "%s/ct", test_tmpdir());
    ASSERT_EQ(make_series(dir, 20), 0);
    vg_volume_t *v = NULL;
    ASSERT_EQ(read_dir(dir, &v, reason, sizeof reason), 0);
    ASSERT_EQ(v->nx, 64);
    ASSERT_EQ(v->ny, 64);
    ASSERT_EQ(v->nz, 20);
    ASSERT_DBL_NEAR(v->spacing[2], 2.5, 1e-6);
    ASSERT_DBL_NEAR(v->normal[2], 1.0, 1e-9);
    /* Slices ascend along the normal whatever the file order. */
    double p0[3], p1[3];
    vg_volume_to_patient(v, 0, 0, 0, p0);
    vg_volume_to_patient(v, 0, 0, 19, p1);
    ASSERT_DBL_NEAR(p1[2] - p0[2], 19 * 2.5, 1e-6);
    /* Each slice keeps its own position, and the series its UIDs. */
    for (int a = 0; a < 3; a++) {
        ASSERT_DBL_NEAR(v->positions[0][a], p0[a], 1e-6);
        ASSERT_DBL_NEAR(v->positions[19][a], p1[a], 1e-6);
    }
    ASSERT(vg_uid_valid(v->study_uid));
    ASSERT(vg_uid_valid(v->series_uid));
    ASSERT(vg_uid_valid(v->frame_of_reference_uid));
    ASSERT(strcmp(v->study_uid, v->series_uid) != 0);
    /* The corner is air: about -1000 HU after the rescale, not raw 24. */
    ASSERT_LT(v->hu[0], -900);
    ASSERT_GT(v->hu[0], -1100);
    /* The centre of the body is soft tissue. */
    float centre = v->hu[(size_t)10 * 64 * 64 + 32 * 64 + 32];
    ASSERT_GT(centre, -200);
    vg_volume_destroy(v);
    return 0;
}

/* Without Rescale Slope and Intercept the stored values are the HU
 * (slope 1, intercept 0), not flattened to 0. */
TEST_IMPL(volume_without_rescale)
{
    char dir[512], raw[512], reason[256];
    snprintf(dir, sizeof dir, "%s/ct", test_tmpdir());
    snprintf(raw, sizeof raw, "%s/raw", test_tmpdir());
    ASSERT_EQ(make_series(dir, 4), 0);
    ASSERT_EQ(test_sh("cp -r %s %s && dcmodify -nb -e \"(0028,1052)\" -e \"(0028,1053)\""
                      " %s/*.dcm >/dev/null",
                      dir, raw, raw),
              0);
    vg_volume_t *a = NULL, *b = NULL;
    ASSERT_EQ(read_dir(dir, &a, reason, sizeof reason), 0);
    ASSERT_EQ(read_dir(raw, &b, reason, sizeof reason), 0);
    /* make-ct-series stores HU + 1024 with intercept -1024. */
    size_t n = (size_t)a->nx * a->ny * a->nz;
    for (size_t i = 0; i < n; i += 97)
        ASSERT_DBL_NEAR(b->hu[i], a->hu[i] + 1024.0, 1e-3);
    vg_volume_destroy(a);
    vg_volume_destroy(b);
    return 0;
}

TEST_IMPL(volume_compressed_equals_plain)
{
    char dir[512], jls[512], jpg[512], reason[256];
    snprintf(dir, sizeof dir, "%s/ct", test_tmpdir());
    snprintf(jls, sizeof jls, "%s/jls", test_tmpdir());
    snprintf(jpg, sizeof jpg, "%s/jpg", test_tmpdir());
    ASSERT_EQ(make_series(dir, 6), 0);
    ASSERT_EQ(test_sh("mkdir -p %s %s", jls, jpg), 0);
    ASSERT_EQ(test_sh("for f in %s/*.dcm; do dcmcjpls \"$f\" %s/$(basename \"$f\") || exit 1; done",
                 dir, jls), 0);
    ASSERT_EQ(test_sh("for f in %s/*.dcm; do dcmcjpeg +e1 \"$f\" %s/$(basename \"$f\") || exit 1; done",
                 dir, jpg), 0);
    vg_volume_t *a = NULL, *b = NULL, *c = NULL;
    ASSERT_EQ(read_dir(dir, &a, reason, sizeof reason), 0);
    ASSERT_EQ(read_dir(jls, &b, reason, sizeof reason), 0);
    ASSERT_EQ(read_dir(jpg, &c, reason, sizeof reason), 0);
    size_t n = (size_t)a->nx * a->ny * a->nz;
    ASSERT_EQ(memcmp(a->hu, b->hu, n * sizeof(float)), 0);
    ASSERT_EQ(memcmp(a->hu, c->hu, n * sizeof(float)), 0);
    vg_volume_destroy(a);
    vg_volume_destroy(b);
    vg_volume_destroy(c);
    return 0;
}

TEST_IMPL(volume_refusals)
{
    char dir[512], reason[256];
    snprintf(dir, sizeof dir, "%s/ct", test_tmpdir());
    ASSERT_EQ(make_series(dir, 12), 0);
    vg_volume_t *v = NULL;
    /* Remove two neighbouring slices in the middle: a gap of three. */
    ASSERT_EQ(test_sh("cd %s && rm $(ls | sort | sed -n '6p;7p')", dir), 0);
    ASSERT_EQ(read_dir(dir, &v, reason, sizeof reason), VG_ENOTANALYSABLE);
    ASSERT(v == NULL);
    ASSERT_STR_CONTAINS(reason, "missing slices: 2 missing");

    snprintf(dir, sizeof dir, "%s/tilt", test_tmpdir());
    ASSERT_EQ(make_series(dir, 8), 0);
    /* Shift each slice along y in proportion to its z: a 20-degree tilt. */
    ASSERT_EQ(test_sh("cd %s && for f in *.dcm; do"
                 " z=$(dcmdump +P 0020,0032 $f | sed 's/.*\\[\\(.*\\)\\].*/\\1/' | cut -d'\\' -f3);"
                 " y=$(awk \"BEGIN { print $z * 0.364 }\");"
                 " dcmodify -nb -m \"(0020,0032)=-160\\\\$y\\\\$z\" $f || exit 1; done",
                 dir), 0);
    ASSERT_EQ(read_dir(dir, &v, reason, sizeof reason), VG_ENOTANALYSABLE);
    ASSERT_STR_CONTAINS(reason, "gantry tilt");

    snprintf(dir, sizeof dir, "%s/orient", test_tmpdir());
    ASSERT_EQ(make_series(dir, 8), 0);
    ASSERT_EQ(test_sh("cd %s && f=$(ls | head -1) && dcmodify -nb -m"
                 " \"(0020,0037)=1\\\\0\\\\0\\\\0\\\\0\\\\-1\" $f", dir), 0);
    ASSERT_EQ(read_dir(dir, &v, reason, sizeof reason), VG_ENOTANALYSABLE);
    ASSERT_STR_CONTAINS(reason, "mixed orientation");
    return 0;
}
