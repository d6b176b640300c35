/* Every op of engine/backend.h on the CPU backend against naive double-precision references written
 * here (the fused ops also against the unfused sequence they replace), at odd sizes, for each weight
 * dtype, on 1 and 3 threads (results must be bit-identical), with guard bytes around every output.
 * Also bad arguments: each op rejects a mismatched shape with PD_ERR_INVALID and a message, and leaves
 * its output untouched. */
#include <stdint.h>
#include <stdlib.h>

#include "engine/backend.h"
#include "tests/unit/test.h"

#define GUARD 64
#define PATTERN 0xA5

/* ---- guarded tensors ---- */

typedef struct {
    pd_tensor t;
    unsigned char *base;
    size_t bytes;
} gt;

static gt gt_new(pd_dtype dt, int nd, const int64_t *shape) {
    gt g = {0};
    pd_tensor v = pd_tensor_view(NULL, dt, nd, shape);
    g.bytes = pd_tensor_nbytes(&v);
    g.base = malloc(g.bytes + 2 * GUARD);
    PD_ASSERT(g.base);
    memset(g.base, PATTERN, g.bytes + 2 * GUARD);
    g.t = pd_tensor_view(g.base + GUARD, dt, nd, shape);
    return g;
}

static void gt_free(gt *g) {
    free(g->base);
    memset(g, 0, sizeof *g);
}

static bool gt_guards_ok(const gt *g) {
    for (size_t i = 0; i < GUARD; i++)
        if (g->base[i] != PATTERN || g->base[GUARD + g->bytes + i] != PATTERN) return false;
    return true;
}

static bool gt_untouched(const gt *g) {
    for (size_t i = 0; i < g->bytes + 2 * GUARD; i++)
        if (g->base[i] != PATTERN) return false;
    return true;
}

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static double rng_uniform(void) { /* [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

/* Element i (row-major over the tensor's own strides being contiguous) widened to double. */
static double gv(const gt *g, int64_t i) {
    const void *p = g->t.data;
    switch (g->t.dtype) {
    case PD_DTYPE_F32: return ((const float *)p)[i];
    case PD_DTYPE_BF16: return pd_bf16_to_f32(((const uint16_t *)p)[i]);
    case PD_DTYPE_F16: return pd_f16_to_f32(((const uint16_t *)p)[i]);
    case PD_DTYPE_I32: return ((const int32_t *)p)[i];
    default: PD_ASSERT(!"dtype");
    }
    return 0;
}

/* A tensor of uniform values in [-scale, scale), stored in dt (rounded). */
static gt gt_rand(pd_dtype dt, int nd, const int64_t *shape, double scale) {
    gt g = gt_new(dt, nd, shape);
    int64_t n = pd_tensor_numel(&g.t);
    for (int64_t i = 0; i < n; i++) {
        float f = (float)(rng_uniform() * scale);
        pd_convert_from_f32((char *)g.t.data + i * (int64_t)pd_dtype_size(dt), dt, &f, 1);
    }
    return g;
}

/* Fills f (N, D / 2, 2) with arbitrary unit rotations (cos a, sin a), one rng draw per pair. */
static void fill_unit_rotations(gt *f, int64_t pairs) {
    for (int64_t i = 0; i < pairs; i++) {
        double a = rng_uniform() * 3.14159;
        ((float *)f->t.data)[2 * i] = (float)cos(a), ((float *)f->t.data)[2 * i + 1] = (float)sin(a);
    }
}

/* ---- backends and the cross-thread comparison ---- */

static pd_backend *g_bes[2];
static const int g_threads[2] = {1, 3};
static pd_backend *g_be;
static int g_nthreads;
static unsigned char *g_saved; /* the threads=1 output of the current case */
static size_t g_saved_bytes;

/* Checks guards, compares against ref within atol + rtol * mag[i] (mag NULL: |ref|), and checks the
 * output is bit-identical to the threads=1 run of the same case. */
static void check_out(const gt *out, const double *ref, const double *mag, double rtol, double atol) {
    PD_CHECK_MSG(gt_guards_ok(out), "guard bytes around the output were written");
    int64_t n = pd_tensor_numel(&out->t), worst = -1;
    double worst_excess = 0, worst_err = 0;
    for (int64_t i = 0; i < n; i++) {
        double got = gv(out, i), r = ref[i], tol = atol + rtol * (mag ? mag[i] : fabs(r));
        double err = fabs(got - r);
        if (isinf(r) || isnan(r)) err = (got == r || (isnan(r) && isnan(got))) ? 0 : INFINITY;
        if (!(err <= tol) && (worst < 0 || err - tol > worst_excess)) {
            worst = i;
            worst_excess = err - tol;
            worst_err = err;
        }
    }
    PD_CHECK_MSG(worst < 0, "element %lld: got %.9g want %.9g (err %.3g)", (long long)worst,
                 worst >= 0 ? gv(out, worst) : 0.0, worst >= 0 ? ref[worst] : 0.0, worst_err);
    if (g_nthreads == 1) {
        free(g_saved);
        g_saved = malloc(out->bytes ? out->bytes : 1);
        memcpy(g_saved, out->t.data, out->bytes);
        g_saved_bytes = out->bytes;
    } else {
        PD_CHECK_MSG(g_saved && g_saved_bytes == out->bytes && !memcmp(g_saved, out->t.data, out->bytes),
                     "result differs from the threads=1 run");
    }
}

static char g_name[256];
/* Runs `call` once per thread count, naming the case "<fmt>,threads=N)". */
#define RUN_BOTH(call, ...)                                                                        \
    do {                                                                                           \
        for (int ti_ = 0; ti_ < 2; ti_++) {                                                        \
            g_be = g_bes[ti_];                                                                     \
            g_nthreads = g_threads[ti_];                                                           \
            int o_ = snprintf(g_name, sizeof g_name, __VA_ARGS__);                                 \
            snprintf(g_name + o_, sizeof g_name - (size_t)o_, ",threads=%d)", g_nthreads);        \
            PD_RUN_CASE(g_name, call);                                                             \
        }                                                                                          \
    } while (0)

/* ---- LINEAR ---- */

/* Naive double reference of y (M, N) = x (M, K) w (N, K)^T + b: ref, and in mag the sum of |terms|
 * (the scale of the GEMM's rounding). */
static void linear_ref(const gt *x, const gt *w, const gt *b, int64_t M, int64_t K, int64_t N, double *ref, double *mag) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t n = 0; n < N; n++) {
            double s = b ? gv(b, n) : 0, m = fabs(s);
            for (int64_t k = 0; k < K; k++) {
                double p = gv(x, i * K + k) * gv(w, n * K + k);
                s += p;
                m += fabs(p);
            }
            ref[i * N + n] = s;
            mag[i * N + n] = m;
        }
}

static void case_linear(pd_dtype wdt, int64_t M, int64_t K, int64_t N, bool bias, bool lead3) {
    rng_seed((uint64_t)(M * 1000003 + K * 1009 + N + wdt * 7 + bias));
    int64_t xs[3] = {2, M / 2, K}, xs2[2] = {M, K}, ws[2] = {N, K}, ys[3] = {2, M / 2, N}, ys2[2] = {M, N}, bs[1] = {N};
    if (lead3) M = 2 * (M / 2);
    gt x = lead3 ? gt_rand(PD_DTYPE_F32, 3, xs, 1.0) : gt_rand(PD_DTYPE_F32, 2, xs2, 1.0);
    gt w = gt_rand(wdt, 2, ws, 0.5), b = bias ? gt_rand(wdt, 1, bs, 1.0) : (gt){0};
    gt y = lead3 ? gt_new(PD_DTYPE_F32, 3, ys) : gt_new(PD_DTYPE_F32, 2, ys2);
    PD_CHECK_OK(pd_op_linear(g_be, &y.t, &x.t, &w.t, bias ? &b.t : NULL));
    double *ref = calloc((size_t)(M * N), sizeof *ref), *mag = calloc((size_t)(M * N), sizeof *mag);
    linear_ref(&x, &w, bias ? &b : NULL, M, K, N, ref, mag);
    check_out(&y, ref, mag, 2e-6, 1e-30);
    free(ref);
    free(mag);
    gt_free(&x), gt_free(&w), gt_free(&y);
    if (bias) gt_free(&b);
}

static void test_linear(void) {
    static const int64_t sizes[][3] = {{7, 13, 29}, {1, 13, 29}, {70, 33, 300}, {130, 64, 5}, {3, 0, 5}};
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            const pd_dtype wdt = pd_test_wdts[d];
            int64_t M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
            RUN_BOTH(case_linear(wdt, M, K, N, true, false), "LINEAR(w=%s,M=%lld,K=%lld,N=%lld,bias=1", pd_test_dtype_name(wdt),
                     (long long)M, (long long)K, (long long)N);
        }
    RUN_BOTH(case_linear(PD_DTYPE_BF16, 14, 13, 29, false, true), "LINEAR(w=bf16,x=(2,7,13),N=29,bias=0");
}

/* ---- LAYER_NORM / RMS_NORM ---- */

/* The C values of x from element off normalised in double: (x - mean) / sqrt(var + eps), or with rms
 * x / sqrt(mean(x^2) + eps); into v. */
static void norm_row_ref(const gt *x, int64_t off, int64_t C, bool rms, float eps, double *v) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; c++) mean += gv(x, off + c);
    mean /= (double)C;
    for (int64_t c = 0; c < C; c++) {
        double d = gv(x, off + c) - (rms ? 0 : mean);
        var += d * d;
    }
    var /= (double)C;
    for (int64_t c = 0; c < C; c++) v[c] = (gv(x, off + c) - (rms ? 0 : mean)) / sqrt(var + eps);
}

