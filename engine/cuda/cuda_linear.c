/* LINEAR on CUDA through cuBLASLt: y (M, N) = x (M, K) @ w (N, K)^T + b (N), every matrix row-major,
 * M = the product of x's leading dims.
 *
 * Row-major to cuBLAS's column-major: a row-major (R, S) buffer with row stride S is, read
 * column-major, the (S, R) matrix of its transpose with leading dimension S. So the buffers hold
 *   w: column-major (K, N), ld K, i.e. W^T;   x: column-major (K, M), ld K, i.e. X^T;
 *   y: column-major (N, M), ld N, i.e. Y^T.
 * Y = X W^T is the same as Y^T = W X^T = (W^T)^T (X^T), so cuBLASLt computes
 *   D (m = N, n = M) = op(A) op(B) with A = w's buffer (K x N, ld K) and op(A) = transpose,
 *   B = x's buffer (K x M, ld K) and op(B) = no transpose, k = K, D = y's buffer (N x M, ld N).
 * The bias epilogue adds a vector along D's rows (length m = N) to every column: exactly b (N)
 * added to every row of the row-major y.
 *
 * Types: bf16 weights multiply a bf16 copy of x (staged in scratch), f32 accumulation and f32 output.
 * f16 weights are converted to a bf16 copy first (cuBLASLt wants A and B of one type; bf16 because
 * the activations may exceed f16's range). f32 weights run a plain f32 GEMM (compute type 32F, no
 * TF32), so the tiny f32 test model matches the CPU closely. The bias must have D's type (f32): a
 * bf16 / f16 bias is widened into scratch. Each distinct problem (shape, types, bias, alignments)
 * gets its algorithm from cuBLASLt's heuristic once and keeps it, with its descriptors, in a small
 * table; the step loop then only sets the bias pointer and calls cublasLtMatmul. Where cuBLASLt
 * offers no algorithm (odd leading dimensions can do that), the same problem goes through
 * cublasGemmEx and the bias through ADD.
 *
 * LINEAR_GELU is the same GEMM with an epilogue: on the bf16 path cuBLASLt's GELU_BIAS (or GELU
 * without a bias) epilogue, whose GELU is the tanh approximation GELU_TANH computes; the f32 path
 * (kept free of approximations beyond f32 rounding, for tight comparisons with the CPU) and the
 * cublasGemmEx fallback run the plain GEMM and then GELU_TANH's kernel in place. */
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_backend.h"

enum { PD_LT_CACHE = 64 };
#define PD_LT_WORKSPACE ((size_t)32 << 20)

typedef struct {
    int64_t M, N, K;
    pd_dtype dt;        /* operand type of A and B: F32 or BF16 */
    bool bias;
    bool gelu;          /* GELU (or GELU_BIAS) epilogue instead of none (or BIAS) */
    uint32_t align[4];  /* byte alignment of A, B, D and the bias, as the heuristic was told */
} pd_lt_key;

typedef struct {
    pd_lt_key key;
    bool used;
    uint64_t last_use;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
    bool gemmex; /* cuBLASLt offered no algorithm (e.g. odd leading dims): cublasGemmEx + ADD for the bias */
} pd_lt_entry;

typedef struct {
    pd_lt_entry e[PD_LT_CACHE];
    uint64_t clock;
} pd_lt_cache;

/* Largest power of two (at most 256) dividing the address: what the heuristic may assume. */
static uint32_t pd_lt_align(const void *p) {
    uint32_t a = 256;
    while (a > 1 && (uintptr_t)p % a) a >>= 1;
    return a;
}

static bool pd_lt_key_eq(const pd_lt_key *a, const pd_lt_key *b) {
    return a->M == b->M && a->N == b->N && a->K == b->K && a->dt == b->dt && a->bias == b->bias && a->gelu == b->gelu &&
           !memcmp(a->align, b->align, sizeof a->align);
}

static void pd_lt_entry_clear(pd_lt_entry *e) {
    if (e->op) cublasLtMatmulDescDestroy(e->op);
    if (e->a) cublasLtMatrixLayoutDestroy(e->a);
    if (e->b) cublasLtMatrixLayoutDestroy(e->b);
    if (e->d) cublasLtMatrixLayoutDestroy(e->d);
    memset(e, 0, sizeof *e);
}

void pd_cuda_linear_free(pd_cuda *c) {
    pd_lt_cache *lc = c->linear;
    if (!lc) return;
    for (int i = 0; i < PD_LT_CACHE; i++) pd_lt_entry_clear(&lc->e[i]);
    free(lc);
    c->linear = NULL;
}

