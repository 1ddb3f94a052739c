/* Series analysis from the command line; see analyse.h. */
#include "inference/analyse.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "inference/bone.h"
#include "inference/breast.h"
#include "inference/manifest.h"
#include "inference/runtime.h"
#include "inference/volume.h"
#include "server/error.h"
#include "storage/clinical.h"

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Regular files of DIR, sorted by path, and of its subdirectories DEPTH
 * levels down; appended to *out (*n entries, *cap allocated). */
static void list_into(const char *dir, int depth, char ***out, int *n, int *cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char path[4096 + 256];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &sb) < 0)
            continue;
        if (S_ISDIR(sb.st_mode) && depth > 0)
            list_into(path, depth - 1, out, n, cap);
        if (!S_ISREG(sb.st_mode))
            continue;
        if (*n + 1 >= *cap) {
            char **grown = realloc(*out, (size_t)(*cap ? 2 * *cap : 256) * sizeof **out);
            if (!grown)
                break;
            *out = grown;
            *cap = *cap ? 2 * *cap : 256;
        }
        (*out)[(*n)++] = strdup(path);
    }
    if (d)
        closedir(d);
}

static int path_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files of DIR (DEPTH levels of subdirectories too), sorted. */
static char **list_files(const char *dir, int depth, int *n)
{
    char **out = NULL;
    int cap = 0;
    *n = 0;
    list_into(dir, depth, &out, n, &cap);
    if (*n > 1)
        qsort(out, (size_t)*n, sizeof *out, path_cmp);
    return out;
}

static long peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static cJSON *vec3(const double v[3])
{
    return cJSON_CreateDoubleArray(v, 3);
}

static char *base64(const unsigned char *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    for (size_t i = 0; out && i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = t[v >> 18 & 63];
        *o++ = t[v >> 12 & 63];
        *o++ = i + 1 < n ? t[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? t[v & 63] : '=';
    }
    if (out)
        *o = '\0';
    return out;
}

static cJSON *finding_json(const vg_finding_t *f)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", f->type);
    cJSON_AddNumberToObject(o, "probability", f->probability);
    cJSON_AddNumberToObject(o, "volume_mm3", f->volume_mm3);
    cJSON_AddItemToObject(o, "centroid_mm", vec3(f->centroid_mm));
    cJSON *box = cJSON_AddArrayToObject(o, "bbox_mm");
    cJSON_AddItemToArray(box, vec3(f->bbox_mm[0]));
    cJSON_AddItemToArray(box, vec3(f->bbox_mm[1]));
    cJSON_AddNumberToObject(o, "mean_hu", f->mean_hu);
    cJSON_AddNumberToObject(o, "diameter_mm", f->diameter_mm);
    cJSON_AddItemToObject(o, "mask_box", cJSON_CreateIntArray(f->mask_box, 6));
    char *b = base64(f->mask, f->mask_bytes);
    cJSON_AddStringToObject(o, "mask_bits", b ? b : "");
    free(b);
    return o;
}

static void emit(FILE *out, const vg_manifest_t *man, const vg_result_t *r, double t_decode,
                 const vg_bone_timings_t *bt, double total)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", man->name);
    cJSON_AddStringToObject(o, "model_version", man->version);
    cJSON_AddStringToObject(o, "status", r->status);
    cJSON_AddStringToObject(o, "reason", r->reason);
    cJSON_AddNumberToObject(o, "patient_score", r->patient_score);
    cJSON_AddBoolToObject(o, "positive", r->positive > 0);
    cJSON *grid = cJSON_Parse(r->grid[0] ? r->grid : "{}");
    cJSON_AddItemToObject(o, "grid", grid ? grid : cJSON_CreateObject());
    cJSON *t = cJSON_AddObjectToObject(o, "timings");
    cJSON_AddNumberToObject(t, "decode_s", t_decode);
    cJSON_AddNumberToObject(t, "resample_s", bt->resample_s);
    cJSON_AddNumberToObject(t, "model_s", bt->model_s);
    cJSON_AddNumberToObject(t, "post_s", bt->post_s);
    cJSON_AddNumberToObject(t, "total_s", total);
    cJSON_AddNumberToObject(t, "windows", bt->windows);
    cJSON_AddNumberToObject(t, "classify_s", bt->classify_s);
    cJSON_AddNumberToObject(t, "candidates", bt->candidates);
    cJSON_AddNumberToObject(o, "peak_rss_mb", peak_rss_kb() / 1024.0);
    cJSON *arr = cJSON_AddArrayToObject(o, "findings");
    for (int i = 0; i < r->n_findings; i++)
        cJSON_AddItemToArray(arr, finding_json(&r->findings[i]));
    char *s = cJSON_PrintUnformatted(o);
    fprintf(out, "%s\n", s);
    free(s);
    cJSON_Delete(o);
}

