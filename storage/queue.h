/* The durable job queue: one row per (series, route, version) in the
 * index database. A job is leased by a worker for a bounded time; a lease
 * that runs out (a worker that died) makes the job available again. At
 * start-up every job left running goes back to queued. */
#ifndef VG_QUEUE_H
#define VG_QUEUE_H

#include <stdint.h>

#include "storage/index.h"

typedef struct vg_job {
    int64_t id;
    char series_uid[65];
    char study_uid[65];
    char route[64];
    char model[64];
    int version;
    int attempts;                   /* leases taken so far, this one included */
} vg_job_t;

/* Queues a new version of the job for SERIES/ROUTE; every earlier queued
 * or running version becomes "superseded". *id and *version may be NULL.
 * Runs in the caller's transaction when one is open, else in its own.
 * Returns 0 or VG_EDB (nothing changed). */
int vg_queue_push(vg_index_t *idx, const char *series_uid, const char *study_uid,
                  const char *route, const char *model, int64_t now_ms,
                  int64_t *id, int *version);

/* Queues a new version of each job of a grouped route for STUDY_UID (the
 * jobs whose series_uid is the study's UID) whose newest version already
 * started (running, done or failed): what it was analysed with changed.
 * A job still queued is left alone; it reads the new state when it runs.
 * *n (may be NULL) is how many were queued. Runs in the caller's
 * transaction when one is open. Returns 0 or VG_EDB (nothing changed). */
int vg_queue_requeue_study(vg_index_t *idx, const char *study_uid, int64_t now_ms, int *n);

/* Takes the oldest queued job for MODEL (or one whose lease expired),
 * marks it running for WORKER until now + LEASE_MS and counts an attempt.
 * Returns 0 with *job filled, VG_ENOTFOUND when none waits, or VG_EDB. */
int vg_queue_lease(vg_index_t *idx, const char *model, const char *worker,
                   int64_t lease_ms, int64_t now_ms, vg_job_t *job);

/* Marks job ID done. Returns 0, VG_ENOTFOUND if it is no longer running
 * (superseded meanwhile), or VG_EDB. */
int vg_queue_done(vg_index_t *idx, int64_t id, int64_t now_ms);

/* Records a failure of job ID: back to queued while attempts <
 * MAX_ATTEMPTS, else "failed". ERROR is kept as last_error. */
int vg_queue_fail(vg_index_t *idx, int64_t id, const char *error, int max_attempts,
                  int64_t now_ms);

/* Start-up: running -> queued. Returns how many, or VG_EDB. */
int vg_queue_recover(vg_index_t *idx);

/* Fills *job from a row whose columns are id, series_uid, study_uid,
 * route, model, version, attempts (the queue's and the workers table's
 * job queries share this order). Internal to storage/. */
struct sqlite3_stmt;
void vg__queue_read_job(struct sqlite3_stmt *st, vg_job_t *job);

/* Jobs queued or running. */
int vg_queue_depth(vg_index_t *idx, int64_t *depth);

#endif
