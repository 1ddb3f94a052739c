/* The node's analysis worker processes: one vigil-worker per (model,
 * device) of the configuration, started with uv_spawn from the directory
 * of the running binary, restarted when one exits (after 1 s, doubling
 * to 60 s, back to 1 s once a process has run 60 s), woken with SIGUSR1
 * when jobs are queued and stopped with SIGTERM (SIGKILL after a
 * timeout). Everything runs on the loop thread. It does not analyse
 * anything and links no model runtime; the workers report their own
 * state in the index (storage/workers.h). */
#ifndef VG_WORKERS_PROC_H
#define VG_WORKERS_PROC_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "storage/index.h"

typedef struct vg_workers vg_workers_t;

/* Starts the workers of CFG (the file at cfg->path is what they load).
 * IDX is the loop thread's connection, used to record worker exits; it
 * must outlive the workers. Returns 0 with *out owned by the loop (freed
 * by itself after vg_workers_stop), or a negative code with err filled
 * and nothing started. A worker that cannot be spawned is retried like
 * one that exited. */
int vg_workers_start(uv_loop_t *loop, const vg_config_t *cfg, vg_index_t *idx,
                     vg_workers_t **out, char *err, size_t errlen);

/* New jobs may be waiting: SIGUSR1 to every worker ready for it. NULL:
 * no-op. */
void vg_workers_wake(vg_workers_t *w);

/* Number of worker processes running now. */
int vg_workers_running(const vg_workers_t *w);

/* SIGTERM to every worker (each finishes its job), SIGKILL to those left
 * after TIMEOUT_S seconds; no more restarts. W closes its handles and
 * frees itself once every worker is gone: do not use it afterwards.
 * NULL: no-op. */
void vg_workers_stop(vg_workers_t *w, int timeout_s);

#endif
