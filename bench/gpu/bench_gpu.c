/* The CUDA backend at the real Wan2.1-1.3B shapes, on random weights (no download):
 *   block     one DiT block (dim 1536, 12 x 128 heads, ffn 8960, 512 text rows, bf16 weights) at 32760
 *             tokens (832x480, 81 frames) and 14040 (33 frames), batch 1: the forward of a 2-layer model
 *             minus that of a 1-layer model of the same weights, so patch embedding, time and text
 *             embedding and the head cancel;
 *   forward   the full 30-block forward with batch 2 (the CFG pair) at 32760 tokens;
 *   attention attention alone, (1, 32760, 12, 128), with PD_CUDA_ATTENTION=cudnn and =flash;
 *   vae       the streaming VAE decode of a (16, 21, 60, 104) latent (81 frames of 832x480): time, time
 *             per output frame, and peak device memory (cudaMemGetInfo sampled at every output frame,
 *             when the decoder's arenas and caches are live; weights included and excluded).
 * Times are medians of several runs, each ending with pd_backend_synchronize. Weights: one 1-layer
 * checkpoint is drawn with pd_wan_dit_write_random and its block copied into the 2- and 30-layer
 * checkpoints (the time does not depend on the values).
 *
 * With --anchor FILE (the output of shared/gpu/anchor_torch.py run in the same session on the same
 * card) the PyTorch figures are recorded as anchors with their ratios, and the targets are
 * printed as MET / MISSED: block at 32760 tokens <= 0.8 x PyTorch's block with cuDNN attention;
 * attention >= 0.95 x PyTorch's cuDNN SDPA rate; VAE decode peak device memory < 4 GiB.
 *
 *   bench_gpu [--quick] [--only block,forward,attention,vae] [--anchor FILE] [--device N]
 *             [--runs R] [--results DIR]
 *
 * --quick shrinks every case (1560 tokens, a 2-layer forward, attention at 4096 tokens, a (16, 2, 30,
 * 52) latent) for a smoke run of a few seconds; its results go to bench "bench_gpu_quick".
 * --on-cpu runs the program's own flow (checkpoints, timing, anchors, result file) on the CPU backend
 * at toy shapes (64 tokens, attention at 256, a (16, 1, 4, 4) latent), to check it where no GPU is;
 * its numbers mean nothing and go to bench "bench_gpu_selfcheck". */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "base/json_file.h"
#include "engine/safetensors.h"
#include "models/model_dir.h"
#include "models/presets.h"
#include "models/random_init.h"
#include "models/wan/dit.h"
#include "models/wan/vae.h"

enum { PART_BLOCK = 1, PART_FORWARD = 2, PART_ATTENTION = 4, PART_VAE = 8, PART_ALL = 15 };

typedef struct bench_opts {
    bool quick, on_cpu;
    unsigned parts;
    const char *anchor;
    int device, runs;
    const char *results;
} bench_opts;

static pd_bench_result *g_res;
static char g_tmp[512];
static int g_failures;
/* PyTorch's times at 32760 tokens (read_anchor's first lines for them; NAN without): the block with
 * cuDNN attention and cuDNN SDPA, for the targets. */
static double g_torch_block_ms = NAN, g_torch_attn_ms = NAN;

static void fail(const char *what) {
    fprintf(stderr, "bench_gpu: %s: %s\n", what, pd_error_msg());
    g_failures++;
}

/* ---- checkpoints ---- */

/* Copies the 1-layer diffusers transformer in src into dst with `layers` blocks, every one a copy of
 * block 0, and the config's num_layers set to match. */
