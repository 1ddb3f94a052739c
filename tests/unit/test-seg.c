/* The Segmentation writer: lesion masks on the analysis grid mapped onto
 * the source slices (checked against the shapes themselves, voxel by
 * voxel), and the written object checked from outside: dciodvfy for the
 * standard, pydicom for what it says (segments, frames, positions,
 * references, tracking UIDs). Series come from scripts/make-ct-series. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "inference/dicom_out.h"
#include "server/error.h"
#include "tests/unit/test.h"

#define GRID 2.0 /* mm: the analysis grid of the masks */

/* Finding 0: a ball of radius 6 voxels around grid (90, 80, 14).
 * Finding 1: the solid block i 10..20, j 15..30, k 4..9. */
static const int ball_c[3] = {90, 80, 14}, ball_r = 6;
static const int block[6] = {10, 15, 4, 11, 16, 6};

static int in_shape(int f, int i, int j, int k)
{
    if (f == 0) {
        int di = i - ball_c[0], dj = j - ball_c[1], dk = k - ball_c[2];
        return di * di + dj * dj + dk * dk <= ball_r * ball_r;
    }
    return i >= block[0] && i < block[0] + block[3] && j >= block[1] &&
           j < block[1] + block[4] && k >= block[2] && k < block[2] + block[5];
}

/* Packs shape F into FI as bone.c does: bit b (i fastest) is bit b%8 of
 * byte b/8. Returns 0 or -ENOMEM. */
static int make_finding(int f, vg_finding_t *fi)
{
    memset(fi, 0, sizeof *fi);
    int d = 2 * ball_r + 1;
    int box[6] = {ball_c[0] - ball_r, ball_c[1] - ball_r, ball_c[2] - ball_r, d, d, d};
    if (f == 1)
        memcpy(box, block, sizeof box);
    memcpy(fi->mask_box, box, sizeof box);
    snprintf(fi->type, sizeof fi->type, "%s",
             f == 0 ? "osteolytic_metastasis" : "haemangioma");
    fi->probability = f == 0 ? 0.91 : 0.64;
    fi->volume_mm3 = 1000;
    size_t bits = (size_t)box[3] * box[4] * box[5], b = 0;
    fi->mask_bytes = (bits + 7) / 8;
    fi->mask = calloc(fi->mask_bytes, 1);
    if (!fi->mask)
        return -ENOMEM;
    for (int k = box[2]; k < box[2] + box[5]; k++)
        for (int j = box[1]; j < box[1] + box[4]; j++)
            for (int i = box[0]; i < box[0] + box[3]; i++, b++)
                if (in_shape(f, i, j, k))
                    fi->mask[b >> 3] |= (unsigned char)(1u << (b & 7));
    return 0;
}

static void make_manifest(vg_manifest_t *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "vigil-bone-lesions");
    snprintf(m->version, sizeof m->version, "0.1.0");
    m->not_for_clinical_use = 1;
    m->n_classes = 2;
    vg_class_t *c = &m->classes[0];
    snprintf(c->name, sizeof c->name, "osteolytic_metastasis");
    c->code = (vg_code_t){"SCT", "14799000", "Neoplasm, metastatic"};
    c->modifier = (vg_code_t){"99VIGIL", "VG-OL", "Osteolytic"};
    c = &m->classes[1];
    snprintf(c->name, sizeof c->name, "haemangioma");
    c->code = (vg_code_t){"SCT", "2099007", "Hemangioma"};
}

/* Everything a test needs: a 64x64x20 series of 5.6 x 5.6 x 2.5 mm read
 * back as a volume, the two findings and the writer's input. */
typedef struct {
    char dir[256], first[600];
    vg_volume_t *vol;
    vg_manifest_t man;
    vg_finding_t findings[2];
    vg_result_t res;
    char uids[2][65];
    vg_dicom_input_t in;
} fixture_t;

