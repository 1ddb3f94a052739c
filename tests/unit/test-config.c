/* Unit tests of config/config.c and config/config_values.c: values,
 * defaults, and the file:line of every kind of error. Each test writes its
 * files into test_tmpdir(). [model] sections: test-config-model.c. */
#include "tests/unit/config_fixture.h"

TEST_IMPL(config_defaults_node_only)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[node]\n", &cfg), 0);
    ASSERT_STR_EQ(err, "");
    ASSERT_STR_EQ(cfg->node.ae_title, "VIGIL");
    ASSERT_EQ(cfg->node.port, 11112);
    ASSERT_EQ(cfg->node.max_associations, 16);
    ASSERT_EQ(cfg->node.accept_unknown_sources, 0);
    ASSERT_EQ(cfg->node.acse_timeout, 30);
    ASSERT_EQ(cfg->node.dimse_timeout, 60);
    ASSERT_EQ(cfg->node.shutdown_timeout, 30);
    ASSERT_EQ(cfg->node.log_level, VG_LOG_INFO);
    char want[PATH_MAX + 16];
    snprintf(want, sizeof want, "%s/var", real_tmpdir());
    ASSERT_STR_EQ(cfg->storage.dir, want);
    snprintf(want, sizeof want, "%s/vigil.conf", real_tmpdir());
    ASSERT_STR_EQ(cfg->path, want);
    ASSERT(cfg->storage.min_free_disk == (uint64_t)1 << 30);
    ASSERT_EQ(cfg->storage.series_quiet_seconds, 10);
    ASSERT_EQ(cfg->storage.study_quiet_seconds, 30);
    ASSERT_EQ(cfg->storage.on_duplicate, VG_DUP_KEEP);
    ASSERT_STR_EQ(cfg->http.bind, "127.0.0.1");
    ASSERT_EQ(cfg->http.port, 8080);
    ASSERT_EQ(cfg->n_aes, 0);
    ASSERT_EQ(cfg->n_routes, 0);
    ASSERT_EQ(cfg->n_models, 0);
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_every_type)
{
    vg_config_t *cfg = NULL;
    int rc = load_text("[node]\n"
                       "ae_title = MY NODE\n"
                       "port = 104\n"
                       "max_associations = 256\n"
                       "accept_unknown_sources = on\n"
                       "acse_timeout = 1\n"
                       "dimse_timeout = 3600\n"
                       "shutdown_timeout = 0\n"
                       "log_level = debug\n"
                       "[storage]\n"
                       "dir = /srv/vigil/../data/./x//\n"
                       "min_free_disk = 500M\n"
                       "series_quiet_seconds = 5\n"
                       "study_quiet_seconds = 5\n"
                       "on_duplicate = replace\n"
                       "[http]\n"
                       "bind = ::1\n"
                       "port = 9090\n"
                       "[ae pacs]\n"
                       "ae_title = ORTHANC\n"
                       "host = pacs.example.org\n"
                       "port = 4242\n"
                       "role = destination\n"
                       "[ae archive]\n"
                       "ae_title = ARCH\n"
                       "host = 10.1.2.3\n"
                       "port = 11113\n"
                       "role = Destination\n"
                       "[route bone-ct]\n"                          /* 29 */
                       "model = bone\n"
                       "modality = CT\n"
                       "min_slices = 20\n"
                       "max_slice_thickness = 2.5\n"
                       "destinations = pacs, archive\n"
                       "[model bone]\n"                             /* 35 */
                       "manifest = /opt/models/bone/manifest.json\n"
                       "devices = cuda:1 cpu,cuda:0\n"
                       "threads = 8\n"
                       "max_attempts = 5\n"
                       "lease_seconds = 600\n",
                       &cfg);
    ASSERT_EQ(rc, 0);
    ASSERT_STR_EQ(cfg->node.ae_title, "MY NODE");
    ASSERT_EQ(cfg->node.port, 104);
    ASSERT_EQ(cfg->node.max_associations, 256);
    ASSERT_EQ(cfg->node.accept_unknown_sources, 1);
    ASSERT_EQ(cfg->node.acse_timeout, 1);
    ASSERT_EQ(cfg->node.dimse_timeout, 3600);
    ASSERT_EQ(cfg->node.shutdown_timeout, 0);
    ASSERT_EQ(cfg->node.log_level, VG_LOG_DEBUG);
    ASSERT_STR_EQ(cfg->storage.dir, "/srv/data/x");
    ASSERT(cfg->storage.min_free_disk == 500ull << 20);
    ASSERT_EQ(cfg->storage.series_quiet_seconds, 5);
    ASSERT_EQ(cfg->storage.study_quiet_seconds, 5);
    ASSERT_EQ(cfg->storage.on_duplicate, VG_DUP_REPLACE);
    ASSERT_STR_EQ(cfg->http.bind, "::1");
    ASSERT_EQ(cfg->http.port, 9090);
    ASSERT_EQ(cfg->n_aes, 2);
    ASSERT_STR_EQ(cfg->aes[0].name, "pacs");
    ASSERT_STR_EQ(cfg->aes[0].ae_title, "ORTHANC");
    ASSERT_STR_EQ(cfg->aes[0].host, "pacs.example.org");
    ASSERT_EQ(cfg->aes[0].port, 4242);
    ASSERT_EQ(cfg->aes[0].role, VG_ROLE_DESTINATION);
    ASSERT_EQ(cfg->aes[0].line, 19);
    ASSERT_STR_EQ(cfg->aes[1].host, "10.1.2.3");
    ASSERT_EQ(cfg->aes[1].role, VG_ROLE_DESTINATION);
    ASSERT_EQ(cfg->n_routes, 1);
    const vg_route_cfg_t *r = &cfg->routes[0];
    ASSERT_STR_EQ(r->name, "bone-ct");
    ASSERT_STR_EQ(r->model, "bone");
    ASSERT_STR_EQ(r->modality, "CT");
    ASSERT_EQ(r->min_slices, 20);
    ASSERT_DBL_NEAR(r->max_slice_thickness, 2.5, 1e-12);
    ASSERT_EQ(r->n_destinations, 2);
    ASSERT_STR_EQ(r->destinations[0], "pacs");
    ASSERT_STR_EQ(r->destinations[1], "archive");
    ASSERT_EQ(r->line, 29);
    ASSERT_EQ(cfg->n_models, 1);
    const vg_model_cfg_t *m = &cfg->models[0];
    ASSERT_STR_EQ(m->name, "bone");
    ASSERT_STR_EQ(m->manifest, "/opt/models/bone/manifest.json");
    ASSERT_EQ(m->n_devices, 3);
    ASSERT_STR_EQ(m->devices[0], "cuda:1");
    ASSERT_STR_EQ(m->devices[1], "cpu");
    ASSERT_STR_EQ(m->devices[2], "cuda:0");
    ASSERT_EQ(m->threads, 8);
    ASSERT_EQ(m->max_attempts, 5);
    ASSERT_EQ(m->lease_seconds, 600);
    ASSERT_EQ(m->line, 35);
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_bool_values)
{
    static const struct {
        const char *text;
        int want;
    } cases[] = {{"yes", 1}, {"no", 0},  {"true", 1}, {"false", 0},
                 {"on", 1},  {"off", 0}, {"1", 1},    {"0", 0},
                 {"YES", 1}, {"Off", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[128];
        vg_config_t *cfg = NULL;
        snprintf(text, sizeof text, "[node]\naccept_unknown_sources = %s\n",
                 cases[i].text);
        ASSERT_EQ(load_text(text, &cfg), 0);
        ASSERT_EQ(cfg->node.accept_unknown_sources, cases[i].want);
        vg_config_destroy(cfg);
    }
    ASSERT_EQ(load_bad("[node]\naccept_unknown_sources = maybe\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(2));
    ASSERT_STR_CONTAINS(err, "accept_unknown_sources: \"maybe\" is not a "
                             "yes/no value");
    return 0;
}

TEST_IMPL(config_bounds_errors_lines)
{
    int rc = load_bad("[node]\n"                        /* 1 */
                      "port = 0\n"                      /* 2 */
                      "max_associations = 257\n"        /* 3 */
                      "acse_timeout = 30s\n"            /* 4 */
                      "log_level = loud\n"              /* 5 */
                      "[storage]\n"                     /* 6 */
                      "min_free_disk = 2P\n"            /* 7 */
                      "series_quiet_seconds = 86401\n"  /* 8 */
                      "[http]\n"                        /* 9 */
                      "port = 65536\n"                  /* 10 */
                      "[route r]\n"                     /* 11 */
                      "model = bone\n"                  /* 12 */
                      "modality = ct\n"                 /* 13 */
                      "max_slice_thickness = 100.5\n"   /* 14 */
                      "min_slices = 0\n"                /* 15 */
                      "[model bone]\n"
                      "manifest = bone.json\n");
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
#define WANT(line, msg)                                                  \
    do {                                                                 \
        snprintf(want, sizeof want, "%s%s", at(line), msg);              \
        ASSERT_STR_CONTAINS(err, want);                                  \
    } while (0)
    WANT(2, "port: 0 is out of range 1..65535");
    WANT(3, "max_associations: 257 is out of range 1..256");
    WANT(4, "acse_timeout: \"30s\" is not a whole number (1..3600 seconds)");
    WANT(5, "log_level: \"loud\" is not one of: error, warn, info, debug");
    WANT(7, "min_free_disk: 2P is out of range 0..1P bytes");
    WANT(8, "series_quiet_seconds: 86401 is out of range 1..86400 seconds");
    WANT(10, "port: 65536 is out of range 1..65535");
    WANT(13, "modality: \"ct\" must be uppercase letters and digits");
    WANT(14, "max_slice_thickness: 100.5 is out of range 0..100 mm");
    WANT(15, "min_slices: 0 is out of range 1..100000");
#undef WANT
    ASSERT_EQ(err_lines(), 10);
    return 0;
}

TEST_IMPL(config_unknown_key_and_section)
{
    int rc = load_bad("[node]\n"
                      "bogus_key = 1\n"
                      "Port = 104\n"
                      "[bogus]\n"
                      "port = 1\n"
                      "[storage]\n"
                      "ae_title = X\n");
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%sbogus_key: unknown key in [node]", at(2));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sPort: unknown key in [node]", at(3));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s[bogus]: unknown section", at(4));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sae_title: unknown key in [storage]", at(7));
    ASSERT_STR_CONTAINS(err, want);
    /* The keys of an unknown section are not reported one by one. */
    ASSERT_EQ(err_lines(), 4);
    return 0;
}

TEST_IMPL(config_key_outside_section)
{
    ASSERT_EQ(load_bad("; a comment\nport = 104\n[node]\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(2));
    ASSERT_STR_CONTAINS(err, "port: is outside any section");
    ASSERT_EQ(err_lines(), 1);
    return 0;
}

TEST_IMPL(config_bad_section_headers)
{
    int rc = load_bad("[node extra]\n"      /* 1 */
                      "[ae]\n"              /* 2 */
                      "[ae bad/name]\n"     /* 3 */
                      "[route ok]\n"        /* 4 */
                      "model = m\n"
                      "modality = CT\n"
                      "[model m]\n"
                      "manifest = m.json\n"
                      "[storage] junk\n"    /* 9 */
                      "[http\n");           /* 10 */
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%s[node extra]: this section takes no name",
             at(1));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s[ae]: needs a name", at(2));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s[ae bad/name]: name must be", at(3));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s[storage]: expected \"[section]\" alone",
             at(9));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s[http: expected", at(10));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 5);
    return 0;
}

TEST_IMPL(config_duplicate_key_and_section)
{
    int rc = load_bad("[node]\n"           /* 1 */
                      "port = 104\n"       /* 2 */
                      "port = 105\n"       /* 3 */
                      "[ae a]\n"           /* 4 */
                      "ae_title = A\n"     /* 5 */
                      "role = source\n"    /* 6 */
                      "[ae b]\n"           /* 7 */
                      "ae_title = B\n"     /* 8: same key, other section */
                      "role = source\n"
                      "[ae a]\n"           /* 10 */
                      "ae_title = C\n"
                      "[node]\n");         /* 12 */
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%sport: set twice in [node] (first at line "
             "2)", at(3));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s[ae a]: duplicate section (first at line "
             "4)", at(10));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s[node]: duplicate section (first at line "
             "1)", at(12));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 3);
    return 0;
}

