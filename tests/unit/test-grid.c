/* Resampling, dilation and component labelling on small known volumes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "inference/grid.h"
#include "tests/unit/test.h"

TEST_IMPL(grid_resample_linear)
{
    /* 5 x 3 x 4 voxels, 1 x 1 x 2 mm, values = x + 10 y + 100 z (linear,
     * so trilinear resampling must reproduce it exactly). */
    vg_volume_t v = {0};
    v.nx = 5, v.ny = 3, v.nz = 4;
    v.spacing[0] = 1, v.spacing[1] = 1, v.spacing[2] = 2;
    v.row_dir[0] = v.col_dir[1] = v.normal[2] = 1;
    v.origin[0] = -2, v.origin[1] = 3, v.origin[2] = 7;
    v.hu = malloc(sizeof(float) * 60);
    for (int z = 0; z < 4; z++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 5; x++)
                v.hu[(z * 3 + y) * 5 + x] = (float)(x + 10 * y + 100 * z);
    vg_grid_t g;
    ASSERT_EQ(vg_grid_resample(&v, 0.5, &g), 0);
    ASSERT_EQ(g.nx, 9);
    ASSERT_EQ(g.ny, 5);
    ASSERT_EQ(g.nz, 13); /* 6 mm of z at 0.5 mm */
    /* Grid voxel (3, 1, 5) is at x 1.5, y 0.5, z 2.5 (in source voxels 1.5,
     * 0.5, 1.25). */
    float want = 1.5f + 10 * 0.5f + 100 * 1.25f;
    ASSERT_DBL_NEAR(g.v[((size_t)5 * g.ny + 1) * g.nx + 3], want, 1e-3);
    double p[3];
    vg_grid_to_patient(&g, 3, 1, 5, p);
    ASSERT_DBL_NEAR(p[0], -0.5, 1e-9);
    ASSERT_DBL_NEAR(p[1], 3.5, 1e-9);
    ASSERT_DBL_NEAR(p[2], 9.5, 1e-9);
    vg_grid_free(&g);
    free(v.hu);
    return 0;
}

TEST_IMPL(grid_dilate_and_label)
{
    enum { N = 12 };
    uint8_t m[N * N * N];
    int32_t lab[N * N * N];
    memset(m, 0, sizeof m);
    m[(2 * N + 2) * N + 2] = 1;             /* a point */
    m[(8 * N + 8) * N + 8] = 1;             /* another, far away */
    m[(8 * N + 9) * N + 9] = 1;             /* diagonal neighbour: same component */
    ASSERT_EQ(vg_label_components(m, N, N, N, lab), 2);
    ASSERT_EQ(lab[(8 * N + 8) * N + 8], lab[(8 * N + 9) * N + 9]);
    ASSERT_NE(lab[(2 * N + 2) * N + 2], lab[(8 * N + 8) * N + 8]);
    ASSERT_EQ(vg_mask_dilate(m, N, N, N, 1), 0);
    int set = 0;
    for (int i = 0; i < N * N * N; i++)
        set += m[i];
    /* 27 around the first point; the pair's two cubes share 3x2x2. */
    ASSERT_EQ(set, 27 + 27 + 27 - 12);
    ASSERT_EQ(m[(1 * N + 1) * N + 1], 1);
    ASSERT_EQ(m[(4 * N + 2) * N + 2], 0);
    ASSERT_EQ(vg_label_components(m, N, N, N, lab), 2);
    return 0;
}
