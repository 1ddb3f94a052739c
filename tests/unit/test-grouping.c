/* Series and study completion timers, routing and re-opening. Time is
 * passed in, so the tests control the clock. */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "storage/grouping.h"
#include "storage/index.h"
#include "tests/unit/test.h"

static vg_route_cfg_t route = {
    .name = "bone-ct", .model = "bone", .modality = "CT", .min_slices = 3,
    .max_slice_thickness = 5,
};

static void make_config(vg_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->storage.series_quiet_seconds = 10;
    cfg->storage.study_quiet_seconds = 30;
    cfg->routes = &route;
    cfg->n_routes = 1;
}

static int put(vg_index_t *idx, const char *series, const char *modality, int n,
               double thickness, int64_t now)
{
    static int seq;
    for (int i = 0; i < n; i++) {
        vg_instance_meta_t m;
        memset(&m, 0, sizeof m);
        strcpy(m.study_uid, "1.2");
        strcpy(m.series_uid, series);
        snprintf(m.sop_instance_uid, sizeof m.sop_instance_uid, "%s.%d", series, ++seq);
        strcpy(m.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        strcpy(m.transfer_syntax, "1.2.840.10008.1.2.1");
        strcpy(m.modality, modality);
        m.slice_thickness = thickness;
        m.series_number = m.instance_number = -1;
        if (vg_index_put_instance(idx, &m, "studies/x", 10, "CT1", now) < 0)
            return -1;
    }
    return 0;
}

static void text_of(vg_index_t *idx, const char *sql, char *out, size_t len)
{
    sqlite3_stmt *st;
    out[0] = '\0';
    if (sqlite3_prepare_v2(vg_index_db(idx), sql, -1, &st, NULL) != SQLITE_OK)
        return;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, len, "%s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

TEST_IMPL(grouping_series_then_study)
{
    vg_index_t *idx = test_open_index();
    vg_config_t cfg;
    make_config(&cfg);
    ASSERT(idx);
    ASSERT_EQ(put(idx, "1.2.1", "CT", 5, 1.0, 1000), 0);
    ASSERT_EQ(put(idx, "1.2.2", "MR", 5, 1.0, 4000), 0);
    vg_grouping_result_t res;
    int64_t due;
    /* Nothing due before 11 s after the last instance of 1.2.1. */
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 10999, &due, &res), 0);
    ASSERT_EQ(res.series_completed, 0);
    ASSERT_EQ(due, 11000);
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 11000, &due, &res), 0);
    ASSERT_EQ(res.series_completed, 1);
    ASSERT_EQ(res.jobs_queued, 1);
    ASSERT_EQ(due, 14000);
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 14000, &due, &res), 0);
    ASSERT_EQ(res.series_completed, 1);
    ASSERT_EQ(res.series_skipped, 1);
    ASSERT_EQ(res.studies_completed, 0);
    ASSERT_EQ(due, 34000); /* the study: 30 s after its last instance */
    char buf[256];
    text_of(idx, "SELECT route_reason FROM series WHERE series_uid = '1.2.2'", buf,
            sizeof buf);
    ASSERT_STR_EQ(buf, "route bone-ct takes CT, not MR");
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 34000, &due, &res), 0);
    ASSERT_EQ(res.studies_completed, 1);
    ASSERT_EQ(due, -1);
    text_of(idx, "SELECT state FROM studies", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "complete");
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(grouping_reopen_supersedes)
{
    vg_index_t *idx = test_open_index();
    vg_config_t cfg;
    make_config(&cfg);
    vg_grouping_result_t res;
    int64_t due;
    ASSERT_EQ(put(idx, "1.2.1", "CT", 4, 2.5, 0), 0);
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 10000, &due, &res), 0);
    ASSERT_EQ(res.jobs_queued, 1);
    /* A late instance re-opens the series and the study. */
    ASSERT_EQ(put(idx, "1.2.1", "CT", 1, 2.5, 20000), 0);
    char buf[64];
    text_of(idx, "SELECT state FROM series", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "receiving");
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 29999, &due, &res), 0);
    ASSERT_EQ(res.series_completed, 0);
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 30000, &due, &res), 0);
    ASSERT_EQ(res.jobs_queued, 1);
    text_of(idx, "SELECT group_concat(version || ':' || state, ',') FROM"
                 " (SELECT version, state FROM jobs ORDER BY version)", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:superseded,2:queued");
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(grouping_route_rules)
{
    char why[256];
    ASSERT_EQ(vg_route_takes(&route, "CT", 3, 5.0, why, sizeof why), 1);
    ASSERT_EQ(vg_route_takes(&route, "CT", 2, 1.0, why, sizeof why), 0);
    ASSERT_STR_EQ(why, "route bone-ct needs at least 3 slices, series has 2");
    ASSERT_EQ(vg_route_takes(&route, "CT", 30, 5.5, why, sizeof why), 0);
    ASSERT_STR_EQ(why, "route bone-ct needs slice thickness <= 5 mm, series has 5.5 mm");
    ASSERT_EQ(vg_route_takes(&route, "CT", 30, 0, why, sizeof why), 0);
    ASSERT_STR_CONTAINS(why, "series has none");
    ASSERT_EQ(vg_route_takes(&route, "", 30, 1, why, sizeof why), 0);
    ASSERT_STR_EQ(why, "route bone-ct takes CT, not (no modality)");
    return 0;
}

/* --- grouped routes: one job per study, and the files of a job --------- */

#include "server/error.h"
#include "storage/queue.h"

static vg_route_cfg_t breast = {
    .name = "breast", .model = "breast", .modality = "MG,US", .min_slices = 1,
    .group = "study", .group_window_hours = 24,
};

/* Where a study is and when, for the grouping lookups. */
typedef struct {
    const char *study, *patient, *accession, *date, *time;
} study_t;

/* N instances of SERIES (MODALITY) in study S at NOW; files SERIES/K.dcm. */
static int put_in(vg_index_t *idx, const study_t *s, const char *series,
                  const char *modality, int n, int64_t now)
{
    static int seq;
    for (int i = 0; i < n; i++) {
        vg_instance_meta_t m;
        memset(&m, 0, sizeof m);
        snprintf(m.study_uid, sizeof m.study_uid, "%s", s->study);
        snprintf(m.series_uid, sizeof m.series_uid, "%s", series);
        snprintf(m.patient_id, sizeof m.patient_id, "%s", s->patient);
        snprintf(m.accession, sizeof m.accession, "%s", s->accession);
        snprintf(m.study_date, sizeof m.study_date, "%s", s->date);
        snprintf(m.study_time, sizeof m.study_time, "%s", s->time);
        snprintf(m.sop_instance_uid, sizeof m.sop_instance_uid, "%s.%d", series, ++seq);
        strcpy(m.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1.2");
        strcpy(m.transfer_syntax, "1.2.840.10008.1.2.1");
        snprintf(m.modality, sizeof m.modality, "%s", modality);
        m.slice_thickness = strcmp(modality, "CT") == 0 ? 1.0 : 0;
        m.series_number = -1;
        m.instance_number = i + 1;
        char rel[256];
        snprintf(rel, sizeof rel, "%s/%d.dcm", series, i + 1);
        if (vg_index_put_instance(idx, &m, rel, 10, "MG1", now) < 0)
            return -1;
    }
    return 0;
}

/* Every series complete, as they are by the time a job of their group
 * runs. */
static int complete_all(vg_index_t *idx)
{
    return sqlite3_exec(vg_index_db(idx), "UPDATE series SET state = 'complete'", NULL, NULL,
                        NULL) == SQLITE_OK
               ? 0
               : -1;
}

/* Marks SERIES as still receiving instances. */
static int still_receiving(vg_index_t *idx, const char *series)
{
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE series SET state = 'receiving' WHERE series_uid = '%s'",
             series);
    return sqlite3_exec(vg_index_db(idx), sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* The files of a job of ROUTE for STUDY, joined by spaces, in *out;
 * returns vg_group_files' code. */
static int files_of(vg_index_t *idx, const vg_route_cfg_t *r, const char *series,
                    const char *study, char *out, size_t len)
{
    vg_job_t job;
    memset(&job, 0, sizeof job);
    snprintf(job.series_uid, sizeof job.series_uid, "%s", series);
    snprintf(job.study_uid, sizeof job.study_uid, "%s", study);
    char **paths = (char **)1;
    int n = -1;
    int rc = vg_group_files(idx, "/data", r, &job, &paths, &n);
    out[0] = '\0';
    size_t used = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? " " : "", paths[i]);
    if (rc == 0)
        free(paths);
    else if (paths != NULL || n != 0)
        return -9999; /* a failure must leave nothing to free */
    return rc;
}

static void make_config2(vg_config_t *cfg, vg_route_cfg_t *routes)
{
    make_config(cfg);
    routes[0] = route;
    routes[1] = breast;
    cfg->routes = routes;
    cfg->n_routes = 2;
}

TEST_IMPL(grouping_study_route_one_job)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    vg_config_t cfg;
    vg_route_cfg_t routes[2];
    make_config2(&cfg, routes);
    study_t s = {"1.3", "P1", "A1", "20261122", ""};
    ASSERT_EQ(put_in(idx, &s, "1.3.1", "MG", 4, 0), 0);
    ASSERT_EQ(put_in(idx, &s, "1.3.2", "US", 2, 0), 0);
    ASSERT_EQ(put_in(idx, &s, "1.3.3", "CT", 5, 0), 0);
    ASSERT_EQ(put_in(idx, &s, "1.3.4", "SR", 1, 0), 0);
    vg_grouping_result_t res;
    int64_t due;
    /* The series: the CT one gets its bone job; MG and US wait for the
     * study, marked queued; the SR is taken by no route. */
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 10000, &due, &res), 0);
    ASSERT_EQ(res.series_completed, 4);
    ASSERT_EQ(res.jobs_queued, 1);
    ASSERT_EQ(res.series_skipped, 1);
    char buf[512];
    text_of(idx, "SELECT group_concat(series_uid || ' ' || route_state || ' ' || route_reason,"
                 " '; ') FROM (SELECT * FROM series ORDER BY series_uid)", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1.3.1 queued breast (grouped by study); "
                       "1.3.2 queued breast (grouped by study); "
                       "1.3.3 queued bone-ct v1; "
                       "1.3.4 skipped route breast takes MG or US, not SR");
    text_of(idx, "SELECT group_concat(series_uid || ' ' || route, ',') FROM jobs", buf,
            sizeof buf);
    ASSERT_STR_EQ(buf, "1.3.3 bone-ct");
    /* The study: one breast job, named by the study's UID. */
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 30000, &due, &res), 0);
    ASSERT_EQ(res.studies_completed, 1);
    ASSERT_EQ(res.jobs_queued, 1);
    text_of(idx, "SELECT group_concat(series_uid || ' ' || study_uid || ' ' || route || ' ' ||"
                 " model || ' v' || version || ' ' || state, ',') FROM jobs"
                 " WHERE route = 'breast'", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1.3 1.3 breast breast v1 queued");
    /* A late US image re-opens the study; its completion supersedes. */
    ASSERT_EQ(put_in(idx, &s, "1.3.2", "US", 1, 40000), 0);
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 70000, &due, &res), 0);
    ASSERT_EQ(res.series_completed, 1);
    ASSERT_EQ(res.studies_completed, 1);
    ASSERT_EQ(res.jobs_queued, 1); /* the breast job only: no series job */
    text_of(idx, "SELECT group_concat(version || ':' || state, ',') FROM"
                 " (SELECT version, state FROM jobs WHERE route = 'breast' ORDER BY version)",
            buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:superseded,2:queued");
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(grouping_study_route_needs_a_series)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    vg_config_t cfg;
    vg_route_cfg_t routes[2];
    make_config2(&cfg, routes);
    routes[1].min_slices = 3;
    study_t ct = {"1.4", "P1", "A1", "20261122", ""};
    study_t mg = {"1.5", "P1", "A1", "20261122", ""};
    ASSERT_EQ(put_in(idx, &ct, "1.4.1", "CT", 5, 0), 0);
    ASSERT_EQ(put_in(idx, &mg, "1.5.1", "MG", 2, 0), 0); /* under min_slices */
    vg_grouping_result_t res;
    int64_t due;
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 10000, &due, &res), 0);
    ASSERT_EQ(vg_grouping_tick(idx, &cfg, 30000, &due, &res), 0);
    ASSERT_EQ(res.studies_completed, 2);
    ASSERT_EQ(res.jobs_queued, 0);
    char buf[256];
    text_of(idx, "SELECT count(*) FROM jobs WHERE route = 'breast'", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "0");
    text_of(idx, "SELECT route_reason FROM series WHERE series_uid = '1.5.1'", buf,
            sizeof buf);
    ASSERT_STR_EQ(buf, "route breast needs at least 3 slices, series has 2");
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(grouping_route_takes_a_list)
{
    char why[256];
    vg_route_cfg_t r = breast;
    ASSERT_EQ(vg_route_takes(&r, "MG", 1, 0, why, sizeof why), 1);
    ASSERT_EQ(vg_route_takes(&r, "US", 1, 0, why, sizeof why), 1);
    ASSERT_EQ(vg_route_takes(&r, "M", 1, 0, why, sizeof why), 0);
    ASSERT_STR_EQ(why, "route breast takes MG or US, not M");
    ASSERT_EQ(vg_route_takes(&r, "", 1, 0, why, sizeof why), 0);
    ASSERT_STR_EQ(why, "route breast takes MG or US, not (no modality)");
    snprintf(r.modality, sizeof r.modality, "MG, US  DX");
    ASSERT_EQ(vg_route_takes(&r, "DX", 1, 0, why, sizeof why), 1);
    ASSERT_EQ(vg_route_takes(&r, "MG,US", 1, 0, why, sizeof why), 0);
    ASSERT_STR_EQ(why, "route breast takes MG, US or DX, not MG,US");
    ASSERT_EQ(vg_route_is_grouped(&r), 1);
    ASSERT_EQ(vg_route_is_grouped(&route), 0); /* group "" is series */
    snprintf(r.group, sizeof r.group, "series");
    ASSERT_EQ(vg_route_is_grouped(&r), 0);
    return 0;
}

