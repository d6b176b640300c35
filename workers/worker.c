#include "workers/worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "comm/shm.h"
#include "models/wan/aco.h"

typedef struct worker_options {
    const char *socket_path;
    pd_worker_role role;
    const char *model_dir;
    int threads;              /* CPU backend threads (>= 1) */
    const char *device;       /* backend: "cpu" (default), "cuda" or "cuda:N" */
} worker_options;

/* All of one worker process's state. */
typedef struct worker {
    const worker_options *opt;
    const pd_worker_stages *st;
    int fd;
    int heartbeat_ms;
    pthread_mutex_t send_mu;  /* main, reader and heartbeat threads all send */
    pthread_mutex_t mu;       /* guards the mailbox and current_job */
    pthread_cond_t cv;
    pd_msg *mail;             /* the next ASSIGN or GROUP (the scheduler sends one at a time) */
    bool has_mail;
    bool stop;                /* SHUTDOWN, connection lost or protocol error */
    char current_job[PD_PROTO_ID_MAX];
    double deadline;          /* of the current job, CLOCK_REALTIME seconds (0: none) */
    atomic_int cancel;        /* the stop flag of the current job (PD_STOP_*) */
    _Atomic uint64_t ticks;   /* progress counter: bumped whenever a stage advances; heartbeats carry it */
    pd_msg *rx;               /* reader thread's message buffer */
    pd_proto_reader *reader;
    uint32_t group_gen;       /* SP group generation joined (0: none) */
    /* progress of the running stage */
    const char *job_id;
    pd_msg *tx;               /* main thread's message buffer */
    double assigned_at;       /* when the running ASSIGN arrived (reader thread) */
    pd_msg_aco aco;           /* what the running stage's Aco did, for its DONE */
    /* Aco, helper side: the serving thread and the flags a decode shares with it */
    pd_msg *aco_serve_msg;    /* the session being served (the thread's) */
    pd_comm *aco_serve_comm;  /* its communicator while it serves (under mu: aborted on stop) */
    pthread_t aco_thread;
    bool aco_thread_live;
    atomic_bool aco_decline, aco_lending;
    /* Aco, lender side: a session handed over by the reader (under mu) and the one in use */
    pd_msg *aco_lend_mail, *aco_lend_cur; /* handed over (under mu), taken */
    atomic_bool aco_lend_pending;
    pd_comm *aco_comm;
    pd_aco_lender *lender;
} worker;

/* The model parts (PD_PART_* bits) a role loads: denoise -> TEXT | DIT (a denoise worker encodes its
 * job's prompts right before denoising), decode -> VAE, all -> everything. */
static unsigned role_parts(pd_worker_role role) {
    switch (role) {
    case PD_ROLE_DENOISE: return PD_PART_TEXT | PD_PART_DIT;
    case PD_ROLE_DECODE: return PD_PART_VAE;
    case PD_ROLE_ALL:
    case PD_ROLE_COUNT: break;
    }
    return PD_PART_ALL;
}

static pd_status wsend(worker *w, const pd_msg *m) {
    pthread_mutex_lock(&w->send_mu);
    pd_status st = pd_proto_send(w->fd, m);
    pthread_mutex_unlock(&w->send_mu);
    return st;
}

