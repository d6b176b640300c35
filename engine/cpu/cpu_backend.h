/* Private to the CPU backend: its state, the op entry points its table holds, and helpers shared by
 * the op files. Tensors reaching these functions have passed backend.c's checks. */
#ifndef PD_CPU_BACKEND_H
#define PD_CPU_BACKEND_H

#include <string.h>

#include "engine/backend_impl.h"
#include "engine/cpu/threadpool.h"

typedef struct pd_cpu {
    pd_threadpool *pool;
} pd_cpu;

/* Runs fn over n_tasks tasks on the backend's pool. Task boundaries must depend only on shapes,
 * never on the thread count, so results are the same for every pool size. */
void pd_cpu_parallel(pd_backend *be, int64_t n_tasks, pd_threadpool_fn fn, void *ctx);

/* An f32 view of a float tensor's n elements: its own data when already f32, otherwise a widened
 * copy stored in *owned (free() it). Returns NULL with PD_ERR_NOMEM set when allocation fails. */
const float *pd_cpu_f32(const pd_tensor *t, float **owned);

/* Converts n elements of a float dtype starting at element `first` of src to f32. */
void pd_cpu_widen(float *dst, const void *src, pd_dtype dt, int64_t first, int64_t n);

/* e^x in f32 to within a few ulp, written so loops calling it vectorise (Cody-Waite reduction and a
 * degree-7 polynomial; < 1 ulp measured over [-87, 88]). -inf and x < -87 give 0, x > 88 gives inf, NaN stays NaN. */
static inline float pd_cpu_expf(float x) {
    float xc = x >= -87.0f ? (x <= 88.0f ? x : 88.0f) : -87.0f; /* NaN lands on -87: no NaN-to-int */
    int32_t ki = (int32_t)(xc * 1.44269504088896341f + 128.5f) - 128; /* floor(x log2 e + 0.5), no floorf */
    float k = (float)ki;
    float r = xc - k * 0.693359375f + k * 2.12194440e-4f; /* ln 2 split in two parts */
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = (ki + 127) << 23; /* 2^k; memcpy rather than a union so gcc vectorises */
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    float v = p * two_k;
    return x != x ? x : x > 88.0f ? __builtin_inff() : x < -87.0f ? 0.0f : v;
}

/* GELU_TANH of one value: 0.5 v (1 + tanh u) written as v / (1 + e^(-2u)), u = sqrt(2/pi) (v + 0.044715 v^3):
 * no cancellation, the right limits at +-inf. Shared by GELU_TANH and LINEAR_GELU. */
static inline float pd_cpu_gelu_tanh1(float v) {
    return v / (1.0f + pd_cpu_expf(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
}

/* One head of ROPE (cpu_rope.c), shared with RMS_NORM_ROPE (cpu_norm.c): y (D) = the pairs
 * (x[2p], x[2p+1]) rotated by f (D/2, 2) = (cos, sin). y may be x. */
void pd_cpu_rope_head(float *y, const float *x, const float *f, int64_t D);

/* Aligned scratch of n_threads * per_thread floats, or NULL with PD_ERR_NOMEM set. */
float *pd_cpu_scratch(int n_threads, size_t per_thread);

pd_status pd_cpu_linear(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);
pd_status pd_cpu_layer_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b, float eps);
pd_status pd_cpu_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps);
pd_status pd_cpu_channel_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *gamma,
                                  const pd_tensor *bias, float eps);
pd_status pd_cpu_rope3d_freqs(pd_backend *be, pd_tensor *freqs, int64_t gt, int64_t gh, int64_t gw, int64_t off, double theta);
pd_status pd_cpu_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *freqs);
pd_status pd_cpu_attention(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                           const pd_tensor *bias, float scale);
pd_status pd_cpu_gelu_tanh(pd_backend *be, pd_tensor *y, const pd_tensor *x);
pd_status pd_cpu_silu(pd_backend *be, pd_tensor *y, const pd_tensor *x);
pd_status pd_cpu_clamp(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi);
pd_status pd_cpu_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift, const pd_tensor *scale);
pd_status pd_cpu_gated_add(pd_backend *be, pd_tensor *x, const pd_tensor *gate, const pd_tensor *y);
pd_status pd_cpu_add(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);
pd_status pd_cpu_mul(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);
pd_status pd_cpu_timestep_embed(pd_backend *be, pd_tensor *out, const pd_tensor *t);
pd_status pd_cpu_patchify(pd_backend *be, pd_tensor *tokens, const pd_tensor *latent, int pt, int ph, int pw);
pd_status pd_cpu_unpatchify(pd_backend *be, pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw);
pd_status pd_cpu_copy(pd_backend *be, pd_tensor *dst, const pd_tensor *src);
pd_status pd_cpu_conv3d(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b, const int pad[6]);
pd_status pd_cpu_upsample_nearest2d(pd_backend *be, pd_tensor *y, const pd_tensor *x);
pd_status pd_cpu_embedding(pd_backend *be, pd_tensor *out, const pd_tensor *ids, const pd_tensor *table);
pd_status pd_cpu_layer_norm_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                     const pd_tensor *scale, float eps);
pd_status pd_cpu_linear_gelu(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);
pd_status pd_cpu_rms_norm_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                               const pd_tensor *freqs, int heads, float eps);

#endif
