/* The C side of the result writers: UIDs, durable placement and the
 * mapping of lesion masks onto the source slices; see dicom_out.h. */
#include "inference/dicom_out.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "inference/dicom_out_int.h"
#include "storage/store.h"

void vg_dicom_new_uid(char out[65])
{
    unsigned __int128 v = 0;
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (errno != EINTR)
            break;
    }
    if (got < sizeof b) { /* no entropy source: time and pid, still unique enough */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(b, &ts, sizeof ts < 16 ? sizeof ts : 16);
        b[15] ^= (unsigned char)getpid();
    }
    for (size_t i = 0; i < sizeof b; i++)
        v = (v << 8) | b[i];
    /* UUID version 4, variant 1 (RFC 4122), as PS3.5 B.2 asks. */
    v &= ~((unsigned __int128)0xF << 76);
    v |= (unsigned __int128)0x4 << 76;
    v &= ~((unsigned __int128)0x3 << 62);
    v |= (unsigned __int128)0x2 << 62;
    char digits[40];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    memcpy(out, "2.25.", 5);
    for (int i = 0; i < n; i++)
        out[5 + i] = digits[n - 1 - i];
    out[5 + n] = '\0';
}

/* mkdir -p of DIR, fsyncing each parent whose entry it added. */
static int make_dirs(const char *dir)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) == 0) {
            char *slash = strrchr(buf, '/');
            if (slash && slash != buf) {
                *slash = '\0';
                vg_fsync_path(buf);
                *slash = '/';
            }
        } else if (errno != EEXIST) {
            return -errno;
        }
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int vg__dicom_make_parent(const char *path)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return -ENAMETOOLONG;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    return make_dirs(dir);
}

int vg__dicom_commit(const char *tmp, const char *final_path)
{
    char dir[4096];
    int rc;
    if (snprintf(dir, sizeof dir, "%s", final_path) >= (int)sizeof dir) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    char *slash = strrchr(dir, '/');
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else {
        *slash = '\0';
        if ((rc = make_dirs(dir)) < 0)
            goto fail;
    }
    if ((rc = vg_fsync_path(tmp)) < 0)
        goto fail;
    if (rename(tmp, final_path) < 0) {
        rc = -errno;
        goto fail;
    }
    return vg_fsync_path(dir);
fail:
    unlink(tmp);
    return rc;
}

/* The grid index nearest to source index IDX along an axis of source step
 * S: vg_grid_resample puts grid voxel o at source index o * G / S, both
 * grids starting at the volume's origin. */
static int grid_index(int idx, double s, double g)
{
    return (int)floor(idx * s / g + 0.5);
}

/* The source indices [*lo, *hi] of an axis of N samples whose nearest grid
 * index lies in [b0, b1]; *lo > *hi when none does. The estimate is exact
 * up to rounding, which the two loops correct. */
static void source_range(int n, double s, double g, int b0, int b1, int *lo, int *hi)
{
    int a = (int)floor((b0 - 0.5) * g / s), b = (int)ceil((b1 + 0.5) * g / s);
    a = a < 0 ? 0 : (a > n ? n : a);
    b = b > n - 1 ? n - 1 : (b < -1 ? -1 : b);
    while (a > 0 && grid_index(a - 1, s, g) >= b0)
        a--;
    while (a < n && grid_index(a, s, g) < b0)
        a++;
    while (b < n - 1 && grid_index(b + 1, s, g) <= b1)
        b++;
    while (b >= 0 && grid_index(b, s, g) > b1)
        b--;
    *lo = a, *hi = b;
}

/* Fills FRAME (nx*ny bytes, zeroed) with slice K's pixels in the box
 * [x0, x1] x [y0, y1]; XMAP holds each column's grid i minus the box's
 * i0. Returns whether any pixel was set. */
static int fill_frame(const vg_dicom_input_t *in, const vg_finding_t *f, int k,
                      const int *xmap, int x0, int x1, int y0, int y1, unsigned char *frame)
{
    const vg_volume_t *v = in->vol;
    const int *box = f->mask_box;
    size_t kk = (size_t)(grid_index(k, v->spacing[2], in->grid_spacing) - box[2]);
    int any = 0;
    for (int y = y0; y <= y1; y++) {
        size_t jj = (size_t)(grid_index(y, v->spacing[1], in->grid_spacing) - box[1]);
        size_t row = (kk * (size_t)box[4] + jj) * (size_t)box[3];
        unsigned char *out = frame + (size_t)y * v->nx;
        for (int x = x0; x <= x1; x++) {
            size_t b = row + (size_t)xmap[x - x0];
            /* As bone.c packs them: bit b is bit b % 8 (LSB first) of byte b / 8. */
            int bit = (f->mask[b >> 3] >> (b & 7)) & 1;
            out[x] = (unsigned char)bit;
            any |= bit;
        }
    }
    return any;
}

int vg_finding_frames(const vg_dicom_input_t *in, int fi, unsigned char **frames,
                      int **slices)
{
    *frames = NULL;
    *slices = NULL;
    if (fi < 0 || fi >= in->res->n_findings || in->grid_spacing <= 0)
        return -EINVAL;
    const vg_volume_t *v = in->vol;
    const vg_finding_t *f = &in->res->findings[fi];
    const int *box = f->mask_box;
    size_t bits = (size_t)(box[3] > 0 ? box[3] : 0) * (box[4] > 0 ? box[4] : 0) *
                  (box[5] > 0 ? box[5] : 0);
    if (bits == 0 || !f->mask || f->mask_bytes < (bits + 7) / 8)
        return -EINVAL;
    double g = in->grid_spacing;
    int x0, x1, y0, y1, k0, k1;
    source_range(v->nx, v->spacing[0], g, box[0], box[0] + box[3] - 1, &x0, &x1);
    source_range(v->ny, v->spacing[1], g, box[1], box[1] + box[4] - 1, &y0, &y1);
    source_range(v->nz, v->spacing[2], g, box[2], box[2] + box[5] - 1, &k0, &k1);
    if (x0 > x1 || y0 > y1 || k0 > k1)
        return 0;
    size_t plane = (size_t)v->nx * v->ny;
    int cand = k1 - k0 + 1, n = 0;
    unsigned char *buf = calloc((size_t)cand, plane);
    int *ks = malloc(sizeof(int) * (size_t)cand);
    int *xmap = malloc(sizeof(int) * (size_t)(x1 - x0 + 1));
    if (!buf || !ks || !xmap) {
        free(buf), free(ks), free(xmap);
        return -ENOMEM;
    }
    for (int x = x0; x <= x1; x++)
        xmap[x - x0] = grid_index(x, v->spacing[0], g) - box[0];
    for (int k = k0; k <= k1; k++) {
        unsigned char *frame = buf + (size_t)n * plane;
        if (fill_frame(in, f, k, xmap, x0, x1, y0, y1, frame))
            ks[n++] = k;
        else
            memset(frame, 0, plane); /* reused by the next slice */
    }
    free(xmap);
    if (n == 0) {
        free(buf), free(ks);
        return 0;
    }
    unsigned char *shrunk = realloc(buf, (size_t)n * plane);
    *frames = shrunk ? shrunk : buf;
    *slices = ks;
    return n;
}
