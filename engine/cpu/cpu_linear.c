/* LINEAR on the CPU: y (M, N) = x (M, K) @ w (N, K)^T + b through single-threaded OpenBLAS sgemm
 * calls inside our own tasks. The task grid (tiles of w rows, times chunks of x rows when there are
 * few tiles) depends only on M, N and K, so every thread count computes exactly the same sums.
 * Narrow weights are widened one tile at a time into per-thread scratch. LINEAR_GELU applies GELU_TANH
 * to each output tile right after its GEMM, while the tile is in cache. */
/* FP exception flags are never read: let gcc if-convert and vectorise the GELU loop (pd_cpu_expf). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <cblas.h>

#include "engine/cpu/cpu_backend.h"

enum { PD_LINEAR_NB = 128, PD_LINEAR_MIN_TASKS = 16, PD_LINEAR_MIN_ROWS = 64 };

typedef struct {
    const float *x;
    const void *w;
    pd_dtype wdt;
    const float *b;
    float *y, *scratch;
    size_t scratch_per_thread;
    int64_t M, N, K, n_tiles, m_chunk;
    bool gelu;
} pd_linear_job;

static void pd_linear_task(void *ctx, int64_t task, int thread) {
    const pd_linear_job *j = ctx;
    int64_t nt = task % j->n_tiles, mc = task / j->n_tiles;
    int64_t n0 = nt * PD_LINEAR_NB, nn = j->N - n0 < PD_LINEAR_NB ? j->N - n0 : PD_LINEAR_NB;
    int64_t m0 = mc * j->m_chunk, mm = j->M - m0 < j->m_chunk ? j->M - m0 : j->m_chunk;
    if (mm <= 0) return;
    const float *wt;
    if (j->wdt == PD_DTYPE_F32) {
        wt = (const float *)j->w + n0 * j->K;
    } else {
        float *s = j->scratch + (size_t)thread * j->scratch_per_thread;
        pd_cpu_widen(s, j->w, j->wdt, n0 * j->K, nn * j->K);
        wt = s;
    }
    float *y = j->y + m0 * j->N + n0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mm, (int)nn, (int)j->K, 1.0f, j->x + m0 * j->K,
                (int)j->K, wt, (int)j->K, 0.0f, y, (int)j->N);
    if (j->b)
        for (int64_t i = 0; i < mm; i++)
            for (int64_t c = 0; c < nn; c++) y[i * j->N + c] += j->b[n0 + c];
    if (j->gelu)
        for (int64_t i = 0; i < mm; i++)
            for (int64_t c = 0; c < nn; c++) y[i * j->N + c] = pd_cpu_gelu_tanh1(y[i * j->N + c]);
}

static pd_status pd_linear_run(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                               bool gelu) {
    int64_t N = w->shape[0], K = w->shape[1], M = N ? pd_tensor_numel(y) / N : 0;
    if (M == 0 || N == 0) return PD_OK;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || M * K > INT64_MAX / 4)
        return pd_error_set(PD_ERR_UNSUPPORTED, "LINEAR: (%lld, %lld, %lld) too large for sgemm", (long long)M,
                            (long long)N, (long long)K);
    float *b_owned = NULL;
    const float *bf = NULL;
    if (b && !(bf = pd_cpu_f32(b, &b_owned))) return PD_ERR_NOMEM;
    pd_linear_job j = {.x = x->data, .w = w->data, .wdt = w->dtype, .b = bf, .y = y->data, .M = M, .N = N, .K = K,
                       .gelu = gelu};
    j.n_tiles = (N + PD_LINEAR_NB - 1) / PD_LINEAR_NB;
    int64_t m_chunks = 1;
    if (j.n_tiles < PD_LINEAR_MIN_TASKS) {
        m_chunks = (PD_LINEAR_MIN_TASKS + j.n_tiles - 1) / j.n_tiles;
        int64_t most = (M + PD_LINEAR_MIN_ROWS - 1) / PD_LINEAR_MIN_ROWS;
        if (m_chunks > most) m_chunks = most;
    }
    j.m_chunk = (M + m_chunks - 1) / m_chunks;
    m_chunks = (M + j.m_chunk - 1) / j.m_chunk;
    if (K == 0) { /* sgemm rejects K = 0: y is the bias, or zero */
        for (int64_t i = 0; i < M; i++)
            for (int64_t c = 0; c < N; c++) {
                float v = bf ? bf[c] : 0.0f;
                ((float *)y->data)[i * N + c] = gelu ? pd_cpu_gelu_tanh1(v) : v;
            }
        free(b_owned);
        return PD_OK;
    }
    if (w->dtype != PD_DTYPE_F32) {
        j.scratch_per_thread = ((size_t)(PD_LINEAR_NB * K) + 15) & ~(size_t)15;
        j.scratch = pd_cpu_scratch(be->n_threads, j.scratch_per_thread);
        if (!j.scratch) {
            free(b_owned);
            return PD_ERR_NOMEM;
        }
    }
    pd_cpu_parallel(be, j.n_tiles * m_chunks, pd_linear_task, &j);
    free(j.scratch);
    free(b_owned);
    return PD_OK;
}

pd_status pd_cpu_linear(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b) {
    return pd_linear_run(be, y, x, w, b, false);
}

pd_status pd_cpu_linear_gelu(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b) {
    return pd_linear_run(be, y, x, w, b, true);
}
