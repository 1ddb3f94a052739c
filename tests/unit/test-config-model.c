/* Unit tests of [model NAME] sections and of many named sections at once
 * (config/config.c, config/config_values.c). */
#include "tests/unit/config_fixture.h"

TEST_IMPL(config_model_defaults)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[node]\n"
                        "[model bone]\n"                      /* 2 */
                        "manifest = /srv/m/bone/manifest.json\n",
                        &cfg),
              0);
    ASSERT_STR_EQ(err, "");
    ASSERT_EQ(cfg->n_models, 1);
    const vg_model_cfg_t *m = &cfg->models[0];
    ASSERT_STR_EQ(m->name, "bone");
    ASSERT_STR_EQ(m->manifest, "/srv/m/bone/manifest.json");
    ASSERT_EQ(m->n_devices, 1);
    ASSERT_STR_EQ(m->devices[0], "cpu");
    ASSERT_EQ(m->threads, 2);
    ASSERT_EQ(m->max_attempts, 3);
    ASSERT_EQ(m->lease_seconds, 900);
    ASSERT_EQ(m->line, 2);
    ASSERT_EQ(cfg->n_routes, 0); /* a model no route uses is fine */
    vg_config_destroy(cfg);

    /* manifest is required; reported at the header. */
    ASSERT_EQ(load_bad("[node]\n[model bone]\nthreads = 4\n"),
              VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%smanifest: required in [model bone]",
             at(2));
    ASSERT_STR_EQ(err, want);
    return 0;
}

TEST_IMPL(config_model_devices)
{
    static const struct {
        const char *text;
        int n;
        const char *first, *last;
    } good[] = {{"cpu", 1, "cpu", "cpu"},
                {"cuda:0", 1, "cuda:0", "cuda:0"},
                {"cuda:63", 1, "cuda:63", "cuda:63"},
                {"cuda:0, cuda:1", 2, "cuda:0", "cuda:1"},
                {"  cuda:10 ,cuda:2\tcpu ", 3, "cuda:10", "cpu"},
                {"cuda:0 cuda:1 cuda:2 cuda:3 cuda:4 cuda:5 cuda:6 cpu", 8,
                 "cuda:0", "cpu"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char text[256];
        vg_config_t *cfg = NULL;
        snprintf(text, sizeof text, "[model m]\nmanifest = /m.json\n"
                 "devices = %s\n", good[i].text);
        if (load_text(text, &cfg) != 0)
            TEST__FAIL("devices = %s: %s", good[i].text, err);
        const vg_model_cfg_t *m = &cfg->models[0];
        ASSERT_EQ(m->n_devices, good[i].n);
        ASSERT_STR_EQ(m->devices[0], good[i].first);
        ASSERT_STR_EQ(m->devices[m->n_devices - 1], good[i].last);
        vg_config_destroy(cfg);
    }
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"gpu0", "devices: \"gpu0\" must be cpu or cuda:N with N 0..63"},
        {"cuda:x", "devices: \"cuda:x\" must be cpu or cuda:N"},
        {"cuda:", "devices: \"cuda:\" must be cpu or cuda:N"},
        {"cuda:64", "devices: \"cuda:64\" must be cpu or cuda:N"},
        {"cuda:01", "devices: \"cuda:01\" must be cpu or cuda:N"},
        {"cuda:-1", "devices: \"cuda:-1\" must be cpu or cuda:N"},
        {"CPU", "devices: \"CPU\" must be cpu or cuda:N"},
        {"cuda", "devices: \"cuda\" must be cpu or cuda:N"},
        {"cuda:0, cuda:1, cuda:0", "devices: \"cuda:0\" is listed twice"},
        {"cpu cpu", "devices: \"cpu\" is listed twice"},
        {"cpu cuda:0 cuda:1 cuda:2 cuda:3 cuda:4 cuda:5 cuda:6 cuda:7",
         "devices: more than 8 devices"},
        {"", "devices: lists 0 devices; must list 1..8"},
        {" , ", "devices: lists 0 devices; must list 1..8"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256], want[PATH_MAX + 128];
        snprintf(text, sizeof text, "[model m]\nmanifest = /m.json\n"
                 "devices = %s\n", bad[i].text);
        if (load_bad(text) != VG_EINVAL_CFG)
            TEST__FAIL("devices = %s was accepted", bad[i].text);
        snprintf(want, sizeof want, "%s%s", at(3), bad[i].msg);
        ASSERT_STR_CONTAINS(err, want);
        ASSERT_EQ(err_lines(), 1);
    }
    return 0;
}

