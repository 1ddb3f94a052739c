/* The durable outbox: one row per (result object, destination) in the
 * index database, from the moment the object is stored until the
 * destination has acknowledged it. An entry is queued, leased for sending
 * ("sending"), then "sent" (never sent again) or back to queued with a
 * wait that doubles after each failure, or "failed" once max_attempts is
 * reached (kept, listed, retried by hand). An entry left "sending" by a
 * crash was not acknowledged, so start-up queues it again. It knows
 * nothing of DICOM networking: the sender (server/sender.h) does that. */
#ifndef VG_OUTBOX_H
#define VG_OUTBOX_H

#include <stdint.h>

#include "storage/index.h"

#define VG_OUTBOX_PATH_MAX 1024

/* An object to deliver: a Part 10 file under the data directory. */
typedef struct vg_outbox_object {
    int64_t result_id;              /* results.id, or 0 for none */
    char study_uid[65];
    char series_uid[65];            /* the object's own series */
    char sop_uid[65];
    char sop_class_uid[65];
    char path[VG_OUTBOX_PATH_MAX];  /* relative to the data directory */
} vg_outbox_object_t;

typedef struct vg_outbox_entry {
    int64_t id;
    vg_outbox_object_t obj;
    char destination[64];           /* an [ae NAME] section's NAME */
    char state[8];                  /* queued|sending|sent|failed */
    int attempts;                   /* sends that had an outcome */
    int64_t next_attempt_ms;        /* due time while queued */
    int64_t created_ms;
    int64_t sent_ms;                /* 0 until sent */
    char last_error[512];           /* "" when none */
} vg_outbox_entry_t;

/* How long to wait after a failure, and when to give up. */
typedef struct vg_outbox_policy {
    int64_t retry_initial_ms;
    int64_t retry_max_ms;
    int max_attempts;               /* 0: never give up */
} vg_outbox_policy_t;

enum { VG_OUTBOX_QUEUED, VG_OUTBOX_SENDING, VG_OUTBOX_SENT, VG_OUTBOX_FAILED,
       VG_OUTBOX_NSTATES };

/* "queued", ... for VG_OUTBOX_*; the API's and /metrics' names. */
extern const char *const vg_outbox_state_names[VG_OUTBOX_NSTATES];

/* Queues OBJ for DESTINATION, due at NOW_MS. Runs in the caller's
 * transaction when one is open (so a result and its outbox entries
 * commit together), else as its own. The same (sop_uid, destination)
 * queued twice is one entry: the second call changes nothing and returns
 * 0. Returns 0 or VG_EDB (nothing changed). */
int vg_outbox_add(vg_index_t *idx, const vg_outbox_object_t *obj,
                  const char *destination, int64_t now_ms);

/* Up to MAX destinations that have entries due at NOW_MS, into NAMES;
 * *n says how many. Returns 0 or VG_EDB. */
int vg_outbox_due_destinations(vg_index_t *idx, int64_t now_ms,
                               char (*names)[64], int max, int *n);

/* Takes up to MAX entries of DESTINATION that are due (queued and
 * next_attempt_ms <= NOW_MS), oldest first, and marks them sending, in
 * one transaction. *n says how many went into OUT. Returns 0 or VG_EDB
 * (nothing taken). */
int vg_outbox_lease(vg_index_t *idx, const char *destination, int64_t now_ms,
                    vg_outbox_entry_t *out, int max, int *n);

/* The destination acknowledged entry ID: sending -> sent, for good.
 * Returns 0, VG_ENOTFOUND when ID is not sending, or VG_EDB. */
int vg_outbox_mark_sent(vg_index_t *idx, int64_t id, int64_t now_ms);

/* A send of entry ID failed with ERROR: the attempt is counted; the entry
 * is "failed" when P->max_attempts > 0 and that many were made, else
 * queued again at NOW_MS + vg_outbox_backoff_ms(). *next_ms (may be
 * NULL) receives the due time, or -1 when failed. Returns 0, VG_ENOTFOUND
 * when ID is not sending, or VG_EDB. */
int vg_outbox_mark_failed(vg_index_t *idx, int64_t id, const char *error,
                          const vg_outbox_policy_t *p, int64_t now_ms,
                          int64_t *next_ms);

/* Entry ID was leased but not tried (the node is stopping): back to
 * queued, due now, no attempt counted. 0, VG_ENOTFOUND or VG_EDB. */
int vg_outbox_release(vg_index_t *idx, int64_t id);

/* The wait after the ATTEMPTS-th failure (1 = first):
 * min(initial * 2^(attempts-1), max), without overflow. */
int64_t vg_outbox_backoff_ms(const vg_outbox_policy_t *p, int attempts);

/* By hand: a failed or queued entry is queued again, due at NOW_MS, with
 * its attempts reset to 0 (a full new series of retries; last_error stays
 * until the next outcome). *out (may be NULL) receives the entry as it is
 * afterwards, also when it could not be retried. Returns 0, VG_ENOTFOUND
 * for an unknown ID, VG_EBUSY when it is sent or sending (left alone),
 * or VG_EDB. */
int vg_outbox_retry(vg_index_t *idx, int64_t id, int64_t now_ms,
                    vg_outbox_entry_t *out);

/* Start-up: every entry left sending was not acknowledged, so it is
 * queued again, due now, no attempt counted. Returns how many, or
 * VG_EDB. */
int vg_outbox_recover(vg_index_t *idx);

/* Entry ID into *out. 0, VG_ENOTFOUND or VG_EDB. */
int vg_outbox_get(vg_index_t *idx, int64_t id, vg_outbox_entry_t *out);

/* Calls FN for up to LIMIT entries, newest first, only those in STATE
 * (one of vg_outbox_state_names) unless it is NULL; stops early when FN
 * returns non-zero and returns that value. Else 0, or VG_EDB. */
int vg_outbox_list(vg_index_t *idx, const char *state, int limit,
                   int (*fn)(void *arg, const vg_outbox_entry_t *e), void *arg);

/* Entries per state, indexed by VG_OUTBOX_*. 0 or VG_EDB. */
int vg_outbox_counts(vg_index_t *idx, int64_t counts[VG_OUTBOX_NSTATES]);

#endif
