#!/usr/bin/python3
"""Synthetic trunk CT phantoms with typed bone lesions (Vigil's bone model).

A phantom is defined in continuous millimetres (LPS patient coordinates:
+x patient left, +y posterior, +z superior; z = 0 is the S1 endplate) by
analytic shapes: a trunk from the lower thorax to the hips with skin, fat,
muscle, organs and lungs, a spine T6..S1 (bodies, discs, posterior elements,
facet joints), ribs, sacrum, pelvis and proximal femora, and 0..6 lesions of
the 8 types of BLDS (Nature Communications 2025). Every shape is evaluated at
voxel centres only inside its own bounding box, so any grid gives the same
anatomy and lesions for the same seed, and a case is fast to make.

Random streams are separate per purpose (numpy default_rng([seed, k])):
geometry 1, anatomy 2, lesions 3, noise 4, textures 5; so a case with other
lesions (or none) has the very same anatomy.

Attenuation values (HU) and where they come from:
- air -1000, lung parenchyma ~ -850 (-700..-900), fat -120..-80, muscle
  40-60, liver 50-65, spleen 45-50, kidney 30-40, blood 35-45, urine/CSF
  0-15: unenhanced abdominal CT ranges as in Lamba et al., AJR 2014;203:
  1034 ("CT Hounsfield numbers of soft tissues on unenhanced abdominal CT")
  and Hounsfield's standard scale.
- trabecular (cancellous) bone 140-280 HU, lower with age (L1 trabecular
  attenuation: Pickhardt et al., Ann Intern Med 2013;158:588, mean ~ 200 HU
  at 50 y, <= 160 HU suggests osteopenia); cortical shell 1-2 mm rendered
  at 1000-1500 HU so that after the scanner's blur it reads 700-1200+.
- intervertebral disc 70-90 HU; costal cartilage 90-160 HU.
Lesion appearance (see _LESION_DOC below for each type's sources).
"""

import dataclasses
import datetime
import importlib.machinery
import importlib.util
import json
import math
import os

import numpy as np

LESION_TYPES = ["osteoblastic_metastasis", "osteolytic_metastasis",
                "mixed_metastasis", "haemangioma", "schmorl_node",
                "bone_island", "endplate_osteitis", "degenerative"]
METASTATIC = {"osteoblastic_metastasis", "osteolytic_metastasis",
              "mixed_metastasis"}
SITES = ("vertebral_body", "endplate", "rib", "pelvis", "posterior_element",
         "vertebral_margin")
THICKNESSES = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
TRAIN_SPACING = 1.5
F32 = np.float32

_LESION_DOC = """
osteoblastic_metastasis: ill-defined patchy sclerosis of cancellous bone,
  fuzzy irregular margin; untreated osteoblastic metastases mean ~490 HU,
  enostoses ~1550 HU, 885 HU separates them (Ulano et al., AJR 2016;207:362).
  Rendered: peak 450-850 HU blended into the host bone; spine, pelvis, ribs.
osteolytic_metastasis: bone replaced by soft tissue (20-60 HU), lobulated
  margin without sclerotic rim, cortical breach possible (soft-tissue
  component); vertebral body (often posterior, reaching the pedicle), ribs,
  pelvis, posterior elements.
mixed_metastasis: one lesion with lytic (20-60 HU) and sclerotic (500-900 HU)
  parts in a coarse mottled pattern.
bone_island (enostosis): well-defined, very dense (1150-1900 HU, mean > 885
  per Ulano 2016), round/oval with a brush-like spiculated ("thorny
  radiations") margin, 4-20 mm (Greenspan, Skeletal Radiol 1995;24:111).
haemangioma: vertebral body, fatty stroma (-60..+10 HU) with thickened
  vertical trabeculae (350-650 HU): polka-dot axially, corduroy sagittally
  (Persaud, "The polka-dot sign", Radiology 2008;246:980).
schmorl_node: well-defined cup-shaped defect of the endplate protruding into
  the body, disc-like content (60-100 HU), thin sclerotic rim 500-900 HU
  (Kyere et al., Eur Spine J 2012;21:2115).
endplate_osteitis: band-like subchondral sclerosis (400-900 HU) 3-10 mm
  thick along both endplates of one disc, often with a narrowed disc and
  small erosions (Modic type III / erosive osteochondrosis; Modic et al.,
  Radiology 1988;166:193). One lesion = both bands.
degenerative: marginal osteophytes (spurs from the anterolateral body
  margins at endplate level, cortical density 650-1050 HU) or facet joint
  subchondral sclerosis with joint-space narrowing.
"""

_VERTEBRAE = [  # name, body height, disc below, half-width, half-depth (mm)
    ("L5", 27.0, 10.5, 25.0, 17.0), ("L4", 27.0, 11.5, 24.5, 17.0),
    ("L3", 27.0, 11.0, 24.0, 16.5), ("L2", 26.0, 10.0, 23.0, 16.0),
    ("L1", 25.0, 9.0, 22.0, 15.5), ("T12", 24.0, 7.5, 20.5, 15.0),
    ("T11", 23.0, 6.5, 19.0, 14.5), ("T10", 22.0, 6.0, 18.0, 14.0),
    ("T9", 21.0, 5.5, 17.0, 13.5), ("T8", 20.0, 5.0, 16.0, 13.0),
    ("T7", 19.5, 5.0, 15.5, 13.0), ("T6", 19.0, 5.0, 15.0, 12.5)]


# --------------------------------------------------------------------------
# Grids and analytic primitives
# --------------------------------------------------------------------------

class Grid:
    """A rectilinear grid given by its axis coordinates (mm, ascending)."""

    def __init__(self, xs, ys, zs):
        self.xs = np.asarray(xs, np.float64)
        self.ys = np.asarray(ys, np.float64)
        self.zs = np.asarray(zs, np.float64)
        self.shape = (len(self.zs), len(self.ys), len(self.xs))
        self.lo = np.array([self.xs[0], self.ys[0], self.zs[0]])
        self.hi = np.array([self.xs[-1], self.ys[-1], self.zs[-1]])

    def window(self, lo, hi):
        """(slices, X, Y, Z) for the voxels whose centres lie in the box
        lo..hi (x,y,z mm), X/Y/Z float32 broadcastable; None if empty."""
        k0, k1 = np.searchsorted(self.xs, [lo[0], hi[0]], side="left")
        j0, j1 = np.searchsorted(self.ys, [lo[1], hi[1]], side="left")
        i0, i1 = np.searchsorted(self.zs, [lo[2], hi[2]], side="left")
        k1 += k1 < len(self.xs) and self.xs[k1] <= hi[0]
        j1 += j1 < len(self.ys) and self.ys[j1] <= hi[1]
        i1 += i1 < len(self.zs) and self.zs[i1] <= hi[2]
        if k1 <= k0 or j1 <= j0 or i1 <= i0:
            return None
        X = self.xs[k0:k1].astype(F32)[None, None, :]
        Y = self.ys[j0:j1].astype(F32)[None, :, None]
        Z = self.zs[i0:i1].astype(F32)[:, None, None]
        return (slice(i0, i1), slice(j0, j1), slice(k0, k1)), X, Y, Z


class Prim:
    """A signed-distance primitive (mm, negative inside) with its box."""
    __slots__ = ("lo", "hi", "f")

    def __init__(self, lo, hi, f):
        self.lo = np.asarray(lo, float)
        self.hi = np.asarray(hi, float)
        self.f = f


def _ell2(U, V, a, b):
    """Approximate signed distance to an ellipse (semi-axes a, b), exact on
    the curve and well-behaved at the centre."""
    k0 = np.sqrt((U / a) ** 2 + (V / b) ** 2)
    k1 = np.sqrt((U / (a * a)) ** 2 + (V / (b * b)) ** 2)
    e = 1e-4
    return (k0 - 1.0) * (k0 + e) / (k1 + e / np.minimum(a, b))


def _ell3(dX, dY, dZ, a, b, c):
    k0 = np.sqrt((dX / a) ** 2 + (dY / b) ** 2 + (dZ / c) ** 2)
    k1 = np.sqrt((dX / (a * a)) ** 2 + (dY / (b * b)) ** 2
                 + (dZ / (c * c)) ** 2)
    e = 1e-4
    return (k0 - 1.0) * (k0 + e) / (k1 + e / min(a, b, c))


def capsule(a, b, r):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    ab = b - a
    l2 = float(ab @ ab) or 1e-9
    ax, ay, az = (float(v) for v in a)
    bx, by, bz = (float(v) / l2 for v in ab)
    ux, uy, uz = (float(v) for v in ab)

    def f(X, Y, Z):
        px, py, pz = X - ax, Y - ay, Z - az
        t = px * bx + py * by + pz * bz
        np.clip(t, 0.0, 1.0, out=t)
        dx = px - t * ux
        dy = py - t * uy
        dz = pz - t * uz
        return np.sqrt(dx * dx + dy * dy + dz * dz) - r
    return Prim(np.minimum(a, b) - r, np.maximum(a, b) + r, f)


def ellipsoid(c, rad):
    cx, cy, cz = (float(v) for v in c)
    a, b, cc = (float(v) for v in rad)

    def f(X, Y, Z):
        return _ell3(X - cx, Y - cy, Z - cz, a, b, cc)
    return Prim(np.array(c) - rad, np.array(c) + rad, f)


def vbody(cx, cy, z0, z1, wa, wb, waist=0.06, concave=True, cup=0.0):
    """Vertebral body: elliptic cylinder with a waist, a concave posterior
    margin and endplates cupped by up to cup mm in the centre."""
    zm, hh = 0.5 * (z0 + z1), 0.5 * (z1 - z0)

    def f(X, Y, Z):
        s = 1.0 - waist * np.clip(1.0 - ((Z - zm) / hh) ** 2, 0, 1)
        d = _ell2(X - cx, Y - cy, wa * s, wb * s)
        if concave:
            d = np.maximum(d, -_ell2(X - cx, Y - (cy + 1.32 * wb),
                                     0.42 * wa, 0.44 * wb))
        if cup:
            r2 = ((X - cx) / wa) ** 2 + ((Y - cy) / wb) ** 2
            h = hh - cup * np.clip(1.0 - r2, 0, 1)
            return np.maximum(d, np.abs(Z - zm) - h)
        return np.maximum(d, np.abs(Z - zm) - hh)
    return Prim([cx - wa, cy - wb, z0], [cx + wa, cy + wb, z1], f)


def ellcyl(cx, cy, z0, z1, a, b):
    zm, hh = 0.5 * (z0 + z1), 0.5 * (z1 - z0)

    def f(X, Y, Z):
        return np.maximum(_ell2(X - cx, Y - cy, a, b), np.abs(Z - zm) - hh)
    return Prim([cx - a, cy - b, z0], [cx + a, cy + b, z1], f)


def _minus_sphere(prim, c, r):
    cx, cy, cz = c
    g = prim.f

    def f(X, Y, Z):
        d = np.sqrt((X - cx) ** 2 + (Y - cy) ** 2 + (Z - cz) ** 2) - r
        return np.maximum(g(X, Y, Z), -d)
    return Prim(prim.lo, prim.hi, f)


def _cut(prim, nx, ny, off):
    """Intersect with the half-space nx*x + ny*y <= off."""
    g = prim.f

    def f(X, Y, Z):
        return np.maximum(g(X, Y, Z), X * nx + Y * ny - off)
    return Prim(prim.lo, prim.hi, f)


def oellipsoid(c, axes, rad):
    """Ellipsoid with centre c, local axes (rows of a 3x3 orthonormal
    matrix) and radii."""
    R = np.asarray(axes, float)
    R = np.array([R[0] / np.linalg.norm(R[0]),
                  np.cross(np.cross(R[0], R[1]), R[0]), R[2]])
    R[1] /= np.linalg.norm(R[1])
    R[2] = np.cross(R[0], R[1])
    rad = np.asarray(rad, float)
    cx, cy, cz = (float(v) for v in c)
    Rf = [[float(v) for v in row] for row in R]
    a, b, cc = (float(v) for v in rad)

    def f(X, Y, Z):
        dX, dY, dZ = X - cx, Y - cy, Z - cz
        q = [dX * r[0] + dY * r[1] + dZ * r[2] for r in Rf]
        return _ell3(q[0], q[1], q[2], a, b, cc)
    ext = np.sqrt(((R * rad[:, None]) ** 2).sum(0))
    return Prim(np.asarray(c) - ext, np.asarray(c) + ext, f)


