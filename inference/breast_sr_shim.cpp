/* DCMTK side of vg_breast_sr_write (dicom_out.h): the TID 1500
 * Measurement Report of one breast risk analysis, as an Enhanced SR
 * instance in a new series of the study whose mammography and ultrasound
 * images were used. One measurement group (TID 1501) per assessed breast;
 * the algorithm identification of each measurement, which dcmsr's TID 300
 * class cannot express, is added to the expanded tree afterwards. This
 * file decides nothing: every value comes from the result and the
 * manifest. Evidence files that cannot be read are left out of the
 * references; the report fails only when none can be read.
 *
 * Codes, and where each was verified (DICOM PS3.16 as held by pydicom's
 * concept dictionary and DCMTK's dcmsr/codes headers, SNOMED CT browsers):
 *   document title     (126000, DCM, "Imaging Measurement Report")  CID 7021
 *   language           (eng, RFC5646, "English")                     CID 5000
 *   procedure reported, one per modality among the evidence
 *                      (71651007, SCT, "Mammography")        CID 6058, 6060
 *                      (47079000, SCT, "Ultrasonography of breast")  CID 6050
 *                      (363679005, SCT, "Imaging procedure")  CID 100, when
 *                      the evidence holds neither modality
 *   per assessed breast (TID 1501, one group each):
 *     Tracking Identifier "breast L" / "breast R", a new Tracking UID
 *     Finding Site     (80248007, SCT, "Left breast") or
 *                      (73056007, SCT, "Right breast")          CID 6022
 *     malignancy       (111047, DCM, "Probability of cancer") {1}, the sum
 *                      of the malignant classes               CID 6048
 *     class T1..T5     (VG-T1 .. VG-T5, 99VIGIL) {1}   private: the classes
 *                      are the model's own disease-tree levels, no
 *                      standard concept exists
 *     BI-RADS          (111005, DCM, "Assessment Category") =
 *                      3  (397143007, SCT) Mammography assessment Cat. 3
 *                      4x (397144001, SCT) Mammography assessment Cat. 4
 *                      5  (397145000, SCT) Mammography assessment Cat. 5
 *                      Code meanings are the SNOMED CT descriptions without
 *                      "Mammography assessment", to fit LO (64 characters).
 *     4A / 4B / 4C     (VG-BRSUB, 99VIGIL, "BI-RADS subcategory") =
 *                      (VG-BR4A | VG-BR4B | VG-BR4C, 99VIGIL)   private:
 *                      neither DICOM nor SNOMED CT codes the subcategories;
 *                      the standard category 4 code stays beside it
 *     inputs           (VG-IMGIN, 99VIGIL, "Image inputs used") and
 *                      (VG-CLININ, 99VIGIL, "Clinical inputs used") as TEXT
 *     each NUM         TID 4019: (111001, DCM, "Algorithm Name") and
 *                      (111003, DCM, "Algorithm Version")
 *   report level (TID 1500 Row 14, (121106, DCM, "Comment")): the
 *                      not-for-clinical-use statement; with no assessed
 *                      breast, that none could be assessed and why.
 * Probabilities are unitless fractions in [0, 1]: UCUM "1", as the bone
 * report writes its probabilities. 99VIGIL is declared in the Coding
 * Scheme Identification Sequence. */
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
#include <unistd.h>

#include <memory>
#include <new>
#include <string>
#include <vector>

#include "inference/dicom_out_int.h"
#include "server/error.h"

#include "inference/sr_shim_int.h"

