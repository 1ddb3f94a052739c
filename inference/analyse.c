/* Series analysis from the command line; see analyse.h. */
#include "inference/analyse.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "inference/bone.h"
#include "inference/manifest.h"
#include "inference/runtime.h"
#include "inference/volume.h"
#include "server/error.h"

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Regular files of DIR (not recursive), sorted; NULL-terminated array. */
static char **list_files(const char *dir, int *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **out = NULL;
    int cap = 0;
    *n = 0;
    while (d && (e = readdir(d)) != NULL) {
        char path[4096 + 256];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        if (*n + 1 >= cap) {
            cap = cap ? 2 * cap : 256;
            out = realloc(out, (size_t)cap * sizeof *out);
        }
        out[(*n)++] = strdup(path);
    }
    if (d)
        closedir(d);
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

int vg_analyse_dir(const char *dir, const char *manifest, const char *device, int threads,
                   FILE *out)
{
    static char err[1024];
    vg_manifest_t man;
    vg_model_t *model = NULL, *classifier = NULL;
    if (vg_manifest_load(manifest, &man, err, sizeof err) < 0 ||
        (vg_runtime_set_threads(threads),
         vg_model_load(man.model_path, device, &model, err, sizeof err) < 0) ||
        (man.classifier_path[0] &&
         vg_model_load(man.classifier_path, device, &classifier, err, sizeof err) < 0)) {
        fprintf(stderr, "vigil-worker: %s\n", err);
        vg_model_destroy(model);
        return 1;
    }
    int n = 0;
    char **files = list_files(dir, &n);
    vg_result_t r = {.patient_score = -1, .positive = -1};
    vg_bone_timings_t bt = {0};
    vg_volume_t *vol = NULL;
    double t0 = seconds();
    int rc = vg_volume_read((const char *const *)files, n, &vol, err, sizeof err);
    double t1 = seconds();
    if (rc == VG_ENOTANALYSABLE || rc == VG_EPARSE) {
        snprintf(r.status, sizeof r.status, "not_analysable");
        snprintf(r.reason, sizeof r.reason, "%.250s", err);
        rc = 0;
    } else if (rc == 0) {
        rc = vg_bone_analyse(model, classifier, &man, vol, &r, &bt, err, sizeof err);
    }
    if (rc == 0)
        emit(out, &man, &r, t1 - t0, &bt, seconds() - t0);
    else
        fprintf(stderr, "vigil-worker: %s: %s\n", dir, err[0] ? err : vg_strerror(rc));
    vg_result_clear(&r);
    vg_volume_destroy(vol);
    for (int i = 0; i < n; i++)
        free(files[i]);
    free(files);
    vg_model_destroy(classifier);
    vg_model_destroy(model);
    return rc == 0 ? 0 : 1;
}
