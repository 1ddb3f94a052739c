/* Breast cancer risk of a group of mammography and ultrasound files: the
 * images sorted into the model's slots per breast (MG CC and MLO; US
 * B-mode, colour Doppler and elastography in two planes each), the
 * clinical vector from DICOM and from values posted through the API, one
 * forward pass for all breasts, and per breast the T1..T5 probabilities,
 * the malignancy probability and its BI-RADS band. Any input may be
 * missing: it goes in as zeros with present 0. Nothing here is specific
 * to one set of weights; the manifest says sizes, normalisation and bands. */
#ifndef VG_BREAST_H
#define VG_BREAST_H

#include <stddef.h>

#include "inference/breast_input.h"
#include "inference/manifest.h"
#include "inference/runtime.h"
#include "storage/clinical.h"
#include "storage/results.h"

#define VG_BREAST_US_SLOTS 6

/* One breast's images, borrowed from the caller's array. */
typedef struct vg_breast_case {
    char laterality;                                  /* 'L' or 'R' */
    const vg_breast_image_t *mg[2];                   /* CC, MLO; NULL absent */
    const vg_breast_image_t *us[VG_BREAST_US_SLOTS];  /* B1 B2 D1 D2 E1 E2 */
} vg_breast_case_t;

typedef struct vg_breast_timings {
    double decode_s, model_s;
    int images;                  /* images that went into the model */
    int skipped;                 /* files not used */
} vg_breast_timings_t;

/* Sorts the usable images of IMGS (kind MG or US; others are ignored)
 * into at most two cases, left first: per breast and view the first For
 * Presentation mammogram (For Processing only without one), per breast and
 * ultrasound mode the first two images by InstanceNumber then SOP
 * Instance UID; an ultrasound image without laterality goes to the only
 * side with mammograms. Returns the number of cases; NOTES (may be NULL)
 * gets what a reader should know, "; "-separated. */
int vg_breast_assign(const vg_breast_image_t *imgs, int n, vg_breast_case_t cases[2],
                     char *notes, size_t noteslen);

/* The clinical vector: values derived from IMGS' DICOM (age, BMI),
 * replaced by POSTED's present ones (POSTED may be NULL), normalised as MAN
 * says into CLIN, with CLIN_PRESENT 1 or 0 (a missing value is 0 there and
 * 0 in CLIN). USED gets the present values' names, comma-separated. */
void vg_breast_clinical(const vg_manifest_t *man, const vg_breast_image_t *imgs, int n,
                        const vg_clinical_t *posted, float clin[VG_CLINICAL_N],
                        float clin_present[VG_CLINICAL_N], char *used, size_t usedlen);

/* "MG_CC,MG_MLO,US_B1,US_B2,US_DOPPLER1,US_DOPPLER2,US_ELASTO1,US_ELASTO2",
 * of the slots C fills. */
void vg_breast_modalities(const vg_breast_case_t *c, char *out, size_t len);

/* The model's six inputs for N_CASES breasts (mg, mg_present, us,
 * us_present, clin, clin_present: the shapes of the contract), each image
 * rendered into its slot and every empty slot zero with present 0; CLIN
 * and CLIN_PRESENT are repeated for every breast. Returns 0 with IN owned
 * by the caller (vg_breast_tensors_free); VG_EPARSE with *bad the image
 * that could not be decoded, or -ENOMEM; err filled and nothing allocated
 * on failure. */
int vg_breast_tensors(const vg_manifest_t *man, const vg_breast_case_t *cases, int n_cases,
                      const float clin[VG_CLINICAL_N], const float clin_present[VG_CLINICAL_N],
                      vg_tensor_t in[6], const vg_breast_image_t **bad, char *err,
                      size_t errlen);
void vg_breast_tensors_free(vg_tensor_t in[6]);

/* Analyses the N files of PATHS with MODEL as MAN describes: RES gets
 * status "done" with one assessment per breast that has a usable image
 * (patient_score the highest malignancy probability, positive when it
 * reaches the manifest's operating threshold, else the first BI-RADS
 * band's upper edge) and notes in reason, or "not_analysable" with the
 * reason when no file gives a usable image. USED (N entries, may be NULL)
 * gets the paths of the images the model saw, *n_used their number. The
 * model is borrowed. Returns 0, or VG_EMODEL / -ENOMEM with err filled
 * (RES then holds no assessments). */
int vg_breast_analyse(vg_model_t *model, const vg_manifest_t *man, const char *const *paths,
                      int n, const vg_clinical_t *posted, vg_result_t *res, const char **used,
                      int *n_used, vg_breast_timings_t *t, char *err, size_t errlen);

/* Runs MODEL on empty inputs of one and of two breasts, twice each.
 * TorchScript's executor profiles the first calls of a graph and then
 * runs an optimised one (here the first two calls take about 0.6 s, the
 * next 0.03 s), so a worker that warms up once at load answers its first
 * studies as fast as the later ones. Returns 0, or VG_EMODEL / -ENOMEM
 * with err filled (the model is then unusable for these inputs). */
int vg_breast_warm_up(vg_model_t *model, const vg_manifest_t *man, char *err,
                      size_t errlen);

#endif