def _ilium_params(tau, s, ys0):
    """Arc of the ilium in an axial slice at relative height tau (0 just
    above the acetabulum, 1 the crest): posterior (sacroiliac) end Pp,
    anterior end Pa, lateral bow h, thickness th; all in the +x side."""
    ppx = (56.0 - 8.0 * tau) * s
    ppy = ys0 + (4.0 + 30.0 * tau) * s
    pax = (82.0 + 34.0 * tau) * s
    pay = ys0 + (-24.0 - 42.0 * tau) * s
    h = (5.0 + 15.0 * tau) * s
    th = (22.0 - 16.0 * tau + 5.0 * tau ** 12) * s
    return ppx, ppy, pax, pay, h, th


def ilium(sd, s, ys0, z_lo, z_hi, z_si):
    """Iliac wing and body, side sd (+1 left, -1 right): in each axial slice
    a circular arc bowed laterally (concave towards the iliac fossa) from
    the sacroiliac joint to the anterior margin; thick low down, thin in the
    wing, thicker at the crest."""
    def f(X, Y, Z):
        tau = np.clip((Z - z_lo) / (z_hi - z_lo), 0.0, 1.0)
        ppx, ppy, pax, pay, h, th = _ilium_params(tau, s, ys0)
        dx, dy = pax - ppx, pay - ppy
        c = np.sqrt(dx * dx + dy * dy)
        nx, ny = -dy / c, dx / c                 # lateral-posterior normal
        rad = (c * c / 4 + h * h) / (2 * h)
        mx, my = 0.5 * (ppx + pax), 0.5 * (ppy + pay)
        cx, cy = mx - nx * (rad - h), my - ny * (rad - h)
        u = X * sd - cx
        v = Y - cy
        d = np.abs(np.sqrt(u * u + v * v) - rad) - 0.5 * th
        # wedge between the rays to Pp and Pa (apex mid-arc direction n)
        ax, ay = ppx - cx, ppy - cy
        bx, by = pax - cx, pay - cy
        sa = np.sign(ax * ny - ay * nx)
        sb = np.sign(bx * ny - by * nx)
        la = np.sqrt(ax * ax + ay * ay)
        lb = np.sqrt(bx * bx + by * by)
        wa = -sa * (ax * v - ay * u) / la
        wb = -sb * (bx * v - by * u) / lb
        d = np.maximum(d, np.maximum(wa, wb))
        d = np.maximum(d, np.maximum(z_lo - Z, Z - z_hi))
        # sacroiliac joint: keep 2 mm off the sacral ala below z_si
        cut = np.where(Z < z_si, F32(55.5 * s), F32(0.0))
        return np.maximum(d, cut - X * sd)
    x0, x1 = 30.0 * s, 150.0 * s
    lo = [min(sd * x0, sd * x1), ys0 - 90.0 * s, z_lo]
    hi = [max(sd * x0, sd * x1), ys0 + 55.0 * s, z_hi]
    return Prim(lo, hi, f)


# --------------------------------------------------------------------------
# Textures: periodic band-passed noise tiles defined in millimetres
# --------------------------------------------------------------------------

def _tile(rng, n, f0, bw):
    w = rng.standard_normal((n, n, n))
    f = np.fft.fftfreq(n)
    k = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2
                + f[None, None, :] ** 2)
    t = np.fft.ifftn(np.fft.fftn(w) * np.exp(-((k - f0) / bw) ** 2)).real
    t -= t.mean()
    return (t / t.std()).astype(F32)


class Textures:
    def __init__(self, seed):
        r = np.random.default_rng([seed, 5])
        self.fine = _tile(r, 32, 0.22, 0.10)     # ~3 mm trabecular mottle
        self.coarse = _tile(r, 32, 0.07, 0.04)   # ~10 mm patches
        self.cell_f, self.cell_c = 0.7, 0.8
        sm = self.fine.copy()                    # for coarse grids
        for ax in range(3):
            sm = (sm + np.roll(sm, 1, ax)) * 0.5
        self.fine_smooth = sm / sm.std()

    def idx(self, coords, cell, n, off):
        return np.floor((coords + off) / cell).astype(np.int64) % n

    def at(self, which, X, Y, Z, off=(0.0, 0.0, 0.0), coarse_grid=False):
        if which == "fine":
            tile = self.fine_smooth if coarse_grid else self.fine
            cell = self.cell_f
        else:
            tile, cell = self.coarse, self.cell_c
        n = tile.shape[0]
        return tile[self.idx(Z, cell, n, off[2]), self.idx(Y, cell, n, off[1]),
                    self.idx(X, cell, n, off[0])]


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------

