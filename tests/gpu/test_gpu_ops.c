/* Every op of engine/backend.h on the CUDA backend against the CPU backend (the reference), at odd
 * shapes and each weight dtype (f32, bf16, f16), with per-op tolerances |cuda - cpu| <= atol +
 * rtol * m, where m is |cpu| for elementwise ops and the sum of |terms| (the same op run on the CPU
 * over absolute values) for GEMMs and convolutions, so cancellation does not make a bound meaningless.
 * Every device output sits inside a larger device buffer whose guard bytes carry a canary pattern
 * (and whose interior starts as NaN, so an element never written fails); the canary is checked after
 * the op. Also: in-place cases where the contract allows them, shape and device errors
 * (PD_ERR_INVALID), attention under PD_CUDA_ATTENTION=flash and =cudnn, and a check that the backend
 * claims support for every op and weight dtype. Cases are named like
 * "ATTENTION(B=2,Nq=77,Nk=130,H=3,D=64,bias,mode=auto)".
 *
 * PD_GPU_OPS_SMALL=1 leaves out the large cases (for compute-sanitizer, which slows kernels down a lot).
 * PD_GPU_TESTS_ON_CPU=1 lets a second CPU backend stand in for CUDA: a check of this harness (guards,
 * comparisons, case set-up) on machines without a GPU, not of the CUDA backend.
 *
 * Exits 77 (skipped) when the build has no CUDA or no device is visible. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "models/random_init.h"
#include "tests/gpu/gpu_test.h"
#include "tests/unit/test.h"

static pd_backend *g_cpu, *g_gpu;
static uint64_t g_seed = 1;
static bool g_covered[PD_OP_COUNT];
static bool g_small; /* PD_GPU_OPS_SMALL: only cases of modest size */


/* ---- device tensors made by a case, freed at its end ---- */

static pd_tensor g_dev[64];
static int g_ndev;

static pd_tensor *dev_track(pd_tensor t) {
    PD_ASSERT(g_ndev < (int)(sizeof g_dev / sizeof g_dev[0]));
    g_dev[g_ndev] = t;
    return &g_dev[g_ndev++];
}

static void dev_free_all(void) {
    for (int i = 0; i < g_ndev; i++) pd_backend_tensor_free(g_gpu, &g_dev[i]);
    g_ndev = 0;
}

/* A host tensor of normal(0, std) values rounded to dt (fresh values per call). */
static pd_tensor h_rand(pd_dtype dt, int nd, const int64_t *shape, float std) {
    pd_tensor t;
    PD_ASSERT(pd_random_tensor(&t, dt, nd, shape, g_seed++, "gpu_ops", 0.0f, std) == PD_OK);
    return t;
}

static pd_tensor h_new(pd_dtype dt, int nd, const int64_t *shape) {
    pd_tensor t;
    PD_ASSERT(pd_tensor_alloc(&t, dt, nd, shape) == PD_OK);
    return t;
}

/* |t| elementwise (float dtypes: the sign bit cleared), a new host tensor. */
static pd_tensor h_abs(const pd_tensor *t) {
    pd_tensor a = h_new(t->dtype, t->ndim, t->shape);
    memcpy(a.data, t->data, pd_tensor_nbytes(t));
    int64_t n = pd_tensor_numel(t);
    if (pd_dtype_size(t->dtype) == 4)
        for (int64_t i = 0; i < n; i++) ((uint32_t *)a.data)[i] &= 0x7fffffffu;
    else
        for (int64_t i = 0; i < n; i++) ((uint16_t *)a.data)[i] &= 0x7fffu;
    return a;
}

/* A device copy of a host tensor (an activation input). */
static pd_tensor *d_up(const pd_tensor *h) {
    pd_tensor d = {0};
    PD_CHECK_OK(pd_backend_tensor_alloc(g_gpu, &d, h->dtype, h->ndim, h->shape));
    if (pd_tensor_numel(h) > 0) PD_CHECK_OK(pd_backend_upload(g_gpu, &d, h));
    return dev_track(d);
}

/* A weight imported the way model loaders do it. */
static pd_tensor *d_weight(const pd_tensor *h) {
    pd_tensor d = {0};
    PD_CHECK_OK(pd_backend_import_weight(g_gpu, &d, h));
    return dev_track(d);
}

/* ---- guarded device outputs ---- */

typedef struct gout {
    pd_tensor t;       /* the output: a view PD_GPU_GUARD bytes into buf */
    pd_tensor *buf;    /* (n) f32 device buffer holding guards + output */
    size_t bytes;      /* of t */
    int64_t buf_elems;
} gout;

/* The whole buffer as it should look (tests/gpu/gpu_test.h): canary guards, `interior` (NULL: NaN
 * bytes) inside; a new host buffer of buf_elems f32 elements (free it). */
static unsigned char *gout_expected(const gout *o, const pd_tensor *interior) {
    return pd_gout_expected((size_t)o->buf_elems * 4, o->bytes, interior ? interior->data : NULL, 0xff);
}

/* Uploads the buffer as gout_expected says it should look. */
static void gout_fill(gout *o, const pd_tensor *interior) {
    unsigned char *h = gout_expected(o, interior);
    pd_tensor hv = pd_tensor_view(h, PD_DTYPE_F32, 1, &o->buf_elems);
    PD_CHECK_OK(pd_backend_upload(g_gpu, o->buf, &hv));
    free(h);
}

/* An output of dtype dt and shape inside a guarded buffer; with `init` its contents are uploaded
 * (an in-place or accumulating op), else they start as NaN. */
static gout g_out(pd_dtype dt, int nd, const int64_t *shape, const pd_tensor *init) {
    gout o = {0};
    pd_tensor v = pd_tensor_view(NULL, dt, nd, shape);
    o.bytes = pd_tensor_nbytes(&v);
    o.buf_elems = (int64_t)((o.bytes + 2 * PD_GPU_GUARD + 3) / 4);
    pd_tensor b = {0};
    PD_CHECK_OK(pd_backend_tensor_alloc(g_gpu, &b, PD_DTYPE_F32, 1, &o.buf_elems));
    o.buf = dev_track(b);
    gout_fill(&o, init);
    o.t = pd_tensor_view((char *)b.data + PD_GPU_GUARD, dt, nd, shape);
    o.t.device = b.device;
    o.t.device_index = b.device_index;
    return o;
}

/* Downloads the buffer, checks both guards and returns the output widened to a host f32 tensor. */
static pd_tensor gout_read(const gout *o) {
    unsigned char *h = pd_gout_download(g_gpu, o->buf, o->buf_elems);
    size_t bad = pd_gout_bad_guards(h, o->bytes);
    PD_CHECK_MSG(bad == 0, "%zu guard bytes around the output were written", bad);
    pd_tensor out = h_new(PD_DTYPE_F32, o->t.ndim, o->t.shape);
    pd_convert_to_f32(out.data, h + PD_GPU_GUARD, o->t.dtype, pd_tensor_numel(&out));
    free(h);
    return out;
}

