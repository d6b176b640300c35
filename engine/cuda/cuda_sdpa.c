/* cuDNN fused flash attention (SDPA forward, inference) through cuDNN's backend graph API.
 *
 * The graph is the pattern cuDNN's runtime fusion engine recognises as flash attention:
 *   S = Q K^T (matmul) -> S * scale (pointwise, by-value scalar) -> softmax as
 *   M = max_row(S), E = exp(S - M), Z = sum_row(E), P = E / Z (plus the log-sum-exp M + log Z into a
 *   virtual tensor, as cuDNN's own frontend lowers an inference SDPA) -> O = P V (matmul).
 * Intermediates are virtual f32 (never written), P is bf16 (the second matmul's operand type) and
 * Q, K, V, O are bf16 tensors with dims (B, H, N, D) whose strides describe our (B, N, H, D) memory, so
 * no transpose copy exists; K enters as K^T by swapping its last two dims and strides.
 *
 * Plans are built once per shape (heuristics mode A, the first engine config that finalizes) and kept
 * with every descriptor they were built from; a shape cuDNN refuses, when building its plan or when
 * executing it (the variant pack included), is remembered, warned about once and refused again
 * without asking, so the caller falls back to the own kernel the same way (cuda_policy.h). Per call: q, k, v are narrowed to bf16 staging, the plan runs on the stream, O is
 * widened into out. */
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda_policy.h"

/* cuda_policy.h decides from cuDNN 9's status values without cudnn.h; they must be these. */
_Static_assert(CUDNN_STATUS_BAD_PARAM == PD_CUDNN_STATUS_BAD_PARAM &&
                   CUDNN_STATUS_NOT_SUPPORTED == PD_CUDNN_STATUS_NOT_SUPPORTED &&
                   CUDNN_STATUS_INTERNAL_ERROR == PD_CUDNN_STATUS_INTERNAL_ERROR &&
                   CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED == PD_CUDNN_STATUS_HOST_ALLOCATION_FAILED &&
                   CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED == PD_CUDNN_STATUS_DEVICE_ALLOCATION_FAILED,
               "cuDNN status codes differ from cuda_policy.h's");

enum {
    PD_SDPA_UID_Q = 1,
    PD_SDPA_UID_K,
    PD_SDPA_UID_V,
    PD_SDPA_UID_O,
    PD_SDPA_UID_SCALE,
    PD_SDPA_UID_VIRTUAL = 100, /* first id of the virtual tensors */
    PD_SDPA_MAX_PLANS = 64,    /* shapes kept; the oldest goes first */
};

/* Engine configs whose workspace exceeds this are skipped (flash attention needs little or none). */
#define PD_SDPA_MAX_WORKSPACE ((int64_t)256 << 20)

typedef struct pd_sdpa_key {
    int64_t B, H, Nq, Nk, D, Dv; /* strides follow from these: staging is (B, N, H, D) contiguous */
} pd_sdpa_key;

typedef struct pd_sdpa_plan {
    pd_sdpa_key key;
    bool refused;                   /* cuDNN declined this shape; use the own kernel */
    cudnnBackendDescriptor_t plan;  /* NULL when refused */
    int64_t workspace;              /* bytes */
    cudnnBackendDescriptor_t *descs; /* everything the plan was built from, destroyed with it */
    int n_descs, cap_descs;
} pd_sdpa_plan;

typedef struct pd_sdpa_cache {
    pd_sdpa_plan plans[PD_SDPA_MAX_PLANS];
    int n;
} pd_sdpa_cache;

