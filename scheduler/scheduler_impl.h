/* The scheduler's private state and the calls its source files share (not part of the public
 * interface, scheduler/scheduler.h). The scheduler does four jobs, one file each:
 *   supervise.c  worker processes: spawn, connect, handshake, heartbeats, death, restart, role switch
 *   groups.c     SP denoise groups: formation, generations, a group job's ranks
 *   dispatch.c   jobs: the queue, stage assignment, cancels, stage answers, the DeDiVAE split
 *   events.c     the job event queue delivered to the daemon's callback
 * and scheduler.c holds the public calls and the scheduler thread's loop.
 *
 * Locking: every function here runs with s->mu held (the scheduler thread holds it except while it
 * polls or delivers events; the public calls take it), or before the scheduler thread starts / after
 * it has ended. Only sched_deliver_events releases it.
 *
 * Placement (documented choices):
 *  - N = 1: one worker (role all) runs text, denoise and decode of each job; a job's decode runs before
 *    the next job starts (the baseline without pipelining).
 *  - N >= 2: a job's text encoding runs on the denoise worker that then denoises it (the decode workers
 *    load only the VAE, keeping their memory small, and the contexts stay on the worker that uses them);
 *    its latent waits in shared memory for the first free decode worker (FIFO).
 *  - Progress: text = 0, denoise step s of S = 90 s / S, decode step d of D = 90 + 10 d / D (at most 99),
 *    completed = 100.
 *  - Plan (plan/online.h): at start the live plan lays out the split from the cost model (the
 *    configured profile, the model in model_dir, the preset's typical request) and gives the PipeSP
 *    chunk sent to SP groups and the Aco share sent to lenders. Workers' warm-up times and then every
 *    finished stage correct the model; after each, the plan is revised, and when it asks for another
 *    split one idle worker of the surplus group is restarted with the other role (one switch at a
 *    time). Every change of plan is logged with its predictions and the measured times.
 *  - Watchdog: a worker silent (no message at all) for worker_timeout_s is dead; a busy worker whose
 *    stage shows no progress for stall_timeout_s (no PROGRESS, and the counter its heartbeats carry
 *    unchanged) is stuck: both are killed and restarted, failing the job with "worker_died" or
 *    "worker_stuck". The total time a job takes never counts: a slow stage that keeps advancing runs on.
 *  - SP groups (sp_degree > 1): the first slots form groups of sp_degree consecutive denoise ranks;
 *    a queued job takes a whole formed group: its text stage runs on the leader (rank 0), then every
 *    rank gets the denoise ASSIGN. The job leaves the group when every rank has answered (DONE or
 *    ERROR), so no rank ever runs two jobs' collectives. Any failure inside a group other than a
 *    cancellation bumps the group's generation: once all its ranks are up again (a dead one
 *    restarted), each is sent GROUP for the new generation and rejoins fresh communicators. A rank
 *    that does not answer within the collective timeout (+10 s) after its job failed is killed.
 *  - Aco (aco_pairs.c): helpers are assigned by pd_split_aco_helpers over the current roles. A pair
 *    session starts when a denoise rank is in its denoise stage (no session yet in that stage, its
 *    job did not lose a helper) and its helper is idle (READY, serving nothing, no latent waiting:
 *    sched_dispatch runs first); ACO goes to both. The helper answers ACO_DONE when the session ends
 *    (the lender finished its stage, or the pair failed); the lender reports its counts in the
 *    stage's DONE. A helper that dies while serving is restarted like any worker, and the job it
 *    served gets no further session (it finishes without Aco, same bytes); later jobs pair again. */
#ifndef PD_SCHEDULER_IMPL_H
#define PD_SCHEDULER_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include "proto/proto.h"
#include "scheduler/scheduler.h"

#define SCHED_EMA_ALPHA 0.3
#define SCHED_POLL_MS 50
#define SCHED_EXIT_GRACE_S 2.0

typedef enum sched_wstate {
    SCHED_W_OFF = 0,   /* no process; respawn at restart_at */
    SCHED_W_SPAWNED,   /* process started, not connected yet */
    SCHED_W_CONNECTED, /* connected, HELLO not seen yet */
    SCHED_W_LOADING,   /* HELLO exchanged, loading + warming up */
    SCHED_W_READY,     /* idle */
    SCHED_W_BUSY,      /* running a stage of job */
    SCHED_W_JOINING,   /* GROUP sent; waiting for JOINED */
    SCHED_W_EXITING,   /* SHUTDOWN sent (role switch or stop); reaped or killed at exit_deadline */
} sched_wstate;

typedef enum sched_jstate {
    SCHED_J_QUEUED = 0,
    SCHED_J_TEXT,
    SCHED_J_DENOISE,
    SCHED_J_WAIT_DECODE,
    SCHED_J_DECODE
} sched_jstate;

