/* What the configuration's values may be: the one table of keys (section,
 * name, type, bounds, unit, default, offset), per type the function that
 * turns a value's text into its field or says what is wrong with it, and
 * the checks that span keys and sections (a route's model and destinations
 * exist, quiet times are ordered). It does not read the file: config.c
 * does, keeps track of sections and lines, and reports the messages. */
#include "config/config_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/error.h"
#include "server/log.h"

static const struct enum_val log_levels[] = {
    {"error", VG_LOG_ERROR}, {"warn", VG_LOG_WARN},
    {"info", VG_LOG_INFO},   {"debug", VG_LOG_DEBUG}, {NULL, 0}};
static const struct enum_val dup_modes[] = {
    {"keep", VG_DUP_KEEP}, {"replace", VG_DUP_REPLACE}, {NULL, 0}};
static const struct enum_val roles[] = {
    {"source", VG_ROLE_SOURCE}, {"destination", VG_ROLE_DESTINATION},
    {NULL, 0}};

static const char *check_ae_title(const char *v);
static const char *check_ip(const char *v);
static const char *check_ipv4(const char *v);
static const char *check_host(const char *v);
static const char *check_modalities(const char *v);
static const char *check_group(const char *v);
static const char *check_device(const char *v);

#define PEBI 1125899906842624.0 /* 1P: bound of sizes, exact in a double */
#define F_CFG(f) offsetof(vg_config_t, f), sizeof(((vg_config_t *)0)->f)
#define F_AE(f) offsetof(vg_ae_cfg_t, f), sizeof(((vg_ae_cfg_t *)0)->f)
#define F_RT(f) offsetof(vg_route_cfg_t, f), sizeof(((vg_route_cfg_t *)0)->f)
#define F_MD(f) offsetof(vg_model_cfg_t, f), sizeof(((vg_model_cfg_t *)0)->f)

