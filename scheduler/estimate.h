/* What a job will cost on this deployment: its run time and activation memory, estimated from the
 * stage times the workers measure and the shape of the request. The scheduler's admission refuses a
 * job whose estimate cannot finish within max_job_seconds or fit the memory limit, and the queue's
 * completion times come from the same estimates. Pure functions, no state.
 *
 * Cost model (small on purpose: the full cost model of DESIGN.md section 6 replaces the rates with a
 * device profile later):
 *  - text: a constant per prompt encoded (1, or 2 under CFG).
 *  - denoise: steps x the DiT's FLOPs for one forward of the batch (2 under CFG, else 1) over the
 *    request's latent (pd_wan_dit_flops: a part linear in the tokens, the self-attention quadratic in
 *    them, the text part constant), the attention products (pd_estimate_attention_flops) counted
 *    attn_weight times, times the measured seconds per FLOP. The weight is the backend's attention
 *    cost per FLOP relative to its GEMMs', which one tiny warm-up cannot separate: the CPU backend's
 *    measured here (tiny model, 2-core EPYC, release build: 2.9e-11 s/FLOP at 32 tokens where the
 *    linears are 86% of the work, 5.1e-11 at 5120 tokens where attention is 89%: weight ~2; 2.5 keeps
 *    the estimate on the high side), cuDNN's from DESIGN.md section 9 (769 TFLOP/s GEMM, 587 attention).
 *  - decode (VAE + MP4 encoding): output frames x height x width times the measured seconds per
 *    output pixel.
 * Rates come from a measured run of a known request (pd_estimate_rates_from): the workers' warm-up at
 * start, then every finished stage of a real job (pd_estimate_rates_update, an exponential moving
 * average). Measured with the tiny model on a 2-core CPU (release build): rates from the warm-up
 * alone put a 256x256, 33-frame, 4-step job at 22.9 s (it took 22.2 s); the warm-up's decode rate
 * per pixel is about 3x a real job's (fixed overheads), so decode estimates err high; once a job has
 * finished, a 512x512 one came out at 45.6 s against 49.4 s. Estimates are for admission and
 * queue times, not promises: a job that still runs past its deadline is stopped there.
 *
 * Memory: the DiT's activation arena for the request's batch and tokens (exactly what
 * pd_wan_dit_forward reserves) plus the sampler's latent buffers, against the streaming VAE's working
 * set for one latent frame at the output size (a coarse bound: 12 tensors of the decoder's top width
 * x 4 frames x the output pixels, f32: its two activation arenas, its temporaries and the causal-conv
 * caches). The estimate is the larger of the two (the stages run in different processes, or one after
 * the other). */
#ifndef PD_SCHEDULER_ESTIMATE_H
#define PD_SCHEDULER_ESTIMATE_H

#include "models/pipeline.h"
#include "models/wan/dit.h"

/* The deployment's model, as far as the cost depends on it. */
typedef struct pd_estimate_model {
    pd_wan_dit_config dit;
    int vae_base_dim;    /* the VAE decoder's top width (Wan2.1: 96) */
    double attn_weight;  /* an attention FLOP's cost in linear FLOPs on this backend (< 1: counts as 1) */
} pd_estimate_model;

#define PD_ESTIMATE_ATTN_WEIGHT_CPU 2.5
#define PD_ESTIMATE_ATTN_WEIGHT_CUDA 1.3

/* The attention products' share of pd_wan_dit_flops (q k^T and p v of self- and cross-attention,
 * from pd_wan_dit_flops_split) for batch B and a latent of (T, H, W). */
double pd_estimate_attention_flops(const pd_wan_dit_config *cfg, int64_t B, int64_t T, int64_t H, int64_t W);

/* Measured rates (0 = not known yet: that stage's time is then unknown and counted as 0). */
typedef struct pd_estimate_rates {
    double text_s;          /* seconds per prompt encoded */
    double dit_s_per_flop;  /* denoise seconds per DiT FLOP (attention FLOPs count attn_weight times) */
    double vae_s_per_pixel; /* decode + encode seconds per output pixel (frames x height x width) */
} pd_estimate_rates;

typedef struct pd_estimate {
    double stage_seconds[PD_STAGE_COUNT]; /* text, denoise, decode (encode is counted in decode) */
    double seconds;                       /* their sum */
    double dit_bytes, vae_bytes;          /* activation memory of the denoise and decode stages */
    double bytes;                         /* the larger of the two */
} pd_estimate;

/* The estimate of request p (its size, frames, steps and guidance; p is not validated here) under
 * model m and rates r. */
void pd_estimate_job(const pd_estimate_model *m, const pd_estimate_rates *r, const pd_gen_params *p, pd_estimate *out);

/* The rate of `stage` implied by one measured run of request p that took secs (PD_STAGE_ENCODE
 * counts as decode). Returns 0 when the run tells nothing (secs not positive and finite). */
double pd_estimate_rate_of(const pd_estimate_model *m, const pd_gen_params *p, pd_stage stage, double secs);

/* Folds one measured stage into r: the rate of that run (pd_estimate_rate_of) replaces an unknown
 * rate, else enters an exponential moving average with weight alpha (0 < alpha <= 1). */
void pd_estimate_rates_update(const pd_estimate_model *m, pd_estimate_rates *r, const pd_gen_params *p, pd_stage stage,
                              double secs, double alpha);

/* Admission: PD_OK when e fits within max_seconds and max_bytes (each 0 = unchecked); otherwise
 * PD_ERR_INVALID with a message that gives the estimate (and its parts) and the limit it exceeds. */
pd_status pd_estimate_admit(const pd_estimate *e, double max_seconds, double max_bytes);

/* A FIFO of n jobs served by `servers` identical denoise servers (a job holds one from its start
 * until its text and denoise stages end; its decode then runs beside the next job's denoise): job i
 * needs head[i] seconds on a server, then tail[i] seconds more. Jobs are in queue order, running
 * ones first with what remains of them. done[i] receives the seconds from now until job i completes.
 * n may be 0; servers < 1 counts as 1. */
void pd_estimate_queue(const double *head, const double *tail, int n, int servers, double *done);

#endif
