/* DCMTK side of vg_seg_write (dicom_out.h): the findings of one result as
 * a binary DICOM Segmentation through dcmseg. One segment per finding;
 * frames only on the source slices that hold part of a lesion, each
 * referencing its source CT instance and placed at that slice's position,
 * so that a viewer overlays them on the series without resampling. It does
 * not decide what is a lesion or where the file goes: the caller does. */
#include "inference/dicom_out.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmiod/iodreferences.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <new>
#include <set>
#include <string>

#include "inference/dicom_out_int.h"
#include "storage/store.h"
#include "server/error.h"

namespace
{

/* A failure on the way: the code vg_seg_write returns and its message. */
struct Fail {
    int rc;
    std::string msg;
};

void ok(const OFCondition &c, const std::string &what)
{
    if (c.bad())
        throw Fail{VG_EDCM, what + ": " + c.text()};
}

/* VALUE cut to MAX characters (LO holds 64). */
std::string clip(const std::string &value, size_t max = 64)
{
    return value.size() <= max ? value : value.substr(0, max);
}

/* A Decimal String: at most 16 characters, as precise as fits. */
std::string ds(double v)
{
    char b[40];
    for (int p = 12; p > 1; p--) {
        snprintf(b, sizeof b, "%.*g", p, v);
        if (strlen(b) <= 16)
            break;
    }
    return b;
}

const vg_class_t *find_class(const vg_manifest_t *m, const char *name)
{
    for (int i = 0; i < m->n_classes; i++)
        if (strcmp(m->classes[i].name, name) == 0)
            return &m->classes[i];
    return NULL;
}

/* "Vigil lesions <model> <version>", the warning kept whole when the
 * model's name must be cut to fit the 64 characters. */
std::string series_description(const vg_manifest_t *m)
{
    std::string tail = m->not_for_clinical_use ? ", not for clinical use" : "";
    std::string head = std::string("Vigil lesions ") + m->name + " " + m->version;
    return clip(head, 64 - tail.size()) + tail;
}

/* What the references need from the source file: the volume may not
 * carry the study and series UIDs (vg_volume_read leaves them empty). */
struct Source {
    std::string study, series;
};

/* Copies patient, study and frame of reference from IN's source file into
 * DOC and fills SRC; the file must be of the volume's study and series
 * where the volume knows them. */
void import_source(DcmSegmentation *doc, const vg_dicom_input_t *in, Source &src)
{
    DcmFileFormat ff;
    OFCondition c = ff.loadFile(in->source_path); /* large values stay on disk until read */
    if (c.good())
        c = doc->importFromSourceImage(*ff.getDataset(), OFTrue);
    if (c.bad())
        throw Fail{VG_EPARSE, std::string("reading ") + in->source_path + ": " + c.text()};
    OFString study, series;
    ff.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study);
    ff.getDataset()->findAndGetOFString(DCM_SeriesInstanceUID, series);
    if (study.empty() || series.empty())
        throw Fail{VG_EPARSE, std::string(in->source_path) + " has no study or series UID"};
    const vg_volume_t *v = in->vol;
    if ((v->study_uid[0] && study != v->study_uid) ||
        (v->series_uid[0] && series != v->series_uid))
        throw Fail{-EINVAL,
                   std::string(in->source_path) + " is not of the analysed series"};
    src.study = study.c_str();
    src.series = series.c_str();
}

/* The document with everything but segments and frames: patient, study
 * and frame of reference from the source file (SRC filled from it), a new
 * series, the equipment, the geometry every frame shares and the
 * dimensions. */
