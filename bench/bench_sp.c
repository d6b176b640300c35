/* Per-step accounting of the sequence-parallel DiT forward (Ulysses vs PipeSP) over the shared-
 * memory communicator, on CPU worker processes.
 *
 * Model: dim 512, 8 heads x 64, 2 layers, ffn 1024, text_dim 64, f32 random weights; latent
 * (16, 8, 32, 32) -> 2048 tokens; batch 1 (one step of one CFG branch). For SP degree n (2 and 4)
 * the bench forks n ranks; each loads the model and runs, per variant (plain Ulysses g = heads per
 * rank, PipeSP g = 1, PipeSP with the measured default g), a warm-up and R timed forwards, then the
 * same count with the attention compute skipped (comm_only) to time the communication schedule
 * alone. Per rank and forward it records bytes sent to other ranks, forward time, attention compute
 * time and time blocked in communication waits, split (options.accounting: every rank's issue time
 * of every collective, one host clock) into waiting for a peer that had not yet issued the
 * collective (skew: it was still computing) and waiting for the bytes. Figures are medians over
 * runs of the slowest rank:
 *   <v>_bytes_per_rank   MB sent by one rank per step
 *   <v>_forward          ms per step
 *   <v>_compute          ms per step neither blocked on bytes nor on late peers
 *   <v>_attention        ms of attention compute
 *   <v>_comm_total       ms waiting for bytes when nothing overlaps them (comm_only)
 *   <v>_comm_exposed     ms waiting for bytes in the real forward
 *   <v>_overlap          1 - exposed / total: the share of communication hidden behind compute
 *   <v>_peer_skew        ms waiting for late peers (load imbalance, scheduling noise)
 * plus the single-process forward (sp1_forward) for reference. Threads per rank = cores / n (at
 * least 1): on a 2-core machine SP 4 runs 4 single-threaded ranks on 2 cores (oversubscribed), so
 * its times measure contention more than parallel speed.
 *
 *   bench_sp [--runs R] [--results DIR] [--model DIR] [--latent T,H,W] [--variants LIST]
 *
 * --model takes a DiT folder (or a model folder with transformer/, e.g. `pipedit mkmodel`'s) instead of
 * the random model above, --latent another latent shape, --variants a comma-separated subset of
 * ulysses, pipesp_g1, pipesp_auto (bench/bench_plan_validate.c runs them so).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "models/random_init.h"
#include "models/wan/dit_sp.h"

#define MAX_RANKS 8
#define MAX_RUNS 32

enum { F_FORWARD, F_ATTN, F_WAIT, F_SKEW, F_COMM_ONLY, F_BYTES, F_G, F_COUNT };

/* Shared with the parent: per rank, per run, each field. */
typedef struct shared_out {
    double v[MAX_RANKS][MAX_RUNS][F_COUNT];
    int ok[MAX_RANKS];
} shared_out;

typedef struct bench_env {
    const char *model;
    pd_wan_dit_config cfg;
    int runs;
    int64_t lat[3]; /* latent T, H, W */
} bench_env;

/* One process's model and inputs: a CPU backend, the model, a random latent and context, the velocity. */
typedef struct sp_setup {
    pd_backend *be;
    pd_wan_dit *m;
    pd_tensor lat, ctx, vel;
} sp_setup;

/* Fills su (which setup_close releases, also after a failure) for a backend of `threads` threads. */
static pd_status setup_open(const bench_env *env, int threads, sp_setup *su) {
    const pd_wan_dit_config *c = &env->cfg;
    const int64_t *l = env->lat;
    int64_t ls[5] = {1, c->in_channels, l[0], l[1], l[2]}, vs[5] = {1, c->out_channels, l[0], l[1], l[2]};
    int64_t cs[3] = {1, 20, c->text_dim};
    memset(su, 0, sizeof *su);
    PD_TRY(pd_backend_cpu_create(threads, &su->be));
    PD_TRY(pd_wan_dit_load(env->model, su->be, &su->m));
    PD_TRY(pd_random_tensor(&su->lat, PD_DTYPE_F32, 5, ls, 2, "latent", 0.0f, 1.0f));
    PD_TRY(pd_random_tensor(&su->ctx, PD_DTYPE_F32, 3, cs, 2, "context", 0.0f, 1.0f));
    return pd_tensor_alloc(&su->vel, PD_DTYPE_F32, 5, vs);
}

