/* Samplers: the flow schedules, Euler, UniPC and DPM++ on an analytic model whose exact ODE solution is
 * known (Gaussian data), orders of convergence, shard equivalence, guidance.
 *
 * `test_sampler --trace FILE` also writes the schedules and trajectories of a grid of cases for
 * tests/ref/sampler_ref.py, which recomputes them independently (tests/ref/test_sampler_ref.sh). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "models/sampler/noise.h"
#include "models/sampler/sampler.h"
#include "tests/unit/test.h"

enum { PD_TN = 16 };

/* Data x0 ~ N(mu_j, sd_j^2) per element, x_sigma = (1 - sigma) x0 + sigma eps. The exact velocity
 * E[eps - x0 | x_sigma] and the exact flow map are linear in x. */
typedef struct pd_gauss {
    double mu[PD_TN], sd[PD_TN];
} pd_gauss;

static pd_gauss pd_gauss_make(void) {
    pd_gauss g;
    for (int j = 0; j < PD_TN; j++) {
        g.mu[j] = -1.5 + 3.0 * j / (PD_TN - 1);
        g.sd[j] = 0.3 + 1.7 * ((j * 7) % PD_TN) / (PD_TN - 1);
    }
    return g;
}

static void pd_gauss_velocity(const pd_gauss *g, const float *x, double sigma, float *v) {
    for (int j = 0; j < PD_TN; j++) {
        double a = 1.0 - sigma, var = a * a * g->sd[j] * g->sd[j] + sigma * sigma;
        double d = x[j] - a * g->mu[j];
        v[j] = (float)(-g->mu[j] + d * (sigma - a * g->sd[j] * g->sd[j]) / var);
    }
}

/* The exact endpoint of the probability-flow ODE started from x at sigma0. */
static void pd_gauss_truth(const pd_gauss *g, const float *x, double sigma0, double *out) {
    for (int j = 0; j < PD_TN; j++) {
        double a = 1.0 - sigma0, var = a * a * g->sd[j] * g->sd[j] + sigma0 * sigma0;
        out[j] = g->mu[j] + g->sd[j] * (x[j] - a * g->mu[j]) / sqrt(var);
    }
}

/* Runs a sampler over the analytic model; returns the max error against the exact endpoint. */
static double pd_run(pd_sampler_kind kind, int steps, double shift, uint64_t seed, FILE *trace) {
    pd_gauss g = pd_gauss_make();
    pd_sampler *s = NULL;
    PD_CHECK_OK(pd_sampler_create(kind, steps, shift, PD_TN, &s));
    if (!s) return INFINITY;
    float x[PD_TN], v[PD_TN];
    double truth[PD_TN];
    pd_noise_fill(x, 0, PD_TN, seed);
    pd_gauss_truth(&g, x, pd_sampler_sigma(s, 0), truth);
    if (trace) {
        fprintf(trace, "case %s %d %.17g\nsigmas", pd_sampler_kind_name(kind), steps, shift);
        for (int i = 0; i <= steps; i++) fprintf(trace, " %.17g", pd_sampler_sigma(s, i));
        fprintf(trace, "\ntimesteps");
        for (int i = 0; i < steps; i++) fprintf(trace, " %d", (int)pd_sampler_timestep(s, i));
        fprintf(trace, "\nmu");
        for (int j = 0; j < PD_TN; j++) fprintf(trace, " %.17g", g.mu[j]);
        fprintf(trace, "\nsd");
        for (int j = 0; j < PD_TN; j++) fprintf(trace, " %.17g", g.sd[j]);
        fprintf(trace, "\nx");
        for (int j = 0; j < PD_TN; j++) fprintf(trace, " %.9g", x[j]);
        fprintf(trace, "\n");
    }
    for (int i = 0; i < steps; i++) {
        pd_gauss_velocity(&g, x, pd_sampler_sigma(s, i), v);
        pd_sampler_step(s, x, v, i);
        if (trace) {
            fprintf(trace, "step %d", i);
            for (int j = 0; j < PD_TN; j++) fprintf(trace, " %.9g", x[j]);
            fprintf(trace, "\n");
        }
    }
    double err = 0;
    for (int j = 0; j < PD_TN; j++) err = fmax(err, fabs(x[j] - truth[j]));
    pd_sampler_free(s);
    return err;
}

