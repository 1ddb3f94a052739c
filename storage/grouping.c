/* Series/study completion and routing, and the files a job analyses; see
 * grouping.h. It queues jobs; it does not read the files. */
#include "storage/grouping.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/error.h"
#include "server/log.h"
#include "storage/index_int.h"
#include "storage/queue.h"

/* 1 if MODALITY is one of ROUTE's ("CT", or a list "MG,US"). */
static int route_has_modality(const vg_route_cfg_t *route, const char *modality)
{
    static const char seps[] = ", \t";
    size_t n = strlen(modality);
    for (const char *s = route->modality + strspn(route->modality, seps); *s;
         s += strspn(s, seps)) {
        size_t w = strcspn(s, seps);
        if (n && w == n && strncmp(s, modality, n) == 0)
            return 1;
        s += w;
    }
    return 0;
}

/* ROUTE's modalities for a message: "CT", "MG or US", "MG, US or DX". */
static void modality_list(const vg_route_cfg_t *route, char *buf, size_t len)
{
    static const char seps[] = ", \t";
    const char *items[16];
    int k = 0;
    size_t used = 0;
    for (const char *s = route->modality + strspn(route->modality, seps); *s && k < 16;
         s += strspn(s, seps)) {
        items[k++] = s;
        s += strcspn(s, seps);
    }
    buf[0] = '\0';
    for (int i = 0; i < k && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%.*s",
                                 i == 0 ? "" : i == k - 1 ? " or " : ", ",
                                 (int)strcspn(items[i], seps), items[i]);
}

int vg_route_is_grouped(const vg_route_cfg_t *route)
{
    return route->group[0] && strcmp(route->group, "series") != 0;
}

int vg_route_takes(const vg_route_cfg_t *route, const char *modality, int instances,
                   double slice_thickness, char *why, size_t whylen)
{
    if (!route_has_modality(route, modality)) {
        char list[96];
        modality_list(route, list, sizeof list);
        snprintf(why, whylen, "route %s takes %s, not %s", route->name, list,
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
        size_t n = strlen(taken);
        queued++;
        if (vg_route_is_grouped(r)) {
            /* Its job is queued when the study completes (route_study). */
            snprintf(taken + n, sizeof taken - n, "%s%s (grouped by %s)", n ? ", " : "",
                     r->name, r->group);
            continue;
        }
        int version = 0;
        if (vg_queue_push(idx, s->series_uid, s->study_uid, r->name, r->model, now_ms,
                          NULL, &version) < 0)
            return VG_EDB;
        res->jobs_queued++;
        snprintf(taken + n, sizeof taken - n, "%s%s v%d", n ? ", " : "", r->name, version);
    }
    if (queued) {
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

/* How many complete series of STUDY_UID grouped route R takes, in the
 * caller's transaction; <0 on error. */
static int study_series_taken(sqlite3 *db, const vg_route_cfg_t *r, const char *study_uid)
{
    sqlite3_stmt *st = vg__sql_prep(db,
        "SELECT se.modality, COALESCE(se.slice_thickness, 0),"
        " (SELECT count(*) FROM instances i WHERE i.series_uid = se.series_uid)"
        " FROM series se WHERE se.study_uid = ?1 AND se.state = 'complete'");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, study_uid, -1, SQLITE_STATIC);
    char why[256];
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        n += vg_route_takes(r, (const char *)sqlite3_column_text(st, 0),
                            sqlite3_column_int(st, 2), sqlite3_column_double(st, 1), why,
                            sizeof why);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : VG_EDB;
}

/* Queues one job per grouped route that takes a series of the completed
 * study: series_uid and study_uid both name the study, so a re-completed
 * study supersedes its earlier job as a re-completed series does. */
static int route_study(vg_index_t *idx, const vg_config_t *cfg, const char *study_uid,
                       int64_t now_ms, vg_grouping_result_t *res)
{
    for (int i = 0; i < cfg->n_routes; i++) {
        const vg_route_cfg_t *r = &cfg->routes[i];
        if (!vg_route_is_grouped(r))
            continue;
        int n = study_series_taken(vg_index_db(idx), r, study_uid);
        if (n < 0)
            return VG_EDB;
        if (n == 0)
            continue;
        int version = 0;
        if (vg_queue_push(idx, study_uid, study_uid, r->name, r->model, now_ms, NULL,
                          &version) < 0)
            return VG_EDB;
        res->jobs_queued++;
        vg_log(VG_LOG_INFO, "study %s complete (%d series for %s): queued %s v%d (grouped"
               " by %s)", study_uid, n, r->name, r->name, version, r->group);
    }
    return 0;
}

/* Completes STUDY_UID if it is still due and queues its grouped jobs,
 * atomically. */
static int complete_study(vg_index_t *idx, const vg_config_t *cfg, const char *study_uid,
                          int64_t cutoff, int64_t now_ms, vg_grouping_result_t *res)
{
    sqlite3 *db = vg_index_db(idx);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_stmt *st = vg__sql_prep(db,
        "UPDATE studies SET state = 'complete', completed_ms = ?3"
        " WHERE study_uid = ?1 AND state = 'receiving' AND last_received_ms <= ?2"
        " AND NOT EXISTS (SELECT 1 FROM series s WHERE s.study_uid = studies.study_uid"
        "  AND s.state = 'receiving')");
    if (st) {
        sqlite3_bind_text(st, 1, study_uid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, cutoff);
        sqlite3_bind_int64(st, 3, now_ms);
    }
    int rc = vg__sql_run1(st);
    if (rc == 0 && sqlite3_changes(db) == 1) {
        res->studies_completed++;
        rc = route_study(idx, cfg, study_uid, now_ms, res);
    }
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return VG_EDB;
}

static int complete_due_studies(vg_index_t *idx, const vg_config_t *cfg, int64_t now_ms,
                                vg_grouping_result_t *res)
{
    int64_t cutoff = now_ms - (int64_t)cfg->storage.study_quiet_seconds * 1000;
    sqlite3_stmt *st = vg__sql_prep(vg_index_db(idx),
        "SELECT study_uid FROM studies WHERE state = 'receiving' AND last_received_ms <= ?1"
        " AND NOT EXISTS (SELECT 1 FROM series s WHERE s.study_uid = studies.study_uid"
        "  AND s.state = 'receiving') LIMIT 256");
    if (!st)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, cutoff);
    static char due[256][65];
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 256)
        vg__sql_text(st, 0, due[n++], sizeof due[0]);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return VG_EDB;
    for (int i = 0; i < n; i++)
        if (complete_study(idx, cfg, due[i], cutoff, now_ms, res) < 0)
            return VG_EDB;
    return 0;
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

/* --- the files of a job ------------------------------------------------ */

/* Relative paths gathered before they are packed into one block. */
typedef struct {
    char **rel;
    int n, cap;
    size_t bytes;
} path_list_t;

static int path_add(path_list_t *l, const char *rel)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **r = realloc(l->rel, sizeof *r * (size_t)cap);
        if (!r)
            return -ENOMEM;
        l->rel = r;
        l->cap = cap;
    }
    if (!(l->rel[l->n] = strdup(rel)))
        return -ENOMEM;
    l->bytes += strlen(rel);
    l->n++;
    return 0;
}

