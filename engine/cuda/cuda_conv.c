/* CONV3D on CUDA through cuDNN's N-d convolution: x (Cin, T, H, W) is a 5-D (1, Cin, T, H, W) tensor,
 * the filter (Cout, Cin, kt, kh, kw), cross-correlation, f32 data and f32 compute (cuDNN's default math
 * lets Ampere and later use TF32 tensor cores, as PyTorch's cuDNN convolutions do by default).
 *
 * cuDNN pads symmetrically only. Per axis the common part min(front, back) goes to cuDNN; what is
 * left (the VAE's causal time padding (2, 0) outside streaming) is materialised by copying x into a
 * zero-padded scratch tensor. The streaming VAE passes symmetric padding and never copies.
 *
 * Weights and biases stored as bf16 / f16 are widened to f32: an owning tensor's copy is made once and
 * kept under its bytes (address, dtype, count) until a free, upload or copy touching those bytes voids
 * it; a view's (a slice of a shared blob, an arena tensor) is widened into scratch at every call, as
 * its memory can change or be reused without the backend seeing it (cuda_policy.h). Plans
 * (descriptors plus the algorithm cuDNN's heuristics rank first among those within the workspace cap)
 * are cached per shape, so a repeated shape costs no host work beyond the calls that queue it. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_conv.h"
#include "engine/cuda_policy.h"

/* Algorithms needing more workspace than this are skipped: peak device memory matters more than the
 * last few percent of convolution speed (the VAE decode has a 4 GiB budget). */
#define PD_CONV_MAX_WORKSPACE ((size_t)256 << 20)

typedef struct pd_conv_key {
    int64_t cin, t, h, w;     /* the tensor cuDNN sees (after any padded copy) */
    int64_t cout, kt, kh, kw;
    int pad[3];               /* symmetric cuDNN padding: time, height, width */
    bool bias;
} pd_conv_key;

typedef struct pd_conv_plan {
    pd_conv_key key;
    cudnnTensorDescriptor_t x, y, b;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t algo;
    size_t workspace;
} pd_conv_plan;

/* An owning weight or bias widened to f32, the copy owned by the cache. */
typedef struct pd_conv_wide {
    pd_cuda_conv_kept key;
    float *f32;
} pd_conv_wide;

typedef struct pd_conv_cache {
    pd_conv_plan *plans;
    int n_plans, cap_plans;
    pd_conv_wide *wides;
    int n_wides, cap_wides;
} pd_conv_cache;

static void pd_conv_plan_release(pd_conv_plan *p) {
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->b) cudnnDestroyTensorDescriptor(p->b);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    memset(p, 0, sizeof *p);
}

void pd_cuda_conv_free(pd_cuda *c) {
    pd_conv_cache *cache = c->conv;
    if (!cache) return;
    for (int i = 0; i < cache->n_plans; i++) pd_conv_plan_release(&cache->plans[i]);
    for (int i = 0; i < cache->n_wides; i++) cudaFree(cache->wides[i].f32);
    free(cache->plans);
    free(cache->wides);
    free(cache);
    c->conv = NULL;
}

void pd_cuda_conv_forget(pd_cuda *c, const void *data, size_t bytes) {
    pd_conv_cache *cache = c->conv;
    if (!cache || !data) return;
    for (int i = 0; i < cache->n_wides; i++)
        if (pd_cuda_policy_conv_kept_void(&cache->wides[i].key, data, bytes)) {
            /* queued convolutions may still read the copy */
            if (cudaStreamSynchronize(c->stream) != cudaSuccess || cudaFree(cache->wides[i].f32) != cudaSuccess)
                PD_WARN("cuda", "cuda:%d: releasing a widened convolution weight failed: %s", c->device,
                        cudaGetErrorString(cudaGetLastError()));
            cache->wides[i--] = cache->wides[--cache->n_wides];
        }
}

static pd_status pd_conv_cache_get(pd_cuda *c, pd_conv_cache **out) {
    if (!c->conv) {
        c->conv = calloc(1, sizeof(pd_conv_cache));
        if (!c->conv) return pd_error_set(PD_ERR_NOMEM, "CONV3D (cuda:%d): no memory for the plan cache", c->device);
    }
    *out = c->conv;
    return PD_OK;
}

/* Scratch floats t needs for a per-call widening (0 when it needs none), rounded for alignment. */
static size_t pd_conv_scratch_floats(const pd_tensor *t) {
    if (!t || pd_cuda_policy_conv_weight(t) != PD_CONV_WEIGHT_PER_CALL) return 0;
    return pd_cuda_align256((size_t)pd_tensor_numel(t) * sizeof(float)) / sizeof(float);
}

