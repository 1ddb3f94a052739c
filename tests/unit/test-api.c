/* Tests of the JSON API and /metrics: vg_api_handle called directly on an
 * index in the test's directory, replies parsed with cJSON. */
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "server/api.h"
#include "server/error.h"
#include "server/metrics.h"
#include "tests/unit/test.h"

/* 2026-11-22T04:10:00.123Z */
#define T0 1795320600123LL

#define STUDY_A "1.2.826.0.1.3680043.10.1"
#define STUDY_B "1.2.826.0.1.3680043.10.2"
/* Series numbers run opposite to UID order ("...10" < "...9"). */
#define SER_A1 "1.2.826.0.1.3680043.10.1.9"  /* number 1, 3 instances */
#define SER_A2 "1.2.826.0.1.3680043.10.1.10" /* number 2, 2 instances */
#define SER_A3 "1.2.826.0.1.3680043.10.1.5"  /* no number, 1 instance */
#define SER_B1 "1.2.826.0.1.3680043.10.2.1"  /* number 7, 1 instance */

typedef struct {
    vg_index_t *idx;
    vg_api_t api;
} fixture_t;

static int put(fixture_t *f, const char *study, const char *series, int number, int sop,
               int64_t ms)
{
    vg_instance_meta_t m;
    memset(&m, 0, sizeof m);
    snprintf(m.sop_class_uid, sizeof m.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
    snprintf(m.sop_instance_uid, sizeof m.sop_instance_uid, "%s.%d", series, sop);
    snprintf(m.study_uid, sizeof m.study_uid, "%s", study);
    snprintf(m.series_uid, sizeof m.series_uid, "%s", series);
    snprintf(m.transfer_syntax, sizeof m.transfer_syntax, "1.2.840.10008.1.2.1");
    int is_a = strcmp(study, STUDY_A) == 0;
    snprintf(m.patient_id, sizeof m.patient_id, "PID-%s", is_a ? "A" : "B");
    snprintf(m.accession, sizeof m.accession, "ACC%s", is_a ? "1" : "2");
    snprintf(m.study_date, sizeof m.study_date, "20261122");
    snprintf(m.study_time, sizeof m.study_time, "041000");
    snprintf(m.study_description, sizeof m.study_description, "CT CHEST");
    snprintf(m.modality, sizeof m.modality, "CT");
    snprintf(m.body_part, sizeof m.body_part, "CHEST");
    snprintf(m.series_description, sizeof m.series_description, "S%d", number);
    m.series_number = number;
    m.instance_number = sop;
    m.frames = 1;
    m.slice_thickness = number == 1 ? 1.25 : 0;
    return vg_index_put_instance(f->idx, &m, "rel/x.dcm", 1000, "SCANNER", ms);
}

/* Study A: 6 instances at T0 .. T0+5 s; study B: 1 instance at T0+60 s. */
static int fixture_open(fixture_t *f, int with_data)
{
    char path[512], err[256];
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "%s/index.db", test_tmpdir());
    if (vg_index_open(path, &f->idx, err, sizeof err) < 0) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    f->api.idx = f->idx;
    f->api.ae_title = "VIGIL";
    if (vg_api_init(&f->api) < 0)
        return -1;
    if (!with_data)
        return 0;
    int rc = 0, t = 0;
    for (int i = 1; i <= 3; i++)
        rc |= put(f, STUDY_A, SER_A1, 1, i, T0 + 1000 * t++);
    for (int i = 1; i <= 2; i++)
        rc |= put(f, STUDY_A, SER_A2, 2, i, T0 + 1000 * t++);
    rc |= put(f, STUDY_A, SER_A3, -1, 1, T0 + 1000 * t++);
    rc |= put(f, STUDY_B, SER_B1, 7, 1, T0 + 60000);
    return rc;
}

static void fixture_close(fixture_t *f)
{
    vg_api_close(&f->api);
    vg_index_close(f->idx);
}

static vg_http_reply_t call(fixture_t *f, const char *method, const char *path,
                            const char *query)
{
    vg_http_request_t req = {method, path, query, "", 0};
    vg_http_reply_t r = {0}; /* as vg_http hands it over */
    vg_api_handle(&f->api, &req, &r);
    return r;
}

static const char *str(const cJSON *o, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
}

static double num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? cJSON_GetNumberValue(v) : -999;
}

static int is_null(const cJSON *o, const char *name)
{
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, name));
}

