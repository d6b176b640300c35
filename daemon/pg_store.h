/* The shared job store and queue on PostgreSQL (libpq): every pipeditd replica that names the same
 * database sees the same jobs, takes queued ones in creation order and holds a lease on what it runs.
 *
 * Schema (created and upgraded by pd_pg_store_open's first connection, versioned in
 * pipedit_schema_version, inside one transaction holding a transaction-level advisory lock so that
 * replicas starting together apply each step once):
 *   pipedit_jobs: id, seq (bigserial: the global order), status, progress, stage, step, total,
 *     created_at/started_at/completed_at/expires_at (unix seconds, 0 = not yet), error_code,
 *     error_message, request (the job as the journal's "job" record), lease_holder, lease_expires
 *     (the database's clock, so replicas' clocks need not agree), fence (incremented at every take:
 *     the holder's token), completions (fenced completions: 1 at most), progress_writes.
 *   A trigger NOTIFYs channel "pipedit_jobs" with "<id> <status> <fence> <holder>" ("deleted" for a deleted
 *   row) whenever a job is created or deleted or its status, progress, stage, step or holder
 *   changes; lease renewals notify nobody.
 *   pipedit_create_job(): the capacity check and the insert in one call, serialised by an advisory
 *   lock, so the queue bound holds across replicas.
 *
 * Threads: a pd_pg_store may be used from any number of threads; it keeps a small pool of
 * connections with the statements prepared on each, and one more connection for LISTEN, used only
 * by pd_pg_store_listen (one thread). A call made while the database is unreachable fails at once
 * with PD_ERR_IO ("the job store is unreachable: ..."); connections are retried with a backoff of
 * 100 ms doubling to 5 s. Every round trip to the database is counted (pd_pg_store_stats).
 *
 * Writes by a lease holder (progress, complete, fail, release) are fenced: they change the row only
 * while it is in progress, held by this replica with the fence its take returned; otherwise nothing
 * changes and the call returns PD_ERR_CANCELLED (the lease was lost: the job was requeued, taken by
 * another replica, cancelled or deleted). A result (complete, fail) is idempotent for its writer: when
 * the row already holds this replica's own result of that attempt (an earlier call committed but its
 * reply was lost with the connection, and the caller retried) the call returns PD_OK and changes
 * nothing, so a retried result is never mistaken for a stale one. */
#ifndef PD_DAEMON_PG_STORE_H
#define PD_DAEMON_PG_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/jobs.h"

#define PD_PG_SCHEMA_VERSION 1
#define PD_PG_HOLDER_MAX 128 /* longest replica id */

typedef struct pd_pg_store pd_pg_store;

/* A job as the store holds it. job.req owns its strings: pd_pg_job_free releases them. */
typedef struct pd_pg_job {
    pd_job job;                           /* version is 0 */
    int queue_position;                   /* queued jobs created before it; -1 when not queued */
    char holder[PD_PG_HOLDER_MAX];        /* lease holder ("" when none) */
    int64_t fence;                        /* takes so far */
    int completions;
    int progress_writes;
} pd_pg_job;

void pd_pg_job_free(pd_pg_job *j);

typedef struct pd_pg_store_stats {
    uint64_t queries;        /* round trips to the database since open (the LISTEN connection's included) */
    uint64_t notifications;  /* NOTIFYs received */
    bool up;                 /* the last attempt to reach the database succeeded */
} pd_pg_store_stats;

/* True when url is a PostgreSQL URL (postgres:// or postgresql://) that libpq can parse. */
bool pd_pg_url_valid(const char *url);

/* Prepares a store for url (postgres://...) as replica `holder` with leases of lease_s seconds. It
 * connects at once and creates or upgrades the schema; an unreachable database is no error (the
 * first call that reaches it migrates, and until then calls fail with PD_ERR_IO). Errors:
 * PD_ERR_INVALID (url, holder), PD_ERR_FORMAT (the database's schema is newer than this build's),
 * PD_ERR_NOMEM. */
pd_status pd_pg_store_open(const char *url, const char *holder, double lease_s, pd_pg_store **out);
void pd_pg_store_close(pd_pg_store *s);

/* Connects now if no connection is up (ignoring the backoff) and migrates; PD_OK when the database
 * answers. For start-up and tests. */
pd_status pd_pg_store_ping(pd_pg_store *s);

void pd_pg_store_stats_get(pd_pg_store *s, pd_pg_store_stats *out);

/* Inserts a queued job (j: id, created_at, request) unless capacity jobs are queued already
 * (PD_ERR_BUSY); *queue_position receives the queued jobs ahead of it. Returns only after the insert
 * committed. A job whose id is stored already is taken for this create's own, committed before its
 * reply was lost (ids are random): PD_OK, never an error for a job that was stored. */
