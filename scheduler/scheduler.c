/* The scheduler: one thread owns every socket and every job state change; the public calls only touch
 * the queue and flags under the mutex and wake that thread. Events are queued under the mutex and
 * delivered by the scheduler thread with the mutex released, so the daemon's callback can take its own
 * locks while other daemon threads call pd_scheduler_submit without a lock-order deadlock.
 *
 * Placement (documented choices):
 *  - N = 1: one worker (role all) runs text, denoise and decode of each job; a job's decode runs before
 *    the next job starts (the baseline without pipelining).
 *  - N >= 2: a job's text encoding runs on the denoise worker that then denoises it (the decode workers
 *    load only the VAE, keeping their memory small, and the contexts stay on the worker that uses them);
 *    its latent waits in shared memory for the first free decode worker (FIFO).
 *  - Progress: text = 0, denoise step s of S = 90 s / S, decode step d of D = 90 + 10 d / D (at most 99),
 *    completed = 100.
 *  - Split: workers' warm-up times give the first estimate; each finished stage updates an exponential
 *    moving average (alpha 0.3) that replaces the warm-up figure for that stage. When the rule in
 *    scheduler/split.h asks for another split, one idle worker of the surplus group is restarted with the
 *    other role (one switch at a time).
 *  - SP groups (sp_degree > 1): the first slots form groups of sp_degree consecutive denoise ranks;
 *    a queued job takes a whole formed group: its text stage runs on the leader (rank 0), then every
 *    rank gets the denoise ASSIGN. The job leaves the group when every rank has answered (DONE or
 *    ERROR), so no rank ever runs two jobs' collectives. Any failure inside a group other than a
 *    cancellation bumps the group's generation: once all its ranks are up again (a dead one
 *    restarted), each is sent GROUP for the new generation and rejoins fresh communicators. A rank
 *    that does not answer within the collective timeout (+10 s) after its job failed is killed. */
#include "scheduler/scheduler.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "proto/proto.h"
#include "scheduler/split.h"
#include "models/wan/pipesp_plan.h"
#include "workers/sp_group.h"
#include "comm/comm.h"
#include "comm/shm.h"

extern char **environ;

#define EMA_ALPHA 0.3
#define POLL_MS 50
#define EXIT_GRACE_S 2.0

typedef enum wstate {
    W_OFF = 0,   /* no process; respawn at restart_at */
    W_SPAWNED,   /* process started, not connected yet */
    W_CONNECTED, /* connected, HELLO not seen yet */
    W_LOADING,   /* HELLO exchanged, loading + warming up */
    W_READY,     /* idle */
    W_BUSY,      /* running a stage of job */
    W_JOINING,   /* GROUP sent; waiting for JOINED */
    W_EXITING,   /* SHUTDOWN sent (role switch or stop); reaped or killed at exit_deadline */
} wstate;

typedef enum jstate { J_QUEUED = 0, J_TEXT, J_DENOISE, J_WAIT_DECODE, J_DECODE } jstate;

typedef struct job {
    char id[PD_PROTO_ID_MAX];
    uint64_t seq;
    pd_msg *req;        /* ASSIGN template: params, paths, shm names */
    jstate state;
    int worker;         /* slot running it, -1 */
    bool cancel_req, cancel_sent;
    int group;          /* SP group holding the job, -1 */
    int pending;        /* group denoise: ranks that have not answered yet */
    bool failed;        /* group denoise: FAILED already emitted; removed when pending reaches 0 */
    double fail_deadline;
    struct job *next;
} job;

typedef struct wslot {
    int index;
    pd_worker_role role, want_role;
    pid_t pid;
    int listen_fd, fd;
    char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    wstate state;
    pd_proto_reader *rd;
    double spawned_at, last_heard, restart_at, exit_deadline;
    int fails;          /* consecutive deaths before READY (start-up backoff) */
    bool was_ready;
    job *job;
    int group, rank;    /* SP group and rank in it; group -1 outside groups */
    unsigned joined_gen;
    char device[32];    /* --device of the worker */
} wslot;

typedef struct sgroup {
    int first, size;    /* slots first .. first + size - 1; rank r is slot first + r */
    unsigned gen;       /* generation its ranks must have joined; bumped on any failure */
    bool joining;       /* GROUP sent for gen, JOINED not yet in from every rank */
    double retry_at;    /* no GROUP before this (after a failed join) */
    int join_fails;
    job *job;           /* the job holding the group */
} sgroup;

typedef struct evrec {
    pd_job_event ev;
    char id[PD_PROTO_ID_MAX];
    char code[PD_PROTO_CODE_MAX];
    char msg[PD_PROTO_MSG_MAX + 256];
} evrec;

struct pd_scheduler {
    pd_scheduler_config cfg;
    char *model_dir, *worker_exe, *run_dir;
    pd_job_event_fn fn;
    void *ud;
    pthread_mutex_t mu;
    pthread_cond_t idle_cv;   /* a job ended or events were delivered (drain waits on it) */
    pthread_t thread;
    bool stopping, draining;
    int wake[2];
    wslot *w;
    int n;
    sgroup *g;                /* SP groups (sp_degree > 1) */
    int n_groups, sp;
    bool gpu;                 /* workers run on cuda:i; groups use NCCL */
    double comm_timeout_s;
    job *jobs;                /* submission order */
    uint64_t next_seq;
    evrec *ev;                /* queued events */
    int n_ev, cap_ev;
    bool emitting;
    double warm[PD_STAGE_COUNT], ema[PD_STAGE_COUNT];
    bool have_ema[PD_STAGE_COUNT];
    int heartbeat_ms;
    double timeout_s;
    unsigned instance;        /* tells this process's schedulers apart in shared-memory names */
    pd_msg *tx, *rx;          /* scheduler-thread message buffers */
};

static double now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *stage_str(int s) {
    static const char *const names[PD_STAGE_COUNT] = {"text", "denoise", "decode", "encode"};
    return s >= 0 && s < PD_STAGE_COUNT ? names[s] : "?";
}

static void wake(pd_scheduler *s) {
    char c = 1;
    ssize_t k = write(s->wake[1], &c, 1); /* a full pipe already means "wake up" */
    (void)k;
}

/* ---- events (queued under mu, delivered by the scheduler thread) ---- */

static evrec *push_event(pd_scheduler *s, pd_job_event_kind kind, const job *j) {
    if (s->n_ev == s->cap_ev) {
        int cap = s->cap_ev ? 2 * s->cap_ev : 64;
        evrec *e = realloc(s->ev, (size_t)cap * sizeof *e);
        PD_ASSERT(e); /* a few hundred bytes per event; losing events silently would be worse */
        s->ev = e;
        s->cap_ev = cap;
    }
    evrec *r = &s->ev[s->n_ev++];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", j->id);
    r->ev.kind = kind;
    r->ev.t = now_real();
    return r;
}

