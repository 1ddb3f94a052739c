/* Clinical values: parsing (every error's text), storing per study with
 * null clearing one value, the JSON view, and re-queueing a study's
 * grouped analysis when its values change. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "server/error.h"
#include "storage/clinical.h"
#include "storage/index.h"
#include "storage/queue.h"
#include "tests/unit/test.h"

static char why[256];

static int parse(const char *json, vg_clinical_t *c)
{
    why[0] = '\0';
    return vg_clinical_parse(json, strlen(json), c, why, sizeof why);
}

TEST_IMPL(clinical_names_in_model_order)
{
    const char *want[VG_CLINICAL_N] = {
        "age", "bmi", "family_history", "palpable_lump", "nipple_discharge", "pain",
        "prior_biopsy", "menopausal_status", "hormone_therapy", "breast_density"};
    for (int i = 0; i < VG_CLINICAL_N; i++)
        ASSERT_STR_EQ(vg_clinical_name(i), want[i]);
    ASSERT(vg_clinical_name(-1) == NULL);
    ASSERT(vg_clinical_name(VG_CLINICAL_N) == NULL);
    return 0;
}

TEST_IMPL(clinical_parse_values)
{
    vg_clinical_t c;
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"age\": 52, \"bmi\": 27.5, \"family_history\": true,"
                    " \"palpable_lump\": false, \"nipple_discharge\": false,"
                    " \"pain\": true, \"prior_biopsy\": false,"
                    " \"menopausal_status\": \"peri\", \"hormone_therapy\": true,"
                    " \"breast_density\": \"C\"}\n", &c),
              0);
    const double v[VG_CLINICAL_N] = {52, 27.5, 1, 0, 0, 1, 0, 0.5, 1, 2.0 / 3};
    for (int i = 0; i < VG_CLINICAL_N; i++) {
        ASSERT_EQ(c.present[i], 1);
        ASSERT_DBL_NEAR(c.value[i], v[i], 1e-12);
    }
    /* Codes map onto the model's numbers. */
    const char *meno[] = {"pre", "peri", "post"};
    const double meno_v[] = {0, 0.5, 1};
    for (int i = 0; i < 3; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"menopausal_status\": \"%s\"}", meno[i]);
        ASSERT_EQ(parse(text, &c), 0);
        ASSERT_DBL_NEAR(c.value[VG_CLIN_MENOPAUSAL_STATUS], meno_v[i], 0);
    }
    const char *dens[] = {"A", "B", "C", "D"};
    for (int i = 0; i < 4; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"breast_density\": \"%s\"}", dens[i]);
        ASSERT_EQ(parse(text, &c), 0);
        ASSERT_DBL_NEAR(c.value[VG_CLIN_BREAST_DENSITY], i / 3.0, 1e-12);
    }
    /* The bounds are inside the range; null marks a value cleared; values
     * not named stay as they were. */
    ASSERT_EQ(parse("{\"age\": 18, \"bmi\": 80}", &c), 0);
    ASSERT_DBL_NEAR(c.value[VG_CLIN_AGE], 18, 0);
    ASSERT_DBL_NEAR(c.value[VG_CLIN_BMI], 80, 0);
    ASSERT_EQ(parse("{\"age\": 110, \"bmi\": 10, \"pain\": null}", &c), 0);
    ASSERT_DBL_NEAR(c.value[VG_CLIN_AGE], 110, 0);
    ASSERT_EQ(c.present[VG_CLIN_PAIN], -1);
    ASSERT_EQ(c.present[VG_CLIN_FAMILY_HISTORY], 1);
    /* An empty object changes nothing. */
    vg_clinical_t before = c;
    ASSERT_EQ(parse(" {} ", &c), 0);
    ASSERT_EQ(memcmp(&before, &c, sizeof c), 0);
    return 0;
}

