#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/deploy.h"

#define PD_PLAN_GIB 1073741824.0

pd_status pd_plan_evaluate(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r,
                           const pd_plan_deploy *d, const pd_plan_goal *goal, pd_plan_eval *out) {
    if (d->replicas < 1 || d->den < 1 || d->dec < 0)
        return pd_error_set(PD_ERR_INVALID, "deployment: replicas and den must be >= 1, dec >= 0");
    if (d->cfg_parallel && (!r->cfg || d->den % 2))
        return pd_error_set(PD_ERR_INVALID, "deployment: CFG parallelism needs a CFG request and an even den");
    if (d->aco && d->dec == 0) return pd_error_set(PD_ERR_INVALID, "deployment: Aco needs decode GPUs");
    const int sp = d->cfg_parallel ? d->den / 2 : d->den;
    if (sp > m->dit.heads) return pd_error_set(PD_ERR_INVALID, "deployment: %d SP ranks exceed the %d heads", sp, m->dit.heads);
    pd_plan_eval e = {.d = *d, .sp = sp};
    pd_plan_sp s = {.degree = sp, .cfg_parallel = d->cfg_parallel, .g = d->g};
    PD_TRY(pd_plan_dit_step(p, m, r, &s, &e.step));
    e.step_aco = e.step;
    if (d->aco) {
        s.aco_helpers = d->dec, s.aco_share = -1;
        PD_TRY(pd_plan_dit_step(p, m, r, &s, &e.step_aco));
    }
    pd_plan_vae vae;
    pd_plan_vae_decode(p, m, r, &vae);
    e.stages = (pd_sim_stages){.text_s = pd_plan_text_seconds(p, m, r), .step_s = e.step.step_s,
                               .step_aco_s = e.step_aco.step_s, .decode_s = vae.seconds, .steps = r->steps};
    pd_sim_config sc = {.replicas = d->replicas, .decoders = d->dec, .aco = d->aco && e.step_aco.aco_share > 0,
                        .requests = 1};
    pd_sim_result alone;
    PD_TRY(pd_sim_run(&sc, &e.stages, &alone));
    e.alone_s = alone.p50_s;
    sc.requests = goal->requests, sc.rate = goal->rate;
    PD_TRY(pd_sim_run(&sc, &e.stages, &e.stream));

    /* Memory: the first denoise GPU holds a DiT replica, its activations and the text encoder (and the
     * VAE when the group decodes); a decode GPU holds the VAE, a streaming chunk and, with Aco, the
     * lent heads' q, k, v and output of each lender it serves. */
    s.aco_helpers = 0;
    e.mem_den = pd_plan_dit_rank_bytes(p, m, r, &s) + 2.0 * pd_plan_text_params(&m->text);
    if (d->dec == 0) e.mem_den += vae.weight_bytes + vae.peak_bytes;
    if (d->dec > 0) {
        int64_t N = 0;
        PD_TRY(pd_plan_request_check(m, r, &N));
        const int B = r->cfg && !d->cfg_parallel ? 2 : 1;
        const double lenders = ceil((double)d->den / d->dec);
        e.mem_dec = vae.weight_bytes + vae.peak_bytes +
                    (d->aco ? lenders * 4.0 * B * (double)N * e.step_aco.aco_share * m->dit.head_dim * p->act_bytes : 0);
    }
    const double cap = p->mem_bytes - PD_PLAN_MEM_RESERVE;
    e.fits = e.mem_den <= cap && e.mem_dec <= cap;
    if (!e.fits)
        snprintf(e.why_not, sizeof e.why_not, "%s GPU needs %.1f GiB, %s has %.1f GiB (%.1f GiB after the %.0f GiB reserve)",
                 e.mem_den > cap ? "a denoise" : "a decode", fmax(e.mem_den, e.mem_dec) / PD_PLAN_GIB, p->name,
                 p->mem_bytes / PD_PLAN_GIB, cap / PD_PLAN_GIB, PD_PLAN_MEM_RESERVE / PD_PLAN_GIB);
    e.score = pd_plan_score(&e, goal);
    *out = e;
    return PD_OK;
}

double pd_plan_score(const pd_plan_eval *e, const pd_plan_goal *goal) {
    return goal->rate > 0 ? e->stream.p99_s : e->stream.makespan_s;
}

