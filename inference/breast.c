/* Breast risk analysis; see breast.h. Pixels and headers come from
 * breast_input (DCMTK); this file only decides, assembles and reads the
 * model's answer. */
#include "inference/breast.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/error.h"

#define MAX_NOTES 16

/* Distinct notes with how often each came up, so that a study with forty
 * files of another modality gets one line, not forty. */
typedef struct notes {
    char text[MAX_NOTES][160];
    int count[MAX_NOTES];
    int n;
} notes_t;

static void note(notes_t *ns, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(notes_t *ns, const char *fmt, ...)
{
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (int i = 0; i < ns->n; i++)
        if (strcmp(ns->text[i], buf) == 0) {
            ns->count[i]++;
            return;
        }
    if (ns->n == MAX_NOTES)
        return;
    snprintf(ns->text[ns->n], sizeof ns->text[0], "%s", buf);
    ns->count[ns->n++] = 1;
}

/* Appends the notes of NS to OUT ("; "-separated, " (N files)" where a
 * note is about several). */
static void notes_join(const notes_t *ns, char *out, size_t len)
{
    for (int i = 0; out && i < ns->n; i++) {
        size_t used = strlen(out);
        if (used + 1 >= len)
            return;
        if (ns->count[i] > 1)
            snprintf(out + used, len - used, "%s%s (%d files)", used ? "; " : "",
                     ns->text[i], ns->count[i]);
        else
            snprintf(out + used, len - used, "%s%s", used ? "; " : "", ns->text[i]);
    }
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Order within a slot's candidates: InstanceNumber, then SOP UID. */
static int image_cmp(const vg_breast_image_t *a, const vg_breast_image_t *b)
{
    if (a->instance_number != b->instance_number)
        return a->instance_number < b->instance_number ? -1 : 1;
    return strcmp(a->sop_uid, b->sop_uid);
}

static int image_ptr_cmp(const void *x, const void *y)
{
    return image_cmp(*(const vg_breast_image_t *const *)x,
                     *(const vg_breast_image_t *const *)y);
}

static const char *const view_names[2] = {"CC", "MLO"};
static const char *const mode_names[3] = {"B-mode", "Doppler", "elastography"};

/* The mammogram of SIDE and VIEW: For Presentation before For
 * Processing, then the first in order. */
static const vg_breast_image_t *pick_mg(const vg_breast_image_t *imgs, int n, char side,
                                        int view, notes_t *ns)
{
    const vg_breast_image_t *best = NULL;
    int candidates = 0;
    for (int i = 0; i < n; i++) {
        const vg_breast_image_t *m = &imgs[i];
        if (m->kind != VG_BREAST_MG || m->laterality != side || m->view != view)
            continue;
        candidates++;
        if (!best || (best->for_processing && !m->for_processing) ||
            (best->for_processing == m->for_processing && image_cmp(m, best) < 0))
            best = m;
    }
    if (best && best->for_processing)
        note(ns, "%c %s from a For Processing image (no For Presentation one), %s", side,
             view_names[view],
             best->has_window ? "rendered with its window" : "min-max rendered");
    if (candidates > 1)
        note(ns, "%c %s: %d images, the first %s one used", side, view_names[view],
             candidates, best->for_processing ? "For Processing" : "For Presentation");
    return best;
}

static void assign_us(const vg_breast_image_t *imgs, int n, vg_breast_case_t side[2],
                      notes_t *ns)
{
    const vg_breast_image_t **us = malloc((size_t)(n ? n : 1) * sizeof *us);
    int m = 0, has_mg[2] = {0, 0}, taken[2][3] = {{0}};
    for (int s = 0; s < 2; s++)
        has_mg[s] = side[s].mg[0] || side[s].mg[1];
    if (!us) {
        note(ns, "out of memory: ultrasound images not used");
        return;
    }
    for (int i = 0; i < n; i++)
        if (imgs[i].kind == VG_BREAST_US)
            us[m++] = &imgs[i];
    qsort(us, (size_t)m, sizeof *us, image_ptr_cmp);
    for (int i = 0; i < m; i++) {
        int s = us[i]->laterality == 'L' ? 0 : us[i]->laterality == 'R' ? 1 : -1;
        if (s < 0 && has_mg[0] != has_mg[1])
            s = has_mg[0] ? 0 : 1;
        if (s < 0) {
            note(ns, "ultrasound without laterality not used (%s side has mammograms)",
                 has_mg[0] ? "each" : "no");
            continue;
        }
        int mode = us[i]->us_mode, k = taken[s][mode]++;
        if (k < 2)
            side[s].us[mode * 2 + k] = us[i];
        else if (k == 2)
            note(ns, "%c %s ultrasound: more than two images, the first two used",
                 side[s].laterality, mode_names[mode]);
    }
    free(us);
}

static int assign(const vg_breast_image_t *imgs, int n, vg_breast_case_t cases[2],
                  notes_t *ns)
{
    vg_breast_case_t side[2];
    memset(side, 0, sizeof side);
    side[0].laterality = 'L';
    side[1].laterality = 'R';
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 2; v++)
            side[s].mg[v] = pick_mg(imgs, n, side[s].laterality, v, ns);
    assign_us(imgs, n, side, ns);
    int k = 0;
    for (int s = 0; s < 2; s++) {
        int any = side[s].mg[0] || side[s].mg[1];
        for (int u = 0; u < VG_BREAST_US_SLOTS; u++)
            any |= side[s].us[u] != NULL;
        if (any)
            cases[k++] = side[s];
    }
    return k;
}

int vg_breast_assign(const vg_breast_image_t *imgs, int n, vg_breast_case_t cases[2],
                     char *notes, size_t noteslen)
{
    notes_t ns = {.n = 0};
    int k = assign(imgs, n, cases, &ns);
    if (notes && noteslen) {
        notes[0] = '\0';
        notes_join(&ns, notes, noteslen);
    }
    return k;
}

static void append_name(char *out, size_t len, const char *name)
{
    size_t used = strlen(out);
    if (used < len)
        snprintf(out + used, len - used, "%s%s", used ? "," : "", name);
}

void vg_breast_clinical(const vg_manifest_t *man, const vg_breast_image_t *imgs, int n,
                        const vg_clinical_t *posted, float clin[VG_CLINICAL_N],
                        float clin_present[VG_CLINICAL_N], char *used, size_t usedlen)
{
    double value[VG_CLINICAL_N] = {0};
    int present[VG_CLINICAL_N] = {0};
    for (int i = 0; i < n; i++) {
        if (!imgs[i].kind)
            continue;
        if (!present[VG_CLIN_AGE] && imgs[i].has_age) {
            value[VG_CLIN_AGE] = imgs[i].age;
            present[VG_CLIN_AGE] = 1;
        }
        if (!present[VG_CLIN_BMI] && imgs[i].has_bmi) {
            value[VG_CLIN_BMI] = imgs[i].bmi;
            present[VG_CLIN_BMI] = 1;
        }
    }
    for (int k = 0; posted && k < VG_CLINICAL_N; k++)
        if (posted->present[k] > 0) {
            value[k] = posted->value[k];
            present[k] = 1;
        }
    if (used && usedlen)
        used[0] = '\0';
    for (int k = 0; k < VG_CLINICAL_N; k++) {
        const vg_clinical_norm_t *nm = &man->clinical[k];
        int ok = present[k] && k < man->n_clinical && nm->scale != 0;
        clin[k] = ok ? (float)((value[k] - nm->offset) / nm->scale) : 0.0f;
        clin_present[k] = ok ? 1.0f : 0.0f;
        if (ok && used)
            append_name(used, usedlen, vg_clinical_name(k));
    }
}

void vg_breast_modalities(const vg_breast_case_t *c, char *out, size_t len)
{
    static const char *const us_names[VG_BREAST_US_SLOTS] = {
        "US_B1", "US_B2", "US_DOPPLER1", "US_DOPPLER2", "US_ELASTO1", "US_ELASTO2"};
    if (!len)
        return;
    out[0] = '\0';
    if (c->mg[0])
        append_name(out, len, "MG_CC");
    if (c->mg[1])
        append_name(out, len, "MG_MLO");
    for (int u = 0; u < VG_BREAST_US_SLOTS; u++)
        if (c->us[u])
            append_name(out, len, us_names[u]);
}

static int tensor_alloc(vg_tensor_t *t, int ndim, const int64_t *shape)
{
    size_t n = 1;
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    t->data = calloc(n, sizeof(float));
    return t->data ? 0 : -ENOMEM;
}

void vg_breast_tensors_free(vg_tensor_t in[6])
{
    for (int i = 0; i < 6; i++)
        vg_tensor_free(&in[i]);
}

int vg_breast_tensors(const vg_manifest_t *man, const vg_breast_case_t *cases, int n_cases,
                      const float clin[VG_CLINICAL_N],
                      const float clin_present[VG_CLINICAL_N], vg_tensor_t in[6],
                      const vg_breast_image_t **bad, char *err, size_t errlen)
{
    const int64_t b = n_cases, hm = man->mg_size[0], wm = man->mg_size[1],
                  hu = man->us_size[0], wu = man->us_size[1];
    const int64_t shapes[6][5] = {{b, 2, 1, hm, wm},
                                  {b, 2},
                                  {b, VG_BREAST_US_SLOTS, 3, hu, wu},
                                  {b, VG_BREAST_US_SLOTS},
                                  {b, VG_CLINICAL_N},
                                  {b, VG_CLINICAL_N}};
    static const int ndims[6] = {5, 2, 5, 2, 2, 2};
    *bad = NULL;
    memset(in, 0, 6 * sizeof *in);
    for (int i = 0; i < 6; i++)
        if (tensor_alloc(&in[i], ndims[i], shapes[i]) < 0) {
            vg_breast_tensors_free(in);
            snprintf(err, errlen, "out of memory for the model's inputs");
            return -ENOMEM;
        }
    size_t mg_px = (size_t)(hm * wm), us_px = (size_t)(3 * hu * wu);
    for (int c = 0; c < n_cases; c++) {
        const vg_breast_case_t *k = &cases[c];
        for (int v = 0; v < 2; v++) {
            if (!k->mg[v])
                continue;
            int rc = vg_breast_image_render(k->mg[v], (int)hm, (int)wm,
                                            in[0].data + (c * 2 + v) * mg_px, err, errlen);
            if (rc < 0) {
                *bad = k->mg[v];
                vg_breast_tensors_free(in);
                return rc;
            }
            in[1].data[c * 2 + v] = 1.0f;
        }
        for (int u = 0; u < VG_BREAST_US_SLOTS; u++) {
            if (!k->us[u])
                continue;
            int rc = vg_breast_image_render(
                k->us[u], (int)hu, (int)wu,
                in[2].data + (c * VG_BREAST_US_SLOTS + u) * us_px, err, errlen);
            if (rc < 0) {
                *bad = k->us[u];
                vg_breast_tensors_free(in);
                return rc;
            }
            in[3].data[c * VG_BREAST_US_SLOTS + u] = 1.0f;
        }
        memcpy(in[4].data + c * VG_CLINICAL_N, clin, VG_CLINICAL_N * sizeof(float));
        memcpy(in[5].data + c * VG_CLINICAL_N, clin_present, VG_CLINICAL_N * sizeof(float));
    }
    return 0;
}

/* Reads the headers of PATHS into IMGS; files that are not usable get
 * kind 0 and a note. Returns how many were left out. */
static int read_all(const char *const *paths, int n, vg_breast_image_t *imgs, notes_t *ns)
{
    int skipped = 0;
    for (int i = 0; i < n; i++) {
        char why[128];
        if (vg_breast_image_read(paths[i], &imgs[i], why, sizeof why) < 0) {
            imgs[i].kind = 0;
            note(ns, "not used: %s", why);
            skipped++;
        }
    }
    return skipped;
}

/* Fills RES's assessments from the model's [B, 5] probabilities. */
static int read_output(const vg_manifest_t *man, const vg_breast_case_t *cases, int n_cases,
                       const vg_tensor_t *probs, const char *clin_used, vg_result_t *res,
                       char *err, size_t errlen)
{
    if (probs->ndim != 2 || probs->shape[0] != n_cases ||
        probs->shape[1] != man->n_classes || man->n_classes != 5) {
        snprintf(err, errlen, "the model returned %d dimensions [%lld, %lld], not [%d, 5]",
                 probs->ndim, (long long)probs->shape[0],
                 (long long)(probs->ndim > 1 ? probs->shape[1] : 0), n_cases);
        return VG_EMODEL;
    }
    /* Probabilities, not anything: a model that overflowed (NaN, inf) or
     * does not end in a softmax would otherwise become a silent call. */
    for (int64_t i = 0; i < (int64_t)n_cases * 5; i++)
        if (!isfinite(probs->data[i]) || probs->data[i] < -1e-6f ||
            probs->data[i] > 1 + 1e-6f) {
            snprintf(err, errlen,
                     "the model returned %g as a class probability (expected 0..1): a"
                     " broken model or an input it cannot take",
                     (double)probs->data[i]);
            return VG_EMODEL;
        }
    res->assessments = calloc((size_t)n_cases, sizeof *res->assessments);
    if (!res->assessments) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    double best = 0;
    for (int c = 0; c < n_cases; c++) {
        vg_assessment_t *a = &res->assessments[c];
        double mal = 0;
        a->laterality[0] = cases[c].laterality;
        for (int k = 0; k < 5; k++) {
            a->probabilities[k] = probs->data[c * 5 + k];
            if (man->classes[k].malignant)
                mal += a->probabilities[k];
        }
        a->malignancy_probability = mal < 0 ? 0 : mal > 1 ? 1 : mal; /* float rounding */
        mal = a->malignancy_probability;
        snprintf(a->birads, sizeof a->birads, "%s", vg_manifest_birads(man, mal));
        vg_breast_modalities(&cases[c], a->modalities_used, sizeof a->modalities_used);
        snprintf(a->clinical_used, sizeof a->clinical_used, "%s", clin_used);
        best = mal > best ? mal : best;
    }
    res->n_assessments = n_cases;
    res->patient_score = best;
    double op = man->operating_threshold > 0 ? man->operating_threshold
                                             : (man->n_birads ? man->birads[0].below : 0.5);
    res->positive = best >= op;
    snprintf(res->status, sizeof res->status, "done");
    return 0;
}

/* Assigns and renders; an image that cannot be decoded is left out and
 * the assignment redone, so that the next candidate takes its slot.
 * Returns the number of cases (0: nothing usable) or a negative code. */
static int prepare(const vg_manifest_t *man, vg_breast_image_t *imgs, int n,
                   const vg_clinical_t *posted, vg_breast_case_t cases[2],
                   vg_tensor_t in[6], char *clin_used, size_t clin_len, notes_t *file_notes,
                   notes_t *ns, char *err, size_t errlen)
{
    for (;;) {
        float clin[VG_CLINICAL_N], present[VG_CLINICAL_N];
        const vg_breast_image_t *bad = NULL;
        ns->n = 0;
        int k = assign(imgs, n, cases, ns);
        if (k == 0)
            return 0;
        vg_breast_clinical(man, imgs, n, posted, clin, present, clin_used, clin_len);
        int rc = vg_breast_tensors(man, cases, k, clin, present, in, &bad, err, errlen);
        if (rc == 0)
            return k;
        if (rc != VG_EPARSE || !bad)
            return rc;
        note(file_notes, "not used: %s", err);
        imgs[bad - imgs].kind = 0;
    }
}

int vg_breast_analyse(vg_model_t *model, const vg_manifest_t *man, const char *const *paths,
                      int n, const vg_clinical_t *posted, vg_result_t *res,
                      const char **used, int *n_used, vg_breast_timings_t *t, char *err,
                      size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (n_used)
        *n_used = 0;
    double t0 = seconds();
    vg_breast_image_t *imgs = calloc((size_t)(n ? n : 1), sizeof *imgs);
    notes_t *ns = calloc(2, sizeof *ns);
    if (!imgs || !ns) {
        free(imgs);
        free(ns);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    vg_breast_case_t cases[2];
    vg_tensor_t in[6];
    char clin_used[256] = "";
    t->skipped = read_all(paths, n, imgs, &ns[0]);
    int k = prepare(man, imgs, n, posted, cases, in, clin_used, sizeof clin_used, &ns[0],
                    &ns[1], err, errlen);
    t->decode_s = seconds() - t0;
    int rc = k < 0 ? k : 0;
    res->reason[0] = '\0';
    if (k == 0) {
        t->skipped = n;
        snprintf(res->status, sizeof res->status, "not_analysable");
        char why[256] = "";
        notes_join(&ns[0], why, sizeof why);
        notes_join(&ns[1], why, sizeof why);
        snprintf(res->reason, sizeof res->reason,
                 "no usable mammogram or ultrasound image%s%s",
                 why[0] ? ": "
                 : n    ? ""
                        : " (no files)",
                 why);
    } else if (k > 0) {
        for (int c = 0; c < k; c++)
            for (int s = 0; s < 2 + VG_BREAST_US_SLOTS; s++) {
                const vg_breast_image_t *img = s < 2 ? cases[c].mg[s] : cases[c].us[s - 2];
                if (img && used && n_used)
                    used[(*n_used)++] = img->path;
                t->images += img != NULL;
            }
        t->skipped = n - t->images;
        vg_tensor_t out[2];
        int n_out = 0;
        double t1 = seconds();
        rc = vg_model_forward(model, in, 6, out, 2, &n_out, err, errlen);
        t->model_s = seconds() - t1;
        vg_breast_tensors_free(in);
        if (rc == 0) {
            rc = read_output(man, cases, k, &out[0], clin_used, res, err, errlen);
            for (int i = 0; i < n_out; i++)
                vg_tensor_free(&out[i]);
        }
        notes_join(&ns[0], res->reason, sizeof res->reason);
        notes_join(&ns[1], res->reason, sizeof res->reason);
    }
    if (rc < 0 && n_used)
        *n_used = 0;
    free(imgs);
    free(ns);
    return rc;
}

int vg_breast_warm_up(vg_model_t *model, const vg_manifest_t *man, char *err,
                      size_t errlen)
{
    vg_breast_case_t cases[2];
    memset(cases, 0, sizeof cases);
    cases[0].laterality = 'L';
    cases[1].laterality = 'R';
    float clin[VG_CLINICAL_N] = {0}, clin_present[VG_CLINICAL_N] = {0};
    for (int n_cases = 2; n_cases >= 1; n_cases--)
        for (int rep = 0; rep < 2; rep++) {
            vg_tensor_t in[6], out[2];
            const vg_breast_image_t *bad = NULL;
            int n_out = 0;
            int rc = vg_breast_tensors(man, cases, n_cases, clin, clin_present, in, &bad,
                                       err, errlen);
            if (rc < 0)
                return rc;
            rc = vg_model_forward(model, in, 6, out, 2, &n_out, err, errlen);
            vg_breast_tensors_free(in);
            for (int i = 0; i < n_out; i++)
                vg_tensor_free(&out[i]);
            if (rc < 0)
                return rc;
        }
    return 0;
}
