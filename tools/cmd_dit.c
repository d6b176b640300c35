#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"
#include "models/wan/dit.h"
#include "workers/sp_group.h"
#include "tools/aco_launch.h"
#include "tools/cli_opt.h"
#include "tools/commands.h"
#include "tools/device_opt.h"
#include "tools/sp_launch.h"

static void pd_dit_usage(FILE *f) {
    fprintf(f, "usage: pipedit dit --model PATH --latent IN.safetensors --timestep T --context CTX.safetensors\n"
               "                    [--context-uncond CTX.safetensors] --out OUT.safetensors [--threads N]\n"
               "                    [--device cpu|cuda|cuda:N]\n"
               "                    [--sp N [--pipesp-chunk G] [--cfg-parallel] [--timeout S]] [--aco [--aco-share N]]\n"
               "Runs one DiT evaluation (batch 1, or the CFG pair) and writes the velocity.\n"
               "  --model PATH     model folder (uses transformer/), transformer folder, or a single\n"
               "                   .safetensors file with original (Comfy) names\n"
               "  --latent FILE    tensor \"latent\" (C, T, H, W), C = the model's in_channels (16)\n"
               "  --timestep T     model timestep (usually int(sigma * 1000))\n"
               "  --context FILE   tensor \"context\" (L, text_dim) or (1, L, text_dim), L <= 512\n"
               "  --context-uncond FILE  a second context (tensor \"context\", same form): evaluates the CFG\n"
               "                   pair (conditional, unconditional) on the same latent and timestep\n"
               "  --out FILE       receives tensor \"velocity\" (C, T, H, W) f32, or (2, C, T, H, W) for the\n"
               "                   pair (element 0 conditional, 1 unconditional)\n"
               "  --threads N      CPU threads per process (default: all cores, divided among --sp ranks)\n"
               PD_DEVICE_OPT_USAGE
               "                   (--sp runs on the CPU only for now: GPU ranks, rank r on cuda:r over\n"
               "                   the NCCL communicator, are not wired into this command yet)\n"
               "  --sp N           sequence parallelism over N local worker processes (1..64) joined by a\n"
               "                   shared-memory communicator; rank 0 writes the output\n"
               "  --pipesp-chunk G attention heads per PipeSP chunk: 0 = chosen from measurements (default),\n"
               "                   1 = the paper's PipeSP, >= heads per rank = plain Ulysses\n"
               "  --cfg-parallel   with --context-uncond and an even --sp N: ranks 0..N/2-1 evaluate the\n"
               "                   conditional and the rest the unconditional (each half an SP group of N/2),\n"
               "                   then partners exchange velocities\n"
               "  --timeout S      seconds any rank waits for its peers before failing (default 120)\n"
               "  --aco            Aco: a helper process (per rank with --sp; --threads threads) computes\n"
               "                   some heads of every self-attention; the share is measured (the first\n"
               "                   three self-attentions of a shape), the velocity is the same bytes\n"
               "  --aco-share N    with --aco: lend N heads of every self-attention instead (0 = none)\n");
}

/* Reads tensor `name` of a safetensors file into an f32 host tensor of its own shape. */
static pd_status pd_dit_read_input(const char *path, const char *name, pd_tensor *out) {
    pd_st *st;
    PD_TRY(pd_st_open(path, &st));
    pd_tensor v;
    pd_status s = pd_st_get(st, name, &v);
    if (s == PD_OK && v.dtype != PD_DTYPE_F32 && v.dtype != PD_DTYPE_BF16 && v.dtype != PD_DTYPE_F16)
        s = pd_error_set(PD_ERR_FORMAT, "%s: tensor %s is %s, expected a float dtype", path, name, pd_dtype_name(v.dtype));
    if (s == PD_OK) s = pd_tensor_alloc(out, PD_DTYPE_F32, v.ndim, v.shape);
    if (s == PD_OK) s = pd_tensor_copy(out, &v);
    pd_st_close(st);
    return s;
}

static int pd_dit_fail(const char *what) {
    fprintf(stderr, "pipedit dit: %s%s%s\n", what ? what : "", what ? ": " : "", pd_error_msg());
    return 1;
}