static void pd_sdpa_plan_release(pd_sdpa_plan *p) {
    if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
    for (int i = p->n_descs - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(p->descs[i]);
    free(p->descs);
    memset(p, 0, sizeof *p);
}

void pd_cuda_sdpa_free(pd_cuda *c) {
    pd_sdpa_cache *cache = c->sdpa;
    if (!cache) return;
    for (int i = 0; i < cache->n; i++) pd_sdpa_plan_release(&cache->plans[i]);
    free(cache);
    c->sdpa = NULL;
}

/* ---- graph building; every helper returns the first failing cuDNN status ---- */

/* Creates a descriptor and records it in p so it is destroyed with the plan. */
static cudnnStatus_t pd_sdpa_create(pd_sdpa_plan *p, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out) {
    *out = NULL;
    if (p->n_descs == p->cap_descs) {
        int cap = p->cap_descs ? 2 * p->cap_descs : 64;
        cudnnBackendDescriptor_t *d = realloc(p->descs, (size_t)cap * sizeof *d);
        if (!d) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        p->descs = d, p->cap_descs = cap;
    }
    cudnnStatus_t st = cudnnBackendCreateDescriptor(type, out);
    if (st == CUDNN_STATUS_SUCCESS) p->descs[p->n_descs++] = *out;
    return st;
}

#define PD_SDPA_DO(call)                                                                           \
    do {                                                                                           \
        cudnnStatus_t pd_sdpa_st_ = (call);                                                        \
        if (pd_sdpa_st_ != CUDNN_STATUS_SUCCESS) return pd_sdpa_st_;                               \
    } while (0)

static cudnnStatus_t pd_sdpa_tensor(pd_sdpa_plan *p, int64_t uid, cudnnDataType_t dt, const int64_t dim[4],
                                    const int64_t stride[4], bool is_virtual, bool by_value,
                                    cudnnBackendDescriptor_t *out) {
    cudnnBackendDescriptor_t t;
    const int64_t align = 16;
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t));
    PD_SDPA_DO(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    PD_SDPA_DO(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim));
    PD_SDPA_DO(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, stride));
    PD_SDPA_DO(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    PD_SDPA_DO(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    PD_SDPA_DO(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
    if (by_value) PD_SDPA_DO(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE,
                                                      CUDNN_TYPE_BOOLEAN, 1, &by_value));
    PD_SDPA_DO(cudnnBackendFinalize(t));
    *out = t;
    return CUDNN_STATUS_SUCCESS;
}

/* y = mode(x) or mode(x, b), computed in f32. */
static cudnnStatus_t pd_sdpa_pointwise(pd_sdpa_plan *p, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x,
                                       cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y,
                                       cudnnBackendDescriptor_t *op) {
    cudnnBackendDescriptor_t pw;
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw));
    PD_SDPA_DO(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    PD_SDPA_DO(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    PD_SDPA_DO(cudnnBackendFinalize(pw));
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    if (b) PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    return cudnnBackendFinalize(*op);
}

/* y = reduce(x) over the dims where y has extent 1, in f32. */
static cudnnStatus_t pd_sdpa_reduction(pd_sdpa_plan *p, cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                                       cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t *op) {
    cudnnBackendDescriptor_t red;
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, &red));
    PD_SDPA_DO(cudnnBackendSetAttribute(red, CUDNN_ATTR_REDUCTION_OPERATOR,
                                        CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode));
    PD_SDPA_DO(cudnnBackendSetAttribute(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    PD_SDPA_DO(cudnnBackendFinalize(red));
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, op));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_DESC,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    return cudnnBackendFinalize(*op);
}

/* c = a b (batched over the leading dims), f32 accumulation. */
static cudnnStatus_t pd_sdpa_matmul(pd_sdpa_plan *p, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                                    cudnnBackendDescriptor_t c, cudnnBackendDescriptor_t *op) {
    cudnnBackendDescriptor_t mm;
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_MATMUL_DESCRIPTOR, &mm));
    PD_SDPA_DO(cudnnBackendSetAttribute(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    PD_SDPA_DO(cudnnBackendFinalize(mm));
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, op));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c));
    PD_SDPA_DO(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm));
    return cudnnBackendFinalize(*op);
}

