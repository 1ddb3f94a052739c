/* Series and study completion: a series is complete once no instance has
 * arrived for series_quiet_seconds, a study once all its series are
 * complete and none has arrived for study_quiet_seconds. A completed
 * series is matched against the routes: each route that takes it gets a
 * job; otherwise the series is marked skipped with the reason. State
 * lives in the index, so completion survives a restart. The caller (the
 * loop's timer) decides when to tick. */
#ifndef VG_GROUPING_H
#define VG_GROUPING_H

#include <stdint.h>

#include "config/config.h"
#include "storage/index.h"

typedef struct vg_grouping_result {
    int series_completed;
    int studies_completed;
    int jobs_queued;
    int series_skipped;
} vg_grouping_result_t;

/* Completes whatever is due at NOW_MS. *next_due_ms is when the next
 * series or study falls due (-1 when nothing is receiving). Returns 0 or
 * VG_EDB; a series whose transaction failed stays receiving. */
int vg_grouping_tick(vg_index_t *idx, const vg_config_t *cfg, int64_t now_ms,
                     int64_t *next_due_ms, vg_grouping_result_t *res);

/* Why ROUTE does not take a series with these properties: writes the
 * reason and returns 0, or returns 1 (taken) with why untouched. */
int vg_route_takes(const vg_route_cfg_t *route, const char *modality, int instances,
                   double slice_thickness, char *why, size_t whylen);

#endif
