"""The second stage of the bone-lesion pipeline: a small 3D CNN that looks
at a cube of CT around one candidate lesion (a connected component of the
segmentation's foreground) and says whether it is a lesion at all and, if
so, which of the 8 types. This is the "detect, then type each lesion"
split of BLDS: the segmentation finds candidates with a generous threshold,
and this network, which sees a whole lesion and its surroundings at once,
rejects the false candidates and names the type. It is not a detector: it
only answers for the point it is centred on.

Input [B, 1, C, C, C] of raw Hounsfield units on the 1.5 mm analysis grid
(C = 32: 48 mm, room for the largest lesions and some context), centred
on the candidate's voxel centroid (crop() below, which inference/bone.c
reproduces: voxel round(centroid) sits at index C/2; beyond the first and
last slice the nearest one is repeated, air (-1024) beyond rows and
columns, as the node fills the segmentation's windows). The network windows HU itself, as BoneSeg does, so the caller
passes HU unchanged. Output [B, 9]: softmax over 0 = not a lesion, then the
8 types in phantom_ct.LESION_TYPES order.

Only HU by default: training on HU alone needs no segmentation run per
training case (phantoms are cheap, sliding-window inference is not). Its
negatives include the segmentation's own false candidates on a few
phantoms (scripts/train-bone-classifier), so it is retrained whenever
the segmentation is. With candidate_channel the input is [B, 2, C, C, C]:
HU and the segmentation's foreground on the judged candidate's voxels, 0
elsewhere (candidate_crop; the manifest's "candidate_channel" tells the
node to send it). Trained from model 0.6.0's network, it did no better
(scripts/train-bone-classifier's docstring has the figures).

With fine_channel the second channel is a cube of the same number of
samples, FINE_MM (0.75 mm) apart, of the scanner's own volume (0.6-0.9 mm
pixels; slices as thin as 0.625 mm) about the same centre (fine_crop; the
manifest's "fine_channel_mm" tells the node to send it): half the field
at twice the resolution, for the lesions of 8 mm or less, 3-5 voxels
across on the 1.5 mm grid. A branch of its own reads it (three
convolutions at 32^3, 16^3 and 8^3), and its centre and mean features join
the head's. Trained from model 0.6.0's network on the segmentation's
candidates, it did no better either.

Shape: a full-resolution stem (small lesions are 3-16 voxels), three
poolings to 4^3, then features of the centre (at 16^3, 8^3 and 4^3: 6, 12
and 24 mm) together with global mean and max, so the head knows what is
at the centre and what is around it. The 16^3 centre is there for the
smallest lesions, 4-6 mm, whose density (an osteoblastic focus at 500 HU
or a bone island at 1500) is averaged away at coarser levels.
About 185k parameters and 3 ms per crop on two CPU cores in batches of
8 (average pooling: libtorch 1.13's 3D max pooling on a CPU costs as
much as the convolutions; a batch of one runs ten times slower, so the
node sends at least two).
"""

