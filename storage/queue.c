/* The durable job queue; see queue.h. Each operation is one transaction
 * on the caller's connection, so two workers never lease the same job. */
#include "storage/queue.h"
#include "storage/index_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "server/error.h"

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : VG_EDB;
}


int vg_queue_push(vg_index_t *idx, const char *series_uid, const char *study_uid,
                  const char *route, const char *model, int64_t now_ms, int64_t *id,
                  int *version)
{
    sqlite3 *db = vg_index_db(idx);
    /* Joins the caller's transaction when there is one (grouping completes
     * a series and queues its jobs atomically). */
    int own = sqlite3_get_autocommit(db);
    if (own && exec(db, "BEGIN IMMEDIATE") < 0)
        return VG_EDB;
    sqlite3_stmt *st = vg__sql_prep(db, "UPDATE jobs SET state = 'superseded', updated_ms = ?3,"
                                " lease_owner = NULL, lease_until_ms = NULL"
                                " WHERE series_uid = ?1 AND route = ?2"
                                " AND state IN ('queued', 'running')");
    if (st) {
        sqlite3_bind_text(st, 1, series_uid, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, route, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now_ms);
    }
    if (vg__sql_run1(st) < 0)
        goto fail;
    st = vg__sql_prep(db, "INSERT INTO jobs(series_uid, study_uid, route, model, version, state,"
                  " created_ms, updated_ms)"
                  " SELECT ?1, ?2, ?3, ?4, COALESCE(MAX(version), 0) + 1, 'queued', ?5, ?5"
                  " FROM jobs WHERE series_uid = ?1 AND route = ?3"
                  " RETURNING id, version");
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, series_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, study_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, route, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now_ms);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        goto fail;
    }
    if (id)
        *id = sqlite3_column_int64(st, 0);
    if (version)
        *version = sqlite3_column_int(st, 1);
    sqlite3_finalize(st);
    return own ? exec(db, "COMMIT") : 0;
fail:
    if (own)
        exec(db, "ROLLBACK");
    return VG_EDB;
}

int vg_queue_requeue_study(vg_index_t *idx, const char *study_uid, int64_t now_ms, int *n)
{
    sqlite3 *db = vg_index_db(idx);
    int own = sqlite3_get_autocommit(db), count = 0, rc = 0, s = SQLITE_DONE;
    if (own && exec(db, "BEGIN IMMEDIATE") < 0)
        return VG_EDB;
    sqlite3_stmt *st = vg__sql_prep(db,
        "SELECT route, model FROM jobs j WHERE series_uid = ?1 AND study_uid = ?1"
        " AND state IN ('running', 'done', 'failed') AND version ="
        " (SELECT MAX(version) FROM jobs k WHERE k.series_uid = ?1 AND k.route = j.route)"
        " ORDER BY route");
    if (!st)
        rc = VG_EDB;
    else
        sqlite3_bind_text(st, 1, study_uid, -1, SQLITE_STATIC);
    /* At most one row per route; pushing while the SELECT is open would
     * modify the table it reads, so the rows are taken first. */
    char routes[16][64], models[16][64];
    int k = 0;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW && k < 16) {
        vg__sql_text(st, 0, routes[k], sizeof routes[k]);
        vg__sql_text(st, 1, models[k], sizeof models[k]);
        k++;
    }
    if (rc == 0 && s != SQLITE_DONE && s != SQLITE_ROW)
        rc = VG_EDB;
    sqlite3_finalize(st);
    for (int i = 0; rc == 0 && i < k; i++, count++)
        rc = vg_queue_push(idx, study_uid, study_uid, routes[i], models[i], now_ms, NULL,
                           NULL);
    if (own && rc == 0)
        rc = exec(db, "COMMIT");
    if (own && rc < 0)
        exec(db, "ROLLBACK");
    if (n)
        *n = rc == 0 ? count : 0;
    return rc < 0 ? VG_EDB : 0;
}

int vg_queue_lease(vg_index_t *idx, const char *model, const char *worker,
                   int64_t lease_ms, int64_t now_ms, vg_job_t *job)
{
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = vg__sql_prep(db,
        "UPDATE jobs SET state = 'running', attempts = attempts + 1,"
        " lease_owner = ?2, lease_until_ms = ?3 + ?4, updated_ms = ?3"
        " WHERE id = (SELECT id FROM jobs WHERE model = ?1 AND (state = 'queued'"
        "  OR (state = 'running' AND lease_until_ms < ?3)) ORDER BY id LIMIT 1)"
        " RETURNING id, series_uid, study_uid, route, model, version, attempts");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, worker, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms);
    sqlite3_bind_int64(st, 4, lease_ms);
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? VG_ENOTFOUND : VG_EDB;
    if (rc == SQLITE_ROW)
        vg__queue_read_job(st, job);
    sqlite3_finalize(st);
    return ret;
}

void vg__queue_read_job(sqlite3_stmt *st, vg_job_t *job)
{
    memset(job, 0, sizeof *job);
    job->id = sqlite3_column_int64(st, 0);
    vg__sql_text(st, 1, job->series_uid, sizeof job->series_uid);
    vg__sql_text(st, 2, job->study_uid, sizeof job->study_uid);
    vg__sql_text(st, 3, job->route, sizeof job->route);
    vg__sql_text(st, 4, job->model, sizeof job->model);
    job->version = sqlite3_column_int(st, 5);
    job->attempts = sqlite3_column_int(st, 6);
}

int vg_queue_done(vg_index_t *idx, int64_t id, int64_t now_ms)
{
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = vg__sql_prep(db, "UPDATE jobs SET state = 'done', updated_ms = ?2,"
                                " lease_owner = NULL, lease_until_ms = NULL"
                                " WHERE id = ?1 AND state = 'running'");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    if (vg__sql_run1(st) < 0)
        return VG_EDB;
    return sqlite3_changes(db) == 1 ? 0 : VG_ENOTFOUND;
}

int vg_queue_fail(vg_index_t *idx, int64_t id, const char *error, int max_attempts,
                  int64_t now_ms)
{
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = vg__sql_prep(db,
        "UPDATE jobs SET state = CASE WHEN attempts < ?3 THEN 'queued' ELSE 'failed' END,"
        " last_error = ?2, updated_ms = ?4, lease_owner = NULL, lease_until_ms = NULL"
        " WHERE id = ?1 AND state = 'running'");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, error, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, max_attempts);
    sqlite3_bind_int64(st, 4, now_ms);
    if (vg__sql_run1(st) < 0)
        return VG_EDB;
    return sqlite3_changes(db) == 1 ? 0 : VG_ENOTFOUND;
}

int vg_queue_recover(vg_index_t *idx)
{
    sqlite3 *db = vg_index_db(idx);
    if (exec(db, "UPDATE jobs SET state = 'queued', lease_owner = NULL,"
                 " lease_until_ms = NULL WHERE state = 'running'") < 0)
        return VG_EDB;
    return sqlite3_changes(db);
}

int vg_queue_depth(vg_index_t *idx, int64_t *depth)
{
    sqlite3_stmt *st = vg__sql_prep(vg_index_db(idx), "SELECT count(*) FROM jobs"
                                              " WHERE state IN ('queued', 'running')");
    if (!st)
        return VG_EDB;
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : VG_EDB;
    if (rc == 0)
        *depth = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc;
}
