/* The live plan (plan/online.h): the split it picks from a profile and from measured stage times, its
 * hysteresis, the Aco split, the chunk and the share it plans (and re-plans from a measured Aco
 * speedup), warm-up versus job measurements, and
 * bad configurations. Every expected value is computed by hand or from the cost model's own calls. */
#include <math.h>

#include "models/wan/aco.h"
#include "plan/online.h"
#include "tests/unit/test.h"

static bool near(double got, double want) { return fabs(got - want) <= 1e-9 * fmax(1.0, fabs(want)); }

/* The split rules themselves (pure): PipeDiT's rounding with clamps and a pinned size, the hysteresis,
 * and the Aco throughput model. */
static void test_split_rules(void) {
    PD_CHECK(pd_plan_split_decode_workers(1, 0, 1, 1) == 0);
    PD_CHECK(pd_plan_split_decode_workers(2, 0, 10, 1) == 1);  /* clamped up */
    PD_CHECK(pd_plan_split_decode_workers(2, 0, 1, 10) == 1);  /* clamped down */
    PD_CHECK(pd_plan_split_decode_workers(8, 0, 3, 1) == 2);   /* 1/4 * 8 */
    PD_CHECK(pd_plan_split_decode_workers(8, 0, 1, 3) == 6);   /* 3/4 * 8 */
    PD_CHECK(pd_plan_split_decode_workers(8, 0, 1, 100) == 7); /* at most N - 1 */
    PD_CHECK(pd_plan_split_decode_workers(5, 0, 2, 3) == 3);   /* 0.6 * 5 = 3 */
    PD_CHECK(pd_plan_split_decode_workers(4, 3, 10, 1) == 3);  /* pinned wins */
    PD_CHECK(pd_plan_split_decode_workers(4, 9, 10, 1) == 3);  /* pinned, clamped */
    PD_CHECK(pd_plan_split_decode_workers(4, 0, 0, 1) == 1);   /* no timings yet */
    PD_CHECK(pd_plan_split_decode_workers(4, 0, NAN, 1) == 1);
    /* Hysteresis: 8 workers at 1.58 decode-equivalents stays at 1; at 1.65 moves to 2. */
    PD_CHECK(pd_plan_split_replan(8, 0, 1, 8 - 1.58, 1.58) == 1);
    PD_CHECK(pd_plan_split_replan(8, 0, 1, 8 - 1.65, 1.65) == 2);
    PD_CHECK(pd_plan_split_replan(8, 0, 2, 8 - 1.42, 1.42) == 2);
    PD_CHECK(pd_plan_split_replan(8, 0, 2, 8 - 1.35, 1.35) == 1);
    PD_CHECK(pd_plan_split_replan(8, 0, 2, 0, 0) == 2); /* no timings: keep */
    /* Speedup 1 is the DeDiVAE balance min(n_den / T_den, n_dec / T_dec). */
    PD_CHECK(fabs(pd_plan_split_aco_throughput(4, 1, 4, 1, 1.0) - 0.75) < 1e-12);
    PD_CHECK(fabs(pd_plan_split_aco_throughput(4, 2, 4, 1, 1.0) - 0.5) < 1e-12);
    /* Speedup 3 (g = 2), T_den 4, T_dec 1: 1 decode worker -> (3 + 2) / (4 + 2) = 5/6 jobs/s; 2 decode
     * workers -> (2 + 4) / (4 + 4 / 2) = 1 job/s: Aco moves the best split from 1 to 2 decode workers. */
    PD_CHECK(fabs(pd_plan_split_aco_throughput(4, 1, 4, 1, 3.0) - 5.0 / 6.0) < 1e-12);
    PD_CHECK(fabs(pd_plan_split_aco_throughput(4, 2, 4, 1, 3.0) - 1.0) < 1e-12);
    PD_CHECK(pd_plan_split_replan(4, 0, 1, 4, 1) == 1);
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 1, 4, 1, 3.0) == 2);
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 1, 4, 1, 1.0) == 1); /* no gain measured: the DeDiVAE rule */
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 1, 4, 1, NAN) == 1);
    PD_CHECK(pd_plan_split_replan_aco(4, 1, 2, 4, 1, 3.0) == 1); /* pinned wins */
    PD_CHECK(pd_plan_split_replan_aco(2, 0, 1, 4, 1, 3.0) == 1); /* two workers: always 1 + 1 */
    /* Speedup 1.1: 1 decode worker 3.1 / 4.1 = 0.756 jobs/s, 2 give 2.2 / 4.1 = 0.537: stays at 1.
     * Decode-bound (T_dec 3, T_den 4, speedup 2): 1 decode worker gives 1/3, 2 give 4 / 7 = 0.571. */
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 1, 4, 1, 1.1) == 1);
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 1, 4, 3, 2.0) == 2);
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 2, 4, 3, 2.0) == 2);
    /* Hysteresis: T_den 6, T_dec 2.5, speedup 1.5: 1 decode worker 0.4 jobs/s, 2 give 0.4138 (3.4%
     * more, under PD_PLAN_SPLIT_ACO_GAIN): from 1 the split stays, from nothing (current 0) it is 2. */
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 1, 6, 2.5, 1.5) == 1);
    PD_CHECK(pd_plan_split_replan_aco(4, 0, 0, 6, 2.5, 1.5) == 2);
}

