"""The bone-lesion segmentation network and the inference steps that the
node's C code (inference/bone.c) mirrors, for training, validation and the
Python side of the benchmark.

Architecture, in the spirit of BLDS (segment lesions in bone, then type
each one): a small 3D U-Net on an isotropic 1.5 mm grid, three levels below
the stem, 9 output classes (background + the 8 lesion types). Typing is per lesion:
the voxel class probabilities of a connected lesion are summed, weighted by
its foreground probability, and the largest sum names the type, so one
lesion gets one type. A second stage (lesion_classifier.py) can then
look at each candidate lesion again, and drop it or type it (find_lesions
with a classifier). The network takes raw Hounsfield units and windows
them itself (a bone and a soft-tissue window), so the C side passes HU
unchanged and cannot disagree with training about normalisation.

Why this size: the node must analyse a 512x512x300 CT in under 30 s on two
CPU cores, and training must fit in about two hours on the same cores.
Most convolutions run at half resolution (about 16 kFLOP per voxel), and
only windows that hold bone are run (sliding-window inference restricted
to bone).
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Soft-tissue window centre/width and bone window scale for the two input
# channels (HU).
SOFT_CENTER, SOFT_WIDTH = 40.0, 400.0
BONE_SCALE = 1000.0
HU_LO, HU_HI = -1000.0, 2000.0


def conv(cin, cout, k=3, stride=1):
    """Convolution and ReLU, no normalisation: batch statistics of 40^3
    training patches did not carry over to the node's 64^3 windows (a
    lesion scored 1.00 with batch statistics and 0.03 with the running
    ones), and the network is shallow enough to train without."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2),
        nn.ReLU(inplace=True),
    )


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


class BoneSeg(nn.Module):
    """Input [B, 1, D, H, W] in HU (D, H, W multiples of 8); output
    [B, K+1, D, H, W] class probabilities (softmax), class 0 background.

    A stem at full resolution (1.5 mm) keeps the edges, a strided
    convolution halves the grid, and a three-level U-Net runs from there
    (3, 6 and 12 mm): the deepest level sees about 10 cm, enough to tell a
    vertebral body's fatty haemangioma or an endplate band from the
    anatomy around it. Its features come back to full resolution and are
    fused with the stem. Full-resolution 3x3x3 convolutions are the costly
    ones on a CPU, so there are only two, of 8 channels; the wide ones run
    at 6 and 12 mm, where they are cheap."""

    __constants__ = ["hu_lo", "hu_hi", "soft_center", "soft_width", "bone_scale"]

    def __init__(self, n_classes: int = 8, ch=(8, 16, 48, 64)):
        super().__init__()
        self.hu_lo, self.hu_hi = HU_LO, HU_HI
        self.soft_center, self.soft_width = SOFT_CENTER, SOFT_WIDTH
        self.bone_scale = BONE_SCALE
        c0, c1, c2, c3 = ch
        self.stem = conv(2, c0)
        self.down = nn.Sequential(conv(c0, c1, stride=2), conv(c1, c1))
        self.enc = nn.Sequential(conv(c1, c2), conv(c2, c2))
        self.deep = nn.Sequential(conv(c2, c3), conv(c3, c3))
        self.up = nn.Sequential(conv(c3 + c2, c2), conv(c2, c2))
        self.dec = nn.Sequential(conv(c2 + c1, c1), conv(c1, c1))
        self.fuse = nn.Sequential(conv(c1 + c0, c0, k=1), conv(c0, c0))
        self.head = nn.Conv3d(c0, n_classes + 1, 1)

    def logits(self, hu: torch.Tensor) -> torch.Tensor:
        hu = hu.clamp(self.hu_lo, self.hu_hi)
        soft = ((hu - self.soft_center) / self.soft_width).clamp(-1.5, 1.5)
        bone = hu / self.bone_scale
        s = self.stem(torch.cat([soft, bone], dim=1))
        h = self.down(s)
        q = self.enc(F.max_pool3d(h, 2))
        d = self.deep(F.max_pool3d(q, 2))
        q = self.up(torch.cat([up2(d), q], dim=1))
        h = self.dec(torch.cat([up2(q), h], dim=1))
        f = self.fuse(torch.cat([up2(h), s], dim=1))
        return self.head(f)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(hu), dim=1)


