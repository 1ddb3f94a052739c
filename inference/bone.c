/* Bone-lesion analysis; see bone.h. The grid is isotropic at the
 * manifest's spacing; windows of window_voxels are run where their core
 * (the window less context_voxels on each side) holds bone, and only the
 * core of each window is kept, so every voxel is written once. The
 * optional classifier sees a crop_voxels cube of the same grid centred on
 * each candidate, filled as the windows are: voxel round(centroid) at
 * index crop_voxels / 2, as scripts/lesion_classifier.py crops in
 * training; with the manifest's candidate_channel, a second channel holds
 * the foreground probability on the candidate's own voxels and 0
 * elsewhere, beyond the grid included (lesion_classifier.candidate_crop);
 * with its fine_channel_mm, the second channel is a cube of the scanner's
 * own volume sampled that far apart about the same centre
 * (lesion_classifier.fine_crop). */
#include "inference/bone.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inference/grid.h"
#include "server/error.h"

#define BATCH 2
#define CLS_BATCH 8
#define MAX_FINDINGS 64

typedef struct work {
    const vg_manifest_t *man;
    const vg_volume_t *vol;     /* the scanner's volume the grid is made of */
    vg_grid_t g;
    size_t n;                   /* voxels */
    uint8_t *region;            /* bone region (dilated threshold) */
    float *fg;                  /* probability of any lesion */
    uint8_t *cls;               /* K bytes per voxel: class share * 255 */
    int k;                      /* lesion classes */
} work_t;

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* 1 when the box [x0,x1)x[y0,y1)x[z0,z1) holds a region voxel. */
static int box_has_bone(const work_t *w, const int b[6])
{
    for (int z = b[4]; z < b[5]; z++)
        for (int y = b[2]; y < b[3]; y++) {
            const uint8_t *row = w->region + ((size_t)z * w->g.ny + y) * w->g.nx;
            if (memchr(row + b[0], 1, (size_t)(b[1] - b[0])))
                return 1;
        }
    return 0;
}

/* Copies the window whose first voxel is (x0, y0, z0) into DST (W^3).
 * Beyond the first and last slice the nearest slice is repeated: the scan
 * ends there, the body does not, and air would draw a dense band wherever
 * the scan cuts bone, which the model takes for sclerosis. Outside the
 * slices' own extent (x, y) it is air, as it is in the image. */
static void fill_window(const work_t *w, int x0, int y0, int z0, int W, float *dst)
{
    const vg_grid_t *g = &w->g;
    for (int z = 0; z < W; z++)
        for (int y = 0; y < W; y++) {
            float *out = dst + ((size_t)z * W + y) * W;
            int Z = z0 + z, Y = y0 + y;
            Z = Z < 0 ? 0 : Z >= g->nz ? g->nz - 1 : Z;
            if (Y < 0 || Y >= g->ny) {
                for (int x = 0; x < W; x++)
                    out[x] = -1024.0f;
                continue;
            }
            const float *in = g->v + ((size_t)Z * g->ny + Y) * g->nx;
            for (int x = 0; x < W; x++) {
                int X = x0 + x;
                out[x] = X >= 0 && X < g->nx ? in[X] : -1024.0f;
            }
        }
}

/* Writes the core box CORE of window b of OUT ([B, K+1, W, W, W]) into
 * the probability maps. */
static void scatter(work_t *w, const vg_tensor_t *out, int b, const int core[6],
                    const int origin[3])
{
    int W = (int)out->shape[2], K = w->k;
    size_t vol = (size_t)W * W * W;
    const float *base = out->data + (size_t)b * (K + 1) * vol;
    for (int z = core[4]; z < core[5]; z++)
        for (int y = core[2]; y < core[3]; y++)
            for (int x = core[0]; x < core[1]; x++) {
                size_t wi = ((size_t)(z - origin[2]) * W + (y - origin[1])) * W + (x - origin[0]);
                size_t gi = ((size_t)z * w->g.ny + y) * w->g.nx + x;
                float fg = 1.0f - base[wi];
                w->fg[gi] = fg;
                uint8_t *c = w->cls + gi * K;
                for (int k = 0; k < K; k++) {
                    float share = fg > 1e-4f ? base[(k + 1) * vol + wi] / fg : 0.0f;
                    c[k] = (uint8_t)(share >= 1.0f ? 255 : share * 255.0f + 0.5f);
                }
            }
}

