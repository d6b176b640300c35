/* The worker's stages on models/pipeline.h and the CPU backend. Kept apart from worker.c so programs
 * that only need the protocol side (tests with synthetic stages) do not link the model code. */
#include "workers/worker.h"

#include "models/wan/dit.h"

typedef struct pipeline_stages {
    pd_backend *be;
    pd_pipeline *pl;
    pd_sp_group *group; /* NULL: denoise on this process alone */
    void *progress_ud;  /* the worker's, while a denoise runs */
} pipeline_stages;

static pipeline_stages g_stages; /* one worker per process */

/* The denoise loop's DiT evaluation: over the group or on this process, each one counted as progress
 * for the worker's watchdog (a step is one or two of them, and can take minutes on a CPU). */
static pd_status ps_forward(void *self, pd_tensor *velocity, const pd_tensor *latent, const float *timesteps,
                            const pd_tensor *context) {
    pipeline_stages *s = self;
    pd_status st = s->group ? pd_sp_group_forward(s->group, velocity, latent, timesteps, context)
                            : pd_wan_dit_forward(pd_pipeline_dit(s->pl), velocity, latent, timesteps, context);
    pd_worker_note_progress(s->progress_ud);
    return st;
}

/* Every DiT block counts as progress too: on a CPU one evaluation can take minutes. */
static void ps_block_done(void *self, int block) { pd_worker_note_progress(((pipeline_stages *)self)->progress_ud); }

static pd_status ps_load(void *self, const char *model_dir, const char *device, int threads, unsigned parts) {
    pipeline_stages *s = self;
    PD_TRY(pd_backend_create(device, threads, &s->be));
    pd_status st = pd_pipeline_load(model_dir, s->be, parts, &s->pl);
    if (st) {
        pd_backend_free(s->be);
        s->be = NULL;
        return st;
    }
    if (pd_pipeline_dit(s->pl)) {
        pd_pipeline_set_dit_forward(s->pl, ps_forward, s);
        pd_wan_dit_set_block_hook(pd_pipeline_dit(s->pl), ps_block_done, s);
    }
    return PD_OK;
}

static pd_status ps_validate(void *self, const pd_gen_params *p) {
    return pd_pipeline_validate(((pipeline_stages *)self)->pl, p);
}

static pd_status ps_encode_text(void *self, const char *prompt, pd_tensor *ctx_out) {
    return pd_pipeline_encode_text(((pipeline_stages *)self)->pl, prompt, ctx_out);
}

static pd_status ps_denoise(void *self, const pd_gen_params *p, const pd_tensor *ctx_cond, const pd_tensor *ctx_uncond,
                            pd_tensor *latent_out, pd_progress_fn progress, void *ud, const atomic_int *cancel) {
    pipeline_stages *s = self;
    s->progress_ud = ud;
    /* The DiT reads the flag before every block (in a group the leader's, shared with every rank
     * before each block); a group's sampler loop gets none, so no rank stops alone between steps. */
    pd_wan_dit *dit = pd_pipeline_dit(s->pl);
    pd_wan_dit_set_stop(dit, cancel);
    if (s->group) pd_sp_group_reset_steps(s->group);
    pd_status st = pd_pipeline_denoise(s->pl, p, ctx_cond, ctx_uncond, latent_out, progress, ud, s->group ? NULL : cancel);
    pd_wan_dit_set_stop(dit, NULL);
    s->progress_ud = NULL;
    return st;
}

static void ps_leave_group(void *self) {
    pipeline_stages *s = self;
    if (!s->group) return;
    pd_sp_group_leave(s->group);
    s->group = NULL;
}

static pd_status ps_join_group(void *self, const pd_sp_group_spec *spec) {
    pipeline_stages *s = self;
    ps_leave_group(self);
    pd_wan_dit *dit = pd_pipeline_dit(s->pl);
    if (!dit) return pd_error_set(PD_ERR_INVALID, "a worker without the transformer cannot join an SP group");
    pd_sp_group_spec on_be = *spec;
    on_be.be = s->be;
    return pd_sp_group_join(dit, &on_be, &s->group); /* ps_forward runs over it from now on */
}

static pd_status ps_decode(void *self, const pd_tensor *latent, const pd_gen_params *p, const char *mp4_path,
                           const char *thumb_path, pd_progress_fn progress, void *ud, const atomic_int *cancel) {
    return pd_pipeline_decode(((pipeline_stages *)self)->pl, latent, p, mp4_path, thumb_path, progress, ud, cancel);
}

static void ps_latent_shape(void *self, const pd_gen_params *p, int64_t shape[4]) {
    pd_pipeline_latent_shape(p, shape);
}

static pd_backend *ps_backend(void *self) { return ((pipeline_stages *)self)->be; }

static void ps_set_self_attention(void *self, pd_wan_attention_fn fn, void *ud) {
    pd_wan_dit *dit = pd_pipeline_dit(((pipeline_stages *)self)->pl);
    if (dit) pd_wan_dit_set_self_attention(dit, fn, ud);
}

static void ps_unload(void *self) {
    pipeline_stages *s = self;
    ps_leave_group(self);
    pd_pipeline_free(s->pl);
    pd_backend_free(s->be);
    s->pl = NULL;
    s->be = NULL;
}

const pd_worker_stages *pd_worker_pipeline_stages(void) {
    static const pd_worker_stages table = {
        .self = &g_stages,
        .load = ps_load,
        .validate = ps_validate,
        .encode_text = ps_encode_text,
        .denoise = ps_denoise,
        .decode = ps_decode,
        .latent_shape = ps_latent_shape,
        .unload = ps_unload,
        .join_group = ps_join_group,
        .backend = ps_backend,
        .set_self_attention = ps_set_self_attention,
    };
    return &table;
}
