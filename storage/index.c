/* SQLite index: schema, migrations and the instance write path. The
 * files on disk are the record; this index is how they are found. It
 * knows nothing of DICOM networking or HTTP. */
#include "storage/index.h"
#include "storage/index_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/error.h"

/* Forward migrations: entry i takes user_version i to i + 1. Never edit a
 * released entry; append a new one. */
static const char *const migrations[] = {
    /* 0 -> 1: studies, series, instances, jobs, node state. */
    "CREATE TABLE studies("
    " study_uid TEXT PRIMARY KEY,"
    " patient_id TEXT NOT NULL DEFAULT '',"
    " accession TEXT NOT NULL DEFAULT '',"
    " study_date TEXT NOT NULL DEFAULT '',"
    " study_time TEXT NOT NULL DEFAULT '',"
    " description TEXT NOT NULL DEFAULT '',"
    " state TEXT NOT NULL DEFAULT 'receiving',"   /* receiving|complete */
    " first_received_ms INTEGER NOT NULL,"
    " last_received_ms INTEGER NOT NULL,"
    " completed_ms INTEGER);"
    "CREATE INDEX studies_state ON studies(state, last_received_ms);"
    "CREATE TABLE series("
    " series_uid TEXT PRIMARY KEY,"
    " study_uid TEXT NOT NULL REFERENCES studies(study_uid),"
    " modality TEXT NOT NULL DEFAULT '',"
    " body_part TEXT NOT NULL DEFAULT '',"
    " series_number INTEGER,"
    " description TEXT NOT NULL DEFAULT '',"
    " slice_thickness REAL,"
    " state TEXT NOT NULL DEFAULT 'receiving',"   /* receiving|complete */
    " route_state TEXT,"                          /* NULL|queued|skipped */
    " route_reason TEXT,"
    " first_received_ms INTEGER NOT NULL,"
    " last_received_ms INTEGER NOT NULL,"
    " completed_ms INTEGER);"
    "CREATE INDEX series_study ON series(study_uid);"
    "CREATE INDEX series_state ON series(state, last_received_ms);"
    "CREATE TABLE instances("
    " sop_instance_uid TEXT PRIMARY KEY,"
    " series_uid TEXT NOT NULL REFERENCES series(series_uid),"
    " sop_class_uid TEXT NOT NULL,"
    " instance_number INTEGER,"
    " pos_x REAL, pos_y REAL, pos_z REAL,"
    " orientation TEXT,"                          /* six values, '\\' */
    " rows INTEGER, columns INTEGER, frames INTEGER,"
    " image_type TEXT NOT NULL DEFAULT '',"
    " transfer_syntax TEXT NOT NULL,"
    " path TEXT NOT NULL,"                        /* relative to data dir */
    " size INTEGER NOT NULL,"
    " calling_ae TEXT NOT NULL,"
    " received_ms INTEGER NOT NULL);"
    "CREATE INDEX instances_series ON instances(series_uid);"
    "CREATE TABLE jobs("
    " id INTEGER PRIMARY KEY,"
    " series_uid TEXT NOT NULL,"
    " study_uid TEXT NOT NULL,"
    " route TEXT NOT NULL,"
    " model TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " state TEXT NOT NULL,"          /* queued|running|done|failed|superseded */
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " lease_owner TEXT,"
    " lease_until_ms INTEGER,"
    " last_error TEXT,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL);"
    "CREATE INDEX jobs_take ON jobs(model, state, id);"
    "CREATE UNIQUE INDEX jobs_version ON jobs(series_uid, route, version);"
    "CREATE TABLE node_state(key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    /* 1 -> 2: analysis results and their findings. */
    "CREATE TABLE results("
    " id INTEGER PRIMARY KEY,"
    " job_id INTEGER,"
    " series_uid TEXT NOT NULL,"
    " study_uid TEXT NOT NULL,"
    " model TEXT NOT NULL,"
    " model_version TEXT NOT NULL,"
    " status TEXT NOT NULL,"                    /* done|not_analysable|failed */
    " reason TEXT NOT NULL DEFAULT '',"
    " patient_score REAL,"
    " positive INTEGER,"
    " timings TEXT,"                            /* JSON */
    " grid TEXT,"                               /* JSON */
    " created_ms INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX results_series_model ON results(series_uid, model);"
    "CREATE INDEX results_study ON results(study_uid);"
    "CREATE TABLE findings("
    " id INTEGER PRIMARY KEY,"
    " result_id INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,"
    " idx INTEGER NOT NULL,"
    " type TEXT NOT NULL,"
    " probability REAL NOT NULL,"
    " volume_mm3 REAL NOT NULL,"
    " cx REAL, cy REAL, cz REAL,"
    " bbox TEXT NOT NULL,"                      /* JSON [[x,y,z],[x,y,z]] */
    " mean_hu REAL,"
    " diameter_mm REAL,"
    " mask_box TEXT,"                           /* JSON [i0,j0,k0,ni,nj,nk] */
    " mask BLOB);"
    "CREATE INDEX findings_result ON findings(result_id);",
    /* 2 -> 3: the analysis worker processes' state (storage/workers.c). */
    "CREATE TABLE workers("
    " name TEXT PRIMARY KEY,"                   /* model@device */
    " model TEXT NOT NULL,"
    " device TEXT NOT NULL,"
    " pid INTEGER,"                             /* NULL: no process */
    " available INTEGER NOT NULL,"
    " version TEXT NOT NULL DEFAULT '',"
    " error TEXT NOT NULL DEFAULT '',"
    " jobs_done INTEGER NOT NULL DEFAULT 0,"
    " jobs_failed INTEGER NOT NULL DEFAULT 0,"
    " updated_ms INTEGER NOT NULL);",
    /* 3 -> 4: the outbox of result objects per destination (storage/outbox.c). */
    "CREATE TABLE outbox("
    " id INTEGER PRIMARY KEY,"
    " result_id INTEGER,"                       /* results.id; NULL: none */
    " study_uid TEXT NOT NULL,"
    " series_uid TEXT NOT NULL,"                /* of the object */
    " sop_uid TEXT NOT NULL,"
    " sop_class_uid TEXT NOT NULL,"
    " path TEXT NOT NULL,"                      /* relative to data dir */
    " destination TEXT NOT NULL,"               /* [ae NAME] */
    " state TEXT NOT NULL DEFAULT 'queued',"    /* queued|sending|sent|failed */
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_ms INTEGER NOT NULL,"
    " last_error TEXT,"
    " created_ms INTEGER NOT NULL,"
    " sent_ms INTEGER);"
    "CREATE UNIQUE INDEX outbox_object ON outbox(sop_uid, destination);"
    "CREATE INDEX outbox_due ON outbox(state, next_attempt_ms);",
    /* 4 -> 5: clinical values posted per study (storage/clinical.c), the
     * breast model's per-breast assessments of a result (storage/results.c),
     * and the lookups of grouped routes (storage/grouping.c). IF NOT
     * EXISTS: an index rewound to an earlier version (as the tests of
     * earlier migrations do) migrates forward again. */
    "CREATE TABLE IF NOT EXISTS clinical_values("
    " study_uid TEXT NOT NULL,"
    " name TEXT NOT NULL,"                      /* storage/clinical.h names */
    " value REAL NOT NULL,"                     /* in the units there */
    " updated_ms INTEGER NOT NULL,"
    " PRIMARY KEY(study_uid, name));"
    "CREATE TABLE IF NOT EXISTS assessments("
    " id INTEGER PRIMARY KEY,"
    " result_id INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,"
    " idx INTEGER NOT NULL,"
    " laterality TEXT NOT NULL,"                /* L|R */
    " p1 REAL NOT NULL, p2 REAL NOT NULL, p3 REAL NOT NULL,"
    " p4 REAL NOT NULL, p5 REAL NOT NULL,"      /* T1..T5 */
    " malignancy_probability REAL NOT NULL,"
    " birads TEXT NOT NULL,"
    " modalities_used TEXT NOT NULL DEFAULT '',"  /* comma-separated */
    " clinical_used TEXT NOT NULL DEFAULT '');"   /* comma-separated */
    "CREATE INDEX IF NOT EXISTS assessments_result ON assessments(result_id);"
    "CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_id);"
    "CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession);",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

_Static_assert(N_MIGRATIONS == VG_INDEX_SCHEMA_VERSION,
               "VG_INDEX_SCHEMA_VERSION must equal the migration count");

enum {
    ST_FIND,
    ST_STUDY,
    ST_SERIES,
    ST_INSTANCE,
    ST_DELETE,
    ST_META_GET,
    ST_META_SET,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_FIND] = "SELECT path FROM instances WHERE sop_instance_uid = ?1",
    [ST_STUDY] =
        "INSERT INTO studies(study_uid, patient_id, accession, study_date,"
        " study_time, description, state, first_received_ms,"
        " last_received_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'receiving', ?7, ?7)"
        " ON CONFLICT(study_uid) DO UPDATE SET state = 'receiving',"
        " last_received_ms = excluded.last_received_ms, completed_ms = NULL",
    [ST_SERIES] =
        "INSERT INTO series(series_uid, study_uid, modality, body_part,"
        " series_number, description, slice_thickness, state,"
        " first_received_ms, last_received_ms)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, 'receiving', ?8, ?8)"
        " ON CONFLICT(series_uid) DO UPDATE SET state = 'receiving',"
        " last_received_ms = excluded.last_received_ms, completed_ms = NULL",
    [ST_INSTANCE] =
        "INSERT INTO instances(sop_instance_uid, series_uid, sop_class_uid,"
        " instance_number, pos_x, pos_y, pos_z, orientation, rows, columns,"
        " frames, image_type, transfer_syntax, path, size, calling_ae,"
        " received_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
        " ?12, ?13, ?14, ?15, ?16, ?17)"
        " ON CONFLICT(sop_instance_uid) DO UPDATE SET"
        " series_uid = excluded.series_uid,"
        " sop_class_uid = excluded.sop_class_uid,"
        " instance_number = excluded.instance_number,"
        " pos_x = excluded.pos_x, pos_y = excluded.pos_y,"
        " pos_z = excluded.pos_z, orientation = excluded.orientation,"
        " rows = excluded.rows, columns = excluded.columns,"
        " frames = excluded.frames, image_type = excluded.image_type,"
        " transfer_syntax = excluded.transfer_syntax, path = excluded.path,"
        " size = excluded.size, calling_ae = excluded.calling_ae,"
        " received_ms = excluded.received_ms",
    [ST_DELETE] = "DELETE FROM instances WHERE sop_instance_uid = ?1",
    [ST_META_GET] = "SELECT value FROM node_state WHERE key = ?1",
    [ST_META_SET] = "INSERT INTO node_state(key, value) VALUES(?1, ?2)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

struct vg_index {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
};

int64_t vg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int exec_simple(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return VG_EDB;
    }
    return 0;
}

