/* The backend interface: every op that model code runs goes through these calls, so the same model
 * code runs on the CPU backend (the reference, always present) and on the CUDA backend (when built and a
 * device is present). Model code never includes a device header.
 *
 * Conventions for every op:
 *  - Output tensors are allocated by the caller (pd_backend_tensor_alloc or a pd_arena) on the
 *    backend's device; ops never allocate outputs.
 *  - Activations are f32 and contiguous unless an op says otherwise. Weights (w, b, gamma, table)
 *    may be f32, bf16 or f16 and are widened inside the op; they stay in their stored dtype.
 *  - Shapes are outermost first. Shape comments read `// (B, N, C)`.
 *  - A shape or dtype mismatch returns PD_ERR_INVALID with a message naming the op and both shapes;
 *    the output is then unspecified but no memory outside it is written. The checks live in
 *    backend.c, once for all backends.
 *  - An op the backend cannot run returns PD_ERR_UNSUPPORTED; ask pd_backend_supports_op() first to
 *    fall back instead of failing midway.
 *  - Unless stated, an output may not alias an input. Elementwise ops allow y == x.
 *  - Results do not depend on the thread count (work is split by output rows, never by a reduction).
 */
#ifndef PD_BACKEND_H
#define PD_BACKEND_H

#include "engine/tensor.h"

typedef struct pd_backend pd_backend;

typedef enum pd_op {
    PD_OP_LINEAR = 0,
    PD_OP_LAYER_NORM,
    PD_OP_RMS_NORM,
    PD_OP_ROPE3D_FREQS,
    PD_OP_ROPE,
    PD_OP_ATTENTION,
    PD_OP_GELU_TANH,
    PD_OP_SILU,
    PD_OP_MODULATE,
    PD_OP_GATED_ADD,
    PD_OP_ADD,
    PD_OP_MUL,
    PD_OP_TIMESTEP_EMBED,
    PD_OP_PATCHIFY,
    PD_OP_UNPATCHIFY,
    PD_OP_COPY,
    PD_OP_CONV3D,
    PD_OP_UPSAMPLE_NEAREST2D,
    PD_OP_CHANNEL_RMS_NORM,
    PD_OP_CLAMP,
    PD_OP_EMBEDDING,
    PD_OP_LAYER_NORM_MODULATE,
    PD_OP_LINEAR_GELU,
    PD_OP_RMS_NORM_ROPE,
    PD_OP_COUNT
} pd_op;

/* Stable upper-case op name ("LINEAR", "CONV3D", ...), used by tests to name cases. */
const char *pd_op_name(pd_op op);

/* ---- backends ---- */

/* Creates the CPU backend running ops on n_threads threads (0 = the number of online cores).
 * GEMMs go through OpenBLAS. Returns PD_ERR_NOMEM on allocation failure. */
pd_status pd_backend_cpu_create(int n_threads, pd_backend **out);
/* Creates the CUDA backend on GPU `device` (0-based): one stream for every op, cuBLASLt GEMMs,
 * cuDNN attention and convolutions, weights uploaded once by pd_backend_import_weight. Errors:
 * PD_ERR_UNSUPPORTED in a build without CUDA (the message says so) or without GPU code for the device
 * (the message names its compute capability, the build's architectures and the cmake option that adds
 * it), PD_ERR_DEVICE when the device does not exist or fails to initialise (the message names the
 * device and the CUDA error). */
pd_status pd_backend_cuda_create(int device, pd_backend **out);
/* Number of CUDA devices this build can use: 0 without CUDA, without a driver or without a GPU. */
int pd_backend_cuda_device_count(void);
/* Creates the backend a device spec names: "cpu", "cuda" (device 0) or "cuda:N". n_threads is the
 * CPU backend's thread count (0 = all online cores; ignored for CUDA). PD_ERR_INVALID for a spec that
 * is none of these, otherwise the errors of the chosen backend's create call. */
pd_status pd_backend_create(const char *spec, int n_threads, pd_backend **out);
/* The CUDA device a spec names: -1 for "cpu" or NULL, N for "cuda" (0) or "cuda:N" (N in 0..1023), -2
 * for anything else. pd_backend_create accepts exactly the specs this does not answer -2 for. */
int pd_backend_spec_device(const char *spec);
/* Online CPU cores shared out evenly among `parts` processes, at least 1 each (all cores when
 * parts < 1): the thread count for one of several CPU ranks or workers on this machine. */
int pd_backend_cpu_share(int parts);