typedef struct batch {
    float *in;
    int n;
    int core[BATCH][6], origin[BATCH][3];
} batch_t;

static int flush(vg_model_t *model, work_t *w, batch_t *bt, int W, char *err, size_t len)
{
    if (bt->n == 0)
        return 0;
    vg_tensor_t in = {bt->in, {bt->n, 1, W, W, W}, 5}, out[2];
    int n_out = 0;
    int rc = vg_model_forward(model, &in, 1, out, 2, &n_out, err, len);
    if (rc < 0)
        return rc;
    if (out[0].ndim != 5 || out[0].shape[0] != bt->n || out[0].shape[1] != w->k + 1 ||
        out[0].shape[2] != W) {
        snprintf(err, len, "model output has shape other than [%d, %d, %d, %d, %d]", bt->n,
                 w->k + 1, W, W, W);
        rc = VG_EMODEL;
    }
    for (int b = 0; rc == 0 && b < bt->n; b++)
        scatter(w, &out[0], b, bt->core[b], bt->origin[b]);
    for (int i = 0; i < n_out; i++)
        vg_tensor_free(&out[i]);
    bt->n = 0;
    return rc;
}

static int run_windows(vg_model_t *model, work_t *w, vg_bone_timings_t *t, char *err,
                       size_t len)
{
    int W = w->man->window_voxels, C = w->man->context_voxels, step = W - 2 * C;
    batch_t bt = {malloc(sizeof(float) * BATCH * (size_t)W * W * W), 0, {{0}}, {{0}}};
    if (!bt.in)
        return -ENOMEM;
    int rc = 0;
    for (int z = 0; z < w->g.nz && rc == 0; z += step)
        for (int y = 0; y < w->g.ny && rc == 0; y += step)
            for (int x = 0; x < w->g.nx && rc == 0; x += step) {
                int core[6] = {x, clampi(x + step, 0, w->g.nx), y, clampi(y + step, 0, w->g.ny),
                               z, clampi(z + step, 0, w->g.nz)};
                t->windows_total++;
                if (!box_has_bone(w, core))
                    continue;
                t->windows++;
                int o[3] = {x - C, y - C, z - C};
                fill_window(w, o[0], o[1], o[2], W, bt.in + (size_t)bt.n * W * W * W);
                memcpy(bt.core[bt.n], core, sizeof core);
                memcpy(bt.origin[bt.n], o, sizeof o);
                if (++bt.n == BATCH)
                    rc = flush(model, w, &bt, W, err, len);
            }
    if (rc == 0)
        rc = flush(model, w, &bt, W, err, len);
    free(bt.in);
    return rc;
}

typedef struct comp {
    size_t count;
    double sum_fg, sum_hu, sum_pos[3];
    double sum_cls[VG_MANIFEST_MAX_CLASSES];
    int box[6];                 /* x0, x1, y0, y1, z0, z1 (inclusive) */
} comp_t;

static void comp_add(comp_t *c, const work_t *w, size_t v, int x, int y, int z)
{
    if (c->count == 0) {
        c->box[0] = c->box[1] = x;
        c->box[2] = c->box[3] = y;
        c->box[4] = c->box[5] = z;
    }
    c->count++;
    c->sum_fg += w->fg[v];
    c->sum_hu += w->g.v[v];
    c->sum_pos[0] += x, c->sum_pos[1] += y, c->sum_pos[2] += z;
    const uint8_t *cls = w->cls + v * w->k;
    for (int k = 0; k < w->k; k++)
        c->sum_cls[k] += w->fg[v] * cls[k];
    int p[3] = {x, y, z};
    for (int a = 0; a < 3; a++) {
        if (p[a] < c->box[2 * a])
            c->box[2 * a] = p[a];
        if (p[a] > c->box[2 * a + 1])
            c->box[2 * a + 1] = p[a];
    }
}

