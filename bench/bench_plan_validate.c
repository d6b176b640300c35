/* bench_plan_validate: the cost model (plan/cost.h) and the pipeline simulator (plan/sim.h) against
 * measurements on this machine that they were not fitted to (issue 15, "Must show").
 *
 * 1. `pipedit calibrate --device cpu` measures the profile (microbenchmarks of GEMM, attention, copy,
 *    conv3d through the CPU backend and of the shared-memory communicator); the model's only other
 *    inputs are the machine's core count (in the profile), the code's pass counts and the configs.
 * 2. The existing benchmarks, found next to this program, measure with the real code on one model
 *    (`pipedit mkmodel --preset attn-bench`: dim 512, 8 heads x 64, 2 layers, ffn 1024, f32 weights):
 *      bench_sp        one DiT forward: one process with every core (sp1), SP 2 and SP 4 with Ulysses
 *                      and with PipeSP g = 1, one single-threaded process per rank;
 *      bench_aco       one DiT forward of a single-threaded process, Aco off and on (one single-threaded
 *                      helper, the share the lender picks from its own measurements);
 *      bench_pipeline  whole requests (text, denoise, VAE decode, MP4) back to back through the
 *                      scheduler: a single worker with every core, and DeDiVAE 1 + 1 (one denoise and
 *                      one decode worker, one thread each); seconds per job = 60 / jobs per minute.
 *    each at two shapes: DiT latents (16, 4, 32, 32) = 1024 tokens (mostly linears) and
 *    (16, 4, 64, 64) = 4096 tokens (mostly attention); requests 512x512 x 1 frame (1024 tokens), 4
 *    steps with CFG (denoise the longer stage), and 768x768 x 1 frame (2304 tokens), 1 step without
 *    (decode the longer stage).
 * 3. The same configurations predicted from the profile: pd_plan_dit_step with the rank's share of the
 *    2 cores (pd_plan_cpu_share: threads / max(busy threads, cores)), and for requests pd_sim_run over
 *    the stage times (text, steps, VAE decode) of a worker's share.
 * Writes bench/results/bench_plan_validate-<machine>-<date>.json: per row <row>_measured and
 * <row>_predicted (ms) and <row>_error (percent, (predicted - measured) / measured), the load average
 * before and after, the most cores other processes kept busy during one of the benchmarks (from
 * /proc/stat less our own CPU time: the predictions assume a machine of our own, so a benchmark run
 * while others kept more than 0.25 cores busy is run again, up to 3 times; the figure says how
 * quiet the kept runs were), the profile; prints the table. Exits 1 when any |error| exceeds 25%.
 *
 * Runs: R timed forwards per configuration in bench_sp and bench_aco (median), 2 rounds of 3 jobs per
 * mode in bench_pipeline (1 with R = 1); about 5 minutes on 2 cores.
 *
 *   bench_plan_validate [--runs R (default 5)] [--results DIR]
 */
#include <glob.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/process.h"
#include "bench/common/bench.h"
#include "plan/cost.h"
#include "plan/sim.h"

#define LIMIT 0.25 /* the largest |error| accepted */

static char g_bin[1024], g_tmp[64];
static double g_foreign_max; /* the most cores other processes kept busy during a run we kept */

/* A benchmark during which other processes kept more than QUIET cores busy is run again, at most
 * ATTEMPTS times in all (the last attempt is kept whatever the load). */
#define QUIET 0.25
#define ATTEMPTS 3

/* Seconds every core of the machine spent busy (user, nice, system, irq, softirq, steal), from
 * /proc/stat; NAN where it is unreadable. */
static double busy_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                       &v[7])
              : 0;
    if (f) fclose(f);
    const long hz = sysconf(_SC_CLK_TCK);
    return n == 8 && hz > 0 ? (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz : NAN;
}

/* CPU seconds of our finished children. */
static double children_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec + ru.ru_stime.tv_sec + 1e-6 * ru.ru_stime.tv_usec;
}

/* Runs bin/prog with args (NULL-terminated); true when it exits 0. *foreign: how many cores other
 * processes kept busy meanwhile (the machine's busy time minus our children's, per second; 0 where
 * /proc/stat is unreadable): the measurements assume none. */