/* What every rank of an --sp run needs; inputs are read and checked by the parent before forking. */
typedef struct pd_dit_sp_job {
    const char *model, *out_path;
    const pd_tensor *lat, *ctx; // (B, C, T, H, W), (B, L, text_dim) host f32
    const float *ts;            // (B)
    int ranks, threads, chunk;
    int aco_share;              /* -2: no Aco helper; -1: measured share; >= 0: fixed */
    bool cfg_parallel;
    double timeout;
    char name[64];              /* the SP group's base name, filled by pd_sp_launch */
} pd_dit_sp_job;

static pd_status pd_dit_write_velocity(const char *path, const pd_tensor *vel) {
    pd_st_writer *w = NULL;
    pd_status st = pd_st_writer_create(&w);
    if (st == PD_OK) st = pd_st_writer_add(w, "velocity", vel);
    if (st == PD_OK) st = pd_st_writer_save(w, path);
    pd_st_writer_free(w);
    return st;
}

/* pd_wan_dit_forward as a pd_dit_forward_fn (models/pipeline.h), ud the model. */
static pd_status pd_dit_forward_one(void *dit, pd_tensor *velocity, const pd_tensor *latent, const float *timesteps,
                                    const pd_tensor *context) {
    return pd_wan_dit_forward(dit, velocity, latent, timesteps, context);
}

/* Logs what an Aco helper did (at info level). */
static void pd_dit_log_aco(const pd_aco_stats *a, int rank) {
    PD_INFO("dit", "aco (rank %d): %llu of %llu heads lent in %llu lends%s%s", rank, (unsigned long long)a->heads_lent,
            (unsigned long long)a->heads_total, (unsigned long long)a->lends, a->failed ? "; the helper failed: " : "",
            a->failed ? a->error : "");
}

/* One evaluation on be: uploads lat (B, C, T, H, W) and ctx (B, L, text_dim), runs forward(ud, ...) into
 * a (B, out_channels, T, H, W) velocity and waits for the device. With out_path it then downloads the
 * velocity and writes it: (out_channels, T, H, W) for B = 1, the whole batch otherwise. */
static pd_status pd_dit_eval(pd_backend *be, int out_channels, const pd_tensor *lat, const pd_tensor *ctx, const float *ts,
                             pd_dit_forward_fn forward, void *ud, const char *out_path) {
    const int64_t vs[5] = {lat->shape[0], out_channels, lat->shape[2], lat->shape[3], lat->shape[4]};
    const int b1 = lat->shape[0] == 1;
    pd_tensor d_lat = {0}, d_ctx = {0}, d_vel = {0}, vel = {0};
    pd_status st = pd_backend_tensor_alloc(be, &d_lat, PD_DTYPE_F32, 5, lat->shape);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &d_ctx, PD_DTYPE_F32, 3, ctx->shape);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &d_vel, PD_DTYPE_F32, 5, vs);
    if (st == PD_OK) st = pd_backend_upload(be, &d_lat, lat);
    if (st == PD_OK) st = pd_backend_upload(be, &d_ctx, ctx);
    if (st == PD_OK) st = forward(ud, &d_vel, &d_lat, ts, &d_ctx);
    if (st == PD_OK) st = pd_backend_synchronize(be);
    if (st == PD_OK && out_path) {
        st = pd_tensor_alloc(&vel, PD_DTYPE_F32, 5 - b1, vs + b1);
        pd_tensor v5 = vel; /* the same data seen as (B, C, T, H, W) */
        v5.owns_data = false;
        if (st == PD_OK) st = pd_tensor_reshape(&v5, 5, vs);
        if (st == PD_OK) st = pd_backend_download(be, &v5, &d_vel);
        if (st == PD_OK) st = pd_dit_write_velocity(out_path, &vel);
    }
    pd_backend_tensor_free(be, &d_lat);
    pd_backend_tensor_free(be, &d_ctx);
    pd_backend_tensor_free(be, &d_vel);
    pd_tensor_free(&vel);
    return st;
}

