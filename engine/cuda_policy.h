/* Decisions of the CUDA backend that need neither a device nor CUDA headers, so every build compiles
 * them and the CPU tests check them: engine/cuda/ asks the driver and the libraries, these decide.
 *   - does this build's GPU code run on a device of compute capability major.minor;
 *   - what to do when cuDNN answers a fused-attention plan's build or execution with a status;
 *   - how CONV3D gets f32 copies of bf16/f16 weights, and which kept copies a write or free voids.
 * Pure functions: no state, no logging; errors go through pd_error_set where they return pd_status. */
#ifndef PD_CUDA_POLICY_H
#define PD_CUDA_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"
#include "engine/tensor.h"

/* ---- compute capability against the build's architectures ---- */

/* How a build's GPU code fits a device. */
typedef enum pd_cuda_arch_fit {
    PD_CUDA_ARCH_MACHINE_CODE = 1, /* an sm_XY cubin runs on it */
    PD_CUDA_ARCH_PTX,              /* only PTX, which the driver compiles at first use (slow start) */
    PD_CUDA_ARCH_NONE,             /* nothing runs on it: every kernel would fail with "no kernel image" */
    PD_CUDA_ARCH_UNKNOWN,          /* the list cannot be read ("native", "all", empty): ask the device */
} pd_cuda_arch_fit;

/* Fits a device of compute capability major.minor against `archs`, the build's
 * CMAKE_CUDA_ARCHITECTURES with ';' or ',' between entries. An entry is XY[a|f][-real|-virtual]: "XY"
 * alone means both; "-real" is an sm_XY cubin, which runs on X.z for z >= Y ("a": only on X.Y; "f": on
 * X.z, z >= Y); "-virtual" is compute_XY PTX, which the driver compiles for any X.Y or later (with "a"
 * or "f" only within the same rule as the cubin). An entry that is none of these (all, all-major,
 * native, OFF) makes the answer PD_CUDA_ARCH_UNKNOWN. When `built` is not NULL it receives what the
 * list holds, for messages ("sm_80, sm_90 (machine code); compute_90 (PTX for 9.0 and later)"). */
pd_cuda_arch_fit pd_cuda_policy_arch_fit(const char *archs, int major, int minor, char *built, size_t built_bytes);

/* PD_OK when the build's code runs on the device (machine code or PTX, or a list it cannot read);
 * else PD_ERR_UNSUPPORTED naming the device (`device`, e.g. "cuda:0 (NVIDIA A100-SXM4-80GB)"), its
 * compute capability, what the build has, and the configure option that adds it. */
pd_status pd_cuda_policy_check_arch(const char *archs, const char *device, int major, int minor);

/* ---- cuDNN fused attention (SDPA): a status from building or executing a plan ---- */

/* cuDNN 9's status categories (cudnnStatus_t / 1000 * 1000; cuda_sdpa.c checks them against cudnn.h). */
enum {
    PD_CUDNN_STATUS_BAD_PARAM = 2000,
    PD_CUDNN_STATUS_NOT_SUPPORTED = 3000,
    PD_CUDNN_STATUS_INTERNAL_ERROR = 4000,
    PD_CUDNN_STATUS_HOST_ALLOCATION_FAILED = 4003,
    PD_CUDNN_STATUS_DEVICE_ALLOCATION_FAILED = 4004,
};

typedef enum pd_cuda_sdpa_action {
    PD_SDPA_RUN = 1,    /* success: go on */
    PD_SDPA_FALL_BACK,  /* a refusal: remember it for the shape (one warning), use the own kernel */
    PD_SDPA_NOMEM,      /* out of memory: fail with PD_ERR_NOMEM, remember nothing */
    PD_SDPA_FAIL,       /* anything else while executing: a device error */
} pd_cuda_sdpa_action;

/* What to do with cuDNN status `status` (a cudnnStatus_t) met while building (executing false) or
 * executing (executing true, the variant pack included) a plan. A refusal (NOT_SUPPORTED or BAD_PARAM
 * of any kind) falls back the same way at either step; at build every other failure falls back too
 * (nothing ran yet), while executing it is a device error. */
pd_cuda_sdpa_action pd_cuda_policy_sdpa_action(int status, bool executing);

/* ---- CONV3D weights widened to f32 ---- */

typedef enum pd_cuda_conv_weight {
    PD_CONV_WEIGHT_AS_IS = 1, /* f32: used in place */
    PD_CONV_WEIGHT_KEEP,      /* an owning bf16/f16 tensor: widened once, the copy kept under its bytes */
    PD_CONV_WEIGHT_PER_CALL,  /* a bf16/f16 view: widened into scratch at every call, nothing kept */
} pd_cuda_conv_weight;

/* How CONV3D gets t's data as f32. Only an owning tensor's copy may be kept: its memory is released
 * only through the backend's tensor_free, and written only through upload or copy, which void the
 * copy first (pd_cuda_policy_conv_kept_void). A view's bytes (a slice of a shared blob, an arena) can be
 * rewritten or freed and reused without the backend seeing it, so a copy kept under its address
 * could go stale. */
pd_cuda_conv_weight pd_cuda_policy_conv_weight(const pd_tensor *t);

/* A kept copy: the source's device address, dtype and element count. */
typedef struct pd_cuda_conv_kept {
    const void *src;
    pd_dtype dtype;
    int64_t n;
} pd_cuda_conv_kept;

/* True when the kept copy k is the widened t (same address, dtype and element count). */
bool pd_cuda_policy_conv_kept_matches(const pd_cuda_conv_kept *k, const pd_tensor *t);

/* True when writing or freeing the `bytes` bytes at `data` voids k (the byte ranges overlap). */
bool pd_cuda_policy_conv_kept_void(const pd_cuda_conv_kept *k, const void *data, size_t bytes);

/* Bytes from t->data to the end of its last element (strides may be anything non-negative): the range
 * a write into t can touch. 0 for an empty tensor. */
size_t pd_cuda_policy_span_bytes(const pd_tensor *t);

#endif
