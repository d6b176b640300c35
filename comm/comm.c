/* The communicator's front: argument checks shared by every backend, request records, dispatch through
 * the backend table, and the abort state (ok -> aborted, never back): the first failed wait or
 * pd_comm_abort records why, tells every rank through the backend, and every later call fails at once,
 * waits included: a request still out is dropped, not finished, and its wait reports the group's error. */
#include "comm/comm_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pd_comm_op_name(pd_comm_op op) {
    switch (op) {
    case PD_COMM_ALLTOALLV: return "alltoallv";
    case PD_COMM_ALLGATHER: return "allgather";
    case PD_COMM_BROADCAST: return "broadcast";
    case PD_COMM_SEND: return "send";
    case PD_COMM_RECV: return "recv";
    case PD_COMM_BARRIER: return "barrier";
    }
    return "?";
}

void pd_comm__req_fail(pd_comm_req *r, pd_status st) {
    r->status = st;
    snprintf(r->err, sizeof r->err, "%s", pd_error_msg());
}

/* ---- construction ---- */

static pd_status check_group(const char *what, int rank, int size, double timeout_s, pd_comm **out) {
    if (!out) return pd_error_set(PD_ERR_INVALID, "%s: out is NULL", what);
    *out = NULL;
    if (size < 1 || size > PD_COMM_MAX_RANKS)
        return pd_error_set(PD_ERR_INVALID, "%s: group size %d (want 1..%d)", what, size, PD_COMM_MAX_RANKS);
    if (rank < 0 || rank >= size)
        return pd_error_set(PD_ERR_INVALID, "%s: rank %d outside a group of %d", what, rank, size);
    if (!(timeout_s > 0 && timeout_s <= 86400) || !isfinite(timeout_s))
        return pd_error_set(PD_ERR_INVALID, "%s: timeout %g s (want 0 < timeout <= 86400)", what, timeout_s);
    return PD_OK;
}