DcmSegmentation *create_doc(const vg_dicom_input_t *in, vg_dicom_ref_t *out, Source &src)
{
    const vg_manifest_t *m = in->man;
    const vg_volume_t *v = in->vol;
    char host[65] = "";
    if (gethostname(host, sizeof host - 1) < 0 || !host[0])
        snprintf(host, sizeof host, "unknown");
    IODGeneralEquipmentModule::EquipmentInfo eq("Vigil", clip(m->name), clip(host),
                                                clip(m->version));
    ContentIdentificationMacro ci("1", "LESIONS",
                                  clip(std::string("Lesions found by ") + m->name),
                                  "Vigil^"); /* PN: family name only */
    DcmSegmentation *raw = NULL;
    ok(DcmSegmentation::createBinarySegmentation(raw, (Uint16)v->ny, (Uint16)v->nx, eq, ci),
       "creating the segmentation");
    std::unique_ptr<DcmSegmentation> doc(raw);
    /* DCMTK 3.6.7 checks the dimensions before the per-frame groups are in
     * the dataset, so it only logs that it cannot; dciodvfy checks them. */
    doc->setCheckDimensionsOnWrite(OFFalse);
    import_source(doc.get(), in, src);

    vg_dicom_new_uid(out->series_uid);
    vg_dicom_new_uid(out->sop_uid);
    snprintf(out->sop_class_uid, sizeof out->sop_class_uid, "%s", UID_SegmentationStorage);
    ok(doc->getSeries().setSeriesInstanceUID(out->series_uid), "series UID");
    ok(doc->getSeries().setSeriesNumber(std::to_string(VG_SEG_SERIES_NUMBER).c_str()),
       "series number");
    ok(doc->getSeries().setSeriesDescription(series_description(m).c_str()),
       "series description");
    ok(doc->getSOPCommon().setSOPInstanceUID(out->sop_uid), "SOP instance UID");

    FGPlaneOrientationPatient orient;
    ok(orient.setImageOrientationPatient(ds(v->row_dir[0]), ds(v->row_dir[1]),
                                         ds(v->row_dir[2]), ds(v->col_dir[0]),
                                         ds(v->col_dir[1]), ds(v->col_dir[2])),
       "image orientation");
    ok(doc->addForAllFrames(orient), "shared orientation");
    FGPixelMeasures measures; /* PixelSpacing is row spacing \ column spacing */
    ok(measures.setPixelSpacing((ds(v->spacing[1]) + "\\" + ds(v->spacing[0])).c_str()),
       "pixel spacing");
    ok(measures.setSliceThickness(ds(v->spacing[2]).c_str()), "slice thickness");
    ok(measures.setSpacingBetweenSlices(ds(v->spacing[2]).c_str()),
       "spacing between slices");
    ok(doc->addForAllFrames(measures), "shared pixel measures");

    char org[65];
    vg_dicom_new_uid(org);
    IODMultiframeDimensionModule &dims = doc->getDimensions();
    ok(dims.addDimensionIndex(DCM_ReferencedSegmentNumber, org,
                              DCM_SegmentIdentificationSequence, "Segment"),
       "segment dimension");
    ok(dims.addDimensionIndex(DCM_ImagePositionPatient, org, DCM_PlanePositionSequence,
                              "Slice position"),
       "position dimension");
    return doc.release();
}

/* Segment N (1-based) for finding F: what it is, who found it, which
 * lesion it tracks. */
void add_segment(DcmSegmentation *doc, const vg_dicom_input_t *in, int n, Uint16 *segno)
{
    const vg_finding_t *f = &in->res->findings[n - 1];
    const vg_manifest_t *m = in->man;
    const vg_class_t *cls = find_class(m, f->type);
    if (!cls)
        throw Fail{-EINVAL, std::string("finding type ") + f->type + " is not a class of " +
                                m->name};
    std::string algo = clip(std::string(m->name) + " " + m->version);
    CodeSequenceMacro category("49755003", "SCT", "Morphologically abnormal structure");
    CodeSequenceMacro type(cls->code.value, cls->code.scheme, cls->code.meaning);
    DcmSegment *raw = NULL;
    ok(DcmSegment::create(raw, clip(f->type), category, type, DcmSegTypes::SAT_AUTOMATIC,
                          algo),
       "creating segment");
    std::unique_ptr<DcmSegment> seg(raw);
    if (cls->modifier.scheme[0])
        seg->getSegmentedPropertyTypeModifierCode().push_back(new CodeSequenceMacro(
            cls->modifier.value, cls->modifier.scheme, cls->modifier.meaning));
    ok(seg->getGeneralAnatomyCode().getAnatomicRegion().set("272673000", "SCT", "Bone"),
       "anatomic region");
    AlgorithmIdentificationMacro &id = seg->getSegmentationAlgorithmIdentification();
    ok(id.getAlgorithmFamilyCode().set("123110", "DCM", "Artificial Intelligence"),
       "algorithm family");
    ok(id.setAlgorithmName(clip(m->name)), "algorithm name");
    ok(id.setAlgorithmVersion(clip(m->version)), "algorithm version");
    char text[160];
    snprintf(text, sizeof text, "%s, probability %.2f, %.0f mm3", cls->code.meaning,
             f->probability, f->volume_mm3);
    ok(seg->setSegmentDescription(text), "segment description");
    ok(seg->setTrackingID(("lesion " + std::to_string(n)).c_str()), "tracking ID");
    ok(seg->setTrackingUID(in->tracking_uids[n - 1]), "tracking UID");
    ok(doc->addSegment(seg.get(), *segno), "adding segment");
    seg.release(); /* the document owns it now */
}

/* The frames of segment SEGNO (finding SEGNO-1); each slice it uses goes
 * into SLICES for the Common Instance Reference. Returns the count. */