static void case_norm(bool rms, pd_dtype wdt, int64_t R, int64_t C, bool affine, bool inplace) {
    rng_seed((uint64_t)(R * 31 + C + wdt + rms * 5 + affine * 11));
    int64_t xs[2] = {R, C}, cs[1] = {C};
    gt x = gt_rand(PD_DTYPE_F32, 2, xs, 3.0);
    for (int64_t i = 0; i < R * C; i++) ((float *)x.t.data)[i] += 0.5f; /* a non-zero mean */
    gt w = affine ? gt_rand(wdt, 1, cs, 2.0) : (gt){0}, b = affine ? gt_rand(wdt, 1, cs, 1.0) : (gt){0};
    gt y = gt_new(PD_DTYPE_F32, 2, xs);
    double *ref = calloc((size_t)(R * C), sizeof *ref), *mag = calloc((size_t)(R * C), sizeof *mag);
    double *row = calloc((size_t)C, sizeof *row);
    float eps = 1e-6f;
    for (int64_t r = 0; r < R; r++) {
        norm_row_ref(&x, r * C, C, rms, eps, row);
        for (int64_t c = 0; c < C; c++) {
            double v = row[c], m;
            m = fabs(v) + 1;
            if (affine) {
                v *= gv(&w, c);
                m *= fabs(gv(&w, c));
                if (!rms) {
                    v += gv(&b, c);
                    m += fabs(gv(&b, c));
                }
            }
            ref[r * C + c] = v;
            mag[r * C + c] = m;
        }
    }
    if (inplace) {
        memcpy(y.t.data, x.t.data, x.bytes);
        if (rms) PD_CHECK_OK(pd_op_rms_norm(g_be, &y.t, &y.t, affine ? &w.t : NULL, eps));
        else PD_CHECK_OK(pd_op_layer_norm(g_be, &y.t, &y.t, affine ? &w.t : NULL, affine ? &b.t : NULL, eps));
    } else {
        if (rms) PD_CHECK_OK(pd_op_rms_norm(g_be, &y.t, &x.t, affine ? &w.t : NULL, eps));
        else PD_CHECK_OK(pd_op_layer_norm(g_be, &y.t, &x.t, affine ? &w.t : NULL, affine ? &b.t : NULL, eps));
    }
    check_out(&y, ref, mag, 1e-5, 0);
    free(ref), free(mag), free(row);
    gt_free(&x), gt_free(&y);
    if (affine) gt_free(&w), gt_free(&b);
}

static void test_norms(void) {
    for (int rms = 0; rms < 2; rms++) {
        const char *op = rms ? "RMS_NORM" : "LAYER_NORM";
        for (int d = 0; d < 3; d++)
            RUN_BOTH(case_norm(rms, pd_test_wdts[d], 5, 37, true, false), "%s(w=%s,R=5,C=37", op,
                     pd_test_dtype_name(pd_test_wdts[d]));
        RUN_BOTH(case_norm(rms, PD_DTYPE_F32, 600, 29, false, false), "%s(w=none,R=600,C=29", op);
        RUN_BOTH(case_norm(rms, PD_DTYPE_BF16, 9, 1537, true, true), "%s(w=bf16,R=9,C=1537,inplace", op);
    }
}

/* ---- ROPE3D_FREQS / ROPE ---- */

static void case_rope_freqs(int64_t D, int64_t gt_, int64_t gh, int64_t gw, int64_t off, int64_t N, double theta) {
    int64_t fs[3] = {N, D / 2, 2};
    gt f = gt_new(PD_DTYPE_F32, 3, fs);
    PD_CHECK_OK(pd_op_rope3d_freqs(g_be, &f.t, gt_, gh, gw, off, theta));
    double *ref = calloc((size_t)(N * D), sizeof *ref);
    int64_t nh = 2 * (D / 6), nt = D - 2 * nh;
    for (int64_t n = 0; n < N; n++) {
        int64_t tok = off + n, t = tok / (gh * gw), h = (tok / gw) % gh, w = tok % gw;
        int64_t j = 0;
        /* the three axes in order, each with its own pair count and exponent base */
        for (int64_t p = 0; p < nt / 2; p++, j++) {
            double a = (double)t * pow(theta, -2.0 * (double)p / (double)nt);
            ref[(n * D / 2 + j) * 2] = cos(a), ref[(n * D / 2 + j) * 2 + 1] = sin(a);
        }
        for (int64_t p = 0; p < nh / 2; p++, j++) {
            double a = (double)h * pow(theta, -2.0 * (double)p / (double)nh);
            ref[(n * D / 2 + j) * 2] = cos(a), ref[(n * D / 2 + j) * 2 + 1] = sin(a);
        }
        for (int64_t p = 0; p < nh / 2; p++, j++) {
            double a = (double)w * pow(theta, -2.0 * (double)p / (double)nh);
            ref[(n * D / 2 + j) * 2] = cos(a), ref[(n * D / 2 + j) * 2 + 1] = sin(a);
        }
        PD_ASSERT(j == D / 2);
    }
    check_out(&f, ref, NULL, 1e-7, 1e-7);
    free(ref);
    gt_free(&f);
}

static void case_rope(int64_t B, int64_t N, int64_t H, int64_t D, bool inplace) {
    rng_seed((uint64_t)(B + N * 3 + H * 7 + D * 11));
    int64_t xs[4] = {B, N, H, D}, fs[3] = {N, D / 2, 2};
    gt x = gt_rand(PD_DTYPE_F32, 4, xs, 1.0), f = gt_new(PD_DTYPE_F32, 3, fs), y = gt_new(PD_DTYPE_F32, 4, xs);
    fill_unit_rotations(&f, N * D / 2);
    int64_t n_all = B * N * H * D;
    double *ref = calloc((size_t)n_all, sizeof *ref);
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t p = 0; p < D / 2; p++) {
                    int64_t i = ((b * N + n) * H + h) * D + 2 * p;
                    double c = gv(&f, (n * D / 2 + p) * 2), s = gv(&f, (n * D / 2 + p) * 2 + 1);
                    ref[i] = gv(&x, i) * c - gv(&x, i + 1) * s;
                    ref[i + 1] = gv(&x, i) * s + gv(&x, i + 1) * c;
                }
    if (inplace) {
        memcpy(y.t.data, x.t.data, x.bytes);
        PD_CHECK_OK(pd_op_rope(g_be, &y.t, &y.t, &f.t));
    } else {
        PD_CHECK_OK(pd_op_rope(g_be, &y.t, &x.t, &f.t));
    }
    check_out(&y, ref, NULL, 1e-6, 1e-6);
    free(ref);
    gt_free(&x), gt_free(&f), gt_free(&y);
}

static void test_rope(void) {
    RUN_BOTH(case_rope_freqs(24, 3, 5, 7, 11, 60, 10000.0), "ROPE3D_FREQS(D=24,grid=(3,5,7),offset=11,N=60");
    RUN_BOTH(case_rope_freqs(20, 2, 3, 4, 0, 24, 10000.0), "ROPE3D_FREQS(D=20,grid=(2,3,4),offset=0,N=24");
    RUN_BOTH(case_rope_freqs(128, 21, 30, 52, 32000, 760, 10000.0), "ROPE3D_FREQS(D=128,grid=(21,30,52),offset=32000,N=760");
    RUN_BOTH(case_rope(2, 11, 3, 24, false), "ROPE(B=2,N=11,H=3,D=24");
    RUN_BOTH(case_rope(1, 7, 2, 10, true), "ROPE(B=1,N=7,H=2,D=10,inplace");
}

/* ---- ATTENTION ---- */

static void case_attention(int64_t B, int64_t Nq, int64_t Nk, int64_t H, int64_t D, int64_t Dv, bool bias, bool mask) {
    rng_seed((uint64_t)(B + Nq * 3 + Nk * 5 + H * 7 + D * 11 + Dv * 13 + bias));
    int64_t qs[4] = {B, Nq, H, D}, ks[4] = {B, Nk, H, D}, vs[4] = {B, Nk, H, Dv}, os[4] = {B, Nq, H, Dv}, bs[3] = {H, Nq, Nk};
    gt q = gt_rand(PD_DTYPE_F32, 4, qs, 2.0), k = gt_rand(PD_DTYPE_F32, 4, ks, 2.0), v = gt_rand(PD_DTYPE_F32, 4, vs, 1.0);
    gt bi = bias ? gt_rand(PD_DTYPE_F32, 3, bs, 2.0) : (gt){0};
    if (mask) /* mask some keys, including every key of the first block for query 0 */
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Nq; i++)
                for (int64_t j = 0; j < Nk; j++)
                    if ((i == 0 && j < Nk - 3) || (i + j) % 5 == 0) ((float *)bi.t.data)[(h * Nq + i) * Nk + j] = -INFINITY;
    gt o = gt_new(PD_DTYPE_F32, 4, os);
    float scale = (float)(1.0 / sqrt((double)D));
    PD_CHECK_OK(pd_op_attention(g_be, &o.t, &q.t, &k.t, &v.t, bias ? &bi.t : NULL, scale));
    double *ref = calloc((size_t)(B * Nq * H * Dv), sizeof *ref), *p = calloc((size_t)Nk, sizeof *p);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Nq; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < Nk; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++) s += gv(&q, ((b * Nq + i) * H + h) * D + d) * gv(&k, ((b * Nk + j) * H + h) * D + d);
                    s *= (double)scale;
                    if (bias) s += gv(&bi, (h * Nq + i) * Nk + j);
                    p[j] = s;
                    if (s > mx) mx = s;
                }
                for (int64_t j = 0; j < Nk; j++) sum += (p[j] = exp(p[j] - mx));
                for (int64_t c = 0; c < Dv; c++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Nk; j++) acc += p[j] * gv(&v, ((b * Nk + j) * H + h) * Dv + c);
                    ref[((b * Nq + i) * H + h) * Dv + c] = acc / sum;
                }
            }
    check_out(&o, ref, NULL, 1e-5, 1e-5);
    free(ref), free(p);
    gt_free(&q), gt_free(&k), gt_free(&v), gt_free(&o);
    if (bias) gt_free(&bi);
}