typedef struct sched_job {
    char id[PD_PROTO_ID_MAX];
    uint64_t seq;
    pd_msg *req;        /* ASSIGN template: params, paths, shm names */
    sched_jstate state;
    int worker;         /* slot running it, -1 */
    bool cancel_req, cancel_sent;
    int group;          /* SP group holding the job, -1 */
    int pending;        /* group denoise: ranks that have not answered yet */
    bool failed;        /* group denoise: FAILED already emitted; removed when pending reaches 0 */
    bool aco_off;       /* a helper was lost while serving it: no more Aco sessions for this job */
    double fail_deadline;
    double started_at;  /* CLOCK_REALTIME when it left the queue (0: queued) */
    struct sched_job *next;
} sched_job;

typedef struct sched_wslot {
    int index;
    pd_worker_role role, want_role;
    pid_t pid;
    int listen_fd, fd;
    char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    sched_wstate state;
    pd_proto_reader *rd;
    double spawned_at, last_heard, restart_at, exit_deadline;
    double progressed_at; /* busy: when its stage was assigned or last advanced (PROGRESS, moving ticks) */
    uint64_t ticks;       /* the progress counter of its last HEARTBEAT */
    int fails;          /* consecutive deaths before READY (start-up backoff) */
    bool was_ready;
    sched_job *job;
    int group, rank;    /* SP group and rank in it; group -1 outside groups */
    unsigned joined_gen;
    char device[32];    /* --device of the worker */
    uint32_t aco_seq;   /* helper: the Aco session it serves (0: none) */
    int aco_partner;    /* helper: the lender slot of that session */
    bool aco_tried;     /* lender: a session was started in its running stage */
    bool aco_capable;   /* its READY said it can lend or serve Aco heads */
} sched_wslot;

typedef struct sched_group {
    int first, size;    /* slots first .. first + size - 1; rank r is slot first + r */
    unsigned gen;       /* generation its ranks must have joined; bumped on any failure */
    bool joining;       /* GROUP sent for gen, JOINED not yet in from every rank */
    double retry_at;    /* no GROUP before this (after a failed join) */
    int join_fails;
    sched_job *job;     /* the job holding the group */
} sched_group;

typedef struct sched_evrec {
    pd_job_event ev;
    char id[PD_PROTO_ID_MAX];
    char code[PD_PROTO_CODE_MAX];
    char msg[PD_PROTO_MSG_MAX + 256];
} sched_evrec;

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
    sched_wslot *w;
    int n;
    sched_group *g;           /* SP groups (sp_degree > 1) */
    int n_groups, sp;
    bool gpu;                 /* workers run on cuda:i; groups use NCCL */
    double comm_timeout_s;
    sched_job *jobs;          /* submission order */
    uint64_t next_seq;
    sched_evrec *ev;          /* queued events */
    int n_ev, cap_ev;
    bool emitting;
    double warm[PD_STAGE_COUNT], ema[PD_STAGE_COUNT];
    bool have_ema[PD_STAGE_COUNT];
    pd_estimate_model cost;   /* valid when have_cost */
    bool have_cost;
    pd_estimate_rates warm_rates, live_rates; /* from warm-ups; from finished stages of real jobs */
    int heartbeat_ms;
    double timeout_s;         /* silence that declares a worker dead */
    double stall_s;           /* a busy worker without progress for this long is stuck */
    unsigned instance;        /* tells this process's schedulers apart in shared-memory names */
    pd_msg *tx, *rx;          /* scheduler-thread message buffers */
    uint32_t aco_next_seq;    /* the last Aco session number handed out */
    pd_scheduler_aco_stats aco; /* Aco counts since start */
    pd_plan_online plan;      /* the live plan: split, chunk, share (plan/online.h) */
    char plan_profile[48];    /* the profile's name ("" without a model) */
};

/* What a per-state-machine message handler did with a worker's message. */
typedef enum sched_msg_result {
    SCHED_MSG_NOT_MINE = 0, /* not this state machine's message in the worker's state */
    SCHED_MSG_HANDLED,
    SCHED_MSG_DROPPED,      /* the worker was dropped (sched_worker_lost) */
} sched_msg_result;

/* ---- events.c ---- */
double sched_now_real(void);
/* Wakes the scheduler thread out of its poll. */
void sched_wake(pd_scheduler *s);
/* Queues an event about j (copied); the caller fills the kind-specific fields. */
sched_evrec *sched_push_event(pd_scheduler *s, pd_job_event_kind kind, const sched_job *j);
void sched_ev_stage(pd_scheduler *s, const sched_job *j, pd_stage stage, int progress);
/* Delivers the queued events with s->mu released (scheduler thread only). */
void sched_deliver_events(pd_scheduler *s);

