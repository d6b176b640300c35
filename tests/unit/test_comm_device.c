/* The communicator's rules for device memory and for waits after an abort, checked without a GPU by
 * fakes over a one-rank shared-memory group:
 *  - the device-memory rule NCCL's buffer check applies (host memory, pinned or not, and another
 *    device's memory refused with a clear error; device and managed memory taken);
 *  - a spy backend: after an abort (asked from another thread, or by a failed wait) every wait fails
 *    with the group's error and the backend's finish is never called again (NCCL's would query a
 *    freed communicator), only its drop; a refused buffer changes nothing;
 *  - the DiT's SP evaluator on a "device" backend (the CPU backend whose allocations are the device
 *    memory) with a communicator that refuses everything else: the chunk calibration (chunk_heads 0)
 *    and the wait accounting move their host figures through device buffers, and the velocity equals
 *    the plain forward's. */
#include <pthread.h>
#include <stdatomic.h>

#include "comm/comm_impl.h"
#include "engine/backend_impl.h"
#include "models/wan/dit_sp.h"
#include "tests/unit/sp_fixture.h"
#include "tests/unit/test.h"

/* ---- the device-memory rule ---- */

static void test_device_buffer_rule(void) {
    int x = 0;
    PD_CHECK_OK(pd_comm__check_device_buffer(PD_COMM_ALLGATHER, "send", &x, PD_COMM_MEM_DEVICE, 1, 1));
    PD_CHECK_OK(pd_comm__check_device_buffer(PD_COMM_ALLGATHER, "send", &x, PD_COMM_MEM_MANAGED, -2, 1));
    PD_CHECK_ERR(pd_comm__check_device_buffer(PD_COMM_ALLGATHER, "send", &x, PD_COMM_MEM_HOST, -2, 0), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "allgather: send") && strstr(pd_error_msg(), "pageable host memory") &&
                     strstr(pd_error_msg(), "device memory of device 0 only"),
                 "message: %s", pd_error_msg());
    PD_CHECK_ERR(pd_comm__check_device_buffer(PD_COMM_RECV, "buf", &x, PD_COMM_MEM_HOST_PINNED, 0, 0), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "pinned host memory"), "message: %s", pd_error_msg());
    PD_CHECK_ERR(pd_comm__check_device_buffer(PD_COMM_ALLTOALLV, "recv", &x, PD_COMM_MEM_DEVICE, 0, 1), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "memory of device 0, but this communicator runs on device 1"), "message: %s",
                 pd_error_msg());
}

/* ---- a spy over the shm backend ---- */

/* "Device memory" of the fakes: the live allocations of the fake device backend below. */
typedef struct span {
    const char *p;
    size_t n;
} span;
static span g_dev[1024];
static int g_ndev;
static pthread_mutex_t g_dev_mu = PTHREAD_MUTEX_INITIALIZER;

static bool on_device(const void *p) {
    bool yes = false;
    pthread_mutex_lock(&g_dev_mu);
    for (int i = 0; i < g_ndev && !yes; i++) yes = (const char *)p >= g_dev[i].p && (const char *)p < g_dev[i].p + g_dev[i].n;
    pthread_mutex_unlock(&g_dev_mu);
    return yes;
}

static pd_comm_ops g_spy;
static atomic_int g_finishes, g_finish_after_abort, g_drops;
static pd_status g_fail_next; /* a status the next finish reports instead of the real one */
static bool g_device_only;    /* check_buffer: only the fake device's memory */

static pd_status spy_finish(pd_comm *c, pd_comm_req *r) {
    atomic_fetch_add(&g_finishes, 1);
    if (atomic_load(&c->aborted)) atomic_fetch_add(&g_finish_after_abort, 1);
    pd_status st = pd_comm__shm_backend.finish(c, r);
    if (g_fail_next) {
        st = pd_error_set(g_fail_next, "injected: %s timed out", pd_comm_op_name(r->op));
        g_fail_next = PD_OK;
    }
    return st;
}