/* Stops the running stage for `why` (PD_STOP_*) unless it is already stopping for another reason. */
static void stop_job(worker *w, int why) {
    int run = PD_STOP_NONE;
    atomic_compare_exchange_strong(&w->cancel, &run, why);
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void set_stop(worker *w) {
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    stop_job(w, PD_STOP_CANCEL);
    if (w->aco_serve_comm) pd_comm_abort(w->aco_serve_comm, "the worker is stopping");
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}


/* ---- Aco ---- */

/* Joins the pair communicator an ACO names as `rank` (0 lends, 1 serves). */
static pd_status aco_join(const worker *w, const pd_msg *a, int rank, pd_comm **out) {
    if (!a->comm_nccl) return pd_comm_shm_create(a->comm_name, rank, 2, a->comm_timeout_s, out);
    int dev = pd_backend_spec_device(w->opt->device);
    return pd_comm_nccl_create(a->nccl_ids[0], rank, 2, dev < 0 ? 0 : dev, a->comm_timeout_s, out);
}

/* The helper's thread: serve the session until the lender finishes or the pair fails; ACO_DONE. */
static void *aco_serve_main(void *arg) {
    worker *w = arg;
    const pd_msg *a = w->aco_serve_msg;
    pd_aco_serve_stats ss = {0};
    pd_comm *c = NULL;
    pd_backend *be = w->st->backend ? w->st->backend(w->st->self) : NULL;
    const char *fault = getenv("PIPEDIT_ACO_FAULT_AFTER"); /* tests: the helper dies mid-lend */
    pd_aco_serve_options o = {.decline = &w->aco_decline, .lending = &w->aco_lending,
                              .kill_after = fault && *fault ? atoi(fault) : 0};
    pd_status st = be ? aco_join(w, a, 1, &c)
                      : pd_error_set(PD_ERR_UNSUPPORTED, "this worker's stages cannot serve Aco lends");
    pthread_mutex_lock(&w->mu);
    if (st == PD_OK && w->stop) st = pd_error_set(PD_ERR_CANCELLED, "the worker is stopping");
    w->aco_serve_comm = c;
    pthread_mutex_unlock(&w->mu);
    if (st == PD_OK) st = pd_aco_serve(c, 0, be, &o, &ss);
    pthread_mutex_lock(&w->mu);
    w->aco_serve_comm = NULL;
    pthread_mutex_unlock(&w->mu);
    pd_comm_destroy(c);
    pd_msg m;
    pd_msg_init(&m, PD_MSG_ACO_DONE);
    m.aco_seq = a->aco_seq;
    m.aco = (pd_msg_aco){.lends = ss.lends, .declined = ss.declined, .heads_lent = ss.heads, .wait_s = ss.compute_s,
                         .lend_max_s = ss.compute_max_s,
                         .failed = st != PD_OK};
    if (st != PD_OK) {
        snprintf(m.code, sizeof m.code, "%s", pd_status_name(st));
        snprintf(m.message, sizeof m.message, "%s", pd_error_msg());
        PD_WARN("worker", "pid %d: Aco session %u ended: %s", (int)getpid(), a->aco_seq, pd_error_msg());
    }
    wsend(w, &m);
    return NULL;
}

/* An ACO from the scheduler (reader thread). */
static void aco_on_msg(worker *w, const pd_msg *m) {
    if (m->aco_serve) {
        if (w->aco_thread_live) pthread_join(w->aco_thread, NULL); /* it sent ACO_DONE: it is ending */
        w->aco_thread_live = false;
        memcpy(w->aco_serve_msg, m, sizeof *m);
        if (pthread_create(&w->aco_thread, NULL, aco_serve_main, w) == 0) {
            w->aco_thread_live = true;
            return;
        }
        pd_msg d;
        pd_msg_init(&d, PD_MSG_ACO_DONE);
        d.aco_seq = m->aco_seq;
        d.aco.failed = 1;
        snprintf(d.code, sizeof d.code, "nomem");
        snprintf(d.message, sizeof d.message, "cannot start the Aco thread");
        wsend(w, &d);
        return;
    }
    pthread_mutex_lock(&w->mu);
    memcpy(w->aco_lend_mail, m, sizeof *m); /* a newer session replaces one never taken */
    atomic_store(&w->aco_lend_pending, true);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Ends the lender's session: tells the helper to return, keeps the counts for the stage's DONE. */
static void aco_lend_end(worker *w) {
    if (w->lender) {
        pd_aco_lender_finish(w->lender);
        pd_aco_stats a;
        pd_aco_lender_stats(w->lender, &a);
        w->aco.calls += a.calls;
        w->aco.lends += a.lends;
        w->aco.declined += a.declined;
        w->aco.heads_total += a.heads_total;
        w->aco.heads_lent += a.heads_lent;
        w->aco.wait_s += a.lend_wait_s;
        w->aco.failed |= a.failed;
        pd_aco_lender_free(w->lender);
        w->lender = NULL;
    }
    pd_comm_destroy(w->aco_comm);
    w->aco_comm = NULL;
}

/* Takes a session the reader handed over: joins it, and lends from now on when it belongs to the
 * running denoise stage (job_id), or finishes it at once otherwise. */
static void aco_lend_take(worker *w, const char *job_id) {
    pd_msg *a = w->aco_lend_cur;
    pthread_mutex_lock(&w->mu);
    memcpy(a, w->aco_lend_mail, sizeof *a);
    atomic_store(&w->aco_lend_pending, false);
    pthread_mutex_unlock(&w->mu);
    aco_lend_end(w);
    pd_backend *be = w->st->backend ? w->st->backend(w->st->self) : NULL;
    if (!be) return; /* READY said so: the scheduler pairs no such worker */
    pd_status st = aco_join(w, a, 0, &w->aco_comm);
    const bool use = st == PD_OK && be && job_id && !strcmp(job_id, a->job_id);
    if (use) st = pd_aco_lender_create(w->aco_comm, 1, be, a->aco_share, &w->lender);
    if (st != PD_OK) {
        PD_WARN("worker", "pid %d: Aco session %u not joined, computing every head here: %s", (int)getpid(),
                a->aco_seq, pd_error_msg());
        if (w->aco_comm) pd_comm_abort(w->aco_comm, "aco: the lender could not start");
        aco_lend_end(w);
        return;
    }
    if (use) return;
    /* Not for a running denoise: release the helper at once. */
    pd_aco_lender *l;
    if (pd_aco_lender_create(w->aco_comm, 1, be, 0, &l) == PD_OK) {
        pd_aco_lender_finish(l);
        pd_aco_lender_free(l);
    } else {
        pd_comm_abort(w->aco_comm, "aco: no stage to lend from");
    }
    aco_lend_end(w);
}

/* The DiT's self-attention while a denoise runs: joins a session handed over, lends while in one. */
static pd_status aco_attention(void *ud, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                               float scale) {
    worker *w = ud;
    if (atomic_load(&w->aco_lend_pending)) aco_lend_take(w, w->job_id);
    if (w->lender) return pd_aco_attention(w->lender, out, q, k, v, scale);
    return pd_op_attention(w->st->backend(w->st->self), out, q, k, v, NULL, scale);
}

static void *reader_main(void *arg) {
    worker *w = arg;
    for (;;) {
        pd_status st = pd_proto_recv(w->fd, w->reader, w->rx, -1);
        if (st) {
            if (st != PD_ERR_IO) PD_WARN("worker", "dropping the scheduler: %s", pd_error_msg());
            break;
        }
        pd_msg *m = w->rx;
        if (m->kind == PD_MSG_SHUTDOWN) break;
        if (m->kind == PD_MSG_CANCEL) {
            pthread_mutex_lock(&w->mu);
            if (!strcmp(m->job_id, w->current_job)) stop_job(w, PD_STOP_CANCEL);
            pthread_mutex_unlock(&w->mu);
            continue;
        }
        if (m->kind == PD_MSG_ACO) {
            aco_on_msg(w, m);
            continue;
        }
        if (m->kind == PD_MSG_ASSIGN || m->kind == PD_MSG_GROUP) {
            /* Decoding comes first: the helper declines from its next request on. */
            if (m->kind == PD_MSG_ASSIGN && m->stage == PD_STAGE_DECODE) atomic_store(&w->aco_decline, true);
            pthread_mutex_lock(&w->mu);
            bool busy = w->has_mail;
            if (!busy) {
                memcpy(w->mail, m, sizeof *m);
                w->has_mail = true;
                w->assigned_at = pd_now_s();
                snprintf(w->current_job, sizeof w->current_job, "%s", m->job_id);
                w->deadline = m->kind == PD_MSG_ASSIGN ? m->deadline : 0;
                atomic_store(&w->cancel, PD_STOP_NONE);
                pthread_cond_broadcast(&w->cv);
            }
            pthread_mutex_unlock(&w->mu);
            if (busy) {
                PD_WARN("worker", "protocol error: a second ASSIGN or GROUP (%s) before the first was taken", m->job_id);
                break;
            }
            continue;
        }
        PD_WARN("worker", "protocol error: unexpected message kind %d from the scheduler", (int)m->kind);
        break;
    }
    set_stop(w);
    return NULL;
}

/* Sends HEARTBEAT every heartbeat_ms and stops the current job at its deadline (woken early by
 * every new assignment, so a nearer deadline is seen at once). */
static void *heartbeat_main(void *arg) {
    worker *w = arg;
    pd_msg hb;
    pd_msg_init(&hb, PD_MSG_HEARTBEAT);
    pthread_mutex_lock(&w->mu);
    double next_hb = wall_now() + w->heartbeat_ms / 1000.0;
    while (!w->stop) {
        double wake = w->deadline > 0 && w->deadline < next_hb ? w->deadline : next_hb;
        struct timespec ts = {.tv_sec = (time_t)wake, .tv_nsec = (long)((wake - (double)(time_t)wake) * 1e9)};
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        if (w->stop) break;
        const double now = wall_now();
        if (w->deadline > 0 && now >= w->deadline) {
            PD_INFO("worker", "job %s: deadline passed; stopping it", w->current_job);
            stop_job(w, PD_STOP_DEADLINE);
            w->deadline = 0;
        }
        if (now < next_hb) continue;
        next_hb = now + w->heartbeat_ms / 1000.0;
        pthread_mutex_unlock(&w->mu);
        hb.ticks = atomic_load(&w->ticks);
        pd_status st = wsend(w, &hb);
        pthread_mutex_lock(&w->mu);
        if (st) break;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void pd_worker_note_progress(void *progress_ud) {
    worker *w = progress_ud;
    if (w) atomic_fetch_add(&w->ticks, 1);
}

static void on_progress(void *ud, pd_stage stage, int step, int total) {
    worker *w = ud;
    pd_worker_note_progress(w);
    pd_msg *m = w->tx;
    pd_msg_init(m, PD_MSG_PROGRESS);
    snprintf(m->job_id, sizeof m->job_id, "%s", w->job_id);
    m->stage = stage;
    m->step = step;
    m->total = total;
    wsend(w, m); /* a lost connection shows up in the reader thread, which sets cancel */
}

static void no_progress(void *ud, pd_stage stage, int step, int total) {}

/* A rank other than the leader: its steps reach the scheduler only through the heartbeat's counter. */
static void count_progress(void *ud, pd_stage stage, int step, int total) { pd_worker_note_progress(ud); }

static pd_status check_cancel(worker *w) { return pd_stop_check(&w->cancel, "in the text stage"); }

/* text: prompt (and negative prompt under CFG) -> contexts in shared memory. */
static pd_status run_text(worker *w, const pd_gen_params *p, const pd_msg *a) {
    pd_tensor ctx = {0};
    pd_shm seg;
    PD_TRY(w->st->encode_text(w->st->self, p->prompt, &ctx));
    pd_worker_note_progress(w);
    pd_status st = pd_shm_create_from(a->shm_cond, &ctx, &seg);
    pd_tensor_free(&ctx);
    PD_TRY(st);
    pd_shm_close(&seg);
    if (p->guidance <= 1.0f) return check_cancel(w);
    PD_TRY(check_cancel(w));
    PD_TRY(w->st->encode_text(w->st->self, p->negative_prompt ? p->negative_prompt : "", &ctx));
    pd_worker_note_progress(w);
    st = pd_shm_create_from(a->shm_uncond, &ctx, &seg);
    pd_tensor_free(&ctx);
    PD_TRY(st);
    pd_shm_close(&seg);
    return check_cancel(w);
}

static pd_status run_denoise(worker *w, const pd_gen_params *p, const pd_msg *a) {
    if (a->group_gen != w->group_gen)
        return pd_error_set(PD_ERR_INVALID, "job %s expects SP group generation %u, this worker is in %u", a->job_id,
                            a->group_gen, w->group_gen);
    pd_shm cond = {0}, uncond = {0}, out = {0};
    pd_tensor latent = {0};
    const bool leader = a->rank == 0;
    const bool aco = w->st->backend && w->st->set_self_attention;
    pd_status st = pd_shm_open(a->shm_cond, &cond);
    if (!st && p->guidance > 1.0f) st = pd_shm_open(a->shm_uncond, &uncond);
    if (!st && aco) w->st->set_self_attention(w->st->self, aco_attention, w);
    if (!st)
        st = w->st->denoise(w->st->self, p, &cond.tensor, p->guidance > 1.0f ? &uncond.tensor : NULL, &latent,
                            leader ? on_progress : count_progress, w, &w->cancel);
    if (aco) {
        w->st->set_self_attention(w->st->self, NULL, NULL);
        if (atomic_load(&w->aco_lend_pending)) aco_lend_take(w, NULL); /* arrived too late: release it */
        aco_lend_end(w);
    }
    if (!st && leader) st = pd_shm_create_from(a->shm_latent, &latent, &out);
    pd_tensor_free(&latent);
    pd_shm_close(&out);
    pd_shm_close(&uncond);
    pd_shm_close(&cond);
    return st;
}

static pd_status run_decode(worker *w, const pd_gen_params *p, const pd_msg *a) {
    /* The reader set the decline flag when the ASSIGN arrived; the lend in progress, if any, ends
     * before the backend is ours (at most one lend's work; a failed pair ends it too). */
    while (atomic_load(&w->aco_lending)) {
        struct timespec nap = {0, 100 * 1000};
        nanosleep(&nap, NULL);
    }
    w->aco.backoff_s = pd_now_s() - w->assigned_at;
    pd_shm lat;
    pd_status st = pd_shm_open(a->shm_latent, &lat);
    if (!st) {
        st = w->st->decode(w->st->self, &lat.tensor, p, a->mp4_path, a->thumb_path[0] ? a->thumb_path : NULL,
                           on_progress, w, &w->cancel);
        pd_shm_close(&lat);
    }
    atomic_store(&w->aco_decline, false);
    return st;
}

static bool role_runs(pd_worker_role role, pd_stage stage) {
    switch (stage) {
    case PD_STAGE_TEXT: return role != PD_ROLE_DECODE;
    case PD_STAGE_DENOISE: return role == PD_ROLE_DENOISE || role == PD_ROLE_ALL;
    case PD_STAGE_DECODE: return role == PD_ROLE_DECODE || role == PD_ROLE_ALL;
    default: return false;
    }
}

static pd_status run_assign(worker *w, const pd_msg *a) {
    pd_gen_params p = pd_msg_params(a);
    if (!role_runs(w->opt->role, (pd_stage)a->stage))
        return pd_error_set(PD_ERR_INVALID, "a %s worker cannot run stage %d", pd_worker_role_name(w->opt->role), (int)a->stage);
    w->job_id = a->job_id;
    /* The first stage of a job checks the request against the model; later stages trust it. */
    if (a->stage != PD_STAGE_DECODE) PD_TRY(w->st->validate(w->st->self, &p));
    switch ((pd_stage)a->stage) {
    case PD_STAGE_TEXT: return run_text(w, &p, a);
    case PD_STAGE_DENOISE: return run_denoise(w, &p, a);
    case PD_STAGE_DECODE: return run_decode(w, &p, a);
    default: break;
    }
    return pd_error_set(PD_ERR_INVALID, "stage %d cannot be assigned", (int)a->stage);
}

/* One small run of every stage the role has, timed; also proves the loaded model works. */
static pd_status warm_up(worker *w, double secs[PD_STAGE_COUNT]) {
    pd_worker_role role = w->opt->role;
    pd_gen_params p = pd_proto_warmup_params();
    pd_tensor cond = {0}, uncond = {0}, latent = {0};
    pd_status st = PD_OK;
    double t0 = pd_now_s();
    if (role != PD_ROLE_DECODE) {
        st = w->st->encode_text(w->st->self, p.prompt, &cond);
        if (!st) st = w->st->encode_text(w->st->self, "", &uncond);
        secs[PD_STAGE_TEXT] = pd_now_s() - t0;
    }
    if (!st && (role == PD_ROLE_DENOISE || role == PD_ROLE_ALL)) {
        st = w->st->validate(w->st->self, &p);
        t0 = pd_now_s();
        if (!st) st = w->st->denoise(w->st->self, &p, &cond, &uncond, &latent, no_progress, NULL, &w->cancel);
        secs[PD_STAGE_DENOISE] = pd_now_s() - t0;
    }
    if (!st && (role == PD_ROLE_DECODE || role == PD_ROLE_ALL)) {
        if (!latent.data) {
            int64_t shape[4];
            w->st->latent_shape(w->st->self, &p, shape);
            st = pd_tensor_alloc(&latent, PD_DTYPE_F32, 4, shape);
        }
        char path[PD_PROTO_PATH_MAX + 64];
        const char *slash = strrchr(w->opt->socket_path, '/');
        int dir_len = slash ? (int)(slash - w->opt->socket_path) : 1;
        snprintf(path, sizeof path, "%.*s/warmup-%d.mp4", dir_len, slash ? w->opt->socket_path : ".", (int)getpid());
        t0 = pd_now_s();
        if (!st) st = w->st->decode(w->st->self, &latent, &p, path, NULL, no_progress, NULL, &w->cancel);
        secs[PD_STAGE_DECODE] = pd_now_s() - t0;
        unlink(path);
    }
    pd_tensor_free(&cond);
    pd_tensor_free(&uncond);
    pd_tensor_free(&latent);
    return st ? pd_error_prefix(st, "warm-up") : PD_OK;
}

static pd_status connect_scheduler(const char *path, int *out) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return pd_error_set(PD_ERR_INVALID, "socket path '%s' is longer than %zu bytes", path, sizeof addr.sun_path - 1);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return pd_error_set(PD_ERR_IO, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        return pd_error_set(PD_ERR_IO, "connect %s: %s", path, strerror(e));
    }
    *out = fd;
    return PD_OK;
}

static void send_error(worker *w, const char *job_id, int stage, pd_status st) {
    pd_msg *m = w->tx;
    pd_msg_init(m, PD_MSG_ERROR);
    snprintf(m->job_id, sizeof m->job_id, "%s", job_id);
    m->stage = stage;
    snprintf(m->code, sizeof m->code, "%s", pd_status_name(st));
    snprintf(m->message, sizeof m->message, "%s", pd_error_msg());
    wsend(w, m);
}

/* GROUP: leave the old group, join the new one, answer JOINED (or ERROR with job ""). */
static void join_group(worker *w, const pd_msg *g) {
    pd_status st;
    if (!w->st->join_group || (w->opt->role != PD_ROLE_DENOISE && w->opt->role != PD_ROLE_ALL)) {
        st = pd_error_set(PD_ERR_UNSUPPORTED, "a %s worker cannot join an SP group", pd_worker_role_name(w->opt->role));
    } else {
        w->group_gen = 0;
        const pd_sp_group_spec spec = {.name = g->comm_name, .rank = g->rank, .ranks = g->ranks,
                                       .cfg_parallel = g->cfg_parallel != 0, .chunk_heads = g->chunk_heads,
                                       .timeout_s = g->comm_timeout_s, .nccl = g->comm_nccl != 0,
                                       .nccl_ids = g->nccl_ids};
        st = w->st->join_group(w->st->self, &spec);
    }
    if (st) {
        PD_WARN("worker", "pid %d: joining SP group %s (generation %u) failed: %s", (int)getpid(), g->comm_name,
                g->group_gen, pd_error_msg());
        send_error(w, "", 0, st);
        return;
    }
    w->group_gen = g->group_gen;
    PD_INFO("worker", "pid %d: rank %d of %d in SP group %s (generation %u%s, PipeSP chunk %d)", (int)getpid(), g->rank,
            g->ranks, g->comm_name, g->group_gen, g->cfg_parallel ? ", CFG parallel" : "", g->chunk_heads);
    pd_msg *m = w->tx;
    pd_msg_init(m, PD_MSG_JOINED);
    m->group_gen = g->group_gen;
    wsend(w, m);
}

/* Waits for ASSIGNs and GROUPs and runs them until stop. */
static void serve(worker *w) {
    pd_msg *a = malloc(sizeof *a);
    PD_ASSERT(a);
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->has_mail && !w->stop && !atomic_load(&w->aco_lend_pending)) pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        if (!w->has_mail) { /* an ACO for a stage that has ended: release its helper */
            pthread_mutex_unlock(&w->mu);
            aco_lend_take(w, NULL);
            continue;
        }
        memcpy(a, w->mail, sizeof *a);
        w->has_mail = false;
        pthread_mutex_unlock(&w->mu);
        if (a->kind == PD_MSG_GROUP) {
            join_group(w, a);
            continue;
        }

        double t0 = pd_now_s();
        memset(&w->aco, 0, sizeof w->aco);
        pd_status st = run_assign(w, a);
        double secs = pd_now_s() - t0;
        /* Before the reply: once DONE is out, the next ASSIGN (maybe the same job's next stage) may
         * arrive at once and set current_job again; a late CANCEL for a finished stage is handled by
         * the scheduler when it reads DONE. */
        pthread_mutex_lock(&w->mu);
        w->current_job[0] = 0;
        w->deadline = 0;
        pthread_mutex_unlock(&w->mu);
        if (st == PD_OK) {
            pd_msg *m = w->tx;
            pd_msg_init(m, PD_MSG_DONE);
            snprintf(m->job_id, sizeof m->job_id, "%s", a->job_id);
            m->stage = a->stage;
            m->seconds = secs;
            m->aco = w->aco;
            wsend(w, m);
        } else {
            PD_INFO("worker", "job %s stage %d: %s: %s", a->job_id, (int)a->stage, pd_status_name(st), pd_error_msg());
            send_error(w, a->job_id, a->stage, st);
        }
    }
    free(a);
}

static pd_status run_worker(const worker_options *opt, const pd_worker_stages *stages) {
    worker w = {.opt = opt, .st = stages, .fd = -1};
    pthread_mutex_init(&w.send_mu, NULL);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.mail = malloc(sizeof *w.mail);
    w.rx = malloc(sizeof *w.rx);
    w.tx = malloc(sizeof *w.tx);
    w.reader = malloc(sizeof *w.reader);
    w.aco_serve_msg = malloc(sizeof *w.aco_serve_msg);
    w.aco_lend_mail = malloc(sizeof *w.aco_lend_mail);
    w.aco_lend_cur = malloc(sizeof *w.aco_lend_cur);
    pd_status st = PD_OK;
    bool threads = false, loaded = false;
    pthread_t rd, hb;
    if (!w.mail || !w.rx || !w.tx || !w.reader || !w.aco_serve_msg || !w.aco_lend_mail || !w.aco_lend_cur) {
        st = pd_error_set(PD_ERR_NOMEM, "worker: out of memory");
        goto out;
    }
    pd_proto_reader_reset(w.reader);
    if ((st = connect_scheduler(opt->socket_path, &w.fd))) goto out;

    pd_msg_init(w.tx, PD_MSG_HELLO);
    w.tx->pid = (int32_t)getpid();
    w.tx->role = opt->role;
    if ((st = wsend(&w, w.tx))) goto out;
    if ((st = pd_proto_recv(w.fd, w.reader, w.rx, 30000))) {
        pd_error_prefix(st, "waiting for the scheduler's hello");
        goto out;
    }
    if (w.rx->kind != PD_MSG_HELLO || w.rx->magic != PD_PROTO_MAGIC || w.rx->version != PD_PROTO_VERSION) {
        st = pd_error_set(PD_ERR_FORMAT, "the scheduler answered with kind %d, magic 0x%08x, version %u (want hello, "
                          "0x%08x, %u)", (int)w.rx->kind, w.rx->magic, w.rx->version, PD_PROTO_MAGIC, PD_PROTO_VERSION);
        goto out;
    }
    w.heartbeat_ms = w.rx->heartbeat_ms < 10 ? 10 : w.rx->heartbeat_ms > 60000 ? 60000 : w.rx->heartbeat_ms;
    if (pthread_create(&rd, NULL, reader_main, &w) != 0) {
        st = pd_error_set(PD_ERR_NOMEM, "worker: cannot start the reader thread");
        goto out;
    }
    if (pthread_create(&hb, NULL, heartbeat_main, &w) != 0) {
        set_stop(&w);
        shutdown(w.fd, SHUT_RDWR);
        pthread_join(rd, NULL);
        st = pd_error_set(PD_ERR_NOMEM, "worker: cannot start the heartbeat thread");
        goto out;
    }
    threads = true;

    PD_INFO("worker", "pid %d role %s: loading %s", (int)getpid(), pd_worker_role_name(opt->role), opt->model_dir);
    st = stages->load(stages->self, opt->model_dir, opt->device, opt->threads, role_parts(opt->role));
    loaded = st == PD_OK;
    double secs[PD_STAGE_COUNT] = {0};
    if (!st) st = warm_up(&w, secs);
    if (st) {
        send_error(&w, "", 0, st);
        goto out;
    }
    pd_msg_init(w.tx, PD_MSG_READY);
    memcpy(w.tx->stage_seconds, secs, sizeof secs);
    w.tx->aco_capable = stages->backend && stages->set_self_attention;
    if ((st = wsend(&w, w.tx))) goto out;
    PD_INFO("worker", "pid %d role %s: ready (warm-up text %.3f s, denoise %.3f s, decode %.3f s)", (int)getpid(),
            pd_worker_role_name(opt->role), secs[PD_STAGE_TEXT], secs[PD_STAGE_DENOISE], secs[PD_STAGE_DECODE]);
    serve(&w);

out:
    if (threads) {
        set_stop(&w);
        shutdown(w.fd, SHUT_RDWR);
        pthread_join(rd, NULL);
        pthread_join(hb, NULL);
        if (w.aco_thread_live) pthread_join(w.aco_thread, NULL); /* its communicator times out at worst */
    }
    if (loaded) stages->unload(stages->self);
    if (w.fd >= 0) close(w.fd);
    free(w.mail);
    free(w.rx);
    free(w.tx);
    free(w.reader);
    free(w.aco_serve_msg);
    free(w.aco_lend_mail);
    free(w.aco_lend_cur);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    pthread_mutex_destroy(&w.send_mu);
    return st;
}

static const char usage_text[] =
    "usage: pipedit worker --socket PATH --role denoise|decode|all --model DIR [--threads N]\n"
    "                      [--device cpu|cuda|cuda:N]\n"
    "Runs one worker process of pipeditd's scheduler (started by the daemon, not by hand).\n";

/* On a usage error PD_ERR_INVALID with a message; `--help` PD_ERR_NOT_FOUND after printing usage. */
static pd_status parse_args(int argc, char **argv, worker_options *out) {
    *out = (worker_options){.role = PD_ROLE_ALL, .threads = 1, .device = "cpu"};
    bool have_role = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return pd_error_set(PD_ERR_NOT_FOUND, "help");
        }
        if (i + 1 >= argc) return pd_error_set(PD_ERR_INVALID, "worker: %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--socket")) {
            out->socket_path = v;
        } else if (!strcmp(a, "--model")) {
            out->model_dir = v;
        } else if (!strcmp(a, "--device")) {
            out->device = v;
        } else if (!strcmp(a, "--role")) {
            PD_TRY(pd_worker_role_parse(v, &out->role));
            have_role = true;
        } else if (!strcmp(a, "--threads")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 1024) return pd_error_set(PD_ERR_INVALID, "worker: --threads %s (want 1..1024)", v);
            out->threads = (int)n;
        } else {
            return pd_error_set(PD_ERR_INVALID, "worker: unknown option %s", a);
        }
    }
    if (!out->socket_path) return pd_error_set(PD_ERR_INVALID, "worker: --socket is required");
    if (!out->model_dir) return pd_error_set(PD_ERR_INVALID, "worker: --model is required");
    if (!have_role) return pd_error_set(PD_ERR_INVALID, "worker: --role is required");
    return PD_OK;
}

int pd_worker_main(int argc, char **argv, const pd_worker_stages *stages) {
    worker_options opt;
    pd_status st = parse_args(argc, argv, &opt);
    if (st == PD_ERR_NOT_FOUND) return 0;
    if (st) {
        fprintf(stderr, "pipedit: %s\n%s", pd_error_msg(), usage_text);
        return 2;
    }
    st = run_worker(&opt, stages);
    if (st) {
        fprintf(stderr, "pipedit worker: %s\n", pd_error_msg());
        return 1;
    }
    return 0;
}
