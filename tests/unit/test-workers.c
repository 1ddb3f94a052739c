/* The workers table (storage/workers.h) and /healthz "models" built from
 * it: a row is written only by the process it names, an exit clears the
 * pid, a dead process's row reads "worker not running", and jobs that a
 * dead worker held are found as orphans. */
#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/api.h"
#include "server/error.h"
#include "storage/index.h"
#include "storage/queue.h"
#include "storage/workers.h"
#include "tests/unit/test.h"

static vg_worker_state_t row(const char *model, const char *device, int pid, int available,
                             const char *error)
{
    vg_worker_state_t ws;
    memset(&ws, 0, sizeof ws);
    snprintf(ws.name, sizeof ws.name, "%s@%s", model, device);
    snprintf(ws.model, sizeof ws.model, "%s", model);
    snprintf(ws.device, sizeof ws.device, "%s", device);
    ws.pid = pid;
    ws.available = available;
    snprintf(ws.error, sizeof ws.error, "%s", error);
    ws.updated_ms = 1000;
    return ws;
}

static int count_rows(void *arg, const vg_worker_state_t *ws)
{
    (void)ws;
    ++*(int *)arg;
    return 0;
}

/* A pid that no process has: a child that has exited and been reaped. */
static int dead_pid(void)
{
    pid_t p = fork();
    if (p == 0)
        _exit(0);
    waitpid(p, NULL, 0);
    return (int)p;
}

TEST_IMPL(workers_rows_owned_by_their_process)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    vg_worker_state_t ws = row("bone", "cpu", 0, 0, "starting"), got;
    ASSERT_EQ(vg_worker_state_put(idx, &ws), 0);
    /* A worker claims the row the node wrote, and updates it. */
    ws.pid = 4242;
    ws.jobs_done = 3;
    ASSERT_EQ(vg_worker_state_put(idx, &ws), 0);
    ws.available = 1;
    snprintf(ws.version, sizeof ws.version, "1.0");
    ASSERT_EQ(vg_worker_state_put(idx, &ws), 0);
    ASSERT_EQ(vg_worker_state_get(idx, "bone@cpu", &got), 0);
    ASSERT_EQ(got.pid, 4242);
    ASSERT_EQ(got.available, 1);
    ASSERT_EQ(got.jobs_done, 3);
    ASSERT_STR_EQ(got.version, "1.0");
    ASSERT_STR_EQ(got.device, "cpu");
    /* Another process cannot overwrite it ... */
    vg_worker_state_t other = row("bone", "cpu", 4343, 0, "late writer");
    ASSERT_EQ(vg_worker_state_put(idx, &other), VG_EBUSY);
    /* ... nor mark it exited; its own exit clears the pid. */
    ASSERT_EQ(vg_worker_state_exited(idx, "bone@cpu", 4343, 2000), 0);
    ASSERT_EQ(vg_worker_state_get(idx, "bone@cpu", &got), 0);
    ASSERT_EQ(got.pid, 4242);
    ASSERT_EQ(vg_worker_state_exited(idx, "bone@cpu", 4242, 2000), 0);
    ASSERT_EQ(vg_worker_state_get(idx, "bone@cpu", &got), 0);
    ASSERT_EQ(got.pid, 0);
    ASSERT_EQ(got.available, 0);
    ASSERT_EQ(got.jobs_done, 3);
    ASSERT_EQ(got.updated_ms, 2000);
    ASSERT_EQ(vg_worker_state_put(idx, &other), 0);
    ASSERT_EQ(vg_worker_state_get(idx, "nope@cpu", &got), VG_ENOTFOUND);
    int n = 0;
    ASSERT_EQ(vg_worker_state_each(idx, count_rows, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(vg_worker_state_clear(idx), 0);
    n = 0;
    ASSERT_EQ(vg_worker_state_each(idx, count_rows, &n), 0);
    ASSERT_EQ(n, 0);
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(workers_orphan_jobs)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    int64_t id;
    vg_job_t job;
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2", "bone-ct", "bone", 1000, &id, NULL), 0);
    ASSERT_EQ(vg_worker_state_orphan(idx, "bone@cpu", &job), VG_ENOTFOUND);
    ASSERT_EQ(vg_queue_lease(idx, "bone", "bone@cpu", 60000, 2000, &job), 0);
    /* Another worker's lease is not this one's orphan. */
    ASSERT_EQ(vg_worker_state_orphan(idx, "bone@cuda:0", &job), VG_ENOTFOUND);
    memset(&job, 0, sizeof job);
    ASSERT_EQ(vg_worker_state_orphan(idx, "bone@cpu", &job), 0);
    ASSERT_EQ(job.id, id);
    ASSERT_EQ(job.attempts, 1);
    ASSERT_STR_EQ(job.series_uid, "1.2.3");
    ASSERT_STR_EQ(job.model, "bone");
    ASSERT_EQ(vg_queue_fail(idx, id, "died", 3, 3000), 0);
    ASSERT_EQ(vg_worker_state_orphan(idx, "bone@cpu", &job), VG_ENOTFOUND);
    vg_index_close(idx);
    return 0;
}

static cJSON *healthz_models(vg_api_t *api)
{
    vg_http_request_t req = {"GET", "/healthz", "", "", 0};
    vg_http_reply_t r = {0};
    vg_api_handle(api, &req, &r);
    cJSON *j = r.status == 200 ? cJSON_Parse(r.body) : NULL;
    free(r.body);
    cJSON *m = cJSON_DetachItemFromObject(j, "models");
    cJSON_Delete(j);
    return m;
}

static cJSON *device(const cJSON *models, const char *model, int i)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(models, model);
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m, "devices"), i);
}

