/* The CUDA backend: creation and destruction, its function table, device memory, host transfers,
 * scratch buffers and the error messages of cuda_check.h. */
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors (cuda_check.h) ---- */

/* "engine/cuda/x.c" rather than the build machine's absolute path. */
static const char *pd_cuda_short_file(const char *file) {
    const char *p = strstr(file, "engine/");
    return p ? p : file;
}

pd_status pd_cuda_fail_runtime(cudaError_t e, const char *stmt, const char *file, int line, int dev) {
    /* A failed call leaves its error as the thread's "last error"; clear it so the next launch
     * check does not report it again (sticky errors stay, as they must). */
    (void)cudaGetLastError();
    pd_status st = e == cudaErrorMemoryAllocation ? PD_ERR_NOMEM : PD_ERR_DEVICE;
    return pd_error_set(st, "CUDA error %s: %s in `%s` at %s:%d (cuda:%d)", cudaGetErrorName(e), cudaGetErrorString(e),
                        stmt, pd_cuda_short_file(file), line, dev);
}

pd_status pd_cuda_fail_cublas(cublasStatus_t e, const char *stmt, const char *file, int line, int dev) {
    pd_status st = e == CUBLAS_STATUS_ALLOC_FAILED ? PD_ERR_NOMEM : PD_ERR_DEVICE;
    return pd_error_set(st, "cuBLAS error %s: %s in `%s` at %s:%d (cuda:%d)", cublasGetStatusName(e),
                        cublasGetStatusString(e), stmt, pd_cuda_short_file(file), line, dev);
}

pd_status pd_cuda_fail_cudnn(cudnnStatus_t e, const char *stmt, const char *file, int line, int dev) {
    char text[512] = "";
    cudnnGetLastErrorString(text, sizeof text); /* cuDNN's detail for the failed call, often empty */
    pd_status st = e == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
                           e == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED
                       ? PD_ERR_NOMEM
                       : PD_ERR_DEVICE;
    return pd_error_set(st, "cuDNN error %s: %s in `%s` at %s:%d (cuda:%d)", cudnnGetErrorString(e),
                        text[0] ? text : "(no detail)", stmt, pd_cuda_short_file(file), line, dev);
}

/* ---- helpers shared by the op files ---- */

pd_status pd_cuda_enter(pd_backend *be) {
    pd_cuda *c = pd_cuda_of(be);
    int cur = -1;
    PD_CUDA_CHECK(c->device, cudaGetDevice(&cur));
    if (cur != c->device) PD_CUDA_CHECK(c->device, cudaSetDevice(c->device));
    return PD_OK;
}

pd_status pd_cuda_scratch(pd_backend *be, pd_cuda_scratch_id id, size_t bytes, void **out) {
    pd_cuda *c = pd_cuda_of(be);
    PD_ASSERT(id >= 0 && id < PD_CUDA_SCRATCH_COUNT);
    pd_cuda_buf *b = &c->scratch[id];
    if (!b->ptr || b->bytes < bytes) {
        /* Rounded up to 2 MiB: the same shapes come back every step, so growth stops after the first. */
        size_t want = bytes < ((size_t)1 << 21) ? (size_t)1 << 21 : bytes;
        if (want > SIZE_MAX - ((size_t)1 << 21)) return pd_error_set(PD_ERR_NOMEM, "cuda:%d: scratch of %zu bytes", c->device, bytes);
        want = (want + ((size_t)1 << 21) - 1) & ~(((size_t)1 << 21) - 1);
        PD_TRY(pd_cuda_enter(be));
        /* The old buffer may still be read by queued work. */
        PD_CUDA_CHECK(c->device, cudaStreamSynchronize(c->stream));
        if (b->ptr) PD_CUDA_CHECK(c->device, cudaFree(b->ptr));
        b->ptr = NULL;
        b->bytes = 0;
        void *p = NULL;
        PD_CUDA_CHECK(c->device, cudaMalloc(&p, want));
        b->ptr = p;
        b->bytes = want;
    }
    *out = b->ptr;
    return PD_OK;
}

