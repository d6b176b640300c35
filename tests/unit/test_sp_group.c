/* A process's membership in an SP denoise group (workers/sp_group.h), with real worker processes
 * joined by the shared-memory communicator and the tiny model's DiT:
 *  - the group forward equals the single-process forward (3 ranks; 4 ranks with CFG parallelism, for
 *    the CFG pair and for a batch of 1, which each half evaluates on its own);
 *  - cancellation: the leader's flag, set before the 4th call, stops every rank at that same call,
 *    while flags set on other ranks are ignored; the step counter says 3 everywhere;
 *  - a stop (cancel or deadline) the leader sets during block k of a call stops every rank before
 *    block k + 1 of that call (the block hook counts k + 1 blocks on every rank);
 *  - a bad spec is refused with PD_ERR_INVALID before any communicator is made. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "models/presets.h"
#include "workers/sp_group.h"
#include "tests/unit/sp_fixture.h"
#include "tests/unit/test.h"

typedef struct rank_job {
    const char *name;
    int ranks;
    bool cfg_parallel;
    int64_t batch;
    int cancel_at;  /* the leader sets its flag before this call (-1: never) */
    int calls;
    const char *model;  /* NULL: the fixture's DiT */
    int stop_block;     /* >= 0: the leader sets its flag after this block of call cancel_at instead */
    int stop_value;     /* PD_STOP_* value it sets (0: PD_STOP_CANCEL) */
} rank_job;

/* Counts the blocks of the current call; the leader sets its flag after block `after`. */
typedef struct block_count {
    atomic_int *flag;
    int after, value, blocks;
} block_count;

static void on_block(void *ud, int block) {
    block_count *b = ud;
    b->blocks++;
    if (block == b->after) atomic_store(b->flag, b->value);
}

/* One rank: exit 0 when every call matched the reference (and, with a cancel, 100 + the call it stopped
 * at; with a stop inside a call, 100 + the blocks that call ran). */
static int rank_main(const rank_job *job, int rank) {
    pd_backend *be = NULL;
    pd_wan_dit *dit = NULL;
    pd_sp_group *g = NULL;
    pd_tensor lat = {0}, ctx = {0}, ref = {0}, vel = {0};
    atomic_int flag = 0;
    int rc = 1;
    if (pd_backend_cpu_create(1, &be) || pd_wan_dit_load(job->model ? job->model : g_model, be, &dit)) goto out;
    const pd_wan_dit_config *c = pd_wan_dit_get_config(dit);
    PD_ASSERT(make_inputs(c, job->batch, &lat, &ctx) == PD_OK);
    const int64_t vs[5] = {job->batch, c->out_channels, 2, 4, 6};
    const float ts[2] = {500.0f, 500.0f};
    if (pd_tensor_alloc(&ref, PD_DTYPE_F32, 5, vs) || pd_tensor_alloc(&vel, PD_DTYPE_F32, 5, vs)) goto out;
    if (pd_wan_dit_forward(dit, &ref, &lat, ts, &ctx)) goto out;
    const pd_sp_group_spec spec = {.name = job->name, .rank = rank, .ranks = job->ranks, .cfg_parallel = job->cfg_parallel,
                                   .chunk_heads = 1, .timeout_s = 20.0, .be = be};
    if (pd_sp_group_join(dit, &spec, &g)) {
        fprintf(stderr, "rank %d: %s\n", rank, pd_error_msg());
        goto out;
    }
    pd_sp_group_set_cancel(g, &flag);
    const int value = job->stop_value ? job->stop_value : PD_STOP_CANCEL;
    block_count bc = {.flag = &flag, .after = -1};
    pd_wan_dit_set_block_hook(dit, on_block, &bc);
    for (int k = 0; k < job->calls; k++) {
        const bool stops_here = rank == 0 && k == job->cancel_at;
        bc.blocks = 0;
        bc.after = stops_here && job->stop_block >= 0 ? job->stop_block : -1;
        bc.value = value;
        if (stops_here && job->stop_block < 0) atomic_store(&flag, value);
        if (rank == 1 && k == 1) atomic_store(&flag, 1); /* not the leader: must change nothing */
        pd_status st = pd_sp_group_forward(g, &vel, &lat, ts, &ctx);
        if (st == (value == PD_STOP_DEADLINE ? PD_ERR_DEADLINE : PD_ERR_CANCELLED)) {
            rc = pd_sp_group_steps(g) != k ? 2 : job->stop_block >= 0 ? 100 + bc.blocks : 100 + k;
            goto out;
        }
        if (st) {
            fprintf(stderr, "rank %d call %d: %s\n", rank, k, pd_error_msg());
            goto out;
        }
        float e = (float)rel_err_sq(vel.data, ref.data, pd_tensor_numel(&vel));
        if (!(e < 1e-10f)) { /* squared relative error: < 1e-5 relative */
            fprintf(stderr, "rank %d call %d: squared relative error %g against one process\n", rank, k, (double)e);
            goto out;
        }
    }
    rc = 0;
out:
    pd_sp_group_leave(g);
    pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&ref), pd_tensor_free(&vel);
    pd_wan_dit_free(dit);
    pd_backend_free(be);
    return rc;
}

/* Forks the ranks; checks each exit status against want. */
static void run_group(const rank_job *job, int want) {
    pid_t kids[8];
    fflush(NULL);
    for (int r = 0; r < job->ranks; r++) {
        kids[r] = fork();
        if (kids[r] == 0) _exit(rank_main(job, r));
    }
    for (int r = 0; r < job->ranks; r++) {
        int status = -1;
        PD_CHECK(kids[r] > 0 && waitpid(kids[r], &status, 0) == kids[r]);
        PD_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == want, "%s: rank %d exit status %d, want %d", job->name,
                     r, WIFEXITED(status) ? WEXITSTATUS(status) : -1, want);
    }
}

