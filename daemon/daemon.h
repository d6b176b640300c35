/* The daemon's state (all of it, in one struct) and the operations the HTTP routes perform on it.
 *
 * Threads: libmicrohttpd's pool answers requests; the scheduler's thread(s) deliver job events; the
 * main thread waits for signals and runs housekeeping (expiry, orphan sweep, event-stream
 * keep-alives) once per tick. d->lock guards the jobs table and the list of waiting event streams.
 * The scheduler is never called with d->lock held, because the scheduler calls back into the daemon
 * (pd_job_event) from its own threads while holding its locks. With the shared store
 * (daemon/replica.h) two more threads run: the taker and the LISTEN connection's listener. */
#ifndef PD_DAEMON_DAEMON_H
#define PD_DAEMON_DAEMON_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "daemon/api.h"
#include "daemon/config.h"
#include "daemon/jobs.h"
#include "daemon/journal.h"
#include "daemon/metrics.h"
#include "daemon/store.h"
#include "models/presets.h"
#include "scheduler/scheduler.h"

struct MHD_Daemon;
typedef struct pd_sse_stream pd_sse_stream;
typedef struct pd_conn_guard pd_conn_guard;
typedef struct pd_grpc pd_grpc;
typedef struct pd_replica pd_replica;
typedef struct pd_daemon pd_daemon;

/* Where jobs live: the local table and journal (daemon.c), or the PostgreSQL store shared by
 * replicas (daemon/replica.h). The public operations below dispatch through d->ops; each entry has
 * the contract of the operation of the same name. */
typedef struct pd_daemon_ops {
    const char *name;
    pd_status (*start)(pd_daemon *d);   /* after the scheduler exists: local re-submits recovered jobs, shared starts its threads */
    void (*stop)(pd_daemon *d);         /* after the scheduler is destroyed */
    pd_job_event_fn on_job_event;       /* the scheduler's callback (ud = d) */
    int (*create_video)(pd_daemon *d, pd_job_request *req, json_t **out, pd_api_error *err);
    int (*get_video)(pd_daemon *d, const char *id, json_t **out, pd_api_error *err);
    int (*list_videos)(pd_daemon *d, const char *after, int limit, bool ascending, json_t **out, pd_api_error *err);
    int (*cancel_video)(pd_daemon *d, const char *id, json_t **out, pd_api_error *err);
    int (*delete_video)(pd_daemon *d, const char *id, json_t **out, pd_api_error *err);
    int (*content_path)(pd_daemon *d, const char *id, pd_store_variant v, char *path, pd_api_error *err);
    void (*add_queue_position)(pd_daemon *d, json_t *video);
    void (*housekeep)(pd_daemon *d, bool sweep);
    bool (*store_up)(pd_daemon *d);
    void (*gauges)(pd_daemon *d, pd_metrics_gauges *g); /* the job counts and the store's */
} pd_daemon_ops;

struct pd_daemon {
    pd_config cfg;
    pd_api_limits limits;
    const pd_model_preset *preset;   /* request defaults, and the typical request the scheduler plans for */
    pd_plan_profile profile;         /* the configured profile (cfg.profile) */
    bool have_profile;               /* false: the scheduler takes the device's default */
    char model_dir[PATH_MAX];
    char model_name[128];
    char journal_path[PATH_MAX];
    char run_dir[PATH_MAX];
    char worker_exe[PATH_MAX];
    double started_at;

    pthread_mutex_t lock;            /* guards jobs and sse_waiters */
    /* With the shared store, jobs is a cache of the jobs this replica was asked about: the store's
     * notifications refresh it, so event streams and watches here follow jobs run anywhere. */
    pthread_cond_t changed;          /* broadcast (d->lock held) whenever a job changes: gRPC watches wait on it */
    pd_jobs jobs;
    pd_sse_stream *sse_waiters;      /* suspended event streams, resumed when any job changes */
    bool http_stopping;              /* event streams end instead of waiting */
    char (*backlog)[PD_JOB_ID_LEN + 1]; /* recovered jobs the scheduler's queue had no room for yet, in order */
    size_t n_backlog;

    int lock_fd;                     /* <data_dir>/pipeditd.lock, held while the daemon and its workers live; 0 = none */
    pd_journal *journal;
    pd_store store;
    pd_metrics metrics;
    pd_scheduler *sched;
    struct MHD_Daemon *mhd;
    pd_conn_guard *conns;            /* header/body deadlines and slot headroom (daemon/conn_guard.h) */
    pd_grpc *grpc;                   /* the gRPC server (daemon/grpc_server.h); NULL when off */
    atomic_bool draining;            /* SIGTERM seen: not ready, not admitting */
    const pd_daemon_ops *ops;        /* the local journal's or the shared store's */
    pd_replica *replica;             /* the shared store's state (daemon/replica.h); NULL with the local journal */
};

/* Prepares d from cfg: resolves the model (cfg->model_dir, or the embedded tiny model), creates the
 * data folder and locks it (before anything in it is read or written), creates its subfolders,
 * replays and compacts the journal and drops expired jobs. Starts no threads.
 * The lock (flock on <data_dir>/pipeditd.lock, which holds the daemon's pid) is inherited by the
 * workers and released when the daemon and all of them have exited. A lock held by a live process
 * is PD_ERR_BUSY naming the folder and that pid, and nothing in the folder is changed; a lock whose
 * recorded daemon is gone belongs to its workers, which die with it: the call waits up to 10 s for
 * them before giving up the same way.
 * Errors: PD_ERR_BUSY, PD_ERR_IO, PD_ERR_INVALID, PD_ERR_NOMEM with a message naming the file or
 * setting. */