static void spy_drop(pd_comm *c, pd_comm_req *r) {
    atomic_fetch_add(&g_drops, 1);
    pd_comm__shm_backend.drop(c, r);
}

static pd_status spy_check_buffer(pd_comm *c, pd_comm_op op, const char *which, const void *p) {
    if (!g_device_only) return PD_OK;
    return pd_comm__check_device_buffer(op, which, p, on_device(p) ? PD_COMM_MEM_DEVICE : PD_COMM_MEM_HOST, 0, 0);
}

/* A one-rank shm group whose backend is the spy. */
static pd_comm *spy_comm(const char *what, bool device_only) {
    char name[64];
    snprintf(name, sizeof name, "t%d-%s", (int)getpid(), what);
    pd_comm *c = NULL;
    PD_CHECK_OK(pd_comm_shm_create(name, 0, 1, 5.0, &c));
    if (!c) return NULL;
    g_spy = pd_comm__shm_backend;
    g_spy.finish = spy_finish;
    g_spy.drop = spy_drop;
    g_spy.check_buffer = spy_check_buffer;
    c->be = &g_spy;
    atomic_store(&g_finishes, 0), atomic_store(&g_finish_after_abort, 0), atomic_store(&g_drops, 0);
    g_fail_next = PD_OK;
    g_device_only = device_only;
    return c;
}

/* Two asynchronous self-transfers of 8 bytes (complete at once on one rank). */
static void issue_two(pd_comm *c, uint8_t (*b)[8], uint8_t (*r)[8], pd_comm_req **req) {
    size_t sb[1] = {8}, so[1] = {0};
    for (int k = 0; k < 2; k++) {
        memset(b[k], k + 1, 8);
        req[k] = NULL;
        PD_CHECK_OK(pd_comm_alltoallv_async(c, b[k], sb, so, r[k], sb, so, &req[k]));
    }
}

static void *abort_from_thread(void *arg) {
    pd_comm_abort(arg, "asked by the scheduler thread");
    return NULL;
}

/* Another thread only asks for the abort; the issuing thread's waits fail with that reason (their
 * transfers were done: an aborted group's results are void), and finish is never called. */
static void test_wait_after_abort_from_another_thread(void) {
    pd_comm *c = spy_comm("abort-thread", false);
    if (!c) return;
    uint8_t b[2][8], r[2][8];
    pd_comm_req *req[2];
    issue_two(c, b, r, req);
    pthread_t th;
    PD_CHECK(pthread_create(&th, NULL, abort_from_thread, c) == 0);
    pthread_join(th, NULL);
    for (int k = 0; k < 2; k++) {
        if (!req[k]) continue;
        PD_CHECK_ERR(pd_comm_wait(c, req[k]), PD_ERR_DEVICE);
        PD_CHECK_MSG(strstr(pd_error_msg(), "alltoallv") && strstr(pd_error_msg(), "asked by the scheduler thread"),
                     "wait %d: %s", k, pd_error_msg());
    }
    PD_CHECK_MSG(atomic_load(&g_finish_after_abort) == 0, "finish called %d times after the abort",
                 atomic_load(&g_finish_after_abort));
    PD_CHECK_MSG(atomic_load(&g_drops) == 2, "%d drops (want 2)", atomic_load(&g_drops));
    PD_CHECK_ERR(pd_comm_barrier(c), PD_ERR_DEVICE);
    pd_comm_destroy(c);
}

/* The first wait fails on its own (a deadline): it reports its own error and aborts the group; the
 * second request, still out, is dropped and its wait reports the first failure as the group's. */
