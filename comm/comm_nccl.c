/* The NCCL backend: one non-blocking NCCL communicator per rank, its own CUDA stream, one event per
 * request. A call first makes the communicator's stream wait for the caller's compute stream (an
 * event), enqueues the NCCL work (alltoallv as grouped send/recv pairs), and records a completion
 * event; pd_comm_wait polls that event, NCCL's asynchronous error state and the deadline, and aborts
 * the NCCL communicator (ncclCommAbort) on the deadline or an error. NCCL cannot say which peer is
 * late, so its timeouts name the rank and device instead. Peers learn of an abort through NCCL's own
 * remote errors or their deadline (the scheduler's control channel is faster).
 *
 * ncclCommAbort frees the NCCL communicator: the handle is cleared with it, and every path checks it
 * before use. Only the thread issuing calls aborts NCCL (an abort from another thread is a flag it
 * sees at its next poll, or at the drop of a request comm.c no longer finishes). Every buffer is
 * checked with cudaPointerGetAttributes before a call begins: NCCL's kernels cannot read host memory. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "comm/comm_impl.h"

_Static_assert(sizeof(ncclUniqueId) == PD_COMM_NCCL_ID_BYTES, "NCCL unique id size changed");

typedef struct nccl_comm {
    ncclComm_t comm;
    cudaStream_t stream; /* the communicator's own stream */
    cudaStream_t user;   /* the caller's compute stream (NULL: legacy default stream) */
    cudaEvent_t ready;   /* recorded on user before each call */
    int *scratch;        /* barrier: a one-int allreduce */
    int device, rank, size;
    double timeout;
    atomic_int abort_asked;
} nccl_comm;

/* The one check family: names the statement, file, line and device. */
#define CUDA_CHECK(s, what, call)                                                                   \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess)                                                                      \
            return pd_error_set(PD_ERR_DEVICE, "%s: %s failed at %s:%d (device %d): %s", what, #call, \
                                __FILE__, __LINE__, (s)->device, cudaGetErrorString(e_));           \
    } while (0)

#define NCCL_CHECK(s, what, call)                                                                   \
    do {                                                                                            \
        ncclResult_t e_ = (call);                                                                   \
        if (e_ != ncclSuccess && e_ != ncclInProgress)                                              \
            return nccl_error(s, what, #call, __FILE__, __LINE__, e_);                              \
    } while (0)

static pd_status nccl_error(nccl_comm *s, const char *what, const char *call, const char *file, int line,
                            ncclResult_t e) {
    const char *last = s->comm ? ncclGetLastError(s->comm) : "";
    return pd_error_set(PD_ERR_DEVICE, "%s: %s failed at %s:%d (rank %d, device %d): %s%s%s", what, call, file, line,
                        s->rank, s->device, ncclGetErrorString(e), last && last[0] ? ": " : "", last ? last : "");
}

/* Aborts (and so frees) the NCCL communicator once; s->comm is NULL from then on. */
static void abort_now(nccl_comm *s) {
    if (s->comm) ncclCommAbort(s->comm);
    s->comm = NULL;
}

/* The error of a call on a communicator whose NCCL side is gone. */
static pd_status gone(nccl_comm *s, const char *what) {
    return pd_error_set(PD_ERR_DEVICE, "%s: the NCCL communicator was aborted (rank %d, device %d)", what, s->rank,
                        s->device);
}

static void nap(long *ns) {
    nanosleep(&(struct timespec){0, *ns}, NULL);
    if (*ns < 1000000) *ns *= 2; /* 20 us, doubling to 1 ms */
}

/* A poll loop's way out: once an abort was asked for (PD_ERR_DEVICE) or the deadline passed
 * (PD_ERR_TIMEOUT), aborts NCCL and says so; PD_OK while the loop may go on. */
static pd_status give_up(nccl_comm *s, const char *what, double deadline) {
    if (atomic_load(&s->abort_asked)) {
        abort_now(s);
        return pd_error_set(PD_ERR_DEVICE, "%s: group aborted (rank %d)", what, s->rank);
    }
    if (pd_now_s() > deadline) {
        abort_now(s);
        return pd_error_set(PD_ERR_TIMEOUT, "%s: timed out after %.1f s in NCCL (rank %d of %d, device %d)", what,
                            s->timeout, s->rank, s->size, s->device);
    }
    return PD_OK;
}

/* Polls until NCCL's queued non-blocking work is accepted (no longer ncclInProgress). */
static pd_status settle(nccl_comm *s, const char *what) {
    double deadline = pd_now_s() + s->timeout;
    long ns = 20000;
    for (;;) {
        ncclResult_t as = ncclSuccess;
        NCCL_CHECK(s, what, ncclCommGetAsyncError(s->comm, &as));
        if (as == ncclSuccess) return PD_OK;
        if (as != ncclInProgress) return nccl_error(s, what, "ncclCommGetAsyncError", __FILE__, __LINE__, as);
        PD_TRY(give_up(s, what, deadline));
        nap(&ns);
    }
}

pd_status pd_comm__nccl_unique_id(uint8_t id[PD_COMM_NCCL_ID_BYTES]) {
    ncclUniqueId u;
    ncclResult_t e = ncclGetUniqueId(&u);
    if (e != ncclSuccess) return pd_error_set(PD_ERR_DEVICE, "comm nccl: ncclGetUniqueId: %s", ncclGetErrorString(e));
    memcpy(id, &u, sizeof u);
    return PD_OK;
}

static void nccl_free(nccl_comm *s) {
    cudaSetDevice(s->device);
    if (s->comm) {
        /* A healthy communicator flushes its work (finalize, non-blocking: settle) before it is freed. */
        ncclResult_t f = atomic_load(&s->abort_asked) ? ncclInternalError : ncclCommFinalize(s->comm);
        if ((f != ncclSuccess && f != ncclInProgress) || settle(s, "destroy") != PD_OK) abort_now(s);
        if (s->comm) ncclCommDestroy(s->comm);
    }
    if (s->scratch) cudaFree(s->scratch);
    if (s->ready) cudaEventDestroy(s->ready);
    if (s->stream) cudaStreamDestroy(s->stream);
    free(s);
}

static pd_status open_comm(nccl_comm *s, const uint8_t id[PD_COMM_NCCL_ID_BYTES]) {
    const char *what = "comm nccl create";
    CUDA_CHECK(s, what, cudaSetDevice(s->device));
    CUDA_CHECK(s, what, cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    CUDA_CHECK(s, what, cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming));
    CUDA_CHECK(s, what, cudaMalloc((void **)&s->scratch, sizeof(int)));
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0; /* every call returns at once; settle() polls with the deadline */
    NCCL_CHECK(s, what, ncclCommInitRankConfig(&s->comm, s->size, u, s->rank, &cfg));
    return settle(s, what);
}

pd_status pd_comm__nccl_open(pd_comm *c, const uint8_t id[PD_COMM_NCCL_ID_BYTES], int device) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || device >= n)
        return pd_error_set(PD_ERR_DEVICE, "comm nccl: device %d not available (%d CUDA devices%s%s)", device,
                            e == cudaSuccess ? n : 0, e == cudaSuccess ? "" : ": ", e == cudaSuccess ? "" : cudaGetErrorString(e));
    nccl_comm *s = calloc(1, sizeof *s);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "comm nccl: out of memory");
    s->device = device;
    s->rank = c->rank;
    s->size = c->size;
    s->timeout = c->timeout_s;
    pd_status st = open_comm(s, id);
    if (st) {
        abort_now(s);
        nccl_free(s);
        return st;
    }
    c->impl = s;
    return PD_OK;
}