/* 1 if TEXT has LINE as a whole line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

static int count_prefix(const char *text, const char *prefix)
{
    int k = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        k += strncmp(p, prefix, n) == 0;
    return k;
}

TEST_IMPL(api_healthz)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 0), 0);

    vg_http_reply_t r = call(&f, "GET", "/healthz", "");
    ASSERT_EQ(r.status, 503);
    ASSERT_STR_EQ(r.content_type, "application/json");
    cJSON *j = cJSON_Parse(r.body);
    ASSERT(j != NULL);
    ASSERT_STR_EQ(str(j, "status"), "starting");
    ASSERT(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "accepting")));
    ASSERT_STR_EQ(str(j, "ae_title"), "VIGIL");
    cJSON_Delete(j);
    free(r.body);

    f.api.accepting = 1;
    r = call(&f, "GET", "/healthz", "");
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.body_len, strlen(r.body));
    ASSERT_STR_EQ(r.body, "{\"status\":\"ok\",\"accepting\":true,\"ae_title\":\"VIGIL\"}");
    free(r.body);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_studies_list)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);

    vg_http_reply_t r = call(&f, "GET", "/api/v1/studies", "");
    ASSERT_EQ(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    ASSERT_EQ(num(j, "total"), 2);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "studies");
    ASSERT_EQ(cJSON_GetArraySize(list), 2);
    const cJSON *b = cJSON_GetArrayItem(list, 0), *a = cJSON_GetArrayItem(list, 1);
    /* Newest first. */
    ASSERT_STR_EQ(str(b, "study_uid"), STUDY_B);
    ASSERT_STR_EQ(str(b, "last_received"), "2026-11-22T04:11:00.123Z");
    ASSERT_EQ(num(b, "series_count"), 1);
    ASSERT_EQ(num(b, "instance_count"), 1);
    ASSERT_STR_EQ(str(a, "study_uid"), STUDY_A);
    ASSERT_STR_EQ(str(a, "patient_id"), "PID-A");
    ASSERT_STR_EQ(str(a, "accession_number"), "ACC1");
    ASSERT_STR_EQ(str(a, "study_date"), "20261122");
    ASSERT_STR_EQ(str(a, "study_time"), "041000");
    ASSERT_STR_EQ(str(a, "description"), "CT CHEST");
    ASSERT_STR_EQ(str(a, "state"), "receiving");
    ASSERT_EQ(num(a, "series_count"), 3);
    ASSERT_EQ(num(a, "instance_count"), 6);
    ASSERT_STR_EQ(str(a, "last_received"), "2026-11-22T04:10:05.123Z");
    cJSON_Delete(j);
    free(r.body);

    /* A page: total stays the whole count. */
    r = call(&f, "GET", "/api/v1/studies", "offset=1&limit=5");
    ASSERT_EQ(r.status, 200);
    j = cJSON_Parse(r.body);
    list = cJSON_GetObjectItemCaseSensitive(j, "studies");
    ASSERT_EQ(cJSON_GetArraySize(list), 1);
    ASSERT_STR_EQ(str(cJSON_GetArrayItem(list, 0), "study_uid"), STUDY_A);
    ASSERT_EQ(num(j, "total"), 2);
    cJSON_Delete(j);
    free(r.body);

    r = call(&f, "GET", "/api/v1/studies", "limit=1");
    j = cJSON_Parse(r.body);
    list = cJSON_GetObjectItemCaseSensitive(j, "studies");
    ASSERT_EQ(cJSON_GetArraySize(list), 1);
    ASSERT_STR_EQ(str(cJSON_GetArrayItem(list, 0), "study_uid"), STUDY_B);
    cJSON_Delete(j);
    free(r.body);

    /* Over the maximum is capped, not refused. */
    r = call(&f, "GET", "/api/v1/studies", "limit=5000");
    ASSERT_EQ(r.status, 200);
    free(r.body);

    const char *bad[] = {"limit=abc", "limit=-1", "offset=1x", "limit=", "limit=%zz"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = call(&f, "GET", "/api/v1/studies", bad[i]);
        ASSERT_EQ(r.status, 400);
        j = cJSON_Parse(r.body);
        ASSERT(str(j, "error") != NULL);
        cJSON_Delete(j);
        free(r.body);
    }
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_study_detail)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    ASSERT_EQ(sqlite3_exec(vg_index_db(f.idx),
                           "UPDATE series SET route_state = 'queued',"
                           " route_reason = 'ct-bone' WHERE series_uid = '" SER_A1 "'",
                           NULL, NULL, NULL),
              SQLITE_OK);

    vg_http_reply_t r = call(&f, "GET", "/api/v1/studies/" STUDY_A, "");
    ASSERT_EQ(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    ASSERT(j != NULL);
    ASSERT_STR_EQ(str(j, "study_uid"), STUDY_A);
    ASSERT_STR_EQ(str(j, "accession_number"), "ACC1");
    ASSERT_STR_EQ(str(j, "state"), "receiving");
    ASSERT_STR_EQ(str(j, "received_first"), "2026-11-22T04:10:00.123Z");
    ASSERT_STR_EQ(str(j, "received_last"), "2026-11-22T04:10:05.123Z");
    ASSERT(is_null(j, "completed"));

    const cJSON *series = cJSON_GetObjectItemCaseSensitive(j, "series");
    ASSERT_EQ(cJSON_GetArraySize(series), 3);
    const cJSON *s1 = cJSON_GetArrayItem(series, 0);
    const cJSON *s2 = cJSON_GetArrayItem(series, 1);
    const cJSON *s3 = cJSON_GetArrayItem(series, 2);
    ASSERT_STR_EQ(str(s1, "series_uid"), SER_A1);
    ASSERT_EQ(num(s1, "series_number"), 1);
    ASSERT_EQ(num(s1, "instances"), 3);
    ASSERT_STR_EQ(str(s1, "modality"), "CT");
    ASSERT_STR_EQ(str(s1, "body_part"), "CHEST");
    ASSERT_STR_EQ(str(s1, "description"), "S1");
    ASSERT_STR_EQ(str(s1, "state"), "receiving");
    ASSERT_STR_EQ(str(s1, "route_state"), "queued");
    ASSERT_STR_EQ(str(s1, "route_reason"), "ct-bone");
    ASSERT_DBL_NEAR(num(s1, "slice_thickness"), 1.25, 1e-9);
    ASSERT_STR_EQ(str(s2, "series_uid"), SER_A2);
    ASSERT_EQ(num(s2, "series_number"), 2);
    ASSERT_EQ(num(s2, "instances"), 2);
    ASSERT(is_null(s2, "route_state"));
    ASSERT(is_null(s2, "route_reason"));
    ASSERT(is_null(s2, "slice_thickness"));
    /* A series without a number comes last, its number null. */
    ASSERT_STR_EQ(str(s3, "series_uid"), SER_A3);
    ASSERT(is_null(s3, "series_number"));
    ASSERT_EQ(num(s3, "instances"), 1);
    cJSON_Delete(j);
    free(r.body);

    ASSERT_EQ(sqlite3_exec(vg_index_db(f.idx),
                           "UPDATE studies SET state = 'complete', completed_ms = "
                           "1795320600123 + 3600000 WHERE study_uid = '" STUDY_A "'",
                           NULL, NULL, NULL),
              SQLITE_OK);
    r = call(&f, "GET", "/api/v1/studies/" STUDY_A, "");
    j = cJSON_Parse(r.body);
    ASSERT_STR_EQ(str(j, "state"), "complete");
    ASSERT_STR_EQ(str(j, "completed"), "2026-11-22T05:10:00.123Z");
    cJSON_Delete(j);
    free(r.body);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_study_not_found)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    vg_http_reply_t r = call(&f, "GET", "/api/v1/studies/1.2.3.999", "");
    ASSERT_EQ(r.status, 404);
    ASSERT_STR_EQ(r.content_type, "application/json");
    ASSERT_STR_EQ(r.body, "{\"error\":\"study not found\",\"study_uid\":\"1.2.3.999\"}");
    free(r.body);

    /* The UID is escaped, not pasted, into the JSON. */
    r = call(&f, "GET", "/api/v1/studies/a\"b", "");
    ASSERT_EQ(r.status, 404);
    cJSON *j = cJSON_Parse(r.body);
    ASSERT_STR_EQ(str(j, "study_uid"), "a\"b");
    cJSON_Delete(j);
    free(r.body);
    fixture_close(&f);
    return 0;
}