/* True when the whole buffer (guards and output) still holds what gout_fill put there. */
static bool gout_untouched(const gout *o, const pd_tensor *interior) {
    unsigned char *h = pd_gout_download(g_gpu, o->buf, o->buf_elems), *want = gout_expected(o, interior);
    bool same = !memcmp(h, want, (size_t)o->buf_elems * 4);
    free(h);
    free(want);
    return same;
}

/* ---- comparison ---- */

/* got and ref: host tensors of one shape (ref of any float dtype); mag NULL means |ref|. */
static void compare(const pd_tensor *got, const pd_tensor *ref, const pd_tensor *mag, double atol, double rtol) {
    int64_t n = pd_tensor_numel(ref);
    PD_CHECK_MSG(pd_tensor_numel(got) == n, "element counts differ");
    if (pd_tensor_numel(got) != n) return;
    float *r = malloc(sizeof(float) * (size_t)(n ? n : 1)), *m = mag ? malloc(sizeof(float) * (size_t)(n ? n : 1)) : NULL;
    PD_ASSERT(r && (!mag || m));
    pd_convert_to_f32(r, ref->data, ref->dtype, n);
    if (mag) pd_convert_to_f32(m, mag->data, mag->dtype, n);
    const float *g = got->data;
    int64_t worst = -1, bad = 0;
    double worst_excess = 0, max_err = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)g[i] - (double)r[i]), tol = atol + rtol * (m ? (double)m[i] : fabs((double)r[i]));
        if (isnan(g[i]) != isnan(r[i]) || isinf(g[i]) != isinf(r[i])) err = INFINITY;
        else if (isnan(r[i]) || isinf(r[i])) err = (g[i] == r[i] || isnan(r[i])) ? 0 : INFINITY;
        if (err > max_err) max_err = err;
        if (!(err <= tol)) {
            bad++;
            if (worst < 0 || err - tol > worst_excess) worst = i, worst_excess = err - tol;
        }
    }
    PD_CHECK_MSG(bad == 0, "%lld of %lld elements off; worst [%lld]: cuda %.9g cpu %.9g (tol %.3g); max |err| %.3g",
                 (long long)bad, (long long)n, (long long)worst, worst >= 0 ? g[worst] : 0.0, worst >= 0 ? r[worst] : 0.0,
                 worst >= 0 ? atol + rtol * (m ? (double)m[worst] : fabs((double)r[worst])) : 0.0, max_err);
    free(r);
    free(m);
}

/* Reads a guarded output, compares it with the CPU result and frees both host tensors. */
static void finish(const gout *o, pd_tensor *ref, pd_tensor *mag, double atol, double rtol) {
    pd_tensor got = gout_read(o);
    compare(&got, ref, mag, atol, rtol);
    pd_tensor_free(&got);
    pd_tensor_free(ref);
    if (mag) pd_tensor_free(mag);
}

/* A named case (tests/unit/test.h), then the device tensors it made are freed. */
#define RUN(call, ...)                                                                             \
    do {                                                                                           \
        PD_RUN_NAMED(call, __VA_ARGS__);                                                           \
        dev_free_all();                                                                            \
    } while (0)

/* ---- LINEAR ---- */

static void case_linear(pd_dtype wdt, int64_t M, int64_t K, int64_t N, bool bias, bool lead3) {
    g_covered[PD_OP_LINEAR] = true;
    int64_t xs3[3] = {2, M / 2, K}, xs2[2] = {M, K}, ws[2] = {N, K}, ys3[3] = {2, M / 2, N}, ys2[2] = {M, N}, bs[1] = {N};
    const int nd = lead3 ? 3 : 2;
    const int64_t *xs = lead3 ? xs3 : xs2, *ys = lead3 ? ys3 : ys2;
    pd_tensor x = h_rand(PD_DTYPE_F32, nd, xs, 1.0f), w = h_rand(wdt, 2, ws, 0.5f);
    pd_tensor b = bias ? h_rand(wdt, 1, bs, 1.0f) : (pd_tensor){0};
    pd_tensor ref = h_new(PD_DTYPE_F32, nd, ys), mag = h_new(PD_DTYPE_F32, nd, ys);
    PD_CHECK_OK(pd_op_linear(g_cpu, &ref, &x, &w, bias ? &b : NULL));
    pd_tensor ax = h_abs(&x), aw = h_abs(&w), ab = bias ? h_abs(&b) : (pd_tensor){0};
    PD_CHECK_OK(pd_op_linear(g_cpu, &mag, &ax, &aw, bias ? &ab : NULL));
    gout y = g_out(PD_DTYPE_F32, nd, ys, NULL);
    PD_CHECK_OK(pd_op_linear(g_gpu, &y.t, d_up(&x), d_weight(&w), bias ? d_weight(&b) : NULL));
    /* f32 weights: an f32 GEMM; bf16 / f16: the activation rounded to bf16 (2^-9 per factor). */
    finish(&y, &ref, &mag, 1e-6, wdt == PD_DTYPE_F32 ? 2e-5 : 1e-2);
    pd_tensor_free(&x), pd_tensor_free(&w), pd_tensor_free(&b), pd_tensor_free(&ax), pd_tensor_free(&aw), pd_tensor_free(&ab);
}

static void test_linear(void) {
    static const int64_t sizes[][3] = {{7, 13, 29}, {1, 13, 29}, {77, 130, 67}, {130, 64, 5}, {3, 0, 5}, {333, 1536, 1536}};
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            const pd_dtype wdt = pd_test_wdts[d];
            int64_t M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
            if (g_small && M * K * N > 4000000) continue;
            RUN(case_linear(wdt, M, K, N, true, false), "LINEAR(w=%s,M=%lld,K=%lld,N=%lld,bias)", pd_test_dtype_name(wdt),
                (long long)M, (long long)K, (long long)N);
        }
    RUN(case_linear(PD_DTYPE_BF16, 14, 13, 29, false, true), "LINEAR(w=bf16,x=(2,7,13),N=29,no bias)");
    RUN(case_linear(PD_DTYPE_F32, 200, 96, 130, false, true), "LINEAR(w=f32,x=(2,100,96),N=130,no bias)");
}

/* ---- LAYER_NORM / RMS_NORM ---- */