/* One rank of an --sp run (a child process, ud the pd_dit_sp_job): returns its exit status. */
static int pd_dit_rank_main(void *ud, int rank) {
    const pd_dit_sp_job *job = ud;
    pd_backend *be = NULL;
    pd_wan_dit *dit = NULL;
    pd_sp_group *g = NULL;
    pd_status st = pd_backend_cpu_create(job->threads, &be);
    if (st == PD_OK) st = pd_wan_dit_load(job->model, be, &dit);
    const pd_sp_group_spec spec = {.name = job->name, .rank = rank, .ranks = job->ranks, .cfg_parallel = job->cfg_parallel,
                                   .chunk_heads = job->chunk, .timeout_s = job->timeout, .be = be};
    if (st == PD_OK) st = pd_sp_group_join(dit, &spec, &g);
    if (st == PD_OK) pd_sp_launch_fault_point(rank);
    pd_aco_local aco = {0};
    if (st == PD_OK && job->aco_share > -2) st = pd_aco_local_start(dit, be, job->threads, job->aco_share, job->timeout, &aco);
    if (st == PD_OK)
        st = pd_dit_eval(be, pd_wan_dit_get_config(dit)->out_channels, job->lat, job->ctx, job->ts, pd_sp_group_forward, g,
                         rank == 0 ? job->out_path : NULL);
    if (aco.lender) {
        pd_aco_stats a;
        pd_aco_local_stop(&aco, &a);
        pd_dit_log_aco(&a, rank);
    }
    if (st == PD_OK && rank == 0) {
        pd_wan_dit_sp_stats s;
        pd_sp_group_last_stats(g, &s);
        PD_INFO("dit", "sp %d%s: g = %d of %d heads per rank, %.1f ms, attention %.1f ms, waiting %.1f ms, %.2f MB sent",
                job->ranks, job->cfg_parallel ? " (cfg parallel)" : "", s.chunk_heads, s.heads_per_rank,
                s.forward_s * 1e3, s.attn_s * 1e3, s.wait_s * 1e3, (double)s.bytes_sent / 1e6);
    }
    if (st != PD_OK) fprintf(stderr, "pipedit dit: rank %d: %s\n", rank, pd_error_msg());
    pd_sp_group_leave(g);
    pd_wan_dit_free(dit);
    pd_backend_free(be);
    return st == PD_OK ? 0 : 1;
}

/* Reads and checks a context file into a (L, text_dim) tensor; prints the error on failure. */
static bool pd_dit_read_context(const char *path, const pd_wan_dit_config *cfg, pd_tensor *ctx) {
    char d[96];
    if (pd_dit_read_input(path, "context", ctx) != PD_OK) {
        pd_dit_fail("reading the context");
        return false;
    }
    if (ctx->ndim == 3 && ctx->shape[0] == 1) {
        int64_t s2[2] = {ctx->shape[1], ctx->shape[2]};
        pd_tensor_reshape(ctx, 2, s2);
    }
    if (ctx->ndim != 2 || ctx->shape[1] != cfg->text_dim || ctx->shape[0] < 1 || ctx->shape[0] > cfg->text_len) {
        fprintf(stderr, "pipedit dit: %s: context %s must be (L, %d) or (1, L, %d) with 1 <= L <= %d\n", path,
                pd_tensor_describe(ctx, d, sizeof d), cfg->text_dim, cfg->text_dim, cfg->text_len);
        return false;
    }
    return true;
}