static int add_jobs(fixture_t *f)
{
    return sqlite3_exec(
        vg_index_db(f->idx),
        "INSERT INTO jobs(series_uid, study_uid, route, model, version, state,"
        " attempts, last_error, created_ms, updated_ms) VALUES"
        " ('" SER_A1 "', '" STUDY_A "', 'ct-bone', 'blds', 1, 'done', 1, NULL,"
        "  1795320600123, 1795320601123),"
        " ('" SER_A2 "', '" STUDY_A "', 'ct-bone', 'blds', 1, 'failed', 3,"
        "  'model error', 1795320602123, 1795320603123),"
        " ('" SER_A1 "', '" STUDY_A "', 'ct-bone', 'blds', 2, 'queued', 0, NULL,"
        "  1795320604123, 1795320604123),"
        " ('" SER_B1 "', '" STUDY_B "', 'ct-bone', 'blds', 1, 'running', 1, NULL,"
        "  1795320605123, 1795320606123)",
        NULL, NULL, NULL);
}

TEST_IMPL(api_jobs_list)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    ASSERT_EQ(add_jobs(&f), SQLITE_OK);

    vg_http_reply_t r = call(&f, "GET", "/api/v1/jobs", "");
    ASSERT_EQ(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    ASSERT_EQ(cJSON_GetArraySize(jobs), 4);
    const cJSON *newest = cJSON_GetArrayItem(jobs, 0);
    ASSERT_EQ(num(newest, "id"), 4);
    ASSERT_STR_EQ(str(newest, "state"), "running");
    ASSERT_STR_EQ(str(newest, "series_uid"), SER_B1);
    ASSERT_STR_EQ(str(newest, "study_uid"), STUDY_B);
    ASSERT_STR_EQ(str(newest, "created"), "2026-11-22T04:10:05.123Z");
    ASSERT_STR_EQ(str(newest, "updated"), "2026-11-22T04:10:06.123Z");
    ASSERT(is_null(newest, "last_error"));
    const cJSON *failed = cJSON_GetArrayItem(jobs, 2);
    ASSERT_EQ(num(failed, "id"), 2);
    ASSERT_STR_EQ(str(failed, "route"), "ct-bone");
    ASSERT_STR_EQ(str(failed, "model"), "blds");
    ASSERT_EQ(num(failed, "version"), 1);
    ASSERT_EQ(num(failed, "attempts"), 3);
    ASSERT_STR_EQ(str(failed, "last_error"), "model error");
    ASSERT_EQ(num(cJSON_GetArrayItem(jobs, 3), "id"), 1);
    cJSON_Delete(j);
    free(r.body);

    r = call(&f, "GET", "/api/v1/jobs", "state=queued");
    ASSERT_EQ(r.status, 200);
    j = cJSON_Parse(r.body);
    jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    ASSERT_EQ(cJSON_GetArraySize(jobs), 1);
    ASSERT_EQ(num(cJSON_GetArrayItem(jobs, 0), "id"), 3);
    ASSERT_EQ(num(cJSON_GetArrayItem(jobs, 0), "version"), 2);
    cJSON_Delete(j);
    free(r.body);

    r = call(&f, "GET", "/api/v1/jobs", "state=superseded");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "{\"jobs\":[]}");
    free(r.body);

    r = call(&f, "GET", "/api/v1/jobs", "state=bogus");
    ASSERT_EQ(r.status, 400);
    ASSERT_STR_EQ(r.body, "{\"error\":\"unknown job state\"}");
    free(r.body);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_metrics)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    ASSERT_EQ(add_jobs(&f), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(vg_index_db(f.idx),
                           "UPDATE series SET state = 'complete'"
                           " WHERE series_uid = '" SER_B1 "'",
                           NULL, NULL, NULL),
              SQLITE_OK);
    vg_metric_add(assoc_accepted, 3);
    vg_metric_add(assoc_rejected[VG_REJECT_CALLED_AE], 2);
    vg_metric_add(assoc_active, 1);
    vg_metric_add(echo_requests, 4);
    vg_metric_add(instances_stored, 7);
    vg_metric_add(instances_duplicate, 1);
    vg_metric_add(bytes_stored, 123456789012ULL);
    vg_metric_add(store_failures[VG_STOREFAIL_DISK], 5);

    vg_http_reply_t r = call(&f, "GET", "/metrics", "");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.content_type, "text/plain; version=0.0.4");
    ASSERT_EQ(r.body_len, strlen(r.body));
    const char *t = r.body;
    const char *want[] = {
        "# TYPE vigil_associations_accepted_total counter",
        "vigil_associations_accepted_total 3",
        "# TYPE vigil_associations_rejected_total counter",
        "vigil_associations_rejected_total{reason=\"called_ae\"} 2",
        "vigil_associations_rejected_total{reason=\"calling_ae\"} 0",
        "vigil_associations_rejected_total{reason=\"no_presentation_context\"} 0",
        "# TYPE vigil_associations_active gauge",
        "vigil_associations_active 1",
        "vigil_echo_requests_total 4",
        "vigil_instances_stored_total 7",
        "vigil_instances_duplicate_total 1",
        "vigil_bytes_stored_total 123456789012",
        "vigil_store_failures_total{reason=\"out_of_resources\"} 5",
        "vigil_store_failures_total{reason=\"cannot_parse\"} 0",
        "# TYPE vigil_queue_depth gauge",
        "vigil_queue_depth 2",
        "# TYPE vigil_jobs gauge",
        "vigil_jobs{state=\"queued\"} 1",
        "vigil_jobs{state=\"running\"} 1",
        "vigil_jobs{state=\"done\"} 1",
        "vigil_jobs{state=\"failed\"} 1",
        "vigil_jobs{state=\"superseded\"} 0",
        "# TYPE vigil_series gauge",
        "vigil_series{state=\"receiving\"} 3",
        "vigil_series{state=\"complete\"} 1",
        "# TYPE vigil_outbox_sent_total counter",
        "vigil_outbox_sent_total 0",
        "# TYPE vigil_outbox_failed_total counter",
        "vigil_outbox_failed_total 0",
        "# TYPE vigil_outbox gauge",
        "vigil_outbox{state=\"queued\"} 0",
        "vigil_outbox{state=\"failed\"} 0",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!has_line(t, want[i]))
            TEST__FAIL("missing line: %s\n%s", want[i], t);
    ASSERT_EQ(count_prefix(t, "vigil_associations_rejected_total{"), VG_REJECT_COUNT);
    ASSERT_EQ(count_prefix(t, "vigil_store_failures_total{"), VG_STOREFAIL_COUNT);
    /* Every family has its HELP and TYPE. */
    ASSERT_EQ(count_prefix(t, "# TYPE "), 14);
    ASSERT_EQ(count_prefix(t, "# HELP "), 14);
    ASSERT_EQ(t[r.body_len - 1], '\n');
    free(r.body);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_routes)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    const char *missing[] = {"/",
                             "/api/v1",
                             "/api/v1/studies/",
                             "/healthz/",
                             "/api/v1/studies/" STUDY_A "/series",
                             "/api/v1/jobsx"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        vg_http_reply_t r = call(&f, "GET", missing[i], "");
        if (r.status != 404)
            TEST__FAIL("%s: status %d", missing[i], r.status);
        ASSERT_STR_EQ(r.body, "{\"error\":\"not found\"}");
        free(r.body);
    }

    vg_http_reply_t r = call(&f, "POST", "/api/v1/studies", "");
    ASSERT_EQ(r.status, 405);
    ASSERT_STR_EQ(r.body, "{\"error\":\"method not allowed\"}");
    ASSERT_STR_EQ(r.headers, "Allow: GET, HEAD\r\n");
    free(r.body);
    r = call(&f, "DELETE", "/api/v1/studies/" STUDY_A, "");
    ASSERT_EQ(r.status, 405);
    free(r.body);

    /* HEAD is answered as GET; the transport drops the body. */
    r = call(&f, "HEAD", "/api/v1/studies/" STUDY_A, "");
    ASSERT_EQ(r.status, 200);
    ASSERT_GT(r.body_len, 0);
    ASSERT(r.headers == NULL);
    free(r.body);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_empty_index)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 0), 0);
    vg_http_reply_t r = call(&f, "GET", "/api/v1/studies", "");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "{\"studies\":[],\"total\":0}");
    free(r.body);
    r = call(&f, "GET", "/metrics", "");
    ASSERT_EQ(r.status, 200);
    ASSERT(has_line(r.body, "vigil_queue_depth 0"));
    ASSERT(has_line(r.body, "vigil_series{state=\"receiving\"} 0"));
    free(r.body);
    fixture_close(&f);
    return 0;
}

