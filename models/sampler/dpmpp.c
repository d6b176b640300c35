/* DPM-Solver++(2M) for flow matching, as the official `dpm++` (FlowDPMSolverMultistepScheduler with
 * algorithm dpmsolver++, solver_order 2, midpoint, lower_order_final, final sigma 0).
 *
 * With alpha = 1 - sigma, lambda = log(alpha / sigma), a step from s0 = sigma_i to t = sigma_{i+1},
 * h = lambda_t - lambda_s0 and the x0 predictions m0 (at s0) and m1 (one step earlier, at s1):
 *   order 1: x_t = (t / s0) x - alpha_t (e^{-h} - 1) m0
 *   order 2: x_t = (t / s0) x - alpha_t (e^{-h} - 1) (m0 + (m0 - m1) / (2 r0)),  r0 = (lambda_s0 - lambda_s1) / h
 * Order 1 on the first step (no history) and the last (to sigma = 0, where it returns m0). The schedule
 * starts at sigma = 1 (lambda = -inf): the first step is then x_t = t x + (1 - t) m0 (an Euler step),
 * and on the second r0 is infinite, so the difference term vanishes there, as it does in the official
 * code (1 / inf = 0). The coefficients are computed once per step in double. */
#include <math.h>
#include <stdlib.h>

#include "models/sampler/sampler_impl.h"

pd_status pd_dpmpp_init(pd_sampler *s) {
    s->m[0] = malloc(sizeof(float) * (size_t)s->n);
    if (!s->m[0]) return pd_error_set(PD_ERR_NOMEM, "sampler: out of memory for DPM++ history (%lld floats)", (long long)s->n);
    return PD_OK;
}

void pd_dpmpp_step(pd_sampler *s, float *x, const float *v, int i) {
    const double *sg = s->ssig;
    const int64_t n = s->n;
    const float sigma = (float)sg[i];
    float *m_prev = s->m[0];
    const double s0 = sg[i], t = sg[i + 1];
    const int order = i == 0 || i == s->steps - 1 ? 1 : 2;
    /* x_t = cx * x + c0 * m0 + c1 * m1 */
    double cx = 0.0, c0 = 1.0, c1 = 0.0;
    if (t > 0.0) {
        const double h = pd_flow_lambda(t) - pd_flow_lambda(s0); /* +inf when s0 = 1 */
        const double e = expm1(-h);
        cx = t / s0;
        c0 = -(1.0 - t) * e;
        if (order == 2) {
            const double inv_r0 = h / (pd_flow_lambda(s0) - pd_flow_lambda(sg[i - 1])); /* 0 when sigma_{i-1} = 1 */
            const double k = -0.5 * (1.0 - t) * e * inv_r0;
            c0 += k;
            c1 = -k;
        }
    }
    for (int64_t j = 0; j < n; j++) {
        const float m0 = x[j] - sigma * v[j]; /* the x0 prediction, in f32 as the official code makes it */
        x[j] = (float)(cx * x[j] + c0 * m0 + c1 * m_prev[j]);
        m_prev[j] = m0;
    }
}
