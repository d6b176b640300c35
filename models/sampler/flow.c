#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/sampler/sampler_impl.h"

/* The official scheduler keeps its training sigmas in f32, so its sigma_max is 0.999 rounded to f32. */
static const double pd_flow_sigma_max = (double)0.999f;

pd_status pd_sampler_kind_parse(const char *s, pd_sampler_kind *out) {
    if (s && !strcmp(s, "unipc")) *out = PD_SAMPLER_UNIPC;
    else if (s && !strcmp(s, "euler")) *out = PD_SAMPLER_EULER;
    else if (s && !strcmp(s, "dpm++")) *out = PD_SAMPLER_DPMPP;
    else return pd_error_set(PD_ERR_INVALID, "sampler: unknown sampler '%s' (expected unipc, euler or dpm++)", s ? s : "");
    return PD_OK;
}

const char *pd_sampler_kind_name(pd_sampler_kind k) {
    switch (k) {
    case PD_SAMPLER_UNIPC: return "unipc";
    case PD_SAMPLER_EULER: return "euler";
    case PD_SAMPLER_DPMPP: return "dpm++";
    case PD_SAMPLER_COUNT: break;
    }
    return "unknown";
}

static pd_status pd_flow_sigmas_from(double sigma_max, int steps, double shift, double *sigmas) {
    if (steps < 1 || steps > PD_SAMPLER_MAX_STEPS)
        return pd_error_set(PD_ERR_INVALID, "steps: %d is outside 1..%d", steps, PD_SAMPLER_MAX_STEPS);
    if (!(shift > 0.0 && shift <= PD_SAMPLER_MAX_SHIFT))
        return pd_error_set(PD_ERR_INVALID, "shift: %g is outside (0, %g]", shift, PD_SAMPLER_MAX_SHIFT);
    /* linspace as numpy computes it (start + i * step), one operation per statement so no compiler
     * fuses them into an FMA: the truncated timesteps must match the reference bit for bit. */
    double step = (0.0 - sigma_max) / steps;
    for (int i = 0; i < steps; i++) {
        double s = (double)i * step;
        s = s + sigma_max;
        double num = shift * s;
        double den = (shift - 1.0) * s;
        den = 1.0 + den;
        sigmas[i] = num / den;
    }
    sigmas[steps] = 0.0;
    return PD_OK;
}

pd_status pd_flow_sigmas(int steps, double shift, double *sigmas) {
    return pd_flow_sigmas_from(pd_flow_sigma_max, steps, shift, sigmas);
}

pd_status pd_sampler_schedule(pd_sampler_kind kind, int steps, double shift, double *sigmas) {
    /* dpm++: the official get_sampling_sigmas starts its linspace at 1 (its scheduler then applies
     * shift 1, which changes nothing) */
    return pd_flow_sigmas_from(kind == PD_SAMPLER_DPMPP ? 1.0 : pd_flow_sigma_max, steps, shift, sigmas);
}

int pd_flow_timestep(double sigma) { return (int)(sigma * 1000.0); }

void pd_cfg_combine(float *v, const float *v_cond, const float *v_uncond, int64_t n, float g) {
    for (int64_t i = 0; i < n; i++) v[i] = v_uncond[i] + g * (v_cond[i] - v_uncond[i]);
}

pd_status pd_sampler_create(pd_sampler_kind kind, int steps, double shift, int64_t n, pd_sampler **out) {
    *out = NULL;
    if ((unsigned)kind >= PD_SAMPLER_COUNT)
        return pd_error_set(PD_ERR_INVALID, "sampler: unknown kind %d", (int)kind);
    if (n < 1 || n > ((int64_t)1 << 40)) return pd_error_set(PD_ERR_INVALID, "sampler: size %lld out of range", (long long)n);
    pd_sampler *s = calloc(1, sizeof *s);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "sampler: out of memory");
    s->kind = kind;
    s->steps = steps;
    s->n = n;
    const size_t ns = (size_t)(steps > 0 && steps <= PD_SAMPLER_MAX_STEPS ? steps + 1 : 1);
    s->sigmas = malloc(sizeof(double) * ns);
    s->ssig = malloc(sizeof(double) * ns);
    if (!s->sigmas || !s->ssig) {
        pd_sampler_free(s);
        return pd_error_set(PD_ERR_NOMEM, "sampler: out of memory");
    }
    pd_status st = pd_sampler_schedule(kind, steps, shift, s->sigmas);
    /* the official schedulers keep their sigmas in f32 (np.float32) for the updates */
    for (int i = 0; st == PD_OK && i <= steps; i++) s->ssig[i] = (double)(float)s->sigmas[i];
    if (st == PD_OK && kind == PD_SAMPLER_UNIPC) st = pd_unipc_init(s);
    if (st == PD_OK && kind == PD_SAMPLER_DPMPP) st = pd_dpmpp_init(s);
    if (st != PD_OK) {
        pd_sampler_free(s);
        return st;
    }
    *out = s;
    return PD_OK;
}

void pd_sampler_free(pd_sampler *s) {
    if (!s) return;
    pd_unipc_release(s);
    free(s->sigmas);
    free(s->ssig);
    free(s);
}

pd_sampler_kind pd_sampler_get_kind(const pd_sampler *s) { return s->kind; }
int pd_sampler_steps(const pd_sampler *s) { return s->steps; }
int64_t pd_sampler_size(const pd_sampler *s) { return s->n; }

double pd_sampler_sigma(const pd_sampler *s, int i) {
    PD_ASSERT(i >= 0 && i <= s->steps);
    return s->sigmas[i];
}

float pd_sampler_timestep(const pd_sampler *s, int i) {
    PD_ASSERT(i >= 0 && i < s->steps);
    return (float)pd_flow_timestep(s->sigmas[i]);
}

void pd_sampler_step(pd_sampler *s, float *x, const float *v, int i) {
    PD_ASSERT(i == s->next && i < s->steps);
    if (s->kind == PD_SAMPLER_EULER) pd_euler_step(s, x, v, i);
    else if (s->kind == PD_SAMPLER_DPMPP) pd_dpmpp_step(s, x, v, i);
    else pd_unipc_step(s, x, v, i);
    s->next = i + 1;
}

void pd_sampler_reset(pd_sampler *s) {
    s->next = 0;
    s->prev_order = 0;
    s->newest = 0;
}

double pd_flow_lambda(double sigma) {
    if (sigma >= 1.0) return -INFINITY;
    if (sigma <= 0.0) return INFINITY;
    return log(1.0 - sigma) - log(sigma);
}
