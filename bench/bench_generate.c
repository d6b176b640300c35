/* Text to video end to end (pd_pipeline_generate) on the CPU backend with the tiny preset at two
 * sizes, UniPC, 8 steps, guidance 5 (batch 2 through the DiT):
 *   small: 128x96, 9 frames  -> latent (16, 3, 12, 16)
 *   large: 256x192, 17 frames -> latent (16, 5, 24, 32)
 * Records the median over runs of each stage (text, denoise per step, decode, encode, total) and the
 * peak RSS of each size.
 *
 *   bench_generate [--threads N] [--runs R] [--results DIR]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/common/bench.h"
#include "models/model_dir.h"
#include "models/pipeline.h"

typedef struct bench_size {
    const char *name;
    int width, height, frames;
} bench_size;

static pd_status bench_size_run(pd_pipeline *pl, const bench_size *bs, const char *dir, int runs, pd_bench_result *res) {
    pd_gen_params p;
    pd_pipeline_default_params(pl, &p);
    p.prompt = "a red fox running through fresh snow at dawn";
    p.seed = 1234;
    p.width = bs->width;
    p.height = bs->height;
    p.frames = bs->frames;
    char mp4[600];
    snprintf(mp4, sizeof mp4, "%s/%s.mp4", dir, bs->name);
    enum { MAX_RUNS = 64 };
    double st_s[PD_STAGE_COUNT][MAX_RUNS], step_s[MAX_RUNS], total_s[MAX_RUNS];
    pd_bench_peak_rss_reset();
    for (int r = -1; r < runs; r++) { /* run -1 warms up */
        pd_gen_timings t;
        PD_TRY(pd_pipeline_generate(pl, &p, mp4, NULL, NULL, NULL, NULL, NULL, &t));
        if (r < 0) continue;
        total_s[r] = 0;
        for (int s = 0; s < PD_STAGE_COUNT; s++) {
            st_s[s][r] = t.seconds[s];
            total_s[r] += t.seconds[s];
        }
        step_s[r] = t.denoise_step_seconds;
    }
    double rss = (double)pd_bench_peak_rss_bytes() / 1048576.0;
    char name[96];
    printf("%-6s %dx%d x%d frames, %d steps:", bs->name, p.width, p.height, p.frames, p.steps);
    for (int s = 0; s < PD_STAGE_COUNT; s++) {
        double m = pd_bench_median(st_s[s], runs);
        snprintf(name, sizeof name, "%s_%s", bs->name, pd_stage_name((pd_stage)s));
        pd_bench_result_figure(res, name, m * 1e3, "ms");
        printf(" %s %.1f ms", pd_stage_name((pd_stage)s), m * 1e3);
    }
    double step = pd_bench_median(step_s, runs), total = pd_bench_median(total_s, runs);
    snprintf(name, sizeof name, "%s_denoise_per_step", bs->name);
    pd_bench_result_figure(res, name, step * 1e3, "ms");
    snprintf(name, sizeof name, "%s_total", bs->name);
    pd_bench_result_figure(res, name, total * 1e3, "ms");
    snprintf(name, sizeof name, "%s_peak_rss", bs->name);
    pd_bench_result_figure(res, name, rss, "MiB");
    printf(" | %.1f ms/step, total %.1f ms, peak RSS %.1f MiB\n", step * 1e3, total * 1e3, rss);
    return PD_OK;
}

int main(int argc, char **argv) {
    int threads = 0, runs = 5;
    const char *results = NULL;
    if (!pd_bench_parse_args(argc, argv, "bench_generate", &threads, &runs, 1, 64, &results)) return 2;
    char dir[] = "/tmp/bench_generate.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    const pd_model_preset *pre = pd_model_preset_default();
    pd_backend *be = NULL;
    pd_pipeline *pl = NULL;
    pd_bench_result *res = pd_bench_result_create("bench_generate");
    int rc = 1;
    char model[600];
    snprintf(model, sizeof model, "%s/model", dir);
    pd_status st = res ? pd_model_dir_write(model, pre, 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32) : PD_ERR_NOMEM;
    if (!st) st = pd_backend_cpu_create(threads, &be);
    if (!st) st = pd_pipeline_load(model, be, PD_PART_ALL, &pl);
    if (!st) {
        pd_bench_result_config_str(res, "model", pre->name);
        pd_bench_result_config_str(res, "backend", pd_backend_name(be));
        pd_bench_result_config_int(res, "threads", pd_backend_threads(be));
        pd_bench_result_config_str(res, "sampler", "unipc");
        pd_bench_result_config_int(res, "steps", pre->default_steps);
        pd_bench_result_config_num(res, "guidance", pre->default_guidance);
        pd_bench_result_config_str(res, "weights", "f32");
        pd_bench_result_config_str(res, "shapes", "small 128x96x9, large 256x192x17");
        pd_bench_result_config_int(res, "runs", runs);
        double load[1];
        if (getloadavg(load, 1) == 1) pd_bench_result_config_num(res, "load_average_at_start", load[0]); /* shared machine */
        const bench_size sizes[] = {{"small", 128, 96, 9}, {"large", 256, 192, 17}};
        for (size_t i = 0; i < 2 && !st; i++) st = bench_size_run(pl, &sizes[i], dir, runs, res);
    }
    if (!st) {
        const char *path = pd_bench_result_write(res, results);
        if (path) {
            printf("wrote %s\n", path);
            rc = 0;
        } else {
            fprintf(stderr, "bench_generate: %s\n", pd_error_msg());
        }
    } else {
        fprintf(stderr, "bench_generate: %s\n", pd_error_msg());
    }
    pd_pipeline_free(pl);
    pd_backend_free(be);
    pd_bench_result_free(res);
    pd_bench_rmtree(dir);
    return rc;
}
