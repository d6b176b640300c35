/* The live plan (DESIGN.md section 6): the scheduler's one source of the DeDiVAE split, the PipeSP
 * chunk and the Aco share, planned from the cost model (plan/cost.h) at start and re-planned from
 * measured stage times as jobs run. Pure: no processes, no clock, no I/O; the caller feeds it
 * measurements and acts on its decisions (models/ never sees this module: the scheduler passes the
 * chunk and the share down to the workers).
 *
 * The model. For a typical request (the model preset's default size, frames and steps) the cost model
 * predicts one job's stage times on one denoise worker (or SP group) and one decode worker: text
 * encoding, denoising (steps x pd_plan_dit_step at the configured SP degree and the planned chunk) and
 * VAE decode. Each measured stage of a request r corrects the model by a per-stage scale factor,
 * measured / predicted(r): an exponential moving average (weight PD_PLAN_ONLINE_ALPHA) over jobs; the
 * workers' warm-up gives the factor until the first job of that stage is measured. The corrected time
 * of a stage is predicted(typical) x its factor, so jobs of any shape correct the same typical job.
 * Without a model (no profile, or a model folder whose configs cannot be read) every request is
 * predicted alike and a stage's time is the average of its measured times (unknown until measured).
 *
 * The decisions.
 *  - Split (sp_degree 1, two workers or more): n_decode = round(T_dec / (T_dec + T_den) x N), clamped
 *    to [1, N - 1], T_den the corrected text + denoise time and T_dec the corrected decode time
 *    (PipeDiT's rule); a pinned size wins. From a current split the unrounded target must clear the
 *    rounding boundary by PD_PLAN_SPLIT_HYSTERESIS before the split moves. With a measured Aco
 *    speedup > 1 (corrected denoise time without a pair / with heads lent) the split maximises
 *    pd_plan_split_aco_throughput instead and moves only for PD_PLAN_SPLIT_ACO_GAIN more throughput.
 *    With sp_degree > 1 the split is fixed at start (the pinned size, or 1).
 *  - Chunk (sp_degree > 1): the pinned chunk, else the cost model's fastest g for the typical request
 *    (pd_plan_dit_step with g = -1); 0 without a model (the SP group then measures its own).
 *  - Aco share (aco without aco_half): the heads a denoise rank lends of each self-attention call to one
 *    helper of its own, from the cost model at the planned chunk (pd_plan_dit_step's share, which is
 *    models/wan/aco.h's pd_aco_choose_share on the profile's times); -1 without a model (the lender
 *    then measures its own). Once denoise stages were measured both without a pair and lending at
 *    that share, the model is corrected to the measured speedup (its point-to-point link scaled until
 *    the predicted speedup at the share in force is the measured one) and the share re-planned on it,
 *    moving only when the new share is predicted PD_PLAN_SHARE_GAIN faster than the one in force. No
 *    pairs form at share 0, so a share of 0 is final.
 * The split and the share are re-planned from measured times; the chunk depends on the profile and
 * the typical request only (stage times do not tell compute from communication), so it is planned
 * once. */
#ifndef PD_PLAN_ONLINE_H
#define PD_PLAN_ONLINE_H

#include <stdbool.h>

#include "base/status.h"
#include "plan/cost.h"

/* Weight of a new measurement in a stage's scale factor. */
#define PD_PLAN_ONLINE_ALPHA 0.3
/* How much faster a re-planned Aco share must be predicted than the share in force. */
#define PD_PLAN_SHARE_GAIN 0.02

/* ---- the split rules (pure; the live plan applies them to its corrected times) ---- */

/* n_decode for n_workers from one job's denoise-worker time t_denoise and decode time t_decode:
 * round(t_decode / (t_decode + t_denoise) x n_workers) clamped to [1, n_workers - 1]; 0 for fewer than
 * two workers (one worker runs every stage); a pinned size (> 0) wins, clamped likewise; 1 without
 * usable times (either <= 0 or not finite). */
