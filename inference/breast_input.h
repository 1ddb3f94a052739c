/* Mammography (MG) and breast ultrasound (US) files as the breast model
 * reads them: what each file is (view, laterality, ultrasound mode, For
 * Presentation or For Processing), the patient's age and BMI where DICOM
 * carries them, and the pixels rendered to [0,1] and area-resized exactly
 * as the model's training did. Built on DCMTK (breast_input_shim.cpp);
 * every transfer syntax the node accepts is decoded. It does not decide
 * which image fills which model slot (breast.c does). */
#ifndef VG_BREAST_INPUT_H
#define VG_BREAST_INPUT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { VG_BREAST_MG = 1, VG_BREAST_US = 2 };           /* kind */
enum { VG_MG_CC = 0, VG_MG_MLO = 1 };                  /* view: the MG slot */
enum { VG_US_BMODE = 0, VG_US_DOPPLER = 1, VG_US_ELASTO = 2 }; /* us_mode */

typedef struct vg_breast_image {
    const char *path;           /* borrowed from the caller */
    int kind;                   /* VG_BREAST_MG or VG_BREAST_US */
    char laterality;            /* 'L', 'R', or 0 when the file has none */
    int view;                   /* MG: VG_MG_CC or VG_MG_MLO */
    int for_processing;         /* MG: a For Processing image */
    int has_window;             /* MG: WindowCenter/Width present */
    int us_mode;                /* US: VG_US_* */
    int frames;                 /* NumberOfFrames (1 for single frame) */
    int instance_number;        /* 0 when absent */
    char sop_uid[65];
    char study_uid[65];
    double age;                 /* years, when has_age */
    double bmi;                 /* kg/m2, when has_bmi */
    int has_age, has_bmi;
} vg_breast_image_t;

/* Reads the header of PATH into *IMG (IMG->path = PATH). Returns 0 for an
 * MG image of view CC or MLO with a laterality, or any US image; VG_EPARSE
 * when the file cannot be read as DICOM; VG_ENOTANALYSABLE for anything
 * else (another modality, another view, tomosynthesis). NOTE says why in
 * both failures. */
int vg_breast_image_read(const char *path, vg_breast_image_t *img, char *note,
                         size_t notelen);

/* Decodes IMG's pixels (the middle frame, index frames/2, of a cine loop)
 * and renders them as the contract says: MG one channel, rescaled, the
 * first window applied linearly (min-max without one), MONOCHROME1
 * inverted, mirrored so that the nipple points right; US three channels
 * (grey replicated, YBR converted to RGB) over 255. The result is
 * area-resized to H x W into OUT (channel-major: MG H*W floats, US
 * 3*H*W), which the caller owns. Returns 0, or VG_EPARSE / -ENOMEM with
 * err filled (OUT undefined). */
int vg_breast_image_render(const vg_breast_image_t *img, int h, int w, float *out, char *err,
                           size_t errlen);

/* Area resize of C channels of H x W (channel-major) to OH x OW, exactly
 * torch's adaptive_avg_pool2d: output row i averages input rows
 * floor(i*H/OH) .. ceil((i+1)*H/OH)-1, likewise for columns. */
void vg_breast_area_resize(const float *in, int c, int h, int w, float *out, int oh, int ow);

/* Age in years from PatientAge ("052Y", "006M", "010W", "100D"), or else
 * from StudyDate - PatientBirthDate (YYYYMMDD, completed years). Any may be
 * NULL or empty. Returns 1 with *age set, 0 when neither gives one. */
int vg_breast_age(const char *patient_age, const char *study_date, const char *birth_date,
                  double *age);

/* BMI = weight / size^2 (kg, m). Returns 1 with *bmi set when both are
 * given (> 0), else 0. */
int vg_breast_bmi(double weight_kg, double size_m, double *bmi);

#ifdef __cplusplus
}
#endif

#endif