static pd_status derive_layers(const char *src, const char *dst, int layers) {
    char path[700];
    PD_TRY(pd_model_dir_mkdirs(dst));
    json_t *cfg = NULL;
    snprintf(path, sizeof path, "%s/config.json", src);
    PD_TRY(pd_json_file_load(path, 1 << 20, &cfg));
    json_object_set_new(cfg, "num_layers", json_integer(layers));
    snprintf(path, sizeof path, "%s/config.json", dst);
    pd_status st = pd_model_dir_write_json(path, cfg);
    json_decref(cfg);
    PD_TRY(st);
    pd_st *in = NULL;
    pd_st_writer *w = NULL;
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", src);
    st = pd_st_open(path, &in);
    if (st == PD_OK) st = pd_st_writer_create(&w);
    for (int i = 0; st == PD_OK && i < pd_st_count(in); i++) {
        const char *name = pd_st_name(in, i);
        pd_tensor t;
        st = pd_st_get(in, name, &t);
        if (st != PD_OK) break;
        if (strncmp(name, "blocks.0.", 9)) {
            st = pd_st_writer_add(w, name, &t);
            continue;
        }
        for (int l = 0; st == PD_OK && l < layers; l++) {
            char copy[256];
            snprintf(copy, sizeof copy, "blocks.%d.%s", l, name + 9);
            st = pd_st_writer_add(w, copy, &t);
        }
    }
    if (st == PD_OK) st = pd_st_writer_metadata(w, "format", "pt");
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dst);
    if (st == PD_OK) st = pd_st_writer_save(w, path);
    pd_st_writer_free(w);
    pd_st_close(in);
    return st;
}

/* A fresh device tensor d of host's dtype and shape, holding host's values. */
static pd_status upload_new(pd_backend *be, pd_tensor *d, const pd_tensor *host) {
    PD_TRY(pd_backend_tensor_alloc(be, d, host->dtype, host->ndim, host->shape));
    return pd_backend_upload(be, d, host);
}

/* ---- DiT ---- */

typedef struct dit_run {
    pd_backend *be;
    pd_wan_dit *m;
    pd_tensor lat, ctx, vel; /* device */
    float ts[2];
} dit_run;

static pd_status dit_once(void *ud) {
    dit_run *r = ud;
    PD_TRY(pd_wan_dit_forward(r->m, &r->vel, &r->lat, r->ts, &r->ctx));
    return pd_backend_synchronize(r->be);
}

static void dit_close(dit_run *r) {
    pd_backend_tensor_free(r->be, &r->lat);
    pd_backend_tensor_free(r->be, &r->ctx);
    pd_backend_tensor_free(r->be, &r->vel);
    pd_wan_dit_free(r->m);
    memset(r, 0, sizeof *r);
}

/* Loads the model in dir and uploads random inputs for batch B at latent (T, H, W), 512 text rows. */
static pd_status dit_open(dit_run *r, pd_backend *be, const char *dir, int64_t B, int64_t T, int64_t H, int64_t W) {
    memset(r, 0, sizeof *r);
    r->be = be;
    r->ts[0] = 937.0f, r->ts[1] = 937.0f;
    PD_TRY(pd_wan_dit_load(dir, be, &r->m));
    const pd_wan_dit_config *c = pd_wan_dit_get_config(r->m);
    int64_t ls[5] = {B, c->in_channels, T, H, W}, vs[5] = {B, c->out_channels, T, H, W}, cs[3] = {B, c->text_len, c->text_dim};
    pd_tensor hl = {0}, hc = {0};
    pd_status st = pd_random_tensor(&hl, PD_DTYPE_F32, 5, ls, 2, "latent", 0.0f, 1.0f);
    if (st == PD_OK) st = pd_random_tensor(&hc, PD_DTYPE_F32, 3, cs, 2, "context", 0.0f, 1.0f);
    if (st == PD_OK) st = upload_new(be, &r->lat, &hl);
    if (st == PD_OK) st = upload_new(be, &r->ctx, &hc);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &r->vel, PD_DTYPE_F32, 5, vs);
    pd_tensor_free(&hl);
    pd_tensor_free(&hc);
    if (st != PD_OK) dit_close(r);
    return st;
}