/* --- the outbox: GET /api/v1/outbox, POST /api/v1/outbox/ID/retry ----- */

#include "storage/outbox.h"

static int wakes;

static void count_wake(void *arg)
{
    (void)arg;
    wakes++;
}

/* Entries 1..4 for "pacs": 1 sent, 2 failed, 3 queued after one failure,
 * 4 sending. */
static int add_outbox(fixture_t *f)
{
    static const vg_outbox_policy_t p = {10000, 600000, 2};
    for (int i = 1; i <= 4; i++) {
        vg_outbox_object_t o;
        memset(&o, 0, sizeof o);
        o.result_id = i == 1 ? 7 : 0;
        snprintf(o.study_uid, sizeof o.study_uid, STUDY_A);
        snprintf(o.series_uid, sizeof o.series_uid, "%s.99", STUDY_A);
        snprintf(o.sop_uid, sizeof o.sop_uid, "%s.99.%d", STUDY_A, i);
        snprintf(o.sop_class_uid, sizeof o.sop_class_uid, "1.2.840.10008.5.1.4.1.1.66.4");
        snprintf(o.path, sizeof o.path, "results/%d.dcm", i);
        if (vg_outbox_add(f->idx, &o, "pacs", T0 + i) < 0)
            return -1;
    }
    vg_outbox_entry_t e[4];
    int n = 0, rc = vg_outbox_lease(f->idx, "pacs", T0 + 10, e, 4, &n);
    if (rc < 0 || n != 4)
        return -1;
    rc |= vg_outbox_mark_sent(f->idx, 1, T0 + 1000);
    rc |= vg_outbox_mark_failed(f->idx, 2, "refused", &p, T0, NULL);
    rc |= vg_outbox_lease(f->idx, "pacs", T0 + 20000, e, 1, &n);
    rc |= vg_outbox_mark_failed(f->idx, 2, "association rejected: called AE title", &p,
                                T0 + 20000, NULL);
    rc |= vg_outbox_mark_failed(f->idx, 3, "connection refused 127.0.0.1:4242", &p, T0,
                                NULL);
    return rc;
}

