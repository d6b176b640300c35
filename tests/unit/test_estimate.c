/* The cost estimate behind admission (scheduler/estimate.h), as pure functions:
 *  - a measured run turned into rates estimates that same run back exactly, stage by stage;
 *  - denoise time scales with steps, doubles under CFG, and follows the DiT's FLOPs in the tokens
 *    (more than linear once attention dominates), attention FLOPs weighted by attn_weight; decode
 *    time scales with frames x pixels;
 *  - rates fold in as a moving average;
 *  - admission passes what fits and refuses the rest with the estimate and the limit in the message;
 *  - the queue: one server adds the jobs up, two share them, tails come after the head. */
#include <math.h>
#include <string.h>

#include "models/presets.h"
#include "scheduler/estimate.h"
#include "tests/unit/test.h"

static pd_estimate_model g_model;

static pd_gen_params req(int w, int h, int frames, int steps, float guidance) {
    return (pd_gen_params){.prompt = "x", .width = w, .height = h, .frames = frames, .steps = steps,
                           .guidance = guidance, .shift = 5.0f, .fps = 16};
}

static bool near(double a, double b) { return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b)); }

static void test_rates_round_trip(void) {
    const pd_gen_params p = req(128, 96, 9, 8, 5.0f);
    const double secs[3] = {0.25, 3.5, 1.75};
    pd_estimate_rates r = {0};
    for (int s = 0; s < 3; s++) pd_estimate_rates_update(&g_model, &r, &p, (pd_stage)s, secs[s], 0.3);
    PD_CHECK(r.text_s > 0 && r.dit_s_per_flop > 0 && r.vae_s_per_pixel > 0);
    pd_estimate e;
    pd_estimate_job(&g_model, &r, &p, &e);
    for (int s = 0; s < 3; s++) PD_CHECK_MSG(near(e.stage_seconds[s], secs[s]), "stage %d: %g, want %g", s, e.stage_seconds[s], secs[s]);
    PD_CHECK(near(e.seconds, 5.5));
    PD_CHECK(e.stage_seconds[PD_STAGE_ENCODE] == 0);
    /* nothing learnt from a run that took no time or NaN */
    PD_CHECK(pd_estimate_rate_of(&g_model, &p, PD_STAGE_DENOISE, 0) == 0);
    PD_CHECK(pd_estimate_rate_of(&g_model, &p, PD_STAGE_DENOISE, NAN) == 0);
    pd_estimate_rates_update(&g_model, &r, &p, PD_STAGE_DENOISE, -1, 0.3);
    pd_estimate_job(&g_model, &r, &p, &e);
    PD_CHECK(near(e.stage_seconds[PD_STAGE_DENOISE], 3.5));
    /* a second run enters the average with weight alpha */
    pd_estimate_rates_update(&g_model, &r, &p, PD_STAGE_DENOISE, 7.0, 0.25);
    pd_estimate_job(&g_model, &r, &p, &e);
    PD_CHECK_MSG(near(e.stage_seconds[PD_STAGE_DENOISE], 0.75 * 3.5 + 0.25 * 7.0), "%g", e.stage_seconds[PD_STAGE_DENOISE]);
}