static void test_attention(void) {
    RUN_BOTH(case_attention(2, 37, 53, 3, 24, 24, false, false), "ATTENTION(B=2,Nq=37,Nk=53,H=3,D=24,Dv=24,bias=0");
    RUN_BOTH(case_attention(1, 37, 53, 3, 24, 20, true, false), "ATTENTION(B=1,Nq=37,Nk=53,H=3,D=24,Dv=20,bias=1");
    RUN_BOTH(case_attention(1, 140, 300, 2, 17, 9, false, false), "ATTENTION(B=1,Nq=140,Nk=300,H=2,D=17,Dv=9,bias=0");
    RUN_BOTH(case_attention(1, 67, 261, 2, 8, 8, true, true), "ATTENTION(B=1,Nq=67,Nk=261,H=2,D=8,Dv=8,bias=masked");
    RUN_BOTH(case_attention(2, 1, 1, 1, 5, 3, false, false), "ATTENTION(B=2,Nq=1,Nk=1,H=1,D=5,Dv=3,bias=0");
}

/* ---- GELU_TANH / SILU / CLAMP ---- */

typedef enum { UN_GELU, UN_SILU, UN_CLAMP } un_kind;

static double gelu_ref(double v) { return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); }

static void case_unary(un_kind kind, int64_t R, int64_t C, bool inplace) {
    rng_seed((uint64_t)(kind * 3 + R * 5 + C));
    int64_t xs[2] = {R, C};
    gt x = gt_rand(PD_DTYPE_F32, 2, xs, 6.0), y = gt_new(PD_DTYPE_F32, 2, xs);
    gt *out = inplace ? &x : &y;
    double *ref = calloc((size_t)(R * C), sizeof *ref);
    for (int64_t i = 0; i < R * C; i++) {
        double v = gv(&x, i);
        ref[i] = kind == UN_GELU ? gelu_ref(v)
                 : kind == UN_SILU ? v / (1 + exp(-v))
                                   : (v < -1.5 ? -1.5 : v > 2.25 ? 2.25 : v);
    }
    const pd_tensor *in = inplace ? &x.t : &x.t;
    pd_status st = kind == UN_GELU ? pd_op_gelu_tanh(g_be, &out->t, in)
                   : kind == UN_SILU ? pd_op_silu(g_be, &out->t, in)
                                     : pd_op_clamp(g_be, &out->t, in, -1.5f, 2.25f);
    PD_CHECK_OK(st);
    check_out(out, ref, NULL, 2e-6, 1e-6);
    free(ref);
    gt_free(&x), gt_free(&y);
}

static void test_unary(void) {
    static const char *names[] = {"GELU_TANH", "SILU", "CLAMP"};
    for (int k = 0; k < 3; k++) {
        RUN_BOTH(case_unary((un_kind)k, 3, 7 * 13, false), "%s(shape=(3,91)", names[k]);
        RUN_BOTH(case_unary((un_kind)k, 5, 4099, true), "%s(shape=(5,4099),inplace", names[k]);
    }
}

/* ---- MODULATE / GATED_ADD ---- */

/* shift, scale and gate are rows 0, 1 and 2 of a (B, 6, C) tensor, or (B, C) tensors when !sliced. */
static void case_modulate(bool gated, int64_t B, int64_t N, int64_t C, bool sliced, bool no_gate, bool inplace) {
    rng_seed((uint64_t)(B + N * 3 + C * 5 + gated + sliced * 2));
    int64_t xs[3] = {B, N, C}, ms[3] = {B, 6, C}, m2[2] = {B, C};
    gt x = gt_rand(PD_DTYPE_F32, 3, xs, 2.0), yv = gt_rand(PD_DTYPE_F32, 3, xs, 2.0), out = gt_new(PD_DTYPE_F32, 3, xs);
    gt m6 = gt_rand(PD_DTYPE_F32, 3, ms, 1.0);
    gt sh2 = gt_rand(PD_DTYPE_F32, 2, m2, 1.0), sc2 = gt_rand(PD_DTYPE_F32, 2, m2, 1.0);
    pd_tensor rows[3];
    for (int r = 0; r < 3; r++) rows[r] = sliced ? pd_tensor_slice(&m6.t, 1, r, 1) : (r == 1 ? sc2.t : sh2.t);
    /* shift/gate = rows[0] or rows[2]; scale = rows[1] */
    const pd_tensor *first = gated ? &rows[2] : &rows[0];
    double *ref = calloc((size_t)(B * N * C), sizeof *ref);
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                int64_t i = (b * N + n) * C + c;
                double f = *(const float *)((const char *)first->data + b * first->stride[0] + c * 4);
                double s = *(const float *)((const char *)rows[1].data + b * rows[1].stride[0] + c * 4);
                ref[i] = gated ? gv(&x, i) + (no_gate ? 1.0 : f) * gv(&yv, i) : gv(&x, i) * (1 + s) + f;
            }
    if (gated) {
        memcpy(out.t.data, x.t.data, x.bytes); /* gated add accumulates into x */
        PD_CHECK_OK(pd_op_gated_add(g_be, &out.t, no_gate ? NULL : first, &yv.t));
    } else if (inplace) {
        memcpy(out.t.data, x.t.data, x.bytes);
        PD_CHECK_OK(pd_op_modulate(g_be, &out.t, &out.t, first, &rows[1]));
    } else {
        PD_CHECK_OK(pd_op_modulate(g_be, &out.t, &x.t, first, &rows[1]));
    }
    check_out(&out, ref, NULL, 1e-6, 1e-6);
    free(ref);
    gt_free(&x), gt_free(&yv), gt_free(&out), gt_free(&m6), gt_free(&sh2), gt_free(&sc2);
}

static void test_modulate(void) {
    RUN_BOTH(case_modulate(false, 2, 9, 29, true, false, false), "MODULATE(x=(2,9,29),shift=slice(2,6,29)");
    RUN_BOTH(case_modulate(false, 3, 5, 31, false, false, true), "MODULATE(x=(3,5,31),shift=(3,31),inplace");
    RUN_BOTH(case_modulate(false, 1, 700, 37, true, false, false), "MODULATE(x=(1,700,37),shift=slice(1,6,37)");
    RUN_BOTH(case_modulate(true, 2, 9, 29, true, false, false), "GATED_ADD(x=(2,9,29),gate=slice(2,6,29)");
    RUN_BOTH(case_modulate(true, 3, 5, 31, false, true, false), "GATED_ADD(x=(3,5,31),gate=NULL");
}

/* ---- fused ops: LAYER_NORM_MODULATE, LINEAR_GELU, RMS_NORM_ROPE ----
 * Each against a naive double reference written here, and against the sequence of unfused ops it
 * replaces (run on the same backend into another tensor). */

/* out matches the unfused result `seq` elementwise within atol + rtol * |seq|. */
static void check_matches_seq(const gt *out, const gt *seq, double rtol, double atol) {
    int64_t n = pd_tensor_numel(&out->t), worst = -1;
    double worst_err = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = gv(out, i), b = gv(seq, i), err = fabs(a - b);
        if (!(err <= atol + rtol * fabs(b)) && err >= worst_err) worst = i, worst_err = err;
    }
    PD_CHECK_MSG(worst < 0, "element %lld: fused %.9g, unfused sequence %.9g", (long long)worst,
                 worst >= 0 ? gv(out, worst) : 0.0, worst >= 0 ? gv(seq, worst) : 0.0);
}

