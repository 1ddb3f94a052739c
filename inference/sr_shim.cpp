/* DCMTK side of vg_sr_write (dicom_out.h): the TID 1500 Measurement
 * Report of one analysed series, as an Enhanced SR instance in a new
 * series of the source study. The tree is built with dcmsr's TID 1500
 * template classes; the patient-level score and threshold, which the
 * template classes cannot express, are added to the expanded tree
 * afterwards (TID 1500 is extensible). This file does not write the
 * Segmentation it references, and it decides nothing: every value comes
 * from the result and the manifest.
 *
 * Codes, and where each comes from (DICOM PS3.16 unless said otherwise):
 *   document title     (126000, DCM, "Imaging Measurement Report")  CID 7021
 *   language           (eng, RFC5646, "English")                     CID 5000
 *   procedure reported (25045-6, LN, "CT unspecified body region")   CID 100
 *   per finding (TID 1411, one group each):
 *     Finding          the class's code from the manifest
 *     its modifier     (116676008, SCT, "Associated morphology") = the
 *                      class's modifier, as a qualitative evaluation
 *     Finding Site     (272673000, SCT, "Bone")                      CID 7151
 *     Volume           (118565006, SCT, "Volume") mm3                CID 7469
 *     mean HU          (112031, DCM, "Attenuation Coefficient") [hnsf'U],
 *                      derivation (373098007, SCT, "Mean")           CID 7464
 *     longest extent   (103339001, SCT, "Long Axis") mm              CID 7470
 *     probability      (122157, DCM, "Probability") {1}: the mean
 *                      lesion probability of the finding's voxels (of
 *                      any lesion, so not "Probability of cancer")
 *   patient level (TID 1500 Qualitative Evaluations):
 *     (14799000, SCT, "Neoplasm, metastatic") = (373066001, SCT, "Yes")
 *                      or (373067005, SCT, "No"), which HAS PROPERTIES
 *       (VG-PSCORE, 99VIGIL, "Bone metastasis score") {1}   private: no
 *                      standard concept for a model's patient score
 *       (122411, DCM, "Threshold Value") {1}: the operating threshold
 *     (121106, DCM, "Comment"): the not-for-clinical-use statement
 * 99VIGIL is declared in the Coding Scheme Identification Sequence. */
#include "inference/manifest.h"
#include "storage/store.h"
#include "inference/dicom_out.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmsr/cmr/tid1500.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <new>
#include <string>

#include "inference/dicom_out_int.h"
#include "server/error.h"

#include "inference/sr_shim_int.h"

