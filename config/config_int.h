/* Private to config/: what the file reader (config.c) and the table of
 * keys with its value parsers and checks (config_values.c) share. The
 * reader deals in lines, sections and messages; the values file in what
 * a value, or a set of sections, may be. Nothing outside config/
 * includes this. */
#ifndef VG_CONFIG_INT_H
#define VG_CONFIG_INT_H

#include <stddef.h>

#include "config/config.h"

/* Value types; vg__config_type_name() names them for --print-keys. */
enum { T_INT, T_BOOL, T_STRING, T_ENUM, T_SIZE, T_DOUBLE, T_PATH, T_LIST };

/* Section kinds. K_SKIP: inside a section already reported as wrong; its
 * keys are not checked, so one mistake gives one error. The reader's
 * kinds[] table in config.c describes each kind from K_NODE to K_MODEL. */
enum {
    K_NONE,
    K_NODE,
    K_STORAGE,
    K_HTTP,
    K_OUTBOX,
    K_AE,
    K_ROUTE,
    K_MODEL,
    K_SKIP
};

struct enum_val {
    const char *name;
    int value;
};

struct key {
    int kind;                   /* K_*: the section it belongs to */
    const char *name;
    int type;                   /* T_* */
    double lo, hi;              /* value bounds; string length bounds;
                                   T_LIST: item count bounds */
    const char *unit;           /* for messages: "seconds", "mm", "" */
    const char *def;            /* NULL: required */
    size_t off, size;           /* field in the section's struct */
    const struct enum_val *enums; /* T_ENUM: names, NULL-terminated */
    const char *(*check)(const char *v); /* T_STRING, T_LIST (each item):
                                            NULL or what is wrong */
    size_t count_off;           /* T_LIST: the int that counts the items */
};

/* Bound of the table's length, for the reader's per-section arrays. */
#define VG__CONFIG_MAX_KEYS 48

/* The table, in the order of --print-keys and of the example file. */
extern const struct key vg__config_keys[];
extern const size_t vg__config_n_keys;

/* Parses V for key K into its field at BASE (the struct the key's offsets
 * are relative to) and returns 0, or -1 with what is wrong in MSG (the
 * field may then hold anything). A relative T_PATH is taken relative to
 * DIR, the absolute directory of the config file. */
int vg__config_set_value(const struct key *k, void *base, const char *v,
                         const char *dir, char *msg, size_t len);

/* NULL if V is a valid section name (letters, digits, '_', '.', '-'),
 * else what is wrong; the length is the caller's to check. */
const char *vg__config_check_name(const char *v);

/* "int", "bool", ... for T_*. */
const char *vg__config_type_name(int type);

/* The reader's state (config.c), opaque to config_values.c. */
struct parse;

/* Reports "file:line: key: message" (line 0: "file: key: message"); every
 * message is counted, and kept while the caller's buffer has room. */
void vg__config_errf(struct parse *p, int line, const char *key,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The line where KEY was set in section IDX of KIND (IDX 0 for a kind
 * without a name), or 0 if it was not set. */
int vg__config_key_line(struct parse *p, int kind, int idx, const char *key);

/* The checks that span keys and sections, run once the whole file is
 * read (every section of CFG is there, with its defaults); what is wrong
 * goes to vg__config_errf(). Required keys are the reader's to check. */
void vg__config_check_sections(struct parse *p, const vg_config_t *cfg);

#endif
