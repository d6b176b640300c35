/* Private to models/sampler/: the sampler object and the per-solver entry points flow.c dispatches to. */
#ifndef PD_SAMPLER_IMPL_H
#define PD_SAMPLER_IMPL_H

#include "models/sampler/sampler.h"

struct pd_sampler {
    pd_sampler_kind kind;
    int steps;
    int64_t n;
    double *sigmas; /* steps + 1: the schedule (model timesteps and Euler use it) */
    double *ssig;   /* steps + 1: the same rounded to f32, as UniPC and DPM++ use them (see sampler.h) */
    int next;       /* the step index the next call must pass */
    /* UniPC history (NULL for Euler; DPM++ uses m[0] only, for the previous x0 prediction) */
    float *last;    /* (n) the corrected sample the previous predictor started from */
    float *m[2];    /* (n) x0 predictions of the two latest steps; m[newest] is the latest */
    int newest;
    int prev_order; /* order of the previous predictor step (the next corrector uses the same) */
};

void pd_euler_step(pd_sampler *s, float *x, const float *v, int i);

pd_status pd_unipc_init(pd_sampler *s);
void pd_unipc_release(pd_sampler *s);
void pd_unipc_step(pd_sampler *s, float *x, const float *v, int i);

pd_status pd_dpmpp_init(pd_sampler *s);
void pd_dpmpp_step(pd_sampler *s, float *x, const float *v, int i);

/* lambda = log(alpha / sigma) with alpha = 1 - sigma: -inf at sigma = 1, +inf at sigma = 0. */
double pd_flow_lambda(double sigma);

#endif
