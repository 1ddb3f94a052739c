/* The node's HTTP routes: /healthz, /metrics (Prometheus text) and the
 * JSON API under /api/v1. It reads the index through prepared statements
 * of its own; its writes are POST /api/v1/outbox/ID/retry, through
 * storage/outbox.h, and POST /api/v1/studies/UID/clinical, through
 * storage/clinical.h. JSON is built with cJSON. It knows nothing of
 * sockets: vg_http hands it whole requests. */
#include "server/api.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/error.h"
#include "server/log.h"
#include "server/metrics.h"
#include "storage/clinical.h"
#include "storage/outbox.h"
#include "storage/workers.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000
/* Clinical values are a few hundred bytes; more is a mistake, refused
 * before it is parsed. */
#define CLINICAL_BODY_MAX 16384

enum {
    Q_BEGIN,
    Q_COMMIT,
    Q_STUDIES,
    Q_STUDY_COUNT,
    Q_STUDY,
    Q_SERIES,
    Q_JOBS,
    Q_JOB_STATES,
    Q_SERIES_STATES,
    Q_RESULTS,
    Q_FINDINGS,
    Q_RESULT_OBJECTS,
    Q_ASSESSMENTS,
    Q_COUNT
};

/* Column order of each SELECT is the order of its field table below. */
static const char *const q_sql[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN",
    [Q_COMMIT] = "COMMIT",
    [Q_STUDIES] = "SELECT s.study_uid, s.patient_id, s.accession, s.study_date,"
                  " s.study_time, s.description, s.state,"
                  " (SELECT count(*) FROM series se WHERE se.study_uid = s.study_uid),"
                  " (SELECT count(*) FROM series se JOIN instances i"
                  "   ON i.series_uid = se.series_uid WHERE se.study_uid = s.study_uid),"
                  " s.last_received_ms"
                  " FROM studies s ORDER BY s.last_received_ms DESC, s.study_uid"
                  " LIMIT ?1 OFFSET ?2",
    [Q_STUDY_COUNT] = "SELECT count(*) FROM studies",
    [Q_STUDY] = "SELECT study_uid, patient_id, accession, study_date, study_time,"
                " description, state, first_received_ms, last_received_ms,"
                " completed_ms FROM studies WHERE study_uid = ?1",
    [Q_SERIES] = "SELECT se.series_uid, se.modality, se.body_part, se.series_number,"
                 " se.description,"
                 " (SELECT count(*) FROM instances i WHERE i.series_uid = se.series_uid),"
                 " se.state, se.route_state, se.route_reason, se.slice_thickness"
                 " FROM series se WHERE se.study_uid = ?1"
                 " ORDER BY se.series_number IS NULL, se.series_number, se.series_uid",
    [Q_JOBS] = "SELECT id, series_uid, study_uid, route, model, version, state,"
               " attempts, last_error, created_ms, updated_ms FROM jobs"
               " WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT 1000",
    [Q_JOB_STATES] = "SELECT state, count(*) FROM jobs GROUP BY state",
    [Q_SERIES_STATES] = "SELECT state, count(*) FROM series GROUP BY state",
    [Q_RESULTS] = "SELECT model, model_version, series_uid, status, reason, patient_score,"
                  " positive, created_ms, timings, id FROM results WHERE study_uid = ?1"
                  " ORDER BY series_uid, model",
    [Q_FINDINGS] = "SELECT type, probability, volume_mm3, mean_hu, diameter_mm, cx, cy, cz,"
                   " bbox FROM findings WHERE result_id = ?1 ORDER BY idx",
    [Q_RESULT_OBJECTS] = "SELECT sop_uid, sop_class_uid, series_uid, destination, state,"
                         " attempts, last_error, sent_ms FROM outbox WHERE result_id = ?1"
                         " ORDER BY id",
    [Q_ASSESSMENTS] = "SELECT laterality, malignancy_probability, birads, p1, p2, p3, p4,"
                      " p5, modalities_used, clinical_used FROM assessments"
                      " WHERE result_id = ?1 ORDER BY idx",
};

typedef struct {
    sqlite3_stmt *st[Q_COUNT];
} api_priv_t;

/* How a column becomes JSON; SQL NULL is JSON null whatever the kind. */
typedef enum { F_TEXT, F_INT, F_REAL, F_TIME } field_kind_t;

typedef struct {
    const char *name;
    field_kind_t kind;
} field_t;

#define NFIELDS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const field_t study_list_fields[] = {
    {"study_uid", F_TEXT},     {"patient_id", F_TEXT},  {"accession_number", F_TEXT},
    {"study_date", F_TEXT},    {"study_time", F_TEXT},  {"description", F_TEXT},
    {"state", F_TEXT},         {"series_count", F_INT}, {"instance_count", F_INT},
    {"last_received", F_TIME},
};

