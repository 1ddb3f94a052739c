/* Manifest reading with cJSON; see manifest.h. */
#include "inference/manifest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/error.h"
#include "storage/clinical.h"

static char *slurp(const char *path, int *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = -errno;
        return NULL;
    }
    char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && n < (1 << 20) && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    fclose(f);
    *err = buf ? 0 : VG_EINVAL_CFG;
    return buf;
}

static int get_str(const cJSON *o, const char *key, char *dst, size_t len, int required)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) {
        dst[0] = '\0';
        return required ? -1 : 0;
    }
    snprintf(dst, len, "%s", v->valuestring);
    return 0;
}

static int get_num(const cJSON *o, const char *key, double *dst)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        return -1;
    *dst = v->valuedouble;
    return 0;
}

static int get_code(const cJSON *o, const char *key, vg_code_t *c, int required)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    memset(c, 0, sizeof *c);
    if (!v)
        return required ? -1 : 0;
    if (get_str(v, "scheme", c->scheme, sizeof c->scheme, 1) < 0 ||
        get_str(v, "value", c->value, sizeof c->value, 1) < 0 ||
        get_str(v, "meaning", c->meaning, sizeof c->meaning, 1) < 0)
        return -1;
    return 0;
}

static int read_classes(const cJSON *root, vg_manifest_t *m, char *err, size_t errlen)
{
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(root, "classes"), *c;
    if (!cJSON_IsArray(cls) || cJSON_GetArraySize(cls) == 0 ||
        cJSON_GetArraySize(cls) > VG_MANIFEST_MAX_CLASSES) {
        snprintf(err, errlen, "classes: a list of 1..%d classes is required",
                 VG_MANIFEST_MAX_CLASSES);
        return VG_EINVAL_CFG;
    }
    cJSON_ArrayForEach(c, cls)
    {
        vg_class_t *k = &m->classes[m->n_classes];
        if (get_str(c, "name", k->name, sizeof k->name, 1) < 0 ||
            get_code(c, "code", &k->code, 1) < 0 || get_code(c, "modifier", &k->modifier, 0) < 0) {
            snprintf(err, errlen, "classes[%d]: name and code {scheme, value, meaning} required",
                     m->n_classes);
            return VG_EINVAL_CFG;
        }
        k->metastatic = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "metastatic"));
        k->both_endplates =
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "both_endplates"));
        m->n_classes++;
    }
    return 0;
}

/* The numbers every sliding-window segmentation model needs. */
static int read_numbers(const cJSON *root, vg_manifest_t *m, char *err, size_t errlen)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "postprocess");
    const cJSON *win = in ? cJSON_GetObjectItemCaseSensitive(in, "hu_window") : NULL;
    double window = 0, context = 0;
    if (!in || get_num(in, "spacing_mm", &m->spacing_mm) < 0 || m->spacing_mm <= 0 ||
        get_num(in, "window_voxels", &window) < 0 || get_num(in, "context_voxels", &context) < 0 ||
        get_num(in, "bone_threshold_hu", &m->bone_threshold_hu) < 0 ||
        get_num(in, "bone_margin_mm", &m->bone_margin_mm) < 0 || !cJSON_IsArray(win) ||
        cJSON_GetArraySize(win) != 2) {
        snprintf(err, errlen, "input: spacing_mm, hu_window [lo, hi], window_voxels,"
                              " context_voxels, bone_threshold_hu, bone_margin_mm required");
        return VG_EINVAL_CFG;
    }
    m->hu_window[0] = cJSON_GetArrayItem(win, 0)->valuedouble;
    m->hu_window[1] = cJSON_GetArrayItem(win, 1)->valuedouble;
    m->window_voxels = (int)window;
    m->context_voxels = (int)context;
    if (m->window_voxels < 8 || m->window_voxels > 256 || m->context_voxels < 0 ||
        2 * m->context_voxels >= m->window_voxels) {
        snprintf(err, errlen, "input: window_voxels 8..256 and context_voxels < half of it");
        return VG_EINVAL_CFG;
    }
    if (!post || get_num(post, "lesion_threshold", &m->lesion_threshold) < 0 ||
        get_num(post, "min_volume_mm3", &m->min_volume_mm3) < 0 ||
        get_num(root, "operating_threshold", &m->operating_threshold) < 0) {
        snprintf(err, errlen, "postprocess: lesion_threshold, min_volume_mm3 and"
                              " operating_threshold required");
        return VG_EINVAL_CFG;
    }
    return 0;
}

