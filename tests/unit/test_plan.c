/* The cost model (plan/cost.h) and the pipeline simulator (plan/sim.h): the built-in GPU profiles
 * against DESIGN.md section 9's block times (which are not inputs of the profiles), hand-computed
 * block and step times, monotonicity (more GPUs, faster links), Aco, memory, profile files, and the
 * simulator against hand-computed streams. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "models/wan/dit.h"
#include "models/wan/pipesp_plan.h"
#include "plan/cost.h"
#include "plan/deploy.h"
#include "plan/sim.h"
#include "tests/unit/test.h"

static bool near(double got, double want, double rel) { return fabs(got - want) <= rel * fabs(want); }

static pd_plan_model model(const char *name) {
    pd_plan_model m;
    PD_ASSERT(pd_plan_model_get(name, &m) == PD_OK);
    return m;
}

/* Not asserted, printed for the record: the official DiT's whole forward (section 9: 0.711 s and
 * 0.222 s at 32760 and 14040 tokens on the H100) includes work outside the blocks' model. */
static void print_forward_record(void) {
    const pd_plan_profile *h100 = pd_plan_profile_builtin("h100");
    const pd_plan_model s = model("wan2.1-t2v-1.3b");
    const int frames[2] = {81, 33};
    const double measured[2] = {0.711, 0.222};
    for (int i = 0; i < 2; i++) {
        pd_plan_step o;
        PD_CHECK_OK(pd_plan_dit_step(h100, &s, &(pd_plan_request){832, 480, frames[i], 1, false},
                                     &(pd_plan_sp){.degree = 1}, &o));
        printf("  h100 1.3B forward, 832x480x%d: predicted %.3f s, measured %.3f s (%+.1f%%)\n", frames[i], o.step_s,
               measured[i], 100 * (o.step_s / measured[i] - 1));
    }
}

/* DESIGN.md section 9: a 1.3B block at 32760 and 14040 tokens, a 14B block at 75600 and 32760 tokens
 * (H100 80GB), and the H200's 1.3B figures, each within 25% from the profile alone. */
static void test_block_anchors(void) {
    const pd_plan_profile *h100 = pd_plan_profile_builtin("h100"), *h200 = pd_plan_profile_builtin("h200");
    PD_CHECK(h100 && h200);
    const pd_plan_model s = model("wan2.1-t2v-1.3b"), l = model("wan2.1-t2v-14b");
    const struct {
        const pd_plan_profile *p;
        const pd_wan_dit_config *c;
        double N, measured;
    } k[] = {{h100, &s.dit, 32760, 20.3e-3}, {h100, &s.dit, 14040, 5.73e-3},  {h100, &l.dit, 75600, 302.5e-3},
             {h100, &l.dit, 32760, 78.9e-3}, {h100, &s.dit, 75600, 80.9e-3},  {h200, &s.dit, 32760, 18.95e-3},
             {h200, &s.dit, 14040, 5.56e-3}, {h200, &s.dit, 75600, 79.7e-3}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        double t = pd_plan_block_seconds(k[i].p, k[i].c, k[i].N, 1);
        printf("  %s dim %d N %.0f: predicted %.2f ms, measured %.2f ms (%+.1f%%)\n", k[i].p->name, k[i].c->dim, k[i].N,
               t * 1e3, k[i].measured * 1e3, 100 * (t / k[i].measured - 1));
        PD_CHECK_MSG(near(t, k[i].measured, 0.25), "%s N %.0f: %.2f ms vs %.2f", k[i].p->name, k[i].N, t * 1e3,
                     k[i].measured * 1e3);
    }
    print_forward_record();
}

/* A profile of round numbers and a small config, so times can be worked out by hand. */
static pd_plan_profile round_profile(void) {
    return (pd_plan_profile){.name = "round", .gemm_bf16 = 1e12, .gemm_f32 = 1e11, .attn = 5e11, .mem_bw = 1e11,
                             .conv = 1e11, .mem_bytes = 1e10, .eltwise_passes = 10, .act_bytes = 2,
                             .topology = PD_PLAN_SHM, .a2a = {.bw = 1e9, .latency = 1e-4},
                             .p2p = {.bw = 2e9, .latency = 1e-5}};
}

