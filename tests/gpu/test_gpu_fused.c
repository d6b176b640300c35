/* The fused ops (LAYER_NORM_MODULATE, LINEAR_GELU, RMS_NORM_ROPE) on the CUDA backend against the CPU
 * backend (the reference), and against the unfused op sequence on CUDA itself, at DiT-like and odd
 * shapes, each weight dtype, in place where the contract allows. Every device output sits inside a
 * larger device buffer whose guard elements carry a canary pattern, checked after the op.
 * Tolerances: |cuda - cpu| <= atol + rtol * m, m = |cpu| for the norms, and for LINEAR_GELU the sum of
 * |terms| of the GEMM (computed here in double), so cancellation does not make a bound meaningless;
 * the bf16 GEMM path rounds x to bf16 (relative 2^-9 per term), the f32 path does not.
 *
 * PD_GPU_TESTS_ON_CPU=1 lets a second CPU backend stand in for CUDA (tests/gpu/gpu_test.h): a check of
 * this harness on machines without a GPU, not of the CUDA backend. Exits 77 (skipped) without CUDA or
 * a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "models/random_init.h"
#include "tests/gpu/gpu_test.h"
#include "tests/unit/test.h"

#define GUARD (PD_GPU_GUARD / 4) /* canary f32 elements on each side of a device output */

static pd_backend *g_cpu, *g_gpu;

/* A host tensor of normal(0, std) values rounded to dt, keyed by (seed, name). */
static pd_tensor host_rand(pd_dtype dt, int nd, const int64_t *shape, uint64_t seed, const char *name, float mean, float std) {
    pd_tensor t;
    PD_ASSERT(pd_random_tensor(&t, dt, nd, shape, seed, name, mean, std) == PD_OK);
    return t;
}

/* A device copy of a host tensor (freed with pd_backend_tensor_free). */
static pd_tensor dev_copy(const pd_tensor *h) {
    pd_tensor d;
    PD_ASSERT(pd_backend_tensor_alloc(g_gpu, &d, h->dtype, h->ndim, h->shape) == PD_OK);
    PD_ASSERT(pd_backend_upload(g_gpu, &d, h) == PD_OK);
    return d;
}

/* A guarded f32 device output (tests/gpu/gpu_test.h): t views elements [GUARD, GUARD + n) of buf; the
 * rest holds the canary. */
typedef struct {
    pd_tensor buf, t;
    int64_t n;
} guarded;

/* init: the interior's starting values (in-place cases), or NULL for canary everywhere. */
static guarded guarded_new(int nd, const int64_t *shape, const float *init) {
    guarded g;
    pd_tensor v = pd_tensor_view(NULL, PD_DTYPE_F32, nd, shape);
    g.n = pd_tensor_numel(&v);
    int64_t total = g.n + 2 * GUARD;
    PD_ASSERT(pd_backend_tensor_alloc(g_gpu, &g.buf, PD_DTYPE_F32, 1, &total) == PD_OK);
    unsigned char *h = pd_gout_expected((size_t)total * 4, (size_t)g.n * 4, init, PD_GPU_CANARY);
    pd_tensor hv = pd_tensor_view(h, PD_DTYPE_F32, 1, &total);
    PD_ASSERT(pd_backend_upload(g_gpu, &g.buf, &hv) == PD_OK);
    free(h);
    g.t = pd_tensor_slice(&g.buf, 0, GUARD, g.n);
    PD_ASSERT(pd_tensor_reshape(&g.t, nd, shape) == PD_OK);
    return g;
}

/* Downloads the interior into out (g.n floats) and checks the guards. */
static void guarded_read(guarded *g, float *out) {
    unsigned char *h = pd_gout_download(g_gpu, &g->buf, g->n + 2 * GUARD);
    PD_CHECK_MSG(pd_gout_bad_guards(h, (size_t)g->n * 4) == 0, "%s: guard elements around the output were written",
                 pd_test_case_name());
    memcpy(out, h + PD_GPU_GUARD, (size_t)g->n * 4);
    free(h);
}

static void guarded_free(guarded *g) { pd_backend_tensor_free(g_gpu, &g->buf); }

/* got vs want within atol + rtol * (mag ? mag[i] : |want[i]|); names the worst element. */
static void compare(const char *what, const float *got, const float *want, const double *mag, int64_t n, double rtol,
                    double atol) {
    int64_t worst = -1;
    double worst_excess = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]), tol = atol + rtol * (mag ? mag[i] : fabs(want[i]));
        if (!(err <= tol) && (worst < 0 || err - tol > worst_excess)) worst = i, worst_excess = err - tol;
    }
    PD_CHECK_MSG(worst < 0, "%s %s: element %lld: got %.9g want %.9g", pd_test_case_name(), what, (long long)worst,
                 worst >= 0 ? got[worst] : 0.0, worst >= 0 ? want[worst] : 0.0);
}