static void ev_stage(pd_scheduler *s, const job *j, pd_stage stage, int progress) {
    evrec *r = push_event(s, PD_JOB_EVENT_STAGE, j);
    r->ev.stage = stage;
    r->ev.progress = progress;
}

static void deliver_events(pd_scheduler *s) {
    while (s->n_ev && !s->stopping) {
        evrec *batch = s->ev;
        int n = s->n_ev;
        s->ev = NULL;
        s->n_ev = s->cap_ev = 0;
        s->emitting = true;
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < n; i++) {
            evrec *r = &batch[i];
            r->ev.job_id = r->id;
            if (r->ev.kind == PD_JOB_EVENT_FAILED) {
                r->ev.error_code = r->code;
                r->ev.error_message = r->msg;
            }
            if (s->fn) s->fn(s->ud, &r->ev);
        }
        free(batch);
        pthread_mutex_lock(&s->mu);
        s->emitting = false;
        pthread_cond_broadcast(&s->idle_cv);
    }
}

/* ---- jobs ---- */

static job *find_job(pd_scheduler *s, const char *id) {
    for (job *j = s->jobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

static void unlink_job_shm(const job *j) {
    pd_shm_unlink(j->req->shm_cond);
    pd_shm_unlink(j->req->shm_uncond);
    pd_shm_unlink(j->req->shm_latent);
}

static void remove_job(pd_scheduler *s, job *j) {
    for (job **pp = &s->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    for (int i = 0; i < s->n; i++)
        if (s->w[i].job == j) s->w[i].job = NULL;
    if (j->group >= 0 && s->g[j->group].job == j) s->g[j->group].job = NULL;
    unlink_job_shm(j);
    free(j->req);
    free(j);
    pthread_cond_broadcast(&s->idle_cv);
}

/* FAILED goes out now. A group denoise whose ranks have not all answered (pending > 0) stays, marked
 * failed, until the last one has (group_rank_done removes it; supervise kills ranks still busy at
 * fail_deadline), and a second failure of it adds nothing; any other job (pending 0) goes at once. */
static void fail_job(pd_scheduler *s, job *j, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fail_job(pd_scheduler *s, job *j, const char *code, const char *fmt, ...) {
    if (j->failed) return;
    const bool waits = j->pending > 0;
    if (waits) {
        j->failed = true;
        j->fail_deadline = pd_now_s() + s->comm_timeout_s + 10.0;
    }
    evrec *r = push_event(s, PD_JOB_EVENT_FAILED, j);
    r->ev.stage = j->state == J_DECODE || j->state == J_WAIT_DECODE ? PD_STAGE_DECODE
                  : j->state == J_DENOISE                          ? PD_STAGE_DENOISE
                                                                   : PD_STAGE_TEXT;
    snprintf(r->code, sizeof r->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    PD_INFO("scheduler", "job %s failed (%s): %s", j->id, r->code, r->msg);
    if (!waits) remove_job(s, j);
}

static int count_jobs(const pd_scheduler *s, jstate st) {
    int n = 0;
    for (const job *j = s->jobs; j; j = j->next) n += j->state == st;
    return n;
}

/* ---- workers ---- */

static bool role_denoises(pd_worker_role r) { return r == PD_ROLE_DENOISE || r == PD_ROLE_ALL; }
static bool role_decodes(pd_worker_role r) { return r == PD_ROLE_DECODE || r == PD_ROLE_ALL; }
static bool slot_up(const wslot *w) { return w->state == W_READY || w->state == W_BUSY; }

static void describe_exit(int status, char *buf, size_t n) {
    if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, n, "ended (wait status 0x%x)", status);
}

static void close_conn(wslot *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    pd_proto_reader_reset(w->rd);
}

static void schedule_restart(pd_scheduler *s, wslot *w) {
    w->state = W_OFF;
    w->role = w->want_role;
    if (!w->was_ready) w->fails++;
    else w->fails = 0;
    double backoff = w->fails ? fmin(0.25 * (double)(1 << (w->fails < 6 ? w->fails - 1 : 5)), 5.0) : 0.0;
    w->restart_at = pd_now_s() + backoff;
    w->was_ready = false;
}

/* ---- SP groups ---- */

static void group_name(const pd_scheduler *s, int gi, unsigned gen, char *buf, size_t n) {
    snprintf(buf, n, "pdg-%d-%u-%d-%u", (int)getpid(), s->instance, gi, gen);
}

/* Every rank up and joined to the current generation. */
static bool group_formed(const pd_scheduler *s, const sgroup *g) {
    if (g->joining) return false;
    for (int r = 0; r < g->size; r++) {
        const wslot *w = &s->w[g->first + r];
        if (!slot_up(w) || w->joined_gen != g->gen) return false;
    }
    return true;
}

/* Every rank idle (W_READY). */
static bool group_idle(const pd_scheduler *s, const sgroup *g) {
    for (int r = 0; r < g->size; r++)
        if (s->w[g->first + r].state != W_READY) return false;
    return true;
}

/* The group's communicators can no longer be trusted: the next formation uses a new generation.
 * The old generation's segments are removed here (a killed rank 0 cannot). */
static void group_break(pd_scheduler *s, sgroup *g, const char *why) {
    char base[64];
    group_name(s, (int)(g - s->g), g->gen, base, sizeof base);
    pd_sp_group_unlink(base);
    g->gen++;
    g->joining = false;
    PD_WARN("scheduler", "SP group %d (workers %d..%d): %s; it will be re-formed as generation %u", (int)(g - s->g),
            g->first, g->first + g->size - 1, why, g->gen);
}

/* One rank of group job j has answered (w) or is gone (w NULL). The last one releases the group. */
static void group_rank_done(pd_scheduler *s, wslot *w, job *j) {
    if (w) {
        w->job = NULL;
        if (w->state == W_BUSY) w->state = W_READY;
    }
    if (--j->pending > 0) return;
    s->g[j->group].job = NULL;
    j->worker = -1;
    if (j->failed) remove_job(s, j);
    else if (j->cancel_req) fail_job(s, j, "cancelled", "cancelled by request");
    else j->state = J_WAIT_DECODE;
}

/* The worker is gone or must go: kill and reap it, fail its job, schedule its restart. */
static void worker_lost(pd_scheduler *s, wslot *w, const char *reason) {
    char how[128] = "";
    pid_t pid = w->pid;
    if (pid > 0) {
        int status;
        kill(pid, SIGKILL);
        if (waitpid(pid, &status, 0) == pid) describe_exit(status, how, sizeof how);
        w->pid = 0;
    }
    close_conn(w);
    PD_WARN("scheduler", "worker %d (%s, pid %d): %s%s%s", w->index, pd_worker_role_name(w->role), (int)pid, reason,
            how[0] ? "; " : "", how);
    /* A rank of the current generation (joined, or asked to join) takes it down; a rank lost after
     * its generation already broke changes nothing more. */
    if (w->group >= 0 && (w->joined_gen == s->g[w->group].gen || s->g[w->group].joining)) {
        char why[256];
        snprintf(why, sizeof why, "rank %d (worker %d) lost", w->rank, w->index);
        group_break(s, &s->g[w->group], why);
    }
    if (w->job && w->job->group >= 0 && w->job->state == J_DENOISE) {
        job *j = w->job;
        if (j->cancel_req) fail_job(s, j, "cancelled", "cancelled by request");
        else
            fail_job(s, j, "worker_died", "rank %d of SP group %d (worker %d, pid %d) failed during the denoise stage: "
                     "%s%s%s; the group is being restarted", w->rank, w->group, w->index, (int)pid, reason,
                     how[0] ? "; " : "", how);
        group_rank_done(s, w, j);
    } else if (w->job) {
        job *j = w->job;
        w->job = NULL;
        j->worker = -1;
        if (j->cancel_req)
            fail_job(s, j, "cancelled", "cancelled by request");
        else
            fail_job(s, j, "worker_died", "worker %d (%s, pid %d) failed during the %s stage: %s%s%s; it is being restarted",
                     w->index, pd_worker_role_name(w->role), (int)pid,
                     j->state == J_TEXT ? "text" : j->state == J_DENOISE ? "denoise" : "decode", reason,
                     how[0] ? "; " : "", how);
    }
    schedule_restart(s, w);
}

static pd_status spawn_worker(pd_scheduler *s, wslot *w) {
    char threads[16];
    snprintf(threads, sizeof threads, "%d", s->cfg.threads_per_worker > 0 ? s->cfg.threads_per_worker : 1);
    char *argv[] = {s->worker_exe, "worker", "--socket", w->sock_path, "--role", (char *)pd_worker_role_name(w->role),
                    "--model", s->model_dir, "--threads", threads, "--device", w->device, NULL};
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGCHLD);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    /* Own process group: a terminal's Ctrl-C reaches the daemon, which then stops its workers itself. */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int rc = posix_spawn(&pid, s->worker_exe, NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    w->spawned_at = w->last_heard = pd_now_s();
    if (rc != 0) return pd_error_set(PD_ERR_IO, "spawn %s worker: %s", s->worker_exe, strerror(rc));
    w->pid = pid;
    w->state = W_SPAWNED;
    PD_INFO("scheduler", "worker %d (%s) started, pid %d", w->index, pd_worker_role_name(w->role), (int)pid);
    return PD_OK;
}

static pd_status open_listener(wslot *w) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, w->sock_path, strlen(w->sock_path) + 1);
    unlink(w->sock_path); /* a stale socket from an earlier run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return pd_error_set(PD_ERR_IO, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0) {
        int e = errno;
        close(fd);
        return pd_error_set(PD_ERR_IO, "listen on %s: %s", w->sock_path, strerror(e));
    }
    w->listen_fd = fd;
    return PD_OK;
}

static pd_status send_to(pd_scheduler *s, wslot *w, const pd_msg *m) {
    pd_status st = pd_proto_send(w->fd, m);
    if (st) {
        char why[PD_PROTO_MSG_MAX];
        snprintf(why, sizeof why, "control channel lost: %s", pd_error_msg());
        worker_lost(s, w, why);
    }
    return st;
}

/* The ASSIGN of one stage of j to w (group generation gen, rank; 0 and 0 outside a group). A failed
 * send drops w (worker_lost), which fails the job or, in a group, counts this rank as done. */
static void send_stage(pd_scheduler *s, wslot *w, job *j, pd_stage stage, unsigned gen, int rank) {
    pd_msg *m = s->tx;
    memcpy(m, j->req, sizeof *m);
    m->kind = PD_MSG_ASSIGN;
    m->stage = stage;
    m->group_gen = gen;
    m->rank = rank;
    w->job = j;
    w->state = W_BUSY;
    send_to(s, w, m);
}

/* Sends one stage of j to w. */
static void assign(pd_scheduler *s, wslot *w, job *j, pd_stage stage) {
    j->state = stage == PD_STAGE_TEXT ? J_TEXT : stage == PD_STAGE_DENOISE ? J_DENOISE : J_DECODE;
    j->worker = w->index;
    j->cancel_sent = false;
    ev_stage(s, j, stage, stage == PD_STAGE_DECODE ? 90 : 0);
    send_stage(s, w, j, stage, 0, 0);
}

/* The denoise stage of j on every rank of its group. */
static void assign_group_denoise(pd_scheduler *s, sgroup *g, job *j) {
    j->state = J_DENOISE;
    j->worker = g->first;
    j->cancel_sent = false;
    j->pending = g->size;
    ev_stage(s, j, PD_STAGE_DENOISE, 0);
    for (int r = 0; r < g->size; r++) {
        if (j->failed) { /* an earlier rank's send failed: the rest never start */
            group_rank_done(s, NULL, j);
            continue;
        }
        send_stage(s, &s->w[g->first + r], j, PD_STAGE_DENOISE, g->gen, r);
    }
}

/* Sends GROUP to every rank of each group whose ranks are all idle but not joined to its generation. */
static void form_groups(pd_scheduler *s) {
    if (s->stopping) return;
    double now = pd_now_s();
    for (int gi = 0; gi < s->n_groups; gi++) {
        sgroup *g = &s->g[gi];
        if (g->job || g->joining || now < g->retry_at || !group_idle(s, g)) continue;
        bool joined = true;
        for (int r = 0; r < g->size; r++) joined &= s->w[g->first + r].joined_gen == g->gen;
        if (joined) continue;
        /* GPU groups talk over NCCL: this process makes the unique ids (and hosts NCCL's bootstrap
         * root for them), every rank receives them in its GROUP. */
        const bool nccl = s->gpu;
        uint8_t ids[PD_PROTO_GROUP_COMMS][PD_PROTO_NCCL_ID_BYTES];
        for (int i = 0; nccl && i < PD_PROTO_GROUP_COMMS; i++) {
            pd_status st = pd_comm_nccl_unique_id(ids[i]);
            if (st) {
                PD_ERROR("scheduler", "SP group %d cannot be formed: %s", gi, pd_error_msg());
                g->retry_at = now + 5.0;
                break;
            }
        }
        if (now < g->retry_at) continue;
        g->joining = true;
        PD_INFO("scheduler", "SP group %d: forming generation %u over workers %d..%d", gi, g->gen, g->first,
                g->first + g->size - 1);
        for (int r = 0; r < g->size && g->joining; r++) {
            wslot *w = &s->w[g->first + r];
            pd_msg *m = s->tx;
            pd_msg_init(m, PD_MSG_GROUP);
            m->group_gen = g->gen;
            m->rank = r;
            m->ranks = g->size;
            m->chunk_heads = s->cfg.pipesp_chunk;
            m->cfg_parallel = s->cfg.cfg_parallel;
            m->comm_timeout_s = s->comm_timeout_s;
            group_name(s, gi, g->gen, m->comm_name, sizeof m->comm_name);
            m->comm_nccl = nccl;
            if (nccl) memcpy(m->nccl_ids, ids, sizeof ids);
            w->state = W_JOINING;
            send_to(s, w, m); /* a lost rank breaks the group (joining false): stop sending */
        }
    }
}

/* A JOINED or a failed join from w (in W_JOINING). */
static void group_join_answer(pd_scheduler *s, wslot *w, bool ok, unsigned gen, const char *why) {
    sgroup *g = &s->g[w->group];
    w->state = W_READY;
    if (ok && gen == g->gen) w->joined_gen = gen;
    if (!ok && g->joining) {
        g->join_fails++;
        g->retry_at = pd_now_s() + fmin(0.5 * (double)g->join_fails, 5.0);
        group_break(s, g, why);
    }
    bool waiting = false;
    for (int r = 0; r < g->size; r++) waiting |= s->w[g->first + r].state == W_JOINING;
    if (waiting || !g->joining) return;
    g->joining = false;
    if (group_formed(s, g)) {
        g->join_fails = 0;
        PD_INFO("scheduler", "SP group %d: generation %u formed (%d ranks%s, PipeSP chunk %d)", (int)(g - s->g), g->gen,
                g->size, s->cfg.cfg_parallel ? ", CFG parallel" : "", s->cfg.pipesp_chunk);
    }
}

static void shutdown_worker(pd_scheduler *s, wslot *w) {
    if (w->fd >= 0) {
        pd_msg *m = s->tx;
        pd_msg_init(m, PD_MSG_SHUTDOWN);
        pd_proto_send(w->fd, m);
    }
    w->state = W_EXITING;
    w->exit_deadline = pd_now_s() + EXIT_GRACE_S;
}

/* ---- the split ---- */

static double stage_estimate(const pd_scheduler *s, int stage) {
    return s->have_ema[stage] ? s->ema[stage] : s->warm[stage];
}

static void replan(pd_scheduler *s) {
    if (s->n < 2 || s->stopping || s->sp > 1) return;
    int n_dec = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->w[i].want_role != s->w[i].role) return; /* one switch at a time */
        n_dec += s->w[i].want_role == PD_ROLE_DECODE;
    }
    double t_den = stage_estimate(s, PD_STAGE_TEXT) + stage_estimate(s, PD_STAGE_DENOISE);
    double t_dec = stage_estimate(s, PD_STAGE_DECODE);
    int target = pd_split_replan(s->n, s->cfg.n_decode, n_dec, t_den, t_dec);
    if (target == n_dec) return;
    pd_worker_role from = target > n_dec ? PD_ROLE_DENOISE : PD_ROLE_DECODE;
    pd_worker_role to = target > n_dec ? PD_ROLE_DECODE : PD_ROLE_DENOISE;
    for (int i = s->n - 1; i >= 0; i--) {
        wslot *w = &s->w[i];
        if (w->role != from || w->state != W_READY) continue;
        PD_INFO("scheduler", "split %d+%d -> %d+%d (T_den %.3f s, T_dec %.3f s): worker %d becomes %s", s->n - n_dec,
                n_dec, s->n - target, target, t_den, t_dec, i, pd_worker_role_name(to));
        w->want_role = to;
        shutdown_worker(s, w);
        return;
    }
}

static void record_time(pd_scheduler *s, int stage, double secs) {
    if (!(secs >= 0) || !isfinite(secs)) return;
    s->ema[stage] = s->have_ema[stage] ? (1 - EMA_ALPHA) * s->ema[stage] + EMA_ALPHA * secs : secs;
    s->have_ema[stage] = true;
}

/* ---- dispatch ---- */

static wslot *idle_slot(pd_scheduler *s, bool (*can)(pd_worker_role)) {
    for (int i = 0; i < s->n; i++)
        if (s->w[i].state == W_READY && can(s->w[i].role)) return &s->w[i];
    return NULL;
}

static void dispatch(pd_scheduler *s) {
    if (s->stopping) return;
    /* Latents first (FIFO), so finished denoising never waits behind new work on an all-role worker. */
    for (job *j = s->jobs; j; j = j->next) {
        if (j->state != J_WAIT_DECODE) continue;
        wslot *w = idle_slot(s, role_decodes);
        if (!w) break;
        assign(s, w, j, PD_STAGE_DECODE);
        return dispatch(s); /* the list may have changed (a failed send removes the job) */
    }
    int n_dec = 0;
    for (int i = 0; i < s->n; i++) n_dec += role_decodes(s->w[i].role);
    /* Bound the latents parked between the groups. */
    if (count_jobs(s, J_WAIT_DECODE) >= 2 * (n_dec > 0 ? n_dec : 1)) return;
    for (job *j = s->jobs; j; j = j->next) {
        if (j->state != J_QUEUED) continue;
        wslot *w = NULL;
        if (s->sp > 1) {
            for (int gi = 0; gi < s->n_groups && !w; gi++) {
                sgroup *g = &s->g[gi];
                if (g->job || !group_formed(s, g) || !group_idle(s, g)) continue;
                g->job = j;
                j->group = gi;
                w = &s->w[g->first];
            }
        } else {
            w = idle_slot(s, role_denoises);
        }
        if (!w) return;
        push_event(s, PD_JOB_EVENT_STARTED, j);
        assign(s, w, j, PD_STAGE_TEXT); /* a group's leader encodes the prompts */
        return dispatch(s);
    }
}

/* Cancels requested on running jobs travel to their worker; parked ones fail here. */
static void send_cancels(pd_scheduler *s) {
    for (job *j = s->jobs, *next; j; j = next) {
        next = j->next;
        if (!j->cancel_req || j->cancel_sent || j->failed) continue;
        if (j->state == J_WAIT_DECODE || j->state == J_QUEUED) {
            fail_job(s, j, "cancelled", "cancelled by request");
            continue;
        }
        j->cancel_sent = true;
        if (j->worker < 0) continue;
        pd_msg *m = s->tx;
        pd_msg_init(m, PD_MSG_CANCEL);
        snprintf(m->job_id, sizeof m->job_id, "%s", j->id);
        if (send_to(s, &s->w[j->worker], m)) return; /* the list changed */
    }
}

/* ---- messages from a worker ---- */

static int progress_of(int stage, int step, int total) {
    if (total <= 0) total = 1;
    if (step < 0) step = 0;
    if (step > total) step = total;
    if (stage == PD_STAGE_DENOISE) return 90 * step / total;
    if (stage == PD_STAGE_DECODE || stage == PD_STAGE_ENCODE) {
        int p = 90 + 10 * step / total;
        return p > 99 ? 99 : p;
    }
    return 0;
}

static void stage_done(pd_scheduler *s, wslot *w, job *j, int stage, double secs) {
    record_time(s, stage, secs);
    w->job = NULL;
    w->state = W_READY;
    j->worker = -1;
    if (j->cancel_req) {
        fail_job(s, j, "cancelled", "cancelled by request");
        return;
    }
    if (stage == PD_STAGE_TEXT && j->group >= 0) {
        sgroup *g = &s->g[j->group];
        if (group_formed(s, g) && group_idle(s, g)) assign_group_denoise(s, g, j);
        else fail_job(s, j, "worker_died", "SP group %d lost a rank while the prompts were encoded; it is being restarted",
                      j->group);
    } else if (stage == PD_STAGE_TEXT) {
        assign(s, w, j, PD_STAGE_DENOISE); /* the same worker: it holds the DiT */
    } else if (stage == PD_STAGE_DENOISE) {
        j->state = J_WAIT_DECODE;
    } else {
        evrec *r = push_event(s, PD_JOB_EVENT_PROGRESS, j);
        r->ev.stage = PD_STAGE_DECODE;
        r->ev.progress = 100;
        push_event(s, PD_JOB_EVENT_COMPLETED, j)->ev.progress = 100;
        remove_job(s, j);
    }
    replan(s);
}

/* Returns false when the worker was dropped. */
static bool handle_msg(pd_scheduler *s, wslot *w, const pd_msg *m) {
    char why[PD_PROTO_MSG_MAX + PD_PROTO_CODE_MAX + 96];
    w->last_heard = pd_now_s();
    if (w->state == W_CONNECTED) {
        if (m->kind != PD_MSG_HELLO || m->magic != PD_PROTO_MAGIC || m->version != PD_PROTO_VERSION ||
            m->role != (int32_t)w->role) {
            snprintf(why, sizeof why, "bad hello (kind %d, magic 0x%08x, version %u, role %d; want version %u, role %s)",
                     (int)m->kind, m->magic, m->version, (int)m->role, PD_PROTO_VERSION, pd_worker_role_name(w->role));
            worker_lost(s, w, why);
            return false;
        }
        pd_msg *r = s->tx;
        pd_msg_init(r, PD_MSG_HELLO);
        r->pid = (int32_t)getpid();
        r->role = w->role;
        r->heartbeat_ms = s->heartbeat_ms;
        if (send_to(s, w, r)) return false;
        w->state = W_LOADING;
        return true;
    }
    switch (m->kind) {
    case PD_MSG_HEARTBEAT: return true;
    case PD_MSG_JOINED:
        if (w->state != W_JOINING || w->group < 0) break;
        group_join_answer(s, w, true, m->group_gen, NULL);
        return true;
    case PD_MSG_READY:
        if (w->state != W_LOADING) break;
        for (int i = 0; i < PD_STAGE_COUNT; i++)
            if (m->stage_seconds[i] > 0 && isfinite(m->stage_seconds[i])) s->warm[i] = m->stage_seconds[i];
        w->state = W_READY;
        w->was_ready = true;
        w->fails = 0;
        PD_INFO("scheduler", "worker %d (%s, pid %d) ready", w->index, pd_worker_role_name(w->role), (int)w->pid);
        replan(s);
        return true;
    case PD_MSG_PROGRESS:
    case PD_MSG_DONE:
    case PD_MSG_ERROR: {
        if (m->kind == PD_MSG_ERROR && w->state == W_LOADING) {
            snprintf(why, sizeof why, "start-up failed: %s: %s", m->code, m->message);
            worker_lost(s, w, why);
            return false;
        }
        if (m->kind == PD_MSG_ERROR && w->state == W_JOINING && !m->job_id[0] && w->group >= 0) {
            snprintf(why, sizeof why, "rank %d (worker %d) could not join: %s: %s", w->rank, w->index, m->code, m->message);
            group_join_answer(s, w, false, 0, why);
            return true;
        }
        job *j = w->job;
        if (w->state != W_BUSY || !j || strcmp(j->id, m->job_id)) break;
        if (j->group >= 0 && j->state == J_DENOISE) {
            /* a rank of a group job: progress from the leader only; the job moves on when all answered */
            if (m->kind == PD_MSG_PROGRESS) {
                if (w->rank != 0 || j->failed) return true;
            } else if (m->kind == PD_MSG_DONE) {
                if (w->rank == 0) record_time(s, PD_STAGE_DENOISE, m->seconds);
                group_rank_done(s, w, j);
                return true;
            } else {
                bool cancelled = j->cancel_req || !strcmp(m->code, "cancelled");
                PD_INFO("scheduler", "job %s: rank %d of SP group %d stopped: %s: %s", j->id, w->rank, w->group, m->code,
                        m->message);
                /* The first failure of this generation breaks it; the peers' errors about the same
                 * failure arrive after the bump and leave the new generation alone. */
                if (!cancelled && w->joined_gen == s->g[w->group].gen) {
                    snprintf(why, sizeof why, "rank %d failed: %s", w->rank, m->message);
                    group_break(s, &s->g[w->group], why);
                }
                if (cancelled) fail_job(s, j, "cancelled", "cancelled by request");
                else
                    fail_job(s, j, m->code[0] ? m->code : "internal", "denoise stage (rank %d of %d): %s", w->rank,
                             s->g[w->group].size, m->message);
                group_rank_done(s, w, j);
                return true;
            }
        }
        if (m->kind == PD_MSG_PROGRESS) {
            evrec *r = push_event(s, PD_JOB_EVENT_PROGRESS, j);
            r->ev.stage = (pd_stage)m->stage;
            r->ev.step = m->step;
            r->ev.total = m->total;
            r->ev.progress = progress_of(m->stage, m->step, m->total);
        } else if (m->kind == PD_MSG_DONE) {
            stage_done(s, w, j, m->stage, m->seconds);
        } else {
            w->job = NULL;
            w->state = W_READY;
            j->worker = -1;
            if (j->cancel_req || !strcmp(m->code, "cancelled"))
                fail_job(s, j, "cancelled", "cancelled by request");
            else
                fail_job(s, j, m->code[0] ? m->code : "internal", "%s stage: %s", stage_str(m->stage), m->message);
        }
        return true;
    }
    default: break;
    }
    snprintf(why, sizeof why, "protocol error: unexpected message kind %d in state %d", (int)m->kind, (int)w->state);
    worker_lost(s, w, why);
    return false;
}

static void read_worker(pd_scheduler *s, wslot *w) {
    pd_status st = pd_proto_reader_fill(w->rd, w->fd);
    for (;;) {
        bool got = false;
        pd_status pst = pd_proto_reader_next(w->rd, s->rx, &got);
        if (pst) {
            char why[PD_PROTO_MSG_MAX];
            snprintf(why, sizeof why, "protocol error: %s", pd_error_msg());
            worker_lost(s, w, why);
            return;
        }
        if (!got) break;
        if (!handle_msg(s, w, s->rx)) return;
        if (w->fd < 0) return;
    }
    if (st) {
        if (w->state == W_EXITING) {
            close_conn(w);
            return;
        }
        worker_lost(s, w, "control channel closed");
    }
}

/* Reaps, restarts and times out workers. */
static void supervise(pd_scheduler *s) {
    double now = pd_now_s();
    double connect_limit = fmax(s->timeout_s, 10.0);
    for (int i = 0; i < s->n; i++) {
        wslot *w = &s->w[i];
        if (w->state == W_OFF) {
            if (!s->stopping && now >= w->restart_at && spawn_worker(s, w)) {
                PD_ERROR("scheduler", "worker %d: %s", i, pd_error_msg());
                w->was_ready = false;
                schedule_restart(s, w);
            }
            continue;
        }
        int status;
        if (w->pid > 0 && waitpid(w->pid, &status, WNOHANG) == w->pid) {
            char how[128];
            describe_exit(status, how, sizeof how);
            w->pid = 0;
            if (w->state == W_EXITING) {
                close_conn(w);
                w->state = W_OFF;
                w->role = w->want_role;
                w->restart_at = now;
                w->was_ready = false;
                continue;
            }
            worker_lost(s, w, how);
            continue;
        }
        if (w->state == W_EXITING) {
            if (now > w->exit_deadline) {
                if (w->pid > 0) {
                    kill(w->pid, SIGKILL);
                    waitpid(w->pid, &status, 0);
                    w->pid = 0;
                }
                close_conn(w);
                w->state = W_OFF;
                w->role = w->want_role;
                w->restart_at = now;
            }
            continue;
        }
        if (w->state == W_BUSY && w->job && w->job->failed && now > w->job->fail_deadline) {
            worker_lost(s, w, "did not stop after its SP group failed");
        } else if (w->state == W_SPAWNED && now - w->spawned_at > connect_limit) {
            char why[96];
            snprintf(why, sizeof why, "did not connect within %.0f s", connect_limit);
            worker_lost(s, w, why);
        } else if (w->state != W_SPAWNED && now - w->last_heard > s->timeout_s) {
            char why[96];
            snprintf(why, sizeof why, "silent for %.1f s (timeout %.1f s)", now - w->last_heard, s->timeout_s);
            worker_lost(s, w, why);
        }
    }
}

static void accept_worker(pd_scheduler *s, wslot *w) {
    int fd = accept4(w->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    struct ucred cred;
    socklen_t len = sizeof cred;
    /* Only the process we started may connect, once. */
    if (w->state != W_SPAWNED || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != w->pid) {
        close(fd);
        return;
    }
    w->fd = fd;
    w->state = W_CONNECTED;
    w->last_heard = pd_now_s();
    pd_proto_reader_reset(w->rd);
}

static void *sched_main(void *arg) {
    pd_scheduler *s = arg;
    int cap = 1 + 2 * s->n;
    struct pollfd *pf = calloc((size_t)cap, sizeof *pf);
    int *who = calloc((size_t)cap, sizeof *who); /* slot index, -1 wake pipe; + listen flag */
    bool *is_listen = calloc((size_t)cap, sizeof *is_listen);
    PD_ASSERT(pf && who && is_listen);
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        supervise(s);
        form_groups(s);
        send_cancels(s);
        dispatch(s);
        deliver_events(s);
        if (s->stopping) break;
        int np = 0;
        pf[np] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        who[np++] = -1;
        for (int i = 0; i < s->n; i++) {
            wslot *w = &s->w[i];
            if (w->state == W_SPAWNED) {
                pf[np] = (struct pollfd){.fd = w->listen_fd, .events = POLLIN};
                is_listen[np] = true;
                who[np++] = i;
            }
            if (w->fd >= 0) {
                pf[np] = (struct pollfd){.fd = w->fd, .events = POLLIN};
                is_listen[np] = false;
                who[np++] = i;
            }
        }
        pthread_mutex_unlock(&s->mu);
        int k = poll(pf, (nfds_t)np, POLL_MS);
        pthread_mutex_lock(&s->mu);
        if (k <= 0) continue;
        for (int i = 0; i < np; i++) {
            if (!pf[i].revents) continue;
            if (who[i] < 0) {
                char buf[64];
                while (read(s->wake[0], buf, sizeof buf) > 0) {}
                continue;
            }
            wslot *w = &s->w[who[i]];
            if (is_listen[i]) {
                accept_worker(s, w);
            } else if (w->fd == pf[i].fd) {
                read_worker(s, w);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(pf);
    free(who);
    free(is_listen);
    return NULL;
}

/* ---- public calls ---- */

static void free_scheduler(pd_scheduler *s) {
    if (!s) return;
    for (int i = 0; s->w && i < s->n; i++) {
        wslot *w = &s->w[i];
        if (w->listen_fd >= 0) {
            close(w->listen_fd);
            unlink(w->sock_path);
        }
        if (w->fd >= 0) close(w->fd);
        free(w->rd);
    }
    while (s->jobs) {
        job *j = s->jobs;
        s->jobs = j->next;
        unlink_job_shm(j);
        free(j->req);
        free(j);
    }
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    pthread_cond_destroy(&s->idle_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->w);
    free(s->g);
    free(s->ev);
    free(s->tx);
    free(s->rx);
    free(s->model_dir);
    free(s->worker_exe);
    free(s->run_dir);
    free(s);
}

/* mkdir -p, private to the daemon's user (sockets accept any local process that can reach them). */
static pd_status make_dirs(const char *path) {
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf) return pd_error_set(PD_ERR_INVALID, "scheduler: run_dir path is too long");
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        bool end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return pd_error_set(PD_ERR_IO, "scheduler: cannot create run_dir %s: %s", buf, strerror(errno));
            if (end) break;
            *p = '/';
        }
    }
    return PD_OK;
}

pd_status pd_scheduler_create(const pd_scheduler_config *cfg, pd_job_event_fn fn, void *ud, pd_scheduler **out) {
    *out = NULL;
    if (!cfg->model_dir || !cfg->model_dir[0]) return pd_error_set(PD_ERR_INVALID, "scheduler: model_dir is required");
    if (!cfg->worker_exe || !cfg->worker_exe[0])
        return pd_error_set(PD_ERR_INVALID, "scheduler: worker_exe (the pipedit binary) is required");
    if (!cfg->run_dir || !cfg->run_dir[0]) return pd_error_set(PD_ERR_INVALID, "scheduler: run_dir is required");
    if (cfg->n_devices < 1 || cfg->n_devices > 256)
        return pd_error_set(PD_ERR_INVALID, "scheduler: n_devices is %d (want 1..256)", cfg->n_devices);
    if (cfg->n_decode < 0 || (cfg->n_decode > 0 && cfg->n_decode > cfg->n_devices - 1))
        return pd_error_set(PD_ERR_INVALID, "scheduler: n_decode is %d (want 0 = measured, or 1..%d with %d devices)",
                            cfg->n_decode, cfg->n_devices - 1, cfg->n_devices);
    if (cfg->threads_per_worker < 0 || cfg->threads_per_worker > 1024)
        return pd_error_set(PD_ERR_INVALID, "scheduler: threads_per_worker is %d (want 0..1024)", cfg->threads_per_worker);
    if (cfg->queue_capacity < 1 || cfg->queue_capacity > 1000000)
        return pd_error_set(PD_ERR_INVALID, "scheduler: queue_capacity is %d (want 1..1000000)", cfg->queue_capacity);
    if (!(cfg->worker_timeout_s >= 0) || cfg->worker_timeout_s > 86400)
        return pd_error_set(PD_ERR_INVALID, "scheduler: worker_timeout_s is %g (want 0 = 30 s default, up to 86400)",
                            cfg->worker_timeout_s);
    const int sp = cfg->sp_degree > 1 ? cfg->sp_degree : 1;
    if (cfg->sp_degree < 0 || cfg->sp_degree > PD_COMM_MAX_RANKS)
        return pd_error_set(PD_ERR_INVALID, "scheduler: sp_degree is %d (want 0..%d)", cfg->sp_degree, PD_COMM_MAX_RANKS);
    if (sp > 1 && cfg->n_devices < sp + 1)
        return pd_error_set(PD_ERR_INVALID, "scheduler: sp_degree %d needs at least %d workers (one group of %d "
                            "denoise ranks and a decode worker), not %d", sp, sp + 1, sp, cfg->n_devices);
    if (cfg->cfg_parallel && (sp < 2 || sp % 2))
        return pd_error_set(PD_ERR_INVALID, "scheduler: cfg_parallel needs an even sp_degree >= 2, not %d", cfg->sp_degree);
    if (cfg->pipesp_chunk < 0 || cfg->pipesp_chunk > PD_SP_MAX_CHUNK)
        return pd_error_set(PD_ERR_INVALID, "scheduler: pipesp_chunk is %d (want 0 = measured, or 1..%d)", cfg->pipesp_chunk,
                            PD_SP_MAX_CHUNK);
    if (!(cfg->comm_timeout_s >= 0) || cfg->comm_timeout_s > 86400)
        return pd_error_set(PD_ERR_INVALID, "scheduler: comm_timeout_s is %g (want 0 = 60 s default, up to 86400)",
                            cfg->comm_timeout_s);
    const char *device = cfg->device && cfg->device[0] ? cfg->device : "cpu";
    if (strcmp(device, "cpu") && strcmp(device, "cuda"))
        return pd_error_set(PD_ERR_INVALID, "scheduler: device '%s' (want cpu or cuda; worker i then uses cuda:i)", device);
    if (access(cfg->worker_exe, X_OK) != 0)
        return pd_error_set(PD_ERR_IO, "scheduler: worker program %s is not executable: %s", cfg->worker_exe, strerror(errno));
    PD_TRY(make_dirs(cfg->run_dir));

    pd_scheduler *s = calloc(1, sizeof *s);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    static atomic_uint instances;
    s->instance = atomic_fetch_add(&instances, 1);
    s->cfg = *cfg;
    s->fn = fn;
    s->ud = ud;
    s->n = cfg->n_devices;
    s->timeout_s = cfg->worker_timeout_s > 0 ? cfg->worker_timeout_s : 30.0;
    s->heartbeat_ms = (int)fmin(fmax(s->timeout_s * 1000.0 / 4.0, 50.0), 5000.0);
    s->model_dir = strdup(cfg->model_dir);
    s->worker_exe = strdup(cfg->worker_exe);
    s->run_dir = strdup(cfg->run_dir);
    s->w = calloc((size_t)s->n, sizeof *s->w);
    s->tx = malloc(sizeof *s->tx);
    s->rx = malloc(sizeof *s->rx);
    pd_status st = PD_OK;
    if (!s->model_dir || !s->worker_exe || !s->run_dir || !s->w || !s->tx || !s->rx) {
        st = pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
        goto fail;
    }
    s->cfg.model_dir = s->model_dir;
    s->cfg.worker_exe = s->worker_exe;
    s->cfg.run_dir = s->run_dir;
    for (int i = 0; i < s->n; i++) s->w[i].listen_fd = s->w[i].fd = -1;
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        st = pd_error_set(PD_ERR_IO, "scheduler: pipe: %s", strerror(errno));
        goto fail;
    }
    int n_dec = pd_split_decode_workers(s->n, cfg->n_decode, 0, 0);
    s->sp = sp;
    s->gpu = !strcmp(device, "cuda");
    s->comm_timeout_s = cfg->comm_timeout_s > 0 ? cfg->comm_timeout_s : 60.0;
    if (sp > 1) {
        /* Whole groups in the slots the decode group leaves; any remainder decodes too. */
        s->n_groups = (s->n - n_dec) / sp;
        n_dec = s->n - s->n_groups * sp;
        s->g = calloc((size_t)s->n_groups, sizeof *s->g);
        if (!s->g) {
            st = pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
            goto fail;
        }
        for (int gi = 0; gi < s->n_groups; gi++) s->g[gi] = (sgroup){.first = gi * sp, .size = sp, .gen = 1};
    }
    for (int i = 0; i < s->n; i++) {
        wslot *w = &s->w[i];
        w->index = i;
        w->group = i < s->n_groups * sp ? i / sp : -1;
        w->rank = i % sp;
        if (s->gpu) snprintf(w->device, sizeof w->device, "cuda:%d", i);
        else snprintf(w->device, sizeof w->device, "cpu");
        /* The last n_dec slots decode; with one device the single worker does everything. */
        w->role = w->want_role = s->n == 1 ? PD_ROLE_ALL : i >= s->n - n_dec ? PD_ROLE_DECODE : PD_ROLE_DENOISE;
        w->rd = malloc(sizeof *w->rd);
        if (!w->rd) {
            st = pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
            goto fail;
        }
        pd_proto_reader_reset(w->rd);
        int len = snprintf(w->sock_path, sizeof w->sock_path, "%s/worker-%d.sock", s->run_dir, i);
        if (len < 0 || (size_t)len >= sizeof w->sock_path) {
            st = pd_error_set(PD_ERR_INVALID, "scheduler: run_dir %s is too long for a Unix socket path (max %zu bytes)",
                              s->run_dir, sizeof w->sock_path - 20);
            goto fail;
        }
        if ((st = open_listener(w))) goto fail;
        if ((st = spawn_worker(s, w))) goto fail;
    }
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        st = pd_error_set(PD_ERR_NOMEM, "scheduler: cannot start its thread");
        goto fail;
    }
    *out = s;
    return PD_OK;
