/* The breast risk report (inference/breast_sr_shim.cpp through
 * vg_report_write_breast) written for a small mammography and ultrasound
 * study made at test time, then read back by dciodvfy (the IOD must
 * validate) and pydicom (tests/unit/breast_sr_values.py). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "inference/dicom_out.h"
#include "inference/manifest.h"
#include "inference/report.h"
#include "server/error.h"
#include "storage/results.h"
#include "tests/unit/test.h"

#define ENHANCED_SR "1.2.840.10008.5.1.4.1.1.88.22"
#define N_EVIDENCE 3

typedef struct {
    char data[512]; /* the data directory */
    char study[65];
    char paths[N_EVIDENCE][600]; /* mg-l-cc, mg-l-mlo, us-r */
    char sop[N_EVIDENCE][65], sop_class[N_EVIDENCE][65], series[N_EVIDENCE][65];
    const char *evidence[N_EVIDENCE];
    vg_manifest_t man;
    vg_result_t res;
    vg_assessment_t as[2];
} fixture_t;

static fixture_t fx;

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

/* The evidence files (their UIDs from the generator's output), the
 * manifest and a done result for both breasts; the numbers print exactly
 * with six decimals. */
static int setup(void)
{
    static const char *const names[N_EVIDENCE] = {"mg-l-cc.dcm", "mg-l-mlo.dcm",
                                                  "us-r.dcm"};
    memset(&fx, 0, sizeof fx);
    snprintf(fx.data, sizeof fx.data, "%s/data", test_tmpdir());
    vg_dicom_new_uid(fx.study);
    char *out = capture("/usr/bin/python3 tests/unit/breast_sr_values.py fixtures %s/ev %s",
                        test_tmpdir(), fx.study);
    if (!out)
        return -1;
    int found = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], cls[65], sop[65], series[65];
        if (sscanf(line, "file|%63[^|]|%64[^|]|%64[^|]|%64s", name, cls, sop, series) != 4)
            continue;
        for (int i = 0; i < N_EVIDENCE; i++) {
            if (strcmp(name, names[i]) != 0)
                continue;
            snprintf(fx.paths[i], sizeof fx.paths[i], "%s/ev/%s", test_tmpdir(), name);
            snprintf(fx.sop_class[i], sizeof fx.sop_class[i], "%s", cls);
            snprintf(fx.sop[i], sizeof fx.sop[i], "%s", sop);
            snprintf(fx.series[i], sizeof fx.series[i], "%s", series);
            fx.evidence[i] = fx.paths[i];
            found++;
        }
    }
    free(out);
    if (found != N_EVIDENCE)
        return -1;
    snprintf(fx.man.name, sizeof fx.man.name, "vigil-breast-risk");
    snprintf(fx.man.version, sizeof fx.man.version, "0.1.0");
    snprintf(fx.man.task, sizeof fx.man.task, "breast_risk");
    snprintf(fx.man.provenance, sizeof fx.man.provenance, "synthetic phantoms");
    fx.man.not_for_clinical_use = 1;

    vg_assessment_t *l = &fx.as[0], *r = &fx.as[1];
    snprintf(l->laterality, sizeof l->laterality, "L");
    double pl[5] = {0.0625, 0.1875, 0.25, 0.3125, 0.1875};
    memcpy(l->probabilities, pl, sizeof pl);
    l->malignancy_probability = 0.75;
    snprintf(l->birads, sizeof l->birads, "4C");
    snprintf(l->modalities_used, sizeof l->modalities_used, "MG_CC,MG_MLO");
    snprintf(l->clinical_used, sizeof l->clinical_used, "age,bmi");
    snprintf(r->laterality, sizeof r->laterality, "R");
    double pr[5] = {0.7, 0.29, 0.005, 0.003, 0.002};
    memcpy(r->probabilities, pr, sizeof pr);
    r->malignancy_probability = 0.01;
    snprintf(r->birads, sizeof r->birads, "3");
    snprintf(r->modalities_used, sizeof r->modalities_used, "US_B1");

    fx.res.job_id = 77;
    snprintf(fx.res.study_uid, sizeof fx.res.study_uid, "%s", fx.study);
    snprintf(fx.res.series_uid, sizeof fx.res.series_uid, "%s", fx.study);
    snprintf(fx.res.model, sizeof fx.res.model, "%s", fx.man.name);
    snprintf(fx.res.status, sizeof fx.res.status, "done");
    fx.res.patient_score = -1;
    fx.res.positive = -1;
    fx.res.assessments = fx.as;
    fx.res.n_assessments = 2;
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

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* The report's path in the data directory. */
static void report_path(char *out, size_t size)
{
    snprintf(out, size, "%s/results/%s/%s/77-sr.dcm", fx.data, fx.study, fx.study);
}

