/* The configuration reader: libinih splits the file into sections and
 * "key = value" pairs; this file keeps track of sections (the named ones,
 * [ae NAME], [route NAME], [model NAME], through one table of kinds),
 * hands each value to the key table's parsers (config_values.c), runs
 * the checks that span keys and sections, and reports every problem as
 * "file:line: key: message". It creates no directories, resolves no host
 * names, opens no sockets and reads no manifest: whether the things named
 * here exist at run time is the daemon's business.
 *
 * Line numbers: Debian's libinih is built without INI_HANDLER_LINENO, so
 * the file is fed to ini_parse_stream() through read_line(), which counts
 * lines. inih calls the handler for a key before it asks for the next
 * line, so the handler's line is the reader's last one. read_line() also
 * opens sections itself, because inih does not call the handler for a
 * section without keys, and a missing required key is reported at the
 * header of such a section. */
#include "config/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config/config_int.h"
#include "server/error.h"
#include "server/log.h"

#define KEYS vg__config_keys
#define N_KEYS vg__config_n_keys

/* How the reader finds the sections of one kind. A kind without a name
 * ([node]) is part of the config itself: its keys' offsets are into
 * vg_config_t. A named kind ([ae NAME]) is an array in the config that
 * grows by one element per section; each element has a name and a line,
 * and its keys' offsets are into the element. */
struct kind {
    const char *name;      /* as in the header: "ae" for [ae NAME] */
    const char *example;   /* a NAME for messages; NULL: takes no name */
    size_t array, count;   /* in vg_config_t: the array and its count */
    size_t size;           /* of one element */
    size_t name_off;       /* in an element: char[VG_NAME_MAX] */
    size_t line_off;       /* in an element: int, line of the header */
};

#define NAMED(type, arr, n, ex)                                          \
    .example = ex, .array = offsetof(vg_config_t, arr),                  \
    .count = offsetof(vg_config_t, n), .size = sizeof(type),             \
    .name_off = offsetof(type, name), .line_off = offsetof(type, line)

static const struct kind kinds[K_SKIP] = {
    [K_NODE] = {.name = "node"},
    [K_STORAGE] = {.name = "storage"},
    [K_HTTP] = {.name = "http"},
    [K_OUTBOX] = {.name = "outbox"},
    [K_AE] = {.name = "ae", NAMED(vg_ae_cfg_t, aes, n_aes, "pacs")},
    [K_ROUTE] = {.name = "route",
                 NAMED(vg_route_cfg_t, routes, n_routes, "bone-ct")},
    [K_MODEL] = {.name = "model",
                 NAMED(vg_model_cfg_t, models, n_models, "bone")},
};

_Static_assert(sizeof((vg_ae_cfg_t *)0)->name == VG_NAME_MAX &&
                   sizeof((vg_route_cfg_t *)0)->name == VG_NAME_MAX &&
                   sizeof((vg_model_cfg_t *)0)->name == VG_NAME_MAX,
               "add_named() writes names of VG_NAME_MAX");

/* What the parser knows about one section beyond its values. */
struct sect {
    int kind;               /* K_NODE ... K_MODEL */
    int idx;                /* into the kind's array; 0 if not named */
    int line;               /* line of the header; 0: not in the file */
    int key_line[VG__CONFIG_MAX_KEYS]; /* by index in KEYS: where set;
                                          0: not set */
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
    struct sect glob[K_SKIP];  /* by kind: the sections without a name */
    struct sect *named[K_SKIP]; /* by kind: parallel to the config's array */
    int cap_named[K_SKIP];     /* elements allocated in both */
    int cur_kind, cur_idx;     /* the section keys now go to */
    char *err;
    size_t errlen, errpos;
    int nerr;
};

/* ---------------------------------------------------------- messages */

/* Appends "file:line: key: message" as a new line of p->err; a message
 * that does not fit is cut, and later ones are dropped (still counted).
 * Shared with the checks in config_values.c; errf() here. */
void vg__config_errf(struct parse *p, int line, const char *key,
                     const char *fmt, ...)
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

#define errf vg__config_errf

/* ---------------------------------------------------------- sections */

static int is_named(int kind)
{
    return kinds[kind].example != NULL;
}