/* ---- LAYER_NORM_MODULATE ---- */

/* shift and scale: rows 0 and 1 of a (B, 6, C) tensor (sliced), else (B, 1, C) tensors. */
static void case_ln_mod(int64_t B, int64_t N, int64_t C, bool sliced, bool inplace) {
    int64_t xs[3] = {B, N, C}, ms[3] = {B, 6, C}, m1[3] = {B, 1, C}, n = B * N * C;
    uint64_t seed = (uint64_t)(B * 131 + N * 7 + C);
    pd_tensor hx = host_rand(PD_DTYPE_F32, 3, xs, seed, "x", 0.5f, 2.0f);
    pd_tensor hm = host_rand(PD_DTYPE_F32, 3, sliced ? ms : m1, seed, "mod", 0.0f, 0.5f);
    pd_tensor hm2 = host_rand(PD_DTYPE_F32, 3, m1, seed, "scale", 0.0f, 0.5f);
    pd_tensor hsh = sliced ? pd_tensor_slice(&hm, 1, 0, 1) : hm, hsc = sliced ? pd_tensor_slice(&hm, 1, 1, 1) : hm2;
    pd_tensor cy;
    PD_ASSERT(pd_tensor_alloc(&cy, PD_DTYPE_F32, 3, xs) == PD_OK);
    PD_CHECK_OK(pd_op_layer_norm_modulate(g_cpu, &cy, &hx, &hsh, &hsc, 1e-6f));

    pd_tensor dx = dev_copy(&hx), dm = dev_copy(&hm), dm2 = dev_copy(&hm2);
    pd_tensor dsh = sliced ? pd_tensor_slice(&dm, 1, 0, 1) : dm, dsc = sliced ? pd_tensor_slice(&dm, 1, 1, 1) : dm2;
    guarded y = guarded_new(3, xs, inplace ? hx.data : NULL), seq = guarded_new(3, xs, NULL);
    PD_CHECK_OK(pd_op_layer_norm_modulate(g_gpu, &y.t, inplace ? &y.t : &dx, &dsh, &dsc, 1e-6f));
    PD_CHECK_OK(pd_op_layer_norm(g_gpu, &seq.t, &dx, NULL, NULL, 1e-6f));
    PD_CHECK_OK(pd_op_modulate(g_gpu, &seq.t, &seq.t, &dsh, &dsc));
    float *got = malloc((size_t)n * 4), *got_seq = malloc((size_t)n * 4);
    guarded_read(&y, got);
    guarded_read(&seq, got_seq);
    compare("vs cpu", got, cy.data, NULL, n, 1e-4, 1e-4);
    compare("vs unfused cuda", got, got_seq, NULL, n, 1e-5, 1e-5);
    free(got), free(got_seq);
    guarded_free(&y), guarded_free(&seq);
    pd_backend_tensor_free(g_gpu, &dx), pd_backend_tensor_free(g_gpu, &dm), pd_backend_tensor_free(g_gpu, &dm2);
    pd_tensor_free(&hx), pd_tensor_free(&hm), pd_tensor_free(&hm2), pd_tensor_free(&cy);
}

/* ---- RMS_NORM_ROPE ---- */