static void test_schedule(void) {
    double sg[PD_SAMPLER_MAX_STEPS + 1];
    /* shift 1: plain linspace from 0.999 (f32) */
    PD_CHECK_OK(pd_flow_sigmas(4, 1.0, sg));
    const int want[4] = {999, 749, 499, 249};
    for (int i = 0; i < 4; i++) {
        PD_CHECK_MSG(fabs(sg[i] - 0.999 * (4 - i) / 4.0) < 1e-7, "sigma %d = %.17g", i, sg[i]);
        PD_CHECK_MSG(pd_flow_timestep(sg[i]) == want[i], "timestep %d = %d", i, pd_flow_timestep(sg[i]));
    }
    PD_CHECK(sg[4] == 0.0);
    /* shift s maps sigma to s*sigma/(1+(s-1)*sigma): 0.4995 under shift 3 -> 0.74962..., t = 749 */
    PD_CHECK_OK(pd_flow_sigmas(2, 3.0, sg));
    PD_CHECK(fabs(sg[1] - 3 * 0.4995 / (1 + 2 * 0.4995)) < 1e-7 && pd_flow_timestep(sg[1]) == 749);
    /* monotone, in (0, 1), last 0, for many (steps, shift) */
    const double shifts[] = {0.5, 1.0, 5.0, 12.0, 100.0};
    for (int k = 0; k < 5; k++)
        for (int n = 1; n <= PD_SAMPLER_MAX_STEPS; n += 37) {
            PD_CHECK_OK(pd_flow_sigmas(n, shifts[k], sg));
            int ok = sg[0] < 1.0 && sg[n] == 0.0;
            for (int i = 0; i < n; i++) ok &= sg[i] > sg[i + 1] && sg[i] > 0.0;
            PD_CHECK_MSG(ok, "steps %d shift %g", n, shifts[k]);
        }
    PD_CHECK_ERR(pd_flow_sigmas(0, 5.0, sg), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_flow_sigmas(PD_SAMPLER_MAX_STEPS + 1, 5.0, sg), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_flow_sigmas(10, 0.0, sg), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_flow_sigmas(10, -1.0, sg), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_flow_sigmas(10, 101.0, sg), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_flow_sigmas(10, NAN, sg), PD_ERR_INVALID);
    pd_sampler *s = NULL;
    PD_CHECK_ERR(pd_sampler_create(PD_SAMPLER_UNIPC, 10, 5.0, 0, &s), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_sampler_create((pd_sampler_kind)7, 10, 5.0, 4, &s), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_sampler_create(PD_SAMPLER_EULER, 0, 5.0, 4, &s), PD_ERR_INVALID);
    PD_CHECK(s == NULL);
    pd_sampler_kind k;
    PD_CHECK_OK(pd_sampler_kind_parse("euler", &k));
    PD_CHECK(k == PD_SAMPLER_EULER && !strcmp(pd_sampler_kind_name(k), "euler"));
    PD_CHECK_OK(pd_sampler_kind_parse("dpm++", &k));
    PD_CHECK(k == PD_SAMPLER_DPMPP && !strcmp(pd_sampler_kind_name(k), "dpm++"));
    /* dpm++'s schedule starts at 1: timesteps 1000, 750, 500, 250 at shift 1 */
    PD_CHECK_OK(pd_sampler_schedule(PD_SAMPLER_DPMPP, 4, 1.0, sg));
    PD_CHECK(sg[0] == 1.0 && sg[1] == 0.75 && sg[4] == 0.0 && pd_flow_timestep(sg[0]) == 1000 && pd_flow_timestep(sg[3]) == 250);
    PD_CHECK_OK(pd_sampler_kind_parse("unipc", &k));
    PD_CHECK(k == PD_SAMPLER_UNIPC && !strcmp(pd_sampler_kind_name(k), "unipc"));
    PD_CHECK_ERR(pd_sampler_kind_parse("ddim", &k), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_sampler_kind_parse(NULL, &k), PD_ERR_INVALID);
}

