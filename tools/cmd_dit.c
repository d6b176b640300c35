#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"
#include "models/wan/dit.h"
#include "tools/commands.h"

static void pd_dit_usage(FILE *f) {
    fprintf(f, "usage: pipedit dit --model PATH --latent IN.safetensors --timestep T --context CTX.safetensors\n"
               "                    --out OUT.safetensors [--threads N]\n"
               "Runs one DiT evaluation (batch 1) and writes the velocity.\n"
               "  --model PATH     model folder (uses transformer/), transformer folder, or a single\n"
               "                   .safetensors file with original (Comfy) names\n"
               "  --latent FILE    tensor \"latent\" (C, T, H, W), C = the model's in_channels (16)\n"
               "  --timestep T     model timestep (usually int(sigma * 1000))\n"
               "  --context FILE   tensor \"context\" (L, text_dim) or (1, L, text_dim), L <= 512\n"
               "  --out FILE       receives tensor \"velocity\" (C, T, H, W) f32\n"
               "  --threads N      CPU threads (default: all cores)\n");
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

int pd_cmd_dit(int argc, char **argv) {
    const char *model = NULL, *latent_path = NULL, *ctx_path = NULL, *out_path = NULL, *ts = NULL;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            pd_dit_usage(stdout);
            return 0;
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
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--timestep")) ts = v;
        else if (!strcmp(a, "--threads")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (end == v || *end || n < 1 || n > 1024) {
                fprintf(stderr, "pipedit dit: --threads must be an integer in 1..1024, got \"%s\"\n", v);
                return 2;
            }
            threads = (int)n;
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
    char *end;
    errno = 0;
    double tval = strtod(ts, &end);
    if (errno || end == ts || *end || !isfinite(tval) || tval < 0 || tval > 1000) {
        fprintf(stderr, "pipedit dit: --timestep must be a number in 0..1000, got \"%s\"\n", ts);
        return 2;
    }
    float t = (float)tval;

    int rc = 1;
    pd_backend *be = NULL;
    pd_wan_dit *dit = NULL;
    pd_st_writer *w = NULL;
    pd_tensor lat = {0}, ctx = {0}, vel_host = {0}, d_lat = {0}, d_ctx = {0}, d_vel = {0};
    if (pd_dit_read_input(latent_path, "latent", &lat) != PD_OK) return pd_dit_fail("reading the latent");
    if (pd_dit_read_input(ctx_path, "context", &ctx) != PD_OK) {
        rc = pd_dit_fail("reading the context");
        goto done;
    }
    if (pd_backend_cpu_create(threads, &be) != PD_OK) {
        rc = pd_dit_fail("backend");
        goto done;
    }
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
    if (ctx.ndim == 3 && ctx.shape[0] == 1) {
        int64_t s2[2] = {ctx.shape[1], ctx.shape[2]};
        pd_tensor_reshape(&ctx, 2, s2);
    }
    if (ctx.ndim != 2 || ctx.shape[1] != cfg->text_dim || ctx.shape[0] < 1 || ctx.shape[0] > cfg->text_len) {
        fprintf(stderr, "pipedit dit: %s: context %s must be (L, %d) or (1, L, %d) with 1 <= L <= %d\n", ctx_path,
                pd_tensor_describe(&ctx, d, sizeof d), cfg->text_dim, cfg->text_dim, cfg->text_len);
        goto done;
    }

    int64_t ls[5] = {1, lat.shape[0], lat.shape[1], lat.shape[2], lat.shape[3]};
    int64_t vs[5] = {1, cfg->out_channels, lat.shape[1], lat.shape[2], lat.shape[3]};
    int64_t cs[3] = {1, ctx.shape[0], ctx.shape[1]};
    pd_status st = pd_tensor_reshape(&lat, 5, ls);
    if (st == PD_OK) st = pd_tensor_reshape(&ctx, 3, cs);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &d_lat, PD_DTYPE_F32, 5, ls);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &d_ctx, PD_DTYPE_F32, 3, cs);
    if (st == PD_OK) st = pd_backend_tensor_alloc(be, &d_vel, PD_DTYPE_F32, 5, vs);
    if (st == PD_OK) st = pd_tensor_alloc(&vel_host, PD_DTYPE_F32, 4, vs + 1);
    if (st == PD_OK) st = pd_backend_upload(be, &d_lat, &lat);
    if (st == PD_OK) st = pd_backend_upload(be, &d_ctx, &ctx);
    if (st == PD_OK) st = pd_wan_dit_forward(dit, &d_vel, &d_lat, &t, &d_ctx);
    if (st == PD_OK) st = pd_backend_synchronize(be);
    if (st == PD_OK) {
        pd_tensor vh5 = vel_host;
        vh5.owns_data = false;
        st = pd_tensor_reshape(&vh5, 5, vs);
        if (st == PD_OK) st = pd_backend_download(be, &vh5, &d_vel);
    }
    if (st == PD_OK) st = pd_st_writer_create(&w);
    if (st == PD_OK) st = pd_st_writer_add(w, "velocity", &vel_host);
    if (st == PD_OK) st = pd_st_writer_save(w, out_path);
    if (st != PD_OK) {
        rc = pd_dit_fail(NULL);
        goto done;
    }
    rc = 0;
done:
    pd_st_writer_free(w);
    if (be) {
        pd_backend_tensor_free(be, &d_lat);
        pd_backend_tensor_free(be, &d_ctx);
        pd_backend_tensor_free(be, &d_vel);
    }
    pd_tensor_free(&lat);
    pd_tensor_free(&ctx);
    pd_tensor_free(&vel_host);
    pd_wan_dit_free(dit);
    pd_backend_free(be);
    return rc;
}