static void case_rms_rope(pd_dtype wdt, int64_t B, int64_t N, int64_t H, int64_t D, bool weighted, bool inplace) {
    const int64_t C = H * D, n = B * N * C;
    int64_t xs[3] = {B, N, C}, x4[4] = {B, N, H, D}, fs[3] = {N, D / 2, 2}, cs[1] = {C};
    uint64_t seed = (uint64_t)(B * 131 + N * 7 + H * 3 + D + wdt);
    pd_tensor hx = host_rand(PD_DTYPE_F32, 3, xs, seed, "x", 0.0f, 1.5f);
    pd_tensor hw = weighted ? host_rand(wdt, 1, cs, seed, "w", 1.0f, 0.5f) : (pd_tensor){0};
    pd_tensor hf;
    PD_ASSERT(pd_tensor_alloc(&hf, PD_DTYPE_F32, 3, fs) == PD_OK);
    PD_CHECK_OK(pd_op_rope3d_freqs(g_cpu, &hf, N, 1, 1, 0, 10000.0)); /* a real table: tokens along t */
    pd_tensor cy;
    PD_ASSERT(pd_tensor_alloc(&cy, PD_DTYPE_F32, 3, xs) == PD_OK);
    PD_CHECK_OK(pd_op_rms_norm_rope(g_cpu, &cy, &hx, weighted ? &hw : NULL, &hf, (int)H, 1e-6f));

    pd_tensor dx = dev_copy(&hx), df = dev_copy(&hf), dw = weighted ? dev_copy(&hw) : (pd_tensor){0};
    guarded y = guarded_new(3, xs, inplace ? hx.data : NULL), seq = guarded_new(3, xs, NULL);
    PD_CHECK_OK(pd_op_rms_norm_rope(g_gpu, &y.t, inplace ? &y.t : &dx, weighted ? &dw : NULL, &df, (int)H, 1e-6f));
    PD_CHECK_OK(pd_op_rms_norm(g_gpu, &seq.t, &dx, weighted ? &dw : NULL, 1e-6f));
    pd_tensor seq4 = seq.t;
    PD_ASSERT(pd_tensor_reshape(&seq4, 4, x4) == PD_OK);
    PD_CHECK_OK(pd_op_rope(g_gpu, &seq4, &seq4, &df));
    float *got = malloc((size_t)n * 4), *got_seq = malloc((size_t)n * 4);
    double *mag = malloc((size_t)n * sizeof *mag);
    guarded_read(&y, got);
    guarded_read(&seq, got_seq);
    const float *c = cy.data;
    for (int64_t i = 0; i < n; i += 2) mag[i] = mag[i + 1] = fabs(c[i]) + fabs(c[i + 1]); /* a pair's size */
    compare("vs cpu", got, cy.data, mag, n, 1e-4, 1e-5);
    compare("vs unfused cuda", got, got_seq, mag, n, 1e-5, 1e-6);
    free(got), free(got_seq), free(mag);
    guarded_free(&y), guarded_free(&seq);
    pd_backend_tensor_free(g_gpu, &dx), pd_backend_tensor_free(g_gpu, &df);
    if (weighted) pd_backend_tensor_free(g_gpu, &dw), pd_tensor_free(&hw);
    pd_tensor_free(&hx), pd_tensor_free(&hf), pd_tensor_free(&cy);
}

/* ---- LINEAR_GELU ---- */

static void case_linear_gelu(pd_dtype wdt, int64_t M, int64_t K, int64_t N, bool bias) {
    int64_t xs[2] = {M, K}, ws[2] = {N, K}, ys[2] = {M, N}, bs[1] = {N};
    uint64_t seed = (uint64_t)(M * 131 + K * 7 + N + wdt);
    pd_tensor hx = host_rand(PD_DTYPE_F32, 2, xs, seed, "x", 0.0f, 1.0f);
    pd_tensor hw = host_rand(wdt, 2, ws, seed, "w", 0.0f, 1.0f / sqrtf((float)(K ? K : 1)));
    pd_tensor hb = bias ? host_rand(wdt, 1, bs, seed, "b", 0.0f, 0.5f) : (pd_tensor){0};
    pd_tensor cy;
    PD_ASSERT(pd_tensor_alloc(&cy, PD_DTYPE_F32, 2, ys) == PD_OK);
    PD_CHECK_OK(pd_op_linear_gelu(g_cpu, &cy, &hx, &hw, bias ? &hb : NULL));

    pd_tensor dx = dev_copy(&hx), dw = dev_copy(&hw), db = bias ? dev_copy(&hb) : (pd_tensor){0};
    guarded y = guarded_new(2, ys, NULL), seq = guarded_new(2, ys, NULL);
    PD_CHECK_OK(pd_op_linear_gelu(g_gpu, &y.t, &dx, &dw, bias ? &db : NULL));
    PD_CHECK_OK(pd_op_linear(g_gpu, &seq.t, &dx, &dw, bias ? &db : NULL));
    PD_CHECK_OK(pd_op_gelu_tanh(g_gpu, &seq.t, &seq.t));
    float *got = malloc((size_t)(M * N) * 4), *got_seq = malloc((size_t)(M * N) * 4);
    double *mag = malloc((size_t)(M * N) * sizeof *mag);
    guarded_read(&y, got);
    guarded_read(&seq, got_seq);
    /* sum of |terms| (|gelu'| < 1.13 carries the GEMM's error through), plus |y| for GELU's own rounding */
    float *xf = malloc((size_t)(M * K + 1) * 4), *wf = malloc((size_t)(N * K + 1) * 4), *bf = malloc((size_t)N * 4);
    pd_convert_to_f32(xf, hx.data, PD_DTYPE_F32, M * K);
    pd_convert_to_f32(wf, hw.data, wdt, N * K);
    if (bias) pd_convert_to_f32(bf, hb.data, wdt, N);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = bias ? fabs((double)bf[j]) : 0;
            for (int64_t k = 0; k < K; k++) s += fabs((double)xf[i * K + k] * wf[j * K + k]);
            mag[i * N + j] = 1.2 * s + fabs(((const float *)cy.data)[i * N + j]);
        }
    /* bf16 / f16 weights: x is rounded to bf16 (2^-9 relative per term); f32: f32 accumulation only */
    double rtol = wdt == PD_DTYPE_F32 ? 2e-5 : 1e-2;
    compare("vs cpu", got, cy.data, mag, M * N, rtol, 1e-5);
    /* bf16 / f16: cuBLASLt's GELU epilogue against GELU_TANH's kernel after the same GEMM; atol 1e-3 admits
     * a GELU that differs slightly from GELU_TANH (the erf form differs by at most 4.7e-4); the printed
     * largest difference tells how close the epilogue is. f32: the same GEMM, then the same kernel. */
    double most = 0;
    for (int64_t i = 0; i < M * N; i++) most = fmax(most, fabs((double)got[i] - got_seq[i]));
    printf("  %s: largest |fused - unfused| %.3g\n", pd_test_case_name(), most);
    compare("vs unfused cuda", got, got_seq, mag, M * N, wdt == PD_DTYPE_F32 ? 1e-6 : 1e-5, wdt == PD_DTYPE_F32 ? 1e-5 : 1e-3);
    free(got), free(got_seq), free(mag), free(xf), free(wf), free(bf);
    guarded_free(&y), guarded_free(&seq);
    pd_backend_tensor_free(g_gpu, &dx), pd_backend_tensor_free(g_gpu, &dw);
    if (bias) pd_backend_tensor_free(g_gpu, &db), pd_tensor_free(&hb);
    pd_tensor_free(&hx), pd_tensor_free(&hw), pd_tensor_free(&cy);
}

