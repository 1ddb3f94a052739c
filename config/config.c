/* The configuration loader: libinih splits the file into sections and
 * "key = value" pairs; this file holds the one table of keys (type,
 * bounds, default, offset) and the checks that span keys and sections,
 * and reports every problem as "file:line: key: message". It creates no
 * directories, resolves no host names and opens no sockets: whether the
 * things named here exist at run time is the daemon's business.
 *
 * Line numbers: Debian's libinih is built without INI_HANDLER_LINENO, so
 * the file is fed to ini_parse_stream() through read_line(), which counts
 * lines. inih calls the handler for a key before it asks for the next
 * line, so the handler's line is the reader's last one. read_line() also
 * opens sections itself, because inih does not call the handler for a
 * section without keys, and a missing required key is reported at the
 * header of such a section. */
#include "config/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "server/error.h"
#include "server/log.h"

enum { T_INT, T_BOOL, T_STRING, T_ENUM, T_SIZE, T_DOUBLE, T_PATH, T_LIST };
static const char *const type_names[] = {"int",  "bool",   "string", "enum",
                                         "size", "double", "path",   "list"};

/* K_SKIP: inside a section already reported as wrong; its keys are not
 * checked, so one mistake gives one error. */
enum { K_NONE, K_NODE, K_STORAGE, K_HTTP, K_AE, K_ROUTE, K_SKIP };
static const char *const kind_names[] = {"", "node", "storage", "http",
                                         "ae", "route", ""};

struct enum_val {
    const char *name;
    int value;
};

struct key {
    int kind;                   /* K_*: the section it belongs to */
    const char *name;
    int type;                   /* T_* */
    double lo, hi;              /* value bounds; string length bounds */
    const char *unit;           /* for messages: "seconds", "mm", "" */
    const char *def;            /* NULL: required */
    size_t off, size;           /* field in the section's struct */
    const struct enum_val *enums; /* T_ENUM: names, NULL-terminated */
    const char *(*check)(const char *v); /* T_STRING: NULL or what is wrong */
    size_t count_off;           /* T_LIST: the int that counts the items */
};

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
static const char *check_name(const char *v);
static const char *check_modality(const char *v);

#define PEBI 1125899906842624.0 /* 1P: bound of sizes, exact in a double */
#define F_CFG(f) offsetof(vg_config_t, f), sizeof(((vg_config_t *)0)->f)
#define F_AE(f) offsetof(vg_ae_cfg_t, f), sizeof(((vg_ae_cfg_t *)0)->f)
#define F_RT(f) offsetof(vg_route_cfg_t, f), sizeof(((vg_route_cfg_t *)0)->f)

/* The order here is the order of --print-keys and of the example file. */
static const struct key keys[] = {
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
    {K_AE, "ae_title", T_STRING, 1, VG_AE_TITLE_MAX, "characters", NULL,
     F_AE(ae_title), NULL, check_ae_title, 0},
    {K_AE, "host", T_STRING, 0, 255, "characters", "", F_AE(host), NULL,
     check_host, 0},
    {K_AE, "port", T_INT, 0, 65535, "", "0", F_AE(port), NULL, NULL, 0},
    {K_AE, "role", T_ENUM, 0, 0, "", NULL, F_AE(role), roles, NULL, 0},
    {K_ROUTE, "model", T_STRING, 1, VG_NAME_MAX - 1, "characters", NULL,
     F_RT(model), NULL, check_name, 0},
    {K_ROUTE, "modality", T_STRING, 1, 16, "characters", NULL,
     F_RT(modality), NULL, check_modality, 0},
    {K_ROUTE, "min_slices", T_INT, 1, 100000, "", "1", F_RT(min_slices),
     NULL, NULL, 0},
    {K_ROUTE, "max_slice_thickness", T_DOUBLE, 0, 100, "mm", "0",
     F_RT(max_slice_thickness), NULL, NULL, 0},
    {K_ROUTE, "destinations", T_LIST, 0, VG_ROUTE_DEST_MAX, "names", "",
     F_RT(destinations), NULL, NULL,
     offsetof(vg_route_cfg_t, n_destinations)},
};

