/* The outbox's state machine on a real index: queued -> sending -> sent
 * (final) or back to queued with backoff, failed after max_attempts,
 * retry by hand, recovery of what a crash left "sending", one entry per
 * (SOP instance, destination), and an add inside the caller's
 * transaction. No network: the sender's tests send. */
#include <sqlite3.h>

#include "server/error.h"
#include "storage/index.h"
#include "storage/outbox.h"
#include "tests/unit/test.h"

#define T0 1795320600000LL
#define SEC 1000LL

static vg_outbox_object_t object(int n)
{
    vg_outbox_object_t o;
    memset(&o, 0, sizeof o);
    o.result_id = n;
    snprintf(o.study_uid, sizeof o.study_uid, "1.2.826.0.1.3680043.10.1");
    snprintf(o.series_uid, sizeof o.series_uid, "1.2.826.0.1.3680043.10.1.99");
    snprintf(o.sop_uid, sizeof o.sop_uid, "1.2.826.0.1.3680043.10.1.99.%d", n);
    snprintf(o.sop_class_uid, sizeof o.sop_class_uid, "1.2.840.10008.5.1.4.1.1.66.4");
    snprintf(o.path, sizeof o.path, "results/%d.dcm", n);
    return o;
}

static int64_t count_rows(vg_index_t *idx, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox WHERE %s", where);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(vg_index_db(idx), sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}

static const vg_outbox_policy_t policy3 = {10 * SEC, 600 * SEC, 3};

TEST_IMPL(outbox_add_once_per_destination)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_outbox_object_t a = object(1);
    ASSERT_EQ(vg_outbox_add(idx, &a, "pacs", T0), 0);
    ASSERT_EQ(vg_outbox_add(idx, &a, "pacs", T0 + 5 * SEC), 0); /* no-op */
    ASSERT_EQ(vg_outbox_add(idx, &a, "archive", T0), 0);
    ASSERT_EQ(count_rows(idx, "1"), 2);
    vg_outbox_entry_t e;
    ASSERT_EQ(vg_outbox_get(idx, 1, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    ASSERT_STR_EQ(e.destination, "pacs");
    ASSERT_STR_EQ(e.obj.sop_uid, a.sop_uid);
    ASSERT_STR_EQ(e.obj.sop_class_uid, a.sop_class_uid);
    ASSERT_STR_EQ(e.obj.series_uid, a.series_uid);
    ASSERT_STR_EQ(e.obj.path, "results/1.dcm");
    ASSERT_EQ(e.obj.result_id, 1);
    ASSERT_EQ(e.attempts, 0);
    ASSERT_EQ(e.next_attempt_ms, T0); /* the first add's time stands */
    ASSERT_EQ(e.created_ms, T0);
    ASSERT_EQ(e.sent_ms, 0);
    ASSERT_STR_EQ(e.last_error, "");
    /* Without a result row: result_id stays NULL. */
    vg_outbox_object_t b = object(2);
    b.result_id = 0;
    ASSERT_EQ(vg_outbox_add(idx, &b, "pacs", T0), 0);
    ASSERT_EQ(count_rows(idx, "result_id IS NULL"), 1);
    ASSERT_EQ(vg_outbox_get(idx, 99, &e), VG_ENOTFOUND);
    vg_index_close(idx);
    return 0;
}

/* The lead stores a result and queues its objects in one transaction. */
TEST_IMPL(outbox_add_joins_callers_transaction)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    sqlite3 *db = vg_index_db(idx);
    vg_outbox_object_t a = object(1), b = object(2);
    ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(vg_outbox_add(idx, &a, "pacs", T0), 0);
    ASSERT_EQ(vg_outbox_add(idx, &b, "pacs", T0), 0);
    ASSERT_EQ(sqlite3_get_autocommit(db), 0); /* still the caller's */
    ASSERT_EQ(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(count_rows(idx, "1"), 0);
    ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(vg_outbox_add(idx, &a, "pacs", T0), 0);
    ASSERT_EQ(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(count_rows(idx, "1"), 1);
    /* Outside a transaction it commits on its own. */
    ASSERT_EQ(vg_outbox_add(idx, &b, "pacs", T0), 0);
    ASSERT_EQ(sqlite3_get_autocommit(db), 1);
    ASSERT_EQ(count_rows(idx, "1"), 2);
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(outbox_lease_due_entries_of_one_destination)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    for (int i = 1; i <= 5; i++) {
        vg_outbox_object_t o = object(i);
        /* 1..4 due at T0 + (5 - i) s (newest first), 5 for "archive" */
        ASSERT_EQ(vg_outbox_add(idx, &o, i == 5 ? "archive" : "pacs", T0 + (5 - i) * SEC),
                  0);
    }
    char names[4][64];
    int n = -1;
    ASSERT_EQ(vg_outbox_due_destinations(idx, T0 + 1 * SEC, names, 4, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STR_EQ(names[0], "archive");
    ASSERT_STR_EQ(names[1], "pacs");
    ASSERT_EQ(vg_outbox_due_destinations(idx, T0 - 1, names, 4, &n), 0);
    ASSERT_EQ(n, 0);

    vg_outbox_entry_t e[8];
    /* At T0 + 2 s: entries 4 (due T0+1) and 3 (due T0+2), oldest due first. */
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 2 * SEC, e, 8, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(e[0].id, 4);
    ASSERT_EQ(e[1].id, 3);
    ASSERT_STR_EQ(e[0].state, "sending");
    ASSERT_EQ(count_rows(idx, "state = 'sending'"), 2);
    /* Taken entries are not taken twice; MAX bounds a lease. */
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 10 * SEC, e, 1, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(e[0].id, 2);
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 10 * SEC, e, 8, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(e[0].id, 1);
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 10 * SEC, e, 8, &n), 0);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(count_rows(idx, "state = 'queued'"), 1); /* archive's */
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(outbox_backoff_doubles_up_to_max)
{
    vg_outbox_policy_t p = {10 * SEC, 600 * SEC, 0};
    ASSERT_EQ(vg_outbox_backoff_ms(&p, 1), 10 * SEC);
    ASSERT_EQ(vg_outbox_backoff_ms(&p, 2), 20 * SEC);
    ASSERT_EQ(vg_outbox_backoff_ms(&p, 3), 40 * SEC);
    ASSERT_EQ(vg_outbox_backoff_ms(&p, 6), 320 * SEC);
    ASSERT_EQ(vg_outbox_backoff_ms(&p, 7), 600 * SEC);       /* 640 capped */
    ASSERT_EQ(vg_outbox_backoff_ms(&p, 1000000), 600 * SEC); /* no overflow */
    ASSERT_EQ(vg_outbox_backoff_ms(&p, 0), 10 * SEC);
    vg_outbox_policy_t same = {5 * SEC, 5 * SEC, 0};
    ASSERT_EQ(vg_outbox_backoff_ms(&same, 1), 5 * SEC);
    ASSERT_EQ(vg_outbox_backoff_ms(&same, 40), 5 * SEC);
    return 0;
}

/* Fails entry 1 once at NOW (leasing it first); its next due time goes
 * to *next. */
static int fail_once(vg_index_t *idx, int64_t now, const char *why, int64_t *next)
{
    vg_outbox_entry_t e;
    int n = 0;
    if (vg_outbox_lease(idx, "pacs", now, &e, 1, &n) < 0 || n != 1 || e.id != 1)
        return -1;
    return vg_outbox_mark_failed(idx, 1, why, &policy3, now, next);
}

TEST_IMPL(outbox_failures_back_off_then_fail)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_outbox_object_t o = object(1);
    ASSERT_EQ(vg_outbox_add(idx, &o, "pacs", T0), 0);
    /* Not sending: nothing to record. */
    ASSERT_EQ(vg_outbox_mark_failed(idx, 1, "x", &policy3, T0, NULL), VG_ENOTFOUND);

    int64_t next = 0;
    ASSERT_EQ(fail_once(idx, T0, "connection refused 127.0.0.1:4242", &next), 0);
    ASSERT_EQ(next, T0 + 10 * SEC);
    vg_outbox_entry_t e;
    ASSERT_EQ(vg_outbox_get(idx, 1, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    ASSERT_EQ(e.attempts, 1);
    ASSERT_EQ(e.next_attempt_ms, T0 + 10 * SEC);
    ASSERT_STR_EQ(e.last_error, "connection refused 127.0.0.1:4242");
    /* Not due before its time. */
    int n = -1;
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 10 * SEC - 1, &e, 1, &n), 0);
    ASSERT_EQ(n, 0);

    ASSERT_EQ(fail_once(idx, T0 + 10 * SEC, "status 0xA700 out of resources", &next), 0);
    ASSERT_EQ(next, T0 + 30 * SEC); /* + 20 s */
    ASSERT_EQ(fail_once(idx, T0 + 30 * SEC, "no C-STORE response", &next), 0);
    ASSERT_EQ(next, -1); /* the third of max_attempts = 3 */
    ASSERT_EQ(vg_outbox_get(idx, 1, &e), 0);
    ASSERT_STR_EQ(e.state, "failed");
    ASSERT_EQ(e.attempts, 3);
    ASSERT_STR_EQ(e.last_error, "no C-STORE response");
    /* Failed entries stay, and are not taken any more. */
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 100000 * SEC, &e, 1, &n), 0);
    ASSERT_EQ(n, 0);

    /* max_attempts = 0: never gives up. */
    vg_outbox_object_t o2 = object(2);
    vg_outbox_policy_t forever = {1 * SEC, 4 * SEC, 0};
    ASSERT_EQ(vg_outbox_add(idx, &o2, "pacs", T0), 0);
    int64_t now = T0;
    for (int i = 1; i <= 50; i++) {
        ASSERT_EQ(vg_outbox_lease(idx, "pacs", now, &e, 1, &n), 0);
        ASSERT_EQ(n, 1);
        ASSERT_EQ(vg_outbox_mark_failed(idx, e.id, "down", &forever, now, &next), 0);
        ASSERT_EQ(next, now + (i == 1 ? 1 : i == 2 ? 2 : 4) * SEC);
        now = next;
    }
    ASSERT_EQ(vg_outbox_get(idx, 2, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    ASSERT_EQ(e.attempts, 50);
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(outbox_sent_is_final)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_outbox_object_t o = object(1);
    ASSERT_EQ(vg_outbox_add(idx, &o, "pacs", T0), 0);
    ASSERT_EQ(vg_outbox_mark_sent(idx, 1, T0), VG_ENOTFOUND); /* not sending */
    vg_outbox_entry_t e;
    int n = 0;
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0, &e, 1, &n), 0);
    ASSERT_EQ(vg_outbox_mark_sent(idx, 1, T0 + 3 * SEC), 0);
    ASSERT_EQ(vg_outbox_get(idx, 1, &e), 0);
    ASSERT_STR_EQ(e.state, "sent");
    ASSERT_EQ(e.sent_ms, T0 + 3 * SEC);
    ASSERT_EQ(e.attempts, 1);
    /* Nothing moves it again: not a failure, not a recovery, not a retry,
     * not an add of the same object. */
    ASSERT_EQ(vg_outbox_mark_failed(idx, 1, "late", &policy3, T0, NULL), VG_ENOTFOUND);
    ASSERT_EQ(vg_outbox_mark_sent(idx, 1, T0 + 9 * SEC), VG_ENOTFOUND);
    ASSERT_EQ(vg_outbox_release(idx, 1), VG_ENOTFOUND);
    ASSERT_EQ(vg_outbox_recover(idx), 0);
    memset(&e, 0, sizeof e);
    ASSERT_EQ(vg_outbox_retry(idx, 1, T0 + 10 * SEC, &e), VG_EBUSY);
    ASSERT_STR_EQ(e.state, "sent"); /* filled for the caller's message */
    ASSERT_EQ(vg_outbox_add(idx, &o, "pacs", T0 + 20 * SEC), 0);
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 100 * SEC, &e, 1, &n), 0);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(vg_outbox_get(idx, 1, &e), 0);
    ASSERT_STR_EQ(e.state, "sent");
    ASSERT_EQ(e.sent_ms, T0 + 3 * SEC);
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(outbox_retry_by_hand)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_outbox_object_t o = object(1);
    ASSERT_EQ(vg_outbox_add(idx, &o, "pacs", T0), 0);
    int64_t next;
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(fail_once(idx, T0 + i * 100 * SEC, "refused", &next), 0);
    ASSERT_EQ(next, -1);
    vg_outbox_entry_t e;
    /* failed -> queued, due now, attempts from 0 again, error kept. */
    ASSERT_EQ(vg_outbox_retry(idx, 1, T0 + 1000 * SEC, &e), 0);
    ASSERT_STR_EQ(e.state, "queued");
    ASSERT_EQ(e.attempts, 0);
    ASSERT_EQ(e.next_attempt_ms, T0 + 1000 * SEC);
    ASSERT_STR_EQ(e.last_error, "refused");
    int n = 0;
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0 + 1000 * SEC, &e, 1, &n), 0);
    ASSERT_EQ(n, 1);
    /* sending: left alone. */
    ASSERT_EQ(vg_outbox_retry(idx, 1, T0 + 1001 * SEC, &e), VG_EBUSY);
    ASSERT_STR_EQ(e.state, "sending");
    /* queued but waiting for its backoff: due now. */
    ASSERT_EQ(vg_outbox_mark_failed(idx, 1, "again", &policy3, T0 + 1000 * SEC, &next), 0);
    ASSERT_EQ(next, T0 + 1010 * SEC);
    ASSERT_EQ(vg_outbox_retry(idx, 1, T0 + 1001 * SEC, NULL), 0);
    ASSERT_EQ(vg_outbox_get(idx, 1, &e), 0);
    ASSERT_EQ(e.next_attempt_ms, T0 + 1001 * SEC);
    ASSERT_EQ(e.attempts, 0);
    ASSERT_EQ(vg_outbox_retry(idx, 42, T0, &e), VG_ENOTFOUND);
    vg_index_close(idx);
    return 0;
}