def keep_tensors_on_heap():
    """Large tensors from the heap, not fresh mappings: torch allocates and
    frees activations of tens of MB on every step, above glibc's mmap
    threshold, and the kernel then faults in and zeroes their pages each
    time (half of a training step in system time, as in the node's
    worker, inference/worker_main.c, which sets the same). Allocation
    only; results are the same."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


# --- inference as the node does it (inference/bone.c) ---------------------

def grid_size(n, step_in, step_out):
    """Samples on an axis of N samples STEP_IN apart when resampled to
    STEP_OUT from the first one (inference/grid.c's axis())."""
    return int(np.floor((n - 1) * step_in / step_out + 1e-6)) + 1 if n > 1 else 1


def resample(hu, spacing, step):
    """HU (z, y, x; SPACING in mm, same order) on the node's analysis grid:
    sample o of each axis at o * STEP mm from the first, linear between the
    two scanner samples around it, the last one beyond (inference/grid.c,
    in its order: x, then y, then z, float32). The grid is STEP mm exactly,
    so its voxels are where the node's centroid_mm says; trilinear
    interpolation with aligned corners stretches it to end on the last
    slice, up to a third of a voxel off across a scan, and a candidate on
    the edge of the lesion threshold comes out a different size (and its
    classifier crop a voxel off)."""
    out = np.asarray(hu, np.float32)
    for axis in (2, 1, 0):
        n = out.shape[axis]
        m = grid_size(n, spacing[axis], step)
        if n == 1:
            continue
        x = np.arange(m) * (step / spacing[axis])
        i0 = x.astype(np.int64)
        beyond = i0 >= n - 1
        i0 = np.minimum(i0, n - 2)
        f = (x - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = m
        f = f.reshape(shape)
        v0 = np.take(out, i0, axis=axis)
        v1 = np.take(out, i0 + 1, axis=axis)
        res = v0 + f * (v1 - v0)
        if beyond.any():
            idx = [slice(None)] * 3
            idx[axis] = beyond
            last = [slice(None)] * 3
            last[axis] = slice(n - 1, n)
            res[tuple(idx)] = out[tuple(last)]
        out = res
    return out


def bone_region(hu, threshold, margin_voxels):
    """Voxels above THRESHOLD HU, dilated by a cube of half-width MARGIN,
    one axis at a time: the same cube, about seven times faster than one
    cubic pooling."""
    m = torch.from_numpy((hu > threshold).astype(np.float32))[None, None]
    if margin_voxels > 0:
        k, r = 2 * margin_voxels + 1, margin_voxels
        for size, pad in (((k, 1, 1), (r, 0, 0)), ((1, k, 1), (0, r, 0)), ((1, 1, k), (0, 0, r))):
            m = F.max_pool3d(m, size, stride=1, padding=pad)
    return m[0, 0].numpy() > 0


def sliding_window(model, hu, region, window=64, context=8, batch=2):
    """Foreground probability and per-class share maps, computed like the
    node: windows whose core (window less context each side) holds bone,
    core written once. Returns fg (float32) and cls (float32 [K, ...])."""
    nz, ny, nx = hu.shape
    step = window - 2 * context
    k = None
    fg = np.zeros(hu.shape, np.float32)
    cls = None
    # Beyond the first and last slice the nearest slice is repeated (the
    # scan ends, the body does not); air elsewhere outside the grid.
    pad = np.full((nz + window, ny + window, nx + window), -1024.0, np.float32)
    zs = np.clip(np.arange(-context, nz + window - context), 0, nz - 1)
    pad[:, context:context + ny, context:context + nx] = hu[zs]
    jobs = []
    for z in range(0, nz, step):
        for y in range(0, ny, step):
            for x in range(0, nx, step):
                core = (z, min(z + step, nz), y, min(y + step, ny), x, min(x + step, nx))
                if region[core[0]:core[1], core[2]:core[3], core[4]:core[5]].any():
                    jobs.append(core)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(jobs), batch):
            chunk = jobs[i:i + batch]
            inp = np.stack([pad[c[0]:c[0] + window, c[2]:c[2] + window,
                                c[4]:c[4] + window] for c in chunk])[:, None]
            out = model(torch.from_numpy(inp)).numpy()
            if cls is None:
                k = out.shape[1] - 1
                cls = np.zeros((k,) + hu.shape, np.float32)
            for b, c in enumerate(chunk):
                dz, dy, dx = c[1] - c[0], c[3] - c[2], c[5] - c[4]
                o = out[b, :, context:context + dz, context:context + dy, context:context + dx]
                f = 1.0 - o[0]
                fg[c[0]:c[1], c[2]:c[3], c[4]:c[5]] = f
                share = o[1:] / np.maximum(f, 1e-4)
                share[:, f <= 1e-4] = 0
                cls[:, c[0]:c[1], c[2]:c[3], c[4]:c[5]] = np.minimum(share, 1.0)
    if cls is None:
        cls = np.zeros((1,) + hu.shape, np.float32)
    return fg, cls, len(jobs)


def label_components(mask):
    """26-connected components of a boolean volume: (labels int32, n)."""
    from scipy import ndimage
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    return lab.astype(np.int32), int(n)


def components(fg, cls, region, threshold):
    """The candidates: 26-connected components of region & fg >= THRESHOLD,
    in label order, each a dict with its voxel count, centroid and box
    (voxel z y x, box corners inclusive), mean foreground probability,
    summed class probabilities weighted by foreground (segmentation
    typing) and mask (index tuple)."""
    from scipy import ndimage
    lab, n = label_components(region & (fg >= threshold))
    out = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        local = lab[sl] == i
        off = [s.start for s in sl]
        vox = tuple(v + o for v, o in zip(np.nonzero(local), off))
        f = fg[vox]
        out.append({
            "voxels": int(local.sum()),
            "centroid": [float(v.mean()) for v in vox],
            "bbox": [[int(v.min()) for v in vox], [int(v.max()) for v in vox]],
            "fg_mean": float(f.mean()),
            "seg_sums": (cls[:, vox[0], vox[1], vox[2]] * f[None]).sum(axis=1).tolist(),
            "mask": vox,
        })
    return out


def lesion_call(comp, typing, metastatic):
    """(type index 1..K, probability, metastatic share) of a component.
    TYPING "segmentation": the largest summed class probability, the mean
    foreground probability; "classifier": the classifier's most probable
    lesion class and its lesion probability 1 - p(not a lesion) (needs
    comp["cls_p"], the classifier's K+1 probabilities); "product": the
    classifier's class probabilities times the segmentation's class shares,
    with the classifier's lesion probability. The share is that of the
    metastatic classes in the distribution the type came from."""
    sums = np.asarray(comp["seg_sums"], np.float64)
    if typing == "segmentation":
        dist, prob = sums, comp["fg_mean"]
    else:
        p = np.asarray(comp["cls_p"], np.float64)
        dist, prob = p[1:], float(1.0 - p[0])
        if typing == "product":
            total = sums.sum()
            dist = dist * (sums / total if total > 0 else 1.0)
    total = dist.sum()
    share = float(dist[metastatic].sum() / total) if total > 0 else 0.0
    return int(np.argmax(dist)) + 1, float(prob), share


def fine_channel_mm(classifier):
    """The fine channel's spacing the manifest's CLASSIFIER gives (0 for
    none), checked as the node checks it (inference/manifest.c)."""
    if "fine_channel_mm" not in classifier:
        return 0.0
    mm = classifier["fine_channel_mm"]
    if not isinstance(mm, (int, float)) or isinstance(mm, bool) or not 0.1 <= mm <= 10 \
            or classifier.get("candidate_channel"):
        raise ValueError("classifier: fine_channel_mm must be a number 0.1..10, and not "
                         "beside candidate_channel")
    return float(mm)


def load_classifier(manifest_path):
    """The second stage the manifest at MANIFEST_PATH names, as the node
    reads it: a dict of model (TorchScript), crop_voxels,
    min_lesion_probability and the lesion_threshold, min_volume_mm3 and
    operating_threshold of the two-stage pipeline (the classifier's own,
    else the manifest's); None when it names none."""
    import json
    import os
    with open(manifest_path) as f:
        man = json.load(f)
    c = man.get("classifier")
    if not c:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(manifest_path)), c["model"])
    post = man["postprocess"]
    return {"model": torch.jit.load(path), "crop_voxels": int(c["crop_voxels"]),
            "candidate_channel": bool(c.get("candidate_channel", False)),
            "fine_channel_mm": fine_channel_mm(c),
            "min_lesion_probability": float(c["min_lesion_probability"]),
            "lesion_threshold": float(c.get("lesion_threshold", post["lesion_threshold"])),
            "min_volume_mm3": float(c.get("min_volume_mm3", post["min_volume_mm3"])),
            "operating_threshold": float(c.get("operating_threshold",
                                               man["operating_threshold"]))}


