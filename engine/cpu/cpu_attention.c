/* ATTENTION on the CPU: flash-style online softmax. A task is one (batch, head, block of QB queries);
 * it walks the keys in blocks of KB, scoring with sgemm straight from the strided (B, N, H, D)
 * tensors, keeping a running max and sum per query, and accumulating p.v with sgemm. Memory per
 * thread is O(QB * (KB + Dv)); the Nq x Nk matrix never exists. */
/* FP exception flags are never read: let gcc if-convert and vectorise pd_cpu_expf's loops. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "engine/cpu/cpu_backend.h"

enum { PD_ATT_QB = 128, PD_ATT_KB = 256 };

typedef struct {
    const float *q, *k, *v, *bias;
    float *out, *scratch;
    size_t per_thread;
    int64_t B, Nq, Nk, H, D, Dv, q_blocks;
    float scale;
} pd_att_job;

static void pd_att_task(void *ctx, int64_t task, int thread) {
    const pd_att_job *j = ctx;
    int64_t qb = task % j->q_blocks, bh = task / j->q_blocks, h = bh % j->H, b = bh / j->H;
    int64_t i0 = qb * PD_ATT_QB, qn = j->Nq - i0 < PD_ATT_QB ? j->Nq - i0 : PD_ATT_QB;
    int64_t H = j->H, D = j->D, Dv = j->Dv;
    float *S = j->scratch + (size_t)thread * j->per_thread; /* (QB, KB) scores, then probabilities */
    float *O = S + PD_ATT_QB * PD_ATT_KB;                   /* (QB, Dv) unnormalised output */
    float *m = O + PD_ATT_QB * Dv, *l = m + PD_ATT_QB;      /* running max and sum per query */
    for (int64_t i = 0; i < qn; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    memset(O, 0, (size_t)(qn * Dv) * sizeof(float));
    const float *q = j->q + ((b * j->Nq + i0) * H + h) * D;
    for (int64_t j0 = 0; j0 < j->Nk; j0 += PD_ATT_KB) {
        int64_t kn = j->Nk - j0 < PD_ATT_KB ? j->Nk - j0 : PD_ATT_KB;
        const float *k = j->k + ((b * j->Nk + j0) * H + h) * D;
        const float *v = j->v + ((b * j->Nk + j0) * H + h) * Dv;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)qn, (int)kn, (int)D, j->scale, q, (int)(H * D), k,
                    (int)(H * D), 0.0f, S, PD_ATT_KB);
        for (int64_t i = 0; i < qn; i++) {
            float *s = S + i * PD_ATT_KB;
            if (j->bias) {
                const float *bias = j->bias + (h * j->Nq + i0 + i) * j->Nk + j0;
                for (int64_t c = 0; c < kn; c++) s[c] += bias[c];
            }
            float mx = m[i];
            for (int64_t c = 0; c < kn; c++) mx = s[c] > mx ? s[c] : mx;
            if (mx == -INFINITY) { /* every score so far masked out */
                for (int64_t c = 0; c < kn; c++) s[c] = 0.0f;
                continue;
            }
            float alpha = pd_cpu_expf(m[i] - mx), sum = 0.0f;
            for (int64_t c = 0; c < kn; c++) s[c] = pd_cpu_expf(s[c] - mx); /* vectorises; the sum below cannot */
            for (int64_t c = 0; c < kn; c++) sum += s[c];
            l[i] = l[i] * alpha + sum;
            m[i] = mx;
            if (alpha != 1.0f)
                for (int64_t c = 0; c < Dv; c++) O[i * Dv + c] *= alpha;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)qn, (int)Dv, (int)kn, 1.0f, S, PD_ATT_KB, v,
                    (int)(H * Dv), 1.0f, O, (int)Dv);
    }
    for (int64_t i = 0; i < qn; i++) {
        float *o = j->out + ((b * j->Nq + i0 + i) * H + h) * Dv;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        for (int64_t c = 0; c < Dv; c++) o[c] = O[i * Dv + c] * inv;
    }
}

pd_status pd_cpu_attention(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                           const pd_tensor *bias, float scale) {
    pd_att_job j = {.q = q->data, .k = k->data, .v = v->data, .bias = bias ? bias->data : NULL, .out = out->data,
                    .B = q->shape[0], .Nq = q->shape[1], .Nk = k->shape[1], .H = q->shape[2], .D = q->shape[3],
                    .Dv = v->shape[3], .scale = scale};
    if (j.B == 0 || j.Nq == 0 || j.H == 0 || j.Dv == 0) return PD_OK;
    if (j.H * j.D > INT32_MAX || j.H * j.Dv > INT32_MAX)
        return pd_error_set(PD_ERR_UNSUPPORTED, "ATTENTION: H * D too large for sgemm");
    j.q_blocks = (j.Nq + PD_ATT_QB - 1) / PD_ATT_QB;
    j.per_thread = (size_t)(PD_ATT_QB * PD_ATT_KB + PD_ATT_QB * j.Dv + 2 * PD_ATT_QB);
    j.scratch = pd_cpu_scratch(be->n_threads, j.per_thread);
    if (!j.scratch) return PD_ERR_NOMEM;
    j.per_thread = (j.per_thread + 15) & ~(size_t)15;
    pd_cpu_parallel(be, j.B * j.H * j.q_blocks, pd_att_task, &j);
    free(j.scratch);
    return PD_OK;
}