static bool run_prog(const char *prog, const char *const *args, double *foreign) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", g_bin, prog);
    const char *argv[32] = {path};
    int n = 1;
    for (; args[n - 1] && n < 31; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    printf("$");
    for (int i = 0; i < n; i++) printf(" %s", argv[i]);
    printf("\n");
    fflush(NULL);
    const double b0 = busy_seconds(), c0 = children_seconds(), t0 = pd_bench_now();
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        if (pd_process_die_with_parent(parent) < 0) _exit(127); /* an interrupted validation leaves no benchmark */
        execv(path, (char *const *)argv);
        _exit(127);
    }
    int ws = 0;
    if (pid < 0 || waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        fprintf(stderr, "bench_plan_validate: %s failed (status %d)\n", prog, ws);
        return false;
    }
    const double wall = pd_bench_now() - t0, f = (busy_seconds() - b0 - (children_seconds() - c0)) / wall;
    *foreign = isfinite(f) && f > 0 ? f : 0;
    printf("  (other processes kept %.2f cores busy meanwhile)\n", *foreign);
    return true;
}

/* run_prog, again while other processes kept more than QUIET cores busy (up to ATTEMPTS runs), with
 * `dir` (when not NULL) emptied before each. */
static bool run_quiet(const char *prog, const char *const *args, const char *dir) {
    double foreign = 0;
    for (int a = 1; a <= ATTEMPTS; a++) {
        if (dir) pd_bench_rmtree(dir);
        if (!run_prog(prog, args, &foreign)) return false;
        if (foreign <= QUIET) break;
        if (a < ATTEMPTS) printf("  more than %.2f: running it again\n", QUIET);
    }
    if (foreign > g_foreign_max) g_foreign_max = foreign;
    return true;
}

/* The figures of the one result file a benchmark wrote into dir (NULL after printing why). */
static json_t *load_result(const char *dir) {
    char pat[1200];
    snprintf(pat, sizeof pat, "%s/*.json", dir);
    glob_t g;
    if (glob(pat, 0, NULL, &g) != 0 || g.gl_pathc != 1) {
        fprintf(stderr, "bench_plan_validate: expected one result file in %s\n", dir);
        globfree(&g);
        return NULL;
    }
    json_error_t err;
    json_t *r = json_load_file(g.gl_pathv[0], 0, &err);
    if (!r) fprintf(stderr, "bench_plan_validate: %s: %s\n", g.gl_pathv[0], err.text);
    globfree(&g);
    return r;
}

/* A figure's value, NAN when absent. */
static double figure(const json_t *r, const char *name) {
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "figures"), i, f) {
        if (!strcmp(json_string_value(json_object_get(f, "name")) ?: "", name))
            return json_is_number(json_object_get(f, "value")) ? json_number_value(json_object_get(f, "value")) : NAN;
    }
    return NAN;
}

typedef struct row {
    char name[64], config[64], shape[64];
    double measured, predicted; /* seconds */
} row;

static row g_rows[32];
static int g_nrows;

static void add_row(const char *name, const char *config, const char *shape, double measured, double predicted) {
    PD_ASSERT(g_nrows < (int)(sizeof g_rows / sizeof g_rows[0]));
    row *r = &g_rows[g_nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->config, sizeof r->config, "%s", config);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    r->measured = measured, r->predicted = predicted;
}

/* A DiT latent shape (batch 1, no CFG) as the request the model prices: latent (T, H, W) comes from
 * frames 1 + 4 (T - 1) of 8H x 8W pixels. */
static pd_plan_request latent_request(const int64_t lat[3]) {
    return (pd_plan_request){.width = (int)(8 * lat[2]), .height = (int)(8 * lat[1]), .frames = (int)(4 * (lat[0] - 1) + 1),
                             .steps = 1, .cfg = false};
}

/* One DiT forward on ranks of `threads` threads each among `busy` busy threads. */
static double predict_forward(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r, int degree,
                              int g, int aco_helpers, int threads, int busy, int *aco_share) {
    pd_plan_sp sp = {.degree = degree, .g = g, .aco_helpers = aco_helpers, .aco_share = -1,
                     .device_share = pd_plan_cpu_share(p->cores, threads, busy)};
    pd_plan_step o;
    if (pd_plan_dit_step(p, m, r, &sp, &o) != PD_OK) {
        fprintf(stderr, "bench_plan_validate: %s\n", pd_error_msg());
        return NAN;
    }
    if (aco_share) *aco_share = o.aco_share;
    /* bench_sp's accounting (its wait split) all-gathers every rank's issue times once per forward. */
    return o.step_s + pd_plan_sp_sync_s(p, &sp);
}

/* Seconds per job of `jobs` requests back to back through one worker (decoders 0, `threads` each) or
 * one denoise and one decode worker. */
