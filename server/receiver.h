/* The policy behind the DICOM listener: who may associate (AE titles,
 * hosts, disk watermark) and how a received dataset becomes a durable,
 * indexed instance before its success status is sent. Supplies the
 * callbacks of dcm_shim.h; thread-safe. */
#ifndef VG_RECEIVER_H
#define VG_RECEIVER_H

#include "config/config.h"
#include "server/dcm_shim.h"
#include "storage/index.h"

typedef struct vg_receiver vg_receiver_t;

/* Creates a receiver for CFG (copied: the caller may destroy CFG).
 * STORED(arg) is called from association threads after each instance is
 * committed (used to wake the grouping timer). */
int vg_receiver_create(const vg_config_t *cfg, void (*stored)(void *arg),
                       void *arg, vg_receiver_t **out);
void vg_receiver_destroy(vg_receiver_t *r);

/* Replaces the [ae] table (SIGHUP) without disturbing associations. */
int vg_receiver_set_aes(vg_receiver_t *r, const vg_config_t *cfg);

/* The callbacks for vg_scp_start; valid while R lives. */
const vg_scp_callbacks_t *vg_receiver_callbacks(vg_receiver_t *r);

/* After a crash: indexes complete files that have no row (placed but not
 * committed) and drops rows whose file is gone. Counts are returned. */
int vg_receiver_reconcile(const char *dir, vg_index_t *idx, int *indexed,
                          int *dropped);

#endif