/* A planner without a model: every request is predicted alike, stage times are measured averages. */
static pd_plan_online measured_only(int workers, int pinned, bool aco) {
    pd_plan_online o;
    pd_plan_online_config c = {.workers = workers, .pinned_decode = pinned, .sp_degree = 1, .aco = aco};
    PD_ASSERT(pd_plan_online_init(&o, &c) == PD_OK);
    return o;
}

static void feed(pd_plan_online *o, double t_den, double t_dec) {
    pd_plan_online_observe(o, PD_PLAN_DENOISE, PD_PLAN_OBS_JOB, NULL, t_den);
    pd_plan_online_observe(o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, t_dec);
}

/* The DeDiVAE rule and its hysteresis through the planner: 8 workers, T_dec / (T_den + T_dec) x 8. */
static void test_split_hysteresis(void) {
    pd_plan_online o = measured_only(8, 0, false);
    PD_CHECK(o.plan.decode_workers == 1 && o.plan.denoise_workers == 7 && o.plan.revision == 1);
    PD_CHECK(!pd_plan_online_revise(&o, 1)); /* nothing measured: the split stays */
    feed(&o, 8 - 1.58, 1.58);                /* 1.58: inside the 0.1 band above 1.5 */
    PD_CHECK(!pd_plan_online_revise(&o, 1) && o.plan.decode_workers == 1);
    o = measured_only(8, 0, false);
    feed(&o, 8 - 1.65, 1.65); /* 1.65 clears it */
    PD_CHECK(pd_plan_online_revise(&o, 1) && o.plan.decode_workers == 2 && o.plan.denoise_workers == 6);
    PD_CHECK(o.plan.revision == 2 && near(o.plan.predicted_s[PD_PLAN_DECODE], 1.65));
    PD_CHECK(!pd_plan_online_revise(&o, 2)); /* the same answer is no new revision */
    /* From 2: 1.42 stays (inside the band below 1.5), 1.35 goes back to 1. */
    o = measured_only(8, 0, false);
    feed(&o, 8 - 1.42, 1.42);
    PD_CHECK(pd_plan_online_revise(&o, 2) && o.plan.decode_workers == 2); /* start plan was 1: rev 2 keeps 2 */
    o = measured_only(8, 0, false);
    feed(&o, 8 - 1.35, 1.35);
    PD_CHECK(!pd_plan_online_revise(&o, 2) && o.plan.decode_workers == 1);
    /* Pinned wins whatever is measured; one worker never splits. */
    o = measured_only(4, 3, false);
    feed(&o, 10, 1);
    PD_CHECK(o.plan.decode_workers == 3 && !pd_plan_online_revise(&o, 3));
    o = measured_only(1, 0, false);
    feed(&o, 1, 10);
    PD_CHECK(o.plan.decode_workers == 0 && !pd_plan_online_revise(&o, 0));
    /* Bad measurements change nothing. */
    o = measured_only(8, 0, false);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, NAN);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, -1);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, INFINITY);
    PD_CHECK(pd_plan_online_measured_seconds(&o, PD_PLAN_DECODE) == 0);
}