from typing import List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SOFT_CENTER, SOFT_WIDTH = 40.0, 400.0
BONE_SCALE = 1000.0
HU_LO, HU_HI = -1000.0, 2000.0
CROP = 32
AIR = -1024.0
# Width: (8, 16, 32, 48) with 32 hidden units (73k parameters) did as badly
# on its own training phantoms as on validation ones (a fifth of the
# segmentation's false candidates at p >= 0.5 on both), so it was too
# small. Multiples of 16 run faster on the CPU than 12-24-48.
CHANNELS = (16, 32, 48, 64)
HIDDEN = 64
# The fine branch (fine_channel): channels at 32^3, 16^3 and 8^3 of its
# 0.75 mm crop; it adds about half the cost of a forward.
FINE_CHANNELS = (8, 24, 32)
FINE_MM = 0.75


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class LesionClassifier(nn.Module):
    """[B, 1, C, C, C] HU (C a multiple of 8, at least 16), or with
    CANDIDATE_CHANNEL [B, 2, C, C, C] HU and the candidate's foreground,
    or with FINE_CHANNEL [B, 2, C, C, C] HU and the fine crop (fine_crop)
    -> [B, K+1] probabilities, class 0 = not a lesion."""

    __constants__ = ["hu_lo", "hu_hi", "soft_center", "soft_width", "bone_scale",
                     "fine_channel"]

    def __init__(self, n_classes: int = 8, ch=CHANNELS, hidden: int = HIDDEN,
                 dropout: float = 0.2, candidate_channel: bool = False,
                 fine_channel: bool = False):
        super().__init__()
        assert not (candidate_channel and fine_channel), "one second channel at most"
        self.hu_lo, self.hu_hi = HU_LO, HU_HI
        self.soft_center, self.soft_width = SOFT_CENTER, SOFT_WIDTH
        self.bone_scale = BONE_SCALE
        self.fine_channel = fine_channel
        c0, c1, c2, c3 = ch
        self.stem = conv_bn(3 if candidate_channel else 2, c0)
        self.b1 = nn.Sequential(conv_bn(c0, c1), conv_bn(c1, c1))
        self.b2 = conv_bn(c1, c2)
        self.b3 = conv_bn(c2, c3)
        features = c1 + c2 + 3 * c3
        if fine_channel:
            f0, f1, f2 = FINE_CHANNELS
            self.fine0 = conv_bn(2, f0)
            self.fine1 = conv_bn(f0, f1)
            self.fine2 = conv_bn(f1, f2)
            features += f1 + 2 * f2
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, n_classes + 1)

    def windows(self, hu: torch.Tensor) -> torch.Tensor:
        """The soft-tissue and bone windows of HU [B, 1, ...] (raw HU)."""
        hu = hu.clamp(self.hu_lo, self.hu_hi)
        soft = ((hu - self.soft_center) / self.soft_width).clamp(-1.5, 1.5)
        return torch.cat([soft, hu / self.bone_scale], dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.fine_channel:
            h = self.stem(self.windows(x[:, :1]))
        else:
            h = self.stem(torch.cat([self.windows(x[:, :1]), x[:, 1:]], dim=1))
        h = self.b1(F.avg_pool3d(h, 2))
        h8 = self.b2(F.avg_pool3d(h, 2))
        h4 = self.b3(F.avg_pool3d(h8, 2))
        f = torch.cat([centre(h), centre(h8), centre(h4), h4.mean(dim=(2, 3, 4)),
                       h4.amax(dim=(2, 3, 4))], dim=1)
        if self.fine_channel:
            g = self.fine0(self.windows(x[:, 1:2]))
            g16 = self.fine1(F.avg_pool3d(g, 2))
            g8 = self.fine2(F.avg_pool3d(g16, 2))
            f = torch.cat([f, centre(g16), centre(g8), g8.mean(dim=(2, 3, 4))], dim=1)
        return self.fc2(self.drop(F.relu(self.fc1(f))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def centre(h: torch.Tensor) -> torch.Tensor:
    """The mean of the central 2^3 voxels of feature maps H [B, C, n, n, n]."""
    n = h.shape[2]
    return h[:, :, n // 2 - 1:n // 2 + 1, n // 2 - 1:n // 2 + 1,
             n // 2 - 1:n // 2 + 1].mean(dim=(2, 3, 4))


def widen(model, state):
    """Loads STATE, the weights of a classifier with HU alone, into MODEL,
    one with a second channel: the stem's weights for the candidate
    channel, or the head's weights for the fine branch's features (whose
    own weights are left as initialised), start at zero, so MODEL starts
    out answering as that classifier did, whatever the channel holds."""
    state = dict(state)
    for name, axis_len in (("stem.0.weight", model.stem[0].weight.shape[1]),
                           ("fc1.weight", model.fc1.weight.shape[1])):
        w = state[name]
        extra = axis_len - w.shape[1]
        if extra > 0:
            state[name] = torch.cat([w, w.new_zeros((w.shape[0], extra) + w.shape[2:])], 1)
    if model.fine_channel:  # a branch STATE lacks starts as initialised
        state.update({k: v for k, v in model.state_dict().items()
                      if k.startswith("fine") and k not in state})
    model.load_state_dict(state)
    return model


def crop_origin(centroid, size=CROP):
    """First voxel (z, y, x) of the crop centred on CENTROID (voxel
    coordinates, z y x): voxel floor(c + 0.5) sits at index size // 2."""
    return [int(np.floor(c + 0.5)) - size // 2 for c in centroid]


def crop(hu, centroid, size=CROP):
    """The SIZE^3 float32 cube of HU centred on CENTROID, as the node's
    windows are filled: beyond the first and last slice (z) the nearest
    slice is repeated (the scan ends there, the body does not), air beyond
    the grid's rows and columns."""
    out = np.full((size,) * 3, AIR, np.float32)
    lo = crop_origin(centroid, size)
    src, dst = [], []
    for a in (1, 2):
        s0, s1 = max(lo[a], 0), min(lo[a] + size, hu.shape[a])
        if s1 <= s0:
            return out
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo[a], s1 - lo[a]))
    zs = np.clip(np.arange(lo[0], lo[0] + size), 0, hu.shape[0] - 1)
    out[:, dst[0], dst[1]] = hu[zs][:, src[0], src[1]]
    return out


def candidate_crop(shape, vox, values, centroid, size=CROP):
    """The candidate channel of the crop centred on CENTROID: VALUES (the
    segmentation's foreground probability) at the candidate's voxels VOX
    (index tuple z y x into a grid of SHAPE), 0 elsewhere, and 0 beyond
    the grid on every side (no slice is repeated: the candidate ends
    where the scan does)."""
    out = np.zeros((size,) * 3, np.float32)
    lo = np.array(crop_origin(centroid, size))
    local = np.stack(vox, axis=1) - lo
    keep = np.all((local >= 0) & (local < size), axis=1)
    local = local[keep]
    out[local[:, 0], local[:, 1], local[:, 2]] = np.asarray(values, np.float32)[keep]
    return out


def fine_crop(native, spacing, step, centroid, size=CROP, fine=FINE_MM):
    """The fine channel of the crop centred on CENTROID (voxels of the
    STEP mm analysis grid, z y x): SIZE^3 samples FINE mm apart of NATIVE,
    the scanner's volume (z y x, SPACING mm along each; the analysis grid
    starts at its first voxel), centred where crop()'s cube is centred, so
    that both channels mirror about the same point. Linear along x, then
    y, then z in float32, as the grid is resampled (bone_model.resample);
    the nearest slice repeated beyond the first and last, air beyond the
    rows and columns, as crop() fills (inference/bone.c, fill_fine)."""
    lo = crop_origin(centroid, size)
    offsets = (np.arange(size) - (size - 1) / 2.0) * (fine / step)
    pos, first, outside = [], [], []
    for axis in range(3):
        n = native.shape[axis]
        x = (lo[axis] + size / 2.0 - 0.5 + offsets) * step / spacing[axis]
        outside.append((x < 0) | (x > n - 1))
        x = np.clip(x, 0, n - 1)
        i0 = np.minimum(np.floor(x).astype(np.int64), max(n - 2, 0))
        pos.append((i0, (x - i0).astype(np.float32), np.minimum(i0 + 1, n - 1)))
        first.append(int(i0[0]))
    out = np.asarray(native[tuple(slice(f, int(p[2][-1]) + 1) for f, p in zip(first, pos))],
                     np.float32)
    for axis in (2, 1, 0):
        i0, f, i1 = pos[axis]
        shape = [1, 1, 1]
        shape[axis] = size
        v0 = np.take(out, i0 - first[axis], axis=axis)
        v1 = np.take(out, i1 - first[axis], axis=axis)
        out = v0 + f.reshape(shape) * (v1 - v0)
    for axis in (1, 2):
        if outside[axis].any():
            idx = [slice(None)] * 3
            idx[axis] = outside[axis]
            out[tuple(idx)] = AIR
    return out


def classify(model, hu, centroids, size=CROP, batch=8, second=None):
    """Class probabilities [N, K+1] of the candidates centred on CENTROIDS
    (voxel z y x), BATCH crops per forward, as the node runs them. With
    SECOND, a function of (candidate index, centroid) giving its second
    channel (SIZE^3: candidate_crop for a classifier with the candidate
    channel, fine_crop for one with the fine channel), each crop has it
    beside its HU."""
    probs = []
    with torch.no_grad():
        for i in range(0, len(centroids), batch):
            cs = centroids[i:i + batch]
            x = np.stack([crop(hu, c, size) for c in cs])[:, None]
            if second is not None:
                m = np.stack([second(i + j, c) for j, c in enumerate(cs)])[:, None]
                x = np.concatenate([x, m.astype(np.float32)], axis=1)
            probs.append(model(torch.from_numpy(x)).numpy())
    return np.concatenate(probs) if probs else np.zeros((0, 1), np.float32)


class Flips(nn.Module):
    """The mean of MODEL's class probabilities on a crop and on its
    left-right and head-feet mirror images, the flips training augments
    with ([B, channels, C, C, C] -> [B, K+1], as one LesionClassifier, so
    the node loads it as one; every channel is mirrored, the fine crop
    about the same point). The crop is mirrored about its centre, where
    the classifier reads its centre features, so each view answers for the
    same candidate. Three forwards per crop: the three views stacked in
    one batch of 3B gave the same answers, but the node's classifier step
    took longer with them (1.52-1.74 s against 1.29-1.41 s per case, two
    512x512 phantoms of 181 and 192 candidates analysed three times each
    by build/vigil-worker --analyse, on two CPU cores). With model
    0.5.0's network, on 40 validation phantoms it found as many lesions
    as the network alone with fewer false positives (1.13 per case
    against 1.45) and typed them better (95.7% against 93.5%);
    scripts/train-bone-classifier --flips validates and exports it."""

    dims: List[int]

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.dims = [4, 2]  # x (left-right), z (head-feet) of [B, 1, z, y, x]

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        p = self.model(hu)
        for d in self.dims:
            p = p + self.model(hu.flip([d]))
        return p / float(1 + len(self.dims))


class Ensemble(nn.Module):
    """The mean of the class probabilities of MEMBERS, classifiers trained
    alike on different phantoms and seeds ([B, 1, C, C, C] HU -> [B, K+1],
    as one LesionClassifier, so the node loads it as one). Each member
    costs its own forward. scripts/train-bone-classifier --members builds
    and validates one; the pair tried with 0.4.0 typed better than its
    first member alone but made more false positives on held-out phantoms
    (that script's docstring has the figures)."""

    def __init__(self, members: List[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(hu) for m in self.members]).mean(dim=0)
