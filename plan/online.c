#include "plan/online.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/wan/aco.h"

/* ---- the split rules ---- */

static bool pd_plan_usable(double t) { return t > 0 && isfinite(t); }

int pd_plan_split_decode_workers(int n_workers, int pinned, double t_denoise, double t_decode) {
    if (n_workers < 2) return 0;
    int n;
    if (pinned > 0)
        n = pinned;
    else if (!pd_plan_usable(t_denoise) || !pd_plan_usable(t_decode))
        n = 1;
    else
        n = (int)lround(t_decode / (t_decode + t_denoise) * n_workers);
    return n < 1 ? 1 : n > n_workers - 1 ? n_workers - 1 : n;
}

int pd_plan_split_replan(int n_workers, int pinned, int current, double t_denoise, double t_decode) {
    int target = pd_plan_split_decode_workers(n_workers, pinned, t_denoise, t_decode);
    if (pinned > 0 || n_workers < 2 || current < 1 || current > n_workers - 1 || target == current) return target;
    if (!pd_plan_usable(t_denoise) || !pd_plan_usable(t_decode)) return current;
    double f = t_decode / (t_decode + t_denoise) * n_workers;
    if (target > current && f < current + 0.5 + PD_PLAN_SPLIT_HYSTERESIS) return current;
    if (target < current && f > current - 0.5 - PD_PLAN_SPLIT_HYSTERESIS) return current;
    return target;
}

double pd_plan_split_aco_throughput(int n_workers, int n_dec, double t_denoise, double t_decode, double speedup) {
    PD_ASSERT(n_workers >= 2 && n_dec >= 1 && n_dec <= n_workers - 1);
    PD_ASSERT(pd_plan_usable(t_denoise) && pd_plan_usable(t_decode));
    PD_ASSERT(isfinite(speedup) && speedup >= 1);
    const int n_den = n_workers - n_dec, h = n_den < n_dec ? n_den : n_dec;
    const double g = speedup - 1.0;
    double den = ((double)n_den + h * g) / (t_denoise + h * g * t_decode / n_dec);
    double dec = (double)n_dec / t_decode;
    return den < dec ? den : dec;
}

int pd_plan_split_replan_aco(int n_workers, int pinned, int current, double t_denoise, double t_decode, double speedup) {
    bool usable = pd_plan_usable(t_denoise) && pd_plan_usable(t_decode) && isfinite(speedup);
    if (pinned > 0 || n_workers < 2 || !usable || !(speedup > 1))
        return pd_plan_split_replan(n_workers, pinned, current, t_denoise, t_decode);
    int best = 1;
    double best_x = pd_plan_split_aco_throughput(n_workers, 1, t_denoise, t_decode, speedup);
    for (int d = 2; d <= n_workers - 1; d++) {
        double x = pd_plan_split_aco_throughput(n_workers, d, t_denoise, t_decode, speedup);
        if (x > best_x) best = d, best_x = x;
    }
    if (current < 1 || current > n_workers - 1 || best == current) return best;
    double stay = pd_plan_split_aco_throughput(n_workers, current, t_denoise, t_decode, speedup);
    return best_x >= stay * (1.0 + PD_PLAN_SPLIT_ACO_GAIN) ? best : current;
}

/* ---- the live plan ---- */

const char *pd_plan_stage_name(pd_plan_stage s) {
    static const char *const names[PD_PLAN_STAGES] = {"text", "denoise", "decode"};
    return s >= 0 && s < PD_PLAN_STAGES ? names[s] : "?";
}

/* One denoising step of request r at the planned SP degree and chunk on profile p, lending `share`
 * heads per call (0: none, -1: the model's pick) to one helper per rank. */
static pd_status pd_plan_online_step(const pd_plan_online *o, const pd_plan_profile *p, const pd_plan_request *r,
                                     int share, pd_plan_step *out) {
    const pd_plan_online_config *c = &o->cfg;
    const int lenders = o->sp_eval * (c->cfg_parallel ? 2 : 1);
    const pd_plan_sp s = {.degree = o->sp_eval, .cfg_parallel = c->cfg_parallel, .g = o->g_eval,
                          .aco_helpers = share ? lenders : 0, .aco_share = share};
    return pd_plan_dit_step(p, &c->model, r, &s, out);
}