static double predict_jobs(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r, int decoders,
                           int threads, int jobs) {
    const int workers = decoders + 1;
    pd_plan_profile mine;
    pd_plan_profile_share(p, pd_plan_cpu_share(p->cores, threads, workers * threads), &mine);
    pd_plan_vae vae;
    pd_plan_vae_decode(&mine, m, r, &vae);
    pd_sim_stages st = {.text_s = pd_plan_text_seconds(&mine, m, r),
                        .step_s = predict_forward(p, m, r, 1, 0, 0, threads, workers * threads, NULL),
                        .decode_s = vae.seconds, .steps = r->steps};
    st.step_aco_s = st.step_s;
    pd_sim_config cfg = {.replicas = 1, .decoders = decoders, .requests = jobs};
    pd_sim_result res;
    if (!isfinite(st.step_s) || pd_sim_run(&cfg, &st, &res) != PD_OK) return NAN;
    printf("  predicted stages (%d worker%s, %d thread%s each): text %.1f ms, step %.1f ms x %d, decode %.1f ms "
           "(of it MP4 + PNG %.1f ms, first touch %.1f ms)\n",
           workers, workers > 1 ? "s" : "", threads, threads > 1 ? "s" : "", st.text_s * 1e3, st.step_s * 1e3,
           r->steps, st.decode_s * 1e3, vae.encode_s * 1e3, vae.fault_s * 1e3);
    return res.makespan_s / jobs;
}

typedef struct dit_shape {
    const char *name;
    int64_t lat[3];
} dit_shape;

typedef struct req_shape {
    const char *name;
    int width, height, frames, steps;
    double guidance;
} req_shape;

