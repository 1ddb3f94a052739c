/* Shared by the configuration unit tests: writing a file into the
 * test's directory, loading it, and reading the error lines back. */
#ifndef VG_TEST_CONFIG_FIXTURE_H
#define VG_TEST_CONFIG_FIXTURE_H

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "server/error.h"
#include "server/log.h"
#include "tests/unit/test.h"

static char err[8192];

/* Writes TEXT to test_tmpdir()/NAME; the path goes to PATH. */
static inline const char *write_file(char *path, size_t len, const char *name,
                              const char *text)
{
    snprintf(path, len, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads TEXT written as test_tmpdir()/vigil.conf. */
static inline int load_text(const char *text, vg_config_t **cfg)
{
    char path[PATH_MAX];
    if (!write_file(path, sizeof path, "vigil.conf", text))
        return -999;
    return vg_config_load(path, cfg, err, sizeof err);
}

/* Loads TEXT, which must fail; ERR then holds the messages. */
static inline int load_bad(const char *text)
{
    vg_config_t *cfg = (vg_config_t *)1;
    int rc = load_text(text, &cfg);
    if (cfg) {
        vg_config_destroy(cfg == (vg_config_t *)1 ? NULL : cfg);
        return -998;
    }
    return rc;
}

/* Number of lines (= errors) in ERR. */
static inline int err_lines(void)
{
    if (!err[0])
        return 0;
    int n = 1;
    for (const char *s = err; *s; s++)
        n += *s == '\n';
    return n;
}

/* "DIR/vigil.conf:LINE: " for the file load_text() writes. */
static inline const char *at(int line)
{
    static char buf[PATH_MAX + 32];
    snprintf(buf, sizeof buf, "%s/vigil.conf:%d: ", test_tmpdir(), line);
    return buf;
}

static inline const char *real_tmpdir(void)
{
    static char buf[PATH_MAX];
    return realpath(test_tmpdir(), buf);
}


#endif
