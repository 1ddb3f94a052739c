/* The DICOM objects of a finished analysis, written into the data
 * directory for the outbox: a Segmentation when there are findings and a
 * TID 1500 report always, under results/STUDY/SERIES/JOB-seg.dcm and
 * JOB-sr.dcm (SERIES being the analysed series); for the breast model a
 * report alone. The names depend on the job only, so an analysis repeated
 * after a crash overwrites its own unqueued files instead of leaving
 * strays. */
#ifndef VG_REPORT_H
#define VG_REPORT_H

#include <stddef.h>

#include "inference/manifest.h"
#include "inference/volume.h"
#include "storage/results.h"

/* Writes the objects of RES (status "done") about VOL, analysed with MAN,
 * into DIR and records them in RES->objects. SOURCE_PATH is a file of the
 * series (patient and study attributes are copied from it). Returns 0, or
 * a negative code with err filled; RES->objects then lists none. */
int vg_report_write(const char *dir, const vg_volume_t *vol, const vg_manifest_t *man,
                    const char *source_path, vg_result_t *res, char *err, size_t errlen);

/* Writes the breast risk report of RES (status "done", or
 * "not_analysable" with no assessment: the report then says so) into DIR as
 * results/STUDY/KEY/JOB-sr.dcm (KEY = RES->series_uid, the study UID for
 * breast jobs) and records it in RES->objects. EVIDENCE_PATHS are the
 * mammography and ultrasound files the model used: the report references
 * them and copies patient and study from the first readable one. Returns
 * 0, or VG_EPARSE (no evidence readable), VG_EDCM, -errno or -EINVAL with
 * err filled; RES->objects then lists none and no file is left. */
int vg_report_write_breast(const char *dir, const vg_manifest_t *man,
                           const char *const *evidence_paths, int n_evidence,
                           vg_result_t *res, char *err, size_t errlen);

#endif