TEST_IMPL(clinical_parse_errors)
{
    static const struct {
        const char *json, *why;
    } cases[] = {
        {"{\"smoker\": true}", "unknown clinical value \"smoker\""},
        {"{\"Age\": 52}", "unknown clinical value \"Age\""},
        {"{\"age\": 250}", "age: 250 is out of range 18..110"},
        {"{\"age\": 17.5}", "age: 17.5 is out of range 18..110"},
        {"{\"age\": \"52\"}", "age: expected a number"},
        {"{\"age\": true}", "age: expected a number"},
        {"{\"bmi\": 9}", "bmi: 9 is out of range 10..80"},
        {"{\"bmi\": 80.5}", "bmi: 80.5 is out of range 10..80"},
        {"{\"family_history\": 1}", "family_history: expected true or false"},
        {"{\"pain\": \"yes\"}", "pain: expected true or false"},
        {"{\"prior_biopsy\": \"true\"}", "prior_biopsy: expected true or false"},
        {"{\"menopausal_status\": \"after\"}",
         "menopausal_status: expected \"pre\", \"peri\" or \"post\""},
        {"{\"menopausal_status\": 1}",
         "menopausal_status: expected \"pre\", \"peri\" or \"post\""},
        {"{\"breast_density\": \"E\"}", "breast_density: expected \"A\", \"B\", \"C\" or \"D\""},
        {"{\"breast_density\": \"c\"}", "breast_density: expected \"A\", \"B\", \"C\" or \"D\""},
        {"{\"breast_density\": 3}", "breast_density: expected \"A\", \"B\", \"C\" or \"D\""},
        {"{\"age\": 50, \"age\": 60}", "age: given twice"},
        {"[1, 2]", "body must be a JSON object"},
        {"\"age\"", "body must be a JSON object"},
        {"", "body must be a JSON object"},
        {"{\"age\": 52", "body must be a JSON object"},
        {"{\"age\": 52} x", "body must be a JSON object"},
        {"{\"age\": 52}{}", "body must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vg_clinical_t c, before;
        memset(&c, 0, sizeof c);
        c.value[VG_CLIN_AGE] = 40;
        c.present[VG_CLIN_AGE] = 1;
        before = c;
        /* A valid value before the wrong one is not taken either. */
        int rc = parse(cases[i].json, &c);
        if (rc != -EINVAL || strcmp(why, cases[i].why) != 0)
            TEST__FAIL("%s: %d \"%s\", want \"%s\"", cases[i].json, rc, why, cases[i].why);
        ASSERT_EQ(memcmp(&before, &c, sizeof c), 0);
    }
    vg_clinical_t c;
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"bmi\": 22, \"smoker\": false}", &c), -EINVAL);
    ASSERT_EQ(c.present[VG_CLIN_BMI], 0);
    /* The length is honoured: what follows is not read. */
    ASSERT_EQ(vg_clinical_parse("{\"age\": 60}garbage", 11, &c, why, sizeof why), 0);
    ASSERT_DBL_NEAR(c.value[VG_CLIN_AGE], 60, 0);
    /* err may be left out. */
    ASSERT_EQ(vg_clinical_parse("{\"x\": 1}", 8, &c, NULL, 0), -EINVAL);
    return 0;
}