static void emit_breast(FILE *out, const vg_manifest_t *man, const vg_result_t *r,
                        const vg_breast_timings_t *bt, double total, const char **used,
                        int n_used)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", man->name);
    cJSON_AddStringToObject(o, "model_version", man->version);
    cJSON_AddStringToObject(o, "task", man->task);
    cJSON_AddStringToObject(o, "status", r->status);
    cJSON_AddStringToObject(o, "reason", r->reason);
    cJSON_AddNumberToObject(o, "patient_score", r->patient_score);
    cJSON_AddBoolToObject(o, "positive", r->positive > 0);
    cJSON *t = cJSON_AddObjectToObject(o, "timings");
    cJSON_AddNumberToObject(t, "decode_s", bt->decode_s);
    cJSON_AddNumberToObject(t, "model_s", bt->model_s);
    cJSON_AddNumberToObject(t, "total_s", total);
    cJSON_AddNumberToObject(t, "images", bt->images);
    cJSON_AddNumberToObject(t, "skipped", bt->skipped);
    cJSON_AddNumberToObject(o, "peak_rss_mb", peak_rss_kb() / 1024.0);
    cJSON *arr = cJSON_AddArrayToObject(o, "assessments");
    for (int i = 0; i < r->n_assessments; i++) {
        const vg_assessment_t *a = &r->assessments[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "laterality", a->laterality);
        cJSON *p = cJSON_AddObjectToObject(x, "probabilities");
        for (int k = 0; k < 5 && k < man->n_classes; k++)
            cJSON_AddNumberToObject(p, man->classes[k].name, a->probabilities[k]);
        cJSON_AddNumberToObject(x, "malignancy_probability", a->malignancy_probability);
        cJSON_AddStringToObject(x, "birads", a->birads);
        cJSON_AddStringToObject(x, "modalities_used", a->modalities_used);
        cJSON_AddStringToObject(x, "clinical_used", a->clinical_used);
        cJSON_AddItemToArray(arr, x);
    }
    cJSON *ev = cJSON_AddArrayToObject(o, "images_used");
    for (int i = 0; i < n_used; i++)
        cJSON_AddItemToArray(ev, cJSON_CreateString(used[i]));
    char *s = cJSON_PrintUnformatted(o);
    fprintf(out, "%s\n", s);
    free(s);
    cJSON_Delete(o);
}

/* The clinical values of the JSON file PATH into *C (all missing first).
 * Returns 0, or a negative code with err filled. */
static int read_clinical(const char *path, vg_clinical_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    char buf[8192];
    size_t len = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    int bad = !f || ferror(f) || !feof(f);
    if (f)
        fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: unreadable or larger than %zu bytes", path,
                 sizeof buf - 1);
        return VG_EINVAL_CFG;
    }
    buf[len] = '\0';
    char why[256] = "";
    int rc = vg_clinical_parse(buf, len, c, why, sizeof why);
    if (rc < 0)
        snprintf(err, errlen, "%s: %s", path, why);
    return rc;
}

/* Every MG and US file of DIR (and two levels of subdirectories) as one
 * breast group, with the values of CLINICAL_PATH (NULL: none posted). */