static void case_norm(bool rms, pd_dtype wdt, int64_t R, int64_t C, bool w_on, bool b_on, bool inplace) {
    g_covered[rms ? PD_OP_RMS_NORM : PD_OP_LAYER_NORM] = true;
    int64_t xs[2] = {R, C}, cs[1] = {C};
    pd_tensor x = h_rand(PD_DTYPE_F32, 2, xs, 3.0f);
    for (int64_t i = 0; i < R * C; i++) ((float *)x.data)[i] += 0.5f; /* a non-zero mean */
    pd_tensor w = w_on ? h_rand(wdt, 1, cs, 1.0f) : (pd_tensor){0}, b = b_on ? h_rand(wdt, 1, cs, 1.0f) : (pd_tensor){0};
    pd_tensor ref = h_new(PD_DTYPE_F32, 2, xs);
    const float eps = 1e-6f;
    if (rms) PD_CHECK_OK(pd_op_rms_norm(g_cpu, &ref, &x, w_on ? &w : NULL, eps));
    else PD_CHECK_OK(pd_op_layer_norm(g_cpu, &ref, &x, w_on ? &w : NULL, b_on ? &b : NULL, eps));
    gout y = g_out(PD_DTYPE_F32, 2, xs, inplace ? &x : NULL);
    const pd_tensor *dx = inplace ? &y.t : d_up(&x), *dw = w_on ? d_weight(&w) : NULL, *db = b_on ? d_weight(&b) : NULL;
    if (rms) PD_CHECK_OK(pd_op_rms_norm(g_gpu, &y.t, dx, dw, eps));
    else PD_CHECK_OK(pd_op_layer_norm(g_gpu, &y.t, dx, dw, db, eps));
    finish(&y, &ref, NULL, 2e-5, 1e-5);
    pd_tensor_free(&x), pd_tensor_free(&w), pd_tensor_free(&b);
}

static void test_norms(void) {
    for (int rms = 0; rms < 2; rms++) {
        const char *op = rms ? "RMS_NORM" : "LAYER_NORM";
        for (int d = 0; d < 3; d++)
            RUN(case_norm(rms, pd_test_wdts[d], 7, 1536, true, !rms, false), "%s(w=%s,x=(7,1536),affine)", op,
                pd_test_dtype_name(pd_test_wdts[d]));
        RUN(case_norm(rms, PD_DTYPE_F32, 33, 77, false, false, false), "%s(x=(33,77),no affine)", op);
        RUN(case_norm(rms, PD_DTYPE_F16, 5, 13, true, !rms, true), "%s(w=f16,x=(5,13),affine,in place)", op);
        RUN(case_norm(rms, PD_DTYPE_BF16, 1, 4099, true, false, true), "%s(w=bf16,x=(1,4099),w only,in place)", op);
    }
}

/* ---- ROPE3D_FREQS / ROPE ---- */

static void case_rope_freqs(int64_t gt, int64_t gh, int64_t gw, int64_t off, int64_t N, int64_t D) {
    g_covered[PD_OP_ROPE3D_FREQS] = true;
    int64_t fs[3] = {N, D / 2, 2};
    pd_tensor ref = h_new(PD_DTYPE_F32, 3, fs);
    PD_CHECK_OK(pd_op_rope3d_freqs(g_cpu, &ref, gt, gh, gw, off, 10000.0));
    gout f = g_out(PD_DTYPE_F32, 3, fs, NULL);
    PD_CHECK_OK(pd_op_rope3d_freqs(g_gpu, &f.t, gt, gh, gw, off, 10000.0));
    finish(&f, &ref, NULL, 2e-6, 0);
}

static void case_rope(int64_t B, int64_t N, int64_t H, int64_t D, bool inplace) {
    g_covered[PD_OP_ROPE] = true;
    int64_t xs[4] = {B, N, H, D}, fs[3] = {N, D / 2, 2};
    pd_tensor x = h_rand(PD_DTYPE_F32, 4, xs, 1.0f), freqs = h_new(PD_DTYPE_F32, 3, fs), ref = h_new(PD_DTYPE_F32, 4, xs);
    PD_CHECK_OK(pd_op_rope3d_freqs(g_cpu, &freqs, N, 1, 1, 0, 10000.0));
    PD_CHECK_OK(pd_op_rope(g_cpu, &ref, &x, &freqs));
    gout y = g_out(PD_DTYPE_F32, 4, xs, inplace ? &x : NULL);
    PD_CHECK_OK(pd_op_rope(g_gpu, &y.t, inplace ? &y.t : d_up(&x), d_up(&freqs)));
    finish(&y, &ref, NULL, 1e-6, 1e-5);
    pd_tensor_free(&x), pd_tensor_free(&freqs);
}

static void test_rope(void) {
    RUN(case_rope_freqs(3, 5, 7, 20, 60, 128), "ROPE3D_FREQS(grid=3x5x7,offset=20,N=60,D=128)");
    if (!g_small) RUN(case_rope_freqs(21, 30, 52, 0, 32760, 128), "ROPE3D_FREQS(grid=21x30x52,N=32760,D=128)");
    RUN(case_rope_freqs(2, 3, 4, 0, 24, 20), "ROPE3D_FREQS(grid=2x3x4,N=24,D=20)");
    RUN(case_rope(2, 37, 3, 20, false), "ROPE(B=2,N=37,H=3,D=20)");
    RUN(case_rope(1, 130, 12, 128, false), "ROPE(B=1,N=130,H=12,D=128)");
    RUN(case_rope(2, 11, 5, 64, true), "ROPE(B=2,N=11,H=5,D=64,in place)");
}

/* ---- ATTENTION ---- */

/* atol as a fraction of the largest reference value (outputs are weighted means of v: their size
 * depends on how spread the softmax is), and rtol. */
static double g_attn_atol_of_max, g_attn_rtol;

static void case_attention(int64_t B, int64_t Nq, int64_t Nk, int64_t H, int64_t D, int64_t Dv, bool bias) {
    g_covered[PD_OP_ATTENTION] = true;
    int64_t qs[4] = {B, Nq, H, D}, ks[4] = {B, Nk, H, D}, vs[4] = {B, Nk, H, Dv}, os[4] = {B, Nq, H, Dv}, bs[3] = {H, Nq, Nk};
    pd_tensor q = h_rand(PD_DTYPE_F32, 4, qs, 1.0f), k = h_rand(PD_DTYPE_F32, 4, ks, 1.0f), v = h_rand(PD_DTYPE_F32, 4, vs, 1.0f);
    pd_tensor bt = bias ? h_rand(PD_DTYPE_F32, 3, bs, 1.0f) : (pd_tensor){0};
    const float scale = 1.0f / sqrtf((float)D);
    pd_tensor ref = h_new(PD_DTYPE_F32, 4, os);
    PD_CHECK_OK(pd_op_attention(g_cpu, &ref, &q, &k, &v, bias ? &bt : NULL, scale));
    gout o = g_out(PD_DTYPE_F32, 4, os, NULL);
    PD_CHECK_OK(pd_op_attention(g_gpu, &o.t, d_up(&q), d_up(&k), d_up(&v), bias ? d_up(&bt) : NULL, scale));
    double mx = 0;
    for (int64_t i = 0; i < pd_tensor_numel(&ref); i++) mx = fmax(mx, fabs((double)((const float *)ref.data)[i]));
    finish(&o, &ref, NULL, g_attn_atol_of_max * mx, g_attn_rtol);
    pd_tensor_free(&q), pd_tensor_free(&k), pd_tensor_free(&v), pd_tensor_free(&bt);
}