/* The optional second stage. A manifest that names one describes the
 * two-stage pipeline, so the classifier's own lesion_threshold,
 * min_volume_mm3 and operating_threshold, where given, replace the
 * segmentation's: candidates are then found with a more generous
 * threshold (the classifier removes the false ones), and the patient score
 * is made from the classifier's probabilities, for which a threshold
 * chosen on the segmentation's scores would mean nothing. */
static int read_classifier(const cJSON *root, vg_manifest_t *m, char *file, size_t filelen,
                           char *err, size_t errlen)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "classifier");
    double crop = 0, op = 0;
    if (!c || cJSON_IsNull(c))
        return 0;
    if (!cJSON_IsObject(c) || get_str(c, "model", file, filelen, 1) < 0 || !file[0] ||
        get_num(c, "crop_voxels", &crop) < 0 ||
        get_num(c, "min_lesion_probability", &m->min_lesion_probability) < 0) {
        snprintf(err, errlen, "classifier: model (file name), crop_voxels and"
                              " min_lesion_probability required");
        return VG_EINVAL_CFG;
    }
    if (crop < 8 || crop > 128 || crop != (int)crop || m->min_lesion_probability < 0 ||
        m->min_lesion_probability > 1) {
        snprintf(err, errlen, "classifier: crop_voxels 8..128 and min_lesion_probability"
                              " 0..1 required");
        return VG_EINVAL_CFG;
    }
    m->crop_voxels = (int)crop;
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(c, "candidate_channel");
    if (cc && !cJSON_IsBool(cc)) {
        snprintf(err, errlen, "classifier: candidate_channel must be true or false");
        return VG_EINVAL_CFG;
    }
    m->candidate_channel = cJSON_IsTrue(cc);
    m->fine_channel_mm = 0;
    if (cJSON_GetObjectItemCaseSensitive(c, "fine_channel_mm") &&
        (get_num(c, "fine_channel_mm", &m->fine_channel_mm) < 0 || m->fine_channel_mm < 0.1 ||
         m->fine_channel_mm > 10 || m->candidate_channel)) {
        snprintf(err, errlen, "classifier: fine_channel_mm must be a number 0.1..10, and"
                              " not beside candidate_channel");
        return VG_EINVAL_CFG;
    }
    if (get_num(c, "operating_threshold", &op) == 0)
        m->operating_threshold = op;
    if (get_num(c, "min_volume_mm3", &op) == 0)
        m->min_volume_mm3 = op;
    if (get_num(c, "lesion_threshold", &op) == 0)
        m->lesion_threshold = op;
    if (m->min_volume_mm3 < 0 || m->lesion_threshold <= 0 || m->lesion_threshold > 1) {
        snprintf(err, errlen, "classifier: lesion_threshold 0..1 and min_volume_mm3 >= 0");
        return VG_EINVAL_CFG;
    }
    return 0;
}

/* Breast classes: a name, whether malignant, what it means; a code is
 * optional (the report codes the assessment, not the class). */
static int read_breast_classes(const cJSON *root, vg_manifest_t *m, char *err, size_t errlen)
{
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(root, "classes"), *c;
    if (!cJSON_IsArray(cls) || cJSON_GetArraySize(cls) != 5) {
        snprintf(err, errlen, "classes: the five risk classes T1..T5 are required");
        return VG_EINVAL_CFG;
    }
    int malignant = 0;
    cJSON_ArrayForEach(c, cls)
    {
        vg_class_t *k = &m->classes[m->n_classes];
        const cJSON *mal = cJSON_GetObjectItemCaseSensitive(c, "malignant");
        if (get_str(c, "name", k->name, sizeof k->name, 1) < 0 || !cJSON_IsBool(mal) ||
            get_code(c, "code", &k->code, 0) < 0) {
            snprintf(err, errlen, "classes[%d]: name and malignant (true/false) required",
                     m->n_classes);
            return VG_EINVAL_CFG;
        }
        get_str(c, "meaning", k->meaning, sizeof k->meaning, 0);
        k->malignant = cJSON_IsTrue(mal);
        malignant += k->malignant;
        m->n_classes++;
    }
    if (malignant == 0 || malignant == m->n_classes) {
        snprintf(err, errlen, "classes: some classes and not all must be malignant");
        return VG_EINVAL_CFG;
    }
    return 0;
}

