/* libtorch behind runtime.h. Every exported function catches all
 * exceptions and turns them into VG_EMODEL with the message. Inference
 * runs under c10::InferenceMode (no autograd bookkeeping). */
#include "inference/runtime.h"

#include <torch/script.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "server/error.h"

struct vg_model {
    torch::jit::script::Module module;
    torch::Device device;
    vg_model(torch::jit::script::Module m, torch::Device d) : module(std::move(m)), device(d) {}
};

static void set_err(char *err, size_t errlen, const char *what, const char *detail)
{
    if (!err || !errlen)
        return;
    /* libtorch messages carry a C++ backtrace after the first line. */
    std::string d(detail ? detail : "");
    size_t nl = d.find('\n');
    if (nl != std::string::npos)
        d.resize(nl);
    snprintf(err, errlen, "%s: %s", what, d.c_str());
}

extern "C" int vg_model_load(const char *path, const char *device, vg_model_t **out,
                             char *err, size_t errlen)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    try {
        torch::Device dev(device);
        if (dev.is_cuda() && (!torch::cuda::is_available() ||
                              dev.index() >= (int)torch::cuda::device_count())) {
            snprintf(err, errlen, "device %s is not available (%d CUDA devices)", device,
                     torch::cuda::is_available() ? (int)torch::cuda::device_count() : 0);
            return VG_EMODEL;
        }
        torch::jit::script::Module m = torch::jit::load(path, dev);
        m.eval();
        *out = new vg_model(std::move(m), dev);
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, path, e.what());
    } catch (...) {
        set_err(err, errlen, path, "unknown exception");
    }
    return VG_EMODEL;
}

extern "C" void vg_model_destroy(vg_model_t *m)
{
    try {
        delete m;
    } catch (...) {
    }
}

static int copy_out(const torch::Tensor &t, vg_tensor_t *o)
{
    torch::Tensor c = t.to(torch::kCPU, torch::kFloat).contiguous();
    if (c.dim() > VG_TENSOR_MAX_DIMS)
        return -1;
    o->ndim = (int)c.dim();
    for (int i = 0; i < o->ndim; i++)
        o->shape[i] = c.size(i);
    size_t bytes = (size_t)c.numel() * sizeof(float);
    o->data = (float *)malloc(bytes ? bytes : 1);
    if (!o->data)
        return -1;
    memcpy(o->data, c.data_ptr<float>(), bytes);
    return 0;
}

static void free_outputs(vg_tensor_t *outputs, int n)
{
    for (int i = 0; i < n; i++)
        vg_tensor_free(&outputs[i]);
}

extern "C" int vg_model_forward(vg_model_t *m, const vg_tensor_t *inputs, int n_inputs,
                                vg_tensor_t *outputs, int max_outputs, int *n_outputs,
                                char *err, size_t errlen)
{
    *n_outputs = 0;
    try {
        c10::InferenceMode guard;
        std::vector<torch::jit::IValue> args;
        for (int i = 0; i < n_inputs; i++) {
            std::vector<int64_t> shape(inputs[i].shape, inputs[i].shape + inputs[i].ndim);
            /* from_blob does not copy; .to() copies only for another device. */
            torch::Tensor t = torch::from_blob(inputs[i].data, shape, torch::kFloat);
            args.push_back(m->device.is_cpu() ? t : t.to(m->device));
        }
        torch::jit::IValue r = m->module.forward(args);
        std::vector<torch::Tensor> ts;
        if (r.isTensor()) {
            ts.push_back(r.toTensor());
        } else if (r.isTuple()) {
            for (auto &e : r.toTuple()->elements())
                ts.push_back(e.toTensor());
        } else if (r.isTensorList()) {
            for (const torch::Tensor &e : r.toTensorVector())
                ts.push_back(e);
        } else {
            snprintf(err, errlen, "forward returned neither a tensor nor a tuple of tensors");
            return VG_EMODEL;
        }
        if ((int)ts.size() > max_outputs) {
            snprintf(err, errlen, "forward returned %zu outputs, room for %d", ts.size(),
                     max_outputs);
            return VG_EMODEL;
        }
        for (size_t i = 0; i < ts.size(); i++) {
            if (copy_out(ts[i], &outputs[i]) < 0) {
                free_outputs(outputs, (int)i);
                snprintf(err, errlen, "output %zu: out of memory or rank > %d", i,
                         VG_TENSOR_MAX_DIMS);
                return VG_EMODEL;
            }
        }
        *n_outputs = (int)ts.size();
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, "forward", e.what());
    } catch (...) {
        set_err(err, errlen, "forward", "unknown exception");
    }
    return VG_EMODEL;
}

extern "C" void vg_tensor_free(vg_tensor_t *t)
{
    if (!t)
        return;
    free(t->data);
    memset(t, 0, sizeof *t);
}

extern "C" int64_t vg_tensor_numel(const vg_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

extern "C" void vg_runtime_set_threads(int n)
{
    try {
        if (n > 0) {
            at::set_num_threads(n);
        }
    } catch (...) {
    }
}

extern "C" int vg_runtime_cuda_devices(void)
{
    try {
        return torch::cuda::is_available() ? (int)torch::cuda::device_count() : 0;
    } catch (...) {
        return 0;
    }
}

extern "C" const char *vg_runtime_name(void)
{
    static char name[64];
    snprintf(name, sizeof name, "libtorch %d.%d.%d", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR,
             TORCH_VERSION_PATCH);
    return name;
}
