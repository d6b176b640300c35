/* The worker's stages on models/pipeline.h and the CPU backend. Kept apart from worker.c so programs
 * that only need the protocol side (tests with synthetic stages) do not link the model code. */
#include "workers/worker.h"

typedef struct pipeline_stages {
    pd_backend *be;
    pd_pipeline *pl;
} pipeline_stages;

static pipeline_stages g_stages; /* one worker per process */

static pd_status ps_load(void *self, const char *model_dir, int threads, unsigned parts) {
    pipeline_stages *s = self;
    PD_TRY(pd_backend_cpu_create(threads, &s->be));
    pd_status st = pd_pipeline_load(model_dir, s->be, parts, &s->pl);
    if (st) {
        pd_backend_free(s->be);
        s->be = NULL;
    }
    return st;
}

static pd_status ps_validate(void *self, const pd_gen_params *p) {
    return pd_pipeline_validate(((pipeline_stages *)self)->pl, p);
}

static pd_status ps_encode_text(void *self, const char *prompt, pd_tensor *ctx_out) {
    return pd_pipeline_encode_text(((pipeline_stages *)self)->pl, prompt, ctx_out);
}

static pd_status ps_denoise(void *self, const pd_gen_params *p, const pd_tensor *ctx_cond, const pd_tensor *ctx_uncond,
                            pd_tensor *latent_out, pd_progress_fn progress, void *ud, const atomic_int *cancel) {
    return pd_pipeline_denoise(((pipeline_stages *)self)->pl, p, ctx_cond, ctx_uncond, latent_out, progress, ud, cancel);
}

static pd_status ps_decode(void *self, const pd_tensor *latent, int fps, const char *mp4_path, const char *thumb_path,
                           pd_progress_fn progress, void *ud, const atomic_int *cancel) {
    return pd_pipeline_decode(((pipeline_stages *)self)->pl, latent, fps, mp4_path, thumb_path, progress, ud, cancel);
}

static void ps_latent_shape(void *self, const pd_gen_params *p, int64_t shape[4]) {
    pd_pipeline_latent_shape(p, shape);
}

static void ps_unload(void *self) {
    pipeline_stages *s = self;
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
    };
    return &table;
}