class Anatomy:
    """All patient-specific parameters and shapes; built from seed only."""

    def __init__(self, seed):
        r = np.random.default_rng([seed, 2])
        a0 = r.uniform(135.0, 180.0)                 # trunk half-width
        s = float(np.clip(a0 / 158.0 * r.uniform(0.92, 1.06), 0.86, 1.12))
        self.s = s
        self.a0 = a0
        self.b0 = a0 * r.uniform(0.62, 0.78)
        self.f_lat = r.uniform(8.0, 38.0)            # subcutaneous fat
        self.f_ant = self.f_lat * r.uniform(0.7, 1.3)
        self.f_post = self.f_lat * r.uniform(0.5, 0.9)
        self.muscle = r.uniform(8.0, 15.0)
        self.skin = 2.0
        self.ph = r.uniform(0, 2 * np.pi, 3)
        self.hu_fat = r.uniform(-115.0, -85.0)
        self.hu_vfat = self.hu_fat + r.uniform(0.0, 20.0)
        self.hu_muscle = r.uniform(42.0, 58.0)
        self.canc = r.uniform(140.0, 280.0)          # trabecular HU (age)
        self.cortex = r.uniform(1000.0, 1500.0)
        self.tc = r.uniform(1.0, 1.9)                # cortical thickness
        self.tex_amp = r.uniform(25.0, 45.0)
        self.disc_hu = r.uniform(70.0, 90.0)
        self.cup = r.uniform(1.0, 2.5)                # endplate concavity
        self.hip_a = max(a0 * 1.05, 160.0 * s + 0.5 * self.f_lat + 12.0)
        self._spine(r)
        self._ribs(r)
        self._pelvis(r)
        self._soft(r)

    # ---- body outline ---------------------------------------------------
    def a_of(self, z):
        z = np.asarray(z, float)
        base = self.a0 * (1.0 + 0.035 * np.sin(z / 140.0 + self.ph[0]))
        hip = np.exp(-((z + 85.0 * self.s) / (70.0 * self.s)) ** 2)
        return base + np.maximum(self.hip_a - base, 0) * hip

    def b_of(self, z):
        z = np.asarray(z, float)
        b = self.b0 * (1.0 + 0.04 * np.cos(z / 160.0 + self.ph[1]))
        return b * 1.06, b * 0.94                    # anterior, posterior

    def body_q(self, X, Y, Z, inset=(0.0, 0.0, 0.0)):
        """Normalised radius^2 of the trunk outline shrunk by inset
        (lateral, anterior, posterior mm)."""
        z = Z.astype(np.float64)
        a = (self.a_of(z) - inset[0]).astype(F32)
        ba, bp = (v.astype(F32) for v in self.b_of(z))
        ba = ba - inset[1]
        bp = bp - inset[2]
        bsel = np.where(Y < 0, ba, bp)
        return (X / a) ** 2 + (Y / bsel) ** 2

    def cavity_inset(self):
        m = self.skin + self.muscle
        return (self.f_lat + m, self.f_ant + m, self.f_post + m)

    # ---- spine ----------------------------------------------------------
    def spine_xy(self, z):
        s = self.s
        x = self.sco * np.sin(2 * np.pi * (z - self.sco_ph) / self.sco_len)
        y = (self.y0 - self.lord * np.exp(-((z - 105.0 * s) / (85.0 * s)) ** 2)
             + self.kyph * np.exp(-((z - 360.0 * s) / (110.0 * s)) ** 2))
        return x, y

    def _spine(self, r):
        s = self.s
        bpost = self.b0 * 0.94
        self.y0 = bpost - self.f_post - 70.0 * s
        self.sco = r.uniform(0.0, 7.0)
        self.sco_ph = r.uniform(0, 400)
        self.sco_len = r.uniform(320.0, 520.0)
        self.lord = r.uniform(6.0, 20.0)
        self.kyph = r.uniform(0.0, 15.0)
        verts, discs = [], []
        # S1 (top of the sacrum) first, then L5 upwards.
        z1 = 0.0
        sx, sy = self.spine_xy(-14.0 * s)
        self.ys = sy + 8.0 * s                        # sacral reference y
        verts.append(dict(name="S1", z0=-28.0 * s, z1=0.0, xc=float(sx),
                          yc=float(self.ys), wa=25.0 * s, wb=17.0 * s,
                          kind="S"))
        for name, h, d, wa, wb in _VERTEBRAE:
            h *= s * r.uniform(0.95, 1.05)
            d *= s * r.uniform(0.9, 1.1)
            p = 0.35 if name in ("L5", "L4", "L3") else 0.15
            narrow = r.uniform(0.4, 0.8) if r.random() < p else 1.0
            d *= narrow
            zb = z1 + d
            zt = zb + h
            xc, yc = self.spine_xy(0.5 * (zb + zt))
            discs.append(dict(upper=name, lower=verts[-1]["name"], z0=z1,
                              z1=zb, narrow=narrow))
            verts.append(dict(name=name, z0=zb, z1=zt, xc=float(xc),
                              yc=float(yc), wa=wa * s, wb=wb * s,
                              kind=name[0]))
            z1 = zt
        self.verts = verts
        self.vmap = {v["name"]: v for v in verts}
        self.discs = discs
        self.joints = []
        prims = []
        for v in verts:
            v["zc"] = 0.5 * (v["z0"] + v["z1"])
            v["hh"] = 0.5 * (v["z1"] - v["z0"])
            if v["kind"] != "S":
                prims.append(vbody(v["xc"], v["yc"], v["z0"], v["z1"],
                                   v["wa"], v["wb"], cup=self.cup))
        for i, v in enumerate(verts):
            below = verts[i - 1] if i > 0 else None
            above = verts[i + 1] if i + 1 < len(verts) else None
            prims += self._posterior(v, below, above)
        self.spine_prims = prims

    def _posterior(self, v, below, above):
        """Pedicles, laminae, spinous/transverse/articular processes."""
        s, out = self.s, []
        xc, yc, wa, wb, zc, hh = (v[k] for k in ("xc", "yc", "wa", "wb",
                                                 "zc", "hh"))
        lumbar = v["kind"] in ("L", "S") or v["name"] == "T12"
        rp = (4.8 if lumbar else 4.0) * s
        yp = yc + wb + 11.0 * s
        zp = zc + 0.25 * hh
        v["pillars"] = []
        for sd in (-1, 1):
            xp = xc + sd * 0.64 * wa
            P = (xp, yp, zp)
            v["pillars"].append(P)
            if v["kind"] != "S":
                out.append(capsule((xc + sd * 0.6 * wa, yc + 0.5 * wb, zp), P,
                                   rp))
            if v["kind"] == "S":
                continue
            Q = (xc, yc + wb + 25.0 * s, zc - 0.15 * hh)
            lam = np.array(Q) - np.array(P)
            out.append(oellipsoid(0.5 * (np.array(P) + Q), [lam, (0, 0, 1),
                                                            (0, 0, 0)],
                                  [0.5 * np.linalg.norm(lam) + 3.0 * s,
                                   (9.0 if lumbar else 7.5) * s, 3.3 * s]))
            if lumbar:
                reach = (26.0 if v["name"] == "L3" else 20.0) * s
                tip = (xc + sd * (wa + reach), yp - 3.0 * s, zc + 0.1 * hh)
                out.append(capsule(P, tip, 3.6 * s))
            else:
                tip = (xc + sd * (wa + 20.0 * s), yp + 9.0 * s, zc + 0.3 * hh)
                out.append(capsule(P, tip, 4.6 * s))
            v.setdefault("tp", {})[sd] = tip
            if sd == 1:
                if lumbar:
                    out.append(oellipsoid(
                        (xc, Q[1] + 15.0 * s, Q[2] - 2 * s),
                        [(0, 1, -0.12), (0, 0, 1), (1, 0, 0)],
                        [19.0 * s, 10.0 * s, 3.4 * s]))
                else:
                    out.append(oellipsoid((xc, Q[1] + 13.0 * s, Q[2] - 12 * s),
                                          [(0, 26, -24), (0, 1, 1), (1, 0, 0)],
                                          [21.0 * s, 6.0 * s, 3.4 * s]))
        # facet joint with the vertebra below: inferior process of v,
        # superior process of below (which may be S1)
        if below is not None:
            out += self._facets(v, below)
        return out

    def _facets(self, up, lo):
        s = self.s
        ra, g = 4.2 * s, 1.6 + 0.8 * s
        o = ra + 0.5 * g
        sag = lo["kind"] in ("L", "S")        # lumbar: sagittal joint planes
        d_lo = up["z0"] - lo["z1"]
        z_top = up["z0"] + 0.35 * up["hh"]           # top of lower's sup.
        z_bot = lo["z1"] - 0.3 * lo["hh"]            # bottom of upper's inf.
        out = []
        for i, sd in enumerate((-1, 1)):
            Pu, Pl = up["pillars"][i], lo["pillars"][i]
            xj = 0.5 * (Pu[0] + Pl[0]) + sd * (2.0 * s if sag else 0.0)
            yj = 0.5 * (Pu[1] + Pl[1]) + 2.0 * s
            if sag:
                sup_xy = (xj + sd * o, yj)
                inf_xy = (xj - sd * o, yj)
                normal = (float(sd), 0.0)
            else:
                sup_xy = (xj, yj - o)
                inf_xy = (xj, yj + o)
                normal = (0.0, 1.0)
            zs0 = Pl[2]
            zi0 = Pu[2]
            out.append(capsule(Pl, (sup_xy[0], sup_xy[1], zs0), ra))
            out.append(capsule((sup_xy[0], sup_xy[1], zs0),
                               (sup_xy[0], sup_xy[1], z_top), ra))
            out.append(capsule(Pu, (inf_xy[0], inf_xy[1], zi0), ra))
            out.append(capsule((inf_xy[0], inf_xy[1], zi0),
                               (inf_xy[0], inf_xy[1], z_bot), ra))
            self.joints.append(dict(upper=up["name"], lower=lo["name"],
                                    side=sd, c=(xj, yj), normal=normal,
                                    z0=z_bot + 2.0, z1=z_top - 2.0, ra=ra,
                                    gap=g, disc=d_lo))
        return out

    # ---- ribs -----------------------------------------------------------
    def rib_wall(self, z, phi, rr):
        """(x>0 side) point of the inner chest wall ring at angle phi from
        posterior (phi=0) to anterior (phi=pi)."""
        ins = self.cavity_inset()
        a = self.a_of(z) - ins[0] + rr + 1.0
        ba, bp = self.b_of(z)
        b = np.where(np.cos(phi) > 0, bp - ins[2], ba - ins[1]) + rr + 1.0
        return a * np.sin(phi), b * np.cos(phi)

    def _ribs(self, r):
        s = self.s
        self.ribs, prims, cart = [], [], []
        for k in range(6, 13):
            v = self.vmap["T%d" % k]
            rr = (4.7 - 0.12 * (k - 6)) * s * r.uniform(0.92, 1.08)
            end = {6: 150, 7: 148, 8: 140, 9: 132, 10: 122, 11: 98,
                   12: 72}[k] + r.uniform(-6, 6)
            drop = {11: 30.0, 12: 18.0}.get(k, 48.0 + 2.0 * (k - 6)) * s
            zh = v["z1"] - 3.0 * s
            for sd in (-1, 1):
                tip = v["tp"][sd]
                pts = [(v["xc"] + sd * (v["wa"] + 2.0),
                        v["yc"] + 0.35 * v["wb"], zh),
                       (tip[0], tip[1] + 2.0, zh + 1.0)]
                phi0 = np.arcsin(min(0.9, abs(tip[0]) / (self.a0 * 0.8)))
                phi0 = max(phi0, np.radians(22.0))
                nseg = max(4, int((np.radians(end) - phi0) * 90 * s / 12.0))
                phis = np.linspace(phi0, np.radians(end), nseg + 1)
                for t, ph in zip(np.linspace(0, 1, nseg + 1), phis):
                    z = zh + 2.0 - drop * t ** 1.15
                    x, y = self.rib_wall(z, ph, rr)
                    pts.append((sd * float(x), float(y), float(z)))
                pts = np.array(pts)
                for a, b in zip(pts[:-1], pts[1:]):
                    prims.append(capsule(a, b, rr))
                self.ribs.append(dict(name="rib%d%s" % (k, "L" if sd > 0
                                                        else "R"),
                                      level="T%d" % k, pts=pts, rr=rr))
                if k <= 10:   # costal cartilage towards the costal margin
                    c = [pts[-1]]
                    for ph in np.radians(np.linspace(end + 8, end + 26, 3)):
                        z = c[-1][2] + 6.0 * s
                        x, y = self.rib_wall(z, ph, rr)
                        c.append((sd * float(x), float(y), float(z)))
                    for a, b in zip(c[:-1], c[1:]):
                        cart.append(capsule(a, b, rr * 0.85))
        # sternum body and xiphoid, anterior midline
        t6, t9, t10 = self.vmap["T6"], self.vmap["T9"], self.vmap["T10"]
        ys = float(-(self.b_of(t9["zc"])[0] - self.f_ant - self.skin) + 4.0)
        prims.append(ellcyl(0.0, ys, t9["zc"], t6["z1"] + 30.0, 14.0 * s,
                            5.5 * s))
        prims.append(capsule((0.0, ys, t9["zc"]), (0.0, ys - 2.0, t10["z0"]),
                             4.0 * s))
        self.rib_prims = prims
        self.cart_prims = cart

    # ---- pelvis ---------------------------------------------------------
    def _pelvis(self, r):
        s, ys, prims = self.s, self.ys, []
        self.pelvis_pts = []     # (point, local half-thickness) for lesions
        x1 = self.vmap["S1"]["xc"]
        # sacrum: S1 body, alae, S2-S5, median crest
        prims.append(vbody(x1, ys, -28.0 * s, 0.0, 25.0 * s, 17.0 * s,
                           waist=0.03, cup=self.cup))
        ala = []
        for sd in (-1, 1):
            for c, rad in (((30.0, 7.0, -13.0), (26.0, 19.0, 14.0)),
                           ((33.0, 15.0, -33.0), (22.0, 17.0, 15.0))):
                e = ellipsoid((x1 + sd * c[0] * s, ys + c[1] * s, c[2] * s),
                              np.array(rad) * s)
                ala.append(_cut(e, sd, 0.0, sd * x1 + 53.0 * s))
                self.pelvis_pts.append(((x1 + sd * c[0] * s, ys + c[1] * s,
                                         c[2] * s), 10.0 * s))
        prims += ala
        for z, dy, rx, ry, rz in ((-40, 20, 32, 13, 14), (-55, 28, 25, 11, 13),
                                  (-70, 35, 18, 9, 12), (-84, 41, 12, 7.5, 10),
                                  (-95, 45, 8, 6, 7)):
            c = (x1, ys + dy * s, z * s)
            prims.append(ellipsoid(c, np.array([rx, ry, rz]) * s))
            self.pelvis_pts.append((c, min(ry, rz) * s * 0.8))
        prims.append(capsule((x1, ys + 30 * s, -6 * s), (x1, ys + 50 * s,
                                                         -70 * s), 5.5 * s))
        z_lo, z_hi = -72.0 * s, 45.0 * s + r.uniform(-6, 6)
        zf = -95.0 * s
        rf = 23.0 * s
        self.z_crest, self.z_fh = z_hi, zf
        for sd in (-1, 1):
            prims.append(ilium(sd, s, ys, z_lo, z_hi, 4.0 * s))
            for tau in (0.1, 0.3, 0.5, 0.7, 0.9):
                ppx, ppy, pax, pay, h, th = _ilium_params(tau, s, ys)
                for f in (0.2, 0.5, 0.8):
                    dx, dy = pax - ppx, pay - ppy
                    c = math.hypot(dx, dy)
                    bow = h * 4 * f * (1 - f)
                    p = (sd * (ppx + f * dx - dy / c * bow),
                         ppy + f * dy + dx / c * bow,
                         z_lo + tau * (z_hi - z_lo))
                    self.pelvis_pts.append((p, 0.5 * th))
            fh = (sd * 86.0 * s, ys - 16.0 * s, zf)
            blk = ellipsoid((sd * 68.0 * s, ys - 12.0 * s, zf + 4 * s),
                            np.array([30.0, 30.0, 32.0]) * s)
            prims.append(_minus_sphere(blk, fh, rf + 2.5 * s))
            self.pelvis_pts.append(((sd * 58.0 * s, ys - 10 * s, zf + 10 * s),
                                    12.0 * s))
            prims.append(ellipsoid(fh, np.array([rf, rf, rf])))
            gt = (sd * 132.0 * s, ys - 4.0 * s, zf - 24.0 * s)
            prims.append(capsule(fh, gt, 14.0 * s))
            prims.append(ellipsoid((sd * 138.0 * s, ys - 2.0 * s, zf - 26 * s),
                                   np.array([15.0, 19.0, 22.0]) * s))
            prims.append(capsule((sd * 132.0 * s, ys - 6.0 * s, zf - 30 * s),
                                 (sd * 136.0 * s, ys - 14.0 * s, zf - 200 * s),
                                 15.0 * s))
            isch = ((sd * 72.0 * s, ys + 2.0 * s, zf - 8 * s),
                    (sd * 60.0 * s, ys + 18.0 * s, zf - 58.0 * s))
            prims.append(capsule(isch[0], isch[1], 11.0 * s))
            sym = (sd * 4.0 * s, ys - 78.0 * s, zf - 22.0 * s)
            prims.append(capsule((sd * 62.0 * s, ys - 30.0 * s, zf + 2 * s),
                                 sym, 9.0 * s))
            prims.append(capsule((sd * 4.0 * s, ys - 74.0 * s, zf - 36.0 * s),
                                 isch[1], 7.0 * s))
            prims.append(capsule(sym, (sd * 4.0 * s, ys - 74.0 * s,
                                       zf - 36.0 * s), 8.0 * s))
            for p, t in ((isch[0], 9.0), (isch[1], 9.0), (sym, 7.0)):
                self.pelvis_pts.append((p, t * s))
        self.pelvis_prims = prims
        self.bone_prims = self.spine_prims + self.rib_prims + prims

    # ---- soft tissue ----------------------------------------------------
    def _soft(self, r):
        s = self.s
        t10 = self.vmap["T10"]
        self.z_dome_r = t10["zc"] + r.uniform(-8.0, 18.0) * s
        self.z_dome_l = self.z_dome_r - r.uniform(5.0, 20.0)
        self.z_top_anat = self.vmap["T6"]["z1"]
        # bowel loops: (centre, radii, content HU)
        ins = self.cavity_inset()
        loops = []
        for _ in range(int(r.integers(70, 110))):
            z = r.uniform(self.z_fh + 10.0, self.z_dome_l - 95.0)
            ai = float(self.a_of(z)) - ins[0]
            bi = float(self.b_of(z)[0]) - ins[1]
            lim = 0.8 if z > 0 else 0.45
            x = r.uniform(-lim, lim) * ai
            y = r.uniform(-0.9, 0.0) * bi
            rad = r.uniform(10.0, 26.0, 3)
            content = r.choice([-1000.0, 12.0, -60.0], p=[0.3, 0.45, 0.25])
            loops.append(((x, y, z), rad, content))
        self.loops = loops
        self.stomach_gas = r.uniform(0.2, 0.7)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def _paint_ellipsoid(hu, grid, c, rad, val, anat=None, below=None,
                     above=None, inset=None):
    w = grid.window(np.array(c) - rad, np.array(c) + rad)
    if w is None:
        return
    sl, X, Y, Z = w
    m = _ell3(X - c[0], Y - c[1], Z - c[2], *rad) < 0
    if inset is not None:
        m &= anat.body_q(X, Y, Z, inset) < 1.0
    if below is not None:
        m &= Z < below(X, Y)
    if above is not None:
        m &= Z > above(X, Y)
    sub = hu[sl]
    sub[m] = val