int add_frames(DcmSegmentation *doc, const vg_dicom_input_t *in, Uint16 segno,
               std::set<int> &slices)
{
    unsigned char *frames = NULL;
    int *ks = NULL;
    int n = vg_finding_frames(in, segno - 1, &frames, &ks);
    if (n < 0)
        throw Fail{n, "mapping finding " + std::to_string(segno) + " onto the slices"};
    std::unique_ptr<unsigned char, void (*)(void *)> fr(frames, free);
    std::unique_ptr<int, void (*)(void *)> kr(ks, free);
    const vg_volume_t *v = in->vol;
    size_t plane = (size_t)v->nx * v->ny;
    for (int i = 0; i < n; i++) {
        int k = ks[i];
        OFVector<ImageSOPInstanceReferenceMacro> src(1);
        ok(src[0].setReferencedSOPClassUID(v->sop_class_uids[k]), "source SOP class");
        ok(src[0].setReferencedSOPInstanceUID(v->sop_uids[k]), "source SOP instance");
        std::unique_ptr<FGDerivationImage> deriv(DcmSegmentation::createDerivationImageFG(
            src, "Analysis-grid lesion mask sampled at the source pixels (nearest voxel)"));
        if (!deriv)
            throw Fail{VG_EDCM, "derivation image for slice " + std::to_string(k)};
        double p[3]; /* the source slice's own position, as it says it */
        if (v->positions)
            memcpy(p, v->positions[k], sizeof p);
        else
            vg_volume_to_patient(v, 0, 0, k, p);
        FGPlanePosPatient pos;
        ok(pos.setImagePositionPatient(ds(p[0]), ds(p[1]), ds(p[2])), "image position");
        FGFrameContent content;
        ok(content.setDimensionIndexValues(segno, 0), "segment index");
        ok(content.setDimensionIndexValues((Uint32)k + 1, 1), "position index");
        OFVector<FGBase *> groups;
        groups.push_back(deriv.get());
        groups.push_back(&pos);
        groups.push_back(&content);
        ok(doc->addFrame(frames + (size_t)i * plane, segno, groups), "adding frame");
        slices.insert(k);
    }
    return n;
}

/* The Referenced Series Sequence: every source instance a frame derives
 * from (PS3.3 C.12.2 asks for it when they are in the same study). */
void add_references(DcmSegmentation *doc, const vg_dicom_input_t *in, const Source &src,
                    const std::set<int> &slices)
{
    const vg_volume_t *v = in->vol;
    OFString patient;
    doc->getPatient().getPatientID(patient);
    IODReferences refs;
    for (int k : slices)
        if (!refs.add(new IODImageReference(patient, src.study.c_str(), src.series.c_str(),
                                            v->sop_uids[k], v->sop_class_uids[k])))
            throw Fail{VG_EDCM, "referencing slice " + std::to_string(k)};
    if (doc->getCommonInstanceReference().addReferences(refs, src.study.c_str()) !=
        slices.size())
        throw Fail{VG_EDCM, "referencing the source instances"};
}

/* Saves DOC as OUT_PATH.part and renames it to OUT_PATH. */
void save(DcmSegmentation *doc, const std::string &out_path)
{
    std::string tmp = out_path + ".part";
    int rc = vg__dicom_make_parent(out_path.c_str());
    if (rc < 0)
        throw Fail{rc, "creating the directory of " + out_path + ": " + strerror(-rc)};
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { /* the reason DCMTK's stream error would not give */
        int e = errno;
        throw Fail{-e, "creating " + tmp + ": " + strerror(e)};
    }
    close(fd);
    OFCondition c = doc->saveFile(tmp.c_str(), EXS_LittleEndianExplicit);
    if (c.bad()) {
        unlink(tmp.c_str());
        throw Fail{VG_EDCM, "writing " + tmp + ": " + c.text()};
    }
    rc = vg__dicom_commit(tmp.c_str(), out_path.c_str());
    if (rc < 0)
        throw Fail{rc, "placing " + out_path + ": " + strerror(-rc)};
}

} // namespace

extern "C" int vg_seg_write(const vg_dicom_input_t *in, const char *out_path,
                            vg_dicom_ref_t *out, char *err, size_t errlen)
{
    vg_dicom_ref_t ref;
    memset(&ref, 0, sizeof ref);
    memset(out, 0, sizeof *out);
    try {
        if (in->res->n_findings < 1)
            throw Fail{-EINVAL, "no findings: a segmentation needs at least one"};
        if (in->res->n_findings > 65535)
            throw Fail{-EINVAL, "more findings than a segmentation has segment numbers"};
        Source src;
        std::unique_ptr<DcmSegmentation> doc(create_doc(in, &ref, src));
        std::set<int> slices;
        int frames = 0;
        for (int n = 1; n <= in->res->n_findings; n++) {
            Uint16 segno = 0;
            add_segment(doc.get(), in, n, &segno);
            if (segno != n)
                throw Fail{VG_EDCM, "segment " + std::to_string(n) + " numbered " +
                                        std::to_string(segno)};
            frames += add_frames(doc.get(), in, segno, slices);
        }
        if (frames == 0)
            throw Fail{-EINVAL, "no finding covers a pixel of the source slices"};
        add_references(doc.get(), in, src, slices);
        save(doc.get(), out_path);
        *out = ref;
        return 0;
    } catch (const Fail &f) {
        snprintf(err, errlen, "segmentation: %s", f.msg.c_str());
        return f.rc;
    } catch (const std::bad_alloc &) {
        snprintf(err, errlen, "segmentation: out of memory");
        return -ENOMEM;
    } catch (const std::exception &e) {
        snprintf(err, errlen, "segmentation: %s", e.what());
        return VG_EDCM;
    } catch (...) {
        snprintf(err, errlen, "segmentation: unexpected exception");
        return VG_EDCM;
    }
}