/* Longest extent (mm) along the component's principal axis. */
static double principal_extent(const work_t *w, const int32_t *labels, int id, const comp_t *c)
{
    double mean[3], cov[3][3] = {{0}};
    for (int a = 0; a < 3; a++)
        mean[a] = c->sum_pos[a] / (double)c->count;
    for (int z = c->box[4]; z <= c->box[5]; z++)
        for (int y = c->box[2]; y <= c->box[3]; y++)
            for (int x = c->box[0]; x <= c->box[1]; x++) {
                if (labels[((size_t)z * w->g.ny + y) * w->g.nx + x] != id)
                    continue;
                double d[3] = {x - mean[0], y - mean[1], z - mean[2]};
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++)
                        cov[a][b] += d[a] * d[b];
            }
    double v[3] = {1, 1, 1}; /* power iteration for the main axis */
    for (int it = 0; it < 30; it++) {
        double nv[3] = {0}, norm = 0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                nv[a] += cov[a][b] * v[b];
        for (int a = 0; a < 3; a++)
            norm += nv[a] * nv[a];
        if (norm <= 0)
            break;
        for (int a = 0; a < 3; a++)
            v[a] = nv[a] / sqrt(norm);
    }
    double lo = 1e30, hi = -1e30;
    for (int z = c->box[4]; z <= c->box[5]; z++)
        for (int y = c->box[2]; y <= c->box[3]; y++)
            for (int x = c->box[0]; x <= c->box[1]; x++) {
                if (labels[((size_t)z * w->g.ny + y) * w->g.nx + x] != id)
                    continue;
                double p = (x - mean[0]) * v[0] + (y - mean[1]) * v[1] + (z - mean[2]) * v[2];
                lo = p < lo ? p : lo;
                hi = p > hi ? p : hi;
            }
    return (hi - lo + 1.0) * w->g.spacing;
}

static int fill_mask(const work_t *w, const int32_t *labels, int id, const comp_t *c,
                     vg_finding_t *f)
{
    int ni = c->box[1] - c->box[0] + 1, nj = c->box[3] - c->box[2] + 1,
        nk = c->box[5] - c->box[4] + 1;
    int box[6] = {c->box[0], c->box[2], c->box[4], ni, nj, nk};
    memcpy(f->mask_box, box, sizeof box);
    size_t bits = (size_t)ni * nj * nk;
    f->mask_bytes = (bits + 7) / 8;
    f->mask = calloc(f->mask_bytes, 1);
    if (!f->mask)
        return -ENOMEM;
    size_t b = 0;
    for (int z = c->box[4]; z <= c->box[5]; z++)
        for (int y = c->box[2]; y <= c->box[3]; y++)
            for (int x = c->box[0]; x <= c->box[1]; x++, b++)
                if (labels[((size_t)z * w->g.ny + y) * w->g.nx + x] == id)
                    f->mask[b >> 3] |= (uint8_t)(1u << (b & 7));
    return 0;
}

/* Patient-space bounding box of the voxel box (voxel edges included). */
static void patient_box(const vg_grid_t *g, const int box[6], double out[2][3])
{
    for (int a = 0; a < 3; a++) {
        out[0][a] = 1e30;
        out[1][a] = -1e30;
    }
    for (int corner = 0; corner < 8; corner++) {
        double p[3];
        vg_grid_to_patient(g, (corner & 1 ? box[1] + 0.5 : box[0] - 0.5),
                           (corner & 2 ? box[3] + 0.5 : box[2] - 0.5),
                           (corner & 4 ? box[5] + 0.5 : box[4] - 0.5), p);
        for (int a = 0; a < 3; a++) {
            out[0][a] = p[a] < out[0][a] ? p[a] : out[0][a];
            out[1][a] = p[a] > out[1][a] ? p[a] : out[1][a];
        }
    }
}

/* Turns component ID into a finding; returns its metastatic share. P,
 * when not NULL, is the classifier's distribution (K + 1 values, 0 = not
 * a lesion), which then gives type, probability and share; otherwise the
 * segmentation's summed class probabilities and mean foreground do. */