TEST_IMPL(config_required_keys)
{
    int rc = load_bad("[node]\n"              /* 1 */
                      "[ae a]\n"              /* 2 */
                      "host = 10.0.0.1\n"
                      "[ae dest]\n"           /* 4 */
                      "ae_title = DEST\n"
                      "role = destination\n"
                      "[route r]\n"           /* 7 */
                      "min_slices = 0\n");    /* 8 */
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    /* Sorted by line, though the required keys are checked last. */
    const char *first = strstr(err, at(2)), *last = strstr(err, at(8));
    ASSERT(first == err);
    ASSERT(last != NULL && strchr(last, '\n') == NULL);
    snprintf(want, sizeof want, "%sae_title: required in [ae a]", at(2));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%srole: required in [ae a]", at(2));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sport: required in [ae dest] when role = "
             "destination", at(4));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%shost: required in [ae dest] when role = "
             "destination", at(4));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smodel: required in [route r]", at(7));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smodality: required in [route r]", at(7));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 7);

    ASSERT_EQ(load_bad("[ae d]\nae_title = D\nport = 0\nrole = destination\n"),
              VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%sport: must be 1..65535 when role = "
             "destination", at(3));
    ASSERT_STR_CONTAINS(err, want);
    return 0;
}

TEST_IMPL(config_storage_dir_relative)
{
    char sub[PATH_MAX], path[PATH_MAX], want[PATH_MAX + 32];
    snprintf(sub, sizeof sub, "%s/etc", test_tmpdir());
    ASSERT_EQ(mkdir(sub, 0700), 0);
    ASSERT(write_file(path, sizeof path, "etc/vigil.conf",
                      "[storage]\ndir = ../data\n"));
    /* Loaded by a relative path from elsewhere: still the file's dir. */
    ASSERT_EQ(chdir(test_tmpdir()), 0);
    vg_config_t *cfg = NULL;
    ASSERT_EQ(vg_config_load("etc/vigil.conf", &cfg, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/data", real_tmpdir());
    ASSERT_STR_EQ(cfg->storage.dir, want);
    snprintf(want, sizeof want, "%s/etc/vigil.conf", real_tmpdir());
    ASSERT_STR_EQ(cfg->path, want);
    vg_config_destroy(cfg);

    ASSERT(write_file(path, sizeof path, "etc/vigil.conf",
                      "[storage]\ndir = spool/./in\n"));
    ASSERT_EQ(chdir("/"), 0);
    ASSERT_EQ(vg_config_load(path, &cfg, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/etc/spool/in", real_tmpdir());
    ASSERT_STR_EQ(cfg->storage.dir, want);
    vg_config_destroy(cfg);

    /* Messages name the file as it was given. */
    ASSERT_EQ(chdir(test_tmpdir()), 0);
    ASSERT(write_file(path, sizeof path, "etc/vigil.conf",
                      "[storage]\ndir =\n"));
    ASSERT_EQ(vg_config_load("etc/vigil.conf", &cfg, err, sizeof err),
              VG_EINVAL_CFG);
    ASSERT_STR_EQ(err, "etc/vigil.conf:2: dir: must not be empty");
    return 0;
}

TEST_IMPL(config_parse_size)
{
    static const struct {
        const char *s;
        uint64_t want;
    } good[] = {{"0", 0},
                {"1048576", 1048576},
                {"500M", 500ull << 20},
                {"2G", 2ull << 30},
                {"1T", 1ull << 40},
                {"1P", 1ull << 50},
                {"4K", 4096},
                {"4KiB", 4096},
                {"3MB", 3ull << 20},
                {"2g", 2ull << 30},
                {"10 G", 10ull << 30},
                {"100B", 100}};
    static const char *const bad[] = {
        "12Q", "-1",  "",     "M",      "1.5G", " 1", "1GiBB", "1Gi",
        "0x10", "+5", "1 G B", "99999999999999999999", "20000000T", "5iB"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 12345;
        if (vg_config_parse_size(good[i].s, &v) != 0 || v != good[i].want)
            TEST__FAIL("\"%s\" gave %llu", good[i].s, (unsigned long long)v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 12345;
        if (vg_config_parse_size(bad[i], &v) != VG_EINVAL_CFG || v != 12345)
            TEST__FAIL("\"%s\" was accepted as %llu", bad[i],
                       (unsigned long long)v);
    }
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[storage]\nmin_free_disk = 1P\n", &cfg), 0);
    ASSERT(cfg->storage.min_free_disk == 1ull << 50);
    vg_config_destroy(cfg);
    ASSERT_EQ(load_bad("[storage]\nmin_free_disk = 12Q\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(2));
    ASSERT_STR_CONTAINS(err, "min_free_disk: \"12Q\" is not a size");
    return 0;
}

TEST_IMPL(config_route_destinations)
{
    int rc = load_bad("[route r]\n"                          /* 1 */
                      "model = bone\n"
                      "modality = CT\n"
                      "destinations = pacs src,nowhere\n"    /* 4 */
                      "[ae src]\n"
                      "ae_title = SRC\n"
                      "role = source\n"
                      "[ae pacs]\n"    /* after the route: still found */
                      "ae_title = PACS\n"
                      "host = 10.0.0.5\n"
                      "port = 104\n"
                      "role = destination\n"
                      "[model bone]\n"
                      "manifest = bone.json\n");
    ASSERT_EQ(rc, VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%sdestinations: [ae src] has role source, "
             "not destination", at(4));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sdestinations: \"nowhere\" is not an [ae] "
             "section", at(4));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 2);

    ASSERT_EQ(load_bad("[route r]\nmodel = m\nmodality = CT\n"
                       "destinations = a b c d e f g h i\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "destinations: more than 8 names");
    ASSERT_EQ(load_bad("[route r]\nmodel = m\nmodality = CT\n"
                       "destinations = a, a\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "destinations: \"a\" is listed twice");
    return 0;
}

TEST_IMPL(config_duplicate_ae_title_role)
{
    ASSERT_EQ(load_bad("[ae one]\n"
                       "ae_title = SCANNER\n"
                       "role = source\n"
                       "[ae two]\n"
                       "role = source\n"
                       "ae_title = SCANNER\n"), /* 6 */
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(6));
    ASSERT_STR_CONTAINS(err, "ae_title: \"SCANNER\" with role source is "
                             "already [ae one] (line 1)");
    ASSERT_EQ(err_lines(), 1);

    /* The same title as a source and as a destination is fine. */
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[ae in]\nae_title = PACS\nrole = source\n"
                        "[ae out]\nae_title = PACS\nhost = 10.0.0.5\nport = 104\n"
                        "role = destination\n",
                        &cfg),
              0);
    ASSERT_EQ(cfg->n_aes, 2);
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_quiet_seconds_order)
{
    ASSERT_EQ(load_bad("[storage]\nseries_quiet_seconds = 10\n"
                       "study_quiet_seconds = 5\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(3));
    ASSERT_STR_CONTAINS(err, "study_quiet_seconds: 5 must be >= "
                             "series_quiet_seconds (10)");
    ASSERT_EQ(load_bad("[storage]\nseries_quiet_seconds = 60\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(2));
    ASSERT_STR_CONTAINS(err, "series_quiet_seconds: 60 must be <= "
                             "study_quiet_seconds (30)");
    return 0;
}

TEST_IMPL(config_find_ae)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[ae storescu]\nae_title = STORESCU\nrole = source\n"
                        "[ae pacs]\nae_title = ORTHANC\nhost = 127.0.0.1\nport = 4242\n"
                        "role = destination\n"
                        "[ae pacs-in]\nae_title = ORTHANC\nrole = source\n",
                        &cfg),
              0);
    const vg_ae_cfg_t *a = vg_config_find_ae(cfg, "STORESCU", VG_ROLE_SOURCE);
    ASSERT(a != NULL);
    ASSERT_STR_EQ(a->name, "storescu");
    a = vg_config_find_ae(cfg, " STORESCU      ", VG_ROLE_SOURCE);
    ASSERT(a != NULL);
    ASSERT_STR_EQ(a->name, "storescu");
    ASSERT(vg_config_find_ae(cfg, "STORESCU", VG_ROLE_DESTINATION) == NULL);
    ASSERT(vg_config_find_ae(cfg, "storescu", VG_ROLE_SOURCE) == NULL);
    ASSERT(vg_config_find_ae(cfg, "STORESC", VG_ROLE_SOURCE) == NULL);
    ASSERT(vg_config_find_ae(cfg, "", VG_ROLE_SOURCE) == NULL);
    a = vg_config_find_ae(cfg, "ORTHANC", VG_ROLE_DESTINATION);
    ASSERT(a != NULL);
    ASSERT_STR_EQ(a->name, "pacs");
    a = vg_config_find_ae(cfg, "ORTHANC", VG_ROLE_SOURCE);
    ASSERT(a != NULL);
    ASSERT_STR_EQ(a->name, "pacs-in");
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_ae_title_rules)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[node]\nae_title = ABCDEFGHIJKLMNOP\n", &cfg), 0);
    ASSERT_STR_EQ(cfg->node.ae_title, "ABCDEFGHIJKLMNOP");
    vg_config_destroy(cfg);
    ASSERT_EQ(load_bad("[node]\nae_title = ABCDEFGHIJKLMNOPQ\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "ae_title: \"ABCDEFGHIJKLMNOPQ\" has 17 "
                             "characters; must have 1..16");
    ASSERT_EQ(load_bad("[node]\nae_title = A\\B\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "must be printable ASCII without backslash");
    ASSERT_EQ(load_bad("[node]\nae_title = A\tB\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "must be printable ASCII without backslash");
    ASSERT_EQ(load_bad("[node]\nae_title =    \n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "has 0 characters");
    ASSERT_EQ(load_bad("[http]\nbind = localhost\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "bind: \"localhost\" must be an IPv4 or IPv6");
    ASSERT_EQ(load_bad("[ae x]\nae_title = X\nrole = source\nhost = a b\n"),
              VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "host: \"a b\" must be a host name");
    return 0;
}

TEST_IMPL(config_comments_and_indent)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("# comment\n"
                        "; comment\n"
                        "[node] ; the node\n"
                        "port = 104 ; DICOM's own port\n"
                        "  max_associations = 7\n" /* not a continuation */
                        "\tae_title = A;B\n",
                        &cfg),
              0);
    ASSERT_EQ(cfg->node.port, 104);
    ASSERT_EQ(cfg->node.max_associations, 7);
    ASSERT_STR_EQ(cfg->node.ae_title, "A;B");
    vg_config_destroy(cfg);
    ASSERT_EQ(load_bad("[node]\nae_title = PACS # main\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, at(2));
    ASSERT_STR_CONTAINS(err, "ae_title: \"#\" after a value is not a comment");
    return 0;
}

TEST_IMPL(config_syntax_errors)
{
    char text[512];
    memset(text, 0, sizeof text);
    strcat(text, "[node]\nport\n");                      /* 2 */
    strcat(text, "max_associations = 3\n");
    strcat(text, "ae_title = ");                         /* 4: 250 chars */
    memset(text + strlen(text), 'A', 239);
    strcat(text, "\n= 5\n");                             /* 5 */
    strcat(text, "port = x\n");                          /* 6 */
    ASSERT_EQ(load_bad(text), VG_EINVAL_CFG);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%sport: expected \"key = value\"", at(2));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sline: longer than 198 characters", at(4));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%s= 5: a key name is missing", at(5));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sport: \"x\" is not a whole number", at(6));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 4);
    return 0;
}

TEST_IMPL(config_open_errors)
{
    char path[PATH_MAX];
    vg_config_t *cfg = (vg_config_t *)1;
    snprintf(path, sizeof path, "%s/missing.conf", test_tmpdir());
    ASSERT_EQ(vg_config_load(path, &cfg, err, sizeof err), -ENOENT);
    ASSERT(cfg == NULL);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s: %s", path, strerror(ENOENT));
    ASSERT_STR_EQ(err, want);
    ASSERT_EQ(vg_config_load(test_tmpdir(), &cfg, err, sizeof err), -EISDIR);
    ASSERT(cfg == NULL);
    ASSERT_STR_CONTAINS(err, strerror(EISDIR));
    /* No err buffer at all is allowed. */
    ASSERT_EQ(vg_config_load(path, &cfg, NULL, 0), -ENOENT);
    return 0;
}

TEST_IMPL(config_err_buffer_small)
{
    char small[40];
    char path[PATH_MAX];
    vg_config_t *cfg = NULL;
    write_file(path, sizeof path, "vigil.conf",
               "[node]\nport = 0\nport = 1\nbogus = 2\n");
    ASSERT_EQ(vg_config_load(path, &cfg, small, sizeof small), VG_EINVAL_CFG);
    ASSERT(cfg == NULL);
    ASSERT_LT(strlen(small), sizeof small);
    ASSERT_EQ(strncmp(small, test_tmpdir(), strlen(small) < 10 ? strlen(small)
                                                                : 10), 0);
    return 0;
}

TEST_IMPL(config_print_keys)
{
    char path[PATH_MAX], buf[4096];
    snprintf(path, sizeof path, "%s/keys.txt", test_tmpdir());
    FILE *f = fopen(path, "w+");
    ASSERT(f != NULL);
    vg_config_print_keys(f);
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    ASSERT_STR_CONTAINS(buf, "node ae_title string VIGIL\n");
    ASSERT_STR_CONTAINS(buf, "node port int 11112\n");
    ASSERT_STR_CONTAINS(buf, "node bind string 0.0.0.0\n");
    ASSERT_STR_CONTAINS(buf, "node accept_unknown_sources bool no\n");
    ASSERT_STR_CONTAINS(buf, "node log_level enum info\n");
    ASSERT_STR_CONTAINS(buf, "storage dir path var\n");
    ASSERT_STR_CONTAINS(buf, "storage min_free_disk size 1G\n");
    ASSERT_STR_CONTAINS(buf, "http bind string 127.0.0.1\n");
    ASSERT_STR_CONTAINS(buf, "ae ae_title string -\n");
    ASSERT_STR_CONTAINS(buf, "ae host string -\n");
    ASSERT_STR_CONTAINS(buf, "ae role enum -\n");
    ASSERT_STR_CONTAINS(buf, "route max_slice_thickness double 0\n");
    ASSERT_STR_CONTAINS(buf, "route destinations list -\n");
    ASSERT_STR_CONTAINS(buf, "model manifest path -\n");
    ASSERT_STR_CONTAINS(buf, "model devices list cpu\n");
    ASSERT_STR_CONTAINS(buf, "model threads int 2\n");
    ASSERT_STR_CONTAINS(buf, "model max_attempts int 3\n");
    ASSERT_STR_CONTAINS(buf, "model lease_seconds int 900\n");
    ASSERT_STR_CONTAINS(buf, "node tls_certificate path -\n");
    ASSERT_STR_CONTAINS(buf, "node tls_private_key path -\n");
    ASSERT_STR_CONTAINS(buf, "outbox retry_initial_seconds int 10\n");
    ASSERT_STR_CONTAINS(buf, "outbox retry_max_seconds int 600\n");
    ASSERT_STR_CONTAINS(buf, "outbox max_attempts int 0\n");
    ASSERT_STR_CONTAINS(buf, "ae tls bool no\n");
    ASSERT_STR_CONTAINS(buf, "ae tls_ca_file path -\n");
    int lines = 0;
    for (const char *s = buf; *s; s++)
        lines += *s == '\n';
    ASSERT_STR_CONTAINS(buf, "route group string series\n");
    ASSERT_STR_CONTAINS(buf, "route group_window_hours int 24\n");
    ASSERT_EQ(lines, 39);
    return 0;
}

/* Grouped routes: group and group_window_hours, and a list of
 * modalities. */
TEST_IMPL(config_route_group)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[route bone-ct]\n"
                        "model = bone\n"
                        "modality = CT\n"
                        "[route breast]\n"
                        "model = breast\n"
                        "modality = MG, US\n"
                        "group = patient\n"
                        "group_window_hours = 72\n"
                        "[model bone]\nmanifest = b.json\n"
                        "[model breast]\nmanifest = m.json\n",
                        &cfg),
              0);
    ASSERT_STR_EQ(err, "");
    ASSERT_EQ(cfg->n_routes, 2);
    const vg_route_cfg_t *ct = &cfg->routes[0], *br = &cfg->routes[1];
    ASSERT_STR_EQ(ct->group, "series"); /* the default */
    ASSERT_EQ(ct->group_window_hours, 24);
    ASSERT_STR_EQ(br->modality, "MG, US");
    ASSERT_STR_EQ(br->group, "patient");
    ASSERT_EQ(br->group_window_hours, 72);
    vg_config_destroy(cfg);

    const char *groups[] = {"series", "study", "accession", "patient"};
    for (int i = 0; i < 4; i++) {
        char text[256];
        snprintf(text, sizeof text, "[route r]\nmodel = m\nmodality = MG,US\ngroup = %s\n"
                 "[model m]\nmanifest = m.json\n", groups[i]);
        ASSERT_EQ(load_text(text, &cfg), 0);
        ASSERT_STR_EQ(cfg->routes[0].group, groups[i]);
        ASSERT_STR_EQ(cfg->routes[0].modality, "MG,US");
        vg_config_destroy(cfg);
    }
    return 0;
}

TEST_IMPL(config_route_group_errors)
{
    char want[PATH_MAX + 160];
    ASSERT_EQ(load_bad("[model m]\n"                  /* 1 */
                       "manifest = m.json\n"          /* 2 */
                       "[route r]\n"                  /* 3 */
                       "model = m\n"                  /* 4 */
                       "modality = MG,US\n"           /* 5 */
                       "group = visit\n"              /* 6 */
                       "group_window_hours = 0\n"     /* 7 */
                       "[route s]\n"                  /* 8 */
                       "model = m\n"                  /* 9 */
                       "modality = MG,mg\n"           /* 10 */
                       "group = Study\n"              /* 11 */
                       "group_window_hours = 8761\n"  /* 12 */
                       "[route t]\n"                  /* 13 */
                       "model = m\n"                  /* 14 */
                       "modality = MG,US MG\n"        /* 15 */
                       "[route u]\n"                  /* 16 */
                       "model = m\n"                  /* 17 */
                       "modality = ,\n"               /* 18 */
                       "[route v]\n"                  /* 19 */
                       "model = m\n"                  /* 20 */
                       "modality = MG,ABCDEFGHIJKLMNOPQ\n"), /* 21 */
              VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%sgroup: \"visit\" is not one of: series, study,"
             " accession, patient", at(6));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sgroup_window_hours: 0 is out of range 1..8760 hours",
             at(7));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smodality: \"MG,mg\" must be uppercase letters and"
             " digits (e.g. CT, MG, US), several separated by commas", at(10));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sgroup: \"Study\" is not one of: series, study,"
             " accession, patient", at(11));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sgroup_window_hours: 8761 is out of range 1..8760"
             " hours", at(12));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smodality: \"MG,US MG\" lists a modality twice", at(15));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smodality: \",\" names no modality (e.g. CT, or MG,US)",
             at(18));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smodality: \"MG,ABCDEFGHIJKLMNOPQ\" has a modality"
             " longer than 16 characters", at(21));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 8);
    return 0;
}