/* [rows, columns] of KEY into SIZE, each 8..4096. */
static int get_size(const cJSON *in, const char *key, int size[2])
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return -1;
    for (int i = 0; i < 2; i++) {
        const cJSON *x = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(x) || x->valuedouble != (int)x->valuedouble ||
            x->valuedouble < 8 || x->valuedouble > 4096)
            return -1;
        size[i] = (int)x->valuedouble;
    }
    return 0;
}

/* The clinical values' normalisation, kept in the model's order (that of
 * storage/clinical.h) whatever order the manifest lists them in; every
 * value must be there once. */
static int read_clinical(const cJSON *in, vg_manifest_t *m, char *err, size_t errlen)
{
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(in, "clinical"), *c;
    int seen[VG_CLINICAL_N] = {0}, n = 0;
    if (!cJSON_IsArray(cl) || cJSON_GetArraySize(cl) != VG_CLINICAL_N) {
        snprintf(err, errlen, "input.clinical: %d entries {name, offset, scale} required",
                 VG_CLINICAL_N);
        return VG_EINVAL_CFG;
    }
    cJSON_ArrayForEach(c, cl)
    {
        char name[32];
        double offset, scale;
        int k = -1;
        if (get_str(c, "name", name, sizeof name, 1) == 0)
            for (int i = 0; i < VG_CLINICAL_N; i++)
                if (strcmp(name, vg_clinical_name(i)) == 0)
                    k = i;
        if (k < 0 || seen[k] || get_num(c, "offset", &offset) < 0 ||
            get_num(c, "scale", &scale) < 0 || scale == 0) {
            snprintf(err, errlen, "input.clinical[%d]: a known value name (once), offset and"
                                  " a non-zero scale required", n);
            return VG_EINVAL_CFG;
        }
        seen[k] = 1;
        snprintf(m->clinical[k].name, sizeof m->clinical[k].name, "%s", name);
        m->clinical[k].offset = offset;
        m->clinical[k].scale = scale;
        n++;
    }
    m->n_clinical = n;
    return 0;
}

/* BI-RADS bands, ascending, the last one above every probability. */
static int read_birads(const cJSON *root, vg_manifest_t *m, char *err, size_t errlen)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "birads"), *c;
    if (!cJSON_IsArray(b) || cJSON_GetArraySize(b) < 1 ||
        cJSON_GetArraySize(b) > VG_MANIFEST_MAX_BANDS) {
        snprintf(err, errlen, "birads: a list of 1..%d bands {below, category} required",
                 VG_MANIFEST_MAX_BANDS);
        return VG_EINVAL_CFG;
    }
    cJSON_ArrayForEach(c, b)
    {
        vg_birads_band_t *band = &m->birads[m->n_birads];
        if (get_num(c, "below", &band->below) < 0 ||
            get_str(c, "category", band->category, sizeof band->category, 1) < 0 ||
            !band->category[0] ||
            (m->n_birads && band->below <= m->birads[m->n_birads - 1].below)) {
            snprintf(err, errlen, "birads[%d]: below (ascending) and category (at most 3"
                                  " characters) required", m->n_birads);
            return VG_EINVAL_CFG;
        }
        /* The categories the report can code (SCT 3, 4, 5; 4A-4C as the
         * subcategory beside 4): another would fail every report. */
        static const char *const known[] = {"3", "4A", "4B", "4C", "5"};
        int ok = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            ok |= strcmp(band->category, known[k]) == 0;
        if (!ok) {
            snprintf(err, errlen, "birads[%d]: category \"%s\" is not one of 3, 4A, 4B, 4C, 5",
                     m->n_birads, band->category);
            return VG_EINVAL_CFG;
        }
        m->n_birads++;
    }
    if (m->birads[m->n_birads - 1].below <= 1.0) {
        snprintf(err, errlen, "birads: the last band's below must exceed 1");
        return VG_EINVAL_CFG;
    }
    return 0;
}