static const field_t study_fields[] = {
    {"study_uid", F_TEXT},  {"patient_id", F_TEXT},     {"accession_number", F_TEXT},
    {"study_date", F_TEXT}, {"study_time", F_TEXT},     {"description", F_TEXT},
    {"state", F_TEXT},      {"received_first", F_TIME}, {"received_last", F_TIME},
    {"completed", F_TIME},
};

static const field_t series_fields[] = {
    {"series_uid", F_TEXT},      {"modality", F_TEXT},    {"body_part", F_TEXT},
    {"series_number", F_INT},    {"description", F_TEXT}, {"instances", F_INT},
    {"state", F_TEXT},           {"route_state", F_TEXT}, {"route_reason", F_TEXT},
    {"slice_thickness", F_REAL},
};

static const field_t object_fields[] = {
    {"sop_uid", F_TEXT},     {"sop_class_uid", F_TEXT}, {"series_uid", F_TEXT},
    {"destination", F_TEXT}, {"state", F_TEXT},         {"attempts", F_INT},
    {"last_error", F_TEXT},  {"sent", F_TIME},
};

static const field_t job_fields[] = {
    {"id", F_INT},       {"series_uid", F_TEXT}, {"study_uid", F_TEXT},
    {"route", F_TEXT},   {"model", F_TEXT},      {"version", F_INT},
    {"state", F_TEXT},   {"attempts", F_INT},    {"last_error", F_TEXT},
    {"created", F_TIME}, {"updated", F_TIME},
};

static const field_t result_fields[] = {
    {"model", F_TEXT},         {"model_version", F_TEXT}, {"series_uid", F_TEXT},
    {"status", F_TEXT},        {"reason", F_TEXT},        {"patient_score", F_REAL},
    {"positive", F_INT},       {"analysed", F_TIME},
};

static const field_t finding_fields[] = {
    {"type", F_TEXT},   {"probability", F_REAL}, {"volume_mm3", F_REAL},
    {"mean_hu", F_REAL}, {"diameter_mm", F_REAL},
};

static const field_t assessment_fields[] = {
    {"laterality", F_TEXT}, {"malignancy_probability", F_REAL}, {"birads", F_TEXT},
};

static const char *const job_states[] = {"queued", "running", "done", "failed",
                                         "superseded"};
static const char *const series_states[] = {"receiving", "complete"};
#define N_JOB_STATES NFIELDS(job_states)
#define N_SERIES_STATES NFIELDS(series_states)

/* --- lifetime ----------------------------------------------------------- */

int vg_api_init(vg_api_t *api)
{
    api_priv_t *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    sqlite3 *db = vg_index_db(api->idx);
    for (int i = 0; i < Q_COUNT; i++) {
        if (sqlite3_prepare_v3(db, q_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &p->st[i],
                               NULL) != SQLITE_OK) {
            vg_log(VG_LOG_ERROR, "api: prepare: %s", sqlite3_errmsg(db));
            for (int j = 0; j < i; j++)
                sqlite3_finalize(p->st[j]);
            free(p);
            return VG_EDB;
        }
    }
    api->priv = p;
    return 0;
}

void vg_api_close(vg_api_t *api)
{
    api_priv_t *p = api->priv;
    if (!p)
        return;
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(p->st[i]);
    free(p);
    api->priv = NULL;
}

/* --- SQLite rows to JSON ------------------------------------------------ */

static sqlite3_stmt *stmt(vg_api_t *api, int q)
{
    api_priv_t *p = api->priv;
    vg_assert(p != NULL); /* vg_api_init was not called */
    return p->st[q];
}

static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int db_error(sqlite3_stmt *st)
{
    vg_log(VG_LOG_WARN, "api: query failed: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
    return VG_EDB;
}

/* Formats wall-clock MS as ISO-8601 UTC with milliseconds. */
static void iso_time(int64_t ms, char *buf, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        s--;
    }
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", frac);
}

static cJSON *column_json(sqlite3_stmt *st, int col, field_kind_t kind)
{
    char when[40];
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return cJSON_CreateNull();
    switch (kind) {
    case F_INT: return cJSON_CreateNumber((double)sqlite3_column_int64(st, col));
    case F_REAL: return cJSON_CreateNumber(sqlite3_column_double(st, col));
    case F_TIME:
        iso_time(sqlite3_column_int64(st, col), when, sizeof when);
        return cJSON_CreateString(when);
    default: {
        const unsigned char *s = sqlite3_column_text(st, col);
        return s ? cJSON_CreateString((const char *)s) : NULL;
    }
    }
}

/* The current row of ST as an object named by FIELDS (column i is field
 * i). Returns NULL when out of memory. */
static cJSON *row_object(sqlite3_stmt *st, const field_t *fields, int n)
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < n; i++) {
        cJSON *v = column_json(st, i, fields[i].kind);
        if (!v || !cJSON_AddItemToObject(o, fields[i].name, v)) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            o = NULL;
        }
    }
    return o;
}