/* Enqueues r's NCCL calls inside one group; returns the first failure (the group is always closed). */
static pd_status enqueue(nccl_comm *s, pd_comm_req *r, const char *what) {
    ncclResult_t e = ncclSuccess, g;
    const char *failed = NULL;
#define ENQ(call)                                                                                  \
    do {                                                                                           \
        if (e == ncclSuccess || e == ncclInProgress) {                                             \
            e = (call);                                                                            \
            if (e != ncclSuccess && e != ncclInProgress) failed = #call;                           \
        }                                                                                          \
    } while (0)
    if (r->op == PD_COMM_ALLTOALLV && r->send_bytes[s->rank])
        CUDA_CHECK(s, what, cudaMemcpyAsync((uint8_t *)r->recv + r->recv_off[s->rank],
                                            pd_comm__at(r->send, r->send_off[s->rank]), r->send_bytes[s->rank],
                                            cudaMemcpyDeviceToDevice, s->stream));
    NCCL_CHECK(s, what, ncclGroupStart());
    switch (r->op) {
    case PD_COMM_ALLTOALLV:
        for (int p = 0; p < s->size; p++) {
            if (p == s->rank) continue;
            if (r->send_bytes[p])
                ENQ(ncclSend(pd_comm__at(r->send, r->send_off[p]), r->send_bytes[p], ncclUint8, p, s->comm, s->stream));
            if (r->recv_bytes[p])
                ENQ(ncclRecv((void *)pd_comm__at(r->recv, r->recv_off[p]), r->recv_bytes[p], ncclUint8, p, s->comm, s->stream));
        }
        break;
    case PD_COMM_ALLGATHER: ENQ(ncclAllGather(r->send, r->recv, r->bytes, ncclUint8, s->comm, s->stream)); break;
    case PD_COMM_BROADCAST: ENQ(ncclBroadcast(r->recv, r->recv, r->bytes, ncclUint8, r->peer, s->comm, s->stream)); break;
    case PD_COMM_SEND: ENQ(ncclSend(r->send, r->bytes, ncclUint8, r->peer, s->comm, s->stream)); break;
    case PD_COMM_RECV: ENQ(ncclRecv(r->recv, r->bytes, ncclUint8, r->peer, s->comm, s->stream)); break;
    case PD_COMM_BARRIER: ENQ(ncclAllReduce(s->scratch, s->scratch, 1, ncclInt32, ncclSum, s->comm, s->stream)); break;
    }
#undef ENQ
    g = ncclGroupEnd();
    if (failed) return nccl_error(s, what, failed, __FILE__, __LINE__, e);
    if (g != ncclSuccess && g != ncclInProgress) return nccl_error(s, what, "ncclGroupEnd()", __FILE__, __LINE__, g);
    return g == ncclInProgress ? settle(s, what) : PD_OK;
}