static int analyse_breast(const char *dir, const vg_manifest_t *man, vg_model_t *model,
                          const char *clinical_path, FILE *out, char *err, size_t errlen)
{
    vg_clinical_t clin;
    int rc = clinical_path ? read_clinical(clinical_path, &clin, err, errlen) : 0;
    if (rc < 0)
        return rc;
    int n = 0, n_used = 0;
    char **files = list_files(dir, 2, &n);
    const char **used = malloc((size_t)(n ? n : 1) * sizeof *used);
    vg_result_t r = {.patient_score = -1, .positive = -1};
    vg_breast_timings_t bt = {0};
    double t0 = seconds();
    rc = used ? vg_breast_analyse(model, man, (const char *const *)files, n,
                                  clinical_path ? &clin : NULL, &r, used, &n_used, &bt, err,
                                  errlen)
              : -ENOMEM;
    if (rc == 0)
        emit_breast(out, man, &r, &bt, seconds() - t0, used, n_used);
    vg_result_clear(&r);
    free(used);
    for (int i = 0; i < n; i++)
        free(files[i]);
    free(files);
    return rc;
}

static int analyse_bone(const char *dir, const vg_manifest_t *man, vg_model_t *model,
                        vg_model_t *classifier, FILE *out, char *err, size_t errlen)
{
    int n = 0;
    char **files = list_files(dir, 0, &n);
    vg_result_t r = {.patient_score = -1, .positive = -1};
    vg_bone_timings_t bt = {0};
    vg_volume_t *vol = NULL;
    double t0 = seconds();
    int rc = vg_volume_read((const char *const *)files, n, &vol, err, errlen);
    double t1 = seconds();
    if (rc == VG_ENOTANALYSABLE || rc == VG_EPARSE) {
        snprintf(r.status, sizeof r.status, "not_analysable");
        snprintf(r.reason, sizeof r.reason, "%.250s", err);
        rc = 0;
    } else if (rc == 0) {
        rc = vg_bone_analyse(model, classifier, man, vol, &r, &bt, err, errlen);
    }
    if (rc == 0)
        emit(out, man, &r, t1 - t0, &bt, seconds() - t0);
    vg_result_clear(&r);
    vg_volume_destroy(vol);
    for (int i = 0; i < n; i++)
        free(files[i]);
    free(files);
    return rc;
}

int vg_analyse_dir_clinical(const char *dir, const char *manifest, const char *clinical,
                            const char *device, int threads, FILE *out)
{
    static char err[1024];
    static vg_manifest_t man; /* large; one analysis per process */
    vg_model_t *model = NULL, *classifier = NULL;
    err[0] = '\0';
    if (vg_manifest_load(manifest, &man, err, sizeof err) < 0 ||
        (vg_runtime_set_threads(threads),
         vg_model_load(man.model_path, device, &model, err, sizeof err) < 0) ||
        (man.classifier_path[0] &&
         vg_model_load(man.classifier_path, device, &classifier, err, sizeof err) < 0)) {
        fprintf(stderr, "vigil-worker: %s\n", err);
        vg_model_destroy(model);
        return 1;
    }
    int rc;
    if (strcmp(man.task, "breast_risk") == 0) {
        rc = analyse_breast(dir, &man, model, clinical, out, err, sizeof err);
    } else if (clinical) {
        snprintf(err, sizeof err, "--clinical applies to a breast_risk manifest only");
        rc = VG_EINVAL_CFG;
    } else {
        rc = analyse_bone(dir, &man, model, classifier, out, err, sizeof err);
    }
    if (rc < 0)
        fprintf(stderr, "vigil-worker: %s: %s\n", dir, err[0] ? err : vg_strerror(rc));
    vg_model_destroy(classifier);
    vg_model_destroy(model);
    return rc == 0 ? 0 : 1;
}

int vg_analyse_dir(const char *dir, const char *manifest, const char *device, int threads,
                   FILE *out)
{
    return vg_analyse_dir_clinical(dir, manifest, NULL, device, threads, out);
}