static int read_breast(const cJSON *root, vg_manifest_t *m, char *err, size_t errlen)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (!cJSON_IsObject(in) || get_size(in, "mg_size", m->mg_size) < 0 ||
        get_size(in, "us_size", m->us_size) < 0) {
        snprintf(err, errlen, "input: mg_size and us_size [rows, columns] (8..4096) required");
        return VG_EINVAL_CFG;
    }
    int rc = read_clinical(in, m, err, errlen);
    if (rc == 0)
        rc = read_breast_classes(root, m, err, errlen);
    if (rc == 0)
        rc = read_birads(root, m, err, errlen);
    get_num(root, "operating_threshold", &m->operating_threshold);
    return rc;
}

/* DIR/FILE into DST; -1 when it does not fit. */
static int join_path(char *dst, size_t len, const char *dir, const char *file)
{
    return snprintf(dst, len, "%s/%s", dir, file) >= (int)len ? -1 : 0;
}

int vg_manifest_load(const char *path, vg_manifest_t *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    int rc;
    char *text = slurp(path, &rc);
    if (!text) {
        snprintf(err, errlen, "%s: %s", path,
                 rc == VG_EINVAL_CFG ? "unreadable or too large" : vg_strerror(rc));
        return rc;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "%s: not a JSON object", path);
        cJSON_Delete(root);
        return VG_EINVAL_CFG;
    }
    char file[512] = "", cls_file[512] = "", local[512] = "";
    char abs[PATH_MAX];
    snprintf(m->dir, sizeof m->dir, "%s", realpath(path, abs) ? abs : path);
    char *slash = strrchr(m->dir, '/');
    if (slash)
        *slash = '\0';
    rc = 0;
    if (get_str(root, "name", m->name, sizeof m->name, 1) < 0 ||
        get_str(root, "version", m->version, sizeof m->version, 1) < 0 ||
        get_str(root, "task", m->task, sizeof m->task, 1) < 0 ||
        get_str(root, "model", file, sizeof file, 1) < 0) {
        snprintf(local, sizeof local, "name, version, task and model (file name) required");
        rc = VG_EINVAL_CFG;
    }
    get_str(root, "provenance", m->provenance, sizeof m->provenance, 0);
    m->not_for_clinical_use =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "not_for_clinical_use"));
    int breast = strcmp(m->task, "breast_risk") == 0;
    if (rc == 0 && breast)
        rc = read_breast(root, m, local, sizeof local);
    if (rc == 0 && !breast)
        rc = read_classes(root, m, local, sizeof local);
    if (rc == 0 && !breast)
        rc = read_numbers(root, m, local, sizeof local);
    if (rc == 0 && !breast)
        rc = read_classifier(root, m, cls_file, sizeof cls_file, local, sizeof local);
    cJSON_Delete(root);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, local);
        return rc;
    }
    if (join_path(m->model_path, sizeof m->model_path, m->dir, file) < 0 ||
        (cls_file[0] && join_path(m->classifier_path, sizeof m->classifier_path, m->dir,
                                  cls_file) < 0)) {
        snprintf(err, errlen, "%s: model path too long", path);
        return VG_EINVAL_CFG;
    }
    return 0;
}

const char *vg_manifest_birads(const vg_manifest_t *m, double p)
{
    for (int i = 0; i < m->n_birads; i++)
        if (p < m->birads[i].below)
            return m->birads[i].category;
    return m->n_birads ? m->birads[m->n_birads - 1].category : "";
}

int vg_manifest_class(const vg_manifest_t *m, const char *name)
{
    for (int i = 0; i < m->n_classes; i++)
        if (strcmp(m->classes[i].name, name) == 0)
            return i + 1;
    return 0;
}
