/* The shared-memory backend: CPU worker processes on one host.
 *
 * One segment "/pd-comm-<name>" made by rank 0: a header (size, ring bytes, started flag, abort flag
 * and reason), one record per rank (a robust process-shared mutex its communication thread holds
 * while it lives, so a peer's death shows as EOWNERDEAD even before it is reaped; pid; joined/left
 * flags; a futex "bell"), then one single-producer ring per ordered pair of ranks. Every collective
 * becomes a set of pair transfers that make progress together (no ordering deadlock with bounded
 * rings); each transfer starts with a small header (op, per-pair sequence number, byte count) so a
 * mismatched call is reported instead of silently desynchronising the streams. Large messages move
 * through the ring in chunks. Asynchronous requests run in order on one communication thread per
 * communicator; a blocking call with none in flight runs on the caller's thread.
 * A wait sleeps on the bell in short slices; after each slice it checks peers' liveness, and it
 * gives up when nothing moved for the timeout. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "comm/comm_impl.h"
#include "comm/shm.h"

#define CTL_MAGIC 0x4d4d4f43u /* "COMM" */
#define CTL_VERSION 1u
#define RING_MAX ((size_t)1 << 20)
#define RING_MIN ((size_t)64 << 10)
#define RING_BUDGET ((size_t)64 << 20) /* all rings together; big groups get smaller rings */
#define SLICE_S 0.05                   /* liveness checks and replaced-segment checks this often */
#define MSG_MAGIC 0x50440000u

typedef struct ctl_head {
    _Atomic uint32_t magic; /* stored last by rank 0: the rest is initialised */
    uint32_t version;
    int32_t size;
    uint32_t reserved;
    uint64_t ring_bytes, total_bytes;
    _Atomic uint32_t started;     /* every rank joined */
    _Atomic uint32_t abort_state; /* 0 none, 1 reason being written, 2 reason written */
    char abort_why[PD_COMM_ERR_BYTES];
} ctl_head;

typedef struct ctl_rank {
    pthread_mutex_t alive; /* robust; held by the rank's communication thread */
    _Atomic int32_t pid;
    _Atomic uint32_t joined, left, dead;
    _Alignas(64) _Atomic uint32_t bell; /* futex word: bumped whenever something for this rank moved */
    _Atomic uint32_t sleeping;
} ctl_rank;

typedef struct chan {
    _Alignas(64) _Atomic uint64_t head; /* bytes written by the sender */
    _Alignas(64) _Atomic uint64_t tail; /* bytes consumed by the receiver */
} chan;

typedef struct msg_hdr {
    uint32_t magic_op;
    uint32_t reserved;
    uint64_t seq, bytes;
} msg_hdr;

typedef struct layout {
    size_t ranks, chans, rings, total, ring;
} layout;

typedef struct xfer {
    int peer;
    size_t n, done; /* payload bytes; header + payload bytes moved so far */
    const uint8_t *src;
    uint8_t *dst;
    uint64_t want_seq;
    msg_hdr h;
} xfer;

typedef struct shm_comm {
    char seg[96];
    int rank, size;
    double timeout;
    layout l;
    uint8_t *base;
    ino_t ino;
    ctl_head *h;
    ctl_rank *ranks;
    chan *chans;
    uint64_t out_seq[PD_COMM_MAX_RANKS], in_seq[PD_COMM_MAX_RANKS];
    /* the communication thread and its FIFO */
    pthread_t thread;
    bool thread_on, holding, stop, running; /* running: a request is being moved (thread or caller) */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    pd_comm_req *qhead, *qtail;
} shm_comm;

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

static layout layout_for(int n) {
    layout l;
    l.ring = RING_MAX;
    if (n > 1)
        while (l.ring > RING_MIN && l.ring > RING_BUDGET / ((size_t)n * (size_t)(n - 1))) l.ring /= 2;
    l.ranks = align_up(sizeof(ctl_head), 64);
    l.chans = align_up(l.ranks + (size_t)n * sizeof(ctl_rank), 64);
    l.rings = align_up(l.chans + (size_t)n * (size_t)n * sizeof(chan), 4096);
    l.total = l.rings + (size_t)n * (size_t)n * l.ring;
    return l;
}