/* The shipped files; the runner starts in the repository's root. */
TEST_IMPL(config_shipped_files)
{
    vg_config_t *cfg = NULL;
    char root[PATH_MAX], want[PATH_MAX + 64];
    ASSERT(getcwd(root, sizeof root) != NULL);
    ASSERT_EQ(vg_config_load("config/vigil.conf", &cfg, err, sizeof err), 0);
    ASSERT_STR_EQ(cfg->node.ae_title, "VIGIL");
    ASSERT_EQ(cfg->node.port, 11112);
    ASSERT_EQ(cfg->node.accept_unknown_sources, 0);
    snprintf(want, sizeof want, "%s/var", root);
    ASSERT_STR_EQ(cfg->storage.dir, want);
    ASSERT(cfg->storage.min_free_disk == 1ull << 30);
    ASSERT_STR_EQ(cfg->http.bind, "127.0.0.1");
    ASSERT_EQ(cfg->http.port, 8080);
    ASSERT(vg_config_find_ae(cfg, "STORESCU", VG_ROLE_SOURCE) != NULL);
    ASSERT(vg_config_find_ae(cfg, "ECHOSCU", VG_ROLE_SOURCE) != NULL);
    const vg_ae_cfg_t *pacs =
        vg_config_find_ae(cfg, "ORTHANC", VG_ROLE_DESTINATION);
    ASSERT(pacs != NULL);
    ASSERT_STR_EQ(pacs->name, "pacs");
    ASSERT_STR_EQ(pacs->host, "127.0.0.1");
    ASSERT_EQ(pacs->port, 4242);
    ASSERT_EQ(cfg->n_routes, 2);
    ASSERT_STR_EQ(cfg->routes[0].name, "bone-ct");
    ASSERT_STR_EQ(cfg->routes[0].model, "bone");
    ASSERT_STR_EQ(cfg->routes[0].modality, "CT");
    ASSERT_EQ(cfg->routes[0].min_slices, 20);
    ASSERT_DBL_NEAR(cfg->routes[0].max_slice_thickness, 5.0, 1e-12);
    ASSERT_EQ(cfg->routes[0].n_destinations, 1);
    ASSERT_STR_EQ(cfg->routes[0].destinations[0], "pacs");
    /* Mammography and ultrasound of a study go to the breast model. */
    ASSERT_STR_EQ(cfg->routes[1].name, "breast");
    ASSERT_STR_EQ(cfg->routes[1].model, "breast");
    ASSERT_STR_EQ(cfg->routes[1].modality, "MG,US");
    ASSERT_STR_EQ(cfg->routes[1].group, "study");
    ASSERT_STR_EQ(cfg->routes[1].destinations[0], "pacs");
    ASSERT_EQ(cfg->n_models, 2);
    const vg_model_cfg_t *b = vg_config_find_model(cfg, "breast");
    ASSERT(b != NULL);
    snprintf(want, sizeof want, "%s/models/breast/manifest.json", root);
    ASSERT_STR_EQ(b->manifest, want);
    const vg_model_cfg_t *m = vg_config_find_model(cfg, "bone");
    ASSERT(m != NULL);
    snprintf(want, sizeof want, "%s/models/bone/manifest.json", root);
    ASSERT_STR_EQ(m->manifest, want);
    ASSERT_EQ(m->n_devices, 1);
    ASSERT_STR_EQ(m->devices[0], "cpu");
    ASSERT_EQ(m->threads, 2);
    vg_config_destroy(cfg);
    ASSERT_EQ(vg_config_load("config/vigil.conf.example", &cfg, err,
                             sizeof err), 0);
    /* The example's breast route: grouped by study (see its comment). */
    ASSERT_EQ(cfg->n_routes, 2);
    ASSERT_STR_EQ(cfg->routes[0].group, "series");
    ASSERT_STR_EQ(cfg->routes[1].name, "breast");
    ASSERT_STR_EQ(cfg->routes[1].modality, "MG,US");
    ASSERT_STR_EQ(cfg->routes[1].group, "study");
    ASSERT_EQ(cfg->routes[1].min_slices, 1);
    vg_config_destroy(cfg);
    return 0;
}
