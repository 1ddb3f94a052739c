/* Bone-lesion analysis of a CT volume: resampling to the model's grid, a
 * bone region from the HU threshold, sliding-window segmentation restricted
 * to windows that hold bone, connected lesions typed by their summed class
 * probabilities (or, with a second-stage classifier, kept or dropped and
 * typed by it), and a patient-level metastasis score. The models and
 * their manifest come from outside; nothing here is specific to one set
 * of weights. */
#ifndef VG_BONE_H
#define VG_BONE_H

#include <stddef.h>

#include "inference/manifest.h"
#include "inference/runtime.h"
#include "inference/volume.h"
#include "storage/results.h"

typedef struct vg_bone_timings {
    double resample_s, model_s, post_s;
    double classify_s;           /* the classifier's share of post_s */
    int windows;                 /* windows run through the model */
    int windows_total;           /* windows the grid has */
    int candidates;              /* components the classifier saw */
} vg_bone_timings_t;

/* Analyses VOL with MODEL as MAN describes, filling status "done",
 * findings, patient score and call, and the grid geometry of RES.
 * CLASSIFIER, when not NULL, is the second stage MAN's classifier settings
 * describe: every candidate lesion of at least min_volume_mm3 is
 * classified on a cube of HU around its centroid, dropped below
 * min_lesion_probability, and otherwise given the classifier's type and
 * lesion probability; NULL keeps the segmentation's own typing. Models
 * are borrowed. Returns 0, or VG_EMODEL / -ENOMEM with err filled (RES
 * then holds no findings). */
int vg_bone_analyse(vg_model_t *model, vg_model_t *classifier, const vg_manifest_t *man,
                    const vg_volume_t *vol, vg_result_t *res, vg_bone_timings_t *t,
                    char *err, size_t errlen);

#endif
