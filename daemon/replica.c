#include "daemon/replica.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "daemon/pg_store.h"

#define PROGRESS_WRITE_S 1.0 /* one progress write per job per second at most */
#define TICK_MAX_S 1.0       /* the taker's fallback period (and lease/3 when shorter) */
#define LISTEN_WAIT_S 0.5
#define BATCH 64             /* leases renewed, jobs expired per round trip */
#define ETA_REFRESH_S 1.0    /* the store's live jobs are read for estimates at most once a second */
#define ETA_RUNNING_MAX 256  /* running jobs read for estimates, */
#define ETA_QUEUED_MAX 1024  /* and queued ones (those further back get none) */
#define ORPHAN_AGE_S 120     /* files of no live attempt are removed once this old (a live attempt writes its file at its end) */

/* A job this replica took and runs. */
typedef struct run {
    char id[PD_JOB_ID_LEN + 1];
    int64_t fence;
    pd_job state;        /* stage, step, progress, result as the events say (no request) */
    double last_write;   /* monotonic time of the last progress write */
    int stage_written;
    bool lost;           /* the lease is gone: cancel the run, drop what it reports */
    bool cancel_sent;
    bool settling;       /* a thread is writing the result (the scheduler's or the taker's, never both) */
    pd_job_status final; /* COMPLETED or FAILED once the run ended (until the store took it); QUEUED before */
} run;

struct pd_replica {
    pd_pg_store *store;
    char id[PD_PG_HOLDER_MAX];
    pthread_mutex_t mu;  /* runs, kick, stop */
    pthread_cond_t wake;
    bool kick, stop;
    double hold_until;   /* the taker's own: no take before it (monotonic; its scheduler just refused one) */
    double take_warned;  /* the taker's own: when it last logged a take the store failed */
    run *runs;
    size_t n_runs, cap_runs;
    pthread_t taker, listener;
    bool threads;
    atomic_uint_fast64_t renewals, taken, stale, progress_writes;
    /* Estimated completions of the store's live jobs (add_eta), recomputed at most every ETA_REFRESH_S. */
    pthread_mutex_t eta_mu;
    double eta_read;     /* monotonic time of the last read; 0 = never */
    struct eta { char id[PD_JOB_ID_LEN + 1]; double at; } *etas;
    int n_etas;
};

static void kick(pd_replica *r) {
    pthread_mutex_lock(&r->mu);
    r->kick = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
}

static long find_run_locked(pd_replica *r, const char *id) {
    for (size_t i = 0; i < r->n_runs; i++)
        if (!strcmp(r->runs[i].id, id)) return (long)i;
    return -1;
}

static void remove_run_locked(pd_replica *r, long i) {
    memmove(r->runs + i, r->runs + i + 1, (r->n_runs - (size_t)i - 1) * sizeof *r->runs);
    r->n_runs--;
}

/* Marks this replica's run of id lost (its lease is gone) and wakes the taker, which cancels it. */
static void lose_run(pd_replica *r, const char *id, const char *why) {
    pthread_mutex_lock(&r->mu);
    long i = find_run_locked(r, id);
    bool now_lost = i >= 0 && !r->runs[i].lost && !r->runs[i].final;
    if (now_lost) r->runs[i].lost = true;
    r->kick = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
    if (now_lost) PD_INFO("replica", "%s: %s; stopping the local run", id, why);
}

static int store_error(pd_api_error *err, const char *what) {
    return pd_api_error_set(err, 503, NULL, "store_unavailable", "%s: %s", what, pd_error_msg());
}

/* ---- the cache behind event streams and watches ---- */

/* Puts the store's view of a job into d->jobs; a change bumps its version and wakes the watchers. */
static void cache_put(pd_daemon *d, const pd_pg_job *pj) {
    const pd_job *src = &pj->job;
    pthread_mutex_lock(&d->lock);
    pd_job *j = pd_jobs_find(&d->jobs, src->id);
    bool changed = !j;
    if (!j) {
        pd_job_request copy;
        if (pd_job_request_copy(&copy, &src->req) || pd_jobs_add(&d->jobs, src->id, src->seq, &copy, &j)) {
            pd_job_request_free(&copy);
            pthread_mutex_unlock(&d->lock);
            return;
        }
    }
    changed |= j->status != src->status || j->progress != src->progress || j->stage != src->stage || j->step != src->step ||
               j->total != src->total || j->completed_at != src->completed_at || strcmp(j->error_code, src->error_code);
    j->status = src->status;
    j->progress = src->progress;
    j->stage = src->stage;
    j->step = src->step;
    j->total = src->total;
    j->created_at = src->created_at;
    j->started_at = src->started_at;
    j->completed_at = src->completed_at;
    j->expires_at = src->expires_at;
    snprintf(j->error_code, sizeof j->error_code, "%s", src->error_code);
    snprintf(j->error_message, sizeof j->error_message, "%s", src->error_message);
    if (changed) {
        j->version++;
        pd_daemon_wake_streams_locked(d);
    }
    pthread_mutex_unlock(&d->lock);
}