/* Predicted seconds of each stage of request r at the planned chunk, without Aco. */
static pd_status pd_plan_online_predict(const pd_plan_online *o, const pd_plan_request *r, double out[PD_PLAN_STAGES]) {
    const pd_plan_online_config *c = &o->cfg;
    if (!c->have_model) {
        for (int i = 0; i < PD_PLAN_STAGES; i++) out[i] = 1.0;
        return PD_OK;
    }
    pd_plan_step st;
    PD_TRY(pd_plan_online_step(o, &c->profile, r, 0, &st));
    pd_plan_vae vae;
    pd_plan_vae_decode(&c->profile, &c->model, r, &vae);
    out[PD_PLAN_TEXT] = pd_plan_text_seconds(&c->profile, &c->model, r);
    out[PD_PLAN_DENOISE] = r->steps * st.step_s;
    out[PD_PLAN_DECODE] = vae.seconds;
    return PD_OK;
}

/* The factor a stage's time is corrected by (0: nothing known, without a model). */
static double pd_plan_online_factor(const pd_plan_online *o, pd_plan_stage s, pd_plan_obs kind) {
    if (o->have[kind][s]) return o->scale[kind][s];
    if (kind == PD_PLAN_OBS_JOB && o->have[PD_PLAN_OBS_WARMUP][s]) return o->scale[PD_PLAN_OBS_WARMUP][s];
    return o->cfg.have_model && kind == PD_PLAN_OBS_JOB ? 1.0 : 0.0;
}

double pd_plan_online_stage_seconds(const pd_plan_online *o, pd_plan_stage s) {
    return o->base_s[s] * pd_plan_online_factor(o, s, PD_PLAN_OBS_JOB);
}

double pd_plan_online_measured_seconds(const pd_plan_online *o, pd_plan_stage s) {
    const bool measured = o->have[PD_PLAN_OBS_JOB][s] || o->have[PD_PLAN_OBS_WARMUP][s];
    return measured ? pd_plan_online_stage_seconds(o, s) : 0.0;
}

double pd_plan_online_aco_speedup(const pd_plan_online *o) {
    const int d = PD_PLAN_DENOISE;
    if (!o->have[PD_PLAN_OBS_PLAIN][d] || !o->have[PD_PLAN_OBS_ACO][d] || !(o->scale[PD_PLAN_OBS_ACO][d] > 0))
        return 1.0;
    double sp = o->scale[PD_PLAN_OBS_PLAIN][d] / o->scale[PD_PLAN_OBS_ACO][d];
    return isfinite(sp) && sp > 1.0 ? sp : 1.0;
}

/* The decode workers the corrected model asks for, from `current`. */
static int pd_plan_online_split(const pd_plan_online *o, int current) {
    const pd_plan_online_config *c = &o->cfg;
    if (c->workers < 2) return 0;
    if (c->sp_degree > 1) return o->plan.decode_workers; /* fixed at start */
    const double speedup = c->aco ? pd_plan_online_aco_speedup(o) : 1.0;
    /* With a gain, the throughput model wants the denoise time without a pair. */
    const double den = speedup > 1.0
                           ? o->base_s[PD_PLAN_DENOISE] * pd_plan_online_factor(o, PD_PLAN_DENOISE, PD_PLAN_OBS_PLAIN)
                           : pd_plan_online_stage_seconds(o, PD_PLAN_DENOISE);
    const double t_den = pd_plan_online_stage_seconds(o, PD_PLAN_TEXT) + den;
    return pd_plan_split_replan_aco(c->workers, c->pinned_decode, current, t_den,
                                    pd_plan_online_stage_seconds(o, PD_PLAN_DECODE), speedup);
}

/* q = p with its point-to-point link e^log_k times faster. */
static void pd_plan_online_scale_p2p(pd_plan_profile *q, const pd_plan_profile *p, double log_k) {
    const double k = exp(log_k);
    q->p2p.bw = p->p2p.bw * k, q->p2p.latency = p->p2p.latency / k;
}