/* The lines breast_sr_values.py prints for the measurements of A. */
static int check_group(const char *py, const vg_assessment_t *a)
{
    char line[512];
    const char *g = a->laterality[0] == 'L' ? "breast L" : "breast R";
    snprintf(line, sizeof line, "%s|CODE|363698007|SCT|%s\n", g,
             a->laterality[0] == 'L' ? "80248007" : "73056007");
    ASSERT_STR_CONTAINS(py, line);
    snprintf(line, sizeof line, "%s|NUM|111047|%.6f|1\n", g, a->malignancy_probability);
    ASSERT_STR_CONTAINS(py, line);
    for (int t = 0; t < 5; t++) {
        snprintf(line, sizeof line, "%s|NUM|VG-T%d|%.6f|1\n", g, t + 1,
                 a->probabilities[t]);
        ASSERT_STR_CONTAINS(py, line);
    }
    snprintf(line, sizeof line, "%s|TEXT|111001|%s\n", g, fx.man.name);
    ASSERT_EQ(count(py, line), 6); /* algorithm name and version on each measurement */
    snprintf(line, sizeof line, "%s|TEXT|111003|%s\n", g, fx.man.version);
    ASSERT_EQ(count(py, line), 6);
    snprintf(line, sizeof line, "%s|UIDREF|112040|2.25.", g); /* tracking UID */
    ASSERT_STR_CONTAINS(py, line);
    snprintf(line, sizeof line, "%s|TEXT|VG-IMGIN|%s\n", g, a->modalities_used);
    ASSERT_STR_CONTAINS(py, line);
    return 0;
}

TEST_IMPL(breast_sr_two_breasts)
{
    char err[256] = "", path[1024], line[512];
    ASSERT_EQ(setup(), 0);
    int rc = vg_report_write_breast(fx.data, &fx.man, fx.evidence, N_EVIDENCE, &fx.res, err,
                                    sizeof err);
    if (rc != 0)
        fprintf(stderr, "vg_report_write_breast: %s\n", err);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(fx.res.n_objects, 1);
    vg_result_object_t *o = &fx.res.objects[0];
    ASSERT_STR_EQ(o->sop_class_uid, ENHANCED_SR);
    ASSERT_STR_CONTAINS(o->sop_uid, "2.25.");
    ASSERT_STR_CONTAINS(o->series_uid, "2.25.");
    snprintf(line, sizeof line, "results/%s/%s/77-sr.dcm", fx.study, fx.study);
    ASSERT_STR_EQ(o->relpath, line);
    report_path(path, sizeof path);
    ASSERT(exists(path));
    char part[1100];
    snprintf(part, sizeof part, "%s.part", path);
    ASSERT(!exists(part));
    ASSERT_EQ(validate(path), 0);

    char *py = capture("/usr/bin/python3 tests/unit/breast_sr_values.py %s %s 2>&1", path,
                       fx.paths[0]);
    ASSERT(py);
    ASSERT(!strstr(py, "|differs|"));
    ASSERT_EQ(count(py, "copied|"), 10);
    snprintf(line, sizeof line, "study|%s\n", fx.study);
    ASSERT_STR_CONTAINS(py, line);
    snprintf(line, sizeof line, "series|9803|Vigil %s %s, not for clinical use\n",
             fx.man.name, fx.man.version);
    ASSERT_STR_CONTAINS(py, line);
    snprintf(line, sizeof line, "class|%s\n", ENHANCED_SR);
    ASSERT_STR_CONTAINS(py, line);
    for (int i = 0; i < N_EVIDENCE; i++) {
        snprintf(line, sizeof line, "evidence|%s|%s|%s|%s\n", fx.study, fx.series[i],
                 fx.sop_class[i], fx.sop[i]);
        ASSERT_STR_CONTAINS(py, line);
        snprintf(line, sizeof line, "library|%s|%s\n", fx.sop_class[i], fx.sop[i]);
        ASSERT_STR_CONTAINS(py, line);
    }
    ASSERT_EQ(count(py, "evidence|"), N_EVIDENCE);
    ASSERT_STR_CONTAINS(py, "procedure|SCT|71651007\n"); /* mammography */
    ASSERT_STR_CONTAINS(py, "procedure|SCT|47079000\n"); /* ultrasonography of breast */
    ASSERT_EQ(check_group(py, &fx.as[0]), 0);
    ASSERT_EQ(check_group(py, &fx.as[1]), 0);
    ASSERT_STR_CONTAINS(py, "breast L|CODE|111005|SCT|397144001\n"); /* category 4 ... */
    ASSERT_STR_CONTAINS(py, "breast L|CODE|VG-BRSUB|99VIGIL|VG-BR4C\n"); /* ... 4C */
    ASSERT_STR_CONTAINS(py, "breast L|TEXT|VG-CLININ|age,bmi\n");
    ASSERT_STR_CONTAINS(py, "breast R|CODE|111005|SCT|397143007\n"); /* category 3 */
    ASSERT(!strstr(py, "breast R|CODE|VG-BRSUB"));
    ASSERT(!strstr(py, "breast R|TEXT|VG-CLININ")); /* none used */
    ASSERT_STR_CONTAINS(py, "-|TEXT|121106|");
    ASSERT_STR_CONTAINS(py, "not for clinical use");
    free(py);

    /* A repeated attempt replaces its own file with a new instance. */
    char first_sop[65];
    snprintf(first_sop, sizeof first_sop, "%s", o->sop_uid);
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, fx.evidence, N_EVIDENCE, &fx.res,
                                     err, sizeof err),
              0);
    ASSERT_EQ(fx.res.n_objects, 1);
    ASSERT(strcmp(first_sop, fx.res.objects[0].sop_uid) != 0);
    py = capture("/usr/bin/python3 -c 'import pydicom,sys;"
                 "print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)' %s",
                 path);
    ASSERT(py);
    ASSERT_STR_CONTAINS(py, fx.res.objects[0].sop_uid);
    free(py);
    return 0;
}

