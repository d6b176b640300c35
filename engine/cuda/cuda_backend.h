/* Private to the CUDA backend: its state, the op entry points its table holds, and helpers shared by
 * the op files (.c host code and .cu kernels). Tensors reaching these functions have passed
 * backend.c's checks; their data are device pointers on this backend's device.
 *
 * Numerics: activations are f32 in device memory (the backend interface's contract); weights stay in
 * their stored dtype (bf16 for real checkpoints). GEMMs and attention run on tensor cores in bf16
 * with f32 accumulation: the f32 activation operand is converted into a bf16 staging buffer first.
 * Everything else (norms, RoPE, modulation, residuals) computes in f32.
 *
 * Ordering: every op is queued on the backend's one stream, so ops run in issue order without host
 * synchronisation; pd_backend_synchronize waits for the stream. Scratch buffers (staging, library
 * workspaces) grow on first use and are then reused, so a step loop that repeats the same shapes
 * allocates nothing. */
#ifndef PD_CUDA_BACKEND_H
#define PD_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The engine headers are C without C++ guards: the .cu files see them with C linkage, after the
 * system headers they include (already included, so nothing C++ lands inside extern "C"). status.h
 * declares pd_assert_fail with C11's _Noreturn, which C++ spells [[noreturn]]. */
#ifdef __cplusplus
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#if !defined(_Noreturn)
#define _Noreturn [[noreturn]]
#endif
extern "C" {
#endif
#include "engine/backend_impl.h"
#ifdef __cplusplus
}
#endif
#include "engine/cuda/cuda_check.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A device buffer that only grows (staging copies, workspaces). */
typedef struct pd_cuda_buf {
    void *ptr;
    size_t bytes;
} pd_cuda_buf;

/* Which scratch buffer; each op file uses its own so nested uses never collide. */
typedef enum pd_cuda_scratch_id {
    PD_CUDA_SCRATCH_LINEAR_X = 0, /* bf16 copy of a GEMM's activation operand */
    PD_CUDA_SCRATCH_LINEAR_W,     /* f16 -> bf16 weight staging where cuBLASLt lacks the mix */
    PD_CUDA_SCRATCH_ATTN_QKV,     /* bf16 q, k, v for cuDNN SDPA */
    PD_CUDA_SCRATCH_ATTN_OUT,     /* bf16 attention output before widening */
    PD_CUDA_SCRATCH_CONV,         /* CONV3D's zero-padded f32 copy of x (asymmetric padding) */
    PD_CUDA_SCRATCH_CONV_W,       /* CONV3D's f32 copies of bf16/f16 weight and bias views */
    PD_CUDA_SCRATCH_WORKSPACE,    /* cuBLASLt and cuDNN workspace */
    PD_CUDA_SCRATCH_COUNT
} pd_cuda_scratch_id;

typedef struct pd_cuda {
    int device;
    cudaStream_t stream;          /* every op runs on it */
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    cudnnHandle_t dnn;
    int sm_major, sm_minor;       /* compute capability */
    size_t smem_optin;            /* shared memory bytes one block may opt in to */
    size_t total_mem;
    char gpu_name[256];
    pd_cuda_buf scratch[PD_CUDA_SCRATCH_COUNT];
    void *sdpa;                   /* cuDNN SDPA plan cache (cuda_sdpa.c); NULL until first use */
    int sdpa_refuse_at;           /* tests: a pd_sdpa_step at which cuDNN's answer becomes a refusal */
    void *conv;                   /* cuDNN convolution plan cache (cuda_conv.c) */
    void *linear;                 /* cuBLASLt algorithm cache (cuda_linear.c); NULL until first use */
} pd_cuda;

static inline pd_cuda *pd_cuda_of(pd_backend *be) { return (pd_cuda *)be->context; }

/* Makes the backend's device current on the calling thread (a thread starts on device 0), so a
 * backend on cuda:1 works from any thread. Every entry point calls it before touching the device. */
pd_status pd_cuda_enter(pd_backend *be);

/* Returns a device buffer of at least `bytes` (contents undefined), growing scratch `id` when
 * needed. Growing synchronises the stream first (the old buffer may still be in use). */
pd_status pd_cuda_scratch(pd_backend *be, pd_cuda_scratch_id id, size_t bytes, void **out);

/* n rounded up to a multiple of 256 bytes (cudaMalloc's alignment): buffers packed one after another
 * into one scratch request keep that alignment. */
static inline size_t pd_cuda_align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* The CUDA architectures this build was compiled for (CMAKE_CUDA_ARCHITECTURES, ',' between entries;
 * "" when unknown), which the backend checks each device against at start (cuda_policy.h). */
const char *pd_cuda_architectures(void);