def _paint_prim(hu, grid, p, val, mask_fn=None):
    w = grid.window(p.lo, p.hi)
    if w is None:
        return
    sl, X, Y, Z = w
    m = p.f(X, Y, Z) < 0
    if mask_fn is not None:
        m &= mask_fn(X, Y, Z)
    hu[sl][m] = val


def _diaphragm(anat):
    s = anat.s
    ai = anat.a0 - anat.cavity_inset()[0]

    def zd(X, Y):
        # domes; the recess is deep posteriorly, shallow anteriorly
        y2 = np.where(Y < 0, F32(0.35), F32(1.0)) * Y * Y
        zr = anat.z_dome_r - 0.010 / s * ((X + 0.42 * ai) ** 2 + y2)
        zl = anat.z_dome_l - 0.010 / s * ((X - 0.42 * ai) ** 2 + y2)
        z = np.maximum(zr, zl) - 0.25 * np.maximum(Y, 0)
        return np.maximum(z, anat.vmap["L1"]["z0"])
    return zd


def render_soft(anat, grid):
    """Air, trunk layers, organs, lungs, vessels, muscles (float32 HU)."""
    hu = np.empty(grid.shape, F32)
    X = grid.xs.astype(F32)[None, None, :]
    Y = grid.ys.astype(F32)[None, :, None]
    Z = grid.zs.astype(F32)[:, None, None]
    ins = anat.cavity_inset()
    sk = anat.skin
    layers = (np.zeros(3), np.full(3, sk),
              np.array([sk + anat.f_lat, sk + anat.f_ant, sk + anat.f_post]),
              np.array(ins))
    idx = np.zeros(grid.shape, np.uint8)
    for lay in layers:
        idx += anat.body_q(X, Y, Z, lay) < 1.0
    lut = np.array([-1000.0, 35.0, anat.hu_fat, anat.hu_muscle,
                    anat.hu_vfat], F32)
    np.take(lut, idx, out=hu)
    del idx
    s = anat.s
    zd = _diaphragm(anat)
    below_d = zd
    # lungs: thoracic cavity above the diaphragm, off the spine/mediastinum
    zlo = float(anat.vmap["L1"]["z0"])
    w = grid.window([-400, -400, zlo], [400, 400, 1e4])
    if w is not None:
        sl, Xw, Yw, Zw = w
        ins4 = tuple(v + 3.0 for v in ins)
        m = anat.body_q(Xw, Yw, Zw, ins4) < 1.0
        m &= Zw > zd(Xw, Yw)
        xs, ys = anat.spine_xy(Zw.astype(np.float64))
        xs, ys = xs.astype(F32), ys.astype(F32)
        wa = 20.0 * s
        m &= ~(_ell2(Xw - xs, Yw - (ys + 30.0 * s), wa + 22.0 * s,
                     60.0 * s) < 0)
        m &= ~(_ell2(Xw - xs - 8.0 * s, Yw - (ys - 40.0 * s), 20.0 * s,
                     45.0 * s) < 0)                  # mediastinum
        hl = hu[sl]
        hl[m] = -850.0
    # heart above the left dome
    _paint_ellipsoid(hu, grid, (15.0 * s, -0.32 * anat.b0, anat.z_dome_l
                                + 45.0 * s), np.array([62.0, 48.0, 58.0]) * s,
                     40.0, above=lambda X, Y: zd(X, Y) + 3.0)
    # abdominal organs under the diaphragm
    ai = anat.a0 - ins[0]
    bi = anat.b0 - ins[1]
    _paint_ellipsoid(hu, grid, (-0.42 * ai, -0.12 * bi, anat.z_dome_r - 78.0),
                     np.array([0.56 * ai, 0.8 * bi, 105.0]), 58.0, anat,
                     below=below_d, inset=ins)
    _paint_ellipsoid(hu, grid, (0.58 * ai, 0.42 * bi, anat.z_dome_l - 50.0),
                     np.array([28.0, 45.0, 55.0]) * s, 47.0, anat,
                     below=below_d, inset=ins)
    st = (0.32 * ai, -0.38 * bi, anat.z_dome_l - 55.0)
    _paint_ellipsoid(hu, grid, st, np.array([45.0, 38.0, 55.0]) * s, 22.0,
                     anat, below=below_d, inset=ins)
    g_y = st[1] - 38.0 * s * (1.0 - 2.0 * anat.stomach_gas)
    _paint_ellipsoid(hu, grid, st, np.array([40.0, 33.0, 50.0]) * s, -1000.0,
                     anat, below=lambda X, Y: np.where(Y < g_y, below_d(X, Y),
                                                       -1e4), inset=ins)
    l2, t12 = anat.vmap["L2"], anat.vmap["T12"]
    for sd, dz in ((-1, -15.0), (1, 0.0)):
        c = (l2["xc"] + sd * (l2["wa"] + 48.0 * s), l2["yc"] + 6.0 * s,
             l2["z1"] + dz)
        _paint_ellipsoid(hu, grid, c, np.array([27.0, 22.0, 55.0]) * s, 32.0)
        _paint_ellipsoid(hu, grid, (c[0] - sd * 8 * s, c[1] - 4 * s, c[2]),
                         np.array([9.0, 7.0, 22.0]) * s, -60.0)
    for (c, rad, content) in anat.loops:
        _paint_ellipsoid(hu, grid, c, rad, 35.0, anat, inset=ins,
                         below=below_d)
        _paint_ellipsoid(hu, grid, c, rad - 2.5, content, anat, inset=ins,
                         below=below_d)
    # bladder, rectum
    zf, ys = anat.z_fh, anat.ys
    _paint_ellipsoid(hu, grid, (0.0, ys - 78.0 * s, zf + 15.0 * s),
                     np.array([42.0, 30.0, 35.0]) * s, 8.0, anat, inset=ins)
    _paint_ellipsoid(hu, grid, (0.0, ys + 8.0 * s, zf + 5.0 * s),
                     np.array([18.0, 15.0, 40.0]) * s, 30.0)
    _paint_ellipsoid(hu, grid, (0.0, ys + 8.0 * s, zf + 15.0 * s),
                     np.array([10.0, 8.0, 22.0]) * s, -1000.0)
    # muscles: psoas, paraspinal, gluteal
    mus = anat.hu_muscle
    l5 = anat.vmap["L5"]
    for sd in (-1, 1):
        pts = [(t12["xc"] + sd * (t12["wa"] + 6 * s), t12["yc"], t12["zc"]),
               (l2["xc"] + sd * (l2["wa"] + 12 * s), l2["yc"] - 2 * s,
                l2["zc"]),
               (l5["xc"] + sd * (l5["wa"] + 20 * s), l5["yc"] - 8 * s,
                l5["zc"]),
               (sd * 72.0 * s, ys - 42.0 * s, zf + 10 * s)]
        for (a, b, rad) in zip(pts[:-1], pts[1:], (11, 17, 22)):
            _paint_prim(hu, grid, capsule(a, b, rad * s), mus)
        ztop = anat.z_top_anat + 40.0
        for zz0, zz1, rad in ((ztop, t12["zc"], 20.0), (t12["zc"], 0.0, 26.0),
                              (0.0, -70.0 * s, 20.0)):
            x0, y0 = anat.spine_xy(zz0)
            x1, y1 = anat.spine_xy(zz1)
            _paint_prim(hu, grid, capsule(
                (x0 + sd * 36 * s, y0 + 58 * s, zz0),
                (x1 + sd * 36 * s, y1 + 58 * s, zz1), rad * s), mus,
                lambda X, Y, Z: anat.body_q(
                    X, Y, Z, (sk + anat.f_lat, 0, sk + anat.f_post)) < 1)
        _paint_ellipsoid(hu, grid, (sd * 100.0 * s, ys + 40.0 * s, -55.0 * s),
                         np.array([55.0, 45.0, 85.0]) * s, mus, anat,
                         inset=(sk + anat.f_lat, 0, sk + anat.f_post))
    # vessels: aorta (left anterior of the spine), IVC, iliac arteries
    zt = anat.z_top_anat + 40.0
    l4 = anat.vmap["L4"]
    xa, ya = anat.spine_xy(zt)
    _paint_prim(hu, grid, capsule((xa + 14 * s, ya - 30 * s, zt),
                                  (l4["xc"] + 8 * s, l4["yc"] - 30 * s,
                                   l4["zc"]), 12.0 * s), 40.0)
    _paint_prim(hu, grid, capsule((xa - 22 * s, ya - 34 * s, anat.z_dome_r),
                                  (l5["xc"] - 14 * s, l5["yc"] - 26 * s,
                                   l5["zc"]), 11.0 * s), 38.0)
    for sd in (-1, 1):
        _paint_prim(hu, grid, capsule((l4["xc"] + 6 * sd * s,
                                       l4["yc"] - 30 * s, l4["zc"]),
                                      (sd * 55 * s, ys - 40 * s, -50 * s),
                                      6.5 * s), 40.0)
    # spinal canal (CSF/cord) and discs: soft, drawn before bone
    for v in anat.verts:
        if v["kind"] == "S":
            continue
        _paint_prim(hu, grid, ellcyl(v["xc"], v["yc"] + v["wb"] + 8.0 * s,
                                     v["z0"] - 12, v["z1"], 10.0 * s, 8.0 * s),
                    12.0)
    for d in anat.discs:
        u, l = anat.vmap[d["upper"]], anat.vmap[d["lower"]]
        wa = 0.5 * (u["wa"] + l["wa"]) + 1.0
        wb = 0.5 * (u["wb"] + l["wb"]) + 1.0
        _paint_prim(hu, grid, vbody(0.5 * (u["xc"] + l["xc"]),
                                    0.5 * (u["yc"] + l["yc"]), d["z0"] - 3.0,
                                    d["z1"] + 3.0, wa, wb, waist=-0.03),
                    anat.disc_hu)
    for p in anat.cart_prims:
        _paint_prim(hu, grid, p, 120.0)
    return hu


def bone_sdf(anat, grid, prims=None):
    """Signed distance (mm, clipped at +-20) to the anatomical skeleton."""
    out = np.full(grid.shape, 20.0, F32)
    for p in prims if prims is not None else anat.bone_prims:
        w = grid.window(p.lo, p.hi)
        if w is None:
            continue
        sl, X, Y, Z = w
        v = out[sl]
        np.minimum(v, p.f(X, Y, Z), out=v)
    return out


def paint_bone(anat, grid, hu, sdf, tex, coarse):
    """Cortex where -tc < sdf < 0, textured cancellous bone deeper."""
    zi, yi, xi = np.nonzero(sdf < 0)
    d = sdf[zi, yi, xi]
    n = tex.fine.shape[0]
    t = (tex.fine_smooth if coarse else tex.fine)[
        tex.idx(grid.zs, tex.cell_f, n, 0.0)[zi],
        tex.idx(grid.ys, tex.cell_f, n, 0.0)[yi],
        tex.idx(grid.xs, tex.cell_f, n, 0.0)[xi]]
    c = tex.coarse[tex.idx(grid.zs, tex.cell_c, 32, 0.0)[zi],
                   tex.idx(grid.ys, tex.cell_c, 32, 0.0)[yi],
                   tex.idx(grid.xs, tex.cell_c, 32, 0.0)[xi]]
    val = anat.canc + anat.tex_amp * t + 15.0 * c
    val = np.where(d > -anat.tc, anat.cortex, val)
    hu[zi, yi, xi] = val


