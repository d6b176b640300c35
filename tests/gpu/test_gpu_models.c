/* The tiny model (models/presets.h) on the CUDA backend against the CPU backend: the DiT forward of
 * a CFG pair (f32 weights with the backend's default attention, with PD_CUDA_ATTENTION=flash, and
 * bf16 weights), the streaming VAE decode, and a whole denoise loop from the same seed (the sampler
 * driven over the DiT on each backend and, where models/pipeline.c is built, pd_pipeline_denoise
 * with the umT5 text encoder) followed by the decode of its latent.
 *
 * Tolerances (relative L2 error; largest error over the largest value): one evaluation with bf16
 * anywhere (cuDNN attention takes bf16 q, k, v; bf16 GEMMs) 2e-2 and 5e-2; a whole denoise loop, where
 * guidance multiplies the difference of two evaluations, 3e-2 and 1e-1; f32 all the way (f32 weights,
 * the own f32 attention kernel) 1e-4 and 1e-3. Every comparison prints its errors, passing or not.
 *
 * PD_GPU_TESTS_ON_CPU=1 lets a second CPU backend stand in for CUDA: a check of this harness on machines
 * without a GPU, not of the CUDA backend.
 *
 * Exits 77 (skipped) when the build has no CUDA or no device is visible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model_dir.h"
#include "models/random_init.h"
#include "models/sampler/noise.h"
#include "models/sampler/sampler.h"
#include "models/wan/dit.h"
#include "models/wan/vae.h"
#ifdef PD_HAVE_PIPELINE
#include "models/pipeline.h"
#endif
#include "tests/gpu/gpu_test.h"
#include "tests/unit/test.h"

static char g_tmp[256], g_f32[300], g_bf16[300];
static pd_backend *g_cpu, *g_gpu;
static const pd_wan_dit_config *g_cfg;

/* The tiers of the header comment. */
#define BF16_L2 2e-2
#define BF16_MAX 5e-2
#define LOOP_L2 3e-2
#define LOOP_MAX 1e-1
#define F32_L2 1e-4
#define F32_MAX 1e-3
#define GUIDANCE 3.0f

/* Compares n values of got (CUDA) with ref (CPU); prints the errors either way. */
static void close_enough(const char *what, const float *got, const float *ref, int64_t n, double l2_tol, double max_tol) {
    double e2 = 0, r2 = 0, emax = 0, rmax = 0;
    int64_t nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) nonfinite++;
        double d = (double)got[i] - (double)ref[i];
        e2 += d * d, r2 += (double)ref[i] * ref[i];
        if (fabs(d) > emax) emax = fabs(d);
        if (fabs(ref[i]) > rmax) rmax = fabs(ref[i]);
    }
    double l2 = r2 > 0 ? sqrt(e2 / r2) : sqrt(e2), mx = rmax > 0 ? emax / rmax : emax;
    printf("  %s: %lld values, relative L2 error %.3g (limit %.3g), max error %.3g of max %.3g (limit %.3g)\n", what,
           (long long)n, l2, l2_tol, emax, rmax, max_tol);
    PD_CHECK_MSG(nonfinite == 0, "%s: %lld non-finite values from CUDA", what, (long long)nonfinite);
    PD_CHECK_MSG(l2 <= l2_tol && mx <= max_tol, "%s: relative L2 %.3g, relative max %.3g", what, l2, mx);
    PD_CHECK_MSG(rmax > 0, "%s: the reference is all zeros, the comparison means nothing", what);
}

/* Host tensor in -> host tensor out through a device copy on be (the CPU backend works the same). */
static pd_status dit_eval(pd_backend *be, pd_wan_dit *m, const pd_tensor *lat, const float *ts, const pd_tensor *ctx,
                          pd_tensor *vel) {
    pd_tensor dl = {0}, dc = {0}, dv = {0};
    pd_status st = pd_backend_tensor_alloc(be, &dl, PD_DTYPE_F32, lat->ndim, lat->shape);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &dc, PD_DTYPE_F32, ctx->ndim, ctx->shape);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &dv, PD_DTYPE_F32, vel->ndim, vel->shape);
    if (st == PD_OK) st = pd_backend_upload(be, &dl, lat);
    if (st == PD_OK) st = pd_backend_upload(be, &dc, ctx);
    if (st == PD_OK) st = pd_wan_dit_forward(m, &dv, &dl, ts, &dc);
    if (st == PD_OK) st = pd_backend_synchronize(be);
    if (st == PD_OK) st = pd_backend_download(be, vel, &dv);
    pd_backend_tensor_free(be, &dl);
    pd_backend_tensor_free(be, &dc);
    pd_backend_tensor_free(be, &dv);
    return st;
}