static int *count_of(vg_config_t *cfg, int kind)
{
    return (int *)((char *)cfg + kinds[kind].count);
}

/* The config's array of KIND. Read and written with memcpy: the field is
 * a vg_ae_cfg_t * (or ...), not a char *. */
static char *array_of(const vg_config_t *cfg, int kind)
{
    char *a;
    memcpy(&a, (const char *)cfg + kinds[kind].array, sizeof a);
    return a;
}

static void set_array(vg_config_t *cfg, int kind, char *a)
{
    memcpy((char *)cfg + kinds[kind].array, &a, sizeof a);
}

static char *element(vg_config_t *cfg, int kind, int idx)
{
    return array_of(cfg, kind) + (size_t)idx * kinds[kind].size;
}

static struct sect *sect_at(struct parse *p, int kind, int idx)
{
    return is_named(kind) ? &p->named[kind][idx] : &p->glob[kind];
}

/* The struct that a section's table offsets are relative to. */
static void *sect_base(struct parse *p, const struct sect *s)
{
    if (is_named(s->kind))
        return element(p->cfg, s->kind, s->idx);
    return p->cfg;
}

/* "[node]", "[ae pacs]". */
static const char *sect_label(struct parse *p, const struct sect *s,
                              char *buf, size_t len)
{
    const char *name = "";
    if (is_named(s->kind))
        name = element(p->cfg, s->kind, s->idx) + kinds[s->kind].name_off;
    snprintf(buf, len, "[%s%s%s]", kinds[s->kind].name, *name ? " " : "",
             name);
    return buf;
}

/* "[node], [storage], ..., [route NAME] or [model NAME]", with LAST
 * before the last one, for messages. */
static const char *sect_list(char *buf, size_t len, const char *last)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int k = K_NODE; k < K_SKIP && n < len; k++)
        n += (size_t)snprintf(buf + n, len - n, "%s[%s%s]",
                              k == K_NODE ? "" : k + 1 == K_SKIP ? last : ", ",
                              kinds[k].name, is_named(k) ? " NAME" : "");
    return buf;
}

/* Sets every key of section S that has a default. */
static void apply_defaults(struct parse *p, struct sect *s)
{
    char msg[256];
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &KEYS[i];
        if (k->kind != s->kind || !k->def)
            continue;
        /* Only a path can fail: the file's directory may be too long. */
        if (vg__config_set_value(k, sect_base(p, s), k->def, p->dir, msg,
                                 sizeof msg) < 0)
            errf(p, s->line, k->name, "default \"%s\": %s", k->def, msg);
    }
}

/* Makes room for one more section of the named KIND: the config's array
 * and the parser's grow together. 0, or -1 if memory ran out (both arrays
 * are then still valid). */
static int reserve(struct parse *p, int kind)
{
    int *cap = &p->cap_named[kind];
    if (*count_of(p->cfg, kind) < *cap)
        return 0;
    size_t nc = *cap ? 2 * (size_t)*cap : 4;
    struct sect *s = realloc(p->named[kind], sizeof *s * nc);
    if (!s)
        return -1;
    p->named[kind] = s;
    char *a = realloc(array_of(p->cfg, kind), kinds[kind].size * nc);
    if (!a)
        return -1;
    set_array(p->cfg, kind, a);
    *cap = (int)nc;
    return 0;
}

/* Adds a section of the named KIND called NAME at the current line, with
 * its defaults; returns its index, or -1 if memory ran out. */
static int add_named(struct parse *p, int kind, const char *name)
{
    const struct kind *d = &kinds[kind];
    if (reserve(p, kind) < 0)
        return -1;
    int i = (*count_of(p->cfg, kind))++;
    char *e = element(p->cfg, kind, i);
    memset(e, 0, d->size);
    snprintf(e + d->name_off, VG_NAME_MAX, "%s", name);
    *(int *)(e + d->line_off) = p->lineno;
    struct sect *s = sect_at(p, kind, i);
    *s = (struct sect){.kind = kind, .idx = i, .line = p->lineno};
    apply_defaults(p, s);
    return i;
}

