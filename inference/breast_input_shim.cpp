/* DCMTK side of breast_input.h: classifies MG and US files from their
 * headers and renders their pixels for the breast model. The rendering
 * follows the breast contract to the letter (the training side mirrors
 * it), so it is done here on the raw values, not with DicomImage, whose
 * output is quantised and whose colour conversion differs. */
#include "inference/breast_input.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "server/error.h"

namespace
{

const char *const MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2";
const char *const MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1";
const char *const US_SINGLE = "1.2.840.10008.5.1.4.1.1.6.1";
const char *const US_MULTI = "1.2.840.10008.5.1.4.1.1.3.1";
const char *const US_SINGLE_RETIRED = "1.2.840.10008.5.1.4.1.1.6";
const char *const US_MULTI_RETIRED = "1.2.840.10008.5.1.4.1.1.3";

std::once_flag codecs_once;

/* DCMTK keeps one registry per process; volume_shim.cpp may have
 * registered already, and registering twice is harmless. */
void register_codecs()
{
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
}

std::string str(DcmItem *ds, const DcmTagKey &tag, long pos = 0)
{
    OFString v;
    if (pos < 0)
        ds->findAndGetOFStringArray(tag, v);
    else
        ds->findAndGetOFString(tag, v, (unsigned long)pos);
    std::string s = v.c_str();
    while (!s.empty() && isspace((unsigned char)s.back()))
        s.pop_back();
    size_t b = 0;
    while (b < s.size() && isspace((unsigned char)s[b]))
        b++;
    return s.substr(b);
}

std::string upper(std::string s)
{
    for (char &c : s)
        c = (char)toupper((unsigned char)c);
    return s;
}

bool contains_any(const std::string &s, std::initializer_list<const char *> words)
{
    std::string u = upper(s);
    for (const char *w : words)
        if (u.find(w) != std::string::npos)
            return true;
    return false;
}

/* Colour flow or spectral Doppler: the colour flag or a region of that
 * data type (2 colour flow, 3 PW, 4 CW). */
bool is_doppler(DcmItem *ds)
{
    Uint16 colour = 0;
    if (ds->findAndGetUint16(DCM_UltrasoundColorDataPresent, colour).good() && colour == 1)
        return true;
    DcmItem *region = NULL;
    for (unsigned long i = 0;
         ds->findAndGetSequenceItem(DCM_SequenceOfUltrasoundRegions, region, (int)i).good();
         i++) {
        Uint16 type = 0;
        if (region->findAndGetUint16(DCM_RegionDataType, type).good() && type >= 2 &&
            type <= 4)
            return true;
    }
    return false;
}

int classify(DcmItem *ds, vg_breast_image_t *img, char *note, size_t len)
{
    std::string sop = str(ds, DCM_SOPClassUID), modality = upper(str(ds, DCM_Modality));
    /* Mammograms also come as CR or DX objects with modality MG; a
     * secondary capture (a screenshot, a worksheet) is never an image the
     * model was trained on, whatever its modality says. */
    bool projection = sop == UID_ComputedRadiographyImageStorage ||
                      sop == UID_DigitalXRayImageStorageForPresentation ||
                      sop == UID_DigitalXRayImageStorageForProcessing;
    bool mg =
        sop == MG_PRESENTATION || sop == MG_PROCESSING || (modality == "MG" && projection);
    bool us = sop == US_SINGLE || sop == US_MULTI || sop == US_SINGLE_RETIRED ||
              sop == US_MULTI_RETIRED;
    if (!ds->tagExists(DCM_PixelData) || (!mg && !us)) {
        if (modality == "MG" || modality == "US")
            snprintf(note, len,
                     "%s object of SOP class %.64s is not an image the model reads",
                     modality.c_str(), sop.c_str());
        else
            snprintf(note, len, "not a mammogram or ultrasound image (modality %.16s)",
                     modality.empty() ? "none" : modality.c_str());
        return VG_ENOTANALYSABLE;
    }
    std::string lat = upper(str(ds, DCM_ImageLaterality));
    if (lat.empty())
        lat = upper(str(ds, DCM_Laterality));
    img->laterality = lat == "L" || lat == "R" ? lat[0] : 0;
    if (us) {
        img->kind = VG_BREAST_US;
        std::string text = str(ds, DCM_SeriesDescription) + "|" +
                           str(ds, DCM_ImageComments) + "|" + str(ds, DCM_ProtocolName);
        img->us_mode = contains_any(text, {"ELAST", "SWE", "STRAIN"}) ? VG_US_ELASTO
                       : is_doppler(ds)                               ? VG_US_DOPPLER
                                                                      : VG_US_BMODE;
        return 0;
    }
    img->kind = VG_BREAST_MG;
    img->for_processing = sop == MG_PROCESSING ||
                          sop == UID_DigitalXRayImageStorageForProcessing ||
                          upper(str(ds, DCM_PresentationIntentType)) == "FOR PROCESSING";
    std::string view = upper(str(ds, DCM_ViewPosition));
    img->view = view == "CC" ? VG_MG_CC : view == "MLO" ? VG_MG_MLO : -1;
    /* ViewPosition is optional in the mammography IOD; the View Code
     * Sequence is required: SCT 399162004 cranio-caudal, 399368009
     * medio-lateral oblique (SRT R-10242, R-10226 in older files). */
    DcmItem *vc = NULL;
    OFString code;
    if (view.empty() && ds->findAndGetSequenceItem(DCM_ViewCodeSequence, vc, 0).good() && vc &&
        vc->findAndGetOFString(DCM_CodeValue, code).good()) {
        if (code == "399162004" || code == "R-10242")
            img->view = VG_MG_CC;
        else if (code == "399368009" || code == "R-10226")
            img->view = VG_MG_MLO;
        view = std::string("code ") + code.c_str();
    }
    if (img->frames > 1) {
        snprintf(note, len, "multi-frame mammography (tomosynthesis) is not used");
        return VG_ENOTANALYSABLE;
    }
    if (img->view < 0) {
        snprintf(note, len, "mammography view '%.16s' is not CC or MLO",
                 view.empty() ? "none" : view.c_str());
        return VG_ENOTANALYSABLE;
    }
    if (!img->laterality) {
        snprintf(note, len, "mammogram without laterality L or R");
        return VG_ENOTANALYSABLE;
    }
    return 0;
}

void patient_values(DcmItem *ds, vg_breast_image_t *img)
{
    std::string age = str(ds, DCM_PatientAge), study = str(ds, DCM_StudyDate),
                birth = str(ds, DCM_PatientBirthDate);
    img->has_age = vg_breast_age(age.c_str(), study.c_str(), birth.c_str(), &img->age);
    Float64 weight = 0, size = 0;
    ds->findAndGetFloat64(DCM_PatientWeight, weight);
    ds->findAndGetFloat64(DCM_PatientSize, size);
    img->has_bmi = vg_breast_bmi(weight, size, &img->bmi);
}

/* The decoded pixel values of one frame as doubles, samples interleaved. */
struct Pixels {
    int rows = 0, cols = 0, spp = 1;
    int stored = 8; /* bits stored */
    std::string photometric;
    std::vector<float> v; /* rows * cols * spp, interleaved */
};

int decode_frame(DcmDataset *ds, const vg_breast_image_t *img, Pixels &p, char *err,
                 size_t len)
{
    if (ds->chooseRepresentation(EXS_LittleEndianExplicit, NULL).bad() ||
        !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
        snprintf(err, len, "cannot decode the pixel data of %s", img->sop_uid);
        return VG_EPARSE;
    }
    Uint16 rows = 0, cols = 0, alloc = 0, stored = 0, repr = 0, spp = 1, planar = 0;
    ds->findAndGetUint16(DCM_Rows, rows);
    ds->findAndGetUint16(DCM_Columns, cols);
    ds->findAndGetUint16(DCM_BitsAllocated, alloc);
    ds->findAndGetUint16(DCM_BitsStored, stored);
    ds->findAndGetUint16(DCM_PixelRepresentation, repr);
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad())
        spp = 1;
    ds->findAndGetUint16(DCM_PlanarConfiguration, planar);
    p.photometric = upper(str(ds, DCM_PhotometricInterpretation));
    p.stored = stored;
    if (p.photometric == "PALETTE COLOR") {
        /* Indices into a colour table, not intensities. */
        snprintf(err, len, "palette colour pixel data in %s is not read", img->sop_uid);
        return VG_EPARSE;
    }
    Sint32 frames = 1;
    ds->findAndGetSint32(DCM_NumberOfFrames, frames);
    if (frames < 1)
        frames = 1;
    /* YBR_FULL_422 uncompressed: two luminance samples share one pair of
     * chroma samples, four values per two pixels. */
    bool sub422 = p.photometric == "YBR_FULL_422" && spp == 3;
    size_t plane = (size_t)rows * cols;
    size_t per_frame = sub422 ? plane * 2 : plane * spp;
    if (rows == 0 || cols == 0 || (alloc != 8 && alloc != 16) || (spp != 1 && spp != 3) ||
        stored == 0 || stored > alloc || (sub422 && cols % 2)) {
        snprintf(err, len, "unsupported pixel data in %s (%u bits, %u samples)",
                 img->sop_uid, alloc, spp);
        return VG_EPARSE;
    }
    DcmElement *el = NULL;
    Uint8 *bytes = NULL;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || el->getUint8Array(bytes).bad() ||
        !bytes || el->getLength() < per_frame * (alloc / 8) * (size_t)frames) {
        snprintf(err, len, "pixel data of %s is missing or short", img->sop_uid);
        return VG_EPARSE;
    }
    size_t first = per_frame * (size_t)(frames / 2);
    const unsigned mask = stored == 16 ? 0xFFFFu : ((1u << stored) - 1u);
    const unsigned sign = 1u << (stored - 1);
    p.rows = rows;
    p.cols = cols;
    p.spp = spp;
    p.v.resize(plane * spp);
    std::vector<float> raw(per_frame);
    for (size_t i = 0; i < per_frame; i++) {
        unsigned x = alloc == 8
                         ? bytes[first + i]
                         : (unsigned)((const Uint16 *)(const void *)bytes)[first + i];
        x &= mask;
        raw[i] = (repr == 1 && (x & sign)) ? (float)((int)x - (int)(mask + 1)) : (float)x;
    }
    if (sub422) {
        for (size_t px = 0; px < plane; px += 2) {
            const float *q = &raw[px * 2]; /* Y1 Y2 Cb Cr */
            float *o = &p.v[px * 3];
            o[0] = q[0], o[1] = q[2], o[2] = q[3];
            o[3] = q[1], o[4] = q[2], o[5] = q[3];
        }
        p.photometric = "YBR_FULL";
    } else if (spp == 3 && planar == 1) {
        for (size_t px = 0; px < plane; px++)
            for (int c = 0; c < 3; c++)
                p.v[px * 3 + c] = raw[c * plane + px];
    } else {
        p.v.swap(raw);
    }
    return 0;
}