fail:
    for (int i = 0; s->w && i < s->n; i++)
        if (s->w[i].pid > 0) {
            kill(s->w[i].pid, SIGKILL);
            waitpid(s->w[i].pid, NULL, 0);
        }
    free_scheduler(s);
    return st;
}

pd_status pd_scheduler_submit(pd_scheduler *s, const char *job_id, const pd_gen_params *p, const char *mp4_path,
                              const char *thumb_path) {
    if (!job_id || !job_id[0]) return pd_error_set(PD_ERR_INVALID, "job id is empty");
    if (!p || !p->prompt) return pd_error_set(PD_ERR_INVALID, "job %s: prompt is required", job_id);
    if (!mp4_path || !mp4_path[0]) return pd_error_set(PD_ERR_INVALID, "job %s: the MP4 path is required", job_id);
    if (p->width < 1 || p->height < 1 || p->frames < 1 || p->steps < 1 || p->fps < 1)
        return pd_error_set(PD_ERR_INVALID, "job %s: width, height, frames, steps and fps must be positive", job_id);
    job *j = calloc(1, sizeof *j);
    pd_msg *m = j ? malloc(sizeof *m) : NULL;
    if (!m) {
        free(j);
        return pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
    }
    pd_msg_init(m, PD_MSG_ASSIGN);
    pd_status st = pd_msg_set_str(j->id, sizeof j->id, job_id, "job id");
    if (!st) st = pd_msg_set_str(m->job_id, sizeof m->job_id, job_id, "job id");
    if (!st) st = pd_msg_set_params(m, p);
    if (!st) st = pd_msg_set_str(m->mp4_path, sizeof m->mp4_path, mp4_path, "MP4 path");
    if (!st) st = pd_msg_set_str(m->thumb_path, sizeof m->thumb_path, thumb_path, "thumbnail path");
    if (st) {
        free(m);
        free(j);
        return pd_error_prefix(st, "job %s", job_id);
    }
    j->req = m;
    j->worker = -1;
    j->group = -1;
    pthread_mutex_lock(&s->mu);
    if (s->draining) st = pd_error_set(PD_ERR_CANCELLED, "the server is draining and accepts no new jobs");
    else if (find_job(s, job_id)) st = pd_error_set(PD_ERR_INVALID, "job %s is already live", job_id);
    else if (count_jobs(s, J_QUEUED) >= s->cfg.queue_capacity)
        st = pd_error_set(PD_ERR_BUSY, "the queue is full (%d jobs waiting); retry later", s->cfg.queue_capacity);
    if (!st) {
        j->seq = s->next_seq++;
        pd_shm_job_name(m->shm_cond, (int)getpid(), s->instance, j->seq, "cond");
        pd_shm_job_name(m->shm_uncond, (int)getpid(), s->instance, j->seq, "uncond");
        pd_shm_job_name(m->shm_latent, (int)getpid(), s->instance, j->seq, "latent");
        job **pp = &s->jobs;
        while (*pp) pp = &(*pp)->next;
        *pp = j;
        wake(s);
    }
    pthread_mutex_unlock(&s->mu);
    if (st) {
        free(m);
        free(j);
    }
    return st;
}

