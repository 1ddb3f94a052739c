/* Clinical values per study in the index; see clinical.h. One table
 * below names each value, says what kind of JSON it is and its range;
 * parsing, storing and writing JSON all go through it. It validates and
 * stores; it does not decide what the model makes of a missing value. */
#include "storage/clinical.h"
#include "storage/index_int.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "server/error.h"
#include "storage/queue.h"

typedef enum { C_NUMBER, C_BOOL, C_MENOPAUSE, C_DENSITY } clin_kind_t;

static const struct {
    const char *name;
    clin_kind_t kind;
    double lo, hi;          /* C_NUMBER */
} values[VG_CLINICAL_N] = {
    [VG_CLIN_AGE] = {"age", C_NUMBER, 18, 110},
    [VG_CLIN_BMI] = {"bmi", C_NUMBER, 10, 80},
    [VG_CLIN_FAMILY_HISTORY] = {"family_history", C_BOOL, 0, 1},
    [VG_CLIN_PALPABLE_LUMP] = {"palpable_lump", C_BOOL, 0, 1},
    [VG_CLIN_NIPPLE_DISCHARGE] = {"nipple_discharge", C_BOOL, 0, 1},
    [VG_CLIN_PAIN] = {"pain", C_BOOL, 0, 1},
    [VG_CLIN_PRIOR_BIOPSY] = {"prior_biopsy", C_BOOL, 0, 1},
    [VG_CLIN_MENOPAUSAL_STATUS] = {"menopausal_status", C_MENOPAUSE, 0, 1},
    [VG_CLIN_HORMONE_THERAPY] = {"hormone_therapy", C_BOOL, 0, 1},
    [VG_CLIN_BREAST_DENSITY] = {"breast_density", C_DENSITY, 0, 1},
};

/* The strings of the two coded values, with their numbers. */
static const char *const menopause[] = {"pre", "peri", "post"};
static const double menopause_value[] = {0, 0.5, 1};
static const char *const density[] = {"A", "B", "C", "D"};

const char *vg_clinical_name(int i)
{
    return i >= 0 && i < VG_CLINICAL_N ? values[i].name : NULL;
}

static int find_value(const char *name)
{
    for (int i = 0; i < VG_CLINICAL_N; i++)
        if (strcmp(values[i].name, name) == 0)
            return i;
    return -1;
}

/* Index of S in NAMES (N of them), or -1. */
static int find_code(const char *s, const char *const *names, int n)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* Reads V, the JSON value of clinical value I, into *out; or writes what
 * is wrong with it to err and returns -EINVAL. */
static int parse_one(int i, const cJSON *v, double *out, char *err, size_t errlen)
{
    const char *name = values[i].name;
    switch (values[i].kind) {
    case C_NUMBER:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
            snprintf(err, errlen, "%s: expected a number", name);
            return -EINVAL;
        }
        if (v->valuedouble < values[i].lo || v->valuedouble > values[i].hi) {
            snprintf(err, errlen, "%s: %g is out of range %g..%g", name, v->valuedouble,
                     values[i].lo, values[i].hi);
            return -EINVAL;
        }
        *out = v->valuedouble;
        return 0;
    case C_BOOL:
        if (!cJSON_IsBool(v)) {
            snprintf(err, errlen, "%s: expected true or false", name);
            return -EINVAL;
        }
        *out = cJSON_IsTrue(v) ? 1 : 0;
        return 0;
    case C_MENOPAUSE: {
        int k = find_code(cJSON_GetStringValue(v), menopause, 3);
        if (k < 0) {
            snprintf(err, errlen, "%s: expected \"pre\", \"peri\" or \"post\"", name);
            return -EINVAL;
        }
        *out = menopause_value[k];
        return 0;
    }
    case C_DENSITY: {
        int k = find_code(cJSON_GetStringValue(v), density, 4);
        if (k < 0) {
            snprintf(err, errlen, "%s: expected \"A\", \"B\", \"C\" or \"D\"", name);
            return -EINVAL;
        }
        *out = k / 3.0;
        return 0;
    }
    }
    return -EINVAL;
}

int vg_clinical_parse(const char *json, size_t len, vg_clinical_t *c, char *err,
                      size_t errlen)
{
    char ignore[8];
    if (!err || !errlen) {
        err = ignore;
        errlen = sizeof ignore;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    /* Only blanks may follow the object. */
    while (root && end && end < json + len && isspace((unsigned char)*end))
        end++;
    if (!cJSON_IsObject(root) || (end && end < json + len && *end)) {
        cJSON_Delete(root);
        snprintf(err, errlen, "body must be a JSON object");
        return -EINVAL;
    }
    vg_clinical_t next = *c;
    int seen[VG_CLINICAL_N] = {0}, rc = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, root) {
        int i = find_value(v->string);
        if (i < 0) {
            snprintf(err, errlen, "unknown clinical value \"%s\"", v->string);
            rc = -EINVAL;
        } else if (seen[i]++) {
            snprintf(err, errlen, "%s: given twice", values[i].name);
            rc = -EINVAL;
        } else if (cJSON_IsNull(v)) {
            next.value[i] = 0;
            next.present[i] = -1;
        } else if ((rc = parse_one(i, v, &next.value[i], err, errlen)) == 0) {
            next.present[i] = 1;
        }
        if (rc < 0)
            break;
    }
    cJSON_Delete(root);
    if (rc == 0)
        *c = next;
    return rc;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : VG_EDB;
}