static const cJSON *entry_with_id(const cJSON *arr, int id)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
        if (num(e, "id") == id)
            return e;
    return NULL;
}

TEST_IMPL(api_outbox_list)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 0), 0);
    ASSERT_EQ(add_outbox(&f), 0);
    vg_http_reply_t r = call(&f, "GET", "/api/v1/outbox", "");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.content_type, "application/json");
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "outbox");
    ASSERT_EQ(cJSON_GetArraySize(arr), 4);
    ASSERT_EQ(num(cJSON_GetArrayItem(arr, 0), "id"), 4); /* newest first */
    const cJSON *sent = entry_with_id(arr, 1);
    ASSERT(sent != NULL);
    ASSERT_STR_EQ(str(sent, "state"), "sent");
    ASSERT_STR_EQ(str(sent, "destination"), "pacs");
    ASSERT_STR_EQ(str(sent, "sop_uid"), STUDY_A ".99.1");
    ASSERT_STR_EQ(str(sent, "sop_class_uid"), "1.2.840.10008.5.1.4.1.1.66.4");
    ASSERT_STR_EQ(str(sent, "study_uid"), STUDY_A);
    ASSERT_STR_EQ(str(sent, "created"), "2026-11-22T04:10:00.124Z");
    ASSERT_STR_EQ(str(sent, "sent"), "2026-11-22T04:10:01.123Z");
    ASSERT_EQ(num(sent, "attempts"), 1);
    ASSERT_EQ(num(sent, "result_id"), 7);
    ASSERT(is_null(sent, "next_attempt"));
    ASSERT(is_null(sent, "last_error"));
    const cJSON *failed = entry_with_id(arr, 2);
    ASSERT_STR_EQ(str(failed, "state"), "failed");
    ASSERT_EQ(num(failed, "attempts"), 2);
    ASSERT_STR_EQ(str(failed, "last_error"), "association rejected: called AE title");
    ASSERT(is_null(failed, "sent"));
    ASSERT(is_null(failed, "result_id"));
    const cJSON *queued = entry_with_id(arr, 3);
    ASSERT_STR_EQ(str(queued, "state"), "queued");
    ASSERT_STR_EQ(str(queued, "next_attempt"), "2026-11-22T04:10:10.123Z"); /* T0 + 10 s */
    ASSERT_STR_EQ(str(queued, "last_error"), "connection refused 127.0.0.1:4242");
    ASSERT_STR_EQ(str(entry_with_id(arr, 4), "state"), "sending");
    cJSON_Delete(j);
    free(r.body);

    r = call(&f, "GET", "/api/v1/outbox", "state=failed");
    ASSERT_EQ(r.status, 200);
    j = cJSON_Parse(r.body);
    arr = cJSON_GetObjectItemCaseSensitive(j, "outbox");
    ASSERT_EQ(cJSON_GetArraySize(arr), 1);
    ASSERT_EQ(num(cJSON_GetArrayItem(arr, 0), "id"), 2);
    cJSON_Delete(j);
    free(r.body);

    r = call(&f, "GET", "/api/v1/outbox", "state=queued&limit=0");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "{\"outbox\":[]}");
    free(r.body);
    r = call(&f, "GET", "/api/v1/outbox", "state=lost");
    ASSERT_EQ(r.status, 400);
    free(r.body);
    r = call(&f, "GET", "/api/v1/outbox", "limit=-1");
    ASSERT_EQ(r.status, 400);
    free(r.body);

    /* /metrics counts them by state. */
    r = call(&f, "GET", "/metrics", "");
    ASSERT(has_line(r.body, "vigil_outbox{state=\"queued\"} 1"));
    ASSERT(has_line(r.body, "vigil_outbox{state=\"sending\"} 1"));
    ASSERT(has_line(r.body, "vigil_outbox{state=\"sent\"} 1"));
    ASSERT(has_line(r.body, "vigil_outbox{state=\"failed\"} 1"));
    free(r.body);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_outbox_retry)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 0), 0);
    ASSERT_EQ(add_outbox(&f), 0);
    f.api.wake = count_wake;
    wakes = 0;

    int64_t before = vg_now_ms();
    vg_http_reply_t r = call(&f, "POST", "/api/v1/outbox/2/retry", "");
    ASSERT_EQ(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    ASSERT_EQ(num(j, "id"), 2);
    ASSERT_STR_EQ(str(j, "state"), "queued");
    ASSERT_EQ(num(j, "attempts"), 0);
    ASSERT(str(j, "next_attempt") != NULL);
    ASSERT_STR_EQ(str(j, "last_error"), "association rejected: called AE title");
    cJSON_Delete(j);
    free(r.body);
    ASSERT_EQ(wakes, 1);
    vg_outbox_entry_t e;
    ASSERT_EQ(vg_outbox_get(f.idx, 2, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    ASSERT_GE(e.next_attempt_ms, before);
    ASSERT_LE(e.next_attempt_ms, vg_now_ms());

    /* Already sent: 409, and it stays sent. */
    r = call(&f, "POST", "/api/v1/outbox/1/retry", "");
    ASSERT_EQ(r.status, 409);
    j = cJSON_Parse(r.body);
    ASSERT_STR_EQ(str(j, "error"), "already sent");
    ASSERT_STR_EQ(str(cJSON_GetObjectItemCaseSensitive(j, "entry"), "state"), "sent");
    cJSON_Delete(j);
    free(r.body);
    r = call(&f, "POST", "/api/v1/outbox/4/retry", "");
    ASSERT_EQ(r.status, 409);
    ASSERT_STR_CONTAINS(r.body, "\"error\":\"being sent now\"");
    free(r.body);
    ASSERT_EQ(wakes, 1);

    const char *unknown[] = {"/api/v1/outbox/99/retry", "/api/v1/outbox/0/retry",
                             "/api/v1/outbox/x/retry", "/api/v1/outbox/2x/retry"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        r = call(&f, "POST", unknown[i], "");
        if (r.status != 404)
            TEST__FAIL("%s: status %d", unknown[i], r.status);
        free(r.body);
    }
    /* Only POST there; only GET and HEAD on the list. */
    r = call(&f, "GET", "/api/v1/outbox/2/retry", "");
    ASSERT_EQ(r.status, 405);
    ASSERT_STR_EQ(r.headers, "Allow: POST\r\n");
    free(r.body);
    r = call(&f, "POST", "/api/v1/outbox", "");
    ASSERT_EQ(r.status, 405);
    ASSERT_STR_EQ(r.headers, "Allow: GET, HEAD\r\n");
    free(r.body);
    r = call(&f, "POST", "/api/v1/outbox/2/retry/x", "");
    ASSERT_EQ(r.status, 404);
    free(r.body);
    r = call(&f, "POST", "/api/v1/outbox//retry", "");
    ASSERT_EQ(r.status, 404);
    free(r.body);
    fixture_close(&f);
    return 0;
}

/* --- clinical values and the breast model's results -------------------- */

#include "storage/queue.h"
#include "storage/results.h"

static vg_http_reply_t call_body(fixture_t *f, const char *method, const char *path,
                                 const char *body, size_t len)
{
    vg_http_request_t req = {method, path, "", body, len};
    vg_http_reply_t r = {0};
    vg_api_handle(&f->api, &req, &r);
    return r;
}

static vg_http_reply_t post(fixture_t *f, const char *path, const char *body)
{
    return call_body(f, "POST", path, body, strlen(body));
}

/* The "clinical" object of GET /api/v1/studies/UID, printed. */
static char *clinical_of(fixture_t *f, const char *uid)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/studies/%s", uid);
    vg_http_reply_t r = call(f, "GET", path, "");
    cJSON *j = cJSON_Parse(r.body);
    free(r.body);
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "clinical"));
    cJSON_Delete(j);
    return s;
}