# --------------------------------------------------------------------------
# Lesions
# --------------------------------------------------------------------------

def _rot(rng, axis=None):
    """A random rotation; with axis, the first local axis along it."""
    if axis is None:
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w),
                          2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z),
                          2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w),
                          1 - 2 * (x * x + y * y)]])
    e0 = np.asarray(axis, float) / np.linalg.norm(axis)
    t = rng.standard_normal(3)
    e1 = t - (t @ e0) * e0
    e1 /= np.linalg.norm(e1)
    return np.array([e0, e1, np.cross(e0, e1)])


def _unit_vectors(rng, n):
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _blob_r(L, X, Y, Z):
    """Normalised, lobulated (and for bone islands spiculated) radius."""
    c, R, r = L["c"], L["R"], L["r"]
    dX, dY, dZ = X - F32(c[0]), Y - F32(c[1]), Z - F32(c[2])
    q2 = 0.0
    for i in range(3):
        qi = dX * F32(R[i, 0]) + dY * F32(R[i, 1]) + dZ * F32(R[i, 2])
        q2 = q2 + (qi / F32(r[i])) ** 2
    rn = np.sqrt(q2)
    dist = np.sqrt(dX * dX + dY * dY + dZ * dZ) + F32(1e-3)
    mod = 1.0
    for e, fr, ph, amp in L.get("lobes", ()):
        dd = (dX * F32(e[0]) + dY * F32(e[1]) + dZ * F32(e[2])) / dist
        mod = mod + F32(amp) * np.cos(dd * F32(fr) + F32(ph))
    sp = L.get("spikes")
    if sp is not None:
        dirs, chw, ln = sp
        for e, lk in zip(dirs, ln):
            dd = (dX * F32(e[0]) + dY * F32(e[1]) + dZ * F32(e[2])) / dist
            mod = mod + F32(lk) * np.clip((dd - chw) / (1 - chw), 0, 1) ** 2
    return rn / mod


def lesion_fields(L, anat, X, Y, Z, bsdf, tex, coarse=False):
    """(label mask, weight w in [0,1] or None, value field or None) of a
    lesion on local coordinates with the local bone sdf."""
    t = L["type"]
    tc = anat.tc
    if t in ("osteoblastic_metastasis", "osteolytic_metastasis",
             "mixed_metastasis", "bone_island", "haemangioma"):
        re = _blob_r(L, X, Y, Z)
        inb = bsdf < 0
        if t == "osteoblastic_metastasis":
            mask = (re < 1.0) & inb
            w = _smoothstep((1.3 - re) / 0.6) * inb
            tx = tex.at("coarse", X, Y, Z, L["toff"])
            val = L["peak"] * np.clip(1.0 + 0.28 * tx, 0.55, 1.45)
            return mask, w, val
        if t == "osteolytic_metastasis":
            lim = L["breach"]
            mask = (re < 1.0) & (bsdf < lim)
            w = _smoothstep((1.12 - re) / 0.2) * (bsdf < lim)
            val = L["val"] + 8.0 * tex.at("coarse", X, Y, Z, L["toff"])
            return mask, w, val
        if t == "mixed_metastasis":
            mask = (re < 1.0) & inb
            w = _smoothstep((1.15 - re) / 0.3) * inb
            tx = 0.7 * tex.at("coarse", X, Y, Z, L["toff"]) + 0.7 * tex.at(
                "fine", X, Y, Z, L["toff"], coarse)
            scl = _smoothstep((tx - L["thr"]) / 0.5 + 0.5)
            val = L["val"] * (1 - scl) + L["peak"] * scl * (
                1.0 + 0.1 * tex.at("fine", X, Y, Z, L["toff"], coarse))
            return mask, w, val
        if t == "bone_island":
            mask = (re < 1.0) & inb
            w = _smoothstep((1.06 - re) / 0.12) * inb
            val = L["val"] * (1.0 + 0.04 * tex.at("fine", X, Y, Z, L["toff"],
                                                  coarse))
            return mask, w, val
        # haemangioma: fatty stroma with vertical rods on a jittered lattice
        inner = bsdf < -0.6 * tc
        mask = (re < 1.0) & inner
        w = _smoothstep((1.05 - re) / 0.1) * inner
        ca, sa = math.cos(L["ang"]), math.sin(L["ang"])
        u = (X - F32(L["c"][0])) * F32(ca) + (Y - F32(L["c"][1])) * F32(sa)
        v = (Y - F32(L["c"][1])) * F32(ca) - (X - F32(L["c"][0])) * F32(sa)
        S = F32(L["pitch"])
        iu = np.floor(u / S).astype(np.int64)
        iv = np.floor(v / S).astype(np.int64)
        jit = L["jit"]
        n = jit.shape[0]
        ju = jit[iu % n, iv % n, 0]
        jv = jit[iu % n, iv % n, 1]
        gu = u - (iu + 0.5 + ju) * S
        gv = v - (iv + 0.5 + jv) * S
        rod = (gu * gu + gv * gv) < F32(L["rod"] ** 2)
        val = np.where(rod, F32(L["rod_hu"]), F32(L["val"]))
        val = val + 10.0 * tex.at("fine", X, Y, Z, L["toff"], coarse)
        return mask, w, np.broadcast_to(val, w.shape)
    if t == "schmorl_node":
        cx, cy, zep, sgn = L["cx"], L["cy"], L["zep"], L["sgn"]
        h = (Z - F32(zep)) * F32(sgn)          # >0 into the body
        e = _ell3(X - F32(cx), Y - F32(cy), Z - F32(zep), L["R1"], L["R2"],
                  L["D"])
        side = h > -0.6
        cup = (e < 0) & side
        rim = (e >= 0) & (e < L["rim"]) & side & (bsdf < 0)
        mask = (cup | rim) & (bsdf < 0.3)
        val = np.where(cup, F32(L["val"]), F32(L["rim_hu"]))
        val = val + 6.0 * tex.at("fine", X, Y, Z, L["toff"], coarse)
        w = mask.astype(F32)
        return mask, w, val
    if t == "endplate_osteitis":
        p = 1.0 - ((X - F32(L["cx"])) / F32(L["ru"])) ** 2 \
            - ((Y - F32(L["cy"])) / F32(L["rv"])) ** 2
        prof = np.clip(p, 0, 1) ** 0.3
        tx = tex.at("coarse", X, Y, Z, L["toff"])
        w = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), F32)
        mask = np.zeros(w.shape, bool)
        dzm = np.full(w.shape, 99.0, F32)
        for zep, sgn, T, (vx, vy, va, vb) in (
                (L["z_up"], 1.0, L["T_up"], L["v_up"]),
                (L["z_lo"], -1.0, L["T_lo"], L["v_lo"])):
            r2 = ((X - F32(vx)) / F32(va)) ** 2 \
                + ((Y - F32(vy)) / F32(vb)) ** 2
            dz = (Z - F32(zep)) * F32(sgn) \
                - F32(anat.cup) * np.clip(1 - r2, 0, 1)
            dzm = np.minimum(dzm, np.abs(dz))
            depth = T * (0.5 + 0.5 * prof) * (1.0 + 0.2 * tx)
            m = (dz < depth) & (dz > -0.6) & (p > 0) & (bsdf < 0)
            ww = np.clip((1.25 * depth - dz) / (0.5 * depth + 1e-3), 0, 1)
            ww = ww * (p > 0) * (dz > -0.6) * (bsdf < 0)
            w = np.maximum(w, ww)
            mask |= m
        val = L["peak"] * (1.0 + 0.15 * tex.at("fine", X, Y, Z, L["toff"],
                                              coarse))
        ero = tex.at("fine", X, Y, Z, (L["toff"][1], 0, 7)) > 1.7
        val = np.where(ero & (dzm < 1.5), F32(90.0), val)
        return mask, w, val
    if t == "degenerative" and L["site"] == "vertebral_margin":
        cx, cy, wa, wb = L["cx"], L["cy"], L["wa"], L["wb"]
        dxy = _ell2(X - F32(cx), Y - F32(cy), wa, wb)
        dx, dy = X - F32(cx), Y - F32(cy)
        rr = np.sqrt(dx * dx + dy * dy) + F32(1e-3)
        cos = (dx * F32(L["ex"]) + dy * F32(L["ey"])) / rr
        ang = np.sqrt(np.clip((cos - L["chw"]) / (1 - L["chw"]), 0, 1))
        h = (Z - F32(L["zep"])) * F32(L["sgn"])    # >0 beyond the endplate
        H, E, L0 = L["H"], L["E"], L["L0"]
        Lh = np.where(h <= 0, L0 * np.clip(1 + h / H, 0, 1),
                      L0 * np.clip(1 - 0.6 * h / E, 0, 1))
        inner = np.where(h <= 0, F32(-1.0), L0 * 0.55 * np.clip(h / E, 0, 1))
        mask = (dxy >= inner) & (dxy < Lh * ang) & (h >= -H) & (h <= E)
        val = L["val"] * (1.0 + 0.06 * tex.at("fine", X, Y, Z, L["toff"],
                                              coarse))
        return mask, mask.astype(F32), val
    # degenerative, facet sclerosis
    nx, ny = L["normal"]
    dxj, dyj = X - F32(L["jc"][0]), Y - F32(L["jc"][1])
    dn = np.abs(dxj * F32(nx) + dyj * F32(ny))
    dt = np.abs(dyj * F32(nx) - dxj * F32(ny))
    mask = (dn < L["depth"]) & (dn > 0.35) & (dt < L["tw"]) \
        & (Z > F32(L["z0"])) & (Z < F32(L["z1"])) & (bsdf < 0.7)
    val = L["val"] * (1.0 + 0.06 * tex.at("fine", X, Y, Z, L["toff"], coarse))
    return mask, mask.astype(F32), val


def _fine_stats(L, anat, tex, step=0.5):
    """Volume, centroid, bbox and longest diameter of a lesion on a fine
    grid: the phantom's truth, independent of the case grid."""
    lo, hi = L["lo"], L["hi"]
    g = Grid(np.arange(lo[0], hi[0] + step, step),
             np.arange(lo[1], hi[1] + step, step),
             np.arange(lo[2], hi[2] + step, step))
    bs = bone_sdf(anat, g, _prims_near(anat, lo, hi))
    _, X, Y, Z = g.window(g.lo - 1, g.hi + 1)
    m, _, _ = lesion_fields(L, anat, X, Y, Z, bs, tex)
    m = np.broadcast_to(m, g.shape)
    zi, yi, xi = np.nonzero(m)
    if len(zi) < 4:
        return None
    pts = np.stack([g.xs[xi], g.ys[yi], g.zs[zi]], 1)
    if len(pts) > 60000:
        pts_d = pts[np.random.default_rng(0).choice(len(pts), 60000, False)]
    else:
        pts_d = pts
    # max projection extent over many directions (Feret diameter)
    k = np.arange(200) + 0.5
    th = np.arccos(1 - k / 200.0)
    ph = np.pi * (1 + 5 ** 0.5) * k
    dirs = np.stack([np.cos(ph) * np.sin(th), np.sin(ph) * np.sin(th),
                     np.cos(th)], 1)
    proj = pts_d @ dirs.T
    diam = float((proj.max(0) - proj.min(0)).max()) + step
    return dict(volume_mm3=float(len(pts) * step ** 3),
                centroid_mm=[float(v) for v in pts.mean(0)],
                bbox_mm=[[float(v) for v in pts.min(0) - step / 2],
                         [float(v) for v in pts.max(0) + step / 2]],
                diameter_mm=round(diam, 2))


def _prims_near(anat, lo, hi):
    lo = np.asarray(lo) - 1.0
    hi = np.asarray(hi) + 1.0
    return [p for p in anat.bone_prims
            if np.all(p.lo <= hi) and np.all(p.hi >= lo)]