#define N_KEYS (sizeof keys / sizeof keys[0])
#define MAX_KEYS 32
_Static_assert(N_KEYS <= MAX_KEYS, "raise MAX_KEYS");

/* What the parser knows about one section beyond its values. */
struct sect {
    int kind;               /* K_NODE ... K_ROUTE */
    int idx;                /* into cfg->aes or cfg->routes */
    int line;               /* line of the header; 0: not in the file */
    int key_line[MAX_KEYS]; /* by index in keys[]: where set; 0: not set */
};

struct parse {
    vg_config_t *cfg;
    const char *file;          /* the path as given, for messages */
    char dir[VG_PATH_MAX];     /* directory of the file, absolute */
    FILE *fp;
    char *buf;                 /* getline's buffer */
    size_t cap;
    int lineno;                /* last line handed to inih */
    int want_key, got_key;     /* that line was "key = value"; handler ran */
    char text[40];             /* its start, for a syntax error */
    int read_errno;
    int nomem;
    struct sect glob[3];       /* [node], [storage], [http] */
    struct sect *ae_s, *route_s; /* parallel to cfg->aes, cfg->routes */
    int cap_ae, cap_route;
    int cur_kind, cur_idx;     /* the section keys now go to */
    char *err;
    size_t errlen, errpos;
    int nerr;
};

/* ---------------------------------------------------------- messages */