/* t's data as f32 (cuda_policy.h): the tensor itself when f32; an owning tensor's kept copy (made on
 * first use); a view widened now into scratch (pd_conv_scratch_floats(t) floats). */
static pd_status pd_conv_f32(pd_backend *be, pd_conv_cache *cache, const pd_tensor *t, float *scratch, const float **out) {
    pd_cuda *c = pd_cuda_of(be);
    const int64_t n = pd_tensor_numel(t);
    switch (pd_cuda_policy_conv_weight(t)) {
    case PD_CONV_WEIGHT_AS_IS: *out = t->data; return PD_OK;
    case PD_CONV_WEIGHT_PER_CALL:
        PD_TRY(pd_cuda_convert(be, scratch, PD_DTYPE_F32, t->data, t->dtype, n));
        *out = scratch;
        return PD_OK;
    case PD_CONV_WEIGHT_KEEP: break;
    }
    for (int i = 0; i < cache->n_wides; i++)
        if (pd_cuda_policy_conv_kept_matches(&cache->wides[i].key, t)) {
            *out = cache->wides[i].f32;
            return PD_OK;
        }
    if (cache->n_wides == cache->cap_wides) {
        int cap = cache->cap_wides ? 2 * cache->cap_wides : 64;
        pd_conv_wide *w = realloc(cache->wides, (size_t)cap * sizeof *w);
        if (!w) return pd_error_set(PD_ERR_NOMEM, "CONV3D (cuda:%d): no memory for the weight cache", c->device);
        cache->wides = w, cache->cap_wides = cap;
    }
    float *f32 = NULL;
    PD_CUDA_CHECK(c->device, cudaMalloc((void **)&f32, (size_t)(n > 0 ? n : 1) * sizeof(float)));
    pd_status st = pd_cuda_convert(be, f32, PD_DTYPE_F32, t->data, t->dtype, n);
    if (st != PD_OK) {
        cudaFree(f32);
        return st;
    }
    cache->wides[cache->n_wides++] = (pd_conv_wide){.key = {.src = t->data, .dtype = t->dtype, .n = n}, .f32 = f32};
    *out = f32;
    return PD_OK;
}

/* f32 data of w (may be NULL: no weight) and b (NULL: no bias) into *wf and *bf, one scratch request for
 * whatever is widened per call. */
static pd_status pd_conv_params_f32(pd_backend *be, pd_conv_cache *cache, const pd_tensor *w, const pd_tensor *b,
                                    const float **wf, const float **bf) {
    const size_t nw = pd_conv_scratch_floats(w), nb = pd_conv_scratch_floats(b);
    float *tmp = NULL;
    if (nw + nb) PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_CONV_W, (nw + nb) * sizeof(float), (void **)&tmp)); // w | b f32
    if (w) PD_TRY(pd_conv_f32(be, cache, w, tmp, wf));
    *bf = NULL;
    if (b) PD_TRY(pd_conv_f32(be, cache, b, tmp ? tmp + nw : NULL, bf));
    return PD_OK;
}

static bool pd_conv_key_eq(const pd_conv_key *a, const pd_conv_key *b) {
    return a->cin == b->cin && a->t == b->t && a->h == b->h && a->w == b->w && a->cout == b->cout && a->kt == b->kt &&
           a->kh == b->kh && a->kw == b->kw && a->pad[0] == b->pad[0] && a->pad[1] == b->pad[1] &&
           a->pad[2] == b->pad[2] && a->bias == b->bias;
}

/* Row-major strides of a 5-D shape. */
static void pd_conv_strides(const int dim[5], int stride[5]) {
    stride[4] = 1;
    for (int i = 3; i >= 0; i--) stride[i] = stride[i + 1] * dim[i + 1];
}