static void test_scaling(void) {
    const pd_estimate_rates r = {.text_s = 0.1, .dit_s_per_flop = 1e-9, .vae_s_per_pixel = 1e-6};
    pd_estimate a, b;
    pd_gen_params p = req(256, 256, 17, 10, 5.0f), q = p;
    pd_estimate_job(&g_model, &r, &p, &a);
    q.steps = 30;
    pd_estimate_job(&g_model, &r, &q, &b);
    PD_CHECK(near(b.stage_seconds[PD_STAGE_DENOISE], 3 * a.stage_seconds[PD_STAGE_DENOISE]));
    PD_CHECK(near(b.stage_seconds[PD_STAGE_DECODE], a.stage_seconds[PD_STAGE_DECODE]));
    q = p, q.guidance = 1.0f; /* no unconditional branch: half the DiT work, one prompt */
    pd_estimate_job(&g_model, &r, &q, &b);
    PD_CHECK(near(2 * b.stage_seconds[PD_STAGE_DENOISE], a.stage_seconds[PD_STAGE_DENOISE]));
    PD_CHECK(near(2 * b.stage_seconds[PD_STAGE_TEXT], a.stage_seconds[PD_STAGE_TEXT]));
    /* the DiT's FLOPs exactly: 10 steps x batch 2 over latent (16, 5, 32, 32) */
    PD_CHECK(near(a.stage_seconds[PD_STAGE_DENOISE], 10 * pd_wan_dit_flops(&g_model.dit, 2, 5, 32, 32) * 1e-9));
    /* 17 -> 65 frames (latent 5 -> 17): decode in proportion to the frames; denoise as the FLOPs,
     * more than in proportion to the tokens because of the quadratic attention term */
    q = p, q.frames = 65;
    pd_estimate_job(&g_model, &r, &q, &b);
    PD_CHECK(near(b.stage_seconds[PD_STAGE_DECODE], a.stage_seconds[PD_STAGE_DECODE] * 65.0 / 17.0));
    const double ratio = b.stage_seconds[PD_STAGE_DENOISE] / a.stage_seconds[PD_STAGE_DENOISE];
    PD_CHECK_MSG(near(ratio, pd_wan_dit_flops(&g_model.dit, 2, 17, 32, 32) / pd_wan_dit_flops(&g_model.dit, 2, 5, 32, 32)) &&
                 ratio > 17.0 / 5.0, "denoise ratio %g for 5 -> 17 latent frames", ratio);
    /* attention FLOPs weighted: the extra time is (weight - 1) x the attention FLOPs */
    pd_estimate_model heavy = g_model;
    heavy.attn_weight = 2.5;
    pd_estimate h;
    pd_estimate_job(&heavy, &r, &p, &h);
    PD_CHECK(near(h.stage_seconds[PD_STAGE_DENOISE] - a.stage_seconds[PD_STAGE_DENOISE],
                  10 * 1.5 * pd_estimate_attention_flops(&g_model.dit, 2, 5, 32, 32) * 1e-9));
    PD_CHECK(pd_estimate_attention_flops(&g_model.dit, 2, 5, 32, 32) < pd_wan_dit_flops(&g_model.dit, 2, 5, 32, 32));
    /* memory: the DiT's arena for the batch, and a decode working set that grows with the pixels only */
    PD_CHECK(a.dit_bytes >= (double)pd_wan_dit_activation_bytes(&g_model.dit, 2, 5, 32, 32));
    PD_CHECK(b.dit_bytes > a.dit_bytes && near(b.vae_bytes, a.vae_bytes) && a.bytes == fmax(a.dit_bytes, a.vae_bytes));
    q = p, q.width = 512;
    pd_estimate_job(&g_model, &r, &q, &b);
    PD_CHECK(near(b.vae_bytes, 2 * a.vae_bytes));
    /* unknown rates: unknown (zero) times, memory still estimated */
    const pd_estimate_rates none = {0};
    pd_estimate_job(&g_model, &none, &p, &b);
    PD_CHECK(b.seconds == 0 && b.bytes > 0);
}

static void test_admit(void) {
    pd_estimate e = {.stage_seconds = {1, 500, 20}, .seconds = 521, .dit_bytes = 3 << 20, .vae_bytes = 1 << 20,
                     .bytes = 3 << 20};
    PD_CHECK_OK(pd_estimate_admit(&e, 0, 0));
    PD_CHECK_OK(pd_estimate_admit(&e, 521, 3 << 20));
    PD_CHECK_ERR(pd_estimate_admit(&e, 520, 0), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "521 s") && strstr(pd_error_msg(), "denoise 500 s") &&
                 strstr(pd_error_msg(), "max_job_seconds = 520 s"), "%s", pd_error_msg());
    PD_CHECK_ERR(pd_estimate_admit(&e, 0, 2 << 20), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "3.0 MiB") && strstr(pd_error_msg(), "job_memory_bytes = 2.0 MiB"), "%s",
                 pd_error_msg());
}

static void test_queue(void) {
    const double head[4] = {10, 5, 5, 1}, tail[4] = {2, 2, 2, 0};
    double done[4];
    pd_estimate_queue(head, tail, 4, 1, done);
    PD_CHECK(done[0] == 12 && done[1] == 17 && done[2] == 22 && done[3] == 21);
    pd_estimate_queue(head, tail, 4, 2, done); /* 0 and 1 at once; 2 after 1; 3 after 0 (both free at 10) */
    PD_CHECK_MSG(done[0] == 12 && done[1] == 7 && done[2] == 12 && done[3] == 11, "%g %g %g %g", done[0], done[1],
                 done[2], done[3]);
    pd_estimate_queue(head, tail, 0, 0, done);
    pd_estimate_queue(head, tail, 1, 0, done); /* no server counts as one */
    PD_CHECK(done[0] == 12);
}

int main(void) {
    const pd_model_preset *pre = pd_model_preset_find("wan2.1-t2v-1.3b");
    PD_CHECK(pre != NULL);
    if (!pre) return pd_test_summary();
    g_model = (pd_estimate_model){.dit = pre->dit, .vae_base_dim = pre->vae.base_dim};
    PD_RUN(test_rates_round_trip);
    PD_RUN(test_scaling);
    PD_RUN(test_admit);
    PD_RUN(test_queue);
    return pd_test_summary();
}