/* shift and scale: rows 3 and 4 of a (B, 6, C) tensor (sliced), else (B, 1, C) tensors. */
static void case_ln_mod(int64_t B, int64_t N, int64_t C, bool sliced, bool inplace) {
    rng_seed((uint64_t)(B * 7 + N * 13 + C * 17 + sliced + inplace * 2));
    int64_t xs[3] = {B, N, C}, ms[3] = {B, 6, C}, m1[3] = {B, 1, C};
    gt x = gt_rand(PD_DTYPE_F32, 3, xs, 3.0), y = gt_new(PD_DTYPE_F32, 3, xs), seq = gt_new(PD_DTYPE_F32, 3, xs);
    for (int64_t i = 0; i < B * N * C; i++) ((float *)x.t.data)[i] += 0.75f; /* a non-zero mean */
    gt m6 = gt_rand(PD_DTYPE_F32, 3, ms, 1.0), sh1 = gt_rand(PD_DTYPE_F32, 3, m1, 1.0), sc1 = gt_rand(PD_DTYPE_F32, 3, m1, 1.0);
    pd_tensor shift = sliced ? pd_tensor_slice(&m6.t, 1, 3, 1) : sh1.t, scale = sliced ? pd_tensor_slice(&m6.t, 1, 4, 1) : sc1.t;
    const float eps = 1e-6f;
    double *ref = calloc((size_t)(B * N * C), sizeof *ref), *mag = calloc((size_t)(B * N * C), sizeof *mag);
    double *row = calloc((size_t)C, sizeof *row);
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++) {
            int64_t r = (b * N + n) * C;
            norm_row_ref(&x, r, C, false, eps, row);
            const float *shp = (const float *)((const char *)shift.data + b * shift.stride[0]);
            const float *scp = (const float *)((const char *)scale.data + b * scale.stride[0]);
            for (int64_t c = 0; c < C; c++) {
                double v = row[c];
                ref[r + c] = v * (1 + scp[c]) + shp[c];
                mag[r + c] = (fabs(v) + 1) * fabs(1 + scp[c]) + fabs(shp[c]);
            }
        }
    PD_CHECK_OK(pd_op_layer_norm(g_be, &seq.t, &x.t, NULL, NULL, eps));
    PD_CHECK_OK(pd_op_modulate(g_be, &seq.t, &seq.t, &shift, &scale));
    if (inplace) {
        memcpy(y.t.data, x.t.data, x.bytes);
        PD_CHECK_OK(pd_op_layer_norm_modulate(g_be, &y.t, &y.t, &shift, &scale, eps));
    } else {
        PD_CHECK_OK(pd_op_layer_norm_modulate(g_be, &y.t, &x.t, &shift, &scale, eps));
    }
    check_out(&y, ref, mag, 1e-5, 0);
    check_matches_seq(&y, &seq, 1e-6, 1e-6);
    free(ref), free(mag), free(row);
    gt_free(&x), gt_free(&y), gt_free(&seq), gt_free(&m6), gt_free(&sh1), gt_free(&sc1);
}

static void case_linear_gelu(pd_dtype wdt, int64_t M, int64_t K, int64_t N, bool bias, bool lead3) {
    rng_seed((uint64_t)(M * 1000003 + K * 1013 + N * 3 + wdt * 7 + bias + lead3 * 2));
    if (lead3) M = 2 * (M / 2);
    int64_t xs[3] = {2, M / 2, K}, xs2[2] = {M, K}, ws[2] = {N, K}, ys[3] = {2, M / 2, N}, ys2[2] = {M, N}, bs[1] = {N};
    gt x = lead3 ? gt_rand(PD_DTYPE_F32, 3, xs, 1.0) : gt_rand(PD_DTYPE_F32, 2, xs2, 1.0);
    gt w = gt_rand(wdt, 2, ws, 0.5), b = bias ? gt_rand(wdt, 1, bs, 1.0) : (gt){0};
    gt y = lead3 ? gt_new(PD_DTYPE_F32, 3, ys) : gt_new(PD_DTYPE_F32, 2, ys2);
    gt seq = lead3 ? gt_new(PD_DTYPE_F32, 3, ys) : gt_new(PD_DTYPE_F32, 2, ys2);
    PD_CHECK_OK(pd_op_linear_gelu(g_be, &y.t, &x.t, &w.t, bias ? &b.t : NULL));
    PD_CHECK_OK(pd_op_linear(g_be, &seq.t, &x.t, &w.t, bias ? &b.t : NULL));
    PD_CHECK_OK(pd_op_gelu_tanh(g_be, &seq.t, &seq.t));
    double *ref = calloc((size_t)(M * N), sizeof *ref), *mag = calloc((size_t)(M * N), sizeof *mag);
    linear_ref(&x, &w, bias ? &b : NULL, M, K, N, ref, mag);
    for (int64_t i = 0; i < M * N; i++) {
        ref[i] = gelu_ref(ref[i]);
        /* |gelu'| < 1.13: the GEMM's rounding (relative to the sum of |terms|) passes through at most
         * that much, plus GELU's own rounding */
        mag[i] = 1.2 * mag[i] + fabs(ref[i]);
    }
    check_out(&y, ref, mag, 2e-6, 1e-6);
    check_matches_seq(&y, &seq, 1e-6, 1e-6);
    free(ref), free(mag);
    gt_free(&x), gt_free(&w), gt_free(&y), gt_free(&seq);
    if (bias) gt_free(&b);
}

static void case_rms_rope(pd_dtype wdt, int64_t B, int64_t N, int64_t H, int64_t D, bool weighted, bool inplace) {
    rng_seed((uint64_t)(B + N * 3 + H * 7 + D * 11 + wdt * 13 + weighted + inplace * 2));
    const int64_t C = H * D;
    int64_t xs[3] = {B, N, C}, x4[4] = {B, N, H, D}, fs[3] = {N, D / 2, 2}, cs[1] = {C};
    gt x = gt_rand(PD_DTYPE_F32, 3, xs, 2.0), y = gt_new(PD_DTYPE_F32, 3, xs), seq = gt_new(PD_DTYPE_F32, 3, xs);
    gt f = gt_new(PD_DTYPE_F32, 3, fs), w = weighted ? gt_rand(wdt, 1, cs, 2.0) : (gt){0};
    fill_unit_rotations(&f, N * D / 2);
    const float eps = 1e-6f;
    double *ref = calloc((size_t)(B * N * C), sizeof *ref), *mag = calloc((size_t)(B * N * C), sizeof *mag);
    double *v = calloc((size_t)C, sizeof *v);
    for (int64_t r = 0; r < B * N; r++) {
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += gv(&x, r * C + c) * gv(&x, r * C + c);
        double inv = 1 / sqrt(ss / (double)C + eps);
        for (int64_t c = 0; c < C; c++) v[c] = gv(&x, r * C + c) * inv * (weighted ? gv(&w, c) : 1.0);
        int64_t n = r % N;
        for (int64_t h = 0; h < H; h++)
            for (int64_t p = 0; p < D / 2; p++) {
                int64_t c0 = h * D + 2 * p;
                double co = gv(&f, (n * D / 2 + p) * 2), si = gv(&f, (n * D / 2 + p) * 2 + 1);
                ref[r * C + c0] = v[c0] * co - v[c0 + 1] * si;
                ref[r * C + c0 + 1] = v[c0] * si + v[c0 + 1] * co;
                mag[r * C + c0] = mag[r * C + c0 + 1] = fabs(v[c0]) + fabs(v[c0 + 1]) + 1e-3;
            }
    }
    PD_CHECK_OK(pd_op_rms_norm(g_be, &seq.t, &x.t, weighted ? &w.t : NULL, eps));
    pd_tensor seq4 = seq.t;
    PD_CHECK_OK(pd_tensor_reshape(&seq4, 4, x4));
    PD_CHECK_OK(pd_op_rope(g_be, &seq4, &seq4, &f.t));
    if (inplace) {
        memcpy(y.t.data, x.t.data, x.bytes);
        PD_CHECK_OK(pd_op_rms_norm_rope(g_be, &y.t, &y.t, weighted ? &w.t : NULL, &f.t, (int)H, eps));
    } else {
        PD_CHECK_OK(pd_op_rms_norm_rope(g_be, &y.t, &x.t, weighted ? &w.t : NULL, &f.t, (int)H, eps));
    }
    check_out(&y, ref, mag, 1e-5, 0);
    check_matches_seq(&y, &seq, 1e-6, 1e-6);
    free(ref), free(mag), free(v);
    gt_free(&x), gt_free(&y), gt_free(&seq), gt_free(&f);
    if (weighted) gt_free(&w);
}

static void test_fused(void) {
    RUN_BOTH(case_ln_mod(2, 9, 29, true, false), "LAYER_NORM_MODULATE(x=(2,9,29),shift=slice(2,6,29)");
    RUN_BOTH(case_ln_mod(3, 5, 31, false, true), "LAYER_NORM_MODULATE(x=(3,5,31),shift=(3,1,31),inplace");
    RUN_BOTH(case_ln_mod(1, 700, 37, true, false), "LAYER_NORM_MODULATE(x=(1,700,37),shift=slice(1,6,37)");
    RUN_BOTH(case_ln_mod(2, 5, 1537, true, true), "LAYER_NORM_MODULATE(x=(2,5,1537),shift=slice(2,6,1537),inplace");
    static const int64_t sizes[][3] = {{7, 13, 29}, {70, 33, 300}, {130, 64, 5}, {3, 0, 5}};
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            int64_t M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
            RUN_BOTH(case_linear_gelu(pd_test_wdts[d], M, K, N, s != 2, false), "LINEAR_GELU(w=%s,M=%lld,K=%lld,N=%lld,bias=%d",
                     pd_test_dtype_name(pd_test_wdts[d]), (long long)M, (long long)K, (long long)N, s != 2);
        }
    RUN_BOTH(case_linear_gelu(PD_DTYPE_BF16, 14, 13, 29, true, true), "LINEAR_GELU(w=bf16,x=(2,7,13),N=29,bias=1");
    for (int d = 0; d < 3; d++)
        RUN_BOTH(case_rms_rope(pd_test_wdts[d], 2, 11, 3, 24, true, false), "RMS_NORM_ROPE(w=%s,B=2,N=11,H=3,D=24",
                 pd_test_dtype_name(pd_test_wdts[d]));
    RUN_BOTH(case_rms_rope(PD_DTYPE_F32, 1, 7, 5, 10, false, true), "RMS_NORM_ROPE(w=none,B=1,N=7,H=5,D=10,inplace");
    RUN_BOTH(case_rms_rope(PD_DTYPE_BF16, 3, 301, 2, 14, true, true), "RMS_NORM_ROPE(w=bf16,B=3,N=301,H=2,D=14,inplace");
    RUN_BOTH(case_rms_rope(PD_DTYPE_BF16, 1, 13, 12, 128, true, false), "RMS_NORM_ROPE(w=bf16,B=1,N=13,H=12,D=128");
}