static double make_finding(const work_t *w, const int32_t *labels, int id, const comp_t *c,
                           const float *p, vg_finding_t *f)
{
    const vg_manifest_t *man = w->man;
    double total = 0, metastatic = 0, best = -1;
    int type = 0;
    for (int k = 0; k < w->k; k++) {
        double v = p ? p[k + 1] : c->sum_cls[k];
        total += v;
        if (man->classes[k].metastatic)
            metastatic += v;
        if (v > best)
            best = v, type = k;
    }
    snprintf(f->type, sizeof f->type, "%s", man->classes[type].name);
    f->probability = p ? 1.0 - p[0] : c->sum_fg / (double)c->count;
    f->volume_mm3 = (double)c->count * pow(w->g.spacing, 3);
    f->mean_hu = c->sum_hu / (double)c->count;
    vg_grid_to_patient(&w->g, c->sum_pos[0] / c->count, c->sum_pos[1] / c->count,
                       c->sum_pos[2] / c->count, f->centroid_mm);
    patient_box(&w->g, c->box, f->bbox_mm);
    f->diameter_mm = principal_extent(w, labels, id, c);
    return total > 0 ? metastatic / total : 0;
}

/* Copies the foreground of component ID of LABELS that falls in the cube
 * of edge C whose first voxel is O (x, y, z) into DST, 0 elsewhere. */
static void fill_candidate(const work_t *w, const int32_t *labels, int id, const int o[3], int C,
                           float *dst)
{
    const vg_grid_t *g = &w->g;
    memset(dst, 0, sizeof(float) * (size_t)C * C * C);
    for (int z = 0; z < C; z++) {
        int Z = o[2] + z;
        for (int y = 0; Z >= 0 && Z < g->nz && y < C; y++) {
            int Y = o[1] + y;
            if (Y < 0 || Y >= g->ny)
                continue;
            size_t row = ((size_t)Z * g->ny + Y) * g->nx;
            float *out = dst + ((size_t)z * C + y) * C;
            for (int x = 0; x < C; x++) {
                int X = o[0] + x;
                if (X >= 0 && X < g->nx && labels[row + X] == id)
                    out[x] = w->fg[row + X];
            }
        }
    }
}

/* Where fine sample K of M lies along one axis of the volume: the lower
 * of its two neighbours I0, the upper I1 and the weight F of I1, clamped
 * to the N samples there are; returns 1 when it lies outside them. The
 * cube is centred where the crop of C grid voxels from O is (between its
 * voxels C/2 - 1 and C/2), samples FINE mm apart on a grid of STEP mm,
 * whose first voxel is the volume's (lesion_classifier.fine_crop, in the
 * same double arithmetic). */
static int fine_axis(int o, int C, int k, int m, double fine, double step, double spacing, int n,
                     int *i0, int *i1, float *f)
{
    double x = (o + C / 2.0 - 0.5 + (k - (m - 1) / 2.0) * (fine / step)) * step / spacing;
    int out = x < 0 || x > n - 1;
    x = x < 0 ? 0 : x > n - 1 ? n - 1 : x;
    int i = (int)floor(x);
    *i0 = i < (n > 1 ? n - 2 : 0) ? i : (n > 1 ? n - 2 : 0);
    *i1 = *i0 + 1 < n ? *i0 + 1 : n - 1;
    *f = (float)(x - *i0);
    return out;
}

/* The fine channel of the crop of C voxels from O (x, y, z) into DST
 * (C^3): trilinear samples of the scanner's volume, along x, then y, then
 * z, as the grid is resampled; beyond the first and last slice the
 * nearest one, outside the rows and columns air, as fill_window fills. */
static void fill_fine(const work_t *w, const int o[3], int C, float *dst)
{
    enum { MAXC = 128 }; /* crop_voxels' bound (manifest.c) */
    const vg_volume_t *v = w->vol;
    const int n[3] = {v->nx, v->ny, v->nz};
    int i0[3][MAXC], i1[3][MAXC], out[3][MAXC];
    float f[3][MAXC];
    for (int a = 0; a < 3; a++)
        for (int k = 0; k < C; k++)
            out[a][k] = fine_axis(o[a], C, k, C, w->man->fine_channel_mm, w->g.spacing,
                                  v->spacing[a], n[a], &i0[a][k], &i1[a][k], &f[a][k]);
    size_t plane = (size_t)v->nx * v->ny;
    for (int z = 0; z < C; z++)
        for (int y = 0; y < C; y++) {
            float *row = dst + ((size_t)z * C + y) * C;
            if (out[1][y]) {
                for (int x = 0; x < C; x++)
                    row[x] = -1024.0f;
                continue;
            }
            const float *p00 = v->hu + i0[2][z] * plane + (size_t)i0[1][y] * v->nx;
            const float *p01 = v->hu + i0[2][z] * plane + (size_t)i1[1][y] * v->nx;
            const float *p10 = v->hu + i1[2][z] * plane + (size_t)i0[1][y] * v->nx;
            const float *p11 = v->hu + i1[2][z] * plane + (size_t)i1[1][y] * v->nx;
            for (int x = 0; x < C; x++) {
                if (out[0][x]) {
                    row[x] = -1024.0f;
                    continue;
                }
                int a = i0[0][x], b = i1[0][x];
                float fx = f[0][x], fy = f[1][y], fz = f[2][z];
                float r00 = p00[a] + fx * (p00[b] - p00[a]), r01 = p01[a] + fx * (p01[b] - p01[a]);
                float r10 = p10[a] + fx * (p10[b] - p10[a]), r11 = p11[a] + fx * (p11[b] - p11[a]);
                float s0 = r00 + fy * (r01 - r00), s1 = r10 + fy * (r11 - r10);
                row[x] = s0 + fz * (s1 - s0);
            }
        }
}