/* Releases a backend made by any pd_backend_*_create. NULL is a no-op. */
void pd_backend_free(pd_backend *be);
/* "cpu" or "cuda:N". */
const char *pd_backend_name(const pd_backend *be);
pd_device_kind pd_backend_device(const pd_backend *be);
/* The device index (N of "cuda:N"; 0 on the CPU). */
int pd_backend_device_index(const pd_backend *be);
/* The stream every op of a device backend is queued on (a cudaStream_t), for libraries that must
 * order their own work after it (NCCL: pd_comm_set_stream). NULL on the CPU backend. */
void *pd_backend_stream(const pd_backend *be);
int pd_backend_threads(const pd_backend *be);
/* Whether op can run with weights stored as weight_dtype (ignored by ops without weights). */
bool pd_backend_supports_op(const pd_backend *be, pd_op op, pd_dtype weight_dtype);

/* ---- memory ---- */

/* Allocates a zeroed contiguous tensor on the backend's device. */
pd_status pd_backend_tensor_alloc(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape);
/* Releases a tensor from pd_backend_tensor_alloc (views are left alone). */
void pd_backend_tensor_free(pd_backend *be, pd_tensor *t);
/* Makes a weight usable by this backend's ops. On the CPU backend out is a view of host (no copy:
 * mmapped weights stay mapped); on a device backend it is a device copy the backend owns until
 * pd_backend_tensor_free. host must stay valid for the CPU backend's lifetime of out. */
pd_status pd_backend_import_weight(pd_backend *be, pd_tensor *out, const pd_tensor *host);
/* Copies a host tensor into a device tensor of the same shape and dtype, or back. */
pd_status pd_backend_upload(pd_backend *be, pd_tensor *dst, const pd_tensor *host_src);
pd_status pd_backend_download(pd_backend *be, pd_tensor *host_dst, const pd_tensor *src);
/* Waits until every op issued so far has finished (a no-op on the CPU backend). */
pd_status pd_backend_synchronize(pd_backend *be);

/* ---- ops ---- */

/* y (..., N) = x (..., K) @ w (N, K)^T + b (N). b may be NULL. x and y have the same leading dims. */
pd_status pd_op_linear(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);

/* y = (x - mean) / sqrt(var + eps) * w + b over the last dim (biased variance). w and b are (C) or
 * NULL (no affine). y may alias x. */
pd_status pd_op_layer_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b, float eps);

/* y = x * rsqrt(mean(x^2) + eps) * w over the last dim; w is (C) or NULL. y may alias x. */
pd_status pd_op_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps);

/* freqs (N, D/2, 2) f32 = (cos, sin) of the 3D RoPE angle for tokens token_offset .. token_offset+N-1
 * of a (grid_t, grid_h, grid_w) grid in t, h, w order (w fastest). D = head_dim, taken from freqs.
 * Pair j < n_t/2 rotates by t*w_j with n_t = D - 4*(D/6); the next n_h/2 pairs by h, the last n_w/2
 * by w, n_h = n_w = 2*(D/6); per axis w_j = theta^(-2j/n_axis). Angles are computed in double. */
pd_status pd_op_rope3d_freqs(pd_backend *be, pd_tensor *freqs, int64_t grid_t, int64_t grid_h, int64_t grid_w,
                             int64_t token_offset, double theta);

/* y (B, N, H, D) = x rotated pairwise: (x[2j], x[2j+1]) of each head by freqs (N, D/2, 2).
 * y may alias x. */
pd_status pd_op_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *freqs);

/* out (B, Nq, H, Dv) = softmax(scale * q k^T + bias) v per batch and head, non-causal.
 * q (B, Nq, H, D), k (B, Nk, H, D), v (B, Nk, H, Dv); bias (H, Nq, Nk) f32 or NULL, shared by every
 * batch. Memory stays O(N * D): the Nq x Nk matrix is never materialised (online softmax). */
pd_status pd_op_attention(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                          const pd_tensor *bias, float scale);

/* y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). y may alias x. */
pd_status pd_op_gelu_tanh(pd_backend *be, pd_tensor *y, const pd_tensor *x);
/* y = x / (1 + exp(-x)). y may alias x. */
pd_status pd_op_silu(pd_backend *be, pd_tensor *y, const pd_tensor *x);

/* y (B, N, C) = x * (1 + scale) + shift with shift, scale of B*C elements: shape (B, C) or (B, 1, C),
 * any stride between batch rows, unit stride along C (a row of a (B, 6, C) modulation tensor works).
 * y may alias x. */