/* mode: "auto" (the backend's choice), "flash" or "cudnn" through PD_CUDA_ATTENTION. A fresh backend
 * per mode, so the variable is seen whether it is read at creation or per call. */
static void attention_cases(const char *mode) {
    if (strcmp(mode, "auto")) setenv("PD_CUDA_ATTENTION", mode, 1);
    else unsetenv("PD_CUDA_ATTENTION");
    pd_backend *saved = g_gpu;
    pd_status st = pd_gpu_test_backend(&g_gpu);
    PD_CHECK_MSG(st == PD_OK, "PD_CUDA_ATTENTION=%s: %s", mode, pd_error_msg());
    if (st != PD_OK) {
        g_gpu = saved;
        unsetenv("PD_CUDA_ATTENTION");
        return;
    }
    /* bf16 q, k, v (cuDNN) put scores off by ~2^-8 and outputs by ~0.5% of their typical size, a few
     * times that at the worst element: 1.5% of the largest; the own kernel is f32. */
    const bool f32 = !strcmp(mode, "flash") || g_on_cpu;
    g_attn_atol_of_max = f32 ? 1e-4 : 1.5e-2;
    g_attn_rtol = f32 ? 1e-3 : 1e-2;
    static const struct { int64_t B, Nq, Nk, H, D, Dv; bool bias, cudnn_ok; } cs[] = {
        {2, 77, 130, 3, 64, 64, true, false},
        {2, 77, 130, 3, 64, 64, false, true},
        {1, 130, 77, 2, 128, 128, false, true},
        {2, 100, 512, 12, 128, 128, false, true}, /* cross-attention: 512 text rows */
        {1, 1000, 1000, 2, 128, 128, false, true},
        {1, 1, 1, 1, 8, 8, false, false},
        {1, 33, 17, 4, 40, 40, true, false},
        {1, 45, 45, 2, 64, 32, false, false},     /* Dv != D */
        {1, 96, 96, 1, 256, 256, false, false},
        {1, 96, 96, 1, 384, 384, false, false},   /* the VAE's single-head attention (384 channels) */
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        if (!strcmp(mode, "cudnn") && !cs[i].cudnn_ok) continue;
        if (g_small && cs[i].B * cs[i].Nq * cs[i].Nk * cs[i].H * cs[i].D > 20000000) continue;
        RUN(case_attention(cs[i].B, cs[i].Nq, cs[i].Nk, cs[i].H, cs[i].D, cs[i].Dv, cs[i].bias),
            "ATTENTION(B=%lld,Nq=%lld,Nk=%lld,H=%lld,D=%lld,Dv=%lld%s,mode=%s)", (long long)cs[i].B, (long long)cs[i].Nq,
            (long long)cs[i].Nk, (long long)cs[i].H, (long long)cs[i].D, (long long)cs[i].Dv, cs[i].bias ? ",bias" : "",
            mode);
    }
    pd_backend_free(g_gpu);
    g_gpu = saved;
    unsetenv("PD_CUDA_ATTENTION");
}

static void test_attention(void) {
    attention_cases("auto");
    attention_cases("flash");
    attention_cases("cudnn");
}

/* ---- unary elementwise: GELU_TANH, SILU, CLAMP ---- */

static pd_status apply_unary(pd_op op, pd_backend *be, pd_tensor *y, const pd_tensor *x) {
    switch (op) {
    case PD_OP_GELU_TANH: return pd_op_gelu_tanh(be, y, x);
    case PD_OP_SILU: return pd_op_silu(be, y, x);
    case PD_OP_CLAMP: return pd_op_clamp(be, y, x, -1.0f, 0.75f);
    default: PD_ASSERT(!"unary op");
    }
    return PD_ERR_INVALID;
}

static void case_unary(pd_op op, int nd, const int64_t *shape, bool inplace) {
    g_covered[op] = true;
    pd_tensor x = h_rand(PD_DTYPE_F32, nd, shape, 4.0f), ref = h_new(PD_DTYPE_F32, nd, shape);
    PD_CHECK_OK(apply_unary(op, g_cpu, &ref, &x));
    gout y = g_out(PD_DTYPE_F32, nd, shape, inplace ? &x : NULL);
    PD_CHECK_OK(apply_unary(op, g_gpu, &y.t, inplace ? &y.t : d_up(&x)));
    finish(&y, &ref, NULL, 1e-6, op == PD_OP_CLAMP ? 0 : 1e-5);
    pd_tensor_free(&x);
}

static void test_unary(void) {
    static const pd_op ops[3] = {PD_OP_GELU_TANH, PD_OP_SILU, PD_OP_CLAMP};
    const int64_t s1[1] = {1}, s2[2] = {7, 1001}, s3[3] = {2, 333, 257};
    for (int i = 0; i < 3; i++) {
        const char *n = pd_op_name(ops[i]);
        RUN(case_unary(ops[i], 1, s1, false), "%s(x=(1))", n);
        RUN(case_unary(ops[i], 2, s2, false), "%s(x=(7,1001))", n);
        RUN(case_unary(ops[i], 3, s3, true), "%s(x=(2,333,257),in place)", n);
    }
}

/* ---- MODULATE / GATED_ADD ---- */

/* shift, scale, gate as rows of a (B, 6, C) modulation tensor (batch stride 6C), or as (B, C). */
static void mod_rows(const pd_tensor *m6, int row, bool as_rows, pd_tensor *out) {
    pd_tensor r = pd_tensor_slice(m6, 1, row, 1); /* (B, 1, C) */
    if (!as_rows) {
        r.ndim = 2; /* (B, C) with the batch stride of the 6-row tensor */
        r.shape[1] = r.shape[2];
        r.stride[1] = r.stride[2];
    }
    *out = r;
}

static void case_modulate(int64_t B, int64_t N, int64_t C, bool as_rows, bool inplace) {
    g_covered[PD_OP_MODULATE] = true;
    int64_t xs[3] = {B, N, C}, ms[3] = {B, 6, C};
    pd_tensor x = h_rand(PD_DTYPE_F32, 3, xs, 1.0f), m = h_rand(PD_DTYPE_F32, 3, ms, 0.5f), ref = h_new(PD_DTYPE_F32, 3, xs);
    pd_tensor hs, hc, ds, dc;
    mod_rows(&m, 0, as_rows, &hs);
    mod_rows(&m, 1, as_rows, &hc);
    PD_CHECK_OK(pd_op_modulate(g_cpu, &ref, &x, &hs, &hc));
    pd_tensor *dm = d_up(&m);
    mod_rows(dm, 0, as_rows, &ds);
    mod_rows(dm, 1, as_rows, &dc);
    gout y = g_out(PD_DTYPE_F32, 3, xs, inplace ? &x : NULL);
    PD_CHECK_OK(pd_op_modulate(g_gpu, &y.t, inplace ? &y.t : d_up(&x), &ds, &dc));
    finish(&y, &ref, NULL, 1e-6, 1e-6);
    pd_tensor_free(&x), pd_tensor_free(&m);
}

