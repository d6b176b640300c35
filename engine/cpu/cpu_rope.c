/* 3D rotary embeddings on the CPU: the (cos, sin) table in double and the pairwise rotation (also
 * applied by the fused RMS_NORM_ROPE of cpu_norm.c). */
#include <math.h>
#include <stdlib.h>

#include "engine/cpu/cpu_backend.h"

typedef struct {
    float *f;
    const double *w; /* (D/2) per-pair frequency */
    const int *axis; /* (D/2) 0 = t, 1 = h, 2 = w */
    int64_t N, D2, gh, gw, off;
} pd_freqs_job;

enum { PD_FREQS_TOKENS = 64 };

static void pd_freqs_task(void *ctx, int64_t task, int thread) {
    const pd_freqs_job *j = ctx;
    int64_t n0 = task * PD_FREQS_TOKENS, n1 = n0 + PD_FREQS_TOKENS < j->N ? n0 + PD_FREQS_TOKENS : j->N;
    for (int64_t n = n0; n < n1; n++) {
        int64_t i = j->off + n, pos[3] = {i / (j->gh * j->gw), (i / j->gw) % j->gh, i % j->gw};
        float *f = j->f + n * j->D2 * 2;
        for (int64_t p = 0; p < j->D2; p++) {
            double a = (double)pos[j->axis[p]] * j->w[p];
            f[2 * p] = (float)cos(a);
            f[2 * p + 1] = (float)sin(a);
        }
    }
}

pd_status pd_cpu_rope3d_freqs(pd_backend *be, pd_tensor *freqs, int64_t gt, int64_t gh, int64_t gw, int64_t off,
                              double theta) {
    int64_t N = freqs->shape[0], D2 = freqs->shape[1], D = 2 * D2;
    int64_t nh = 2 * (D / 6), nt = D - 2 * nh; /* n_w = n_h */
    double *w = malloc((size_t)D2 * sizeof *w);
    int *axis = malloc((size_t)D2 * sizeof *axis);
    if (!w || !axis) {
        free(w);
        free(axis);
        return pd_error_set(PD_ERR_NOMEM, "ROPE3D_FREQS: out of memory");
    }
    for (int64_t j = 0; j < D2; j++) {
        axis[j] = j < nt / 2 ? 0 : j < nt / 2 + nh / 2 ? 1 : 2;
        int64_t jj = axis[j] == 0 ? j : axis[j] == 1 ? j - nt / 2 : j - nt / 2 - nh / 2;
        w[j] = pow(theta, -2.0 * (double)jj / (double)(axis[j] == 0 ? nt : nh));
    }
    pd_freqs_job j = {.f = freqs->data, .w = w, .axis = axis, .N = N, .D2 = D2, .gh = gh, .gw = gw, .off = off};
    pd_cpu_parallel(be, (N + PD_FREQS_TOKENS - 1) / PD_FREQS_TOKENS, pd_freqs_task, &j);
    free(w);
    free(axis);
    return PD_OK;
}

typedef struct {
    const float *x, *f;
    float *y;
    int64_t N, H, D;
} pd_rope_job;

void pd_cpu_rope_head(float *y, const float *x, const float *f, int64_t D) {
    for (int64_t p = 0; p < D / 2; p++) {
        float c = f[2 * p], s = f[2 * p + 1], x0 = x[2 * p], x1 = x[2 * p + 1];
        y[2 * p] = x0 * c - x1 * s;
        y[2 * p + 1] = x0 * s + x1 * c;
    }
}

/* One task = one (b, n) token: every head rotated by that token's table row. */
static void pd_rope_task(void *ctx, int64_t task, int thread) {
    const pd_rope_job *j = ctx;
    int64_t n = task % j->N, D = j->D;
    const float *f = j->f + n * D;
    for (int64_t h = 0; h < j->H; h++) pd_cpu_rope_head(j->y + (task * j->H + h) * D, j->x + (task * j->H + h) * D, f, D);
}

pd_status pd_cpu_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *freqs) {
    pd_rope_job j = {.x = x->data, .f = freqs->data, .y = y->data, .N = x->shape[1], .H = x->shape[2], .D = x->shape[3]};
    pd_cpu_parallel(be, x->shape[0] * x->shape[1], pd_rope_task, &j);
    return PD_OK;
}