static void cache_drop(pd_daemon *d, const char *id) {
    pthread_mutex_lock(&d->lock);
    if (pd_jobs_remove(&d->jobs, id)) pd_daemon_wake_streams_locked(d);
    pthread_mutex_unlock(&d->lock);
}

/* Re-reads a cached job (all of them when id is NULL) from the store. */
static void cache_refresh(pd_daemon *d, const char *id) {
    char(*ids)[PD_JOB_ID_LEN + 1] = NULL;
    size_t n = 0;
    pthread_mutex_lock(&d->lock);
    if (id) {
        if (pd_jobs_find(&d->jobs, id) && (ids = malloc(sizeof *ids))) snprintf(ids[n++], PD_JOB_ID_LEN + 1, "%s", id);
    } else if (d->jobs.n && (ids = malloc(d->jobs.n * sizeof *ids))) {
        for (size_t i = 0; i < d->jobs.n; i++) snprintf(ids[n++], PD_JOB_ID_LEN + 1, "%s", d->jobs.v[i]->id);
    }
    pthread_mutex_unlock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        pd_pg_job pj;
        pd_status st = pd_pg_store_get(d->replica->store, ids[i], &pj);
        if (st == PD_ERR_NOT_FOUND) cache_drop(d, ids[i]);
        if (st) continue;
        cache_put(d, &pj);
        pd_pg_job_free(&pj);
    }
    free(ids);
}

/* ---- scheduler events -> fenced writes ---- */

/* Writes a finished run's result to the store and publishes or drops its files. A store that cannot
 * be reached leaves the result pending: the taker retries it every tick. */
static void settle(pd_daemon *d, const char *id) {
    pd_replica *r = d->replica;
    pthread_mutex_lock(&r->mu);
    long i = find_run_locked(r, id);
    if (i < 0 || !r->runs[i].final || r->runs[i].settling) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    r->runs[i].settling = true;
    run u = r->runs[i];
    pthread_mutex_unlock(&r->mu);
    pd_job *j = &u.state;
    pd_status st = u.final == PD_JOB_COMPLETED ? pd_pg_store_complete(r->store, id, u.fence, j->completed_at, j->expires_at)
                                               : pd_pg_store_fail(r->store, id, u.fence, j->completed_at, j->expires_at, j->error_code, j->error_message);
    if (st && st != PD_ERR_CANCELLED) {
        PD_WARN("replica", "%s: the result waits for the store: %s", id, pd_error_msg());
        pthread_mutex_lock(&r->mu);
        i = find_run_locked(r, id);
        if (i >= 0) r->runs[i].settling = false;
        pthread_mutex_unlock(&r->mu);
        return;
    }
    /* A publish that fails here is finished by the content route or the sweep of any replica. */
    if (st == PD_OK && u.final == PD_JOB_COMPLETED && pd_store_publish(&d->store, id, u.fence) != PD_OK)
        PD_ERROR("replica", "%s: %s", id, pd_error_msg());
    if (st == PD_OK) pd_metrics_job_finished(&d->metrics, u.final, u.final == PD_JOB_FAILED && !strcmp(j->error_code, "cancelled"));
    if (st || u.final != PD_JOB_COMPLETED) pd_store_remove_attempt(&d->store, id, u.fence);
    if (st) {
        atomic_fetch_add(&r->stale, 1);
        PD_WARN("replica", "%s: the store refused this replica's result (attempt %lld): %s", id, (long long)u.fence, pd_error_msg());
    } else if (u.final == PD_JOB_COMPLETED) {
        PD_INFO("replica", "%s completed (attempt %lld)", id, (long long)u.fence);
    } else {
        PD_INFO("replica", "%s failed: %s: %s", id, j->error_code, j->error_message);
    }
    pthread_mutex_lock(&r->mu);
    i = find_run_locked(r, id);
    if (i >= 0) remove_run_locked(r, i);
    r->kick = true; /* a pipeline is free */
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
}