/* One CFG-pair forward of the model in `dir` on the CPU and on gpu. */
static void dit_compare(pd_backend *gpu, const char *dir, double l2_tol, double max_tol, const char *what) {
    const int64_t B = 2, T = 3, H = 12, W = 16, L = 20;
    int64_t ls[5] = {B, g_cfg->in_channels, T, H, W}, vs[5] = {B, g_cfg->out_channels, T, H, W}, cs[3] = {B, L, g_cfg->text_dim};
    pd_tensor lat, ctx, vc, vg;
    PD_CHECK_OK(pd_random_tensor(&lat, PD_DTYPE_F32, 5, ls, 11, "latent", 0.0f, 1.0f));
    PD_CHECK_OK(pd_random_tensor(&ctx, PD_DTYPE_F32, 3, cs, 11, "context", 0.0f, 1.0f));
    PD_CHECK_OK(pd_tensor_alloc(&vc, PD_DTYPE_F32, 5, vs));
    PD_CHECK_OK(pd_tensor_alloc(&vg, PD_DTYPE_F32, 5, vs));
    const float ts[2] = {937.0f, 421.0f};
    pd_wan_dit *mc = NULL, *mg = NULL;
    PD_CHECK_OK(pd_wan_dit_load(dir, g_cpu, &mc));
    PD_CHECK_OK(pd_wan_dit_load(dir, gpu, &mg));
    if (mc && mg) {
        PD_CHECK_OK(dit_eval(g_cpu, mc, &lat, ts, &ctx, &vc));
        PD_CHECK_OK(dit_eval(gpu, mg, &lat, ts, &ctx, &vg));
        close_enough(what, vg.data, vc.data, pd_tensor_numel(&vc), l2_tol, max_tol);
        /* a second call reuses the arena and must give the same numbers */
        pd_tensor v2;
        PD_CHECK_OK(pd_tensor_alloc(&v2, PD_DTYPE_F32, 5, vs));
        PD_CHECK_OK(dit_eval(gpu, mg, &lat, ts, &ctx, &v2));
        PD_CHECK_MSG(!memcmp(v2.data, vg.data, pd_tensor_nbytes(&vg)), "%s: a second CUDA forward differs from the first", what);
        pd_tensor_free(&v2);
    }
    pd_wan_dit_free(mc);
    pd_wan_dit_free(mg);
    pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&vc), pd_tensor_free(&vg);
}

/* A CUDA backend made while PD_CUDA_ATTENTION = mode (NULL: unset). */
static pd_backend *gpu_with_attention(const char *mode) {
    if (mode) setenv("PD_CUDA_ATTENTION", mode, 1);
    else unsetenv("PD_CUDA_ATTENTION");
    pd_backend *be = NULL;
    PD_CHECK_OK(pd_gpu_test_backend(&be));
    return be;
}

static void test_dit_f32(void) { dit_compare(g_gpu, g_f32, BF16_L2, BF16_MAX, "DiT f32 weights, default attention"); }

static void test_dit_f32_flash(void) {
    pd_backend *be = gpu_with_attention("flash");
    if (be) dit_compare(be, g_f32, F32_L2, F32_MAX, "DiT f32 weights, PD_CUDA_ATTENTION=flash");
    pd_backend_free(be);
    unsetenv("PD_CUDA_ATTENTION");
}

static void test_dit_bf16(void) { dit_compare(g_gpu, g_bf16, BF16_L2, BF16_MAX, "DiT bf16 weights, default attention"); }

/* ---- VAE ---- */

typedef struct frames {
    float *v;
    int64_t n, cap, count;
} frames;

static pd_status on_frame(void *ud, int64_t index, const pd_tensor *f) {
    frames *fr = ud;
    int64_t n = pd_tensor_numel(f);
    if (fr->n + n > fr->cap) {
        int64_t cap = (fr->n + n) * 2;
        float *v = realloc(fr->v, sizeof(float) * (size_t)cap);
        if (!v) return pd_error_set(PD_ERR_NOMEM, "out of memory collecting frames");
        fr->v = v, fr->cap = cap;
    }
    memcpy(fr->v + fr->n, f->data, sizeof(float) * (size_t)n);
    fr->n += n, fr->count++;
    return PD_OK;
}

static pd_status vae_decode_on(pd_backend *be, const char *dir, const pd_tensor *lat, frames *out) {
    pd_wan_vae *v = NULL;
    PD_TRY(pd_wan_vae_load(dir, be, &v));
    pd_status st = pd_wan_vae_decode(v, lat, on_frame, NULL, out, NULL);
    pd_wan_vae_free(v);
    return st;
}