/* Appends every row of ST (bound by the caller) to ARR, then resets ST. */
static int rows_to_array(sqlite3_stmt *st, const field_t *fields, int n, cJSON *arr)
{
    int rc = arr ? 0 : -ENOMEM, s = SQLITE_DONE;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = row_object(st, fields, n);
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            rc = -ENOMEM;
        }
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = db_error(st);
    stmt_done(st);
    return rc;
}

/* Fills COUNTS[i] with the rows of ST (state, count) whose state is
 * NAMES[i]; states not named are ignored. */
static int count_by_state(sqlite3_stmt *st, const char *const *names, int n,
                          int64_t *counts)
{
    int s;
    memset(counts, 0, sizeof *counts * (size_t)n);
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 0);
        for (int i = 0; state && i < n; i++)
            if (strcmp(state, names[i]) == 0)
                counts[i] = sqlite3_column_int64(st, 1);
    }
    int rc = s == SQLITE_DONE ? 0 : db_error(st);
    stmt_done(st);
    return rc;
}

/* Several reads that must agree (a page and its total) share one read
 * transaction, unless the connection is already inside one. Returns 1
 * when a transaction was opened, for read_end. */
static int read_begin(vg_api_t *api)
{
    if (!sqlite3_get_autocommit(vg_index_db(api->idx)))
        return 0;
    sqlite3_stmt *st = stmt(api, Q_BEGIN);
    int ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_reset(st);
    return ok;
}

static void read_end(vg_api_t *api, int opened)
{
    if (!opened)
        return;
    sqlite3_stmt *st = stmt(api, Q_COMMIT);
    sqlite3_step(st);
    sqlite3_reset(st);
}

/* --- replies ------------------------------------------------------------ */

/* Sets R to STATUS with the text of OBJ, which it frees in any case. */
static int reply_json(vg_http_reply_t *r, int status, cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text)
        return -ENOMEM;
    r->status = status;
    r->content_type = "application/json";
    r->body = text;
    r->body_len = strlen(text);
    return 0;
}

/* {"error": MSG} plus, when KEY is not NULL, KEY: VAL. */
static int reply_error(vg_http_reply_t *r, int status, const char *msg, const char *key,
                       const char *val)
{
    cJSON *o = cJSON_CreateObject();
    if (!cJSON_AddStringToObject(o, "error", msg) ||
        (key && !cJSON_AddStringToObject(o, key, val))) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    return reply_json(r, status, o);
}

/* Reads the non-negative integer NAME of QUERY into *v, capped at MAX;
 * *v is left alone when NAME is absent. */
static int query_count(const char *query, const char *name, long long max, long long *v)
{
    char buf[32], *end;
    int rc = vg_http_query_param(query, name, buf, sizeof buf);
    if (rc == VG_ENOTFOUND)
        return 0;
    if (rc < 0 || !isdigit((unsigned char)buf[0]))
        return -EINVAL;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (*end || errno)
        return -EINVAL;
    *v = x > max ? max : x;
    return 0;
}

/* --- routes ------------------------------------------------------------- */

typedef int (*route_fn)(vg_api_t *api, const vg_http_request_t *req, const char *arg,
                        vg_http_reply_t *r);

/* Adds one worker row to /healthz "models" (ARG): per model, available
 * when any of its devices has it loaded, and each device's state. A row
 * whose process is gone (crashed, restarting) is not available, whatever
 * it said last. */
static int add_worker(void *arg, const vg_worker_state_t *ws)
{
    cJSON *models = arg;
    int running = ws->pid > 0 && (kill(ws->pid, 0) == 0 || errno == EPERM);
    int available = running && ws->available;
    cJSON *m = cJSON_GetObjectItemCaseSensitive(models, ws->model);
    if (!m && (!(m = cJSON_AddObjectToObject(models, ws->model)) ||
               !cJSON_AddBoolToObject(m, "available", 0) ||
               !cJSON_AddStringToObject(m, "version", ws->version) ||
               !cJSON_AddArrayToObject(m, "devices")))
        return -ENOMEM;
    if (available)
        cJSON_ReplaceItemInObject(m, "available", cJSON_CreateBool(1));
    const char *version = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "version"));
    if (version && !*version && ws->version[0])
        cJSON_ReplaceItemInObject(m, "version", cJSON_CreateString(ws->version));
    cJSON *d = cJSON_CreateObject();
    if (!d || !cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(m, "devices"), d)) {
        cJSON_Delete(d);
        return -ENOMEM;
    }
    if (!cJSON_AddStringToObject(d, "device", ws->device) ||
        !cJSON_AddBoolToObject(d, "available", available) ||
        (!available &&
         !cJSON_AddStringToObject(d, "error", running ? ws->error : "worker not running")) ||
        !cJSON_AddNumberToObject(d, "jobs_done", (double)ws->jobs_done) ||
        !cJSON_AddNumberToObject(d, "jobs_failed", (double)ws->jobs_failed))
        return -ENOMEM;
    return 0;
}