_SITES = {
    "osteoblastic_metastasis": (("vertebral_body", .55), ("pelvis", .25),
                                ("rib", .15), ("posterior_element", .05)),
    "osteolytic_metastasis": (("vertebral_body", .5), ("pelvis", .22),
                              ("rib", .18), ("posterior_element", .10)),
    "mixed_metastasis": (("vertebral_body", .55), ("pelvis", .28),
                         ("rib", .17)),
    "bone_island": (("vertebral_body", .45), ("pelvis", .45), ("rib", .10)),
    "haemangioma": (("vertebral_body", 1.0),),
    "schmorl_node": (("endplate", 1.0),),
    "endplate_osteitis": (("endplate", 1.0),),
    "degenerative": (("vertebral_margin", .65), ("posterior_element", .35)),
}


def _target_diameter(r, t):
    """Intended longest diameter (mm): ~55% in 4-8.5 mm, the rest
    log-uniform up to the type's usual maximum."""
    lo, hi = {"bone_island": (4.0, 20.0), "schmorl_node": (4.0, 20.0),
              "haemangioma": (6.0, 36.0), "degenerative": (4.0, 24.0),
              "endplate_osteitis": (12.0, 34.0)}.get(t, (4.0, 40.0))
    if t == "haemangioma" and r.random() < 0.75:
        lo = 10.0                      # mostly 1-3.5 cm
    if r.random() < 0.55:
        return r.uniform(lo + 0.3, max(lo + 0.5, min(8.5, hi)))
    return float(np.exp(r.uniform(np.log(max(lo, 8.0)), np.log(hi))))


class _Placer:
    def __init__(self, anat, fov_lo, fov_hi):
        self.a = anat
        self.lo = np.asarray(fov_lo, float)
        self.hi = np.asarray(fov_hi, float)

    def inside(self, lo, hi, margin=1.5):
        return np.all(lo >= self.lo + margin) and \
            np.all(hi <= self.hi - margin)

    def verts(self):
        return [v for v in self.a.verts
                if v["z0"] >= self.lo[2] + 2 and v["z1"] <= self.hi[2] - 2]


def _blob(r, L, c, radii, axis=None, lobes=0.15, nlobes=4):
    L["c"] = np.asarray(c, float)
    L["R"] = _rot(r, axis)
    L["r"] = np.asarray(radii, float) / (1.0 + lobes * nlobes * 0.3)
    L["lobes"] = [(e, r.uniform(2.0, 5.0), r.uniform(0, 2 * np.pi),
                   r.uniform(0.3, 1.0) * lobes)
                  for e in _unit_vectors(r, nlobes)]
    ext = float(np.max(radii)) * (1.0 + lobes * nlobes * 0.6) * 1.35 + 1.0
    L["lo"] = L["c"] - ext
    L["hi"] = L["c"] + ext


def _propose(r, anat, P, t, site):
    """One candidate lesion of type t at site (dict) or None."""
    s, a = anat.s, anat
    D = _target_diameter(r, t)
    L = dict(type=t, site=site, vertebra=None,
             toff=tuple(r.uniform(0, 100, 3)))
    if site in ("vertebral_body", "rib", "pelvis", "posterior_element") \
            and t != "degenerative":
        if site == "vertebral_body":
            vs = P.verts()
            if not vs:
                return None
            v = vs[r.integers(len(vs))]
            L["vertebra"] = v["name"]
            post = t == "osteolytic_metastasis" and r.random() < 0.6
            c = (v["xc"] + r.uniform(-0.5, 0.5) * v["wa"],
                 v["yc"] + (r.uniform(0.1, 0.75) if post else
                            r.uniform(-0.55, 0.55)) * v["wb"],
                 v["zc"] + r.uniform(-0.55, 0.55) * v["hh"])
            axis = None
            radii = np.full(3, D / 2) * r.uniform(0.75, 1.05, 3)
            if t == "haemangioma":   # centred, clear of the endplates
                c = (v["xc"] + r.uniform(-0.3, 0.3) * v["wa"],
                     v["yc"] + r.uniform(-0.3, 0.3) * v["wb"],
                     v["zc"] + r.uniform(-0.15, 0.15) * v["hh"])
                radii[2] = min(radii[2], 0.75 * v["hh"])
        elif site == "rib":
            cands = [rb for rb in a.ribs
                     if np.any(np.all((rb["pts"] > P.lo + 12)
                                      & (rb["pts"] < P.hi - 12), 1))]
            if not cands:
                return None
            rb = cands[r.integers(len(cands))]
            pts = rb["pts"]
            inn = np.all((pts > P.lo + 12) & (pts < P.hi - 12), 1)
            ok = np.nonzero(inn)[0]
            ok = ok[(ok >= 2) & (ok < len(pts) - 1)]
            if len(ok) == 0:
                return None
            i = ok[r.integers(len(ok))]
            f = r.uniform(0, 1)
            c = pts[i] * (1 - f) + pts[i + 1] * f
            axis = pts[i + 1] - pts[i]
            L["vertebra"] = None
            L["rib"] = rb["name"]
            radii = np.array([D / 2, rb["rr"] + 1.5, rb["rr"] + 1.5])
            D = min(D, 30.0)
            radii[0] = max(D / 2, 2.2)
        elif site == "pelvis":
            p, th = a.pelvis_pts[r.integers(len(a.pelvis_pts))]
            c = np.asarray(p) + r.uniform(-0.5, 0.5, 3) * th
            axis = None
            radii = np.full(3, D / 2) * r.uniform(0.8, 1.05, 3)
            if c[2] < 0 and abs(c[0] - a.vmap["S1"]["xc"]) < 30 * s and \
                    c[2] > -30 * s:
                L["vertebra"] = "S1"
        else:   # posterior_element (pedicle / pillar)
            vs = [v for v in P.verts() if v["kind"] != "S"]
            if not vs:
                return None
            v = vs[r.integers(len(vs))]
            L["vertebra"] = v["name"]
            Pp = np.array(v["pillars"][r.integers(2)])
            c = Pp + r.uniform(-3, 3, 3)
            axis = None
            D = min(D, 22.0)
            radii = np.full(3, D / 2) * r.uniform(0.8, 1.05, 3)
        lob = {"bone_island": 0.04, "haemangioma": 0.04,
               "osteolytic_metastasis": 0.2}.get(t, 0.14)
        _blob(r, L, c, radii, axis, lobes=lob)
        if t == "osteoblastic_metastasis":
            L["peak"] = r.uniform(420.0, 800.0)
        elif t == "osteolytic_metastasis":
            L["val"] = r.uniform(15.0, 50.0)
            # the cortex inside the lesion is destroyed; soft-tissue
            # extension beyond it in some
            L["breach"] = r.uniform(1.5, 4.0) if r.random() < 0.4 else 0.3
        elif t == "mixed_metastasis":
            L["val"] = r.uniform(20.0, 60.0)
            L["peak"] = r.uniform(500.0, 900.0)
            L["thr"] = r.uniform(-0.4, 0.4)
        elif t == "bone_island":
            L["val"] = r.uniform(1300.0, 2000.0)
            L["r"] = L["r"] * 0.85
            k = int(r.integers(8, 18))
            L["spikes"] = (_unit_vectors(r, k), math.cos(np.radians(
                r.uniform(5.0, 9.0))), r.uniform(0.2, 0.6, k))
            L["lo"] = L["c"] - radii.max() * 2.0 - 1
            L["hi"] = L["c"] + radii.max() * 2.0 + 1
        elif t == "haemangioma":
            L["val"] = r.uniform(-60.0, 10.0)
            L["pitch"] = r.uniform(3.5, 5.5)
            L["rod"] = L["pitch"] * r.uniform(0.16, 0.24)
            L["rod_hu"] = r.uniform(350.0, 650.0)
            L["ang"] = r.uniform(0, np.pi)
            L["jit"] = r.uniform(-0.18, 0.18, (8, 8, 2))
        return L
    vs = P.verts()
    if site == "endplate":
        pairs = [d for d in a.discs if d["upper"] in {v["name"] for v in vs}
                 and d["lower"] in {v["name"] for v in vs}]
        if not pairs:
            return None
        if t == "endplate_osteitis":
            wts = np.array([3.0 if d["narrow"] < 1 else 1.0 for d in pairs])
        else:
            wts = np.ones(len(pairs))
        d = pairs[r.choice(len(pairs), p=wts / wts.sum())]
        up, lo = a.vmap[d["upper"]], a.vmap[d["lower"]]
        if t == "schmorl_node":
            v = up if r.random() < 0.5 else lo
            L["vertebra"] = v["name"]
            top = v is lo                           # superior endplate of lo
            L["zep"] = v["z1"] if top else v["z0"]
            L["sgn"] = -1.0 if top else 1.0
            L["cx"] = v["xc"] + r.uniform(-0.35, 0.35) * v["wa"]
            L["cy"] = v["yc"] + r.uniform(-0.3, 0.45) * v["wb"]
            r2 = ((L["cx"] - v["xc"]) / v["wa"]) ** 2 \
                + ((L["cy"] - v["yc"]) / v["wb"]) ** 2
            L["zep"] += L["sgn"] * a.cup * max(0.0, 1.0 - r2)  # cupped plate
            Rm = min(D / 2, 0.55 * v["wb"])
            L["R1"], L["R2"] = Rm * r.uniform(0.8, 1.0), Rm * r.uniform(0.7, 1)
            L["D"] = float(np.clip(Rm * r.uniform(0.6, 1.2), 2.0,
                                   0.9 * v["hh"]))
            L["rim"] = r.uniform(0.25, 0.45)
            L["val"] = r.uniform(60.0, 100.0)
            L["rim_hu"] = r.uniform(500.0, 900.0)
            ext = np.array([L["R1"], L["R2"], L["D"]]) * 1.6 + 1.5
            c = np.array([L["cx"], L["cy"], L["zep"]])
            L["lo"], L["hi"] = c - ext, c + ext
            return L
        # endplate osteitis: both endplates of one disc
        L["vertebra"] = up["name"]
        L["disc"] = "%s-%s" % (up["name"], lo["name"])
        wa = min(up["wa"], lo["wa"])
        wb = min(up["wb"], lo["wb"])
        L["T_up"] = r.uniform(3.0, 10.0)
        L["T_lo"] = float(np.clip(L["T_up"] * r.uniform(0.7, 1.3), 3.0, 10.0))
        inplane = float(np.clip(D * r.uniform(1.0, 1.3),
                                max(18.0, 3.0 * max(L["T_up"], L["T_lo"])),
                                36.0))
        L["ru"] = min(inplane / 2, 0.9 * wa)
        L["rv"] = min(inplane / 2 * r.uniform(0.75, 1.0), 0.9 * wb)
        L["cx"] = 0.5 * (up["xc"] + lo["xc"] + r.uniform(-1, 1)
                         * (wa - L["ru"]))
        L["cy"] = 0.5 * (up["yc"] + lo["yc"] + r.uniform(-1, 1)
                         * (wb - L["rv"]))
        L["z_up"], L["z_lo"] = up["z0"], lo["z1"]
        L["v_up"] = (up["xc"], up["yc"], up["wa"], up["wb"])
        L["v_lo"] = (lo["xc"], lo["yc"], lo["wa"], lo["wb"])
        L["peak"] = r.uniform(450.0, 900.0)
        L["lo"] = np.array([L["cx"] - L["ru"] - 1, L["cy"] - L["rv"] - 1,
                            L["z_lo"] - 1.6 * L["T_lo"] - 1])
        L["hi"] = np.array([L["cx"] + L["ru"] + 1, L["cy"] + L["rv"] + 1,
                            L["z_up"] + 1.6 * L["T_up"] + 1])
        return L
    if site == "vertebral_margin":
        cand = [v for v in vs if v["kind"] != "S"]
        if not cand:
            return None
        v = cand[r.integers(len(cand))]
        L["vertebra"] = v["name"]
        top = r.random() < 0.5
        L["zep"] = v["z1"] if top else v["z0"]
        L["sgn"] = 1.0 if top else -1.0
        L["cx"], L["cy"], L["wa"], L["wb"] = v["xc"], v["yc"], v["wa"], v["wb"]
        th = np.radians(-90.0 + r.uniform(-80.0, 80.0))
        L["ex"], L["ey"] = math.cos(th), math.sin(th)
        rloc = 0.5 * (v["wa"] + v["wb"])
        hw = float(np.clip(D * r.uniform(0.3, 0.5) / rloc, np.radians(8),
                           np.radians(60)))
        L["chw"] = math.cos(hw)
        disc = [d for d in a.discs if (d["lower"] == v["name"] and top)
                or (d["upper"] == v["name"] and not top)]
        dh = (disc[0]["z1"] - disc[0]["z0"]) if disc else 8.0
        L["L0"] = float(np.clip(D * r.uniform(0.3, 0.5), 2.5, 9.0))
        L["H"] = float(np.clip(D * r.uniform(0.3, 0.5), 3.0, 8.0))
        L["E"] = float(np.clip(D * r.uniform(0.15, 0.35), 0.8,
                               dh * r.uniform(0.3, 0.6)))
        L["val"] = r.uniform(650.0, 1050.0)
        ext = rloc + L["L0"] + 2
        L["lo"] = np.array([v["xc"] - ext, v["yc"] - ext,
                            L["zep"] - L["H"] - L["E"] - 1])
        L["hi"] = np.array([v["xc"] + ext, v["yc"] + ext,
                            L["zep"] + L["H"] + L["E"] + 1])
        # shrink the box to the spur's side
        px = v["xc"] + L["ex"] * rloc
        py = v["yc"] + L["ey"] * rloc
        half = rloc * math.sin(min(hw * 1.3, np.pi / 2)) + L["L0"] + 3
        L["lo"][:2] = np.maximum(L["lo"][:2], [px - half, py - half])
        L["hi"][:2] = np.minimum(L["hi"][:2], [px + half, py + half])
        return L
    # facet joint sclerosis
    names = {v["name"] for v in vs}
    js = [j for j in a.joints if j["upper"] in names and j["lower"] in names]
    if not js:
        return None
    j = js[r.integers(len(js))]
    L["vertebra"] = j["upper"]
    L["joint"] = "%s-%s %s" % (j["upper"], j["lower"],
                               "left" if j["side"] > 0 else "right")
    L["jc"] = j["c"]
    L["normal"] = j["normal"]
    L["depth"] = float(np.clip(D * r.uniform(0.25, 0.4), 2.0, 5.5))
    L["tw"] = float(np.clip(D * r.uniform(0.3, 0.5), 2.0, j["ra"] * 1.4))
    zc = 0.5 * (j["z0"] + j["z1"])
    hz = min(0.5 * (j["z1"] - j["z0"]), max(2.0, D / 2))
    L["z0"], L["z1"] = zc - hz, zc + hz
    L["val"] = r.uniform(650.0, 1000.0)
    e = max(L["depth"], L["tw"]) + 2.0
    L["lo"] = np.array([j["c"][0] - e, j["c"][1] - e, L["z0"] - 1])
    L["hi"] = np.array([j["c"][0] + e, j["c"][1] + e, L["z1"] + 1])
    return L


