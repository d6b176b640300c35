/* Aco on CPU worker processes: the denoise step (one DiT forward, batch 1) of a single-threaded
 * denoise process with and without a single-threaded helper process computing some of its
 * self-attention heads over the shared-memory communicator (models/wan/aco.h). The helper process
 * runs in both cases (without Aco it waits, as an idle decode worker would).
 *
 * Two shapes, random f32 weights, dim 512, 8 heads x 64, text_dim 64, 20 context rows:
 *   attn:   2 layers, ffn 1024, latent (16, 8, 64, 64) -> 8192 tokens: self-attention is most of a block
 *   linear: 2 layers, ffn 4096, latent (16, 2, 32, 32) ->  512 tokens: the linears are most of it
 * The share is chosen by the lender from its measurements (models/wan/aco.h: the first three
 * self-attentions of a shape, in the two warm-up forwards, then every lend). Figures per shape (medians of R timed forwards after one warm-up):
 *   <shape>_step_off, <shape>_step_aco   ms per forward
 *   <shape>_ratio                       step_aco / step_off
 *   <shape>_heads_lent                  heads lent per self-attention in the timed forwards
 *   <shape>_lend_wait                   ms per forward the lender waited for lent heads
 *
 *   bench_aco [--runs R] [--results DIR] [--model DIR --latent T,H,W --name NAME]
 *
 * With --model (a model folder with transformer/, e.g. `pipedit mkmodel`'s) the bench runs that DiT
 * at the one latent shape given instead, its figures named NAME_* (bench/bench_plan_validate.c).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "comm/comm.h"
#include "models/random_init.h"
#include "models/wan/aco.h"
#include "models/wan/dit.h"

typedef struct shape {
    const char *name;
    int layers, ffn;
    int64_t T, H, W;
    const char *model; /* an existing DiT folder (NULL: write a random one of the fields above) */
} shape;

typedef struct step_ctx {
    pd_wan_dit *m;
    pd_tensor lat, ctx, vel;
} step_ctx;

static pd_status step(void *p) {
    step_ctx *s = p;
    const float ts[1] = {700.0f};
    return pd_wan_dit_forward(s->m, &s->vel, &s->lat, ts, &s->ctx);
}

static int helper_main(const char *name) {
    pd_backend *be = NULL;
    pd_comm *c = NULL;
    if (pd_backend_cpu_create(1, &be) || pd_comm_shm_create(name, 1, 2, 600.0, &c)) {
        fprintf(stderr, "bench_aco helper: %s\n", pd_error_msg());
        return 1;
    }
    pd_status st = pd_aco_serve(c, 0, be, NULL, NULL);
    if (st) fprintf(stderr, "bench_aco helper: %s\n", pd_error_msg());
    pd_comm_destroy(c);
    pd_backend_free(be);
    return st ? 1 : 0;
}

/* Runs one shape; adds its figures to r. */
static bool run_shape(const shape *sh, const char *dir, int runs, pd_bench_result *r) {
    pd_wan_dit_config cfg = {.dim = 512, .heads = 8, .head_dim = 64, .layers = sh->layers, .ffn_dim = sh->ffn,
                             .freq_dim = 256, .text_dim = 64, .text_len = 512, .in_channels = 16,
                             .out_channels = 16, .patch = {1, 2, 2}, .eps = 1e-6f, .rope_theta = 10000.0};
    char model[1100], name[64];
    snprintf(model, sizeof model, "%s/%s", dir, sh->name);
    snprintf(name, sizeof name, "pdaco-bench-%d-%s", (int)getpid(), sh->name);
    pd_status wst;
    if (sh->model) {
        char cfg_path[1200];
        snprintf(model, sizeof model, "%s", sh->model);
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", model);
        wst = pd_wan_dit_config_load(cfg_path, &cfg);
    } else {
        wst = pd_wan_dit_write_random(model, &cfg, 5, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32);
    }
    if (wst) {
        fprintf(stderr, "bench_aco: %s\n", pd_error_msg());
        return false;
    }
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) _exit(helper_main(name));

    bool ok = false;
    pd_backend *be = NULL;
    pd_comm *c = NULL;
    pd_aco_lender *l = NULL;
    step_ctx s = {0};
    int64_t ls[5] = {1, cfg.in_channels, sh->T, sh->H, sh->W}, cs[3] = {1, 20, cfg.text_dim};
    pd_status st = pd_backend_cpu_create(1, &be);
    if (st == PD_OK) st = pd_comm_shm_create(name, 0, 2, 600.0, &c);
    if (st == PD_OK) st = pd_aco_lender_create(c, 1, be, -1, &l);
    if (st == PD_OK) st = pd_wan_dit_load(model, be, &s.m);
    if (st == PD_OK) st = pd_random_tensor(&s.lat, PD_DTYPE_F32, 5, ls, 2, "latent", 0.0f, 1.0f);
    if (st == PD_OK) st = pd_random_tensor(&s.ctx, PD_DTYPE_F32, 3, cs, 2, "context", 0.0f, 1.0f);
    if (st == PD_OK) st = pd_tensor_alloc(&s.vel, PD_DTYPE_F32, 5, ls);
    pd_bench_stats off = {0}, on = {0};
    pd_aco_stats a0 = {0}, a1 = {0};
    if (st == PD_OK) st = pd_bench_time(step, &s, 1, runs, &off);
    if (st == PD_OK) {
        pd_wan_dit_set_self_attention(s.m, pd_aco_attention, l);
        st = step(&s); /* warm-up: measures the shape and chooses the share */
        if (st == PD_OK) st = step(&s);
        pd_aco_lender_stats(l, &a0);
        if (st == PD_OK) st = pd_bench_time(step, &s, 0, runs, &on);
        pd_aco_lender_stats(l, &a1);
    }
    if (l) pd_aco_lender_finish(l);
    if (st != PD_OK) {
        fprintf(stderr, "bench_aco %s: %s\n", sh->name, pd_error_msg());
    } else if (a1.failed) {
        fprintf(stderr, "bench_aco %s: the lend failed: %s\n", sh->name, a1.error);
    } else {
        double calls = (double)(a1.calls - a0.calls), lent = (double)(a1.heads_lent - a0.heads_lent);
        char f[64];
        snprintf(f, sizeof f, "%s_step_off", sh->name);
        pd_bench_result_figure(r, f, off.median * 1e3, "ms");
        snprintf(f, sizeof f, "%s_step_aco", sh->name);
        pd_bench_result_figure(r, f, on.median * 1e3, "ms");
        snprintf(f, sizeof f, "%s_ratio", sh->name);
        pd_bench_result_figure(r, f, on.median / off.median, "x");
        snprintf(f, sizeof f, "%s_heads_lent", sh->name);
        pd_bench_result_figure(r, f, calls > 0 ? lent / calls : 0, "heads");
        snprintf(f, sizeof f, "%s_lend_wait", sh->name);
        pd_bench_result_figure(r, f, (a1.lend_wait_s - a0.lend_wait_s) / runs * 1e3, "ms");
        printf("%-7s off %9.1f ms  aco %9.1f ms  ratio %.3f  heads lent %.2f of 8\n", sh->name, off.median * 1e3,
               on.median * 1e3, on.median / off.median, calls > 0 ? lent / calls : 0);
        ok = true;
    }
    int status = 0;
    if (waitpid(kid, &status, 0) != kid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (ok) fprintf(stderr, "bench_aco %s: the helper failed (status %d)\n", sh->name, status);
        ok = false;
    }
    pd_tensor_free(&s.lat), pd_tensor_free(&s.ctx), pd_tensor_free(&s.vel);
    pd_wan_dit_free(s.m);
    pd_aco_lender_free(l);
    pd_comm_destroy(c);
    pd_comm_shm_unlink(name);
    pd_backend_free(be);
    return ok;
}