/* Median forward time of the model in dir (warm-up first: it grows the arena and plans). */
static pd_status dit_time(pd_backend *be, const char *dir, int64_t B, int64_t T, int64_t H, int64_t W, int runs,
                          pd_bench_stats *s) {
    dit_run r;
    PD_TRY(dit_open(&r, be, dir, B, T, H, W));
    pd_status st = pd_bench_time(dit_once, &r, 1, runs, s);
    dit_close(&r);
    return st;
}

static void bench_block(pd_backend *be, const pd_wan_dit_config *c1, const char *l1, const char *l2, int64_t T, int64_t H,
                        int64_t W, int runs) {
    const int64_t N = T * (H / 2) * (W / 2);
    pd_bench_stats s1, s2;
    char what[64], key[96];
    snprintf(what, sizeof what, "block at %lld tokens", (long long)N);
    if (dit_time(be, l1, 1, T, H, W, runs, &s1) != PD_OK || dit_time(be, l2, 1, T, H, W, runs, &s2) != PD_OK) {
        fail(what);
        return;
    }
    pd_wan_dit_config c2 = *c1;
    c2.layers = 2;
    const double flops = pd_wan_dit_flops(&c2, 1, T, H, W) - pd_wan_dit_flops(c1, 1, T, H, W);
    const double block = s2.median - s1.median;
    printf("block %6lld tokens: %8.3f ms (%.0f TFLOP/s); 1-layer forward %.3f ms, 2-layer %.3f ms (%d runs)\n", (long long)N,
           block * 1e3, flops / block * 1e-12, s1.median * 1e3, s2.median * 1e3, runs);
    snprintf(key, sizeof key, "block_%lld_ms", (long long)N);
    pd_bench_result_figure(g_res, key, block * 1e3, "ms");
    snprintf(key, sizeof key, "block_%lld_tflops", (long long)N);
    pd_bench_result_figure(g_res, key, flops / block * 1e-12, "TFLOP/s");
    snprintf(key, sizeof key, "forward_1layer_%lld_ms", (long long)N);
    pd_bench_result_figure(g_res, key, s1.median * 1e3, "ms");
    snprintf(key, sizeof key, "forward_2layer_%lld_ms", (long long)N);
    pd_bench_result_figure(g_res, key, s2.median * 1e3, "ms");
}

static void bench_forward(pd_backend *be, const pd_wan_dit_config *cfg, const char *dir, int64_t T, int64_t H, int64_t W,
                          int runs) {
    const int64_t N = T * (H / 2) * (W / 2);
    pd_bench_stats s;
    if (dit_time(be, dir, 2, T, H, W, runs, &s) != PD_OK) {
        fail("full forward");
        return;
    }
    const double flops = pd_wan_dit_flops(cfg, 2, T, H, W);
    char key[96];
    printf("forward %d blocks, batch 2, %lld tokens: %.3f s (%.0f TFLOP/s); 50 steps with CFG: %.1f s\n", cfg->layers,
           (long long)N, s.median, flops / s.median * 1e-12, 50 * s.median);
    snprintf(key, sizeof key, "forward_%dl_b2_%lld_ms", cfg->layers, (long long)N);
    pd_bench_result_figure(g_res, key, s.median * 1e3, "ms");
    snprintf(key, sizeof key, "forward_%dl_b2_%lld_tflops", cfg->layers, (long long)N);
    pd_bench_result_figure(g_res, key, flops / s.median * 1e-12, "TFLOP/s");
    snprintf(key, sizeof key, "est_50_steps_cfg_%lld_s", (long long)N);
    pd_bench_result_figure(g_res, key, 50 * s.median, "s");
}

/* ---- attention ---- */

typedef struct attn_run {
    pd_backend *be;
    pd_tensor q, k, v, o;
    float scale;
} attn_run;