int main(int argc, char **argv) {
    int runs = 5;
    const char *results = NULL;
    if (!pd_bench_parse_args(argc, argv, "bench_plan_validate", NULL, &runs, 1, 20, &results)) return 2;
    pd_log_set_level(PD_LOG_WARN);
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    snprintf(g_bin, sizeof g_bin, "%s", dirname(self));
    const char *progs[] = {"pipedit", "bench_sp", "bench_aco", "bench_pipeline"};
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", g_bin, progs[i]);
        if (access(p, X_OK) != 0) {
            fprintf(stderr, "bench_plan_validate: %s is not built\n", p);
            return 77;
        }
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/bench_plan_validate.XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("bench_plan_validate: mkdtemp");
        return 1;
    }
    double load0[3] = {0}, load1[3] = {0};
    getloadavg(load0, 3);
    const dit_shape dits[] = {{"1024tok", {4, 32, 32}}, {"4096tok", {4, 64, 64}}};
    const req_shape reqs[] = {{"512x512x1", 512, 512, 1, 4, 5.0}, {"768x768x1", 768, 768, 1, 1, 1.0}};
    const int jobs = 3;
    char model_dir[128], profile_path[128], dir[256], lat[64], runs_s[16], size[32], frames[16], steps[16], guid[16];
    char jobs_s[16];
    snprintf(model_dir, sizeof model_dir, "%s/model", g_tmp);
    snprintf(profile_path, sizeof profile_path, "%s/profile.json", g_tmp);
    snprintf(runs_s, sizeof runs_s, "%d", runs);
    char pipe_runs[16]; /* whole requests take seconds: at most 2 rounds of 3 jobs */
    snprintf(pipe_runs, sizeof pipe_runs, "%d", runs >= 2 ? 2 : 1);
    snprintf(jobs_s, sizeof jobs_s, "%d", jobs);
    int rc = 1;
    pd_bench_result *res = pd_bench_result_create("bench_plan_validate");
    pd_plan_profile prof;
    pd_plan_model m;
    double ignored;
    if (!res || !run_prog("pipedit", (const char *[]){"mkmodel", "--preset", "attn-bench", "--dtype", "f32", "--out",
                                                       model_dir, NULL}, &ignored) ||
        !run_quiet("pipedit", (const char *[]){"calibrate", "--device", "cpu", "--out", profile_path, NULL}, NULL))
        goto done;
    if (pd_plan_profile_load(profile_path, &prof) != PD_OK || pd_plan_model_get(model_dir, &m) != PD_OK) {
        fprintf(stderr, "bench_plan_validate: %s\n", pd_error_msg());
        goto done;
    }
    PD_ASSERT(m.weight_bytes == 4); /* mkmodel --dtype f32, read back from the checkpoint */
    const int cores = prof.cores > 0 ? prof.cores : 1;

    for (size_t s = 0; s < sizeof dits / sizeof dits[0]; s++) {
        const dit_shape *d = &dits[s];
        const pd_plan_request r = latent_request(d->lat);
        int64_t tokens = 0;
        pd_plan_request_check(&m, &r, &tokens);
        char shape[64];
        snprintf(shape, sizeof shape, "latent (16, %lld, %lld, %lld), %lld tokens", (long long)d->lat[0],
                 (long long)d->lat[1], (long long)d->lat[2], (long long)tokens);
        snprintf(lat, sizeof lat, "%lld,%lld,%lld", (long long)d->lat[0], (long long)d->lat[1], (long long)d->lat[2]);
        /* SP: one process per rank, cores / n threads each (at least 1), as bench_sp runs them */
        snprintf(dir, sizeof dir, "%s/sp-%s", g_tmp, d->name);
        json_t *j = NULL;
        if (!run_quiet("bench_sp", (const char *[]){"--model", model_dir, "--latent", lat, "--variants", "ulysses,pipesp_g1",
                                                   "--runs", runs_s, "--results", dir, NULL}, dir) ||
            !(j = load_result(dir)))
            goto done;
        char name[64], fig[96];
        snprintf(name, sizeof name, "sp1_%s", d->name);
        add_row(name, "1 process, all cores", shape, figure(j, "sp1_forward") * 1e-3,
                predict_forward(&prof, &m, &r, 1, 0, 0, cores, cores, NULL));
        const int degrees[2] = {2, 4};
        for (int k = 0; k < 2; k++) {
            const int deg = degrees[k], thr = cores / deg > 0 ? cores / deg : 1;
            const char *variant[2] = {"ulysses", "pipesp_g1"};
            for (int v = 0; v < 2; v++) {
                char config[64];
                snprintf(name, sizeof name, "sp%d_%s_%s", deg, v ? "pipesp" : "ulysses", d->name);
                snprintf(config, sizeof config, "SP %d, %s", deg, v ? "PipeSP g=1" : "Ulysses");
                snprintf(fig, sizeof fig, "sp%d_%s_forward", deg, variant[v]);
                add_row(name, config, shape, figure(j, fig) * 1e-3,
                        predict_forward(&prof, &m, &r, deg, v ? 1 : 0, 0, thr, deg * thr, NULL));
            }
        }
        json_decref(j);
        /* Aco: a single-threaded lender, a single-threaded helper */
        snprintf(dir, sizeof dir, "%s/aco-%s", g_tmp, d->name);
        char dit_dir[160];
        snprintf(dit_dir, sizeof dit_dir, "%s", model_dir);
        if (!run_quiet("bench_aco", (const char *[]){"--model", dit_dir, "--latent", lat, "--name", d->name, "--runs",
                                                    runs_s, "--results", dir, NULL}, dir) ||
            !(j = load_result(dir)))
            goto done;
        int share = 0;
        snprintf(name, sizeof name, "aco_off_%s", d->name);
        snprintf(fig, sizeof fig, "%s_step_off", d->name);
        add_row(name, "Aco off (1 thread)", shape, figure(j, fig) * 1e-3, predict_forward(&prof, &m, &r, 1, 0, 0, 1, 1, NULL));
        snprintf(name, sizeof name, "aco_on_%s", d->name);
        snprintf(fig, sizeof fig, "%s_step_aco", d->name);
        add_row(name, "Aco on (1 + 1 helper)", shape, figure(j, fig) * 1e-3,
                predict_forward(&prof, &m, &r, 1, 0, 1, 1, 2, &share));
        snprintf(fig, sizeof fig, "%s_heads_lent", d->name);
        const double lent = figure(j, fig);
        printf("  Aco heads lent: measured %.2f, predicted %d of %d\n", lent, share, m.dit.heads);
        snprintf(fig, sizeof fig, "aco_heads_lent_%s_measured", d->name);
        pd_bench_result_figure(res, fig, lent, "heads");
        snprintf(fig, sizeof fig, "aco_heads_lent_%s_predicted", d->name);
        pd_bench_result_figure(res, fig, share, "heads");
        json_decref(j);
    }
    for (size_t s = 0; s < sizeof reqs / sizeof reqs[0]; s++) {
        const req_shape *q = &reqs[s];
        const pd_plan_request r = {.width = q->width, .height = q->height, .frames = q->frames, .steps = q->steps,
                                   .cfg = q->guidance > 1.0};
        char shape[64];
        snprintf(shape, sizeof shape, "%dx%d, %d frame%s, %d steps%s", q->width, q->height, q->frames,
                 q->frames > 1 ? "s" : "", q->steps, r.cfg ? ", CFG" : "");
        snprintf(dir, sizeof dir, "%s/pipe-%s", g_tmp, q->name);
        snprintf(size, sizeof size, "%dx%d", q->width, q->height);
        snprintf(frames, sizeof frames, "%d", q->frames);
        snprintf(steps, sizeof steps, "%d", q->steps);
        snprintf(guid, sizeof guid, "%g", q->guidance);
        json_t *j = NULL;
        if (!run_quiet("bench_pipeline", (const char *[]){"--model", model_dir, "--size", size, "--frames", frames,
                                                         "--steps", steps, "--guidance", guid, "--jobs", jobs_s,
                                                         "--runs", pipe_runs, "--results", dir, NULL}, dir) ||
            !(j = load_result(dir)))
            goto done;
        char name[64];
        snprintf(name, sizeof name, "single_%s", q->name);
        add_row(name, "single worker (all cores)", shape, 60.0 / figure(j, "jobs_per_min_single"),
                predict_jobs(&prof, &m, &r, 0, cores, jobs));
        snprintf(name, sizeof name, "dedivae_1p1_%s", q->name);
        add_row(name, "DeDiVAE 1 + 1 (1 thread each)", shape, 60.0 / figure(j, "jobs_per_min_pipelined"),
                predict_jobs(&prof, &m, &r, 1, cores / 2 > 0 ? cores / 2 : 1, jobs));
        json_decref(j);
    }
    getloadavg(load1, 3);

    bool all_ok = true;
    printf("\n| config | shape | measured | predicted | error |\n|---|---|---:|---:|---:|\n");
    for (int i = 0; i < g_nrows; i++) {
        const row *w = &g_rows[i];
        const double err = (w->predicted - w->measured) / w->measured;
        const bool ok = isfinite(err) && fabs(err) <= LIMIT;
        all_ok = all_ok && ok;
        printf("| %s | %s | %.0f ms | %.0f ms | %+.1f%%%s |\n", w->config, w->shape, w->measured * 1e3,
               w->predicted * 1e3, 100 * err, ok ? "" : " (over 25%)");
        char fig[96];
        snprintf(fig, sizeof fig, "%.63s_measured", w->name);
        pd_bench_result_figure(res, fig, w->measured * 1e3, "ms");
        snprintf(fig, sizeof fig, "%.63s_predicted", w->name);
        pd_bench_result_figure(res, fig, w->predicted * 1e3, "ms");
        snprintf(fig, sizeof fig, "%.63s_error", w->name);
        pd_bench_result_figure(res, fig, 100 * err, "%");
    }
    printf("load average: %.2f before, %.2f after; other processes kept up to %.2f cores busy during one benchmark\n",
           load0[0], load1[0], g_foreign_max);
    pd_bench_result_config_str(res, "model", "pipedit mkmodel --preset attn-bench --dtype f32 (dim 512, 8 heads x 64, "
                                             "2 layers, ffn 1024, text_dim 32; tiny VAE and text encoder)");
    pd_bench_result_config_str(res, "profile", "pipedit calibrate --device cpu, run at the start");
    pd_bench_result_config_num(res, "profile_gemm_f32_flops", prof.gemm_f32);
    pd_bench_result_config_num(res, "profile_attn_flops", prof.attn);
    pd_bench_result_config_num(res, "profile_mem_bw_bytes", prof.mem_bw);
    pd_bench_result_config_num(res, "profile_conv_flops", prof.conv);
    pd_bench_result_config_num(res, "profile_a2a_bw_bytes", prof.a2a.bw);
    pd_bench_result_config_num(res, "profile_a2a_latency_s", prof.a2a.latency);
    pd_bench_result_config_num(res, "profile_p2p_bw_bytes", prof.p2p.bw);
    pd_bench_result_config_int(res, "profile_cores", prof.cores);
    pd_bench_result_config_num(res, "profile_encode_first_px", prof.encode_first_px);
    pd_bench_result_config_num(res, "profile_encode_px", prof.encode_px);
    pd_bench_result_config_num(res, "profile_fault_bytes", prof.fault_bw);
    pd_bench_result_config_int(res, "runs", runs);
    pd_bench_result_config_int(res, "jobs_per_round", jobs);
    pd_bench_result_config_num(res, "load_average_at_start", load0[0]);
    pd_bench_result_config_num(res, "load_average_at_end", load1[0]);
    pd_bench_result_config_num(res, "foreign_cores_busy_max", g_foreign_max);
    pd_bench_result_config_num(res, "error_limit_percent", 100 * LIMIT);
    const char *path = pd_bench_result_write(res, results);
    if (!path) {
        fprintf(stderr, "bench_plan_validate: %s\n", pd_error_msg());
        goto done;
    }
    printf("wrote %s\n", path);
    rc = all_ok ? 0 : 1;
    if (!all_ok) fprintf(stderr, "bench_plan_validate: a prediction is off by more than %.0f%%\n", 100 * LIMIT);
done:
    pd_bench_result_free(res);
    pd_bench_rmtree(g_tmp);
    return rc;
}
