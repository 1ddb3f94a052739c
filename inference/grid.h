/* Volume arithmetic the analyses share: resampling a volume onto an
 * isotropic grid, dilating a mask, labelling connected components. Plain
 * C on float and byte arrays, x fastest; knows nothing of DICOM or models. */
#ifndef VG_GRID_H
#define VG_GRID_H

#include <stddef.h>
#include <stdint.h>

#include "inference/volume.h"

typedef struct vg_grid {
    float *v;                   /* nz * ny * nx values, owned */
    int nx, ny, nz;
    double spacing;             /* mm, the same along every axis */
    double origin[3];           /* patient position of voxel (0,0,0) */
    double row_dir[3], col_dir[3], normal[3];
} vg_grid_t;

/* Resamples VOL onto an isotropic grid of SPACING mm with trilinear
 * interpolation (separable: x, then y, then z). The grid keeps the
 * volume's origin and axes. Returns 0 or -ENOMEM. */
int vg_grid_resample(const vg_volume_t *vol, double spacing, vg_grid_t *out);
void vg_grid_free(vg_grid_t *g);

/* Patient coordinates (mm) of continuous grid index (i, j, k). */
void vg_grid_to_patient(const vg_grid_t *g, double i, double j, double k, double out[3]);

/* Dilates the 0/1 mask M (nx*ny*nz) in place by a cube of half-width R
 * voxels. Returns 0 or -ENOMEM. */
int vg_mask_dilate(uint8_t *m, int nx, int ny, int nz, int r);

/* Labels the 26-connected components of the non-zero voxels of M into
 * LABELS (1..n, 0 for background). Returns the count, or -ENOMEM. */
int vg_label_components(const uint8_t *m, int nx, int ny, int nz, int32_t *labels);

#endif