static void set_base(shm_comm *s, void *base) {
    s->base = base;
    s->h = base;
    s->ranks = (ctl_rank *)(s->base + s->l.ranks);
    s->chans = (chan *)(s->base + s->l.chans);
}

static chan *chan_of(shm_comm *s, int from, int to) { return &s->chans[(size_t)from * (size_t)s->size + (size_t)to]; }
static uint8_t *ring_of(shm_comm *s, int from, int to) {
    return s->base + s->l.rings + ((size_t)from * (size_t)s->size + (size_t)to) * s->l.ring;
}

/* ---- bells, liveness, abort ---- */

static void ring_bell(shm_comm *s, int r) {
    ctl_rank *k = &s->ranks[r];
    atomic_fetch_add(&k->bell, 1);
    if (atomic_load(&k->sleeping)) syscall(SYS_futex, (uint32_t *)&k->bell, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Sleeps until this rank's bell moves past `seen` or secs pass, at most SLICE_S (the callers' liveness
 * and replacement checks run between slices). */
static void bell_wait(shm_comm *s, uint32_t seen, double secs) {
    ctl_rank *me = &s->ranks[s->rank];
    if (secs > SLICE_S) secs = SLICE_S;
    if (secs <= 0) return;
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    atomic_store(&me->sleeping, 1);
    syscall(SYS_futex, (uint32_t *)&me->bell, FUTEX_WAIT, seen, &ts, NULL, 0);
    atomic_store(&me->sleeping, 0);
}

static bool is_aborted(shm_comm *s) { return atomic_load(&s->h->abort_state) != 0; }

static pd_status abort_error(shm_comm *s, pd_status st, const char *what) {
    for (int i = 0; i < 100000 && atomic_load(&s->h->abort_state) == 1; i++) sched_yield();
    const char *why = atomic_load(&s->h->abort_state) == 2 ? s->h->abort_why : "(reason not recorded)";
    return pd_error_set(st, "%s: group aborted: %s", what, why);
}

static void shm_abort_raw(shm_comm *s, const char *why) {
    uint32_t none = 0;
    if (atomic_compare_exchange_strong(&s->h->abort_state, &none, 1)) {
        snprintf(s->h->abort_why, sizeof s->h->abort_why, "rank %d: %s", s->rank, why);
        atomic_store(&s->h->abort_state, 2);
    }
    for (int r = 0; r < s->size; r++) ring_bell(s, r);
}

static void shm_abort(pd_comm *c, const char *why) { shm_abort_raw(c->impl, why); }

/* PD_OK while peer p lives; PD_ERR_DEVICE naming it once it died or left. A dead owner's robust
 * mutex answers EOWNERDEAD to the first prober, who leaves it unrecoverable (unlock without
 * pthread_mutex_consistent) so every later probe gets ENOTRECOVERABLE. */
static pd_status check_alive(shm_comm *s, const char *what, int p) {
    ctl_rank *k = &s->ranks[p];
    int pid = atomic_load(&k->pid);
    if (!atomic_load(&k->dead) && !atomic_load(&k->left)) {
        int e = pthread_mutex_trylock(&k->alive);
        if (e == EOWNERDEAD) {
            atomic_store(&k->dead, 1);
            pthread_mutex_unlock(&k->alive);
        } else if (e == ENOTRECOVERABLE) {
            atomic_store(&k->dead, 1);
        } else if (e == 0) {
            pthread_mutex_unlock(&k->alive); /* not held: it left, or its thread is not up yet */
        }
    }
    if (atomic_load(&k->dead)) return pd_error_set(PD_ERR_DEVICE, "%s: rank %d (pid %d) died", what, p, pid);
    if (atomic_load(&k->left)) return pd_error_set(PD_ERR_DEVICE, "%s: rank %d (pid %d) left the group", what, p, pid);
    return PD_OK;
}

/* ---- moving bytes ---- */

static size_t min3(size_t a, size_t b, size_t c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }

/* Header or payload bytes of x still to move (push and pull never move past the end). */
static bool pending(const xfer *x) { return x->done < sizeof(msg_hdr) + x->n; }

/* Writes what fits of x's header and payload into the ring to x->peer; returns the bytes moved. */
static size_t push(shm_comm *s, xfer *x) {
    chan *ch = chan_of(s, s->rank, x->peer);
    uint8_t *ring = ring_of(s, s->rank, x->peer);
    size_t R = s->l.ring, total = sizeof(msg_hdr) + x->n, moved = 0;
    uint64_t head = atomic_load_explicit(&ch->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&ch->tail, memory_order_acquire);
    while (x->done < total) {
        size_t space = R - (size_t)(head - tail);
        if (!space) break;
        const uint8_t *src = x->done < sizeof(msg_hdr) ? (const uint8_t *)&x->h + x->done : x->src + (x->done - sizeof(msg_hdr));
        size_t len = x->done < sizeof(msg_hdr) ? sizeof(msg_hdr) - x->done : total - x->done;
        size_t k = min3(len, space, R / 4); /* quarter-ring chunks: the reader starts early */
        size_t off = (size_t)(head % R), first = k < R - off ? k : R - off;
        memcpy(ring + off, src, first);
        if (k > first) memcpy(ring, src + first, k - first);
        head += k;
        x->done += k;
        moved += k;
        atomic_store_explicit(&ch->head, head, memory_order_release);
        ring_bell(s, x->peer);
    }
    return moved;
}

static pd_status check_header(const xfer *x, pd_comm_op op, const char *what) {
    pd_comm_op want = op == PD_COMM_RECV ? PD_COMM_SEND : op;
    if ((x->h.magic_op & 0xffff0000u) != MSG_MAGIC)
        return pd_error_set(PD_ERR_DEVICE, "%s: corrupt stream from rank %d", what, x->peer);
    pd_comm_op got = (pd_comm_op)(x->h.magic_op & 0xffffu);
    if (got != want)
        return pd_error_set(PD_ERR_DEVICE, "%s: rank %d called %s where this rank called %s (calls out of order)", what,
                            x->peer, got == PD_COMM_SEND ? "send" : pd_comm_op_name(got), pd_comm_op_name(op));
    if (x->h.seq != x->want_seq)
        return pd_error_set(PD_ERR_DEVICE, "%s: message %llu from rank %d where %llu was due", what,
                            (unsigned long long)x->h.seq, x->peer, (unsigned long long)x->want_seq);
    if (x->h.bytes != x->n)
        return pd_error_set(PD_ERR_DEVICE, "%s: rank %d sends %llu bytes, this rank expects %zu from it", what, x->peer,
                            (unsigned long long)x->h.bytes, x->n);
    return PD_OK;
}

/* Reads what has arrived from x->peer; checks the header once it is complete. */
static pd_status pull(shm_comm *s, xfer *x, pd_comm_op op, const char *what, size_t *moved) {
    chan *ch = chan_of(s, x->peer, s->rank);
    const uint8_t *ring = ring_of(s, x->peer, s->rank);
    size_t R = s->l.ring, total = sizeof(msg_hdr) + x->n;
    uint64_t tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&ch->head, memory_order_acquire);
    *moved = 0;
    while (x->done < total && head != tail) {
        bool in_hdr = x->done < sizeof(msg_hdr);
        uint8_t *dst = in_hdr ? (uint8_t *)&x->h + x->done : x->dst + (x->done - sizeof(msg_hdr));
        size_t len = in_hdr ? sizeof(msg_hdr) - x->done : total - x->done;
        size_t k = min3(len, (size_t)(head - tail), R / 4);
        size_t off = (size_t)(tail % R), first = k < R - off ? k : R - off;
        memcpy(dst, ring + off, first);
        if (k > first) memcpy(dst + first, ring, k - first);
        tail += k;
        x->done += k;
        *moved += k;
        atomic_store_explicit(&ch->tail, tail, memory_order_release);
        ring_bell(s, x->peer);
        if (in_hdr && x->done == sizeof(msg_hdr)) PD_TRY(check_header(x, op, what));
    }
    return PD_OK;
}

