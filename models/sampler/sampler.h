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
 *  - Euler: x += (sigma_{i+1} - sigma_i) * v.
 *  - UniPC (the official default): the bh2 variant of order 2 in the x0-prediction form with
 *    alpha = 1 - sigma, lambda = log(alpha / sigma). Each step first corrects the current sample with
 *    UniC (using the model output at the current point, so no extra model calls), then predicts the
 *    next one with UniP. Order 1 on the first step (no history) and on the last step; the last step
 *    (to sigma = 0) returns the x0 prediction itself.
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

/* Writes the steps + 1 sigmas of the schedule (decreasing, sigmas[steps] = 0) into sigmas.
 * Returns PD_ERR_INVALID (message names the field) when steps is outside 1..PD_SAMPLER_MAX_STEPS or
 * shift is not in (0, PD_SAMPLER_MAX_SHIFT]. */
pd_status pd_flow_sigmas(int steps, double shift, double *sigmas);

/* The model timestep for a sigma: int(sigma * 1000), truncated as the official code does. */
int pd_flow_timestep(double sigma);

/* Classifier-free guidance: v[i] = v_uncond[i] + g * (v_cond[i] - v_uncond[i]) for i < n.
 * v may alias v_cond or v_uncond. */
void pd_cfg_combine(float *v, const float *v_cond, const float *v_uncond, int64_t n, float g);

typedef struct pd_sampler pd_sampler;

/* Creates a sampler of the given kind for a schedule of `steps` steps with flow shift `shift`, over
 * arrays of n floats (n >= 1). UniPC keeps 3 * n floats of history; Euler none. On success *out is
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