/* ---- ADD / MUL ---- */

static void case_binary(bool mul, int and, const int64_t *as, int bnd, const int64_t *bsh, pd_dtype bdt, bool inplace) {
    rng_seed((uint64_t)(mul + and * 3 + bnd * 5 + bdt * 7));
    gt a = gt_rand(PD_DTYPE_F32, and, as, 2.0), b = gt_rand(bdt, bnd, bsh, 2.0), y = gt_new(PD_DTYPE_F32, and, as);
    int64_t n = pd_tensor_numel(&a.t);
    double *ref = calloc((size_t)(n ? n : 1), sizeof *ref);
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, bi = 0, bst = 1;
        for (int d = and - 1, bd = bnd - 1; d >= 0; d--, bd--) {
            int64_t idx = rem % as[d];
            rem /= as[d];
            if (bd >= 0) {
                if (bsh[bd] != 1) bi += idx * bst;
                bst *= bsh[bd];
            }
        }
        ref[i] = mul ? gv(&a, i) * gv(&b, bi) : gv(&a, i) + gv(&b, bi);
    }
    gt *out = inplace ? &a : &y;
    PD_CHECK_OK(mul ? pd_op_mul(g_be, &out->t, &a.t, &b.t) : pd_op_add(g_be, &out->t, &a.t, &b.t));
    check_out(out, ref, NULL, 1e-6, 1e-7);
    free(ref);
    gt_free(&a), gt_free(&b), gt_free(&y);
}

static void test_binary(void) {
    static const int64_t as[3] = {3, 5, 7};
    static const struct {
        int nd;
        int64_t shape[3];
        const char *name;
    } bs[] = {{3, {3, 5, 7}, "(3,5,7)"}, {1, {7}, "(7)"}, {2, {5, 1}, "(5,1)"}, {3, {3, 1, 7}, "(3,1,7)"},
              {1, {1}, "(1)"}, {0, {0}, "()"}, {2, {1, 7}, "(1,7)"}};
    for (int mul = 0; mul < 2; mul++)
        for (size_t i = 0; i < sizeof bs / sizeof *bs; i++)
            for (int d = 0; d < 3; d += 1)
                RUN_BOTH(case_binary(mul, 3, as, bs[i].nd, bs[i].shape, pd_test_wdts[d], i == 1), "%s(a=(3,5,7),b=%s %s%s",
                         mul ? "MUL" : "ADD", bs[i].name, pd_test_dtype_name(pd_test_wdts[d]), i == 1 ? ",inplace" : "");
    static const int64_t big[2] = {9, 4001}, brow[1] = {4001};
    RUN_BOTH(case_binary(false, 2, big, 1, brow, PD_DTYPE_F32, false), "ADD(a=(9,4001),b=(4001) f32");
}

/* ---- TIMESTEP_EMBED ---- */

static void case_timestep(int64_t B, int64_t F) {
    int64_t ts[1] = {B}, os[2] = {B, F};
    gt t = gt_new(PD_DTYPE_F32, 1, ts), o = gt_new(PD_DTYPE_F32, 2, os);
    static const float tv[] = {0.0f, 1.5f, 999.0f, 500.25f, 37.0f};
    for (int64_t b = 0; b < B; b++) ((float *)t.t.data)[b] = tv[b % 5];
    PD_CHECK_OK(pd_op_timestep_embed(g_be, &o.t, &t.t));
    double *ref = calloc((size_t)(B * F), sizeof *ref);
    int64_t half = F / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < half; i++) {
            double a = (double)tv[b % 5] * pow(10000.0, -(double)i / (double)half);
            ref[b * F + i] = cos(a);
            ref[b * F + half + i] = sin(a);
        }
    check_out(&o, ref, NULL, 0, 1e-7);
    free(ref);
    gt_free(&t), gt_free(&o);
}

static void test_timestep(void) {
    RUN_BOTH(case_timestep(5, 256), "TIMESTEP_EMBED(B=5,F=256");
    RUN_BOTH(case_timestep(3, 6), "TIMESTEP_EMBED(B=3,F=6");
}

/* ---- PATCHIFY / UNPATCHIFY ---- */

static void case_patch(bool un, int64_t C, int64_t T, int64_t H, int64_t W, int pt, int ph, int pw) {
    rng_seed((uint64_t)(C + T * 3 + H * 5 + W * 7 + pt + un));
    int64_t ls[4] = {C, T, H, W}, N = (T / pt) * (H / ph) * (W / pw), D = C * pt * ph * pw, tsh[2] = {N, D};
    gt in = un ? gt_rand(PD_DTYPE_F32, 2, tsh, 1.0) : gt_rand(PD_DTYPE_F32, 4, ls, 1.0);
    gt out = un ? gt_new(PD_DTYPE_F32, 4, ls) : gt_new(PD_DTYPE_F32, 2, tsh);
    double *ref = calloc((size_t)(N * D), sizeof *ref);
    for (int64_t c = 0; c < C; c++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    int64_t li = ((c * T + t) * H + h) * W + w;
                    int64_t n = ((t / pt) * (H / ph) + h / ph) * (W / pw) + w / pw;
                    int64_t a = t % pt, b = h % ph, e = w % pw;
                    if (un) ref[li] = gv(&in, n * D + ((a * ph + b) * pw + e) * C + c);
                    else ref[n * D + ((c * pt + a) * ph + b) * pw + e] = gv(&in, li);
                }
    if (un) PD_CHECK_OK(pd_op_unpatchify(g_be, &out.t, &in.t, pt, ph, pw));
    else PD_CHECK_OK(pd_op_patchify(g_be, &out.t, &in.t, pt, ph, pw));
    check_out(&out, ref, NULL, 0, 0);
    free(ref);
    gt_free(&in), gt_free(&out);
}

static void test_patch(void) {
    for (int un = 0; un < 2; un++) {
        const char *op = un ? "UNPATCHIFY" : "PATCHIFY";
        RUN_BOTH(case_patch(un, 3, 4, 6, 10, 1, 2, 2), "%s(latent=(3,4,6,10),patch=(1,2,2)", op);
        RUN_BOTH(case_patch(un, 5, 4, 6, 10, 2, 3, 5), "%s(latent=(5,4,6,10),patch=(2,3,5)", op);
    }
}

/* ---- COPY ---- */

/* dst (dtype ddt, contiguous (B, A)) = transpose of src (A, B) in sdt. */
static void case_copy(pd_dtype sdt, pd_dtype ddt, int64_t A, int64_t B) {
    rng_seed((uint64_t)(sdt * 3 + ddt * 5 + A + B));
    int64_t ss[2] = {A, B}, ds[2] = {B, A};
    gt s = gt_rand(sdt, 2, ss, 3.0), d = gt_new(ddt, 2, ds);
    pd_tensor tv = s.t; /* (B, A) view of src */
    tv.shape[0] = B, tv.shape[1] = A, tv.stride[0] = s.t.stride[1], tv.stride[1] = s.t.stride[0];
    PD_CHECK_OK(pd_op_copy(g_be, &d.t, &tv));
    double *ref = calloc((size_t)(A * B), sizeof *ref);
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < A; j++) {
            double v = gv(&s, j * B + i);
            /* narrowing: the stored value is the nearest in the destination dtype */
            float f = (float)v;
            if (ddt == PD_DTYPE_BF16) v = pd_bf16_to_f32(pd_f32_to_bf16(f));
            else if (ddt == PD_DTYPE_F16) v = pd_f16_to_f32(pd_f32_to_f16(f));
            ref[i * A + j] = v;
        }
    check_out(&d, ref, NULL, 0, 0);
    free(ref);
    gt_free(&s), gt_free(&d);
}

/* Contiguous innermost rows (the fast row path): dst bf16 (300, 3, 77) = src[:, 1:4, :] f32. */
static void case_copy_rows(void) {
    rng_seed(77);
    int64_t ss[3] = {300, 5, 77}, ds[3] = {300, 3, 77};
    gt s = gt_rand(PD_DTYPE_F32, 3, ss, 3.0), d = gt_new(PD_DTYPE_BF16, 3, ds);
    pd_tensor v = pd_tensor_slice(&s.t, 1, 1, 3);
    PD_CHECK_OK(pd_op_copy(g_be, &d.t, &v));
    double *ref = calloc(300 * 3 * 77, sizeof *ref);
    for (int64_t i = 0; i < 300; i++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t k = 0; k < 77; k++)
                ref[(i * 3 + c) * 77 + k] = pd_bf16_to_f32(pd_f32_to_bf16((float)gv(&s, (i * 5 + c + 1) * 77 + k)));
    check_out(&d, ref, NULL, 0, 0);
    free(ref);
    gt_free(&s), gt_free(&d);
}

static void test_copy(void) {
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            const pd_dtype sdt = pd_test_wdts[a], ddt = pd_test_wdts[b];
            const char *sn = pd_test_dtype_name(sdt), *dn = pd_test_dtype_name(ddt);
            RUN_BOTH(case_copy(sdt, ddt, 7, 13), "COPY(src=%s transposed (13,7),dst=%s", sn, dn);
            RUN_BOTH(case_copy(sdt, ddt, 301, 257), "COPY(src=%s transposed (257,301),dst=%s", sn, dn);
        }
    RUN_BOTH(case_copy_rows(), "COPY(src=f32 slice (300,3,77) of (300,5,77),dst=bf16");
}

/* ---- CONV3D ---- */