/* Runs the transfers out[] and in[] together until all are done, the group aborts, a pending peer is
 * found dead, or nothing moves for the timeout. */
static pd_status move(shm_comm *s, pd_comm_op op, xfer *out, int no, xfer *in, int ni) {
    const char *what = pd_comm_op_name(op);
    ctl_rank *me = &s->ranks[s->rank];
    double last = pd_now_s(), last_check = last;
    bool recheck = false;
    for (;;) {
        uint32_t seen = atomic_load(&me->bell);
        if (is_aborted(s)) return abort_error(s, PD_ERR_DEVICE, what);
        bool progress = false;
        int waiting_on = -1;
        for (int i = 0; i < no; i++) {
            if (!pending(&out[i])) continue;
            progress |= push(s, &out[i]) > 0;
            if (pending(&out[i]) && waiting_on < 0) waiting_on = out[i].peer;
        }
        for (int i = 0; i < ni; i++) {
            if (!pending(&in[i])) continue;
            size_t moved;
            PD_TRY(pull(s, &in[i], op, what, &moved));
            progress |= moved > 0;
            if (pending(&in[i]) && waiting_on < 0) waiting_on = in[i].peer;
        }
        if (waiting_on < 0) return PD_OK;
        double t = pd_now_s();
        if (progress) {
            last = t;
            continue;
        }
        if (recheck || t - last_check >= SLICE_S) {
            last_check = t;
            pd_status st = PD_OK;
            for (int i = 0; i < no && !st; i++)
                if (pending(&out[i])) st = check_alive(s, what, out[i].peer);
            for (int i = 0; i < ni && !st; i++)
                if (pending(&in[i])) st = check_alive(s, what, in[i].peer);
            /* A peer may write its last bytes and leave between our pass and this check: one more pass. */
            if (st && recheck) return st;
            recheck = st != PD_OK;
            if (recheck) continue;
        }
        if (t - last >= s->timeout)
            return pd_error_set(PD_ERR_TIMEOUT, "%s: timed out after %.1f s waiting for rank %d (pid %d)", what,
                                s->timeout, waiting_on, (int)atomic_load(&s->ranks[waiting_on].pid));
        bell_wait(s, seen, s->timeout - (t - last));
    }
}