/* The text stage runs on the denoise worker: T_den = text + denoise. The warm-up counts until a job
 * of that stage is measured; jobs then average with weight 0.3. */
static void test_warmup_then_jobs(void) {
    pd_plan_online o = measured_only(4, 0, false);
    pd_plan_online_observe(&o, PD_PLAN_TEXT, PD_PLAN_OBS_WARMUP, NULL, 1.0);
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_WARMUP, NULL, 1.0);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_WARMUP, NULL, 2.0);
    PD_CHECK(near(pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE), 2.0));
    PD_CHECK(pd_plan_online_revise(&o, 1) && o.plan.decode_workers == 2); /* 2 / 4 x 4 = 2 */
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, 0.5); /* a job replaces the warm-up */
    PD_CHECK(near(pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE), 0.5));
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, 1.5);
    PD_CHECK(near(pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE), 0.7 * 0.5 + 0.3 * 1.5));
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_WARMUP, NULL, 9.0); /* a later warm-up: jobs still win */
    PD_CHECK(near(pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE), 0.8));
    /* 0.8 / 2.8 x 4 = 1.14: from 2 that is below 1.4, so back to 1. */
    PD_CHECK(pd_plan_online_revise(&o, 2) && o.plan.decode_workers == 1 && o.plan.revision == 3);
    char line[512];
    pd_plan_online_describe(&o, line, sizeof line);
    PD_CHECK_MSG(strstr(line, "rev 3: 3 denoise + 1 decode workers") && strstr(line, "measured text 1.000 s") &&
                     strstr(line, "; rev 2 predicted text 1.000 s, denoise 1.000 s, decode 2.000 s"),
                 "%s", line);
}

/* With Aco the split maximises predicted throughput once a speedup is measured (denoise without a pair
 * over denoise with heads lent): T_den 4, T_dec 1, speedup 3 on 4 workers -> 2 decode workers (5/6
 * jobs/s with 1, 1 job/s with 2); the DeDiVAE rule alone keeps 1 (1/5 x 4 = 0.8). */
static void test_aco_split(void) {
    pd_plan_online o = measured_only(4, 0, true);
    PD_CHECK(o.plan.aco_share == -1); /* no model: the lender measures */
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_JOB, NULL, 2.0);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, 1.0);
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_PLAIN, NULL, 4.0);
    PD_CHECK(pd_plan_online_aco_speedup(&o) == 1.0 && !pd_plan_online_revise(&o, 1));
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_ACO, NULL, 4.0 / 3.0);
    PD_CHECK(near(pd_plan_online_aco_speedup(&o), 3.0));
    PD_CHECK(pd_plan_online_revise(&o, 1) && o.plan.decode_workers == 2);
    pd_plan_online off = measured_only(4, 0, false); /* Aco off: the same times, no speedup */
    pd_plan_online_observe(&off, PD_PLAN_DENOISE, PD_PLAN_OBS_JOB, NULL, 4.0);
    pd_plan_online_observe(&off, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, 1.0);
    pd_plan_online_observe(&off, PD_PLAN_DENOISE, PD_PLAN_OBS_PLAIN, NULL, 4.0);
    pd_plan_online_observe(&off, PD_PLAN_DENOISE, PD_PLAN_OBS_ACO, NULL, 4.0 / 3.0);
    PD_CHECK(!pd_plan_online_revise(&off, 1) && off.plan.decode_workers == 1 && off.plan.aco_share == 0);
}

