#include <math.h>
#include <stdlib.h>

#include "plan/sim.h"

/* A decoder's queue of decode intervals, in order. Step start times of a replica only grow, so an
 * interval that ended before one of them is dropped (head moves on) and never looked at again. */
typedef struct pd_sim_dec {
    double free_at;
    double (*iv)[2]; /* (start, end) */
    int64_t head, n, cap;
} pd_sim_dec;

static bool pd_sim_decoding(pd_sim_dec *dec, int decoders, double t) {
    for (int d = 0; d < decoders; d++) {
        pd_sim_dec *q = &dec[d];
        while (q->head < q->n && q->iv[q->head][1] <= t) q->head++;
        if (q->head < q->n && q->iv[q->head][0] <= t) return true;
    }
    return false;
}

static pd_status pd_sim_push(pd_sim_dec *q, double start, double end) {
    if (q->head == q->n) q->head = q->n = 0; /* all done: reuse the space */
    if (q->n == q->cap) {
        int64_t cap = q->cap ? 2 * q->cap : 16;
        void *p = realloc(q->iv, (size_t)cap * sizeof *q->iv);
        if (!p) return pd_error_set(PD_ERR_NOMEM, "simulator decode queue");
        q->iv = p, q->cap = cap;
    }
    q->iv[q->n][0] = start, q->iv[q->n][1] = end;
    q->n++;
    return PD_OK;
}

static int pd_sim_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static bool pd_sim_time_ok(double v) { return isfinite(v) && v >= 0; }

pd_status pd_sim_run(const pd_sim_config *cfg, const pd_sim_stages *st, pd_sim_result *out) {
    if (cfg->replicas < 1 || cfg->replicas > 4096) return pd_error_set(PD_ERR_INVALID, "replicas must be in 1..4096");
    if (cfg->decoders < 0 || cfg->decoders > 4096) return pd_error_set(PD_ERR_INVALID, "decoders must be in 0..4096");
    if (cfg->requests < 1 || cfg->requests > 10000000) return pd_error_set(PD_ERR_INVALID, "requests must be in 1..10^7");
    if (!pd_sim_time_ok(cfg->rate)) return pd_error_set(PD_ERR_INVALID, "rate must be >= 0");
    if (cfg->aco && cfg->decoders == 0) return pd_error_set(PD_ERR_INVALID, "Aco needs decoders");
    if (!pd_sim_time_ok(st->text_s) || !pd_sim_time_ok(st->step_s) || !pd_sim_time_ok(st->step_aco_s) ||
        !pd_sim_time_ok(st->decode_s))
        return pd_error_set(PD_ERR_INVALID, "stage times must be finite and >= 0");
    if (st->steps < 1) return pd_error_set(PD_ERR_INVALID, "steps must be >= 1");

    const int R = cfg->replicas, D = cfg->decoders;
    const int64_t n = cfg->requests;
    double *den_free = calloc((size_t)R, sizeof *den_free);
    pd_sim_dec *dec = calloc((size_t)R * (D ? D : 1), sizeof *dec);
    double *lat = malloc((size_t)n * sizeof *lat);
    pd_status ret = PD_OK;
    if (!den_free || !dec || !lat) {
        ret = pd_error_set(PD_ERR_NOMEM, "simulator state for %lld requests", (long long)n);
        goto done;
    }
    double den_busy = 0, dec_busy = 0, t_end = 0;
    int64_t aco_steps = 0;
    for (int64_t k = 0; k < n; k++) {
        const double arrive = cfg->rate > 0 ? (double)k / cfg->rate : 0.0;
        int best = 0;
        for (int i = 1; i < R; i++)
            if (den_free[i] < den_free[best]) best = i;
        pd_sim_dec *rd = dec + (size_t)best * (D ? D : 1);
        const double t0 = fmax(arrive, den_free[best]);
        double t = t0 + st->text_s;
        for (int s = 0; s < st->steps; s++) {
            if (cfg->aco && !pd_sim_decoding(rd, D, t)) {
                t += st->step_aco_s;
                aco_steps++;
            } else {
                t += st->step_s;
            }
        }
        if (D == 0) t += st->decode_s; /* the denoise group decodes before its next request */
        den_busy += t - t0;
        den_free[best] = t;
        double done_at = t;
        if (D > 0) {
            int d = 0;
            for (int j = 1; j < D; j++)
                if (rd[j].free_at < rd[d].free_at) d = j;
            const double ds = fmax(t, rd[d].free_at);
            done_at = ds + st->decode_s;
            rd[d].free_at = done_at;
            if ((ret = pd_sim_push(&rd[d], ds, done_at)) != PD_OK) goto done;
            dec_busy += st->decode_s;
        }
        lat[k] = done_at - arrive;
        t_end = fmax(t_end, done_at);
    }
    double sum = 0, mx = 0;
    for (int64_t k = 0; k < n; k++) sum += lat[k], mx = fmax(mx, lat[k]);
    qsort(lat, (size_t)n, sizeof *lat, pd_sim_cmp);
    pd_sim_result res = {0};
    res.p50_s = lat[(int64_t)ceil(0.50 * n) - 1];
    res.p99_s = lat[(int64_t)ceil(0.99 * n) - 1];
    res.mean_s = sum / n, res.max_s = mx;
    res.makespan_s = t_end;
    res.throughput = t_end > 0 ? n / t_end : INFINITY;
    res.util_denoise = t_end > 0 ? den_busy / (t_end * R) : 0;
    res.util_decode = D && t_end > 0 ? dec_busy / (t_end * R * D) : 0;
    res.aco_steps = aco_steps;
    res.steps = n * st->steps;
    *out = res;
done:
    if (dec)
        for (int64_t i = 0; i < (int64_t)R * (D ? D : 1); i++) free(dec[i].iv);
    free(den_free), free(dec), free(lat);
    return ret;
}