int pd_plan_split_decode_workers(int n_workers, int pinned, double t_denoise, double t_decode);

/* The split to move to from `current` decode workers: pd_plan_split_decode_workers, but the unrounded
 * target must clear the rounding boundary by PD_PLAN_SPLIT_HYSTERESIS before the split moves, so
 * timings that hover around a boundary do not make workers switch roles back and forth. Without usable
 * times the split stays. A pinned size is returned as is (clamped). */
#define PD_PLAN_SPLIT_HYSTERESIS 0.1
int pd_plan_split_replan(int n_workers, int pinned, int current, double t_denoise, double t_decode);

/* Predicted jobs per second of n_workers split into n_dec decode workers (1..n-1) and the rest
 * denoising, where t_denoise / t_decode are one job's stage times on one worker without Aco and
 * `speedup` (>= 1) is how much faster a denoise rank runs while its helper is idle all the time. The
 * min(n_den, n_dec) helped ranks speed up in proportion to their helper's idle fraction
 * u = 1 - X t_decode / n_dec (X the job rate), so X solves X = (n_den + h g u) / t_denoise, g = speedup - 1:
 *   X = min(n_dec / t_decode, (n_den + h g) / (t_denoise + h g t_decode / n_dec)).
 * With speedup 1 this is min(n_den / t_denoise, n_dec / t_decode), the DeDiVAE balance. Inputs must be
 * finite, times > 0 (a broken requirement aborts). */
double pd_plan_split_aco_throughput(int n_workers, int n_dec, double t_denoise, double t_decode, double speedup);

/* The split to move to with Aco. Without a measured gain (speedup <= 1, or times unusable) it is
 * pd_plan_split_replan's answer. Otherwise the target is the n_dec with the highest predicted
 * throughput (the smaller one on a tie); a pinned size wins; the split moves from `current` only when
 * the target is predicted at least PD_PLAN_SPLIT_ACO_GAIN faster than staying. */
#define PD_PLAN_SPLIT_ACO_GAIN 0.05
int pd_plan_split_replan_aco(int n_workers, int pinned, int current, double t_denoise, double t_decode, double speedup);

/* ---- the live plan ---- */

typedef enum pd_plan_stage { PD_PLAN_TEXT = 0, PD_PLAN_DENOISE, PD_PLAN_DECODE, PD_PLAN_STAGES } pd_plan_stage;

/* "text", "denoise", "decode". */
const char *pd_plan_stage_name(pd_plan_stage s);

typedef struct pd_plan_online_config {
    bool have_model;         /* false: plan from measured times alone (profile and model unused) */
    pd_plan_profile profile;
    pd_plan_model model;
    pd_plan_request typical; /* the request the plan is for (validated by pd_plan_request_check) */
    int workers;             /* worker processes (devices), >= 1 */
    int pinned_decode;       /* decode workers; 0 = planned */
    int sp_degree;           /* ranks per denoise group (fixed by configuration), >= 1 */
    bool cfg_parallel;
    int pinned_chunk;        /* PipeSP g; 0 = planned */
    bool aco;                /* Aco pairs may form: a measured speedup enters the split */
    bool aco_half;           /* with aco: every call lends half its heads (aco on), not a planned share */
} pd_plan_online_config;

/* A plan: what is in force and what it predicted. */
typedef struct pd_plan_decision {
    int denoise_workers, decode_workers;
    int sp_degree;
    int chunk;                           /* PipeSP g sent to SP groups (0: measured by the group) */
    int aco_share;                       /* heads lent per call: > 0 planned; 0 none (Aco off, one
                                          * worker, or lending does not pay); PD_ACO_SHARE_HALF half of
                                          * every call's (aco on); -1 measured by the lender (no model) */
    double predicted_s[PD_PLAN_STAGES];  /* one typical job, per stage, when the plan was made (0: unknown) */
    double aco_speedup_predicted;        /* the model's denoise speedup at aco_share (1 without) */
    unsigned revision;                   /* 1 for the plan made at start, +1 for every change */
} pd_plan_decision;