/* MG to [0,1] in place (one channel), then mirrored where the nipple
 * points left. */
void render_mg(DcmDataset *ds, const vg_breast_image_t *img, Pixels &p)
{
    /* DCMTK zeroes the value of an attribute it does not find. */
    Float64 slope = 1, intercept = 0, centre = 0, width = 0;
    if (ds->findAndGetFloat64(DCM_RescaleSlope, slope).bad() || slope == 0)
        slope = 1;
    if (ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).bad())
        intercept = 0;
    bool window = ds->findAndGetFloat64(DCM_WindowCenter, centre, 0).good() &&
                  ds->findAndGetFloat64(DCM_WindowWidth, width, 0).good() && width >= 1;
    for (float &x : p.v)
        x = (float)(x * slope + intercept);
    if (window) {
        double c0 = centre - 0.5, w1 = width - 1 > 0 ? width - 1 : 1;
        for (float &x : p.v) {
            double y = (x - c0) / w1 + 0.5;
            x = (float)(y < 0 ? 0 : y > 1 ? 1 : y);
        }
    } else {
        auto mm = std::minmax_element(p.v.begin(), p.v.end());
        double lo = *mm.first, range = *mm.second - lo;
        for (float &x : p.v)
            x = range > 0 ? (float)((x - lo) / range) : 0.0f;
    }
    if (p.photometric == "MONOCHROME1")
        for (float &x : p.v)
            x = 1.0f - x;
    std::string orient = upper(str(ds, DCM_PatientOrientation, 0));
    bool flip = orient.empty() ? img->laterality == 'R' : orient[0] == 'P';
    if (flip)
        for (int r = 0; r < p.rows; r++)
            std::reverse(p.v.begin() + (size_t)r * p.cols,
                         p.v.begin() + (size_t)(r + 1) * p.cols);
}

