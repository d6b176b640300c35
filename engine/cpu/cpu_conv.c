/* CONV3D on the CPU: im2col + sgemm. A task is a block of output rows of one output frame: it
 * gathers the (Cin*kt*kh*kw, rows*Wo) patch matrix into per-thread scratch and multiplies it by the
 * widened (Cout, Cin*kt*kh*kw) weights, writing straight into y. A 1x1x1 kernel without padding
 * skips the gather. The task grid depends only on shapes, so results do not depend on threads. */
#include <cblas.h>
#include <string.h>

#include "engine/cpu/cpu_backend.h"

enum {
    PD_CONV_COL_FLOATS = 1 << 20, /* target patch-matrix size per task (4 MiB) */
    PD_CONV_DIRECT_COUT = 8,      /* at most this many output channels: no patch matrix */
};

typedef struct {
    const float *x, *w, *b;
    float *y, *scratch;
    size_t per_thread;
    int64_t Cin, T, H, W, Cout, kt, kh, kw, To, Ho, Wo, CK, rows_per_task, row_tiles;
    int pad[6];
    bool direct;
} pd_conv_job;

static void pd_conv_task(void *ctx, int64_t task, int thread) {
    const pd_conv_job *j = ctx;
    int64_t to = task / j->row_tiles, ho0 = (task % j->row_tiles) * j->rows_per_task;
    int64_t nr = j->Ho - ho0 < j->rows_per_task ? j->Ho - ho0 : j->rows_per_task, ncol = nr * j->Wo;
    int64_t HW = j->H * j->W;
    const float *col;
    int64_t ldcol;
    if (j->direct) {
        col = j->x + to * HW + ho0 * j->W;
        ldcol = j->T * HW;
    } else {
        float *c = j->scratch + (size_t)thread * j->per_thread;
        int64_t r = 0;
        for (int64_t ci = 0; ci < j->Cin; ci++)
            for (int64_t a = 0; a < j->kt; a++) {
                int64_t ti = to + a - j->pad[0];
                for (int64_t bb = 0; bb < j->kh; bb++)
                    for (int64_t e = 0; e < j->kw; e++, r++) {
                        float *dst = c + r * ncol;
                        if (ti < 0 || ti >= j->T) {
                            memset(dst, 0, (size_t)ncol * sizeof(float));
                            continue;
                        }
                        /* valid output columns: 0 <= wo + e - pad_left < W */
                        int64_t w_lo = j->pad[4] - e > 0 ? j->pad[4] - e : 0;
                        int64_t w_hi = j->W + j->pad[4] - e < j->Wo ? j->W + j->pad[4] - e : j->Wo;
                        if (w_hi < w_lo) w_hi = w_lo;
                        for (int64_t i = 0; i < nr; i++) {
                            int64_t hi = ho0 + i + bb - j->pad[2];
                            float *d = dst + i * j->Wo;
                            if (hi < 0 || hi >= j->H) {
                                memset(d, 0, (size_t)j->Wo * sizeof(float));
                                continue;
                            }
                            const float *s = j->x + (ci * j->T + ti) * HW + hi * j->W + e - j->pad[4];
                            if (w_lo > 0) memset(d, 0, (size_t)w_lo * sizeof(float));
                            memcpy(d + w_lo, s + w_lo, (size_t)(w_hi - w_lo) * sizeof(float));
                            if (w_hi < j->Wo) memset(d + w_hi, 0, (size_t)(j->Wo - w_hi) * sizeof(float));
                        }
                    }
            }
        col = c;
        ldcol = ncol;
    }
    int64_t plane = j->To * j->Ho * j->Wo;
    float *y = j->y + to * j->Ho * j->Wo + ho0 * j->Wo;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)j->Cout, (int)ncol, (int)j->CK, 1.0f, j->w, (int)j->CK,
                col, (int)ldcol, 0.0f, y, (int)plane);
    if (j->b)
        for (int64_t co = 0; co < j->Cout; co++) {
            float bv = j->b[co], *yr = y + co * plane;
            for (int64_t i = 0; i < ncol; i++) yr[i] += bv;
        }
}

/* Few output channels (the VAE's 96 -> 3 head): building the patch matrix would cost more than the
 * multiply, so accumulate kernel taps straight into each output row instead. */
