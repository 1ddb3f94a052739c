/* A helper thread that runs one fsync at a time for its owner, so that the
 * owner can do other work (read a header, write an index row) while the
 * disk catches up. One per association; requests never overlap. */
#ifndef VG_SYNCER_H
#define VG_SYNCER_H

typedef struct vg_syncer vg_syncer_t;

/* Returns 0 with *out owned by the caller, or -errno. */
int vg_syncer_create(vg_syncer_t **out);
/* Waits for a request in flight, then stops the thread. NULL is a no-op. */
void vg_syncer_destroy(vg_syncer_t *s);

/* Starts fsync of PATH (a file or a directory). The previous request must
 * have been waited for. PATH is copied. */
void vg_syncer_start(vg_syncer_t *s, const char *path);

/* Asks the thread to start write-back of PATH's dirty pages, unless it is
 * already busy; never waits. For a file still being written. */
void vg_syncer_writeback(vg_syncer_t *s, const char *path);

/* Waits for the last request: 0, -errno, or 0 at once when none is in
 * flight. */
int vg_syncer_wait(vg_syncer_t *s);

#endif
