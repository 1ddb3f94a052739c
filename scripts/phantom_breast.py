#!/usr/bin/python3
"""Synthetic breast cases (mammography, ultrasound, clinical values) for
Vigil's breast-risk model, and the preprocessing that turns what a DICOM
file holds into the model's tensors (the node's C side does the same).

A case is one patient with one or both breasts. Each breast has a risk
class T1..T5 (T1 normal, T2 benign finding, T3..T5 malignant findings of
rising suspicion); at most one side is malignant. Per breast the case holds
two mammography views (CC, MLO), ultrasound in three modes (B-mode, colour
Doppler, elastography) and two planes each, and the patient has ten
clinical values. The same case can be kept in memory (training) or written
as DICOM files with a truth.json (tests, quality); both go through the
same preprocessing functions (preprocess_mg, preprocess_us) on the stored
pixel data and attributes, so training sees exactly what the node will.

This is not a physical simulation: images are drawn from analytic shapes
and noise with appearance ranges taken from the literature, enough to make
a learnable but not trivial task. Where the ranges come from:
- Mammography lexicon: ACR BI-RADS Atlas, 5th ed. (2013), mammography:
  breast composition a-d (almost entirely fatty, scattered fibroglandular,
  heterogeneously dense, extremely dense); masses by shape (oval, round,
  irregular), margin (circumscribed .. spiculated) and density (high density
  more often malignant); calcifications typically benign (coarse
  "popcorn", large rod-like) vs suspicious morphology (fine pleomorphic,
  fine linear) and distribution (grouped/clustered, segmental);
  architectural distortion without a visible mass. Malignant masses: mostly
  irregular and spiculated, 5-30 mm at detection (screen-detected cancers
  median ~12-15 mm).
- Ultrasound lexicon: ACR BI-RADS Atlas, 5th ed., ultrasound: shape,
  orientation (parallel = wider than tall vs not parallel), margin
  (circumscribed vs indistinct, angular, microlobulated, spiculated), echo
  pattern (anechoic, hypoechoic, complex), posterior features (enhancement,
  shadowing). Stavros et al., Radiology 1995;196:123 ("Solid breast
  nodules: use of sonography to distinguish between benign and malignant
  lesions"): spiculation, taller-than-wide, angular margins, marked
  hypoechogenicity, posterior shadowing, echogenic halo suggest malignancy;
  wider-than-tall, circumscribed, thin echogenic capsule, uniform
  hyperechogenicity suggest benignity.
- Colour Doppler: malignant masses more often show penetrating, internal
  and more numerous vessels than benign ones (e.g. Raza & Baum, Radiology
  1997;203:164; the BI-RADS "vascularity: absent, internal, rim" category).
- Shear-wave elastography: benign lesions mostly < 50-80 kPa, malignant
  mostly > 80 kPa up to ~180 kPa and stiffest at the rim (Berg et al.,
  Radiology 2012;262:435, BE1 study; Evans et al., Breast Cancer Res
  2010;12:R104). Colour scale blue (soft, 0 kPa) .. red (hard, 180 kPa).
- Clinical values: risk rises with age, family history, postmenopausal
  hormone therapy, dense breasts and higher BMI after menopause (Gail /
  Tyrer-Cuzick model factors); a palpable lump and bloody nipple discharge
  are more often malignant, breast pain alone is usually benign.

Random streams per purpose (numpy default_rng([seed, k])): patient 1,
per-breast images 10 + side (and 20 + side for ultrasound), file variants 5,
UIDs 7, study date and height 8; so the same seed gives the same files, UIDs
included, and a case with fewer images has the very same images.
"""

import datetime
import json
import os
import uuid

import numpy as np
from scipy import ndimage

CLASSES = ["T1", "T2", "T3", "T4", "T5"]
MALIGNANT = [False, False, True, True, True]
CLASS_MEANING = [
    "T1: normal breast, no finding",
    "T2: benign finding (circumscribed mass, cyst, coarse calcifications)",
    "T3: malignant, low suspicion appearance (small or subtle finding)",
    "T4: malignant, moderate suspicion appearance",
    "T5: malignant, highly suggestive appearance (large spiculated mass, calcifications)",
]
SIDES = ("L", "R")
MG_VIEWS = ("CC", "MLO")
US_MODES = ("BMODE", "DOPPLER", "ELASTO")
# Model input sizes (rows, cols): the mammogram's 512 x 384 shrinks by 4 in
# each direction, the ultrasound's 240 x 320 by 5 (aspect kept).
MG_SIZE = (128, 96)
US_SIZE = (48, 64)
MG_DEVICE = (512, 384)
US_DEVICE = (240, 320)
MG_PIXEL_MM = 0.45
US_PIXEL_MM = 0.15

CLINICAL = ["age", "bmi", "family_history", "palpable_lump", "nipple_discharge",
            "pain", "prior_biopsy", "menopausal_status", "hormone_therapy",
            "breast_density"]
# (offset, scale) for (value - offset) / scale.
CLINICAL_NORM = [(55.0, 15.0), (26.0, 5.0), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5),
                 (0.5, 0.5), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5)]
API_VALUES = CLINICAL[2:]
DENSITIES = "ABCD"
MENOPAUSE = {"pre": 0.0, "peri": 0.5, "post": 1.0}

SOP_MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SOP_MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SOP_US = "1.2.840.10008.5.1.4.1.1.6.1"
SOP_US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"

F32 = np.float32


# ---------------------------------------------------------------- patient

def sample_patient(seed):
    """Classes per side and the ten clinical values of patient `seed`.

    Per patient: 80% have one malignant side (T3, T4, T5 equally likely), the
    other side and both sides of the rest are T1 (55%) or T2 (45%); per
    breast this gives about T1 33%, T2 27%, T3-T5 13% each."""
    r = np.random.default_rng([seed, 1])
    cls = {}
    for s in SIDES:
        cls[s] = 0 if r.random() < 0.55 else 1
    malignant_class = 0
    if r.random() < 0.8:
        side = SIDES[r.integers(2)]
        malignant_class = int(r.integers(2, 5))
        cls[side] = malignant_class
    m = malignant_class > 0
    k = malignant_class - 1 if m else 0   # 0 benign, 1..3 rising risk
    age = float(np.clip(r.normal(47 + 4 * k, 10), 25, 89))
    if age < 46:
        meno = "pre"
    elif age < 54:
        meno = ("pre", "peri", "post")[r.integers(3)]
    else:
        meno = "post"
    bmi = float(np.clip(r.normal(24.5 + 1.2 * k, 3.8), 16, 45))
    density = int(r.choice(4, p=[0.12, 0.43, 0.35, 0.10] if not m else
                           [0.07, 0.33, 0.42, 0.18]))
    clin = {
        "age": round(age, 1),
        "bmi": round(bmi, 1),
        "family_history": int(r.random() < (0.10 + 0.08 * k)),
        "palpable_lump": int(r.random() < (0.20 + 0.17 * k)),
        "nipple_discharge": int(r.random() < (0.05 + 0.05 * k)),
        "pain": int(r.random() < (0.30 - 0.05 * k)),
        "prior_biopsy": int(r.random() < (0.10 + 0.05 * k)),
        "menopausal_status": meno,
        "hormone_therapy": int(meno != "pre" and r.random() < (0.12 + 0.08 * k)),
        "breast_density": DENSITIES[density],
    }
    return cls, clin


