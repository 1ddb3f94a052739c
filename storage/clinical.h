/* Clinical values of a study for the breast model: the ones DICOM does
 * not carry (family history, palpable lump, ...) posted through the API,
 * kept in the index per study. A value nobody gave is missing, never 0.
 * The names, their order (the model's clinical vector) and their ranges
 * are one table here; the API validates against it. */
#ifndef VG_CLINICAL_H
#define VG_CLINICAL_H

#include <stddef.h>
#include <stdint.h>

#include "storage/index.h"

#define VG_CLINICAL_N 10

/* Index into the vector: the order the model reads them in. */
enum {
    VG_CLIN_AGE,               /* years, 18..110 */
    VG_CLIN_BMI,               /* kg/m2, 10..80 */
    VG_CLIN_FAMILY_HISTORY,    /* true/false */
    VG_CLIN_PALPABLE_LUMP,     /* true/false */
    VG_CLIN_NIPPLE_DISCHARGE,  /* true/false */
    VG_CLIN_PAIN,              /* true/false */
    VG_CLIN_PRIOR_BIOPSY,      /* true/false */
    VG_CLIN_MENOPAUSAL_STATUS, /* "pre" 0, "peri" 0.5, "post" 1 */
    VG_CLIN_HORMONE_THERAPY,   /* true/false */
    VG_CLIN_BREAST_DENSITY,    /* BI-RADS "A".."D" -> 0, 1/3, 2/3, 1 */
};

typedef struct vg_clinical {
    double value[VG_CLINICAL_N];   /* in the units above (not normalised) */
    int present[VG_CLINICAL_N];    /* 1 given, 0 missing, -1 cleared (null) */
} vg_clinical_t;

/* The JSON name of value I ("age", "bmi", "family_history", ...). */
const char *vg_clinical_name(int i);

/* Parses a JSON object of named values (LEN bytes at JSON) into *C,
 * which the caller initialised (values not named stay as they were).
 * Booleans are JSON true/false, menopausal_status a string, breast_density
 * "A".."D", age and bmi numbers; null marks a value missing. Returns 0, or
 * -EINVAL with err saying which name is unknown or which value is out
 * of range, e.g. "age: 250 is out of range 18..110" (nothing in *C
 * changed then). */
int vg_clinical_parse(const char *json, size_t len, vg_clinical_t *c, char *err,
                      size_t errlen);

/* Stores the values of C that are present (and removes those given as
 * null in the last parse: present < 0) for STUDY_UID, keeping others
 * posted earlier. Returns 0 or VG_EDB. */
int vg_clinical_put(vg_index_t *idx, const char *study_uid, const vg_clinical_t *c,
                    int64_t now_ms);

/* Reads what was posted for STUDY_UID into *C (all missing when nothing
 * was). Returns 0 or VG_EDB. */
int vg_clinical_get(vg_index_t *idx, const char *study_uid, vg_clinical_t *c);

/* Writes C as a JSON object of the present values (the API's view), in
 * the form they are posted in ("breast_density": "C"). Returns 0, or
 * VG_ETOOBIG when it does not fit in LEN bytes (1 KiB always does). */
int vg_clinical_to_json(const vg_clinical_t *c, char *out, size_t len);

/* What POST /api/v1/studies/UID/clinical does, in one transaction: stores
 * C as vg_clinical_put, reads the values now stored into *now (may be
 * NULL), and when they differ from those stored before, re-queues the
 * study's jobs of grouped routes that already started (see
 * vg_queue_requeue_study), so that the result reflects them; *requeued
 * says how many. Returns 0, VG_ENOTFOUND when STUDY_UID is not indexed,
 * or VG_EDB (nothing changed then). */
int vg_clinical_update(vg_index_t *idx, const char *study_uid, const vg_clinical_t *c,
                       int64_t now_ms, vg_clinical_t *now, int *requeued);

#endif