/* vg_clinical_put inside the caller's transaction. */
static int put_values(sqlite3 *db, const char *study_uid, const vg_clinical_t *c,
                      int64_t now_ms)
{
    for (int i = 0; i < VG_CLINICAL_N; i++) {
        if (!c->present[i])
            continue;
        sqlite3_stmt *st = vg__sql_prep(db, c->present[i] > 0
            ? "INSERT INTO clinical_values(study_uid, name, value, updated_ms)"
              " VALUES(?1, ?2, ?3, ?4) ON CONFLICT(study_uid, name) DO UPDATE"
              " SET value = excluded.value, updated_ms = excluded.updated_ms"
            : "DELETE FROM clinical_values WHERE study_uid = ?1 AND name = ?2");
        if (!st)
            return VG_EDB;
        sqlite3_bind_text(st, 1, study_uid, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, values[i].name, -1, SQLITE_STATIC);
        if (c->present[i] > 0) {
            sqlite3_bind_double(st, 3, c->value[i]);
            sqlite3_bind_int64(st, 4, now_ms);
        }
        if (vg__sql_run1(st) < 0)
            return VG_EDB;
    }
    return 0;
}

int vg_clinical_put(vg_index_t *idx, const char *study_uid, const vg_clinical_t *c,
                    int64_t now_ms)
{
    sqlite3 *db = vg_index_db(idx);
    int own = sqlite3_get_autocommit(db);
    if (own && exec(db, "BEGIN IMMEDIATE") < 0)
        return VG_EDB;
    int rc = put_values(db, study_uid, c, now_ms);
    if (own && rc == 0)
        rc = exec(db, "COMMIT");
    if (own && rc < 0)
        exec(db, "ROLLBACK");
    return rc;
}

int vg_clinical_get(vg_index_t *idx, const char *study_uid, vg_clinical_t *c)
{
    memset(c, 0, sizeof *c);
    sqlite3_stmt *st = vg__sql_prep(vg_index_db(idx), "SELECT name, value FROM"
                                    " clinical_values WHERE study_uid = ?1");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, study_uid, -1, SQLITE_STATIC);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        int i = find_value((const char *)sqlite3_column_text(st, 0));
        if (i < 0)
            continue; /* written by a later version of this table */
        c->value[i] = sqlite3_column_double(st, 1);
        c->present[i] = 1;
    }
    sqlite3_finalize(st);
    return s == SQLITE_DONE ? 0 : VG_EDB;
}

/* Value I of C as JSON, in the form it is posted in. */
static cJSON *value_json(const vg_clinical_t *c, int i)
{
    double v = c->value[i];
    switch (values[i].kind) {
    case C_NUMBER: return cJSON_CreateNumber(v);
    case C_BOOL: return cJSON_CreateBool(v != 0);
    case C_MENOPAUSE: return cJSON_CreateString(menopause[v < 0.25 ? 0 : v < 0.75 ? 1 : 2]);
    case C_DENSITY: {
        long k = lround(v * 3);
        return cJSON_CreateString(density[k < 0 ? 0 : k > 3 ? 3 : k]);
    }
    }
    return NULL;
}

int vg_clinical_to_json(const vg_clinical_t *c, char *out, size_t len)
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < VG_CLINICAL_N; i++) {
        if (c->present[i] <= 0)
            continue;
        cJSON *v = value_json(c, i);
        if (!v || !cJSON_AddItemToObject(o, values[i].name, v)) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            o = NULL;
        }
    }
    int room = len > INT_MAX ? INT_MAX : (int)len;
    int rc = o && cJSON_PrintPreallocated(o, out, room, 0) ? 0 : -ENOMEM;
    if (o && rc < 0)
        rc = VG_ETOOBIG; /* it was made, but does not fit */
    cJSON_Delete(o);
    return rc;
}

/* 1 if the stored sets A and B differ. */
static int differ(const vg_clinical_t *a, const vg_clinical_t *b)
{
    for (int i = 0; i < VG_CLINICAL_N; i++)
        if ((a->present[i] > 0) != (b->present[i] > 0) ||
            (a->present[i] > 0 && a->value[i] != b->value[i]))
            return 1;
    return 0;
}

static int study_exists(sqlite3 *db, const char *study_uid)
{
    sqlite3_stmt *st = vg__sql_prep(db, "SELECT 1 FROM studies WHERE study_uid = ?1");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, study_uid, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    return s == SQLITE_ROW ? 1 : s == SQLITE_DONE ? 0 : VG_EDB;
}

/* The body of vg_clinical_update, inside its transaction. */
static int update(vg_index_t *idx, const char *study_uid, const vg_clinical_t *c,
                  int64_t now_ms, vg_clinical_t *now, int *requeued)
{
    vg_clinical_t before;
    int rc = study_exists(vg_index_db(idx), study_uid);
    if (rc <= 0)
        return rc < 0 ? rc : VG_ENOTFOUND;
    if (vg_clinical_get(idx, study_uid, &before) < 0 ||
        put_values(vg_index_db(idx), study_uid, c, now_ms) < 0 ||
        vg_clinical_get(idx, study_uid, now) < 0)
        return VG_EDB;
    if (differ(&before, now))
        return vg_queue_requeue_study(idx, study_uid, now_ms, requeued);
    return 0;
}

int vg_clinical_update(vg_index_t *idx, const char *study_uid, const vg_clinical_t *c,
                       int64_t now_ms, vg_clinical_t *now, int *requeued)
{
    sqlite3 *db = vg_index_db(idx);
    vg_clinical_t ignore;
    *requeued = 0;
    if (!now)
        now = &ignore;
    if (exec(db, "BEGIN IMMEDIATE") < 0)
        return VG_EDB;
    int rc = update(idx, study_uid, c, now_ms, now, requeued);
    if (rc == 0)
        rc = exec(db, "COMMIT");
    if (rc < 0) {
        exec(db, "ROLLBACK");
        *requeued = 0;
    }
    return rc;
}