static int user_version(sqlite3 *db, int *v)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : VG_EDB;
    if (rc == 0)
        *v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc;
}

/* Applies every migration above the file's user_version, each in its own
 * transaction with the version bump, so a crash leaves a valid version. */
static int migrate(sqlite3 *db, char *err, size_t errlen)
{
    int v;
    if (exec_simple(db, "BEGIN IMMEDIATE", err, errlen) < 0)
        return VG_EDB;
    if (user_version(db, &v) < 0) {
        snprintf(err, errlen, "cannot read schema version: %s", sqlite3_errmsg(db));
        exec_simple(db, "ROLLBACK", err + strlen(err), errlen - strlen(err));
        return VG_EDB;
    }
    if (v > N_MIGRATIONS) {
        snprintf(err, errlen,
                 "database schema version %d is newer than this program (%d)",
                 v, N_MIGRATIONS);
        exec_simple(db, "ROLLBACK", err + strlen(err), errlen - strlen(err));
        return VG_ESCHEMA;
    }
    for (; v < N_MIGRATIONS; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
        if (exec_simple(db, migrations[v], err, errlen) < 0 ||
            exec_simple(db, bump, err, errlen) < 0) {
            char ignore[64];
            exec_simple(db, "ROLLBACK", ignore, sizeof ignore);
            return VG_EDB;
        }
    }
    return exec_simple(db, "COMMIT", err, errlen);
}