static int fixture_init(fixture_t *fx)
{
    memset(fx, 0, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "%s/ct", test_tmpdir());
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 scripts/make-ct-series --out %s --slices 20 --size 64"
             " --thickness 2.5 --seed 5 >/dev/null",
             fx->dir);
    if (system(cmd) != 0)
        return -1;
    static char paths[32][600];
    const char *ptrs[32];
    int n = 0;
    DIR *d = opendir(fx->dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL && n < 32)
        if (strstr(e->d_name, ".dcm")) {
            snprintf(paths[n], sizeof paths[n], "%s/%s", fx->dir, e->d_name);
            ptrs[n] = paths[n];
            n++;
        }
    if (d)
        closedir(d);
    char reason[256];
    if (n != 20 || vg_volume_read(ptrs, n, &fx->vol, reason, sizeof reason) != 0)
        return -1;
    snprintf(fx->first, sizeof fx->first, "%s", paths[0]);
    make_manifest(&fx->man);
    for (int f = 0; f < 2; f++) {
        if (make_finding(f, &fx->findings[f]) < 0)
            return -1;
        vg_dicom_new_uid(fx->uids[f]);
    }
    fx->res.findings = fx->findings;
    fx->res.n_findings = 2;
    snprintf(fx->res.status, sizeof fx->res.status, "done");
    fx->in.vol = fx->vol;
    fx->in.grid_spacing = GRID;
    fx->in.res = &fx->res;
    fx->in.man = &fx->man;
    fx->in.source_path = fx->first;
    fx->in.tracking_uids = (const char(*)[65])fx->uids;
    return 0;
}

static void fixture_close(fixture_t *fx)
{
    for (int f = 0; f < 2; f++)
        free(fx->findings[f].mask);
    vg_volume_destroy(fx->vol);
}

/* The expected mask of finding F on slice K, straight from the shape:
 * pixel (x, y) is set when grid voxel (round(x sx/g), round(y sy/g),
 * round(k sz/g)) is inside. Returns the pixel count; fills OUT if given. */
static int expected_slice(const vg_volume_t *v, int f, int k, unsigned char *out)
{
    int count = 0, kk = (int)floor(k * v->spacing[2] / GRID + 0.5);
    for (int y = 0; y < v->ny; y++)
        for (int x = 0; x < v->nx; x++) {
            int set = in_shape(f, (int)floor(x * v->spacing[0] / GRID + 0.5),
                               (int)floor(y * v->spacing[1] / GRID + 0.5), kk);
            if (out)
                out[y * v->nx + x] = (unsigned char)set;
            count += set;
        }
    return count;
}

TEST_IMPL(seg_finding_frames)
{
    fixture_t fx;
    ASSERT_EQ(fixture_init(&fx), 0);
    const vg_volume_t *v = fx.vol;
    ASSERT_DBL_NEAR(v->spacing[0], 5.6, 1e-9);
    ASSERT_DBL_NEAR(v->spacing[2], 2.5, 1e-9);
    size_t plane = (size_t)v->nx * v->ny;
    unsigned char *want = malloc(plane);
    ASSERT(want);
    for (int f = 0; f < 2; f++) {
        unsigned char *frames = NULL;
        int *slices = NULL;
        int n = vg_finding_frames(&fx.in, f, &frames, &slices);
        int expect = 0;
        for (int k = 0; k < v->nz; k++)
            if (expected_slice(v, f, k, want) > 0) {
                ASSERT_LT(expect, n);
                ASSERT_EQ(slices[expect], k);
                ASSERT_EQ(memcmp(frames + (size_t)expect * plane, want, plane), 0);
                expect++;
            }
        ASSERT_EQ(n, expect);
        if (f == 1) {
            /* Worked by hand: grid k 4..9 is slices 3..7 (k * 1.25 rounded);
             * grid i 10..20 is columns 4..7 and j 15..30 rows 6..10 (x 2.8). */
            ASSERT_EQ(n, 5);
            ASSERT_EQ(slices[0], 3);
            ASSERT_EQ(slices[4], 7);
            int set = 0;
            for (size_t p = 0; p < plane; p++)
                set += frames[p];
            ASSERT_EQ(set, 4 * 5);
            ASSERT_EQ(frames[6 * 64 + 4], 1);
            ASSERT_EQ(frames[10 * 64 + 7], 1);
            ASSERT_EQ(frames[5 * 64 + 4], 0);
            ASSERT_EQ(frames[6 * 64 + 8], 0);
        } else {
            ASSERT_GE(n, 8); /* a 24 mm ball over 2.5 mm slices */
        }
        free(frames);
        free(slices);
    }
    free(want);
    /* A lesion between two source slices (grid k 2 only; slices map to
     * grid 0, 1, 3, 4, ...) covers no source pixel. */
    fx.findings[1].mask_box[2] = 2;
    fx.findings[1].mask_box[5] = 1;
    unsigned char *frames = NULL;
    int *slices = NULL;
    ASSERT_EQ(vg_finding_frames(&fx.in, 1, &frames, &slices), 0);
    ASSERT(frames == NULL && slices == NULL);
    fixture_close(&fx);
    return 0;
}