static void test_supported(void) {
    static const pd_op ops[3] = {PD_OP_LAYER_NORM_MODULATE, PD_OP_LINEAR_GELU, PD_OP_RMS_NORM_ROPE};
    for (int o = 0; o < 3; o++)
        for (int d = 0; d < 3; d++)
            PD_CHECK_MSG(pd_backend_supports_op(g_gpu, ops[o], pd_test_wdts[d]), "%s with %s weights is not supported",
                         pd_op_name(ops[o]), pd_test_dtype_name(pd_test_wdts[d]));
}

int main(void) {
    int rc = pd_gpu_test_start("test_gpu_fused", 2, &g_cpu, &g_gpu);
    if (rc) return rc;
    PD_RUN(test_supported);
    PD_RUN_NAMED(case_ln_mod(2, 77, 1536, true, false), "LAYER_NORM_MODULATE(x=(2,77,1536),shift=slice(2,6,1536))");
    PD_RUN_NAMED(case_ln_mod(1, 33, 131, false, true), "LAYER_NORM_MODULATE(x=(1,33,131),shift=(1,1,131),inplace)");
    PD_RUN_NAMED(case_ln_mod(3, 1, 5, true, false), "LAYER_NORM_MODULATE(x=(3,1,5),shift=slice(3,6,5))");
    for (int d = 0; d < 3; d++) {
        const pd_dtype wdt = pd_test_wdts[d];
        PD_RUN_NAMED(case_rms_rope(wdt, 2, 77, 12, 128, true, false), "RMS_NORM_ROPE(w=%s,B=2,N=77,H=12,D=128)",
                     pd_test_dtype_name(wdt));
    }
    PD_RUN_NAMED(case_rms_rope(PD_DTYPE_F32, 1, 9, 3, 10, true, true), "RMS_NORM_ROPE(w=f32,B=1,N=9,H=3,D=10,inplace)");
    PD_RUN_NAMED(case_rms_rope(PD_DTYPE_BF16, 2, 5, 5, 6, false, false), "RMS_NORM_ROPE(w=none,B=2,N=5,H=5,D=6)");
    for (int d = 0; d < 3; d++) {
        const pd_dtype wdt = pd_test_wdts[d];
        const char *w = pd_test_dtype_name(wdt);
        PD_RUN_NAMED(case_linear_gelu(wdt, 200, 512, 1024, true), "LINEAR_GELU(w=%s,M=200,K=512,N=1024,bias)", w);
        PD_RUN_NAMED(case_linear_gelu(wdt, 77, 130, 257, false), "LINEAR_GELU(w=%s,M=77,K=130,N=257)", w);
        PD_RUN_NAMED(case_linear_gelu(wdt, 7, 13, 29, true), "LINEAR_GELU(w=%s,M=7,K=13,N=29,bias)", w);
    }
    PD_RUN_NAMED(case_linear_gelu(PD_DTYPE_BF16, 3, 0, 5, true), "LINEAR_GELU(w=bf16,M=3,K=0,N=5,bias)");
    pd_backend_free(g_gpu);
    pd_backend_free(g_cpu);
    return pd_test_summary();
}