static pd_plan_online_config model_cfg(const char *profile, const char *model, int workers, int sp) {
    pd_plan_online_config c = {.have_model = true, .workers = workers, .sp_degree = sp,
                               .typical = {.width = 832, .height = 480, .frames = 81, .steps = 50, .cfg = true}};
    c.profile = *pd_plan_profile_builtin(profile);
    PD_ASSERT(pd_plan_model_get(model, &c.model) == PD_OK);
    return c;
}

/* At start the split comes from the profile alone; measured stage times then correct each stage by
 * measured / predicted, whatever the request's shape. */
static void test_model_split_and_correction(void) {
    pd_plan_online_config c = model_cfg("h100", "wan2.1-t2v-1.3b", 4, 1);
    pd_plan_online o;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    pd_plan_step st;
    PD_CHECK_OK(pd_plan_dit_step(&c.profile, &c.model, &c.typical, &(pd_plan_sp){.degree = 1}, &st));
    pd_plan_vae vae;
    pd_plan_vae_decode(&c.profile, &c.model, &c.typical, &vae);
    const double text = pd_plan_text_seconds(&c.profile, &c.model, &c.typical), den = 50 * st.step_s;
    PD_CHECK(near(o.plan.predicted_s[PD_PLAN_TEXT], text) && near(o.plan.predicted_s[PD_PLAN_DENOISE], den) &&
             near(o.plan.predicted_s[PD_PLAN_DECODE], vae.seconds));
    PD_CHECK(o.plan.decode_workers == pd_plan_split_decode_workers(4, 0, text + den, vae.seconds));
    PD_CHECK(o.plan.decode_workers == 1); /* decode is a few percent of a job on this profile */
    PD_CHECK(pd_plan_online_measured_seconds(&o, PD_PLAN_DECODE) == 0);
    /* A small job (256x256, 17 frames) decodes 20x slower than predicted: the typical job's decode is
     * corrected by the same factor, so T_dec = 20 x the predicted decode. */
    const pd_plan_request small = {.width = 256, .height = 256, .frames = 17, .steps = 4, .cfg = true};
    pd_plan_vae vs;
    pd_plan_vae_decode(&c.profile, &c.model, &small, &vs);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, &small, 20 * vs.seconds);
    PD_CHECK(near(pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE), 20 * vae.seconds));
    PD_CHECK(near(pd_plan_online_measured_seconds(&o, PD_PLAN_DECODE), 20 * vae.seconds));
    /* Denoise and text measured exactly as predicted for the typical request, decode at x: the split
     * is the rule on (text + den, x vae): pick x so that 4 x_dec / (T_den + x_dec) = 2.0 -> 2 workers. */
    pd_plan_online_observe(&o, PD_PLAN_TEXT, PD_PLAN_OBS_JOB, NULL, text);
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_JOB, NULL, den);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, NULL, text + den); /* 0.7 x 20 vae + 0.3 x (text + den) */
    const double t_dec = 0.7 * 20 * vae.seconds + 0.3 * (text + den);
    PD_CHECK(near(pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE), t_dec));
    PD_CHECK(pd_plan_online_revise(&o, 1) == (pd_plan_split_replan(4, 0, 1, text + den, t_dec) != 1));
    PD_CHECK(o.plan.decode_workers == pd_plan_split_replan(4, 0, 1, text + den, t_dec));
    /* A request the model refuses (width not a multiple of 16) is no measurement. */
    const double before = pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE);
    pd_plan_online_observe(&o, PD_PLAN_DECODE, PD_PLAN_OBS_JOB, &(pd_plan_request){100, 100, 9, 4, true}, 99);
    PD_CHECK(pd_plan_online_stage_seconds(&o, PD_PLAN_DECODE) == before);
}