static pd_status attn_once(void *ud) {
    attn_run *r = ud;
    PD_TRY(pd_op_attention(r->be, &r->o, &r->q, &r->k, &r->v, NULL, r->scale));
    return pd_backend_synchronize(r->be);
}

/* Uniform values in [-2, 2) keyed by name, uploaded into a fresh device tensor. */
static pd_status upload_uniform(pd_backend *be, pd_tensor *d, int nd, const int64_t *shape, const char *name) {
    pd_tensor h;
    PD_TRY(pd_tensor_alloc(&h, PD_DTYPE_F32, nd, shape));
    pd_random_uniform(h.data, pd_tensor_numel(&h), 5, name, -2.0f, 2.0f);
    pd_status st = upload_new(be, d, &h);
    pd_tensor_free(&h);
    return st;
}

/* FLOPs of one attention over (1, N, heads, hd): 4 N^2 hd heads (QK^T and PV). */
static double attn_flops(int64_t N, int64_t heads, int64_t hd) {
    return 4.0 * (double)N * (double)N * (double)hd * (double)heads;
}

/* The backend under test: CUDA device o->device, or the CPU for --on-cpu. */
static pd_status backend_create(const bench_opts *o, pd_backend **out) {
    return o->on_cpu ? pd_backend_cpu_create(0, out) : pd_backend_cuda_create(o->device, out);
}

static void bench_attention(const bench_opts *o, const char *mode, int64_t N, int64_t heads, int64_t hd, int runs) {
    setenv("PD_CUDA_ATTENTION", mode, 1);
    attn_run r = {.scale = 1.0f / sqrtf((float)hd)};
    int64_t s[4] = {1, N, heads, hd};
    char what[96], key[96];
    snprintf(what, sizeof what, "attention %s at %lld tokens", mode, (long long)N);
    pd_status st = backend_create(o, &r.be);
    if (st == PD_OK) st = upload_uniform(r.be, &r.q, 4, s, "q");
    if (st == PD_OK) st = upload_uniform(r.be, &r.k, 4, s, "k");
    if (st == PD_OK) st = upload_uniform(r.be, &r.v, 4, s, "v");
    if (st == PD_OK) st = pd_backend_tensor_alloc(r.be, &r.o, PD_DTYPE_F32, 4, s);
    pd_bench_stats t;
    if (st == PD_OK) st = pd_bench_time(attn_once, &r, 2, runs, &t);
    if (st == PD_OK) {
        const double flops = attn_flops(N, heads, hd);
        printf("attention %-5s (1, %lld, %lld, %lld): %8.3f ms (%.0f TFLOP/s)\n", mode, (long long)N, (long long)heads,
               (long long)hd, t.median * 1e3, flops / t.median * 1e-12);
        snprintf(key, sizeof key, "attn_%lld_%s_ms", (long long)N, mode);
        pd_bench_result_figure(g_res, key, t.median * 1e3, "ms");
        snprintf(key, sizeof key, "attn_%lld_%s_tflops", (long long)N, mode);
        pd_bench_result_figure(g_res, key, flops / t.median * 1e-12, "TFLOP/s");
    } else {
        fail(what);
    }
    if (r.be) {
        pd_backend_tensor_free(r.be, &r.q);
        pd_backend_tensor_free(r.be, &r.k);
        pd_backend_tensor_free(r.be, &r.v);
        pd_backend_tensor_free(r.be, &r.o);
    }
    pd_backend_free(r.be);
    unsetenv("PD_CUDA_ATTENTION");
}

/* ---- VAE ---- */

typedef struct vae_run {
    pd_wan_vae *v;
    pd_tensor lat; /* host (16, T, H, W) */
    size_t peak_used;
    int64_t frames;
} vae_run;

static size_t device_used(void) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
    return total_b - free_b;
}

static pd_status vae_frame(void *ud, int64_t index, const pd_tensor *f) {
    vae_run *r = ud;
    size_t used = device_used();
    if (used > r->peak_used) r->peak_used = used;
    r->frames = index + 1;
    return PD_OK;
}