static void add_out(shm_comm *s, xfer *x, pd_comm_op op, int peer, const void *src, size_t n) {
    *x = (xfer){.peer = peer, .n = n, .src = src};
    x->h.magic_op = MSG_MAGIC | (uint32_t)op;
    x->h.seq = s->out_seq[peer]++;
    x->h.bytes = n;
}

static void add_in(shm_comm *s, xfer *x, int peer, void *dst, size_t n) {
    *x = (xfer){.peer = peer, .n = n, .dst = dst};
    x->want_seq = s->in_seq[peer]++;
}

static pd_status run_op(shm_comm *s, pd_comm_req *r) {
    xfer out[PD_COMM_MAX_RANKS], in[PD_COMM_MAX_RANKS];
    int no = 0, ni = 0, me = s->rank;
    uint8_t *recv = r->recv;
    switch (r->op) {
    case PD_COMM_ALLTOALLV:
        for (int p = 0; p < s->size; p++) {
            if (p == me) {
                if (r->send_bytes[p])
                    memmove(recv + r->recv_off[p], pd_comm__at(r->send, r->send_off[p]), r->send_bytes[p]);
                continue;
            }
            add_out(s, &out[no++], r->op, p, pd_comm__at(r->send, r->send_off[p]), r->send_bytes[p]);
            add_in(s, &in[ni++], p, (uint8_t *)pd_comm__at(recv, r->recv_off[p]), r->recv_bytes[p]);
        }
        break;
    case PD_COMM_ALLGATHER:
        if (r->bytes) memmove(recv + (size_t)me * r->bytes, r->send, r->bytes);
        for (int p = 0; p < s->size; p++) {
            if (p == me) continue;
            add_out(s, &out[no++], r->op, p, r->send, r->bytes);
            add_in(s, &in[ni++], p, (uint8_t *)pd_comm__at(recv, (size_t)p * r->bytes), r->bytes);
        }
        break;
    case PD_COMM_BROADCAST:
        if (me == r->peer) {
            for (int p = 0; p < s->size; p++)
                if (p != me) add_out(s, &out[no++], r->op, p, recv, r->bytes);
        } else {
            add_in(s, &in[ni++], r->peer, recv, r->bytes);
        }
        break;
    case PD_COMM_SEND: add_out(s, &out[no++], r->op, r->peer, r->send, r->bytes); break;
    case PD_COMM_RECV: add_in(s, &in[ni++], r->peer, recv, r->bytes); break;
    case PD_COMM_BARRIER:
        /* Headers alone: nobody leaves before every rank's header arrived. */
        for (int p = 0; p < s->size; p++) {
            if (p == me) continue;
            add_out(s, &out[no++], r->op, p, NULL, 0);
            add_in(s, &in[ni++], p, NULL, 0);
        }
        break;
    }
    return move(s, r->op, out, no, in, ni);
}

