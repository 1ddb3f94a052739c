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
