/* Storing a result queues its DICOM objects in the outbox for each of
 * the route's destinations in the same transaction that completes the
 * job: a superseded job stores nothing and queues nothing, and storing
 * the same objects again queues no duplicate. */
#include <stdio.h>
#include <stdlib.h>
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

/* --- the breast model's assessments -------------------------------------- */

#include <sqlite3.h>

/* Rows of the assessments table of the result for SERIES, one line each:
 * "idx lat p1..p5 malignancy birads modalities clinical". */
static void assessment_rows(vg_index_t *idx, const char *series, char *out, size_t len)
{
    sqlite3_stmt *st;
    out[0] = '\0';
    if (sqlite3_prepare_v2(vg_index_db(idx),
            "SELECT a.idx, a.laterality, a.p1, a.p2, a.p3, a.p4, a.p5,"
            " a.malignancy_probability, a.birads, a.modalities_used, a.clinical_used"
            " FROM assessments a JOIN results r ON r.id = a.result_id"
            " WHERE r.series_uid = ?1 ORDER BY a.idx", -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, series, -1, SQLITE_STATIC);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < len)
        n += (size_t)snprintf(out + n, len - n, "%d %s %g %g %g %g %g %g %s %s %s\n",
                              sqlite3_column_int(st, 0), sqlite3_column_text(st, 1),
                              sqlite3_column_double(st, 2), sqlite3_column_double(st, 3),
                              sqlite3_column_double(st, 4), sqlite3_column_double(st, 5),
                              sqlite3_column_double(st, 6), sqlite3_column_double(st, 7),
                              sqlite3_column_text(st, 8), sqlite3_column_text(st, 9),
                              sqlite3_column_text(st, 10));
    sqlite3_finalize(st);
}

static void breast_result(vg_result_t *r, const vg_job_t *job, int n)
{
    memset(r, 0, sizeof *r);
    r->job_id = job->id;
    snprintf(r->series_uid, sizeof r->series_uid, "%s", job->series_uid);
    snprintf(r->study_uid, sizeof r->study_uid, "%s", job->study_uid);
    snprintf(r->model, sizeof r->model, "breast");
    snprintf(r->model_version, sizeof r->model_version, "0.1.0");
    snprintf(r->status, sizeof r->status, "done");
    r->patient_score = -1;
    r->positive = -1;
    r->assessments = calloc((size_t)n, sizeof *r->assessments);
    r->n_assessments = n;
    for (int i = 0; i < n; i++) {
        vg_assessment_t *a = &r->assessments[i];
        snprintf(a->laterality, sizeof a->laterality, "%s", i ? "R" : "L");
        const double p[5] = {0.5, 0.25, 0.125, 0.0625, 0.0625};
        memcpy(a->probabilities, p, sizeof p);
        a->malignancy_probability = 0.25 + i * 0.5;
        snprintf(a->birads, sizeof a->birads, "%s", i ? "4C" : "4B");
        snprintf(a->modalities_used, sizeof a->modalities_used, "MG_CC,MG_MLO%s",
                 i ? ",US_B1" : "");
        snprintf(a->clinical_used, sizeof a->clinical_used, "age,bmi");
    }
}

TEST_IMPL(results_assessments_round_trip)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_job_t job;
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2.3", "breast", "breast", 1000, NULL, NULL), 0);
    ASSERT_EQ(vg_queue_lease(idx, "breast", "w", 60000, 1000, &job), 0);
    vg_result_t r;
    breast_result(&r, &job, 2);
    ASSERT_EQ(vg_results_put(idx, &r, 2000), 0);
    vg_result_clear(&r);
    ASSERT(r.assessments == NULL && r.n_assessments == 0);
    char rows[1024];
    assessment_rows(idx, "1.2.3", rows, sizeof rows);
    ASSERT_STR_EQ(rows, "0 L 0.5 0.25 0.125 0.0625 0.0625 0.25 4B MG_CC,MG_MLO age,bmi\n"
                        "1 R 0.5 0.25 0.125 0.0625 0.0625 0.75 4C MG_CC,MG_MLO,US_B1 age,bmi\n");

    /* A new analysis replaces the result and its assessments. */
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2.3", "breast", "breast", 3000, NULL, NULL), 0);
    ASSERT_EQ(vg_queue_lease(idx, "breast", "w", 60000, 3000, &job), 0);
    breast_result(&r, &job, 1);
    r.assessments[0].laterality[0] = 'R';
    ASSERT_EQ(vg_results_put(idx, &r, 4000), 0);
    vg_result_clear(&r);
    assessment_rows(idx, "1.2.3", rows, sizeof rows);
    ASSERT_STR_EQ(rows, "0 R 0.5 0.25 0.125 0.0625 0.0625 0.25 4B MG_CC,MG_MLO age,bmi\n");

    /* A result without assessments (failed after the last attempt) leaves
     * none behind. */
    breast_result(&r, &job, 0);
    snprintf(r.status, sizeof r.status, "failed");
    ASSERT_EQ(vg_results_put_final(idx, &r, 5000), 0);
    vg_result_clear(&r);
    assessment_rows(idx, "1.2.3", rows, sizeof rows);
    ASSERT_STR_EQ(rows, "");
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(results_assessments_not_kept_when_superseded)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_job_t job;
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2.3", "breast", "breast", 1000, NULL, NULL), 0);
    ASSERT_EQ(vg_queue_lease(idx, "breast", "w", 60000, 1000, &job), 0);
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2.3", "breast", "breast", 1500, NULL, NULL), 0);
    vg_result_t r;
    breast_result(&r, &job, 2);
    ASSERT_EQ(vg_results_put(idx, &r, 2000), VG_ENOTFOUND);
    vg_result_clear(&r);
    char rows[256];
    assessment_rows(idx, "1.2.3", rows, sizeof rows);
    ASSERT_STR_EQ(rows, "");
    sqlite3_stmt *st;
    ASSERT_EQ(sqlite3_prepare_v2(vg_index_db(idx), "SELECT count(*) FROM assessments", -1,
                                 &st, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_EQ(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    vg_index_close(idx);
    return 0;
}
