/* The daemon on the shared job store (store = postgres://...): replicas of pipeditd that name the
 * same database share one queue and answer every request for every job (daemon/pg_store.h holds
 * the SQL). Chosen once by pd_daemon_open, which then routes every operation through
 * pd_replica_ops instead of the local table and journal.
 *
 * - Create validates and admits as the local daemon does, then inserts into the store (the queue
 *   bound is global: 429 when queue_capacity jobs are queued across the replicas); the reply comes
 *   only after the insert committed. Get, list, content, cancel and delete read and write the store.
 * - A taker thread takes the oldest queued job whenever this replica's scheduler has a free pipeline
 *   (ready, its own queue empty, fewer jobs before decode than denoise groups: job N+1 starts
 *   denoising while N decodes), submits it with the attempt's output paths; a job its scheduler
 *   refuses (full, draining, or an earlier attempt of the same job still ending here) goes back to
 *   the queue, and this replica takes nothing more until its next tick. Every lease/3 it renews
 *   the leases of what it runs; every lease/3 or second, whichever is shorter, it returns jobs whose
 *   lease expired anywhere to the queue, retries results the store could not take and tries to take
 *   (the fallback for a missed notification). It wakes on notifications of queued jobs and on its
 *   scheduler's events, and cancels local runs whose lease is gone.
 * - Scheduler events become fenced writes: stage changes at once, progress at most once a second per
 *   job, the result once. A refused write means the lease was lost: the run is cancelled and its
 *   output dropped (pipedit_store_stale_results_total). A completed attempt's files are renamed to
 *   <id>.mp4/.png in outputs_dir only after the store accepted the result; the row names the
 *   accepted attempt (its fence), so when this replica dies between the two, the content route of
 *   any replica (on the first request) and the sweep of any replica finish the rename.
 * - A listener thread holds the LISTEN connection: each notification may mark a local run lost
 *   (cancelled, deleted or requeued elsewhere: it stops within one DiT block), wakes the taker, and
 *   refreshes the job in d->jobs when this replica caches it, which bumps its version and wakes the
 *   event streams and gRPC watches here.
 * - estimated_completed_at on every replica: for a job this replica runs, its scheduler's estimate;
 *   for any other queued or running job, the store's live jobs (at most one read a second) played as
 *   one FIFO over as many pipelines as jobs are running (a free pipeline takes a queued job within a
 *   tick), each job costed by this replica's cost model and measured rates (replicas of one
 *   deployment run one model on like hardware), a running one with what remains after the time since
 *   its start. None before rates are measured, nor for queued jobs past the first 1024.
 * - Counters: each replica's pipedit_jobs_finished_total and pipedit_jobs_cancelled_total count
 *   what it did to the store: a result the store accepted from it (a refused one counts nowhere), a
 *   cancel it performed (whichever replica ran the job). A delete counts nowhere (as with the local
 *   journal). Summed over the replicas, each finished job counts once.
 * - Housekeeping expires finished jobs with one DELETE ... RETURNING: the replica whose DELETE
 *   removed a row removes its files. Every housekeeping_interval_s it sweeps the shared outputs
 *   folder: attempt files (".<id>.a<N>.*") of the accepted attempt of a completed job are published,
 *   those of the running attempt kept, and those no attempt can claim any more (a stale holder's, one
 *   whose replica died, a deleted or expired job's) removed once 120 s old. Any number of replicas may
 *   sweep at once: renames and removals of a file already handled are skipped. */
#ifndef PD_DAEMON_REPLICA_H
#define PD_DAEMON_REPLICA_H

#include "daemon/daemon.h"

extern const pd_daemon_ops pd_replica_ops;

/* Connects d to the store named by d->cfg.store as replica cfg.replica_id (default
 * <hostname>-<pid>), creating or upgrading the schema when the database answers (an unreachable one
 * is retried in the background). Errors from pd_pg_store_open, prefixed "store". */
pd_status pd_replica_open(pd_daemon *d);

/* Frees what pd_replica_open made (the threads are gone by then); nothing when d has no replica. */
void pd_replica_close(pd_daemon *d);

#endif
