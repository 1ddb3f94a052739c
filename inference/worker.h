/* One analysis worker: the loop that vigil-worker runs for one model on
 * one device, in its own process so that the model runtime (libtorch,
 * CUDA) never shares an address space with the DICOM receiver. It leases
 * the model's jobs from the durable queue, analyses each series and
 * stores the result. A model that cannot be loaded leaves its jobs
 * waiting (the load is retried every 30 s) and is reported unavailable;
 * a job that fails is retried up to the model's max_attempts, and so is
 * a job that a previous process of this worker died during. Its state is
 * written to the index's workers table (storage/workers.h). It is not
 * the process manager: the node starts, restarts and stops workers. */
#ifndef VG_WORKER_H
#define VG_WORKER_H

#include <stddef.h>
#include <sys/types.h>

#include "config/config.h"

typedef struct vg_worker_opts {
    const vg_config_t *cfg;      /* storage.dir locates files and index */
    const vg_model_cfg_t *model; /* the [model] section to run */
    const char *device;          /* "cpu", "cuda:N" */
    pid_t parent;                /* stop when getppid() differs; 0: no check */
} vg_worker_opts_t;

/* Runs the worker until SIGTERM or SIGINT (the job in progress is
 * finished first) or until the parent is gone. Installs handlers for
 * SIGTERM, SIGINT and SIGUSR1 (new jobs may be waiting: stop idling) and
 * keeps them blocked outside its waits; call it from the main thread
 * before any other thread starts. Between wake-ups it polls the queue
 * every 2 s. Returns 0 on a requested stop, or a negative code with err
 * filled when the index cannot be opened. */
int vg_worker_run(const vg_worker_opts_t *o, char *err, size_t errlen);

#endif