/* Whether this build's kernels load on the current device: cudaSuccess, or the driver's answer
 * (cudaErrorNoKernelImageForDevice when no cubin or PTX fits; a PTX-only fit is compiled here, once). */
cudaError_t pd_cuda_kernel_image_status(void);

/* Converts n contiguous elements between dtypes on the stream (f32 <-> bf16 / f16, bf16 / f16 -> f32). */
pd_status pd_cuda_convert(pd_backend *be, void *dst, pd_dtype dst_dt, const void *src, pd_dtype src_dt, int64_t n);

/* Op entry points (one per pd_backend_ops slot), spread over the op files. */
pd_status pd_cuda_linear(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);
pd_status pd_cuda_layer_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b, float eps);
pd_status pd_cuda_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps);
pd_status pd_cuda_channel_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *gamma,
                                   const pd_tensor *bias, float eps);
pd_status pd_cuda_rope3d_freqs(pd_backend *be, pd_tensor *freqs, int64_t gt, int64_t gh, int64_t gw, int64_t off, double theta);
pd_status pd_cuda_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *freqs);
pd_status pd_cuda_attention(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                            const pd_tensor *bias, float scale);
pd_status pd_cuda_gelu_tanh(pd_backend *be, pd_tensor *y, const pd_tensor *x);
pd_status pd_cuda_silu(pd_backend *be, pd_tensor *y, const pd_tensor *x);
pd_status pd_cuda_clamp(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi);
pd_status pd_cuda_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift, const pd_tensor *scale);
pd_status pd_cuda_gated_add(pd_backend *be, pd_tensor *x, const pd_tensor *gate, const pd_tensor *y);
pd_status pd_cuda_add(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);
pd_status pd_cuda_mul(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);
pd_status pd_cuda_timestep_embed(pd_backend *be, pd_tensor *out, const pd_tensor *t);
pd_status pd_cuda_patchify(pd_backend *be, pd_tensor *tokens, const pd_tensor *latent, int pt, int ph, int pw);
pd_status pd_cuda_unpatchify(pd_backend *be, pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw);
pd_status pd_cuda_copy(pd_backend *be, pd_tensor *dst, const pd_tensor *src);
pd_status pd_cuda_conv3d(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b, const int pad[6]);
pd_status pd_cuda_upsample_nearest2d(pd_backend *be, pd_tensor *y, const pd_tensor *x);
pd_status pd_cuda_embedding(pd_backend *be, pd_tensor *out, const pd_tensor *ids, const pd_tensor *table);
pd_status pd_cuda_layer_norm_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                      const pd_tensor *scale, float eps);
pd_status pd_cuda_linear_gelu(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);
pd_status pd_cuda_rms_norm_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                                const pd_tensor *freqs, int heads, float eps);

/* Attention internals (cuda_attention.cu, cuda_sdpa.c): the cuDNN fused SDPA (bf16 in, f32 out;
 * PD_ERR_UNSUPPORTED when cuDNN refuses the shape, so the caller falls back) and the own flash-style
 * kernel (any shape, optional bias). pd_cuda_attention picks between them. */
pd_status pd_cuda_sdpa_cudnn(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                             float scale);
pd_status pd_cuda_attention_flash(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k,
                                  const pd_tensor *v, const pd_tensor *bias, float scale);
/* The two steps at which cuDNN can refuse a fused-attention shape. */
typedef enum pd_sdpa_step { PD_SDPA_STEP_BUILD = 1, PD_SDPA_STEP_EXECUTE } pd_sdpa_step;
/* Tests (tests/gpu): from now on cuDNN's successful answer at step `at` (building a plan, or
 * executing it) reads as CUDNN_STATUS_NOT_SUPPORTED, so both fallback paths run on any card; 0 ends it.
 * Shapes already planned keep their plan until executed. */
void pd_cuda_sdpa_inject_refusal(pd_backend *be, int at);
/* Frees the plan caches at backend destruction. */
void pd_cuda_sdpa_free(pd_cuda *c);
void pd_cuda_conv_free(pd_cuda *c);
/* Drops every widened f32 copy CONV3D kept of an owning bf16/f16 weight or bias whose bytes overlap the
 * `bytes` bytes at `data`. The copies are kept under their source's address, so tensor_free calls this
 * before the memory can be reused by another tensor, and upload and copy before they write (else a
 * later weight at the same address, or new contents, would meet a stale copy). Safe with any range
 * and before the first convolution; it waits for the stream only when it drops a copy. */
void pd_cuda_conv_forget(pd_cuda *c, const void *data, size_t bytes);
void pd_cuda_linear_free(pd_cuda *c);

#ifdef __cplusplus
}
#endif

#endif
