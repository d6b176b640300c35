#include "models/pipeline_impl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "models/presets.h"
#include "models/sampler/noise.h"
#include "models/sampler/sampler.h"
#include "models/text/prompt_clean.h"
#include "models/text/tokenizer.h"
#include "models/text/umt5.h"
#include "models/wan/dit.h"
#include "models/wan/vae.h"


void pd_pipeline_set_dit_forward(pd_pipeline *pl, pd_dit_forward_fn fn, void *ud) {
    pl->dit_fn = fn;
    pl->dit_ud = ud;
}

pd_wan_dit *pd_pipeline_dit(pd_pipeline *pl) { return pl->dit; }

const char *pd_stage_name(pd_stage s) {
    switch (s) {
    case PD_STAGE_TEXT: return "text";
    case PD_STAGE_DENOISE: return "denoise";
    case PD_STAGE_DECODE: return "decode";
    case PD_STAGE_ENCODE: return "encode";
    case PD_STAGE_COUNT: break;
    }
    return "unknown";
}

/* ---- loading ---- */

void pd_pipeline_free(pd_pipeline *pl) {
    if (!pl) return;
    pd_tokenizer_free(pl->tok);
    pd_umt5_free(pl->te);
    pd_wan_dit_free(pl->dit);
    pd_wan_vae_free(pl->vae);
    free(pl);
}

pd_status pd_pipeline_load(const char *model_dir, pd_backend *be, unsigned parts, pd_pipeline **out) {
    *out = NULL;
    if (!model_dir || !*model_dir) return pd_error_set(PD_ERR_INVALID, "model folder: empty path");
    if (!parts || (parts & ~(unsigned)PD_PART_ALL)) return pd_error_set(PD_ERR_INVALID, "model parts: bad mask %#x", parts);
    struct stat sb;
    if (stat(model_dir, &sb)) return pd_error_set(PD_ERR_NOT_FOUND, "model folder %s: %s", model_dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return pd_error_set(PD_ERR_INVALID, "model folder %s: not a folder", model_dir);
    pd_pipeline *pl = calloc(1, sizeof *pl);
    if (!pl) return pd_error_set(PD_ERR_NOMEM, "out of memory loading %s", model_dir);
    pl->be = be;
    pl->parts = parts;
    pd_status st = PD_OK;
    if (parts & PD_PART_TEXT) {
        st = pd_tokenizer_load(model_dir, &pl->tok);
        if (!st) st = pd_umt5_load(model_dir, be, &pl->te);
    }
    if (!st && (parts & PD_PART_DIT)) st = pd_wan_dit_load(model_dir, be, &pl->dit);
    if (!st && (parts & PD_PART_VAE)) st = pd_wan_vae_load(model_dir, be, &pl->vae);
    /* the parts must fit together */
    if (!st && pl->te && pl->dit && pd_umt5_config_of(pl->te)->d_model != pd_wan_dit_get_config(pl->dit)->text_dim)
        st = pd_error_set(PD_ERR_FORMAT, "%s: the text encoder's width %d differs from the transformer's text_dim %d",
                          model_dir, pd_umt5_config_of(pl->te)->d_model, pd_wan_dit_get_config(pl->dit)->text_dim);
    if (!st && pl->dit) {
        const pd_wan_dit_config *c = pd_wan_dit_get_config(pl->dit);
        if (c->in_channels != 16 || c->out_channels != 16)
            st = pd_error_set(PD_ERR_UNSUPPORTED, "%s: transformer has %d/%d latent channels; Wan2.1 text-to-video has 16",
                              model_dir, c->in_channels, c->out_channels);
        else if (c->patch[0] != 1 || c->patch[1] != 2 || c->patch[2] != 2)
            st = pd_error_set(PD_ERR_UNSUPPORTED, "%s: transformer patch (%d, %d, %d); only (1, 2, 2) is supported", model_dir,
                              c->patch[0], c->patch[1], c->patch[2]);
    }
    if (!st && pl->vae) {
        if (pd_wan_vae_get_config(pl->vae)->z_dim != 16 || pd_wan_vae_spatial_factor(pl->vae) != 8 ||
            pd_wan_vae_frames_for(pl->vae, 2) != 5)
            st = pd_error_set(PD_ERR_UNSUPPORTED, "%s: VAE is not Wan2.1's (16 latent channels, 8x spatial and 4x temporal upsampling)",
                              model_dir);
    }
    if (st) {
        pd_pipeline_free(pl);
        return st;
    }
    *out = pl;
    return PD_OK;
}

/* ---- parameters ---- */

void pd_pipeline_default_params(const pd_pipeline *pl, pd_gen_params *p) {
    const pd_model_preset *pre = pd_model_preset_default();
    const pd_model_preset *match = pl && pl->dit ? pd_model_preset_match_dit(pd_wan_dit_get_config(pl->dit)) : NULL;
    if (match) pre = match;
    p->negative_prompt = "";
    p->width = pre->default_width;
    p->height = pre->default_height;
    p->frames = pre->default_frames;
    p->steps = pre->default_steps;
    p->guidance = pre->default_guidance;
    p->shift = pre->default_shift;
    p->sampler = PD_SAMPLER_UNIPC;
    p->fps = pre->fps;
    p->noise = PD_NOISE_PHILOX;
    p->init_latent = NULL;
}

static bool pd_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return false;
    return true;
}