pd_status pd_pg_store_create(pd_pg_store *s, const pd_job *j, int capacity, int *queue_position);

/* The job with this id (PD_ERR_NOT_FOUND). */
pd_status pd_pg_store_get(pd_pg_store *s, const char *id, pd_pg_job *out);

/* Up to limit jobs in creation order (ascending) or its reverse, after the job `after` (NULL: from
 * the start); *n receives the count (out has room for limit), *more whether further jobs follow.
 * PD_ERR_NOT_FOUND when `after` names no job. */
pd_status pd_pg_store_list(pd_pg_store *s, const char *after, int limit, bool ascending, pd_pg_job *out, int *n, bool *more);

/* Queue position of a queued job, -1 when it is not queued or not there. */
pd_status pd_pg_store_queue_position(pd_pg_store *s, const char *id, int *pos);

/* The number of jobs in each status (indexed by pd_job_status). */
pd_status pd_pg_store_count(pd_pg_store *s, int counts[PD_JOB_STATUS_COUNT]);

/* Up to cap live jobs: those in progress first (in creation order), then the queued ones in queue
 * order with their queue positions; *n receives the count (out has room for cap). */
pd_status pd_pg_store_live(pd_pg_store *s, int cap, pd_pg_job *out, int *n);

/* Takes the oldest queued job (FOR UPDATE SKIP LOCKED: concurrent takers never get the same one):
 * it becomes in progress (started_at = now), held by this replica until now + lease_s, with a new
 * fence. PD_ERR_NOT_FOUND when none is queued. */
pd_status pd_pg_store_take(pd_pg_store *s, double now, pd_pg_job *out);

/* Fenced writes (see above): progress numbers; completion (progress 100, expires_at); failure;
 * release (back to the queue, e.g. when the local scheduler refused it). */
pd_status pd_pg_store_progress(pd_pg_store *s, const char *id, int64_t fence, int progress, int stage, int step, int total);
pd_status pd_pg_store_complete(pd_pg_store *s, const char *id, int64_t fence, double t, double expires_at);
pd_status pd_pg_store_fail(pd_pg_store *s, const char *id, int64_t fence, double t, double expires_at, const char *code, const char *message);
pd_status pd_pg_store_release(pd_pg_store *s, const char *id, int64_t fence);

/* Extends to now + lease_s the lease of each of the n_ids jobs in ids that this replica still holds;
 * fills held (room for n_ids) with those, *n with their count. A job it holds but did not name
 * (its local run is gone) is left to expire. */
pd_status pd_pg_store_renew(pd_pg_store *s, const char (*ids)[PD_JOB_ID_LEN + 1], int n_ids, char (*held)[PD_JOB_ID_LEN + 1], int *n);

/* Returns every in-progress job whose lease has expired to the queue (progress reset, fence kept);
 * *n receives how many. */
pd_status pd_pg_store_requeue_expired(pd_pg_store *s, int *n);

/* Cancels a queued or in-progress job: it fails at once with error code "cancelled" (its holder,
 * told by NOTIFY, stops the run; its fenced writes are refused from now on). *out receives the job
 * afterwards, whatever its state was (PD_ERR_NOT_FOUND when there is none); *cancelled (may be NULL)
 * whether this call cancelled it (false: it had finished already). */
pd_status pd_pg_store_cancel(pd_pg_store *s, const char *id, double t, double expires_at, pd_pg_job *out, bool *cancelled);

/* Deletes a job; *was_live says whether it was queued or in progress. PD_ERR_NOT_FOUND. */
pd_status pd_pg_store_delete(pd_pg_store *s, const char *id, bool *was_live);

/* Deletes finished jobs whose expires_at has passed (at most cap per call) and fills ids with them:
 * only the caller whose DELETE removed a row learns its id, so each expiry happens once. */
pd_status pd_pg_store_expire(pd_pg_store *s, double now, char (*ids)[PD_JOB_ID_LEN + 1], int cap, int *n);

/* What pd_pg_store_listen reports: one changed job (id, its status or "deleted", its fence and its
 * holder, "" for none) in commit order, or id NULL after the LISTEN connection was (re)established:
 * notifications may have been missed before it, so the caller re-reads what it caches. A
 * notification can arrive after the caller acted on a later state (a take), so one whose fence is
 * below the caller's is old news. */
typedef void (*pd_pg_notify_fn)(void *ud, const char *id, const char *status, int64_t fence, const char *holder);

/* Waits up to timeout_s for notifications on the LISTEN connection and reports each through fn;
 * (re)connects with the backoff when it is down. PD_ERR_IO while the database is unreachable (after
 * sleeping out the timeout or the backoff, whichever is shorter). One thread at a time. */
pd_status pd_pg_store_listen(pd_pg_store *s, double timeout_s, pd_pg_notify_fn fn, void *ud);

#endif