/* Runs CLS on the crop around each of the N candidates IDS (components
 * of LABELS), CLS_BATCH crops per forward, into PROBS (N x (K + 1), the
 * caller's). A batch of one is sent twice over: libtorch 1.13 runs a
 * single 3D input through a convolution ten times slower than two.
 * Returns 0, VG_EMODEL with err filled, or -ENOMEM. */
static int classify(vg_model_t *cls, const work_t *w, const int32_t *labels, const comp_t *comps,
                    const int *ids, int n, float *probs, char *err, size_t len)
{
    int C = w->man->crop_voxels, K1 = w->k + 1, rc = 0;
    int ch = 1 + (w->man->candidate_channel || w->man->fine_channel_mm > 0);
    size_t vol = (size_t)C * C * C;
    float *in = malloc(sizeof(float) * CLS_BATCH * ch * vol);
    if (!in)
        return -ENOMEM;
    for (int i0 = 0; rc == 0 && i0 < n; i0 += CLS_BATCH) {
        int b = n - i0 < CLS_BATCH ? n - i0 : CLS_BATCH, sent = b < 2 ? 2 : b;
        for (int j = 0; j < sent; j++) {
            int id = ids[i0 + (j < b ? j : 0)];
            const comp_t *c = &comps[id];
            int o[3];
            for (int a = 0; a < 3; a++)
                o[a] = (int)floor(c->sum_pos[a] / (double)c->count + 0.5) - C / 2;
            float *dst = in + (size_t)j * ch * vol;
            fill_window(w, o[0], o[1], o[2], C, dst);
            if (w->man->candidate_channel)
                fill_candidate(w, labels, id, o, C, dst + vol);
            else if (w->man->fine_channel_mm > 0)
                fill_fine(w, o, C, dst + vol);
        }
        vg_tensor_t t = {in, {sent, ch, C, C, C}, 5}, out[2];
        int n_out = 0;
        rc = vg_model_forward(cls, &t, 1, out, 2, &n_out, err, len);
        if (rc < 0)
            break;
        if (out[0].ndim != 2 || out[0].shape[0] != sent || out[0].shape[1] != K1) {
            snprintf(err, len, "classifier output has shape other than [%d, %d]", sent, K1);
            rc = VG_EMODEL;
        } else {
            memcpy(probs + (size_t)i0 * K1, out[0].data, sizeof(float) * (size_t)b * K1);
        }
        for (int i = 0; i < n_out; i++)
            vg_tensor_free(&out[i]);
    }
    free(in);
    return rc;
}

static int by_probability(const void *a, const void *b)
{
    double pa = ((const vg_finding_t *)a)->probability, pb = ((const vg_finding_t *)b)->probability;
    return pa < pb ? 1 : pa > pb ? -1 : 0;
}

/* Candidates: components of the thresholded map inside the bone region
 * of at least min_volume_mm3, as IDS (owned by the caller); with CLS,
 * their class probabilities into *PROBS (owned by the caller). Returns the
 * count of candidates, or VG_EMODEL / -ENOMEM with err filled. */
