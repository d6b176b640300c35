/* The scheduler: admission, the job queue, pipeline formation (DeDiVAE) and worker supervision.
 *
 * It runs inside the daemon process. It spawns one worker process per configured device, splits them
 * into a text stage, a denoise group and a decode group, and moves each job through
 * text -> denoise -> decode so that the decode of job k runs while job k+1 denoises. Workers get small
 * control messages over Unix sockets (proto/); latents travel from the denoise group to the decode
 * group over shared memory, never over the control channel.
 *
 * Everything the scheduler has to say about a job comes back through one callback, called from the
 * scheduler's own thread(s); the callback must not block for long and must not call back into the
 * scheduler. The daemon owns the job table, the journal and HTTP; the scheduler owns execution. */
#ifndef PD_SCHEDULER_H
#define PD_SCHEDULER_H

#include <stdbool.h>

#include "models/pipeline.h"
#include "plan/online.h"
#include "scheduler/estimate.h"
#include "scheduler/split.h"

typedef struct pd_scheduler_config {
    const char *model_dir;     /* model folder every worker loads (required) */
    const char *worker_exe;    /* path of the `pipedit` binary whose `worker` command runs a worker */
    const char *run_dir;       /* folder for Unix sockets and shared-memory names (created if absent) */
    int n_devices;             /* worker processes for the denoise and decode groups (>= 1) */
    int n_decode;              /* decode group size; 0 = planned (plan/online.h) */
    int threads_per_worker;    /* CPU backend threads in each worker (0 = 1) */
    int queue_capacity;        /* jobs admitted but not yet started; a full queue is PD_ERR_BUSY */
    double worker_timeout_s;   /* a worker silent for this long is declared dead and restarted */
    /* A worker running a stage that makes no progress for this long (no step, no DiT evaluation, no
     * decoded frame, though its heartbeats still arrive) is stuck: it is killed and restarted, and its
     * job fails with "worker_stuck". A slow stage that keeps advancing is never stopped. 0 = 600 s. */
    double stall_timeout_s;
    /* Sequence parallelism. sp_degree > 1 makes the denoise workers groups of sp_degree ranks that
     * run each job together (workers/sp_group.h): as many groups as fit in the workers left after the
     * decode group (n_decode, or 1 when 0), the rest decode; the split is then fixed (no re-planning).
     * A group's communicators are (re)built whenever all its ranks are up: at start and after any
     * failure of one of them (a rank that died is restarted, the survivors rejoin a fresh group). */
    int sp_degree;             /* ranks per denoise group; 0 or 1 = every denoise worker alone */
    bool cfg_parallel;         /* groups split the CFG pair into two halves (sp_degree even) */
    int pipesp_chunk;          /* PipeSP g sent to every group (0 = planned; measured by the group without a model) */
    double comm_timeout_s;     /* deadline of every collective inside a group (0 = 60 s) */
    const char *device;        /* "cpu" (NULL or "" too) or "cuda": worker slot i then uses cuda:i */
    /* A descriptor (3 or higher; 0, the default, for none) every worker inherits: the daemon's data
     * folder lock, so a restarted daemon cannot take the folder while a worker of this one still
     * lives. Workers also get SIGKILL when the daemon dies (scheduler/spawn.h). */
    int lock_fd;
    /* Cost and deadlines (scheduler/estimate.h). A job's deadline is its start (leaving the queue) +
     * max_job_seconds; a stage still running then stops within one DiT block or latent frame and the
     * job fails with error code "deadline_exceeded". pd_scheduler_admit refuses a job whose estimate
     * exceeds max_job_seconds or job_memory_bytes. */
    const pd_estimate_model *cost_model; /* copied; NULL: no estimates (admission checks nothing) */
    double max_job_seconds;    /* 0 = no deadline */
    double job_memory_bytes;   /* activation memory one worker may use (0 = unchecked) */
    /* Aco: while a denoise rank runs its denoise stage and the decode worker assigned to it
     * (pd_split_aco_helpers) is idle, the two form a pair over a communicator of their own (shared
     * memory; NCCL with device cuda) and the decode worker computes some heads of every
     * self-attention; a latent for it makes it stop at the next request. PD_ACO_AUTO (0) is the
     * default. */
    pd_aco_mode aco;
    /* The live plan (plan/online.h): the split, the PipeSP chunk and the Aco share come from the cost
     * model with this profile (copied; NULL: pd_plan_online_default_profile(device)) for the model in
     * model_dir and the typical request `typical` (a zero width: the model preset's defaults), corrected
     * by the measured stage times. Where model_dir's configs cannot be read the plan runs on measured
     * stage times alone (and a group measures its chunk, a lender its share). */
    const pd_plan_profile *profile;
    pd_plan_request typical;
} pd_scheduler_config;

