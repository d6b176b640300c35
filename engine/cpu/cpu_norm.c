/* Normalisations on the CPU: LAYER_NORM, RMS_NORM and the fused LAYER_NORM_MODULATE (over the last
 * dim, all through pd_cpu_norm_row) and CHANNEL_RMS_NORM (over the first). Sums are kept in double;
 * tasks are fixed blocks of rows or positions. */
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
    int64_t s_shift, s_scale, N;
} pd_norm_job;

void pd_cpu_norm_row(float *y, const float *x, int64_t C, float eps, bool rms, const float *w, const float *b,
                     const float *shift, const float *scale) {
    double mean = 0, var = 0;
    if (rms) {
        for (int64_t c = 0; c < C; c++) var += (double)x[c] * x[c];
        var /= (double)C;
    } else {
        for (int64_t c = 0; c < C; c++) mean += x[c];
        mean /= (double)C;
        for (int64_t c = 0; c < C; c++) var += ((double)x[c] - mean) * ((double)x[c] - mean);
        var /= (double)C;
    }
    float inv = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
    for (int64_t c = 0; c < C; c++) {
        float v = (x[c] - m) * inv;
        if (w) v *= w[c];
        if (b) v += b[c];
        if (shift) v = v * (1.0f + scale[c]) + shift[c];
        y[c] = v;
    }
}

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
        pd_cpu_norm_row(j->y + r * C, j->x + r * C, C, j->eps, j->rms, j->w, j->b, sh, sc);
    }
}

static void pd_norm_split(pd_backend *be, pd_norm_job *j) {
    j->rows_per_task = PD_NORM_TASK_ELEMS / j->C > 0 ? PD_NORM_TASK_ELEMS / j->C : 1;
    pd_cpu_parallel(be, (j->rows + j->rows_per_task - 1) / j->rows_per_task, pd_norm_task, j);
}

static pd_status pd_norm_run(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                             float eps, bool rms) {
    int64_t C = x->shape[x->ndim - 1], rows = C ? pd_tensor_numel(x) / C : 0;
    if (rows == 0) return PD_OK;
    float *wo = NULL, *bo = NULL;
    const float *wf = NULL, *bf = NULL;
    if (w && !(wf = pd_cpu_f32(w, &wo))) return PD_ERR_NOMEM;
    if (b && !(bf = pd_cpu_f32(b, &bo))) {
        free(wo);
        return PD_ERR_NOMEM;
    }
    pd_norm_job j = {.x = x->data, .w = wf, .b = bf, .y = y->data, .rows = rows, .C = C, .eps = eps, .rms = rms};
    pd_norm_split(be, &j);
    free(wo);
    free(bo);
    return PD_OK;
}

pd_status pd_cpu_layer_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                            float eps) {
    return pd_norm_run(be, y, x, w, b, eps, false);
}

pd_status pd_cpu_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps) {
    return pd_norm_run(be, y, x, w, NULL, eps, true);
}

/* x (B, N, C): the rows of LAYER_NORM's task grid, each modulated by its batch's shift and scale. */
pd_status pd_cpu_layer_norm_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                     const pd_tensor *scale, float eps) {
    int64_t N = x->shape[1], C = x->shape[2], rows = x->shape[0] * N;
    if (rows == 0 || C == 0) return PD_OK;
    pd_norm_job j = {.x = x->data, .y = y->data, .rows = rows, .C = C, .eps = eps, .shift = shift->data,
                     .scale = scale->data, .s_shift = shift->stride[0], .s_scale = scale->stride[0], .N = N};
    pd_norm_split(be, &j);
    return PD_OK;
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