/* The share from the model corrected by the measured Aco speedup (plain / lent denoise factors): the
 * profile's point-to-point link is scaled (bandwidth x k, latency / k; k found by bisection on log k)
 * until the model's speedup at the share in force matches the measured one, which folds in whatever
 * the model leaves out of a lend (a helper sharing cores, copies); the share is then the model's pick
 * on that profile, taken only when predicted PD_PLAN_SHARE_GAIN faster than the share in force. */
static int pd_plan_online_share(const pd_plan_online *o, double *speedup_pred) {
    const int cur = o->plan.aco_share, d = PD_PLAN_DENOISE;
    *speedup_pred = o->plan.aco_speedup_predicted;
    if (!o->share_planned || cur <= 0 || !o->have[PD_PLAN_OBS_PLAIN][d] || !o->have[PD_PLAN_OBS_ACO][d]) return cur;
    const double measured = o->scale[PD_PLAN_OBS_PLAIN][d] / o->scale[PD_PLAN_OBS_ACO][d];
    if (!pd_plan_usable(measured)) return cur;
    pd_plan_profile q = o->cfg.profile;
    pd_plan_step plain, lent;
    const pd_plan_request *r = &o->cfg.typical;
    if (pd_plan_online_step(o, &q, r, 0, &plain) != PD_OK) return cur;
    double lo = -30, hi = 30; /* log k */
    for (int i = 0; i < 80; i++) {
        const double mid = 0.5 * (lo + hi);
        pd_plan_online_scale_p2p(&q, &o->cfg.profile, mid);
        if (pd_plan_online_step(o, &q, r, cur, &lent) != PD_OK) return cur;
        if (plain.step_s / lent.step_s < measured) lo = mid;
        else hi = mid;
    }
    pd_plan_online_scale_p2p(&q, &o->cfg.profile, lo);
    pd_plan_step now, best;
    if (pd_plan_online_step(o, &q, r, cur, &now) != PD_OK || pd_plan_online_step(o, &q, r, -1, &best) != PD_OK) return cur;
    const double t_best = best.aco_share > 0 ? best.step_s : plain.step_s;
    if (best.aco_share == cur || !(t_best < now.step_s * (1.0 - PD_PLAN_SHARE_GAIN))) return cur;
    *speedup_pred = best.aco_share > 0 ? plain.step_s / best.step_s : 1.0;
    return best.aco_share;
}

static void pd_plan_online_predictions(pd_plan_online *o) {
    for (int i = 0; i < PD_PLAN_STAGES; i++)
        o->plan.predicted_s[i] = pd_plan_online_stage_seconds(o, (pd_plan_stage)i);
}