/* The order here is the order of --print-keys and of the example file. */
const struct key vg__config_keys[] = {
    {K_NODE, "ae_title", T_STRING, 1, VG_AE_TITLE_MAX, "characters", "VIGIL",
     F_CFG(node.ae_title), NULL, check_ae_title, 0},
    {K_NODE, "bind", T_STRING, 1, 15, "characters", "0.0.0.0",
     F_CFG(node.bind), NULL, check_ipv4, 0},
    {K_NODE, "port", T_INT, 1, 65535, "", "11112", F_CFG(node.port), NULL,
     NULL, 0},
    {K_NODE, "max_associations", T_INT, 1, 256, "", "16",
     F_CFG(node.max_associations), NULL, NULL, 0},
    {K_NODE, "accept_unknown_sources", T_BOOL, 0, 1, "", "no",
     F_CFG(node.accept_unknown_sources), NULL, NULL, 0},
    {K_NODE, "acse_timeout", T_INT, 1, 3600, "seconds", "30",
     F_CFG(node.acse_timeout), NULL, NULL, 0},
    {K_NODE, "dimse_timeout", T_INT, 1, 3600, "seconds", "60",
     F_CFG(node.dimse_timeout), NULL, NULL, 0},
    {K_NODE, "shutdown_timeout", T_INT, 0, 3600, "seconds", "30",
     F_CFG(node.shutdown_timeout), NULL, NULL, 0},
    {K_NODE, "log_level", T_ENUM, 0, 0, "", "info", F_CFG(node.log_level),
     log_levels, NULL, 0},
    {K_NODE, "tls_certificate", T_PATH, 0, VG_PATH_MAX - 1, "characters", "",
     F_CFG(node.tls_certificate), NULL, NULL, 0},
    {K_NODE, "tls_private_key", T_PATH, 0, VG_PATH_MAX - 1, "characters", "",
     F_CFG(node.tls_private_key), NULL, NULL, 0},
    {K_STORAGE, "dir", T_PATH, 1, VG_PATH_MAX - 1, "characters", "var",
     F_CFG(storage.dir), NULL, NULL, 0},
    {K_STORAGE, "min_free_disk", T_SIZE, 0, PEBI, "bytes", "1G",
     F_CFG(storage.min_free_disk), NULL, NULL, 0},
    {K_STORAGE, "series_quiet_seconds", T_INT, 1, 86400, "seconds", "10",
     F_CFG(storage.series_quiet_seconds), NULL, NULL, 0},
    {K_STORAGE, "study_quiet_seconds", T_INT, 1, 86400, "seconds", "30",
     F_CFG(storage.study_quiet_seconds), NULL, NULL, 0},
    {K_STORAGE, "on_duplicate", T_ENUM, 0, 0, "", "keep",
     F_CFG(storage.on_duplicate), dup_modes, NULL, 0},
    {K_HTTP, "bind", T_STRING, 1, 63, "characters", "127.0.0.1",
     F_CFG(http.bind), NULL, check_ip, 0},
    {K_HTTP, "port", T_INT, 1, 65535, "", "8080", F_CFG(http.port), NULL,
     NULL, 0},
    {K_OUTBOX, "retry_initial_seconds", T_INT, 1, 86400, "seconds", "10",
     F_CFG(outbox.retry_initial_seconds), NULL, NULL, 0},
    {K_OUTBOX, "retry_max_seconds", T_INT, 1, 604800, "seconds", "600",
     F_CFG(outbox.retry_max_seconds), NULL, NULL, 0},
    {K_OUTBOX, "max_attempts", T_INT, 0, 1000000, "", "0",
     F_CFG(outbox.max_attempts), NULL, NULL, 0},
    {K_AE, "ae_title", T_STRING, 1, VG_AE_TITLE_MAX, "characters", NULL,
     F_AE(ae_title), NULL, check_ae_title, 0},
    {K_AE, "host", T_STRING, 0, 255, "characters", "", F_AE(host), NULL,
     check_host, 0},
    {K_AE, "port", T_INT, 0, 65535, "", "0", F_AE(port), NULL, NULL, 0},
    {K_AE, "role", T_ENUM, 0, 0, "", NULL, F_AE(role), roles, NULL, 0},
    {K_AE, "tls", T_BOOL, 0, 1, "", "no", F_AE(tls), NULL, NULL, 0},
    {K_AE, "tls_ca_file", T_PATH, 0, VG_PATH_MAX - 1, "characters", "",
     F_AE(tls_ca_file), NULL, NULL, 0},
    {K_ROUTE, "model", T_STRING, 1, VG_NAME_MAX - 1, "characters", NULL,
     F_RT(model), NULL, vg__config_check_name, 0},
    {K_ROUTE, "modality", T_STRING, 1, 63, "characters", NULL,
     F_RT(modality), NULL, check_modalities, 0},
    {K_ROUTE, "min_slices", T_INT, 1, 100000, "", "1", F_RT(min_slices),
     NULL, NULL, 0},
    {K_ROUTE, "max_slice_thickness", T_DOUBLE, 0, 100, "mm", "0",
     F_RT(max_slice_thickness), NULL, NULL, 0},
    {K_ROUTE, "group", T_STRING, 1, 15, "characters", "series", F_RT(group),
     NULL, check_group, 0},
    {K_ROUTE, "group_window_hours", T_INT, 1, 8760, "hours", "24",
     F_RT(group_window_hours), NULL, NULL, 0},
    {K_ROUTE, "destinations", T_LIST, 0, VG_ROUTE_DEST_MAX, "names", "",
     F_RT(destinations), NULL, vg__config_check_name,
     offsetof(vg_route_cfg_t, n_destinations)},
    {K_MODEL, "manifest", T_PATH, 1, VG_PATH_MAX - 1, "characters", NULL,
     F_MD(manifest), NULL, NULL, 0},
    {K_MODEL, "devices", T_LIST, 1, VG_MODEL_DEVICES_MAX, "devices", "cpu",
     F_MD(devices), NULL, check_device, offsetof(vg_model_cfg_t, n_devices)},
    {K_MODEL, "threads", T_INT, 1, 64, "", "2", F_MD(threads), NULL, NULL, 0},
    {K_MODEL, "max_attempts", T_INT, 1, 100, "", "3", F_MD(max_attempts),
     NULL, NULL, 0},
    {K_MODEL, "lease_seconds", T_INT, 10, 86400, "seconds", "900",
     F_MD(lease_seconds), NULL, NULL, 0},
};