TEST_IMPL(config_model_bounds)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[model m]\nmanifest = /m.json\nthreads = 64\n"
                        "max_attempts = 100\nlease_seconds = 10\n",
                        &cfg),
              0);
    ASSERT_EQ(cfg->models[0].threads, 64);
    ASSERT_EQ(cfg->models[0].max_attempts, 100);
    ASSERT_EQ(cfg->models[0].lease_seconds, 10);
    vg_config_destroy(cfg);
    ASSERT_EQ(load_text("[model m]\nmanifest = /m.json\nthreads = 1\n"
                        "max_attempts = 1\nlease_seconds = 86400\n",
                        &cfg),
              0);
    ASSERT_EQ(cfg->models[0].threads, 1);
    ASSERT_EQ(cfg->models[0].max_attempts, 1);
    ASSERT_EQ(cfg->models[0].lease_seconds, 86400);
    vg_config_destroy(cfg);

    int rc = load_bad("[model m]\n"                  /* 1 */
                      "manifest =\n"                 /* 2 */
                      "threads = 0\n"                /* 3 */
                      "max_attempts = 101\n"         /* 4 */
                      "lease_seconds = 9\n"          /* 5 */
                      "[model n]\n"                  /* 6 */
                      "manifest = /n.json\n"
                      "threads = 65\n"               /* 8 */
                      "max_attempts = 0\n"           /* 9 */
                      "lease_seconds = 86401\n"      /* 10 */
                      "bogus = 1\n"                  /* 11 */
                      "[model]\n"                    /* 12 */
                      "[model bad/name]\n"           /* 13 */
                      "[model n]\n");                /* 14 */
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
#define WANT(line, msg)                                                  \
    do {                                                                 \
        snprintf(want, sizeof want, "%s%s", at(line), msg);              \
        ASSERT_STR_CONTAINS(err, want);                                  \
    } while (0)
    WANT(2, "manifest: must not be empty");
    WANT(3, "threads: 0 is out of range 1..64");
    WANT(4, "max_attempts: 101 is out of range 1..100");
    WANT(5, "lease_seconds: 9 is out of range 10..86400 seconds");
    WANT(8, "threads: 65 is out of range 1..64");
    WANT(9, "max_attempts: 0 is out of range 1..100");
    WANT(10, "lease_seconds: 86401 is out of range 10..86400 seconds");
    WANT(11, "bogus: unknown key in [model n]");
    WANT(12, "[model]: needs a name, e.g. [model bone]");
    WANT(13, "[model bad/name]: name must be");
    WANT(14, "[model n]: duplicate section (first at line 6)");
#undef WANT
    ASSERT_EQ(err_lines(), 11);
    return 0;
}

