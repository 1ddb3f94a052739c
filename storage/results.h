/* Analysis results in the index: one row per (series, model), replaced by
 * a newer analysis, with one row per finding. Storing a result and
 * completing its job happen in one transaction, so a result is never kept
 * for a job that a newer version superseded. */
#ifndef VG_RESULTS_H
#define VG_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "storage/index.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vg_finding {
    char type[48];                 /* class name from the model's manifest */
    double probability;
    double volume_mm3;
    double centroid_mm[3];         /* patient coordinates */
    double bbox_mm[2][3];          /* min and max corner, patient coordinates */
    double mean_hu;
    double diameter_mm;            /* longest extent */
    int mask_box[6];               /* i0, j0, k0, ni, nj, nk in the analysis grid */
    unsigned char *mask;           /* ni*nj*nk bits, i fastest; owned */
    size_t mask_bytes;
} vg_finding_t;

/* One breast's risk assessment (the breast model's result). */
typedef struct vg_assessment {
    char laterality[2];            /* "L" or "R" */
    double probabilities[5];       /* T1..T5, summing to 1 */
    double malignancy_probability; /* T3 + T4 + T5 */
    char birads[4];                /* "3", "4A", "4B", "4C", "5" */
    char modalities_used[128];     /* comma-separated: "MG_CC,MG_MLO,US_B1,..." */
    char clinical_used[256];       /* comma-separated clinical value names */
} vg_assessment_t;

/* A DICOM object written for a result (its Segmentation, its report),
 * to be delivered to each of the route's destinations. */
typedef struct vg_result_object {
    char sop_uid[65];
    char sop_class_uid[65];
    char series_uid[65];
    char relpath[256];             /* under the data directory */
} vg_result_object_t;

#define VG_RESULT_OBJECTS_MAX 4
#define VG_RESULT_DESTINATIONS_MAX 8  /* as a route's destinations */

typedef struct vg_result {
    int64_t job_id;
    char series_uid[65], study_uid[65];
    char model[64], model_version[32];
    char status[24];               /* "done", "not_analysable", "failed" */
    char reason[256];
    double patient_score;          /* < 0 when not computed */
    int positive;                  /* 0/1, -1 when not computed */
    char timings[256];             /* JSON object of seconds per stage */
    char grid[512];                /* JSON: the analysis grid's geometry */
    vg_finding_t *findings;        /* owned */
    int n_findings;
    vg_assessment_t *assessments;  /* owned; breast model only */
    int n_assessments;
    vg_result_object_t objects[VG_RESULT_OBJECTS_MAX];
    int n_objects;
    char destinations[VG_RESULT_DESTINATIONS_MAX][64]; /* [ae] names */
    int n_destinations;
} vg_result_t;

/* Frees the findings, their masks and the assessments (not R itself). */
void vg_result_clear(vg_result_t *r);

/* Stores R (replacing the earlier result of its series and model),
 * queues each of its objects in the outbox for each of its destinations
 * and marks job R->job_id done, in one transaction. Returns 0, VG_ENOTFOUND
 * when the job is no longer running (superseded: nothing stored), or
 * VG_EDB with nothing changed. */
int vg_results_put(vg_index_t *idx, const vg_result_t *r, int64_t now_ms);

/* Stores R without a job (status failed after the last attempt, where the
 * queue already recorded the failure). Same replacement rule. */
int vg_results_put_final(vg_index_t *idx, const vg_result_t *r, int64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif
