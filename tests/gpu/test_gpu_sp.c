/* Sequence parallelism on a GPU over NCCL (workers/sp_group.h): one rank on one GPU (NCCL cannot
 * place two ranks on one device) runs the group forward of the tiny model's DiT with PipeSP chunks of
 * 1 and of all heads, and with the daemon's default chunk 0 (measured: the calibration all-gathers its
 * timings over NCCL, which must see device memory), the same as the plain CUDA forward; the leader's cancel flag (carried in device
 * memory by an NCCL broadcast) stops the next call; with two or more GPUs, two ranks (one thread
 * each, one GPU each) give that same velocity too.
 *
 * Exits 77 (skipped) in builds without CUDA or NCCL, or without a visible device. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "models/presets.h"
#include "workers/sp_group.h"
#include "tests/unit/test.h"

#if defined(PD_HAVE_CUDA) && defined(PD_HAVE_NCCL)
#include "tests/unit/sp_fixture.h"

/* Relative L2 error of x against y. */
static float rel_err(const float *x, const float *y, int64_t n) { return (float)sqrt(rel_err_sq(x, y, n)); }

/* One rank's evaluation on cuda:<device>: the plain forward (ref, host) and the group forward (got, host). */
typedef struct rank_run {
    int rank, ranks, device, chunk;
    const uint8_t (*ids)[PD_COMM_NCCL_ID_BYTES];
    pd_tensor ref, got;
    bool cancel_check;
    pd_status st;
    char err[512];
} rank_run;

static pd_status rank_eval(rank_run *r) {
    pd_backend *be = NULL;
    pd_wan_dit *dit = NULL;
    pd_sp_group *g = NULL;
    pd_tensor lat = {0}, ctx = {0}, dlat = {0}, dctx = {0}, dvel = {0};
    char spec_name[16];
    snprintf(spec_name, sizeof spec_name, "cuda:%d", r->device);
    pd_status st = pd_backend_create(spec_name, 0, &be);
    if (!st) st = pd_wan_dit_load(g_model, be, &dit);
    const pd_wan_dit_config *c = dit ? pd_wan_dit_get_config(dit) : NULL;
    const int64_t vs[5] = {2, c ? c->out_channels : 1, 2, 4, 6};
    if (!st) st = make_inputs(c, 2, &lat, &ctx); /* a CFG pair */
    if (!st) st = pd_backend_tensor_alloc(be, &dlat, PD_DTYPE_F32, 5, lat.shape);
    if (!st) st = pd_backend_tensor_alloc(be, &dctx, PD_DTYPE_F32, 3, ctx.shape);
    if (!st) st = pd_backend_tensor_alloc(be, &dvel, PD_DTYPE_F32, 5, vs);
    if (!st) st = pd_backend_upload(be, &dlat, &lat);
    if (!st) st = pd_backend_upload(be, &dctx, &ctx);
    if (!st) st = pd_tensor_alloc(&r->ref, PD_DTYPE_F32, 5, vs);
    if (!st) st = pd_tensor_alloc(&r->got, PD_DTYPE_F32, 5, vs);
    const float ts[2] = {500.0f, 500.0f};
    if (!st) st = pd_wan_dit_forward(dit, &dvel, &dlat, ts, &dctx);
    if (!st) st = pd_backend_download(be, &r->ref, &dvel);
    const pd_sp_group_spec spec = {.name = "gpu-sp", .rank = r->rank, .ranks = r->ranks, .chunk_heads = r->chunk,
                                   .timeout_s = 60.0, .be = be, .nccl = true, .nccl_ids = r->ids};
    if (!st) st = pd_sp_group_join(dit, &spec, &g);
    atomic_int flag = 0;
    if (!st) pd_sp_group_set_cancel(g, &flag);
    if (!st) st = pd_sp_group_forward(g, &dvel, &dlat, ts, &dctx);
    if (!st) st = pd_backend_download(be, &r->got, &dvel);
    if (!st && r->cancel_check) {
        atomic_store(&flag, 1); /* read by the leader only; every rank stops at this call */
        pd_status cs2 = pd_sp_group_forward(g, &dvel, &dlat, ts, &dctx);
        if (cs2 != PD_ERR_CANCELLED || pd_sp_group_steps(g) != 1)
            st = pd_error_set(PD_ERR_INVALID, "cancel: got %s after %d steps", pd_status_name(cs2), pd_sp_group_steps(g));
    }
    if (st) snprintf(r->err, sizeof r->err, "%s", pd_error_msg());
    pd_sp_group_leave(g);
    pd_tensor_free(&lat), pd_tensor_free(&ctx);
    if (be) pd_backend_tensor_free(be, &dlat), pd_backend_tensor_free(be, &dctx), pd_backend_tensor_free(be, &dvel);
    pd_wan_dit_free(dit);
    pd_backend_free(be);
    return st;
}

static void *rank_thread(void *arg) {
    rank_run *r = arg;
    r->st = rank_eval(r);
    return NULL;
}

static void check_runs(rank_run *runs, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        PD_CHECK_MSG(runs[i].st == PD_OK, "%s rank %d: %s", what, i, runs[i].err);
        if (runs[i].st) continue;
        float e = rel_err(runs[i].got.data, runs[i].ref.data, pd_tensor_numel(&runs[i].ref));
        printf("  %s rank %d: relative error %.3g against the plain CUDA forward\n", what, i, (double)e);
        PD_CHECK_MSG(e < 1e-5f, "%s rank %d: relative error %g", what, i, (double)e);
    }
}

static void free_runs(rank_run *runs, int n) {
    for (int i = 0; i < n; i++) pd_tensor_free(&runs[i].ref), pd_tensor_free(&runs[i].got);
}

static void test_one_rank(void) {
    uint8_t ids[3][PD_COMM_NCCL_ID_BYTES];
    static const struct { int chunk; const char *what; } cs[] = {
        {4096, "1 rank, one chunk"}, {1, "1 rank, g = 1"}, {0, "1 rank, g calibrated"}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        for (int i = 0; i < 3; i++) PD_CHECK_OK(pd_comm_nccl_unique_id(ids[i]));
        rank_run r = {.rank = 0, .ranks = 1, .device = 0, .chunk = cs[c].chunk, .ids = ids, .cancel_check = true};
        r.st = rank_eval(&r);
        check_runs(&r, 1, cs[c].what);
        free_runs(&r, 1);
    }
}

static void test_two_ranks_two_gpus(void) {
    if (pd_backend_cuda_device_count() < 2) {
        printf("  one GPU: the two-rank case needs two (skipped)\n");
        return;
    }
    for (int chunk = 0; chunk <= 1; chunk++) { /* g = 1, then calibrated */
        uint8_t ids[3][PD_COMM_NCCL_ID_BYTES];
        for (int i = 0; i < 3; i++) PD_CHECK_OK(pd_comm_nccl_unique_id(ids[i]));
        rank_run runs[2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            runs[i] = (rank_run){.rank = i, .ranks = 2, .device = i, .chunk = 1 - chunk, .ids = ids, .cancel_check = true};
            PD_CHECK(pthread_create(&th[i], NULL, rank_thread, &runs[i]) == 0);
        }
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        check_runs(runs, 2, chunk ? "2 ranks, g calibrated" : "2 ranks, g = 1");
        free_runs(runs, 2);
    }
}

int main(void) {
    if (pd_backend_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    if (!sp_fixture_setup("test_gpu_sp")) return 1;
    PD_RUN(test_one_rank);
    PD_RUN(test_two_ranks_two_gpus);
    pd_test_rmtree(g_tmp);
    return pd_test_summary();
}
#else
int main(void) {
    printf("built without CUDA or NCCL: skipped\n");
    return 77;
}
#endif
