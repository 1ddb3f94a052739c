/* The durable outbox; see outbox.h. Every state change is one statement
 * (or one transaction) on the caller's connection and is guarded by the
 * state it expects, so an entry is never both sent and queued, and a
 * "sent" entry never changes again. */
#include "storage/outbox.h"
#include "storage/index_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "server/error.h"

const char *const vg_outbox_state_names[VG_OUTBOX_NSTATES] = {
    [VG_OUTBOX_QUEUED] = "queued",
    [VG_OUTBOX_SENDING] = "sending",
    [VG_OUTBOX_SENT] = "sent",
    [VG_OUTBOX_FAILED] = "failed",
};

/* The columns every entry query returns, in vg__outbox_read()'s order. */
#define ENTRY_COLS                                                                         \
    "id, result_id, study_uid, series_uid, sop_uid, sop_class_uid, path,"                  \
    " destination, state, attempts, next_attempt_ms, created_ms, sent_ms,"                 \
    " last_error"

static void read_entry(sqlite3_stmt *st, vg_outbox_entry_t *e)
{
    memset(e, 0, sizeof *e);
    e->id = sqlite3_column_int64(st, 0);
    e->obj.result_id = sqlite3_column_int64(st, 1); /* NULL reads as 0 */
    vg__sql_text(st, 2, e->obj.study_uid, sizeof e->obj.study_uid);
    vg__sql_text(st, 3, e->obj.series_uid, sizeof e->obj.series_uid);
    vg__sql_text(st, 4, e->obj.sop_uid, sizeof e->obj.sop_uid);
    vg__sql_text(st, 5, e->obj.sop_class_uid, sizeof e->obj.sop_class_uid);
    vg__sql_text(st, 6, e->obj.path, sizeof e->obj.path);
    vg__sql_text(st, 7, e->destination, sizeof e->destination);
    vg__sql_text(st, 8, e->state, sizeof e->state);
    e->attempts = sqlite3_column_int(st, 9);
    e->next_attempt_ms = sqlite3_column_int64(st, 10);
    e->created_ms = sqlite3_column_int64(st, 11);
    e->sent_ms = sqlite3_column_int64(st, 12);
    vg__sql_text(st, 13, e->last_error, sizeof e->last_error);
}

/* Runs the UPDATE ST (bound) and says whether it changed exactly one row:
 * 0, VG_ENOTFOUND or VG_EDB. */
static int update_one(sqlite3 *db, sqlite3_stmt *st)
{
    if (vg__sql_run1(st) < 0)
        return VG_EDB;
    return sqlite3_changes(db) == 1 ? 0 : VG_ENOTFOUND;
}

int vg_outbox_add(vg_index_t *idx, const vg_outbox_object_t *obj, const char *destination,
                  int64_t now_ms)
{
    /* One statement: atomic by itself, and part of the caller's
     * transaction when one is open. */
    sqlite3_stmt *st = vg__sql_prep(
        vg_index_db(idx),
        "INSERT INTO outbox(result_id, study_uid, series_uid, sop_uid,"
        " sop_class_uid, path, destination, state, next_attempt_ms, created_ms)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8)"
        " ON CONFLICT(sop_uid, destination) DO NOTHING");
    if (!st)
        return VG_EDB;
    if (obj->result_id > 0)
        sqlite3_bind_int64(st, 1, obj->result_id);
    sqlite3_bind_text(st, 2, obj->study_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, obj->series_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, obj->sop_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, obj->sop_class_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, obj->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, destination, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, now_ms);
    return vg__sql_run1(st);
}

int vg_outbox_due_destinations(vg_index_t *idx, int64_t now_ms, char (*names)[64], int max,
                               int *n)
{
    *n = 0;
    sqlite3_stmt *st = vg__sql_prep(
        vg_index_db(idx), "SELECT DISTINCT destination FROM outbox WHERE state = 'queued'"
                          " AND next_attempt_ms <= ?1 ORDER BY destination");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, now_ms);
    int rc = SQLITE_DONE;
    while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
        vg__sql_text(st, 0, names[(*n)++], 64);
    int ret = *n == max || rc == SQLITE_DONE ? 0 : VG_EDB;
    sqlite3_finalize(st);
    return ret;
}

/* 1 when A is due before B (ties: the older entry first). */
static int due_before(const vg_outbox_entry_t *a, const vg_outbox_entry_t *b)
{
    return a->next_attempt_ms < b->next_attempt_ms ||
           (a->next_attempt_ms == b->next_attempt_ms && a->id < b->id);
}

int vg_outbox_lease(vg_index_t *idx, const char *destination, int64_t now_ms,
                    vg_outbox_entry_t *out, int max, int *n)
{
    *n = 0;
    if (max <= 0)
        return 0;
    /* One statement, so one transaction: SQLite makes every change of an
     * UPDATE ... RETURNING at its first step, before any row is read. */
    sqlite3_stmt *st = vg__sql_prep(
        vg_index_db(idx),
        "UPDATE outbox SET state = 'sending' WHERE id IN (SELECT id FROM outbox"
        " WHERE destination = ?1 AND state = 'queued' AND next_attempt_ms <= ?2"
        " ORDER BY next_attempt_ms, id LIMIT ?3) RETURNING " ENTRY_COLS);
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, destination, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_int(st, 3, max);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max)
        read_entry(st, &out[(*n)++]);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        *n = 0; /* a failed statement changed nothing */
        return VG_EDB;
    }
    /* RETURNING's order is unspecified: oldest due first. */
    for (int i = 1; i < *n; i++)
        for (int j = i; j > 0 && due_before(&out[j], &out[j - 1]); j--) {
            vg_outbox_entry_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return 0;
}

