/* Normalisations on the CPU: LAYER_NORM, RMS_NORM and the fused LAYER_NORM_MODULATE and RMS_NORM_ROPE
 * (over the last dim, all through pd_norm_row on one task grid) and CHANNEL_RMS_NORM (over the first).
 * Sums are kept in double; tasks are fixed blocks of rows or positions. */
#include <math.h>

#include "engine/cpu/cpu_backend.h"

enum { PD_NORM_TASK_ELEMS = 16384, PD_CNORM_POS = 512 };

typedef struct {
    const float *x, *w, *b;
    float *y;
    int64_t rows, C, rows_per_task, P;
    float eps;
    bool rms;
    const char *shift, *scale; /* LAYER_NORM_MODULATE: batch rows at byte strides s_shift, s_scale */
    int64_t s_shift, s_scale, N; /* N: tokens per batch, x (B, N, C) (fused ops only) */
    const float *f;            /* RMS_NORM_ROPE: freqs (N, D/2, 2), rows of H heads of D */
    int64_t H, D;
} pd_norm_job;

/* Row sums in double over PD_NORM_LANES interleaved partial sums (lane k takes the elements
 * c = k mod PD_NORM_LANES), added in lane order at the end: a fixed order, so a row's result does not
 * depend on the thread or the task that computes it, and independent lanes the compiler can keep in
 * vector registers instead of one serial chain of double adds. */
enum { PD_NORM_LANES = 8 };

/* sum of x[c] */
static double pd_norm_sum(const float *x, int64_t C) {
    double acc[PD_NORM_LANES] = {0}, s = 0;
    int64_t c = 0;
    for (; c + PD_NORM_LANES <= C; c += PD_NORM_LANES)
        for (int k = 0; k < PD_NORM_LANES; k++) acc[k] += (double)x[c + k];
    for (; c < C; c++) s += (double)x[c];
    for (int k = 0; k < PD_NORM_LANES; k++) s += acc[k];
    return s;
}

/* sum of (x[c] - m)^2 */
static double pd_norm_sum_sq(const float *x, int64_t C, double m) {
    double acc[PD_NORM_LANES] = {0}, s = 0;
    int64_t c = 0;
    for (; c + PD_NORM_LANES <= C; c += PD_NORM_LANES)
        for (int k = 0; k < PD_NORM_LANES; k++) {
            const double d = (double)x[c + k] - m;
            acc[k] += d * d;
        }
    for (; c < C; c++) s += ((double)x[c] - m) * ((double)x[c] - m);
    for (int k = 0; k < PD_NORM_LANES; k++) s += acc[k];
    return s;
}

/* One row: y (C) = (x - mean) * (1 / sqrt(var + eps)), mean taken as 0 when rms, sums in double; then
 * * w and + b where not NULL; then, where shift is not NULL, MODULATE: y * (1 + scale) + shift. y may be x.
 * Each step is its own loop over the row (in L1 by then), so every loop vectorises. */
static void pd_norm_row(float *y, const float *x, int64_t C, float eps, bool rms, const float *w, const float *b,
                        const float *shift, const float *scale) {
    const double mean = rms ? 0.0 : pd_norm_sum(x, C) / (double)C;
    const double var = pd_norm_sum_sq(x, C, mean) / (double)C;
    const float inv = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
    for (int64_t c = 0; c < C; c++) y[c] = (x[c] - m) * inv;
    if (w)
        for (int64_t c = 0; c < C; c++) y[c] *= w[c];
    if (b)
        for (int64_t c = 0; c < C; c++) y[c] += b[c];
    if (shift)
        for (int64_t c = 0; c < C; c++) y[c] = y[c] * (1.0f + scale[c]) + shift[c];
}

/* A fixed block of rows; RMS_NORM_ROPE rotates each row's heads right after normalising it, while the
 * row is in cache. */
static void pd_norm_task(void *ctx, int64_t task, int thread) {
    const pd_norm_job *j = ctx;
    int64_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task < j->rows ? r0 + j->rows_per_task : j->rows;
    int64_t C = j->C;
    for (int64_t r = r0; r < r1; r++) {
        const float *sh = NULL, *sc = NULL;
        if (j->shift) {
            sh = (const float *)(j->shift + r / j->N * j->s_shift);
            sc = (const float *)(j->scale + r / j->N * j->s_scale);
        }
        float *y = j->y + r * C;
        pd_norm_row(y, j->x + r * C, C, j->eps, j->rms, j->w, j->b, sh, sc);
        if (j->f) {
            const float *f = j->f + (r % j->N) * j->D;
            for (int64_t h = 0; h < j->H; h++) pd_cpu_rope_head(y + h * j->D, y + h * j->D, f, j->D);
        }
    }
}