/* Descriptors and algorithm of key into p (which owns whatever was created, even on failure). */
static pd_status pd_conv_plan_build(pd_cuda *c, const pd_conv_key *k, const int64_t y_dims[4], pd_conv_plan *p) {
    const int dev = c->device;
    p->key = *k;
    const int xd[5] = {1, (int)k->cin, (int)k->t, (int)k->h, (int)k->w};
    const int wd[5] = {(int)k->cout, (int)k->cin, (int)k->kt, (int)k->kh, (int)k->kw};
    const int yd[5] = {1, (int)k->cout, (int)y_dims[1], (int)y_dims[2], (int)y_dims[3]};
    const int bd[5] = {1, (int)k->cout, 1, 1, 1};
    int xs[5], ys[5], bs[5];
    pd_conv_strides(xd, xs);
    pd_conv_strides(yd, ys);
    pd_conv_strides(bd, bs);
    const int ones[3] = {1, 1, 1};
    PD_CUDNN_CHECK(dev, cudnnCreateTensorDescriptor(&p->x));
    PD_CUDNN_CHECK(dev, cudnnCreateTensorDescriptor(&p->y));
    PD_CUDNN_CHECK(dev, cudnnCreateFilterDescriptor(&p->w));
    PD_CUDNN_CHECK(dev, cudnnCreateConvolutionDescriptor(&p->conv));
    PD_CUDNN_CHECK(dev, cudnnSetTensorNdDescriptor(p->x, CUDNN_DATA_FLOAT, 5, xd, xs));
    PD_CUDNN_CHECK(dev, cudnnSetTensorNdDescriptor(p->y, CUDNN_DATA_FLOAT, 5, yd, ys));
    PD_CUDNN_CHECK(dev, cudnnSetFilterNdDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5, wd));
    PD_CUDNN_CHECK(dev, cudnnSetConvolutionNdDescriptor(p->conv, 3, k->pad, ones, ones, CUDNN_CROSS_CORRELATION,
                                                        CUDNN_DATA_FLOAT));
    PD_CUDNN_CHECK(dev, cudnnSetConvolutionMathType(p->conv, CUDNN_DEFAULT_MATH));
    if (k->bias) {
        PD_CUDNN_CHECK(dev, cudnnCreateTensorDescriptor(&p->b));
        PD_CUDNN_CHECK(dev, cudnnSetTensorNdDescriptor(p->b, CUDNN_DATA_FLOAT, 5, bd, bs));
    }
    int od[5] = {0};
    PD_CUDNN_CHECK(dev, cudnnGetConvolutionNdForwardOutputDim(p->conv, p->x, p->w, 5, od));
    PD_ASSERT(memcmp(od, yd, sizeof od) == 0); /* backend.c checked y against the same arithmetic */

    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    PD_CUDNN_CHECK(dev, cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, p->x, p->w, p->conv, p->y,
                                                               CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
    for (int i = 0; i < got; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > PD_CONV_MAX_WORKSPACE) continue;
        PD_CUDNN_CHECK(dev, cudnnSetConvolutionMathType(p->conv, perf[i].mathType));
        size_t ws = 0;
        if (cudnnGetConvolutionForwardWorkspaceSize(c->dnn, p->x, p->w, p->conv, p->y, perf[i].algo, &ws) !=
                CUDNN_STATUS_SUCCESS ||
            ws > PD_CONV_MAX_WORKSPACE)
            continue;
        p->algo = perf[i].algo;
        p->workspace = ws;
        return PD_OK;
    }
    return pd_error_set(PD_ERR_UNSUPPORTED,
                        "CONV3D (cuda:%d): cuDNN offers no algorithm within %zu MiB of workspace for x (%lld, %lld, "
                        "%lld, %lld), w (%lld, %lld, %lld, %lld, %lld)",
                        dev, PD_CONV_MAX_WORKSPACE >> 20, (long long)k->cin, (long long)k->t, (long long)k->h,
                        (long long)k->w, (long long)k->cout, (long long)k->cin, (long long)k->kt, (long long)k->kh,
                        (long long)k->kw);
}

static pd_status pd_conv_plan_get(pd_cuda *c, pd_conv_cache *cache, const pd_conv_key *k, const int64_t y_dims[4],
                                  const pd_conv_plan **out) {
    for (int i = 0; i < cache->n_plans; i++)
        if (pd_conv_key_eq(&cache->plans[i].key, k)) {
            *out = &cache->plans[i];
            return PD_OK;
        }
    if (cache->n_plans == cache->cap_plans) {
        int cap = cache->cap_plans ? 2 * cache->cap_plans : 32;
        pd_conv_plan *pl = realloc(cache->plans, (size_t)cap * sizeof *pl);
        if (!pl) return pd_error_set(PD_ERR_NOMEM, "CONV3D (cuda:%d): no memory for the plan cache", c->device);
        cache->plans = pl, cache->cap_plans = cap;
    }
    pd_conv_plan *p = &cache->plans[cache->n_plans];
    memset(p, 0, sizeof *p);
    pd_status st = pd_conv_plan_build(c, k, y_dims, p);
    if (st != PD_OK) {
        pd_conv_plan_release(p);
        return st;
    }
    cache->n_plans++;
    *out = p;
    return PD_OK;
}