static void errf(struct parse *p, int line, const char *key, const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* Appends "file:line: key: message" as a new line of p->err; a message
 * that does not fit is cut, and later ones are dropped (still counted). */
static void errf(struct parse *p, int line, const char *key, const char *fmt,
                 ...)
{
    p->nerr++;
    if (!p->err || p->errpos + 1 >= p->errlen)
        return;
    char *dst = p->err + p->errpos;
    size_t room = p->errlen - p->errpos;
    const char *sep = p->errpos ? "\n" : "";
    int n = line > 0 ? snprintf(dst, room, "%s%s:%d: %s: ", sep, p->file,
                                line, key)
                     : snprintf(dst, room, "%s%s: %s: ", sep, p->file, key);
    if (n < 0 || (size_t)n >= room) {
        p->errpos = p->errlen - 1;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(dst + n, room - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)m >= room - (size_t)n)
        p->errpos = p->errlen - 1;
    else
        p->errpos += (size_t)n + (size_t)m;
}

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

static const char *check_name(const char *v)
{
    if (strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789_.-") != strlen(v))
        return "may contain only letters, digits, '_', '.' and '-'";
    return NULL;
}

static const char *check_modality(const char *v)
{
    if (strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != strlen(v))
        return "must be uppercase letters and digits (e.g. CT, MG, US)";
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
 * from anywhere finds the same data. */
static int set_path(const struct parse *p, const struct key *k, void *base,
                    const char *v, char *msg, size_t len)
{
    char joined[2 * VG_PATH_MAX];
    if (!*v) {
        snprintf(msg, len, "must not be empty");
        return -1;
    }
    if (v[0] == '/')
        snprintf(joined, sizeof joined, "%s", v);
    else
        snprintf(joined, sizeof joined, "%s/%s", p->dir, v);
    if (clean_path(joined, (char *)base + k->off, k->size) < 0) {
        snprintf(msg, len, "path is longer than %d characters",
                 VG_PATH_MAX - 1);
        return -1;
    }
    return 0;
}

/* Names separated by commas and/or blanks; whether each names a
 * destination AE is checked once every section is read. */
static int set_list(const struct key *k, void *base, const char *v,
                    char *msg, size_t len)
{
    char (*names)[VG_NAME_MAX] = (void *)((char *)base + k->off);
    int n = 0;
    for (const char *s = v + strspn(v, ", \t"); *s; s += strspn(s, ", \t")) {
        size_t w = strcspn(s, ", \t");
        if (n >= (int)k->hi) {
            snprintf(msg, len, "more than %.0f names", k->hi);
            return -1;
        }
        if (w >= VG_NAME_MAX) {
            snprintf(msg, len, "\"%.*s\" is longer than %d characters",
                     (int)w, s, VG_NAME_MAX - 1);
            return -1;
        }
        memcpy(names[n], s, w);
        names[n][w] = '\0';
        s += w;
        const char *why = check_name(names[n]);
        for (int j = 0; j < n && !why; j++)
            if (strcmp(names[j], names[n]) == 0)
                why = "is listed twice";
        if (why) {
            snprintf(msg, len, "\"%s\" %s", names[n], why);
            return -1;
        }
        n++;
    }
    *(int *)((char *)base + k->count_off) = n;
    return 0;
}

static int set_value(const struct parse *p, const struct key *k, void *base,
                     const char *v, char *msg, size_t len)
{
    switch (k->type) {
    case T_INT: return set_int(k, base, v, msg, len);
    case T_BOOL: return set_bool(k, base, v, msg, len);
    case T_STRING: return set_string(k, base, v, msg, len);
    case T_ENUM: return set_enum(k, base, v, msg, len);
    case T_SIZE: return set_size(k, base, v, msg, len);
    case T_DOUBLE: return set_double(k, base, v, msg, len);
    case T_PATH: return set_path(p, k, base, v, msg, len);
    case T_LIST: return set_list(k, base, v, msg, len);
    }
    vg_assert(!"unknown key type");
    return -1;
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

/* ---------------------------------------------------------- sections */

static struct sect *sect_at(struct parse *p, int kind, int idx)
{
    if (kind == K_AE)
        return &p->ae_s[idx];
    if (kind == K_ROUTE)
        return &p->route_s[idx];
    return &p->glob[kind - K_NODE];
}

/* The struct that a section's table offsets are relative to. */
static void *sect_base(struct parse *p, const struct sect *s)
{
    if (s->kind == K_AE)
        return &p->cfg->aes[s->idx];
    if (s->kind == K_ROUTE)
        return &p->cfg->routes[s->idx];
    return p->cfg;
}

/* "[node]", "[ae pacs]". */
static const char *sect_label(struct parse *p, const struct sect *s,
                              char *buf, size_t len)
{
    const char *name = s->kind == K_AE      ? p->cfg->aes[s->idx].name
                       : s->kind == K_ROUTE ? p->cfg->routes[s->idx].name
                                            : "";
    snprintf(buf, len, "[%s%s%s]", kind_names[s->kind], *name ? " " : "",
             name);
    return buf;
}

/* Sets every key of section S that has a default. */
static void apply_defaults(struct parse *p, struct sect *s)
{
    char msg[256];
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        if (k->kind != s->kind || !k->def)
            continue;
        /* Only a path can fail: the file's directory may be too long. */
        if (set_value(p, k, sect_base(p, s), k->def, msg, sizeof msg) < 0)
            errf(p, s->line, k->name, "default \"%s\": %s", k->def, msg);
    }
}

/* Makes room for one more [ae] or [route] section: the config's array
 * and the parser's grow together. 0, or -1 if memory ran out (both arrays
 * are then still valid). */
static int reserve(struct parse *p, int kind)
{
    vg_config_t *cfg = p->cfg;
    int *cap = kind == K_AE ? &p->cap_ae : &p->cap_route;
    int n = kind == K_AE ? cfg->n_aes : cfg->n_routes;
    if (n < *cap)
        return 0;
    size_t nc = *cap ? 2 * (size_t)*cap : 4;
    struct sect *s = realloc(kind == K_AE ? p->ae_s : p->route_s,
                             sizeof *s * nc);
    if (!s)
        return -1;
    if (kind == K_AE) {
        p->ae_s = s;
        vg_ae_cfg_t *a = realloc(cfg->aes, sizeof *a * nc);
        if (!a)
            return -1;
        cfg->aes = a;
    } else {
        p->route_s = s;
        vg_route_cfg_t *r = realloc(cfg->routes, sizeof *r * nc);
        if (!r)
            return -1;
        cfg->routes = r;
    }
    *cap = (int)nc;
    return 0;
}

/* Adds an [ae] or [route] section named NAME at the current line, with
 * its defaults; returns its index, or -1 if memory ran out. */
static int add_named(struct parse *p, int kind, const char *name)
{
    vg_config_t *cfg = p->cfg;
    if (reserve(p, kind) < 0)
        return -1;
    int i = kind == K_AE ? cfg->n_aes++ : cfg->n_routes++;
    if (kind == K_AE) {
        memset(&cfg->aes[i], 0, sizeof cfg->aes[i]);
        snprintf(cfg->aes[i].name, VG_NAME_MAX, "%s", name);
        cfg->aes[i].line = p->lineno;
    } else {
        memset(&cfg->routes[i], 0, sizeof cfg->routes[i]);
        snprintf(cfg->routes[i].name, VG_NAME_MAX, "%s", name);
        cfg->routes[i].line = p->lineno;
    }
    struct sect *s = sect_at(p, kind, i);
    *s = (struct sect){.kind = kind, .idx = i, .line = p->lineno};
    apply_defaults(p, s);
    return i;
}

static int find_named(struct parse *p, int kind, const char *name)
{
    int n = kind == K_AE ? p->cfg->n_aes : p->cfg->n_routes;
    for (int i = 0; i < n; i++) {
        const char *s = kind == K_AE ? p->cfg->aes[i].name
                                     : p->cfg->routes[i].name;
        if (strcmp(s, name) == 0)
            return i;
    }
    return -1;
}

/* Splits the text between the brackets into kind and name and checks
 * both; returns the kind, or K_SKIP after reporting what is wrong. */
static int header_kind(struct parse *p, const char *label, char *inner,
                       const char **name)
{
    char *type = inner + strspn(inner, " \t");
    char *sp = type + strcspn(type, " \t");
    *name = sp + strspn(sp, " \t");
    *sp = '\0';
    int kind = K_NONE;
    for (int k = K_NODE; k <= K_ROUTE; k++)
        if (strcmp(type, kind_names[k]) == 0)
            kind = k;
    const char *why = NULL;
    if (kind == K_NONE)
        why = "unknown section (known: [node], [storage], [http], "
              "[ae NAME], [route NAME])";
    else if (kind < K_AE && **name)
        why = "this section takes no name";
    else if (kind >= K_AE && !**name)
        why = "needs a name, e.g. [ae pacs] or [route bone-ct]";
    else if (kind >= K_AE && (strlen(*name) >= VG_NAME_MAX || check_name(*name)))
        why = "name must be 1..63 letters, digits, '_', '.' or '-'";
    if (why) {
        errf(p, p->lineno, label, "%s", why);
        return K_SKIP;
    }
    return kind;
}

/* Makes LINE (which starts with '[') the current section. Returns 0 if
 * inih may see the line, -1 if it is wrong and must be hidden from it. */
static int open_section(struct parse *p, const char *line)
{
    char inner[256], label[140]; /* read_line() passes at most 198 chars */
    const char *end = strchr(line, ']');
    const char *rest = end ? end + 1 + strspn(end + 1, " \t") : NULL;
    p->cur_kind = K_SKIP;
    snprintf(label, sizeof label, "%.*s", end ? (int)(end - line + 1) : 60,
             line);
    if (!end || (*rest && *rest != ';' && *rest != '#')) {
        errf(p, p->lineno, label, "expected \"[section]\" alone on the line");
        return -1;
    }
    snprintf(inner, sizeof inner, "%.*s", (int)(end - line - 1), line + 1);
    const char *name;
    int kind = header_kind(p, label, inner, &name);
    if (kind == K_SKIP)
        return -1;
    int idx = kind >= K_AE ? find_named(p, kind, name) : 0;
    struct sect *s = kind < K_AE || idx >= 0 ? sect_at(p, kind, idx) : NULL;
    if (s && s->line) {
        errf(p, p->lineno, label, "duplicate section (first at line %d)",
             s->line);
        return -1;
    }
    if (!s && (idx = add_named(p, kind, name)) < 0) {
        p->nomem = 1;
        return -1;
    }
    sect_at(p, kind, idx)->line = p->lineno;
    p->cur_kind = kind;
    p->cur_idx = idx;
    return 0;
}

/* ---------------------------------------------------- inih callbacks */

/* The index in keys[] of NAME in a section of KIND, or N_KEYS. */
static size_t find_key(int kind, const char *name)
{
    size_t i = 0;
    while (i < N_KEYS && (keys[i].kind != kind || strcmp(keys[i].name, name)))
        i++;
    return i;
}

/* inih ignores a line it cannot parse; a "key = value" line that did not
 * reach the handler was one. Called before each new line and at the end. */
static void check_last_line(struct parse *p)
{
    if (p->want_key && !p->got_key)
        errf(p, p->lineno, p->text, "expected \"key = value\" or "
             "\"[section]\"");
    p->want_key = 0;
}

/* inih's reader: gives inih one whole line at a time, left-trimmed so that
 * inih never takes an indented line as the continuation of the previous
 * value (Debian builds it with INI_ALLOW_MULTILINE). A line that does not
 * fit inih's buffer, or a wrong section header, is reported here and
 * handed over as an empty line. */
static char *read_line(char *str, int num, void *stream)
{
    struct parse *p = stream;
    check_last_line(p);
    errno = 0;
    ssize_t got = getline(&p->buf, &p->cap, p->fp);
    if (got < 0) {
        if (ferror(p->fp))
            p->read_errno = errno ? errno : EIO;
        return NULL;
    }
    char *s = p->buf;
    if (p->lineno++ == 0 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3; /* UTF-8 byte order mark */
    s += strspn(s, " \t");
    s[strcspn(s, "\r\n")] = '\0';
    size_t len = strlen(s);
    if (len + 2 > (size_t)num) {
        errf(p, p->lineno, "line", "longer than %d characters", num - 2);
        s = "";
    } else if (*s == '[') {
        if (open_section(p, s) < 0)
            s = "";
    } else if (*s && *s != ';' && *s != '#') {
        p->want_key = 1;
        p->got_key = 0;
        snprintf(p->text, sizeof p->text, "%s", s);
    }
    snprintf(str, (size_t)num, "%s\n", s);
    return str;
}

/* inih's handler. The section inih passes is not used: read_line() has
 * already made it current, and knows whether it was wrong. */
static int on_key(void *user, const char *section, const char *name,
                  const char *value)
{
    struct parse *p = user;
    char label[100], msg[400];
    (void)section;
    p->got_key = 1;
    if (!*name) {
        errf(p, p->lineno, p->text, "a key name is missing before \"=\"");
        return 1;
    }
    if (p->cur_kind == K_SKIP)
        return 1;
    if (p->cur_kind == K_NONE) {
        errf(p, p->lineno, name, "is outside any section (put it under "
             "[node], [storage], [http], [ae NAME] or [route NAME])");
        return 1;
    }
    struct sect *s = sect_at(p, p->cur_kind, p->cur_idx);
    size_t i = find_key(s->kind, name);
    if (i == N_KEYS) {
        errf(p, p->lineno, name, "unknown key in %s",
             sect_label(p, s, label, sizeof label));
    } else if (s->key_line[i]) {
        errf(p, p->lineno, name, "set twice in %s (first at line %d)",
             sect_label(p, s, label, sizeof label), s->key_line[i]);
    } else if (strstr(value, " #") || strstr(value, "\t#")) {
        /* inih strips only " ;" comments; "#" would silently be part of
         * the value (an AE title "PACS # main" is valid DICOM). */
        s->key_line[i] = p->lineno;
        errf(p, p->lineno, name, "\"#\" after a value is not a comment; use "
             "\" ;\" or a line of its own");
    } else {
        s->key_line[i] = p->lineno;
        if (set_value(p, &keys[i], sect_base(p, s), value, msg, sizeof msg))
            errf(p, p->lineno, name, "%s", msg);
    }
    return 1;
}

/* ------------------------------------------------- whole-file checks */

static void check_required(struct parse *p, struct sect *s)
{
    char label[100];
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].kind == s->kind && !keys[i].def && !s->key_line[i])
            errf(p, s->line, keys[i].name, "required in %s",
                 sect_label(p, s, label, sizeof label));
}

/* The index in keys[] of a key the code names. */
static size_t key_index(int kind, const char *name)
{
    size_t i = find_key(kind, name);
    vg_assert(i < N_KEYS);
    return i;
}

static void check_storage(struct parse *p)
{
    const struct sect *s = &p->glob[K_STORAGE - K_NODE];
    int series = p->cfg->storage.series_quiet_seconds;
    int study = p->cfg->storage.study_quiet_seconds;
    int l_series = s->key_line[key_index(K_STORAGE, "series_quiet_seconds")];
    int l_study = s->key_line[key_index(K_STORAGE, "study_quiet_seconds")];
    if (study >= series)
        return;
    if (l_study)
        errf(p, l_study, "study_quiet_seconds", "%d must be >= "
             "series_quiet_seconds (%d)", study, series);
    else
        errf(p, l_series, "series_quiet_seconds", "%d must be <= "
             "study_quiet_seconds (%d)", series, study);
}

static void check_ae(struct parse *p, int i)
{
    struct sect *s = &p->ae_s[i];
    const vg_ae_cfg_t *a = &p->cfg->aes[i];
    check_required(p, s);
    int l_port = s->key_line[key_index(K_AE, "port")];
    if (a->role == VG_ROLE_DESTINATION && a->port == 0 && l_port)
        errf(p, l_port, "port", "must be 1..65535 when role = destination");
    else if (a->role == VG_ROLE_DESTINATION && a->port == 0)
        errf(p, a->line, "port", "required in [ae %s] when role = "
             "destination (1..65535)", a->name);
    for (int j = 0; j < i && a->role && *a->ae_title; j++) {
        const vg_ae_cfg_t *b = &p->cfg->aes[j];
        if (b->role == a->role && strcmp(b->ae_title, a->ae_title) == 0)
            errf(p, s->key_line[key_index(K_AE, "ae_title")], "ae_title",
                 "\"%s\" with role %s is already [ae %s] (line %d)",
                 a->ae_title, a->role == VG_ROLE_SOURCE ? "source"
                 : "destination", b->name, b->line);
    }
}

static void check_route(struct parse *p, int i)
{
    const vg_route_cfg_t *r = &p->cfg->routes[i];
    int line = p->route_s[i].key_line[key_index(K_ROUTE, "destinations")];
    check_required(p, &p->route_s[i]);
    for (int d = 0; d < r->n_destinations; d++) {
        int j = find_named(p, K_AE, r->destinations[d]);
        if (j < 0)
            errf(p, line, "destinations", "\"%s\" is not an [ae] section",
                 r->destinations[d]);
        else if (p->cfg->aes[j].role == VG_ROLE_SOURCE)
            errf(p, line, "destinations", "[ae %s] has role source, not "
                 "destination", r->destinations[d]);
    }
}

/* The line number in one message of p->err; 0 for "file: key: ...". */
static int msg_line(const struct parse *p, const char *msg)
{
    size_t n = strlen(p->file);
    return strlen(msg) > n ? atoi(msg + n + 1) : 0; /* a cut message */
}

/* Orders the messages by line, so that the whole-file checks (run last)
 * stand beside the lines they name. On a failed malloc, leaves the order
 * as found: still every message. */
static void sort_errors(struct parse *p)
{
    size_t n = 1;
    for (size_t i = 0; i < p->errpos; i++)
        n += p->err[i] == '\n';
    char *copy = malloc(p->errpos + 1);
    char **msgs = malloc(n * sizeof *msgs);
    if (copy && msgs) {
        memcpy(copy, p->err, p->errpos + 1);
        n = 0;
        for (char *s = strtok(copy, "\n"); s; s = strtok(NULL, "\n"))
            msgs[n++] = s;
        for (size_t i = 1; i < n; i++) /* insertion sort: stable */
            for (size_t j = i; j > 0 && msg_line(p, msgs[j - 1]) >
                                            msg_line(p, msgs[j]); j--) {
                char *t = msgs[j];
                msgs[j] = msgs[j - 1];
                msgs[j - 1] = t;
            }
        size_t pos = 0;
        for (size_t i = 0; i < n; i++)
            pos += (size_t)sprintf(p->err + pos, "%s%s", i ? "\n" : "",
                                   msgs[i]);
    }
    free(copy);
    free(msgs);
}

/* ------------------------------------------------------------ public */

/* Fills cfg->path and p->dir from PATH. 0 or -errno. */
static int locate(struct parse *p, const char *path)
{
    char *abs = realpath(path, NULL);
    if (!abs)
        return -errno;
    size_t n = strlen(abs);
    if (n >= sizeof p->cfg->path) {
        free(abs);
        return -ENAMETOOLONG;
    }
    memcpy(p->cfg->path, abs, n + 1);
    free(abs);
    memcpy(p->dir, p->cfg->path, n + 1);
    char *slash = strrchr(p->dir, '/'); /* realpath() gives one at least */
    if (slash == p->dir)
        slash++; /* "/b.conf": the directory is "/" */
    *slash = '\0';
    return 0;
}

static int parse_file(struct parse *p)
{
    for (int k = K_NODE; k <= K_HTTP; k++) {
        p->glob[k - K_NODE].kind = k;
        apply_defaults(p, &p->glob[k - K_NODE]);
    }
    int rc = ini_parse_stream(read_line, p, on_key, p);
    check_last_line(p);
    if (p->read_errno) {
        errf(p, 0, "read", "%s", strerror(p->read_errno));
        return -p->read_errno;
    }
    if (rc == -2 || p->nomem) {
        errf(p, 0, "load", "out of memory");
        return -ENOMEM;
    }
    if (rc > 0 && p->nerr == 0) /* inih saw something read_line did not */
        errf(p, rc, "line", "syntax error");
    check_storage(p);
    for (int i = 0; i < p->cfg->n_aes; i++)
        check_ae(p, i);
    for (int i = 0; i < p->cfg->n_routes; i++)
        check_route(p, i);
    if (p->errpos)
        sort_errors(p);
    return p->nerr ? VG_EINVAL_CFG : 0;
}

int vg_config_load(const char *path, vg_config_t **out, char *err,
                   size_t errlen)
{
    struct parse p = {.file = path, .err = err, .errlen = err ? errlen : 0};
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    int rc = 0;
    if (!(p.fp = fopen(path, "r")))
        rc = -errno;
    else if (!(p.cfg = calloc(1, sizeof *p.cfg)))
        rc = -ENOMEM;
    else
        rc = locate(&p, path);
    if (rc < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(-rc));
    } else {
        rc = parse_file(&p);
    }
    if (p.fp)
        fclose(p.fp);
    free(p.buf);
    free(p.ae_s);
    free(p.route_s);
    if (rc < 0)
        vg_config_destroy(p.cfg);
    else
        *out = p.cfg;
    return rc;
}

void vg_config_destroy(vg_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->aes);
    free(cfg->routes);
    free(cfg);
}

const vg_ae_cfg_t *vg_config_find_ae(const vg_config_t *cfg,
                                     const char *title, int role)
{
    /* DICOM pads AE titles with spaces that carry no meaning. */
    title += strspn(title, " ");
    size_t n = strlen(title);
    while (n && title[n - 1] == ' ')
        n--;
    for (int i = 0; i < cfg->n_aes; i++) {
        const vg_ae_cfg_t *a = &cfg->aes[i];
        if (a->role == role && strlen(a->ae_title) == n &&
            memcmp(a->ae_title, title, n) == 0)
            return a;
    }
    return NULL;
}

void vg_config_print_keys(FILE *f)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        fprintf(f, "%s %s %s %s\n", kind_names[k->kind], k->name,
                type_names[k->type], k->def && *k->def ? k->def : "-");
    }
}