static pd_plan_model small_model(void) {
    pd_plan_model m = model("wan2.1-t2v-1.3b");
    m.dit.dim = 64, m.dit.heads = 4, m.dit.head_dim = 16, m.dit.ffn_dim = 128, m.dit.text_len = 8, m.dit.layers = 2;
    return m;
}

static void test_block_by_hand(void) {
    const pd_plan_profile p = round_profile();
    const pd_plan_model m = small_model();
    /* N = 100, dim 64, ffn 128, Lc 8:
     *   linears 2*100*64*64*6 + 2*100*64*128*2 = 4,915,200 + 3,276,800 = 8,192,000; context k, v
     *   2*8*64*64*2 = 131,072; at 1e12 -> 8.323072e-6 s
     *   self-attention 4*100*100*64 = 2,560,000, cross 4*100*8*64 = 204,800; at 5e11 -> 5.5296e-6 s
     *   elementwise 100*(10*64 + 2*128)*2 bytes = 179,200 at 1e11 -> 1.792e-6 s */
    double t = pd_plan_block_seconds(&p, &m.dit, 100, 1);
    PD_CHECK_MSG(near(t, 8.323072e-6 + 5.5296e-6 + 1.792e-6, 1e-12), "%.9g", t);
    PD_CHECK(near(pd_plan_block_seconds(&p, &m.dit, 100, 2), 2 * t, 1e-12));
    /* The parts sum to the whole-model count. */
    pd_wan_dit_flop_parts f;
    pd_wan_dit_flops_split(&m.dit, 32760, 32760, &f);
    const pd_plan_model s = model("wan2.1-t2v-1.3b");
    pd_wan_dit_flops_split(&s.dit, 32760, 32760, &f);
    double blk = f.block_linear + f.block_context + f.block_self_attn + f.block_cross_attn;
    PD_CHECK(near(f.outside + 30 * blk, pd_wan_dit_flops(&s.dit, 1, 21, 60, 104), 1e-12));
    PD_CHECK(near(blk, 9.43e12, 0.01)); /* section 9: "about 9.4 TFLOP" */
}

/* Ulysses over 2 ranks is the chunk schedule with one chunk: three Q/K/V transfers, the attention,
 * the output transfer, each transfer c0 + c1*h. */
static void test_sp_step_by_hand(void) {
    const pd_plan_profile p = round_profile();
    const pd_plan_model m = small_model();
    /* 16x16 pixels, 5 frames: latent (2, 2, 2) -> tokens 2*1*1 = 2 with patch (1,2,2); use 64x64. */
    pd_plan_request r = {.width = 64, .height = 64, .frames = 5, .steps = 1, .cfg = false};
    int64_t N = 0;
    PD_CHECK_OK(pd_plan_request_check(&m, &r, &N));
    PD_CHECK(N == 2 * 4 * 4);
    pd_plan_step o1, o2;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 1}, &o1));
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 2}, &o2));
    PD_CHECK(o1.comm_exposed_s == 0 && o1.heads_per_rank == 4 && o2.heads_per_rank == 2 && o2.g == 2);
    const double a1 = 4.0 * 32 * 32 * 16 / 5e11, c1 = 32.0 * 16 * 2 * 0.5 / 1e9, c0 = 1e-4;
    PD_CHECK_MSG(near(o2.self_s, 4 * (c0 + 2 * c1) + 2 * a1, 1e-9), "%.9g", o2.self_s);
    PD_CHECK(near(o1.self_s, 4 * a1, 1e-9));
    PD_CHECK(near(o2.comm_exposed_s, 4 * (c0 + 2 * c1), 1e-9));
    /* g = 1 follows pd_pipesp_simulate too. */
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 2, .g = 1}, &o2));
    PD_CHECK(near(o2.self_s, pd_pipesp_simulate(1, 2, 1, 0, a1, c0, c1), 1e-12));
    /* Bad splits. */
    PD_CHECK_ERR(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 0}, &o2), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 2, .g = 3}, &o2), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 2, .cfg_parallel = true}, &o2), PD_ERR_INVALID);
    r.width = 65;
    PD_CHECK_ERR(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 1}, &o2), PD_ERR_INVALID);
}

/* More SP ranks never predict a slower step at Wan shapes; a faster link never predicts a slower step
 * for any split, chunk or Aco setting. */
