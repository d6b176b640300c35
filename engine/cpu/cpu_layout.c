/* Data movement on the CPU: patchify / unpatchify, copy, nearest upsampling and embedding lookup. */
#include <string.h>

#include "engine/cpu/cpu_backend.h"

typedef struct {
    float *tokens, *latent;
    int64_t C, T, H, W, Hp, Wp;
    int pt, ph, pw;
    bool c_last; /* unpatchify's (pt, ph, pw, c) order; patchify uses (c, pt, ph, pw) */
    bool to_tokens;
} pd_patch_job;

/* One task = one token. */
static void pd_patch_task(void *ctx, int64_t n, int thread) {
    const pd_patch_job *j = ctx;
    int64_t ti = n / (j->Hp * j->Wp), hi = (n / j->Wp) % j->Hp, wi = n % j->Wp;
    int64_t D = j->C * j->pt * j->ph * j->pw;
    float *tok = j->tokens + n * D;
    for (int64_t c = 0; c < j->C; c++)
        for (int a = 0; a < j->pt; a++)
            for (int b = 0; b < j->ph; b++)
                for (int e = 0; e < j->pw; e++) {
                    int64_t d = j->c_last ? ((a * j->ph + b) * (int64_t)j->pw + e) * j->C + c
                                          : ((c * j->pt + a) * (int64_t)j->ph + b) * j->pw + e;
                    float *l = j->latent + ((c * j->T + ti * j->pt + a) * j->H + hi * j->ph + b) * j->W + wi * j->pw + e;
                    if (j->to_tokens) tok[d] = *l;
                    else *l = tok[d];
                }
}

static void pd_patch_run(pd_backend *be, pd_patch_job *j, const pd_tensor *latent) {
    j->C = latent->shape[0];
    j->T = latent->shape[1];
    j->H = latent->shape[2];
    j->W = latent->shape[3];
    j->Hp = j->H / j->ph;
    j->Wp = j->W / j->pw;
    pd_cpu_parallel(be, (j->T / j->pt) * j->Hp * j->Wp, pd_patch_task, j);
}

pd_status pd_cpu_patchify(pd_backend *be, pd_tensor *tokens, const pd_tensor *latent, int pt, int ph, int pw) {
    pd_patch_job j = {.tokens = tokens->data, .latent = latent->data, .pt = pt, .ph = ph, .pw = pw, .to_tokens = true};
    pd_patch_run(be, &j, latent);
    return PD_OK;
}

pd_status pd_cpu_unpatchify(pd_backend *be, pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw) {
    pd_patch_job j = {.tokens = tokens->data, .latent = latent->data, .pt = pt, .ph = ph, .pw = pw, .c_last = true};
    pd_patch_run(be, &j, latent);
    return PD_OK;
}

typedef struct {
    pd_tensor *dst;
    const pd_tensor *src;
    int64_t per_task;
} pd_copy_job;

/* One task = a block of indices along dim 0, copied by pd_tensor_copy on the two slices. */
static void pd_copy_task(void *ctx, int64_t task, int thread) {
    const pd_copy_job *j = ctx;
    int64_t i0 = task * j->per_task, n = j->src->shape[0] - i0 < j->per_task ? j->src->shape[0] - i0 : j->per_task;
    pd_tensor d = pd_tensor_slice(j->dst, 0, i0, n), s = pd_tensor_slice(j->src, 0, i0, n);
    pd_status st = pd_tensor_copy(&d, &s);
    PD_ASSERT(st == PD_OK); /* shapes and dtypes were checked in backend.c */
}

pd_status pd_cpu_copy(pd_backend *be, pd_tensor *dst, const pd_tensor *src) {
    int64_t n = pd_tensor_numel(src);
    if (src->ndim == 0 || n < 65536) return pd_tensor_copy(dst, src);
    int64_t row = n / src->shape[0]; /* elements per index of dim 0 */
    pd_copy_job j = {.dst = dst, .src = src, .per_task = 65536 / row > 0 ? 65536 / row : 1};
    pd_cpu_parallel(be, (src->shape[0] + j.per_task - 1) / j.per_task, pd_copy_task, &j);
    return PD_OK;
}

typedef struct {
    const float *x;
    float *y;
    int64_t H, W;
} pd_up_job;

/* One task = one (c, t) plane. */
static void pd_up_task(void *ctx, int64_t plane, int thread) {
    const pd_up_job *j = ctx;
    const float *x = j->x + plane * j->H * j->W;
    float *y = j->y + plane * 4 * j->H * j->W;
    for (int64_t h = 0; h < j->H; h++) {
        float *r = y + 2 * h * 2 * j->W;
        for (int64_t w = 0; w < j->W; w++) r[2 * w] = r[2 * w + 1] = x[h * j->W + w];
        memcpy(r + 2 * j->W, r, (size_t)(2 * j->W) * sizeof(float));
    }
}

pd_status pd_cpu_upsample_nearest2d(pd_backend *be, pd_tensor *y, const pd_tensor *x) {
    pd_up_job j = {.x = x->data, .y = y->data, .H = x->shape[2], .W = x->shape[3]};
    pd_cpu_parallel(be, x->shape[0] * x->shape[1], pd_up_task, &j);
    return PD_OK;
}

pd_status pd_cpu_embedding(pd_backend *be, pd_tensor *out, const pd_tensor *ids, const pd_tensor *table) {
    int64_t L = ids->shape[0], D = table->shape[1];
    const int32_t *id = ids->data;
    for (int64_t i = 0; i < L; i++) pd_cpu_widen((float *)out->data + i * D, table->data, table->dtype, id[i] * D, D);
    return PD_OK;
}