pd_status pd_plan_online_init(pd_plan_online *o, const pd_plan_online_config *c) {
    if (c->workers < 1 || c->workers > 4096)
        return pd_error_set(PD_ERR_INVALID, "plan: workers %d must be in 1..4096", c->workers);
    if (c->sp_degree < 1 || c->sp_degree > c->workers)
        return pd_error_set(PD_ERR_INVALID, "plan: SP degree %d must be in 1..%d (the workers)", c->sp_degree, c->workers);
    if (c->pinned_decode < 0 || c->pinned_chunk < 0)
        return pd_error_set(PD_ERR_INVALID, "plan: pinned decode workers and chunk must be >= 0");
    if (c->cfg_parallel && c->sp_degree % 2)
        return pd_error_set(PD_ERR_INVALID, "plan: CFG parallelism needs an even SP degree");
    memset(o, 0, sizeof *o);
    o->cfg = *c;
    /* With CFG parallelism a group's two halves each evaluate one element of the pair. */
    o->sp_eval = c->cfg_parallel ? c->sp_degree / 2 : c->sp_degree;
    pd_plan_decision *p = &o->plan;
    p->sp_degree = c->sp_degree;
    p->chunk = c->sp_degree > 1 ? c->pinned_chunk : 0;
    p->aco_share = !c->aco || c->workers < 2 ? 0 : c->aco_half ? PD_ACO_SHARE_HALF : -1;
    p->aco_speedup_predicted = 1.0;
    if (c->have_model) {
        PD_TRY(pd_plan_request_check(&c->model, &c->typical, NULL));
        if (c->cfg_parallel && !c->typical.cfg)
            return pd_error_set(PD_ERR_INVALID, "plan: CFG parallelism needs a CFG request");
        const int sp = o->sp_eval, h = (c->model.dit.heads + sp - 1) / sp;
        if (sp > c->model.dit.heads)
            return pd_error_set(PD_ERR_INVALID, "plan: %d SP ranks exceed the model's %d heads", sp, c->model.dit.heads);
        if (sp > 1) {
            pd_plan_step st;
            o->g_eval = -1; /* the fastest */
            PD_TRY(pd_plan_online_step(o, &c->profile, &c->typical, 0, &st));
            /* A pinned g past the heads per rank is Ulysses' one chunk. */
            p->chunk = c->pinned_chunk == 0 ? st.g : c->pinned_chunk < h ? c->pinned_chunk : h;
            o->g_eval = p->chunk;
        }
        if (p->aco_share == -1) {
            pd_plan_step plain, lent;
            PD_TRY(pd_plan_online_step(o, &c->profile, &c->typical, -1, &lent));
            PD_TRY(pd_plan_online_step(o, &c->profile, &c->typical, 0, &plain));
            p->aco_share = lent.aco_share;
            o->share_planned = true;
            if (lent.aco_share > 0 && lent.step_s > 0) p->aco_speedup_predicted = plain.step_s / lent.step_s;
        }
    }
    PD_TRY(pd_plan_online_predict(o, &c->typical, o->base_s));
    /* The split: with SP groups the pinned size or 1 (the caller lays the groups out in the rest);
     * alone the model's rule, without hysteresis. */
    if (c->workers < 2) p->decode_workers = 0;
    else if (c->sp_degree > 1) p->decode_workers = pd_plan_split_decode_workers(c->workers, c->pinned_decode, 0, 0);
    else p->decode_workers = pd_plan_online_split(o, 0);
    p->denoise_workers = c->workers - p->decode_workers;
    p->revision = 1;
    pd_plan_online_predictions(o);
    return PD_OK;
}

void pd_plan_online_observe(pd_plan_online *o, pd_plan_stage stage, pd_plan_obs kind, const pd_plan_request *r,
                            double seconds) {
    if (stage < 0 || stage >= PD_PLAN_STAGES || kind < PD_PLAN_OBS_JOB || kind > PD_PLAN_OBS_ACO) return;
    if (!pd_plan_usable(seconds)) return;
    double pred[PD_PLAN_STAGES];
    if (pd_plan_online_predict(o, r ? r : &o->cfg.typical, pred) != PD_OK || !pd_plan_usable(pred[stage])) return;
    const double f = seconds / pred[stage];
    double *s = &o->scale[kind][stage];
    /* A warm-up replaces the one before it (a new worker's warm-up is as good as an old one's). */
    *s = o->have[kind][stage] && kind != PD_PLAN_OBS_WARMUP ? (1 - PD_PLAN_ONLINE_ALPHA) * *s + PD_PLAN_ONLINE_ALPHA * f : f;
    o->have[kind][stage] = true;
}

bool pd_plan_online_revise(pd_plan_online *o, int current_decode) {
    const int dec = pd_plan_online_split(o, current_decode);
    double speedup_pred;
    const int share = pd_plan_online_share(o, &speedup_pred);
    if (dec == o->plan.decode_workers && share == o->plan.aco_share) return false;
    if (share != o->plan.aco_share) {
        o->plan.aco_share = share;
        o->plan.aco_speedup_predicted = speedup_pred;
        o->have[PD_PLAN_OBS_ACO][PD_PLAN_DENOISE] = false; /* lends at the new share are measured afresh */
    }
    memcpy(o->previous_s, o->plan.predicted_s, sizeof o->previous_s);
    o->plan.decode_workers = dec;
    o->plan.denoise_workers = o->cfg.workers - dec;
    o->plan.revision++;
    pd_plan_online_predictions(o);
    return true;
}