/* How an observation was measured. */
typedef enum pd_plan_obs {
    PD_PLAN_OBS_JOB = 0,   /* a real job's stage */
    PD_PLAN_OBS_WARMUP,    /* a worker's warm-up (used until a job of that stage is measured) */
    PD_PLAN_OBS_PLAIN,     /* a job's denoise stage that ran without an Aco pair (the Aco speedup) */
    PD_PLAN_OBS_ACO,       /* a job's denoise stage that lent heads (the Aco speedup) */
} pd_plan_obs;

typedef struct pd_plan_online {
    pd_plan_online_config cfg;
    int sp_eval, g_eval;           /* SP ranks and chunk of one DiT evaluation, as the model takes them */
    bool share_planned;            /* the share comes from the model (aco auto with a model) */
    double base_s[PD_PLAN_STAGES]; /* predicted(typical) per stage (1 without a model) */
    double scale[4][PD_PLAN_STAGES]; /* by pd_plan_obs kind */
    bool have[4][PD_PLAN_STAGES];
    pd_plan_decision plan;         /* in force */
    double previous_s[PD_PLAN_STAGES]; /* what the plan before it predicted (revision > 1) */
} pd_plan_online;

/* Plans from the model (or, without one, from nothing yet: the pinned split or 1 decode worker, chunk
 * 0, share -1) and makes revision 1. PD_ERR_INVALID for a config out of range (workers, sp_degree,
 * pinned sizes) or a typical request the model refuses, and pd_plan_dit_step's errors. */
pd_status pd_plan_online_init(pd_plan_online *o, const pd_plan_online_config *c);

/* Folds one measured stage (seconds > 0 and finite; anything else is ignored) of request r (NULL: the
 * typical request) into the model. A request the model refuses is ignored too. */
void pd_plan_online_observe(pd_plan_online *o, pd_plan_stage stage, pd_plan_obs kind, const pd_plan_request *r,
                            double seconds);

/* A stage's time for one typical job under the corrected model (0: unknown). */
double pd_plan_online_stage_seconds(const pd_plan_online *o, pd_plan_stage stage);

/* A stage's measured time for one typical job: predicted(typical) x the measured factor (0 until that
 * stage has been measured, warm-up included). */
double pd_plan_online_measured_seconds(const pd_plan_online *o, pd_plan_stage stage);

/* The measured Aco speedup (corrected denoise time without a pair over that with heads lent; 1 until
 * both were measured, and never below 1). */
double pd_plan_online_aco_speedup(const pd_plan_online *o);

/* Re-plans the split and the share from the corrected model, given the split the workers have now
 * (current decode workers; < 1 when none is settled): when the decision differs from the plan in force
 * it becomes the plan in force (its predictions the corrected times, its revision + 1) and true is
 * returned. */
bool pd_plan_online_revise(pd_plan_online *o, int current_decode);

/* One line for the log: "rev R: D denoise + K decode workers, SP n, PipeSP g, Aco share s; predicted
 * per job text a s, denoise b s, decode c s; measured text x s, ..." ("-" for what is not measured),
 * and after a change "; rev R-1 predicted text ..." (what the plan it replaced predicted). */
void pd_plan_online_describe(const pd_plan_online *o, char *buf, size_t n);

/* The profile the scheduler plans with when none is configured: for "cuda" the built-in h100 profile
 * (the card DESIGN.md section 9 measures), for "cpu" PD_PLAN_CPU_REFERENCE (a 2-core machine measured
 * with `pipedit calibrate`). NULL for another device. Either way the first measured stage times
 * correct its absolute figures; what it keeps deciding is the shape of the cost (how stage times
 * scale with the request) and the chunk and share. */
const pd_plan_profile *pd_plan_online_default_profile(const char *device);

#endif