static void test_monotone(void) {
    const char *models[] = {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
    const pd_plan_request reqs[] = {{832, 480, 81, 50, true}, {1280, 720, 81, 50, true}, {832, 480, 33, 50, false}};
    const char *profiles[] = {"h100", "h200", "l4"};
    for (int mi = 0; mi < 2; mi++)
        for (int ri = 0; ri < 3; ri++)
            for (int pi = 0; pi < 3; pi++) {
                const pd_plan_model m = model(models[mi]);
                const pd_plan_profile *p = pd_plan_profile_builtin(profiles[pi]);
                double prev = INFINITY;
                for (int n = 1; n <= 8; n *= 2) {
                    pd_plan_step o;
                    PD_CHECK_OK(pd_plan_dit_step(p, &m, &reqs[ri], &(pd_plan_sp){.degree = n, .g = -1}, &o));
                    PD_CHECK_MSG(o.step_s <= prev * (1 + 1e-12), "%s %s %dx%d n %d: %.4f > %.4f", profiles[pi],
                                 models[mi], reqs[ri].width, reqs[ri].height, n, o.step_s, prev);
                    prev = o.step_s;
                }
                for (int n = 2; n <= 8; n++)
                    for (int g = -1; g <= 2; g++)
                        for (int aco = 0; aco <= 2; aco++) {
                            pd_plan_sp sp = {.degree = n, .g = g, .aco_helpers = aco, .aco_share = -1};
                            pd_plan_profile fast = *p;
                            pd_plan_step slow_o, fast_o;
                            PD_CHECK_OK(pd_plan_dit_step(p, &m, &reqs[ri], &sp, &slow_o));
                            fast.a2a.bw *= 2, fast.p2p.bw *= 2, fast.a2a.latency /= 2, fast.p2p.latency /= 2;
                            PD_CHECK_OK(pd_plan_dit_step(&fast, &m, &reqs[ri], &sp, &fast_o));
                            PD_CHECK_MSG(fast_o.step_s <= slow_o.step_s * (1 + 1e-12), "n %d g %d aco %d", n, g, aco);
                        }
            }
}

static void test_aco_and_cfg(void) {
    const pd_plan_profile *p = pd_plan_profile_builtin("h100");
    const pd_plan_model m = model("wan2.1-t2v-1.3b");
    const pd_plan_request r = {832, 480, 81, 50, true};
    pd_plan_step off, zero, on, cfg;
    PD_CHECK_OK(pd_plan_dit_step(p, &m, &r, &(pd_plan_sp){.degree = 4}, &off));
    PD_CHECK_OK(pd_plan_dit_step(p, &m, &r, &(pd_plan_sp){.degree = 4, .aco_helpers = 4, .aco_share = 0}, &zero));
    PD_CHECK_OK(pd_plan_dit_step(p, &m, &r, &(pd_plan_sp){.degree = 4, .aco_helpers = 4, .aco_share = -1}, &on));
    PD_CHECK(near(zero.step_s, off.step_s, 1e-12) && zero.aco_share == 0);
    /* On NVLink, attention over 32760 tokens is worth lending: a share is taken and the step is faster. */
    PD_CHECK_MSG(on.aco_share > 0 && on.step_s < off.step_s, "share %d %.3f vs %.3f", on.aco_share, on.step_s, off.step_s);
    /* CFG parallelism on 2 x 2 ranks beats one group of 4 evaluating the pair (less communication). */
    PD_CHECK_OK(pd_plan_dit_step(p, &m, &r, &(pd_plan_sp){.degree = 2, .cfg_parallel = true}, &cfg));
    PD_CHECK(cfg.step_s > 0 && cfg.heads_per_rank == 6);
}

static void test_vae_text_memory(void) {
    const pd_plan_profile *p = pd_plan_profile_builtin("h100");
    const pd_plan_model s = model("wan2.1-t2v-1.3b"), l = model("wan2.1-t2v-14b");
    pd_plan_vae v480, v720;
    pd_plan_vae_decode(p, &s, &(pd_plan_request){832, 480, 81, 50, true}, &v480);
    pd_plan_vae_decode(p, &s, &(pd_plan_request){1280, 720, 81, 50, true}, &v720);
    printf("  VAE 832x480x81 on h100: %.2f s (section 9: 2.32 s bf16), peak %.1f GiB (7.2); 1280x720 peak %.1f GiB (16.5)\n",
           v480.seconds, v480.peak_bytes / 1073741824.0, v720.peak_bytes / 1073741824.0);
    pd_plan_vae v720_h200;
    pd_plan_vae_decode(pd_plan_profile_builtin("h200"), &s, &(pd_plan_request){1280, 720, 81, 50, true}, &v720_h200);
    printf("  VAE 1280x720x81 on h200: %.2f s (section 9: 4.59 s bf16)\n", v720_h200.seconds);
    PD_CHECK(near(v480.peak_bytes / 1073741824.0, 7.2, 0.02));
    PD_CHECK(near(v720.peak_bytes / 1073741824.0, 16.5, 0.05)); /* the scaling, not fitted */
    PD_CHECK(v720.seconds > 2 * v480.seconds && v480.weight_bytes > 50e6 && v480.weight_bytes < 400e6);
    /* Parameters: 1.3B and 14B DiTs, 5.7B umT5-XXL encoder (with its embedding). */
    PD_CHECK(near(pd_plan_dit_params(&s.dit), 1.42e9, 0.05));
    PD_CHECK(near(pd_plan_dit_params(&l.dit), 14.3e9, 0.05));
    PD_CHECK(near(pd_plan_text_params(&s.text), 5.7e9, 0.05));
    PD_CHECK(pd_plan_text_seconds(p, &s, &(pd_plan_request){832, 480, 81, 50, true}) < 0.1);
    /* Per-rank DiT memory: the 14B at 1280x720 needs more than an L4 holds, fewer tokens per rank need less. */
    const pd_plan_request r = {1280, 720, 81, 50, true};
    double b1 = pd_plan_dit_rank_bytes(p, &l, &r, &(pd_plan_sp){.degree = 1});
    double b8 = pd_plan_dit_rank_bytes(p, &l, &r, &(pd_plan_sp){.degree = 8});
    PD_CHECK(b8 < b1 && b8 > 2 * 14e9 && b8 > pd_plan_profile_builtin("l4")->mem_bytes);
}

static void test_profile_files(void) {
    char dir[] = "/tmp/pd_plan_XXXXXX", path[256];
    PD_CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/p.json", dir);
    const pd_plan_profile *h = pd_plan_profile_builtin("h200");
    PD_CHECK_OK(pd_plan_profile_save(path, h));
    pd_plan_profile back;
    PD_CHECK_OK(pd_plan_profile_load(path, &back));
    PD_CHECK(back.gemm_bf16 == h->gemm_bf16 && back.a2a.latency == h->a2a.latency && back.topology == PD_PLAN_NVLINK &&
             back.act_bytes == 2 && !strcmp(back.name, "h200"));
    FILE *f = fopen(path, "w");
    fputs("{\"name\": \"x\", \"gemm_bf16_flops\": -1}", f);
    fclose(f);
    PD_CHECK_ERR(pd_plan_profile_load(path, &back), PD_ERR_FORMAT);
    PD_CHECK(back.gemm_bf16 == h->gemm_bf16); /* unchanged */
    pd_plan_profile bad = *h;
    bad.attn = NAN;
    PD_CHECK_ERR(pd_plan_profile_check(&bad), PD_ERR_INVALID);
    PD_CHECK(pd_plan_profile_builtin("nope") == NULL);
    pd_plan_model m;
    PD_CHECK_ERR(pd_plan_model_get("/nonexistent/model", &m), PD_ERR_NOT_FOUND);
    remove(path);
    rmdir(dir);
}

static pd_sim_result sim(pd_sim_config c, pd_sim_stages s) {
    pd_sim_result r = {0};
    PD_CHECK_OK(pd_sim_run(&c, &s, &r));
    return r;
}

static void test_sim_by_hand(void) {
    const pd_sim_stages st = {.text_s = 1, .step_s = 1, .step_aco_s = 1, .decode_s = 3, .steps = 2};
    /* Colocated: each request takes 1 + 2 + 3 = 6 on the one group: latencies 6, 12, 18. */
    pd_sim_result r = sim((pd_sim_config){.replicas = 1, .decoders = 0, .requests = 3}, st);
    PD_CHECK(r.p50_s == 12 && r.p99_s == 18 && r.mean_s == 12 && r.makespan_s == 18 && r.util_denoise == 1);
    PD_CHECK(near(r.throughput, 3.0 / 18, 1e-12) && r.util_decode == 0);
    /* DeDiVAE, one decoder: denoising ends at 3, 6, 9, decodes end at 6, 9, 12. */
    r = sim((pd_sim_config){.replicas = 1, .decoders = 1, .requests = 3}, st);
    PD_CHECK(r.p50_s == 9 && r.p99_s == 12 && r.makespan_s == 12 && near(r.util_denoise, 0.75, 1e-12) &&
             near(r.util_decode, 0.75, 1e-12));
    /* Arrivals every 10 s: nobody waits. */
    r = sim((pd_sim_config){.replicas = 1, .decoders = 1, .requests = 3, .rate = 0.1}, st);
    PD_CHECK(r.p50_s == 6 && r.p99_s == 6 && r.makespan_s == 26);
    /* Two replicas take two requests at once: latencies 6, 6, 9, 9. */
    r = sim((pd_sim_config){.replicas = 2, .decoders = 1, .requests = 4}, st);
    PD_CHECK(r.p50_s == 6 && r.p99_s == 9 && r.makespan_s == 9);
    /* Aco: steps of 2, or 1 while the decoder is idle; decode 3, no text. Request 0 runs 4 Aco steps
     * (0..4) and decodes 4..7; request 1's steps start at 4 (decoding: 2), 6 (decoding: 2), 8 (1), 9
     * (1), decode 10..13. */
    r = sim((pd_sim_config){.replicas = 1, .decoders = 1, .requests = 2, .aco = true},
            (pd_sim_stages){.step_s = 2, .step_aco_s = 1, .decode_s = 3, .steps = 4});
    PD_CHECK_MSG(r.p50_s == 7 && r.p99_s == 13 && r.aco_steps == 6 && r.steps == 8, "%g %g %lld", r.p50_s, r.p99_s,
                 (long long)r.aco_steps);
    /* Two decoders share a slow decode: denoise ends 2, 4, 6; decodes 2-7, 4-9, 7-12. */
    r = sim((pd_sim_config){.replicas = 1, .decoders = 2, .requests = 3},
            (pd_sim_stages){.step_s = 1, .decode_s = 5, .steps = 2});
    PD_CHECK(r.p50_s == 9 && r.p99_s == 12 && r.max_s == 12);
    /* Bad input changes nothing and says why. */
    pd_sim_result keep = r;
    PD_CHECK_ERR(pd_sim_run(&(pd_sim_config){.replicas = 0, .requests = 1}, &st, &r), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_sim_run(&(pd_sim_config){.replicas = 1, .requests = 1, .aco = true}, &st, &r), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_sim_run(&(pd_sim_config){.replicas = 1, .requests = 1},
                            &(pd_sim_stages){.step_s = NAN, .steps = 1}, &r), PD_ERR_INVALID);
    PD_CHECK(r.p99_s == keep.p99_s);
}

/* More decoders or more replicas (more GPUs, the same split) never raise a percentile. */
static void test_sim_monotone(void) {
    const pd_sim_stages st = {.text_s = 0.1, .step_s = 0.7, .step_aco_s = 0.5, .decode_s = 9, .steps = 20};
    for (int aco = 0; aco <= 1; aco++)
        for (int rate = 0; rate <= 1; rate++) {
            double prev50 = INFINITY, prev99 = INFINITY;
            for (int R = 1; R <= 4; R++)
                for (int D = 1; D <= 4; D++) {
                    pd_sim_result a = sim((pd_sim_config){.replicas = R, .decoders = D, .requests = 200, .aco = aco,
                                                          .rate = rate ? 0.05 : 0},
                                          st);
                    pd_sim_result b = sim((pd_sim_config){.replicas = R, .decoders = D + 1, .requests = 200,
                                                          .aco = aco, .rate = rate ? 0.05 : 0},
                                          st);
                    PD_CHECK_MSG(b.p50_s <= a.p50_s + 1e-9 && b.p99_s <= a.p99_s + 1e-9, "R %d D %d aco %d", R, D, aco);
                    if (D == 1) {
                        PD_CHECK(a.p50_s <= prev50 + 1e-9 && a.p99_s <= prev99 + 1e-9);
                        prev50 = a.p50_s, prev99 = a.p99_s;
                    }
                }
        }
}

/* Deployments: bad ones are refused, stage times come from the cost model, memory is flagged, and the
 * search puts the best fitting score first. */
static void test_deploy(void) {
    const pd_plan_profile *h100 = pd_plan_profile_builtin("h100"), *l4 = pd_plan_profile_builtin("l4");
    const pd_plan_model s = model("wan2.1-t2v-1.3b"), l = model("wan2.1-t2v-14b");
    const pd_plan_request r = {832, 480, 81, 50, true};
    const pd_plan_goal goal = {.requests = 16};
    pd_plan_eval e = {0};
    PD_CHECK_ERR(pd_plan_evaluate(h100, &s, &r, &(pd_plan_deploy){.replicas = 1, .den = 3, .cfg_parallel = true}, &goal, &e),
                 PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_evaluate(h100, &s, &r, &(pd_plan_deploy){.replicas = 1, .den = 2, .aco = true}, &goal, &e),
                 PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_evaluate(h100, &s, &r, &(pd_plan_deploy){.replicas = 1, .den = 13}, &goal, &e), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_evaluate(h100, &s, &r, &(pd_plan_deploy){.replicas = 0, .den = 1}, &goal, &e), PD_ERR_INVALID);
    /* One GPU decoding in place: a lone request takes text + 50 steps + decode. */
    PD_CHECK_OK(pd_plan_evaluate(h100, &s, &r, &(pd_plan_deploy){.replicas = 1, .den = 1}, &goal, &e));
    pd_plan_step st;
    PD_CHECK_OK(pd_plan_dit_step(h100, &s, &r, &(pd_plan_sp){.degree = 1}, &st));
    pd_plan_vae v;
    pd_plan_vae_decode(h100, &s, &r, &v);
    PD_CHECK(near(e.alone_s, pd_plan_text_seconds(h100, &s, &r) + 50 * st.step_s + v.seconds, 1e-9));
    PD_CHECK(near(e.stream.makespan_s, 16 * e.alone_s, 1e-9) && e.fits && e.mem_dec == 0);
    /* The 14B does not fit on an L4; the reason names the GPU and the sizes. */
    PD_CHECK_OK(pd_plan_evaluate(l4, &l, &r, &(pd_plan_deploy){.replicas = 1, .den = 4, .dec = 1}, &goal, &e));
    PD_CHECK(!e.fits && strstr(e.why_not, "denoise GPU needs") && strstr(e.why_not, "l4"));
    /* The search: every alternative uses all GPUs; nothing fitting scores better than the first by more
     * than the tie margin; the one-group baseline is among them. */
    pd_plan_eval *all = NULL;
    int n = 0;
    PD_CHECK_OK(pd_plan_search(h100, &s, &r, 8, &goal, &all, &n));
    PD_CHECK(n > 20 && all[0].fits && all[0].tied_best);
    bool base = false;
    for (int i = 0; i < n; i++) {
        PD_CHECK(all[i].d.replicas * (all[i].d.den + all[i].d.dec) == 8);
        if (all[i].fits) PD_CHECK(all[0].score <= all[i].score * (1 + PD_PLAN_TIE));
        base |= all[i].d.replicas == 1 && all[i].d.den == 8 && all[i].d.dec == 0 && all[i].d.g == 0 && !all[i].d.cfg_parallel;
    }
    PD_CHECK(base);
    free(all);
    PD_CHECK_ERR(pd_plan_search(h100, &s, &r, 0, &goal, &all, &n), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_plan_search(h100, &s, &r, 8, &(pd_plan_goal){.requests = 0}, &all, &n), PD_ERR_INVALID);
}

int main(void) {
    PD_RUN(test_block_anchors);
    PD_RUN(test_block_by_hand);
    PD_RUN(test_sp_step_by_hand);
    PD_RUN(test_monotone);
    PD_RUN(test_aco_and_cfg);
    PD_RUN(test_vae_text_memory);
    PD_RUN(test_profile_files);
    PD_RUN(test_sim_by_hand);
    PD_RUN(test_sim_monotone);
    PD_RUN(test_deploy);
    return pd_test_summary();
}