static int get_healthz(vg_api_t *api, const vg_http_request_t *req, const char *arg,
                       vg_http_reply_t *r)
{
    (void)req;
    (void)arg;
    cJSON *o = cJSON_CreateObject();
    const char *title = api->ae_title ? api->ae_title : "";
    if (!cJSON_AddStringToObject(o, "status", api->accepting ? "ok" : "starting") ||
        !cJSON_AddBoolToObject(o, "accepting", api->accepting != 0) ||
        !cJSON_AddStringToObject(o, "ae_title", title)) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    /* Models report their own availability; an unavailable model does not
     * make the node unhealthy: its jobs wait. */
    cJSON *models = cJSON_CreateObject();
    int rc = models ? vg_worker_state_each(api->idx, add_worker, models) : -ENOMEM;
    if (rc < 0) {
        cJSON_Delete(models);
        cJSON_Delete(o);
        return rc;
    }
    if (models->child)
        cJSON_AddItemToObject(o, "models", models);
    else
        cJSON_Delete(models);
    return reply_json(r, api->accepting ? 200 : 503, o);
}

static void metric_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric(FILE *f, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    metric_head(f, name, type, help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void labelled(FILE *f, const char *name, const char *label, const char *value,
                     uint64_t v)
{
    fprintf(f, "%s{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)v);
}

static void write_counters(FILE *f)
{
    metric(f, "vigil_associations_accepted_total", "counter",
           "DICOM associations accepted.", vg_metric_get(assoc_accepted));
    metric_head(f, "vigil_associations_rejected_total", "counter",
                "DICOM associations rejected, by reason.");
    for (int i = 0; i < VG_REJECT_COUNT; i++)
        labelled(f, "vigil_associations_rejected_total", "reason", vg_reject_label(i),
                 vg_metric_get(assoc_rejected[i]));
    metric(f, "vigil_associations_active", "gauge", "DICOM associations open now.",
           vg_metric_get(assoc_active));
    metric(f, "vigil_echo_requests_total", "counter", "C-ECHO requests answered.",
           vg_metric_get(echo_requests));
    metric(f, "vigil_instances_stored_total", "counter", "Instances stored and indexed.",
           vg_metric_get(instances_stored));
    metric(f, "vigil_instances_duplicate_total", "counter",
           "Instances received again with a known SOP Instance UID.",
           vg_metric_get(instances_duplicate));
    metric(f, "vigil_bytes_stored_total", "counter", "Bytes of instance files written.",
           vg_metric_get(bytes_stored));
    metric_head(f, "vigil_store_failures_total", "counter",
                "C-STORE requests answered with a failure, by reason.");
    for (int i = 0; i < VG_STOREFAIL_COUNT; i++)
        labelled(f, "vigil_store_failures_total", "reason", vg_storefail_label(i),
                 vg_metric_get(store_failures[i]));
    metric(f, "vigil_outbox_sent_total", "counter",
           "Result objects a destination acknowledged.", vg_metric_get(outbox_sent));
    metric(f, "vigil_outbox_failed_total", "counter",
           "Attempts to send a result object that failed.", vg_metric_get(outbox_failed));
}

static int write_index_gauges(vg_api_t *api, FILE *f)
{
    int64_t jobs[N_JOB_STATES], series[N_SERIES_STATES], outbox[VG_OUTBOX_NSTATES];
    int rc = count_by_state(stmt(api, Q_JOB_STATES), job_states, N_JOB_STATES, jobs);
    if (rc == 0)
        rc = count_by_state(stmt(api, Q_SERIES_STATES), series_states, N_SERIES_STATES,
                            series);
    if (rc == 0)
        rc = vg_outbox_counts(api->idx, outbox);
    if (rc < 0)
        return rc;
    metric(f, "vigil_queue_depth", "gauge", "Inference jobs queued or running.",
           (uint64_t)(jobs[0] + jobs[1]));
    metric_head(f, "vigil_jobs", "gauge", "Inference jobs by state.");
    for (int i = 0; i < N_JOB_STATES; i++)
        labelled(f, "vigil_jobs", "state", job_states[i], (uint64_t)jobs[i]);
    metric_head(f, "vigil_series", "gauge", "Indexed series by state.");
    for (int i = 0; i < N_SERIES_STATES; i++)
        labelled(f, "vigil_series", "state", series_states[i], (uint64_t)series[i]);
    metric_head(f, "vigil_outbox", "gauge", "Outbox entries by state.");
    for (int i = 0; i < VG_OUTBOX_NSTATES; i++)
        labelled(f, "vigil_outbox", "state", vg_outbox_state_names[i], (uint64_t)outbox[i]);
    return 0;
}

static int get_metrics(vg_api_t *api, const vg_http_request_t *req, const char *arg,
                       vg_http_reply_t *r)
{
    (void)req;
    (void)arg;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;
    write_counters(f);
    int rc = write_index_gauges(api, f);
    if (fclose(f) != 0 && rc == 0)
        rc = -ENOMEM;
    if (rc < 0) {
        free(buf);
        return rc;
    }
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4";
    r->body = buf;
    r->body_len = len;
    return 0;
}

static int study_total(vg_api_t *api, cJSON *root)
{
    sqlite3_stmt *st = stmt(api, Q_STUDY_COUNT);
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : db_error(st);
    if (rc == 0 &&
        !cJSON_AddNumberToObject(root, "total", (double)sqlite3_column_int64(st, 0)))
        rc = -ENOMEM;
    stmt_done(st);
    return rc;
}

static int get_studies(vg_api_t *api, const vg_http_request_t *req, const char *arg,
                       vg_http_reply_t *r)
{
    (void)arg;
    long long limit = LIST_DEFAULT, offset = 0;
    if (query_count(req->query, "limit", LIST_MAX, &limit) < 0 ||
        query_count(req->query, "offset", LLONG_MAX, &offset) < 0)
        return reply_error(r, 400, "limit and offset must be non-negative integers", NULL,
                           NULL);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "studies");
    sqlite3_stmt *st = stmt(api, Q_STUDIES);
    sqlite3_bind_int64(st, 1, limit);
    sqlite3_bind_int64(st, 2, offset);
    int txn = read_begin(api);
    int rc = rows_to_array(st, study_list_fields, NFIELDS(study_list_fields), arr);
    if (rc == 0)
        rc = study_total(api, root);
    read_end(api, txn);
    if (rc < 0) {
        cJSON_Delete(root);
        return rc;
    }
    return reply_json(r, 200, root);
}

/* The study row of UID as an object in *out, NULL when there is none. */
static int study_object(vg_api_t *api, const char *uid, cJSON **out)
{
    sqlite3_stmt *st = stmt(api, Q_STUDY);
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    int s = sqlite3_step(st), rc = 0;
    *out = NULL;
    if (s == SQLITE_ROW) {
        *out = row_object(st, study_fields, NFIELDS(study_fields));
        rc = *out ? 0 : -ENOMEM;
    } else if (s != SQLITE_DONE) {
        rc = db_error(st);
    }
    stmt_done(st);
    return rc;
}

/* Findings of result RESULT_ID as an array; centroid and box as arrays. */
static int findings_array(vg_api_t *api, sqlite3_int64 result_id, cJSON *arr)
{
    sqlite3_stmt *st = stmt(api, Q_FINDINGS);
    sqlite3_bind_int64(st, 1, result_id);
    int s, rc = 0;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *f = row_object(st, finding_fields, NFIELDS(finding_fields));
        cJSON *c = cJSON_CreateArray();
        for (int k = 0; f && c && k < 3; k++)
            cJSON_AddItemToArray(c, cJSON_CreateNumber(sqlite3_column_double(st, 5 + k)));
        cJSON *box = cJSON_Parse((const char *)sqlite3_column_text(st, 8));
        if (!f || !c || !box) {
            cJSON_Delete(f), cJSON_Delete(c), cJSON_Delete(box);
            rc = -ENOMEM;
            break;
        }
        cJSON_AddItemToObject(f, "centroid_mm", c);
        cJSON_AddItemToObject(f, "bbox_mm", box);
        cJSON_AddItemToArray(arr, f);
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = db_error(st);
    stmt_done(st);
    return rc;
}

/* Where a result's DICOM objects went: one row per object and
 * destination, with its delivery state. */
static int objects_array(vg_api_t *api, sqlite3_int64 result_id, cJSON *arr)
{
    sqlite3_stmt *st = stmt(api, Q_RESULT_OBJECTS);
    sqlite3_bind_int64(st, 1, result_id);
    return rows_to_array(st, object_fields, NFIELDS(object_fields), arr);
}

/* A comma-separated list ("MG_CC,US_B1") as a JSON array of strings. */
static cJSON *list_json(const char *csv)
{
    cJSON *arr = cJSON_CreateArray();
    for (const char *s = csv ? csv : ""; arr && *s; s += strspn(s, ", ")) {
        size_t w = strcspn(s, ",");
        size_t n = w;
        while (n && s[n - 1] == ' ')
            n--;
        char item[256];
        snprintf(item, sizeof item, "%.*s", (int)n, s);
        if (n && !cJSON_AddItemToArray(arr, cJSON_CreateString(item))) {
            cJSON_Delete(arr);
            return NULL;
        }
        s += w;
    }
    return arr;
}

/* The breast model's per-breast assessments of result RESULT_ID, added to
 * O as "assessments" when it has any (other models' results stay as they
 * were). */
static int assessments_array(vg_api_t *api, sqlite3_int64 result_id, cJSON *o)
{
    sqlite3_stmt *st = stmt(api, Q_ASSESSMENTS);
    sqlite3_bind_int64(st, 1, result_id);
    cJSON *arr = NULL;
    int s, rc = 0;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        if (!arr && !(arr = cJSON_AddArrayToObject(o, "assessments"))) {
            rc = -ENOMEM;
            break;
        }
        cJSON *a = row_object(st, assessment_fields, NFIELDS(assessment_fields));
        cJSON *p = cJSON_CreateArray();
        for (int k = 0; a && p && k < 5; k++)
            cJSON_AddItemToArray(p, cJSON_CreateNumber(sqlite3_column_double(st, 3 + k)));
        cJSON *mods = list_json((const char *)sqlite3_column_text(st, 8));
        cJSON *clin = list_json((const char *)sqlite3_column_text(st, 9));
        if (!a || !p || !mods || !clin || cJSON_GetArraySize(p) != 5) {
            cJSON_Delete(a), cJSON_Delete(p), cJSON_Delete(mods), cJSON_Delete(clin);
            rc = -ENOMEM;
            break;
        }
        cJSON_AddItemToObject(a, "probabilities", p);
        cJSON_AddItemToObject(a, "modalities_used", mods);
        cJSON_AddItemToObject(a, "clinical_used", clin);
        cJSON_AddItemToArray(arr, a);
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = db_error(st);
    stmt_done(st);
    return rc;
}

/* C added to O as "clinical", in the form the values are posted in. */
static int add_clinical(cJSON *o, const vg_clinical_t *c)
{
    char text[1024];
    int rc = vg_clinical_to_json(c, text, sizeof text);
    cJSON *v = rc == 0 ? cJSON_Parse(text) : NULL;
    if (rc == 0 && (!v || !cJSON_AddItemToObject(o, "clinical", v))) {
        cJSON_Delete(v);
        rc = -ENOMEM;
    }
    return rc;
}

/* The clinical values posted for study UID, added to O as "clinical". */
static int clinical_object(vg_api_t *api, const char *uid, cJSON *o)
{
    vg_clinical_t c;
    int rc = vg_clinical_get(api->idx, uid, &c);
    return rc < 0 ? rc : add_clinical(o, &c);
}

/* The study's analysis results, each with its findings and objects. */
static int results_array(vg_api_t *api, const char *uid, cJSON *arr)
{
    sqlite3_stmt *st = stmt(api, Q_RESULTS);
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    int s, rc = 0;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = row_object(st, result_fields, NFIELDS(result_fields));
        if (!o) {
            rc = -ENOMEM;
            break;
        }
        cJSON *pos = cJSON_DetachItemFromObject(o, "positive");
        cJSON_AddItemToObject(o, "positive", cJSON_IsNumber(pos)
                                                 ? cJSON_CreateBool(pos->valueint != 0)
                                                 : cJSON_CreateNull());
        cJSON_Delete(pos);
        cJSON *timings = cJSON_Parse((const char *)sqlite3_column_text(st, 8));
        cJSON_AddItemToObject(o, "timings", timings ? timings : cJSON_CreateObject());
        cJSON_AddItemToArray(arr, o);
        rc = findings_array(api, sqlite3_column_int64(st, 9),
                            cJSON_AddArrayToObject(o, "findings"));
        if (rc == 0)
            rc = objects_array(api, sqlite3_column_int64(st, 9),
                               cJSON_AddArrayToObject(o, "objects"));
        if (rc == 0)
            rc = assessments_array(api, sqlite3_column_int64(st, 9), o);
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = db_error(st);
    stmt_done(st);
    return rc;
}

static int get_study(vg_api_t *api, const vg_http_request_t *req, const char *uid,
                     vg_http_reply_t *r)
{
    (void)req;
    cJSON *study;
    int txn = read_begin(api);
    int rc = study_object(api, uid, &study);
    if (rc == 0 && study) {
        sqlite3_stmt *st = stmt(api, Q_SERIES);
        sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
        rc = rows_to_array(st, series_fields, NFIELDS(series_fields),
                           cJSON_AddArrayToObject(study, "series"));
    }
    if (rc == 0 && study)
        rc = clinical_object(api, uid, study);
    if (rc == 0 && study)
        rc = results_array(api, uid, cJSON_AddArrayToObject(study, "results"));
    read_end(api, txn);
    if (rc < 0) {
        cJSON_Delete(study);
        return rc;
    }
    if (!study)
        return reply_error(r, 404, "study not found", "study_uid", uid);
    return reply_json(r, 200, study);
}

static int get_jobs(vg_api_t *api, const vg_http_request_t *req, const char *arg,
                    vg_http_reply_t *r)
{
    (void)arg;
    char state[32];
    int rc = vg_http_query_param(req->query, "state", state, sizeof state);
    int known = 0;
    for (int i = 0; rc == 0 && i < N_JOB_STATES; i++)
        known |= strcmp(state, job_states[i]) == 0;
    if (rc != VG_ENOTFOUND && !known)
        return reply_error(r, 400, "unknown job state", NULL, NULL);
    sqlite3_stmt *st = stmt(api, Q_JOBS);
    if (known)
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
    cJSON *root = cJSON_CreateObject();
    rc = rows_to_array(st, job_fields, NFIELDS(job_fields),
                       cJSON_AddArrayToObject(root, "jobs"));
    if (rc < 0) {
        cJSON_Delete(root);
        return rc;
    }
    return reply_json(r, 200, root);
}

/* One outbox entry as JSON; times as ISO-8601, null when they do not
 * apply (next_attempt of an entry that is sent or failed). */
static cJSON *outbox_json(const vg_outbox_entry_t *e)
{
    char when[40];
    cJSON *o = cJSON_CreateObject();
    int due = strcmp(e->state, "queued") == 0 || strcmp(e->state, "sending") == 0;
    cJSON *result = e->obj.result_id ? cJSON_CreateNumber((double)e->obj.result_id)
                                     : cJSON_CreateNull();
    int ok = o && result && cJSON_AddNumberToObject(o, "id", (double)e->id) &&
             cJSON_AddItemToObject(o, "result_id", result) &&
             cJSON_AddStringToObject(o, "destination", e->destination) &&
             cJSON_AddStringToObject(o, "sop_uid", e->obj.sop_uid) &&
             cJSON_AddStringToObject(o, "sop_class_uid", e->obj.sop_class_uid) &&
             cJSON_AddStringToObject(o, "study_uid", e->obj.study_uid) &&
             cJSON_AddStringToObject(o, "series_uid", e->obj.series_uid) &&
             cJSON_AddStringToObject(o, "state", e->state) &&
             cJSON_AddNumberToObject(o, "attempts", e->attempts);
    if (ok && due) {
        iso_time(e->next_attempt_ms, when, sizeof when);
        ok = cJSON_AddStringToObject(o, "next_attempt", when) != NULL;
    } else if (ok) {
        ok = cJSON_AddNullToObject(o, "next_attempt") != NULL;
    }
    if (ok && e->last_error[0])
        ok = cJSON_AddStringToObject(o, "last_error", e->last_error) != NULL;
    else if (ok)
        ok = cJSON_AddNullToObject(o, "last_error") != NULL;
    iso_time(e->created_ms, when, sizeof when);
    ok = ok && cJSON_AddStringToObject(o, "created", when);
    if (ok && e->sent_ms) {
        iso_time(e->sent_ms, when, sizeof when);
        ok = cJSON_AddStringToObject(o, "sent", when) != NULL;
    } else if (ok) {
        ok = cJSON_AddNullToObject(o, "sent") != NULL;
    }
    if (!ok) {
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "result_id"))
            cJSON_Delete(result); /* not yet owned by O */
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int add_outbox_entry(void *arg, const vg_outbox_entry_t *e)
{
    cJSON *o = outbox_json(e);
    if (!o || !cJSON_AddItemToArray(arg, o)) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    return 0;
}

static int get_outbox(vg_api_t *api, const vg_http_request_t *req, const char *arg,
                      vg_http_reply_t *r)
{
    (void)arg;
    char state[32];
    long long limit = LIST_DEFAULT;
    int rc = vg_http_query_param(req->query, "state", state, sizeof state);
    int known = 0;
    for (int i = 0; rc == 0 && i < VG_OUTBOX_NSTATES; i++)
        known |= strcmp(state, vg_outbox_state_names[i]) == 0;
    if (rc != VG_ENOTFOUND && !known)
        return reply_error(r, 400, "unknown outbox state (queued, sending, sent or failed)",
                           NULL, NULL);
    if (query_count(req->query, "limit", LIST_MAX, &limit) < 0)
        return reply_error(r, 400, "limit must be a non-negative integer", NULL, NULL);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "outbox");
    const char *only = known ? state : NULL;
    rc = arr ? vg_outbox_list(api->idx, only, (int)limit, add_outbox_entry, arr) : -ENOMEM;
    if (rc < 0) {
        cJSON_Delete(root);
        return rc;
    }
    return reply_json(r, 200, root);
}

/* POST /api/v1/outbox/ID/retry: a failed (or waiting) entry is sent again
 * now, with a fresh series of attempts. */
static int post_outbox_retry(vg_api_t *api, const vg_http_request_t *req, const char *arg,
                             vg_http_reply_t *r)
{
    (void)req;
    char *end;
    errno = 0;
    long long id = isdigit((unsigned char)arg[0]) ? strtoll(arg, &end, 10) : -1;
    if (id <= 0 || *end || errno)
        return reply_error(r, 404, "outbox entry not found", "id", arg);
    vg_outbox_entry_t e;
    int rc = vg_outbox_retry(api->idx, id, vg_now_ms(), &e);
    if (rc == VG_ENOTFOUND)
        return reply_error(r, 404, "outbox entry not found", "id", arg);
    if (rc == VG_EBUSY) {
        cJSON *o = cJSON_CreateObject();
        cJSON *entry = outbox_json(&e);
        const char *why = strcmp(e.state, "sent") == 0 ? "already sent" : "being sent now";
        if (!o || !entry || !cJSON_AddStringToObject(o, "error", why) ||
            !cJSON_AddItemToObject(o, "entry", entry)) {
            cJSON_Delete(o);
            cJSON_Delete(entry);
            return -ENOMEM;
        }
        return reply_json(r, 409, o);
    }
    if (rc < 0)
        return rc;
    vg_log(VG_LOG_INFO, "outbox %lld: retry asked through the API: %s to [ae %s] due now",
           id, e.obj.sop_uid, e.destination);
    if (api->wake)
        api->wake(api->wake_arg);
    cJSON *o = outbox_json(&e);
    return o ? reply_json(r, 200, o) : -ENOMEM;
}

/* POST /api/v1/studies/UID/clinical: a JSON object of clinical values
 * (storage/clinical.h), merged into those posted before; null removes
 * one. A study whose grouped analysis already ran is analysed again. */
static int post_clinical(vg_api_t *api, const vg_http_request_t *req, const char *uid,
                         vg_http_reply_t *r)
{
    char why[256], limit[64];
    if (req->body_len > CLINICAL_BODY_MAX) {
        snprintf(limit, sizeof limit, "%d", CLINICAL_BODY_MAX);
        return reply_error(r, 413, "body too large", "limit_bytes", limit);
    }
    vg_clinical_t c, now;
    memset(&c, 0, sizeof c);
    if (vg_clinical_parse(req->body, req->body_len, &c, why, sizeof why) < 0)
        return reply_error(r, 400, why, NULL, NULL);
    int requeued = 0;
    int rc = vg_clinical_update(api->idx, uid, &c, vg_now_ms(), &now, &requeued);
    if (rc == VG_ENOTFOUND)
        return reply_error(r, 404, "study not found", "study_uid", uid);
    if (rc < 0)
        return rc;
    if (requeued)
        vg_log(VG_LOG_INFO, "study %s: clinical values changed; %d analys%s queued again",
               uid, requeued, requeued == 1 ? "is" : "es");
    cJSON *o = cJSON_CreateObject();
    if (!cJSON_AddStringToObject(o, "study_uid", uid) || add_clinical(o, &now) < 0 ||
        !cJSON_AddBoolToObject(o, "requeued", requeued > 0)) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    return reply_json(r, 200, o);
}

/* A route whose path ends in '/' takes one more segment as its argument;
 * a '*' segment is the argument in the middle of a path. METHOD NULL:
 * GET and HEAD. */
static const struct route {
    const char *path;
    route_fn fn;
    const char *method;
} routes[] = {
    {"/healthz", get_healthz, NULL},
    {"/metrics", get_metrics, NULL},
    {"/api/v1/studies", get_studies, NULL},
    {"/api/v1/studies/", get_study, NULL},
    {"/api/v1/studies/*/clinical", post_clinical, "POST"},
    {"/api/v1/jobs", get_jobs, NULL},
    {"/api/v1/outbox", get_outbox, NULL},
    {"/api/v1/outbox/*/retry", post_outbox_retry, "POST"},
};

/* 1 when PATH matches P, whose '*' (if any) stands for one non-empty
 * segment; the segment is copied to SEG. */
static int path_matches(const char *p, const char *path, char *seg, size_t seglen)
{
    const char *star = strchr(p, '*');
    if (!star)
        return strcmp(path, p) == 0;
    size_t pre = (size_t)(star - p);
    if (strncmp(path, p, pre) != 0)
        return 0;
    const char *s = path + pre;
    size_t w = strcspn(s, "/");
    if (w == 0 || w >= seglen || strcmp(s + w, star + 1) != 0)
        return 0;
    memcpy(seg, s, w);
    seg[w] = '\0';
    return 1;
}

static const struct route *route_find(const char *path, const char **arg)
{
    static char seg[256]; /* the loop thread's only */
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const char *p = routes[i].path;
        size_t n = strlen(p);
        if (p[n - 1] != '/' && path_matches(p, path, seg, sizeof seg)) {
            if (strchr(p, '*'))
                *arg = seg;
            return &routes[i];
        }
        if (p[n - 1] == '/' && strncmp(path, p, n) == 0 && path[n] &&
            !strchr(path + n, '/')) {
            *arg = path + n;
            return &routes[i];
        }
    }
    return NULL;
}

void vg_api_handle(void *ctx, const vg_http_request_t *req, vg_http_reply_t *reply)
{
    vg_api_t *api = ctx;
    const char *arg = NULL;
    const struct route *rt = route_find(req->path, &arg);
    int rc;
    if (!rt) {
        rc = reply_error(reply, 404, "not found", NULL, NULL);
    } else if (!rt->method && strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        rc = reply_error(reply, 405, "method not allowed", NULL, NULL);
        reply->headers = "Allow: GET, HEAD\r\n";
    } else if (rt->method && strcmp(req->method, rt->method)) {
        rc = reply_error(reply, 405, "method not allowed", NULL, NULL);
        reply->headers = "Allow: POST\r\n";
    } else {
        rc = rt->fn(api, req, arg, reply);
    }
    if (rc < 0) {
        vg_log(VG_LOG_WARN, "api: %s %s: %s", req->method, req->path, vg_strerror(rc));
        rc = reply_error(reply, 500, rc == VG_EDB ? "database error" : "internal error",
                         NULL, NULL);
        if (rc < 0)
            reply->status = 500;
    }
}