pd_status pd_scheduler_cancel(pd_scheduler *s, const char *job_id) {
    pthread_mutex_lock(&s->mu);
    job *j = job_id ? find_job(s, job_id) : NULL;
    pd_status st = PD_OK;
    if (!j) st = pd_error_set(PD_ERR_NOT_FOUND, "job %s is not queued or running", job_id ? job_id : "(null)");
    else if (j->state == J_QUEUED || j->state == J_WAIT_DECODE)
        fail_job(s, j, "cancelled", "cancelled by request"); /* delivered by the scheduler thread */
    else
        j->cancel_req = true;
    if (!st) wake(s);
    pthread_mutex_unlock(&s->mu);
    return st;
}

int pd_scheduler_queue_position(pd_scheduler *s, const char *job_id) {
    pthread_mutex_lock(&s->mu);
    int pos = -1, k = 0;
    for (job *j = s->jobs; j && job_id; j = j->next) {
        if (j->state != J_QUEUED) continue;
        if (!strcmp(j->id, job_id)) {
            pos = k;
            break;
        }
        k++;
    }
    pthread_mutex_unlock(&s->mu);
    return pos;
}

/* VmRSS of a process in bytes, 0 when it cannot be read (the process just exited). */
static size_t process_rss_bytes(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024;
}

