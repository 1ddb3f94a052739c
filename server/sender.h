/* The outbox's sender: one thread of the node that, every second and
 * when woken, takes the due entries of each destination from the outbox
 * (storage/outbox.h), sends them in one association (server/scu.h),
 * records each outcome (sent for good, or a failed attempt with backoff)
 * and logs it. It has its own index connection. Stopping lets the file in
 * flight finish and releases the association; a sender that does not end
 * in time is abandoned, and what it had taken stays "sending" until the
 * next start queues it again (vg_outbox_recover). */
#ifndef VG_SENDER_H
#define VG_SENDER_H

#include <stddef.h>

#include "config/config.h"

typedef struct vg_sender vg_sender_t;

/* Opens a connection to the index under cfg->storage.dir and starts the
 * thread. CFG is copied (the caller may destroy it). On success *out is
 * owned by the caller (vg_sender_stop, then vg_sender_join); on failure
 * returns VG_EDB or -errno with err filled and nothing running. */
int vg_sender_start(const vg_config_t *cfg, vg_sender_t **out, char *err,
                    size_t errlen);

/* Makes the thread look at the outbox now (after new entries or a
 * retry). Thread-safe; never blocks. NULL is a no-op. */
void vg_sender_wake(vg_sender_t *s);

/* Replaces the node's identity, the [outbox] policy and the [ae] table
 * (SIGHUP); the association in flight keeps what it started with.
 * Returns 0 or -ENOMEM (the old configuration stays). */
int vg_sender_set_config(vg_sender_t *s, const vg_config_t *cfg);

/* Asks the thread to stop: no new association; the one open ends after
 * its file in flight. Never blocks. NULL is a no-op. */
void vg_sender_stop(vg_sender_t *s);

/* Waits up to TIMEOUT_MS for the thread. Returns 0 when it ended (S is
 * freed), or VG_EBUSY when it is still inside an association: S is then
 * left to the thread, which the process abandons on exit. NULL: 0. */
int vg_sender_join(vg_sender_t *s, int timeout_ms);

#endif