int vg_outbox_mark_sent(vg_index_t *idx, int64_t id, int64_t now_ms)
{
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = vg__sql_prep(
        db, "UPDATE outbox SET state = 'sent', sent_ms = ?2, attempts = attempts + 1,"
            " last_error = NULL WHERE id = ?1 AND state = 'sending'");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    return update_one(db, st);
}

int64_t vg_outbox_backoff_ms(const vg_outbox_policy_t *p, int attempts)
{
    int64_t wait = p->retry_initial_ms > 0 ? p->retry_initial_ms : 1;
    for (int i = 1; i < attempts && wait < p->retry_max_ms; i++)
        wait *= 2; /* stops at max, far below overflow */
    return wait < p->retry_max_ms ? wait : p->retry_max_ms;
}

int vg_outbox_mark_failed(vg_index_t *idx, int64_t id, const char *error,
                          const vg_outbox_policy_t *p, int64_t now_ms, int64_t *next_ms)
{
    vg_outbox_entry_t e;
    int rc = vg_outbox_get(idx, id, &e);
    if (rc < 0)
        return rc;
    if (strcmp(e.state, "sending") != 0)
        return VG_ENOTFOUND;
    int attempts = e.attempts + 1;
    int give_up = p->max_attempts > 0 && attempts >= p->max_attempts;
    int64_t next = give_up ? -1 : now_ms + vg_outbox_backoff_ms(p, attempts);
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = vg__sql_prep(
        db, "UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4,"
            " next_attempt_ms = CASE WHEN ?5 < 0 THEN next_attempt_ms ELSE ?5 END"
            " WHERE id = ?1 AND state = 'sending'");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, give_up ? "failed" : "queued", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, attempts);
    sqlite3_bind_text(st, 4, error ? error : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, next);
    rc = update_one(db, st);
    if (rc == 0 && next_ms)
        *next_ms = next;
    return rc;
}

int vg_outbox_release(vg_index_t *idx, int64_t id)
{
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = vg__sql_prep(db, "UPDATE outbox SET state = 'queued'"
                                        " WHERE id = ?1 AND state = 'sending'");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    return update_one(db, st);
}

int vg_outbox_retry(vg_index_t *idx, int64_t id, int64_t now_ms, vg_outbox_entry_t *out)
{
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = vg__sql_prep(
        db, "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_ms = ?2"
            " WHERE id = ?1 AND state IN ('queued', 'failed')");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    int changed = update_one(db, st);
    if (changed == VG_EDB)
        return VG_EDB;
    vg_outbox_entry_t e;
    int rc = vg_outbox_get(idx, id, &e);
    if (rc < 0)
        return rc; /* VG_ENOTFOUND: no such entry */
    if (out)
        *out = e;
    return changed == 0 ? 0 : VG_EBUSY;
}

int vg_outbox_recover(vg_index_t *idx)
{
    sqlite3 *db = vg_index_db(idx);
    if (sqlite3_exec(db, "UPDATE outbox SET state = 'queued' WHERE state = 'sending'", NULL,
                     NULL, NULL) != SQLITE_OK)
        return VG_EDB;
    return sqlite3_changes(db);
}

int vg_outbox_get(vg_index_t *idx, int64_t id, vg_outbox_entry_t *out)
{
    sqlite3_stmt *st =
        vg__sql_prep(vg_index_db(idx), "SELECT " ENTRY_COLS " FROM outbox WHERE id = ?1");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_entry(st, out);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? VG_ENOTFOUND : VG_EDB;
}

int vg_outbox_list(vg_index_t *idx, const char *state, int limit,
                   int (*fn)(void *arg, const vg_outbox_entry_t *e), void *arg)
{
    sqlite3_stmt *st = vg__sql_prep(
        vg_index_db(idx), "SELECT " ENTRY_COLS " FROM outbox WHERE ?1 IS NULL OR state = ?1"
                          " ORDER BY id DESC LIMIT ?2");
    if (!st)
        return VG_EDB;
    if (state)
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit);
    vg_outbox_entry_t e;
    int rc = 0, s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        read_entry(st, &e);
        if ((rc = fn(arg, &e)) != 0)
            break;
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = VG_EDB;
    sqlite3_finalize(st);
    return rc;
}

int vg_outbox_counts(vg_index_t *idx, int64_t counts[VG_OUTBOX_NSTATES])
{
    memset(counts, 0, sizeof *counts * VG_OUTBOX_NSTATES);
    sqlite3_stmt *st =
        vg__sql_prep(vg_index_db(idx), "SELECT state, count(*) FROM outbox GROUP BY state");
    if (!st)
        return VG_EDB;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        for (int i = 0; name && i < VG_OUTBOX_NSTATES; i++)
            if (strcmp(name, vg_outbox_state_names[i]) == 0)
                counts[i] = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return s == SQLITE_DONE ? 0 : VG_EDB;
}