static void case_conv(pd_dtype wdt, int64_t Cin, int64_t Cout, int64_t T, int64_t H, int64_t W, int64_t kt, int64_t kh,
                      int64_t kw, const int pad[6], bool bias) {
    rng_seed((uint64_t)(wdt + Cin * 3 + Cout * 5 + T * 7 + H * 11 + W * 13 + kt * 17 + kh * 19 + kw * 23 + pad[0] + pad[3]));
    int64_t To = T + pad[0] + pad[1] - kt + 1, Ho = H + pad[2] + pad[3] - kh + 1, Wo = W + pad[4] + pad[5] - kw + 1;
    int64_t xs[4] = {Cin, T, H, W}, ws[5] = {Cout, Cin, kt, kh, kw}, ys[4] = {Cout, To, Ho, Wo}, bs[1] = {Cout};
    gt x = gt_rand(PD_DTYPE_F32, 4, xs, 1.0), w = gt_rand(wdt, 5, ws, 0.5), y = gt_new(PD_DTYPE_F32, 4, ys);
    gt b = bias ? gt_rand(wdt, 1, bs, 1.0) : (gt){0};
    PD_CHECK_OK(pd_op_conv3d(g_be, &y.t, &x.t, &w.t, bias ? &b.t : NULL, pad));
    int64_t n = Cout * To * Ho * Wo;
    double *ref = calloc((size_t)n, sizeof *ref), *mag = calloc((size_t)n, sizeof *mag);
    for (int64_t co = 0; co < Cout; co++)
        for (int64_t t = 0; t < To; t++)
            for (int64_t h = 0; h < Ho; h++)
                for (int64_t ww = 0; ww < Wo; ww++) {
                    double s = bias ? gv(&b, co) : 0, m = fabs(s);
                    for (int64_t ci = 0; ci < Cin; ci++)
                        for (int64_t a = 0; a < kt; a++)
                            for (int64_t bb = 0; bb < kh; bb++)
                                for (int64_t e = 0; e < kw; e++) {
                                    int64_t ti = t + a - pad[0], hi = h + bb - pad[2], wi = ww + e - pad[4];
                                    if (ti < 0 || ti >= T || hi < 0 || hi >= H || wi < 0 || wi >= W) continue;
                                    double p = gv(&x, ((ci * T + ti) * H + hi) * W + wi) *
                                               gv(&w, (((co * Cin + ci) * kt + a) * kh + bb) * kw + e);
                                    s += p;
                                    m += fabs(p);
                                }
                    int64_t i = ((co * To + t) * Ho + h) * Wo + ww;
                    ref[i] = s;
                    mag[i] = m;
                }
    check_out(&y, ref, mag, 2e-6, 1e-30);
    free(ref), free(mag);
    gt_free(&x), gt_free(&w), gt_free(&y);
    if (bias) gt_free(&b);
}

static void test_conv(void) {
    static const struct {
        int64_t kt, kh, kw;
        int pad[6];
    } ks[] = {
        {3, 3, 3, {2, 0, 1, 1, 1, 1}}, /* causal */
        {3, 3, 3, {0, 1, 2, 0, 0, 2}}, /* asymmetric */
        {3, 1, 1, {2, 0, 0, 0, 0, 0}},
        {1, 1, 1, {0, 0, 0, 0, 0, 0}}, /* direct */
        {1, 1, 1, {1, 0, 0, 1, 2, 0}},
        {1, 3, 3, {0, 0, 1, 1, 1, 1}}, /* 2D */
    };
    /* Cout = 5 takes the few-output-channel path, Cout = 11 the patch-matrix + sgemm path */
    for (int co = 5; co <= 11; co += 6)
        for (int d = 0; d < 3; d++)
            for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
                const int *p = ks[i].pad;
                RUN_BOTH(case_conv(pd_test_wdts[d], 3, co, 4, 6, 7, ks[i].kt, ks[i].kh, ks[i].kw, p, d != 2),
                         "CONV3D(w=%s,Cin=3,Cout=%d,x=(3,4,6,7),k=%lldx%lldx%lld,pad={%d,%d,%d,%d,%d,%d},bias=%d",
                         pd_test_dtype_name(pd_test_wdts[d]), co, (long long)ks[i].kt, (long long)ks[i].kh,
                         (long long)ks[i].kw, p[0], p[1], p[2], p[3], p[4], p[5], d != 2);
            }
    static const int pad1[6] = {2, 0, 1, 1, 1, 1};
    RUN_BOTH(case_conv(PD_DTYPE_BF16, 8, 9, 2, 9, 700, 3, 3, 3, pad1, true),
             "CONV3D(w=bf16,Cin=8,Cout=9,x=(8,2,9,700),k=3x3x3,pad={2,0,1,1,1,1},bias=1");
    RUN_BOTH(case_conv(PD_DTYPE_F16, 8, 3, 2, 9, 700, 3, 3, 3, pad1, true),
             "CONV3D(w=f16,Cin=8,Cout=3,x=(8,2,9,700),k=3x3x3,pad={2,0,1,1,1,1},bias=1");
    static const int pad0[6] = {0};
    RUN_BOTH(case_conv(PD_DTYPE_F32, 1200, 10, 1, 3, 1000, 1, 1, 1, pad0, false),
             "CONV3D(w=f32,Cin=1200,Cout=10,x=(1200,1,3,1000),k=1x1x1,pad=0,bias=0");
}

/* ---- UPSAMPLE_NEAREST2D ---- */

static void case_upsample(int64_t C, int64_t T, int64_t H, int64_t W) {
    rng_seed((uint64_t)(C + T + H + W));
    int64_t xs[4] = {C, T, H, W}, ys[4] = {C, T, 2 * H, 2 * W};
    gt x = gt_rand(PD_DTYPE_F32, 4, xs, 1.0), y = gt_new(PD_DTYPE_F32, 4, ys);
    PD_CHECK_OK(pd_op_upsample_nearest2d(g_be, &y.t, &x.t));
    double *ref = calloc((size_t)(C * T * 4 * H * W), sizeof *ref);
    for (int64_t p = 0; p < C * T; p++)
        for (int64_t h = 0; h < 2 * H; h++)
            for (int64_t w = 0; w < 2 * W; w++) ref[(p * 2 * H + h) * 2 * W + w] = gv(&x, (p * H + h / 2) * W + w / 2);
    check_out(&y, ref, NULL, 0, 0);
    free(ref);
    gt_free(&x), gt_free(&y);
}

/* ---- CHANNEL_RMS_NORM ---- */

static void case_cnorm(pd_dtype wdt, int nd, const int64_t *xs, bool bias, bool inplace) {
    rng_seed((uint64_t)(wdt + nd * 3 + xs[0] * 5 + bias));
    int64_t C = xs[0], cs[1] = {C};
    gt x = gt_rand(PD_DTYPE_F32, nd, xs, 2.0), y = gt_new(PD_DTYPE_F32, nd, xs);
    int64_t n = pd_tensor_numel(&x.t), P = n / C;
    for (int64_t c = 0; c < C; c++) ((float *)x.t.data)[c * P + 1] = 0.0f; /* one all-zero position */
    gt g = gt_rand(wdt, 1, cs, 2.0), b = bias ? gt_rand(wdt, 1, cs, 1.0) : (gt){0};
    double *ref = calloc((size_t)n, sizeof *ref), *mag = calloc((size_t)n, sizeof *mag);
    float eps = 1e-12f;
    for (int64_t p = 0; p < P; p++) {
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += gv(&x, c * P + p) * gv(&x, c * P + p);
        double norm = sqrt(ss) > eps ? sqrt(ss) : eps;
        for (int64_t c = 0; c < C; c++) {
            double v = gv(&x, c * P + p) / norm * sqrt((double)C) * gv(&g, c);
            ref[c * P + p] = v + (bias ? gv(&b, c) : 0);
            mag[c * P + p] = fabs(v) + (bias ? fabs(gv(&b, c)) : 0);
        }
    }
    gt *out = inplace ? &x : &y;
    PD_CHECK_OK(pd_op_channel_rms_norm(g_be, &out->t, &x.t, &g.t, bias ? &b.t : NULL, eps));
    check_out(out, ref, mag, 1e-5, 1e-30);
    free(ref), free(mag);
    gt_free(&x), gt_free(&y), gt_free(&g);
    if (bias) gt_free(&b);
}

/* ---- EMBEDDING ---- */

static void case_embedding(pd_dtype wdt, int64_t V, int64_t D, int64_t L) {
    rng_seed((uint64_t)(wdt + V + D + L));
    int64_t ts[2] = {V, D}, is[1] = {L}, os[2] = {L, D};
    gt tab = gt_rand(wdt, 2, ts, 1.0), ids = gt_new(PD_DTYPE_I32, 1, is), o = gt_new(PD_DTYPE_F32, 2, os);
    for (int64_t i = 0; i < L; i++) ((int32_t *)ids.t.data)[i] = (int32_t)((i * 7 + 3) % V);
    ((int32_t *)ids.t.data)[0] = (int32_t)(V - 1);
    PD_CHECK_OK(pd_op_embedding(g_be, &o.t, &ids.t, &tab.t));
    double *ref = calloc((size_t)(L * D), sizeof *ref);
    for (int64_t i = 0; i < L; i++)
        for (int64_t d = 0; d < D; d++) ref[i * D + d] = gv(&tab, ((int32_t *)ids.t.data)[i] * D + d);
    check_out(&o, ref, NULL, 0, 0);
    free(ref);
    gt_free(&tab), gt_free(&ids), gt_free(&o);
}