/* ---- the communication thread ---- */

static void *comm_thread(void *arg) {
    shm_comm *s = arg;
    ctl_rank *me = &s->ranks[s->rank];
    int e = pthread_mutex_lock(&me->alive);
    if (e == EOWNERDEAD) pthread_mutex_consistent(&me->alive); /* a stale segment's slot; it is replaced */
    pthread_mutex_lock(&s->qmu);
    s->holding = e == 0 || e == EOWNERDEAD;
    s->thread_on = true;
    pthread_cond_broadcast(&s->qcv);
    for (;;) {
        while (!s->qhead && !s->stop) pthread_cond_wait(&s->qcv, &s->qmu);
        pd_comm_req *r = s->qhead;
        if (!r) break;
        s->qhead = r->next;
        if (!s->qhead) s->qtail = NULL;
        s->running = true;
        pthread_mutex_unlock(&s->qmu);
        pd_status st = run_op(s, r);
        if (st) pd_comm__req_fail(r, st);
        pthread_mutex_lock(&s->qmu);
        s->running = false;
        atomic_store(&r->done, 1);
        pthread_cond_broadcast(&s->qcv);
    }
    pthread_mutex_unlock(&s->qmu);
    atomic_store(&me->left, 1);
    if (s->holding) pthread_mutex_unlock(&me->alive);
    return NULL;
}

static pd_status start_thread(shm_comm *s) {
    s->stop = false;
    s->thread_on = false;
    if (pthread_create(&s->thread, NULL, comm_thread, s) != 0)
        return pd_error_set(PD_ERR_NOMEM, "comm shm %s: cannot start the communication thread", s->seg);
    pthread_mutex_lock(&s->qmu);
    while (!s->thread_on) pthread_cond_wait(&s->qcv, &s->qmu);
    pthread_mutex_unlock(&s->qmu);
    return PD_OK;
}