static const char *str(const cJSON *o, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
}

TEST_IMPL(workers_healthz_models)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    vg_api_t api = {.idx = idx, .accepting = 1, .ae_title = "VIGIL"};
    ASSERT_EQ(vg_api_init(&api), 0);
    /* No workers: no "models" at all. */
    ASSERT(healthz_models(&api) == NULL);

    /* bone on cpu: loaded, in a live process (this one); on cuda:0: its
     * process is gone although its row still says loaded; breast: alive
     * but its manifest is missing. */
    vg_worker_state_t a = row("bone", "cpu", (int)getpid(), 1, "");
    a.jobs_done = 5;
    a.jobs_failed = 1;
    snprintf(a.version, sizeof a.version, "2.1");
    vg_worker_state_t b = row("bone", "cuda:0", dead_pid(), 1, "");
    vg_worker_state_t c =
        row("breast", "cpu", (int)getpid(), 0, "/m/manifest.json: missing");
    ASSERT_EQ(vg_worker_state_put(idx, &a), 0);
    ASSERT_EQ(vg_worker_state_put(idx, &b), 0);
    ASSERT_EQ(vg_worker_state_put(idx, &c), 0);

    cJSON *m = healthz_models(&api);
    ASSERT(m != NULL);
    const cJSON *bone = cJSON_GetObjectItemCaseSensitive(m, "bone");
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bone, "available")));
    ASSERT_STR_EQ(str(bone, "version"), "2.1");
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(bone, "devices")), 2);
    const cJSON *d = device(m, "bone", 0);
    ASSERT_STR_EQ(str(d, "device"), "cpu");
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "available")));
    ASSERT(cJSON_GetObjectItemCaseSensitive(d, "error") == NULL);
    ASSERT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d, "jobs_done")), 5);
    ASSERT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d, "jobs_failed")), 1);
    d = device(m, "bone", 1);
    ASSERT_STR_EQ(str(d, "device"), "cuda:0");
    ASSERT(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(d, "available")));
    ASSERT_STR_EQ(str(d, "error"), "worker not running");
    const cJSON *breast = cJSON_GetObjectItemCaseSensitive(m, "breast");
    ASSERT(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(breast, "available")));
    ASSERT_STR_EQ(str(device(m, "breast", 0), "error"), "/m/manifest.json: missing");
    cJSON_Delete(m);

    /* The cpu worker exits: bone is no longer available anywhere. */
    ASSERT_EQ(vg_worker_state_exited(idx, "bone@cpu", (int)getpid(), 5000), 0);
    m = healthz_models(&api);
    ASSERT(m != NULL);
    bone = cJSON_GetObjectItemCaseSensitive(m, "bone");
    ASSERT(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(bone, "available")));
    ASSERT_STR_EQ(str(device(m, "bone", 0), "error"), "worker not running");
    cJSON_Delete(m);
    vg_api_close(&api);
    vg_index_close(idx);
    return 0;
}
