/* DCMTK side of volume.h: reads slice headers, leaves out what is not an
 * axial image of the volume (localizers, secondary captures, images
 * without geometry), checks that the rest forms a regular grid, then
 * decodes each slice (decompressing as needed) into Hounsfield units. */
#include "inference/volume.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "server/error.h"

namespace {

struct Slice {
    std::string path, sop, sop_class, study, series, frame_of_reference;
    double pos[3], iop[6], pixel[2];
    double dist;                 /* position along the normal */
    int rows, cols;
};

std::once_flag codecs_once;

void register_codecs()
{
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
}

bool get_doubles(DcmItem *ds, const DcmTagKey &tag, double *v, int n)
{
    for (int i = 0; i < n; i++) {
        Float64 x;
        if (ds->findAndGetFloat64(tag, x, (unsigned long)i).bad())
            return false;
        v[i] = x;
    }
    return true;
}

/* Why an instance is not a slice of the volume, or NULL if it is. */
const char *not_a_slice(DcmItem *ds)
{
    OFString type, sop;
    ds->findAndGetOFStringArray(DCM_ImageType, type);
    ds->findAndGetOFString(DCM_SOPClassUID, sop);
    if (type.find("LOCALIZER") != OFString_npos)
        return "localizer";
    if (sop == UID_SecondaryCaptureImageStorage || type.find("SECONDARY") != OFString_npos)
        return "secondary image";
    if (sop != UID_CTImageStorage)
        return "not a CT image";
    Sint32 frames = 1;
    ds->findAndGetSint32(DCM_NumberOfFrames, frames);
    if (frames > 1)
        return "multi-frame";
    return NULL;
}

void cross(const double *a, const double *b, double *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

int read_headers(const char *const *paths, int n, std::vector<Slice> &slices,
                 int *skipped, char *reason, size_t len)
{
    for (int i = 0; i < n; i++) {
        DcmFileFormat ff;
        if (ff.loadFile(paths[i], EXS_Unknown, EGL_noChange, 256).bad()) {
            snprintf(reason, len, "cannot read %s", paths[i]);
            return VG_EPARSE;
        }
        DcmDataset *ds = ff.getDataset();
        Slice s;
        Uint16 rows = 0, cols = 0;
        if (not_a_slice(ds) || !get_doubles(ds, DCM_ImagePositionPatient, s.pos, 3) ||
            !get_doubles(ds, DCM_ImageOrientationPatient, s.iop, 6) ||
            !get_doubles(ds, DCM_PixelSpacing, s.pixel, 2) ||
            ds->findAndGetUint16(DCM_Rows, rows).bad() ||
            ds->findAndGetUint16(DCM_Columns, cols).bad()) {
            (*skipped)++;
            continue;
        }
        OFString v;
        s.path = paths[i];
        ds->findAndGetOFString(DCM_SOPInstanceUID, v);
        s.sop = v.c_str();
        ds->findAndGetOFString(DCM_SOPClassUID, v);
        s.sop_class = v.c_str();
        ds->findAndGetOFString(DCM_StudyInstanceUID, v);
        s.study = v.c_str();
        ds->findAndGetOFString(DCM_SeriesInstanceUID, v);
        s.series = v.c_str();
        ds->findAndGetOFString(DCM_FrameOfReferenceUID, v);
        s.frame_of_reference = v.c_str();
        s.rows = rows;
        s.cols = cols;
        slices.push_back(s);
    }
    return 0;
}

/* Checks that the slices share orientation and size, are perpendicular to
 * their normal (no gantry tilt), and are evenly spaced with no gap. */
int check_grid(std::vector<Slice> &sl, double normal[3], double *dz, char *reason,
               size_t len)
{
    if (sl.size() < 3) {
        snprintf(reason, len, "only %zu axial slices", sl.size());
        return VG_ENOTANALYSABLE;
    }
    const Slice &a = sl[0];
    for (const Slice &s : sl) {
        for (int k = 0; k < 6; k++)
            if (fabs(s.iop[k] - a.iop[k]) > 1e-3) {
                snprintf(reason, len, "mixed orientation within the series");
                return VG_ENOTANALYSABLE;
            }
        if (s.rows != a.rows || s.cols != a.cols || fabs(s.pixel[0] - a.pixel[0]) > 1e-4 ||
            fabs(s.pixel[1] - a.pixel[1]) > 1e-4) {
            snprintf(reason, len, "slices differ in size or pixel spacing");
            return VG_ENOTANALYSABLE;
        }
    }
    cross(a.iop, a.iop + 3, normal);
    for (Slice &s : sl)
        s.dist = s.pos[0] * normal[0] + s.pos[1] * normal[1] + s.pos[2] * normal[2];
    std::sort(sl.begin(), sl.end(), [](const Slice &x, const Slice &y) { return x.dist < y.dist; });
    std::vector<double> gaps;
    for (size_t i = 1; i < sl.size(); i++)
        gaps.push_back(sl[i].dist - sl[i - 1].dist);
    std::vector<double> sorted = gaps;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    double med = sorted[sorted.size() / 2];
    if (med < 1e-3) {
        snprintf(reason, len, "several slices at the same position");
        return VG_ENOTANALYSABLE;
    }
    for (size_t i = 0; i < gaps.size(); i++) {
        /* In-plane drift between neighbours means the slices are not
         * stacked along their normal: a tilted gantry. */
        double d[3], along = 0, drift = 0;
        for (int k = 0; k < 3; k++)
            d[k] = sl[i + 1].pos[k] - sl[i].pos[k];
        for (int k = 0; k < 3; k++)
            along += d[k] * normal[k];
        for (int k = 0; k < 3; k++)
            drift += (d[k] - along * normal[k]) * (d[k] - along * normal[k]);
        double tilt = atan2(sqrt(drift), fabs(along)) * 180.0 / M_PI;
        if (tilt > 0.5) {
            snprintf(reason, len, "gantry tilt of %.1f degrees", tilt);
            return VG_ENOTANALYSABLE;
        }
        if (gaps[i] < 1e-3) {
            snprintf(reason, len, "two slices at the same position (%.2f mm)", sl[i].dist);
            return VG_ENOTANALYSABLE;
        }
        if (fabs(gaps[i] - med) > 0.1 * med) {
            double k = gaps[i] / med;
            if (k > 1.5 && fabs(k - floor(k + 0.5)) < 0.15)
                snprintf(reason, len, "missing slices: %d missing between %.2f and %.2f mm",
                         (int)floor(k + 0.5) - 1, sl[i].dist, sl[i + 1].dist);
            else
                snprintf(reason, len, "uneven slice spacing: %.3f mm where most are %.3f mm",
                         gaps[i], med);
            return VG_ENOTANALYSABLE;
        }
    }
    *dz = (sl.back().dist - sl.front().dist) / (double)(sl.size() - 1);
    return 0;
}

/* Decodes one slice into OUT (rows * cols HU values). */
int decode_slice(const Slice &s, float *out, char *reason, size_t len)
{
    DcmFileFormat ff;
    if (ff.loadFile(s.path.c_str()).bad()) {
        snprintf(reason, len, "cannot read %s", s.path.c_str());
        return VG_EPARSE;
    }
    DcmDataset *ds = ff.getDataset();
    if (ds->chooseRepresentation(EXS_LittleEndianExplicit, NULL).bad() ||
        !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
        snprintf(reason, len, "cannot decode pixel data of %s", s.sop.c_str());
        return VG_EPARSE;
    }
    Uint16 alloc = 0, stored = 0, repr = 0, spp = 1;
    ds->findAndGetUint16(DCM_BitsAllocated, alloc);
    ds->findAndGetUint16(DCM_BitsStored, stored);
    ds->findAndGetUint16(DCM_PixelRepresentation, repr);
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    /* DCMTK sets the value to 0 when the attribute is absent: keep the
     * identity then (a slope of 0 would flatten the series). */
    Float64 slope = 1, intercept = 0, given;
    if (ds->findAndGetFloat64(DCM_RescaleSlope, given).good() && given != 0)
        slope = given;
    if (ds->findAndGetFloat64(DCM_RescaleIntercept, given).good())
        intercept = given;
    const Uint16 *px = NULL;
    unsigned long count = 0;
    size_t need = (size_t)s.rows * s.cols;
    if (alloc != 16 || spp != 1 || stored == 0 || stored > 16 ||
        ds->findAndGetUint16Array(DCM_PixelData, px, &count).bad() || count < need) {
        snprintf(reason, len, "unsupported pixel data in %s (%u bits, %u samples)",
                 s.sop.c_str(), alloc, spp);
        return VG_EPARSE;
    }
    const unsigned mask = stored == 16 ? 0xFFFFu : ((1u << stored) - 1u);
    const unsigned sign = 1u << (stored - 1);
    for (size_t i = 0; i < need; i++) {
        unsigned raw = px[i] & mask;
        int v = (repr == 1 && (raw & sign)) ? (int)raw - (int)(mask + 1) : (int)raw;
        out[i] = (float)(v * slope + intercept);
    }
    return 0;
}

} // namespace

extern "C" int vg_volume_read(const char *const *paths, int n, vg_volume_t **out,
                              char *reason, size_t len)
{
    *out = NULL;
    vg_volume_t *v = NULL;
    try {
        std::call_once(codecs_once, register_codecs);
        std::vector<Slice> sl;
        int skipped = 0;
        double normal[3], dz = 0;
        int rc = read_headers(paths, n, sl, &skipped, reason, len);
        if (rc == 0)
            rc = check_grid(sl, normal, &dz, reason, len);
        if (rc < 0)
            return rc;
        size_t plane = (size_t)sl[0].rows * sl[0].cols;
        v = (vg_volume_t *)calloc(1, sizeof *v);
        if (v) {
            v->hu = (float *)malloc(plane * sl.size() * sizeof(float));
            v->sop_uids = (char(*)[65])calloc(sl.size(), 65);
            v->sop_class_uids = (char(*)[65])calloc(sl.size(), 65);
            v->positions = (double(*)[3])calloc(sl.size(), sizeof *v->positions);
        }
        if (!v || !v->hu || !v->sop_uids || !v->sop_class_uids || !v->positions) {
            snprintf(reason, len, "out of memory for %zu slices", sl.size());
            vg_volume_destroy(v);
            return -12;
        }
        v->nx = sl[0].cols;
        v->ny = sl[0].rows;
        v->nz = (int)sl.size();
        v->spacing[0] = sl[0].pixel[1]; /* PixelSpacing is row\column spacing */
        v->spacing[1] = sl[0].pixel[0];
        v->spacing[2] = dz;
        for (int k = 0; k < 3; k++) {
            v->origin[k] = sl[0].pos[k];
            v->row_dir[k] = sl[0].iop[k];
            v->col_dir[k] = sl[0].iop[3 + k];
            v->normal[k] = normal[k];
        }
        v->skipped = skipped;
        snprintf(v->study_uid, sizeof v->study_uid, "%s", sl[0].study.c_str());
        snprintf(v->series_uid, sizeof v->series_uid, "%s", sl[0].series.c_str());
        snprintf(v->frame_of_reference_uid, sizeof v->frame_of_reference_uid, "%s",
                 sl[0].frame_of_reference.c_str());
        for (size_t z = 0; z < sl.size(); z++) {
            snprintf(v->sop_uids[z], 65, "%s", sl[z].sop.c_str());
            snprintf(v->sop_class_uids[z], 65, "%s", sl[z].sop_class.c_str());
            memcpy(v->positions[z], sl[z].pos, sizeof v->positions[z]);
            if ((rc = decode_slice(sl[z], v->hu + z * plane, reason, len)) < 0) {
                vg_volume_destroy(v);
                return rc;
            }
        }
        *out = v;
        return 0;
    } catch (...) {
        snprintf(reason, len, "unexpected exception while reading the series");
        vg_volume_destroy(v);
        return VG_EPARSE;
    }
}

extern "C" void vg_volume_destroy(vg_volume_t *v)
{
    if (!v)
        return;
    free(v->hu);
    free(v->sop_uids);
    free(v->sop_class_uids);
    free(v->positions);
    free(v);
}

extern "C" void vg_volume_to_patient(const vg_volume_t *v, double i, double j, double k,
                                     double out[3])
{
    for (int a = 0; a < 3; a++)
        out[a] = v->origin[a] + i * v->spacing[0] * v->row_dir[a] +
                 j * v->spacing[1] * v->col_dir[a] + k * v->spacing[2] * v->normal[a];
}