static void case_gated_add(int64_t B, int64_t N, int64_t C, bool gate_on) {
    g_covered[PD_OP_GATED_ADD] = true;
    int64_t xs[3] = {B, N, C}, ms[3] = {B, 6, C};
    pd_tensor x = h_rand(PD_DTYPE_F32, 3, xs, 1.0f), y = h_rand(PD_DTYPE_F32, 3, xs, 1.0f), m = h_rand(PD_DTYPE_F32, 3, ms, 0.5f);
    pd_tensor ref = h_new(PD_DTYPE_F32, 3, xs), hg, dg;
    memcpy(ref.data, x.data, pd_tensor_nbytes(&x));
    mod_rows(&m, 2, true, &hg);
    PD_CHECK_OK(pd_op_gated_add(g_cpu, &ref, gate_on ? &hg : NULL, &y));
    pd_tensor *dm = d_up(&m);
    mod_rows(dm, 2, true, &dg);
    gout o = g_out(PD_DTYPE_F32, 3, xs, &x);
    PD_CHECK_OK(pd_op_gated_add(g_gpu, &o.t, gate_on ? &dg : NULL, d_up(&y)));
    finish(&o, &ref, NULL, 1e-6, 1e-6);
    pd_tensor_free(&x), pd_tensor_free(&y), pd_tensor_free(&m);
}

static void test_modulation(void) {
    RUN(case_modulate(2, 37, 96, true, false), "MODULATE(x=(2,37,96),rows of (B,6,C))");
    RUN(case_modulate(2, 37, 96, false, false), "MODULATE(x=(2,37,96),(B,C) strided)");
    RUN(case_modulate(1, 130, 1536, true, true), "MODULATE(x=(1,130,1536),in place)");
    RUN(case_modulate(3, 1, 5, false, true), "MODULATE(x=(3,1,5),in place)");
    RUN(case_gated_add(2, 37, 96, true), "GATED_ADD(x=(2,37,96),gate)");
    RUN(case_gated_add(1, 130, 1536, true), "GATED_ADD(x=(1,130,1536),gate)");
    RUN(case_gated_add(2, 7, 13, false), "GATED_ADD(x=(2,7,13),no gate)");
}

/* ---- ADD / MUL ---- */

static void case_binary(bool mul, pd_dtype bdt, int bnd, const int64_t *bshape, bool inplace) {
    g_covered[mul ? PD_OP_MUL : PD_OP_ADD] = true;
    int64_t as[3] = {3, 5, 7};
    pd_tensor a = h_rand(PD_DTYPE_F32, 3, as, 1.0f), b = h_rand(bdt, bnd, bshape, 1.0f), ref = h_new(PD_DTYPE_F32, 3, as);
    PD_CHECK_OK(mul ? pd_op_mul(g_cpu, &ref, &a, &b) : pd_op_add(g_cpu, &ref, &a, &b));
    gout y = g_out(PD_DTYPE_F32, 3, as, inplace ? &a : NULL);
    const pd_tensor *da = inplace ? &y.t : d_up(&a), *db = d_up(&b);
    PD_CHECK_OK(mul ? pd_op_mul(g_gpu, &y.t, da, db) : pd_op_add(g_gpu, &y.t, da, db));
    finish(&y, &ref, NULL, 1e-7, 1e-6);
    pd_tensor_free(&a), pd_tensor_free(&b);
}

static void test_binary(void) {
    static const struct { int nd; int64_t s[3]; pd_dtype dt; const char *name; } bs[] = {
        {3, {3, 5, 7}, PD_DTYPE_F32, "(3,5,7) f32"}, {1, {7}, PD_DTYPE_F32, "(7) f32"},
        {2, {5, 1}, PD_DTYPE_BF16, "(5,1) bf16"},    {3, {3, 1, 7}, PD_DTYPE_F16, "(3,1,7) f16"},
        {1, {1}, PD_DTYPE_F32, "(1) f32"},
    };
    for (int mul = 0; mul < 2; mul++)
        for (size_t i = 0; i < sizeof bs / sizeof *bs; i++)
            RUN(case_binary(mul, bs[i].dt, bs[i].nd, bs[i].s, i == 2), "%s(a=(3,5,7),b=%s%s)", mul ? "MUL" : "ADD",
                bs[i].name, i == 2 ? ",in place" : "");
}

/* ---- TIMESTEP_EMBED ---- */

static void case_timestep(int64_t F) {
    g_covered[PD_OP_TIMESTEP_EMBED] = true;
    int64_t ts[1] = {3}, os[2] = {3, F};
    pd_tensor t = h_new(PD_DTYPE_F32, 1, ts), ref = h_new(PD_DTYPE_F32, 2, os);
    float *tv = t.data;
    tv[0] = 0.0f, tv[1] = 999.0f, tv[2] = 437.5f;
    PD_CHECK_OK(pd_op_timestep_embed(g_cpu, &ref, &t));
    gout o = g_out(PD_DTYPE_F32, 2, os, NULL);
    PD_CHECK_OK(pd_op_timestep_embed(g_gpu, &o.t, d_up(&t)));
    finish(&o, &ref, NULL, 5e-6, 0); /* computed in double: only the final rounding differs */
    pd_tensor_free(&t);
}

static void test_timestep(void) {
    RUN(case_timestep(256), "TIMESTEP_EMBED(B=3,F=256)");
    RUN(case_timestep(6), "TIMESTEP_EMBED(B=3,F=6)");
}

/* ---- PATCHIFY / UNPATCHIFY / UPSAMPLE_NEAREST2D / COPY: exact ---- */

/* PATCHIFY: latent (C, T, H, W) -> tokens (N, D); un: UNPATCHIFY, tokens -> latent. */
static pd_status apply_patch(bool un, pd_backend *be, pd_tensor *out, const pd_tensor *in, int pt, int ph, int pw) {
    return un ? pd_op_unpatchify(be, out, in, pt, ph, pw) : pd_op_patchify(be, out, in, pt, ph, pw);
}

static void case_patch(bool un, int64_t C, int64_t T, int64_t H, int64_t W, int pt, int ph, int pw) {
    g_covered[un ? PD_OP_UNPATCHIFY : PD_OP_PATCHIFY] = true;
    int64_t ls[4] = {C, T, H, W}, ts[2] = {(T / pt) * (H / ph) * (W / pw), C * pt * ph * pw};
    const int ind = un ? 2 : 4, ond = un ? 4 : 2;
    const int64_t *is = un ? ts : ls, *os = un ? ls : ts;
    pd_tensor in = h_rand(PD_DTYPE_F32, ind, is, 1.0f), ref = h_new(PD_DTYPE_F32, ond, os);
    PD_CHECK_OK(apply_patch(un, g_cpu, &ref, &in, pt, ph, pw));
    gout o = g_out(PD_DTYPE_F32, ond, os, NULL);
    PD_CHECK_OK(apply_patch(un, g_gpu, &o.t, d_up(&in), pt, ph, pw));
    finish(&o, &ref, NULL, 0, 0);
    pd_tensor_free(&in);
}

