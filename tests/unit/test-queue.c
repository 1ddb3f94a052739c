/* The durable job queue: versions, supersession, leases, retries and
 * recovery after a restart. */
#include <sqlite3.h>
#include <stdio.h>

#include "server/error.h"
#include "storage/index.h"
#include "storage/queue.h"
#include "tests/unit/test.h"

TEST_IMPL(queue_versions_supersede)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    int64_t id1, id2;
    int v1, v2;
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2", "bone-ct", "bone", 1000, &id1, &v1), 0);
    ASSERT_EQ(v1, 1);
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2", "bone-ct", "bone", 2000, &id2, &v2), 0);
    ASSERT_EQ(v2, 2);
    ASSERT_NE(id1, id2);
    int64_t depth = -1;
    ASSERT_EQ(vg_queue_depth(idx, &depth), 0);
    ASSERT_EQ(depth, 1); /* v1 superseded */
    vg_job_t job;
    ASSERT_EQ(vg_queue_lease(idx, "bone", "w0", 60000, 3000, &job), 0);
    ASSERT_EQ(job.id, id2);
    ASSERT_EQ(job.version, 2);
    ASSERT_EQ(job.attempts, 1);
    ASSERT_STR_EQ(job.series_uid, "1.2.3");
    ASSERT_STR_EQ(job.route, "bone-ct");
    /* Nothing else waits, and another model's queue is separate. */
    ASSERT_EQ(vg_queue_lease(idx, "bone", "w1", 60000, 3000, &job), VG_ENOTFOUND);
    ASSERT_EQ(vg_queue_push(idx, "1.2.4", "1.2", "breast", "breast", 3000, NULL, NULL), 0);
    ASSERT_EQ(vg_queue_lease(idx, "bone", "w1", 60000, 3000, &job), VG_ENOTFOUND);
    /* A new version while v2 runs supersedes it: its completion is refused. */
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2", "bone-ct", "bone", 4000, NULL, &v2), 0);
    ASSERT_EQ(v2, 3);
    ASSERT_EQ(vg_queue_done(idx, id2, 5000), VG_ENOTFOUND);
    ASSERT_EQ(vg_queue_lease(idx, "bone", "w0", 60000, 5000, &job), 0);
    ASSERT_EQ(job.version, 3);
    ASSERT_EQ(vg_queue_done(idx, job.id, 6000), 0);
    ASSERT_EQ(vg_queue_depth(idx, &depth), 0);
    ASSERT_EQ(depth, 1); /* the breast job */
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(queue_retry_and_fail)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2", "r", "m", 0, NULL, NULL), 0);
    vg_job_t job;
    for (int attempt = 1; attempt <= 3; attempt++) {
        ASSERT_EQ(vg_queue_lease(idx, "m", "w", 1000, attempt * 10, &job), 0);
        ASSERT_EQ(job.attempts, attempt);
        ASSERT_EQ(vg_queue_fail(idx, job.id, "model crashed", 3, attempt * 10 + 1), 0);
    }
    /* Three attempts used: failed for good, not leased again. */
    ASSERT_EQ(vg_queue_lease(idx, "m", "w", 1000, 100, &job), VG_ENOTFOUND);
    sqlite3_stmt *st;
    ASSERT_EQ(sqlite3_prepare_v2(vg_index_db(idx),
                                 "SELECT state, last_error FROM jobs", -1, &st, NULL), 0);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_STR_EQ((const char *)sqlite3_column_text(st, 0), "failed");
    ASSERT_STR_EQ((const char *)sqlite3_column_text(st, 1), "model crashed");
    sqlite3_finalize(st);
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(queue_lease_expiry_and_recover)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    ASSERT_EQ(vg_queue_push(idx, "1.2.3", "1.2", "r", "m", 0, NULL, NULL), 0);
    vg_job_t job;
    ASSERT_EQ(vg_queue_lease(idx, "m", "w0", 1000, 100, &job), 0);
    /* Still leased at 500; expired at 1200, so another worker takes it. */
    ASSERT_EQ(vg_queue_lease(idx, "m", "w1", 1000, 500, &job), VG_ENOTFOUND);
    ASSERT_EQ(vg_queue_lease(idx, "m", "w1", 1000, 1200, &job), 0);
    ASSERT_EQ(job.attempts, 2);
    vg_index_close(idx);
    /* A restart finds it running: back to queued. */
    idx = test_open_index();
    ASSERT_EQ(vg_queue_recover(idx), 1);
    ASSERT_EQ(vg_queue_lease(idx, "m", "w2", 1000, 1300, &job), 0);
    ASSERT_EQ(job.attempts, 3);
    vg_index_close(idx);
    return 0;
}
