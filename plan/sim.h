/* The pipeline simulator (DESIGN.md section 6): a stream of identical requests through a deployment
 * whose stage times come from the cost model (plan/cost.h) or from measurements. Deterministic and
 * allocation-bounded: O(requests * steps) time, O(requests) memory.
 *
 * The deployment. `replicas` independent pipelines; each has one denoise group (its GPUs evaluate
 * the DiT together, however split: SP, CFG parallelism) and `decoders` decode workers of one GPU
 * each (DeDiVAE). A request goes, in arrival order, to the replica whose denoise group frees first
 * (the lowest index on a tie); there it encodes its text and denoises (steps one after another),
 * then its latent queues for the first free decoder of that replica. With decoders = 0 the denoise
 * group decodes it itself before taking the next request. With Aco, a step that starts while none of
 * the replica's decoders is decoding takes step_aco_s (the decoders lend attention), any other step
 * step_s: the helpers back off the moment a latent arrives, so a decode never waits for Aco. */
#ifndef PD_PLAN_SIM_H
#define PD_PLAN_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

typedef struct pd_sim_stages {
    double text_s;     /* text encoding, on the denoise group before denoising */
    double step_s;     /* one denoising step */
    double step_aco_s; /* one step while the decoders lend attention (used only with aco) */
    double decode_s;   /* VAE decode on one GPU */
    int steps;         /* >= 1 */
} pd_sim_stages;

typedef struct pd_sim_config {
    int replicas;   /* >= 1 */
    int decoders;   /* decode workers per replica (0: the denoise group decodes) */
    bool aco;       /* steps use step_aco_s while no decoder of the replica is decoding */
    int requests;   /* 1 .. 10^7 */
    double rate;    /* arrivals per second, evenly spaced from t = 0; 0: all arrive at t = 0 */
} pd_sim_config;

typedef struct pd_sim_result {
    double p50_s, p99_s, mean_s, max_s; /* latency, arrival to the end of its decode (nearest rank) */
    double throughput;                  /* requests per second: requests / makespan */
    double makespan_s;                  /* first arrival to the last completion */
    double util_denoise, util_decode;   /* busy fraction of the denoise groups and of the decoders */
    int64_t aco_steps, steps;           /* steps run with Aco, steps in all */
} pd_sim_result;

/* Runs the stream. PD_ERR_INVALID naming the field for a bad config or stage time (negative, NaN),
 * PD_ERR_NOMEM. */
pd_status pd_sim_run(const pd_sim_config *cfg, const pd_sim_stages *st, pd_sim_result *out);

#endif