static void setup_close(sp_setup *su) {
    pd_tensor_free(&su->lat);
    pd_tensor_free(&su->ctx);
    pd_tensor_free(&su->vel);
    pd_wan_dit_free(su->m);
    pd_backend_free(su->be);
}

/* One rank: the variant's forwards, then as many comm_only ones. */
static pd_status rank_main(const bench_env *env, const char *name, int rank, int n, int chunk, shared_out *out) {
    sp_setup su;
    pd_comm *comm = NULL;
    pd_wan_dit_sp *sp = NULL, *sp_c = NULL;
    const float t = 937.0f;
    pd_status s = setup_open(env, pd_backend_cpu_share(n), &su);
    if (s == PD_OK) s = pd_comm_shm_create(name, rank, n, 120.0, &comm);
    pd_wan_dit_sp_options o = {.chunk_heads = chunk, .accounting = true};
    if (s == PD_OK) s = pd_wan_dit_sp_create(su.m, comm, NULL, &o, &sp);
    if (s == PD_OK) s = pd_wan_dit_sp_forward(sp, &su.vel, &su.lat, &t, &su.ctx); /* warm-up (and the choice of g) */
    o.chunk_heads = pd_wan_dit_sp_chunk_heads(sp), o.comm_only = true;
    if (s == PD_OK) s = pd_wan_dit_sp_create(su.m, comm, NULL, &o, &sp_c);
    if (s == PD_OK) s = pd_wan_dit_sp_forward(sp_c, &su.vel, &su.lat, &t, &su.ctx);
    for (int r = 0; r < env->runs && s == PD_OK; r++) {
        pd_wan_dit_sp_stats st, sc;
        s = pd_wan_dit_sp_forward(sp, &su.vel, &su.lat, &t, &su.ctx);
        pd_wan_dit_sp_last_stats(sp, &st);
        if (s == PD_OK) s = pd_wan_dit_sp_forward(sp_c, &su.vel, &su.lat, &t, &su.ctx);
        pd_wan_dit_sp_last_stats(sp_c, &sc);
        double *v = out->v[rank][r];
        v[F_FORWARD] = st.forward_s, v[F_ATTN] = st.attn_s, v[F_WAIT] = st.wait_s - st.wait_skew_s;
        v[F_SKEW] = st.wait_skew_s, v[F_COMM_ONLY] = sc.wait_s - sc.wait_skew_s;
        v[F_BYTES] = (double)st.bytes_sent, v[F_G] = st.chunk_heads;
    }
    if (s == PD_OK) out->ok[rank] = 1;
    else fprintf(stderr, "bench_sp: rank %d: %s\n", rank, pd_error_msg());
    pd_wan_dit_sp_free(sp);
    pd_wan_dit_sp_free(sp_c);
    pd_comm_destroy(comm);
    setup_close(&su);
    return s;
}

typedef struct variant_run {
    const bench_env *env;
    char name[64];
    int n, chunk;
    shared_out *out;
} variant_run;

static int variant_rank(int rank, void *ud) {
    const variant_run *v = ud;
    return rank_main(v->env, v->name, rank, v->n, v->chunk, v->out) == PD_OK ? 0 : 1;
}

/* Forks n ranks for one variant; false when any fails. */
static bool run_variant(const bench_env *env, int n, int chunk, shared_out *out) {
    static int seq;
    variant_run v = {.env = env, .n = n, .chunk = chunk, .out = out};
    snprintf(v.name, sizeof v.name, "bench-sp-%d-%d", (int)getpid(), seq++);
    memset(out, 0, sizeof *out);
    return pd_bench_fork_ranks(n, variant_rank, &v);
}

