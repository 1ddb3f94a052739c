/* The model runtime against real TorchScript files, made at test time by
 * Debian's python3-torch: shapes, values, tuple outputs, error paths. In a
 * build without libtorch, loading must fail with a clear message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/runtime.h"
#include "server/error.h"
#include "tests/unit/test.h"

/* Writes a scripted module: forward(x, y) = (x * 2 + y, x.sum(dim=-1)).
 * TorchScript compiles from source, so the exporter goes in a file. */
static int make_model(const char *path)
{
    char py[512], cmd[1200];
    snprintf(py, sizeof py, "%s/export.py", test_tmpdir());
    FILE *f = fopen(py, "w");
    if (!f)
        return -1;
    fprintf(f, "import torch\n"
               "class M(torch.nn.Module):\n"
               "    def forward(self, x, y):\n"
               "        return x * 2 + y, x.sum(dim=-1)\n"
               "torch.jit.script(M()).save('%s')\n",
            path);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s", py);
    return system(cmd);
}

TEST_IMPL(runtime_forward_values)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/m.pt", test_tmpdir());
    ASSERT_EQ(make_model(path), 0);
    vg_model_t *m = NULL;
    int rc = vg_model_load(path, "cpu", &m, err, sizeof err);
    if (strcmp(vg_runtime_name(), "none") == 0) {
        ASSERT_EQ(rc, VG_EMODEL);
        ASSERT_STR_CONTAINS(err, "without libtorch");
        return 0;
    }
    ASSERT_EQ(rc, 0);
    vg_runtime_set_threads(2);
    /* A rank-3 input: 2 x 3 x 4. */
    float x[24], y[24];
    for (int i = 0; i < 24; i++) {
        x[i] = (float)i;
        y[i] = 0.5f;
    }
    vg_tensor_t in[2] = {{x, {2, 3, 4}, 3}, {y, {2, 3, 4}, 3}};
    vg_tensor_t out[4];
    int n = 0;
    ASSERT_EQ(vg_model_forward(m, in, 2, out, 4, &n, err, sizeof err), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(out[0].ndim, 3);
    ASSERT_EQ(out[0].shape[2], 4);
    ASSERT_EQ(vg_tensor_numel(&out[0]), 24);
    ASSERT_DBL_NEAR(out[0].data[23], 23 * 2 + 0.5, 1e-6);
    ASSERT_EQ(out[1].ndim, 2);
    ASSERT_EQ(out[1].shape[0], 2);
    ASSERT_EQ(out[1].shape[1], 3);
    ASSERT_DBL_NEAR(out[1].data[0], 0 + 1 + 2 + 3, 1e-6);
    ASSERT_DBL_NEAR(out[1].data[5], 20 + 21 + 22 + 23, 1e-6);
    vg_tensor_free(&out[0]);
    vg_tensor_free(&out[1]);
    ASSERT(out[0].data == NULL);
    /* Too few output slots: an error, nothing allocated. */
    ASSERT_EQ(vg_model_forward(m, in, 2, out, 1, &n, err, sizeof err), VG_EMODEL);
    ASSERT_EQ(n, 0);
    /* Wrong arity: libtorch's exception becomes an error message. */
    ASSERT_EQ(vg_model_forward(m, in, 1, out, 4, &n, err, sizeof err), VG_EMODEL);
    ASSERT_STR_CONTAINS(err, "forward");
    vg_model_destroy(m);
    return 0;
}

TEST_IMPL(runtime_load_errors)
{
    char path[512], err[256];
    vg_model_t *m = (vg_model_t *)1;
    snprintf(path, sizeof path, "%s/missing.pt", test_tmpdir());
    ASSERT_LT(vg_model_load(path, "cpu", &m, err, sizeof err), 0);
    ASSERT(m == NULL);
    ASSERT_STR_CONTAINS(err, "No such file");
    /* A corrupt file is an error, not a crash. */
    snprintf(path, sizeof path, "%s/corrupt.pt", test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("not a model", f);
    fclose(f);
    ASSERT_EQ(vg_model_load(path, "cpu", &m, err, sizeof err), VG_EMODEL);
    ASSERT(m == NULL);
    ASSERT_STR_CONTAINS(err, "corrupt.pt");
    if (strcmp(vg_runtime_name(), "none") != 0 && vg_runtime_cuda_devices() == 0) {
        /* Asking for a GPU that is not there says so. */
        ASSERT_EQ(make_model(path), 0);
        ASSERT_EQ(vg_model_load(path, "cuda:0", &m, err, sizeof err), VG_EMODEL);
        ASSERT_STR_CONTAINS(err, "not available");
    }
    return 0;
}
