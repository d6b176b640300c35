/* Test-side helpers shared by the scheduler tests: every pd_job_event recorded under a lock, lookups
 * over them, and waits with deadlines. Header-only (static), for tests/unit/test_scheduler*.c. */
#ifndef PD_TEST_SCHED_EVENTS_H
#define PD_TEST_SCHED_EVENTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "scheduler/scheduler.h"

typedef struct rec {
    pd_job_event_kind kind;
    char id[64];
    pd_stage stage;
    int step, total, progress;
    double t;
    char code[32], msg[600];
} rec;

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static rec evs[8192];
static int n_evs;

/* The scheduler callback: records ev (events past the buffer are dropped). */
static void on_event(void *ud, const pd_job_event *ev) {
    (void)ud;
    pthread_mutex_lock(&ev_mu);
    if (n_evs < (int)(sizeof evs / sizeof evs[0])) {
        rec *r = &evs[n_evs++];
        r->kind = ev->kind;
        snprintf(r->id, sizeof r->id, "%s", ev->job_id);
        r->stage = ev->stage;
        r->step = ev->step;
        r->total = ev->total;
        r->progress = ev->progress;
        r->t = ev->t;
        if (ev->kind == PD_JOB_EVENT_FAILED) {
            snprintf(r->code, sizeof r->code, "%s", ev->error_code);
            snprintf(r->msg, sizeof r->msg, "%s", ev->error_message);
        }
    }
    pthread_mutex_unlock(&ev_mu);
}

static inline void reset_events(void) {
    pthread_mutex_lock(&ev_mu);
    n_evs = 0;
    pthread_mutex_unlock(&ev_mu);
}

/* The first event of a kind for a job (stage >= 0 also matches the stage; step > 0 the step), or NULL. */
static inline const rec *find_ev(const char *id, pd_job_event_kind kind, int stage, int step) {
    const rec *out = NULL;
    pthread_mutex_lock(&ev_mu);
    for (int i = 0; i < n_evs && !out; i++)
        if (evs[i].kind == kind && !strcmp(evs[i].id, id) && (stage < 0 || (int)evs[i].stage == stage) &&
            (step <= 0 || evs[i].step == step))
            out = &evs[i];
    pthread_mutex_unlock(&ev_mu);
    return out;
}

/* The job's COMPLETED or FAILED event, or NULL. */
static inline const rec *final_ev(const char *id) {
    const rec *r = find_ev(id, PD_JOB_EVENT_COMPLETED, -1, 0);
    return r ? r : find_ev(id, PD_JOB_EVENT_FAILED, -1, 0);
}

static inline void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline bool wait_final(const char *id, double timeout) {
    for (double end = pd_now_s() + timeout; pd_now_s() < end; sleep_ms(5))
        if (final_ev(id)) return true;
    return false;
}

static inline bool wait_ready(pd_scheduler *s, double timeout) {
    pd_scheduler_stats st;
    for (double end = pd_now_s() + timeout; pd_now_s() < end; sleep_ms(10)) {
        pd_scheduler_stats_get(s, &st);
        if (st.ready) return true;
    }
    return false;
}

#endif