static void case_upsample(int64_t C, int64_t T, int64_t H, int64_t W) {
    g_covered[PD_OP_UPSAMPLE_NEAREST2D] = true;
    int64_t xs[4] = {C, T, H, W}, ys[4] = {C, T, 2 * H, 2 * W};
    pd_tensor x = h_rand(PD_DTYPE_F32, 4, xs, 1.0f), ref = h_new(PD_DTYPE_F32, 4, ys);
    PD_CHECK_OK(pd_op_upsample_nearest2d(g_cpu, &ref, &x));
    gout o = g_out(PD_DTYPE_F32, 4, ys, NULL);
    PD_CHECK_OK(pd_op_upsample_nearest2d(g_gpu, &o.t, d_up(&x)));
    finish(&o, &ref, NULL, 0, 0);
    pd_tensor_free(&x);
}

/* kind 0: a transpose (every stride permuted); 1: a slice of rows and columns; 2: contiguous. */
static void case_copy(int kind, pd_dtype sdt, pd_dtype ddt) {
    g_covered[PD_OP_COPY] = true;
    int64_t s3[3] = {4, 5, 6}, s2[2] = {8, 10};
    pd_tensor src = kind == 1 ? h_rand(sdt, 2, s2, 1.0f) : h_rand(sdt, 3, s3, 1.0f);
    pd_tensor *dsrc = d_up(&src);
    pd_tensor hv = src, dv = *dsrc;
    if (kind == 0) { /* (6, 5, 4) view: dims reversed */
        for (int i = 0; i < 3; i++) {
            hv.shape[i] = src.shape[2 - i], hv.stride[i] = src.stride[2 - i];
            dv.shape[i] = dsrc->shape[2 - i], dv.stride[i] = dsrc->stride[2 - i];
        }
    } else if (kind == 1) { /* rows 2..6, columns 3..9 */
        pd_tensor r = pd_tensor_slice(&src, 0, 2, 5);
        hv = pd_tensor_slice(&r, 1, 3, 7);
        r = pd_tensor_slice(dsrc, 0, 2, 5);
        dv = pd_tensor_slice(&r, 1, 3, 7);
    }
    pd_tensor ref = h_new(ddt, hv.ndim, hv.shape);
    PD_CHECK_OK(pd_op_copy(g_cpu, &ref, &hv));
    gout o = g_out(ddt, hv.ndim, hv.shape, NULL);
    PD_CHECK_OK(pd_op_copy(g_gpu, &o.t, &dv));
    finish(&o, &ref, NULL, 0, 0); /* narrowing rounds to nearest even on both */
    pd_tensor_free(&src);
}

static void test_layout(void) {
    RUN(case_patch(false, 16, 3, 6, 10, 1, 2, 2), "PATCHIFY(latent=(16,3,6,10),patch=1x2x2)");
    RUN(case_patch(false, 5, 4, 6, 4, 2, 2, 2), "PATCHIFY(latent=(5,4,6,4),patch=2x2x2)");
    RUN(case_patch(true, 16, 3, 6, 10, 1, 2, 2), "UNPATCHIFY(latent=(16,3,6,10),patch=1x2x2)");
    RUN(case_patch(true, 3, 2, 9, 4, 2, 3, 1), "UNPATCHIFY(latent=(3,2,9,4),patch=2x3x1)");
    RUN(case_upsample(5, 2, 7, 9), "UPSAMPLE_NEAREST2D(x=(5,2,7,9))");
    RUN(case_upsample(96, 1, 30, 52), "UPSAMPLE_NEAREST2D(x=(96,1,30,52))");
    RUN(case_copy(0, PD_DTYPE_F32, PD_DTYPE_F32), "COPY(src=(4,5,6) f32 transposed,dst f32)");
    RUN(case_copy(1, PD_DTYPE_F32, PD_DTYPE_F32), "COPY(src=(8,10)[2:7,3:10] f32,dst f32)");
    RUN(case_copy(2, PD_DTYPE_F32, PD_DTYPE_BF16), "COPY(f32->bf16)");
    RUN(case_copy(2, PD_DTYPE_F32, PD_DTYPE_F16), "COPY(f32->f16)");
    RUN(case_copy(0, PD_DTYPE_BF16, PD_DTYPE_F32), "COPY(bf16 transposed->f32)");
    RUN(case_copy(1, PD_DTYPE_F16, PD_DTYPE_F32), "COPY(f16 sliced->f32)");
}

/* ---- CONV3D ---- */

static void case_conv(pd_dtype wdt, int64_t Cin, int64_t T, int64_t H, int64_t W, int64_t Cout, int kt, int kh, int kw,
                      const int pad[6], bool bias) {
    g_covered[PD_OP_CONV3D] = true;
    int64_t xs[4] = {Cin, T, H, W}, ws[5] = {Cout, Cin, kt, kh, kw}, bs[1] = {Cout};
    int64_t ys[4] = {Cout, T + pad[0] + pad[1] - kt + 1, H + pad[2] + pad[3] - kh + 1, W + pad[4] + pad[5] - kw + 1};
    pd_tensor x = h_rand(PD_DTYPE_F32, 4, xs, 1.0f), w = h_rand(wdt, 5, ws, 0.3f), b = bias ? h_rand(wdt, 1, bs, 1.0f) : (pd_tensor){0};
    pd_tensor ref = h_new(PD_DTYPE_F32, 4, ys), mag = h_new(PD_DTYPE_F32, 4, ys);
    PD_CHECK_OK(pd_op_conv3d(g_cpu, &ref, &x, &w, bias ? &b : NULL, pad));
    pd_tensor ax = h_abs(&x), aw = h_abs(&w), ab = bias ? h_abs(&b) : (pd_tensor){0};
    PD_CHECK_OK(pd_op_conv3d(g_cpu, &mag, &ax, &aw, bias ? &ab : NULL, pad));
    gout y = g_out(PD_DTYPE_F32, 4, ys, NULL);
    PD_CHECK_OK(pd_op_conv3d(g_gpu, &y.t, d_up(&x), d_weight(&w), bias ? d_weight(&b) : NULL, pad));
    /* f32 data (weights widened exactly); 2e-3 of the magnitude leaves room for TF32 tensor cores. */
    finish(&y, &ref, &mag, 1e-6, 2e-3);
    pd_tensor_free(&x), pd_tensor_free(&w), pd_tensor_free(&b), pd_tensor_free(&ax), pd_tensor_free(&aw), pd_tensor_free(&ab);
}