/* US to channel-major RGB in [0,1]. */
void render_us(Pixels &p, std::vector<float> &out)
{
    size_t plane = (size_t)p.rows * p.cols;
    out.resize(plane * 3);
    bool ybr = p.photometric.compare(0, 3, "YBR") == 0;
    bool inverted = p.photometric == "MONOCHROME1";
    /* Grey ultrasound is 8-bit as a rule; a deeper one is scaled to it. */
    double grey = p.spp == 1 && p.stored > 8 ? 255.0 / ((1 << p.stored) - 1) : 1.0;
    for (size_t i = 0; i < plane; i++) {
        double r, g, b;
        if (p.spp == 1) {
            r = g = b = inverted ? 255.0 - p.v[i] * grey : p.v[i] * grey;
        } else if (ybr) { /* full-range YCbCr (JPEG/JFIF) */
            double y = p.v[3 * i], cb = p.v[3 * i + 1] - 128.0, cr = p.v[3 * i + 2] - 128.0;
            r = y + 1.402 * cr;
            g = y - 0.344136 * cb - 0.714136 * cr;
            b = y + 1.772 * cb;
        } else {
            r = p.v[3 * i], g = p.v[3 * i + 1], b = p.v[3 * i + 2];
        }
        double rgb[3] = {r, g, b};
        for (int c = 0; c < 3; c++) {
            double v = rgb[c] / 255.0;
            out[c * plane + i] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
        }
    }
}