int main(int argc, char **argv) {
    int runs = 3;
    const char *results = NULL;
    const char *model_opt = pd_bench_take_opt(&argc, argv, "--model");
    const char *latent_opt = pd_bench_take_opt(&argc, argv, "--latent");
    const char *name_opt = pd_bench_take_opt(&argc, argv, "--name");
    if (!pd_bench_parse_args(argc, argv, "bench_aco", NULL, &runs, 1, 20, &results)) return 2;
    int64_t lat[3] = {0};
    char dit_dir[1100] = "";
    if (model_opt || latent_opt || name_opt) {
        if (!model_opt || !name_opt || !pd_bench_parse_latent(latent_opt, lat)) {
            fprintf(stderr, "bench_aco: --model DIR, --latent T,H,W and --name NAME go together\n");
            return 2;
        }
        snprintf(dit_dir, sizeof dit_dir, "%s/transformer", model_opt);
    }
    pd_log_set_level(PD_LOG_WARN);
    char dir[] = "/tmp/bench_aco.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_aco: mkdtemp");
        return 1;
    }
    const shape builtin[] = {{"attn", 2, 1024, 8, 64, 64, NULL}, {"linear", 2, 4096, 2, 32, 32, NULL}};
    const shape given[] = {{name_opt, 0, 0, lat[0], lat[1], lat[2], dit_dir}};
    const shape *shapes = model_opt ? given : builtin;
    const size_t n_shapes = model_opt ? 1 : 2;
    pd_bench_result *r = pd_bench_result_create("bench_aco");
    if (model_opt) {
        char desc[200];
        snprintf(desc, sizeof desc, "latent (16, %lld, %lld, %lld), batch 1", (long long)lat[0], (long long)lat[1],
                 (long long)lat[2]);
        pd_bench_result_config_str(r, "model", model_opt);
        pd_bench_result_config_str(r, name_opt, desc);
    } else {
        pd_bench_result_config_str(r, "model", "dim 512, 8 heads x 64, 2 layers, text_dim 64, f32 random weights");
        pd_bench_result_config_str(r, "attn", "ffn 1024, latent (16, 8, 64, 64) = 8192 tokens, batch 1");
        pd_bench_result_config_str(r, "linear", "ffn 4096, latent (16, 2, 32, 32) = 512 tokens, batch 1");
    }
    pd_bench_result_config_str(r, "processes", "denoise (lender) and helper, 1 CPU thread each, shared-memory comm");
    pd_bench_result_config_str(r, "share", "measured (auto)");
    pd_bench_result_config_int(r, "runs", runs);
    bool ok = true;
    for (size_t i = 0; i < n_shapes; i++) ok = run_shape(&shapes[i], dir, runs, r) && ok;
    pd_bench_rmtree(dir);
    if (ok) {
        const char *path = pd_bench_result_write(r, results);
        if (path) printf("wrote %s\n", path);
        else fprintf(stderr, "bench_aco: %s\n", pd_error_msg()), ok = false;
    }
    pd_bench_result_free(r);
    return ok ? 0 : 1;
}