const size_t vg__config_n_keys =
    sizeof vg__config_keys / sizeof vg__config_keys[0];
_Static_assert(sizeof vg__config_keys / sizeof vg__config_keys[0] <=
                   VG__CONFIG_MAX_KEYS,
               "raise VG__CONFIG_MAX_KEYS");

/* "0", "1G", "1048577": the largest unit that divides V exactly. */
static void fmt_size(uint64_t v, char *buf, size_t len)
{
    static const char units[] = "KMGTP";
    int u = 0;
    while (v && u < 5 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    if (u)
        snprintf(buf, len, "%llu%c", (unsigned long long)v, units[u - 1]);
    else
        snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* "1..65535", "1..3600 seconds", "0..1P bytes", "0..100 mm". */
static void fmt_bounds(const struct key *k, char *buf, size_t len)
{
    const char *sp = *k->unit ? " " : "";
    if (k->type == T_SIZE) {
        char lo[24], hi[24];
        fmt_size((uint64_t)k->lo, lo, sizeof lo);
        fmt_size((uint64_t)k->hi, hi, sizeof hi);
        snprintf(buf, len, "%s..%s%s%s", lo, hi, sp, k->unit);
    } else {
        snprintf(buf, len, "%.15g..%.15g%s%s", k->lo, k->hi, sp, k->unit);
    }
}

/* ------------------------------------------------------ value checks */

static const char *check_ae_title(const char *v)
{
    for (const unsigned char *c = (const unsigned char *)v; *c; c++)
        if (*c < 0x20 || *c > 0x7e || *c == '\\')
            return "must be printable ASCII without backslash";
    size_t n = strlen(v);
    if (n && (v[0] == ' ' || v[n - 1] == ' '))
        return "must not start or end with a space";
    return NULL;
}

static const char *check_ip(const char *v)
{
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, v, addr) == 1 || inet_pton(AF_INET6, v, addr) == 1)
        return NULL;
    return "must be an IPv4 or IPv6 address (e.g. 127.0.0.1, 0.0.0.0, ::)";
}

static const char *check_ipv4(const char *v)
{
    struct in_addr addr;
    if (inet_pton(AF_INET, v, &addr) == 1)
        return NULL;
    return "must be an IPv4 address (e.g. 0.0.0.0 for every interface)";
}

static const char *check_host(const char *v)
{
    for (const unsigned char *c = (const unsigned char *)v; *c; c++)
        if (*c <= 0x20 || *c > 0x7e)
            return "must be a host name or address, without spaces";
    return NULL;
}

