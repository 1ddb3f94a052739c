/* A CT series as a volume: slices read through DCMTK (every transfer
 * syntax the node accepts, compressed ones included), ordered by their
 * position along the slice normal (never by InstanceNumber), converted to
 * Hounsfield units, with the geometry kept for the outputs. A series that
 * cannot be made into a regular volume is refused with the reason. */
#ifndef VG_VOLUME_H
#define VG_VOLUME_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vg_volume {
    float *hu;                  /* nz * ny * nx, x fastest, HU */
    int nx, ny, nz;             /* columns, rows, slices */
    double spacing[3];          /* mm along x (columns), y (rows), z (slices) */
    double origin[3];           /* patient position of voxel (0,0,0), mm */
    double row_dir[3];          /* direction of increasing column index */
    double col_dir[3];          /* direction of increasing row index */
    double normal[3];           /* direction of increasing slice index */
    char (*sop_uids)[65];       /* SOP Instance UID of each slice, in order */
    char (*sop_class_uids)[65];
    double (*positions)[3];     /* ImagePositionPatient of each slice, in order */
    char study_uid[65], series_uid[65], frame_of_reference_uid[65];
    int skipped;                /* instances left out (localizers, ...) */
} vg_volume_t;

/* Reads the N files in PATHS as one volume. Returns 0 with *out owned by
 * the caller (vg_volume_destroy); VG_EPARSE when a file cannot be read or
 * decoded; VG_ENOTANALYSABLE when the slices do not form a regular volume
 * (missing slices, uneven spacing over 10%, mixed orientation or size,
 * gantry tilt, too few slices). REASON says why in every failure. */
int vg_volume_read(const char *const *paths, int n, vg_volume_t **out,
                   char *reason, size_t reasonlen);
void vg_volume_destroy(vg_volume_t *v);

/* Patient coordinates (mm) of the continuous voxel index (i, j, k). */
void vg_volume_to_patient(const vg_volume_t *v, double i, double j, double k,
                          double out[3]);

#ifdef __cplusplus
}
#endif

#endif
