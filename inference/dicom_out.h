/* An analysis result as standard DICOM objects for the PACS: a
 * Segmentation (one segment per lesion, frames on the source CT's own
 * slices) and a TID 1500 Measurement Report that references it. Both are
 * new series in the source study, written as Part 10 files. The volume
 * gives the geometry and the source instances; the first source file
 * gives the patient and study attributes that the objects copy. */
#ifndef VG_DICOM_OUT_H
#define VG_DICOM_OUT_H

#include <stddef.h>

#include "inference/manifest.h"
#include "inference/volume.h"
#include "storage/results.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VG_SEG_SERIES_NUMBER 9801
#define VG_SR_SERIES_NUMBER 9802
#define VG_BREAST_SR_SERIES_NUMBER 9803

typedef struct vg_dicom_ref {
    char sop_uid[65];
    char sop_class_uid[65];
    char series_uid[65];
} vg_dicom_ref_t;

/* What both writers share: the source and the lesions' identities. */
typedef struct vg_dicom_input {
    const vg_volume_t *vol;          /* the analysed series */
    double grid_spacing;             /* mm: the analysis grid of the masks */
    const vg_result_t *res;          /* status "done"; findings in grid order */
    const vg_manifest_t *man;        /* classes, codes, name, version */
    const char *source_path;         /* any file of the series */
    const char (*tracking_uids)[65]; /* one per finding: segment n = finding n-1 */
} vg_dicom_input_t;

/* A new UID under the 2.25 root (a random 128-bit UUID as a decimal
 * integer, PS3.5 B.2): needs no registered organisation root. */
void vg_dicom_new_uid(char out[65]);

/* The source-grid mask of finding F: for slice k of IN->vol, *frames
 * receives a bitmap of nx*ny bytes (0/1, x fastest) for each slice that
 * holds part of the lesion, slices[i] its index. The finding's mask lives
 * on the isotropic analysis grid, which shares the volume's origin and
 * axes; a source pixel takes the value of the nearest grid voxel.
 * Returns the frame count (0 when the lesion covers no source pixel), or
 * -ENOMEM. The caller frees *frames and *slices. */
int vg_finding_frames(const vg_dicom_input_t *in, int f, unsigned char **frames,
                      int **slices);

/* Writes the Segmentation of IN's findings (at least one) to OUT_PATH
 * (temporary name, fsync, rename) and fills *OUT. Returns 0, or
 * -EINVAL (no findings), VG_EPARSE (source unreadable), VG_EDCM
 * (encoding), -errno (writing) or -ENOMEM, with err filled; nothing is
 * left at OUT_PATH on failure. */
int vg_seg_write(const vg_dicom_input_t *in, const char *out_path, vg_dicom_ref_t *out,
                 char *err, size_t errlen);

/* Writes the TID 1500 Measurement Report of IN to OUT_PATH the same way.
 * SEG is the Segmentation written for the same findings, or NULL when
 * there are none (the report then says no lesion was found). Returns as
 * vg_seg_write. */
int vg_sr_write(const vg_dicom_input_t *in, const vg_dicom_ref_t *seg, const char *out_path,
                vg_dicom_ref_t *out, char *err, size_t errlen);

/* Writes the TID 1500 Measurement Report of the breast risk result RES
 * (status "done", or "not_analysable" with no assessment; at most one
 * assessment per breast), made with MAN from the images at EVIDENCE_PATHS
 * (mammography and ultrasound instances), to OUT_PATH the same way.
 * Patient and study come from the first readable evidence file; files
 * that cannot be read are not referenced. Returns 0, or -EINVAL (bad
 * result), VG_EPARSE (no evidence readable), VG_EDCM (encoding), -errno
 * (writing) or -ENOMEM, with err filled; nothing is left at OUT_PATH on
 * failure. */
int vg_breast_sr_write(const vg_manifest_t *man, const vg_result_t *res,
                       const char *const *evidence_paths, int n_evidence,
                       const char *out_path, vg_dicom_ref_t *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