static void test_conv(void) {
    static const int causal[6] = {2, 0, 1, 1, 1, 1}, none[6] = {0}, spatial[6] = {0, 0, 1, 1, 1, 1},
                     time_only[6] = {2, 0, 0, 0, 0, 0}, odd[6] = {1, 2, 0, 2, 1, 0};
    for (int d = 0; d < 3; d++)
        RUN(case_conv(pd_test_wdts[d], 5, 4, 9, 11, 7, 3, 3, 3, causal, true), "CONV3D(w=%s,x=(5,4,9,11),Cout=7,k=3x3x3,pad=causal)",
            pd_test_dtype_name(pd_test_wdts[d]));
    RUN(case_conv(PD_DTYPE_F32, 16, 1, 6, 10, 16, 1, 1, 1, none, true), "CONV3D(w=f32,x=(16,1,6,10),Cout=16,k=1x1x1)");
    RUN(case_conv(PD_DTYPE_BF16, 12, 2, 7, 5, 6, 1, 3, 3, spatial, true), "CONV3D(w=bf16,x=(12,2,7,5),Cout=6,k=1x3x3,pad=spatial)");
    RUN(case_conv(PD_DTYPE_BF16, 8, 3, 4, 6, 16, 3, 1, 1, time_only, true), "CONV3D(w=bf16,x=(8,3,4,6),Cout=16,k=3x1x1,pad=time)");
    RUN(case_conv(PD_DTYPE_F16, 3, 3, 5, 4, 4, 2, 3, 2, odd, false), "CONV3D(w=f16,x=(3,3,5,4),Cout=4,k=2x3x2,pad={1,2,0,2,1,0},no bias)");
    if (!g_small)
        RUN(case_conv(PD_DTYPE_BF16, 64, 3, 20, 24, 64, 3, 3, 3, causal, true), "CONV3D(w=bf16,x=(64,3,20,24),Cout=64,k=3x3x3,pad=causal)");
    RUN(case_conv(PD_DTYPE_F32, 96, 1, 9, 13, 3, 3, 3, 3, causal, true), "CONV3D(w=f32,x=(96,1,9,13),Cout=3,k=3x3x3,pad=causal)");
}

/* ---- CHANNEL_RMS_NORM ---- */

static void case_channel_rms(pd_dtype wdt, int64_t C, int64_t T, int64_t H, int64_t W, bool bias, bool inplace) {
    g_covered[PD_OP_CHANNEL_RMS_NORM] = true;
    int64_t xs[4] = {C, T, H, W}, cs[1] = {C};
    pd_tensor x = h_rand(PD_DTYPE_F32, 4, xs, 2.0f), g = h_rand(wdt, 1, cs, 1.0f), b = bias ? h_rand(wdt, 1, cs, 1.0f) : (pd_tensor){0};
    pd_tensor ref = h_new(PD_DTYPE_F32, 4, xs);
    PD_CHECK_OK(pd_op_channel_rms_norm(g_cpu, &ref, &x, &g, bias ? &b : NULL, 1e-12f));
    gout y = g_out(PD_DTYPE_F32, 4, xs, inplace ? &x : NULL);
    PD_CHECK_OK(pd_op_channel_rms_norm(g_gpu, &y.t, inplace ? &y.t : d_up(&x), d_weight(&g), bias ? d_weight(&b) : NULL, 1e-12f));
    finish(&y, &ref, NULL, 2e-5, 1e-5);
    pd_tensor_free(&x), pd_tensor_free(&g), pd_tensor_free(&b);
}

static void test_channel_rms(void) {
    for (int d = 0; d < 3; d++)
        RUN(case_channel_rms(pd_test_wdts[d], 12, 2, 5, 7, d == 0, false), "CHANNEL_RMS_NORM(w=%s,x=(12,2,5,7)%s)",
            pd_test_dtype_name(pd_test_wdts[d]), d == 0 ? ",bias" : "");
    RUN(case_channel_rms(PD_DTYPE_F32, 384, 1, 7, 9, false, true), "CHANNEL_RMS_NORM(w=f32,x=(384,1,7,9),in place)");
    RUN(case_channel_rms(PD_DTYPE_BF16, 3, 1, 1, 1, true, false), "CHANNEL_RMS_NORM(w=bf16,x=(3,1,1,1),bias)");
}

/* ---- EMBEDDING ---- */

static void case_embedding(pd_dtype wdt, int64_t V, int64_t D, int64_t L) {
    g_covered[PD_OP_EMBEDDING] = true;
    int64_t ts[2] = {V, D}, is[1] = {L}, os[2] = {L, D};
    pd_tensor table = h_rand(wdt, 2, ts, 1.0f), ids = h_new(PD_DTYPE_I32, 1, is), ref = h_new(PD_DTYPE_F32, 2, os);
    for (int64_t i = 0; i < L; i++) ((int32_t *)ids.data)[i] = (int32_t)((i * 7919 + 3) % V);
    ((int32_t *)ids.data)[L - 1] = (int32_t)(V - 1);
    PD_CHECK_OK(pd_op_embedding(g_cpu, &ref, &ids, &table));
    gout o = g_out(PD_DTYPE_F32, 2, os, NULL);
    PD_CHECK_OK(pd_op_embedding(g_gpu, &o.t, d_up(&ids), d_weight(&table)));
    finish(&o, &ref, NULL, 0, 0);
    pd_tensor_free(&table), pd_tensor_free(&ids);
}

static void test_embedding(void) {
    for (int d = 0; d < 3; d++)
        RUN(case_embedding(pd_test_wdts[d], 50, 33, 17), "EMBEDDING(w=%s,table=(50,33),L=17)", pd_test_dtype_name(pd_test_wdts[d]));
    RUN(case_embedding(PD_DTYPE_BF16, 2048, 4096, 5), "EMBEDDING(w=bf16,table=(2048,4096),L=5)");
}

/* ---- errors: each op refuses bad arguments with PD_ERR_INVALID and leaves memory alone ---- */