/* ---- memory ---- */

/* Bytes of a contiguous (shape, dt) tensor, or PD_ERR_INVALID when the count overflows. */
static pd_status pd_cuda_bytes(pd_dtype dt, int ndim, const int64_t *shape, size_t *out) {
    int64_t n = (int64_t)pd_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > INT64_MAX / shape[i])
            return pd_error_set(PD_ERR_INVALID, "tensor of %d dims is too large (dim %d = %lld)", ndim, i, (long long)shape[i]);
        n *= shape[i];
    }
    *out = (size_t)n;
    return PD_OK;
}

/* A contiguous device tensor; zeroed on the stream when `zero`. */
static pd_status pd_cuda_alloc(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape, bool zero) {
    pd_cuda *c = pd_cuda_of(be);
    memset(out, 0, sizeof *out);
    size_t bytes = 0;
    PD_TRY(pd_cuda_bytes(dt, ndim, shape, &bytes));
    PD_TRY(pd_cuda_enter(be));
    pd_tensor t = pd_tensor_view(NULL, dt, ndim, shape);
    /* At least one byte, so data is never NULL (cudaMalloc aligns to 256 bytes). */
    cudaError_t e = cudaMalloc(&t.data, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        char desc[96];
        pd_status st = pd_cuda_fail_runtime(e, "cudaMalloc", __FILE__, __LINE__, c->device);
        return pd_error_prefix(st, "allocating %s (%zu bytes) on %s", pd_tensor_describe(&t, desc, sizeof desc), bytes,
                               be->name);
    }
    if (zero && bytes) {
        e = cudaMemsetAsync(t.data, 0, bytes, c->stream);
        if (e != cudaSuccess) {
            cudaFree(t.data);
            return pd_cuda_fail_runtime(e, "cudaMemsetAsync", __FILE__, __LINE__, c->device);
        }
    }
    t.device = PD_DEVICE_CUDA;
    t.device_index = c->device;
    t.owns_data = true;
    *out = t;
    return PD_OK;
}

static pd_status pd_cuda_tensor_alloc(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape) {
    return pd_cuda_alloc(be, out, dt, ndim, shape, true);
}

static pd_status pd_cuda_release(pd_backend *be, void *data) {
    pd_cuda *c = pd_cuda_of(be);
    PD_TRY(pd_cuda_enter(be));
    /* Queued work may still use the buffer: wait for it before releasing. */
    PD_CUDA_CHECK(c->device, cudaStreamSynchronize(c->stream));
    PD_CUDA_CHECK(c->device, cudaFree(data));
    return PD_OK;
}

static void pd_cuda_tensor_free(pd_backend *be, pd_tensor *t) {
    if (t->device != PD_DEVICE_CUDA) {
        pd_tensor_free(t);
        return;
    }
    if (t->owns_data && t->data) {
        pd_cuda_conv_forget(pd_cuda_of(be), t->data, pd_tensor_nbytes(t)); /* its address may come back */
        if (pd_cuda_release(be, t->data) != PD_OK)
            PD_WARN("cuda", "%s: releasing a device tensor failed: %s", be->name, pd_error_msg());
    }
    memset(t, 0, sizeof *t);
}

/* Copies bytes on the stream and waits for the copy: the host side may be reused or read at once
 * (from pinned memory a copy is asynchronous; the loader reuses its pinned buffer for the next weight). */
static pd_status pd_cuda_memcpy_sync(pd_backend *be, void *dst, const void *src, size_t bytes,
                                     enum cudaMemcpyKind kind) {
    pd_cuda *c = pd_cuda_of(be);
    PD_CUDA_CHECK(c->device, cudaMemcpyAsync(dst, src, bytes, kind, c->stream));
    PD_CUDA_CHECK(c->device, cudaStreamSynchronize(c->stream));
    return PD_OK;
}

