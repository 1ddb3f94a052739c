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


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class LesionClassifier(nn.Module):
    """[B, 1, C, C, C] HU (C a multiple of 8, at least 16), or with
    CANDIDATE_CHANNEL [B, 2, C, C, C] HU and the candidate's foreground,
    -> [B, K+1] probabilities, class 0 = not a lesion."""

    __constants__ = ["hu_lo", "hu_hi", "soft_center", "soft_width", "bone_scale"]

    def __init__(self, n_classes: int = 8, ch=CHANNELS, hidden: int = HIDDEN,
                 dropout: float = 0.2, candidate_channel: bool = False):
        super().__init__()
        self.hu_lo, self.hu_hi = HU_LO, HU_HI
        self.soft_center, self.soft_width = SOFT_CENTER, SOFT_WIDTH
        self.bone_scale = BONE_SCALE
        c0, c1, c2, c3 = ch
        self.stem = conv_bn(3 if candidate_channel else 2, c0)
        self.b1 = nn.Sequential(conv_bn(c0, c1), conv_bn(c1, c1))
        self.b2 = conv_bn(c1, c2)
        self.b3 = conv_bn(c2, c3)
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(c1 + c2 + 3 * c3, hidden)
        self.fc2 = nn.Linear(hidden, n_classes + 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        hu = x[:, :1].clamp(self.hu_lo, self.hu_hi)
        soft = ((hu - self.soft_center) / self.soft_width).clamp(-1.5, 1.5)
        bone = hu / self.bone_scale
        h = self.stem(torch.cat([soft, bone, x[:, 1:]], dim=1))
        h = self.b1(F.avg_pool3d(h, 2))
        h8 = self.b2(F.avg_pool3d(h, 2))
        h4 = self.b3(F.avg_pool3d(h8, 2))
        n16, n8, n4 = h.shape[2], h8.shape[2], h4.shape[2]
        c16 = h[:, :, n16 // 2 - 1:n16 // 2 + 1, n16 // 2 - 1:n16 // 2 + 1,
                n16 // 2 - 1:n16 // 2 + 1].mean(dim=(2, 3, 4))
        c8 = h8[:, :, n8 // 2 - 1:n8 // 2 + 1, n8 // 2 - 1:n8 // 2 + 1,
                n8 // 2 - 1:n8 // 2 + 1].mean(dim=(2, 3, 4))
        c4 = h4[:, :, n4 // 2 - 1:n4 // 2 + 1, n4 // 2 - 1:n4 // 2 + 1,
                n4 // 2 - 1:n4 // 2 + 1].mean(dim=(2, 3, 4))
        g = h4.mean(dim=(2, 3, 4))
        m = h4.amax(dim=(2, 3, 4))
        f = torch.cat([c16, c8, c4, g, m], dim=1)
        return self.fc2(self.drop(F.relu(self.fc1(f))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def widen(model, state):
    """Loads STATE, the weights of a classifier without the candidate
    channel, into MODEL, one with it: the stem's weights for the new
    channel start at zero, so MODEL starts out answering as that
    classifier did, whatever the channel holds."""
    state = dict(state)
    w = state["stem.0.weight"]
    extra = model.stem[0].weight.shape[1] - w.shape[1]
    if extra > 0:
        state["stem.0.weight"] = torch.cat([w, w.new_zeros((w.shape[0], extra) + w.shape[2:])], 1)
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


def classify(model, hu, centroids, size=CROP, batch=8, candidates=None):
    """Class probabilities [N, K+1] of the candidates centred on CENTROIDS
    (voxel z y x), BATCH crops per forward, as the node runs them. With
    CANDIDATES, a (voxel index tuple, foreground values) pair for each, a
    classifier with the candidate channel gets each crop's HU and its
    candidate's foreground (candidate_crop)."""
    probs = []
    with torch.no_grad():
        for i in range(0, len(centroids), batch):
            cs = centroids[i:i + batch]
            x = np.stack([crop(hu, c, size) for c in cs])[:, None]
            if candidates is not None:
                m = np.stack([candidate_crop(hu.shape, v, f, c, size)
                              for (v, f), c in zip(candidates[i:i + batch], cs)])[:, None]
                x = np.concatenate([x, m], axis=1)
            probs.append(model(torch.from_numpy(x)).numpy())
    return np.concatenate(probs) if probs else np.zeros((0, 1), np.float32)


class Flips(nn.Module):
    """The mean of MODEL's class probabilities on a crop and on its
    left-right and head-feet mirror images, the flips training augments
    with ([B, 1, C, C, C] HU -> [B, K+1], as one LesionClassifier, so the
    node loads it as one). The crop is mirrored about its centre, where
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