static void test_vae_ops(void) {
    RUN_BOTH(case_upsample(3, 2, 5, 7), "UPSAMPLE_NEAREST2D(x=(3,2,5,7)");
    static const int64_t x4[4] = {5, 3, 7, 11}, x2[2] = {7, 1300};
    for (int d = 0; d < 3; d++)
        RUN_BOTH(case_cnorm(pd_test_wdts[d], 4, x4, true, false), "CHANNEL_RMS_NORM(gamma=%s,x=(5,3,7,11),bias=1",
                 pd_test_dtype_name(pd_test_wdts[d]));
    RUN_BOTH(case_cnorm(PD_DTYPE_F32, 2, x2, false, true), "CHANNEL_RMS_NORM(gamma=f32,x=(7,1300),bias=0,inplace");
    for (int d = 0; d < 3; d++)
        RUN_BOTH(case_embedding(pd_test_wdts[d], 11, 13, 9), "EMBEDDING(table=%s,V=11,D=13,L=9",
                 pd_test_dtype_name(pd_test_wdts[d]));
}

/* ---- bad arguments: PD_ERR_INVALID, a message naming the op, output untouched ---- */

#define CHECK_BAD(op_name, out, expr)                                                              \
    do {                                                                                           \
        pd_error_set(PD_OK, "%s", "");                                                             \
        pd_status st_b = (expr);                                                                   \
        PD_CHECK_MSG(st_b == PD_ERR_INVALID, "%s: got %s", op_name, pd_status_name(st_b));         \
        PD_CHECK_MSG(strstr(pd_error_msg(), op_name) != NULL, "message \"%s\" does not name %s",   \
                     pd_error_msg(), op_name);                                                     \
        PD_CHECK_MSG(gt_untouched(out), "%s wrote its output on bad arguments", op_name);         \
    } while (0)

static void test_bad_args(void) {
    pd_backend *be = g_bes[1];
    int64_t s37[2] = {3, 7}, s56[2] = {5, 6}, s35[2] = {3, 5}, s5[1] = {5}, s6[1] = {6}, s4x[4] = {2, 5, 3, 8};
    gt x = gt_rand(PD_DTYPE_F32, 2, s37, 1), w = gt_rand(PD_DTYPE_BF16, 2, s56, 1), y = gt_new(PD_DTYPE_F32, 2, s35);
    CHECK_BAD("LINEAR", &y, pd_op_linear(be, &y.t, &x.t, &w.t, NULL));
    PD_CHECK(strstr(pd_error_msg(), "(3, 7)") && strstr(pd_error_msg(), "(5, 6)"));
    gt w7 = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){5, 7}, 1), b6 = gt_rand(PD_DTYPE_F32, 1, s6, 1);
    CHECK_BAD("LINEAR", &y, pd_op_linear(be, &y.t, &x.t, &w7.t, &b6.t));
    pd_tensor yx = x.t; /* y aliasing x */
    gt y2 = gt_new(PD_DTYPE_F32, 2, s37);
    CHECK_BAD("LINEAR", &y2, pd_op_linear(be, &yx, &x.t, &w7.t, NULL));
    gt xi = gt_new(PD_DTYPE_I32, 2, s37);
    CHECK_BAD("LINEAR", &y, pd_op_linear(be, &y.t, &xi.t, &w7.t, NULL));

    gt g6 = gt_rand(PD_DTYPE_F32, 1, s6, 1);
    CHECK_BAD("LAYER_NORM", &y2, pd_op_layer_norm(be, &y2.t, &x.t, &g6.t, NULL, 1e-6f));
    CHECK_BAD("LAYER_NORM", &y, pd_op_layer_norm(be, &y.t, &x.t, NULL, NULL, 1e-6f));
    CHECK_BAD("RMS_NORM", &y2, pd_op_rms_norm(be, &y2.t, &x.t, &g6.t, 1e-6f));
    gt g5 = gt_rand(PD_DTYPE_F32, 1, s5, 1);
    CHECK_BAD("CHANNEL_RMS_NORM", &y2, pd_op_channel_rms_norm(be, &y2.t, &x.t, &g5.t, NULL, 1e-12f));

    gt fr = gt_new(PD_DTYPE_F32, 3, (int64_t[]){10, 12, 2});
    CHECK_BAD("ROPE3D_FREQS", &fr, pd_op_rope3d_freqs(be, &fr.t, 2, 2, 2, 0, 10000.0)); /* 10 > 8 tokens */
    gt rx = gt_rand(PD_DTYPE_F32, 4, s4x, 1), ry = gt_new(PD_DTYPE_F32, 4, s4x);
    gt fr2 = gt_rand(PD_DTYPE_F32, 3, (int64_t[]){5, 3, 2}, 1);
    CHECK_BAD("ROPE", &ry, pd_op_rope(be, &ry.t, &rx.t, &fr2.t));

    gt q = gt_rand(PD_DTYPE_F32, 4, (int64_t[]){1, 4, 2, 8}, 1), k = gt_rand(PD_DTYPE_F32, 4, (int64_t[]){1, 5, 2, 7}, 1);
    gt v = gt_rand(PD_DTYPE_F32, 4, (int64_t[]){1, 5, 2, 8}, 1), ao = gt_new(PD_DTYPE_F32, 4, (int64_t[]){1, 4, 2, 8});
    CHECK_BAD("ATTENTION", &ao, pd_op_attention(be, &ao.t, &q.t, &k.t, &v.t, NULL, 1.0f));
    gt k8 = gt_rand(PD_DTYPE_F32, 4, (int64_t[]){1, 5, 2, 8}, 1), bb = gt_rand(PD_DTYPE_F32, 3, (int64_t[]){2, 4, 4}, 1);
    CHECK_BAD("ATTENTION", &ao, pd_op_attention(be, &ao.t, &q.t, &k8.t, &v.t, &bb.t, 1.0f));

    CHECK_BAD("GELU_TANH", &y, pd_op_gelu_tanh(be, &y.t, &x.t));
    CHECK_BAD("SILU", &y, pd_op_silu(be, &y.t, &x.t));
    CHECK_BAD("CLAMP", &y, pd_op_clamp(be, &y.t, &x.t, -1, 1));
    CHECK_BAD("CLAMP", &y2, pd_op_clamp(be, &y2.t, &x.t, 1, -1));

    gt mx = gt_rand(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 7}, 1), my = gt_new(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 7});
    gt sh = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){2, 6}, 1), sc = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){2, 7}, 1);
    CHECK_BAD("MODULATE", &my, pd_op_modulate(be, &my.t, &mx.t, &sh.t, &sc.t));
    pd_tensor strided = sc.t; /* non-unit stride along C */
    strided.shape[1] = 3, strided.stride[1] = 8;
    gt sc3 = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){2, 3}, 1);
    gt mx3 = gt_rand(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 3}, 1), my3 = gt_new(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 3});
    CHECK_BAD("MODULATE", &my3, pd_op_modulate(be, &my3.t, &mx3.t, &sc3.t, &strided));
    gt ga = gt_new(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 7});
    memset(ga.base, PATTERN, ga.bytes + 2 * GUARD);
    CHECK_BAD("GATED_ADD", &ga, pd_op_gated_add(be, &ga.t, &sh.t, &mx.t));

    gt ab = gt_rand(PD_DTYPE_F32, 1, (int64_t[]){3}, 1);
    CHECK_BAD("ADD", &my, pd_op_add(be, &my.t, &mx.t, &ab.t));
    CHECK_BAD("MUL", &my, pd_op_mul(be, &my.t, &mx.t, &ab.t));

    gt te = gt_new(PD_DTYPE_F32, 2, (int64_t[]){3, 7}), tt = gt_rand(PD_DTYPE_F32, 1, (int64_t[]){3}, 1);
    CHECK_BAD("TIMESTEP_EMBED", &te, pd_op_timestep_embed(be, &te.t, &tt.t)); /* odd F */

    gt lat = gt_rand(PD_DTYPE_F32, 4, (int64_t[]){2, 2, 4, 6}, 1), tok = gt_new(PD_DTYPE_F32, 2, (int64_t[]){12, 9});
    CHECK_BAD("PATCHIFY", &tok, pd_op_patchify(be, &tok.t, &lat.t, 1, 2, 2));
    gt lat2 = gt_new(PD_DTYPE_F32, 4, (int64_t[]){2, 2, 5, 6}), tok2 = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){12, 8}, 1);
    CHECK_BAD("UNPATCHIFY", &lat2, pd_op_unpatchify(be, &lat2.t, &tok2.t, 1, 2, 2));

    gt cd = gt_new(PD_DTYPE_F32, 2, (int64_t[]){7, 3});
    CHECK_BAD("COPY", &cd, pd_op_copy(be, &cd.t, &x.t));
    gt cdi = gt_new(PD_DTYPE_I32, 2, s37);
    CHECK_BAD("COPY", &cdi, pd_op_copy(be, &cdi.t, &x.t));

    gt cx = gt_rand(PD_DTYPE_F32, 4, (int64_t[]){3, 4, 6, 7}, 1), cw = gt_rand(PD_DTYPE_F16, 5, (int64_t[]){5, 3, 3, 3, 3}, 1);
    gt cy = gt_new(PD_DTYPE_F32, 4, (int64_t[]){5, 4, 6, 7}); /* needs (5, 2, 4, 5) without padding */
    static const int nopad[6] = {0};
    CHECK_BAD("CONV3D", &cy, pd_op_conv3d(be, &cy.t, &cx.t, &cw.t, NULL, nopad));
    gt cw4 = gt_rand(PD_DTYPE_F32, 5, (int64_t[]){5, 4, 1, 1, 1}, 1);
    CHECK_BAD("CONV3D", &cy, pd_op_conv3d(be, &cy.t, &cx.t, &cw4.t, NULL, nopad));

    gt uy = gt_new(PD_DTYPE_F32, 4, (int64_t[]){3, 4, 12, 13});
    CHECK_BAD("UPSAMPLE_NEAREST2D", &uy, pd_op_upsample_nearest2d(be, &uy.t, &cx.t));

    gt tab = gt_rand(PD_DTYPE_BF16, 2, (int64_t[]){11, 4}, 1), ids = gt_new(PD_DTYPE_I32, 1, (int64_t[]){3});
    gt eo = gt_new(PD_DTYPE_F32, 2, (int64_t[]){3, 4});
    ((int32_t *)ids.t.data)[0] = 2, ((int32_t *)ids.t.data)[1] = 11, ((int32_t *)ids.t.data)[2] = 0;
    CHECK_BAD("EMBEDDING", &eo, pd_op_embedding(be, &eo.t, &ids.t, &tab.t));
    PD_CHECK_MSG(strstr(pd_error_msg(), "11") != NULL, "message \"%s\" does not name the id", pd_error_msg());
    ((int32_t *)ids.t.data)[1] = -1;
    CHECK_BAD("EMBEDDING", &eo, pd_op_embedding(be, &eo.t, &ids.t, &tab.t));
    gt eo5 = gt_new(PD_DTYPE_F32, 2, (int64_t[]){3, 5});
    ((int32_t *)ids.t.data)[1] = 1;
    CHECK_BAD("EMBEDDING", &eo5, pd_op_embedding(be, &eo5.t, &ids.t, &tab.t));

    gt *all[] = {&x, &w, &y, &w7, &b6, &y2, &xi, &g6, &g5, &fr, &rx, &ry, &fr2, &q, &k, &v, &ao, &k8, &bb, &mx, &my,
                 &sh, &sc, &sc3, &mx3, &my3, &ga, &ab, &te, &tt, &lat, &tok, &lat2, &tok2, &cd, &cdi, &cx, &cw, &cy,
                 &cw4, &uy, &tab, &ids, &eo, &eo5};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) gt_free(all[i]);
}

