/* Resampling, dilation and component labelling; see grid.h. */
#include "inference/grid.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Linear resampling along one axis: N_IN samples at STEP_IN become N_OUT
 * at STEP_OUT, for COUNT independent lines of STRIDE-separated samples
 * whose starts are LINE_STEP apart in both arrays' own layouts. */
typedef struct {
    int n_in, n_out;
    double ratio;               /* step_out / step_in */
} axis_t;

static axis_t axis(int n_in, double step_in, double step_out)
{
    axis_t a = {n_in, 1, step_out / step_in};
    if (n_in > 1)
        a.n_out = (int)floor((n_in - 1) * step_in / step_out + 1e-6) + 1;
    return a;
}

/* out[o] = in at position o * ratio, for each output sample. */
static void resample_line(const float *in, size_t in_stride, float *out, size_t out_stride,
                          const axis_t *a)
{
    for (int o = 0; o < a->n_out; o++) {
        double x = o * a->ratio;
        int i0 = (int)x;
        if (i0 >= a->n_in - 1) {
            out[o * out_stride] = in[(size_t)(a->n_in - 1) * in_stride];
            continue;
        }
        float f = (float)(x - i0);
        float v0 = in[i0 * in_stride], v1 = in[(i0 + 1) * in_stride];
        out[o * out_stride] = v0 + f * (v1 - v0);
    }
}

int vg_grid_resample(const vg_volume_t *vol, double s, vg_grid_t *g)
{
    memset(g, 0, sizeof *g);
    axis_t ax = axis(vol->nx, vol->spacing[0], s), ay = axis(vol->ny, vol->spacing[1], s),
           az = axis(vol->nz, vol->spacing[2], s);
    size_t nxo = (size_t)ax.n_out, nyo = (size_t)ay.n_out, nzo = (size_t)az.n_out;
    float *t1 = malloc(sizeof(float) * nxo * vol->ny * vol->nz);
    float *t2 = malloc(sizeof(float) * nxo * nyo * vol->nz);
    float *out = malloc(sizeof(float) * nxo * nyo * nzo);
    if (!t1 || !t2 || !out) {
        free(t1), free(t2), free(out);
        return -ENOMEM;
    }
    size_t rows = (size_t)vol->ny * vol->nz;
    for (size_t r = 0; r < rows; r++)
        resample_line(vol->hu + r * vol->nx, 1, t1 + r * nxo, 1, &ax);
    for (int z = 0; z < vol->nz; z++)
        for (size_t x = 0; x < nxo; x++)
            resample_line(t1 + (size_t)z * vol->ny * nxo + x, nxo,
                          t2 + (size_t)z * nyo * nxo + x, nxo, &ay);
    free(t1);
    size_t plane = nxo * nyo;
    for (size_t p = 0; p < plane; p++)
        resample_line(t2 + p, plane, out + p, plane, &az);
    free(t2);
    g->v = out;
    g->nx = (int)nxo, g->ny = (int)nyo, g->nz = (int)nzo;
    g->spacing = s;
    memcpy(g->origin, vol->origin, sizeof g->origin);
    memcpy(g->row_dir, vol->row_dir, sizeof g->row_dir);
    memcpy(g->col_dir, vol->col_dir, sizeof g->col_dir);
    memcpy(g->normal, vol->normal, sizeof g->normal);
    return 0;
}

void vg_grid_free(vg_grid_t *g)
{
    free(g->v);
    g->v = NULL;
}

void vg_grid_to_patient(const vg_grid_t *g, double i, double j, double k, double out[3])
{
    for (int a = 0; a < 3; a++)
        out[a] = g->origin[a] +
                 g->spacing * (i * g->row_dir[a] + j * g->col_dir[a] + k * g->normal[a]);
}

/* Running-window maximum of width 2r+1 along one line. */
static void dilate_line(uint8_t *p, size_t stride, int n, int r, uint8_t *tmp)
{
    int count = 0; /* set voxels inside the window */
    for (int i = 0; i < n; i++)
        tmp[i] = p[(size_t)i * stride];
    for (int i = 0; i < r && i < n; i++)
        count += tmp[i] != 0;
    for (int i = 0; i < n; i++) {
        if (i + r < n)
            count += tmp[i + r] != 0;
        if (i - r - 1 >= 0)
            count -= tmp[i - r - 1] != 0;
        p[(size_t)i * stride] = count > 0;
    }
}

int vg_mask_dilate(uint8_t *m, int nx, int ny, int nz, int r)
{
    if (r <= 0)
        return 0;
    int n = nx > ny ? (nx > nz ? nx : nz) : (ny > nz ? ny : nz);
    uint8_t *tmp = malloc((size_t)n);
    if (!tmp)
        return -ENOMEM;
    size_t plane = (size_t)nx * ny;
    for (size_t row = 0; row < (size_t)ny * nz; row++)
        dilate_line(m + row * nx, 1, nx, r, tmp);
    for (int z = 0; z < nz; z++)
        for (int x = 0; x < nx; x++)
            dilate_line(m + z * plane + x, (size_t)nx, ny, r, tmp);
    for (size_t p = 0; p < plane; p++)
        dilate_line(m + p, plane, nz, r, tmp);
    free(tmp);
    return 0;
}

int vg_label_components(const uint8_t *m, int nx, int ny, int nz, int32_t *labels)
{
    size_t n = (size_t)nx * ny * nz, cap = 4096, top = 0;
    size_t *stack = malloc(cap * sizeof *stack);
    if (!stack)
        return -ENOMEM;
    memset(labels, 0, n * sizeof *labels);
    int count = 0;
    for (size_t seed = 0; seed < n; seed++) {
        if (!m[seed] || labels[seed])
            continue;
        labels[seed] = ++count;
        stack[top++] = seed;
        while (top) {
            size_t v = stack[--top];
            int x = (int)(v % nx), y = (int)(v / nx % ny), z = (int)(v / ((size_t)nx * ny));
            for (int dz = -1; dz <= 1; dz++)
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int X = x + dx, Y = y + dy, Z = z + dz;
                        if (X < 0 || Y < 0 || Z < 0 || X >= nx || Y >= ny || Z >= nz)
                            continue;
                        size_t w = ((size_t)Z * ny + Y) * nx + X;
                        if (!m[w] || labels[w])
                            continue;
                        labels[w] = count;
                        if (top == cap) {
                            size_t *bigger = realloc(stack, 2 * cap * sizeof *stack);
                            if (!bigger) {
                                free(stack);
                                return -ENOMEM;
                            }
                            stack = bigger, cap *= 2;
                        }
                        stack[top++] = w;
                    }
        }
    }
    free(stack);
    return count;
}