TEST_IMPL(grouping_files_series_and_study)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    study_t s = {"1.3", "P1", "A1", "20261122", ""};
    ASSERT_EQ(put_in(idx, &s, "1.3.1", "MG", 2, 0), 0);
    ASSERT_EQ(put_in(idx, &s, "1.3.2", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &s, "1.3.3", "CT", 2, 0), 0);
    ASSERT_EQ(complete_all(idx), 0);
    char buf[1024];
    /* Series grouping: the job's series, as vg_index_series_files. */
    ASSERT_EQ(files_of(idx, &route, "1.3.3", "1.3", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/1.3.3/1.dcm /data/1.3.3/2.dcm");
    /* Study grouping: the route's modalities in the study, not the CT. */
    ASSERT_EQ(files_of(idx, &breast, "1.3", "1.3", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/1.3.1/1.dcm /data/1.3.1/2.dcm /data/1.3.2/1.dcm");
    /* Nothing left: an unknown study, a series without files. */
    ASSERT_EQ(files_of(idx, &breast, "1.9", "1.9", buf, sizeof buf), VG_ENOTFOUND);
    ASSERT_EQ(files_of(idx, &route, "1.3.9", "1.3", buf, sizeof buf), VG_ENOTFOUND);
    vg_route_cfg_t mr = breast;
    snprintf(mr.modality, sizeof mr.modality, "MR");
    ASSERT_EQ(files_of(idx, &mr, "1.3", "1.3", buf, sizeof buf), VG_ENOTFOUND);
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(grouping_files_accession)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    study_t a = {"2.1", "P1", "ACC1", "20261120", ""};
    study_t b = {"2.2", "P1", "ACC1", "20261121", ""}; /* same accession */
    study_t c = {"2.3", "P1", "ACC2", "20261120", ""}; /* another accession */
    study_t d = {"2.4", "P1", "", "20261120", ""};     /* none */
    study_t e = {"2.5", "P1", "", "20261120", ""};     /* none either */
    study_t f = {"2.6", "P9", "ACC1", "20261120", ""}; /* ACC1 from another RIS */
    ASSERT_EQ(put_in(idx, &a, "2.1.1", "MG", 2, 0), 0);
    ASSERT_EQ(put_in(idx, &a, "2.1.2", "CT", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &b, "2.2.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &c, "2.3.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &d, "2.4.1", "MG", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &e, "2.5.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &f, "2.6.1", "US", 1, 0), 0);
    vg_route_cfg_t r = breast;
    snprintf(r.group, sizeof r.group, "accession");
    ASSERT_EQ(complete_all(idx), 0);
    char buf[1024];
    ASSERT_EQ(files_of(idx, &r, "2.1", "2.1", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/2.1.1/1.dcm /data/2.1.1/2.dcm /data/2.2.1/1.dcm");
    ASSERT_EQ(files_of(idx, &r, "2.2", "2.2", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/2.1.1/1.dcm /data/2.1.1/2.dcm /data/2.2.1/1.dcm");
    ASSERT_EQ(files_of(idx, &r, "2.3", "2.3", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/2.3.1/1.dcm");
    /* No accession number: the study alone, never every study without. */
    ASSERT_EQ(files_of(idx, &r, "2.4", "2.4", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/2.4.1/1.dcm");
    /* The same accession number for another patient is another group. */
    ASSERT_EQ(files_of(idx, &r, "2.6", "2.6", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/2.6.1/1.dcm");
    /* A series still arriving waits for its own study's job. */
    ASSERT_EQ(still_receiving(idx, "2.2.1"), 0);
    ASSERT_EQ(files_of(idx, &r, "2.1", "2.1", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/2.1.1/1.dcm /data/2.1.1/2.dcm");
    vg_index_close(idx);
    return 0;
}

TEST_IMPL(grouping_files_patient)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx);
    const int64_t H = 3600 * 1000;
    study_t a = {"3.1", "P1", "X1", "20261101", ""};
    study_t b = {"3.2", "P1", "X2", "20261102", ""};       /* 24 h later: in */
    study_t c = {"3.3", "P1", "X3", "20261110", ""};       /* 9 days: out */
    study_t d = {"3.4", "P2", "X4", "20261101", ""};       /* another patient */
    study_t e = {"3.5", "", "X5", "20261101", ""};         /* no patient ID */
    study_t f = {"3.6", "", "X6", "20261101", ""};
    study_t g = {"3.7", "P3", "X7", "20261101", "080000"};
    study_t h = {"3.8", "P3", "X8", "20261102", "090000"}; /* 25 h later */
    study_t i = {"3.9", "P4", "X9", "", ""};               /* no dates: received */
    study_t j = {"3.10", "P4", "X10", "", ""};
    study_t k = {"3.11", "P4", "X11", "", ""};
    ASSERT_EQ(put_in(idx, &a, "3.1.1", "MG", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &b, "3.2.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &c, "3.3.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &d, "3.4.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &e, "3.5.1", "MG", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &f, "3.6.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &g, "3.7.1", "MG", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &h, "3.8.1", "US", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &i, "3.9.1", "MG", 1, 0), 0);
    ASSERT_EQ(put_in(idx, &j, "3.10.1", "US", 1, 3 * H), 0);
    ASSERT_EQ(put_in(idx, &k, "3.11.1", "US", 1, 30 * H), 0);
    vg_route_cfg_t r = breast;
    snprintf(r.group, sizeof r.group, "patient");
    ASSERT_EQ(complete_all(idx), 0);
    char buf[1024];
    ASSERT_EQ(files_of(idx, &r, "3.1", "3.1", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.1.1/1.dcm /data/3.2.1/1.dcm");
    ASSERT_EQ(files_of(idx, &r, "3.2", "3.2", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.1.1/1.dcm /data/3.2.1/1.dcm");
    ASSERT_EQ(files_of(idx, &r, "3.3", "3.3", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.3.1/1.dcm");
    ASSERT_EQ(files_of(idx, &r, "3.4", "3.4", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.4.1/1.dcm");
    /* No patient ID: the study alone. */
    ASSERT_EQ(files_of(idx, &r, "3.5", "3.5", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.5.1/1.dcm");
    /* Date and time: 25 h apart is outside 24 h, inside 48 h. */
    ASSERT_EQ(files_of(idx, &r, "3.7", "3.7", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.7.1/1.dcm");
    r.group_window_hours = 48;
    ASSERT_EQ(files_of(idx, &r, "3.8", "3.8", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.7.1/1.dcm /data/3.8.1/1.dcm");
    /* 9 days: inside a window of 216 h, not of 215 h. */
    r.group_window_hours = 215;
    ASSERT_EQ(files_of(idx, &r, "3.3", "3.3", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.2.1/1.dcm /data/3.3.1/1.dcm");
    r.group_window_hours = 216;
    ASSERT_EQ(files_of(idx, &r, "3.3", "3.3", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.1.1/1.dcm /data/3.2.1/1.dcm /data/3.3.1/1.dcm");
    /* Without dates, the times of receipt: 3 h in, 30 h out. */
    r.group_window_hours = 24;
    ASSERT_EQ(files_of(idx, &r, "3.9", "3.9", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.9.1/1.dcm /data/3.10.1/1.dcm");
    ASSERT_EQ(files_of(idx, &r, "3.11", "3.11", buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/3.11.1/1.dcm");
    vg_index_close(idx);
    return 0;
}