static pd_status vae_once(void *ud) {
    vae_run *r = ud;
    return pd_wan_vae_decode(r->v, &r->lat, vae_frame, NULL, r, NULL);
}

/* On a backend of its own, so scratch buffers grown by earlier parts neither hide nor inflate the peak;
 * the baseline is taken once the backend exists. */
static void bench_vae(const bench_opts *o, const char *dir, int64_t T, int64_t H, int64_t W, int runs) {
    vae_run r = {0};
    pd_backend *be = NULL;
    pd_status st = backend_create(o, &be);
    const size_t used0 = device_used();
    if (st == PD_OK) st = pd_wan_vae_load(dir, be, &r.v);
    const size_t used1 = device_used();
    int64_t ls[4] = {16, T, H, W};
    if (st == PD_OK) st = pd_random_tensor(&r.lat, PD_DTYPE_F32, 4, ls, 4, "latent", 0.0f, 1.0f);
    pd_bench_stats s;
    if (st == PD_OK) st = pd_bench_time(vae_once, &r, 1, runs, &s);
    if (st == PD_OK) {
        /* NAN when cudaMemGetInfo answered nothing (the CPU self-check): never a fake 0 */
        const double gib = 1024.0 * 1024.0 * 1024.0, known = used0 && r.peak_used ? 1.0 : NAN;
        const double peak = ((double)r.peak_used - (double)used0) / gib * known;
        const double act = ((double)r.peak_used - (double)used1) / gib * known;
        const double wts = ((double)used1 - (double)used0) / gib * known;
        char key[96];
        printf("vae decode (16, %lld, %lld, %lld) -> %lld frames of %lldx%lld: %.3f s, %.2f ms per frame; peak device "
               "memory %.2f GiB (weights %.2f, activations and workspaces %.2f)\n",
               (long long)T, (long long)H, (long long)W, (long long)r.frames, (long long)W * 8, (long long)H * 8, s.median,
               s.median / (double)r.frames * 1e3, peak, wts, act);
        snprintf(key, sizeof key, "vae_decode_%lldx%lldx%lld_s", (long long)T, (long long)H, (long long)W);
        pd_bench_result_figure(g_res, key, s.median, "s");
        pd_bench_result_figure(g_res, "vae_ms_per_frame", s.median / (double)r.frames * 1e3, "ms");
        pd_bench_result_figure(g_res, "vae_peak_device_mem", peak, "GiB");
        pd_bench_result_figure(g_res, "vae_peak_activation_mem", act, "GiB");
        pd_bench_result_figure(g_res, "vae_weights_mem", wts, "GiB");
    } else {
        fail("vae decode");
    }
    pd_tensor_free(&r.lat);
    pd_wan_vae_free(r.v);
    pd_backend_free(be);
}

/* ---- anchors (anchor_torch.py's output) ---- */