static void on_event(void *ud, const pd_job_event *ev) {
    pd_daemon *d = ud;
    pd_replica *r = d->replica;
    pthread_mutex_lock(&r->mu);
    long i = find_run_locked(r, ev->job_id);
    if (i < 0) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    run *u = &r->runs[i];
    bool final = ev->kind == PD_JOB_EVENT_COMPLETED || ev->kind == PD_JOB_EVENT_FAILED;
    if (u->lost) {
        /* Whatever a run without a lease reports is dropped; it ends with its final event. */
        int64_t fence = u->fence;
        if (final) remove_run_locked(r, i);
        r->kick |= final;
        pthread_cond_signal(&r->wake);
        pthread_mutex_unlock(&r->mu);
        if (ev->kind == PD_JOB_EVENT_COMPLETED) {
            pd_store_remove_attempt(&d->store, ev->job_id, fence);
            atomic_fetch_add(&r->stale, 1);
            PD_WARN("replica", "%s: dropped the result of attempt %lld (its lease was lost)", ev->job_id, (long long)fence);
        }
        return;
    }
    pd_daemon_apply_event(d, &u->state, ev);
    double now = pd_now_s();
    bool write = false;
    if (ev->kind == PD_JOB_EVENT_STAGE || ev->kind == PD_JOB_EVENT_PROGRESS) {
        write = u->state.stage != u->stage_written || now - u->last_write >= PROGRESS_WRITE_S;
        if (write) {
            u->last_write = now;
            u->stage_written = u->state.stage;
        }
    }
    if (final) u->final = u->state.status;
    int64_t fence = u->fence;
    pd_job snap = u->state;
    bool stage_event = ev->kind == PD_JOB_EVENT_STAGE;
    pthread_mutex_unlock(&r->mu);
    if (stage_event) kick(r); /* a job that reached decode frees a denoise group */
    if (write) {
        pd_status st = pd_pg_store_progress(r->store, ev->job_id, fence, snap.progress, snap.stage, snap.step, snap.total);
        if (st == PD_OK) atomic_fetch_add(&r->progress_writes, 1);
        else if (st == PD_ERR_CANCELLED) lose_run(r, ev->job_id, "the store refused its progress (lease lost)");
    }
    if (final) settle(d, ev->job_id);
}

/* ---- the taker ---- */

/* Whether this replica's scheduler can start one more job now. */
static bool pipeline_free(pd_daemon *d) {
    pd_replica *r = d->replica;
    pd_scheduler_stats s;
    pd_scheduler_stats_get(d->sched, &s);
    if (!s.ready || s.queued > 0) return false;
    int groups = s.sp_groups > 0 ? s.sp_groups : s.n_denoise;
    if (groups < 1) groups = 1;
    int before_decode = 0, live = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_runs; i++) {
        if (r->runs[i].final) continue;
        live++;
        before_decode += r->runs[i].state.stage < PD_STAGE_DECODE;
    }
    pthread_mutex_unlock(&r->mu);
    /* Separate decode workers: job N+1 may denoise while N decodes. One worker doing both: one job. */
    bool pipelined = s.n_decode > 0 && s.n_denoise + s.n_decode <= s.workers_total;
    return pipelined ? before_decode < groups : live < groups;
}

static void take_while_free(pd_daemon *d) {
    pd_replica *r = d->replica;
    while (!atomic_load(&d->draining) && pd_now_s() >= r->hold_until && pipeline_free(d)) {
        pd_pg_job pj;
        pd_status took = pd_pg_store_take(r->store, pd_daemon_now(), &pj);
        if (took) {
            /* None queued is the usual answer, and a store away is said elsewhere; a store that is up but
             * fails the take is said here, every 10 s at most. */
            if (took != PD_ERR_NOT_FOUND && pd_daemon_store_up(d) && pd_now_s() - r->take_warned >= 10) {
                r->take_warned = pd_now_s();
                PD_WARN("replica", "could not take a job: %s", pd_error_msg());
            }
            return;
        }
        atomic_fetch_add(&r->taken, 1);
        const char *id = pj.job.id;
        pthread_mutex_lock(&r->mu);
        /* An earlier attempt of this job (its lease lost) may still be ending here: the scheduler
         * would refuse the same id, so the job goes back for any replica. */
        bool room = find_run_locked(r, id) < 0;
        if (room && r->n_runs == r->cap_runs) {
            size_t cap = r->cap_runs ? 2 * r->cap_runs : 8;
            run *v = realloc(r->runs, cap * sizeof *v);
            if (v) {
                r->runs = v;
                r->cap_runs = cap;
            }
            room = v != NULL;
        }
        if (room) {
            run *u = &r->runs[r->n_runs++];
            memset(u, 0, sizeof *u);
            snprintf(u->id, sizeof u->id, "%s", id);
            u->fence = pj.fence;
            u->state.status = PD_JOB_IN_PROGRESS;
            u->state.stage = u->stage_written = -1;
            u->last_write = pd_now_s();
        }
        pthread_mutex_unlock(&r->mu);
        char mp4[PATH_MAX], png[PATH_MAX];
        pd_store_attempt_path(&d->store, id, pj.fence, PD_STORE_VIDEO, mp4);
        pd_store_attempt_path(&d->store, id, pj.fence, PD_STORE_THUMBNAIL, png);
        pd_status st = room ? pd_scheduler_submit(d->sched, id, &pj.job.req.p, mp4, png)
                            : pd_error_set(PD_ERR_BUSY, "an earlier attempt is still ending here, or out of memory");
        if (st) {
            PD_WARN("replica", "%s could not be started here; back to the queue: %s", id, pd_error_msg());
            pthread_mutex_lock(&r->mu);
            if (room) remove_run_locked(r, find_run_locked(r, id));
            pthread_mutex_unlock(&r->mu);
            r->hold_until = pd_now_s() + fmin(TICK_MAX_S, d->cfg.store_lease_s / 3);
            /* Create validated and admitted the request, so a refusal is this replica's state (full,
             * draining, the same id still live): the job goes back to the queue for any replica (a
             * release that fails leaves it to the lease). Never failed for it. */
            pd_pg_store_release(r->store, id, pj.fence);
            pd_pg_job_free(&pj);
            return;
        }
        PD_INFO("replica", "%s taken (attempt %lld)", id, (long long)pj.fence);
        pd_pg_job_free(&pj);
    }
}

