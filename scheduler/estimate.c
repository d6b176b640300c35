#include "scheduler/estimate.h"

#include <math.h>
#include <string.h>

#define PD_VAE_LIVE_TENSORS 12.0 /* the decoder's working set in top-width, 4-frame tensors (estimate.h) */

double pd_estimate_attention_flops(const pd_wan_dit_config *c, int64_t B, int64_t T, int64_t H, int64_t W) {
    const double N = (double)(T / c->patch[0]) * (double)(H / c->patch[1]) * (double)(W / c->patch[2]);
    pd_wan_dit_flop_parts parts;
    pd_wan_dit_flops_split(c, N, N, &parts);
    return (parts.block_self_attn + parts.block_cross_attn) * c->layers * (double)B;
}

/* What one job is made of: prompts encoded, DiT FLOPs over all steps, output pixels. */
typedef struct pd_job_units {
    double prompts, flops, pixels, dit_bytes, vae_bytes;
} pd_job_units;

static pd_job_units pd_units_of(const pd_estimate_model *m, const pd_gen_params *p) {
    int64_t shape[4]; /* (16, T, H/8, W/8) */
    pd_pipeline_latent_shape(p, shape);
    const int64_t B = p->guidance > 1.0f ? 2 : 1;
    pd_job_units u;
    u.prompts = (double)B;
    const double w = m->attn_weight > 1 ? m->attn_weight : 1;
    u.flops = (double)p->steps * (pd_wan_dit_flops(&m->dit, B, shape[1], shape[2], shape[3]) +
                                  (w - 1) * pd_estimate_attention_flops(&m->dit, B, shape[1], shape[2], shape[3]));
    u.pixels = (double)p->frames * (double)p->height * (double)p->width;
    const double latent = 4.0 * (double)(shape[0] * shape[1] * shape[2] * shape[3]);
    /* the arena, plus the sampler's latent, velocity and their host copies for the batch */
    u.dit_bytes = (double)pd_wan_dit_activation_bytes(&m->dit, B, shape[1], shape[2], shape[3]) +
                  6.0 * (double)B * latent;
    u.vae_bytes = PD_VAE_LIVE_TENSORS * (double)m->vae_base_dim * 4.0 * (double)p->height * (double)p->width * 4.0;
    return u;
}

void pd_estimate_job(const pd_estimate_model *m, const pd_estimate_rates *r, const pd_gen_params *p, pd_estimate *out) {
    memset(out, 0, sizeof *out);
    const pd_job_units u = pd_units_of(m, p);
    out->stage_seconds[PD_STAGE_TEXT] = u.prompts * r->text_s;
    out->stage_seconds[PD_STAGE_DENOISE] = u.flops * r->dit_s_per_flop;
    out->stage_seconds[PD_STAGE_DECODE] = u.pixels * r->vae_s_per_pixel;
    for (int i = 0; i < PD_STAGE_COUNT; i++) out->seconds += out->stage_seconds[i];
    out->dit_bytes = u.dit_bytes;
    out->vae_bytes = u.vae_bytes;
    out->bytes = fmax(u.dit_bytes, u.vae_bytes);
}

double pd_estimate_rate_of(const pd_estimate_model *m, const pd_gen_params *p, pd_stage stage, double secs) {
    if (!(secs > 0) || !isfinite(secs)) return 0;
    const pd_job_units u = pd_units_of(m, p);
    const double units = stage == PD_STAGE_TEXT ? u.prompts : stage == PD_STAGE_DENOISE ? u.flops : u.pixels;
    return units > 0 ? secs / units : 0;
}

void pd_estimate_rates_update(const pd_estimate_model *m, pd_estimate_rates *r, const pd_gen_params *p, pd_stage stage,
                              double secs, double alpha) {
    const double rate = pd_estimate_rate_of(m, p, stage, secs);
    if (!(rate > 0)) return;
    double *slot = stage == PD_STAGE_TEXT      ? &r->text_s
                   : stage == PD_STAGE_DENOISE ? &r->dit_s_per_flop
                                               : &r->vae_s_per_pixel;
    *slot = *slot > 0 ? (1 - alpha) * *slot + alpha * rate : rate;
}

pd_status pd_estimate_admit(const pd_estimate *e, double max_seconds, double max_bytes) {
    if (max_seconds > 0 && e->seconds > max_seconds)
        return pd_error_set(PD_ERR_INVALID,
                            "the job's estimated run time on this deployment is %.0f s (text %.1f s, denoise %.0f s, "
                            "decode %.0f s), over the limit max_job_seconds = %.0f s; ask for fewer steps, frames or "
                            "pixels", e->seconds, e->stage_seconds[PD_STAGE_TEXT], e->stage_seconds[PD_STAGE_DENOISE],
                            e->stage_seconds[PD_STAGE_DECODE], max_seconds);
    if (max_bytes > 0 && e->bytes > max_bytes)
        return pd_error_set(PD_ERR_INVALID,
                            "the job's estimated activation memory is %.1f MiB (denoise %.1f MiB, decode %.1f MiB), "
                            "over the limit job_memory_bytes = %.1f MiB per worker; ask for fewer frames or pixels",
                            e->bytes / 1048576.0, e->dit_bytes / 1048576.0, e->vae_bytes / 1048576.0,
                            max_bytes / 1048576.0);
    return PD_OK;
}

void pd_estimate_queue(const double *head, const double *tail, int n, int servers, double *done) {
    enum { MAX_SERVERS = 256 };
    double free_at[MAX_SERVERS] = {0};
    if (servers < 1) servers = 1;
    if (servers > MAX_SERVERS) servers = MAX_SERVERS;
    for (int i = 0; i < n; i++) {
        int k = 0; /* the server that frees first takes the next job in line */
        for (int s = 1; s < servers; s++)
            if (free_at[s] < free_at[k]) k = s;
        free_at[k] += fmax(head[i], 0);
        done[i] = free_at[k] + fmax(tail[i], 0);
    }
}
