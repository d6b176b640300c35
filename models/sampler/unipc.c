/* UniPC (bh2, order 2, x0 prediction) for flow matching.
 *
 * With alpha = 1 - sigma, lambda = log(alpha / sigma) and a step from sigma_s0 to sigma_t,
 * h = lambda_t - lambda_s0, B = expm1(-h) (bh2) and phi1 = expm1(-h), every update is
 *   x_t = (sigma_t / sigma_s0) * x - alpha_t * phi1 * m0 - alpha_t * B * (sum of rho_k * D_k)
 * where m0 is the x0 prediction at s0 and the D_k are divided differences of x0 predictions:
 *   D_1 = (m1 - m0) / r1, r1 = (lambda_s1 - lambda_s0) / h  (m1 the prediction one step earlier),
 *   D_t = m_t - m0                                           (corrector: the prediction at t).
 * UniP of order 2 uses rho = 1/2 on D_1; UniC of order 1 uses rho = 1/2 on D_t; UniC of order 2
 * solves [[1, 1], [r1, 1]] rho = [b1, b2] with g1 = phi1/hh - 1, b1 = g1/B, g2 = g1/hh - 1/2,
 * b2 = 2*g2/B, hh = -h. Each update is linear in (x, m0, m1, m_t), so the coefficients are computed
 * once per step in double and applied elementwise. lambda is infinite at sigma = 0: the final step
 * (always order 1) is taken in its limit, x_t = m0. */
#include <math.h>
#include <stdlib.h>

#include "models/sampler/sampler_impl.h"

typedef struct pd_unipc_coef {
    double cx, c0, c1, ct; /* x_t = cx*x + c0*m0 + c1*m1 + ct*m_t */
} pd_unipc_coef;


/* Update from sigma_s0 to sigma_t (both > 0); s1 is the sigma of m1 (used when order == 2).
 * corrector selects UniC (uses m_t) over UniP. */
static pd_unipc_coef pd_unipc_coefs(double s0, double t, double s1, int order, int corrector) {
    const double alpha_t = 1.0 - t;
    const double h = pd_flow_lambda(t) - pd_flow_lambda(s0);
    const double hh = -h;
    const double phi1 = expm1(hh);
    const double B = expm1(hh);
    pd_unipc_coef c = {.cx = t / s0, .c0 = -alpha_t * phi1, .c1 = 0.0, .ct = 0.0};
    const double k = -alpha_t * B; /* the factor in front of the rho-weighted differences */
    double rho1 = 0.0, rhot = 0.0, r1 = 1.0;
    if (order == 2) r1 = (pd_flow_lambda(s1) - pd_flow_lambda(s0)) / h;
    if (!corrector) {
        if (order == 2) rho1 = 0.5;
    } else if (order == 1) {
        rhot = 0.5;
    } else {
        const double g1 = phi1 / hh - 1.0;
        const double b1 = g1 / B;
        const double g2 = g1 / hh - 0.5;
        const double b2 = 2.0 * g2 / B;
        rho1 = (b1 - b2) / (1.0 - r1);
        rhot = b1 - rho1;
    }
    /* k * (rho1 * (m1 - m0) / r1 + rhot * (m_t - m0)) */
    c.c1 = k * rho1 / r1;
    c.ct = k * rhot;
    c.c0 -= c.c1 + c.ct;
    return c;
}

pd_status pd_unipc_init(pd_sampler *s) {
    size_t bytes = sizeof(float) * (size_t)s->n;
    s->last = malloc(bytes);
    s->m[0] = malloc(bytes);
    s->m[1] = malloc(bytes);
    if (!s->last || !s->m[0] || !s->m[1])
        return pd_error_set(PD_ERR_NOMEM, "sampler: out of memory for UniPC history (3 x %lld floats)", (long long)s->n);
    return PD_OK;
}

void pd_unipc_release(pd_sampler *s) {
    free(s->last);
    free(s->m[0]);
    free(s->m[1]);
    s->last = s->m[0] = s->m[1] = NULL;
}

void pd_unipc_step(pd_sampler *s, float *x, const float *v, int i) {
    const double *sg = s->ssig;
    const int64_t n = s->n;
    const float sigma = (float)sg[i];
    if (i == s->steps - 1) { /* to sigma = 0: the x0 prediction; the corrector could not change it */
        for (int64_t j = 0; j < n; j++) x[j] = x[j] - sigma * v[j];
        return;
    }
    /* m_prev = x0 at step i-1, m_old = x0 at step i-2; m_old's buffer receives x0 at step i. */
    float *m_prev = s->m[s->newest], *m_old = s->m[1 - s->newest];
    const int order = i == 0 ? 1 : 2; /* warm-up, then order 2 until the (order 1) final step */
    const int corr = i > 0;
    pd_unipc_coef cc = {0}, pc;
    if (corr) cc = pd_unipc_coefs(sg[i - 1], sg[i], i >= 2 ? sg[i - 2] : 0.0, s->prev_order, 1);
    pc = pd_unipc_coefs(sg[i], sg[i + 1], i >= 1 ? sg[i - 1] : 0.0, order, 0);
    for (int64_t j = 0; j < n; j++) {
        const float mt = x[j] - sigma * v[j]; /* x0 at the uncorrected sample, as UniC prescribes */
        double xc = x[j];
        if (corr) {
            double m1 = s->prev_order == 2 ? (double)m_old[j] : 0.0;
            xc = cc.cx * s->last[j] + cc.c0 * m_prev[j] + cc.c1 * m1 + cc.ct * mt;
        }
        const float xcf = (float)xc;
        const double m1p = order == 2 ? (double)m_prev[j] : 0.0;
        x[j] = (float)(pc.cx * xcf + pc.c0 * mt + pc.c1 * m1p);
        s->last[j] = xcf;
        m_old[j] = mt;
    }
    s->newest = 1 - s->newest;
    s->prev_order = order;
}