/* Runs j (x, y, C, eps, rms and the fused fields set) over the rows of x, with w and b widened to f32
 * where given. */
static pd_status pd_norm_run(pd_backend *be, pd_norm_job *j, const pd_tensor *x, const pd_tensor *w,
                             const pd_tensor *b) {
    j->C = x->shape[x->ndim - 1];
    j->rows = j->C ? pd_tensor_numel(x) / j->C : 0;
    if (j->rows == 0) return PD_OK;
    float *wo = NULL, *bo = NULL;
    if (w && !(j->w = pd_cpu_f32(w, &wo))) return PD_ERR_NOMEM;
    if (b && !(j->b = pd_cpu_f32(b, &bo))) {
        free(wo);
        return PD_ERR_NOMEM;
    }
    j->rows_per_task = PD_NORM_TASK_ELEMS / j->C > 0 ? PD_NORM_TASK_ELEMS / j->C : 1;
    pd_cpu_parallel(be, (j->rows + j->rows_per_task - 1) / j->rows_per_task, pd_norm_task, j);
    free(wo);
    free(bo);
    return PD_OK;
}

pd_status pd_cpu_layer_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                            float eps) {
    pd_norm_job j = {.x = x->data, .y = y->data, .eps = eps};
    return pd_norm_run(be, &j, x, w, b);
}

pd_status pd_cpu_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps) {
    pd_norm_job j = {.x = x->data, .y = y->data, .eps = eps, .rms = true};
    return pd_norm_run(be, &j, x, w, NULL);
}

/* x (B, N, C): LAYER_NORM rows without affine, each modulated by its batch's shift and scale. */
pd_status pd_cpu_layer_norm_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                     const pd_tensor *scale, float eps) {
    pd_norm_job j = {.x = x->data, .y = y->data, .eps = eps, .shift = shift->data, .scale = scale->data,
                     .s_shift = shift->stride[0], .s_scale = scale->stride[0], .N = x->shape[1]};
    return pd_norm_run(be, &j, x, NULL, NULL);
}

/* x (B, N, H*D): RMS_NORM rows over their whole length (weighted), then every head rotated by the
 * row's token's freqs. */
pd_status pd_cpu_rms_norm_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                               const pd_tensor *freqs, int heads, float eps) {
    pd_norm_job j = {.x = x->data, .y = y->data, .eps = eps, .rms = true, .N = x->shape[1], .f = freqs->data,
                     .H = heads, .D = x->shape[2] / heads};
    return pd_norm_run(be, &j, x, w, NULL);
}

/* x (C, P): one task normalises PD_CNORM_POS positions across all channels. */
static void pd_cnorm_task(void *ctx, int64_t task, int thread) {
    const pd_norm_job *j = ctx;
    int64_t p0 = task * PD_CNORM_POS, n = j->P - p0 < PD_CNORM_POS ? j->P - p0 : PD_CNORM_POS, P = j->P;
    double ss[PD_CNORM_POS] = {0};
    float scale[PD_CNORM_POS];
    for (int64_t c = 0; c < j->C; c++) {
        const float *x = j->x + c * P + p0;
        for (int64_t i = 0; i < n; i++) ss[i] += (double)x[i] * x[i];
    }
    double sc = sqrt((double)j->C);
    for (int64_t i = 0; i < n; i++) {
        double norm = sqrt(ss[i]);
        scale[i] = (float)(sc / (norm > j->eps ? norm : (double)j->eps));
    }
    for (int64_t c = 0; c < j->C; c++) {
        const float *x = j->x + c * P + p0;
        float *y = j->y + c * P + p0;
        float g = j->w[c], bb = j->b ? j->b[c] : 0.0f;
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale[i] * g + bb;
    }
}

pd_status pd_cpu_channel_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *gamma,
                                  const pd_tensor *bias, float eps) {
    int64_t C = x->shape[0], P = C ? pd_tensor_numel(x) / C : 0;
    if (P == 0) return PD_OK;
    float *go = NULL, *bo = NULL;
    const float *gf, *bf = NULL;
    if (!(gf = pd_cpu_f32(gamma, &go))) return PD_ERR_NOMEM;
    if (bias && !(bf = pd_cpu_f32(bias, &bo))) {
        free(go);
        return PD_ERR_NOMEM;
    }
    pd_norm_job j = {.x = x->data, .w = gf, .b = bf, .y = y->data, .C = C, .P = P, .eps = eps};
    pd_cpu_parallel(be, (P + PD_CNORM_POS - 1) / PD_CNORM_POS, pd_cnorm_task, &j);
    free(go);
    free(bo);
    return PD_OK;
}