/* A DICOM file (Part 10: "DICM" after the 128-byte preamble). Anything
 * else in a study folder (reports, thumbnails, our own notes) is not
 * handed to the parser, which would guess at it and log the guesses. */
bool has_preamble(const char *path)
{
    FILE *f = fopen(path, "rb");
    char head[132];
    bool ok = f && fread(head, 1, sizeof head, f) == sizeof head &&
              memcmp(head + 128, "DICM", 4) == 0;
    if (f)
        fclose(f);
    return ok;
}

} // namespace

extern "C" int vg_breast_image_read(const char *path, vg_breast_image_t *img, char *note,
                                    size_t notelen)
{
    memset(img, 0, sizeof *img);
    img->path = path;
    img->frames = 1;
    try {
        DcmFileFormat ff;
        if (!has_preamble(path) ||
            ff.loadFile(path, EXS_Unknown, EGL_noChange, 256).bad()) {
            snprintf(note, notelen, "cannot be read as DICOM");
            return VG_EPARSE;
        }
        DcmDataset *ds = ff.getDataset();
        Sint32 frames = 1, number = 0;
        if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).good() && frames > 1)
            img->frames = frames;
        ds->findAndGetSint32(DCM_InstanceNumber, number);
        img->instance_number = number;
        snprintf(img->sop_uid, sizeof img->sop_uid, "%s",
                 str(ds, DCM_SOPInstanceUID).c_str());
        snprintf(img->study_uid, sizeof img->study_uid, "%s",
                 str(ds, DCM_StudyInstanceUID).c_str());
        int rc = classify(ds, img, note, notelen);
        if (rc == 0) {
            Float64 w = 0;
            img->has_window = img->kind == VG_BREAST_MG &&
                              ds->findAndGetFloat64(DCM_WindowWidth, w, 0).good() && w >= 1;
            patient_values(ds, img);
        }
        return rc;
    } catch (...) {
        snprintf(note, notelen, "unexpected exception while reading the header");
        return VG_EPARSE;
    }
}