const char *vg__config_check_name(const char *v)
{
    if (strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789_.-") != strlen(v))
        return "may contain only letters, digits, '_', '.' and '-'";
    return NULL;
}

/* One modality ("CT"), or several for a grouped route ("MG,US"): items
 * separated by commas and/or blanks, each 1..16 uppercase letters and
 * digits (a DICOM CS value), none twice. */
static const char *check_modalities(const char *v)
{
    const char *seps = ", \t";
    int n = 0;
    for (const char *s = v + strspn(v, seps); *s; s += strspn(s, seps), n++) {
        size_t w = strcspn(s, seps);
        if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") < w)
            return "must be uppercase letters and digits (e.g. CT, MG, US), several"
                   " separated by commas";
        if (w > 16)
            return "has a modality longer than 16 characters";
        for (const char *t = v + strspn(v, seps); t < s; t += strspn(t, seps)) {
            size_t tw = strcspn(t, seps);
            if (tw == w && strncmp(t, s, w) == 0)
                return "lists a modality twice";
            t += tw;
        }
        s += w;
    }
    return n ? NULL : "names no modality (e.g. CT, or MG,US)";
}

/* What one job of a route analyses; see vg_route_cfg_t.group. */
static const char *check_group(const char *v)
{
    static const char *const groups[] = {"series", "study", "accession", "patient"};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (strcmp(v, groups[i]) == 0)
            return NULL;
    return "is not one of: series, study, accession, patient";
}

/* "cpu" or "cuda:N", N 0..63 without leading zeros, so that one device
 * has one spelling and a device listed twice is seen as such. */
static const char *check_device(const char *v)
{
    static const char *const why = "must be cpu or cuda:N with N 0..63";
    if (strcmp(v, "cpu") == 0)
        return NULL;
    if (strncmp(v, "cuda:", 5) != 0)
        return why;
    const char *n = v + 5;
    size_t w = strspn(n, "0123456789");
    if (w == 0 || w != strlen(n) || w > 2 || (w == 2 && n[0] == '0') ||
        atoi(n) > 63)
        return why;
    return NULL;
}

/* ---------------------------------------------------- value parsers
 * Each parses V for key K into its field at BASE and returns 0, or -1
 * with what is wrong in MSG (the field may then hold anything). */

static int set_int(const struct key *k, void *base, const char *v, char *msg,
                   size_t len)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    char b[128];
    fmt_bounds(k, b, sizeof b);
    if (!*v || *end || isspace((unsigned char)*v)) {
        snprintf(msg, len, "\"%s\" is not a whole number (%s)", v, b);
        return -1;
    }
    if (errno == ERANGE || n < (long long)k->lo || n > (long long)k->hi) {
        snprintf(msg, len, "%s is out of range %s", v, b);
        return -1;
    }
    *(int *)((char *)base + k->off) = (int)n;
    return 0;
}

static int set_double(const struct key *k, void *base, const char *v,
                      char *msg, size_t len)
{
    char *end;
    double d = strtod(v, &end);
    char b[128];
    fmt_bounds(k, b, sizeof b);
    if (!*v || *end || isspace((unsigned char)*v) || !isfinite(d)) {
        snprintf(msg, len, "\"%s\" is not a number (%s)", v, b);
        return -1;
    }
    if (d < k->lo || d > k->hi) {
        snprintf(msg, len, "%s is out of range %s", v, b);
        return -1;
    }
    *(double *)((char *)base + k->off) = d;
    return 0;
}

static int set_size(const struct key *k, void *base, const char *v,
                    char *msg, size_t len)
{
    uint64_t n;
    char b[128];
    fmt_bounds(k, b, sizeof b);
    if (vg_config_parse_size(v, &n) < 0) {
        snprintf(msg, len, "\"%s\" is not a size such as 1048576, 500M, 2G "
                 "(%s)", v, b);
        return -1;
    }
    if ((double)n < k->lo || (double)n > k->hi) {
        snprintf(msg, len, "%s is out of range %s", v, b);
        return -1;
    }
    *(uint64_t *)((char *)base + k->off) = n;
    return 0;
}

static int set_bool(const struct key *k, void *base, const char *v,
                    char *msg, size_t len)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *(int *)((char *)base + k->off) = strcasecmp(v, yes[i]) == 0;
            return 0;
        }
    }
    snprintf(msg, len, "\"%s\" is not a yes/no value (yes, no, true, false, "
             "on, off, 1, 0)", v);
    return -1;
}

static int set_enum(const struct key *k, void *base, const char *v,
                    char *msg, size_t len)
{
    const struct enum_val *e;
    for (e = k->enums; e->name; e++) {
        if (strcasecmp(v, e->name) == 0) {
            *(int *)((char *)base + k->off) = e->value;
            return 0;
        }
    }
    int n = snprintf(msg, len, "\"%s\" is not one of:", v);
    for (e = k->enums; e->name && n > 0 && (size_t)n < len; e++)
        n += snprintf(msg + n, len - (size_t)n, "%s %s",
                      e == k->enums ? "" : ",", e->name);
    return -1;
}

