/* Storing a result queues its DICOM objects in the outbox for each of
 * the route's destinations in the same transaction that completes the
 * job: a superseded job stores nothing and queues nothing, and storing
 * the same objects again queues no duplicate. */
#include <stdio.h>
#include <string.h>

#include "server/error.h"
#include "storage/index.h"
#include "storage/outbox.h"
#include "storage/queue.h"
#include "storage/results.h"
#include "tests/unit/test.h"

static int count(void *arg, const vg_outbox_entry_t *e)
{
    (void)e;
    ++*(int *)arg;
    return 0;
}

static void result_with_objects(vg_result_t *r, const vg_job_t *job)
{
    memset(r, 0, sizeof *r);
    r->job_id = job->id;
    snprintf(r->series_uid, sizeof r->series_uid, "%s", job->series_uid);
    snprintf(r->study_uid, sizeof r->study_uid, "%s", job->study_uid);
    snprintf(r->model, sizeof r->model, "bone");
    snprintf(r->model_version, sizeof r->model_version, "1.0");
    snprintf(r->status, sizeof r->status, "done");
    r->patient_score = 0.5;
    r->positive = 1;
    const char *sops[2] = {"1.2.9.1", "1.2.9.2"};
    for (int i = 0; i < 2; i++) {
        vg_result_object_t *o = &r->objects[i];
        snprintf(o->sop_uid, sizeof o->sop_uid, "%s", sops[i]);
        snprintf(o->sop_class_uid, sizeof o->sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.22");
        snprintf(o->series_uid, sizeof o->series_uid, "1.2.9.%d0", i);
        snprintf(o->relpath, sizeof o->relpath, "results/x/%d.dcm", i);
    }
    r->n_objects = 2;
    snprintf(r->destinations[0], sizeof r->destinations[0], "pacs");
    snprintf(r->destinations[1], sizeof r->destinations[1], "archive");
    r->n_destinations = 2;
}

TEST_IMPL(results_queue_objects_with_the_result)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_job_t job;
    ASSERT_EQ(vg_queue_push(idx, "1.2.3.1", "1.2.3", "bone-ct", "bone", 1000, NULL, NULL), 0);
    ASSERT_EQ(vg_queue_lease(idx, "bone", "w", 60000, 1000, &job), 0);
    vg_result_t r;
    result_with_objects(&r, &job);
    ASSERT_EQ(vg_results_put(idx, &r, 2000), 0);
    int n = 0;
    ASSERT_EQ(vg_outbox_list(idx, "queued", 100, count, &n), 0);
    ASSERT_EQ(n, 4); /* 2 objects x 2 destinations */
    vg_outbox_entry_t e[4];
    int got = 0;
    ASSERT_EQ(vg_outbox_lease(idx, "archive", 2000, e, 4, &got), 0);
    ASSERT_EQ(got, 2);
    ASSERT_STR_EQ(e[0].obj.study_uid, "1.2.3");
    ASSERT(e[0].obj.result_id > 0);
    ASSERT(strncmp(e[0].obj.path, "results/x/", 10) == 0);
    /* The same result stored again (re-analysis of the same objects)
     * queues no second copy. */
    ASSERT_EQ(vg_results_put_final(idx, &r, 3000), 0);
    n = 0;
    ASSERT_EQ(vg_outbox_list(idx, NULL, 100, count, &n), 0);
    ASSERT_EQ(n, 4);
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(results_superseded_job_queues_nothing)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_job_t job;
    ASSERT_EQ(vg_queue_push(idx, "1.2.3.1", "1.2.3", "bone-ct", "bone", 1000, NULL, NULL), 0);
    ASSERT_EQ(vg_queue_lease(idx, "bone", "w", 60000, 1000, &job), 0);
    /* More instances arrived: a new version supersedes the running job. */
    ASSERT_EQ(vg_queue_push(idx, "1.2.3.1", "1.2.3", "bone-ct", "bone", 1500, NULL, NULL), 0);
    vg_result_t r;
    result_with_objects(&r, &job);
    ASSERT_EQ(vg_results_put(idx, &r, 2000), VG_ENOTFOUND);
    int n = 0;
    ASSERT_EQ(vg_outbox_list(idx, NULL, 100, count, &n), 0);
    ASSERT_EQ(n, 0);
    vg_index_close(idx);
    return 0;
}
