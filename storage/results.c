/* Results with their findings and (breast model) assessments in SQLite;
 * see results.h. */
#include "storage/results.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/error.h"
#include "storage/outbox.h"

void vg_result_clear(vg_result_t *r)
{
    for (int i = 0; i < r->n_findings; i++)
        free(r->findings[i].mask);
    free(r->findings);
    r->findings = NULL;
    r->n_findings = 0;
    free(r->assessments);
    r->assessments = NULL;
    r->n_assessments = 0;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : VG_EDB;
}

static int64_t insert_result(sqlite3 *db, const vg_result_t *r, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    int64_t id = -1;
    if (sqlite3_prepare_v2(db,
            "INSERT INTO results(job_id, series_uid, study_uid, model, model_version,"
            " status, reason, patient_score, positive, timings, grid, created_ms)"
            " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            " ON CONFLICT(series_uid, model) DO UPDATE SET job_id = excluded.job_id,"
            " study_uid = excluded.study_uid, model_version = excluded.model_version,"
            " status = excluded.status, reason = excluded.reason,"
            " patient_score = excluded.patient_score, positive = excluded.positive,"
            " timings = excluded.timings, grid = excluded.grid,"
            " created_ms = excluded.created_ms RETURNING id", -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (r->job_id > 0)
        sqlite3_bind_int64(st, 1, r->job_id);
    sqlite3_bind_text(st, 2, r->series_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->study_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->model_version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, r->reason, -1, SQLITE_STATIC);
    if (r->patient_score >= 0)
        sqlite3_bind_double(st, 8, r->patient_score);
    if (r->positive >= 0)
        sqlite3_bind_int(st, 9, r->positive);
    sqlite3_bind_text(st, 10, r->timings[0] ? r->timings : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, r->grid[0] ? r->grid : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 12, now_ms);
    if (sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

static int insert_finding(sqlite3_stmt *st, int64_t result_id, int i, const vg_finding_t *f)
{
    char bbox[256], box[128];
    snprintf(bbox, sizeof bbox, "[[%.3f,%.3f,%.3f],[%.3f,%.3f,%.3f]]", f->bbox_mm[0][0],
             f->bbox_mm[0][1], f->bbox_mm[0][2], f->bbox_mm[1][0], f->bbox_mm[1][1],
             f->bbox_mm[1][2]);
    snprintf(box, sizeof box, "[%d,%d,%d,%d,%d,%d]", f->mask_box[0], f->mask_box[1],
             f->mask_box[2], f->mask_box[3], f->mask_box[4], f->mask_box[5]);
    sqlite3_bind_int64(st, 1, result_id);
    sqlite3_bind_int(st, 2, i);
    sqlite3_bind_text(st, 3, f->type, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, f->probability);
    sqlite3_bind_double(st, 5, f->volume_mm3);
    for (int k = 0; k < 3; k++)
        sqlite3_bind_double(st, 6 + k, f->centroid_mm[k]);
    sqlite3_bind_text(st, 9, bbox, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 10, f->mean_hu);
    sqlite3_bind_double(st, 11, f->diameter_mm);
    sqlite3_bind_text(st, 12, box, -1, SQLITE_TRANSIENT);
    if (f->mask)
        sqlite3_bind_blob(st, 13, f->mask, (int)f->mask_bytes, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 13);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VG_EDB;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

/* Replaces the assessments of result RESULT_ID with R's, in the open
 * transaction. */
static int store_assessments(sqlite3 *db, const vg_result_t *r, int64_t result_id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "DELETE FROM assessments WHERE result_id = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, result_id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VG_EDB;
    sqlite3_finalize(st);
    if (rc < 0 || r->n_assessments <= 0)
        return rc;
    if (sqlite3_prepare_v2(db,
            "INSERT INTO assessments(result_id, idx, laterality, p1, p2, p3, p4, p5,"
            " malignancy_probability, birads, modalities_used, clinical_used)"
            " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    for (int i = 0; i < r->n_assessments && rc == 0; i++) {
        const vg_assessment_t *a = &r->assessments[i];
        sqlite3_bind_int64(st, 1, result_id);
        sqlite3_bind_int(st, 2, i);
        /* The struct's strings need not be terminated at their end. */
        sqlite3_bind_text(st, 3, a->laterality, (int)strnlen(a->laterality,
                          sizeof a->laterality), SQLITE_STATIC);
        for (int k = 0; k < 5; k++)
            sqlite3_bind_double(st, 4 + k, a->probabilities[k]);
        sqlite3_bind_double(st, 9, a->malignancy_probability);
        sqlite3_bind_text(st, 10, a->birads, (int)strnlen(a->birads, sizeof a->birads),
                          SQLITE_STATIC);
        sqlite3_bind_text(st, 11, a->modalities_used,
                          (int)strnlen(a->modalities_used, sizeof a->modalities_used),
                          SQLITE_STATIC);
        sqlite3_bind_text(st, 12, a->clinical_used,
                          (int)strnlen(a->clinical_used, sizeof a->clinical_used),
                          SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VG_EDB;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Each of R's objects for each of its destinations, in the open
 * transaction. */
static int queue_objects(vg_index_t *idx, const vg_result_t *r, int64_t result_id,
                         int64_t now_ms)
{
    for (int i = 0; i < r->n_objects; i++) {
        const vg_result_object_t *o = &r->objects[i];
        vg_outbox_object_t obj = {.result_id = result_id};
        snprintf(obj.study_uid, sizeof obj.study_uid, "%s", r->study_uid);
        snprintf(obj.series_uid, sizeof obj.series_uid, "%s", o->series_uid);
        snprintf(obj.sop_uid, sizeof obj.sop_uid, "%s", o->sop_uid);
        snprintf(obj.sop_class_uid, sizeof obj.sop_class_uid, "%s", o->sop_class_uid);
        snprintf(obj.path, sizeof obj.path, "%s", o->relpath);
        for (int d = 0; d < r->n_destinations; d++)
            if (vg_outbox_add(idx, &obj, r->destinations[d], now_ms) < 0)
                return VG_EDB;
    }
    return 0;
}

static int store(vg_index_t *idx, const vg_result_t *r, int64_t now_ms)
{
    sqlite3 *db = vg_index_db(idx);
    int64_t id = insert_result(db, r, now_ms);
    if (id < 0)
        return VG_EDB;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "DELETE FROM findings WHERE result_id = ?1", -1, &st, NULL) !=
        SQLITE_OK)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VG_EDB;
    sqlite3_finalize(st);
    if (rc < 0 || sqlite3_prepare_v2(db,
            "INSERT INTO findings(result_id, idx, type, probability, volume_mm3, cx, cy, cz,"
            " bbox, mean_hu, diameter_mm, mask_box, mask)"
            " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    for (int i = 0; i < r->n_findings && rc == 0; i++)
        rc = insert_finding(st, id, i, &r->findings[i]);
    sqlite3_finalize(st);
    if (rc == 0)
        rc = store_assessments(db, r, id);
    return rc < 0 ? rc : queue_objects(idx, r, id, now_ms);
}

/* Marks the job done if it is still running; 1 if it was, 0 if not. */
static int finish_job(sqlite3 *db, int64_t job_id, int64_t now_ms)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE jobs SET state = 'done', updated_ms = ?2,"
                               " lease_owner = NULL, lease_until_ms = NULL"
                               " WHERE id = ?1 AND state = 'running'", -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int64(st, 2, now_ms);
    int rc = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(db) == 1 : VG_EDB;
    sqlite3_finalize(st);
    return rc;
}

int vg_results_put(vg_index_t *idx, const vg_result_t *r, int64_t now_ms)
{
    sqlite3 *db = vg_index_db(idx);
    if (exec(db, "BEGIN IMMEDIATE") < 0)
        return VG_EDB;
    int running = finish_job(db, r->job_id, now_ms);
    int rc = running < 0 ? VG_EDB : running == 0 ? VG_ENOTFOUND : store(idx, r, now_ms);
    if (rc == 0 && exec(db, "COMMIT") == 0)
        return 0;
    exec(db, "ROLLBACK");
    return rc < 0 ? rc : VG_EDB;
}

int vg_results_put_final(vg_index_t *idx, const vg_result_t *r, int64_t now_ms)
{
    sqlite3 *db = vg_index_db(idx);
    if (exec(db, "BEGIN IMMEDIATE") < 0)
        return VG_EDB;
    if (store(idx, r, now_ms) == 0 && exec(db, "COMMIT") == 0)
        return 0;
    exec(db, "ROLLBACK");
    return VG_EDB;
}