int pd_cmd_dit(int argc, char **argv) {
    const char *model = NULL, *latent_path = NULL, *ctx_path = NULL, *uctx_path = NULL, *out_path = NULL, *ts = NULL;
    const char *device = "cpu";
    int threads = 0, sp_ranks = 0, chunk = 0, timeout = 120, aco_share = -1;
    bool cfg_parallel = false, aco = false, aco_share_set = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            pd_dit_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--cfg-parallel") || !strcmp(a, "--aco")) {
            if (a[2] == 'c') cfg_parallel = true;
            else aco = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pipedit dit: %s needs a value\n", a);
            pd_dit_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--latent")) latent_path = v;
        else if (!strcmp(a, "--context")) ctx_path = v;
        else if (!strcmp(a, "--context-uncond")) uctx_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--timestep")) ts = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--threads")) {
            if (!pd_cli_opt_int("pipedit dit", a, v, 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--sp")) {
            if (!pd_cli_opt_int("pipedit dit", a, v, 1, 64, &sp_ranks)) return 2;
        } else if (!strcmp(a, "--pipesp-chunk")) {
            if (!pd_cli_opt_int("pipedit dit", a, v, 0, PD_SP_MAX_CHUNK, &chunk)) return 2;
        } else if (!strcmp(a, "--timeout")) {
            if (!pd_cli_opt_int("pipedit dit", a, v, 1, 86400, &timeout)) return 2;
        } else if (!strcmp(a, "--aco-share")) {
            if (!pd_cli_opt_int("pipedit dit", a, v, 0, 4096, &aco_share)) return 2;
            aco_share_set = true;
        } else {
            fprintf(stderr, "pipedit dit: unknown option %s\n", a);
            pd_dit_usage(stderr);
            return 2;
        }
    }
    if (!model || !latent_path || !ctx_path || !out_path || !ts) {
        fprintf(stderr, "pipedit dit: --model, --latent, --timestep, --context and --out are required\n");
        pd_dit_usage(stderr);
        return 2;
    }
    if (cfg_parallel && (!uctx_path || sp_ranks < 2 || sp_ranks % 2)) {
        fprintf(stderr, "pipedit dit: --cfg-parallel needs --context-uncond and an even --sp N >= 2\n");
        return 2;
    }
    if (aco_share_set && !aco) {
        fprintf(stderr, "pipedit dit: --aco-share needs --aco\n");
        return 2;
    }
    if (aco && strcmp(device, "cpu")) {
        fprintf(stderr, "pipedit dit: --aco runs on the CPU only (its helper is a CPU process)\n");
        return 2;
    }
    if (!pd_device_opt_check("pipedit dit", device, sp_ranks)) return 2;
    char *end;
    errno = 0;
    double tval = strtod(ts, &end);
    if (errno || end == ts || *end || !isfinite(tval) || tval < 0 || tval > 1000) {
        fprintf(stderr, "pipedit dit: --timestep must be a number in 0..1000, got \"%s\"\n", ts);
        return 2;
    }
    const float tpair[2] = {(float)tval, (float)tval};

    int rc = 1;
    pd_backend *be = NULL;
    pd_wan_dit *dit = NULL;
    pd_tensor lat = {0}, ctx = {0}, uctx = {0}, ctx_b = {0};
    if (pd_dit_read_input(latent_path, "latent", &lat) != PD_OK) return pd_dit_fail("reading the latent");
    /* With --sp the ranks run in child processes; this one only checks the inputs (one thread, so no
     * thread pool is forked). */
    const int own_threads = threads ? threads : aco ? pd_backend_cpu_share(2) : 0; /* the helper gets as many */
    if (pd_device_opt_create("pipedit dit", device, sp_ranks ? 1 : own_threads, &be) != PD_OK) goto done;
    if (pd_wan_dit_load(model, be, &dit) != PD_OK) {
        rc = pd_dit_fail("loading the model");
        goto done;
    }
    const pd_wan_dit_config *cfg = pd_wan_dit_get_config(dit);

    /* inputs: clear messages before any compute */
    char d[96];
    if (lat.ndim != 4 || lat.shape[0] != cfg->in_channels) {
        fprintf(stderr, "pipedit dit: %s: latent %s must be (%d, T, H, W)\n", latent_path,
                pd_tensor_describe(&lat, d, sizeof d), cfg->in_channels);
        goto done;
    }
    pd_wan_dit_grid g;
    if (pd_wan_dit_grid_of(cfg, lat.shape[1], lat.shape[2], lat.shape[3], &g) != PD_OK) {
        rc = pd_dit_fail(latent_path);
        goto done;
    }
    const int group = cfg_parallel ? sp_ranks / 2 : sp_ranks;
    if (sp_ranks && g.tokens < group) {
        fprintf(stderr, "pipedit dit: %s has %lld tokens, fewer than the %d ranks of an SP group\n", latent_path,
                (long long)g.tokens, group);
        goto done;
    }
    if (!pd_dit_read_context(ctx_path, cfg, &ctx)) goto done;
    if (uctx_path && !pd_dit_read_context(uctx_path, cfg, &uctx)) goto done;

    /* batch: 1, or the CFG pair with both contexts zero-padded to the longer length (the DiT pads to
     * text_len with zeros anyway, so this changes nothing) */
    const int64_t B = uctx_path ? 2 : 1, L = uctx_path && uctx.shape[0] > ctx.shape[0] ? uctx.shape[0] : ctx.shape[0];
    int64_t ls[5] = {B, lat.shape[0], lat.shape[1], lat.shape[2], lat.shape[3]};
    int64_t cs[3] = {B, L, cfg->text_dim};
    pd_tensor lat_b = {0};
    pd_status st = pd_tensor_alloc(&ctx_b, PD_DTYPE_F32, 3, cs);
    if (st == PD_OK) st = pd_tensor_alloc(&lat_b, PD_DTYPE_F32, 5, ls);
    for (int64_t b = 0; b < B && st == PD_OK; b++) {
        const pd_tensor *src = b ? &uctx : &ctx;
        pd_tensor dst = pd_tensor_slice(&ctx_b, 0, b, 1), rows = pd_tensor_slice(&dst, 1, 0, src->shape[0]);
        int64_t rs[2] = {src->shape[0], src->shape[1]};
        st = pd_tensor_reshape(&rows, 2, rs); /* (1, L_src, text_dim) rows of batch b, seen as (L_src, text_dim) */
        if (st == PD_OK) st = pd_tensor_copy(&rows, src);
        pd_tensor lb = pd_tensor_slice(&lat_b, 0, b, 1);
        int64_t l4[4] = {lat.shape[0], lat.shape[1], lat.shape[2], lat.shape[3]};
        if (st == PD_OK) st = pd_tensor_reshape(&lb, 4, l4);
        if (st == PD_OK) st = pd_tensor_copy(&lb, &lat);
    }
    pd_tensor_free(&lat);
    lat = lat_b;
    if (st != PD_OK) {
        rc = pd_dit_fail(NULL);
        goto done;
    }

    if (sp_ranks) {
        pd_wan_dit_free(dit);
        dit = NULL;
        pd_backend_free(be);
        be = NULL;
        pd_dit_sp_job job = {.model = model, .out_path = out_path, .lat = &lat, .ctx = &ctx_b, .ts = tpair,
                             .ranks = sp_ranks,
                             .threads = threads ? threads : pd_backend_cpu_share(aco ? 2 * sp_ranks : sp_ranks),
                             .chunk = chunk, .aco_share = aco ? aco_share : -2, .cfg_parallel = cfg_parallel,
                             .timeout = timeout};
        rc = pd_sp_launch("pipedit dit", sp_ranks, pd_dit_rank_main, &job, job.name);
        goto done;
    }

    pd_aco_local aco_run = {0};
    if (aco && pd_aco_local_start(dit, be, own_threads, aco_share, timeout, &aco_run)) {
        rc = pd_dit_fail("starting the Aco helper");
        goto done;
    }
    st = pd_dit_eval(be, cfg->out_channels, &lat, &ctx_b, tpair, pd_dit_forward_one, dit, out_path);
    if (aco) {
        pd_aco_stats a;
        pd_aco_local_stop(&aco_run, &a);
        pd_dit_log_aco(&a, 0);
    }
    if (st != PD_OK) {
        rc = pd_dit_fail(NULL);
        goto done;
    }
    rc = 0;
done:
    pd_tensor_free(&lat);
    pd_tensor_free(&ctx);
    pd_tensor_free(&uctx);
    pd_tensor_free(&ctx_b);
    pd_wan_dit_free(dit);
    pd_backend_free(be);
    return rc;
}
