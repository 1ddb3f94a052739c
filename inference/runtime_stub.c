/* The model runtime without libtorch, for sanitizer builds (libtorch is
 * not built with sanitizers) and NO_TORCH=1: every load fails with a clear
 * message, so the node runs and reports its models unavailable. */
#include "inference/runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server/error.h"

int vg_model_load(const char *path, const char *device, vg_model_t **out, char *err,
                  size_t errlen)
{
    (void)device;
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    snprintf(err, errlen, "%s: this build has no model runtime (built without libtorch)",
             path);
    return VG_EMODEL;
}

void vg_model_destroy(vg_model_t *m)
{
    (void)m;
}

int vg_model_forward(vg_model_t *m, const vg_tensor_t *inputs, int n_inputs,
                     vg_tensor_t *outputs, int max_outputs, int *n_outputs, char *err,
                     size_t errlen)
{
    (void)m, (void)inputs, (void)n_inputs, (void)outputs, (void)max_outputs;
    *n_outputs = 0;
    snprintf(err, errlen, "built without libtorch");
    return VG_EMODEL;
}

void vg_tensor_free(vg_tensor_t *t)
{
    if (!t)
        return;
    free(t->data);
    memset(t, 0, sizeof *t);
}

int64_t vg_tensor_numel(const vg_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

void vg_runtime_set_threads(int n)
{
    (void)n;
}

int vg_runtime_cuda_devices(void)
{
    return 0;
}

const char *vg_runtime_name(void)
{
    return "none";
}
