/* Helpers the Segmentation and report writers share (dicom_out.c). */
#ifndef VG_DICOM_OUT_INT_H
#define VG_DICOM_OUT_INT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Creates the missing directories above PATH (the file itself is not
 * made), fsyncing the parent of each one it adds. Returns 0 or -errno. */
int vg__dicom_make_parent(const char *path);

/* Makes the complete file TMP durable as FINAL: fsync of TMP, rename,
 * fsync of FINAL's directory (created when missing, with its parents).
 * Returns 0 or -errno; on failure TMP is removed. */
int vg__dicom_commit(const char *tmp, const char *final_path);

#ifdef __cplusplus
}
#endif

#endif