static void vae_compare(const char *dir, const pd_tensor *lat, const char *what, double l2_tol, double max_tol) {
    frames c = {0}, g = {0};
    PD_CHECK_OK(vae_decode_on(g_cpu, dir, lat, &c));
    PD_CHECK_OK(vae_decode_on(g_gpu, dir, lat, &g));
    PD_CHECK_MSG(c.count == g.count && c.n == g.n, "%s: %lld frames on the CPU, %lld on CUDA", what, (long long)c.count,
                 (long long)g.count);
    if (c.n == g.n && c.n > 0) close_enough(what, g.v, c.v, c.n, l2_tol, max_tol);
    free(c.v);
    free(g.v);
}

static void test_vae(void) {
    pd_tensor lat;
    int64_t ls[4] = {16, 3, 4, 6};
    PD_CHECK_OK(pd_random_tensor(&lat, PD_DTYPE_F32, 4, ls, 5, "latent", 0.0f, 1.0f));
    vae_compare(g_f32, &lat, "VAE decode (16, 3, 4, 6) f32 weights", BF16_L2, BF16_MAX);
    vae_compare(g_bf16, &lat, "VAE decode (16, 3, 4, 6) bf16 weights", BF16_L2, BF16_MAX);
    pd_tensor_free(&lat);
}

/* ---- end to end ---- */

/* The flow-matching loop (seeded noise, CFG pair, UniPC) over the DiT on be: latent (16, T, H, W). */
static pd_status denoise_on(pd_backend *be, const char *dir, const pd_tensor *ctx2, uint64_t seed, int steps, float guidance,
                            pd_tensor *latent) {
    const int64_t T = 2, H = 6, W = 8, n = 16 * T * H * W;
    int64_t ls[4] = {16, T, H, W}, bs[5] = {2, 16, T, H, W};
    pd_wan_dit *m = NULL;
    pd_sampler *s = NULL;
    pd_tensor lat2 = {0}, vel2 = {0};
    PD_TRY(pd_tensor_alloc(latent, PD_DTYPE_F32, 4, ls));
    pd_noise_fill(latent->data, 0, n, seed);
    pd_status st = pd_wan_dit_load(dir, be, &m);
    if (st == PD_OK) st = pd_sampler_create(PD_SAMPLER_UNIPC, steps, 5.0, n, &s);
    if (st == PD_OK) st = pd_tensor_alloc(&lat2, PD_DTYPE_F32, 5, bs);
    if (st == PD_OK) st = pd_tensor_alloc(&vel2, PD_DTYPE_F32, 5, bs);
    float *x = latent->data, *v = vel2.data;
    for (int i = 0; st == PD_OK && i < steps; i++) {
        memcpy(lat2.data, x, sizeof(float) * (size_t)n);
        memcpy((float *)lat2.data + n, x, sizeof(float) * (size_t)n);
        const float t = pd_sampler_timestep(s, i), ts[2] = {t, t};
        st = dit_eval(be, m, &lat2, ts, ctx2, &vel2);
        if (st == PD_OK) {
            pd_cfg_combine(v, v, v + n, n, guidance);
            pd_sampler_step(s, x, v, i);
        }
    }
    pd_tensor_free(&lat2);
    pd_tensor_free(&vel2);
    pd_sampler_free(s);
    pd_wan_dit_free(m);
    return st;
}

static void test_end_to_end(void) {
    int64_t cs[3] = {2, 24, g_cfg->text_dim};
    pd_tensor ctx, lc = {0}, lg = {0}, lf = {0};
    PD_CHECK_OK(pd_random_tensor(&ctx, PD_DTYPE_F32, 3, cs, 21, "context", 0.0f, 1.0f));
    PD_CHECK_OK(denoise_on(g_cpu, g_f32, &ctx, 99, 4, GUIDANCE, &lc));
    PD_CHECK_OK(denoise_on(g_gpu, g_f32, &ctx, 99, 4, GUIDANCE, &lg));
    pd_backend *flash = gpu_with_attention("flash");
    if (flash) PD_CHECK_OK(denoise_on(flash, g_f32, &ctx, 99, 4, GUIDANCE, &lf));
    pd_backend_free(flash);
    unsetenv("PD_CUDA_ATTENTION");
    if (lc.data && lf.data)
        close_enough("denoised latent, PD_CUDA_ATTENTION=flash (4 UniPC steps, CFG 3, seed 99)", lf.data, lc.data,
                     pd_tensor_numel(&lc), F32_L2, F32_MAX);
    if (lc.data && lg.data) {
        close_enough("denoised latent, default attention (4 UniPC steps, CFG 3, seed 99)", lg.data, lc.data,
                     pd_tensor_numel(&lc), LOOP_L2, LOOP_MAX);
        /* and the decode of each backend's own latent */
        frames c = {0}, g = {0};
        PD_CHECK_OK(vae_decode_on(g_cpu, g_f32, &lc, &c));
        PD_CHECK_OK(vae_decode_on(g_gpu, g_f32, &lg, &g));
        if (c.n == g.n && c.n > 0) close_enough("video decoded from each backend's latent", g.v, c.v, c.n, LOOP_L2, LOOP_MAX);
        else PD_CHECK_MSG(false, "decoded %lld values on the CPU, %lld on CUDA", (long long)c.n, (long long)g.n);
        free(c.v);
        free(g.v);
    }
    pd_tensor_free(&ctx), pd_tensor_free(&lc), pd_tensor_free(&lg), pd_tensor_free(&lf);
}

