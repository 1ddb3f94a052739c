/* What the two TID 1500 writers (sr_shim.cpp for bone lesions,
 * breast_sr_shim.cpp for breast risk) share: the error buffer, DCMTK
 * condition checks, the series description and the durable save of a
 * finished document. C++, included by those two shims only; everything
 * here lives in each one's unnamed namespace. */
#ifndef VG_SR_SHIM_INT_H
#define VG_SR_SHIM_INT_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "inference/dicom_out.h"
#include "inference/dicom_out_int.h"
#include "inference/manifest.h"
#include "server/error.h"

namespace
{

/* The Device Observer UID of Vigil: fixed, so that every report names
 * the same device (a UUID-derived UID made once, PS3.5 B.2). */
const char DEVICE_UID[] = "2.25.221835377978506331294949088544980246471";

const char NOT_CLINICAL[] =
    "This result comes from a research demonstration model trained on synthetic data. "
    "It is not for clinical use.";

/* Where a failure's message goes (the caller's buffer, may be NULL). */
struct Out {
    char *err;
    size_t errlen;
};

/* Fills the message "WHAT: DETAIL" and returns CODE. */
inline int fail(const Out &o, int code, const char *what, const char *detail)
{
    if (o.err && o.errlen)
        snprintf(o.err, o.errlen, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
    return code;
}

#define DCM_TRY(o, expr, what)                                                             \
    do {                                                                                   \
        OFCondition c_ = (expr);                                                           \
        if (c_.bad())                                                                      \
            return fail(o, VG_EDCM, what, c_.text());                                      \
    } while (0)

/* "Vigil <model> <version>", cut to fit LO (64) with the suffix kept. */
inline OFString series_description(const vg_manifest_t *m)
{
    const char *suffix = m->not_for_clinical_use ? ", not for clinical use" : "";
    char base[160];
    snprintf(base, sizeof base, "Vigil %s %s", m->name, m->version);
    size_t room = 64 - strlen(suffix);
    if (strlen(base) > room)
        base[room] = '\0';
    return OFString(base) + suffix;
}

/* Encodes the completed DOC with new series and SOP instance UIDs and
 * places it at OUT_PATH (temporary name, fsync, rename, directory fsync);
 * fills *OUT. Nothing is left at OUT_PATH on failure. */
inline int save_report(const Out &o, DSRDocument &doc, const char *out_path,
                       vg_dicom_ref_t *out)
{
    DCM_TRY(o, doc.completeDocument(), "completion flag");
    DcmFileFormat ff;
    DcmDataset &ds = *ff.getDataset();
    DCM_TRY(o, doc.write(ds), "encoding");
    char series[65], sop[65];
    vg_dicom_new_uid(series);
    vg_dicom_new_uid(sop);
    DCM_TRY(o, ds.putAndInsertString(DCM_SeriesInstanceUID, series), "series UID");
    DCM_TRY(o, ds.putAndInsertString(DCM_SOPInstanceUID, sop), "SOP instance UID");
    std::string tmp = std::string(out_path) + ".part";
    int rc = vg__dicom_make_parent(out_path);
    if (rc < 0)
        return fail(o, rc, "creating the report's directory", strerror(-rc));
    OFCondition c = ff.saveFile(tmp.c_str(), EXS_LittleEndianExplicit);
    if (c.bad()) {
        unlink(tmp.c_str());
        return fail(o, VG_EDCM, "saving", c.text());
    }
    if ((rc = vg__dicom_commit(tmp.c_str(), out_path)) < 0) {
        unlink(out_path); /* renamed but its directory not synced: not kept */
        return fail(o, rc, "placing the report", strerror(-rc));
    }
    snprintf(out->sop_uid, sizeof out->sop_uid, "%s", sop);
    snprintf(out->sop_class_uid, sizeof out->sop_class_uid, "%s", UID_EnhancedSRStorage);
    snprintf(out->series_uid, sizeof out->series_uid, "%s", series);
    return 0;
}

} // namespace

#endif
