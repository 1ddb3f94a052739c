/* Series/study completion and routing; see grouping.h. */
#include "storage/grouping.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "server/error.h"
#include "server/log.h"
#include "storage/queue.h"

int vg_route_takes(const vg_route_cfg_t *route, const char *modality, int instances,
                   double slice_thickness, char *why, size_t whylen)
{
    if (strcmp(route->modality, modality) != 0) {
        snprintf(why, whylen, "route %s takes %s, not %s", route->name, route->modality,
                 modality[0] ? modality : "(no modality)");
        return 0;
    }
    if (instances < route->min_slices) {
        snprintf(why, whylen, "route %s needs at least %d slices, series has %d",
                 route->name, route->min_slices, instances);
        return 0;
    }
    if (route->max_slice_thickness > 0 &&
        (slice_thickness <= 0 || slice_thickness > route->max_slice_thickness)) {
        if (slice_thickness <= 0)
            snprintf(why, whylen, "route %s needs slice thickness <= %g mm, series has"
                     " none", route->name, route->max_slice_thickness);
        else
            snprintf(why, whylen, "route %s needs slice thickness <= %g mm, series has"
                     " %g mm", route->name, route->max_slice_thickness, slice_thickness);
        return 0;
    }
    return 1;
}

typedef struct {
    char series_uid[65], study_uid[65], modality[17];
    double thickness;
    int instances;
} due_series_t;

static int set_route_state(sqlite3 *db, const char *series_uid, const char *state,
                           const char *reason)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE series SET route_state = ?2, route_reason = ?3"
                               " WHERE series_uid = ?1", -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_bind_text(st, 1, series_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VG_EDB;
    sqlite3_finalize(st);
    return rc;
}

/* Routes the completed series S inside the caller's transaction. */
static int route_series(vg_index_t *idx, const vg_config_t *cfg, const due_series_t *s,
                        int64_t now_ms, vg_grouping_result_t *res)
{
    char why[256] = "no route configured", taken[256] = "";
    int queued = 0;
    for (int i = 0; i < cfg->n_routes; i++) {
        const vg_route_cfg_t *r = &cfg->routes[i];
        if (!vg_route_takes(r, s->modality, s->instances, s->thickness, why, sizeof why))
            continue;
        int version = 0;
        if (vg_queue_push(idx, s->series_uid, s->study_uid, r->name, r->model, now_ms,
                          NULL, &version) < 0)
            return VG_EDB;
        size_t n = strlen(taken);
        snprintf(taken + n, sizeof taken - n, "%s%s v%d", n ? ", " : "", r->name, version);
        queued++;
    }
    if (queued) {
        res->jobs_queued += queued;
        vg_log(VG_LOG_INFO, "series %s complete (%d instances): queued %s", s->series_uid,
               s->instances, taken);
        return set_route_state(vg_index_db(idx), s->series_uid, "queued", taken);
    }
    res->series_skipped++;
    vg_log(VG_LOG_INFO, "series %s complete (%d instances): skipped, %s", s->series_uid,
           s->instances, why);
    return set_route_state(vg_index_db(idx), s->series_uid, "skipped", why);
}

/* Completes one series if it is still due (an instance may have arrived
 * since it was selected) and routes it, atomically. */
static int complete_series(vg_index_t *idx, const vg_config_t *cfg,
                           const due_series_t *s, int64_t cutoff, int64_t now_ms,
                           vg_grouping_result_t *res)
{
    sqlite3 *db = vg_index_db(idx);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_stmt *st = NULL;
    int rc = VG_EDB;
    if (sqlite3_prepare_v2(db, "UPDATE series SET state = 'complete', completed_ms = ?3"
                               " WHERE series_uid = ?1 AND state = 'receiving'"
                               " AND last_received_ms <= ?2", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, s->series_uid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, cutoff);
        sqlite3_bind_int64(st, 3, now_ms);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VG_EDB;
    }
    sqlite3_finalize(st);
    if (rc == 0 && sqlite3_changes(db) == 1) {
        res->series_completed++;
        rc = route_series(idx, cfg, s, now_ms, res);
    }
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return VG_EDB;
}

static int complete_due_series(vg_index_t *idx, const vg_config_t *cfg, int64_t now_ms,
                               vg_grouping_result_t *res)
{
    int64_t cutoff = now_ms - (int64_t)cfg->storage.series_quiet_seconds * 1000;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(vg_index_db(idx),
            "SELECT s.series_uid, s.study_uid, s.modality, COALESCE(s.slice_thickness, 0),"
            " (SELECT count(*) FROM instances i WHERE i.series_uid = s.series_uid)"
            " FROM series s WHERE s.state = 'receiving' AND s.last_received_ms <= ?1"
            " LIMIT 256", -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, cutoff);
    static due_series_t due[256];
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 256) {
        due_series_t *d = &due[n++];
        snprintf(d->series_uid, sizeof d->series_uid, "%s", sqlite3_column_text(st, 0));
        snprintf(d->study_uid, sizeof d->study_uid, "%s", sqlite3_column_text(st, 1));
        snprintf(d->modality, sizeof d->modality, "%s", sqlite3_column_text(st, 2));
        d->thickness = sqlite3_column_double(st, 3);
        d->instances = sqlite3_column_int(st, 4);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return VG_EDB;
    for (int i = 0; i < n; i++)
        if (complete_series(idx, cfg, &due[i], cutoff, now_ms, res) < 0)
            return VG_EDB;
    return 0;
}

static int complete_due_studies(vg_index_t *idx, const vg_config_t *cfg, int64_t now_ms,
                                vg_grouping_result_t *res)
{
    sqlite3 *db = vg_index_db(idx);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
            "UPDATE studies SET state = 'complete', completed_ms = ?2"
            " WHERE state = 'receiving' AND last_received_ms <= ?1 AND NOT EXISTS"
            " (SELECT 1 FROM series s WHERE s.study_uid = studies.study_uid"
            "  AND s.state = 'receiving')", -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, now_ms - (int64_t)cfg->storage.study_quiet_seconds * 1000);
    sqlite3_bind_int64(st, 2, now_ms);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VG_EDB;
    sqlite3_finalize(st);
    if (rc == 0)
        res->studies_completed += sqlite3_changes(db);
    return rc;
}

/* Earliest time something now receiving falls due, or -1. */
static int next_due(vg_index_t *idx, const vg_config_t *cfg, int64_t *due)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(vg_index_db(idx),
            "SELECT (SELECT MIN(last_received_ms) FROM series WHERE state = 'receiving'),"
            " (SELECT MIN(last_received_ms) FROM studies WHERE state = 'receiving')",
            -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : VG_EDB;
    *due = -1;
    if (rc == 0) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL)
            *due = sqlite3_column_int64(st, 0) +
                   (int64_t)cfg->storage.series_quiet_seconds * 1000;
        if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
            int64_t s = sqlite3_column_int64(st, 1) +
                        (int64_t)cfg->storage.study_quiet_seconds * 1000;
            if (*due < 0 || s < *due)
                *due = s;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

int vg_grouping_tick(vg_index_t *idx, const vg_config_t *cfg, int64_t now_ms,
                     int64_t *next_due_ms, vg_grouping_result_t *res)
{
    memset(res, 0, sizeof *res);
    if (complete_due_series(idx, cfg, now_ms, res) < 0 ||
        complete_due_studies(idx, cfg, now_ms, res) < 0)
        return VG_EDB;
    return next_due(idx, cfg, next_due_ms);
}