pd_status pd_daemon_open(pd_daemon *d, const pd_config *cfg);

/* Starts the scheduler (which spawns the workers) and re-submits the jobs the journal left queued
 * or running. Errors from pd_scheduler_create, prefixed "cannot start workers". */
pd_status pd_daemon_start_scheduler(pd_daemon *d);

/* One housekeeping pass: expires outputs past their TTL, sweeps orphaned files, and wakes event
 * streams so they send a keep-alive. Called periodically by the main thread. */
void pd_daemon_housekeep(pd_daemon *d, bool sweep);

/* Applies a scheduler event to j's status, stage, step and progress and to the metrics (both job
 * stores use it; the caller guards j). With the shared store a final status is not counted here but
 * by the replica whose result the store accepted (or that performed the cancel): daemon/replica.h. */
void pd_daemon_apply_event(pd_daemon *d, pd_job *j, const pd_job_event *ev);
/* The list object ({object:"list", data, first_id, last_id, has_more}) around data (consumed), with
 * queue positions already set; 200, or 503 out of memory. */
int pd_daemon_list_reply(json_t *data, bool more, json_t **out, pd_api_error *err);

/* Shutdown: stops admitting and reporting ready, waits up to drain_timeout_s for live jobs, stops the
 * workers and the HTTP server. Jobs still live stay in the journal and run after the next start. */
void pd_daemon_shutdown(pd_daemon *d);

/* Frees everything (after pd_daemon_shutdown, or after a failed open/start). */
void pd_daemon_close(pd_daemon *d);

/* ---- operations behind the routes; each returns 200 (or the status it answers with) and fills
 *      *out with a new JSON reference, or fills err and returns err->http_status. ---- */
/* Admits a job: journals it (on disk before returning; 503 when it cannot be) and submits it to the
 * scheduler; with the shared store, inserts it (committed before returning; 503 "store_unavailable"
 * when it cannot be) for whichever replica takes it. The request is consumed (moved into the table,
 * or left for the caller to free when refused; freeing a consumed request is harmless). 429 when the
 * queue (with the shared store: across replicas) is full, 503 while draining. */
int pd_daemon_create_video(pd_daemon *d, pd_job_request *req, json_t **out, pd_api_error *err);
int pd_daemon_get_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err);
int pd_daemon_list_videos(pd_daemon *d, const char *after, int limit, bool ascending, json_t **out, pd_api_error *err);
/* Cancel and delete are on disk (journal, fdatasync; or committed in the shared store) before they
 * answer, so neither is undone by a crash: a cancelled job is failed with error.code "cancelled" at
 * once and never runs again, a deleted one stays deleted. 503 (and nothing changed) when the journal
 * or the store cannot record them. With the shared store every operation reads and writes the store
 * (503 "store_unavailable" while it is unreachable), whichever replica runs the job. */
int pd_daemon_cancel_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err);
int pd_daemon_delete_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err);
/* Path of a completed job's output file; 404 when the job is unknown or not completed. */
int pd_daemon_content_path(pd_daemon *d, const char *id, pd_store_variant v, char *path, pd_api_error *err);
/* The Model object of the served model ({id, object:"model", created, owned_by}); a new reference
 * (NULL: no memory). */
json_t *pd_daemon_model_json(pd_daemon *d);

/* What a watcher of one job (an SSE stream, a gRPC WatchVideo) sends next. */
typedef enum pd_watch_event {
    PD_WATCH_NONE = 0,  /* nothing new since the cursor */
    PD_WATCH_PROGRESS,  /* the first event, and progress changes */
    PD_WATCH_STAGE,     /* the job entered a new stage */
    PD_WATCH_COMPLETED, /* final */
    PD_WATCH_FAILED,    /* final */
    PD_WATCH_DELETED,   /* final: the job is gone (deleted or expired) */
} pd_watch_event;

/* A watcher's position: what it has sent so far. Zero-initialise with stage = -1. */
typedef struct pd_watch_cursor {
    bool sent_any;
    uint64_t version;
    int stage;
} pd_watch_cursor;

/* d->lock must be held. The next event for a watcher of job id at cursor c, which it advances: for
 * every event but NONE and DELETED *video receives the Video object (a new reference, without
 * queue_position; NULL when out of memory). The first call always answers the current state, so a
 * watcher that reconnects resumes from where the job is now. */
pd_watch_event pd_daemon_watch_next_locked(pd_daemon *d, const char *id, pd_watch_cursor *c, json_t **video);

/* Sets "queue_position" on a Video object whose status is queued and "estimated_completed_at" (unix
 * seconds, from the scheduler's queue estimate; with the shared store, for a job another replica runs
 * or nobody runs yet, from the store's global queue: daemon/replica.h) on one that is queued or in
 * progress; call without d->lock. */
void pd_daemon_add_queue_position(pd_daemon *d, json_t *video);
/* Samples the gauges for /metrics. */
void pd_daemon_gauges(pd_daemon *d, pd_metrics_gauges *g);
/* The scheduler's readiness and worker counts, and whether the daemon is draining; with the shared
 * store, not ready while the store is unreachable. */
bool pd_daemon_ready(pd_daemon *d, pd_scheduler_stats *stats);

/* False while the shared store is unreachable (always true with the local journal). */
bool pd_daemon_store_up(pd_daemon *d);

/* Resumes every waiting event stream; d->lock must be held. */
void pd_daemon_wake_streams_locked(pd_daemon *d);

/* Current time, unix seconds. */
double pd_daemon_now(void);

/* Fills err with the API's 404 for an unknown video id (both job stores answer it the same way) and
 * returns 404. */
int pd_daemon_not_found(pd_api_error *err, const char *id);

#endif
