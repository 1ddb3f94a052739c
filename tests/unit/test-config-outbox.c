/* Unit tests of the keys for sending results: the [outbox] section, TLS
 * to a destination ([ae NAME] tls, tls_ca_file), the node's own TLS
 * identity, and what a destination needs (host and port). */
#include "tests/unit/config_fixture.h"

TEST_IMPL(config_outbox_defaults)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[ae pacs]\nae_title = PACS\nhost = 10.0.0.5\nport = 104\n"
                        "role = destination\n",
                        &cfg),
              0);
    ASSERT_EQ(cfg->outbox.retry_initial_seconds, 10);
    ASSERT_EQ(cfg->outbox.retry_max_seconds, 600);
    ASSERT_EQ(cfg->outbox.max_attempts, 0); /* never give up */
    ASSERT_STR_EQ(cfg->node.tls_certificate, "");
    ASSERT_STR_EQ(cfg->node.tls_private_key, "");
    ASSERT_EQ(cfg->aes[0].tls, 0);
    ASSERT_STR_EQ(cfg->aes[0].tls_ca_file, "");
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_outbox_values)
{
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[node]\n"
                        "tls_certificate = certs/node.crt\n"
                        "tls_private_key = /etc/vigil/node.key\n"
                        "[outbox]\n"
                        "retry_initial_seconds = 1\n"
                        "retry_max_seconds = 604800\n"
                        "max_attempts = 12\n"
                        "[ae pacs]\n"
                        "ae_title = PACS\n"
                        "host = pacs.example.org\n"
                        "port = 2762\n"
                        "role = destination\n"
                        "tls = yes\n"
                        "tls_ca_file = ca/../ca.pem\n",
                        &cfg),
              0);
    char want[PATH_MAX + 32];
    ASSERT_EQ(cfg->outbox.retry_initial_seconds, 1);
    ASSERT_EQ(cfg->outbox.retry_max_seconds, 604800);
    ASSERT_EQ(cfg->outbox.max_attempts, 12);
    /* Relative paths are relative to the file's directory. */
    snprintf(want, sizeof want, "%s/certs/node.crt", real_tmpdir());
    ASSERT_STR_EQ(cfg->node.tls_certificate, want);
    ASSERT_STR_EQ(cfg->node.tls_private_key, "/etc/vigil/node.key");
    ASSERT_EQ(cfg->aes[0].tls, 1);
    snprintf(want, sizeof want, "%s/ca.pem", real_tmpdir());
    ASSERT_STR_EQ(cfg->aes[0].tls_ca_file, want);
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_outbox_bounds)
{
    char want[PATH_MAX + 128];
    ASSERT_EQ(load_bad("[outbox]\n"
                       "retry_initial_seconds = 0\n"    /* 2 */
                       "max_attempts = -1\n"            /* 3 */
                       "retry_max_seconds = 604801\n"), /* 4 */
              VG_EINVAL_CFG);
    snprintf(want, sizeof want,
             "%sretry_initial_seconds: 0 is out of range 1..86400 seconds", at(2));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%smax_attempts: -1 is out of range 0..1000000", at(3));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sretry_max_seconds: 604801 is out of range", at(4));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 3);

    /* The longest wait is at least the first. */
    ASSERT_EQ(load_bad("[outbox]\nretry_initial_seconds = 60\nretry_max_seconds = 30\n"),
              VG_EINVAL_CFG);
    snprintf(want, sizeof want,
             "%sretry_max_seconds: 30 must be >= retry_initial_seconds (60)", at(3));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 1);
    ASSERT_EQ(load_bad("[outbox]\nretry_initial_seconds = 900\n"), VG_EINVAL_CFG);
    snprintf(want, sizeof want,
             "%sretry_initial_seconds: 900 must be <= retry_max_seconds "
             "(600)",
             at(2));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(load_bad("[outbox]\nbogus = 1\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "bogus: unknown key in [outbox]");
    ASSERT_EQ(load_bad("[outbox x]\n"), VG_EINVAL_CFG);
    ASSERT_STR_CONTAINS(err, "[outbox x]: this section takes no name");
    return 0;
}

/* Peer verification is not optional: tls = yes needs the CA. */
TEST_IMPL(config_ae_tls_needs_ca)
{
    char want[PATH_MAX + 160];
    ASSERT_EQ(load_bad("[ae pacs]\n" /* 1 */
                       "ae_title = PACS\n"
                       "host = 10.0.0.5\n"
                       "port = 2762\n"
                       "role = destination\n"
                       "tls = yes\n"), /* 6 */
              VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%stls_ca_file: required in [ae pacs] when tls = yes",
             at(6));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 1);

    ASSERT_EQ(load_bad("[ae ct]\nae_title = CT\nrole = source\ntls = on\n"
                       "tls_ca_file = /ca.pem\n"),
              VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%stls: only a destination can use TLS", at(4));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 1);

    ASSERT_EQ(
        load_bad("[ae pacs]\nae_title = PACS\nhost = h\nport = 1\nrole = destination\n"
                 "tls = maybe\n"),
        VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%stls: \"maybe\" is not a yes/no value", at(6));
    ASSERT_STR_CONTAINS(err, want);
    /* A CA file without tls = yes is harmless (kept for later). */
    vg_config_t *cfg = NULL;
    ASSERT_EQ(
        load_text("[ae pacs]\nae_title = PACS\nhost = h\nport = 1\nrole = destination\n"
                  "tls = no\ntls_ca_file = /ca.pem\n",
                  &cfg),
        0);
    ASSERT_EQ(cfg->aes[0].tls, 0);
    vg_config_destroy(cfg);
    return 0;
}

TEST_IMPL(config_node_tls_pair)
{
    char want[PATH_MAX + 128];
    ASSERT_EQ(load_bad("[node]\nae_title = V\ntls_certificate = /n.crt\n"), VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%stls_private_key: required when tls_certificate is set",
             at(3));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(load_bad("[node]\ntls_private_key = /n.key\n"), VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%stls_certificate: required when tls_private_key is set",
             at(2));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 1);
    return 0;
}

/* A destination is where results go: it needs an address and a port. */
TEST_IMPL(config_destination_needs_host_and_port)
{
    char want[PATH_MAX + 128];
    ASSERT_EQ(load_bad("[node]\n"
                       "[ae pacs]\n" /* 2 */
                       "ae_title = PACS\n"
                       "role = destination\n"),
              VG_EINVAL_CFG);
    snprintf(want, sizeof want, "%shost: required in [ae pacs] when role = destination",
             at(2));
    ASSERT_STR_CONTAINS(err, want);
    snprintf(want, sizeof want, "%sport: required in [ae pacs] when role = destination",
             at(2));
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_EQ(err_lines(), 2);
    /* A source needs neither. */
    vg_config_t *cfg = NULL;
    ASSERT_EQ(load_text("[ae ct]\nae_title = CT\nrole = source\n", &cfg), 0);
    vg_config_destroy(cfg);
    return 0;
}
