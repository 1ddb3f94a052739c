/* The model runtime: TorchScript models behind a pure-C interface. Load a
 * file onto a device ("cpu", "cuda:0"), run forward on float tensors of
 * any rank, free. Errors come back as codes with a message; no exception
 * crosses this boundary. Built on libtorch (runtime_torch_shim.cpp), or on
 * a stub that loads nothing (sanitizer builds, NO_TORCH=1). */
#ifndef VG_RUNTIME_H
#define VG_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VG_TENSOR_MAX_DIMS 8

typedef struct vg_model vg_model_t;

typedef struct vg_tensor {
    float *data;                         /* contiguous, row-major */
    int64_t shape[VG_TENSOR_MAX_DIMS];
    int ndim;
} vg_tensor_t;

/* Loads the TorchScript file PATH onto DEVICE ("cpu" or "cuda:N").
 * On success *out is owned by the caller (vg_model_destroy). On failure
 * returns VG_EMODEL (or -ENOENT) with err filled and *out NULL. */
int vg_model_load(const char *path, const char *device, vg_model_t **out,
                  char *err, size_t errlen);
void vg_model_destroy(vg_model_t *m);

/* Runs forward(inputs...). The model may return one tensor or a tuple of
 * tensors; each is copied to a new float buffer in outputs[i] (free with
 * vg_tensor_free). Inputs are read, not kept. Returns 0, or VG_EMODEL with
 * err filled and no outputs. */
int vg_model_forward(vg_model_t *m, const vg_tensor_t *inputs, int n_inputs,
                     vg_tensor_t *outputs, int max_outputs, int *n_outputs,
                     char *err, size_t errlen);

/* Frees t->data and clears t; NULL data is a no-op. */
void vg_tensor_free(vg_tensor_t *t);
/* Number of elements of T. */
int64_t vg_tensor_numel(const vg_tensor_t *t);

/* Threads for CPU inference in this process (libtorch's intra-op pool). */
void vg_runtime_set_threads(int n);
/* CUDA devices visible; 0 without CUDA. */
int vg_runtime_cuda_devices(void);
/* "libtorch 1.13.0", or "none" for the stub. */
const char *vg_runtime_name(void);

#ifdef __cplusplus
}
#endif

#endif