TEST_IMPL(breast_sr_not_analysable)
{
    char err[256] = "", path[1024];
    ASSERT_EQ(setup(), 0);
    fx.man.not_for_clinical_use = 0; /* and no statement */
    snprintf(fx.res.status, sizeof fx.res.status, "not_analysable");
    snprintf(fx.res.reason, sizeof fx.res.reason, "no usable image");
    fx.res.assessments = NULL;
    fx.res.n_assessments = 0;
    int rc =
        vg_report_write_breast(fx.data, &fx.man, fx.evidence, 1, &fx.res, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "vg_report_write_breast: %s\n", err);
    ASSERT_EQ(rc, 0);
    report_path(path, sizeof path);
    ASSERT_EQ(validate(path), 0);
    char *py = capture("/usr/bin/python3 tests/unit/breast_sr_values.py %s 2>&1", path);
    ASSERT(py);
    ASSERT_STR_CONTAINS(py, "-|TEXT|121106|No breast could be assessed: no usable image\n");
    ASSERT(!strstr(py, "not for clinical use"));
    ASSERT(!strstr(py, "breast L"));
    ASSERT(!strstr(py, "|111047|"));
    ASSERT_EQ(count(py, "evidence|"), 1);
    ASSERT_STR_CONTAINS(py, "procedure|SCT|71651007\n");
    ASSERT(!strstr(py, "procedure|SCT|47079000"));
    char line[256];
    snprintf(line, sizeof line, "series|9803|Vigil %s %s\n", fx.man.name, fx.man.version);
    ASSERT_STR_CONTAINS(py, line);
    free(py);
    return 0;
}

TEST_IMPL(breast_sr_unreadable_evidence)
{
    char err[256] = "", path[1024], missing[600], junk[600];
    ASSERT_EQ(setup(), 0);
    report_path(path, sizeof path);
    snprintf(missing, sizeof missing, "%s/missing.dcm", test_tmpdir());
    snprintf(junk, sizeof junk, "%s/junk.dcm", test_tmpdir());
    FILE *f = fopen(junk, "w");
    ASSERT(f);
    fputs("this is not a DICOM file\n", f);
    fclose(f);

    const char *none[2] = {missing, junk};
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, none, 2, &fx.res, err, sizeof err),
              VG_EPARSE);
    ASSERT_STR_CONTAINS(err, "missing.dcm");
    ASSERT_EQ(fx.res.n_objects, 0);
    ASSERT(!exists(path));
    const char *only_junk[1] = {junk};
    ASSERT_EQ(
        vg_report_write_breast(fx.data, &fx.man, only_junk, 1, &fx.res, err, sizeof err),
        VG_EPARSE);
    ASSERT_STR_CONTAINS(err, "junk.dcm");
    ASSERT(!exists(path));

    /* One readable file among unreadable ones: the report references it
     * alone and takes the patient from it. */
    const char *mixed[3] = {junk, fx.paths[2], missing};
    int rc = vg_report_write_breast(fx.data, &fx.man, mixed, 3, &fx.res, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "vg_report_write_breast: %s\n", err);
    ASSERT_EQ(rc, 0);
    char *py = capture("/usr/bin/python3 tests/unit/breast_sr_values.py %s %s 2>&1", path,
                       fx.paths[2]);
    ASSERT(py);
    ASSERT(!strstr(py, "|differs|"));
    ASSERT_EQ(count(py, "evidence|"), 1);
    ASSERT_STR_CONTAINS(py, fx.sop[2]);
    ASSERT(!strstr(py, fx.sop[0]));
    free(py);
    return 0;
}

