/* The workers table; see workers.h. */
#include "storage/workers.h"
#include "storage/index_int.h"
#include "storage/queue.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "server/error.h"

#define COLUMNS                                                                            \
    "name, model, device, pid, available, version, error, jobs_done, jobs_failed,"         \
    " updated_ms"


/* The current row of ST (selected as COLUMNS) into *ws. */
static void read_row(sqlite3_stmt *st, vg_worker_state_t *ws)
{
    memset(ws, 0, sizeof *ws);
    vg__sql_text(st, 0, ws->name, sizeof ws->name);
    vg__sql_text(st, 1, ws->model, sizeof ws->model);
    vg__sql_text(st, 2, ws->device, sizeof ws->device);
    ws->pid = sqlite3_column_int(st, 3);
    ws->available = sqlite3_column_int(st, 4);
    vg__sql_text(st, 5, ws->version, sizeof ws->version);
    vg__sql_text(st, 6, ws->error, sizeof ws->error);
    ws->jobs_done = sqlite3_column_int64(st, 7);
    ws->jobs_failed = sqlite3_column_int64(st, 8);
    ws->updated_ms = sqlite3_column_int64(st, 9);
}

int vg_worker_state_put(vg_index_t *idx, const vg_worker_state_t *ws)
{
    /* An upsert, not INSERT OR REPLACE: the row keeps its rowid, so the
     * API lists workers in the order the node first wrote them. */
    sqlite3_stmt *st =
        vg__sql_prep(vg_index_db(idx), "INSERT INTO workers(" COLUMNS ")"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                  " ON CONFLICT(name) DO UPDATE SET model = excluded.model,"
                  " device = excluded.device, pid = excluded.pid,"
                  " available = excluded.available,"
                  " version = excluded.version, error = excluded.error,"
                  " jobs_done = excluded.jobs_done,"
                  " jobs_failed = excluded.jobs_failed,"
                  " updated_ms = excluded.updated_ms"
                  " WHERE workers.pid IS NULL OR workers.pid = excluded.pid");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, ws->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ws->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, ws->device, -1, SQLITE_STATIC);
    if (ws->pid > 0)
        sqlite3_bind_int(st, 4, ws->pid);
    sqlite3_bind_int(st, 5, ws->available != 0);
    sqlite3_bind_text(st, 6, ws->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, ws->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, ws->jobs_done);
    sqlite3_bind_int64(st, 9, ws->jobs_failed);
    sqlite3_bind_int64(st, 10, ws->updated_ms);
    if (vg__sql_run1(st) < 0)
        return VG_EDB;
    return sqlite3_changes(vg_index_db(idx)) == 1 ? 0 : VG_EBUSY;
}

int vg_worker_state_get(vg_index_t *idx, const char *name, vg_worker_state_t *ws)
{
    sqlite3_stmt *st = vg__sql_prep(vg_index_db(idx), "SELECT " COLUMNS " FROM workers WHERE name = ?1");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_row(st, ws);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? VG_ENOTFOUND : VG_EDB;
}

int vg_worker_state_exited(vg_index_t *idx, const char *name, int pid, int64_t now_ms)
{
    sqlite3_stmt *st = vg__sql_prep(vg_index_db(idx), "UPDATE workers SET pid = NULL, available = 0,"
                                 " updated_ms = ?3 WHERE name = ?1"
                                 " AND (pid IS NULL OR pid = ?2)");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, pid);
    sqlite3_bind_int64(st, 3, now_ms);
    return vg__sql_run1(st);
}

int vg_worker_state_clear(vg_index_t *idx)
{
    return vg__sql_run1(vg__sql_prep(vg_index_db(idx), "DELETE FROM workers"));
}

int vg_worker_state_each(vg_index_t *idx, int (*fn)(void *arg, const vg_worker_state_t *st),
                         void *arg)
{
    sqlite3_stmt *st = vg__sql_prep(vg_index_db(idx), "SELECT " COLUMNS " FROM workers ORDER BY rowid");
    if (!st)
        return VG_EDB;
    int rc, ret = 0;
    vg_worker_state_t ws;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        read_row(st, &ws);
        if ((ret = fn(arg, &ws)) != 0)
            break;
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = VG_EDB;
    sqlite3_finalize(st);
    return ret;
}

int vg_worker_state_orphan(vg_index_t *idx, const char *name, vg_job_t *job)
{
    sqlite3_stmt *st = vg__sql_prep(vg_index_db(idx), "SELECT id, series_uid, study_uid, route, model, version,"
                                 " attempts FROM jobs WHERE state = 'running'"
                                 " AND lease_owner = ?1 ORDER BY id LIMIT 1");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        vg__queue_read_job(st, job);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? VG_ENOTFOUND : VG_EDB;
}
