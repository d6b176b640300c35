/* Flow-matching samplers for the Wan2.1 DiT: the shifted sigma schedule, classifier-free guidance,
 * and two solvers that advance a latent one step given the model's velocity, so the loop over the
 * DiT (and its batching, sharding and cancellation) stays with the caller.
 *
 * The schedule (DESIGN.md section 5): sigmas = linspace(sigma_max, 0, N+1)[:-1] with sigma_max = 0.999
 * as the official scheduler stores it (rounded to f32), each shifted to s*sigma / (1 + (s-1)*sigma),
 * followed by a final sigma of 0. The model is evaluated at step i with timestep int(sigma_i * 1000).
 * Convention: x_sigma = (1 - sigma) * x0 + sigma * noise, the model predicts v = noise - x0, so the
 * prediction of the clean latent is x0 = x - sigma * v.
 *
 * Solvers:
 *  - Euler: x += (sigma_{i+1} - sigma_i) * v (ours; the official scripts have no Euler).
 *  - UniPC (the official default, wan/utils/fm_solvers_unipc.py FlowUniPCMultistepScheduler as
 *    wan/text2video.py sets it up): the bh2 variant of order 2 in the x0-prediction form with
 *    alpha = 1 - sigma, lambda = log(alpha / sigma). Each step first corrects the current sample with
 *    UniC (using the model output at the current point, so no extra model calls), then predicts the
 *    next one with UniP. Order 1 on the first step (no history) and on the last step (Wan's copy
 *    lowers the final order whatever the step count; diffusers' only below 15 steps); the last step
 *    (to sigma = 0) returns the x0 prediction itself (its corrector runs but cannot change that).
 *  - DPM++ (`dpm++`, the official --sample_solver dpm++: wan/utils/fm_solvers.py
 *    FlowDPMSolverMultistepScheduler, dpmsolver++, order 2, midpoint; models/sampler/dpmpp.c): its
 *    schedule starts at sigma = 1 (pd_sampler_schedule), first and last steps of order 1.
 * Both official solvers store their sigmas as f32 and update with those, while the model timesteps
 * int(sigma * 1000) come from the f64 sigmas: UniPC and DPM++ here do the same (pd_sampler_sigma
 * returns the f64 sigma; the updates use it rounded to f32). Where this code differs from the
 * official schedulers:
 *  - until this was matched, UniPC updated with the f64 sigmas (relative changes of ~1e-8 per step);
 *  - the official code does its scalar coefficient arithmetic in f32 torch tensors, this code in
 *    double (differences of the order of 1e-7 relative; the trajectories agree with a float64
 *    reference within 1e-5, tests/ref/test_sampler_ref.sh);
 *  - when the first two truncated timesteps are equal (UniPC with many steps and a large shift, e.g.
 *    100 steps at shift 12 or 251 at shift 5) the official scheduler, which locates its first step
 *    by timestep value, starts at index 1 and fails on its last step; this code runs the schedule
 *    as written.
 *
 * A sampler works on a flat array of n floats (the whole latent, or a shard of it: every update is
 * elementwise, so shards of one latent may be stepped by separate samplers and agree exactly with
 * one sampler over the whole). Results do not depend on threads. */
#ifndef PD_SAMPLER_H
#define PD_SAMPLER_H

#include <stdint.h>

#include "base/status.h"
#include "models/pipeline.h" /* pd_sampler_kind */

/* Bounds shared by every caller that accepts a schedule from outside. */
#define PD_SAMPLER_MAX_STEPS PD_GEN_MAX_STEPS
#define PD_SAMPLER_MAX_SHIFT ((double)PD_GEN_MAX_SHIFT)

/* Writes the steps + 1 sigmas of the UniPC / Euler schedule (decreasing, sigmas[steps] = 0) into sigmas.
 * Returns PD_ERR_INVALID (message names the field) when steps is outside 1..PD_SAMPLER_MAX_STEPS or
 * shift is not in (0, PD_SAMPLER_MAX_SHIFT]. */
pd_status pd_flow_sigmas(int steps, double shift, double *sigmas);

/* The schedule of a sampler kind: pd_flow_sigmas for unipc and euler; for dpm++ the official
 * get_sampling_sigmas, the same with the linspace starting at 1 (so its first timestep is 1000).
 * Same errors as pd_flow_sigmas. */
pd_status pd_sampler_schedule(pd_sampler_kind kind, int steps, double shift, double *sigmas);

/* The model timestep for a sigma: int(sigma * 1000), truncated as the official code does. */
int pd_flow_timestep(double sigma);

/* Classifier-free guidance: v[i] = v_uncond[i] + g * (v_cond[i] - v_uncond[i]) for i < n.
 * v may alias v_cond or v_uncond. */
void pd_cfg_combine(float *v, const float *v_cond, const float *v_uncond, int64_t n, float g);

typedef struct pd_sampler pd_sampler;

/* Creates a sampler of the given kind for a schedule of `steps` steps with flow shift `shift`, over
 * arrays of n floats (n >= 1). UniPC keeps 3 * n floats of history, DPM++ n, Euler none. On success *out is
 * owned by the caller (pd_sampler_free). Errors: PD_ERR_INVALID (steps, shift, n or kind out of
 * range, with a message naming it), PD_ERR_NOMEM. */
pd_status pd_sampler_create(pd_sampler_kind kind, int steps, double shift, int64_t n, pd_sampler **out);
/* Releases the sampler; NULL is a no-op. */
void pd_sampler_free(pd_sampler *s);

pd_sampler_kind pd_sampler_get_kind(const pd_sampler *s);
int pd_sampler_steps(const pd_sampler *s);
int64_t pd_sampler_size(const pd_sampler *s);
/* sigma_i of the schedule, i in 0..steps (sigma_steps = 0). */
double pd_sampler_sigma(const pd_sampler *s, int i);
/* The model timestep at step i in 0..steps-1: int(sigma_i * 1000), as a float for the DiT. */
float pd_sampler_timestep(const pd_sampler *s, int i);

/* Advances x (n floats, the sample at sigma_i) in place to the sample at sigma_{i+1}, given the
 * model's (guided) velocity v (n floats) evaluated at x and timestep pd_sampler_timestep(s, i).
 * Steps must be taken in order i = 0, 1, ..., steps-1 (UniPC keeps history between them); calling
 * out of order is a bug and aborts. After the last step x holds the final latent. */
void pd_sampler_step(pd_sampler *s, float *x, const float *v, int i);

/* Forgets the history so the same schedule can be run again from step 0. */
void pd_sampler_reset(pd_sampler *s);

#endif