/* Renews the leases of this replica's runs (those whose result waits for the store too) and marks
 * runs whose lease is gone. False when the store did not answer. */
static bool renew(pd_daemon *d) {
    pd_replica *r = d->replica;
    char ids[BATCH][PD_JOB_ID_LEN + 1], held[BATCH][PD_JOB_ID_LEN + 1];
    int n_ids = 0, n;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_runs && n_ids < BATCH; i++)
        if (!r->runs[i].lost) snprintf(ids[n_ids++], PD_JOB_ID_LEN + 1, "%s", r->runs[i].id);
    pthread_mutex_unlock(&r->mu);
    if (!n_ids) return true;
    if (pd_pg_store_renew(r->store, (const char(*)[PD_JOB_ID_LEN + 1])ids, n_ids, held, &n) != PD_OK) return false;
    atomic_fetch_add(&r->renewals, (uint64_t)n);
    for (int i = 0; i < n_ids; i++) {
        bool found = false;
        for (int k = 0; k < n && !found; k++) found = !strcmp(held[k], ids[i]);
        if (!found) lose_run(r, ids[i], "its lease is no longer this replica's");
    }
    return true;
}

/* Cancels lost runs in the scheduler and retries results the store could not take. */
static void chase_runs(pd_daemon *d) {
    pd_replica *r = d->replica;
    char cancel[BATCH][PD_JOB_ID_LEN + 1], pending[BATCH][PD_JOB_ID_LEN + 1];
    int nc = 0, np = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_runs; i++) {
        run *u = &r->runs[i];
        if (u->lost && !u->cancel_sent && nc < BATCH) {
            u->cancel_sent = true;
            snprintf(cancel[nc++], PD_JOB_ID_LEN + 1, "%s", u->id);
        }
        if (u->final && !u->lost && np < BATCH) snprintf(pending[np++], PD_JOB_ID_LEN + 1, "%s", u->id);
    }
    pthread_mutex_unlock(&r->mu);
    for (int k = 0; k < nc; k++) {
        if (pd_scheduler_cancel(d->sched, cancel[k]) != PD_ERR_NOT_FOUND) continue;
        /* Not live in the scheduler: no final event will come. */
        pthread_mutex_lock(&r->mu);
        long i = find_run_locked(r, cancel[k]);
        if (i >= 0) remove_run_locked(r, i);
        pthread_mutex_unlock(&r->mu);
    }
    for (int k = 0; k < np; k++) settle(d, pending[k]);
}

static void *taker_main(void *arg) {
    pd_daemon *d = arg;
    pd_replica *r = d->replica;
    const double tick = fmin(TICK_MAX_S, d->cfg.store_lease_s / 3), renew_every = d->cfg.store_lease_s / 3;
    double next = 0, next_renew = 0;
    bool renewed = true; /* the last renewal reached the store */
    for (;;) {
        double now = pd_now_s();
        bool tick_now = now >= next;
        if (tick_now) next = now + tick;
        /* A renewal the store missed is retried on every pass until it lands. */
        if (now >= next_renew || !renewed) {
            next_renew = now + renew_every;
            renewed = renew(d);
        }
        chase_runs(d);
        /* Only after this replica's own renewals landed: a store that was away longer than a lease
         * does not take from this replica the jobs it is still running. */
        int q;
        if (tick_now && renewed && pd_pg_store_requeue_expired(r->store, &q) == PD_OK && q) {
            pthread_mutex_lock(&r->mu);
            r->kick = true;
            pthread_mutex_unlock(&r->mu);
        }
        take_while_free(d);
        pthread_mutex_lock(&r->mu);
        while (!r->kick && !r->stop) {
            double left = next - pd_now_s();
            if (left <= 0) break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + left;
            ts.tv_sec = (time_t)t;
            ts.tv_nsec = (long)((t - floor(t)) * 1e9);
            pthread_cond_timedwait(&r->wake, &r->mu, &ts);
        }
        r->kick = false;
        bool stop = r->stop;
        pthread_mutex_unlock(&r->mu);
        if (stop) return NULL;
    }
}