/* ---- dispatch.c ---- */
sched_job *sched_find_job(pd_scheduler *s, const char *id);
int sched_count_jobs(const pd_scheduler *s, sched_jstate st);
void sched_unlink_job_shm(const sched_job *j);
/* Unlinks j from every list and frees it. */
void sched_remove_job(pd_scheduler *s, sched_job *j);
/* Emits FAILED for j and removes it, or (a group denoise some ranks of which have not answered yet)
 * marks it failed until the last one has. A second failure of the same job adds nothing. */
void sched_fail_job(pd_scheduler *s, sched_job *j, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The ASSIGN of one stage of j to w (group generation gen, rank; 0 and 0 outside a group). A failed
 * send drops w, which fails the job or, in a group, counts this rank as done. */
void sched_send_stage(pd_scheduler *s, sched_wslot *w, sched_job *j, pd_stage stage, unsigned gen, int rank);
double sched_stage_estimate(const pd_scheduler *s, int stage);
/* Folds a finished stage of j into the stage times (the split rule) and the cost rates (admission). */
void sched_record_time(pd_scheduler *s, const sched_job *j, int stage, double secs);
/* Revises the live plan from the stage times measured so far (logging a change) and restarts one idle
 * worker with the other role when the plan asks for another split. */
void sched_replan(pd_scheduler *s);
/* The cost model's view of request p. */
pd_plan_request sched_plan_request(const pd_gen_params *p);
/* Starts what can start: parked latents on free decode workers first, then queued jobs. */
void sched_dispatch(pd_scheduler *s);
/* Cancels requested on running jobs travel to their worker; parked ones fail here, and so do parked
 * ones past their deadline (running ones are stopped by their worker). */
void sched_send_cancels(pd_scheduler *s);
/* PROGRESS / DONE / ERROR of the stage w is running. */
sched_msg_result sched_job_on_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m);

/* ---- groups.c ---- */
/* Every rank up and joined to the current generation. */
bool sched_group_formed(const pd_scheduler *s, const sched_group *g);
/* Every rank idle. */
bool sched_group_idle(const pd_scheduler *s, const sched_group *g);
/* The group's communicators can no longer be trusted: the next formation uses a new generation. */
void sched_group_break(pd_scheduler *s, sched_group *g, const char *why);
/* One rank of group job j has answered (w) or is gone (w NULL). The last one releases the group. */
void sched_group_rank_done(pd_scheduler *s, sched_wslot *w, sched_job *j);
/* The denoise stage of j on every rank of its group. */
void sched_group_assign_denoise(pd_scheduler *s, sched_group *g, sched_job *j);
/* Sends GROUP to every rank of each group whose ranks are all idle but not joined to its generation. */
void sched_form_groups(pd_scheduler *s);
/* JOINED, or a failed join, from a rank asked to join. */
sched_msg_result sched_group_on_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m);

/* ---- aco_pairs.c ---- */
/* Starts the Aco sessions that can start (after sched_dispatch, so latents go first). */
void sched_aco_form(pd_scheduler *s);
/* The counts in a stage's DONE from w (denoise: lender's; decode: its back-off). */
void sched_aco_stage_done(pd_scheduler *s, sched_wslot *w, const pd_msg *m);
/* w is gone: a session it served ends, and its job gets no further one. */
void sched_aco_worker_lost(pd_scheduler *s, sched_wslot *w);
/* ACO_DONE from a helper. */
sched_msg_result sched_aco_on_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m);
/* Measured denoise speedup with a pair (pd_plan_online_aco_speedup), 1 until measured both ways. */
double sched_aco_speedup(const pd_scheduler *s);

/* ---- supervise.c ---- */
bool sched_role_denoises(pd_worker_role r);
bool sched_role_decodes(pd_worker_role r);
/* Idle or busy: loaded, warmed up and connected. */
bool sched_slot_up(const sched_wslot *w);
pd_status sched_open_listener(sched_wslot *w);
pd_status sched_spawn_worker(pd_scheduler *s, sched_wslot *w);
/* The worker is gone or must go: kill and reap it, fail its job ("worker_died"), schedule its restart. */
void sched_worker_lost(pd_scheduler *s, sched_wslot *w, const char *reason);
/* Sends m to w; a failed send drops w (sched_worker_lost) and returns the error. */
pd_status sched_send_to(pd_scheduler *s, sched_wslot *w, const pd_msg *m);
/* Asks w to exit (role switch or stop); it is reaped or killed after SCHED_EXIT_GRACE_S. */
void sched_shutdown_worker(pd_scheduler *s, sched_wslot *w);
/* Reaps, restarts and times out workers. */
void sched_supervise(pd_scheduler *s);
void sched_accept_worker(pd_scheduler *s, sched_wslot *w);
/* Reads what w sent and hands each message to its state machine's handler. */
void sched_read_worker(pd_scheduler *s, sched_wslot *w);

#endif