/* Euler converges with order 1 and UniPC with order 2 (the error ratio over a 4x step refinement
 * is 4 and 16), and UniPC is far closer at equal steps. The schedule's lambda steps do not shrink
 * at its ends (the first and last steps stay wide in log-SNR), so the orders show from ~40 steps. */
static void test_convergence(void) {
    double e_eu[4], e_uni[4];
    const int ns[4] = {20, 40, 80, 160};
    for (int k = 0; k < 4; k++) {
        e_eu[k] = pd_run(PD_SAMPLER_EULER, ns[k], 1.0, 1, NULL);
        e_uni[k] = pd_run(PD_SAMPLER_UNIPC, ns[k], 1.0, 1, NULL);
        PD_CHECK_MSG(e_uni[k] * 10 < e_eu[k], "UniPC %g vs Euler %g at %d steps", e_uni[k], e_eu[k], ns[k]);
    }
    for (int k = 0; k < 3; k++) {
        double r = e_eu[k] / e_eu[k + 1];
        PD_CHECK_MSG(r > 1.8 && r < 2.2, "Euler error ratio %g (%g -> %g)", r, e_eu[k], e_eu[k + 1]);
    }
    PD_CHECK_MSG(e_uni[1] / e_uni[3] > 10, "UniPC error ratio over 40 -> 160 steps %g (%g -> %g)",
                 e_uni[1] / e_uni[3], e_uni[1], e_uni[3]);
    /* DPM++(2M): second order too, far ahead of Euler */
    double e_dp[4];
    for (int k = 0; k < 4; k++) {
        e_dp[k] = pd_run(PD_SAMPLER_DPMPP, ns[k], 1.0, 1, NULL);
        PD_CHECK_MSG(e_dp[k] * 5 < e_eu[k], "DPM++ %g vs Euler %g at %d steps", e_dp[k], e_eu[k], ns[k]);
    }
    PD_CHECK_MSG(e_dp[1] / e_dp[3] > 10, "DPM++ error ratio over 40 -> 160 steps %g (%g -> %g)", e_dp[1] / e_dp[3],
                 e_dp[1], e_dp[3]);
    /* the default 50 steps with shift 5: large shifts leave few steps near sigma = 0, where the
     * narrowest data component (sd 0.3) bends the flow most */
    double u50 = pd_run(PD_SAMPLER_UNIPC, 50, 5.0, 11, NULL), e50 = pd_run(PD_SAMPLER_EULER, 50, 5.0, 11, NULL);
    PD_CHECK_MSG(u50 < 0.02 && u50 * 8 < e50, "50 steps shift 5: UniPC error %g, Euler %g", u50, e50);
}

/* The last step of both samplers returns exactly x - sigma * v; one step is the x0 prediction. */
static void test_final_step(void) {
    for (int kind = 0; kind < PD_SAMPLER_COUNT; kind++) {
        pd_sampler *s = NULL;
        PD_CHECK_OK(pd_sampler_create((pd_sampler_kind)kind, 1, 5.0, 3, &s));
        if (!s) return;
        float x[3] = {1.0f, -2.0f, 0.5f}, v[3] = {0.25f, 1.0f, -3.0f};
        float sig = (float)pd_sampler_sigma(s, 0); /* dpm++: 1 */
        pd_sampler_step(s, x, v, 0);
        PD_CHECK(fabsf(x[0] - (1.0f - sig * 0.25f)) < 1e-6f && fabsf(x[2] - (0.5f + sig * 3.0f)) < 1e-6f);
        pd_sampler_free(s);
    }
}

/* Stepping two halves with two samplers equals one sampler over the whole, bit for bit; reset
 * replays the same trajectory. */
