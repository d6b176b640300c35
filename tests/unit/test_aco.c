/* Aco (models/wan/aco.h): the share rule on hand-computable cases, and the DiT's velocity with heads
 * lent to a helper process over shared memory: the same bytes as without Aco, with a fixed and a
 * measured share, when the helper declines, and when the helper is killed in the middle of a lend. */
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "comm/comm.h"
#include "models/wan/aco.h"
#include "tests/unit/sp_fixture.h"

/* ---- the share rule ---- */

static void test_share_rule(void) {
    pd_aco_share_in in = {.heads = 8, .local_s = 1, .helper_s = 1, .xfer_s = 0, .fixed_s = 0};
    PD_CHECK(pd_aco_predict(&in, 0) == 8.0);
    PD_CHECK(pd_aco_predict(&in, 4) == 4.0);
    PD_CHECK(pd_aco_choose_share(&in) == 4); /* an equal helper and free transfers: half */

    in.xfer_s = 1; /* the helper's path costs 2 per head: 8 - l = 2l, l = 2 or 3 both predict 6 */
    PD_CHECK(pd_aco_predict(&in, 2) == 6.0 && pd_aco_predict(&in, 3) == 6.0);
    PD_CHECK(pd_aco_choose_share(&in) == 2); /* the tie goes to the smaller share */

    in.xfer_s = 100; /* transfers dearer than computing: lend nothing */
    PD_CHECK(pd_aco_choose_share(&in) == 0);

    in.xfer_s = 0, in.fixed_s = 7.7; /* a round trip that eats the gain (7.7 + 1 > 8 * 0.95 for every l) */
    PD_CHECK(pd_aco_choose_share(&in) == 0);

    in.fixed_s = 0, in.helper_s = 0.25; /* a helper 4x faster: l = 6 predicts max(2, 1.5), l = 7 max(1, 1.75) */
    PD_CHECK(pd_aco_choose_share(&in) == 7);

    pd_aco_share_in one = {.heads = 1, .local_s = 1, .helper_s = 0.1, .xfer_s = 0, .fixed_s = 0};
    PD_CHECK(pd_aco_choose_share(&one) == 1); /* every head may go when the helper is much faster */

    /* the margin: a gain under 5% is a tie with lending nothing */
    pd_aco_share_in near = {.heads = 2, .local_s = 1, .helper_s = 0.92, .xfer_s = 0, .fixed_s = 0};
    PD_CHECK(pd_aco_predict(&near, 1) == 1.0 && pd_aco_choose_share(&near) == 1);
    near.fixed_s = 0.97; /* one head lent: 1.89 against 2, a 5.5% gain -> lend; 0.99: 1.91, 4.5% -> not */
    PD_CHECK(pd_aco_choose_share(&near) == 1);
    near.fixed_s = 0.99;
    PD_CHECK(pd_aco_choose_share(&near) == 0);
}

/* ---- a helper process ---- */

static int helper_main(const char *name, int kill_after, bool decline) {
    pd_backend *be = NULL;
    pd_comm *c = NULL;
    if (pd_backend_cpu_create(1, &be) || pd_comm_shm_create(name, 1, 2, 30.0, &c)) {
        fprintf(stderr, "helper: %s\n", pd_error_msg());
        _exit(3);
    }
    atomic_bool no = decline;
    pd_aco_serve_options o = {.decline = &no, .kill_after = kill_after};
    pd_aco_serve_stats stats = {0};
    pd_status st = pd_aco_serve(c, 0, be, &o, &stats);
    if (st) fprintf(stderr, "helper: %s\n", pd_error_msg());
    pd_comm_destroy(c);
    pd_backend_free(be);
    _exit(st == PD_OK ? 0 : 4);
}

/* The velocity of the tiny DiT on fixed inputs, with self-attention lent to a helper process when
 * share is not -2 (-1: measured share). Returns the helper's exit status (or -1 with no helper). */
