/* The cost model (plan/cost.h) and the pipeline simulator (plan/sim.h): the built-in GPU profiles
 * against DESIGN.md section 9's block times (which are not inputs of the profiles), hand-computed
 * block and step times, monotonicity (more GPUs, faster links), Aco, memory, profile files, and the
 * simulator against hand-computed streams. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "models/model_dir.h"
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

/* PipeSP's overlapped schedule of the SP 2, g = 1 case of test_cpu_model (h = 2 slots, B = 1). */
static double overlapped_sp2_g1(double a1, double c0, double c1) { return pd_pipesp_simulate(1, 2, 1, 0, a1, c0, c1); }

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

/* The parts of the model a CPU profile uses, by hand on the small model (N = 32 tokens): shares of
 * a 2-core device, the f32 GEMM rate for f32 weights, the fused GELU, conv rates by width, and SP
 * ranks with a core or less of their own, whose transfers overlap nothing. */
static void test_cpu_model(void) {
    PD_CHECK(pd_plan_cpu_share(2, 2, 2) == 1.0);  /* one worker, a thread per core */
    PD_CHECK(pd_plan_cpu_share(2, 1, 1) == 0.5);  /* one thread alone: one core of two */
    PD_CHECK(pd_plan_cpu_share(2, 1, 2) == 0.5);  /* SP 2 */
    PD_CHECK(pd_plan_cpu_share(2, 1, 4) == 0.25); /* SP 4 on 2 cores */
    PD_CHECK(pd_plan_cpu_share(8, 2, 4) == 0.25 && pd_plan_cpu_share(0, 1, 4) == 1.0 && pd_plan_cpu_share(2, 0, 2) == 1.0);

    pd_plan_profile p = round_profile(), q;
    p.cores = 2;
    p.conv_n = 3;
    const double couts[3] = {8, 16, 32}, rates[3] = {1e10, 3e10, 5e10};
    for (int i = 0; i < 3; i++) p.conv_cout[i] = couts[i], p.conv_rate[i] = rates[i];
    PD_CHECK_OK(pd_plan_profile_check(&p));
    PD_CHECK(pd_plan_conv_rate(&p, 3) == 1e10 && pd_plan_conv_rate(&p, 12) == 2e10 && pd_plan_conv_rate(&p, 24) == 4e10 &&
             pd_plan_conv_rate(&p, 96) == 5e10);
    pd_plan_profile_share(&p, 0.25, &q);
    PD_CHECK(q.gemm_bf16 == 0.25e12 && q.gemm_f32 == 0.25e11 && q.attn == 1.25e11 && q.mem_bw == 0.25e11 &&
             q.conv == 0.25e11 && q.conv_rate[2] == 1.25e10);
    PD_CHECK(q.a2a.bw == 0.5e9 && q.p2p.bw == 1e9 && q.a2a.latency == p.a2a.latency); /* copies: half a core */
    pd_plan_profile_share(&p, 0.5, &q);
    PD_CHECK(q.a2a.bw == 1e9 && q.p2p.bw == 2e9); /* a whole core */
    pd_plan_profile_share(&p, 1.5, &q);
    PD_CHECK(q.gemm_bf16 == p.gemm_bf16 && q.a2a.bw == p.a2a.bw); /* out of range: the whole device */

    pd_plan_model m = small_model();
    const pd_plan_request r = {.width = 64, .height = 64, .frames = 5, .steps = 1, .cfg = false};
    pd_plan_step bf, f32, fused;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 1}, &bf));
    m.weight_bytes = 4;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 1}, &f32));
    /* linears 2*32*64*64*6 + 2*32*64*128*2 = 2,621,440 and context 131,072: at 1e12 (bf16), 1e11 (f32) */
    PD_CHECK_MSG(near(bf.linear_s, 2752512 / 1e12, 1e-12) && near(f32.linear_s, 2752512 / 1e11, 1e-12), "%.9g %.9g",
                 bf.linear_s, f32.linear_s);
    /* elementwise 32 * (10*64 + 2*128) * 2 bytes at 1e11; the fused GELU drops the 2*128 */
    PD_CHECK(near(f32.eltwise_s, 32.0 * 896 * 2 / 1e11, 1e-12));
    p.gelu_fused = true;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 1}, &fused));
    PD_CHECK(near(fused.eltwise_s, 32.0 * 640 * 2 / 1e11, 1e-12));

    /* SP 2 on the 2 cores, PipeSP g = 1 (2 chunks of 1 slot): every rate halved, the link at a whole
     * core; with a core each nothing overlaps: 2 a1 + 4 (2 c0 + 2 c1). */
    const double a1 = 4.0 * 32 * 32 * 16 / 2.5e11, c1 = 32.0 * 16 * 2 * 0.5 / 1e9, c0 = 1e-4;
    pd_plan_step sp2, sp4, own;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 2, .g = 1, .device_share = 0.5}, &sp2));
    PD_CHECK_MSG(near(sp2.self_s, 2 * a1 + 4 * (2 * c0 + 2 * c1), 1e-9), "%.9g", sp2.self_s);
    PD_CHECK(near(sp2.linear_s, 2 * (2.0 * 16 * 64 * 64 * 6 + 2.0 * 16 * 64 * 128 * 2 + 131072) / 1e11, 1e-12));
    /* SP 4 on 2 cores: a quarter of the rates, the copies at half a core; h = 1: one chunk. Asking
     * for g = 0 or 1 is the same schedule. */
    const double c1_4 = 32.0 * 16 * 2 * 0.75 / 0.5e9;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 4, .device_share = 0.25}, &sp4));
    PD_CHECK_MSG(near(sp4.self_s, 2 * a1 + 4 * (c0 + c1_4), 1e-9), "%.9g", sp4.self_s);
    /* Ranks outnumbering the cores: every collective waits crowd_wait more. SP 4 on 2 cores, one
     * chunk: per block the stop flag and 4 transfers, then the final gather. SP 2 on 2 cores (a core
     * each) and one rank pay nothing. */
    pd_plan_step sp4c, sp2c;
    p.crowd_wait = 1e-3;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 4, .device_share = 0.25}, &sp4c));
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 2, .g = 1, .device_share = 0.5}, &sp2c));
    PD_CHECK_MSG(near(sp4c.self_s, sp4.self_s + 4e-3, 1e-12) &&
                 near(sp4c.step_s, sp4.step_s + (5.0 * m.dit.layers + 1) * 1e-3, 1e-12), "%.9g %.9g", sp4c.self_s, sp4c.step_s);
    PD_CHECK(sp2c.step_s == sp2.step_s);
    PD_CHECK(pd_plan_sp_sync_s(&p, &(pd_plan_sp){.degree = 4, .device_share = 0.25}) == c0 + 1e-3 &&
             pd_plan_sp_sync_s(&p, &(pd_plan_sp){.degree = 2, .device_share = 0.5}) == c0 &&
             pd_plan_sp_sync_s(&p, &(pd_plan_sp){.degree = 1, .device_share = 0.25}) == 0);
    p.crowd_wait = 0;
    /* The same ranks with a GPU each (cores 0): PipeSP's overlap is back. */
    p.cores = 0;
    PD_CHECK_OK(pd_plan_dit_step(&p, &m, &r, &(pd_plan_sp){.degree = 2, .g = 1, .device_share = 0.5}, &own));
    PD_CHECK(near(own.self_s, overlapped_sp2_g1(a1, c0, c1), 1e-9) && own.self_s < sp2.self_s);

    /* The VAE prices each conv at its width's rate: one point at the `conv` rate is the old price,
     * faster wide convs make it cheaper. */
    pd_plan_model t = model("tiny");
    pd_plan_profile one = round_profile(), two;
    one.conv_n = 1, one.conv_cout[0] = 8, one.conv_rate[0] = one.conv;
    two = one;
    two.conv_n = 2, two.conv_cout[1] = 32, two.conv_rate[1] = 4 * one.conv;
    const pd_plan_request vr = {.width = 128, .height = 96, .frames = 9, .steps = 1, .cfg = false};
    pd_plan_vae v0, v1, v2;
    pd_plan_vae_decode(&(pd_plan_profile){.conv = one.conv, .attn = one.attn, .mem_bw = one.mem_bw, .act_bytes = 2}, &t, &vr, &v0);
    pd_plan_vae_decode(&one, &t, &vr, &v1);
    pd_plan_vae_decode(&two, &t, &vr, &v2);
    PD_CHECK(near(v1.seconds, v0.seconds, 1e-12) && v2.seconds < v1.seconds && v2.flops == v1.flops);
    /* SiLU at a measured rate: mem_bw / (2 passes x act_bytes) elements/s is the two-pass price,
     * half that rate costs more. */
    pd_plan_profile s2 = one;
    s2.silu = one.mem_bw / (2.0 * one.act_bytes);
    pd_plan_vae vs, vh;
    pd_plan_vae_decode(&s2, &t, &vr, &vs);
    s2.silu /= 2;
    pd_plan_vae_decode(&s2, &t, &vr, &vh);
    PD_CHECK_MSG(near(vs.seconds, v1.seconds, 1e-9) && vh.seconds > vs.seconds, "%.9g %.9g %.9g", vs.seconds, v1.seconds,
                 vh.seconds);

    /* The decode stage around the walk. First touch: the caches of the tiny VAE's causal convs (two
     * frames of each one's input) at 128 x 128 (latent 16 x 16; widths base 8 x (1, 2, 4, 4)), counted
     * by hand, input width x frame size: at 16 x 16 conv_in 16 and the middle's four convs 32 each, up
     * 0's six resblock convs 32 each and its time conv 32 (x 256); up 1's resblock convs 16 + 5 x 32
     * and its time conv 32 (x 1024); up 2's six convs 16 each (x 4096); up 3's six convs 8 each and the
     * head's 8 (x 16384): 1617920 elements, twice (two frames), of act_bytes each. A one-frame latent
     * has no later chunk and allocates none. */
    const pd_plan_request f1 = {.width = 128, .height = 128, .frames = 1, .steps = 1, .cfg = false};
    const pd_plan_request f9 = {.width = 128, .height = 128, .frames = 9, .steps = 1, .cfg = false};
    pd_plan_profile fe = one;
    pd_plan_vae b1, b9, e1, e9;
    pd_plan_vae_decode(&fe, &t, &f1, &b1);
    PD_CHECK(b1.encode_s == 0 && b1.fault_s == 0); /* rates 0: not priced (the GPU profiles) */
    fe.fault_bw = 2.0 * 1617920.0 * fe.act_bytes;
    /* The media writer: 128 x 128 = 16384 pixels; the first frame at 16384 px/s (1 s), each further
     * one at twice that (0.5 s). */
    fe.encode_first_px = 16384, fe.encode_px = 32768;
    pd_plan_vae_decode(&fe, &t, &f1, &e1);
    PD_CHECK_MSG(e1.fault_s == 0 && near(e1.encode_s, 1.0, 1e-12) && near(e1.seconds, b1.seconds + 1.0, 1e-9),
                 "fault %.9g encode %.9g", e1.fault_s, e1.encode_s);
    pd_plan_vae_decode(&fe, &t, &f9, &e9);
    fe.encode_first_px = fe.encode_px = fe.fault_bw = 0;
    pd_plan_vae_decode(&fe, &t, &f9, &b9);
    PD_CHECK_MSG(near(e9.encode_s, 1.0 + 8 * 0.5, 1e-12) && near(e9.fault_s, 1.0, 1e-12) &&
                     near(e9.seconds, b9.seconds + e9.encode_s + e9.fault_s, 1e-9),
                 "encode %.9g fault %.9g", e9.encode_s, e9.fault_s);
    /* One thread each: a quarter of a 2-core CPU is half a core, twice the time. */
    fe.encode_first_px = 16384, fe.encode_px = 32768, fe.fault_bw = 2.0 * 1617920.0 * fe.act_bytes, fe.cores = 2;
    pd_plan_profile quarter;
    pd_plan_profile_share(&fe, 0.25, &quarter);
    pd_plan_vae_decode(&quarter, &t, &f9, &e9);
    PD_CHECK(near(e9.fault_s, 2.0, 1e-12) && near(e9.encode_s, 2.0 * (1.0 + 8 * 0.5), 1e-12));
    /* A causal conv's first chunk multiplies its last temporal tap alone, and an upsample's time conv
     * skips it. The one-frame decode's FLOPs by hand, 2 x (cin x cout x taps x voxels) summed: the
     * causal convs at 9 taps, cin x cout summed per frame size: 16 x 16 (256): conv_in 512, middle
     * 4 x 1024, up 0 6 x 1024 = 10752; 32 x 32 (1024): 512 + 1024 + 4 x 1024 = 5632; 64 x 64 (4096):
     * 6 x 256 = 1536; 128 x 128 (16384): 6 x 64 + head 24 = 408. The others: post-quant 256 x 256,
     * the attention's qkv 3072 and proj 1024 x 256, up 1's shortcut 512 x 1024, the resample convs
     * (9 taps) 512 x 1024, 512 x 4096 and 128 x 16384; the attention 4 x 256^2 x 32. */
    const double by_hand = 2.0 * 9 * (10752.0 * 256 + 5632.0 * 1024 + 1536.0 * 4096 + 408.0 * 16384) +
                           2.0 * (256.0 * 256 + 4096.0 * 256 + 512.0 * 1024 + 9 * (512.0 * 1024 + 512.0 * 4096 + 128.0 * 16384)) +
                           4.0 * 256 * 256 * 32;
    PD_CHECK_MSG(e1.flops == by_hand, "%.17g %.17g", e1.flops, by_hand);
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
    PD_CHECK(back.cores == 0 && !back.gelu_fused && back.conv_n == 0); /* absent keys: a GPU's defaults */
    pd_plan_profile cpu = *h;
    PD_CHECK(back.encode_first_px == 0 && back.encode_px == 0 && back.fault_bw == 0 && back.crowd_wait == 0);
    cpu.cores = 2, cpu.gelu_fused = true, cpu.conv_n = 2, cpu.silu = 3e9;
    cpu.encode_first_px = 2.5e6, cpu.encode_px = 7e6, cpu.fault_bw = 3.5e9, cpu.crowd_wait = 4.5e-3;
    cpu.conv_cout[0] = 8, cpu.conv_rate[0] = 1e10, cpu.conv_cout[1] = 96, cpu.conv_rate[1] = 9e10;
    PD_CHECK_OK(pd_plan_profile_save(path, &cpu));
    PD_CHECK_OK(pd_plan_profile_load(path, &back));
    PD_CHECK(back.cores == 2 && back.gelu_fused && back.conv_n == 2 && back.conv_cout[1] == 96 && back.conv_rate[0] == 1e10 &&
             back.silu == 3e9 && back.encode_first_px == 2.5e6 && back.encode_px == 7e6 && back.fault_bw == 3.5e9 &&
             back.crowd_wait == 4.5e-3);
    cpu.conv_cout[1] = 4; /* not ascending */
    PD_CHECK_ERR(pd_plan_profile_save(path, &cpu), PD_ERR_INVALID);
    const char *bad_files[] = {"\"cores\": -1", "\"cores\": 2.5", "\"gelu_fused\": 1", "\"conv_by_cout\": [[8]]",
                               "\"conv_by_cout\": [[16, 1e10], [8, 2e10]]", "\"conv_by_cout\": {}",
                               "\"silu_elems\": \"fast\"", "\"silu_elems\": -1", "\"encode_px\": -1",
                               "\"encode_first_px\": true", "\"fault_bytes\": \"x\"", "\"fault_bytes\": -2e9",
                               "\"crowd_wait_s\": -1e-3", "\"crowd_wait_s\": []"};
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        FILE *bf = fopen(path, "w");
        fprintf(bf, "{\"gemm_bf16_flops\": 1e12, \"gemm_f32_flops\": 1e11, \"attn_flops\": 1e12, \"mem_bw_bytes\": 1e12, "
                    "\"conv_flops\": 1e12, \"mem_bytes\": 1e10, \"eltwise_passes\": 21, \"act_bytes\": 4, \"topology\": "
                    "\"shm\", \"a2a\": {\"bw_bytes\": 1e9, \"latency_s\": 0}, \"p2p\": {\"bw_bytes\": 1e9, \"latency_s\": 0}, %s}",
                bad_files[i]);
        fclose(bf);
        PD_CHECK_MSG(pd_plan_profile_load(path, &back) == PD_ERR_FORMAT, "accepted %s", bad_files[i]);
        PD_CHECK(back.cores == 2); /* unchanged */
    }
    FILE *f = fopen(path, "w");
    fputs("{\"name\": \"x\", \"gemm_bf16_flops\": -1}", f);
    fclose(f);
    PD_CHECK_ERR(pd_plan_profile_load(path, &back), PD_ERR_FORMAT);
    PD_CHECK(back.cores == 2); /* unchanged */
    pd_plan_profile bad = *h;
    bad.attn = NAN;
    PD_CHECK_ERR(pd_plan_profile_check(&bad), PD_ERR_INVALID);
    PD_CHECK(pd_plan_profile_builtin("nope") == NULL);
    pd_plan_model m;
    /* A model folder's weight dtype comes from its checkpoint. */
    char mdir[300];
    const pd_dtype dts[2] = {PD_DTYPE_F32, PD_DTYPE_BF16};
    for (int i = 0; i < 2; i++) {
        snprintf(mdir, sizeof mdir, "%s/m%d", dir, i);
        PD_CHECK_OK(pd_model_dir_write(mdir, pd_model_preset_find("tiny"), 1, PD_WAN_LAYOUT_DIFFUSERS, dts[i]));
        PD_CHECK_OK(pd_plan_model_get(mdir, &m));
        PD_CHECK_MSG(m.weight_bytes == (i ? 2 : 4), "%s: %d", pd_dtype_name(dts[i]), m.weight_bytes);
        pd_test_rmtree(mdir);
    }
    PD_CHECK_OK(pd_plan_model_get("tiny", &m));
    PD_CHECK(m.weight_bytes == 2);
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
    PD_RUN(test_cpu_model);
    PD_RUN(test_monotone);
    PD_RUN(test_aco_and_cfg);
    PD_RUN(test_vae_text_memory);
    PD_RUN(test_profile_files);
    PD_RUN(test_sim_by_hand);
    PD_RUN(test_sim_monotone);
    PD_RUN(test_deploy);
    return pd_test_summary();
}