static int set_string(const struct key *k, void *base, const char *v,
                      char *msg, size_t len)
{
    size_t n = strlen(v);
    if ((double)n < k->lo || (double)n > k->hi || n >= k->size) {
        snprintf(msg, len, "\"%s\" has %zu characters; must have %.0f..%.0f",
                 v, n, k->lo, k->hi);
        return -1;
    }
    const char *why = k->check ? k->check(v) : NULL;
    if (why) {
        snprintf(msg, len, "\"%s\" %s", v, why);
        return -1;
    }
    memcpy((char *)base + k->off, v, n + 1);
    return 0;
}

/* Collapses ".", ".." and repeated '/' in the absolute path IN. Lexical:
 * the directory may not exist yet. */
static int clean_path(const char *in, char *out, size_t outlen)
{
    size_t n = 1;
    out[0] = '/';
    for (const char *s = in; *s;) {
        s += strspn(s, "/");
        size_t w = strcspn(s, "/");
        if (w == 0 || (w == 1 && s[0] == '.')) {
            /* nothing to add */
        } else if (w == 2 && s[0] == '.' && s[1] == '.') {
            while (n > 1 && out[n - 1] != '/')
                n--;
            if (n > 1)
                n--;
        } else {
            if (n + w + 2 > outlen)
                return -1;
            if (n > 1)
                out[n++] = '/';
            memcpy(out + n, s, w);
            n += w;
        }
        s += w;
    }
    out[n] = '\0';
    return 0;
}

/* A relative path is relative to the directory of the config file, not to
 * the daemon's working directory, so a unit file or `make run` started
 * from anywhere finds the same data. A key whose lower bound is 0 may be
 * empty: an optional file that is not given. */
static int set_path(const struct key *k, void *base, const char *v,
                    const char *dir, char *msg, size_t len)
{
    char joined[2 * VG_PATH_MAX];
    if (!*v && k->lo == 0) { /* an optional file: "" means none */
        *((char *)base + k->off) = '\0';
        return 0;
    }
    if (!*v) {
        snprintf(msg, len, "must not be empty");
        return -1;
    }
    if (v[0] == '/')
        snprintf(joined, sizeof joined, "%s", v);
    else
        snprintf(joined, sizeof joined, "%s/%s", dir, v);
    if (clean_path(joined, (char *)base + k->off, k->size) < 0) {
        snprintf(msg, len, "path is longer than %d characters",
                 VG_PATH_MAX - 1);
        return -1;
    }
    return 0;
}

/* Items separated by commas and/or blanks, each checked by k->check and
 * stored in one of k->hi rows of k->size / k->hi characters; an item
 * listed twice is an error. Whether a name refers to a section is
 * checked once every section is read. */
static int set_list(const struct key *k, void *base, const char *v,
                    char *msg, size_t len)
{
    size_t width = k->size / (size_t)k->hi;
    char *rows = (char *)base + k->off;
    int n = 0;
    for (const char *s = v + strspn(v, ", \t"); *s; s += strspn(s, ", \t")) {
        size_t w = strcspn(s, ", \t");
        char item[256]; /* read_line() passes at most 198 characters */
        if (n >= (int)k->hi) {
            snprintf(msg, len, "more than %.0f %s", k->hi, k->unit);
            return -1;
        }
        snprintf(item, sizeof item, "%.*s", (int)w, s);
        s += w;
        const char *why = k->check ? k->check(item) : NULL;
        for (int j = 0; j < n && !why; j++)
            if (strcmp(rows + (size_t)j * width, item) == 0)
                why = "is listed twice";
        if (!why && w >= width) {
            snprintf(msg, len, "\"%s\" is longer than %zu characters", item,
                     width - 1);
            return -1;
        }
        if (why) {
            snprintf(msg, len, "\"%s\" %s", item, why);
            return -1;
        }
        memcpy(rows + (size_t)n * width, item, w + 1);
        n++;
    }
    if (n < (int)k->lo) {
        snprintf(msg, len, "lists %d %s; must list %.0f..%.0f", n, k->unit,
                 k->lo, k->hi);
        return -1;
    }
    *(int *)((char *)base + k->count_off) = n;
    return 0;
}