extern "C" int vg_breast_image_render(const vg_breast_image_t *img, int h, int w,
                                      float *out, char *err, size_t errlen)
{
    try {
        std::call_once(codecs_once, register_codecs);
        DcmFileFormat ff;
        if (ff.loadFile(img->path).bad()) {
            snprintf(err, errlen, "cannot read %s", img->path);
            return VG_EPARSE;
        }
        DcmDataset *ds = ff.getDataset();
        Pixels p;
        int rc = decode_frame(ds, img, p, err, errlen);
        if (rc < 0)
            return rc;
        if (img->kind == VG_BREAST_MG) {
            if (p.spp != 1) {
                snprintf(err, errlen, "mammogram %s is not greyscale", img->sop_uid);
                return VG_EPARSE;
            }
            render_mg(ds, img, p);
            vg_breast_area_resize(p.v.data(), 1, p.rows, p.cols, out, h, w);
        } else {
            std::vector<float> rgb;
            render_us(p, rgb);
            vg_breast_area_resize(rgb.data(), 3, p.rows, p.cols, out, h, w);
        }
        return 0;
    } catch (const std::bad_alloc &) {
        snprintf(err, errlen, "out of memory decoding %s", img->sop_uid);
        return -ENOMEM;
    } catch (...) {
        snprintf(err, errlen, "unexpected exception decoding %s", img->sop_uid);
        return VG_EPARSE;
    }
}

extern "C" void vg_breast_area_resize(const float *in, int c, int h, int w, float *out,
                                      int oh, int ow)
{
    try {
        std::vector<int> c0(ow), c1(ow);
        for (int j = 0; j < ow; j++) {
            c0[j] = (int)((long long)j * w / ow);
            c1[j] = (int)(((long long)(j + 1) * w + ow - 1) / ow);
        }
        for (int ch = 0; ch < c; ch++) {
            const float *src = in + (size_t)ch * h * w;
            for (int i = 0; i < oh; i++) {
                int r0 = (int)((long long)i * h / oh);
                int r1 = (int)(((long long)(i + 1) * h + oh - 1) / oh);
                for (int j = 0; j < ow; j++) {
                    double sum = 0;
                    for (int r = r0; r < r1; r++)
                        for (int k = c0[j]; k < c1[j]; k++)
                            sum += src[(size_t)r * w + k];
                    out[((size_t)ch * oh + i) * ow + j] =
                        (float)(sum / ((double)(r1 - r0) * (c1[j] - c0[j])));
                }
            }
        }
    } catch (...) {
        memset(out, 0, (size_t)c * oh * ow * sizeof *out); /* only bad_alloc of 2 ints */
    }
}

namespace
{

/* YYYYMMDD into y, m, d; false when not a date. */
bool parse_date(const char *s, int *y, int *m, int *d)
{
    if (!s || strlen(s) < 8)
        return false;
    for (int i = 0; i < 8; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    *y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    *m = (s[4] - '0') * 10 + (s[5] - '0');
    *d = (s[6] - '0') * 10 + (s[7] - '0');
    return *m >= 1 && *m <= 12 && *d >= 1 && *d <= 31;
}

} // namespace

extern "C" int vg_breast_age(const char *patient_age, const char *study_date,
                             const char *birth_date, double *age)
{
    try {
        if (patient_age && strlen(patient_age) >= 2) {
            char *end = NULL;
            long n = strtol(patient_age, &end, 10);
            char unit = end && end != patient_age ? (char)toupper((unsigned char)*end) : 0;
            double years = unit == 'Y'   ? (double)n
                           : unit == 'M' ? n / 12.0
                           : unit == 'W' ? n * 7 / 365.25
                           : unit == 'D' ? n / 365.25
                                         : -1;
            if (n >= 0 && years >= 0 && years <= 150) {
                *age = years;
                return 1;
            }
        }
        int sy, sm, sd, by, bm, bd;
        if (parse_date(study_date, &sy, &sm, &sd) &&
            parse_date(birth_date, &by, &bm, &bd)) {
            int years = sy - by - ((sm < bm || (sm == bm && sd < bd)) ? 1 : 0);
            if (years >= 0 && years <= 150) {
                *age = years;
                return 1;
            }
        }
        return 0;
    } catch (...) {
        return 0;
    }
}

extern "C" int vg_breast_bmi(double weight_kg, double size_m, double *bmi)
{
    /* PatientSize is in metres; a value in centimetres (or nonsense) would
     * give a BMI that is not one, so it counts as missing. */
    try {
        if (!(weight_kg > 0) || !(size_m > 0.3) || size_m > 3.0)
            return 0;
        double v = weight_kg / (size_m * size_m);
        if (v < 5 || v > 150)
            return 0;
        *bmi = v;
        return 1;
    } catch (...) {
        return 0;
    }
}