static void read_anchor(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("anchor %s: not readable, no ratios\n", path);
        return;
    }
    char line[512];
    printf("anchor figures (PyTorch, same card, same session):\n");
    while (fgets(line, sizeof line, f)) {
        long long N;
        char be[40];
        double ms, tf;
        const char *p = strstr(line, "N=");
        char name[96], fig[96];
        if (p && sscanf(p, "N=%lld block(%39[A-Z_]) ms %lf", &N, be, &ms) == 3) {
            const bool cudnn = !strcmp(be, "CUDNN_ATTENTION");
            snprintf(name, sizeof name, "torch_block_%lld_%s_ms", N, cudnn ? "cudnn" : "flash");
            snprintf(fig, sizeof fig, "block_%lld_ms", N);
            pd_bench_result_anchor(g_res, name, ms, "ms", fig);
            if (N == 32760 && cudnn && isnan(g_torch_block_ms)) g_torch_block_ms = ms;
            double ours = pd_bench_result_figure_value(g_res, fig);
            printf("  %-32s %9.3f ms   ours %9.3f ms   ratio %.3f\n", name, ms, ours, ours / ms);
        } else if (p && sscanf(p, "N=%lld attn %39s ms %lf tflops %lf", &N, be, &ms, &tf) == 4) {
            const char *mode = !strcmp(be, "CUDNN_ATTENTION") ? "cudnn" : !strcmp(be, "FLASH_ATTENTION") ? "flash" : "efficient";
            snprintf(name, sizeof name, "torch_attn_%lld_%s_tflops", N, mode);
            /* PyTorch's memory-efficient kernel has no counterpart here: no ratio */
            if (strcmp(mode, "efficient")) snprintf(fig, sizeof fig, "attn_%lld_%s_tflops", N, mode);
            else fig[0] = 0;
            pd_bench_result_anchor(g_res, name, tf, "TFLOP/s", fig);
            if (N == 32760 && !strcmp(mode, "cudnn") && isnan(g_torch_attn_ms)) g_torch_attn_ms = ms;
            double ours = pd_bench_result_figure_value(g_res, fig);
            printf("  %-32s %9.0f TFLOP/s   ours (%s) %6.0f   ratio %.3f\n", name, tf, fig, ours, ours / tf);
        } else if (sscanf(line, "gemm_bf16_8192 ms %lf tflops %lf", &ms, &tf) == 2) {
            pd_bench_result_anchor(g_res, "torch_gemm_bf16_8192_tflops", tf, "TFLOP/s", "");
            printf("  %-32s %9.0f TFLOP/s\n", "torch_gemm_bf16_8192", tf);
        } else if (sscanf(line, "copy_GBps %lf", &tf) == 1) {
            pd_bench_result_anchor(g_res, "torch_copy_GBps", tf, "GB/s", "");
            printf("  %-32s %9.0f GB/s\n", "torch_copy", tf);
        } else if (sscanf(line, "conv3d_96x96_k3_4f_480x832 ms %lf tflops %lf", &ms, &tf) == 2) {
            pd_bench_result_anchor(g_res, "torch_conv3d_96x96_k3_4f_480x832_ms", ms, "ms", "");
            printf("  %-32s %9.3f ms (%.0f TFLOP/s)\n", "torch_conv3d_96x96_k3_4f_480x832", ms, tf);
        }
    }
    fclose(f);
}

static void print_targets(void) {
    printf("targets (issue 7):\n");
    double ours = pd_bench_result_figure_value(g_res, "block_32760_ms");
    double torch = g_torch_block_ms;
    if (isnan(ours) || isnan(torch))
        printf("  block 32760 <= 0.8 x PyTorch (cuDNN attention): not measured (ours %.3f ms, torch %.3f ms)\n", ours, torch);
    else
        printf("  block 32760 <= 0.8 x PyTorch (cuDNN attention): ours %.3f ms / torch %.3f ms = %.3f -> %s\n", ours, torch,
               ours / torch, ours / torch <= 0.8 ? "MET" : "MISSED");
    ours = pd_bench_result_figure_value(g_res, "attn_32760_cudnn_tflops");
    double ours_flash = pd_bench_result_figure_value(g_res, "attn_32760_flash_tflops");
    torch = attn_flops(32760, 12, 128) / g_torch_attn_ms * 1e-9; /* NAN without an anchor */
    double best = fmax(ours, ours_flash); /* the one that was measured, or the larger */
    if (isnan(best) || isnan(torch))
        printf("  attention >= 0.95 x PyTorch cuDNN SDPA rate: not measured (ours %.0f TFLOP/s, torch %.0f)\n", best, torch);
    else
        printf("  attention >= 0.95 x PyTorch cuDNN SDPA rate: ours %.0f TFLOP/s (best of cudnn %.0f, flash %.0f) / torch "
               "%.0f = %.3f -> %s\n", best, ours, ours_flash, torch, best / torch, best / torch >= 0.95 ? "MET" : "MISSED");
    double peak = pd_bench_result_figure_value(g_res, "vae_peak_device_mem");
    if (isnan(peak)) printf("  VAE decode peak device memory < 4 GiB: not measured\n");
    else printf("  VAE decode peak device memory < 4 GiB: %.2f GiB -> %s\n", peak, peak < 4.0 ? "MET" : "MISSED");
}

