"""The breast-risk network (after BMU-Net): mammography, ultrasound and
clinical values, any of which may be missing, to 5 risk classes T1..T5.
Training (scripts/train-breast) and quality (scripts/quality-breast) use
it; the node runs the TorchScript export and never imports this file.

Architecture:
- A ResNet18-depth encoder (BasicBlocks [2, 2, 2, 2], channels 8-16-32-64,
  narrow so that training fits on two CPU cores) shared by the two
  mammography views (CC, MLO); one such encoder per ultrasound mode
  (B-mode, colour Doppler, elastography), shared by the mode's two planes.
  Each image becomes a 128-wide token (global average pool). Only present
  images are encoded: absent ones never reach the batch norms.
- Per modality, a transformer encoder block over [summary token, view or
  slot tokens + learned slot embeddings]; absent slots are masked out as
  attention keys; the summary token is always present, so a row is never
  fully masked. Its output is the modality token; a modality with no image
  at all is replaced by a learned "missing" token.
- A cross-modal transformer block over the two modality tokens (+ modality
  embeddings).
- Clinical values (normalised, 0 when missing) and their present mask go
  through an MLP and are concatenated with the pooled modality tokens before
  the 5-class head; softmax inside the model.

Input sizes (rows x cols): mammography 128 x 96, ultrasound 48 x 64 (the
manifest states them; the network itself accepts any size).

forward(mg [B,2,1,Hm,Wm], mg_present [B,2], us [B,6,3,Hu,Wu],
        us_present [B,6], clin [B,10], clin_present [B,10]) -> probs [B,5]
"""

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (8, 16, 32, 64)
D = 128


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))
        else:
            self.down = nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.down(x))


class Encoder(nn.Module):
    """ResNet18 layout (stem, 4 stages of 2 BasicBlocks) with narrow
    channels; [N, cin, H, W] -> [N, D]."""

    def __init__(self, cin: int):
        super().__init__()
        c = WIDTHS
        self.stem = nn.Sequential(nn.Conv2d(cin, c[0], 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        layers = []
        prev = c[0]
        for i, w in enumerate(c):
            layers.append(BasicBlock(prev, w, 1 if i == 0 else 2))
            layers.append(BasicBlock(w, w, 1))
            prev = w
        self.layers = nn.Sequential(*layers)
        self.proj = nn.Linear(c[-1], D)
        self.d = D

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.proj(x.mean(dim=(2, 3)))

    def encode_present(self, x, present):
        """Encodes only the present images. x [B, S, C, H, W], present
        [B, S] -> tokens [B, S, D], zeros where absent."""
        b, s = present.shape[0], present.shape[1]
        flat = x.reshape([b * s, x.shape[2], x.shape[3], x.shape[4]])
        idx = torch.nonzero(present.reshape(-1) > 0.5).reshape(-1)
        out = torch.zeros(b * s, self.d, dtype=x.dtype, device=x.device)
        if idx.numel() > 0:
            out = out.index_copy(0, idx, self.forward(flat.index_select(0, idx)))
        return out.reshape(b, s, self.d)


class Block(nn.Module):
    """Pre-norm transformer encoder block (self-attention + MLP) written
    with plain operations, so the export has no fast-path kernels."""

    def __init__(self, d: int = D, heads: int = 4, ff: int = 256, drop: float = 0.1):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(drop), nn.Linear(ff, d))
        self.drop = nn.Dropout(drop)

    def forward(self, x, key_padding_mask):
        # x [B, T, d]; key_padding_mask [B, T] bool, True = absent.
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q = q.reshape(b, t, h, d // h).transpose(1, 2)
        k = k.reshape(b, t, h, d // h).transpose(1, 2)
        v = v.reshape(b, t, h, d // h).transpose(1, 2)
        s = torch.matmul(q, k.transpose(-1, -2)) / float(d // h) ** 0.5
        s = s.masked_fill(key_padding_mask[:, None, None, :], -1e9)
        a = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        x = x + self.drop(self.out(a))
        return x + self.drop(self.ff(self.ln2(x)))


class Modality(nn.Module):
    """Tokens of one modality's slots -> one modality token."""

    def __init__(self, n_slots: int):
        super().__init__()
        self.slot_emb = nn.Parameter(torch.randn(n_slots, D) * 0.02)
        self.summary = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.missing = nn.Parameter(torch.randn(D) * 0.02)
        self.block = Block()

    def forward(self, tokens, present):
        # tokens [B, S, D] (zeros where absent), present [B, S] float.
        b = tokens.shape[0]
        x = torch.cat([self.summary.expand(b, -1, -1), tokens + self.slot_emb], dim=1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=tokens.device),
                         present < 0.5], dim=1)
        y = self.block(x, pad)[:, 0]
        anyp = (present.sum(dim=1, keepdim=True) > 0).to(y.dtype)
        return anyp * y + (1 - anyp) * self.missing


class BreastNet(nn.Module):
    def __init__(self, n_classes: int = 5, n_clin: int = 10):
        super().__init__()
        self.mg_enc = Encoder(1)
        self.us_enc = nn.ModuleList([Encoder(3) for _ in range(3)])
        self.mg_mod = Modality(2)
        self.us_mod = Modality(6)
        self.mod_emb = nn.Parameter(torch.randn(2, D) * 0.02)
        self.cross = Block()
        self.clin = nn.Sequential(nn.Linear(2 * n_clin, 64), nn.ReLU(), nn.Linear(64, 64),
                                  nn.ReLU())
        self.head = nn.Sequential(nn.LayerNorm(D + 64), nn.Linear(D + 64, 128), nn.ReLU(),
                                  nn.Dropout(0.1), nn.Linear(128, n_classes))
        # Training-only heads on each modality token: they make every
        # encoder learn on its own, so that the easier modality does not
        # leave the other untrained (the export does not use them).
        self.aux_mg = nn.Linear(D, n_classes)
        self.aux_us = nn.Linear(D, n_classes)

    def logits(self, mg, mg_present, us, us_present, clin, clin_present):
        return self.all_logits(mg, mg_present, us, us_present, clin, clin_present)[0]

    def all_logits(self, mg, mg_present, us, us_present, clin, clin_present):
        """(logits, MG-token logits, US-token logits), each [B, 5]."""
        mg_tok = self.mg_mod(self.mg_enc.encode_present(mg, mg_present), mg_present)
        parts: List[torch.Tensor] = []
        i = 0
        for enc in self.us_enc:
            parts.append(enc.encode_present(us[:, 2 * i:2 * i + 2],
                                            us_present[:, 2 * i:2 * i + 2]))
            i += 1
        us_tok = self.us_mod(torch.cat(parts, dim=1), us_present)
        x = torch.stack([mg_tok, us_tok], dim=1) + self.mod_emb
        pad = torch.zeros(x.shape[0], 2, dtype=torch.bool, device=x.device)
        x = self.cross(x, pad).mean(dim=1)
        c = self.clin(torch.cat([clin * clin_present, clin_present], dim=1))
        return (self.head(torch.cat([x, c], dim=1)), self.aux_mg(mg_tok),
                self.aux_us(us_tok))

    def forward(self, mg, mg_present, us, us_present, clin, clin_present):
        return torch.softmax(self.logits(mg, mg_present, us, us_present, clin, clin_present),
                             dim=1)


def n_params(model):
    return sum(p.numel() for p in model.parameters())