/* ---- the listener ---- */

static void on_notify(void *ud, const char *id, const char *status, int64_t fence, const char *holder) {
    pd_daemon *d = ud;
    pd_replica *r = d->replica;
    if (!id) {
        cache_refresh(d, NULL);
        kick(r);
        return;
    }
    if (!strcmp(status, "queued")) kick(r);
    if (strcmp(status, "in_progress") || strcmp(holder, r->id)) {
        /* Only news about this replica's attempt or a later one can take the run away. */
        pthread_mutex_lock(&r->mu);
        long i = find_run_locked(r, id);
        bool mine = i >= 0 && fence >= r->runs[i].fence;
        pthread_mutex_unlock(&r->mu);
        if (mine) lose_run(r, id, !strcmp(status, "deleted") ? "deleted" : !strcmp(status, "failed") ? "cancelled" : "taken away");
    }
    cache_refresh(d, id);
}

static void *listener_main(void *arg) {
    pd_daemon *d = arg;
    pd_replica *r = d->replica;
    bool was_up = true;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        bool stop = r->stop;
        pthread_mutex_unlock(&r->mu);
        if (stop) return NULL;
        pd_status st = pd_pg_store_listen(r->store, LISTEN_WAIT_S, on_notify, d);
        if (st && was_up) PD_WARN("replica", "%s", pd_error_msg());
        if (!st && !was_up) PD_INFO("replica", "listening to the job store again");
        was_up = st == PD_OK;
    }
}

/* ---- operations ---- */

static pd_status r_start(pd_daemon *d) {
    pd_replica *r = d->replica;
    if (pthread_create(&r->taker, NULL, taker_main, d)) return pd_error_set(PD_ERR_NOMEM, "cannot start the job store's taker thread");
    if (pthread_create(&r->listener, NULL, listener_main, d)) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_signal(&r->wake);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->taker, NULL);
        return pd_error_set(PD_ERR_NOMEM, "cannot start the job store's listener thread");
    }
    r->threads = true;
    return PD_OK;
}

static void r_stop(pd_daemon *d) {
    pd_replica *r = d->replica;
    if (!r || !r->threads) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->taker, NULL);
    pthread_join(r->listener, NULL);
    r->threads = false;
    /* Results still pending get one more try; unfinished jobs go back to the queue at once rather
     * than when their leases expire (a worker still running one is fenced off). */
    pthread_mutex_lock(&r->mu);
    size_t n = r->n_runs;
    run *copy = n ? malloc(n * sizeof *copy) : NULL;
    if (copy) memcpy(copy, r->runs, n * sizeof *copy);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; copy && i < n; i++) {
        if (copy[i].lost) continue;
        if (copy[i].final) settle(d, copy[i].id);
        else if (pd_pg_store_release(r->store, copy[i].id, copy[i].fence) == PD_OK) PD_INFO("replica", "%s returned to the queue", copy[i].id);
    }
    free(copy);
}

static int r_create(pd_daemon *d, pd_job_request *req, json_t **out, pd_api_error *err) {
    pd_replica *r = d->replica;
    if (atomic_load(&d->draining))
        return pd_api_error_set(err, 503, NULL, "shutting_down", "the server is shutting down; retry against another instance");
    if (!d->sched) return pd_api_error_set(err, 503, NULL, "not_ready", "the server has no workers");
    if (pd_scheduler_admit(d->sched, &req->p, NULL)) return pd_api_error_set(err, 400, NULL, "job_too_large", "%s", pd_error_msg());
    pd_job j;
    memset(&j, 0, sizeof j);
    if (pd_job_id_new(j.id)) return pd_api_error_set(err, 503, NULL, "internal_error", "%s", pd_error_msg());
    if (!req->seed_given) {
        uint32_t x;
        if (pd_random_bytes(&x, sizeof x)) return pd_api_error_set(err, 503, NULL, "internal_error", "%s", pd_error_msg());
        req->p.seed = x;
    }
    j.status = PD_JOB_QUEUED;
    j.stage = -1;
    j.created_at = (double)(long long)pd_daemon_now();
    j.req = *req; /* borrowed: the caller frees req */
    int pos = 0;
    pd_status st = pd_pg_store_create(r->store, &j, d->cfg.queue_capacity, &pos);
    if (st == PD_ERR_BUSY) return pd_api_error_set(err, 429, NULL, "queue_full", "%s; retry later", pd_error_msg());
    if (st) return store_error(err, "the job could not be stored");
    *out = pd_api_video_json(&j, pos);
    kick(r);
    PD_INFO("replica", "%s queued (position %d)", j.id, pos);
    return *out ? 200 : pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
}