/* Builds the operation graph of p->key into p; *graph receives it. *step names the failing stage. */
static cudnnStatus_t pd_sdpa_graph(pd_sdpa_plan *p, cudnnHandle_t handle, cudnnBackendDescriptor_t *graph,
                                   const char **step) {
    const int64_t B = p->key.B, H = p->key.H, Nq = p->key.Nq, Nk = p->key.Nk, D = p->key.D, Dv = p->key.Dv;
    const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    /* memory (B, N, H, D) seen as dims (B, H, N, D) */
    const int64_t q_dim[4] = {B, H, Nq, D}, q_str[4] = {Nq * H * D, D, H * D, 1};
    const int64_t kt_dim[4] = {B, H, D, Nk}, kt_str[4] = {Nk * H * D, D, 1, H * D};
    const int64_t v_dim[4] = {B, H, Nk, Dv}, v_str[4] = {Nk * H * Dv, Dv, H * Dv, 1};
    const int64_t o_dim[4] = {B, H, Nq, Dv}, o_str[4] = {Nq * H * Dv, Dv, H * Dv, 1};
    const int64_t s_dim[4] = {B, H, Nq, Nk}, s_str[4] = {H * Nq * Nk, Nq * Nk, Nk, 1};
    const int64_t r_dim[4] = {B, H, Nq, 1}, r_str[4] = {H * Nq, Nq, 1, 1};
    const int64_t one[4] = {1, 1, 1, 1};
    cudnnBackendDescriptor_t tq, tk, tv, to, tscale, ts, tss, tm, tsub, te, tz, tlz, tstats, tp;
    int64_t vid = PD_SDPA_UID_VIRTUAL;
    *step = "tensor descriptors";
    PD_SDPA_DO(pd_sdpa_tensor(p, PD_SDPA_UID_Q, bf16, q_dim, q_str, false, false, &tq));
    PD_SDPA_DO(pd_sdpa_tensor(p, PD_SDPA_UID_K, bf16, kt_dim, kt_str, false, false, &tk));
    PD_SDPA_DO(pd_sdpa_tensor(p, PD_SDPA_UID_V, bf16, v_dim, v_str, false, false, &tv));
    PD_SDPA_DO(pd_sdpa_tensor(p, PD_SDPA_UID_O, bf16, o_dim, o_str, false, false, &to));
    PD_SDPA_DO(pd_sdpa_tensor(p, PD_SDPA_UID_SCALE, f32, one, one, false, true, &tscale));
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, s_dim, s_str, true, false, &ts));     // Q K^T
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, s_dim, s_str, true, false, &tss));    // * scale
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, r_dim, r_str, true, false, &tm));     // row max
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, s_dim, s_str, true, false, &tsub));   // - max
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, s_dim, s_str, true, false, &te));     // exp
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, r_dim, r_str, true, false, &tz));     // row sum
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, r_dim, r_str, true, false, &tlz));    // log sum
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, f32, r_dim, r_str, true, false, &tstats)); // max + log sum
    PD_SDPA_DO(pd_sdpa_tensor(p, vid++, bf16, s_dim, s_str, true, false, &tp));    // softmax, bmm2 operand

    cudnnBackendDescriptor_t ops[10];
    *step = "operation descriptors";
    PD_SDPA_DO(pd_sdpa_matmul(p, tq, tk, ts, &ops[0]));
    PD_SDPA_DO(pd_sdpa_pointwise(p, CUDNN_POINTWISE_MUL, ts, tscale, tss, &ops[1]));
    PD_SDPA_DO(pd_sdpa_reduction(p, CUDNN_REDUCE_TENSOR_MAX, tss, tm, &ops[2]));
    PD_SDPA_DO(pd_sdpa_pointwise(p, CUDNN_POINTWISE_SUB, tss, tm, tsub, &ops[3]));
    PD_SDPA_DO(pd_sdpa_pointwise(p, CUDNN_POINTWISE_EXP, tsub, NULL, te, &ops[4]));
    PD_SDPA_DO(pd_sdpa_reduction(p, CUDNN_REDUCE_TENSOR_ADD, te, tz, &ops[5]));
    PD_SDPA_DO(pd_sdpa_pointwise(p, CUDNN_POINTWISE_LOG, tz, NULL, tlz, &ops[6]));
    PD_SDPA_DO(pd_sdpa_pointwise(p, CUDNN_POINTWISE_ADD, tm, tlz, tstats, &ops[7]));
    PD_SDPA_DO(pd_sdpa_pointwise(p, CUDNN_POINTWISE_DIV, te, tz, tp, &ops[8]));
    PD_SDPA_DO(pd_sdpa_matmul(p, tp, tv, to, &ops[9]));

    *step = "operation graph";
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, graph));
    PD_SDPA_DO(cudnnBackendSetAttribute(*graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 10, ops));
    PD_SDPA_DO(cudnnBackendSetAttribute(*graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
    return cudnnBackendFinalize(*graph);
}

/* Asks heuristics mode A for engine configs and keeps the first that finalizes into a plan with a
 * bounded workspace. */
static cudnnStatus_t pd_sdpa_pick(pd_sdpa_plan *p, cudnnHandle_t handle, cudnnBackendDescriptor_t graph,
                                  const char **step) {
    cudnnBackendDescriptor_t heur;
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    *step = "engine heuristics";
    PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    PD_SDPA_DO(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph));
    PD_SDPA_DO(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    PD_SDPA_DO(cudnnBackendFinalize(heur));
    int64_t count = 0;
    PD_SDPA_DO(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                        NULL));
    *step = "engine configs (heuristics offered none)";
    if (count <= 0) return CUDNN_STATUS_NOT_SUPPORTED;
    if (count > 64) count = 64;
    cudnnBackendDescriptor_t cfgs[64];
    for (int64_t i = 0; i < count; i++) PD_SDPA_DO(pd_sdpa_create(p, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i]));
    int64_t got = 0;
    *step = "engine configs";
    PD_SDPA_DO(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                        cfgs));
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    *step = "execution plan (no engine config finalized)";
    for (int64_t i = 0; i < got && i < count; i++) {
        cudnnBackendDescriptor_t plan = NULL;
        int64_t ws = 0;
        cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                          CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
        if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(plan);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                          &(int64_t){0}, &ws);
        if (st == CUDNN_STATUS_SUCCESS && (ws < 0 || ws > PD_SDPA_MAX_WORKSPACE)) st = CUDNN_STATUS_NOT_SUPPORTED;
        if (st == CUDNN_STATUS_SUCCESS) {
            p->plan = plan;
            p->workspace = ws;
            return CUDNN_STATUS_SUCCESS;
        }
        if (plan) cudnnBackendDestroyDescriptor(plan);
        last = st;
    }
    return last;
}