static void path_list_free(path_list_t *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->rel[i]);
    free(l->rel);
}

/* Adds the files of STUDY_UID's complete series that ROUTE takes (a
 * series still arriving is left to the job its study's completion
 * queues). */
static int add_study_files(sqlite3 *db, const vg_route_cfg_t *route, const char *study_uid,
                           path_list_t *out)
{
    sqlite3_stmt *st = vg__sql_prep(db,
        "SELECT se.modality, COALESCE(se.slice_thickness, 0),"
        " (SELECT count(*) FROM instances c WHERE c.series_uid = se.series_uid), i.path"
        " FROM series se JOIN instances i ON i.series_uid = se.series_uid"
        " WHERE se.study_uid = ?1 AND se.state = 'complete'"
        " ORDER BY se.series_number IS NULL, se.series_number,"
        " se.series_uid, i.instance_number IS NULL, i.instance_number, i.path");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, study_uid, -1, SQLITE_STATIC);
    char why[256];
    int rc = 0, s;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW)
        if (vg_route_takes(route, (const char *)sqlite3_column_text(st, 0),
                           sqlite3_column_int(st, 2), sqlite3_column_double(st, 1), why,
                           sizeof why))
            rc = path_add(out, (const char *)sqlite3_column_text(st, 3));
    if (rc == 0 && s != SQLITE_DONE)
        rc = VG_EDB;
    sqlite3_finalize(st);
    return rc;
}

/* When a study was done, for patient grouping. */
typedef struct {
    char date[9], time[17];
    int64_t received_ms;
} study_when_t;

/* The number written by the N digits at S. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* Seconds since 1970 of DICOM DA "YYYYMMDD" (plus TM "HHMMSS.f" when
 * WITH_TIME), as if UTC; -1 when DATE is not a date. */
static int64_t dicom_seconds(const char *date, const char *time, int with_time)
{
    if (strlen(date) != 8 || strspn(date, "0123456789") != 8)
        return -1;
    struct tm tm = {.tm_year = digits(date, 4) - 1900, .tm_mon = digits(date + 4, 2) - 1,
                    .tm_mday = digits(date + 6, 2)};
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31)
        return -1;
    int64_t s = (int64_t)timegm(&tm);
    int n = (int)strspn(time, "0123456789");
    if (with_time) /* HH, HHMM or HHMMSS */
        s += (int64_t)digits(time, 2) * 3600 + (n >= 4 ? digits(time + 2, 2) * 60 : 0) +
             (n >= 6 ? digits(time + 4, 2) : 0);
    return s;
}