/* Recomputes the estimated completions of the store's live jobs (r->eta_mu held): the global queue
 * played over the pipelines the running jobs hold (pd_estimate_queue, as one scheduler does with its
 * own queue), every job costed by this replica's cost model (replicas of one deployment run one model
 * on like hardware), running jobs with what remains after the time since their start. Nothing when
 * the store cannot be read or no rates are measured yet. */
static void eta_refresh_locked(pd_daemon *d) {
    pd_replica *r = d->replica;
    r->n_etas = 0;
    int cap = (d->cfg.queue_capacity < ETA_QUEUED_MAX ? d->cfg.queue_capacity : ETA_QUEUED_MAX) + ETA_RUNNING_MAX, n = 0, running = 0;
    pd_pg_job *rows = calloc((size_t)cap, sizeof *rows);
    double *v = calloc(3 * (size_t)cap, sizeof *v);
    struct eta *e = realloc(r->etas, (size_t)cap * sizeof *e);
    if (e) r->etas = e;
    if (!rows || !v || !e || pd_pg_store_live(r->store, cap, rows, &n)) n = 0;
    const double now = pd_daemon_now();
    bool known = n > 0;
    for (int i = 0; i < n && known; i++) {
        pd_estimate est;
        pd_scheduler_admit(d->sched, &rows[i].job.req.p, &est); /* the estimate, whether or not it would be admitted here */
        known = est.stage_seconds[PD_STAGE_DENOISE] > 0;
        const double head = est.stage_seconds[PD_STAGE_TEXT] + est.stage_seconds[PD_STAGE_DENOISE];
        const pd_job *j = &rows[i].job;
        if (j->status == PD_JOB_IN_PROGRESS) {
            running++;
            const double ran = j->started_at > 0 ? fmax(now - j->started_at, 0) : 0;
            const bool decoding = j->stage >= PD_STAGE_DECODE;
            v[i] = decoding ? 0 : fmax(head - ran, 0);
            v[cap + i] = decoding ? fmax(est.seconds - ran, 0) : est.stage_seconds[PD_STAGE_DECODE];
        } else {
            v[i] = head;
            v[cap + i] = est.stage_seconds[PD_STAGE_DECODE];
        }
    }
    /* Every running job holds a pipeline; a free one takes a queued job within a tick, so while jobs
     * wait there are no more pipelines than running jobs. */
    if (known) pd_estimate_queue(v, v + cap, n, running, v + 2 * cap);
    for (int i = 0; known && i < n; i++) {
        snprintf(r->etas[i].id, sizeof r->etas[i].id, "%s", rows[i].job.id);
        r->etas[i].at = now + v[2 * cap + i];
    }
    if (known) r->n_etas = n;
    for (int i = 0; i < n; i++) pd_pg_job_free(&rows[i]);
    free(rows);
    free(v);
}

/* Sets "estimated_completed_at" on a queued or running job: this replica's scheduler's estimate for a
 * job it runs, otherwise the one from the store's live jobs (eta_refresh_locked). */
static void add_eta(pd_daemon *d, json_t *v) {
    pd_replica *r = d->replica;
    const char *id = json_string_value(json_object_get(v, "id"));
    const char *status = json_string_value(json_object_get(v, "status"));
    if (!id || !status || !d->sched || (strcmp(status, "queued") && strcmp(status, "in_progress"))) return;
    double eta = pd_scheduler_estimated_completion(d->sched, id);
    if (eta <= 0) {
        pthread_mutex_lock(&r->eta_mu);
        double t = pd_now_s();
        if (r->eta_read == 0 || t - r->eta_read >= ETA_REFRESH_S) {
            r->eta_read = t;
            eta_refresh_locked(d);
        }
        for (int i = 0; i < r->n_etas && eta <= 0; i++)
            if (!strcmp(r->etas[i].id, id)) eta = r->etas[i].at;
        pthread_mutex_unlock(&r->eta_mu);
    }
    if (eta > 0) json_object_set_new(v, "estimated_completed_at", json_integer((json_int_t)ceil(eta)));
}

static int r_get(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) {
    pd_pg_job pj;
    pd_status st = pd_pg_store_get(d->replica->store, id, &pj);
    if (st == PD_ERR_NOT_FOUND) return pd_daemon_not_found(err, id);
    if (st) return store_error(err, "the job store cannot be read");
    *out = pd_api_video_json(&pj.job, pj.queue_position);
    cache_put(d, &pj);
    pd_pg_job_free(&pj);
    if (!*out) return pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
    add_eta(d, *out);
    return 200;
}