/* ---- flags ---- */

static bool parse_only(const char *v, unsigned *parts) {
    *parts = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!strcmp(tok, "block")) *parts |= PART_BLOCK;
        else if (!strcmp(tok, "forward")) *parts |= PART_FORWARD;
        else if (!strcmp(tok, "attention")) *parts |= PART_ATTENTION;
        else if (!strcmp(tok, "vae")) *parts |= PART_VAE;
        else return false;
    }
    return *parts != 0;
}

/* Our flags first; the rest (--runs, --results) go to the shared parser. */
static bool parse_args(int argc, char **argv, bench_opts *o) {
    char *rest[16] = {argv[0]};
    int nrest = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quick")) o->quick = true;
        else if (!strcmp(a, "--on-cpu")) o->on_cpu = o->quick = true;
        else if (!strcmp(a, "--only") && i + 1 < argc) {
            if (!parse_only(argv[++i], &o->parts)) {
                fprintf(stderr, "bench_gpu: --only takes a comma list of block, forward, attention, vae\n");
                return false;
            }
        } else if (!strcmp(a, "--anchor") && i + 1 < argc) o->anchor = argv[++i];
        else if (!strcmp(a, "--device") && i + 1 < argc) o->device = atoi(argv[++i]);
        else if (nrest < 15) rest[nrest++] = argv[i];
        else return false;
    }
    if (!pd_bench_parse_args(nrest, rest, "bench_gpu [--quick] [--only LIST] [--anchor FILE] [--device N]", NULL, &o->runs, 1,
                             100, &o->results))
        return false;
    return o->device >= 0;
}

