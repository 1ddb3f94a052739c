/* A model's manifest: a JSON file beside its TorchScript file saying what
 * the model is (name, version), what it expects (input spacing, HU window,
 * window size), what it outputs (classes with their coded concepts), its
 * operating threshold and its provenance, and optionally a second model
 * that classifies each candidate lesion. A breast risk manifest (task
 * "breast_risk") gives image sizes, the clinical values' normalisation,
 * which classes are malignant and the BI-RADS bands instead. Nothing in
 * the C code is specific to one set of weights: a hospital drops in its
 * own. */
#ifndef VG_MANIFEST_H
#define VG_MANIFEST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VG_MANIFEST_MAX_CLASSES 16
#define VG_MANIFEST_MAX_CLINICAL 10 /* storage/clinical.h: VG_CLINICAL_N */
#define VG_MANIFEST_MAX_BANDS 8

typedef struct vg_code {
    char scheme[16];            /* "SCT", "DCM", "99VIGIL" */
    char value[32];
    char meaning[64];
} vg_code_t;

typedef struct vg_class {
    char name[48];              /* e.g. "osteolytic_metastasis" */
    int metastatic;             /* counts towards the patient-level call */
    int both_endplates;         /* bone: one lesion on the two endplates of a
                                 * disc, segmented as two bands that
                                 * inference/bone.c makes one finding */
    int malignant;              /* breast: counts towards malignancy */
    char meaning[128];          /* breast: what the class stands for */
    vg_code_t code;             /* what it is (breast: optional) */
    vg_code_t modifier;         /* optional refinement; scheme "" if none */
} vg_class_t;

/* (value - offset) / scale: one clinical value's normalisation. */
typedef struct vg_clinical_norm {
    char name[32];              /* "age", "bmi", ... as storage/clinical.h */
    double offset, scale;       /* scale != 0 */
} vg_clinical_norm_t;

/* A BI-RADS likelihood band: probabilities below BELOW (and not below the
 * previous band's) fall in CATEGORY. */
typedef struct vg_birads_band {
    double below;
    char category[4];           /* "3", "4A", "4B", "4C", "5" */
} vg_birads_band_t;

typedef struct vg_manifest {
    char dir[4096];             /* directory of the manifest */
    char name[64];
    char version[32];
    char task[32];              /* "bone_lesions" or "breast_risk" */
    char model_path[4096];      /* absolute path of the TorchScript file */
    char provenance[512];       /* training data statement */
    int not_for_clinical_use;
    vg_class_t classes[VG_MANIFEST_MAX_CLASSES]; /* index 0 = class 1 */
    int n_classes;
    double spacing_mm;          /* isotropic input spacing */
    double hu_window[2];        /* documented input window (model clamps) */
    int window_voxels;          /* sliding window edge */
    int context_voxels;         /* margin around each window's kept core */
    double bone_threshold_hu;   /* bone region: HU above this ... */
    double bone_margin_mm;      /* ... dilated by this much */
    /* The next three are the classifier's own when it gives them. */
    double lesion_threshold;    /* voxel foreground probability */
    double min_volume_mm3;      /* smaller components are dropped */
    double operating_threshold; /* patient-level positive call */
    /* The optional per-lesion classifier ("classifier" in the JSON). */
    char classifier_path[4096]; /* absolute path of its TorchScript; "" none */
    int crop_voxels;            /* edge of the HU cube around a candidate */
    int candidate_channel;      /* 1: the crop's second channel is the
                                   candidate's foreground, 0 elsewhere */
    double fine_channel_mm;     /* > 0: the second channel is a cube of the
                                   scanner's volume sampled this far apart */
    double min_lesion_probability; /* candidates below it are dropped */
    /* Breast risk ("breast_risk"): sizes are rows, columns. */
    int mg_size[2];             /* each mammogram's input size */
    int us_size[2];             /* each ultrasound image's input size */
    vg_clinical_norm_t clinical[VG_MANIFEST_MAX_CLINICAL]; /* the model's order */
    int n_clinical;
    vg_birads_band_t birads[VG_MANIFEST_MAX_BANDS]; /* ascending "below" */
    int n_birads;
} vg_manifest_t;

/* Reads PATH; model and classifier file names are resolved against its
 * directory (whether the files exist is the loader's business). Returns
 * 0, or VG_EINVAL_CFG / -errno with err saying which field is missing or
 * wrong. */
int vg_manifest_load(const char *path, vg_manifest_t *m, char *err, size_t errlen);

/* The BI-RADS category of malignancy probability P under M's bands: the
 * first whose "below" exceeds P (the last band above all of them). */
const char *vg_manifest_birads(const vg_manifest_t *m, double p);

/* Index (1-based, as in the model's output) of the class NAME, or 0. */
int vg_manifest_class(const vg_manifest_t *m, const char *name);

#ifdef __cplusplus
}
#endif

#endif
