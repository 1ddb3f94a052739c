/* The SQLite index of studies, series and instances. One vg_index_t is one
 * connection; every thread opens its own (SQLite's rule for WAL with
 * several writers). The schema version lives in PRAGMA user_version and
 * is migrated forward on open. Every statement is prepared. */
#ifndef VG_INDEX_H
#define VG_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "storage/instance.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vg_index vg_index_t;

#define VG_INDEX_SCHEMA_VERSION 5

/* Opens (creating and migrating when needed) the database at PATH.
 * On success *out is owned by the caller (vg_index_close). On failure
 * returns VG_EDB or VG_ESCHEMA, *out is NULL and err says why. */
int vg_index_open(const char *path, vg_index_t **out, char *err,
                  size_t errlen);
void vg_index_close(vg_index_t *idx);

/* Commit durability of this connection. FULL (the default) fsyncs the WAL
 * at every commit. NORMAL does not: a commit survives a crash of the
 * process but may be lost on power failure. The store path uses NORMAL
 * because the instance file is fsynced before its row is written, and a
 * start after an unclean stop indexes any file without a row. */
int vg_index_set_full_sync(vg_index_t *idx, int full);

/* 1 if SOP_UID is indexed (its path relative to the data directory is
 * copied into path when path is not NULL), 0 if not, <0 on error. */
int vg_index_find_instance(vg_index_t *idx, const char *sop_uid,
                           char *path, size_t pathlen);

/* Records one stored instance, its series and its study in one
 * transaction. A series or study already complete goes back to
 * "receiving". An existing row for the same SOP Instance UID is replaced.
 * Returns 0, or VG_EDB with nothing changed. */
int vg_index_put_instance(vg_index_t *idx, const vg_instance_meta_t *m,
                          const char *relpath, int64_t size,
                          const char *calling_ae, int64_t now_ms);

/* Deletes the row of SOP_UID (used when its file is found missing). */
int vg_index_delete_instance(vg_index_t *idx, const char *sop_uid);

/* Calls FN for each indexed instance (relative path, SOP UID); stops
 * early when FN returns non-zero and returns that value. */
int vg_index_each_instance(vg_index_t *idx,
                           int (*fn)(void *arg, const char *relpath,
                                     const char *sop_uid),
                           void *arg);

/* The files of SERIES_UID's instances, as absolute paths under DIR. On
 * success *paths (an array of *n strings, one allocation: free(*paths))
 * is owned by the caller. Returns 0 or VG_EDB / -ENOMEM. */
int vg_index_series_files(vg_index_t *idx, const char *dir, const char *series_uid,
                          char ***paths, int *n);

/* Small key/value store for the node's own state (e.g. "clean_shutdown"). */
int vg_index_meta_get(vg_index_t *idx, const char *key, char *val,
                      size_t vallen);
int vg_index_meta_set(vg_index_t *idx, const char *key, const char *val);

/* The connection, for the other storage modules (queue, grouping) and the
 * API's read queries. Owned by idx. */
struct sqlite3 *vg_index_db(vg_index_t *idx);

/* Wall-clock milliseconds since the epoch; what every *_ms column holds. */
int64_t vg_now_ms(void);

#ifdef __cplusplus
}
#endif

#endif