static int candidates(work_t *w, vg_model_t *cls, const int32_t *labels, const comp_t *comps,
                      int n, int **ids, float **probs, char *err, size_t len)
{
    double min_vox = w->man->min_volume_mm3 / pow(w->g.spacing, 3);
    int nc = 0;
    *ids = malloc(sizeof **ids * (size_t)(n > 0 ? n : 1));
    *probs = NULL;
    if (!*ids)
        return -ENOMEM;
    for (int id = 1; id <= n; id++)
        if ((double)comps[id].count >= min_vox)
            (*ids)[nc++] = id;
    if (!cls || nc == 0)
        return nc;
    *probs = malloc(sizeof **probs * (size_t)nc * (w->k + 1));
    if (!*probs)
        return -ENOMEM;
    int rc = classify(cls, w, labels, comps, *ids, nc, *probs, err, len);
    return rc < 0 ? rc : nc;
}

/* Endplate pairs. A lesion of a both_endplates class (endplate osteitis:
 * sclerosis along both endplates of one disc) is segmented as two bands,
 * one in each vertebra, with the disc between them, and the classifier
 * keeps each. Two kept candidates of that type are one lesion when their
 * centroids lie one above the other (at most PAIR_OFFSET_MM apart across
 * the body's axis, PAIR_GAP_MIN_MM..PAIR_GAP_MAX_MM along it: a 4-12 mm
 * disc and half of each 3-10 mm band) and the voxels half-way between
 * them are softer than cancellous bone (a disc, not the body of a
 * vertebra between lesions of two adjacent discs). Closest pairs first. */
#define PAIR_OFFSET_MM 10.0
#define PAIR_GAP_MIN_MM 6.0
#define PAIR_GAP_MAX_MM 24.0
#define DISC_HU 150.0

typedef struct pair {
    double d;
    int i, j;
} pair_t;

static int by_distance(const void *a, const void *b)
{
    double da = ((const pair_t *)a)->d, db = ((const pair_t *)b)->d;
    return da < db ? -1 : da > db ? 1 : 0;
}

/* The class (0..K-1) of classifier distribution P (K + 1 values). */
static int type_of(const work_t *w, const float *p)
{
    int type = 0;
    for (int k = 1; k < w->k; k++)
        if (p[k + 1] > p[type + 1])
            type = k;
    return type;
}

/* Mean HU of the 3^3 voxels around grid point C (x, y, z), clamped. */
static double hu_around(const work_t *w, const double c[3])
{
    int x0 = (int)floor(c[0] + 0.5), y0 = (int)floor(c[1] + 0.5), z0 = (int)floor(c[2] + 0.5);
    double sum = 0;
    for (int dz = -1; dz <= 1; dz++)
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int x = clampi(x0 + dx, 0, w->g.nx - 1), y = clampi(y0 + dy, 0, w->g.ny - 1),
                    z = clampi(z0 + dz, 0, w->g.nz - 1);
                sum += w->g.v[((size_t)z * w->g.ny + y) * w->g.nx + x];
            }
    return sum / 27;
}

/* Component B becomes part of A: its voxels are relabelled (ID_B to
 * ID_A) and its sums added. */
static void absorb(const work_t *w, int32_t *labels, comp_t *a, int id_a, comp_t *b, int id_b)
{
    for (int z = b->box[4]; z <= b->box[5]; z++)
        for (int y = b->box[2]; y <= b->box[3]; y++)
            for (int x = b->box[0]; x <= b->box[1]; x++) {
                int32_t *l = &labels[((size_t)z * w->g.ny + y) * w->g.nx + x];
                if (*l == id_b)
                    *l = id_a;
            }
    a->count += b->count;
    a->sum_fg += b->sum_fg;
    a->sum_hu += b->sum_hu;
    for (int i = 0; i < 3; i++)
        a->sum_pos[i] += b->sum_pos[i];
    for (int k = 0; k < w->k; k++)
        a->sum_cls[k] += b->sum_cls[k];
    for (int i = 0; i < 6; i += 2) {
        a->box[i] = b->box[i] < a->box[i] ? b->box[i] : a->box[i];
        a->box[i + 1] = b->box[i + 1] > a->box[i + 1] ? b->box[i + 1] : a->box[i + 1];
    }
    b->count = 0;
}

/* Merges the endplate pairs among the N classified candidates IDS
 * (PROBS): of each pair the less probable joins the other in LABELS and
 * COMPS and is marked in GONE (N bytes, zeroed by the caller). Returns
 * 0 or -ENOMEM. */