/* Descriptors for key k and the heuristic's first algorithm under the preference pref. */
static pd_status pd_lt_describe(pd_cuda *c, pd_lt_entry *e, const pd_lt_key *k, const void *bias,
                                cublasLtMatmulPreference_t pref) {
    const int dev = c->device;
    cudaDataType_t t = k->dt == PD_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF;
    PD_CUBLAS_CHECK(dev, cublasLtMatmulDescCreate(&e->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    PD_CUBLAS_CHECK(dev, cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    PD_CUBLAS_CHECK(dev, cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (k->bias || k->gelu) {
        cublasLtEpilogue_t epi = k->gelu ? (k->bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU) : CUBLASLT_EPILOGUE_BIAS;
        PD_CUBLAS_CHECK(dev, cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    }
    if (k->bias) {
        int32_t bias_t = CUDA_R_32F;
        PD_CUBLAS_CHECK(dev, cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_t, sizeof bias_t));
        /* The heuristic reads the pointer's alignment. */
        PD_CUBLAS_CHECK(dev, cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    PD_CUBLAS_CHECK(dev, cublasLtMatrixLayoutCreate(&e->a, t, (uint64_t)k->K, (uint64_t)k->N, k->K));
    PD_CUBLAS_CHECK(dev, cublasLtMatrixLayoutCreate(&e->b, t, (uint64_t)k->K, (uint64_t)k->M, k->K));
    PD_CUBLAS_CHECK(dev, cublasLtMatrixLayoutCreate(&e->d, CUDA_R_32F, (uint64_t)k->N, (uint64_t)k->M, k->N));
    uint64_t ws = PD_LT_WORKSPACE;
    PD_CUBLAS_CHECK(dev, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    PD_CUBLAS_CHECK(dev, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k->align[0], sizeof(uint32_t)));
    PD_CUBLAS_CHECK(dev, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k->align[1], sizeof(uint32_t)));
    PD_CUBLAS_CHECK(dev, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k->align[2], sizeof(uint32_t)));
    PD_CUBLAS_CHECK(dev, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k->align[2], sizeof(uint32_t)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    memset(&res, 0, sizeof res);
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(c->lt, e->op, e->a, e->b, e->d, e->d, pref, 1, &res, &found);
    if (hs == CUBLAS_STATUS_NOT_SUPPORTED || (hs == CUBLAS_STATUS_SUCCESS && (found < 1 || res.state != CUBLAS_STATUS_SUCCESS))) {
        PD_DEBUG("cuda", "cuda:%d: cuBLASLt has no algorithm for LINEAR (M %lld, N %lld, K %lld) %s%s%s: cublasGemmEx instead",
                 dev, (long long)k->M, (long long)k->N, (long long)k->K, pd_dtype_name(k->dt), k->bias ? " + bias" : "",
                 k->gelu ? " + gelu" : "");
        e->gemmex = true;
        return PD_OK;
    }
    PD_CUBLAS_CHECK(dev, hs);
    e->algo = res.algo;
    return PD_OK;
}

/* The cached entry for k, made on first use (the least recently used entry makes room). */
static pd_status pd_lt_lookup(pd_cuda *c, const pd_lt_key *k, const void *bias, pd_lt_entry **out) {
    if (!c->linear && !(c->linear = calloc(1, sizeof(pd_lt_cache))))
        return pd_error_set(PD_ERR_NOMEM, "out of memory for the cuBLASLt algorithm table");
    pd_lt_cache *lc = c->linear;
    pd_lt_entry *victim = &lc->e[0];
    for (int i = 0; i < PD_LT_CACHE; i++) {
        pd_lt_entry *e = &lc->e[i];
        if (e->used && pd_lt_key_eq(&e->key, k)) {
            e->last_use = ++lc->clock;
            *out = e;
            return PD_OK;
        }
        if (!e->used ? victim->used : (victim->used && e->last_use < victim->last_use)) victim = e;
    }
    pd_lt_entry_clear(victim);
    cublasLtMatmulPreference_t pref = NULL;
    PD_CUBLAS_CHECK(c->device, cublasLtMatmulPreferenceCreate(&pref));
    pd_status st = pd_lt_describe(c, victim, k, bias, pref);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != PD_OK) {
        pd_lt_entry_clear(victim);
        return st;
    }
    victim->key = *k;
    victim->used = true;
    victim->last_use = ++lc->clock;
    *out = victim;
    return PD_OK;
}

/* LINEAR, and LINEAR_GELU when gelu: the epilogue where cuBLASLt runs it (bf16 path), else GELU_TANH after. */
static pd_status pd_lt_linear(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                              bool gelu) {
    pd_cuda *c = pd_cuda_of(be);
    const int dev = c->device;
    int64_t N = w->shape[0], K = w->shape[1], M = N ? pd_tensor_numel(y) / N : 0;
    if (M == 0 || N == 0) return PD_OK;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
        return pd_error_set(PD_ERR_UNSUPPORTED, "LINEAR on %s: (M %lld, N %lld, K %lld) too large", be->name, (long long)M,
                            (long long)N, (long long)K);
    PD_TRY(pd_cuda_enter(be));
    if (K == 0) { /* an empty sum: y is the bias, or zero */
        PD_CUDA_CHECK(dev, cudaMemsetAsync(y->data, 0, pd_tensor_nbytes(y), c->stream));
        if (b) PD_TRY(pd_cuda_add(be, y, y, b));
        return gelu ? pd_cuda_gelu_tanh(be, y, y) : PD_OK;
    }

    /* Scratch LINEAR_W holds the bf16 copy of an f16 weight, then (256-byte aligned) the f32 bias
     * when b is not already usable as is; one request, so neither pointer moves. */
    bool stage_w = w->dtype == PD_DTYPE_F16;
    bool stage_b = b && (b->dtype != PD_DTYPE_F32 || pd_lt_align(b->data) < 16);
    size_t w_bytes = stage_w ? pd_cuda_align256((size_t)(N * K) * 2) : 0;
    void *wscratch = NULL;
    if (stage_w || stage_b) PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_LINEAR_W, w_bytes + (size_t)N * 4, &wscratch));

    const void *A = w->data, *bias = b ? b->data : NULL;
    pd_dtype dt = w->dtype == PD_DTYPE_F32 ? PD_DTYPE_F32 : PD_DTYPE_BF16;
    if (stage_w) {
        PD_TRY(pd_cuda_convert(be, wscratch, PD_DTYPE_BF16, w->data, PD_DTYPE_F16, N * K));
        A = wscratch;
    }
    if (stage_b) {
        void *bs = (char *)wscratch + w_bytes;
        PD_TRY(pd_cuda_convert(be, bs, PD_DTYPE_F32, b->data, b->dtype, N));
        bias = bs;
    }
    const void *B = x->data;
    if (dt == PD_DTYPE_BF16) {
        void *xs = NULL;
        PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_LINEAR_X, (size_t)(M * K) * 2, &xs));
        PD_TRY(pd_cuda_convert(be, xs, PD_DTYPE_BF16, x->data, PD_DTYPE_F32, M * K));
        B = xs;
    }

    const bool epi_gelu = gelu && dt == PD_DTYPE_BF16;
    pd_lt_key key = {.M = M, .N = N, .K = K, .dt = dt, .bias = b != NULL, .gelu = epi_gelu,
                     .align = {pd_lt_align(A), pd_lt_align(B), pd_lt_align(y->data), bias ? pd_lt_align(bias) : 0}};
    pd_lt_entry *e = NULL;
    PD_TRY(pd_lt_lookup(c, &key, bias, &e));
    const float alpha = 1.0f, beta = 0.0f;
    if (e->gemmex) { /* the same column-major problem through the classic API, no TF32 (compute type 32F) */
        cudaDataType_t t = dt == PD_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF;
        PD_CUBLAS_CHECK(dev, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, A, t, (int)K, B, t,
                                          (int)K, &beta, y->data, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        if (b) PD_TRY(pd_cuda_add(be, y, y, b));
        return gelu ? pd_cuda_gelu_tanh(be, y, y) : PD_OK;
    }
    if (bias) PD_CUBLAS_CHECK(dev, cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    void *ws = NULL;
    PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_WORKSPACE, PD_LT_WORKSPACE, &ws));
    PD_CUBLAS_CHECK(dev, cublasLtMatmul(c->lt, e->op, &alpha, A, e->a, B, e->b, &beta, y->data, e->d, y->data, e->d,
                                        &e->algo, ws, PD_LT_WORKSPACE, c->stream));
    return gelu && !epi_gelu ? pd_cuda_gelu_tanh(be, y, y) : PD_OK;
}

pd_status pd_cuda_linear(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b) {
    return pd_lt_linear(be, y, x, w, b, false);
}

pd_status pd_cuda_linear_gelu(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b) {
    return pd_lt_linear(be, y, x, w, b, true);
}