/* The scheduler's bounds (the daemon's config table uses these, so the two cannot disagree). */
#define PD_SCHED_MAX_DEVICES 256        /* n_devices: 1..this */
#define PD_SCHED_MAX_THREADS 1024       /* threads_per_worker: 0..this */
#define PD_SCHED_MAX_QUEUE 1000000      /* queue_capacity: 1..this */
#define PD_SCHED_MAX_TIMEOUT_S 86400.0  /* worker_timeout_s, comm_timeout_s: 0 (default) up to this */
#define PD_SCHED_MAX_JOB_SECONDS (30.0 * 86400) /* max_job_seconds: 0 (none) up to this */
#define PD_SCHED_MAX_JOB_MEMORY 1e15    /* job_memory_bytes: 0 (unchecked) up to this */

/* Checks everything in cfg but the paths (model_dir, worker_exe, run_dir: pd_scheduler_create checks
 * those when it starts): each bound above, n_decode against n_devices, sp_degree (up to the
 * communicator's rank limit, with room for a decode worker), cfg_parallel, pipesp_chunk and device.
 * PD_ERR_INVALID with a message naming the field, so a front end can refuse a configuration before
 * it starts anything. */
pd_status pd_scheduler_config_check(const pd_scheduler_config *cfg);

typedef enum pd_job_event_kind {
    PD_JOB_EVENT_STARTED = 0,  /* left the queue */
    PD_JOB_EVENT_STAGE,        /* entered stage ev->stage at ev->t */
    PD_JOB_EVENT_PROGRESS,     /* ev->progress changed (0-100), ev->step / ev->total within ev->stage.
                                * Mapping: text 0, denoise step s of S -> 90 s / S, decode (and encode)
                                * step d of D -> 90 + 10 d / D capped at 99, completed 100. */
    PD_JOB_EVENT_COMPLETED,    /* the MP4 (and thumbnail) are in place */
    PD_JOB_EVENT_FAILED,       /* ev->error_code ("cancelled", "worker_died", "worker_stuck",
                                * "invalid", ...), ev->error_message */
} pd_job_event_kind;

typedef struct pd_job_event {
    pd_job_event_kind kind;
    const char *job_id;
    pd_stage stage;
    int step, total;
    int progress;              /* 0-100 over the whole job */
    double t;                  /* CLOCK_REALTIME seconds when it happened */
    const char *error_code;    /* FAILED only */
    const char *error_message; /* FAILED only */
} pd_job_event;

typedef void (*pd_job_event_fn)(void *ud, const pd_job_event *ev);

/* Aco since start: pair sessions started; what the lenders reported in their stages' DONE (calls and
 * heads over all self-attentions, lends that came back, requests declined because a decode came
 * first, sessions in which a lend failed and the heads were recomputed); helpers lost (their process
 * died) while serving; every decode's delay from its ASSIGN reaching the worker to the decode
 * starting (a helper first finishes the lend in progress). */
typedef struct pd_scheduler_aco_stats {
    uint64_t sessions, calls, lends, declined, heads_total, heads_lent;
    uint64_t failures, helpers_lost, decodes;
    uint64_t helper_lends;        /* lends the helpers computed (their ACO_DONE) */
    double helper_compute_s;      /* and their attention time: helper_compute_s / helper_lends is one lend's work */
    double helper_lend_max_s;     /* the longest attention time of one lend */
    double lend_wait_s;           /* lenders' time blocked on lent heads after their own */
    double decode_delay_max_s, decode_delay_sum_s;
    double lent_share;            /* heads lent / heads in the last finished denoise stage that had a pair */
    double speedup;               /* measured denoise speedup with a pair (1 until both kinds were measured) */
} pd_scheduler_aco_stats;