#ifdef PD_HAVE_PIPELINE
/* pd_pipeline_denoise with the umT5 encoder, on each backend, from one seed. */
static void test_pipeline_denoise(void) {
    pd_pipeline *pc = NULL, *pg = NULL;
    PD_CHECK_OK(pd_pipeline_load(g_f32, g_cpu, PD_PART_TEXT | PD_PART_DIT, &pc));
    PD_CHECK_OK(pd_pipeline_load(g_f32, g_gpu, PD_PART_TEXT | PD_PART_DIT, &pg));
    if (!pc || !pg) goto out;
    pd_gen_params p;
    pd_pipeline_default_params(pc, &p);
    p.prompt = "a lighthouse in a storm", p.negative_prompt = "blurry", p.seed = 99, p.guidance = GUIDANCE;
    p.width = 32, p.height = 48, p.frames = 5, p.steps = 4;
    pd_tensor cc = {0}, cu = {0}, gc = {0}, gu = {0}, lc = {0}, lg = {0};
    PD_CHECK_OK(pd_pipeline_encode_text(pc, p.prompt, &cc));
    PD_CHECK_OK(pd_pipeline_encode_text(pc, p.negative_prompt, &cu));
    PD_CHECK_OK(pd_pipeline_encode_text(pg, p.prompt, &gc));
    PD_CHECK_OK(pd_pipeline_encode_text(pg, p.negative_prompt, &gu));
    if (cc.data && gc.data && pd_tensor_numel(&cc) == pd_tensor_numel(&gc))
        close_enough("umT5 context of the prompt", gc.data, cc.data, pd_tensor_numel(&cc), BF16_L2, BF16_MAX);
    else PD_CHECK_MSG(false, "the prompt's contexts differ in shape");
    /* each backend denoises from its own contexts, as a real run would */
    PD_CHECK_OK(pd_pipeline_denoise(pc, &p, &cc, &cu, &lc, NULL, NULL, NULL));
    PD_CHECK_OK(pd_pipeline_denoise(pg, &p, &gc, &gu, &lg, NULL, NULL, NULL));
    if (lc.data && lg.data)
        close_enough("pd_pipeline_denoise latent (4 UniPC steps, CFG 3, seed 99)", lg.data, lc.data, pd_tensor_numel(&lc),
                     LOOP_L2, LOOP_MAX);
    pd_tensor_free(&cc), pd_tensor_free(&cu), pd_tensor_free(&gc), pd_tensor_free(&gu), pd_tensor_free(&lc), pd_tensor_free(&lg);
out:
    pd_pipeline_free(pc);
    pd_pipeline_free(pg);
}
#endif

int main(void) {
    unsetenv("PD_CUDA_ATTENTION"); /* before the backend under test is made: its default attention */
    pd_log_set_level(PD_LOG_WARN);
    int rc = pd_gpu_test_start("test_gpu_models", 0, &g_cpu, &g_gpu);
    if (rc || !pd_test_scratch_dir(g_tmp, sizeof g_tmp, "test_gpu_models")) {
        pd_backend_free(g_gpu);
        pd_backend_free(g_cpu);
        return rc ? rc : 1;
    }
    snprintf(g_f32, sizeof g_f32, "%s/tiny_f32", g_tmp);
    snprintf(g_bf16, sizeof g_bf16, "%s/tiny_bf16", g_tmp);
    const pd_model_preset *tiny = pd_model_preset_default();
    g_cfg = &tiny->dit;
    if (pd_model_dir_write(g_f32, tiny, 3, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32) != PD_OK ||
        pd_model_dir_write(g_bf16, tiny, 3, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_BF16) != PD_OK) {
        fprintf(stderr, "test_gpu_models: setup: %s\n", pd_error_msg());
        pd_backend_free(g_gpu);
        pd_backend_free(g_cpu);
        pd_test_rmtree(g_tmp);
        return 1;
    }
    PD_RUN(test_dit_f32);
    PD_RUN(test_dit_f32_flash);
    PD_RUN(test_dit_bf16);
    PD_RUN(test_vae);
    PD_RUN(test_end_to_end);
#ifdef PD_HAVE_PIPELINE
    PD_RUN(test_pipeline_denoise);
#else
    printf("skip test_pipeline_denoise (models/pipeline.c is not in this build: it needs media/)\n");
#endif
    pd_backend_free(g_gpu);
    pd_backend_free(g_cpu);
    pd_test_rmtree(g_tmp);
    return pd_test_summary();
}