def clinical_vector(clin, present=None):
    """(values normalised, present) float32 [10] each from a clinical dict
    as in truth.json (missing keys or None: absent)."""
    v = np.zeros(10, F32)
    p = np.zeros(10, F32)
    for i, name in enumerate(CLINICAL):
        x = clin.get(name)
        if x is None or (present is not None and not present[i]):
            continue
        if name == "menopausal_status":
            x = MENOPAUSE[x]
        elif name == "breast_density":
            x = DENSITIES.index(x) / 3.0
        off, sc = CLINICAL_NORM[i]
        v[i] = (float(x) - off) / sc
        p[i] = 1.0
    return v, p


# ------------------------------------------------------------- noise utils

def smooth_noise(r, shape, sigma, coarse=4):
    """Smooth Gaussian noise, zero mean, unit std: made on a coarse grid,
    enlarged by repetition and a box filter (fast for large images)."""
    cs = (-(-shape[0] // coarse), -(-shape[1] // coarse))
    n = ndimage.gaussian_filter(r.normal(size=cs).astype(F32), sigma / coarse, mode="wrap")
    n = np.repeat(np.repeat(n, coarse, 0), coarse, 1)[:shape[0], :shape[1]]
    if coarse > 1:
        n = ndimage.uniform_filter(n, coarse)
    n -= n.mean()
    return n / (n.std() + 1e-6)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def irregular_radius(r, theta, amp, nharm=(2, 7)):
    """1 + a sum of random harmonics of theta: lobulated/irregular outline."""
    out = np.ones_like(theta)
    for k in range(nharm[0], nharm[1] + 1):
        out += amp * r.normal(0, 1.0 / k ** 0.7) * np.cos(k * theta + r.uniform(0, 2 * np.pi))
    return np.maximum(out, 0.4)


def draw_line(img, y0, x0, y1, x1, value, width=1.0):
    """Adds value along a segment with a Gaussian cross-profile."""
    n = int(max(abs(y1 - y0), abs(x1 - x0)) * 2) + 2
    t = np.linspace(0, 1, n)
    ys, xs = y0 + (y1 - y0) * t, x0 + (x1 - x0) * t
    h, w = img.shape
    rad = int(np.ceil(width * 2))
    yi0, yi1 = int(max(0, min(ys.min(), ys.max()) - rad)), int(min(h, max(ys) + rad + 1))
    xi0, xi1 = int(max(0, min(xs) - rad)), int(min(w, max(xs) + rad + 1))
    if yi1 <= yi0 or xi1 <= xi0:
        return
    yy, xx = np.mgrid[yi0:yi1, xi0:xi1]
    d2 = np.full(yy.shape, np.inf)
    for k in range(0, n, 2):
        d2 = np.minimum(d2, (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2)
    img[yi0:yi1, xi0:xi1] += value * np.exp(-d2 / (2 * width ** 2))


# ------------------------------------------------------------ mammography

def breast_findings(r, cls):
    """What a breast of class cls holds, drawn once and shared by all views
    and modes: lesion position (fractions of the breast), size in mm, and
    the kinds of findings."""
    f = {"cls": cls, "u": r.uniform(0.3, 0.75), "v": r.uniform(-0.45, 0.45),
         "mass": False, "calcs": False, "popcorn": False, "distortion": False,
         "size_mm": 0.0, "cyst": False}
    if cls == 1:
        f["mass"] = r.random() < 0.75
        f["popcorn"] = (not f["mass"]) or r.random() < 0.2
        f["size_mm"] = r.uniform(8, 22)
        f["cyst"] = r.random() < 0.4
    elif cls == 2:
        kind = r.random()
        f["mass"] = kind < 0.55
        f["calcs"] = 0.55 <= kind < 0.8 or r.random() < 0.2
        f["distortion"] = kind >= 0.8
        f["size_mm"] = r.uniform(9, 14)
    elif cls == 3:
        f["mass"] = r.random() < 0.8
        f["calcs"] = (not f["mass"]) or r.random() < 0.5
        f["distortion"] = not f["mass"]
        f["size_mm"] = r.uniform(13, 22)
    elif cls == 4:
        f["mass"] = True
        f["calcs"] = r.random() < 0.8
        f["size_mm"] = r.uniform(20, 34)
    return f


def render_mg(r, f, view, density):
    """One mammogram, float in [0, 1] (bright = dense), 512 x 384, nipple to
    the right (left-breast storage orientation), chest wall at column 0."""
    H, W = MG_DEVICE
    yy, xx = np.mgrid[0:H, 0:W].astype(F32)
    a = W * r.uniform(0.7, 0.93)
    if view == "CC":
        b, yc = H * r.uniform(0.36, 0.45), H * r.uniform(0.47, 0.53)
    else:
        b, yc = H * r.uniform(0.44, 0.5), H * r.uniform(0.5, 0.56)
    rho = np.sqrt((xx / a) ** 2 + ((yy - yc) / b) ** 2)
    inside = sigmoid((1.0 - rho) * 60)
    thick = np.sqrt(np.clip(1 - rho ** 2, 0, 1)) ** 0.35
    # Fibroglandular tissue: smooth noise, most of it behind the nipple and
    # centrally; thresholded to the BI-RADS density's glandular fraction.
    frac = (0.08, 0.3, 0.55, 0.8)[density] * r.uniform(0.85, 1.15)
    field = smooth_noise(r, (H, W), 14) + 0.6 * smooth_noise(r, (H, W), 4, coarse=2)
    field += 1.6 * np.exp(-(((xx / a) - 0.5) ** 2) / 0.12 - ((yy - yc) / b) ** 2 / 0.35)
    m = rho < 0.95
    q = np.quantile(field[m], 1 - frac)
    gland = sigmoid((field - q) * 6.0)
    img = inside * thick * (0.22 + 0.3 * gland + 0.03 * smooth_noise(r, (H, W), 2, coarse=2))
    img += inside * 0.08 * sigmoid((rho - 0.97) * 80)  # skin line
    # Nipple.
    img += 0.15 * np.exp(-((xx - a) ** 2 + (yy - yc) ** 2) / (2 * 8.0 ** 2))
    if view == "MLO":
        # Pectoral muscle: bright triangle in the upper chest-wall corner.
        pw, ph = W * r.uniform(0.2, 0.35), H * r.uniform(0.45, 0.7)
        pec = sigmoid((1 - xx / pw - yy / ph) * 40)
        img = np.maximum(img, pec * r.uniform(0.62, 0.75))
        # Tissue above the ellipse near the chest wall (axillary tail).
        img = np.maximum(img, sigmoid((0.3 - xx / W) * 30) * (yy < yc) * 0.25)
    # Lesion position: CC and MLO project the same lesion at different rows.
    cx = f["u"] * a
    cy = yc + (f["v"] if view == "CC" else f["v"] * 0.8 + r.normal(0, 0.05)) * b
    px = 1.0 / MG_PIXEL_MM
    cls = f["cls"]
    if f["mass"]:
        rad = f["size_mm"] / 2 * px
        dy, dx = yy - cy, xx - cx
        th = np.arctan2(dy, dx)
        if cls == 1:
            ratio = r.uniform(0.6, 1.0)
            rr = np.sqrt(dx ** 2 + (dy / ratio) ** 2) / rad
            edge, contrast = 0.04, r.uniform(0.08, 0.14)
        else:
            rr = np.sqrt(dx ** 2 + dy ** 2) / (rad * irregular_radius(r, th, 0.25 + 0.05 * cls))
            edge, contrast = 0.1, r.uniform(0.24, 0.34)
        img += contrast * sigmoid((1 - rr) / edge)
        if cls >= 2:
            nsp = int(r.integers(5, 9) + 4 * (cls - 2))
            for _ in range(nsp):
                ang = r.uniform(0, 2 * np.pi)
                ln = rad * r.uniform(1.6, 2.8 + 0.4 * (cls - 2))
                draw_line(img, cy + rad * 0.6 * np.sin(ang), cx + rad * 0.6 * np.cos(ang),
                          cy + ln * np.sin(ang), cx + ln * np.cos(ang),
                          contrast * 0.7, width=1.6)
    if f["distortion"]:
        for _ in range(int(r.integers(10, 16))):
            ang = r.uniform(0, 2 * np.pi)
            ln = r.uniform(12, 22) * px
            draw_line(img, cy, cx, cy + ln * np.sin(ang), cx + ln * np.cos(ang), 0.13, width=1.4)
    if f["calcs"]:
        # Fine pleomorphic calcifications, grouped: more with rising class.
        n = int(r.integers(12, 17) + 8 * (cls - 2))
        spread = r.uniform(4, 7) * px
        for _ in range(n):
            y = int(round(cy + r.normal(0, spread / 2)))
            x = int(round(cx + r.normal(0, spread / 2)))
            s = 2
            if 0 <= y < H - s and 0 <= x < W - s:
                img[y:y + s, x:x + s] += r.uniform(0.5, 0.8)
    if f["popcorn"]:
        # Coarse "popcorn" calcifications of a degenerating fibroadenoma.
        for _ in range(int(r.integers(2, 5))):
            y, x = cy + r.normal(0, 5), cx + r.normal(0, 5)
            rr = np.sqrt((yy - y) ** 2 + (xx - x) ** 2) / r.uniform(2.5, 5)
            img += 0.45 * sigmoid((1 - rr) * 8)
    img = ndimage.gaussian_filter(img, 0.7)
    img += r.normal(0, 0.008, img.shape)
    return np.clip(img, 0, 1).astype(F32)


def mg_stored(r, img, side, view, presentation, mono1):
    """(pixels uint16 as stored, attrs) for a mammogram in canonical
    orientation: what the DICOM file will hold."""
    bits = 12 if r.random() < 0.7 else 14
    top = (1 << bits) - 1
    lo, hi = r.uniform(0.02, 0.06) * top, r.uniform(0.75, 0.9) * top
    px = np.round(lo + img * (hi - lo)).astype(np.int64)
    attrs = {"BitsStored": bits}
    if presentation:
        # Window over the breast tissue range (fat .. dense + lesion).
        c = lo + r.uniform(0.4, 0.48) * (hi - lo)
        w = r.uniform(0.75, 0.9) * (hi - lo)
        attrs["WindowCenter"], attrs["WindowWidth"] = float(round(c)), float(round(w))
    if mono1:
        px = top - px
        if presentation:
            attrs["WindowCenter"] = float(top - attrs["WindowCenter"] + 1)
    attrs["PhotometricInterpretation"] = "MONOCHROME1" if mono1 else "MONOCHROME2"
    if side == "R":
        px = px[:, ::-1]
        attrs["PatientOrientation"] = ["P", "L"] if view == "CC" else ["P", "FL"]
    else:
        attrs["PatientOrientation"] = ["A", "R"] if view == "CC" else ["A", "FR"]
    attrs["ImageLaterality"] = side
    return np.ascontiguousarray(px).astype(np.uint16), attrs


def area_resize(x, size):
    """torch.nn.functional.adaptive_avg_pool2d in numpy: output row i
    averages input rows floor(i*H/h) .. ceil((i+1)*H/h)-1 (same for
    columns). x: [H, W] or [H, W, C]."""
    H, W = x.shape[:2]
    h, w = size

    def bounds(n, m):
        i = np.arange(m)
        return (i * n) // m, -((-(i + 1) * n) // m)
    x = x.astype(np.float64)
    rs, re = bounds(H, h)
    cs, ce = bounds(W, w)
    c = np.cumsum(np.cumsum(np.pad(x, [(1, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2)), 0), 1)
    s = (c[re][:, ce] - c[rs][:, ce] - c[re][:, cs] + c[rs][:, cs])
    n = ((re - rs)[:, None] * (ce - cs)[None, :])
    if x.ndim == 3:
        n = n[:, :, None]
    return (s / n).astype(F32)


def preprocess_mg(pixels, attrs, size=MG_SIZE):
    """Stored MG pixels + attributes -> float32 [1, h, w] in [0, 1], nipple
    to the right. attrs keys (DICOM keywords): RescaleSlope,
    RescaleIntercept, WindowCenter, WindowWidth (first value used),
    PhotometricInterpretation, PatientOrientation, ImageLaterality."""
    x = pixels.astype(np.float64)
    if attrs.get("RescaleSlope") is not None or attrs.get("RescaleIntercept") is not None:
        x = x * float(attrs.get("RescaleSlope", 1.0) or 1.0) + float(attrs.get("RescaleIntercept", 0.0) or 0.0)
    c, w = attrs.get("WindowCenter"), attrs.get("WindowWidth")
    if c is not None and w is not None and float(w) >= 1:
        y = np.clip((x - (float(c) - 0.5)) / (float(w) - 1) + 0.5, 0, 1)
    else:
        lo, hi = x.min(), x.max()
        y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if attrs.get("PhotometricInterpretation") == "MONOCHROME1":
        y = 1 - y
    po = attrs.get("PatientOrientation")
    if po:
        flip = str(po[0]).startswith("P")
    else:
        flip = attrs.get("ImageLaterality") == "R"
    if flip:
        y = y[:, ::-1]
    return area_resize(y, size)[None]


# ------------------------------------------------------------- ultrasound

def jet(t):
    """Blue (0) .. cyan .. green .. yellow .. red (1): the usual
    elastography colour scale. t in [0, 1] -> [..., 3] in [0, 1]."""
    t = np.clip(t, 0, 1)
    rch = np.clip(1.5 - np.abs(4 * t - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * t - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * t - 1), 0, 1)
    return np.stack([rch, g, b], -1)


def us_geometry(r, f, plane):
    """Lesion ellipse (centre row/col, half height/width in pixels) in one
    plane; plane 2 (orthogonal) sees the lesion's other width."""
    px = 1.0 / US_PIXEL_MM
    cls = f["cls"]
    w = f["size_mm"] * px / 2 * (1.0 if plane == 0 else f["us_w2"])
    if cls == 1:
        ratio = f["us_ratio"]              # height / width < 1: parallel
    else:
        ratio = f["us_ratio"] * (1.0 if plane == 0 else r.uniform(0.9, 1.1))
    w = min(w, 110)
    h = min(w * ratio, 80)
    return f["us_cy"], f["us_cx"], h, w


def us_lesion_params(r, f):
    cls = f["cls"]
    f["us_cy"] = r.uniform(95, 135)
    f["us_cx"] = r.uniform(110, 210)
    f["us_w2"] = r.uniform(0.75, 1.1)
    if cls == 1:
        f["us_ratio"] = r.uniform(0.45, 0.75)
    elif cls == 2:
        f["us_ratio"] = r.uniform(0.85, 1.25) if r.random() < 0.8 else r.uniform(0.65, 0.8)
    elif cls == 2 and r.random() < 0.4:
        f["us_ratio"] = r.uniform(0.65, 0.95)   # small cancers are often still parallel
    else:
        f["us_ratio"] = r.uniform(1.0, 1.5) + 0.1 * (cls - 3)
    f["us_shadow"] = r.random() < (0, 0.1, 0.35, 0.6, 0.8)[cls]
    f["us_halo"] = cls >= 3 and r.random() < 0.6
    # Shear-wave stiffness (kPa): benign mostly < 60-90, malignant 80-180;
    # small low-suspicion cancers (T3) overlap the benign range. Posterior
    # shadowing: mostly malignant, rarely benign (fibrosis, old fibroadenoma).
    f["kpa"] = (r.uniform(8, 30), r.uniform(20, 90), r.uniform(40, 110),
                r.uniform(80, 150), r.uniform(110, 180))[cls]
    f["vessels"] = int((r.integers(0, 2), r.integers(0, 4), r.integers(1, 5),
                        r.integers(3, 7), r.integers(5, 10))[cls])


def render_bmode(r, f, plane, density):
    """B-mode echo map (mean echo level before speckle), 240 x 320, plus
    the lesion mask (None for a normal breast)."""
    H, W = US_DEVICE
    yy, xx = np.mgrid[0:H, 0:W].astype(F32)
    skin = r.uniform(6, 10)
    fat_end = r.uniform(45, 75)
    gl_end = r.uniform(165, 190)
    ret_end = gl_end + r.uniform(10, 20)
    undul = 8 * smooth_noise(r, (1, W), 40, coarse=1)[0]
    e = np.full((H, W), 0.3, F32)
    e[yy < skin] = 0.85
    fat = (yy >= skin) & (yy < fat_end + undul)
    e[fat] = 0.3
    gfrac = (0.35, 0.5, 0.65, 0.8)[density]
    gl = (yy >= fat_end + undul) & (yy < gl_end + undul)
    tex = smooth_noise(r, (H, W), 6, coarse=2)
    e[gl] = np.where(tex[gl] < np.quantile(tex[gl], 1 - gfrac), 0.32, 0.7)
    mus = yy >= ret_end + undul
    e[mus] = 0.42 + 0.15 * np.sin(yy[mus] * 0.6 + 0.2 * smooth_noise(r, (H, W), 10)[mus])
    # Cooper's ligaments: thin bright curved lines through the fat.
    for _ in range(int(r.integers(3, 7))):
        x0 = r.uniform(0, W)
        draw_line(e, skin, x0, fat_end, x0 + r.uniform(-60, 60), 0.35, width=1.2)
    mask = None
    if f["cls"] > 0:
        cy, cx, h, w = us_geometry(r, f, plane)
        dy, dx = yy - cy, xx - cx
        th = np.arctan2(dy / h, dx / w)
        cls = f["cls"]
        if cls == 1:
            rr = np.sqrt((dx / w) ** 2 + (dy / h) ** 2)
            if not f["cyst"] and r.random() < 0.35:
                # Macrolobulated solid mass (fibroadenoma): 2-4 gentle lobes.
                rr = rr / irregular_radius(r, th, 0.12, (2, 4))
            inside = sigmoid((1 - rr) * 30)
            level = r.uniform(0.01, 0.05) if f["cyst"] else r.uniform(0.1, 0.28)
        else:
            irr = irregular_radius(r, th, 0.05 + 0.05 * (cls - 2), (3, 12))
            # Angular margins: spikes in a few directions (few or none in
            # small low-suspicion cancers, which may look almost benign).
            for _ in range(int(r.integers(0, 3) + 3 * (cls - 2))):
                a0 = r.uniform(-np.pi, np.pi)
                irr += r.uniform(0.2, 0.5) * np.exp(-((np.angle(np.exp(1j * (th - a0)))) / 0.08) ** 2)
            rr = np.sqrt((dx / w) ** 2 + (dy / h) ** 2) / irr
            inside = sigmoid((1 - rr) * 12)
            level = r.uniform(0.06, 0.16) if cls > 2 else r.uniform(0.08, 0.22)
            if f["us_halo"]:
                e = e + 0.35 * np.exp(-((rr - 1.15) / 0.12) ** 2) * (rr > 1)
        e = e * (1 - inside) + level * inside * (1 + 0.3 * smooth_noise(r, (H, W), 4, coarse=2))
        below = (dy > 0) & (np.abs(dx) < w * 0.9)
        fade = np.exp(-np.clip(dy - h, 0, None) / 120.0) * sigmoid((w * 0.85 - np.abs(dx)) / 5)
        post = below * (rr > 1) * fade
        if cls == 1 and not f["us_shadow"]:
            e = e * (1 + (0.7 if f["cyst"] else 0.35) * post)   # posterior enhancement
        if f["us_shadow"]:
            e = e * (1 - (0.45 + 0.12 * (cls - 2)) * post)      # posterior shadowing
        mask = rr < 1.0
    return (e * np.exp(-yy / 900.0)).astype(F32), mask


def speckle(r, e):
    """B-mode image in [0, 1] from an echo map: multiplied by the magnitude
    of smoothed complex Gaussian noise (Rayleigh-distributed amplitude, the
    fully developed speckle of ultrasound), then log-compressed."""
    H, W = e.shape
    zr = ndimage.gaussian_filter(r.normal(size=(H, W)).astype(F32), (0.8, 1.6))
    zi = ndimage.gaussian_filter(r.normal(size=(H, W)).astype(F32), (0.8, 1.6))
    sp = np.sqrt(zr * zr + zi * zi)
    sp /= sp.mean()
    img = np.log1p(6 * e * sp) / np.log1p(6 * 1.6)        # log compression
    img[:, :12] = 0
    img[:, -12:] = 0
    return np.clip(img, 0, 1).astype(F32)


def render_doppler(r, f, bmode, mask):
    """Colour Doppler: grey B-mode with red/blue flow pixels in a colour
    box; uint8 [240, 320, 3]."""
    H, W = US_DEVICE
    rgb = np.repeat((bmode * 255)[..., None], 3, -1)
    cy, cx = (f["us_cy"], f["us_cx"]) if f["cls"] > 0 else (r.uniform(90, 140), r.uniform(110, 210))
    bh, bw = 70, 90
    y0, y1 = int(max(0, cy - bh)), int(min(H, cy + bh))
    x0, x1 = int(max(12, cx - bw)), int(min(W - 12, cx + bw))
    flow = np.zeros((H, W), F32)
    n = f["vessels"]
    for _ in range(n):
        if f["cls"] >= 2 and mask is not None:
            # Penetrating / internal vessels reaching into the lesion.
            ys, xs = np.nonzero(mask)
            k = r.integers(len(ys))
            ya, xa = ys[k], xs[k]
            ang = r.uniform(0, 2 * np.pi)
            ln = r.uniform(20, 50)
            yb, xb = ya + ln * np.sin(ang), xa + ln * np.cos(ang)
        else:
            ang = r.uniform(0, 2 * np.pi)
            rad = r.uniform(40, 60)
            ya, xa = cy + rad * np.sin(ang), cx + rad * np.cos(ang)
            yb, xb = ya + r.uniform(-15, 15), xa + r.uniform(-25, 25)
        draw_line(flow, ya, xa, yb, xb, r.choice([-1.0, 1.0]) * r.uniform(0.6, 1.0), width=1.8)
    box = np.zeros((H, W), bool)
    box[y0:y1, x0:x1] = True
    col = box & (np.abs(flow) > 0.25)
    v = np.clip(np.abs(flow), 0, 1)
    red = col & (flow > 0)
    blue = col & (flow < 0)
    rgb[red] = np.stack([155 + 100 * v[red], 30 * v[red], 0 * v[red]], -1)
    rgb[blue] = np.stack([0 * v[blue], 60 * v[blue], 155 + 100 * v[blue]], -1)
    # Colour box outline.
    rgb[y0:y1, [x0, x1 - 1]] = 180
    rgb[[y0, y1 - 1], x0:x1] = 180
    return np.clip(rgb, 0, 255).astype(np.uint8), (x0, y0, x1 - 1, y1 - 1)


def render_elasto(r, f, bmode, mask, strain):
    """Elastography: colour map of stiffness over the B-mode in a box
    (blue soft .. red hard, 0..180 kPa); uint8 [240, 320, 3]."""
    H, W = US_DEVICE
    rgb = np.repeat((bmode * 255)[..., None], 3, -1)
    cy, cx = (f["us_cy"], f["us_cx"]) if f["cls"] > 0 else (r.uniform(90, 140), r.uniform(110, 210))
    bh, bw = 65, 85
    y0, y1 = int(max(0, cy - bh)), int(min(H, cy + bh))
    x0, x1 = int(max(12, cx - bw)), int(min(W - 12, cx + bw))
    kpa = r.uniform(8, 30) + 8 * smooth_noise(r, (H, W), 8, coarse=2)
    if mask is not None:
        m = mask.astype(F32)
        if f["cls"] >= 2:
            # Malignant stiffness reaches beyond the B-mode margin (stiff rim).
            m = ndimage.binary_dilation(mask, iterations=int(4 + 3 * f["cls"])).astype(F32)
        m = ndimage.gaussian_filter(m, 3)
        kpa = kpa * (1 - m) + m * (f["kpa"] + 15 * smooth_noise(r, (H, W), 5, coarse=2))
    t = np.clip(kpa / 180.0, 0, 1)
    if strain:
        t = np.clip(t * r.uniform(0.9, 1.1), 0, 1)
    colour = jet(t) * 255
    alpha = 0.65
    sl = (slice(y0, y1), slice(x0, x1))
    rgb[sl] = (1 - alpha) * rgb[sl] + alpha * colour[sl]
    rgb[y0:y1, [x0, x1 - 1]] = 255
    rgb[[y0, y1 - 1], x0:x1] = 255
    return np.clip(rgb, 0, 255).astype(np.uint8), (x0, y0, x1 - 1, y1 - 1)


def preprocess_us(pixels, attrs, size=US_SIZE):
    """Stored US pixels + attributes -> float32 [3, h, w] in [0, 1].
    pixels: [rows, cols] (MONOCHROME2), [rows, cols, 3] (RGB), or with a
    leading frame axis when attrs["NumberOfFrames"] > 1 (middle frame,
    index n // 2, is used). YBR must already be converted to RGB."""
    n = int(attrs.get("NumberOfFrames") or 1)
    x = pixels
    if n > 1:
        x = x[n // 2]
    x = x.astype(np.float64) / 255.0
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, -1)
    return np.ascontiguousarray(area_resize(x, size).transpose(2, 0, 1))


# ----------------------------------------------------------------- cases

def generate_case(seed, sides=SIDES, mg=True, us=True, classes=None, variants=None):
    """A case in memory: the patient and, per side, the findings and every
    image as it will be stored (pixels + attributes). Image content does
    not depend on which modalities are kept. classes ({"L": 4}) forces
    classes (the clinical values stay the patient's); variants forces file
    variants for every side: presentation (False: MG For Processing), mono1
    (MG MONOCHROME1), cine (B-mode as multi-frame), us_lat_only (US with
    Laterality instead of ImageLaterality), us_no_lat (US with neither),
    strain (strain elastography)."""
    cls, clin = sample_patient(seed)
    if classes:
        cls.update(classes)
    density = DENSITIES.index(clin["breast_density"])
    case = {"seed": seed, "classes": cls, "clinical": clin, "breasts": {}}
    rv = np.random.default_rng([seed, 5])
    for si, side in enumerate(SIDES):
        r = np.random.default_rng([seed, 10 + si])
        ru = np.random.default_rng([seed, 20 + si])
        f = breast_findings(r, cls[side])
        us_lesion_params(ru, f)
        images = []
        # File variants drawn for every side so they stay the same whatever
        # is kept.
        presentation = rv.random() < 0.85
        mono1 = presentation and rv.random() < 0.2
        us_lat_only = rv.random() < 0.15
        cine = [rv.random() < 0.25 for _ in range(2)]
        strain = rv.random() < 0.3
        v = variants or {}
        presentation = v.get("presentation", presentation)
        mono1 = v.get("mono1", mono1) and presentation
        us_lat_only = v.get("us_lat_only", us_lat_only)
        cine = [v.get("cine", c) for c in cine]
        strain = v.get("strain", strain)
        mg_imgs = [render_mg(r, f, v, density) for v in MG_VIEWS]
        us_imgs = []
        for plane in range(2):
            # One echo map per plane; each mode is its own acquisition with
            # its own speckle.
            e, mask = render_bmode(ru, f, plane, density)
            us_imgs.append((plane, speckle(ru, e), mask, speckle(ru, e), mask,
                            speckle(ru, e), mask))
        if side not in sides:
            continue
        if mg:
            for vi, view in enumerate(MG_VIEWS):
                px, attrs = mg_stored(rv, mg_imgs[vi], side, view, presentation, mono1)
                attrs.update(Modality="MG", ViewPosition=view,
                             SOPClassUID=SOP_MG_PRESENTATION if presentation else SOP_MG_PROCESSING,
                             PresentationIntentType="FOR PRESENTATION" if presentation
                             else "FOR PROCESSING")
                images.append({"kind": "MG", "view": view, "slot": vi, "pixels": px,
                               "attrs": attrs})
        if us:
            for plane, b, mask, b2, mask2, b3, mask3 in us_imgs:
                g = np.round(b * 255).astype(np.uint8)
                attrs = {"Modality": "US", "PhotometricInterpretation": "MONOCHROME2",
                         "SOPClassUID": SOP_US, "RegionDataType": [1]}
                pixels = g
                if cine[plane]:
                    # A short cine loop: the probe drifts by a few pixels;
                    # the middle frame is the rendered image.
                    nf = int(rv.integers(3, 6))
                    frames = [np.roll(g, (k - nf // 2) * 3, axis=1) for k in range(nf)]
                    pixels = np.stack(frames)
                    attrs.update(NumberOfFrames=nf, SOPClassUID=SOP_US_MULTIFRAME)
                images.append({"kind": "US", "mode": "BMODE", "plane": plane, "slot": plane,
                               "pixels": pixels, "attrs": attrs})
                d, dbox = render_doppler(ru, f, b2, mask2)
                images.append({"kind": "US", "mode": "DOPPLER", "plane": plane, "slot": 2 + plane,
                               "pixels": d, "attrs": {
                                   "Modality": "US", "PhotometricInterpretation": "RGB",
                                   "SOPClassUID": SOP_US, "UltrasoundColorDataPresent": 1,
                                   "RegionDataType": [1, 2], "ColorBox": dbox}})
                el, ebox = render_elasto(ru, f, b3, mask3, strain)
                images.append({"kind": "US", "mode": "ELASTO", "plane": plane, "slot": 4 + plane,
                               "pixels": el, "attrs": {
                                   "Modality": "US", "PhotometricInterpretation": "RGB",
                                   "SOPClassUID": SOP_US, "UltrasoundColorDataPresent": 1,
                                   "RegionDataType": [1], "ColorBox": ebox,
                                   "SeriesDescription": "BREAST US ELASTOGRAPHY",
                                   "ImageComments": "STRAIN" if strain else "SWE"}})
            for im in images:
                if im["kind"] == "US" and not v.get("us_no_lat"):
                    if us_lat_only:
                        im["attrs"]["Laterality"] = side
                    else:
                        im["attrs"]["ImageLaterality"] = side
        case["breasts"][side] = {"class": cls[side], "findings": {
            k: (bool(v) if isinstance(v, (bool, np.bool_)) else v)
            for k, v in f.items() if k in ("mass", "calcs", "popcorn", "distortion", "cyst",
                                           "size_mm", "kpa", "vessels")},
            "images": images}
    return case


def breast_tensors(images, size_mg=MG_SIZE, size_us=US_SIZE):
    """Model inputs of one breast from its images [{slot, kind, pixels,
    attrs}]: (mg [2,1,h,w], mg_present [2], us [6,3,h,w], us_present [6])."""
    mg = np.zeros((2, 1) + tuple(size_mg), F32)
    mgp = np.zeros(2, F32)
    us = np.zeros((6, 3) + tuple(size_us), F32)
    usp = np.zeros(6, F32)
    for im in images:
        if im["kind"] == "MG":
            mg[im["slot"]] = preprocess_mg(im["pixels"], im["attrs"], size_mg)
            mgp[im["slot"]] = 1
        else:
            us[im["slot"]] = preprocess_us(im["pixels"], im["attrs"], size_us)
            usp[im["slot"]] = 1
    return mg, mgp, us, usp


def case_arrays(seed, size_mg=MG_SIZE, size_us=US_SIZE):
    """In-memory training sample: a list per side of (mg, mg_present, us,
    us_present, clin, clin_present, class index)."""
    case = generate_case(seed)
    clin, clinp = clinical_vector(case["clinical"])
    out = []
    for side in SIDES:
        b = case["breasts"][side]
        out.append(breast_tensors(b["images"], size_mg, size_us) + (clin, clinp, b["class"]))
    return out


# ------------------------------------------------------------ DICOM files

def uid_from(r):
    """A 2.25 (UUID-derived) UID, reproducible from the random stream."""
    return "2.25.%d" % uuid.UUID(bytes=bytes(r.integers(0, 256, 16, dtype=np.uint8)),
                                 version=4).int


def _base_dataset(pydicom, sop_class, sop_uid, patient, study, series, number):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "2.25.200547394427410466434186962133307457613"
    meta.ImplementationVersionName = "VIGIL_PHANTOM"
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    for k, v in patient.items():
        setattr(ds, k, v)
    for k, v in study.items():
        setattr(ds, k, v)
    ds.SeriesInstanceUID = series["uid"]
    ds.SeriesNumber = series["number"]
    ds.SeriesDescription = series["description"]
    ds.SeriesDate = study["StudyDate"]
    ds.InstanceNumber = number
    ds.ContentDate, ds.ContentTime = study["StudyDate"], study["StudyTime"]
    ds.Manufacturer = "Vigil phantom"
    ds.ManufacturerModelName = "phantom_breast"
    ds.BurnedInAnnotation = "NO"
    ds.BodyPartExamined = "BREAST"
    return ds


def _code(pydicom, value, scheme, meaning):
    from pydicom.dataset import Dataset
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _mg_dataset(pydicom, im, base):
    from pydicom.sequence import Sequence
    ds = base
    a = im["attrs"]
    px = im["pixels"]
    ds.Modality = "MG"
    ds.PresentationIntentType = a["PresentationIntentType"]
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.ViewPosition = a["ViewPosition"]
    ds.ImageLaterality = a["ImageLaterality"]
    ds.PatientOrientation = a["PatientOrientation"]
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ImagerPixelSpacing = [MG_PIXEL_MM, MG_PIXEL_MM]
    ds.DetectorType = "DIRECT"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.OrganExposed = "BREAST"
    ds.AnatomicRegionSequence = Sequence([_code(pydicom, "76752008", "SCT", "Breast")])
    ds.AcquisitionContextSequence = Sequence([])
    view_code = ("399162004", "cranio-caudal") if a["ViewPosition"] == "CC" \
        else ("399368009", "medio-lateral oblique")
    vc = _code(pydicom, view_code[0], "SCT", view_code[1])
    vc.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([vc])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = a["PhotometricInterpretation"]
    ds.Rows, ds.Columns = px.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, a["BitsStored"], a["BitsStored"] - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if a["PhotometricInterpretation"] == "MONOCHROME1" else -1
    ds.PresentationLUTShape = "INVERSE" if a["PhotometricInterpretation"] == "MONOCHROME1" \
        else "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.LossyImageCompression = "00"
    if "WindowCenter" in a:
        ds.WindowCenter, ds.WindowWidth = a["WindowCenter"], a["WindowWidth"]
        ds.VOILUTFunction = "LINEAR"
        ds.WindowCenterWidthExplanation = "PHANTOM"
    ds.PixelData = px.tobytes()
    return ds


def _us_dataset(pydicom, im, base):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    ds = base
    a = im["attrs"]
    px = im["pixels"]
    ds.Modality = "US"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "BREAST", "0011" if im["mode"] == "DOPPLER" else "0001"]
    ds.PatientOrientation = ""
    if "ImageLaterality" in a:
        ds.ImageLaterality = a["ImageLaterality"]
    if "Laterality" in a:
        ds.Laterality = a["Laterality"]
    if "ImageComments" in a:
        ds.ImageComments = a["ImageComments"]
    ds.TransducerData = ["L12-5", "", ""]
    rgb = a["PhotometricInterpretation"] == "RGB"
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = a["PhotometricInterpretation"]
    if rgb:
        ds.PlanarConfiguration = 0
    nf = int(a.get("NumberOfFrames") or 1)
    rows, cols = (px.shape[1:3] if nf > 1 else px.shape[:2])
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.UltrasoundColorDataPresent = int(a.get("UltrasoundColorDataPresent", 0))
    ds.LossyImageCompression = "00"
    if nf > 1:
        ds.NumberOfFrames = nf
        ds.FrameTime = 33.3
        ds.CineRate = 30
        ds.FrameIncrementPointer = (0x0018, 0x1063)
    regions = []
    for dt in a["RegionDataType"]:
        rg = Dataset()
        x0, y0, x1, y1 = (12, 0, cols - 13, rows - 1) if dt == 1 else a["ColorBox"]
        rg.RegionSpatialFormat = 1
        rg.RegionDataType = dt
        rg.RegionFlags = 0
        rg.RegionLocationMinX0, rg.RegionLocationMinY0 = int(x0), int(y0)
        rg.RegionLocationMaxX1, rg.RegionLocationMaxY1 = int(x1), int(y1)
        rg.PhysicalUnitsXDirection = rg.PhysicalUnitsYDirection = 3
        rg.PhysicalDeltaX = rg.PhysicalDeltaY = US_PIXEL_MM / 10.0
        rg.ReferencePixelX0, rg.ReferencePixelY0 = 0, 0
        regions.append(rg)
    ds.SequenceOfUltrasoundRegions = Sequence(regions)
    ds.PixelData = np.ascontiguousarray(px).tobytes()
    return ds


def write_case(case, out_dir, separate_studies=False):
    """Writes out_dir/*.dcm and out_dir/truth.json for a case from
    generate_case; returns the truth dict."""
    import pydicom
    os.makedirs(out_dir, exist_ok=True)
    seed = case["seed"]
    ru = np.random.default_rng([seed, 7])
    clin = case["clinical"]
    rp = np.random.default_rng([seed, 8])
    study_day = datetime.date(2026, 1, 5) + datetime.timedelta(days=int(rp.integers(0, 300)))
    age_days = int(clin["age"] * 365.25)
    birth = study_day - datetime.timedelta(days=age_days)
    age_years = (study_day.year - birth.year -
                 ((study_day.month, study_day.day) < (birth.month, birth.day)))
    height = round(float(rp.uniform(1.52, 1.78)), 2)
    weight = round(clin["bmi"] * height ** 2, 1)
    patient = {"PatientName": "PHANTOM^BREAST%d" % seed, "PatientID": "VGB%06d" % (seed % 1000000),
               "PatientBirthDate": birth.strftime("%Y%m%d"), "PatientSex": "F",
               "PatientAge": "%03dY" % age_years, "PatientSize": height, "PatientWeight": weight}
    studies = {}
    for mod in ("MG", "US"):
        if mod == "US" and not separate_studies:
            studies["US"] = studies["MG"]
            continue
        studies[mod] = {"StudyInstanceUID": uid_from(ru), "StudyDate": study_day.strftime("%Y%m%d"),
                        "StudyTime": "0930%02d" % (0 if mod == "MG" else 45),
                        "AccessionNumber": "VGA%07d%s" % (seed % 10000000,
                                                          "" if not separate_studies else
                                                          ("M" if mod == "MG" else "U")),
                        "StudyID": "%d" % (seed % 100000), "ReferringPhysicianName": "",
                        "StudyDescription": ("MAMMOGRAPHY AND BREAST ULTRASOUND"
                                             if not separate_studies else
                                             ("MAMMOGRAPHY" if mod == "MG" else "BREAST ULTRASOUND"))}
    series = {}
    sides = {}
    number = {"MG": 0, "US": 0}
    for side in SIDES:
        if side not in case["breasts"]:
            continue
        b = case["breasts"][side]
        files = []
        for im in b["images"]:
            a = im["attrs"]
            if im["kind"] == "MG":
                key, desc, num = "MG", "MAMMOGRAPHY", 1
            elif im["mode"] == "ELASTO":
                key, desc, num = "EL", a["SeriesDescription"], 3
            else:
                key, desc, num = "US", "BREAST US", 2
            if key not in series:
                series[key] = {"uid": uid_from(ru), "number": num, "description": desc}
            mod = im["kind"]
            number[mod] += 1
            sop = uid_from(ru)
            base = _base_dataset(pydicom, a["SOPClassUID"], sop, patient, studies[mod],
                                 series[key], number[mod])
            if mod == "MG":
                ds = _mg_dataset(pydicom, im, base)
                name = "MG_%s_%s.dcm" % (side, im["view"])
            else:
                ds = _us_dataset(pydicom, im, base)
                name = "US_%s_%s_%d.dcm" % (side, im["mode"], im["plane"] + 1)
            ds.save_as(os.path.join(out_dir, name), write_like_original=False)
            entry = {"file": name, "modality": mod, "sop_instance_uid": sop, "slot": im["slot"]}
            if mod == "MG":
                entry.update(view=im["view"], photometric=a["PhotometricInterpretation"],
                             presentation=a["PresentationIntentType"])
            else:
                entry.update(mode=im["mode"], plane=im["plane"] + 1,
                             frames=int(a.get("NumberOfFrames") or 1),
                             laterality_attribute="ImageLaterality" if "ImageLaterality" in a
                             else "Laterality")
            files.append(entry)
        sides[side] = {"class": CLASSES[b["class"]], "class_index": b["class"],
                       "malignant": MALIGNANT[b["class"]], "findings": b["findings"],
                       "images": files}
    truth = {
        "seed": seed, "patient_id": patient["PatientID"],
        "study_uids": sorted({s["StudyInstanceUID"] for s in studies.values()}),
        "studies": {m: {"study_uid": s["StudyInstanceUID"], "accession": s["AccessionNumber"]}
                    for m, s in studies.items()},
        "separate_studies": bool(separate_studies),
        "sides": sides,
        "clinical": {
            "dicom": {"age": age_years, "bmi": round(weight / height ** 2, 2),
                      "PatientAge": patient["PatientAge"], "PatientSize": height,
                      "PatientWeight": weight},
            "api": {k: clin[k] for k in API_VALUES},
        },
    }
    with open(os.path.join(out_dir, "truth.json"), "w") as fh:
        json.dump(truth, fh, indent=2)
    return truth


def truth_clinical(truth):
    """The clinical dict (all ten values) a node would have for a written
    case: age and BMI from DICOM, the rest as posted through the API."""
    c = dict(truth["clinical"]["api"])
    c["age"] = truth["clinical"]["dicom"]["age"]
    c["bmi"] = truth["clinical"]["dicom"]["bmi"]
    return c


# ------------------------------------------------------- reading DICOM back

def _attrs_from_dataset(ds):
    def first(v):
        if v is None:
            return None
        try:
            return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
        except TypeError:
            return float(v)
    regions = ds.get("SequenceOfUltrasoundRegions")
    return {
        "Modality": ds.get("Modality"),
        "RescaleSlope": ds.get("RescaleSlope"), "RescaleIntercept": ds.get("RescaleIntercept"),
        "WindowCenter": first(ds.get("WindowCenter")), "WindowWidth": first(ds.get("WindowWidth")),
        "PhotometricInterpretation": ds.get("PhotometricInterpretation"),
        "PatientOrientation": list(ds.PatientOrientation) if ds.get("PatientOrientation") else None,
        "ImageLaterality": ds.get("ImageLaterality"), "Laterality": ds.get("Laterality"),
        "NumberOfFrames": int(ds.get("NumberOfFrames") or 1),
        "UltrasoundColorDataPresent": ds.get("UltrasoundColorDataPresent"),
        "RegionDataType": [int(r.RegionDataType) for r in regions] if regions else [],
        "SeriesDescription": ds.get("SeriesDescription", ""), "ImageComments": ds.get("ImageComments", ""),
        "ProtocolName": ds.get("ProtocolName", ""), "ViewPosition": ds.get("ViewPosition"),
        "InstanceNumber": int(ds.get("InstanceNumber") or 0), "SOPInstanceUID": ds.SOPInstanceUID,
    }


def us_mode(a):
    """The contract's US mode rule: 0 B-mode, 1 Doppler, 2 elastography."""
    text = " ".join(str(a.get(k) or "") for k in ("SeriesDescription", "ImageComments",
                                                   "ProtocolName")).upper()
    if any(w in text for w in ("ELAST", "SWE", "STRAIN")):
        return 2
    if a.get("UltrasoundColorDataPresent") == 1 or any(t in (2, 3, 4) for t in a["RegionDataType"]):
        return 1
    return 0


def read_dicom_dir(path):
    """Per side, the images of a directory of DICOM files as the node
    assigns them (contract rules): {side: [{slot, kind, pixels, attrs}]}."""
    import pydicom
    from pydicom.pixel_data_handlers.util import convert_color_space
    mgs, uss = [], []
    for name in sorted(os.listdir(path)):
        if not name.endswith(".dcm"):
            continue
        ds = pydicom.dcmread(os.path.join(path, name))
        a = _attrs_from_dataset(ds)
        px = ds.pixel_array
        if str(a["PhotometricInterpretation"]).startswith("YBR"):
            px = convert_color_space(px, a["PhotometricInterpretation"], "RGB")
            a["PhotometricInterpretation"] = "RGB"
        (mgs if a["Modality"] == "MG" else uss).append({"pixels": px, "attrs": a})
    out = {"L": [], "R": []}
    for im in mgs:
        a = im["attrs"]
        side = a["ImageLaterality"] or a["Laterality"]
        view = str(a["ViewPosition"] or "").upper()
        if side in out and view in MG_VIEWS:
            out[side].append(dict(im, kind="MG", slot=MG_VIEWS.index(view)))
    mg_sides = [s for s in SIDES if any(i["kind"] == "MG" for i in out[s])]
    groups = {}
    for im in uss:
        a = im["attrs"]
        side = a["ImageLaterality"] or a["Laterality"]
        if side not in SIDES:
            if len(mg_sides) != 1:
                continue
            side = mg_sides[0]
        groups.setdefault((side, us_mode(a)), []).append(im)
    for (side, mode), ims in groups.items():
        ims.sort(key=lambda i: (i["attrs"]["InstanceNumber"], i["attrs"]["SOPInstanceUID"]))
        for plane, im in enumerate(ims[:2]):
            out[side].append(dict(im, kind="US", slot=2 * mode + plane))
    return {s: v for s, v in out.items() if v}
