/* Result objects on disk; see report.h. */
#include "inference/report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inference/dicom_out.h"

static void record(vg_result_t *res, const vg_dicom_ref_t *ref, const char *relpath)
{
    vg_result_object_t *o = &res->objects[res->n_objects++];
    snprintf(o->sop_uid, sizeof o->sop_uid, "%s", ref->sop_uid);
    snprintf(o->sop_class_uid, sizeof o->sop_class_uid, "%s", ref->sop_class_uid);
    snprintf(o->series_uid, sizeof o->series_uid, "%s", ref->series_uid);
    snprintf(o->relpath, sizeof o->relpath, "%s", relpath);
}

int vg_report_write(const char *dir, const vg_volume_t *vol, const vg_manifest_t *man,
                    const char *source_path, vg_result_t *res, char *err, size_t errlen)
{
    char rel_seg[256], rel_sr[256], path[4096 + 256];
    int n = snprintf(rel_seg, sizeof rel_seg, "results/%s/%s/%lld-seg.dcm", res->study_uid,
                     res->series_uid, (long long)res->job_id);
    snprintf(rel_sr, sizeof rel_sr, "results/%s/%s/%lld-sr.dcm", res->study_uid,
             res->series_uid, (long long)res->job_id);
    res->n_objects = 0;
    if (n >= (int)sizeof rel_seg) {
        snprintf(err, errlen, "result path too long");
        return -ENAMETOOLONG;
    }
    char(*tracking)[65] = calloc(res->n_findings ? res->n_findings : 1, sizeof *tracking);
    if (!tracking) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (int i = 0; i < res->n_findings; i++)
        vg_dicom_new_uid(tracking[i]);
    vg_dicom_input_t in = {.vol = vol, .grid_spacing = man->spacing_mm, .res = res,
                           .man = man, .source_path = source_path,
                           .tracking_uids = (const char(*)[65])tracking};
    vg_dicom_ref_t seg, sr;
    int rc = 0;
    if (res->n_findings > 0) {
        snprintf(path, sizeof path, "%s/%s", dir, rel_seg);
        rc = vg_seg_write(&in, path, &seg, err, errlen);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/%s", dir, rel_sr);
        rc = vg_sr_write(&in, res->n_findings > 0 ? &seg : NULL, path, &sr, err, errlen);
        if (rc < 0 && res->n_findings > 0) { /* the SEG alone would say too little */
            snprintf(path, sizeof path, "%s/%s", dir, rel_seg);
            unlink(path);
        }
    }
    if (rc == 0) {
        if (res->n_findings > 0)
            record(res, &seg, rel_seg);
        record(res, &sr, rel_sr);
    }
    free(tracking);
    return rc;
}

int vg_report_write_breast(const char *dir, const vg_manifest_t *man,
                           const char *const *evidence_paths, int n_evidence,
                           vg_result_t *res, char *err, size_t errlen)
{
    char rel[256], path[4096 + 256];
    res->n_objects = 0;
    int n = snprintf(rel, sizeof rel, "results/%s/%s/%lld-sr.dcm", res->study_uid,
                     res->series_uid, (long long)res->job_id);
    if (n >= (int)sizeof rel ||
        snprintf(path, sizeof path, "%s/%s", dir, rel) >= (int)sizeof path) {
        snprintf(err, errlen, "result path too long");
        return -ENAMETOOLONG;
    }
    vg_dicom_ref_t sr;
    int rc =
        vg_breast_sr_write(man, res, evidence_paths, n_evidence, path, &sr, err, errlen);
    if (rc == 0)
        record(res, &sr, rel);
    return rc;
}