_MAX_D = {"bone_island": 24.0, "schmorl_node": 22.0, "degenerative": 30.0}


def _sample_lesions(seed, anat, tex, fov_lo, fov_hi, n_lesions=None,
                    lesion_types=None):
    r = np.random.default_rng([seed, 3])
    if n_lesions is None:
        if lesion_types is None and r.random() < 1.0 / 3.0:
            n = 0
        else:
            n = int(r.choice(np.arange(1, 7), p=[.28, .24, .18, .13, .10,
                                                  .07]))
    else:
        n = int(n_lesions)
    types = list(lesion_types) if lesion_types else LESION_TYPES
    P = _Placer(anat, fov_lo, fov_hi)
    out = []
    # types dealt from a shuffled deck: balanced over cases, mixed within
    deck = []
    while len(deck) < n:
        deck += [types[i] for i in r.permutation(len(types))]
    for t in deck[:n]:
        sites, w = zip(*_SITES[t])
        for attempt in range(40):
            site = sites[r.choice(len(sites), p=np.array(w) / sum(w))]
            L = _propose(r, anat, P, t, site)
            if L is None or not P.inside(L["lo"], L["hi"]):
                continue
            if any(np.all(L["lo"] < o["hi"] + 2) and
                   np.all(L["hi"] > o["lo"] - 2) for o in out):
                continue
            st = _fine_stats(L, anat, tex)
            if st is None or not \
                    4.0 <= st["diameter_mm"] <= _MAX_D.get(t, 40.0):
                continue
            L.update(st)
            out.append(L)
            break
    return out


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    hu: np.ndarray
    labels: np.ndarray
    bone: np.ndarray
    spacing: tuple
    origin: tuple
    lesions: list
    seed: int
    geometry: dict
    anatomy: dict = dataclasses.field(default_factory=dict)


def sample_geometry(rng):
    """Scanner geometry: 512x512, square pixels 0.6-0.9 mm, one of the
    usual reconstructed slice thicknesses (spacing = thickness), enough
    slices for 150-400 mm of trunk; where the FOV starts is a fraction of
    the feasible range, resolved against the anatomy."""
    px = float(np.round(rng.uniform(0.6, 0.9), 4))
    t = float(THICKNESSES[rng.integers(len(THICKNESSES))])
    extent = rng.uniform(150.0, 400.0)
    n = int(max(1, round(extent / t)))
    return dict(rows=512, cols=512, pixel_spacing=px, slice_thickness=t,
                spacing_between_slices=t, n_slices=n,
                top_frac=float(rng.uniform(0, 1)),
                fov_dx=float(rng.uniform(-12, 12)),
                fov_dy=float(rng.uniform(-15, 10)))


def _resolve(anat, geo):
    """z range and in-plane origin of the scan for this anatomy."""
    t = geo["spacing_between_slices"]
    n = geo["n_slices"]
    extent = n * t
    lo = max(anat.vmap["T12"]["zc"], extent - 172.0)
    hi = anat.vmap["T8"]["z1"]
    top = lo + geo["top_frac"] * max(hi - lo, 0.0)
    z0 = top - extent + 0.5 * t               # centre of the lowest slice
    px = geo["pixel_spacing"]
    x0 = geo["fov_dx"] - 0.5 * (geo["cols"] - 1) * px
    y0 = geo["fov_dy"] - 0.5 * (geo["rows"] - 1) * px
    return np.array([x0, y0, z0])


def _blur_axis(a, k, axis):
    """Convolution with a symmetric odd kernel k along axis, edges
    replicated; float32, no padded copy."""
    if len(k) == 1:
        return a
    h = len(k) // 2
    n = a.shape[axis]

    def sl(i0, i1):
        t = [slice(None)] * a.ndim
        t[axis] = slice(i0, i1)
        return tuple(t)
    out = a * F32(k[h])
    tmp = np.empty_like(a)
    for o in range(1, h + 1):
        kv = F32(k[h + o])
        if o >= n:
            out += (a[sl(0, 1)] + a[sl(n - 1, n)]) * kv
            continue
        t = tmp[sl(0, n - o)]
        np.multiply(a[sl(o, n)], kv, out=t)
        out[sl(0, n - o)] += t                       # a[i+o]
        np.multiply(a[sl(0, n - o)], kv, out=t)
        out[sl(o, n)] += t                           # a[i-o]
        out[sl(n - o, n)] += a[sl(n - 1, n)] * kv    # replicated edges
        out[sl(0, o)] += a[sl(0, 1)] * kv
    return out


def _gauss(sigma_vox):
    if sigma_vox < 0.2:
        return np.array([1.0], F32)
    h = max(1, int(math.ceil(2.5 * sigma_vox)))
    x = np.arange(-h, h + 1)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return (k / k.sum()).astype(F32)


def _render(seed, anat, tex, lesions, grid, sub, z_kernel, psf_mm, noise,
            coarse):
    """HU/labels/bone on grid. sub: z sub-slices per slice (slice profile),
    z_kernel: extra z blur, psf_mm: in-plane Gaussian sigma, noise sigma."""
    dz = grid.zs[1] - grid.zs[0] if len(grid.zs) > 1 else 1.0
    # Soft tissue on the output grid; bone and lesions on sub-slices whose
    # mean is the slice (partial volume of small/thin bone along z).
    hu = render_soft(anat, grid)
    if sub > 1:
        off = (np.arange(sub) + 0.5) / sub - 0.5
        rg = Grid(grid.xs, grid.ys, (grid.zs[:, None] + off[None, :] * dz
                                     ).ravel())
        hu = np.repeat(hu, sub, axis=0)
    else:
        rg = grid
    sdf = bone_sdf(anat, rg)
    paint_bone(anat, rg, hu, sdf, tex, coarse)
    for L in lesions:
        w = rg.window(L["lo"], L["hi"])
        if w is None:
            continue
        sl, X, Y, Z = w
        _, wgt, val = lesion_fields(L, anat, X, Y, Z, sdf[sl], tex, coarse)
        h = hu[sl]
        h += wgt * (val - h)
    bone = sdf < 0
    del sdf
    if sub > 1:
        nz = grid.shape[0]
        hu = hu.reshape(nz, sub, *grid.shape[1:]).mean(1, dtype=F32)
        bone = bone.reshape(nz, sub, *grid.shape[1:]).sum(1) * 2 >= sub
    # labels on the output grid from 2x2x2 sub-samples per voxel
    labels = np.zeros(grid.shape, np.uint16)
    d = np.array([grid.xs[1] - grid.xs[0], grid.ys[1] - grid.ys[0], dz])
    kept = []
    for L in lesions:
        w = grid.window(L["lo"] - d, L["hi"] + d)
        if w is None:
            continue
        sl = w[0]
        occ = None
        for ox in (-0.25, 0.25):
            for oy in (-0.25, 0.25):
                for oz in (-0.25, 0.25):
                    g = Grid(grid.xs[sl[2]] + ox * d[0], grid.ys[sl[1]]
                             + oy * d[1], grid.zs[sl[0]] + oz * d[2])
                    bs = bone_sdf(anat, g, _prims_near(anat, g.lo, g.hi))
                    _, X, Y, Z = g.window(g.lo - 1, g.hi + 1)
                    m, _, _ = lesion_fields(L, anat, X, Y, Z, bs, tex, coarse)
                    m = np.broadcast_to(m, g.shape).astype(np.uint8)
                    occ = m if occ is None else occ + m
        lab = occ >= 4
        if not lab.any():
            if occ.max() == 0:
                continue
            lab = occ == occ.max()
        sub_l = labels[sl]
        lab &= sub_l == 0
        if not lab.any():
            continue
        kept.append(L)
        sub_l[lab] = len(kept)
    # scanner blur and noise (noise added first so that it is correlated)
    nr = np.random.default_rng([seed, 4])
    kx = _gauss(psf_mm / (grid.xs[1] - grid.xs[0]))
    ky = _gauss(psf_mm / (grid.ys[1] - grid.ys[0]))
    gain = float(np.sqrt((kx ** 2).sum() * (ky ** 2).sum()
                         * (z_kernel ** 2).sum()))
    # uniform noise of the wanted variance; Gaussian after the blur
    nz = nr.random(grid.shape, dtype=F32)
    nz -= F32(0.5)
    nz *= F32(noise / gain * math.sqrt(12.0))
    hu += nz
    del nz
    hu = _blur_axis(hu, kx, 2)
    hu = _blur_axis(hu, ky, 1)
    hu = _blur_axis(hu, z_kernel, 0)
    np.clip(hu, -1024, 3071, out=hu)
    hu = np.rint(hu).astype(np.int16)
    bone |= labels > 0
    return hu, labels, bone, kept


