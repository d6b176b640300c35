/* One Wan2.1 DiT evaluation (batch 1) on the CPU backend at two sizes:
 *   tiny: the embedded tiny preset (dim 128, 4 x 32 heads, 2 layers, f32) at 128x96x9 -> latent (16, 3, 12, 16),
 *         144 tokens;
 *   mid:  dim 512, 4 heads x 128 (Wan's head_dim), 4 layers, ffn 2048, text_dim 4096, bf16 weights, at
 *         256x192x17 -> latent (16, 5, 24, 32), 960 tokens.
 * Prints and records the median time of several runs, GFLOP/s (matmul and attention FLOPs counted
 * analytically by pd_wan_dit_flops) and the peak RSS of each case.
 *
 *   bench_dit [--threads N] [--runs R] [--results DIR]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/common/bench.h"
#include "models/random_init.h"
#include "models/wan/dit.h"

typedef struct bench_case {
    const char *name;
    pd_wan_dit_config cfg;
    pd_dtype dtype;
    int64_t T, H, W; /* latent */
    int64_t L;       /* context rows */
} bench_case;

typedef struct bench_run {
    pd_wan_dit *m;
    pd_tensor vel, lat, ctx;
    float t;
} bench_run;

static pd_status run_once(void *ud) {
    bench_run *r = ud;
    return pd_wan_dit_forward(r->m, &r->vel, &r->lat, &r->t, &r->ctx);
}

static pd_status bench_one(const bench_case *c, pd_backend *be, const char *dir, int runs, pd_bench_result *res) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, c->name);
    PD_TRY(pd_wan_dit_write_random(path, &c->cfg, 1, PD_WAN_LAYOUT_DIFFUSERS, c->dtype));
    pd_bench_peak_rss_reset();
    bench_run r = {.t = 937.0f};
    pd_status st = pd_wan_dit_load(path, be, &r.m);
    int64_t ls[5] = {1, c->cfg.in_channels, c->T, c->H, c->W}, vs[5] = {1, c->cfg.out_channels, c->T, c->H, c->W};
    int64_t cs[3] = {1, c->L, c->cfg.text_dim};
    if (st == PD_OK) st = pd_random_tensor(&r.lat, PD_DTYPE_F32, 5, ls, 2, "latent", 0.0f, 1.0f);
    if (st == PD_OK) st = pd_random_tensor(&r.ctx, PD_DTYPE_F32, 3, cs, 2, "context", 0.0f, 1.0f);
    if (st == PD_OK) st = pd_tensor_alloc(&r.vel, PD_DTYPE_F32, 5, vs);
    pd_bench_stats s = {0};
    if (st == PD_OK) st = pd_bench_time(run_once, &r, 1, runs, &s);
    if (st == PD_OK) {
        double flops = pd_wan_dit_flops(&c->cfg, 1, c->T, c->H, c->W);
        double rss = (double)pd_bench_peak_rss_bytes() / 1048576.0;
        pd_wan_dit_grid g;
        pd_wan_dit_grid_of(&c->cfg, c->T, c->H, c->W, &g);
        char key[64], shape[192];
        snprintf(shape, sizeof shape, "dim %d, %dx%d heads, %d layers, ffn %d, text_dim %d, %s; latent (16, %lld, %lld, %lld), %lld tokens",
                 c->cfg.dim, c->cfg.heads, c->cfg.head_dim, c->cfg.layers, c->cfg.ffn_dim, c->cfg.text_dim,
                 pd_dtype_name(c->dtype), (long long)c->T, (long long)c->H, (long long)c->W, (long long)g.tokens);
        printf("%-5s %s\n      median %.2f ms (min %.2f, max %.2f, %d runs), %.2f GFLOP/eval, %.1f GFLOP/s, peak RSS %.1f MiB\n",
               c->name, shape, s.median * 1e3, s.min * 1e3, s.max * 1e3, s.runs, flops * 1e-9,
               flops / s.median * 1e-9, rss);
        snprintf(key, sizeof key, "%s_shape", c->name);
        pd_bench_result_config_str(res, key, shape);
        snprintf(key, sizeof key, "%s_time_median", c->name);
        pd_bench_result_figure(res, key, s.median * 1e3, "ms");
        snprintf(key, sizeof key, "%s_gflops", c->name);
        pd_bench_result_figure(res, key, flops / s.median * 1e-9, "GFLOP/s");
        snprintf(key, sizeof key, "%s_flop_per_eval", c->name);
        pd_bench_result_figure(res, key, flops * 1e-9, "GFLOP");
        snprintf(key, sizeof key, "%s_peak_rss", c->name);
        pd_bench_result_figure(res, key, rss, "MiB");
    }
    pd_tensor_free(&r.lat);
    pd_tensor_free(&r.ctx);
    pd_tensor_free(&r.vel);
    pd_wan_dit_free(r.m);
    return st;
}

int main(int argc, char **argv) {
    int threads = 0, runs = 5;
    const char *results = NULL;
    if (!pd_bench_parse_args(argc, argv, "bench_dit", &threads, &runs, 3, 1000, &results)) return 2;
    pd_log_set_level(PD_LOG_WARN);
    const pd_wan_dit_config tiny = pd_model_preset_default()->dit;
    pd_wan_dit_config mid = tiny;
    mid.dim = 512, mid.heads = 4, mid.head_dim = 128, mid.layers = 4, mid.ffn_dim = 2048, mid.text_dim = 4096;
    const bench_case cases[] = {
        {"tiny", tiny, PD_DTYPE_F32, 3, 12, 16, 20},
        {"mid", mid, PD_DTYPE_BF16, 5, 24, 32, 20},
    };

    char dir[] = "/tmp/bench_dit.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_dit: mkdtemp");
        return 1;
    }
    pd_backend *be = NULL;
    pd_bench_result *res = pd_bench_result_create("bench_dit");
    int rc = 1;
    if (!res || pd_backend_cpu_create(threads, &be) != PD_OK) {
        fprintf(stderr, "bench_dit: %s\n", pd_error_msg());
        goto out;
    }
    char cpu[256];
    printf("bench_dit on %s, backend %s with %d threads\n", pd_bench_cpu_description(cpu, sizeof cpu),
           pd_backend_name(be), pd_backend_threads(be));
    pd_bench_result_config_str(res, "backend", pd_backend_name(be));
    pd_bench_result_config_int(res, "threads", pd_backend_threads(be));
    pd_bench_result_config_int(res, "batch", 1);
    pd_bench_result_config_int(res, "runs", runs);
    /* OpenBLAS picks its GEMM kernels by CPU model; CPUs it does not know fall back to slow generic
     * ones unless OPENBLAS_CORETYPE names a kernel family. Record which. */
    const char *core = getenv("OPENBLAS_CORETYPE");
    pd_bench_result_config_str(res, "openblas_coretype", core && *core ? core : "auto");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (bench_one(&cases[i], be, dir, runs, res) != PD_OK) {
            fprintf(stderr, "bench_dit: %s: %s\n", cases[i].name, pd_error_msg());
            goto out;
        }
    const char *path = pd_bench_result_write(res, results);
    if (!path) {
        fprintf(stderr, "bench_dit: %s\n", pd_error_msg());
        goto out;
    }
    printf("wrote %s\n", path);
    rc = 0;
out:
    pd_bench_result_free(res);
    pd_backend_free(be);
    pd_bench_rmtree(dir);
    return rc;
}