static int merge_endplate_pairs(const work_t *w, int32_t *labels, comp_t *comps, const int *ids,
                                const float *probs, int n, uint8_t *gone)
{
    int K1 = w->k + 1, np = 0, cap = 0;
    pair_t *pairs = NULL;
    for (int i = 0; i < n; i++) {
        const float *pi = probs + (size_t)i * K1;
        int ti = type_of(w, pi);
        if (1.0 - pi[0] < w->man->min_lesion_probability || !w->man->classes[ti].both_endplates)
            continue;
        for (int j = i + 1; j < n; j++) {
            const float *pj = probs + (size_t)j * K1;
            if (1.0 - pj[0] < w->man->min_lesion_probability || type_of(w, pj) != ti)
                continue;
            const comp_t *a = &comps[ids[i]], *b = &comps[ids[j]];
            double ga[3], gb[3], pa[3], pb[3], mid[3];
            for (int k = 0; k < 3; k++) {
                ga[k] = a->sum_pos[k] / a->count;
                gb[k] = b->sum_pos[k] / b->count;
                mid[k] = 0.5 * (ga[k] + gb[k]);
            }
            vg_grid_to_patient(&w->g, ga[0], ga[1], ga[2], pa);
            vg_grid_to_patient(&w->g, gb[0], gb[1], gb[2], pb);
            double gap = fabs(pa[2] - pb[2]), offset = hypot(pa[0] - pb[0], pa[1] - pb[1]);
            if (offset > PAIR_OFFSET_MM || gap < PAIR_GAP_MIN_MM || gap > PAIR_GAP_MAX_MM ||
                hu_around(w, mid) >= DISC_HU)
                continue;
            if (np == cap) {
                cap = cap ? 2 * cap : 8;
                pair_t *grown = realloc(pairs, sizeof *pairs * (size_t)cap);
                if (!grown) {
                    free(pairs);
                    return -ENOMEM;
                }
                pairs = grown;
            }
            pairs[np++] = (pair_t){hypot(gap, offset), i, j};
        }
    }
    qsort(pairs, (size_t)np, sizeof *pairs, by_distance);
    uint8_t *paired = np ? calloc((size_t)n, 1) : NULL;
    if (np && !paired) {
        free(pairs);
        return -ENOMEM;
    }
    for (int q = 0; q < np; q++) {
        int i = pairs[q].i, j = pairs[q].j;
        if (paired[i] || paired[j])
            continue;
        paired[i] = paired[j] = 1;
        if (probs[(size_t)j * K1] < probs[(size_t)i * K1]) /* j the more probable */
            i = pairs[q].j, j = pairs[q].i;
        absorb(w, labels, &comps[ids[i]], ids[i], &comps[ids[j]], ids[j]);
        gone[j] = 1;
    }
    free(paired);
    free(pairs);
    return 0;
}

/* Candidates become findings (those the classifier rejects do not, the
 * two bands of an endplate pair one); the patient score is the noisy-OR
 * of their metastatic probabilities. */