# Endplate pairs (inference/bone.c says why): centroids at most
# PAIR_OFFSET_MM apart across the body's axis, PAIR_GAP_MIN_MM..
# PAIR_GAP_MAX_MM along it, softer than DISC_HU half-way between them.
PAIR_OFFSET_MM, PAIR_GAP_MIN_MM, PAIR_GAP_MAX_MM, DISC_HU = 10.0, 6.0, 24.0, 150.0


def endplate_pairs(comps, hu, spacing, both_endplates):
    """The (kept, joined) index pairs among the classified candidates
    COMPS (dicts with "centroid", voxel z y x of an axial grid of SPACING
    mm, and "cls_p") that are the two bands of one lesion of a class in
    BOTH_ENDPLATES (class indices 0..K-1), as inference/bone.c pairs them:
    closest first, the more probable kept."""
    types = [int(np.argmax(c["cls_p"][1:])) for c in comps]
    pairs = []
    for i, a in enumerate(comps):
        if types[i] not in both_endplates:
            continue
        for j in range(i + 1, len(comps)):
            if types[j] != types[i]:
                continue
            ca, cb = np.asarray(a["centroid"]), np.asarray(comps[j]["centroid"])
            d = (ca - cb) * spacing
            gap, offset = abs(float(d[0])), float(np.hypot(d[1], d[2]))
            if offset > PAIR_OFFSET_MM or not PAIR_GAP_MIN_MM <= gap <= PAIR_GAP_MAX_MM:
                continue
            mid = np.floor((ca + cb) / 2 + 0.5).astype(int)
            around = np.ix_(*[np.clip(np.arange(m - 1, m + 2), 0, n - 1)
                              for m, n in zip(mid, hu.shape)])
            if float(np.mean(hu[around], dtype=np.float64)) >= DISC_HU:
                continue
            pairs.append((float(np.hypot(gap, offset)), i, j))
    out, paired = [], set()
    for _, i, j in sorted(pairs):
        if i in paired or j in paired:
            continue
        paired |= {i, j}
        out.append((j, i) if comps[j]["cls_p"][0] < comps[i]["cls_p"][0] else (i, j))
    return out