void pd_scheduler_stats_get(pd_scheduler *s, pd_scheduler_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    out->queued = count_jobs(s, J_QUEUED);
    for (job *j = s->jobs; j; j = j->next) out->running += j->state != J_QUEUED;
    bool den_up = false, dec_up = false;
    out->workers_total = s->n;
    for (int i = 0; i < s->n; i++) {
        wslot *w = &s->w[i];
        out->n_denoise += role_denoises(w->role);
        out->n_decode += role_decodes(w->role);
        if (slot_up(w)) {
            out->workers_up++;
            den_up |= role_denoises(w->role);
            dec_up |= role_decodes(w->role);
        }
    }
    out->sp_groups = s->n_groups;
    for (int gi = 0; gi < s->n_groups; gi++) out->sp_groups_formed += group_formed(s, &s->g[gi]);
    if (s->n_groups) den_up = out->sp_groups_formed > 0;
    out->ready = den_up && dec_up;
    for (int i = 0; i < PD_STAGE_COUNT; i++) out->stage_seconds_mean[i] = stage_estimate(s, i);
    pthread_mutex_unlock(&s->mu);
}

double pd_scheduler_worker_memory_bytes(pd_scheduler *s) {
    pid_t pids[256]; /* n_devices is at most 256 (pd_scheduler_create) */
    int n_pids = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n && n_pids < 256; i++)
        if (s->w[i].pid > 0) pids[n_pids++] = s->w[i].pid;
    pthread_mutex_unlock(&s->mu);
    double bytes = 0;
    for (int i = 0; i < n_pids; i++) bytes += (double)process_rss_bytes(pids[i]);
    return bytes;
}