static void test_errors(void) {
    int64_t xs[2] = {4, 8}, ws_bad[2] = {5, 9}, ys[2] = {4, 5};
    pd_tensor x = h_rand(PD_DTYPE_F32, 2, xs, 1.0f), wb = h_rand(PD_DTYPE_BF16, 2, ws_bad, 1.0f);
    gout y = g_out(PD_DTYPE_F32, 2, ys, NULL);
    PD_CHECK_ERR(pd_op_linear(g_gpu, &y.t, d_up(&x), d_weight(&wb), NULL), PD_ERR_INVALID);
    PD_CHECK_MSG(gout_untouched(&y, NULL), "LINEAR wrote memory after refusing a K mismatch");
    /* an output overlapping the input where the contract forbids it */
    int64_t sq[2] = {8, 8};
    pd_tensor w8 = h_rand(PD_DTYPE_F32, 2, sq, 1.0f), x8 = h_rand(PD_DTYPE_F32, 2, sq, 1.0f);
    gout io = g_out(PD_DTYPE_F32, 2, sq, &x8);
    PD_CHECK_ERR(pd_op_linear(g_gpu, &io.t, &io.t, d_weight(&w8), NULL), PD_ERR_INVALID);
    PD_CHECK_MSG(gout_untouched(&io, &x8), "LINEAR wrote memory after refusing y == x");
    /* a host tensor handed to the CUDA backend */
    gout y2 = g_out(PD_DTYPE_F32, 2, ys, NULL);
    pd_tensor w_ok = h_rand(PD_DTYPE_F32, 2, (int64_t[2]){5, 8}, 1.0f);
    if (!g_on_cpu) PD_CHECK_ERR(pd_op_linear(g_gpu, &y2.t, &x, d_weight(&w_ok), NULL), PD_ERR_INVALID);
    /* attention: head dims of q and k differ */
    int64_t q4[4] = {1, 3, 2, 8}, k4[4] = {1, 5, 2, 16};
    pd_tensor q = h_rand(PD_DTYPE_F32, 4, q4, 1.0f), k = h_rand(PD_DTYPE_F32, 4, k4, 1.0f);
    gout o = g_out(PD_DTYPE_F32, 4, q4, NULL);
    PD_CHECK_ERR(pd_op_attention(g_gpu, &o.t, d_up(&q), d_up(&k), d_up(&k), NULL, 0.3f), PD_ERR_INVALID);
    PD_CHECK_MSG(gout_untouched(&o, NULL), "ATTENTION wrote memory after refusing a head-dim mismatch");
    /* conv3d: Cin of x and w differ */
    int64_t cx[4] = {3, 2, 4, 4}, cw[5] = {2, 4, 1, 1, 1}, cy[4] = {2, 2, 4, 4};
    static const int pad0[6] = {0};
    pd_tensor cxt = h_rand(PD_DTYPE_F32, 4, cx, 1.0f), cwt = h_rand(PD_DTYPE_BF16, 5, cw, 1.0f);
    gout co = g_out(PD_DTYPE_F32, 4, cy, NULL);
    PD_CHECK_ERR(pd_op_conv3d(g_gpu, &co.t, d_up(&cxt), d_weight(&cwt), NULL, pad0), PD_ERR_INVALID);
    PD_CHECK_MSG(gout_untouched(&co, NULL), "CONV3D wrote memory after refusing a Cin mismatch");
    /* add: b does not broadcast */
    int64_t bb[1] = {7};
    pd_tensor bt = h_rand(PD_DTYPE_F32, 1, bb, 1.0f);
    gout ao = g_out(PD_DTYPE_F32, 2, xs, NULL);
    PD_CHECK_ERR(pd_op_add(g_gpu, &ao.t, d_up(&x), d_up(&bt)), PD_ERR_INVALID);
    PD_CHECK_MSG(gout_untouched(&ao, NULL), "ADD wrote memory after refusing a broadcast mismatch");
    /* copy: shapes differ */
    gout cpo = g_out(PD_DTYPE_F32, 2, ys, NULL);
    PD_CHECK_ERR(pd_op_copy(g_gpu, &cpo.t, d_up(&x)), PD_ERR_INVALID);
    PD_CHECK_MSG(gout_untouched(&cpo, NULL), "COPY wrote memory after refusing a shape mismatch");
    /* embedding: an id outside the table (the device backend checks its own ids) */
    int64_t ts[2] = {10, 4}, is[1] = {3}, es[2] = {3, 4};
    pd_tensor table = h_rand(PD_DTYPE_F32, 2, ts, 1.0f), ids = h_new(PD_DTYPE_I32, 1, is);
    ((int32_t *)ids.data)[0] = 1, ((int32_t *)ids.data)[1] = 10, ((int32_t *)ids.data)[2] = 2;
    gout eo = g_out(PD_DTYPE_F32, 2, es, NULL);
    PD_CHECK_ERR(pd_op_embedding(g_gpu, &eo.t, d_up(&ids), d_weight(&table)), PD_ERR_INVALID);
    ((int32_t *)ids.data)[1] = -1;
    PD_CHECK_ERR(pd_op_embedding(g_gpu, &eo.t, d_up(&ids), d_weight(&table)), PD_ERR_INVALID);
    pd_tensor eg = gout_read(&eo); /* checks the guards are intact after the refusals */
    pd_tensor_free(&eg);
    /* the backend stays usable after refusals */
    PD_CHECK_OK(pd_backend_synchronize(g_gpu));
    pd_tensor_free(&x), pd_tensor_free(&wb), pd_tensor_free(&w8), pd_tensor_free(&x8), pd_tensor_free(&w_ok);
    pd_tensor_free(&q), pd_tensor_free(&k), pd_tensor_free(&cxt), pd_tensor_free(&cwt), pd_tensor_free(&bt);
    pd_tensor_free(&table), pd_tensor_free(&ids);
    dev_free_all();
}

/* ---- coverage ---- */

static void test_supports_every_op(void) {
    for (int op = 0; op < PD_OP_COUNT; op++)
        for (int d = 0; d < 3; d++)
            PD_CHECK_MSG(pd_backend_supports_op(g_gpu, (pd_op)op, pd_test_wdts[d]), "%s with %s weights is not supported",
                         pd_op_name((pd_op)op), pd_test_dtype_name(pd_test_wdts[d]));
    if (g_on_cpu) return;
    PD_CHECK(pd_backend_device(g_gpu) == PD_DEVICE_CUDA);
    PD_CHECK(!strcmp(pd_backend_name(g_gpu), "cuda:0"));
}

static void test_every_op_covered(void) {
    /* The fused ops have their own program (test_gpu_fused), which also checks them against the unfused
     * sequence on the device. */
    g_covered[PD_OP_LAYER_NORM_MODULATE] = g_covered[PD_OP_LINEAR_GELU] = g_covered[PD_OP_RMS_NORM_ROPE] = true;
    for (int op = 0; op < PD_OP_COUNT; op++)
        PD_CHECK_MSG(g_covered[op], "no case ran op %s", pd_op_name((pd_op)op));
}

int main(void) {
    int rc = pd_gpu_test_start("test_gpu_ops", 0, &g_cpu, &g_gpu);
    if (rc) return rc;
    unsetenv("PD_CUDA_ATTENTION");
    g_small = pd_gpu_test_env_on("PD_GPU_OPS_SMALL");
    if (g_small) printf("PD_GPU_OPS_SMALL: large cases left out\n");
    PD_RUN(test_supports_every_op);
    test_linear();
    test_norms();
    test_rope();
    test_attention();
    test_unary();
    test_modulation();
    test_binary();
    test_timestep();
    test_layout();
    test_conv();
    test_channel_rms();
    test_embedding();
    PD_RUN(test_errors);
    PD_RUN(test_every_op_covered);
    pd_backend_free(g_gpu);
    pd_backend_free(g_cpu);
    return pd_test_summary();
}