/* The chunk: the model's fastest g at the configured SP degree (1.3B: 12 heads over 4 ranks, h = 3),
 * a pinned g as given (past h: h), none without SP. */
static void test_chunk(void) {
    pd_plan_online_config c = model_cfg("h100", "wan2.1-t2v-1.3b", 5, 4);
    pd_plan_online o;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    pd_plan_step st;
    PD_CHECK_OK(pd_plan_dit_step(&c.profile, &c.model, &c.typical, &(pd_plan_sp){.degree = 4, .g = -1}, &st));
    PD_CHECK(o.plan.chunk == st.g && o.plan.chunk >= 1 && o.plan.chunk <= 3);
    PD_CHECK(o.plan.decode_workers == 1 && o.plan.denoise_workers == 4 && o.plan.sp_degree == 4);
    /* The denoise prediction is the group's at that chunk. */
    PD_CHECK(near(o.plan.predicted_s[PD_PLAN_DENOISE], 50 * st.step_s));
    c.pinned_chunk = 1;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK(o.plan.chunk == 1);
    c.pinned_chunk = 99;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK(o.plan.chunk == 3);
    /* A slow link makes communication dominate: the fastest g is then the whole rank (one chunk)
     * or a pipeline; whatever it is, it is the model's. */
    c.pinned_chunk = 0;
    c.profile.a2a.bw = 1e9;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK_OK(pd_plan_dit_step(&c.profile, &c.model, &c.typical, &(pd_plan_sp){.degree = 4, .g = -1}, &st));
    PD_CHECK(o.plan.chunk == st.g);
    c = model_cfg("h100", "wan2.1-t2v-1.3b", 2, 1);
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK(o.plan.chunk == 0);
}

/* The share: a helper as fast as the lender and free transfers lend half the heads (12 heads: 6);
 * aco on lends half of each call whatever the model; off and one worker lend nothing. */
static void test_share(void) {
    pd_plan_online_config c = model_cfg("h100", "wan2.1-t2v-1.3b", 2, 1);
    c.aco = true;
    c.profile.p2p = (pd_plan_link){.bw = 1e30, .latency = 0};
    pd_plan_online o;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK_MSG(o.plan.aco_share == 6, "share %d", o.plan.aco_share);
    PD_CHECK(o.plan.aco_speedup_predicted > 1.0);
    /* Lending costs more than it saves (a link slower than computing the heads): none. */
    c.profile.p2p = (pd_plan_link){.bw = 1e6, .latency = 1e-3};
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK(o.plan.aco_share == 0 && o.plan.aco_speedup_predicted == 1.0);
    c.aco_half = true;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK(o.plan.aco_share == PD_ACO_SHARE_HALF);
    c.aco = false;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK(o.plan.aco_share == 0);
    c.aco = true, c.aco_half = false, c.workers = 1;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    PD_CHECK(o.plan.aco_share == 0 && o.plan.decode_workers == 0);
}

/* The share re-planned from the measured Aco speedup: measured as predicted, it stays; a pair that
 * made denoising slower (speedup 0.8) lowers it, a much slower one (0.1) drops it to 0; a speedup
 * between none and the predicted one keeps a share that pays. */