static void test_wait_after_failed_wait(void) {
    pd_comm *c = spy_comm("abort-wait", false);
    if (!c) return;
    uint8_t b[2][8], r[2][8];
    pd_comm_req *req[2];
    issue_two(c, b, r, req);
    g_fail_next = PD_ERR_TIMEOUT;
    if (req[0]) PD_CHECK_ERR(pd_comm_wait(c, req[0]), PD_ERR_TIMEOUT);
    PD_CHECK_MSG(strstr(pd_error_msg(), "injected: alltoallv timed out"), "message: %s", pd_error_msg());
    if (req[1]) PD_CHECK_ERR(pd_comm_wait(c, req[1]), PD_ERR_DEVICE);
    PD_CHECK_MSG(strstr(pd_error_msg(), "aborted") && strstr(pd_error_msg(), "injected: alltoallv timed out"),
                 "message: %s", pd_error_msg());
    PD_CHECK_MSG(atomic_load(&g_finishes) == 1, "finish called %d times (want 1)", atomic_load(&g_finishes));
    PD_CHECK_MSG(atomic_load(&g_drops) == 1, "%d drops (want 1)", atomic_load(&g_drops));
    pd_comm_destroy(c);
}

/* A refused buffer is an argument error: nothing begins, the group stays usable. */
static void test_refused_buffer_changes_nothing(void) {
    pd_comm *c = spy_comm("refuse", true);
    if (!c) return;
    uint8_t host[8] = {0}, *dev = malloc(16);
    pthread_mutex_lock(&g_dev_mu);
    g_dev[g_ndev++] = (span){(const char *)dev, 16};
    pthread_mutex_unlock(&g_dev_mu);
    PD_CHECK_ERR(pd_comm_allgather(c, host, dev + 8, 8), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "allgather: send") && strstr(pd_error_msg(), "host memory"), "message: %s",
                 pd_error_msg());
    PD_CHECK_ERR(pd_comm_allgather(c, dev, host, 8), PD_ERR_INVALID);
    PD_CHECK_MSG(strstr(pd_error_msg(), "allgather: recv"), "message: %s", pd_error_msg());
    size_t sb[1] = {8}, so[1] = {0};
    PD_CHECK_ERR(pd_comm_alltoallv(c, host, sb, so, dev, sb, so), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_comm_broadcast(c, host, 8, 0), PD_ERR_INVALID);
    PD_CHECK(!atomic_load(&c->aborted));
    memset(dev, 7, 8);
    PD_CHECK_OK(pd_comm_allgather(c, dev, dev + 8, 8));
    PD_CHECK(dev[8] == 7 && dev[15] == 7);
    pd_comm_destroy(c);
    pthread_mutex_lock(&g_dev_mu);
    g_ndev--;
    pthread_mutex_unlock(&g_dev_mu);
    free(dev);
}

/* ---- the SP evaluator on a fake device ---- */

static pd_backend_ops g_fake_ops;
static const pd_backend_ops *g_cpu_ops;

static pd_status fake_alloc(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape) {
    PD_TRY(g_cpu_ops->tensor_alloc(be, out, dt, ndim, shape));
    pthread_mutex_lock(&g_dev_mu);
    PD_ASSERT(g_ndev < (int)(sizeof g_dev / sizeof g_dev[0]));
    g_dev[g_ndev++] = (span){out->data, pd_tensor_nbytes(out)};
    pthread_mutex_unlock(&g_dev_mu);
    return PD_OK;
}

static void fake_free(pd_backend *be, pd_tensor *t) {
    pthread_mutex_lock(&g_dev_mu);
    for (int i = 0; i < g_ndev; i++)
        if (g_dev[i].p == t->data) {
            g_dev[i] = g_dev[--g_ndev];
            break;
        }
    pthread_mutex_unlock(&g_dev_mu);
    g_cpu_ops->tensor_free(be, t);
}

/* The CPU backend, its allocations standing for device memory. */
static pd_status fake_device_backend(pd_backend **out) {
    PD_TRY(pd_backend_cpu_create(1, out));
    g_cpu_ops = (*out)->ops;
    g_fake_ops = *g_cpu_ops;
    g_fake_ops.tensor_alloc = fake_alloc;
    g_fake_ops.tensor_free = fake_free;
    (*out)->ops = &g_fake_ops;
    return PD_OK;
}