/* Lets the thread finish its queue (each request ends by its own deadline), then joins it. */
static void stop_thread(shm_comm *s) {
    if (!s->thread_on) return;
    pthread_mutex_lock(&s->qmu);
    s->stop = true;
    pthread_cond_broadcast(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
    pthread_join(s->thread, NULL);
    s->thread_on = false;
}

static pd_status shm_start(pd_comm *c, pd_comm_req *r) {
    shm_comm *s = c->impl;
    pthread_mutex_lock(&s->qmu);
    r->next = NULL;
    if (s->qtail) s->qtail->next = r;
    else s->qhead = r;
    s->qtail = r;
    pthread_cond_broadcast(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
    return PD_OK;
}

/* A blocking call with nothing queued or moving runs here, saving two thread hand-offs; otherwise it
 * queues behind the asynchronous calls issued before it. Calls are issued by one thread at a time,
 * so nothing can be queued while it runs. */
static bool shm_try_run(pd_comm *c, pd_comm_req *r, pd_status *st) {
    shm_comm *s = c->impl;
    pthread_mutex_lock(&s->qmu);
    bool idle = !s->qhead && !s->running;
    s->running |= idle;
    pthread_mutex_unlock(&s->qmu);
    if (!idle) return false;
    *st = run_op(s, r);
    pthread_mutex_lock(&s->qmu);
    s->running = false;
    pthread_mutex_unlock(&s->qmu);
    return true;
}

/* Waits until the communication thread is done with r (in an aborted group it fails queued work at once). */
static void shm_wait_done(shm_comm *s, pd_comm_req *r) {
    pthread_mutex_lock(&s->qmu);
    while (!atomic_load(&r->done)) pthread_cond_wait(&s->qcv, &s->qmu);
    pthread_mutex_unlock(&s->qmu);
}

static pd_status shm_finish(pd_comm *c, pd_comm_req *r) {
    shm_wait_done(c->impl, r);
    return r->status ? pd_error_set(r->status, "%s", r->err) : PD_OK;
}

static void shm_drop(pd_comm *c, pd_comm_req *r) { shm_wait_done(c->impl, r); }

/* ---- joining ---- */

static void detach(shm_comm *s) {
    stop_thread(s);
    if (s->base) munmap(s->base, s->l.total);
    s->base = NULL;
}

static int first_missing(shm_comm *s) {
    for (int r = 0; r < s->size; r++)
        if (!atomic_load(&s->ranks[r].joined)) return r;
    return -1;
}

static pd_status join_timeout(shm_comm *s, const char *waiting_for) {
    pd_status st = pd_error_set(PD_ERR_TIMEOUT, "create: timed out after %.1f s waiting for %s (group %s, rank %d of %d)",
                                s->timeout, waiting_for, s->seg, s->rank, s->size);
    if (s->base) shm_abort_raw(s, pd_error_msg());
    return st;
}

/* Marks this rank joined (its thread already holds its alive mutex). */
static pd_status register_self(shm_comm *s) {
    PD_TRY(start_thread(s));
    atomic_store(&s->ranks[s->rank].pid, (int32_t)getpid());
    atomic_store(&s->ranks[s->rank].joined, 1);
    ring_bell(s, 0);
    return PD_OK;
}

static pd_status create_segment(shm_comm *s, double deadline) {
    pd_shm_unlink(s->seg); /* a crashed run's segment: its ranks are gone or will notice it was replaced */
    void *base;
    PD_TRY(pd_shm_map_new(s->seg, s->l.total, &base));
    set_base(s, base);
    ctl_head *h = s->h;
    h->version = CTL_VERSION;
    h->size = s->size;
    h->ring_bytes = s->l.ring;
    h->total_bytes = s->l.total;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    for (int r = 0; r < s->size; r++) pthread_mutex_init(&s->ranks[r].alive, &a);
    pthread_mutexattr_destroy(&a);
    PD_TRY(register_self(s));
    atomic_store(&h->magic, CTL_MAGIC);
    for (;;) {
        uint32_t seen = atomic_load(&s->ranks[0].bell);
        int missing = first_missing(s);
        if (missing < 0) break;
        if (is_aborted(s)) return abort_error(s, PD_ERR_TIMEOUT, "create");
        double t = pd_now_s();
        if (t >= deadline) {
            char w[48];
            snprintf(w, sizeof w, "rank %d to join", missing);
            return join_timeout(s, w);
        }
        bell_wait(s, seen, deadline - t);
    }
    atomic_store(&h->started, 1);
    for (int r = 1; r < s->size; r++) ring_bell(s, r);
    return PD_OK;
}

/* 1: mapped a live, not yet started segment of this group's shape; 0: not there yet (why says what
 * is awaited); negative: an error. */
static int try_attach(shm_comm *s, const char **why) {
    int fd = shm_open(s->seg, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT) return *why = "rank 0 to create the group", 0;
        return pd_error_set(PD_ERR_IO, "comm shm %s: open: %s", s->seg, strerror(errno));
    }
    struct stat sb;
    void *base = MAP_FAILED;
    if (fstat(fd, &sb) == 0 && (size_t)sb.st_size == s->l.total)
        base = mmap(NULL, s->l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return *why = "rank 0 to size the segment (a group of another size holds the name?)", 0;
    ctl_head *h = base;
    if (atomic_load(&h->magic) != CTL_MAGIC || h->version != CTL_VERSION || h->size != s->size) {
        munmap(base, s->l.total);
        return *why = "rank 0 to initialise the group", 0;
    }
    /* A started or aborted segment belongs to an earlier run: wait for rank 0 to replace it. */
    if (atomic_load(&h->started) || atomic_load(&h->abort_state)) {
        munmap(base, s->l.total);
        return *why = "rank 0 to replace a stale segment", 0;
    }
    s->ino = sb.st_ino;
    set_base(s, base);
    return 1;
}

static bool replaced(shm_comm *s) {
    int fd = shm_open(s->seg, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return true;
    struct stat sb;
    bool same = fstat(fd, &sb) == 0 && sb.st_ino == s->ino;
    close(fd);
    return !same;
}

static pd_status join_segment(shm_comm *s, double deadline) {
    const char *why = "rank 0 to create the group";
    for (;;) {
        if (pd_now_s() >= deadline) return join_timeout(s, why);
        int a = try_attach(s, &why);
        if (a < 0) return (pd_status)a;
        if (a == 0) {
            nanosleep(&(struct timespec){0, 2000000}, NULL);
            continue;
        }
        PD_TRY(register_self(s));
        for (;;) {
            uint32_t seen = atomic_load(&s->ranks[s->rank].bell);
            if (atomic_load(&s->h->started)) return PD_OK;
            /* Only a join that timed out aborts a group still forming. */
            if (is_aborted(s)) return abort_error(s, PD_ERR_TIMEOUT, "create");
            if (replaced(s)) break;
            double t = pd_now_s();
            if (t >= deadline) {
                char w[48];
                int missing = first_missing(s);
                if (missing < 0) snprintf(w, sizeof w, "rank 0 to start the group");
                else snprintf(w, sizeof w, "rank %d to join", missing);
                return join_timeout(s, w);
            }
            bell_wait(s, seen, deadline - t);
        }
        detach(s); /* joined a stale segment that rank 0 has since replaced: join the new one */
        memset(s->out_seq, 0, sizeof s->out_seq);
        memset(s->in_seq, 0, sizeof s->in_seq);
    }
}

static void shm_free(shm_comm *s) {
    detach(s);
    if (s->rank == 0) pd_shm_unlink(s->seg);
    pthread_cond_destroy(&s->qcv);
    pthread_mutex_destroy(&s->qmu);
    free(s);
}

static void segment_name(char *out, size_t n, const char *name) { snprintf(out, n, "/pd-comm-%s", name); }

void pd_comm_shm_unlink(const char *name) {
    char seg[96];
    segment_name(seg, sizeof seg, name);
    pd_shm_unlink(seg);
}

pd_status pd_comm__shm_open(pd_comm *c, const char *name) {
    shm_comm *s = calloc(1, sizeof *s);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "comm shm %s: out of memory", name);
    segment_name(s->seg, sizeof s->seg, name);
    s->rank = c->rank;
    s->size = c->size;
    s->timeout = c->timeout_s;
    s->l = layout_for(c->size);
    pthread_mutex_init(&s->qmu, NULL);
    pthread_cond_init(&s->qcv, NULL);
    double deadline = pd_now_s() + c->timeout_s;
    pd_status st = s->rank == 0 ? create_segment(s, deadline) : join_segment(s, deadline);
    if (st) {
        shm_free(s);
        return st;
    }
    c->impl = s;
    return PD_OK;
}

static void shm_destroy(pd_comm *c) {
    shm_free(c->impl);
    c->impl = NULL;
}

const pd_comm_ops pd_comm__shm_backend = {
    .name = "shm",
    .start = shm_start,
    .finish = shm_finish,
    .drop = shm_drop,
    .try_run = shm_try_run,
    .abort = shm_abort,
    .destroy = shm_destroy,
};