TEST_IMPL(clinical_store_and_json)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    vg_clinical_t c;
    char json[1024];
    /* Nothing posted: all missing, an empty object. */
    ASSERT_EQ(vg_clinical_get(idx, "1.2.3", &c), 0);
    for (int i = 0; i < VG_CLINICAL_N; i++)
        ASSERT_EQ(c.present[i], 0);
    ASSERT_EQ(vg_clinical_to_json(&c, json, sizeof json), 0);
    ASSERT_STR_EQ(json, "{}");

    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"age\": 52, \"bmi\": 23.4, \"pain\": false,"
                    " \"menopausal_status\": \"post\", \"breast_density\": \"B\"}", &c), 0);
    ASSERT_EQ(vg_clinical_put(idx, "1.2.3", &c, 1000), 0);
    ASSERT_EQ(vg_clinical_get(idx, "1.2.3", &c), 0);
    ASSERT_EQ(vg_clinical_to_json(&c, json, sizeof json), 0);
    ASSERT_STR_EQ(json, "{\"age\":52,\"bmi\":23.4,\"pain\":false,"
                        "\"menopausal_status\":\"post\",\"breast_density\":\"B\"}");
    /* Another study's values are its own. */
    ASSERT_EQ(vg_clinical_get(idx, "1.2.4", &c), 0);
    ASSERT_EQ(c.present[VG_CLIN_AGE], 0);

    /* A later post keeps what it does not name, replaces what it does and
     * removes what it sets to null. */
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"age\": 53, \"pain\": null, \"family_history\": true}", &c), 0);
    ASSERT_EQ(vg_clinical_put(idx, "1.2.3", &c, 2000), 0);
    ASSERT_EQ(vg_clinical_get(idx, "1.2.3", &c), 0);
    ASSERT_EQ(c.present[VG_CLIN_PAIN], 0);
    ASSERT_EQ(c.present[VG_CLIN_FAMILY_HISTORY], 1);
    ASSERT_DBL_NEAR(c.value[VG_CLIN_AGE], 53, 0);
    ASSERT_DBL_NEAR(c.value[VG_CLIN_BREAST_DENSITY], 1.0 / 3, 1e-12);
    ASSERT_EQ(vg_clinical_to_json(&c, json, sizeof json), 0);
    ASSERT_STR_EQ(json, "{\"age\":53,\"bmi\":23.4,\"family_history\":true,"
                        "\"menopausal_status\":\"post\",\"breast_density\":\"B\"}");
    sqlite3_stmt *st;
    ASSERT_EQ(sqlite3_prepare_v2(vg_index_db(idx),
                                 "SELECT group_concat(name || '=' || value || '@' || updated_ms,"
                                 " ' ') FROM (SELECT * FROM clinical_values ORDER BY name)",
                                 -1, &st, NULL),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_STR_EQ((const char *)sqlite3_column_text(st, 0),
                  "age=53.0@2000 bmi=23.4@1000 breast_density=0.333333333333333@1000"
                  " family_history=1.0@2000 menopausal_status=1.0@1000");
    sqlite3_finalize(st);
    /* Too small a buffer is said, not cut. */
    ASSERT_EQ(vg_clinical_to_json(&c, json, 16), VG_ETOOBIG);
    vg_index_close(idx);
    return 0;
}