static void test_sp_calibration_through_device_memory(void) {
    pd_backend *be = NULL;
    pd_wan_dit *dit = NULL;
    pd_wan_dit_sp *sp = NULL;
    pd_tensor lat = {0}, ctx = {0}, dlat = {0}, dctx = {0}, ref = {0}, got = {0};
    PD_CHECK_OK(fake_device_backend(&be));
    if (!be) return;
    PD_CHECK_OK(pd_wan_dit_load(g_model, be, &dit));
    pd_comm *c = dit ? spy_comm("sp-calib", true) : NULL;
    if (!c) goto out;
    const pd_wan_dit_config *cfg = pd_wan_dit_get_config(dit);
    PD_CHECK(cfg->heads > 1); /* one rank holds every head: calibration runs */
    const int64_t vs[5] = {1, cfg->out_channels, 2, 4, 6};
    PD_CHECK_OK(make_inputs(cfg, 1, &lat, &ctx));
    PD_CHECK_OK(pd_backend_tensor_alloc(be, &dlat, PD_DTYPE_F32, 5, lat.shape));
    PD_CHECK_OK(pd_backend_tensor_alloc(be, &dctx, PD_DTYPE_F32, 3, ctx.shape));
    PD_CHECK_OK(pd_backend_tensor_alloc(be, &ref, PD_DTYPE_F32, 5, vs));
    PD_CHECK_OK(pd_backend_tensor_alloc(be, &got, PD_DTYPE_F32, 5, vs));
    if (!dlat.data || !dctx.data || !ref.data || !got.data) goto out;
    PD_CHECK_OK(pd_backend_upload(be, &dlat, &lat));
    PD_CHECK_OK(pd_backend_upload(be, &dctx, &ctx));
    const float ts[1] = {500.0f};
    PD_CHECK_OK(pd_wan_dit_forward(dit, &ref, &dlat, ts, &dctx));
    const pd_wan_dit_sp_options opts = {.chunk_heads = 0, .accounting = true};
    PD_CHECK_OK(pd_wan_dit_sp_create(dit, c, NULL, &opts, &sp));
    if (!sp) goto out;
    for (int i = 0; i < 2; i++) { /* the first forward calibrates, the second reuses the choice */
        PD_CHECK_OK(pd_wan_dit_sp_forward(sp, &got, &dlat, ts, &dctx));
        pd_wan_dit_sp_stats st;
        pd_wan_dit_sp_last_stats(sp, &st);
        PD_CHECK_MSG(st.chunk_heads >= 1 && st.chunk_heads <= cfg->heads, "forward %d: chunk of %d heads", i,
                     st.chunk_heads);
        PD_CHECK_MSG(i == 0 ? st.calib_s > 0 : st.calib_s == 0, "forward %d: calibration took %g s", i, st.calib_s);
        double e = rel_err_sq(got.data, ref.data, pd_tensor_numel(&ref));
        PD_CHECK_MSG(e < 1e-10, "forward %d: squared relative error %g against the plain forward", i, e);
    }
out:
    pd_wan_dit_sp_free(sp);
    pd_comm_destroy(c);
    pd_tensor_free(&lat), pd_tensor_free(&ctx);
    if (be) {
        pd_backend_tensor_free(be, &dlat), pd_backend_tensor_free(be, &dctx);
        pd_backend_tensor_free(be, &ref), pd_backend_tensor_free(be, &got);
    }
    pd_wan_dit_free(dit);
    pd_backend_free(be);
}

int main(void) {
    if (!sp_fixture_setup("test_comm_device")) return 1;
    PD_RUN(test_device_buffer_rule);
    PD_RUN(test_wait_after_abort_from_another_thread);
    PD_RUN(test_wait_after_failed_wait);
    PD_RUN(test_refused_buffer_changes_nothing);
    PD_RUN(test_sp_calibration_through_device_memory);
    pd_test_rmtree(g_tmp);
    return pd_test_summary();
}