int main(int argc, char **argv) {
    bench_opts o = {.parts = PART_ALL, .runs = 5};
    if (!parse_args(argc, argv, &o)) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    pd_log_set_level(PD_LOG_WARN);
    struct cudaDeviceProp prop = {0};
    if (o.on_cpu) {
        snprintf(prop.name, sizeof prop.name, "cpu (bench_gpu self-check)");
    } else if (pd_backend_cuda_device_count() <= o.device) {
        fprintf(stderr, "bench_gpu: no CUDA device %d (%d visible): skipped\n", o.device, pd_backend_cuda_device_count());
        return 77; /* skipped, as bench/run_cpu.sh and the GPU run read it */
    } else if (cudaGetDeviceProperties(&prop, o.device) != cudaSuccess || cudaSetDevice(o.device) != cudaSuccess) {
        fprintf(stderr, "bench_gpu: cannot query CUDA device %d\n", o.device);
        return 1;
    }
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/bench_gpu.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("bench_gpu: mkdtemp");
        return 1;
    }
    g_res = pd_bench_result_create(o.on_cpu ? "bench_gpu_selfcheck" : o.quick ? "bench_gpu_quick" : "bench_gpu");
    pd_backend *be = NULL;
    int rc = 1;
    if (!g_res || backend_create(&o, &be) != PD_OK) {
        fail("backend");
        goto out;
    }
    pd_bench_result_set_gpu(g_res, prop.name);
    printf("bench_gpu on %s (%.1f GiB, sm_%d%d), backend %s%s\n", prop.name, (double)prop.totalGlobalMem / (1 << 30),
           prop.major, prop.minor, pd_backend_name(be), o.quick ? ", quick" : "");
    const pd_model_preset *p13 = pd_model_preset_find("wan2.1-t2v-1.3b");
    pd_wan_dit_config c1 = p13->dit;
    c1.layers = 1;
    pd_bench_result_config_str(g_res, "model", "wan2.1-t2v-1.3b shapes, random bf16 DiT weights, f32 VAE weights");
    pd_bench_result_config_str(g_res, "backend", pd_backend_name(be));
    pd_bench_result_config_int(g_res, "runs", o.runs);
    pd_bench_result_config_str(g_res, "mode", o.quick ? "quick" : "full");
    /* run.sh's record of the revision, for copies of the tree without .git */
    const char *rev = getenv("PIPEDIT_COMMIT");
    if (rev && *rev) pd_bench_result_config_str(g_res, "source_revision", rev);
    /* latent shapes: 832x480 at 81 and 33 frames; quick: one latent frame; on the CPU a toy grid */
    const int64_t Tbig = o.quick ? 1 : 21, Tmid = 9, H = o.on_cpu ? 16 : 60, W = o.on_cpu ? 16 : 104;
    char l1[600], l2[600], l30[600], vae[600];
    snprintf(l1, sizeof l1, "%s/dit_l1", g_tmp);
    snprintf(l2, sizeof l2, "%s/dit_l2", g_tmp);
    snprintf(l30, sizeof l30, "%s/dit_lN", g_tmp);
    snprintf(vae, sizeof vae, "%s/vae", g_tmp);
    const int full_layers = o.quick ? 2 : p13->dit.layers;
    double t0 = pd_bench_now();
    if (o.parts & (PART_BLOCK | PART_FORWARD)) {
        if (pd_wan_dit_write_random(l1, &c1, 7, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_BF16) != PD_OK ||
            derive_layers(l1, l2, 2) != PD_OK || ((o.parts & PART_FORWARD) && derive_layers(l1, l30, full_layers) != PD_OK)) {
            fail("writing random DiT checkpoints");
            goto out;
        }
    }
    if ((o.parts & PART_VAE) && pd_wan_vae_write_random(vae, &p13->vae, 7, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32) != PD_OK) {
        fail("writing a random VAE checkpoint");
        goto out;
    }
    printf("random checkpoints written in %.1f s\n", pd_bench_now() - t0);

    if (o.parts & PART_BLOCK) {
        bench_block(be, &c1, l1, l2, Tbig, H, W, o.runs);
        if (!o.quick) bench_block(be, &c1, l1, l2, Tmid, H, W, o.runs);
    }
    /* cheapest first, so a run cut short still has the block, attention and VAE figures */
    if (o.parts & PART_ATTENTION) {
        const int64_t N = o.on_cpu ? 256 : o.quick ? 4096 : Tbig * (H / 2) * (W / 2);
        bench_attention(&o, "cudnn", N, 12, 128, o.runs);
        bench_attention(&o, "flash", N, 12, 128, o.runs);
    }
    if (o.parts & PART_VAE) {
        if (o.on_cpu) bench_vae(&o, vae, 1, 4, 4, 1);
        else if (o.quick) bench_vae(&o, vae, 2, 30, 52, 1);
        else bench_vae(&o, vae, 21, H, W, o.runs < 2 ? o.runs : 2);
    }
    if (o.parts & PART_FORWARD) {
        pd_wan_dit_config cf = p13->dit;
        cf.layers = full_layers;
        bench_forward(be, &cf, l30, Tbig, H, W, o.runs < 3 ? o.runs : 3);
    }
    if (o.anchor) read_anchor(o.anchor);
    if (!o.quick || o.on_cpu) print_targets();
    const char *path = pd_bench_result_write(g_res, o.results);
    if (!path) {
        fail("writing the result");
        goto out;
    }
    printf("wrote %s\n", path);
    rc = g_failures ? 1 : 0;
out:
    pd_bench_result_free(g_res);
    pd_backend_free(be);
    pd_bench_rmtree(g_tmp);
    return rc;
}
