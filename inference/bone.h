/* Bone-lesion analysis of a CT volume: resampling to the model's grid, a
 * bone region from the HU threshold, sliding-window segmentation restricted
 * to windows that hold bone, connected lesions typed by their summed class
 * probabilities, and a patient-level metastasis score. The model and its
 * manifest come from outside; nothing here is specific to one set of
 * weights. */
#ifndef VG_BONE_H
#define VG_BONE_H

#include <stddef.h>

#include "inference/manifest.h"
#include "inference/runtime.h"
#include "inference/volume.h"
#include "storage/results.h"

typedef struct vg_bone_timings {
    double resample_s, model_s, post_s;
    int windows;                 /* windows run through the model */
    int windows_total;           /* windows the grid has */
} vg_bone_timings_t;

/* Analyses VOL with MODEL as MAN describes, filling status "done",
 * findings, patient score and call, and the grid geometry of RES. Returns
 * 0, or VG_EMODEL / -ENOMEM with err filled (RES then holds no findings). */
int vg_bone_analyse(vg_model_t *model, const vg_manifest_t *man, const vg_volume_t *vol,
                    vg_result_t *res, vg_bone_timings_t *t, char *err, size_t errlen);

#endif