/* What a crash left "sending" was not acknowledged: queued again. */
TEST_IMPL(outbox_recover_and_release)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    for (int i = 1; i <= 3; i++) {
        vg_outbox_object_t o = object(i);
        ASSERT_EQ(vg_outbox_add(idx, &o, "pacs", T0), 0);
    }
    vg_outbox_entry_t e[3];
    int n = 0;
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0, e, 3, &n), 0);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(vg_outbox_mark_sent(idx, 1, T0), 0);
    ASSERT_EQ(vg_outbox_release(idx, 2), 0); /* not tried: no attempt */
    ASSERT_EQ(vg_outbox_get(idx, 2, &e[0]), 0);
    ASSERT_STR_EQ(e[0].state, "queued");
    ASSERT_EQ(e[0].attempts, 0);
    ASSERT_EQ(vg_outbox_release(idx, 2), VG_ENOTFOUND);
    vg_index_close(idx);

    /* "Restart": a new connection, entry 3 still sending. */
    idx = test_open_index();
    ASSERT(idx != NULL);
    ASSERT_EQ(count_rows(idx, "state = 'sending'"), 1);
    ASSERT_EQ(vg_outbox_recover(idx), 1);
    ASSERT_EQ(vg_outbox_recover(idx), 0);
    ASSERT_EQ(vg_outbox_get(idx, 3, &e[0]), 0);
    ASSERT_STR_EQ(e[0].state, "queued");
    ASSERT_EQ(e[0].attempts, 0);
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0, e, 3, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(e[0].id, 2);
    ASSERT_EQ(e[1].id, 3);
    vg_index_close(idx);
    return 0;
}