TEST_IMPL(config_model_manifest_relative)
{
    char sub[PATH_MAX], path[PATH_MAX], want[PATH_MAX + 64];
    snprintf(sub, sizeof sub, "%s/etc", test_tmpdir());
    ASSERT_EQ(mkdir(sub, 0700), 0);
    ASSERT(write_file(path, sizeof path, "etc/vigil.conf",
                      "[model bone]\n"
                      "manifest = ../models/./bone//manifest.json\n"
                      "[model spine]\n"
                      "manifest = spine.json\n"));
    /* Loaded by a relative path from elsewhere: still the file's dir. */
    ASSERT_EQ(chdir(test_tmpdir()), 0);
    vg_config_t *cfg = NULL;
    ASSERT_EQ(vg_config_load("etc/vigil.conf", &cfg, err, sizeof err), 0);
    ASSERT_EQ(cfg->n_models, 2);
    snprintf(want, sizeof want, "%s/models/bone/manifest.json",
             real_tmpdir());
    ASSERT_STR_EQ(cfg->models[0].manifest, want);
    snprintf(want, sizeof want, "%s/etc/spine.json", real_tmpdir());
    ASSERT_STR_EQ(cfg->models[1].manifest, want);
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_route_unknown_model)
{
    int rc = load_bad("[route a]\n"          /* 1 */
                      "modality = CT\n"
                      "model = bone\n"       /* 3: after the model: found */
                      "[model bone]\n"       /* 4 */
                      "manifest = b.json\n"
                      "[route b]\n"          /* 6 */
                      "model = spine\n"      /* 7 */
                      "modality = MR\n"
                      "[model unused]\n"     /* 9: no route uses it */
                      "manifest = u.json\n"
                      "[route c]\n"          /* 11 */
                      "modality = CT\n"
                      "model = Bone\n");     /* 13: names are exact */
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%smodel: no [model spine] section", at(7));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smodel: no [model Bone] section", at(13));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 2);
    /* Sorted by line. */
    ASSERT(strstr(err, at(7)) == err);

    /* A model key that is itself wrong gives one error, not two. */
    ASSERT_EQ(load_bad("[route a]\nmodality = CT\nmodel = a/b\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(3));
    ASSERT_STR_CONTAINS(err, "model: \"a/b\" may contain only");
    ASSERT_EQ(err_lines(), 1);

    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[model bone]\nmanifest = b.json\n"
                        "[route a]\nmodality = CT\nmodel = bone\n",
                        &cfg),
              0);
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_find_model)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[model bone]\nmanifest = /b.json\n"
                        "[model spine-v2]\nmanifest = /s.json\n"
                        "devices = cuda:0\n",
                        &cfg),
              0);
    const vg_model_cfg_t *m = vg_config_find_model(cfg, "spine-v2");
    ASSERT(m != NULL);
    ASSERT(m == &cfg->models[1]);
    ASSERT_STR_EQ(m->manifest, "/s.json");
    ASSERT_STR_EQ(m->devices[0], "cuda:0");
    m = vg_config_find_model(cfg, "bone");
    ASSERT(m == &cfg->models[0]);
    ASSERT(vg_config_find_model(cfg, "Bone") == NULL);
    ASSERT(vg_config_find_model(cfg, "bon") == NULL);
    ASSERT(vg_config_find_model(cfg, "") == NULL);
    vg_config_destroy(cfg);
    ASSERT_EQ(load_text("[node]\n", &cfg), 0);
    ASSERT(vg_config_find_model(cfg, "bone") == NULL);
    vg_config_destroy(cfg);
    return 0;
}

/* Past the first allocation of each kind's array (4 sections). */
TEST_IMPL(config_many_sections)
{
    static char text[16384];
    size_t n = 0;
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "[model m%d]\nmanifest = /m%d.json\n"
                              "[ae a%d]\nae_title = A%d\nport = %d\n"
                              "host = 127.0.0.1\nrole = destination\n"
                              "[route r%d]\nmodel = m%d\nmodality = CT\n"
                              "destinations = a%d\n",
                              i, i, i, i, 100 + i, i, 9 - i, i);
    ASSERT_LT(n, sizeof text);
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text(text, &cfg), 0);
    ASSERT_EQ(cfg->n_models, 10);
    ASSERT_EQ(cfg->n_aes, 10);
    ASSERT_EQ(cfg->n_routes, 10);
    for (int i = 0; i < 10; i++) {
        char name[16], path[32];
        snprintf(name, sizeof name, "m%d", i);
        snprintf(path, sizeof path, "/m%d.json", i);
        const vg_model_cfg_t *m = vg_config_find_model(cfg, name);
        ASSERT(m == &cfg->models[i]);
        ASSERT_STR_EQ(m->manifest, path);
        ASSERT_EQ(m->line, 1 + 11 * i);
        ASSERT_EQ(cfg->aes[i].port, 100 + i);
        ASSERT_EQ(cfg->aes[i].line, 3 + 11 * i);
        snprintf(name, sizeof name, "m%d", 9 - i);
        ASSERT_STR_EQ(cfg->routes[i].model, name);
        ASSERT_EQ(cfg->routes[i].line, 8 + 11 * i);
    }
    vg_config_destroy(cfg);
    return 0;
}