int vg_index_open(const char *path, vg_index_t **out, char *err, size_t errlen)
{
    *out = NULL;
    vg_index_t *idx = calloc(1, sizeof *idx);
    if (!idx)
        return -12; /* -ENOMEM */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &idx->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path,
                 idx->db ? sqlite3_errmsg(idx->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(idx->db, 10000);
    /* WAL lets the API read while associations write. synchronous=FULL
     * makes every commit durable before a C-STORE is answered. */
    if (exec_simple(idx->db,
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                    " PRAGMA foreign_keys = ON;",
                    err, errlen) < 0)
        goto fail;
    int rc = migrate(idx->db, err, errlen);
    if (rc < 0) {
        sqlite3_close(idx->db);
        free(idx);
        return rc;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(idx->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                               &idx->st[i], NULL) != SQLITE_OK) {
            snprintf(err, errlen, "prepare: %s", sqlite3_errmsg(idx->db));
            goto fail;
        }
    }
    *out = idx;
    return 0;
fail:
    vg_index_close(idx);
    return VG_EDB;
}

void vg_index_close(vg_index_t *idx)
{
    if (!idx)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(idx->st[i]);
    sqlite3_close(idx->db);
    free(idx);
}

int vg_index_set_full_sync(vg_index_t *idx, int full)
{
    char err[128];
    return exec_simple(idx->db, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                       err, sizeof err);
}