static pd_status nccl_start(pd_comm *c, pd_comm_req *r) {
    nccl_comm *s = c->impl;
    const char *what = pd_comm_op_name(r->op);
    CUDA_CHECK(s, what, cudaSetDevice(s->device));
    if (atomic_load(&s->abort_asked)) abort_now(s);
    if (!s->comm) return gone(s, what);
    CUDA_CHECK(s, what, cudaEventRecord(s->ready, s->user));
    CUDA_CHECK(s, what, cudaStreamWaitEvent(s->stream, s->ready, 0));
    PD_TRY(enqueue(s, r, what));
    cudaEvent_t done;
    CUDA_CHECK(s, what, cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    cudaError_t e = cudaEventRecord(done, s->stream);
    if (e != cudaSuccess) {
        cudaEventDestroy(done);
        return pd_error_set(PD_ERR_DEVICE, "%s: cudaEventRecord (device %d): %s", what, s->device, cudaGetErrorString(e));
    }
    r->impl = done;
    return PD_OK;
}

static pd_status nccl_finish(pd_comm *c, pd_comm_req *r) {
    nccl_comm *s = c->impl;
    const char *what = pd_comm_op_name(r->op);
    cudaEvent_t done = r->impl;
    double deadline = pd_now_s() + s->timeout;
    long ns = 20000;
    pd_status st = PD_OK;
    cudaSetDevice(s->device);
    for (;;) {
        if (!s->comm) { /* comm.c drops, not finishes, requests of an aborted group; kept as a guard */
            st = gone(s, what);
            break;
        }
        cudaError_t q = cudaEventQuery(done);
        if (q == cudaSuccess) break;
        if (q != cudaErrorNotReady) {
            st = pd_error_set(PD_ERR_DEVICE, "%s: cudaEventQuery (device %d): %s", what, s->device, cudaGetErrorString(q));
            break;
        }
        ncclResult_t as = ncclSuccess;
        ncclCommGetAsyncError(s->comm, &as);
        if (as != ncclSuccess && as != ncclInProgress) {
            st = nccl_error(s, what, "ncclCommGetAsyncError", __FILE__, __LINE__, as);
            abort_now(s);
            break;
        }
        if ((st = give_up(s, what, deadline)) != PD_OK) break;
        nap(&ns);
    }
    cudaEventDestroy(done);
    r->impl = NULL;
    return st;
}

/* Any thread: the waiting thread sees the flag on its next poll and aborts NCCL there, so the NCCL
 * communicator is only ever touched by the thread using it. */
static void nccl_abort(pd_comm *c, const char *why) {
    nccl_comm *s = c->impl;
    atomic_store(&s->abort_asked, 1);
}

/* A request of an aborted group (comm.c): the abort was asked for, so NCCL is aborted here, on the
 * thread using it, if no poll did it yet; the event goes without being queried. */
static void nccl_drop(pd_comm *c, pd_comm_req *r) {
    nccl_comm *s = c->impl;
    cudaSetDevice(s->device);
    if (atomic_load(&s->abort_asked)) abort_now(s);
    if (r->impl) cudaEventDestroy((cudaEvent_t)r->impl);
    r->impl = NULL;
}

static pd_status nccl_check_buffer(pd_comm *c, pd_comm_op op, const char *which, const void *p) {
    nccl_comm *s = c->impl;
    struct cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return pd_error_set(PD_ERR_INVALID, "%s: %s %p: cudaPointerGetAttributes (device %d): %s", pd_comm_op_name(op),
                            which, p, s->device, cudaGetErrorString(e));
    }
    pd_comm_mem where = a.type == cudaMemoryTypeDevice    ? PD_COMM_MEM_DEVICE
                        : a.type == cudaMemoryTypeManaged ? PD_COMM_MEM_MANAGED
                        : a.type == cudaMemoryTypeHost    ? PD_COMM_MEM_HOST_PINNED
                                                          : PD_COMM_MEM_HOST;
    return pd_comm__check_device_buffer(op, which, p, where, a.device, s->device);
}

static void nccl_destroy(pd_comm *c) {
    nccl_comm *s = c->impl;
    cudaSetDevice(s->device);
    for (pd_comm_req *r = c->reqs; r; r = r->all_next)
        if (r->impl) cudaEventDestroy((cudaEvent_t)r->impl);
    nccl_free(s);
    c->impl = NULL;
}

static void nccl_set_stream(pd_comm *c, void *stream) {
    nccl_comm *s = c->impl;
    s->user = (cudaStream_t)stream;
}

const pd_comm_ops pd_comm__nccl_backend = {
    .name = "nccl",
    .start = nccl_start,
    .finish = nccl_finish,
    .drop = nccl_drop,
    .abort = nccl_abort,
    .destroy = nccl_destroy,
    .set_stream = nccl_set_stream,
    .check_buffer = nccl_check_buffer,
};