static int r_list(pd_daemon *d, const char *after, int limit, bool ascending, json_t **out, pd_api_error *err) {
    pd_pg_job *rows = calloc((size_t)limit, sizeof *rows);
    json_t *data = json_array();
    if (!rows || !data) {
        free(rows);
        json_decref(data);
        return pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
    }
    int n = 0;
    bool more = false;
    pd_status st = pd_pg_store_list(d->replica->store, after, limit, ascending, rows, &n, &more);
    for (int i = 0; i < n; i++) {
        json_t *v = pd_api_video_json(&rows[i].job, rows[i].queue_position);
        if (v) add_eta(d, v);
        json_array_append_new(data, v);
        pd_pg_job_free(&rows[i]);
    }
    free(rows);
    if (st) {
        json_decref(data);
        if (st == PD_ERR_NOT_FOUND)
            return pd_api_error_set(err, 400, "after", "invalid_value", "'after' names no video (it may have been deleted)");
        return store_error(err, "the job store cannot be read");
    }
    return pd_daemon_list_reply(data, more, out, err);
}

static int r_cancel(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) {
    pd_replica *r = d->replica;
    double now = pd_daemon_now();
    pd_pg_job pj;
    bool cancelled = false;
    pd_status st = pd_pg_store_cancel(r->store, id, now, now + d->cfg.output_ttl_s, &pj, &cancelled);
    if (st == PD_ERR_NOT_FOUND) return pd_daemon_not_found(err, id);
    if (st) return store_error(err, "the cancel could not be recorded");
    int rc = 200;
    if (pj.job.status == PD_JOB_COMPLETED) {
        rc = pd_api_error_set(err, 400, "id", "invalid_state", "video '%s' has already completed", id);
    } else {
        lose_run(r, id, "cancelled by request");
        *out = pd_api_video_json(&pj.job, -1);
        cache_put(d, &pj);
        if (!*out) rc = pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
        else PD_INFO("replica", "%s cancelled", id);
        if (cancelled) pd_metrics_job_finished(&d->metrics, PD_JOB_FAILED, true); /* counted here, where it was cancelled */
    }
    pd_pg_job_free(&pj);
    return rc;
}

static int r_delete(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) {
    pd_replica *r = d->replica;
    bool live = false;
    pd_status st = pd_pg_store_delete(r->store, id, &live);
    if (st == PD_ERR_NOT_FOUND) return pd_daemon_not_found(err, id);
    if (st) return store_error(err, "the delete could not be recorded");
    if (live) lose_run(r, id, "deleted");
    pd_store_remove(&d->store, id);
    cache_drop(d, id);
    PD_INFO("replica", "%s deleted", id);
    *out = json_pack("{s:s, s:s, s:b}", "id", id, "object", "video.deleted", "deleted", 1);
    return *out ? 200 : pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
}

static int r_content_path(pd_daemon *d, const char *id, pd_store_variant v, char *path, pd_api_error *err) {
    pd_pg_job pj;
    pd_status st = pd_pg_store_get(d->replica->store, id, &pj);
    if (st == PD_ERR_NOT_FOUND) return pd_daemon_not_found(err, id);
    if (st) return store_error(err, "the job store cannot be read");
    pd_job_status s = pj.job.status;
    int64_t fence = pj.fence;
    pd_pg_job_free(&pj);
    if (s != PD_JOB_COMPLETED)
        return pd_api_error_set(err, 404, "id", "video_not_ready", "video '%s' is %s; content exists once it has completed", id,
                                pd_job_status_name(s));
    pd_store_path(&d->store, id, v, path);
    /* The replica whose result the store accepted may have died before it renamed the attempt's
     * files: the row names that attempt, so whoever serves it finishes the rename. */
    if (access(path, F_OK) != 0 && pd_store_publish(&d->store, id, fence) == PD_OK && access(path, F_OK) == 0)
        PD_INFO("replica", "%s: published attempt %lld", id, (long long)fence);
    return 200;
}

static void r_add_queue_position(pd_daemon *d, json_t *v) {
    const char *status = json_string_value(json_object_get(v, "status"));
    const char *id = json_string_value(json_object_get(v, "id"));
    if (!status || !id || (strcmp(status, "queued") && strcmp(status, "in_progress"))) return;
    add_eta(d, v);
    int pos;
    if (!strcmp(status, "queued") && json_is_null(json_object_get(v, "queue_position")) &&
        pd_pg_store_queue_position(d->replica->store, id, &pos) == PD_OK && pos >= 0)
        json_object_set_new(v, "queue_position", json_integer(pos));
}

static bool known_in_store(void *ud, const char *id) {
    pd_daemon *d = ud;
    pd_pg_job pj;
    pd_status st = pd_pg_store_get(d->replica->store, id, &pj);
    if (st == PD_OK) pd_pg_job_free(&pj);
    return st != PD_ERR_NOT_FOUND; /* unreachable: keep the files */
}

/* What becomes of the files of attempt `attempt` of job id (pd_store_sweep_attempts): the accepted
 * attempt of a completed job is published, the running attempt kept, any other (a stale holder's,
 * one whose replica died, a deleted job's) removed. */