/* Runs CMD and returns its output (malloc'd; NULL on failure). */
static char *capture(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    if (pclose(p) != 0 && buf) {
        free(buf);
        return NULL;
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

static const char readback_py[] =
    "import glob, sys, pydicom\n"
    "seg = pydicom.dcmread(sys.argv[1])\n"
    "print()\n"
    "print('study', seg.StudyInstanceUID)\n"
    "print('series', seg.SeriesInstanceUID, seg.SeriesNumber, seg.Modality)\n"
    "print('desc', seg.SeriesDescription)\n"
    "print('segments', len(seg.SegmentSequence))\n"
    "for s in seg.SegmentSequence:\n"
    "    prop = s.SegmentedPropertyTypeCodeSequence[0]\n"
    "    mods = prop.get('SegmentedPropertyTypeModifierCodeSequence', [])\n"
    "    print('segment', s.SegmentNumber, s.TrackingUID,\n"
    "          s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,\n"
    "          prop.CodeValue,\n"
    "          mods[0].CodeValue if mods else '-', s.SegmentAlgorithmType)\n"
    "print('frames', int(seg.NumberOfFrames))\n"
    "px = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)\n"
    "for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):\n"
    "    ref = fg.DerivationImageSequence[0].SourceImageSequence[0]\n"
    "    ipp = fg.PlanePositionSequence[0].ImagePositionPatient\n"
    "    print('frame', fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber,\n"
    "          ref.ReferencedSOPInstanceUID, *[float(x) for x in ipp], int(px[i].sum()))\n"
    "refs = seg.ReferencedSeriesSequence[0]\n"
    "print('referenced', refs.SeriesInstanceUID, len(refs.ReferencedInstanceSequence))\n"
    "for f in glob.glob(sys.argv[2] + '/*.dcm'):\n"
    "    d = pydicom.dcmread(f, stop_before_pixels=True)\n"
    "    print('source_uids', d.StudyInstanceUID, d.SeriesInstanceUID)\n"
    "    print('source', d.SOPInstanceUID, *[float(x) for x in d.ImagePositionPatient])\n";

/* The source position of SOP in the readback OUT, 0 if found. */
static int source_position(const char *out, const char *sop, double p[3])
{
    for (const char *l = out; (l = strstr(l, "source ")) != NULL; l++) {
        char uid[65];
        if (sscanf(l, "source %64s %lf %lf %lf", uid, &p[0], &p[1], &p[2]) == 4 &&
            strcmp(uid, sop) == 0)
            return 0;
    }
    return -1;
}

/* Checks the frame lines of OUT against the expected frames of FX. */
static int check_frames(const fixture_t *fx, const char *series, const char *out)
{
    const vg_volume_t *v = fx->vol;
    const char *l = out;
    int frames = 0, slices_used[64] = {0}, referenced = 0;
    for (int f = 0; f < 2; f++)
        for (int k = 0; k < v->nz; k++) {
            int count = expected_slice(v, f, k, NULL);
            if (count == 0)
                continue;
            l = strstr(l, "\nframe ");
            ASSERT(l);
            l++;
            int segno, pixels;
            char ref[65];
            double p[3], src[3];
            ASSERT_EQ(sscanf(l, "frame %d %64s %lf %lf %lf %d", &segno, ref, &p[0], &p[1],
                             &p[2], &pixels),
                      6);
            ASSERT_EQ(segno, f + 1);
            ASSERT_STR_EQ(ref, v->sop_uids[k]);
            ASSERT_EQ(pixels, count);
            ASSERT_EQ(source_position(out, ref, src), 0);
            for (int a = 0; a < 3; a++)
                ASSERT_DBL_NEAR(p[a], src[a], 1e-4);
            referenced += !slices_used[k];
            slices_used[k] = 1;
            frames++;
        }
    ASSERT(strstr(l + 1, "\nframe ") == NULL);
    char line[128];
    snprintf(line, sizeof line, "\nframes %d\n", frames);
    ASSERT_STR_CONTAINS(out, line);
    snprintf(line, sizeof line, "\nreferenced %s %d\n", series, referenced);
    ASSERT_STR_CONTAINS(out, line);
    return 0;
}

TEST_IMPL(seg_write_readback)
{
    fixture_t fx;
    ASSERT_EQ(fixture_init(&fx), 0);
    char path[700], err[256], cmd[2048];
    /* Neither out nor out/new exists yet. */
    snprintf(path, sizeof path, "%s/out/new/seg.dcm", test_tmpdir());
    vg_dicom_ref_t ref;
    int wrc = vg_seg_write(&fx.in, path, &ref, err, sizeof err);
    if (wrc)
        fprintf(stderr, "%s\n", err);
    ASSERT_EQ(wrc, 0);
    ASSERT_STR_EQ(ref.sop_class_uid, "1.2.840.10008.5.1.4.1.1.66.4");
    ASSERT_EQ(strncmp(ref.sop_uid, "2.25.", 5), 0);
    ASSERT(strcmp(ref.series_uid, fx.vol->series_uid) != 0);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    snprintf(cmd, sizeof cmd, "%s.part", path);
    ASSERT_NE(stat(cmd, &st), 0);

    /* The standard's view: no error (warnings go to the log for a reader). */
    snprintf(cmd, sizeof cmd, "dciodvfy %s 2>&1; true", path);
    char *report = capture(cmd);
    ASSERT(report);
    if (strstr(report, "Error"))
        fprintf(stderr, "%s", report);
    ASSERT(strstr(report, "Error") == NULL);
    free(report);

    char script[600];
    snprintf(script, sizeof script, "%s/readback.py", test_tmpdir());
    FILE *py = fopen(script, "w");
    ASSERT(py);
    fputs(readback_py, py);
    fclose(py);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s", script, path, fx.dir);
    char *out = capture(cmd);
    ASSERT(out);
    char line[300], study[65], series[65];
    const char *uids = strstr(out, "\nsource_uids ");
    ASSERT(uids);
    ASSERT_EQ(sscanf(uids, "\nsource_uids %64s %64s", study, series), 2);
    snprintf(line, sizeof line, "\nstudy %s\n", study);
    ASSERT_STR_CONTAINS(out, line);
    snprintf(line, sizeof line, "series %s 9801 SEG\n", ref.series_uid);
    ASSERT_STR_CONTAINS(out, line);
    ASSERT_STR_CONTAINS(
        out, "desc Vigil lesions vigil-bone-lesions 0.1.0, not for clinical use\n");
    ASSERT_STR_CONTAINS(out, "segments 2\n");
    snprintf(line, sizeof line, "segment 1 %s 49755003 14799000 VG-OL AUTOMATIC\n",
             fx.uids[0]);
    ASSERT_STR_CONTAINS(out, line);
    snprintf(line, sizeof line, "segment 2 %s 49755003 2099007 - AUTOMATIC\n", fx.uids[1]);
    ASSERT_STR_CONTAINS(out, line);
    int rc = check_frames(&fx, series, out);
    if (rc)
        fprintf(stderr, "%s", out);
    free(out);
    fixture_close(&fx);
    return rc;
}

/* The entries of DIR other than . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

TEST_IMPL(seg_no_findings)
{
    fixture_t fx;
    ASSERT_EQ(fixture_init(&fx), 0);
    char dir[600], path[700], err[256] = "";
    snprintf(dir, sizeof dir, "%s/out", test_tmpdir());
    ASSERT_EQ(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/seg.dcm", dir);
    fx.res.n_findings = 0;
    vg_dicom_ref_t ref;
    ASSERT_EQ(vg_seg_write(&fx.in, path, &ref, err, sizeof err), -EINVAL);
    ASSERT_STR_CONTAINS(err, "no findings");
    ASSERT_EQ(count_entries(dir), 0);

    /* Findings that fall between the source slices leave nothing to draw. */
    fx.res.n_findings = 2;
    for (int f = 0; f < 2; f++) {
        fx.findings[f].mask_box[2] = 2;
        fx.findings[f].mask_box[5] = 1;
    }
    ASSERT_EQ(vg_seg_write(&fx.in, path, &ref, err, sizeof err), -EINVAL);
    ASSERT_STR_CONTAINS(err, "no finding covers");
    ASSERT_EQ(count_entries(dir), 0);
    fixture_close(&fx);
    return 0;
}

TEST_IMPL(seg_write_failures)
{
    fixture_t fx;
    ASSERT_EQ(fixture_init(&fx), 0);
    char dir[600], path[700], err[256] = "";
    vg_dicom_ref_t ref;
    snprintf(dir, sizeof dir, "%s/out", test_tmpdir());
    ASSERT_EQ(mkdir(dir, 0755), 0);

    /* A directory that cannot be made: a plain file is in the way. */
    snprintf(path, sizeof path, "%s/file", dir);
    FILE *f = fopen(path, "w");
    ASSERT(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/file/seg.dcm", dir);
    ASSERT_EQ(vg_seg_write(&fx.in, path, &ref, err, sizeof err), -ENOTDIR);
    ASSERT_STR_CONTAINS(err, "file");
    ASSERT_EQ(ref.sop_uid[0], '\0');
    ASSERT_EQ(count_entries(dir), 1);

    /* The rename fails after the whole file was written (the target is a
     * directory): the temporary file goes too. */
    snprintf(path, sizeof path, "%s/target", dir);
    ASSERT_EQ(mkdir(path, 0755), 0);
    int rc = vg_seg_write(&fx.in, path, &ref, err, sizeof err);
    ASSERT(rc == -EISDIR || rc == -ENOTEMPTY || rc == -EEXIST);
    ASSERT_EQ(count_entries(dir), 2);
    ASSERT_EQ(count_entries(path), 0);

    /* A finding whose type the manifest does not know. */
    snprintf(fx.findings[1].type, sizeof fx.findings[1].type, "unknown_lesion");
    snprintf(path, sizeof path, "%s/seg.dcm", dir);
    ASSERT_EQ(vg_seg_write(&fx.in, path, &ref, err, sizeof err), -EINVAL);
    ASSERT_STR_CONTAINS(err, "unknown_lesion");
    ASSERT_EQ(count_entries(dir), 2);
    snprintf(fx.findings[1].type, sizeof fx.findings[1].type, "haemangioma");

    /* An unreadable source file. */
    fx.in.source_path = "/nonexistent/ct.dcm";
    snprintf(path, sizeof path, "%s/seg.dcm", dir);
    ASSERT_EQ(vg_seg_write(&fx.in, path, &ref, err, sizeof err), VG_EPARSE);
    ASSERT_EQ(count_entries(dir), 2);
    fixture_close(&fx);
    return 0;
}
