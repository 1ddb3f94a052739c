/* The TID 1500 Measurement Report (inference/sr_shim.cpp) written for a
 * real CT series made by scripts/make-ct-series, then read back by three
 * independent readers: dciodvfy (the IOD must validate), dsrdump
 * (DCMTK's view of the tree) and pydicom (tests/unit/sr_values.py). */
#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inference/dicom_out.h"
#include "inference/manifest.h"
#include "inference/volume.h"
#include "server/error.h"
#include "storage/results.h"
#include "tests/unit/test.h"

#define SEG_CLASS "1.2.840.10008.5.1.4.1.1.66.4"

typedef struct {
    char dir[512], out[512], first[600];
    char study[65]; /* the source's Study Instance UID */
    vg_volume_t *vol;
    vg_manifest_t man;
    vg_result_t res;
    vg_finding_t findings[2];
    char tracking[2][65];
    vg_dicom_ref_t seg;
    vg_dicom_input_t in;
} fixture_t;

static fixture_t fx;

/* Runs the command built from FMT and returns its standard output
 * (malloc'd, NUL-ended), or NULL when it cannot be run. */
static char *capture(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *capture(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 4096, len = 0, n;
    char *buf = malloc(cap);
    while (buf && (n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    pclose(p);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* A 6-slice series, its volume, the bone manifest and a done result with
 * N findings (0 or 2; numbers chosen to print exactly). */
static int setup(int n)
{
    char reason[256], err[256];
    snprintf(fx.dir, sizeof fx.dir, "%s/ct", test_tmpdir());
    snprintf(fx.out, sizeof fx.out, "%s/out/sr/report.dcm", test_tmpdir());
    char cmd[1024];
    vg_dicom_new_uid(fx.study);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 scripts/make-ct-series --out %s --slices 6 --size 32"
             " --thickness 2.5 --seed 3 --patient-name 'Test^Report' --patient-id SR42"
             " --accession ACC42 --study-uid %s >/dev/null",
             fx.dir, fx.study);
    if (system(cmd) != 0)
        return -1;
    char pattern[600];
    glob_t g;
    snprintf(pattern, sizeof pattern, "%s/*.dcm", fx.dir);
    if (glob(pattern, 0, NULL, &g) != 0)
        return -1;
    snprintf(fx.first, sizeof fx.first, "%s", g.gl_pathv[0]);
    int rc = vg_volume_read((const char *const *)g.gl_pathv, (int)g.gl_pathc, &fx.vol,
                            reason, sizeof reason);
    globfree(&g);
    if (rc != 0)
        return -1;
    if (vg_manifest_load("models/bone/manifest.json", &fx.man, err, sizeof err) != 0)
        return -1;
    /* Fixed here so that a retrained manifest does not change the text. */
    fx.man.operating_threshold = 0.35;
    fx.man.not_for_clinical_use = 1;
    memset(&fx.res, 0, sizeof fx.res);
    snprintf(fx.res.status, sizeof fx.res.status, "done");
    memset(fx.findings, 0, sizeof fx.findings);
    snprintf(fx.findings[0].type, sizeof fx.findings[0].type, "osteolytic_metastasis");
    fx.findings[0].probability = 0.8125;
    fx.findings[0].volume_mm3 = 1234.5;
    fx.findings[0].mean_hu = -153.4;
    fx.findings[0].diameter_mm = 18.7;
    snprintf(fx.findings[1].type, sizeof fx.findings[1].type, "haemangioma");
    fx.findings[1].probability = 0.625;
    fx.findings[1].volume_mm3 = 430.9;
    fx.findings[1].mean_hu = 87.2;
    fx.findings[1].diameter_mm = 11.3;
    fx.res.findings = n ? fx.findings : NULL;
    fx.res.n_findings = n;
    fx.res.patient_score = n ? 0.9123 : 0.0417;
    fx.res.positive = n ? 1 : 0;
    for (int i = 0; i < 2; i++)
        vg_dicom_new_uid(fx.tracking[i]);
    snprintf(fx.seg.sop_class_uid, sizeof fx.seg.sop_class_uid, SEG_CLASS);
    vg_dicom_new_uid(fx.seg.sop_uid);
    vg_dicom_new_uid(fx.seg.series_uid);
    fx.in = (vg_dicom_input_t){.vol = fx.vol,
                               .grid_spacing = 1.5,
                               .res = &fx.res,
                               .man = &fx.man,
                               .source_path = fx.first,
                               .tracking_uids = (const char(*)[65])fx.tracking};
    return 0;
}

/* dciodvfy's verdict: fails on any line holding "Error"; warnings are
 * printed for the reader of the test log. */
static int validate(const char *path)
{
    char *out = capture("dciodvfy %s 2>&1", path);
    if (!out)
        return -1;
    int errors = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, "Error")) {
            fprintf(stderr, "dciodvfy: %s\n", line);
            errors++;
        } else if (strstr(line, "Warning")) {
            fprintf(stderr, "dciodvfy (accepted): %s\n", line);
        }
    }
    free(out);
    return errors;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

TEST_IMPL(sr_two_findings)
{
    char err[256] = "";
    ASSERT_EQ(setup(2), 0);
    vg_dicom_ref_t out;
    int rc = vg_sr_write(&fx.in, &fx.seg, fx.out, &out, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "vg_sr_write: %s\n", err);
    ASSERT_EQ(rc, 0);
    ASSERT_STR_EQ(out.sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.22"); /* Enhanced SR */
    ASSERT_STR_CONTAINS(out.sop_uid, "2.25.");
    ASSERT_STR_CONTAINS(out.series_uid, "2.25.");
    char part[600];
    snprintf(part, sizeof part, "%s.part", fx.out);
    ASSERT(!exists(part));
    ASSERT_EQ(validate(fx.out), 0);

    char *dump = capture("dsrdump +Pl +Pc +Pu %s 2>&1", fx.out);
    ASSERT(dump);
    static const char *const want[] = {
        "\"lesion 1\"",
        "\"lesion 2\"",
        "(14799000,SCT,\"Neoplasm, metastatic\")", /* finding 1 and the patient call */
        "(VG-OL,99VIGIL,\"Osteolytic\")",          /* finding 1's modifier */
        "(2099007,SCT,\"Hemangioma\")",            /* finding 2 */
        "(272673000,SCT,\"Bone\")",
        "=\"1234.5\" (mm3,UCUM,",
        "=\"-153.4\" ([hnsf'U],UCUM,",
        "=\"18.7\" (mm,UCUM,",
        "=\"0.8125\" (1,UCUM,",
        "=\"430.9\" (mm3,UCUM,",
        "=\"87.2\" ([hnsf'U],UCUM,",
        "=\"11.3\" (mm,UCUM,",
        "=\"0.6250\" (1,UCUM,",
        "(373066001,SCT,\"Yes\")",
        "=\"0.9123\" (1,UCUM,",
        "=\"0.3500\" (1,UCUM,",
        "not for clinical use",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ASSERT_STR_CONTAINS(dump, want[i]);
    char quoted[80];
    snprintf(quoted, sizeof quoted, "\"%s\"", fx.man.name); /* device and algorithm name */
    ASSERT_STR_CONTAINS(dump, quoted);
    snprintf(quoted, sizeof quoted, "\"%s\"", fx.man.version);
    ASSERT_STR_CONTAINS(dump, quoted);
    ASSERT_STR_CONTAINS(dump, fx.tracking[0]);
    ASSERT_STR_CONTAINS(dump, fx.tracking[1]);
    ASSERT_STR_CONTAINS(dump, fx.seg.sop_uid);
    for (int k = 0; k < fx.vol->nz; k++) /* the image library */
        ASSERT_STR_CONTAINS(dump, fx.vol->sop_uids[k]);
    free(dump);

    char *py =
        capture("/usr/bin/python3 tests/unit/sr_values.py %s %s 2>&1", fx.out, fx.first);
    ASSERT(py);
    ASSERT(!strstr(py, "|differs|"));
    int copied = 0;
    for (const char *p = py; (p = strstr(p, "copied|")) != NULL; p++)
        copied++;
    ASSERT_EQ(copied, 10);
    ASSERT_STR_CONTAINS(py, "copied|PatientID|ok\n");
    char line[256];
    snprintf(line, sizeof line, "study|%s\n", fx.study);
    ASSERT_STR_CONTAINS(py, line);
    snprintf(line, sizeof line, "series|9802|Vigil %s %s, not for clinical use\n",
             fx.man.name, fx.man.version);
    ASSERT_STR_CONTAINS(py, line);
    static const char *const values[] = {
        "lesion 1|NUM|118565006|1234.5|mm3\n", "lesion 1|NUM|112031|-153.4|[hnsf'U]\n",
        "lesion 1|NUM|103339001|18.7|mm\n",    "lesion 1|NUM|122157|0.8125|1\n",
        "lesion 1|CODE|121071|14799000\n",     "lesion 1|CODE|116676008|VG-OL\n",
        "lesion 2|NUM|118565006|430.9|mm3\n",  "lesion 2|NUM|112031|87.2|[hnsf'U]\n",
        "lesion 2|NUM|103339001|11.3|mm\n",    "lesion 2|NUM|122157|0.6250|1\n",
        "lesion 2|CODE|121071|2099007\n",      "-|CODE|14799000|373066001\n",
        "-|NUM|VG-PSCORE|0.9123|1\n",          "-|NUM|122411|0.3500|1\n",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        ASSERT_STR_CONTAINS(py, values[i]);
    for (int n = 1; n <= 2; n++) { /* algorithm identification in each group */
        snprintf(line, sizeof line, "lesion %d|TEXT|111001|%s\n", n, fx.man.name);
        ASSERT_STR_CONTAINS(py, line);
        snprintf(line, sizeof line, "lesion %d|TEXT|111003|%s\n", n, fx.man.version);
        ASSERT_STR_CONTAINS(py, line);
    }
    ASSERT(!strstr(py, "lesion 2|CODE|116676008")); /* haemangioma has no modifier */
    free(py);
    vg_volume_destroy(fx.vol);
    return 0;
}

TEST_IMPL(sr_no_findings)
{
    char err[256] = "";
    ASSERT_EQ(setup(0), 0);
    fx.man.not_for_clinical_use = 0; /* and no statement */
    vg_dicom_ref_t out;
    int rc = vg_sr_write(&fx.in, NULL, fx.out, &out, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "vg_sr_write: %s\n", err);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(validate(fx.out), 0);
    char *py = capture("/usr/bin/python3 tests/unit/sr_values.py %s 2>&1", fx.out);
    ASSERT(py);
    ASSERT_STR_CONTAINS(py, "-|CODE|14799000|373067005\n"); /* No */
    ASSERT_STR_CONTAINS(py, "-|NUM|VG-PSCORE|0.0417|1\n");
    ASSERT(!strstr(py, "|TEXT|121106|"));
    char line[256];
    snprintf(line, sizeof line, "series|9802|Vigil %s %s\n", fx.man.name, fx.man.version);
    ASSERT_STR_CONTAINS(py, line);
    ASSERT(!strstr(py, "lesion 1"));
    ASSERT(!strstr(py, "|118565006|"));
    free(py);
    char *dump = capture("dsrdump +Pc %s 2>&1", fx.out);
    ASSERT(dump);
    ASSERT_STR_CONTAINS(dump, "(373067005,SCT,\"No\")");
    ASSERT(!strstr(dump, "(125007,DCM,\"Measurement Group\")"));
    ASSERT(!strstr(dump, "(126010,DCM,\"Imaging Measurements\")")); /* none, not empty */
    free(dump);
    vg_volume_destroy(fx.vol);
    return 0;
}

TEST_IMPL(sr_unreadable_source)
{
    char err[256] = "", bad[600];
    ASSERT_EQ(setup(2), 0);
    vg_dicom_ref_t out;
    snprintf(bad, sizeof bad, "%s/missing.dcm", test_tmpdir());
    fx.in.source_path = bad;
    ASSERT_EQ(vg_sr_write(&fx.in, &fx.seg, fx.out, &out, err, sizeof err), VG_EPARSE);
    ASSERT_STR_CONTAINS(err, "missing.dcm");
    ASSERT(!exists(fx.out));

    /* A file that is not DICOM at all. */
    snprintf(bad, sizeof bad, "%s/junk.dcm", test_tmpdir());
    FILE *f = fopen(bad, "w");
    ASSERT(f);
    fputs("this is not a DICOM file\n", f);
    fclose(f);
    err[0] = '\0';
    ASSERT_EQ(vg_sr_write(&fx.in, &fx.seg, fx.out, &out, err, sizeof err), VG_EPARSE);
    ASSERT_STR_CONTAINS(err, "junk.dcm");
    ASSERT(!exists(fx.out));
    char part[600];
    snprintf(part, sizeof part, "%s.part", fx.out);
    ASSERT(!exists(part));
    vg_volume_destroy(fx.vol);
    return 0;
}

TEST_IMPL(sr_encoding_failure)
{
    char err[256] = "";
    ASSERT_EQ(setup(2), 0);
    vg_dicom_ref_t out;
    snprintf(fx.tracking[1], sizeof fx.tracking[1], "not a UID");
    ASSERT_EQ(vg_sr_write(&fx.in, &fx.seg, fx.out, &out, err, sizeof err), VG_EDCM);
    ASSERT_STR_CONTAINS(err, "tracking UID");
    ASSERT(!exists(fx.out));

    /* A finding whose class the manifest does not name. */
    snprintf(fx.tracking[1], sizeof fx.tracking[1], "2.25.1");
    snprintf(fx.findings[1].type, sizeof fx.findings[1].type, "no_such_class");
    ASSERT_EQ(vg_sr_write(&fx.in, &fx.seg, fx.out, &out, err, sizeof err), -EINVAL);
    ASSERT_STR_CONTAINS(err, "no_such_class");
    ASSERT(!exists(fx.out));
    char part[600];
    snprintf(part, sizeof part, "%s.part", fx.out);
    ASSERT(!exists(part));
    vg_volume_destroy(fx.vol);
    return 0;
}