static void pd_check_shards(pd_sampler_kind kind) {
    enum { N = 37, STEPS = 7 };
    float whole[N], part[N], v[N], vp[N];
    pd_sampler *a = NULL, *b = NULL, *c = NULL;
    PD_CHECK_OK(pd_sampler_create(kind, STEPS, 5.0, N, &a));
    PD_CHECK_OK(pd_sampler_create(kind, STEPS, 5.0, 20, &b));
    PD_CHECK_OK(pd_sampler_create(kind, STEPS, 5.0, N - 20, &c));
    if (!a || !b || !c) return;
    for (int rep = 0; rep < 2; rep++) {
        pd_noise_fill(whole, 0, N, 3);
        memcpy(part, whole, sizeof whole);
        for (int i = 0; i < STEPS; i++) {
            for (int j = 0; j < N; j++) v[j] = vp[j] = sinf(whole[j] * 1.7f + (float)i) - 0.3f * whole[j];
            pd_sampler_step(a, whole, v, i);
            pd_sampler_step(b, part, vp, i);
            pd_sampler_step(c, part + 20, vp + 20, i);
        }
        PD_CHECK(!memcmp(whole, part, sizeof whole));
        static float first[N];
        if (rep == 0) memcpy(first, whole, sizeof whole);
        else PD_CHECK(!memcmp(first, whole, sizeof whole));
        pd_sampler_reset(a);
        pd_sampler_reset(b);
        pd_sampler_reset(c);
    }
    pd_sampler_free(a);
    pd_sampler_free(b);
    pd_sampler_free(c);
}

static void test_shards(void) {
    for (int kind = 0; kind < PD_SAMPLER_COUNT; kind++) pd_check_shards((pd_sampler_kind)kind);
}

static void test_cfg(void) {
    float vc[3] = {1, 2, 3}, vu[3] = {0.5f, 2, -1}, v[3];
    pd_cfg_combine(v, vc, vu, 3, 5.0f);
    PD_CHECK(v[0] == 3.0f && v[1] == 2.0f && v[2] == 19.0f);
    pd_cfg_combine(vc, vc, vu, 3, 1.0f); /* g = 1 is the conditional branch; in place */
    PD_CHECK(vc[0] == 1.0f && vc[1] == 2.0f && vc[2] == 3.0f);
}

static int pd_trace(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    /* Euler on a small grid; the two official solvers on 12 x 6 = 72 (steps, shift) pairs each */
    const int steps[] = {1, 2, 3, 5, 10, 20, 50}, osteps[] = {1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100};
    const double shifts[] = {1.0, 5.0, 12.0}, oshifts[] = {1.0, 2.0, 3.0, 5.0, 8.0, 12.0};
    uint64_t seed = 100;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        for (size_t k = 0; k < sizeof shifts / sizeof shifts[0]; k++) pd_run(PD_SAMPLER_EULER, steps[i], shifts[k], seed++, f);
    const pd_sampler_kind official[2] = {PD_SAMPLER_UNIPC, PD_SAMPLER_DPMPP};
    for (int kind = 0; kind < 2; kind++)
        for (size_t i = 0; i < sizeof osteps / sizeof osteps[0]; i++)
            for (size_t k = 0; k < sizeof oshifts / sizeof oshifts[0]; k++)
                pd_run(official[kind], osteps[i], oshifts[k], seed++, f);
    /* schedules alone for long runs and odd shifts */
    const int long_steps[] = {100, 999, 1000};
    const double odd_shifts[] = {0.37, 3.0, 7.5, 100.0};
    double sg[PD_SAMPLER_MAX_STEPS + 1];
    for (size_t i = 0; i < 3; i++)
        for (size_t k = 0; k < 4; k++) {
            if (pd_flow_sigmas(long_steps[i], odd_shifts[k], sg) != PD_OK) return 1;
            fprintf(f, "schedule %d %.17g\nsigmas", long_steps[i], odd_shifts[k]);
            for (int j = 0; j <= long_steps[i]; j++) fprintf(f, " %.17g", sg[j]);
            fprintf(f, "\ntimesteps");
            for (int j = 0; j < long_steps[i]; j++) fprintf(f, " %d", pd_flow_timestep(sg[j]));
            fprintf(f, "\n");
        }
    return fclose(f) ? 1 : pd_test_failed_checks != 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--trace")) return pd_trace(argv[2]);
    PD_RUN(test_schedule);
    PD_RUN(test_convergence);
    PD_RUN(test_final_step);
    PD_RUN(test_shards);
    PD_RUN(test_cfg);
    return pd_test_summary();
}