int vg__config_set_value(const struct key *k, void *base, const char *v,
                         const char *dir, char *msg, size_t len)
{
    switch (k->type) {
    case T_INT: return set_int(k, base, v, msg, len);
    case T_BOOL: return set_bool(k, base, v, msg, len);
    case T_STRING: return set_string(k, base, v, msg, len);
    case T_ENUM: return set_enum(k, base, v, msg, len);
    case T_SIZE: return set_size(k, base, v, msg, len);
    case T_DOUBLE: return set_double(k, base, v, msg, len);
    case T_PATH: return set_path(k, base, v, dir, msg, len);
    case T_LIST: return set_list(k, base, v, msg, len);
    }
    vg_assert(!"unknown key type");
    return -1;
}

const char *vg__config_type_name(int type)
{
    static const char *const names[] = {"int",  "bool",   "string", "enum",
                                        "size", "double", "path",   "list"};
    vg_assert(type >= 0 && type < (int)(sizeof names / sizeof names[0]));
    return names[type];
}

int vg_config_parse_size(const char *s, uint64_t *out)
{
    static const char units[] = "KMGTP";
    if (!isdigit((unsigned char)*s))
        return VG_EINVAL_CFG; /* also refuses the "-1" strtoull accepts */
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return VG_EINVAL_CFG;
    end += strspn(end, " ");
    int shift = 0;
    const char *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    if (u) {
        shift = 10 * (int)(u - units + 1);
        end++;
        if (*end == 'i' && (end[1] == 'B' || end[1] == 'b'))
            end++; /* "MiB" */
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || (shift && n > (UINT64_MAX >> shift)))
        return VG_EINVAL_CFG;
    *out = (uint64_t)n << shift;
    return 0;
}

/* ------------------------------------- checks across keys and sections */

static void check_storage(struct parse *p, const vg_config_t *cfg)
{
    int series = cfg->storage.series_quiet_seconds;
    int study = cfg->storage.study_quiet_seconds;
    if (study >= series)
        return;
    int l_study = vg__config_key_line(p, K_STORAGE, 0, "study_quiet_seconds");
    if (l_study)
        vg__config_errf(p, l_study, "study_quiet_seconds", "%d must be >= "
                        "series_quiet_seconds (%d)", study, series);
    else
        vg__config_errf(p, vg__config_key_line(p, K_STORAGE, 0,
                                               "series_quiet_seconds"),
                        "series_quiet_seconds", "%d must be <= "
                        "study_quiet_seconds (%d)", series, study);
}

static void check_outbox(struct parse *p, const vg_config_t *cfg)
{
    int first = cfg->outbox.retry_initial_seconds;
    int most = cfg->outbox.retry_max_seconds;
    if (most >= first)
        return;
    int line = vg__config_key_line(p, K_OUTBOX, 0, "retry_max_seconds");
    if (line)
        vg__config_errf(p, line, "retry_max_seconds", "%d must be >= "
                        "retry_initial_seconds (%d)", most, first);
    else
        vg__config_errf(p, vg__config_key_line(p, K_OUTBOX, 0,
                                               "retry_initial_seconds"),
                        "retry_initial_seconds", "%d must be <= "
                        "retry_max_seconds (%d)", first, most);
}

/* The node's own TLS identity, for destinations that ask for a client
 * certificate: a certificate without its key (or the reverse) is a
 * mistake, not a choice. */
static void check_node_tls(struct parse *p, const vg_config_t *cfg)
{
    int has_cert = cfg->node.tls_certificate[0] != '\0';
    int has_key = cfg->node.tls_private_key[0] != '\0';
    if (has_cert && !has_key)
        vg__config_errf(p, vg__config_key_line(p, K_NODE, 0, "tls_certificate"),
                        "tls_private_key", "required when tls_certificate is set");
    else if (has_key && !has_cert)
        vg__config_errf(p, vg__config_key_line(p, K_NODE, 0, "tls_private_key"),
                        "tls_certificate", "required when tls_private_key is set");
}