static int velocity(pd_wan_dit *m, pd_backend *be, const pd_tensor *lat, const pd_tensor *ctx, int share, int kill_after,
                    bool decline, pd_tensor *vel, pd_aco_stats *stats) {
    const float ts[2] = {700.0f, 700.0f};
    if (share == -2) {
        PD_CHECK(pd_wan_dit_forward(m, vel, lat, ts, ctx) == PD_OK);
        return -1;
    }
    char name[64];
    static int run;
    snprintf(name, sizeof name, "pdaco-%d-%d", (int)getpid(), run++);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) helper_main(name, kill_after, decline);
    pd_comm *c = NULL;
    pd_aco_lender *l = NULL;
    PD_CHECK(pd_comm_shm_create(name, 0, 2, 30.0, &c) == PD_OK);
    PD_CHECK(c && pd_aco_lender_create(c, 1, be, share, &l) == PD_OK);
    if (l) {
        pd_wan_dit_set_self_attention(m, pd_aco_attention, l);
        for (int rep = 0; rep < 3; rep++) /* the measured share settles after three calls of a shape */
            PD_CHECK(pd_wan_dit_forward(m, vel, lat, ts, ctx) == PD_OK);
        pd_wan_dit_set_self_attention(m, NULL, NULL);
        PD_CHECK(pd_aco_lender_finish(l) == PD_OK);
        pd_aco_lender_stats(l, stats);
    }
    int status = 0;
    PD_CHECK(waitpid(kid, &status, 0) == kid);
    pd_aco_lender_free(l);
    pd_comm_destroy(c);
    pd_comm_shm_unlink(name);
    return status;
}

static void test_velocity_exact(void) {
    pd_backend *be = NULL;
    pd_wan_dit *m = NULL;
    pd_tensor lat = {0}, ctx = {0}, v0 = {0}, v1 = {0};
    PD_CHECK(pd_backend_cpu_create(2, &be) == PD_OK);
    PD_CHECK(be && pd_wan_dit_load(g_model, be, &m) == PD_OK);
    if (!m) goto done;
    const pd_wan_dit_config *c = pd_wan_dit_get_config(m);
    PD_CHECK(make_inputs(c, 2, &lat, &ctx) == PD_OK); /* batch 2: the CFG pair */
    const int64_t vs[5] = {2, c->out_channels, 2, 4, 6};
    PD_CHECK(pd_tensor_alloc(&v0, PD_DTYPE_F32, 5, vs) == PD_OK && pd_tensor_alloc(&v1, PD_DTYPE_F32, 5, vs) == PD_OK);
    velocity(m, be, &lat, &ctx, -2, 0, false, &v0, NULL);
    size_t bytes = pd_tensor_nbytes(&v0);

    const struct {
        const char *what;
        int share, kill_after;
        bool decline;
    } cases[] = {
        {"one head lent", 1, 0, false},  {"three heads lent", 3, 0, false}, {"every head lent", 4, 0, false},
        {"measured share", -1, 0, false}, {"helper declines", 2, 0, false}, {"helper killed mid-lend", 2, 3, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pd_aco_stats st = {0};
        memset(v1.data, 0xff, bytes);
        bool decline = !strcmp(cases[i].what, "helper declines");
        int status = velocity(m, be, &lat, &ctx, cases[i].share, cases[i].kill_after, decline, &v1, &st);
        PD_CHECK_MSG(memcmp(v0.data, v1.data, bytes) == 0, "%s: velocity differs from Aco off", cases[i].what);
        if (cases[i].kill_after) {
            PD_CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "%s: helper status %d", cases[i].what,
                         status);
            PD_CHECK_MSG(st.failed && st.lends == (uint64_t)cases[i].kill_after - 1, "%s: failed %d lends %llu",
                         cases[i].what, st.failed, (unsigned long long)st.lends);
        } else {
            PD_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: helper status %d", cases[i].what, status);
            PD_CHECK(!st.failed);
            uint64_t calls = 3 * (uint64_t)c->layers; /* three forwards of `layers` self-attentions */
            PD_CHECK(st.calls == calls);
            if (decline) PD_CHECK(st.lends == 0 && st.declined == calls);
            else if (cases[i].share > 0) PD_CHECK(st.lends == calls && st.heads_lent == calls * (uint64_t)cases[i].share);
        }
    }
done:
    pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&v0), pd_tensor_free(&v1);
    pd_wan_dit_free(m);
    pd_backend_free(be);
}

static void test_bad_args(void) {
    pd_backend *be = NULL;
    pd_aco_lender *l = NULL;
    PD_CHECK(pd_backend_cpu_create(1, &be) == PD_OK);
    PD_CHECK(pd_aco_lender_create(NULL, 1, be, -1, &l) == PD_ERR_INVALID && !l);
    pd_backend_free(be);
}

int main(void) {
    if (!sp_fixture_setup("test_aco")) return 1;
    PD_RUN(test_share_rule);
    PD_RUN(test_velocity_exact);
    PD_RUN(test_bad_args);
    pd_test_rmtree(g_tmp);
    return pd_test_summary();
}