static pd_store_attempt_fate attempt_fate(void *ud, const char *id, long long attempt) {
    pd_daemon *d = ud;
    pd_pg_job pj;
    pd_status st = pd_pg_store_get(d->replica->store, id, &pj);
    if (st == PD_ERR_NOT_FOUND) return PD_ATTEMPT_REMOVE;
    if (st) return PD_ATTEMPT_KEEP; /* the store cannot say */
    pd_store_attempt_fate f = pj.fence != attempt                  ? PD_ATTEMPT_REMOVE
                              : pj.job.status == PD_JOB_COMPLETED   ? PD_ATTEMPT_PUBLISH
                              : pj.job.status == PD_JOB_IN_PROGRESS ? PD_ATTEMPT_KEEP
                                                                    : PD_ATTEMPT_REMOVE;
    pd_pg_job_free(&pj);
    return f;
}

static void r_housekeep(pd_daemon *d, bool sweep) {
    pd_replica *r = d->replica;
    char ids[BATCH][PD_JOB_ID_LEN + 1];
    int n = 0;
    if (pd_pg_store_expire(r->store, pd_daemon_now(), ids, BATCH, &n) == PD_OK) {
        for (int i = 0; i < n && i < BATCH; i++) {
            pd_store_remove(&d->store, ids[i]);
            cache_drop(d, ids[i]);
            PD_INFO("replica", "%s expired", ids[i]);
        }
    }
    pthread_mutex_lock(&d->lock);
    pd_daemon_wake_streams_locked(d); /* keep-alives */
    pthread_mutex_unlock(&d->lock);
    if (sweep && pd_daemon_store_up(d)) {
        int k = pd_store_sweep_orphans(&d->store, ORPHAN_AGE_S, known_in_store, d), published = 0;
        k += pd_store_sweep_attempts(&d->store, ORPHAN_AGE_S, attempt_fate, d, &published);
        if (k) PD_INFO("replica", "removed %d orphaned output files", k);
        if (published) PD_INFO("replica", "published %d accepted attempt(s) whose replica did not", published);
    }
}

static bool r_store_up(pd_daemon *d) {
    pd_pg_store_stats s;
    pd_pg_store_stats_get(d->replica->store, &s);
    return s.up;
}

static void r_gauges(pd_daemon *d, pd_metrics_gauges *g) {
    pd_replica *r = d->replica;
    pd_pg_store_count(r->store, g->jobs);
    pd_pg_store_stats s;
    pd_pg_store_stats_get(r->store, &s);
    g->store_enabled = true;
    g->store_up = s.up;
    g->replica_id = r->id;
    g->store_queries = s.queries;
    g->store_notifications = s.notifications;
    g->lease_renewals = atomic_load(&r->renewals);
    g->jobs_taken = atomic_load(&r->taken);
    g->stale_results = atomic_load(&r->stale);
    g->progress_writes = atomic_load(&r->progress_writes);
}

const pd_daemon_ops pd_replica_ops = {
    .name = "shared store",
    .start = r_start,
    .stop = r_stop,
    .on_job_event = on_event,
    .create_video = r_create,
    .get_video = r_get,
    .list_videos = r_list,
    .cancel_video = r_cancel,
    .delete_video = r_delete,
    .content_path = r_content_path,
    .add_queue_position = r_add_queue_position,
    .housekeep = r_housekeep,
    .store_up = r_store_up,
    .gauges = r_gauges,
};

pd_status pd_replica_open(pd_daemon *d) {
    const pd_config *c = &d->cfg;
    pd_replica *r = calloc(1, sizeof *r);
    if (!r) return pd_error_set(PD_ERR_NOMEM, "out of memory opening the job store");
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->eta_mu, NULL);
    pthread_cond_init(&r->wake, NULL);
    d->replica = r;
    if (c->replica_id[0]) {
        snprintf(r->id, sizeof r->id, "%s", c->replica_id);
    } else {
        char host[64] = "pipeditd";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        for (char *p = host; *p; p++)
            if ((unsigned char)*p <= ' ' || (unsigned char)*p > '~') *p = '_';
        snprintf(r->id, sizeof r->id, "%s-%ld", host, (long)getpid());
    }
    if (!c->outputs_dir[0])
        PD_WARN("replica", "outputs_dir is not set: finished videos stay in %s, which other replicas cannot serve; name one shared folder "
                           "in every replica",
                d->store.dir);
    pd_status st = pd_pg_store_open(c->store, r->id, c->store_lease_s, &r->store);
    if (st) return pd_error_prefix(st, "store");
    PD_INFO("replica", "shared job store: replica %s, lease %g s, outputs in %s", r->id, c->store_lease_s, d->store.dir);
    return PD_OK;
}

void pd_replica_close(pd_daemon *d) {
    pd_replica *r = d->replica;
    if (!r) return;
    pd_pg_store_close(r->store);
    free(r->runs);
    free(r->etas);
    pthread_mutex_destroy(&r->eta_mu);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mu);
    free(r);
    d->replica = NULL;
}