static pd_status pd_cuda_synchronize(pd_backend *be) {
    pd_cuda *c = pd_cuda_of(be);
    PD_TRY(pd_cuda_enter(be));
    PD_CUDA_CHECK(c->device, cudaStreamSynchronize(c->stream));
    return PD_OK;
}

static pd_status pd_cuda_import_weight(pd_backend *be, pd_tensor *out, const pd_tensor *host) {
    pd_tensor t;
    PD_TRY(pd_cuda_alloc(be, &t, host->dtype, host->ndim, host->shape, false));
    size_t bytes = pd_tensor_nbytes(host);
    pd_status st = bytes ? pd_cuda_memcpy_sync(be, t.data, host->data, bytes, cudaMemcpyHostToDevice) : PD_OK;
    if (st != PD_OK) {
        char desc[96];
        pd_cuda_tensor_free(be, &t);
        return pd_error_prefix(st, "importing weight %s", pd_tensor_describe(host, desc, sizeof desc));
    }
    *out = t;
    return PD_OK;
}

/* Transfers copy contiguous bytes; a strided side goes through a contiguous temporary (host: by
 * pd_tensor_copy, device: by the copy kernel). */
static pd_status pd_cuda_upload(pd_backend *be, pd_tensor *dst, const pd_tensor *host_src) {
    if (pd_tensor_numel(dst) == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    pd_cuda_conv_forget(pd_cuda_of(be), dst->data, pd_cuda_policy_span_bytes(dst)); /* new contents */
    pd_tensor htmp = {0}, dtmp = {0};
    const pd_tensor *h = host_src;
    pd_tensor *d = dst;
    pd_status st = PD_OK;
    if (!pd_tensor_is_contiguous(host_src)) {
        st = pd_tensor_alloc(&htmp, host_src->dtype, host_src->ndim, host_src->shape);
        if (st == PD_OK) st = pd_tensor_copy(&htmp, host_src);
        h = &htmp;
    }
    if (st == PD_OK && !pd_tensor_is_contiguous(dst)) {
        st = pd_cuda_alloc(be, &dtmp, dst->dtype, dst->ndim, dst->shape, false);
        d = &dtmp;
    }
    if (st == PD_OK) st = pd_cuda_memcpy_sync(be, d->data, h->data, pd_tensor_nbytes(h), cudaMemcpyHostToDevice);
    if (st == PD_OK && d != dst) st = pd_cuda_copy(be, dst, d);
    if (st == PD_OK && d != dst) st = pd_cuda_synchronize(be); /* dst is written when upload returns */
    pd_tensor_free(&htmp);
    pd_cuda_tensor_free(be, &dtmp);
    return st;
}

static pd_status pd_cuda_download(pd_backend *be, pd_tensor *host_dst, const pd_tensor *src) {
    if (pd_tensor_numel(src) == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    pd_tensor htmp = {0}, dtmp = {0};
    pd_tensor *h = host_dst;
    const pd_tensor *d = src;
    pd_status st = PD_OK;
    if (!pd_tensor_is_contiguous(host_dst)) {
        st = pd_tensor_alloc(&htmp, host_dst->dtype, host_dst->ndim, host_dst->shape);
        h = &htmp;
    }
    if (st == PD_OK && !pd_tensor_is_contiguous(src)) {
        st = pd_cuda_alloc(be, &dtmp, src->dtype, src->ndim, src->shape, false);
        if (st == PD_OK) st = pd_cuda_copy(be, &dtmp, src);
        d = &dtmp;
    }
    if (st == PD_OK) st = pd_cuda_memcpy_sync(be, h->data, d->data, pd_tensor_nbytes(d), cudaMemcpyDeviceToHost);
    if (st == PD_OK && h != host_dst) st = pd_tensor_copy(host_dst, h);
    pd_tensor_free(&htmp);
    pd_cuda_tensor_free(be, &dtmp);
    return st;
}

/* COPY writes dst: a widened copy CONV3D kept of those bytes is void from now on. */
static pd_status pd_cuda_copy_op(pd_backend *be, pd_tensor *dst, const pd_tensor *src) {
    pd_cuda_conv_forget(pd_cuda_of(be), dst->data, pd_cuda_policy_span_bytes(dst));
    return pd_cuda_copy(be, dst, src);
}

/* ---- lifetime ---- */

static void pd_cuda_free(pd_backend *be) {
    pd_cuda *c = pd_cuda_of(be);
    if (c) {
        /* Teardown reports failures but goes on: every handle is released either way. */
        if (cudaSetDevice(c->device) != cudaSuccess || (c->stream && cudaStreamSynchronize(c->stream) != cudaSuccess))
            PD_WARN("cuda", "%s: device error at teardown: %s", be->name, cudaGetErrorString(cudaGetLastError()));
        pd_cuda_linear_free(c);
        pd_cuda_sdpa_free(c);
        pd_cuda_conv_free(c);
        for (int i = 0; i < PD_CUDA_SCRATCH_COUNT; i++)
            if (c->scratch[i].ptr) cudaFree(c->scratch[i].ptr);
        if (c->dnn) cudnnDestroy(c->dnn);
        if (c->lt) cublasLtDestroy(c->lt);
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        (void)cudaGetLastError();
        free(c);
    }
    free(be);
}

static const pd_backend_ops pd_cuda_ops = {
    .free = pd_cuda_free,
    .tensor_alloc = pd_cuda_tensor_alloc,
    .tensor_free = pd_cuda_tensor_free,
    .import_weight = pd_cuda_import_weight,
    .upload = pd_cuda_upload,
    .download = pd_cuda_download,
    .synchronize = pd_cuda_synchronize,
    .linear = pd_cuda_linear,
    .layer_norm = pd_cuda_layer_norm,
    .rms_norm = pd_cuda_rms_norm,
    .rope3d_freqs = pd_cuda_rope3d_freqs,
    .rope = pd_cuda_rope,
    .attention = pd_cuda_attention,
    .gelu_tanh = pd_cuda_gelu_tanh,
    .silu = pd_cuda_silu,
    .modulate = pd_cuda_modulate,
    .gated_add = pd_cuda_gated_add,
    .add = pd_cuda_add,
    .mul = pd_cuda_mul,
    .timestep_embed = pd_cuda_timestep_embed,
    .patchify = pd_cuda_patchify,
    .unpatchify = pd_cuda_unpatchify,
    .copy = pd_cuda_copy_op,
    .conv3d = pd_cuda_conv3d,
    .upsample_nearest2d = pd_cuda_upsample_nearest2d,
    .channel_rms_norm = pd_cuda_channel_rms_norm,
    .clamp = pd_cuda_clamp,
    .embedding = pd_cuda_embedding,
    .layer_norm_modulate = pd_cuda_layer_norm_modulate,
    .linear_gelu = pd_cuda_linear_gelu,
    .rms_norm_rope = pd_cuda_rms_norm_rope,
};

#ifndef PD_CUDA_ARCHS
#define PD_CUDA_ARCHS "" /* unknown: only the kernel-image probe decides */
#endif

const char *pd_cuda_architectures(void) { return PD_CUDA_ARCHS; }

/* Refuses a device this build has no GPU code for, with a message naming what it has (before any
 * library handle exists), then asks the driver whether a kernel image loads: a list it could not
 * read ("native") or a driver that disagrees fails here too, not at the first kernel. */
static pd_status pd_cuda_check_arch(pd_cuda *c) {
    char desc[300], built[256];
    snprintf(desc, sizeof desc, "cuda:%d (%s)", c->device, c->gpu_name);
    pd_cuda_arch_fit fit = pd_cuda_policy_arch_fit(PD_CUDA_ARCHS, c->sm_major, c->sm_minor, built, sizeof built);
    if (fit == PD_CUDA_ARCH_NONE) return pd_cuda_policy_check_arch(PD_CUDA_ARCHS, desc, c->sm_major, c->sm_minor);
    if (fit == PD_CUDA_ARCH_PTX)
        PD_WARN("cuda", "%s, compute capability %d.%d: this build has only PTX for it (%s); the driver compiles the "
                "kernels at start (slow the first time), and they may run slower than machine code for sm_%d%d",
                desc, c->sm_major, c->sm_minor, built, c->sm_major, c->sm_minor);
    cudaError_t e = pd_cuda_kernel_image_status();
    if (e != cudaSuccess)
        return pd_error_set(PD_ERR_UNSUPPORTED,
                            "%s, compute capability %d.%d: this build's kernels do not load on it (%s: %s); it was "
                            "built for CUDA architectures '%s'. Rebuild with cmake "
                            "-DCMAKE_CUDA_ARCHITECTURES=\"%d%d-real;90-virtual\" (or \"native\" on that machine)",
                            desc, c->sm_major, c->sm_minor, cudaGetErrorName(e), cudaGetErrorString(e), PD_CUDA_ARCHS,
                            c->sm_major, c->sm_minor);
    return PD_OK;
}

/* Device, stream and library handles, every library bound to the one stream. */
static pd_status pd_cuda_init(pd_cuda *c) {
    int dev = c->device;
    PD_CUDA_CHECK(dev, cudaSetDevice(dev));
    struct cudaDeviceProp prop;
    PD_CUDA_CHECK(dev, cudaGetDeviceProperties(&prop, dev));
    c->sm_major = prop.major;
    c->sm_minor = prop.minor;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    c->total_mem = prop.totalGlobalMem;
    snprintf(c->gpu_name, sizeof c->gpu_name, "%s", prop.name);
    PD_TRY(pd_cuda_check_arch(c));
    /* A blocking stream: work that other code queues on the legacy default stream (the NCCL
     * communicator's default "caller stream", tests' cudaMemcpy) stays ordered after ours. */
    PD_CUDA_CHECK(dev, cudaStreamCreateWithFlags(&c->stream, cudaStreamDefault));
    PD_CUBLAS_CHECK(dev, cublasCreate(&c->blas));
    PD_CUBLAS_CHECK(dev, cublasSetStream(c->blas, c->stream));
    /* Full f32 GEMMs (no TF32) where cuBLAS is used with f32 data. */
    PD_CUBLAS_CHECK(dev, cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    PD_CUBLAS_CHECK(dev, cublasLtCreate(&c->lt)); /* cuBLASLt takes the stream per call */
    PD_CUDNN_CHECK(dev, cudnnCreate(&c->dnn));
    PD_CUDNN_CHECK(dev, cudnnSetStream(c->dnn, c->stream)); /* for good: nothing else sees the handle */
    return PD_OK;
}

pd_status pd_backend_cuda_create(int device, pd_backend **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return pd_error_set(PD_ERR_DEVICE, "cuda:%d: no usable CUDA device (%s: %s)", device, cudaGetErrorName(e),
                            cudaGetErrorString(e));
    }
    if (device < 0 || device >= n)
        return pd_error_set(PD_ERR_DEVICE, "cuda:%d: no such device (this machine has %d CUDA device%s)", device, n,
                            n == 1 ? "" : "s");
    pd_backend *be = calloc(1, sizeof *be);
    pd_cuda *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return pd_error_set(PD_ERR_NOMEM, "out of memory creating the CUDA backend");
    }
    c->device = device;
    be->ops = &pd_cuda_ops;
    be->device = PD_DEVICE_CUDA;
    be->device_index = device;
    be->n_threads = 1;
    snprintf(be->name, sizeof be->name, "cuda:%d", device);
    be->context = c;
    pd_status st = pd_cuda_init(c);
    be->stream = c->stream;
    if (st != PD_OK) {
        pd_error_prefix(st, "cuda:%d: initialising the device", device);
        pd_cuda_free(be);
        return st;
    }
    PD_INFO("cuda", "%s: %s, compute capability %d.%d, %.1f GiB", be->name, c->gpu_name, c->sm_major, c->sm_minor,
            (double)c->total_mem / (1024.0 * 1024.0 * 1024.0));
    *out = be;
    return PD_OK;
}

int pd_backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}
