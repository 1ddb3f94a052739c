/* Process-wide counters, updated from association threads (and the
 * outbox's sender) with relaxed atomics and read by GET /metrics.
 * Counters only grow. */
#ifndef VG_METRICS_H
#define VG_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

/* Why an association was rejected; the label value in /metrics. */
#define VG_REJECT_MAP(X)                                                 \
    X(CALLED_AE, "called_ae")                                            \
    X(CALLING_AE, "calling_ae")                                          \
    X(CALLING_HOST, "calling_host")                                      \
    X(DISK_LOW, "disk_low")                                              \
    X(TOO_MANY, "too_many_associations")                                 \
    X(NO_CONTEXT, "no_presentation_context")                             \
    X(PROTOCOL, "protocol")

typedef enum {
#define VG__REJ_ENUM(name, label) VG_REJECT_##name,
    VG_REJECT_MAP(VG__REJ_ENUM)
#undef VG__REJ_ENUM
    VG_REJECT_COUNT
} vg_reject_t;

/* Why a C-STORE failed; the label value in /metrics. */
#define VG_STOREFAIL_MAP(X)                                              \
    X(PARSE, "cannot_parse")                                             \
    X(MISSING_UID, "missing_uid")                                        \
    X(BAD_UID, "invalid_uid")                                            \
    X(DISK, "out_of_resources")                                          \
    X(IO, "io_error")                                                    \
    X(DB, "index_error")                                                 \
    X(NETWORK, "network")

typedef enum {
#define VG__SF_ENUM(name, label) VG_STOREFAIL_##name,
    VG_STOREFAIL_MAP(VG__SF_ENUM)
#undef VG__SF_ENUM
    VG_STOREFAIL_COUNT
} vg_storefail_t;

typedef struct vg_metrics {
    atomic_uint_fast64_t assoc_accepted;
    atomic_uint_fast64_t assoc_rejected[VG_REJECT_COUNT];
    atomic_uint_fast64_t assoc_active;       /* gauge */
    atomic_uint_fast64_t echo_requests;
    atomic_uint_fast64_t instances_stored;
    atomic_uint_fast64_t instances_duplicate;
    atomic_uint_fast64_t bytes_stored;
    atomic_uint_fast64_t store_failures[VG_STOREFAIL_COUNT];
    atomic_uint_fast64_t outbox_sent;        /* objects a destination acknowledged */
    atomic_uint_fast64_t outbox_failed;      /* send attempts that failed */
} vg_metrics_t;

extern vg_metrics_t vg_metrics;

#define vg_metric_add(field, n)                                          \
    atomic_fetch_add_explicit(&vg_metrics.field, (n), memory_order_relaxed)
#define vg_metric_get(field)                                             \
    atomic_load_explicit(&vg_metrics.field, memory_order_relaxed)

const char *vg_reject_label(vg_reject_t r);
const char *vg_storefail_label(vg_storefail_t f);

#endif