#define CLIN_A "/api/v1/studies/" STUDY_A "/clinical"

TEST_IMPL(api_clinical_post)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    char *c = clinical_of(&f, STUDY_A);
    ASSERT_STR_EQ(c, "{}"); /* nothing posted */
    free(c);

    vg_http_reply_t r = post(&f, CLIN_A, "{\"age\": 52, \"bmi\": 23.4, \"family_history\":"
                                         " true, \"breast_density\": \"C\"}");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.content_type, "application/json");
    ASSERT_STR_EQ(r.body, "{\"study_uid\":\"" STUDY_A "\",\"clinical\":{\"age\":52,"
                          "\"bmi\":23.4,\"family_history\":true,\"breast_density\":\"C\"},"
                          "\"requeued\":false}");
    free(r.body);
    /* Merged with what was posted before; null removes one. */
    r = post(&f, CLIN_A, "{\"family_history\": null, \"menopausal_status\": \"post\"}");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "{\"study_uid\":\"" STUDY_A "\",\"clinical\":{\"age\":52,"
                          "\"bmi\":23.4,\"menopausal_status\":\"post\","
                          "\"breast_density\":\"C\"},\"requeued\":false}");
    free(r.body);
    c = clinical_of(&f, STUDY_A);
    ASSERT_STR_EQ(c, "{\"age\":52,\"bmi\":23.4,\"menopausal_status\":\"post\","
                     "\"breast_density\":\"C\"}");
    free(c);
    c = clinical_of(&f, STUDY_B);
    ASSERT_STR_EQ(c, "{}");
    free(c);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_clinical_refused)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    vg_http_reply_t r = post(&f, CLIN_A, "{\"age\": 60}");
    ASSERT_EQ(r.status, 200);
    free(r.body);
    static const struct {
        const char *body, *reply;
    } bad[] = {
        {"{\"age\": 250}", "{\"error\":\"age: 250 is out of range 18..110\"}"},
        {"{\"bmi\": 25, \"smoker\": true}",
         "{\"error\":\"unknown clinical value \\\"smoker\\\"\"}"},
        {"{\"family_history\": \"yes\"}",
         "{\"error\":\"family_history: expected true or false\"}"},
        {"{\"breast_density\": \"E\"}",
         "{\"error\":\"breast_density: expected \\\"A\\\", \\\"B\\\", \\\"C\\\" or \\\"D\\\"\"}"},
        {"[]", "{\"error\":\"body must be a JSON object\"}"},
        {"", "{\"error\":\"body must be a JSON object\"}"},
        {"age=60", "{\"error\":\"body must be a JSON object\"}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = post(&f, CLIN_A, bad[i].body);
        if (r.status != 400 || strcmp(r.body, bad[i].reply) != 0)
            TEST__FAIL("%s: %d %s", bad[i].body, r.status, r.body);
        free(r.body);
    }
    /* Nothing of a refused body was stored. */
    char *c = clinical_of(&f, STUDY_A);
    ASSERT_STR_EQ(c, "{\"age\":60}");
    free(c);

    r = post(&f, "/api/v1/studies/1.2.3.999/clinical", "{\"age\": 60}");
    ASSERT_EQ(r.status, 404);
    ASSERT_STR_EQ(r.body, "{\"error\":\"study not found\",\"study_uid\":\"1.2.3.999\"}");
    free(r.body);

    /* Over 16 KiB: refused unread. */
    static char big[16386];
    memset(big, ' ', sizeof big - 1);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    r = call_body(&f, "POST", CLIN_A, big, 16385);
    ASSERT_EQ(r.status, 413);
    ASSERT_STR_EQ(r.body, "{\"error\":\"body too large\",\"limit_bytes\":\"16384\"}");
    free(r.body);
    r = call_body(&f, "POST", CLIN_A, big + 1, 16384 - 1); /* at the limit: parsed */
    ASSERT_EQ(r.status, 400);
    free(r.body);

    /* POST only. */
    r = call(&f, "GET", CLIN_A, "");
    ASSERT_EQ(r.status, 405);
    ASSERT_STR_EQ(r.headers, "Allow: POST\r\n");
    free(r.body);
    r = post(&f, "/api/v1/studies//clinical", "{}");
    ASSERT_EQ(r.status, 404);
    free(r.body);
    fixture_close(&f);
    return 0;
}