static void test_forward_equals_one_process(void) {
    char name[64];
    snprintf(name, sizeof name, "pdtest-spg-%d-a", (int)getpid());
    run_group(&(rank_job){.name = name, .ranks = 3, .batch = 2, .cancel_at = -1, .calls = 2, .stop_block = -1}, 0);
}

static void test_cfg_parallel_pair_and_single(void) {
    char name[64];
    snprintf(name, sizeof name, "pdtest-spg-%d-b", (int)getpid());
    run_group(&(rank_job){.name = name, .ranks = 4, .cfg_parallel = true, .batch = 2, .cancel_at = -1, .calls = 1, .stop_block = -1}, 0);
    snprintf(name, sizeof name, "pdtest-spg-%d-c", (int)getpid());
    run_group(&(rank_job){.name = name, .ranks = 4, .cfg_parallel = true, .batch = 1, .cancel_at = -1, .calls = 1, .stop_block = -1}, 0);
}

static void test_cancel_same_call_on_every_rank(void) {
    char name[64];
    snprintf(name, sizeof name, "pdtest-spg-%d-d", (int)getpid());
    run_group(&(rank_job){.name = name, .ranks = 3, .batch = 1, .cancel_at = 3, .calls = 8, .stop_block = -1}, 103);
}

/* A stop set by the leader during block k stops every rank before block k + 1 of the same call (6
 * layers; 3 ranks; and 4 ranks with CFG parallelism on a batch of 1, where the halves compute apart
 * but stop together); a deadline the same way with its own status. */
static void test_stop_between_blocks_on_every_rank(void) {
    char name[64], deep[700];
    snprintf(deep, sizeof deep, "%s/deep", g_tmp);
    pd_wan_dit_config cfg = pd_model_preset_default()->dit;
    cfg.layers = 6;
    PD_CHECK_OK(pd_wan_dit_write_random(deep, &cfg, 3, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32));
    snprintf(name, sizeof name, "pdtest-spg-%d-e", (int)getpid());
    run_group(&(rank_job){.name = name, .ranks = 3, .batch = 2, .cancel_at = 1, .calls = 3, .model = deep,
                          .stop_block = 2}, 103);
    snprintf(name, sizeof name, "pdtest-spg-%d-f", (int)getpid());
    run_group(&(rank_job){.name = name, .ranks = 4, .cfg_parallel = true, .batch = 1, .cancel_at = 0, .calls = 2,
                          .model = deep, .stop_block = 0, .stop_value = PD_STOP_DEADLINE}, 101);
    snprintf(name, sizeof name, "pdtest-spg-%d-g", (int)getpid());
    run_group(&(rank_job){.name = name, .ranks = 4, .cfg_parallel = true, .batch = 2, .cancel_at = 2, .calls = 3,
                          .model = deep, .stop_block = 4}, 105);
}

static void test_bad_spec(void) {
    pd_backend *be = NULL;
    pd_wan_dit *dit = NULL;
    PD_CHECK_OK(pd_backend_cpu_create(1, &be));
    PD_CHECK_OK(pd_wan_dit_load(g_model, be, &dit));
    pd_sp_group *g = NULL;
    const pd_sp_group_spec ok = {.name = "pdtest-spg-bad", .rank = 0, .ranks = 2, .chunk_heads = 0, .timeout_s = 1, .be = be};
    pd_sp_group_spec s = ok;
    s.rank = 2;
    PD_CHECK_ERR(pd_sp_group_join(dit, &s, &g), PD_ERR_INVALID);
    s = ok, s.ranks = 0, s.rank = 0;
    PD_CHECK_ERR(pd_sp_group_join(dit, &s, &g), PD_ERR_INVALID);
    s = ok, s.ranks = 3, s.cfg_parallel = true;
    PD_CHECK_ERR(pd_sp_group_join(dit, &s, &g), PD_ERR_INVALID);
    s = ok, s.name = "";
    PD_CHECK_ERR(pd_sp_group_join(dit, &s, &g), PD_ERR_INVALID);
    s = ok, s.timeout_s = 0;
    PD_CHECK_ERR(pd_sp_group_join(dit, &s, &g), PD_ERR_INVALID);
    s = ok, s.be = NULL;
    PD_CHECK_ERR(pd_sp_group_join(dit, &s, &g), PD_ERR_INVALID);
    s = ok, s.nccl = true;
    PD_CHECK_ERR(pd_sp_group_join(dit, &s, &g), PD_ERR_INVALID);
    PD_CHECK(g == NULL);
    /* A group of one is valid and computes alone. */
    s = ok, s.ranks = 1;
    PD_CHECK_OK(pd_sp_group_join(dit, &s, &g));
    PD_CHECK(g && pd_sp_group_size(g) == 1 && pd_sp_group_rank(g) == 0);
    pd_sp_group_leave(g);
    pd_wan_dit_free(dit);
    pd_backend_free(be);
}

int main(void) {
    if (!sp_fixture_setup("test_sp_group")) return 1;
    PD_RUN(test_bad_spec);
    PD_RUN(test_forward_equals_one_process);
    PD_RUN(test_cfg_parallel_pair_and_single);
    PD_RUN(test_cancel_same_call_on_every_rank);
    PD_RUN(test_stop_between_blocks_on_every_rank);
    pd_test_rmtree(g_tmp);
    return pd_test_summary();
}
