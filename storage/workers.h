/* Analysis workers' state in the index: one row per worker process
 * (model@device). The worker writes its row when its state changes and
 * after each job; the node writes it when it starts or loses the process;
 * the API reads every row for /healthz. Rows are small and written
 * rarely, so each function prepares its statement on the caller's
 * connection and finalizes it. */
#ifndef VG_WORKERS_H
#define VG_WORKERS_H

#include <stdint.h>

#include "storage/index.h"
#include "storage/queue.h"

typedef struct vg_worker_state {
    char name[96];    /* "bone@cpu": also the jobs' lease owner */
    char model[64];   /* [model NAME] */
    char device[16];  /* "cpu", "cuda:0" */
    int pid;          /* the worker process; 0 when none */
    int available;    /* model loaded on this device */
    char version[32]; /* from the manifest, "" before it is read */
    char error[256];  /* why it is unavailable, "" when available */
    int64_t jobs_done, jobs_failed;
    int64_t updated_ms;
} vg_worker_state_t;

/* Writes ST's row (inserted, or replaced by name when the row names no
 * process or ST's). Returns 0, VG_EBUSY when the row names another
 * process (left unchanged), or VG_EDB. */
int vg_worker_state_put(vg_index_t *idx, const vg_worker_state_t *st);

/* Reads the row of NAME into *st. Returns 0, VG_ENOTFOUND or VG_EDB. */
int vg_worker_state_get(vg_index_t *idx, const char *name, vg_worker_state_t *st);

/* Records that NAME's process PID is gone (pid 0, not available), unless
 * the row already names another process. Returns 0 or VG_EDB. */
int vg_worker_state_exited(vg_index_t *idx, const char *name, int pid, int64_t now_ms);

/* Deletes every row (the node's start: workers of the last run are gone,
 * and some may no longer be configured). Returns 0 or VG_EDB. */
int vg_worker_state_clear(vg_index_t *idx);

/* Calls FN for each row in insertion order; stops early when FN returns
 * non-zero and returns that value. Returns 0 or VG_EDB. */
int vg_worker_state_each(vg_index_t *idx, int (*fn)(void *arg, const vg_worker_state_t *st),
                         void *arg);

/* A job that NAME leased and still holds: one a previous process of that
 * worker was running when it died. Returns 0 with *job filled (attempts
 * counts the lease that died), VG_ENOTFOUND, or VG_EDB. */
int vg_worker_state_orphan(vg_index_t *idx, const char *name, vg_job_t *job);

#endif
