/* Elementwise ops on the CPU: activations, clamp, modulation, gated residual, broadcasting add and
 * mul, and the sinusoidal timestep embedding. Tasks are fixed blocks of elements or rows. */
/* FP exception flags are never read: let gcc if-convert and vectorise pd_cpu_expf's loops. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>

#include "engine/cpu/cpu_backend.h"

enum { PD_EW_TASK = 16384 };

typedef enum { PD_EW_GELU, PD_EW_SILU, PD_EW_CLAMP } pd_ew_kind;

typedef struct {
    const float *x;
    float *y;
    int64_t n;
    pd_ew_kind kind;
    float lo, hi;
} pd_unary_job;

static void pd_unary_task(void *ctx, int64_t task, int thread) {
    const pd_unary_job *j = ctx;
    int64_t i0 = task * PD_EW_TASK, i1 = i0 + PD_EW_TASK < j->n ? i0 + PD_EW_TASK : j->n;
    const float *x = j->x;
    float *y = j->y;
    switch (j->kind) {
    case PD_EW_GELU:
        for (int64_t i = i0; i < i1; i++) y[i] = pd_cpu_gelu_tanh1(x[i]);
        break;
    case PD_EW_SILU:
        for (int64_t i = i0; i < i1; i++) y[i] = x[i] / (1.0f + pd_cpu_expf(-x[i]));
        break;
    case PD_EW_CLAMP:
        for (int64_t i = i0; i < i1; i++) y[i] = x[i] < j->lo ? j->lo : x[i] > j->hi ? j->hi : x[i];
        break;
    }
}

static pd_status pd_unary(pd_backend *be, pd_tensor *y, const pd_tensor *x, pd_ew_kind kind, float lo, float hi) {
    pd_unary_job j = {.x = x->data, .y = y->data, .n = pd_tensor_numel(x), .kind = kind, .lo = lo, .hi = hi};
    pd_cpu_parallel(be, (j.n + PD_EW_TASK - 1) / PD_EW_TASK, pd_unary_task, &j);
    return PD_OK;
}

pd_status pd_cpu_gelu_tanh(pd_backend *be, pd_tensor *y, const pd_tensor *x) { return pd_unary(be, y, x, PD_EW_GELU, 0, 0); }
pd_status pd_cpu_silu(pd_backend *be, pd_tensor *y, const pd_tensor *x) { return pd_unary(be, y, x, PD_EW_SILU, 0, 0); }
pd_status pd_cpu_clamp(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi) {
    return pd_unary(be, y, x, PD_EW_CLAMP, lo, hi);
}

/* ---- modulate and gated add: x (B, N, C) with per-batch rows of B*C elements ---- */

typedef struct {
    const float *x;
    float *y;
    const char *m0, *m1; /* shift and scale (modulate) or gate (gated add); NULL gate = plain add */
    int64_t s0, s1;      /* their batch strides in bytes */
    int64_t N, C, rows, rows_per_task;
    bool gated;
} pd_mod_job;

static void pd_mod_task(void *ctx, int64_t task, int thread) {
    const pd_mod_job *j = ctx;
    int64_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task < j->rows ? r0 + j->rows_per_task : j->rows;
    int64_t C = j->C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / j->N;
        const float *x = j->x + r * C;
        float *y = j->y + r * C;
        if (!j->gated) {
            const float *shift = (const float *)(j->m0 + b * j->s0), *scale = (const float *)(j->m1 + b * j->s1);
            for (int64_t c = 0; c < C; c++) y[c] = x[c] * (1.0f + scale[c]) + shift[c];
        } else if (j->m0) {
            const float *gate = (const float *)(j->m0 + b * j->s0);
            for (int64_t c = 0; c < C; c++) y[c] += gate[c] * x[c];
        } else {
            for (int64_t c = 0; c < C; c++) y[c] += x[c];
        }
    }
}

static void pd_mod_run(pd_backend *be, pd_mod_job *j) {
    j->rows_per_task = j->C && PD_EW_TASK / j->C > 0 ? PD_EW_TASK / j->C : 1;
    pd_cpu_parallel(be, (j->rows + j->rows_per_task - 1) / j->rows_per_task, pd_mod_task, j);
}