static int put_study(vg_index_t *idx, const char *study)
{
    vg_instance_meta_t m;
    memset(&m, 0, sizeof m);
    snprintf(m.study_uid, sizeof m.study_uid, "%s", study);
    snprintf(m.series_uid, sizeof m.series_uid, "%s.1", study);
    snprintf(m.sop_instance_uid, sizeof m.sop_instance_uid, "%s.1.1", study);
    snprintf(m.sop_class_uid, sizeof m.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1.2");
    snprintf(m.transfer_syntax, sizeof m.transfer_syntax, "1.2.840.10008.1.2.1");
    snprintf(m.modality, sizeof m.modality, "MG");
    m.series_number = m.instance_number = -1;
    return vg_index_put_instance(idx, &m, "x.dcm", 10, "MG1", 0);
}

/* "version:state" of STUDY's jobs of ROUTE, by version. */
static void versions(vg_index_t *idx, const char *series, char *out, size_t len)
{
    sqlite3_stmt *st;
    out[0] = '\0';
    if (sqlite3_prepare_v2(vg_index_db(idx),
            "SELECT group_concat(version || ':' || state, ',') FROM (SELECT version, state"
            " FROM jobs WHERE series_uid = ?1 ORDER BY route, version)", -1, &st,
            NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, series, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, len, "%s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

TEST_IMPL(clinical_update_requeues_analysed_study)
{
    vg_index_t *idx = test_open_index();
    ASSERT(idx != NULL);
    ASSERT_EQ(put_study(idx, "1.5"), 0);
    vg_clinical_t c, now;
    int requeued = -1;
    char buf[256];
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"age\": 61}", &c), 0);
    /* An unknown study: nothing stored. */
    ASSERT_EQ(vg_clinical_update(idx, "1.9", &c, 1000, &now, &requeued), VG_ENOTFOUND);
    ASSERT_EQ(requeued, 0);
    ASSERT_EQ(vg_clinical_get(idx, "1.9", &now), 0);
    ASSERT_EQ(now.present[VG_CLIN_AGE], 0);

    /* No job yet: stored, nothing to queue. */
    ASSERT_EQ(vg_clinical_update(idx, "1.5", &c, 1000, &now, &requeued), 0);
    ASSERT_EQ(requeued, 0);
    ASSERT_EQ(now.present[VG_CLIN_AGE], 1);
    ASSERT_DBL_NEAR(now.value[VG_CLIN_AGE], 61, 0);

    /* A queued job reads the values when it runs: left alone. */
    vg_job_t job;
    ASSERT_EQ(vg_queue_push(idx, "1.5", "1.5", "breast", "breast", 1000, NULL, NULL), 0);
    ASSERT_EQ(vg_queue_push(idx, "1.5.1", "1.5", "other", "other", 1000, NULL, NULL), 0);
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"bmi\": 30}", &c), 0);
    ASSERT_EQ(vg_clinical_update(idx, "1.5", &c, 2000, &now, &requeued), 0);
    ASSERT_EQ(requeued, 0);
    versions(idx, "1.5", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:queued");

    /* Done: a new version. */
    ASSERT_EQ(vg_queue_lease(idx, "breast", "w", 60000, 2000, &job), 0);
    ASSERT_EQ(vg_queue_done(idx, job.id, 2500), 0);
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"palpable_lump\": true}", &c), 0);
    ASSERT_EQ(vg_clinical_update(idx, "1.5", &c, 3000, &now, &requeued), 0);
    ASSERT_EQ(requeued, 1);
    versions(idx, "1.5", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:done,2:queued");
    /* The per-series job of another route is not touched. */
    versions(idx, "1.5.1", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:queued");

    /* The same values again change nothing: no new analysis. */
    ASSERT_EQ(vg_queue_lease(idx, "breast", "w", 60000, 3000, &job), 0);
    ASSERT_EQ(vg_clinical_update(idx, "1.5", &c, 3500, &now, &requeued), 0);
    ASSERT_EQ(requeued, 0);
    versions(idx, "1.5", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:done,2:running");

    /* Running (it may have read the old values): superseded by a new one;
     * a cleared value is a change too. */
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"palpable_lump\": null}", &c), 0);
    ASSERT_EQ(vg_clinical_update(idx, "1.5", &c, 4000, &now, &requeued), 0);
    ASSERT_EQ(requeued, 1);
    ASSERT_EQ(now.present[VG_CLIN_PALPABLE_LUMP], 0);
    versions(idx, "1.5", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:done,2:superseded,3:queued");

    /* Failed: analysed again too. */
    ASSERT_EQ(vg_queue_lease(idx, "breast", "w", 60000, 4000, &job), 0);
    ASSERT_EQ(vg_queue_fail(idx, job.id, "model error", 1, 4500), 0);
    memset(&c, 0, sizeof c);
    ASSERT_EQ(parse("{\"age\": 62}", &c), 0);
    ASSERT_EQ(vg_clinical_update(idx, "1.5", &c, 5000, &now, &requeued), 0);
    ASSERT_EQ(requeued, 1);
    versions(idx, "1.5", buf, sizeof buf);
    ASSERT_STR_EQ(buf, "1:done,2:superseded,3:failed,4:queued");
    vg_index_close(idx);
    return 0;
}