/* The index of the section of the named KIND called NAME, or -1. */
static int find_named(struct parse *p, int kind, const char *name)
{
    for (int i = 0; i < *count_of(p->cfg, kind); i++)
        if (strcmp(element(p->cfg, kind, i) + kinds[kind].name_off,
                   name) == 0)
            return i;
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
    for (int k = K_NODE; k < K_SKIP; k++)
        if (strcmp(type, kinds[k].name) == 0)
            kind = k;
    char list[160];
    if (kind == K_NONE)
        errf(p, p->lineno, label, "unknown section (known: %s)",
             sect_list(list, sizeof list, ", "));
    else if (!is_named(kind) && **name)
        errf(p, p->lineno, label, "this section takes no name");
    else if (is_named(kind) && !**name)
        errf(p, p->lineno, label, "needs a name, e.g. [%s %s]",
             kinds[kind].name, kinds[kind].example);
    else if (is_named(kind) && (strlen(*name) >= VG_NAME_MAX ||
                                vg__config_check_name(*name)))
        errf(p, p->lineno, label, "name must be 1..63 letters, digits, "
             "'_', '.' or '-'");
    else
        return kind;
    return K_SKIP;
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
    int idx = is_named(kind) ? find_named(p, kind, name) : 0;
    struct sect *s = idx >= 0 ? sect_at(p, kind, idx) : NULL;
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

/* The index in KEYS of NAME in a section of KIND, or N_KEYS. */
static size_t find_key(int kind, const char *name)
{
    size_t i = 0;
    while (i < N_KEYS && (KEYS[i].kind != kind || strcmp(KEYS[i].name, name)))
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
    char label[100], msg[400], list[160];
    (void)section;
    p->got_key = 1;
    if (!*name) {
        errf(p, p->lineno, p->text, "a key name is missing before \"=\"");
        return 1;
    }
    if (p->cur_kind == K_SKIP)
        return 1;
    if (p->cur_kind == K_NONE) {
        errf(p, p->lineno, name, "is outside any section (put it under %s)",
             sect_list(list, sizeof list, " or "));
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
        if (vg__config_set_value(&KEYS[i], sect_base(p, s), value, p->dir,
                                 msg, sizeof msg))
            errf(p, p->lineno, name, "%s", msg);
    }
    return 1;
}

/* ------------------------------------------------- whole-file checks */

static void check_required(struct parse *p, struct sect *s)
{
    char label[100];
    for (size_t i = 0; i < N_KEYS; i++)
        if (KEYS[i].kind == s->kind && !KEYS[i].def && !s->key_line[i])
            errf(p, s->line, KEYS[i].name, "required in %s",
                 sect_label(p, s, label, sizeof label));
}

/* The index in KEYS of a key the code names. */
static size_t key_index(int kind, const char *name)
{
    size_t i = find_key(kind, name);
    vg_assert(i < N_KEYS);
    return i;
}

int vg__config_key_line(struct parse *p, int kind, int idx, const char *key)
{
    return sect_at(p, kind, idx)->key_line[key_index(kind, key)];
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
    for (int k = K_NODE; k < K_SKIP; k++) {
        p->glob[k].kind = k;
        if (!is_named(k))
            apply_defaults(p, &p->glob[k]);
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
    for (int k = K_NODE; k < K_SKIP; k++)
        for (int i = 0; i < (is_named(k) ? *count_of(p->cfg, k) : 1); i++)
            check_required(p, sect_at(p, k, i));
    vg__config_check_sections(p, p->cfg);
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
    for (int k = K_NODE; k < K_SKIP; k++)
        free(p.named[k]);
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
    for (int k = K_NODE; k < K_SKIP; k++)
        if (is_named(k))
            free(array_of(cfg, k));
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

const vg_model_cfg_t *vg_config_find_model(const vg_config_t *cfg,
                                           const char *name)
{
    for (int i = 0; i < cfg->n_models; i++)
        if (strcmp(cfg->models[i].name, name) == 0)
            return &cfg->models[i];
    return NULL;
}

void vg_config_print_keys(FILE *f)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &KEYS[i];
        fprintf(f, "%s %s %s %s\n", kinds[k->kind].name, k->name,
                vg__config_type_name(k->type),
                k->def && *k->def ? k->def : "-");
    }
}