static int pd_plan_cmp3(double a, double b) { return (a > b) - (a < b); }

static int pd_plan_cmp(const void *a, const void *b) {
    const pd_plan_eval *x = a, *y = b;
    int c = 0;
    if (x->fits != y->fits) return x->fits ? -1 : 1;
    if (!x->fits) c = pd_plan_cmp3(fmax(x->mem_den, x->mem_dec), fmax(y->mem_den, y->mem_dec));
    else if (x->tied_best != y->tied_best) return x->tied_best ? -1 : 1;
    else if (x->tied_best) c = pd_plan_cmp3(x->alone_s, y->alone_s);
    else c = pd_plan_cmp3(x->score, y->score);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

pd_status pd_plan_search(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r, int gpus,
                         const pd_plan_goal *goal, pd_plan_eval **out, int *n) {
    if (gpus < 1 || gpus > 64) return pd_error_set(PD_ERR_INVALID, "gpus must be in 1..64");
    if (!(goal->rate >= 0 && isfinite(goal->rate)) || goal->requests < 1 || goal->requests > 100000)
        return pd_error_set(PD_ERR_INVALID, "goal: rate must be >= 0 and requests in 1..100000");
    PD_TRY(pd_plan_request_check(m, r, NULL));
    const int cap = 8 * gpus * gpus + 8;
    pd_plan_eval *e = malloc((size_t)cap * sizeof *e);
    if (!e) return pd_error_set(PD_ERR_NOMEM, "plan candidates");
    int k = 0;
    for (int rep = 1; rep <= gpus; rep++) {
        if (gpus % rep) continue;
        const int G = gpus / rep;
        for (int dec = 0; dec < G; dec++)
            for (int cfgp = 0; cfgp <= 1; cfgp++)
                for (int pipe = 0; pipe <= 1; pipe++)
                    for (int aco = 0; aco <= (dec > 0); aco++) {
                        const int den = G - dec, sp = cfgp ? den / 2 : den;
                        if (cfgp && (!r->cfg || den % 2)) continue;
                        if (sp > m->dit.heads || (pipe && sp < 2)) continue;
                        pd_plan_deploy d = {.replicas = rep, .den = den, .dec = dec, .cfg_parallel = cfgp,
                                            .g = pipe ? -1 : 0, .aco = aco};
                        PD_ASSERT(k < cap);
                        pd_status st = pd_plan_evaluate(p, m, r, &d, goal, &e[k]);
                        if (st != PD_OK) {
                            free(e);
                            return st;
                        }
                        /* PipeSP whose fastest chunk is the whole rank's heads is Ulysses: drop it. */
                        if (pipe && e[k].step.g == e[k].step.heads_per_rank) continue;
                        /* Aco whose rule lends nothing is the same deployment without it. */
                        if (aco && e[k].step_aco.aco_share == 0) continue;
                        e[k].order = k;
                        k++;
                    }
    }
    double best = INFINITY;
    for (int i = 0; i < k; i++)
        if (e[i].fits) best = fmin(best, e[i].score);
    for (int i = 0; i < k; i++) e[i].tied_best = e[i].fits && e[i].score <= best * (1 + PD_PLAN_TIE);
    qsort(e, (size_t)k, sizeof *e, pd_plan_cmp);
    *out = e;
    *n = k;
    return PD_OK;
}

void pd_plan_describe(const pd_plan_eval *e, char *buf, size_t n) {
    char attn[48] = "", aco[32] = "", dec[48];
    if (e->sp > 1) {
        if (e->step.g == e->step.heads_per_rank) snprintf(attn, sizeof attn, " Ulysses");
        else snprintf(attn, sizeof attn, " PipeSP g=%d", e->step.g);
    }
    if (e->d.aco) snprintf(aco, sizeof aco, " Aco %d/%d", e->step_aco.aco_share, e->step_aco.g);
    if (e->d.dec) snprintf(dec, sizeof dec, "dec %d%s", e->d.dec, aco);
    else snprintf(dec, sizeof dec, "decodes in place");
    snprintf(buf, n, "%d x [den %d: %s%d%s | %s]", e->d.replicas, e->d.den, e->d.cfg_parallel ? "2 x SP" : "SP", e->sp,
             attn, dec);
}