namespace
{

#define CODE_SCT_Mammography DSRBasicCodedEntry("71651007", "SCT", "Mammography")
#define CODE_SCT_BreastUS DSRBasicCodedEntry("47079000", "SCT", "Ultrasonography of breast")
#define CODE_SCT_LeftBreast DSRBasicCodedEntry("80248007", "SCT", "Left breast")
#define CODE_SCT_RightBreast DSRBasicCodedEntry("73056007", "SCT", "Right breast")
#define CODE_VG_BiradsSub DSRBasicCodedEntry("VG-BRSUB", "99VIGIL", "BI-RADS subcategory")
#define CODE_VG_ImageInputs DSRBasicCodedEntry("VG-IMGIN", "99VIGIL", "Image inputs used")
#define CODE_VG_ClinicalInputs                                                             \
    DSRBasicCodedEntry("VG-CLININ", "99VIGIL", "Clinical inputs used")
#define CODE_UCUM_NoUnits DSRBasicCodedEntry("1", "UCUM", "no units")

const char *const CLASS_MEANINGS[5] = {
    "Probability of risk class T1 (benign)",    "Probability of risk class T2 (benign)",
    "Probability of risk class T3 (malignant)", "Probability of risk class T4 (malignant)",
    "Probability of risk class T5 (malignant)",
};

/* A BI-RADS band as the result names it, its standard category and, for
 * the subcategories of 4, the private refinement. */
struct Birads {
    const char *band;
    const char *sct, *meaning;
    const char *sub, *sub_meaning; /* NULL: none */
};

const Birads BIRADS[] = {
    {"3", "397143007", "Category 3 - Probably benign finding", NULL, NULL},
    {"4A", "397144001", "Category 4 - Suspicious abnormality", "VG-BR4A",
     "Category 4A - Low suspicion for malignancy"},
    {"4B", "397144001", "Category 4 - Suspicious abnormality", "VG-BR4B",
     "Category 4B - Moderate suspicion for malignancy"},
    {"4C", "397144001", "Category 4 - Suspicious abnormality", "VG-BR4C",
     "Category 4C - High suspicion for malignancy"},
    {"5", "397145000", "Category 5 - Highly suggestive of malignancy", NULL, NULL},
};

const Birads *birads_of(const char *band)
{
    for (size_t i = 0; i < sizeof BIRADS / sizeof BIRADS[0]; i++)
        if (strcmp(BIRADS[i].band, band) == 0)
            return &BIRADS[i];
    return NULL;
}

/* One evidence file that could be read, and its identity. */
struct Evidence {
    std::unique_ptr<DcmFileFormat> ff;
    OFString study, series, sop_class, sop, modality, patient;
};

typedef std::vector<std::unique_ptr<Evidence>> EvidenceList;




OFString num(double v)
{
    char b[64];
    snprintf(b, sizeof b, "%.6f", v);
    return b;
}

DSRCodedEntryValue class_code(int t)
{
    char value[8];
    snprintf(value, sizeof value, "VG-T%d", t + 1);
    return DSRCodedEntryValue(value, "99VIGIL", CLASS_MEANINGS[t]);
}

/* Reads the header of each evidence file; the unreadable ones and those
 * without their UIDs are left out. Fails (VG_EPARSE) when none is left. */
int load_evidence(const Out &o, const char *const *paths, int n, EvidenceList &list)
{
    std::string first_bad, why;
    for (int i = 0; i < n; i++) {
        std::unique_ptr<Evidence> e(new Evidence);
        e->ff.reset(new DcmFileFormat);
        /* Values over 256 bytes (the pixels) stay on disk until read. */
        OFCondition c = e->ff->loadFile(paths[i], EXS_Unknown, EGL_noChange, 256);
        DcmDataset &ds = *e->ff->getDataset();
        bool ok =
            c.good() && ds.findAndGetOFString(DCM_StudyInstanceUID, e->study).good() &&
            ds.findAndGetOFString(DCM_SeriesInstanceUID, e->series).good() &&
            ds.findAndGetOFString(DCM_SOPClassUID, e->sop_class).good() &&
            ds.findAndGetOFString(DCM_SOPInstanceUID, e->sop).good() && !e->study.empty() &&
            !e->series.empty() && !e->sop_class.empty() && !e->sop.empty();
        if (!ok) {
            if (first_bad.empty()) {
                first_bad = paths[i];
                why = c.bad() ? c.text() : "no study, series or SOP instance UID";
            }
            continue;
        }
        ds.findAndGetOFString(DCM_Modality, e->modality);
        ds.findAndGetOFString(DCM_PatientID, e->patient);
        list.push_back(std::move(e));
    }
    if (list.empty())
        return fail(o, VG_EPARSE, first_bad.empty() ? "no evidence" : first_bad.c_str(),
                    why.empty() ? NULL : why.c_str());
    return 0;
}

bool has_modality(const EvidenceList &ev, const char *modality)
{
    for (const auto &e : ev)
        if (e->modality == modality)
            return true;
    return false;
}

/* The image library: one group, one entry per evidence file with the
 * descriptors TID 1602 takes from it (modality, laterality, view ...). */
int add_library(const Out &o, TID1500_MeasurementReport &rep, EvidenceList &ev)
{
    TID1600_ImageLibrary &lib = rep.getImageLibrary();
    if (!lib.hasImageLibrary()) /* TID 1500 includes it empty */
        DCM_TRY(o, lib.createNewImageLibrary(), "image library");
    DCM_TRY(o, lib.addImageGroup(), "image library group");
    for (auto &e : ev) {
        OFCondition c = lib.addImageEntry(*e->ff->getDataset(),
                                          TID1600_ImageLibrary::withAllDescriptors);
        if (c.bad() && c != CMR_EC_NoImageLibraryEntryDescriptorsToBeAdded)
            return fail(o, VG_EDCM, "image entry", c.text());
    }
    return 0;
}

/* The measurement group (TID 1501) of assessment A. */
int add_assessment(const Out &o, TID1500_MeasurementReport &rep, const vg_assessment_t *a)
{
    const Birads *b = birads_of(a->birads);
    DCM_TRY(o, rep.addIndividualMeasurements(), "measurement group");
    CMR_TID1501_in_TID1500 &g = rep.getIndividualMeasurements();
    bool left = a->laterality[0] == 'L';
    char id[16], uid[65];
    snprintf(id, sizeof id, "breast %s", left ? "L" : "R");
    vg_dicom_new_uid(uid);
    DCM_TRY(o, g.setTrackingIdentifier(id), "tracking identifier");
    DCM_TRY(o, g.setTrackingUniqueIdentifier(uid), "tracking UID");
    DCM_TRY(o, g.addFindingSite(left ? CODE_SCT_LeftBreast : CODE_SCT_RightBreast),
            "finding site");
    typedef CMR_TID1501_in_TID1500::MeasurementValue Value;
    CMR_CID7181 unit(CODE_UCUM_NoUnits);
    DCM_TRY(o,
            g.addMeasurement(CMR_CID7469(CODE_DCM_ProbabilityOfCancer),
                             Value(num(a->malignancy_probability), unit)),
            "malignancy probability");
    for (int t = 0; t < 5; t++)
        DCM_TRY(o,
                g.addMeasurement(CMR_CID7469(class_code(t)),
                                 Value(num(a->probabilities[t]), unit)),
                "class probability");
    DCM_TRY(o,
            g.addQualitativeEvaluation(CODE_DCM_AssessmentCategory,
                                       DSRCodedEntryValue(b->sct, "SCT", b->meaning)),
            "BI-RADS category");
    if (b->sub)
        DCM_TRY(
            o,
            g.addQualitativeEvaluation(
                CODE_VG_BiradsSub, DSRCodedEntryValue(b->sub, "99VIGIL", b->sub_meaning)),
            "BI-RADS subcategory");
    if (a->modalities_used[0])
        DCM_TRY(
            o,
            g.addQualitativeEvaluation(CODE_VG_ImageInputs, OFString(a->modalities_used)),
            "image inputs");
    if (a->clinical_used[0])
        DCM_TRY(
            o,
            g.addQualitativeEvaluation(CODE_VG_ClinicalInputs, OFString(a->clinical_used)),
            "clinical inputs");
    return 0;
}

/* The template part of the report: context, library, groups, comments. */
int build_template(const Out &o, TID1500_MeasurementReport &rep, const vg_manifest_t *man,
                   const vg_result_t *res, EvidenceList &ev)
{
    DCM_TRY(o, rep.setLanguage(CID5000_Languages(CID5000_Languages::English)), "language");
    DCM_TRY(o,
            rep.getObservationContext().addDeviceObserver(DEVICE_UID, "Vigil", "Vigil",
                                                          man->name),
            "observer context");
    bool mg = has_modality(ev, "MG"), us = has_modality(ev, "US");
    if (mg)
        DCM_TRY(o, rep.addProcedureReported(CMR_CID100(CODE_SCT_Mammography)),
                "procedure reported");
    if (us)
        DCM_TRY(o, rep.addProcedureReported(CMR_CID100(CODE_SCT_BreastUS)),
                "procedure reported");
    if (!mg && !us)
        DCM_TRY(o, rep.addProcedureReported(CMR_CID100(CMR_CID100::ImagingProcedure)),
                "procedure reported");
    int rc;
    if ((rc = add_library(o, rep, ev)) < 0)
        return rc;
    for (int i = 0; i < res->n_assessments; i++)
        if ((rc = add_assessment(o, rep, &res->assessments[i])) < 0)
            return rc;
    if (res->n_assessments == 0) {
        std::string why = "No breast could be assessed";
        if (res->reason[0])
            why = why + ": " + res->reason;
        DCM_TRY(o, rep.addQualitativeEvaluation(CODE_DCM_Comment, OFString(why.c_str())),
                "no-assessment statement");
    }
    if (man->not_for_clinical_use)
        DCM_TRY(o, rep.addQualitativeEvaluation(CODE_DCM_Comment, OFString(NOT_CLINICAL)),
                "not-for-clinical-use statement");
    if (!rep.isValid())
        return fail(o, VG_EDCM, "TID 1500 template incomplete", NULL);
    return 0;
}

bool is_own_measurement(const DSRCodedEntryValue &c)
{
    if (c == CODE_DCM_ProbabilityOfCancer)
        return true;
    for (int t = 0; t < 5; t++)
        if (c == class_code(t))
            return true;
    return false;
}

/* Adds a TEXT concept modifier below node PARENT. */
int add_modifier(const Out &o, DSRDocumentTree &tree, size_t parent,
                 const DSRCodedEntryValue &concept, const char *text)
{
    if (tree.gotoNode(parent) == 0)
        return fail(o, VG_EDCM, "algorithm identification", "measurement not found");
    DCM_TRY(
        o, tree.addChildContentItem(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, concept),
        "algorithm identification");
    DCM_TRY(o, tree.getCurrentContentItem().setStringValue(text),
            "algorithm identification");
    return 0;
}

/* What the template classes cannot do, on the expanded tree: the
 * algorithm identification (TID 4019) of each measurement, and, with no
 * assessment, no Imaging Measurements container (TID 1500 Row 6 holds at
 * least one group when present). */
int finish_tree(const Out &o, DSRDocument &doc, const vg_manifest_t *man,
                const vg_result_t *res)
{
    DSRDocumentTree &tree = doc.getTree();
    if (res->n_assessments == 0 && tree.gotoNamedNode(CODE_DCM_ImagingMeasurements) &&
        tree.removeCurrentContentItem() == 0)
        return fail(o, VG_EDCM, "removing the empty Imaging Measurements", NULL);
    std::vector<size_t> nums;
    if (tree.gotoRoot()) {
        do {
            DSRContentItem &item = tree.getCurrentContentItem();
            if (item.getValueType() == DSRTypes::VT_Num &&
                is_own_measurement(item.getConceptName()))
                nums.push_back(tree.getNodeID());
        } while (tree.iterate());
    }
    if (nums.size() != (size_t)res->n_assessments * 6)
        return fail(o, VG_EDCM, "measurements missing from the tree", NULL);
    int rc;
    for (size_t id : nums)
        if ((rc = add_modifier(o, tree, id, CODE_DCM_AlgorithmName, man->name)) < 0 ||
            (rc = add_modifier(o, tree, id, CODE_DCM_AlgorithmVersion, man->version)) < 0)
            return rc;
    return 0;
}


/* Header: patient and study from the first evidence file of the
 * result's own study (a group may span studies; the report belongs to the
 * one whose job it is), a new series, equipment, the evidence list, the
 * private coding scheme. Evidence of another patient is refused: a group
 * must never mix two people's images in one report. */
int fill_header(const Out &o, DSRDocument &doc, const vg_manifest_t *man,
                const vg_result_t *res, EvidenceList &ev)
{
    const Evidence *src = NULL;
    for (const auto &e : ev)
        if (e->study == res->study_uid) {
            src = e.get();
            break;
        }
    if (!src)
        return fail(o, VG_EPARSE, "no assessed image belongs to the report's study",
                    res->study_uid);
    for (const auto &e : ev)
        if (e->patient != src->patient) {
            char why[200];
            snprintf(why, sizeof why, "\"%.64s\" and \"%.64s\"", src->patient.c_str(),
                     e->patient.c_str());
            return fail(o, VG_EPARSE, "the images come from more than one patient ID", why);
        }
    DcmDataset &sds = *src->ff->getDataset();
    DCM_TRY(o, doc.readStudyData(sds), "patient and study attributes");
    OFString cs;
    if (sds.findAndGetOFStringArray(DCM_SpecificCharacterSet, cs).good() && !cs.empty())
        DCM_TRY(o, doc.setSpecificCharacterSet(cs), "specific character set");
    doc.createNewSeries();
    char n[16];
    snprintf(n, sizeof n, "%d", VG_BREAST_SR_SERIES_NUMBER);
    DCM_TRY(o, doc.setSeriesNumber(n), "series number");
    DCM_TRY(o, doc.setInstanceNumber("1"), "instance number");
    DCM_TRY(o, doc.setSeriesDescription(series_description(man)), "series description");
    DCM_TRY(o, doc.setManufacturer("Vigil"), "manufacturer");
    DCM_TRY(o, doc.setManufacturerModelName(man->name), "model name");
    DCM_TRY(o, doc.setSoftwareVersions(man->version), "software versions");
    for (const auto &e : ev)
        DCM_TRY(o,
                doc.getCurrentRequestedProcedureEvidence().addItem(e->study, e->series,
                                                                   e->sop_class, e->sop),
                "evidence");
    DCM_TRY(o,
            doc.getCodingSchemeIdentification().addItem("99VIGIL", "",
                                                        "Vigil private codes", "Vigil"),
            "coding scheme");
    return 0;
}

int check_input(const Out &o, const vg_manifest_t *man, const vg_result_t *res,
                const char *const *paths, int n, const char *out_path, vg_dicom_ref_t *out)
{
    if (!man || !res || (n > 0 && !paths) || !out_path || !out)
        return fail(o, -EINVAL, "missing argument", NULL);
    if (strcmp(res->status, "done") != 0 && strcmp(res->status, "not_analysable") != 0)
        return fail(o, -EINVAL, "result neither done nor not analysable", res->status);
    if (res->n_assessments < 0 || res->n_assessments > 2 ||
        (res->n_assessments > 0 && !res->assessments))
        return fail(o, -EINVAL, "assessment count out of range", NULL);
    for (int i = 0; i < res->n_assessments; i++) {
        const vg_assessment_t *a = &res->assessments[i];
        if (strcmp(a->laterality, "L") != 0 && strcmp(a->laterality, "R") != 0)
            return fail(o, -EINVAL, "laterality neither L nor R", a->laterality);
        if (i == 1 && strcmp(a->laterality, res->assessments[0].laterality) == 0)
            return fail(o, -EINVAL, "two assessments of one breast", a->laterality);
        if (!birads_of(a->birads))
            return fail(o, -EINVAL, "unknown BI-RADS band", a->birads);
        if (!isfinite(a->malignancy_probability))
            return fail(o, -EINVAL, "malignancy probability not finite", NULL);
        for (int t = 0; t < 5; t++)
            if (!isfinite(a->probabilities[t]))
                return fail(o, -EINVAL, "class probability not finite", NULL);
    }
    return 0;
}

int write_report(const Out &o, const vg_manifest_t *man, const vg_result_t *res,
                 const char *const *paths, int n, const char *out_path, vg_dicom_ref_t *out)
{
    EvidenceList ev;
    int rc;
    if ((rc = load_evidence(o, paths, n, ev)) < 0)
        return rc;
    TID1500_MeasurementReport rep(CMR_CID7021(CMR_CID7021::ImagingMeasurementReport));
    DSRDocument doc(DSRTypes::DT_EnhancedSR);
    if ((rc = build_template(o, rep, man, res, ev)) < 0)
        return rc;
    DCM_TRY(o, doc.setTreeFromRootTemplate(rep), "document tree");
    if ((rc = finish_tree(o, doc, man, res)) < 0 || (rc = fill_header(o, doc, man, res, ev)) < 0)
        return rc;
    return save_report(o, doc, out_path, out);
}

} // namespace

extern "C" int vg_breast_sr_write(const vg_manifest_t *man, const vg_result_t *res,
                                  const char *const *evidence_paths, int n_evidence,
                                  const char *out_path, vg_dicom_ref_t *out, char *err,
                                  size_t errlen)
{
    Out o = {err, errlen};
    int rc;
    try {
        rc = check_input(o, man, res, evidence_paths, n_evidence, out_path, out);
        if (rc == 0)
            rc = write_report(o, man, res, evidence_paths, n_evidence, out_path, out);
    } catch (const std::bad_alloc &) {
        rc = fail(o, -ENOMEM, "out of memory", NULL);
    } catch (const std::exception &e) {
        rc = fail(o, VG_EDCM, "report", e.what());
    } catch (...) {
        rc = fail(o, VG_EDCM, "report", "unexpected exception");
    }
    /* Nothing stays at the path: neither this attempt's file (renamed but
     * not made durable) nor an unqueued one of an earlier attempt. */
    if (rc < 0 && out_path)
        unlink(out_path);
    return rc;
}