static bool pd_conv_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* No input channels: y = bias (or 0), as the CPU reference defines it. */
static pd_status pd_conv_bias_only(pd_backend *be, pd_conv_cache *cache, pd_tensor *y, const pd_tensor *b) {
    pd_cuda *c = pd_cuda_of(be);
    PD_CUDA_CHECK(c->device, cudaMemsetAsync(y->data, 0, pd_tensor_nbytes(y), c->stream));
    if (!b) return PD_OK;
    const float *bias;
    PD_TRY(pd_conv_params_f32(be, cache, NULL, b, NULL, &bias));
    const int yd[5] = {1, (int)y->shape[0], (int)y->shape[1], (int)y->shape[2], (int)y->shape[3]};
    const int bd[5] = {1, (int)y->shape[0], 1, 1, 1};
    int ys[5], bs[5];
    pd_conv_strides(yd, ys);
    pd_conv_strides(bd, bs);
    cudnnTensorDescriptor_t ty = NULL, tb = NULL;
    const float one = 1.0f;
    cudnnStatus_t st = cudnnCreateTensorDescriptor(&ty);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnCreateTensorDescriptor(&tb);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetTensorNdDescriptor(ty, CUDNN_DATA_FLOAT, 5, yd, ys);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetTensorNdDescriptor(tb, CUDNN_DATA_FLOAT, 5, bd, bs);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnAddTensor(c->dnn, &one, tb, bias, &one, ty, y->data);
    if (ty) cudnnDestroyTensorDescriptor(ty);
    if (tb) cudnnDestroyTensorDescriptor(tb);
    if (st != CUDNN_STATUS_SUCCESS)
        return pd_cuda_fail_cudnn(st, "cudnnAddTensor (CONV3D bias without input channels)", __FILE__, __LINE__,
                                  c->device);
    return PD_OK;
}

pd_status pd_cuda_conv3d(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                         const int pad[6]) {
    pd_cuda *c = pd_cuda_of(be);
    PD_TRY(pd_cuda_enter(be));
    const int64_t cin = x->shape[0], T = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t cout = w->shape[0], kt = w->shape[2], kh = w->shape[3], kw = w->shape[4];
    if (cout == 0 || pd_tensor_numel(y) == 0) return PD_OK;
    pd_conv_cache *cache = NULL;
    PD_TRY(pd_conv_cache_get(c, &cache));
    if (!pd_conv_fits_int(pd_tensor_numel(y)))
        return pd_error_set(PD_ERR_UNSUPPORTED,
                            "CONV3D (cuda:%d): y has more than 2^31 elements (cuDNN indexes with int)", c->device);
    if (cin == 0) return pd_conv_bias_only(be, cache, y, b);

    /* symmetric part to cuDNN, the rest as a padded copy */
    int64_t front[3], back[3];
    pd_conv_key key = {.cin = cin, .cout = cout, .kt = kt, .kh = kh, .kw = kw, .bias = b != NULL};
    bool copy = false;
    for (int i = 0; i < 3; i++) {
        int s = pad[2 * i] < pad[2 * i + 1] ? pad[2 * i] : pad[2 * i + 1];
        key.pad[i] = s;
        front[i] = pad[2 * i] - s, back[i] = pad[2 * i + 1] - s;
        copy = copy || front[i] || back[i];
    }
    key.t = T + front[0] + back[0], key.h = H + front[1] + back[1], key.w = W + front[2] + back[2];
    const int64_t x_numel = cin * key.t * key.h * key.w;
    if (!pd_conv_fits_int(x_numel) || !pd_conv_fits_int(pd_tensor_numel(w)))
        return pd_error_set(PD_ERR_UNSUPPORTED,
                            "CONV3D (cuda:%d): x (%lld, %lld, %lld, %lld) padded or w has more than 2^31 elements "
                            "(cuDNN indexes with int)",
                            c->device, (long long)cin, (long long)T, (long long)H, (long long)W);

    const float *wf, *bf;
    PD_TRY(pd_conv_params_f32(be, cache, w, b, &wf, &bf));
    const pd_conv_plan *p = NULL;
    PD_TRY(pd_conv_plan_get(c, cache, &key, y->shape, &p));

    const float *xin = x->data;
    if (copy) {
        void *buf;
        PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_CONV, (size_t)x_numel * sizeof(float), &buf)); // (Cin, Tp, Hp, Wp)
        PD_TRY(pd_cuda_conv_pad(be, buf, x->data, x->shape, front, back));
        xin = buf;
    }
    void *ws = NULL;
    if (p->workspace) PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_WORKSPACE, p->workspace, &ws));
    const float one = 1.0f, zero = 0.0f;
    PD_CUDNN_CHECK(c->device, cudnnConvolutionForward(c->dnn, &one, p->x, xin, p->w, wf, p->conv, p->algo, ws,
                                                      p->workspace, &zero, p->y, y->data));
    if (b) PD_CUDNN_CHECK(c->device, cudnnAddTensor(c->dnn, &one, p->b, bf, &one, p->y, y->data));
    return PD_OK;
}