sqlite3 *vg_index_db(vg_index_t *idx)
{
    return idx->db;
}

static int step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : VG_EDB;
}

int vg_index_find_instance(vg_index_t *idx, const char *sop_uid, char *path,
                           size_t pathlen)
{
    sqlite3_stmt *st = idx->st[ST_FIND];
    sqlite3_bind_text(st, 1, sop_uid, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int found = 0;
    if (rc == SQLITE_ROW) {
        found = 1;
        if (path)
            snprintf(path, pathlen, "%s", (const char *)sqlite3_column_text(st, 0));
    } else if (rc != SQLITE_DONE) {
        found = VG_EDB;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static void bind_int_or_null(sqlite3_stmt *st, int i, int v)
{
    if (v < 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int(st, i, v);
}

static int put_study_and_series(vg_index_t *idx, const vg_instance_meta_t *m,
                                int64_t now_ms)
{
    sqlite3_stmt *st = idx->st[ST_STUDY];
    bind_text(st, 1, m->study_uid);
    bind_text(st, 2, m->patient_id);
    bind_text(st, 3, m->accession);
    bind_text(st, 4, m->study_date);
    bind_text(st, 5, m->study_time);
    bind_text(st, 6, m->study_description);
    sqlite3_bind_int64(st, 7, now_ms);
    if (step_reset(st) < 0)
        return VG_EDB;

    st = idx->st[ST_SERIES];
    bind_text(st, 1, m->series_uid);
    bind_text(st, 2, m->study_uid);
    bind_text(st, 3, m->modality);
    bind_text(st, 4, m->body_part);
    bind_int_or_null(st, 5, m->series_number);
    bind_text(st, 6, m->series_description);
    if (m->slice_thickness > 0)
        sqlite3_bind_double(st, 7, m->slice_thickness);
    else
        sqlite3_bind_null(st, 7);
    sqlite3_bind_int64(st, 8, now_ms);
    return step_reset(st);
}

static int put_instance_row(vg_index_t *idx, const vg_instance_meta_t *m,
                            const char *relpath, int64_t size,
                            const char *calling_ae, int64_t now_ms)
{
    sqlite3_stmt *st = idx->st[ST_INSTANCE];
    char orient[160] = "";
    bind_text(st, 1, m->sop_instance_uid);
    bind_text(st, 2, m->series_uid);
    bind_text(st, 3, m->sop_class_uid);
    bind_int_or_null(st, 4, m->instance_number);
    if (m->has_position) {
        for (int i = 0; i < 3; i++)
            sqlite3_bind_double(st, 5 + i, m->image_position[i]);
        const double *o = m->image_orientation;
        snprintf(orient, sizeof orient, "%.6g\\%.6g\\%.6g\\%.6g\\%.6g\\%.6g",
                 o[0], o[1], o[2], o[3], o[4], o[5]);
        bind_text(st, 8, orient);
    }
    bind_int_or_null(st, 9, m->rows > 0 ? m->rows : -1);
    bind_int_or_null(st, 10, m->columns > 0 ? m->columns : -1);
    sqlite3_bind_int(st, 11, m->frames > 0 ? m->frames : 1);
    bind_text(st, 12, m->image_type);
    bind_text(st, 13, m->transfer_syntax);
    bind_text(st, 14, relpath);
    sqlite3_bind_int64(st, 15, size);
    bind_text(st, 16, calling_ae);
    sqlite3_bind_int64(st, 17, now_ms);
    return step_reset(st);
}

int vg_index_put_instance(vg_index_t *idx, const vg_instance_meta_t *m,
                          const char *relpath, int64_t size,
                          const char *calling_ae, int64_t now_ms)
{
    if (step_reset(idx->st[ST_BEGIN]) < 0)
        return VG_EDB;
    if (put_study_and_series(idx, m, now_ms) < 0 ||
        put_instance_row(idx, m, relpath, size, calling_ae, now_ms) < 0 ||
        step_reset(idx->st[ST_COMMIT]) < 0) {
        step_reset(idx->st[ST_ROLLBACK]);
        return VG_EDB;
    }
    return 0;
}

int vg_index_delete_instance(vg_index_t *idx, const char *sop_uid)
{
    sqlite3_stmt *st = idx->st[ST_DELETE];
    bind_text(st, 1, sop_uid);
    return step_reset(st);
}

int vg_index_each_instance(vg_index_t *idx,
                           int (*fn)(void *arg, const char *relpath,
                                     const char *sop_uid),
                           void *arg)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(idx->db,
                           "SELECT path, sop_instance_uid FROM instances",
                           -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    int rc = 0, s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        rc = fn(arg, (const char *)sqlite3_column_text(st, 0),
                (const char *)sqlite3_column_text(st, 1));
        if (rc)
            break;
    }
    if (!rc && s != SQLITE_DONE)
        rc = VG_EDB;
    sqlite3_finalize(st);
    return rc;
}

int vg_index_series_files(vg_index_t *idx, const char *dir, const char *series_uid,
                          char ***paths, int *n)
{
    sqlite3_stmt *st;
    *paths = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(idx->db, "SELECT path FROM instances WHERE series_uid = ?1"
                                    " ORDER BY path", -1, &st, NULL) != SQLITE_OK)
        return VG_EDB;
    sqlite3_bind_text(st, 1, series_uid, -1, SQLITE_STATIC);
    size_t count = 0, bytes = 0, dlen = strlen(dir);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        count++;
        bytes += dlen + 2 + (size_t)sqlite3_column_bytes(st, 0);
    }
    sqlite3_reset(st);
    /* One block: the pointer array, then the strings. */
    char **out = malloc(count * sizeof *out + bytes + 1);
    if (!out) {
        sqlite3_finalize(st);
        return -12;
    }
    char *p = (char *)(out + count);
    size_t i = 0;
    while (i < count && sqlite3_step(st) == SQLITE_ROW) {
        out[i++] = p;
        p += sprintf(p, "%s/%s", dir, (const char *)sqlite3_column_text(st, 0)) + 1;
    }
    sqlite3_finalize(st);
    *paths = out;
    *n = (int)i;
    return 0;
}

int vg_index_meta_get(vg_index_t *idx, const char *key, char *val, size_t vallen)
{
    sqlite3_stmt *st = idx->st[ST_META_GET];
    bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    int ret = VG_ENOTFOUND;
    if (rc == SQLITE_ROW) {
        snprintf(val, vallen, "%s", (const char *)sqlite3_column_text(st, 0));
        ret = 0;
    } else if (rc != SQLITE_DONE) {
        ret = VG_EDB;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ret;
}

int vg_index_meta_set(vg_index_t *idx, const char *key, const char *val)
{
    sqlite3_stmt *st = idx->st[ST_META_SET];
    bind_text(st, 1, key);
    bind_text(st, 2, val);
    return step_reset(st);
}

sqlite3_stmt *vg__sql_prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    return st;
}

int vg__sql_run1(sqlite3_stmt *st)
{
    int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : VG_EDB;
}

void vg__sql_text(sqlite3_stmt *st, int col, char *dst, size_t len)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    snprintf(dst, len, "%s", v ? (const char *)v : "");
}