pd_status pd_op_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift, const pd_tensor *scale);

/* x (B, N, C) += gate * y (B, N, C), gate laid out as modulate's shift. gate may be NULL (plain add). */
pd_status pd_op_gated_add(pd_backend *be, pd_tensor *x, const pd_tensor *gate, const pd_tensor *y);

/* y = a + b and y = a * b with numpy broadcasting of b onto a (b's dims right-aligned, each 1 or
 * equal). a, y f32 contiguous of the same shape; b any float dtype, contiguous. y may alias a. */
pd_status pd_op_add(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);
pd_status pd_op_mul(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);

/* out (B, F) = [cos(t * w_i), sin(t * w_i)] (cos first), w_i = 10000^(-i / (F/2)), i < F/2,
 * t (B) f32. F even. Computed in double. */
pd_status pd_op_timestep_embed(pd_backend *be, pd_tensor *out, const pd_tensor *t);

/* tokens (T/pt * H/ph * W/pw, C*pt*ph*pw) from latent (C, T, H, W): token order t, h, w; the values of
 * a token ordered (c, pt, ph, pw) as a Conv3d with kernel = stride = patch sees them. */
pd_status pd_op_patchify(pd_backend *be, pd_tensor *tokens, const pd_tensor *latent, int pt, int ph, int pw);
/* latent (C, T, H, W) from tokens (N, pt*ph*pw*C) whose values are ordered (pt, ph, pw, c), c fastest
 * (the DiT head's output order). */
pd_status pd_op_unpatchify(pd_backend *be, pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw);

/* dst = src for any strides and float dtypes of the same shape (concat, transpose, slicing). */
pd_status pd_op_copy(pd_backend *be, pd_tensor *dst, const pd_tensor *src);

/* y (Cout, To, Ho, Wo) = conv3d(x (Cin, T, H, W), w (Cout, Cin, kt, kh, kw)) + b (Cout), stride 1,
 * zero padding pad = {t_front, t_back, h_top, h_bottom, w_left, w_right}. b may be NULL.
 * To = T + pad[0] + pad[1] - kt + 1, and likewise for H and W. A 2D conv is kt = 1. */
pd_status pd_op_conv3d(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                       const int pad[6]);

/* y (C, T, 2H, 2W) = nearest-neighbour 2x spatial upsampling of x (C, T, H, W). */
pd_status pd_op_upsample_nearest2d(pd_backend *be, pd_tensor *y, const pd_tensor *x);

/* y (C, ...) = x / max(||x||_2 over C, eps) * sqrt(C) * gamma (C) + bias (C) for every position of
 * the trailing dims (the Wan VAE's channel-first RMS_norm; eps 1e-12 there). bias may be NULL.
 * y may alias x. */
pd_status pd_op_channel_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *gamma,
                                 const pd_tensor *bias, float eps);

/* y = min(max(x, lo), hi). y may alias x. */
pd_status pd_op_clamp(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi);

/* out (L, D) f32 = rows ids (L) i32 of table (V, D). An id outside [0, V) returns PD_ERR_INVALID. */
pd_status pd_op_embedding(pd_backend *be, pd_tensor *out, const pd_tensor *ids, const pd_tensor *table);

/* ---- fused ops: one op for a sequence the DiT runs often; same contract and results (up to
 * rounding) as the sequence they replace. Ask pd_backend_supports_op() and run the sequence where
 * the answer is no. ---- */

/* y (B, N, C) = LAYER_NORM of x without affine, then MODULATE by shift and scale:
 * y = (x - mean) / sqrt(var + eps) * (1 + scale) + shift over the last dim (biased variance), with
 * shift and scale laid out as pd_op_modulate's. y may alias x. */
pd_status pd_op_layer_norm_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                    const pd_tensor *scale, float eps);

/* y (..., N) = gelu_tanh(x (..., K) @ w (N, K)^T + b (N)): LINEAR then GELU_TANH, with LINEAR's
 * shapes, dtypes and aliasing rules. b may be NULL. */
pd_status pd_op_linear_gelu(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);

/* y (B, N, H*D) = ROPE of (RMS_NORM of x with weight w): the RMS norm runs over the whole last dim
 * (H*D), the rotation over each of the `heads` heads of D elements by freqs (N, D/2, 2), exactly as
 * pd_op_rope on the (B, N, H, D) view. w is (H*D) or NULL; D must be even. y may alias x. */
pd_status pd_op_rms_norm_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                              const pd_tensor *freqs, int heads, float eps);

#endif
