/* What the index keeps about one received instance: the attributes a
 * router and a worklist need. Filled by the DICOM reader, consumed by the
 * index. Strings are NUL-terminated and empty when absent. */
#ifndef VG_INSTANCE_H
#define VG_INSTANCE_H

#include <stdint.h>

#define VG_UID_MAX 64
/* UID buffers hold up to 128 characters, so that an over-long UID arrives
 * whole at validation and is refused, rather than cut to 64 and stored. */
#define VG_UID_BUF 129

typedef struct vg_instance_meta {
    char sop_class_uid[VG_UID_BUF];
    char sop_instance_uid[VG_UID_BUF];
    char study_uid[VG_UID_BUF];
    char series_uid[VG_UID_BUF];
    char transfer_syntax[VG_UID_MAX + 1];
    char patient_id[65];
    char accession[17];
    char study_date[9];                 /* YYYYMMDD */
    char study_time[17];
    char study_description[65];
    char modality[17];
    char body_part[17];
    char series_description[65];
    char image_type[65];                /* e.g. ORIGINAL\PRIMARY\AXIAL */
    int series_number;                  /* -1 when absent */
    int instance_number;                /* -1 when absent */
    int has_position;                   /* image_position/orientation set */
    double image_position[3];           /* ImagePositionPatient, mm */
    double image_orientation[6];        /* ImageOrientationPatient */
    double slice_thickness;             /* mm, 0 when absent */
    int rows, columns;                  /* 0 when absent */
    int frames;                         /* NumberOfFrames, 1 when absent */
} vg_instance_meta_t;

#endif