static pd_comm *comm_new(const pd_comm_ops *be, int rank, int size, double timeout_s) {
    PD_ASSERT(be->start && be->finish && be->drop && be->abort && be->destroy);
    pd_comm *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->be = be;
    c->rank = rank;
    c->size = size;
    c->timeout_s = timeout_s;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void comm_free(pd_comm *c) {
    pthread_mutex_destroy(&c->mu);
    free(c);
}

pd_status pd_comm_shm_create(const char *name, int rank, int size, double timeout_s, pd_comm **out) {
    PD_TRY(check_group("comm shm", rank, size, timeout_s, out));
    size_t n = name ? strlen(name) : 0;
    bool ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++) {
        char ch = name[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
    }
    if (!ok)
        return pd_error_set(PD_ERR_INVALID, "comm shm: bad group name '%s' (want 1-64 letters, digits, '_' or '-')",
                            name ? name : "(null)");
    pd_comm *c = comm_new(&pd_comm__shm_backend, rank, size, timeout_s);
    if (!c) return pd_error_set(PD_ERR_NOMEM, "comm shm %s: out of memory", name);
    pd_status st = pd_comm__shm_open(c, name);
    if (st) {
        comm_free(c);
        return st;
    }
    *out = c;
    return PD_OK;
}

#ifndef PD_HAVE_NCCL
static pd_status no_nccl(void) {
    return pd_error_set(PD_ERR_UNSUPPORTED, "comm nccl: this build has no NCCL backend (it needs CUDA and NCCL at "
                                            "configure time: cmake -DPIPEDIT_NCCL=ON)");
}
#endif

pd_status pd_comm_nccl_unique_id(uint8_t id[PD_COMM_NCCL_ID_BYTES]) {
    if (!id) return pd_error_set(PD_ERR_INVALID, "comm nccl: id is NULL");
#ifdef PD_HAVE_NCCL
    return pd_comm__nccl_unique_id(id);
#else
    return no_nccl();
#endif
}

pd_status pd_comm_nccl_create(const uint8_t id[PD_COMM_NCCL_ID_BYTES], int rank, int size, int device,
                              double timeout_s, pd_comm **out) {
    PD_TRY(check_group("comm nccl", rank, size, timeout_s, out));
    if (!id) return pd_error_set(PD_ERR_INVALID, "comm nccl: id is NULL");
    if (device < 0) return pd_error_set(PD_ERR_INVALID, "comm nccl: device %d", device);
#ifdef PD_HAVE_NCCL
    pd_comm *c = comm_new(&pd_comm__nccl_backend, rank, size, timeout_s);
    if (!c) return pd_error_set(PD_ERR_NOMEM, "comm nccl: out of memory");
    pd_status st = pd_comm__nccl_open(c, id, device);
    if (st) {
        comm_free(c);
        return st;
    }
    *out = c;
    return PD_OK;
#else
    return no_nccl();
#endif
}

int pd_comm_rank(const pd_comm *c) { return c->rank; }
int pd_comm_size(const pd_comm *c) { return c->size; }
const char *pd_comm_backend(const pd_comm *c) { return c->be->name; }

void pd_comm_set_stream(pd_comm *c, void *stream) {
    if (c && c->be->set_stream) c->be->set_stream(c, stream);
}

/* ---- the abort state ---- */

/* First reason wins; the backend is told every time (its abort is idempotent). */
static void mark_aborted(pd_comm *c, const char *why) {
    char msg[PD_COMM_ERR_BYTES];
    snprintf(msg, sizeof msg, "%s", why);
    pthread_mutex_lock(&c->mu);
    if (!atomic_load(&c->aborted)) {
        snprintf(c->why, sizeof c->why, "%s", msg);
        atomic_store(&c->aborted, 1);
    }
    pthread_mutex_unlock(&c->mu);
    c->be->abort(c, msg);
}

static pd_status aborted_error(pd_comm *c, pd_comm_op op) {
    char why[PD_COMM_ERR_BYTES];
    pthread_mutex_lock(&c->mu);
    snprintf(why, sizeof why, "%s", c->why);
    pthread_mutex_unlock(&c->mu);
    return pd_error_set(PD_ERR_DEVICE, "%s: the group was aborted earlier (%s); it must be rebuilt", pd_comm_op_name(op), why);
}

/* A failed wait poisons the group: timeouts and device errors abort every rank. */
static pd_status failed(pd_comm *c, pd_status st) {
    if (st == PD_ERR_TIMEOUT || st == PD_ERR_DEVICE) mark_aborted(c, pd_error_msg());
    return st;
}

void pd_comm_abort(pd_comm *c, const char *why) {
    if (!c) return;
    char msg[PD_COMM_ERR_BYTES];
    snprintf(msg, sizeof msg, "aborted by the caller: %s", why && why[0] ? why : "no reason given");
    mark_aborted(c, msg);
}

/* ---- requests ---- */

static pd_comm_req *req_new(pd_comm *c, pd_comm_op op) {
    size_t extra = op == PD_COMM_ALLTOALLV ? 4 * (size_t)c->size * sizeof(size_t) : 0;
    pd_comm_req *r = calloc(1, sizeof *r + extra);
    if (!r) return NULL;
    r->op = op;
    if (extra) {
        size_t *a = (size_t *)(r + 1);
        r->send_bytes = a;
        r->send_off = a + c->size;
        r->recv_bytes = a + 2 * c->size;
        r->recv_off = a + 3 * c->size;
    }
    return r;
}

static void req_unlink(pd_comm *c, pd_comm_req *r) {
    pthread_mutex_lock(&c->mu);
    if (r->all_prev) r->all_prev->all_next = r->all_next;
    else c->reqs = r->all_next;
    if (r->all_next) r->all_next->all_prev = r->all_prev;
    pthread_mutex_unlock(&c->mu);
}

/* Starts r; returns it in *async, or waits for it when async is NULL. Takes r. */
static pd_status begin(pd_comm *c, pd_comm_req *r, pd_comm_req **async) {
    if (atomic_load(&c->aborted)) {
        pd_comm_op op = r->op;
        free(r);
        return aborted_error(c, op);
    }
    pd_status st = PD_OK;
    if (!async && c->be->try_run && c->be->try_run(c, r, &st)) {
        free(r);
        return st ? failed(c, st) : PD_OK;
    }
    st = c->be->start(c, r);
    if (st) {
        free(r);
        return failed(c, st);
    }
    pthread_mutex_lock(&c->mu);
    r->all_next = c->reqs;
    if (c->reqs) c->reqs->all_prev = r;
    c->reqs = r;
    pthread_mutex_unlock(&c->mu);
    if (async) {
        *async = r;
        return PD_OK;
    }
    return pd_comm_wait(c, r);
}

/* Once the group is aborted (before this wait, or by another thread while it ran) a request's result is
 * void: it is dropped, never finished, and the wait reports the group's error. Otherwise the wait's own
 * failure aborts the group. */
pd_status pd_comm_wait(pd_comm *c, pd_comm_req *req) {
    if (!c || !req) return pd_error_set(PD_ERR_INVALID, "comm wait: %s is NULL", c ? "req" : "comm");
    const pd_comm_op op = req->op;
    pd_status st = PD_OK;
    bool void_result = atomic_load(&c->aborted);
    if (void_result) {
        c->be->drop(c, req);
    } else {
        st = c->be->finish(c, req);
        void_result = atomic_load(&c->aborted);
        if (st && !void_result) st = failed(c, st);
    }
    req_unlink(c, req);
    free(req);
    return void_result ? aborted_error(c, op) : st;
}

/* ---- argument checks, once for every backend ---- */

static pd_status check_comm(const pd_comm *c, pd_comm_op op, pd_comm_req **async, bool want_async) {
    if (!c) return pd_error_set(PD_ERR_INVALID, "%s: comm is NULL", pd_comm_op_name(op));
    if (want_async && !async) return pd_error_set(PD_ERR_INVALID, "%s: req is NULL", pd_comm_op_name(op));
    if (async) *async = NULL;
    return PD_OK;
}

static pd_status check_buf(pd_comm *c, pd_comm_op op, const char *which, const void *p, size_t bytes) {
    if (bytes && !p) return pd_error_set(PD_ERR_INVALID, "%s: %s is NULL for %zu bytes", pd_comm_op_name(op), which, bytes);
    if (bytes && c->be->check_buffer) return c->be->check_buffer(c, op, which, p);
    return PD_OK;
}

static const char *mem_name(pd_comm_mem where) {
    switch (where) {
    case PD_COMM_MEM_HOST: return "pageable host memory";
    case PD_COMM_MEM_HOST_PINNED: return "pinned host memory";
    case PD_COMM_MEM_DEVICE: return "device memory";
    case PD_COMM_MEM_MANAGED: return "managed memory";
    }
    return "memory of unknown kind";
}

pd_status pd_comm__check_device_buffer(pd_comm_op op, const char *which, const void *p, pd_comm_mem where, int device,
                                       int comm_device) {
    if (where == PD_COMM_MEM_MANAGED || (where == PD_COMM_MEM_DEVICE && device == comm_device)) return PD_OK;
    if (where == PD_COMM_MEM_DEVICE)
        return pd_error_set(PD_ERR_INVALID, "%s: %s %p is memory of device %d, but this communicator runs on device %d",
                            pd_comm_op_name(op), which, p, device, comm_device);
    return pd_error_set(PD_ERR_INVALID,
                        "%s: %s %p is %s; this communicator moves device memory of device %d only (copy the bytes "
                        "into a device buffer first)",
                        pd_comm_op_name(op), which, p, mem_name(where), comm_device);
}

static pd_status check_peer(const pd_comm *c, pd_comm_op op, int peer, bool self_ok) {
    if (peer < 0 || peer >= c->size || (!self_ok && peer == c->rank))
        return pd_error_set(PD_ERR_INVALID, "%s: peer %d invalid for rank %d of %d", pd_comm_op_name(op), peer,
                            c->rank, c->size);
    return PD_OK;
}

static pd_status alltoallv(pd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_off, void *recv,
                           const size_t *recv_bytes, const size_t *recv_off, pd_comm_req **req, bool want_async) {
    const pd_comm_op op = PD_COMM_ALLTOALLV;
    PD_TRY(check_comm(c, op, req, want_async));
    if (!send_bytes || !send_off || !recv_bytes || !recv_off)
        return pd_error_set(PD_ERR_INVALID, "alltoallv: a count or offset array is NULL");
    size_t sent = 0, received = 0; /* totals, saturating */
    for (int p = 0; p < c->size; p++) {
        if (send_off[p] > SIZE_MAX - send_bytes[p] || recv_off[p] > SIZE_MAX - recv_bytes[p])
            return pd_error_set(PD_ERR_INVALID, "alltoallv: offset + bytes overflow for peer %d", p);
        sent = sent > SIZE_MAX - send_bytes[p] ? SIZE_MAX : sent + send_bytes[p];
        received = received > SIZE_MAX - recv_bytes[p] ? SIZE_MAX : received + recv_bytes[p];
    }
    PD_TRY(check_buf(c, op, "send", send, sent));
    PD_TRY(check_buf(c, op, "recv", recv, received));
    if (send_bytes[c->rank] != recv_bytes[c->rank])
        return pd_error_set(PD_ERR_INVALID, "alltoallv: rank %d sends itself %zu bytes but expects %zu", c->rank,
                            send_bytes[c->rank], recv_bytes[c->rank]);
    pd_comm_req *r = req_new(c, op);
    if (!r) return pd_error_set(PD_ERR_NOMEM, "alltoallv: out of memory");
    size_t n = (size_t)c->size * sizeof(size_t);
    memcpy(r->send_bytes, send_bytes, n);
    memcpy(r->send_off, send_off, n);
    memcpy(r->recv_bytes, recv_bytes, n);
    memcpy(r->recv_off, recv_off, n);
    r->send = send;
    r->recv = recv;
    return begin(c, r, req);
}

pd_status pd_comm_alltoallv(pd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_off,
                            void *recv, const size_t *recv_bytes, const size_t *recv_off) {
    return alltoallv(c, send, send_bytes, send_off, recv, recv_bytes, recv_off, NULL, false);
}

pd_status pd_comm_alltoallv_async(pd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_off,
                                  void *recv, const size_t *recv_bytes, const size_t *recv_off, pd_comm_req **req) {
    return alltoallv(c, send, send_bytes, send_off, recv, recv_bytes, recv_off, req, true);
}

/* The calls with one buffer pair, one byte count and a peer or root. */
static pd_status simple(pd_comm *c, pd_comm_op op, const void *send, void *recv, size_t bytes, int peer,
                        pd_comm_req **req, bool want_async) {
    PD_TRY(check_comm(c, op, req, want_async));
    switch (op) {
    case PD_COMM_ALLGATHER:
        if (bytes && (size_t)c->size > SIZE_MAX / bytes)
            return pd_error_set(PD_ERR_INVALID, "allgather: %zu bytes x %d ranks overflows", bytes, c->size);
        PD_TRY(check_buf(c, op, "send", send, bytes));
        PD_TRY(check_buf(c, op, "recv", recv, bytes));
        break;
    case PD_COMM_BROADCAST: /* its one buffer is recv (== send); a root may be this rank, a peer not */
    case PD_COMM_SEND:
    case PD_COMM_RECV:
        PD_TRY(check_peer(c, op, peer, op == PD_COMM_BROADCAST));
        PD_TRY(check_buf(c, op, "buf", op == PD_COMM_SEND ? send : recv, bytes));
        break;
    default: break;
    }
    pd_comm_req *r = req_new(c, op);
    if (!r) return pd_error_set(PD_ERR_NOMEM, "%s: out of memory", pd_comm_op_name(op));
    r->send = send;
    r->recv = recv;
    r->bytes = bytes;
    r->peer = peer;
    return begin(c, r, req);
}

pd_status pd_comm_allgather(pd_comm *c, const void *send, void *recv, size_t bytes) {
    return simple(c, PD_COMM_ALLGATHER, send, recv, bytes, 0, NULL, false);
}
pd_status pd_comm_broadcast(pd_comm *c, void *buf, size_t bytes, int root) {
    return simple(c, PD_COMM_BROADCAST, buf, buf, bytes, root, NULL, false);
}
pd_status pd_comm_send(pd_comm *c, const void *buf, size_t bytes, int peer) {
    return simple(c, PD_COMM_SEND, buf, NULL, bytes, peer, NULL, false);
}
pd_status pd_comm_recv(pd_comm *c, void *buf, size_t bytes, int peer) {
    return simple(c, PD_COMM_RECV, NULL, buf, bytes, peer, NULL, false);
}
pd_status pd_comm_send_async(pd_comm *c, const void *buf, size_t bytes, int peer, pd_comm_req **req) {
    return simple(c, PD_COMM_SEND, buf, NULL, bytes, peer, req, true);
}
pd_status pd_comm_recv_async(pd_comm *c, void *buf, size_t bytes, int peer, pd_comm_req **req) {
    return simple(c, PD_COMM_RECV, NULL, buf, bytes, peer, req, true);
}
pd_status pd_comm_barrier(pd_comm *c) { return simple(c, PD_COMM_BARRIER, NULL, NULL, 0, 0, NULL, false); }

void pd_comm_destroy(pd_comm *c) {
    if (!c) return;
    int pending = 0;
    pthread_mutex_lock(&c->mu);
    for (pd_comm_req *r = c->reqs; r; r = r->all_next) pending++;
    pthread_mutex_unlock(&c->mu);
    /* Peers may be inside the collectives those requests belong to: fail them now, not at their deadline. */
    if (pending) {
        char why[96];
        snprintf(why, sizeof why, "left the group with %d requests not waited for", pending);
        mark_aborted(c, why);
    }
    c->be->destroy(c);
    while (c->reqs) {
        pd_comm_req *r = c->reqs;
        c->reqs = r->all_next;
        free(r);
    }
    comm_free(c);
}