static void pd_conv_direct_task(void *ctx, int64_t task, int thread) {
    const pd_conv_job *j = ctx;
    int64_t to = task / j->row_tiles, ho0 = (task % j->row_tiles) * j->rows_per_task;
    int64_t ho1 = ho0 + j->rows_per_task < j->Ho ? ho0 + j->rows_per_task : j->Ho;
    int64_t plane = j->To * j->Ho * j->Wo;
    for (int64_t co = 0; co < j->Cout; co++)
        for (int64_t ho = ho0; ho < ho1; ho++) {
            float *yr = j->y + co * plane + (to * j->Ho + ho) * j->Wo, bv = j->b ? j->b[co] : 0.0f;
            for (int64_t i = 0; i < j->Wo; i++) yr[i] = bv;
            for (int64_t ci = 0; ci < j->Cin; ci++)
                for (int64_t a = 0; a < j->kt; a++) {
                    int64_t ti = to + a - j->pad[0];
                    if (ti < 0 || ti >= j->T) continue;
                    for (int64_t bb = 0; bb < j->kh; bb++) {
                        int64_t hi = ho + bb - j->pad[2];
                        if (hi < 0 || hi >= j->H) continue;
                        const float *xr = j->x + ((ci * j->T + ti) * j->H + hi) * j->W;
                        const float *wr = j->w + (((co * j->Cin + ci) * j->kt + a) * j->kh + bb) * j->kw;
                        for (int64_t e = 0; e < j->kw; e++) {
                            int64_t w_lo = j->pad[4] - e > 0 ? j->pad[4] - e : 0;
                            int64_t w_hi = j->W + j->pad[4] - e < j->Wo ? j->W + j->pad[4] - e : j->Wo;
                            const float *xs = xr + e - j->pad[4];
                            float wv = wr[e];
                            for (int64_t i = w_lo; i < w_hi; i++) yr[i] += wv * xs[i];
                        }
                    }
                }
        }
}

pd_status pd_cpu_conv3d(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                        const int pad[6]) {
    pd_conv_job j = {.x = x->data, .y = y->data, .Cin = x->shape[0], .T = x->shape[1], .H = x->shape[2],
                     .W = x->shape[3], .Cout = w->shape[0], .kt = w->shape[2], .kh = w->shape[3], .kw = w->shape[4],
                     .To = y->shape[1], .Ho = y->shape[2], .Wo = y->shape[3]};
    memcpy(j.pad, pad, sizeof j.pad);
    j.CK = j.Cin * j.kt * j.kh * j.kw;
    if (j.Cout == 0 || pd_tensor_numel(y) == 0) return PD_OK;
    if (j.CK > INT32_MAX || j.To * j.Ho * j.Wo > INT32_MAX || j.T * j.H * j.W > INT32_MAX)
        return pd_error_set(PD_ERR_UNSUPPORTED, "CONV3D: sizes too large for sgemm");
    float *wo = NULL, *bo = NULL;
    if (!(j.w = pd_cpu_f32(w, &wo))) return PD_ERR_NOMEM;
    if (b && !(j.b = pd_cpu_f32(b, &bo))) {
        free(wo);
        return PD_ERR_NOMEM;
    }
    if (j.CK == 0) { /* no input channels: y = bias */
        for (int64_t co = 0, n = j.To * j.Ho * j.Wo; co < j.Cout; co++)
            for (int64_t i = 0; i < n; i++) ((float *)y->data)[co * n + i] = j.b ? j.b[co] : 0.0f;
        free(wo);
        free(bo);
        return PD_OK;
    }
    if (j.Cout <= PD_CONV_DIRECT_COUT) {
        j.rows_per_task = j.Wo < 4096 ? 4096 / j.Wo : 1;
        if (j.rows_per_task > j.Ho) j.rows_per_task = j.Ho;
        j.row_tiles = (j.Ho + j.rows_per_task - 1) / j.rows_per_task;
        pd_cpu_parallel(be, j.To * j.row_tiles, pd_conv_direct_task, &j);
        free(wo);
        free(bo);
        return PD_OK;
    }
    j.direct = j.kt == 1 && j.kh == 1 && j.kw == 1 && !pad[0] && !pad[1] && !pad[2] && !pad[3] && !pad[4] && !pad[5];
    int64_t per_row = j.CK * j.Wo;
    j.rows_per_task = PD_CONV_COL_FLOATS / per_row;
    if (j.rows_per_task < 1) j.rows_per_task = 1;
    if (j.rows_per_task > j.Ho) j.rows_per_task = j.Ho;
    j.row_tiles = (j.Ho + j.rows_per_task - 1) / j.rows_per_task;
    if (!j.direct) {
        j.per_thread = ((size_t)(per_row * j.rows_per_task) + 15) & ~(size_t)15;
        j.scratch = pd_cpu_scratch(be->n_threads, j.per_thread);
        if (!j.scratch) {
            free(wo);
            free(bo);
            return PD_ERR_NOMEM;
        }
    }
    pd_cpu_parallel(be, j.To * j.row_tiles, pd_conv_task, &j);
    free(j.scratch);
    free(wo);
    free(bo);
    return PD_OK;
}