TEST_IMPL(api_clinical_requeues)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    /* The study's breast analysis ran (its job names the study). */
    ASSERT_EQ(vg_queue_push(f.idx, STUDY_A, STUDY_A, "breast", "breast", T0, NULL, NULL), 0);
    vg_job_t job;
    ASSERT_EQ(vg_queue_lease(f.idx, "breast", "w", 60000, T0, &job), 0);
    ASSERT_EQ(vg_queue_done(f.idx, job.id, T0 + 1000), 0);

    vg_http_reply_t r = post(&f, CLIN_A, "{\"age\": 47, \"palpable_lump\": true}");
    ASSERT_EQ(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "requeued")));
    cJSON_Delete(j);
    free(r.body);
    r = call(&f, "GET", "/api/v1/jobs", "");
    j = cJSON_Parse(r.body);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    ASSERT_EQ(cJSON_GetArraySize(jobs), 2);
    const cJSON *v2 = cJSON_GetArrayItem(jobs, 0);
    ASSERT_EQ(num(v2, "version"), 2);
    ASSERT_STR_EQ(str(v2, "state"), "queued");
    ASSERT_STR_EQ(str(v2, "series_uid"), STUDY_A);
    ASSERT_STR_EQ(str(v2, "route"), "breast");
    ASSERT_STR_EQ(str(cJSON_GetArrayItem(jobs, 1), "state"), "done");
    cJSON_Delete(j);
    free(r.body);
    /* Still queued: the values are read when it runs; no third version. */
    r = post(&f, CLIN_A, "{\"age\": 48}");
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_CONTAINS(r.body, "\"requeued\":false");
    free(r.body);
    r = call(&f, "GET", "/api/v1/jobs", "state=queued");
    ASSERT_STR_CONTAINS(r.body, "\"version\":2");
    ASSERT(strstr(r.body, "\"version\":3") == NULL);
    free(r.body);
    fixture_close(&f);
    return 0;
}

