/* PipeSP's chunk plan (see pipesp_plan.h). */
#include "models/wan/pipesp_plan.h"

#include <math.h>

#include "base/status.h"

double pd_pipesp_simulate(int64_t B, int h, int g, double a0, double a1, double c0, double c1) {
    PD_ASSERT(B >= 1 && h >= 1 && g >= 1);
    PD_ASSERT(isfinite(a0) && isfinite(a1) && isfinite(c0) && isfinite(c1));
    PD_ASSERT(a0 >= 0 && a1 >= 0 && c0 >= 0 && c1 >= 0);
    if (g > h) g = h;
    const int64_t m = (h + (int64_t)g - 1) / g;
    const double elem = (double)m * c0 + c1 * h; /* one batch element's transfers of one tensor */
    /* The Q/K/V transfers occupy the thread from 0 to 3*B*elem; chunk (b, j)'s last one ends after
     * the transfers of the b earlier elements and of chunks 0..j, i.e. min((j+1)*g, h) slots. */
    double comm = 3.0 * (double)B * elem, t = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < m; j++) {
            const int64_t upto = (j + 1) * g < h ? (j + 1) * g : h, gj = upto - j * g;
            const double qkv = 3.0 * ((double)b * elem + (double)(j + 1) * c0 + c1 * (double)upto);
            t = fmax(t, qkv) + a0 + a1 * (double)gj;
            comm = fmax(comm, t) + c0 + c1 * (double)gj; /* queued behind everything before it */
        }
    return comm;
}

int pd_pipesp_choose_chunk(int64_t B, int h, double t_att_1, double t_att_h, double t_comm_1, double t_comm_h) {
    PD_ASSERT(B >= 1);
    if (h <= 1) return 1;
    const double t[4] = {t_att_1, t_att_h, t_comm_1, t_comm_h};
    for (int i = 0; i < 4; i++)
        if (!isfinite(t[i]) || t[i] < 0) return h;
    const double a1 = fmax(0, (t_att_h - t_att_1) / (h - 1)), a0 = fmax(0, t_att_1 - a1);
    const double c1 = fmax(0, (t_comm_h - t_comm_1) / (h - 1)), c0 = fmax(0, t_comm_1 - c1);
    int best = h;
    double fmin = INFINITY;
    for (int g = h; g >= 1; g--) {
        const double f = pd_pipesp_simulate(B, h, g, a0, a1, c0, c1);
        if (f < fmin) fmin = f, best = g;
    }
    /* the largest g within the margin of the best (the best itself qualifies: same call, same value) */
    const double limit = (1 + PD_PIPESP_PLAN_MARGIN) * fmin;
    for (int g = h; g > best; g--)
        if (pd_pipesp_simulate(B, h, g, a0, a1, c0, c1) <= limit) return g;
    return best;
}
