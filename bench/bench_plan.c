/* bench_plan: the speed of the cost model's planning (plan/deploy.h, plan/sim.h). Figures: one
 * simulated stream of 10,000 back-to-back requests of 50 steps through a DeDiVAE deployment with
 * Aco (the simulator's per-step path), the same at a rate, and a whole `pipedit plan` search (every
 * deployment of 8 GPUs for Wan2.1-14B at 1280x720x81, each simulated with 80 requests). Medians. */
#include <stdio.h>

#include "bench/common/bench.h"
#include "plan/deploy.h"
#include "plan/sim.h"

typedef struct stream_ctx {
    pd_sim_config cfg;
    pd_sim_stages st;
} stream_ctx;

static pd_status run_stream(void *ud) {
    stream_ctx *c = ud;
    pd_sim_result r;
    return pd_sim_run(&c->cfg, &c->st, &r);
}

typedef struct search_ctx {
    const pd_plan_profile *p;
    pd_plan_model m;
    pd_plan_request r;
    pd_plan_goal goal;
    int n;
} search_ctx;

static pd_status run_search(void *ud) {
    search_ctx *c = ud;
    pd_plan_eval *e = NULL;
    PD_TRY(pd_plan_search(c->p, &c->m, &c->r, 8, &c->goal, &e, &c->n));
    free(e);
    return PD_OK;
}

int main(int argc, char **argv) {
    int runs = 5;
    const char *results = NULL;
    if (!pd_bench_parse_args(argc, argv, "bench_plan", NULL, &runs, 1, 100, &results)) return 2;
    pd_bench_result *res = pd_bench_result_create("bench_plan");
    pd_bench_stats s;
    stream_ctx sc = {.cfg = {.replicas = 2, .decoders = 1, .aco = true, .requests = 10000},
                     .st = {.text_s = 0.02, .step_s = 5.8, .step_aco_s = 5.1, .decode_s = 4.1, .steps = 50}};
    pd_bench_result_config_int(res, "stream_requests", sc.cfg.requests);
    pd_bench_result_config_int(res, "stream_steps", sc.st.steps);
    if (pd_bench_time(run_stream, &sc, 1, runs, &s) != PD_OK) goto fail;
    pd_bench_result_figure(res, "sim_10k_requests_back_to_back", s.median * 1e3, "ms");
    sc.cfg.rate = 0.005;
    if (pd_bench_time(run_stream, &sc, 1, runs, &s) != PD_OK) goto fail;
    pd_bench_result_figure(res, "sim_10k_requests_at_rate", s.median * 1e3, "ms");

    search_ctx pc = {.p = pd_plan_profile_builtin("h100"), .r = {1280, 720, 81, 50, true}, .goal = {.requests = 80}};
    if (pd_plan_model_get("wan2.1-t2v-14b", &pc.m) != PD_OK) goto fail;
    if (pd_bench_time(run_search, &pc, 1, runs, &s) != PD_OK) goto fail;
    pd_bench_result_config_int(res, "search_deployments", pc.n);
    pd_bench_result_figure(res, "plan_search_14b_8gpus", s.median * 1e3, "ms");
    const char *path = pd_bench_result_write(res, results);
    printf("bench_plan: %s\n", path ? path : "(result not written)");
    pd_bench_result_free(res);
    return path ? 0 : 1;
fail:
    fprintf(stderr, "bench_plan: %s\n", pd_error_msg());
    pd_bench_result_free(res);
    return 1;
}