static void fill_result(vg_result_t *r, const char *series, const char *model)
{
    memset(r, 0, sizeof *r);
    snprintf(r->series_uid, sizeof r->series_uid, "%s", series);
    snprintf(r->study_uid, sizeof r->study_uid, STUDY_A);
    snprintf(r->model, sizeof r->model, "%s", model);
    snprintf(r->model_version, sizeof r->model_version, "0.1.0");
    snprintf(r->status, sizeof r->status, "done");
    snprintf(r->timings, sizeof r->timings, "{\"total\":1.5}");
    r->patient_score = 0.25;
    r->positive = 0;
}

TEST_IMPL(api_study_breast_assessments)
{
    fixture_t f;
    ASSERT_EQ(fixture_open(&f, 1), 0);
    vg_result_t bone, breast;
    fill_result(&bone, SER_A1, "bone");
    ASSERT_EQ(vg_results_put_final(f.idx, &bone, T0), 0);
    fill_result(&breast, STUDY_A, "breast");
    vg_assessment_t a[2] = {
        {"L", {0.5, 0.25, 0.125, 0.0625, 0.0625}, 0.25, "4B", "MG_CC,MG_MLO,US_B1",
         "age,bmi,breast_density"},
        {"R", {0.9, 0.05, 0.03, 0.01, 0.01}, 0.05, "4A", "MG_CC", ""},
    };
    breast.assessments = a;
    breast.n_assessments = 2;
    ASSERT_EQ(vg_results_put_final(f.idx, &breast, T0), 0);

    vg_http_reply_t r = call(&f, "GET", "/api/v1/studies/" STUDY_A, "");
    ASSERT_EQ(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(j, "results");
    ASSERT_EQ(cJSON_GetArraySize(results), 2);
    /* Ordered by series UID: the study's UID is a prefix of its series'. */
    const cJSON *br = cJSON_GetArrayItem(results, 0), *bo = cJSON_GetArrayItem(results, 1);
    ASSERT_STR_EQ(str(br, "model"), "breast");
    ASSERT_STR_EQ(str(bo, "model"), "bone");
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(br, "assessments"));
    ASSERT_STR_EQ(text, "[{\"laterality\":\"L\",\"malignancy_probability\":0.25,"
                        "\"birads\":\"4B\",\"probabilities\":[0.5,0.25,0.125,0.0625,0.0625],"
                        "\"modalities_used\":[\"MG_CC\",\"MG_MLO\",\"US_B1\"],"
                        "\"clinical_used\":[\"age\",\"bmi\",\"breast_density\"]},"
                        "{\"laterality\":\"R\",\"malignancy_probability\":0.05,"
                        "\"birads\":\"4A\",\"probabilities\":[0.9,0.05,0.03,0.01,0.01],"
                        "\"modalities_used\":[\"MG_CC\"],\"clinical_used\":[]}]");
    free(text);
    /* A bone result has the keys it always had, in their order. */
    const char *keys[] = {"model", "model_version", "series_uid", "status", "reason",
                          "patient_score", "analysed", "positive", "timings", "findings",
                          "objects"};
    int k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, bo) {
        ASSERT(k < 11);
        ASSERT_STR_EQ(item->string, keys[k]);
        k++;
    }
    ASSERT_EQ(k, 11);
    cJSON_Delete(j);
    free(r.body);
    fixture_close(&f);
    return 0;
}