/* The plan in force (plan/online.h) and what was measured against it. */
typedef struct pd_scheduler_plan_stats {
    pd_plan_decision plan;
    double measured_s[PD_PLAN_STAGES]; /* one typical job, from measured stage times (0: not yet) */
    bool have_model;                   /* false: planned from measured times alone */
    char profile[48];
} pd_scheduler_plan_stats;

typedef struct pd_scheduler_stats {
    int queued, running;       /* jobs waiting, jobs in some stage */
    int workers_up, workers_total;
    int n_denoise, n_decode;   /* current group split */
    int sp_groups, sp_groups_formed; /* SP groups, and those whose communicators are up */
    bool ready;                /* every group has a loaded, warmed-up worker */
    double stage_seconds_mean[PD_STAGE_COUNT]; /* measured, for the split rule and metrics */
    pd_scheduler_aco_stats aco;
    pd_scheduler_plan_stats plan;
} pd_scheduler_stats;

typedef struct pd_scheduler pd_scheduler;

/* Spawns the workers and returns at once; readiness comes later (pd_scheduler_stats().ready).
 * Errors: PD_ERR_INVALID (config), PD_ERR_IO (spawn, sockets), PD_ERR_NOMEM. */
pd_status pd_scheduler_create(const pd_scheduler_config *cfg, pd_job_event_fn fn, void *ud, pd_scheduler **out);

/* Admits a job; params and paths are copied. Jobs start in submission order.
 * PD_ERR_BUSY when the queue is full, PD_ERR_INVALID for a duplicate id, PD_ERR_CANCELLED while
 * draining. */
pd_status pd_scheduler_submit(pd_scheduler *s, const char *job_id, const pd_gen_params *p, const char *mp4_path,
                              const char *thumb_path);

/* Admission by cost: estimates request p on this deployment from the stage times measured so far
 * (the workers' warm-up until real jobs finish) into *est (may be NULL) and checks it against
 * max_job_seconds and job_memory_bytes. PD_ERR_INVALID with a message giving the estimate and the
 * limit when it does not fit; PD_OK (and an all-zero estimate) without a cost model. Nothing is
 * queued: pd_scheduler_submit does that. */
pd_status pd_scheduler_admit(pd_scheduler *s, const pd_gen_params *p, pd_estimate *est);

/* Estimated completion time of a live job (CLOCK_REALTIME seconds): the FIFO of live jobs played
 * over the denoise workers (groups) with every job's estimate, running jobs counted with what remains
 * of theirs (scheduler/estimate.h pd_estimate_queue). 0 when the job is not live, there is no cost
 * model or no rates are known yet. */
double pd_scheduler_estimated_completion(pd_scheduler *s, const char *job_id);

/* Cancels a queued or running job; it fails with error code "cancelled" (within one DiT block or
 * latent frame when running). PD_ERR_NOT_FOUND when the job is not live. */
pd_status pd_scheduler_cancel(pd_scheduler *s, const char *job_id);

/* 0-based position of a queued job, -1 when it is not queued. */
int pd_scheduler_queue_position(pd_scheduler *s, const char *job_id);

void pd_scheduler_stats_get(pd_scheduler *s, pd_scheduler_stats *out);

/* Resident memory of the live worker processes together, in bytes (the CPU backend's device memory),
 * read from /proc/<pid>/status of each: a file read per worker, so for /metrics rather than for every
 * request. A worker that exits meanwhile counts 0. */
double pd_scheduler_worker_memory_bytes(pd_scheduler *s);

/* Stops admitting and waits up to timeout_s for queued and running jobs to finish. Returns
 * PD_ERR_TIMEOUT if some are still live (they stay queued for the next start). */
pd_status pd_scheduler_drain(pd_scheduler *s, double timeout_s);

/* Stops the workers and frees everything; live jobs get no further events. */
void pd_scheduler_destroy(pd_scheduler *s);

#endif