namespace
{

#define CODE_SCT_Bone DSRBasicCodedEntry("272673000", "SCT", "Bone")
#define CODE_SCT_Yes DSRBasicCodedEntry("373066001", "SCT", "Yes")
#define CODE_SCT_No DSRBasicCodedEntry("373067005", "SCT", "No")
#define CODE_SCT_NeoplasmMetastatic                                                        \
    DSRBasicCodedEntry("14799000", "SCT", "Neoplasm, metastatic")
#define CODE_SCT_AssociatedMorphology                                                      \
    DSRBasicCodedEntry("116676008", "SCT", "Associated morphology")
#define CODE_VG_PatientScore                                                               \
    DSRBasicCodedEntry("VG-PSCORE", "99VIGIL", "Bone metastasis score")
#define CODE_UCUM_NoUnits DSRBasicCodedEntry("1", "UCUM", "no units")

typedef CMR_TID1411_in_TID1500::MeasurementValue Value;

/* The source file, and the UIDs read from it (the volume's copies may
 * be empty). */
struct Source {
    DcmFileFormat ff;
    OFString study, series;
};




OFString num(double v, int decimals)
{
    char b[64];
    snprintf(b, sizeof b, "%.*f", decimals, v);
    return b;
}

DSRCodedEntryValue code_of(const vg_code_t &c)
{
    return DSRCodedEntryValue(c.value, c.scheme, c.meaning);
}

/* One measurement of the current group, with the algorithm that made it.
 * Values that are not finite cannot be encoded and are left out. */
int add_measurement(const Out &o, CMR_TID1411_in_TID1500 &g, const vg_manifest_t *man,
                    const CMR_CID7469 &concept, double v, int decimals,
                    const CMR_CID7181 &unit, bool mean)
{
    if (!isfinite(v))
        return 0;
    DCM_TRY(o, g.addMeasurement(concept, Value(num(v, decimals), unit)), "measurement");
    CMR_TID1419_in_TID1411_in_TID1500 &m = g.getMeasurement();
    if (mean)
        DCM_TRY(o, m.setDerivation(CMR_CID7464(CMR_CID7464::Mean)),
                "measurement derivation");
    DCM_TRY(o, m.setAlgorithmIdentification(man->name, man->version),
            "algorithm identification");
    return 0;
}

/* The Volumetric ROI Measurements group (TID 1411) of finding F. */
int add_finding(const Out &o, TID1500_MeasurementReport &rep, const vg_dicom_input_t *in,
                const vg_dicom_ref_t *seg, const Source &src, int f)
{
    const vg_finding_t *fi = &in->res->findings[f];
    int cls = vg_manifest_class(in->man, fi->type);
    if (cls == 0)
        return fail(o, -EINVAL, "finding of a class the manifest does not name", fi->type);
    const vg_class_t *c = &in->man->classes[cls - 1];
    DCM_TRY(o, rep.addVolumetricROIMeasurements(), "measurement group");
    CMR_TID1411_in_TID1500 &g = rep.getVolumetricROIMeasurements();
    char id[32];
    snprintf(id, sizeof id, "lesion %d", f + 1);
    DCM_TRY(o, g.setTrackingIdentifier(id), "tracking identifier");
    DCM_TRY(o, g.setTrackingUniqueIdentifier(in->tracking_uids[f]), "tracking UID");
    DCM_TRY(o, g.setFinding(code_of(c->code)), "finding code");
    DSRImageReferenceValue ref(seg->sop_class_uid, seg->sop_uid);
    ref.getSegmentList().addItem((Uint16)(f + 1));
    DCM_TRY(o, g.setReferencedSegment(ref), "referenced segment");
    DCM_TRY(o, g.setSourceSeriesForSegmentation(src.series), "source series");
    DCM_TRY(o, g.addFindingSite(CODE_SCT_Bone), "finding site");
    int rc;
    if ((rc = add_measurement(o, g, in->man, CMR_CID7469(CMR_CID7469::Volume),
                              fi->volume_mm3, 1, CMR_CID7181(CMR_CID7181::CubicMillimeter),
                              false)) < 0 ||
        (rc = add_measurement(o, g, in->man,
                              CMR_CID7469(CMR_CID7469::AttenuationCoefficient), fi->mean_hu,
                              1, CMR_CID7181(CMR_CID7181::HounsfieldUnit), true)) < 0 ||
        (rc = add_measurement(o, g, in->man, CMR_CID7469(CMR_CID7469::LongAxis),
                              fi->diameter_mm, 1, CMR_CID7181(CMR_CID7181::Millimeter),
                              false)) < 0 ||
        (rc = add_measurement(o, g, in->man, CMR_CID7469(CODE_DCM_Probability),
                              fi->probability, 4, CMR_CID7181(CODE_UCUM_NoUnits), false)) <
            0)
        return rc;
    if (c->modifier.scheme[0])
        DCM_TRY(
            o,
            g.addQualitativeEvaluation(CODE_SCT_AssociatedMorphology, code_of(c->modifier)),
            "finding modifier");
    return 0;
}

/* The image library: one group, descriptors common to the series taken
 * from the source file, then one entry per source slice. */
int add_library(const Out &o, TID1500_MeasurementReport &rep, const vg_volume_t *vol,
                Source &src)
{
    TID1600_ImageLibrary &lib = rep.getImageLibrary();
    TID1600_ImageLibrary::ConceptNameList common;
    common.push_back(CODE_DCM_Modality);
    common.push_back(CODE_DCM_FrameOfReferenceUID);
    common.push_back(CODE_DCM_PixelDataRows);
    common.push_back(CODE_DCM_PixelDataColumns);
    if (!lib.hasImageLibrary()) /* TID 1500 includes it empty */
        DCM_TRY(o, lib.createNewImageLibrary(), "image library");
    DCM_TRY(o, lib.addImageGroup(), "image library group");
    DCM_TRY(o,
            lib.addImageGroupDescriptors(*src.ff.getDataset(),
                                         TID1600_ImageLibrary::withSelectedDescriptors,
                                         common),
            "image library descriptors");
    for (int k = 0; k < vol->nz; k++) {
        DcmItem item;
        DCM_TRY(o, item.putAndInsertString(DCM_SOPClassUID, vol->sop_class_uids[k]),
                "image entry");
        DCM_TRY(o, item.putAndInsertString(DCM_SOPInstanceUID, vol->sop_uids[k]),
                "image entry");
        DCM_TRY(o, lib.addImageEntry(item, TID1600_ImageLibrary::withoutDescriptors),
                "image entry");
    }
    return 0;
}

bool is_positive(const vg_result_t *r, const vg_manifest_t *m)
{
    if (r->positive >= 0)
        return r->positive > 0;
    return r->patient_score >= 0 && r->patient_score >= m->operating_threshold;
}

/* The template part of the report: context, library, groups, the call. */
int build_template(const Out &o, TID1500_MeasurementReport &rep, const vg_dicom_input_t *in,
                   const vg_dicom_ref_t *seg, Source &src)
{
    DCM_TRY(o, rep.setLanguage(CID5000_Languages(CID5000_Languages::English)), "language");
    DCM_TRY(o,
            rep.getObservationContext().addDeviceObserver(DEVICE_UID, "Vigil", "Vigil",
                                                          in->man->name),
            "observer context");
    DCM_TRY(o, rep.addProcedureReported(CMR_CID100(CMR_CID100::CTUnspecifiedBodyRegion)),
            "procedure reported");
    int rc;
    if ((rc = add_library(o, rep, in->vol, src)) < 0)
        return rc;
    for (int f = 0; f < in->res->n_findings; f++)
        if ((rc = add_finding(o, rep, in, seg, src, f)) < 0)
            return rc;
    DCM_TRY(o,
            rep.addQualitativeEvaluation(CODE_SCT_NeoplasmMetastatic,
                                         is_positive(in->res, in->man) ? CODE_SCT_Yes
                                                                       : CODE_SCT_No),
            "patient evaluation");
    if (in->man->not_for_clinical_use)
        DCM_TRY(o, rep.addQualitativeEvaluation(CODE_DCM_Comment, OFString(NOT_CLINICAL)),
                "not-for-clinical-use statement");
    if (!rep.isValid())
        return fail(o, VG_EDCM, "TID 1500 template incomplete", NULL);
    return 0;
}

/* Adds a NUM below the current item of TREE (cursor returns to it). */
int add_property(const Out &o, DSRDocumentTree &tree, const DSRCodedEntryValue &concept,
                 double v)
{
    size_t parent = tree.getNodeID();
    DCM_TRY(o,
            tree.addChildContentItem(DSRTypes::RT_hasProperties, DSRTypes::VT_Num, concept),
            "patient-level value");
    DCM_TRY(o,
            tree.getCurrentContentItem().setNumericValue(
                DSRNumericMeasurementValue(num(v, 4), CODE_UCUM_NoUnits)),
            "patient-level value");
    tree.gotoNode(parent);
    return 0;
}

/* What the template classes cannot do, on the expanded tree: the patient
 * score and the operating threshold as properties of the patient-level
 * call (TID 1500 Row 13), and, with no finding, no Imaging Measurements
 * container (Row 6 holds at least one group when present). */
int finish_tree(const Out &o, DSRDocument &doc, const vg_dicom_input_t *in)
{
    DSRDocumentTree &tree = doc.getTree();
    if (in->res->n_findings == 0 && tree.gotoNamedNode(CODE_DCM_ImagingMeasurements) &&
        tree.removeCurrentContentItem() == 0)
        return fail(o, VG_EDCM, "removing the empty Imaging Measurements", NULL);
    if (tree.gotoAnnotatedNode("TID 1500 - Row 13") == 0)
        return fail(o, VG_EDCM, "patient evaluation not found in the tree", NULL);
    int rc;
    if (in->res->patient_score >= 0 &&
        (rc = add_property(o, tree, CODE_VG_PatientScore, in->res->patient_score)) < 0)
        return rc;
    if ((rc = add_property(o, tree, CODE_DCM_ThresholdValue,
                           in->man->operating_threshold)) < 0)
        return rc;
    return 0;
}


/* Header: patient and study from SRC, a new series, equipment, the
 * evidence lists, the private coding scheme. */
int fill_header(const Out &o, DSRDocument &doc, const vg_dicom_input_t *in,
                const vg_dicom_ref_t *seg, Source &src)
{
    DcmDataset &sds = *src.ff.getDataset();
    DCM_TRY(o, doc.readStudyData(sds), "patient and study attributes");
    OFString cs;
    if (sds.findAndGetOFStringArray(DCM_SpecificCharacterSet, cs).good() && !cs.empty())
        DCM_TRY(o, doc.setSpecificCharacterSet(cs), "specific character set");
    doc.createNewSeries();
    char n[16];
    snprintf(n, sizeof n, "%d", VG_SR_SERIES_NUMBER);
    DCM_TRY(o, doc.setSeriesNumber(n), "series number");
    DCM_TRY(o, doc.setInstanceNumber("1"), "instance number");
    DCM_TRY(o, doc.setSeriesDescription(series_description(in->man)), "series description");
    DCM_TRY(o, doc.setManufacturer("Vigil"), "manufacturer");
    DCM_TRY(o, doc.setManufacturerModelName(in->man->name), "model name");
    DCM_TRY(o, doc.setSoftwareVersions(in->man->version), "software versions");
    const vg_volume_t *v = in->vol;
    for (int k = 0; k < v->nz; k++)
        DCM_TRY(o,
                doc.getCurrentRequestedProcedureEvidence().addItem(
                    src.study, src.series, v->sop_class_uids[k], v->sop_uids[k]),
                "evidence");
    if (seg)
        DCM_TRY(o,
                doc.getPertinentOtherEvidence().addItem(src.study, seg->series_uid,
                                                        seg->sop_class_uid, seg->sop_uid),
                "evidence");
    DCM_TRY(o,
            doc.getCodingSchemeIdentification().addItem("99VIGIL", "",
                                                        "Vigil private codes", "Vigil"),
            "coding scheme");
    return 0;
}

int check_input(const Out &o, const vg_dicom_input_t *in, const vg_dicom_ref_t *seg,
                const char *out_path, vg_dicom_ref_t *out)
{
    if (!in || !in->vol || !in->res || !in->man || !in->source_path || !out_path || !out)
        return fail(o, -EINVAL, "missing argument", NULL);
    if (strcmp(in->res->status, "done") != 0)
        return fail(o, -EINVAL, "result not done", in->res->status);
    if (in->res->n_findings < 0 || in->res->n_findings > 65535) /* segment numbers: US */
        return fail(o, -EINVAL, "finding count out of range", NULL);
    if (in->res->n_findings > 0 && (!seg || !in->tracking_uids))
        return fail(o, -EINVAL, "findings without a segmentation or tracking UIDs", NULL);
    if (in->res->positive < 0 && in->res->patient_score < 0)
        return fail(o, -EINVAL, "result has no patient-level call", NULL);
    return 0;
}

int write_report(const Out &o, const vg_dicom_input_t *in, const vg_dicom_ref_t *seg,
                 const char *out_path, vg_dicom_ref_t *out)
{
    Source src;
    OFCondition c = src.ff.loadFile(in->source_path);
    if (c.bad())
        return fail(o, VG_EPARSE, in->source_path, c.text());
    DcmDataset &sds = *src.ff.getDataset();
    if (sds.findAndGetOFString(DCM_StudyInstanceUID, src.study).bad() ||
        src.study.empty() ||
        sds.findAndGetOFString(DCM_SeriesInstanceUID, src.series).bad() ||
        src.series.empty())
        return fail(o, VG_EPARSE, in->source_path, "no study or series UID");
    TID1500_MeasurementReport rep(CMR_CID7021(CMR_CID7021::ImagingMeasurementReport));
    DSRDocument doc(DSRTypes::DT_EnhancedSR);
    int rc;
    if ((rc = build_template(o, rep, in, seg, src)) < 0)
        return rc;
    DCM_TRY(o, doc.setTreeFromRootTemplate(rep), "document tree");
    if ((rc = finish_tree(o, doc, in)) < 0 || (rc = fill_header(o, doc, in, seg, src)) < 0)
        return rc;
    return save_report(o, doc, out_path, out);
}

} // namespace

extern "C" int vg_sr_write(const vg_dicom_input_t *in, const vg_dicom_ref_t *seg,
                           const char *out_path, vg_dicom_ref_t *out, char *err,
                           size_t errlen)
{
    Out o = {err, errlen};
    try {
        int rc = check_input(o, in, seg, out_path, out);
        if (rc < 0)
            return rc;
        return write_report(o, in, in->res->n_findings > 0 ? seg : NULL, out_path, out);
    } catch (const std::bad_alloc &) {
        return fail(o, -ENOMEM, "out of memory", NULL);
    } catch (const std::exception &e) {
        return fail(o, VG_EDCM, "report", e.what());
    } catch (...) {
        return fail(o, VG_EDCM, "report", "unexpected exception");
    }
}