static void test_fused_bad_args(void) {
    pd_backend *be = g_bes[1];
    gt x = gt_rand(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 8}, 1), y = gt_new(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 8});
    gt sh7 = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){2, 7}, 1), sc = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){2, 8}, 1);
    gt sh = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){2, 8}, 1);
    CHECK_BAD("LAYER_NORM_MODULATE", &y, pd_op_layer_norm_modulate(be, &y.t, &x.t, &sh7.t, &sc.t, 1e-6f));
    CHECK_BAD("LAYER_NORM_MODULATE", &y, pd_op_layer_norm_modulate(be, &y.t, &x.t, &sh.t, &sc.t, -1.0f));
    pd_tensor x2 = x.t; /* (6, 8): not (B, N, C) */
    PD_CHECK_OK(pd_tensor_reshape(&x2, 2, (int64_t[]){6, 8}));
    gt y2 = gt_new(PD_DTYPE_F32, 2, (int64_t[]){6, 8});
    CHECK_BAD("LAYER_NORM_MODULATE", &y2, pd_op_layer_norm_modulate(be, &y2.t, &x2, &sh.t, &sc.t, 1e-6f));

    gt w = gt_rand(PD_DTYPE_BF16, 2, (int64_t[]){5, 7}, 1), ly = gt_new(PD_DTYPE_F32, 3, (int64_t[]){2, 3, 5});
    CHECK_BAD("LINEAR_GELU", &ly, pd_op_linear_gelu(be, &ly.t, &x.t, &w.t, NULL)); /* K 8 vs 7 */
    gt w8 = gt_rand(PD_DTYPE_F32, 2, (int64_t[]){5, 8}, 1), b6 = gt_rand(PD_DTYPE_F32, 1, (int64_t[]){6}, 1);
    CHECK_BAD("LINEAR_GELU", &ly, pd_op_linear_gelu(be, &ly.t, &x.t, &w8.t, &b6.t));

    gt f = gt_rand(PD_DTYPE_F32, 3, (int64_t[]){3, 2, 2}, 1), w5 = gt_rand(PD_DTYPE_F32, 1, (int64_t[]){5}, 1);
    CHECK_BAD("RMS_NORM_ROPE", &y, pd_op_rms_norm_rope(be, &y.t, &x.t, NULL, &f.t, 3, 1e-6f)); /* 8 % 3 */
    CHECK_BAD("RMS_NORM_ROPE", &y, pd_op_rms_norm_rope(be, &y.t, &x.t, NULL, &f.t, 8, 1e-6f)); /* D = 1 */
    CHECK_BAD("RMS_NORM_ROPE", &y, pd_op_rms_norm_rope(be, &y.t, &x.t, NULL, &f.t, 0, 1e-6f));
    CHECK_BAD("RMS_NORM_ROPE", &y, pd_op_rms_norm_rope(be, &y.t, &x.t, NULL, &f.t, 1, 1e-6f)); /* freqs for D = 4 */
    CHECK_BAD("RMS_NORM_ROPE", &y, pd_op_rms_norm_rope(be, &y.t, &x.t, &w5.t, &f.t, 2, 1e-6f));
    PD_CHECK_OK(pd_op_rms_norm_rope(be, &y.t, &x.t, NULL, &f.t, 2, 1e-6f)); /* the same call, well formed */

    gt *all[] = {&x, &y, &sh7, &sc, &sh, &y2, &w, &ly, &w8, &b6, &f, &w5};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) gt_free(all[i]);
}

/* ---- backend calls ---- */

static void test_backend_calls(void) {
    pd_backend *be = g_bes[1];
    PD_CHECK(!strcmp(pd_backend_name(be), "cpu"));
    PD_CHECK(pd_backend_device(be) == PD_DEVICE_CPU);
    PD_CHECK(pd_backend_threads(be) == 3);
    for (int op = 0; op < PD_OP_COUNT; op++) {
        PD_CHECK(pd_backend_supports_op(be, (pd_op)op, PD_DTYPE_BF16));
        PD_CHECK(strcmp(pd_op_name((pd_op)op), "UNKNOWN") != 0);
    }
    PD_CHECK(!pd_backend_supports_op(be, PD_OP_LINEAR, PD_DTYPE_I32));
    PD_CHECK(!strcmp(pd_op_name(PD_OP_CONV3D), "CONV3D"));
    PD_CHECK(!strcmp(pd_op_name(PD_OP_COUNT), "UNKNOWN"));

    int64_t s[2] = {3, 5};
    pd_tensor t, h, w;
    PD_CHECK_OK(pd_backend_tensor_alloc(be, &t, PD_DTYPE_F32, 2, s));
    PD_CHECK(pd_tensor_is_contiguous(&t) && t.owns_data && ((float *)t.data)[14] == 0.0f);
    PD_CHECK_OK(pd_tensor_alloc(&h, PD_DTYPE_F32, 2, s));
    for (int i = 0; i < 15; i++) ((float *)h.data)[i] = (float)i * 0.5f;
    PD_CHECK_OK(pd_backend_upload(be, &t, &h));
    PD_CHECK(!memcmp(t.data, h.data, 60));
    memset(h.data, 0, 60);
    PD_CHECK_OK(pd_backend_download(be, &h, &t));
    PD_CHECK(((float *)h.data)[7] == 3.5f);
    PD_CHECK_OK(pd_backend_synchronize(be));
    PD_CHECK_OK(pd_backend_import_weight(be, &w, &h));
    PD_CHECK(w.data == h.data && !w.owns_data && pd_tensor_same_shape(&w, &h));
    pd_tensor bad;
    PD_CHECK_OK(pd_tensor_alloc(&bad, PD_DTYPE_F32, 2, (int64_t[]){5, 3}));
    PD_CHECK_ERR(pd_backend_upload(be, &t, &bad), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_backend_tensor_alloc(be, &bad, PD_DTYPE_F32, 6, s), PD_ERR_INVALID);
    pd_tensor_free(&bad);
    pd_backend_tensor_free(be, &w); /* a view: leaves h alone */
    PD_CHECK(((float *)h.data)[7] == 3.5f);
    pd_backend_tensor_free(be, &t);
    pd_tensor_free(&h);

    pd_backend *be0 = NULL;
    PD_CHECK_OK(pd_backend_cpu_create(0, &be0));
    PD_CHECK(be0 && pd_backend_threads(be0) >= 1);
    pd_backend_free(be0);
    PD_CHECK_ERR(pd_backend_cpu_create(-1, &be0), PD_ERR_INVALID);
    pd_backend_free(NULL);
}

int main(void) {
    for (int i = 0; i < 2; i++)
        if (pd_backend_cpu_create(g_threads[i], &g_bes[i]) != PD_OK) {
            fprintf(stderr, "cpu backend: %s\n", pd_error_msg());
            return 1;
        }
    test_linear();
    test_norms();
    test_rope();
    test_attention();
    test_unary();
    test_modulate();
    test_fused();
    test_binary();
    test_timestep();
    test_patch();
    test_copy();
    test_conv();
    test_vae_ops();
    PD_RUN(test_bad_args);
    PD_RUN(test_fused_bad_args);
    PD_RUN(test_backend_calls);
    free(g_saved);
    for (int i = 0; i < 2; i++) pd_backend_free(g_bes[i]);
    return pd_test_summary();
}