/* TLS to a destination always verifies the peer's certificate, so it
 * needs the CA that signed it. The listener does not speak TLS, so a
 * source cannot ask for it. */
static void check_ae_tls(struct parse *p, const vg_ae_cfg_t *a, int i)
{
    int l_tls = vg__config_key_line(p, K_AE, i, "tls");
    if (!a->tls)
        return;
    if (a->role == VG_ROLE_SOURCE)
        vg__config_errf(p, l_tls, "tls", "only a destination can use TLS (the "
                        "DICOM listener does not)");
    else if (!a->tls_ca_file[0])
        vg__config_errf(p, l_tls, "tls_ca_file", "required in [ae %s] when tls = "
                        "yes: the destination's certificate is always verified",
                        a->name);
}

static void check_ae(struct parse *p, const vg_config_t *cfg, int i)
{
    const vg_ae_cfg_t *a = &cfg->aes[i];
    check_ae_tls(p, a, i);
    if (a->role == VG_ROLE_DESTINATION && !a->host[0])
        vg__config_errf(p, a->line, "host", "required in [ae %s] when role = "
                        "destination (the address results are sent to)", a->name);
    int l_port = vg__config_key_line(p, K_AE, i, "port");
    if (a->role == VG_ROLE_DESTINATION && a->port == 0 && l_port)
        vg__config_errf(p, l_port, "port", "must be 1..65535 when role = "
                        "destination");
    else if (a->role == VG_ROLE_DESTINATION && a->port == 0)
        vg__config_errf(p, a->line, "port", "required in [ae %s] when "
                        "role = destination (1..65535)", a->name);
    for (int j = 0; j < i && a->role && *a->ae_title; j++) {
        const vg_ae_cfg_t *b = &cfg->aes[j];
        if (b->role == a->role && strcmp(b->ae_title, a->ae_title) == 0)
            vg__config_errf(p, vg__config_key_line(p, K_AE, i, "ae_title"),
                            "ae_title", "\"%s\" with role %s is already "
                            "[ae %s] (line %d)", a->ae_title,
                            a->role == VG_ROLE_SOURCE ? "source"
                                                      : "destination",
                            b->name, b->line);
    }
}

static const vg_ae_cfg_t *find_ae_named(const vg_config_t *cfg,
                                        const char *name)
{
    for (int i = 0; i < cfg->n_aes; i++)
        if (strcmp(cfg->aes[i].name, name) == 0)
            return &cfg->aes[i];
    return NULL;
}

/* A route's model and destinations name sections, wherever they are in
 * the file. A model that no route names is fine. */
static void check_route(struct parse *p, const vg_config_t *cfg, int i)
{
    const vg_route_cfg_t *r = &cfg->routes[i];
    if (*r->model && !vg_config_find_model(cfg, r->model))
        vg__config_errf(p, vg__config_key_line(p, K_ROUTE, i, "model"),
                        "model", "no [model %s] section", r->model);
    int line = vg__config_key_line(p, K_ROUTE, i, "destinations");
    for (int d = 0; d < r->n_destinations; d++) {
        const vg_ae_cfg_t *a = find_ae_named(cfg, r->destinations[d]);
        if (!a)
            vg__config_errf(p, line, "destinations", "\"%s\" is not an "
                            "[ae] section", r->destinations[d]);
        else if (a->role == VG_ROLE_SOURCE)
            vg__config_errf(p, line, "destinations", "[ae %s] has role "
                            "source, not destination", a->name);
    }
}

void vg__config_check_sections(struct parse *p, const vg_config_t *cfg)
{
    check_storage(p, cfg);
    check_outbox(p, cfg);
    check_node_tls(p, cfg);
    for (int i = 0; i < cfg->n_aes; i++)
        check_ae(p, cfg, i);
    for (int i = 0; i < cfg->n_routes; i++)
        check_route(p, cfg, i);
}