const char *pd_gen_field_name(pd_gen_field f) {
    static const char *const names[] = {NULL, "prompt", "negative_prompt", "width", "height", "num_frames",
                                        "num_inference_steps", "guidance_scale", "flow_shift", "sampler", "fps", "noise"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : NULL;
}

pd_status pd_gen_params_check(const pd_gen_params *p, pd_gen_field *field) {
    pd_gen_field unused, *bad = field ? field : &unused;
    const int max_prompt = PD_GEN_MAX_PROMPT_BYTES;
#define PD_GEN_FAIL(f, ...) return *bad = (f), pd_error_set(PD_ERR_INVALID, __VA_ARGS__)
    if (!p->prompt) PD_GEN_FAIL(PD_GEN_FIELD_PROMPT, "prompt: missing");
    if (strnlen(p->prompt, (size_t)max_prompt + 1) > (size_t)max_prompt)
        PD_GEN_FAIL(PD_GEN_FIELD_PROMPT, "prompt: longer than %d bytes", max_prompt);
    if (pd_blank(p->prompt)) PD_GEN_FAIL(PD_GEN_FIELD_PROMPT, "prompt: must not be empty");
    if (p->negative_prompt && strnlen(p->negative_prompt, (size_t)max_prompt + 1) > (size_t)max_prompt)
        PD_GEN_FAIL(PD_GEN_FIELD_NEGATIVE_PROMPT, "negative_prompt: longer than %d bytes", max_prompt);
    const int side[2] = {p->width, p->height};
    for (int i = 0; i < 2; i++)
        if (side[i] < PD_GEN_MIN_SIDE || side[i] > PD_GEN_MAX_SIDE || side[i] % 16)
            PD_GEN_FAIL(i ? PD_GEN_FIELD_HEIGHT : PD_GEN_FIELD_WIDTH, "%s: %d must be a multiple of 16 in %d..%d",
                        i ? "height" : "width", side[i], PD_GEN_MIN_SIDE, PD_GEN_MAX_SIDE);
    if (p->frames < 1 || p->frames > PD_GEN_MAX_FRAMES || (p->frames - 1) % 4)
        PD_GEN_FAIL(PD_GEN_FIELD_FRAMES, "num_frames: %d must be 4k+1 (1, 5, 9, ..., 81, ...) in 1..%d", p->frames,
                    PD_GEN_MAX_FRAMES);
    if (p->steps < 1 || p->steps > PD_GEN_MAX_STEPS)
        PD_GEN_FAIL(PD_GEN_FIELD_STEPS, "num_inference_steps: %d must be in 1..%d", p->steps, PD_GEN_MAX_STEPS);
    if (!(p->guidance >= 0.0f && p->guidance <= PD_GEN_MAX_GUIDANCE))
        PD_GEN_FAIL(PD_GEN_FIELD_GUIDANCE, "guidance_scale: %g must be in 0..%g", (double)p->guidance,
                    (double)PD_GEN_MAX_GUIDANCE);
    if (!(p->shift > 0.0f && p->shift <= PD_GEN_MAX_SHIFT))
        PD_GEN_FAIL(PD_GEN_FIELD_SHIFT, "flow_shift: %g must be in (0, %g]", (double)p->shift, (double)PD_GEN_MAX_SHIFT);
    if ((unsigned)p->sampler >= PD_SAMPLER_COUNT)
        PD_GEN_FAIL(PD_GEN_FIELD_SAMPLER, "sampler: unknown kind %d (unipc, euler or dpm++)", (int)p->sampler);
    if (p->fps < 1 || p->fps > PD_GEN_MAX_FPS) PD_GEN_FAIL(PD_GEN_FIELD_FPS, "fps: %d must be in 1..%d", p->fps, PD_GEN_MAX_FPS);
    if (p->noise != PD_NOISE_PHILOX && p->noise != PD_NOISE_TORCH_CPU)
        PD_GEN_FAIL(PD_GEN_FIELD_NOISE, "noise: unknown generator %d (philox or torch-cpu)", (int)p->noise);
#undef PD_GEN_FAIL
    *bad = PD_GEN_FIELD_NONE;
    return PD_OK;
}

pd_status pd_pipeline_validate(const pd_pipeline *pl, const pd_gen_params *p) {
    PD_TRY(pd_gen_params_check(p, NULL));
    if (p->init_latent) {
        const pd_tensor *t = p->init_latent;
        int64_t shape[4];
        pd_pipeline_latent_shape(p, shape);
        if (t->dtype != PD_DTYPE_F32 || t->device != PD_DEVICE_CPU || !pd_tensor_is_contiguous(t) || t->ndim != 4 ||
            memcmp(t->shape, shape, sizeof shape)) {
            char buf[96];
            return pd_error_set(PD_ERR_INVALID,
                                "init_latent: must be a host f32 (16, %lld, %lld, %lld) tensor for %dx%d and %d frames, got %s",
                                (long long)shape[1], (long long)shape[2], (long long)shape[3], p->width, p->height, p->frames,
                                pd_tensor_describe(t, buf, sizeof buf));
        }
    }
    if (pl && pl->dit) {
        int64_t shape[4];
        pd_wan_dit_grid grid;
        pd_pipeline_latent_shape(p, shape);
        pd_status st = pd_wan_dit_grid_of(pd_wan_dit_get_config(pl->dit), shape[1], shape[2], shape[3], &grid);
        if (st) return pd_error_prefix(st, "%dx%d, %d frames", p->width, p->height, p->frames);
    }
    return PD_OK;
}

void pd_pipeline_describe(const pd_gen_params *p, char *buf, size_t n) {
    snprintf(buf, n, "pipedit seed=%llu noise=%s sampler=%s steps=%d shift=%g guidance=%g%s", (unsigned long long)p->seed,
             pd_noise_kind_name(p->noise), pd_sampler_kind_name(p->sampler), p->steps, (double)p->shift,
             (double)p->guidance, p->init_latent ? " init_latent=1" : "");
}

void pd_pipeline_latent_shape(const pd_gen_params *p, int64_t shape[4]) {
    shape[0] = 16;
    shape[1] = (p->frames - 1) / 4 + 1;
    shape[2] = p->height / 8;
    shape[3] = p->width / 8;
}

/* ---- text ---- */

pd_status pd_pipeline_encode_text(pd_pipeline *pl, const char *prompt, pd_tensor *ctx_out) {
    memset(ctx_out, 0, sizeof *ctx_out);
    if (!pl->te || !pl->tok) return pd_error_set(PD_ERR_INVALID, "encode_text: the pipeline was loaded without the text encoder");
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int n = 0;
    char *clean = NULL;
    size_t clean_len = 0;
    PD_TRY(pd_prompt_clean(prompt ? prompt : "", prompt ? strlen(prompt) : 0, &clean, &clean_len));
    pd_status st = pd_tokenizer_encode(pl->tok, clean, clean_len, PD_TOKENIZER_MAX_TOKENS, ids, &n);
    free(clean);
    if (st) return st;
    return pd_umt5_encode(pl->te, ids, n, ctx_out);
}

/* ---- denoise ---- */

static pd_status pd_check_context(const pd_tensor *c, const char *what, int text_dim, int text_len) {
    if (!c || c->dtype != PD_DTYPE_F32 || c->ndim != 2 || c->device != PD_DEVICE_CPU || !pd_tensor_is_contiguous(c) ||
        c->shape[1] != text_dim || c->shape[0] < 0 || c->shape[0] > text_len) {
        char buf[96];
        return pd_error_set(PD_ERR_INVALID, "denoise: %s context must be a host f32 (L <= %d, %d) tensor, got %s", what,
                            text_len, text_dim, c ? pd_tensor_describe(c, buf, sizeof buf) : "none");
    }
    return PD_OK;
}

typedef struct pd_denoise_bufs {
    pd_tensor lat, ctx, vel;  /* on the backend: (B, 16, T, h, w), (B, L, text_dim), (B, 16, T, h, w) */
    pd_tensor lat_h, ctx_h, vel_h; /* host staging of the same shapes */
    pd_sampler *sampler;
} pd_denoise_bufs;

static void pd_denoise_bufs_free(pd_backend *be, pd_denoise_bufs *b) {
    pd_backend_tensor_free(be, &b->lat);
    pd_backend_tensor_free(be, &b->ctx);
    pd_backend_tensor_free(be, &b->vel);
    pd_tensor_free(&b->lat_h);
    pd_tensor_free(&b->ctx_h);
    pd_tensor_free(&b->vel_h);
    pd_sampler_free(b->sampler);
}

static pd_status pd_denoise_run(pd_pipeline *pl, const pd_gen_params *p, const pd_tensor *ctx_cond,
                                const pd_tensor *ctx_uncond, pd_tensor *x_t, pd_denoise_bufs *b, pd_progress_fn progress,
                                void *ud, const atomic_int *cancel) {
    const pd_wan_dit_config *cfg = pd_wan_dit_get_config(pl->dit);
    const int cfg_on = p->guidance > 1.0f;
    const int64_t B = cfg_on ? 2 : 1;
    int64_t shape[4];
    pd_pipeline_latent_shape(p, shape);
    PD_TRY(pd_tensor_alloc(x_t, PD_DTYPE_F32, 4, shape));
    const int64_t n = pd_tensor_numel(x_t);
    float *x = x_t->data;
    if (p->init_latent) memcpy(x, p->init_latent->data, sizeof(float) * (size_t)n); /* shape checked by validate */
    else pd_noise_generate(p->noise, x, 0, n, n, p->seed);

    /* Both contexts padded with zero rows to a common length: the DiT pads to text_len with zeros
     * and attends to every row, so this changes nothing. */
    int64_t L = ctx_cond->shape[0];
    if (cfg_on && ctx_uncond->shape[0] > L) L = ctx_uncond->shape[0];
    if (L < 1) L = 1;
    const int64_t bshape[5] = {B, shape[0], shape[1], shape[2], shape[3]};
    const int64_t cshape[3] = {B, L, cfg->text_dim};
    PD_TRY(pd_backend_tensor_alloc(pl->be, &b->lat, PD_DTYPE_F32, 5, bshape));
    PD_TRY(pd_backend_tensor_alloc(pl->be, &b->vel, PD_DTYPE_F32, 5, bshape));
    PD_TRY(pd_backend_tensor_alloc(pl->be, &b->ctx, PD_DTYPE_F32, 3, cshape));
    PD_TRY(pd_tensor_alloc(&b->lat_h, PD_DTYPE_F32, 5, bshape));
    PD_TRY(pd_tensor_alloc(&b->vel_h, PD_DTYPE_F32, 5, bshape));
    PD_TRY(pd_tensor_alloc(&b->ctx_h, PD_DTYPE_F32, 3, cshape));
    const size_t row = sizeof(float) * (size_t)cfg->text_dim;
    if (ctx_cond->shape[0]) memcpy(b->ctx_h.data, ctx_cond->data, row * (size_t)ctx_cond->shape[0]);
    if (cfg_on && ctx_uncond->shape[0])
        memcpy((float *)b->ctx_h.data + L * cfg->text_dim, ctx_uncond->data, row * (size_t)ctx_uncond->shape[0]);
    PD_TRY(pd_backend_upload(pl->be, &b->ctx, &b->ctx_h));
    PD_TRY(pd_sampler_create(p->sampler, p->steps, (double)p->shift, n, &b->sampler));

    float *lat_h = b->lat_h.data, *vel_h = b->vel_h.data;
    for (int i = 0; i < p->steps; i++) {
        PD_TRY(pd_stop_check(cancel, "before step %d of %d", i + 1, p->steps));
        for (int64_t k = 0; k < B; k++) memcpy(lat_h + k * n, x, sizeof(float) * (size_t)n);
        PD_TRY(pd_backend_upload(pl->be, &b->lat, &b->lat_h));
        const float t = pd_sampler_timestep(b->sampler, i);
        const float ts[2] = {t, t};
        pd_status st = pl->dit_fn ? pl->dit_fn(pl->dit_ud, &b->vel, &b->lat, ts, &b->ctx)
                                  : pd_wan_dit_forward(pl->dit, &b->vel, &b->lat, ts, &b->ctx);
        if (st) return pd_error_prefix(st, "denoise step %d of %d", i + 1, p->steps);
        PD_TRY(pd_backend_download(pl->be, &b->vel_h, &b->vel));
        if (cfg_on) pd_cfg_combine(vel_h, vel_h, vel_h + n, n, p->guidance); /* batch 0 cond, 1 uncond */
        pd_sampler_step(b->sampler, x, vel_h, i);
        if (progress) progress(ud, PD_STAGE_DENOISE, i + 1, p->steps);
    }
    return PD_OK;
}

pd_status pd_pipeline_denoise(pd_pipeline *pl, const pd_gen_params *p, const pd_tensor *ctx_cond,
                              const pd_tensor *ctx_uncond, pd_tensor *latent_out, pd_progress_fn progress, void *ud,
                              const atomic_int *cancel) {
    memset(latent_out, 0, sizeof *latent_out);
    if (!pl->dit) return pd_error_set(PD_ERR_INVALID, "denoise: the pipeline was loaded without the transformer");
    PD_TRY(pd_pipeline_validate(pl, p));
    const pd_wan_dit_config *cfg = pd_wan_dit_get_config(pl->dit);
    PD_TRY(pd_check_context(ctx_cond, "conditional", cfg->text_dim, cfg->text_len));
    if (p->guidance > 1.0f) PD_TRY(pd_check_context(ctx_uncond, "unconditional", cfg->text_dim, cfg->text_len));
    pd_denoise_bufs b = {0};
    /* The pipeline's own DiT stops between blocks too; a forward set by pd_pipeline_set_dit_forward
     * (an SP group) has its own agreement on stopping. */
    if (!pl->dit_fn) pd_wan_dit_set_stop(pl->dit, cancel);
    pd_status st = pd_denoise_run(pl, p, ctx_cond, ctx_uncond, latent_out, &b, progress, ud, cancel);
    if (!pl->dit_fn) pd_wan_dit_set_stop(pl->dit, NULL);
    pd_denoise_bufs_free(pl->be, &b);
    if (st) pd_tensor_free(latent_out);
    return st;
}

/* ---- text + denoise ---- */

pd_status pd_pipeline_text_denoise(pd_pipeline *pl, const pd_gen_params *p, pd_tensor *latent_out, pd_progress_fn progress,
                                   void *ud, const atomic_int *cancel, pd_gen_timings *timings) {
    memset(latent_out, 0, sizeof *latent_out);
    PD_TRY(pd_pipeline_validate(pl, p));
    const int cfg_on = p->guidance > 1.0f;
    pd_tensor cond = {0}, uncond = {0};
    double t0 = pd_now_s();
    pd_status st = pd_pipeline_encode_text(pl, p->prompt, &cond);
    if (!st && progress) progress(ud, PD_STAGE_TEXT, 1, cfg_on ? 2 : 1);
    if (!st && cfg_on) {
        st = pd_pipeline_encode_text(pl, p->negative_prompt ? p->negative_prompt : "", &uncond);
        if (!st && progress) progress(ud, PD_STAGE_TEXT, 2, 2);
    }
    if (timings) timings->seconds[PD_STAGE_TEXT] = pd_now_s() - t0;
    if (!st) st = pd_stop_check(cancel, "after the text stage");
    if (!st) {
        t0 = pd_now_s();
        st = pd_pipeline_denoise(pl, p, &cond, cfg_on ? &uncond : NULL, latent_out, progress, ud, cancel);
        if (timings) {
            timings->seconds[PD_STAGE_DENOISE] = pd_now_s() - t0;
            timings->denoise_step_seconds = timings->seconds[PD_STAGE_DENOISE] / p->steps;
        }
    }
    pd_tensor_free(&cond);
    pd_tensor_free(&uncond);
    return st;
}