/* Median over runs of the per-run maximum over ranks of field f. */
static double med_max(const shared_out *o, int n, int runs, int f) {
    double v[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        v[r] = 0;
        for (int k = 0; k < n; k++) v[r] = o->v[k][r][f] > v[r] ? o->v[k][r][f] : v[r];
    }
    return pd_bench_median(v, runs);
}

/* Whether the comma-separated list holds name. */
static bool list_has(const char *list, const char *name) {
    const size_t n = strlen(name);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == 0)) return true;
    return false;
}

static pd_status single_once(void *ud) {
    sp_setup *su = ud;
    static const float t = 937.0f;
    return pd_wan_dit_forward(su->m, &su->vel, &su->lat, &t, &su->ctx);
}

int main(int argc, char **argv) {
    int runs = 3;
    const char *results = NULL;
    const char *model_opt = pd_bench_take_opt(&argc, argv, "--model");
    const char *latent_opt = pd_bench_take_opt(&argc, argv, "--latent");
    const char *variants_opt = pd_bench_take_opt(&argc, argv, "--variants");
    if (!pd_bench_parse_args(argc, argv, "bench_sp", NULL, &runs, 1, MAX_RUNS, &results)) return 2;
    pd_log_set_level(PD_LOG_ERROR);
    bench_env env = {.runs = runs, .cfg = pd_model_preset_default()->dit, .lat = {8, 32, 32}};
    if (latent_opt && !pd_bench_parse_latent(latent_opt, env.lat)) {
        fprintf(stderr, "bench_sp: --latent must be T,H,W, got \"%s\"\n", latent_opt);
        return 2;
    }
    env.cfg.dim = 512, env.cfg.heads = 8, env.cfg.head_dim = 64, env.cfg.layers = 2, env.cfg.ffn_dim = 1024;
    env.cfg.text_dim = 64;
    char dir[] = "/tmp/bench_sp.XXXXXX", model[1100];
    if (!mkdtemp(dir)) {
        perror("bench_sp: mkdtemp");
        return 1;
    }
    snprintf(model, sizeof model, "%s/model", dir);
    env.model = model;
    int rc = 1;
    pd_bench_result *res = pd_bench_result_create("bench_sp");
    shared_out *out = mmap(NULL, sizeof *out, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pd_status setup_st = !res || out == MAP_FAILED ? PD_ERR_NOMEM : PD_OK;
    if (setup_st == PD_OK && model_opt) { /* a DiT folder, or a model folder holding transformer/ */
        char cfg_path[1200];
        snprintf(model, sizeof model, "%s/transformer", model_opt);
        if (access(model, F_OK) != 0) snprintf(model, sizeof model, "%s", model_opt);
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", model);
        setup_st = pd_wan_dit_config_load(cfg_path, &env.cfg);
    } else if (setup_st == PD_OK) {
        setup_st = pd_wan_dit_write_random(model, &env.cfg, 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32);
    }
    if (setup_st != PD_OK) {
        fprintf(stderr, "bench_sp: setup: %s\n", pd_error_msg());
        goto done;
    }
    char cpu[256], shape[256];
    pd_wan_dit_grid g;
    if (pd_wan_dit_grid_of(&env.cfg, env.lat[0], env.lat[1], env.lat[2], &g) != PD_OK) {
        fprintf(stderr, "bench_sp: %s\n", pd_error_msg());
        goto done;
    }
    snprintf(shape, sizeof shape, "dim %d, %dx%d heads, %d layers, ffn %d, text_dim %d, %s; latent (16, %lld, %lld, %lld), %lld tokens, batch 1",
             env.cfg.dim, env.cfg.heads, env.cfg.head_dim, env.cfg.layers, env.cfg.ffn_dim, env.cfg.text_dim,
             model_opt ? model_opt : "f32", (long long)env.lat[0], (long long)env.lat[1], (long long)env.lat[2],
             (long long)g.tokens);
    printf("bench_sp on %s\n  %s\n", pd_bench_cpu_description(cpu, sizeof cpu), shape);
    pd_bench_result_config_str(res, "shape", shape);
    pd_bench_result_config_str(res, "backend", "cpu, one process per rank, shared-memory communicator");
    pd_bench_result_config_int(res, "runs", runs);
    const char *core = getenv("OPENBLAS_CORETYPE");
    pd_bench_result_config_str(res, "openblas_coretype", core && *core ? core : "auto");

    /* single process reference (all cores) */
    {
        sp_setup su;
        pd_bench_stats s = {0};
        pd_status st = setup_open(&env, 0, &su);
        if (st == PD_OK) st = pd_bench_time(single_once, &su, 1, runs, &s);
        setup_close(&su);
        if (st != PD_OK) {
            fprintf(stderr, "bench_sp: single process: %s\n", pd_error_msg());
            goto done;
        }
        printf("sp1 (one process, %d threads): forward %.1f ms\n", pd_bench_cpu_cores(), s.median * 1e3);
        pd_bench_result_figure(res, "sp1_forward", s.median * 1e3, "ms");
    }
    const int degrees[2] = {2, 4};
    for (int di = 0; di < 2; di++) {
        const int n = degrees[di], h = (env.cfg.heads + n - 1) / n;
        const struct { const char *name; int chunk; } variants[3] = {{"ulysses", h}, {"pipesp_g1", 1}, {"pipesp_auto", 0}};
        for (int vi = 0; vi < 3; vi++) {
            if (variants_opt && !list_has(variants_opt, variants[vi].name)) continue;
            if (!run_variant(&env, n, variants[vi].chunk, out)) {
                fprintf(stderr, "bench_sp: sp %d %s failed\n", n, variants[vi].name);
                goto done;
            }
            const double fwd = med_max(out, n, runs, F_FORWARD), att = med_max(out, n, runs, F_ATTN);
            const double exp_ = med_max(out, n, runs, F_WAIT), tot = med_max(out, n, runs, F_COMM_ONLY);
            const double skew = med_max(out, n, runs, F_SKEW);
            const double bytes = med_max(out, n, runs, F_BYTES);
            const int gg = (int)out->v[0][0][F_G];
            double ov = tot > 0 ? 1.0 - exp_ / tot : 0;
            ov = ov < 0 ? 0 : ov > 1 ? 1 : ov;
            printf("sp%d %-11s g=%d/%d: %.3f MB/rank/step, forward %.1f ms, compute %.1f ms (attention %.1f), comm total "
                   "%.2f ms, exposed %.2f ms, overlap %.0f%%, waiting for peers %.1f ms\n",
                   n, variants[vi].name, gg, h, bytes / 1e6, fwd * 1e3, (fwd - exp_ - skew) * 1e3, att * 1e3, tot * 1e3,
                   exp_ * 1e3, ov * 100, skew * 1e3);
            char k[96];
#define FIG(suffix, val, unit) (snprintf(k, sizeof k, "sp%d_%s_%s", n, variants[vi].name, suffix), pd_bench_result_figure(res, k, val, unit))
            FIG("g", gg, "heads");
            FIG("bytes_per_rank", bytes / 1e6, "MB");
            FIG("forward", fwd * 1e3, "ms");
            FIG("compute", (fwd - exp_ - skew) * 1e3, "ms");
            FIG("attention", att * 1e3, "ms");
            FIG("comm_total", tot * 1e3, "ms");
            FIG("comm_exposed", exp_ * 1e3, "ms");
            FIG("overlap", ov, "fraction");
            FIG("peer_skew", skew * 1e3, "ms");
#undef FIG
        }
    }
    const char *path = pd_bench_result_write(res, results);
    if (!path) {
        fprintf(stderr, "bench_sp: %s\n", pd_error_msg());
        goto done;
    }
    printf("wrote %s\n", path);
    rc = 0;
done:
    pd_bench_result_free(res);
    if (out != MAP_FAILED) munmap(out, sizeof *out);
    pd_bench_rmtree(dir);
    return rc;
}