static bool pd_sdpa_key_eq(const pd_sdpa_key *a, const pd_sdpa_key *b) {
    return a->B == b->B && a->H == b->H && a->Nq == b->Nq && a->Nk == b->Nk && a->D == b->D && a->Dv == b->Dv;
}

/* Marks p's shape refused (its plan and descriptors released; the key kept, so the shape is refused
 * again without asking) and warns once: the same for a refusal at build and at execution. Returns
 * PD_ERR_UNSUPPORTED, on which pd_cuda_attention uses the own kernel. */
static pd_status pd_sdpa_refuse(pd_cuda *c, pd_sdpa_plan *p, const char *step, cudnnStatus_t st) {
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    if (p->plan) (void)cudaStreamSynchronize(c->stream); /* earlier runs of the plan may be queued */
    const pd_sdpa_key k = p->key;
    pd_sdpa_plan_release(p);
    p->key = k;
    p->refused = true;
    PD_WARN("cuda", "cuDNN SDPA refused B=%lld H=%lld Nq=%lld Nk=%lld D=%lld Dv=%lld at %s: %s %s; own kernel used",
            (long long)k.B, (long long)k.H, (long long)k.Nq, (long long)k.Nk, (long long)k.D, (long long)k.Dv, step,
            cudnnGetErrorString(st), detail);
    return pd_error_set(PD_ERR_UNSUPPORTED, "ATTENTION (cuda:%d): cuDNN SDPA refused the shape at %s: %s %s", c->device,
                        step, cudnnGetErrorString(st), detail);
}

/* A refusal injected by tests at `at` (pd_cuda_sdpa_inject_refusal), else st. */
static cudnnStatus_t pd_sdpa_injected(const pd_cuda *c, int at, cudnnStatus_t st) {
    return st == CUDNN_STATUS_SUCCESS && c->sdpa_refuse_at == at ? CUDNN_STATUS_NOT_SUPPORTED : st;
}

void pd_cuda_sdpa_inject_refusal(pd_backend *be, int at) { pd_cuda_of(be)->sdpa_refuse_at = at; }

/* The cached plan of key, built on first use. PD_ERR_UNSUPPORTED when cuDNN refuses the shape (now or
 * before), PD_ERR_NOMEM when memory runs out. */
static pd_status pd_sdpa_plan_get(pd_cuda *c, const pd_sdpa_key *key, pd_sdpa_plan **out) {
    pd_sdpa_cache *cache = c->sdpa;
    if (!cache) {
        cache = calloc(1, sizeof *cache);
        if (!cache)
            return pd_error_set(PD_ERR_NOMEM, "ATTENTION (cuda:%d): no memory for the cuDNN plan cache", c->device);
        c->sdpa = cache;
    }
    for (int i = 0; i < cache->n; i++) {
        pd_sdpa_plan *p = &cache->plans[i];
        if (!pd_sdpa_key_eq(&p->key, key)) continue;
        if (p->refused)
            return pd_error_set(PD_ERR_UNSUPPORTED,
                                "ATTENTION (cuda:%d): cuDNN SDPA refused B=%lld H=%lld Nq=%lld Nk=%lld D=%lld earlier",
                                c->device, (long long)key->B, (long long)key->H, (long long)key->Nq,
                                (long long)key->Nk, (long long)key->D);
        *out = p;
        return PD_OK;
    }
    if (cache->n == PD_SDPA_MAX_PLANS) { /* drop the oldest shape, once the stream no longer runs it */
        PD_CUDA_CHECK(c->device, cudaStreamSynchronize(c->stream));
        pd_sdpa_plan_release(&cache->plans[0]);
        memmove(&cache->plans[0], &cache->plans[1], (size_t)(PD_SDPA_MAX_PLANS - 1) * sizeof cache->plans[0]);
        memset(&cache->plans[PD_SDPA_MAX_PLANS - 1], 0, sizeof cache->plans[0]);
        cache->n--;
    }
    pd_sdpa_plan *p = &cache->plans[cache->n];
    memset(p, 0, sizeof *p);
    p->key = *key;
    const char *step = "";
    cudnnBackendDescriptor_t graph = NULL;
    cudnnStatus_t st = pd_sdpa_graph(p, c->dnn, &graph, &step);
    if (st == CUDNN_STATUS_SUCCESS) st = pd_sdpa_pick(p, c->dnn, graph, &step);
    st = pd_sdpa_injected(c, PD_SDPA_STEP_BUILD, st);
    switch (pd_cuda_policy_sdpa_action(st, false)) {
    case PD_SDPA_RUN: break;
    case PD_SDPA_NOMEM: /* not remembered as a refusal */
        pd_sdpa_plan_release(p);
        return pd_cuda_fail_cudnn(st, "building the cuDNN SDPA plan", __FILE__, __LINE__, c->device);
    default: cache->n++; return pd_sdpa_refuse(c, p, step, st);
    }
    cache->n++;
    *out = p;
    return PD_OK;
}