pd_status pd_cpu_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift, const pd_tensor *scale) {
    pd_mod_job j = {.x = x->data, .y = y->data, .m0 = shift->data, .m1 = scale->data, .s0 = shift->stride[0],
                    .s1 = scale->stride[0], .N = x->shape[1], .C = x->shape[2], .rows = x->shape[0] * x->shape[1]};
    pd_mod_run(be, &j);
    return PD_OK;
}

pd_status pd_cpu_gated_add(pd_backend *be, pd_tensor *x, const pd_tensor *gate, const pd_tensor *y) {
    /* x += gate * y: the job reads y as its input and accumulates into x. */
    pd_mod_job j = {.x = y->data, .y = x->data, .m0 = gate ? gate->data : NULL, .s0 = gate ? gate->stride[0] : 0,
                    .N = x->shape[1], .C = x->shape[2], .rows = x->shape[0] * x->shape[1], .gated = true};
    pd_mod_run(be, &j);
    return PD_OK;
}

/* ---- broadcasting add / mul ---- */

typedef struct {
    const float *a, *b;
    float *y;
    int nd;                        /* rank of a (>= 1 here) */
    int64_t shape[PD_MAX_DIMS];    /* a's dims */
    int64_t bstride[PD_MAX_DIMS];  /* b's element stride along each of a's dims (0 = broadcast) */
    int64_t inner, rows, rows_per_task;
    bool mul;
} pd_bin_job;

static void pd_bin_task(void *ctx, int64_t task, int thread) {
    const pd_bin_job *j = ctx;
    int64_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task < j->rows ? r0 + j->rows_per_task : j->rows;
    int64_t n = j->inner, bs = j->bstride[j->nd - 1];
    for (int64_t r = r0; r < r1; r++) {
        int64_t rem = r, boff = 0;
        for (int d = j->nd - 2; d >= 0; d--) {
            boff += (rem % j->shape[d]) * j->bstride[d];
            rem /= j->shape[d];
        }
        const float *a = j->a + r * n, *b = j->b + boff;
        float *y = j->y + r * n;
        if (j->mul) {
            if (bs) for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
            else for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[0];
        } else {
            if (bs) for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
            else for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[0];
        }
    }
}

static pd_status pd_binary(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b, bool mul) {
    if (pd_tensor_numel(a) == 0) return PD_OK;
    float *bo = NULL;
    const float *bf = pd_cpu_f32(b, &bo);
    if (!bf) return PD_ERR_NOMEM;
    pd_bin_job j = {.a = a->data, .b = bf, .y = y->data, .nd = a->ndim ? a->ndim : 1, .mul = mul};
    for (int d = 0; d < j.nd; d++) j.shape[d] = a->ndim ? a->shape[d] : 1;
    int64_t s = 1;
    for (int d = j.nd - 1, bd = b->ndim - 1; d >= 0; d--, bd--) {
        if (bd < 0 || b->shape[bd] == 1) {
            j.bstride[d] = 0;
        } else {
            j.bstride[d] = s;
            s *= b->shape[bd];
        }
    }
    j.inner = j.shape[j.nd - 1];
    j.rows = pd_tensor_numel(a) / j.inner;
    j.rows_per_task = PD_EW_TASK / j.inner > 0 ? PD_EW_TASK / j.inner : 1;
    pd_cpu_parallel(be, (j.rows + j.rows_per_task - 1) / j.rows_per_task, pd_bin_task, &j);
    free(bo);
    return PD_OK;
}

pd_status pd_cpu_add(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b) { return pd_binary(be, y, a, b, false); }
pd_status pd_cpu_mul(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b) { return pd_binary(be, y, a, b, true); }

pd_status pd_cpu_timestep_embed(pd_backend *be, pd_tensor *out, const pd_tensor *t) {
    int64_t B = out->shape[0], half = out->shape[1] / 2;
    const float *tv = t->data;
    float *o = out->data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < half; i++) {
            double a = (double)tv[b] * pow(10000.0, -(double)i / (double)half);
            o[b * 2 * half + i] = (float)cos(a);
            o[b * 2 * half + half + i] = (float)sin(a);
        }
    return PD_OK;
}
