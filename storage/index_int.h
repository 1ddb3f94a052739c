/* Private helpers the storage modules share around the index's SQLite
 * connection. Not part of any public contract. */
#ifndef VG_INDEX_INT_H
#define VG_INDEX_INT_H

#include <sqlite3.h>
#include <stddef.h>

/* Prepares SQL on DB (NULL on error); the caller finalizes it. For
 * statements run a few times per series, where caching buys nothing. */
sqlite3_stmt *vg__sql_prep(sqlite3 *db, const char *sql);

/* Steps ST once and finalizes it: 0, or VG_EDB (also for ST == NULL). */
int vg__sql_run1(sqlite3_stmt *st);

/* Copies text column COL of the current row into DST ("" for NULL). */
void vg__sql_text(sqlite3_stmt *st, int col, char *dst, size_t len);

#endif