/* "what text a s, denoise b s, decode c s" ("-" for 0: unknown). */
static void pd_plan_online_secs(char *b, size_t n, const char *what, const double *v) {
    size_t k = (size_t)snprintf(b, n, "%s", what);
    for (int i = 0; i < PD_PLAN_STAGES && k < n; i++) {
        const char *name = pd_plan_stage_name((pd_plan_stage)i), *sep = i + 1 < PD_PLAN_STAGES ? "," : "";
        if (v[i] > 0) k += (size_t)snprintf(b + k, n - k, " %s %.3f s%s", name, v[i], sep);
        else k += (size_t)snprintf(b + k, n - k, " %s -%s", name, sep);
    }
}

void pd_plan_online_describe(const pd_plan_online *o, char *buf, size_t n) {
    const pd_plan_decision *p = &o->plan;
    char sp[80] = "", aco[64] = "", pred[160], meas[160], prev[176] = "";
    if (p->sp_degree > 1)
        snprintf(sp, sizeof sp, ", SP %d%s, PipeSP g %d%s", p->sp_degree, o->cfg.cfg_parallel ? " (CFG parallel)" : "",
                 p->chunk, p->chunk ? "" : " (measured by the group)");
    if (p->aco_share > 0)
        snprintf(aco, sizeof aco, ", Aco share %d (x%.2f predicted)", p->aco_share, p->aco_speedup_predicted);
    else if (p->aco_share == PD_ACO_SHARE_HALF) snprintf(aco, sizeof aco, ", Aco half the heads");
    else if (p->aco_share < 0) snprintf(aco, sizeof aco, ", Aco share measured by the lender");
    else if (o->cfg.aco && o->cfg.workers >= 2) snprintf(aco, sizeof aco, ", Aco share 0 (lending does not pay)");
    double m[PD_PLAN_STAGES];
    for (int i = 0; i < PD_PLAN_STAGES; i++) m[i] = pd_plan_online_measured_seconds(o, (pd_plan_stage)i);
    pd_plan_online_secs(pred, sizeof pred, "predicted per job", p->predicted_s);
    pd_plan_online_secs(meas, sizeof meas, "measured", m);
    if (p->revision > 1) {
        char what[32];
        snprintf(what, sizeof what, "; rev %u predicted", p->revision - 1);
        pd_plan_online_secs(prev, sizeof prev, what, o->previous_s);
    }
    snprintf(buf, n, "rev %u: %d denoise + %d decode workers%s%s; %s; %s%s", p->revision, p->denoise_workers,
             p->decode_workers, sp, aco, pred, meas, prev);
}

/* The CPU reference: `pipedit calibrate --device cpu --threads 1` in a release build on the 2-core
 * AMD EPYC VM that runs the tests (one single-threaded worker's view; each figure the median of three
 * calibrations, 2026-12-07). Only its ratios matter once a job has run: the measured stage times
 * replace its absolute figures. */
static const pd_plan_profile pd_plan_cpu_reference = {
    .name = "cpu-reference",
    .source = "pipedit calibrate --device cpu --threads 1 on a 2-core AMD EPYC VM (release build, median of 3, 2026-12-07)",
    .gemm_bf16 = 9.34e10,
    .gemm_f32 = 9.47e10,
    .attn = 5.56e10,
    .mem_bw = 2.02e10,
    .conv = 8.82e10,
    .mem_bytes = 2.53e10,
    .eltwise_passes = PD_PLAN_CPU_PASSES,
    .act_bytes = 4,
    .topology = PD_PLAN_SHM,
    .a2a = {.bw = 2.87e9, .latency = 4.84e-6},
    .p2p = {.bw = 9.93e9, .latency = 1.93e-5},
    .gelu_fused = true,
    .cores = 1,
    .conv_n = 5,
    .conv_cout = {8, 16, 32, 64, 96},
    .conv_rate = {2.26e10, 5.69e10, 6.71e10, 8.16e10, 8.82e10},
    .silu = 1.58e9,
    .encode_first_px = 7.03e6,
    .encode_px = 1.36e7,
    .fault_bw = 1.87e9,
};

const pd_plan_profile *pd_plan_online_default_profile(const char *device) {
    if (!device || !device[0] || !strcmp(device, "cpu")) return &pd_plan_cpu_reference;
    if (!strcmp(device, "cuda")) return pd_plan_profile_builtin("h100");
    return NULL;
}
