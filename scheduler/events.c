/* The job event queue: events are queued under s->mu by whatever changes a job and delivered by the
 * scheduler thread with the mutex released, so the daemon's callback can take its own locks while
 * other daemon threads call pd_scheduler_submit without a lock-order deadlock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scheduler/scheduler_impl.h"

double sched_now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sched_wake(pd_scheduler *s) {
    char c = 1;
    ssize_t k = write(s->wake[1], &c, 1); /* a full pipe already means "wake up" */
    (void)k;
}

sched_evrec *sched_push_event(pd_scheduler *s, pd_job_event_kind kind, const sched_job *j) {
    if (s->n_ev == s->cap_ev) {
        int cap = s->cap_ev ? 2 * s->cap_ev : 64;
        sched_evrec *e = realloc(s->ev, (size_t)cap * sizeof *e);
        PD_ASSERT(e); /* a few hundred bytes per event; losing events silently would be worse */
        s->ev = e;
        s->cap_ev = cap;
    }
    sched_evrec *r = &s->ev[s->n_ev++];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", j->id);
    r->ev.kind = kind;
    r->ev.t = sched_now_real();
    return r;
}

void sched_ev_stage(pd_scheduler *s, const sched_job *j, pd_stage stage, int progress) {
    sched_evrec *r = sched_push_event(s, PD_JOB_EVENT_STAGE, j);
    r->ev.stage = stage;
    r->ev.progress = progress;
}

void sched_deliver_events(pd_scheduler *s) {
    while (s->n_ev && !s->stopping) {
        sched_evrec *batch = s->ev;
        int n = s->n_ev;
        s->ev = NULL;
        s->n_ev = s->cap_ev = 0;
        s->emitting = true;
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < n; i++) {
            sched_evrec *r = &batch[i];
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