static int find_lesions(work_t *w, vg_model_t *cls, vg_result_t *res, vg_bone_timings_t *t,
                        char *err, size_t len)
{
    int32_t *labels = malloc(w->n * sizeof *labels);
    uint8_t *m = malloc(w->n);
    if (!labels || !m) {
        free(labels), free(m);
        return -ENOMEM;
    }
    for (size_t v = 0; v < w->n; v++)
        m[v] = w->region[v] && w->fg[v] >= w->man->lesion_threshold;
    int n = vg_label_components(m, w->g.nx, w->g.ny, w->g.nz, labels);
    free(m);
    comp_t *comps = n > 0 ? calloc((size_t)n + 1, sizeof *comps) : NULL;
    if (n < 0 || (n > 0 && !comps)) {
        free(labels);
        return -ENOMEM;
    }
    for (size_t v = 0; v < w->n; v++)
        if (labels[v])
            comp_add(&comps[labels[v]], w, v, (int)(v % w->g.nx), (int)(v / w->g.nx % w->g.ny),
                     (int)(v / ((size_t)w->g.nx * w->g.ny)));
    int *ids = NULL;
    float *probs = NULL;
    double t0 = seconds();
    int nc = candidates(w, cls, labels, comps, n, &ids, &probs, err, len);
    t->classify_s = cls ? seconds() - t0 : 0;
    t->candidates = cls && nc > 0 ? nc : 0;
    res->findings = nc >= 0 ? calloc(MAX_FINDINGS, sizeof *res->findings) : NULL;
    uint8_t *gone = nc > 0 && probs ? calloc((size_t)nc, 1) : NULL;
    double none = 1.0; /* probability that no lesion is metastatic */
    int rc = nc < 0 ? nc : res->findings && (gone || !probs || nc == 0) ? 0 : -ENOMEM;
    if (rc == 0 && gone)
        rc = merge_endplate_pairs(w, labels, comps, ids, probs, nc, gone);
    for (int i = 0; rc == 0 && i < nc; i++) {
        const float *p = probs ? probs + (size_t)i * (w->k + 1) : NULL;
        if ((p && 1.0 - p[0] < w->man->min_lesion_probability) || (gone && gone[i]) ||
            res->n_findings == MAX_FINDINGS)
            continue;
        vg_finding_t *f = &res->findings[res->n_findings++];
        double share = make_finding(w, labels, ids[i], &comps[ids[i]], p, f);
        none *= 1.0 - f->probability * share;
        rc = fill_mask(w, labels, ids[i], &comps[ids[i]], f);
    }
    if (res->findings)
        qsort(res->findings, (size_t)res->n_findings, sizeof *res->findings, by_probability);
    res->patient_score = 1.0 - none;
    res->positive = res->patient_score >= w->man->operating_threshold;
    free(ids), free(probs), free(gone);
    free(comps);
    free(labels);
    return rc;
}

static int bone_region(work_t *w)
{
    w->region = malloc(w->n);
    if (!w->region)
        return -ENOMEM;
    float thr = (float)w->man->bone_threshold_hu;
    for (size_t v = 0; v < w->n; v++)
        w->region[v] = w->g.v[v] > thr;
    int r = (int)lround(w->man->bone_margin_mm / w->g.spacing);
    return vg_mask_dilate(w->region, w->g.nx, w->g.ny, w->g.nz, r);
}

static void describe_grid(const vg_grid_t *g, char *out, size_t len)
{
    snprintf(out, len,
             "{\"dims\":[%d,%d,%d],\"spacing_mm\":%g,\"origin\":[%.4f,%.4f,%.4f],"
             "\"row_dir\":[%g,%g,%g],\"col_dir\":[%g,%g,%g],\"normal\":[%g,%g,%g]}",
             g->nx, g->ny, g->nz, g->spacing, g->origin[0], g->origin[1], g->origin[2],
             g->row_dir[0], g->row_dir[1], g->row_dir[2], g->col_dir[0], g->col_dir[1],
             g->col_dir[2], g->normal[0], g->normal[1], g->normal[2]);
}

int vg_bone_analyse(vg_model_t *model, vg_model_t *classifier, const vg_manifest_t *man,
                    const vg_volume_t *vol, vg_result_t *res, vg_bone_timings_t *t,
                    char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    work_t w = {.man = man, .vol = vol, .k = man->n_classes};
    double t0 = seconds();
    int rc = vg_grid_resample(vol, man->spacing_mm, &w.g);
    if (rc == 0) {
        w.n = (size_t)w.g.nx * w.g.ny * w.g.nz;
        w.fg = calloc(w.n, sizeof *w.fg);
        w.cls = calloc(w.n, (size_t)w.k);
        rc = w.fg && w.cls ? bone_region(&w) : -ENOMEM;
    }
    double t1 = seconds();
    t->resample_s = t1 - t0;
    if (rc == 0)
        rc = run_windows(model, &w, t, err, errlen);
    double t2 = seconds();
    t->model_s = t2 - t1;
    if (rc == 0)
        rc = find_lesions(&w, classifier, res, t, err, errlen);
    t->post_s = seconds() - t2;
    if (rc == 0) {
        snprintf(res->status, sizeof res->status, "done");
        describe_grid(&w.g, res->grid, sizeof res->grid);
    } else {
        vg_result_clear(res);
        if (rc == -ENOMEM)
            snprintf(err, errlen, "out of memory for a %dx%dx%d grid", w.g.nx, w.g.ny, w.g.nz);
    }
    vg_grid_free(&w.g);
    free(w.region), free(w.fg), free(w.cls);
    return rc;
}