/* 1 if A and B lie within HOURS of each other (see vg_group_files). */
static int within_window(const study_when_t *a, const study_when_t *b, int hours)
{
    static const char dig[] = "0123456789";
    int with_time = strspn(a->time, dig) >= 2 && strspn(b->time, dig) >= 2;
    int64_t sa = dicom_seconds(a->date, a->time, with_time);
    int64_t sb = dicom_seconds(b->date, b->time, with_time);
    int64_t window_ms = (int64_t)hours * 3600 * 1000;
    int64_t d = sa >= 0 && sb >= 0 ? (sa - sb) * 1000 : a->received_ms - b->received_ms;
    return d <= window_ms && -d <= window_ms;
}

/* The studies of JOB's group, in date order, each added with its files. */
static int add_group_files(sqlite3 *db, const vg_route_cfg_t *route, const vg_job_t *job,
                           path_list_t *out)
{
    sqlite3_stmt *st = vg__sql_prep(db, "SELECT patient_id, accession, study_date,"
                                        " study_time, first_received_ms FROM studies"
                                        " WHERE study_uid = ?1");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, job->study_uid, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    char patient[65] = "", accession[17] = "";
    study_when_t self = {{0}, {0}, 0};
    if (s == SQLITE_ROW) {
        vg__sql_text(st, 0, patient, sizeof patient);
        vg__sql_text(st, 1, accession, sizeof accession);
        vg__sql_text(st, 2, self.date, sizeof self.date);
        vg__sql_text(st, 3, self.time, sizeof self.time);
        self.received_ms = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    if (s != SQLITE_ROW)
        return s == SQLITE_DONE ? VG_ENOTFOUND : VG_EDB;
    int by_patient = strcmp(route->group, "patient") == 0 && patient[0];
    /* An accession number is unique per issuing RIS only: the group keeps
     * to the patient too, and without a patient ID to the study. */
    int by_accession = strcmp(route->group, "accession") == 0 && accession[0] && patient[0];
    if (!by_patient && !by_accession)
        return add_study_files(db, route, job->study_uid, out);
    st = vg__sql_prep(db, by_patient
        ? "SELECT study_uid, study_date, study_time, first_received_ms FROM studies"
          " WHERE patient_id = ?1 ORDER BY study_date, study_time, first_received_ms,"
          " study_uid"
        : "SELECT study_uid, study_date, study_time, first_received_ms FROM studies"
          " WHERE accession = ?1 AND patient_id = ?2 ORDER BY study_date, study_time,"
          " first_received_ms, study_uid");
    if (!st)
        return VG_EDB;
    sqlite3_bind_text(st, 1, by_patient ? patient : accession, -1, SQLITE_STATIC);
    if (!by_patient)
        sqlite3_bind_text(st, 2, patient, -1, SQLITE_STATIC);
    int hours = route->group_window_hours > 0 ? route->group_window_hours : 24;
    int rc = 0;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        char uid[65];
        study_when_t other;
        vg__sql_text(st, 0, uid, sizeof uid);
        vg__sql_text(st, 1, other.date, sizeof other.date);
        vg__sql_text(st, 2, other.time, sizeof other.time);
        other.received_ms = sqlite3_column_int64(st, 3);
        if (!by_patient || strcmp(uid, job->study_uid) == 0 ||
            within_window(&self, &other, hours))
            rc = add_study_files(db, route, uid, out);
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = VG_EDB;
    sqlite3_finalize(st);
    return rc;
}

int vg_group_files(vg_index_t *idx, const char *data_dir, const vg_route_cfg_t *route,
                   const vg_job_t *job, char ***paths, int *n)
{
    *paths = NULL;
    *n = 0;
    if (!vg_route_is_grouped(route)) {
        int rc = vg_index_series_files(idx, data_dir, job->series_uid, paths, n);
        if (rc == 0 && *n == 0) {
            free(*paths);
            *paths = NULL;
            rc = VG_ENOTFOUND;
        }
        return rc;
    }
    path_list_t l = {0};
    int rc = add_group_files(vg_index_db(idx), route, job, &l);
    if (rc == 0 && l.n == 0)
        rc = VG_ENOTFOUND;
    size_t dlen = strlen(data_dir);
    /* One block, as vg_index_series_files: the pointers, then the strings. */
    char **out = rc == 0 ? malloc(sizeof *out * (size_t)l.n + l.bytes +
                                  (dlen + 2) * (size_t)l.n) : NULL;
    if (rc == 0 && !out)
        rc = -ENOMEM;
    if (rc == 0) {
        char *p = (char *)(out + l.n);
        for (int i = 0; i < l.n; i++) {
            out[i] = p;
            p += sprintf(p, "%s/%s", data_dir, l.rel[i]) + 1;
        }
        *paths = out;
        *n = l.n;
    }
    path_list_free(&l);
    return rc;
}