typedef struct {
    int64_t ids[16];
    int n;
} seen_t;

static int collect(void *arg, const vg_outbox_entry_t *e)
{
    seen_t *s = arg;
    s->ids[s->n++] = e->id;
    return s->n == 16;
}

TEST_IMPL(outbox_list_and_counts)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    for (int i = 1; i <= 4; i++) {
        vg_outbox_object_t o = object(i);
        ASSERT_EQ(vg_outbox_add(idx, &o, "pacs", T0), 0);
    }
    vg_outbox_entry_t e[2];
    int n = 0;
    ASSERT_EQ(vg_outbox_lease(idx, "pacs", T0, e, 2, &n), 0); /* 1, 2 */
    ASSERT_EQ(vg_outbox_mark_sent(idx, 1, T0), 0);
    vg_outbox_policy_t once = {SEC, SEC, 1};
    ASSERT_EQ(vg_outbox_mark_failed(idx, 2, "refused", &once, T0, NULL), 0);
    int64_t c[VG_OUTBOX_NSTATES];
    ASSERT_EQ(vg_outbox_counts(idx, c), 0);
    ASSERT_EQ(c[VG_OUTBOX_QUEUED], 2);
    ASSERT_EQ(c[VG_OUTBOX_SENDING], 0);
    ASSERT_EQ(c[VG_OUTBOX_SENT], 1);
    ASSERT_EQ(c[VG_OUTBOX_FAILED], 1);
    ASSERT_STR_EQ(vg_outbox_state_names[VG_OUTBOX_FAILED], "failed");

    seen_t s = {{0}, 0};
    ASSERT_EQ(vg_outbox_list(idx, NULL, 100, collect, &s), 0);
    ASSERT_EQ(s.n, 4);
    ASSERT_EQ(s.ids[0], 4); /* newest first */
    ASSERT_EQ(s.ids[3], 1);
    s.n = 0;
    ASSERT_EQ(vg_outbox_list(idx, "failed", 100, collect, &s), 0);
    ASSERT_EQ(s.n, 1);
    ASSERT_EQ(s.ids[0], 2);
    s.n = 0;
    ASSERT_EQ(vg_outbox_list(idx, "queued", 1, collect, &s), 0);
    ASSERT_EQ(s.n, 1);
    ASSERT_EQ(s.ids[0], 4);
    vg_index_close(idx);
    return 0;
}

/* An index of schema 3 (before the outbox) gains the table on open. */
TEST_IMPL(outbox_migration_from_schema_3)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    sqlite3 *db = vg_index_db(idx);
    ASSERT_EQ(
        sqlite3_exec(db, "DROP TABLE outbox; PRAGMA user_version = 3", NULL, NULL, NULL),
        SQLITE_OK);
    vg_index_close(idx);
    idx = test_open_index();
    ASSERT(idx != NULL);
    vg_outbox_object_t o = object(1);
    ASSERT_EQ(vg_outbox_add(idx, &o, "pacs", T0), 0);
    ASSERT_EQ(count_rows(idx, "1"), 1);
    sqlite3_stmt *st;
    ASSERT_EQ(sqlite3_prepare_v2(vg_index_db(idx), "PRAGMA user_version", -1, &st, NULL),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_EQ(sqlite3_column_int(st, 0), VG_INDEX_SCHEMA_VERSION);
    ASSERT_EQ(VG_INDEX_SCHEMA_VERSION, 5);
    sqlite3_finalize(st);
    vg_index_close(idx);
    return 0;
}