TEST_IMPL(breast_sr_bad_result)
{
    char err[256] = "", path[1024];
    ASSERT_EQ(setup(), 0);
    report_path(path, sizeof path);
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, fx.evidence, N_EVIDENCE, &fx.res,
                                     err, sizeof err),
              0);
    ASSERT(exists(path)); /* an earlier attempt's file, not queued */

    snprintf(fx.as[0].birads, sizeof fx.as[0].birads, "4D");
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, fx.evidence, N_EVIDENCE, &fx.res,
                                     err, sizeof err),
              -EINVAL);
    ASSERT_STR_CONTAINS(err, "4D");
    ASSERT_EQ(fx.res.n_objects, 0);
    ASSERT(!exists(path));

    snprintf(fx.as[0].birads, sizeof fx.as[0].birads, "4A");
    snprintf(fx.as[1].laterality, sizeof fx.as[1].laterality, "L"); /* twice the left */
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, fx.evidence, N_EVIDENCE, &fx.res,
                                     err, sizeof err),
              -EINVAL);
    ASSERT(!exists(path));

    snprintf(fx.as[1].laterality, sizeof fx.as[1].laterality, "R");
    fx.res.n_assessments = 3;
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, fx.evidence, N_EVIDENCE, &fx.res,
                                     err, sizeof err),
              -EINVAL);
    ASSERT(!exists(path));

    /* An encoding failure: a model name that is two LO values. */
    fx.res.n_assessments = 2;
    snprintf(fx.man.name, sizeof fx.man.name, "two\\values");
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, fx.evidence, N_EVIDENCE, &fx.res,
                                     err, sizeof err),
              VG_EDCM);
    ASSERT_EQ(fx.res.n_objects, 0);
    ASSERT(!exists(path));
    char part[1100];
    snprintf(part, sizeof part, "%s.part", path);
    ASSERT(!exists(part));
    return 0;
}

/* A group may span studies (grouping by patient): the report belongs to
 * its job's study and takes patient and study from an image of that
 * study, wherever it stands in the evidence; images of another patient
 * ID in one report are refused, as is a report none of whose images is
 * in its study. */
TEST_IMPL(breast_sr_study_and_patient_of_the_report)
{
    char err[256] = "", path[1024], other[600], stranger[600], other_study[65];
    ASSERT_EQ(setup(), 0);
    report_path(path, sizeof path);
    snprintf(other, sizeof other, "%s/other-study.dcm", test_tmpdir());
    snprintf(stranger, sizeof stranger, "%s/stranger.dcm", test_tmpdir());
    vg_dicom_new_uid(other_study);
    ASSERT_EQ(test_sh("cp %s %s && dcmodify -nb -m \"(0020,000D)=%s\" -m \"(0010,0010)=OTHER^STUDY\""
                      " %s >/dev/null && cp %s %s && dcmodify -nb -m \"(0010,0020)=SOMEONE-ELSE\" %s"
                      " >/dev/null",
                      fx.paths[0], other, other_study, other, fx.paths[2], stranger, stranger),
              0);

    /* The other study's image first: the report is still in the job's. */
    const char *group[3] = {other, fx.paths[1], fx.paths[2]};
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, group, 3, &fx.res, err, sizeof err), 0);
    char *py = capture("/usr/bin/python3 -c \"import pydicom,sys; d=pydicom.dcmread(sys.argv[1]);"
                       " print(d.StudyInstanceUID, d.PatientName)\" %s",
                       path);
    ASSERT(py);
    ASSERT_STR_CONTAINS(py, fx.study);
    ASSERT(!strstr(py, "OTHER^STUDY"));
    free(py);

    const char *mixed[2] = {fx.paths[0], stranger};
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, mixed, 2, &fx.res, err, sizeof err),
              VG_EPARSE);
    ASSERT_STR_CONTAINS(err, "more than one patient ID");
    ASSERT_STR_CONTAINS(err, "SOMEONE-ELSE");
    ASSERT(!exists(path));

    const char *elsewhere[1] = {other};
    ASSERT_EQ(vg_report_write_breast(fx.data, &fx.man, elsewhere, 1, &fx.res, err, sizeof err),
              VG_EPARSE);
    ASSERT_STR_CONTAINS(err, "no assessed image belongs to the report's study");
    ASSERT(!exists(path));
    return 0;
}