pd_status pd_scheduler_drain(pd_scheduler *s, double timeout_s) {
    double deadline = now_real() + (timeout_s > 0 ? timeout_s : 0);
    struct timespec ts = {.tv_sec = (time_t)deadline, .tv_nsec = (long)((deadline - floor(deadline)) * 1e9)};
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    while ((s->jobs || s->n_ev || s->emitting) && !s->stopping)
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts) == ETIMEDOUT) break;
    int live = 0;
    for (job *j = s->jobs; j; j = j->next) live++;
    pthread_mutex_unlock(&s->mu);
    if (live) return pd_error_set(PD_ERR_TIMEOUT, "%d jobs still queued or running after %.1f s", live, timeout_s);
    return PD_OK;
}

void pd_scheduler_destroy(pd_scheduler *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    wake(s);
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    /* The thread is gone: no lock needed. Ask politely, then insist. */
    for (int i = 0; i < s->n; i++)
        if (s->w[i].pid > 0 && s->w[i].state != W_EXITING) shutdown_worker(s, &s->w[i]);
    double deadline = pd_now_s() + EXIT_GRACE_S;
    for (;;) {
        bool left = false;
        for (int i = 0; i < s->n; i++) {
            wslot *w = &s->w[i];
            if (w->pid > 0 && waitpid(w->pid, NULL, WNOHANG) == w->pid) w->pid = 0;
            left |= w->pid > 0;
        }
        if (!left || pd_now_s() > deadline) break;
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    for (int i = 0; i < s->n; i++)
        if (s->w[i].pid > 0) {
            kill(s->w[i].pid, SIGKILL);
            waitpid(s->w[i].pid, NULL, 0);
        }
    free_scheduler(s);
}