def find_lesions(fg, cls, hu, region, spacing, threshold, min_volume_mm3, metastatic,
                 classifier=None, crop_voxels=32, min_lesion_probability=0.5, stats=None,
                 both_endplates=(), candidate_channel=False, fine_channel_mm=0.0,
                 native=None):
    """Lesions as the node finds them: list of dicts (type index 1..K,
    probability, voxel count, centroid voxel, mask indices) and the patient
    score (noisy-OR of probability x metastatic share). With CLASSIFIER
    (the second stage, lesion_classifier.py) each component of at least
    min_volume_mm3 is classified on a CROP_VOXELS cube of HU around its
    centroid (with CANDIDATE_CHANNEL, and the component's foreground:
    lesion_classifier.candidate_crop; with FINE_CHANNEL_MM, and a cube of
    NATIVE (the scanner's volume, its spacing) sampled that far apart:
    lesion_classifier.fine_crop); it is kept when its lesion probability reaches
    MIN_LESION_PROBABILITY, and the classifier gives its type and
    probability ("classifier" in lesion_call), as inference/bone.c does;
    the two bands of a lesion of a BOTH_ENDPLATES class (endplate_pairs)
    become one. STATS, a dict, gets the count of "candidates" (the node's
    timings.candidates when there is a classifier)."""
    comps = components(fg, cls, region, threshold)
    min_vox = min_volume_mm3 / spacing ** 3
    comps = [c for c in comps if c["voxels"] >= min_vox]
    if stats is not None:
        stats["candidates"] = len(comps)
    typing = "segmentation"
    if classifier is not None:
        import lesion_classifier as lc
        second = None
        if candidate_channel:
            def second(i, centre):
                return lc.candidate_crop(hu.shape, comps[i]["mask"], fg[comps[i]["mask"]],
                                         centre, crop_voxels)
        elif fine_channel_mm > 0:
            def second(i, centre):
                return lc.fine_crop(native[0], native[1], spacing, centre, crop_voxels,
                                    fine_channel_mm)
        p = lc.classify(classifier, hu, [c["centroid"] for c in comps], crop_voxels,
                        second=second)
        for c, q in zip(comps, p):
            c["cls_p"] = q.tolist()
        comps = [c for c in comps if 1.0 - c["cls_p"][0] >= min_lesion_probability]
        for i, j in endplate_pairs(comps, hu, spacing, both_endplates):
            a, b = comps[i], comps[j]
            n = a["voxels"] + b["voxels"]
            a["centroid"] = [(u * a["voxels"] + v * b["voxels"]) / n
                             for u, v in zip(a["centroid"], b["centroid"])]
            a["fg_mean"] = (a["fg_mean"] * a["voxels"] + b["fg_mean"] * b["voxels"]) / n
            a["seg_sums"] = (np.asarray(a["seg_sums"]) + np.asarray(b["seg_sums"])).tolist()
            a["mask"] = tuple(np.concatenate([u, v]) for u, v in zip(a["mask"], b["mask"]))
            a["voxels"] = n
            b["voxels"] = 0
        comps = [c for c in comps if c["voxels"] > 0]
        typing = "classifier"
    out = []
    none = 1.0
    for c in comps:
        t, prob, share = lesion_call(c, typing, metastatic)
        none *= 1.0 - prob * share
        d = {"type_index": t, "probability": prob, "voxels": c["voxels"],
             "centroid": c["centroid"], "mean_hu": float(hu[c["mask"]].mean()),
             "mask": c["mask"]}
        if "cls_p" in c:
            d["class_probabilities"] = c["cls_p"]
        out.append(d)
    out.sort(key=lambda d: -d["probability"])
    return out, 1.0 - none