def _core_hu(hu, m):
    """Median HU of the label eroded by one voxel (6-neighbourhood): the
    lesion's own attenuation with less partial volume; of the whole label
    when fewer than 4 voxels survive the erosion."""
    zz, yy, xx = np.nonzero(m)
    sl = tuple(slice(max(int(v.min()) - 1, 0), int(v.max()) + 2)
               for v in (zz, yy, xx))
    b = np.pad(m[sl], 1)
    e = b[1:-1, 1:-1, 1:-1].copy()
    for ax in range(3):
        for sh in (-1, 1):
            e &= np.roll(b, sh, ax)[1:-1, 1:-1, 1:-1]
    h = hu[sl]
    v = h[e] if e.sum() >= 4 else h[m[sl]]
    return round(float(np.median(v)), 1)


def _case(seed, grid, sub, z_kernel, coarse, geometry, origin_fov,
          n_lesions, lesion_types, anat=None):
    anat = anat or Anatomy(seed)
    tex = Textures(seed)
    px = geometry["pixel_spacing"]
    fov_lo = np.array([origin_fov[0] - px / 2, origin_fov[1] - px / 2,
                       origin_fov[2] - geometry["slice_thickness"] / 2])
    fov_hi = fov_lo + np.array([geometry["cols"] * px, geometry["rows"] * px,
                                geometry["n_slices"]
                                * geometry["spacing_between_slices"]])
    lesions = _sample_lesions(seed, anat, tex, fov_lo, fov_hi, n_lesions,
                              lesion_types)
    rn = np.random.default_rng([seed, 4, 1])
    psf = rn.uniform(0.34, 0.55)      # in-plane PSF sigma (FWHM 0.8-1.3 mm)
    noise = rn.uniform(10.0, 25.0)
    if coarse:
        psf = math.sqrt(psf ** 2 + (0.45 * TRAIN_SPACING) ** 2)
        noise *= rn.uniform(0.5, 0.8)
    hu, labels, bone, kept = _render(seed, anat, tex, lesions, grid, sub,
                                     z_kernel, psf, noise, coarse)
    out = []
    for i, L in enumerate(kept, 1):
        m = labels == i
        core = _core_hu(hu, m)
        out.append(dict(id=i, type=L["type"],
                        type_index=LESION_TYPES.index(L["type"]) + 1,
                        site=L["site"], vertebra=L["vertebra"],
                        centroid_mm=L["centroid_mm"], bbox_mm=L["bbox_mm"],
                        volume_mm3=round(L["volume_mm3"], 1),
                        diameter_mm=L["diameter_mm"],
                        mean_hu=round(float(hu[m].mean()), 1),
                        core_hu=core,
                        voxels=int(m.sum()),
                        metastatic=L["type"] in METASTATIC))
    spacing = (float(grid.zs[1] - grid.zs[0]) if len(grid.zs) > 1 else
               geometry["slice_thickness"], float(grid.ys[1] - grid.ys[0]),
               float(grid.xs[1] - grid.xs[0]))
    origin = (float(grid.xs[0]), float(grid.ys[0]), float(grid.zs[0]))
    info = dict(cancellous_hu=round(anat.canc, 1),
                cortical_hu=round(anat.cortex, 1),
                cortical_mm=round(anat.tc, 2), scale=round(anat.s, 3),
                noise_sigma=round(noise, 1), psf_sigma_mm=round(psf, 3),
                vertebrae={v["name"]: [round(v["z0"], 1), round(v["z1"], 1)]
                           for v in anat.verts})
    return Case(hu=hu, labels=labels, bone=bone, spacing=spacing,
                origin=origin, lesions=out, seed=int(seed),
                geometry=geometry, anatomy=info)


def generate_case(seed, geometry=None, spacing=None, shape=None,
                  n_lesions=None, lesion_types=None):
    """A case on the scanner grid (geometry, sampled from seed if None), or
    on a grid of the given spacing (dz,dy,dx) and shape (nz,ny,nx) centred
    on the scan's field of view. lesion_types restricts the types (and
    then at least one lesion is placed unless n_lesions says otherwise)."""
    seed = int(seed)
    geo = dict(geometry) if geometry else sample_geometry(
        np.random.default_rng([seed, 1]))
    anat = Anatomy(seed)
    o = _resolve(anat, geo)
    t = geo["slice_thickness"]
    if spacing is None and shape is None:
        px = geo["pixel_spacing"]
        xs = o[0] + np.arange(geo["cols"]) * px
        ys = o[1] + np.arange(geo["rows"]) * px
        zs = o[2] + np.arange(geo["n_slices"]) * geo["spacing_between_slices"]
        sub = max(1, int(math.ceil(t / 1.25 - 1e-6)))
        zk = np.array([0.12, 0.76, 0.12], F32)
        coarse = False
    else:
        px = geo["pixel_spacing"]
        c = o + 0.5 * np.array([(geo["cols"] - 1) * px,
                                (geo["rows"] - 1) * px,
                                (geo["n_slices"] - 1) * t])
        sp = np.broadcast_to(np.asarray(spacing if spacing is not None
                                        else (t, px, px), float), 3)
        if shape is None:
            shape = (geo["n_slices"] * t / sp[0], geo["rows"] * px / sp[1],
                     geo["cols"] * px / sp[2])
        shape = [max(1, int(round(v))) for v in shape]
        zs = c[2] + (np.arange(shape[0]) - 0.5 * (shape[0] - 1)) * sp[0]
        ys = c[1] + (np.arange(shape[1]) - 0.5 * (shape[1] - 1)) * sp[1]
        xs = c[0] + (np.arange(shape[2]) - 0.5 * (shape[2] - 1)) * sp[2]
        coarse = sp[2] > 1.2
        sub = max(1, int(math.ceil(sp[0] / 1.25 - 1e-6)))
        zk = _zprofile(t, sp[0]) if coarse else np.array([0.12, 0.76, 0.12],
                                                         F32)
        if coarse:
            sub = 1
    geo_out = dict(geo, origin_fov=[float(v) for v in o])
    return _case(seed, Grid(xs, ys, zs), sub, zk, coarse, geo_out, o,
                 n_lesions, lesion_types, anat)


def _zprofile(t, dz):
    """z blur of a scan acquired at slice thickness t and linearly
    resampled to spacing dz: box(t) * triangle(t), variance t^2/4."""
    var = t * t / 12.0 + (t * t / 6.0 if t > dz else 0.0)
    return _gauss(math.sqrt(var) / dz)


def sample_training_case(seed, n_lesions=None, lesion_types=None):
    """The seed's case on an isotropic 1.5 mm grid covering the trunk over
    the scan's z range, with the scan's slice thickness simulated as z blur
    (and the in-plane blur of resampling)."""
    seed = int(seed)
    geo = sample_geometry(np.random.default_rng([seed, 1]))
    anat = Anatomy(seed)
    o = _resolve(anat, geo)
    t = geo["slice_thickness"]
    sp = TRAIN_SPACING
    z0 = o[2]
    z1 = o[2] + (geo["n_slices"] - 1) * t
    zz = np.linspace(z0, z1, 9)
    amax = float(np.max(anat.a_of(zz)))
    ba, bp = anat.b_of(zz)
    x0, x1 = -amax - 6.0, amax + 6.0
    y0, y1 = -float(np.max(ba)) - 6.0, float(np.max(bp)) + 6.0
    xs = np.arange(x0, x1 + 1e-6, sp)
    ys = np.arange(y0, y1 + 1e-6, sp)
    zs = np.arange(z0, z1 + 1e-6, sp)
    geo_out = dict(geo, origin_fov=[float(v) for v in o], training=True)
    return _case(seed, Grid(xs, ys, zs), 1, _zprofile(t, sp), True, geo_out,
                 o, n_lesions, lesion_types, anat)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

_CT = []


def _ct_writer():
    """scripts/make-ct-series loaded as a module (its DICOM conventions)."""
    if _CT:
        return _CT[0]
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "make-ct-series")
    loader = importlib.machinery.SourceFileLoader("vigil_make_ct_series", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    _CT.append(mod)
    return mod


def _body_part(case):
    v = case.anatomy.get("vertebrae", {})
    z0 = case.origin[2]
    z1 = z0 + (case.hu.shape[0] - 1) * case.spacing[0]
    chest = "T11" in v and z1 > v["T11"][0]
    pelvis = z0 < 20.0
    if chest and pelvis:
        return "CHESTABDPELVIS"
    if chest:
        return "CHESTABDOMEN"
    return "ABDOMENPELVIS" if pelvis else "ABDOMEN"


def write_case(case, out_dir, patient_id=None, accession=None,
               study_uid=None):
    """Writes out_dir/dicom/CT00001.dcm.. (one file per slice),
    out_dir/labels.npz and out_dir/truth.json; returns the truth dict."""
    ct = _ct_writer()
    os.makedirs(os.path.join(out_dir, "dicom"), exist_ok=True)
    seed = case.seed
    r = np.random.default_rng([seed, 6])
    patient_id = patient_id or "VGP%06d" % (seed % 1000000)
    accession = accession or "VGA%08d" % (seed % 100000000)
    study_uid = study_uid or ct.new_uid()
    series_uid = ct.new_uid()
    nz = case.hu.shape[0]
    u = r.random()
    if u < 2.0 / 3.0:
        order, inst = "ascending", np.arange(nz)
        names = np.arange(nz)
    elif u < 5.0 / 6.0:
        order = "descending"
        inst = nz - 1 - np.arange(nz)
        names = inst
    else:
        order = "shuffled"
        inst = nz - 1 - np.arange(nz)
        names = r.permutation(nz)
    dt = datetime.datetime(2024, 1, 1) + datetime.timedelta(
        minutes=int(r.integers(0, 365 * 24 * 60)))
    dz, dy, dx = case.spacing
    thick = dz if case.geometry.get("training") else \
        case.geometry.get("slice_thickness", dz)
    for k in range(nz):
        sop = ct.new_uid()
        ds = ct.make_dataset(case.hu[k], study_uid=study_uid,
                             series_uid=series_uid, sop_uid=sop,
                             index=int(inst[k]), thickness=thick, spacing=dx,
                             patient_id=patient_id,
                             patient_name="Phantom^%d" % seed,
                             accession=accession,
                             study_date=dt.strftime("%Y%m%d"),
                             study_time=dt.strftime("%H%M%S"),
                             series_number=1, body_part=_body_part(case))
        z = case.origin[2] + k * dz
        ds.Manufacturer = "Vigil phantom"
        ds.StudyDescription = "Synthetic CT trunk with bone lesions"
        ds.SeriesDescription = "Axial %g mm phantom seed %d" % (thick, seed)
        ds.ImagePositionPatient = [round(case.origin[0], 4),
                                   round(case.origin[1], 4), round(z, 4)]
        ds.SliceLocation = "%.4f" % z
        ds.SpacingBetweenSlices = "%g" % dz
        ds.PixelSpacing = [round(dy, 6), round(dx, 6)]
        ds.SliceThickness = "%g" % thick
        ds.save_as(os.path.join(out_dir, "dicom",
                                "CT%05d.dcm" % (names[k] + 1)),
                   write_like_original=False)
    return write_truth(case, out_dir, study_uid=study_uid,
                       series_uid=series_uid, patient_id=patient_id,
                       accession=accession, file_order=order)


def write_truth(case, out_dir, **extra):
    """Writes out_dir/labels.npz (labels, bone, spacing, origin) and
    out_dir/truth.json; returns the truth dict."""
    os.makedirs(out_dir, exist_ok=True)
    truth = dict(seed=case.seed, study_uid=extra.pop("study_uid", None),
                 series_uid=extra.pop("series_uid", None),
                 spacing=list(case.spacing), origin=list(case.origin),
                 shape=list(case.hu.shape), lesions=case.lesions,
                 positive=any(L["metastatic"] for L in case.lesions))
    truth.update(extra)
    truth["geometry"] = case.geometry
    truth["anatomy"] = case.anatomy
    np.savez_compressed(os.path.join(out_dir, "labels.npz"),
                        labels=case.labels, bone=case.bone,
                        spacing=np.array(case.spacing),
                        origin=np.array(case.origin))
    with open(os.path.join(out_dir, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    return truth