pd_status pd_cuda_sdpa_cudnn(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                             float scale) {
    pd_cuda *c = pd_cuda_of(be);
    const pd_sdpa_key key = {.B = q->shape[0], .H = q->shape[2], .Nq = q->shape[1], .Nk = k->shape[1],
                             .D = q->shape[3], .Dv = v->shape[3]};
    if (key.B == 0 || key.Nq == 0 || key.H == 0 || key.Dv == 0) return PD_OK;
    PD_ASSERT(pd_tensor_is_contiguous(q) && pd_tensor_is_contiguous(k) && pd_tensor_is_contiguous(v) &&
              pd_tensor_is_contiguous(out));
    pd_sdpa_plan *p = NULL;
    PD_TRY(pd_sdpa_plan_get(c, &key, &p));

    const int64_t nq = pd_tensor_numel(q), nk = pd_tensor_numel(k), nv = pd_tensor_numel(v), no = pd_tensor_numel(out);
    const size_t bq = pd_cuda_align256((size_t)nq * 2), bk = pd_cuda_align256((size_t)nk * 2);
    const size_t bv = pd_cuda_align256((size_t)nv * 2);
    void *qkv, *o16, *ws = NULL;
    PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_ATTN_QKV, bq + bk + bv, &qkv)); // (B, N, H, D) bf16 each
    PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_ATTN_OUT, (size_t)no * 2, &o16)); // (B, Nq, H, Dv) bf16
    if (p->workspace > 0) PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_WORKSPACE, (size_t)p->workspace, &ws));
    char *q16 = qkv, *k16 = q16 + bq, *v16 = k16 + bk;
    PD_TRY(pd_cuda_convert(be, q16, PD_DTYPE_BF16, q->data, PD_DTYPE_F32, nq));
    PD_TRY(pd_cuda_convert(be, k16, PD_DTYPE_BF16, k->data, PD_DTYPE_F32, nk));
    PD_TRY(pd_cuda_convert(be, v16, PD_DTYPE_BF16, v->data, PD_DTYPE_F32, nv));

    int64_t uids[5] = {PD_SDPA_UID_Q, PD_SDPA_UID_K, PD_SDPA_UID_V, PD_SDPA_UID_O, PD_SDPA_UID_SCALE};
    void *ptrs[5] = {q16, k16, v16, o16, &scale}; /* the scale is read on the host at launch */
    cudnnBackendDescriptor_t pack = NULL;
    PD_CUDNN_CHECK(c->device, cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
    cudnnStatus_t st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 5, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 5, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(pack);
    st = pd_sdpa_injected(c, PD_SDPA_STEP_EXECUTE, st);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(c->dnn, p->plan, pack);
    cudnnBackendDestroyDescriptor(pack);
    switch (pd_cuda_policy_sdpa_action(st, true)) {
    case PD_SDPA_RUN: break;
    case PD_SDPA_FALL_BACK: return pd_sdpa_refuse(c, p, "execution (variant pack or execute)", st);
    default:
        return pd_cuda_fail_cudnn(st, "cudnnBackendExecute (SDPA variant pack or execution)", __FILE__, __LINE__,
                                  c->device);
    }
    return pd_cuda_convert(be, out->data, PD_DTYPE_F32, o16, PD_DTYPE_BF16, no);
}