static void test_share_replanned(void) {
    pd_plan_online_config c = model_cfg("h100", "wan2.1-t2v-1.3b", 2, 1);
    c.aco = true;
    c.profile.p2p = (pd_plan_link){.bw = 1e12, .latency = 0};
    pd_plan_online o;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    const int share = o.plan.aco_share;
    const double pred = o.plan.aco_speedup_predicted;
    PD_CHECK_MSG(share > 0 && pred > 1.05, "share %d, x%.3f", share, pred);
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_PLAIN, NULL, 10.0);
    PD_CHECK(!pd_plan_online_revise(&o, 1)); /* no lend measured yet */
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_ACO, NULL, 10.0 / pred);
    PD_CHECK(!pd_plan_online_revise(&o, 1) && o.plan.aco_share == share);
    /* 0.8: the lent heads came back later than the kept ones took; the corrected link makes fewer heads
     * pay (they travel while more heads are kept). */
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_ACO, NULL, 10.0 / 0.8 / 0.3 - 0.7 / 0.3 * 10.0 / pred);
    PD_CHECK(near(pd_plan_online_aco_speedup(&o), 1.0)); /* 0.8, reported as no gain */
    PD_CHECK(pd_plan_online_revise(&o, 1) && o.plan.revision == 2);
    PD_CHECK_MSG(o.plan.aco_share > 0 && o.plan.aco_share < share, "share %d", o.plan.aco_share);
    PD_CHECK(!pd_plan_online_revise(&o, 1)); /* the lends at the new share are not measured yet */
    /* 0.1 at that share: nothing pays; 0 is final. */
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_ACO, NULL, 100.0);
    PD_CHECK(pd_plan_online_revise(&o, 1) && o.plan.aco_share == 0 && o.plan.revision == 3);
    PD_CHECK(o.plan.aco_speedup_predicted == 1.0 && o.plan.decode_workers == 1);
    PD_CHECK(!pd_plan_online_revise(&o, 1));
    /* Measured 1.2 where the model said more: a share still pays; it is the corrected model's pick. */
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_PLAIN, NULL, 12.0);
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_ACO, NULL, 10.0);
    pd_plan_online_revise(&o, 1);
    PD_CHECK_MSG(o.plan.aco_share > 0, "share %d", o.plan.aco_share);
    /* aco on (half) is never re-planned. */
    c.aco_half = true;
    PD_CHECK_OK(pd_plan_online_init(&o, &c));
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_PLAIN, NULL, 8.0);
    pd_plan_online_observe(&o, PD_PLAN_DENOISE, PD_PLAN_OBS_ACO, NULL, 10.0);
    PD_CHECK(!pd_plan_online_revise(&o, 1) && o.plan.aco_share == PD_ACO_SHARE_HALF);
}

static void test_bad_config(void) {
    pd_plan_online o;
    PD_CHECK_ERR(pd_plan_online_init(&o, &(pd_plan_online_config){.workers = 0, .sp_degree = 1}), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_online_init(&o, &(pd_plan_online_config){.workers = 2, .sp_degree = 3}), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_online_init(&o, &(pd_plan_online_config){.workers = 4, .sp_degree = 3, .cfg_parallel = true}),
                 PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_online_init(&o, &(pd_plan_online_config){.workers = 4, .sp_degree = 1, .pinned_decode = -1}),
                 PD_ERR_INVALID);
    pd_plan_online_config c = model_cfg("h100", "wan2.1-t2v-1.3b", 4, 1);
    c.typical.frames = 80;
    PD_CHECK_ERR(pd_plan_online_init(&o, &c), PD_ERR_INVALID);
    c = model_cfg("h100", "wan2.1-t2v-1.3b", 20, 16); /* 16 ranks, 12 heads */
    PD_CHECK_ERR(pd_plan_online_init(&o, &c), PD_ERR_INVALID);
    PD_CHECK(pd_plan_online_default_profile("cpu") && pd_plan_online_default_profile("cuda") &&
             !pd_plan_online_default_profile("tpu"));
    PD_CHECK_OK(pd_plan_profile_check(pd_plan_online_default_profile("cpu")));
}

int main(void) {
    PD_RUN(test_split_rules);
    PD_RUN(test_split_hysteresis);
    PD_RUN(test_warmup_then_jobs);
    PD_RUN(test_aco_split);
    PD_RUN(test_model_split_and_correction);
    PD_RUN(test_chunk);
    PD_RUN(test_share);
    PD_RUN(test_share_replanned);
    PD_RUN(test_bad_config);
    return pd_test_summary();
}
