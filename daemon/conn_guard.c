#include "daemon/conn_guard.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "base/clock.h"

struct pd_conn_slot {
    pd_conn_slot *prev, *next; /* oldest request start first */
    int fd;
    pd_conn_phase phase;
    double start;              /* this request's start */
    bool dropped;              /* shut down; the server has yet to close it */
};

struct pd_conn_guard {
    pthread_mutex_t lock;
    pd_conn_slot *head, *tail;
    int limit;
    double header_s, body_s;
    pd_conn_guard_stats stats;
    /* the sweep thread */
    double period_s;
    bool has_thread, stopping;
    pthread_t thread;
    pthread_cond_t wake;
};

static void unlink_slot(pd_conn_guard *g, pd_conn_slot *s) {
    if (s->prev) s->prev->next = s->next;
    else g->head = s->next;
    if (s->next) s->next->prev = s->prev;
    else g->tail = s->prev;
    s->prev = s->next = NULL;
}

static void append_slot(pd_conn_guard *g, pd_conn_slot *s) {
    s->prev = g->tail;
    s->next = NULL;
    if (g->tail) g->tail->next = s;
    else g->head = s;
    g->tail = s;
}

/* The server sees end-of-file and closes the connection; the descriptor stays registered (and
 * open) until pd_conn_guard_close, so it cannot have been reused. */
static void drop_locked(pd_conn_guard *g, pd_conn_slot *s, uint64_t *counter) {
    PD_ASSERT(!s->dropped);
    shutdown(s->fd, SHUT_RDWR);
    s->dropped = true;
    g->stats.open--;
    (*counter)++;
}

/* The connection that has waited longest in HEADERS, else in BODY, other than skip; NULL if none. */
static pd_conn_slot *victim_locked(pd_conn_guard *g, const pd_conn_slot *skip) {
    pd_conn_slot *body = NULL;
    for (pd_conn_slot *s = g->head; s; s = s->next) {
        if (s == skip || s->dropped) continue;
        if (s->phase == PD_CONN_HEADERS) return s;
        if (s->phase == PD_CONN_BODY && !body) body = s;
    }
    return body;
}

static void *sweep_main(void *arg) {
    pd_conn_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stopping) {
        double t = pd_now_s() + g->period_s; /* the condition variable runs on CLOCK_MONOTONIC too */
        struct timespec ts;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&g->wake, &g->lock, &ts);
        if (g->stopping) break;
        pthread_mutex_unlock(&g->lock);
        pd_conn_guard_sweep(g, pd_now_s());
        pthread_mutex_lock(&g->lock);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

pd_status pd_conn_guard_create(int limit, double header_timeout_s, double body_timeout_s, double sweep_period_s,
                               pd_conn_guard **out) {
    *out = NULL;
    if (limit < 1 || !(header_timeout_s > 0) || !(body_timeout_s >= header_timeout_s) || !(sweep_period_s >= 0))
        return pd_error_set(PD_ERR_INVALID, "connection guard: limit %d, header timeout %g s, body timeout %g s, sweep %g s "
                            "(want limit >= 1 and 0 < header <= body)", limit, header_timeout_s, body_timeout_s, sweep_period_s);
    pd_conn_guard *g = calloc(1, sizeof *g);
    if (!g) return pd_error_set(PD_ERR_NOMEM, "connection guard: out of memory");
    g->limit = limit;
    g->header_s = header_timeout_s;
    g->body_s = body_timeout_s;
    g->period_s = sweep_period_s;
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (sweep_period_s > 0) {
        int rc = pthread_create(&g->thread, NULL, sweep_main, g);
        if (rc) {
            pd_conn_guard_destroy(g);
            return pd_error_set(PD_ERR_NOMEM, "connection guard: cannot start its thread (error %d)", rc);
        }
        g->has_thread = true;
    }
    *out = g;
    return PD_OK;
}

void pd_conn_guard_destroy(pd_conn_guard *g) {
    if (!g) return;
    if (g->has_thread) {
        pthread_mutex_lock(&g->lock);
        g->stopping = true;
        pthread_cond_signal(&g->wake);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->thread, NULL);
    }
    while (g->head) {
        pd_conn_slot *s = g->head;
        unlink_slot(g, s);
        free(s);
    }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

pd_conn_slot *pd_conn_guard_open(pd_conn_guard *g, int fd, double now) {
    pd_conn_slot *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->fd = fd;
    s->phase = PD_CONN_HEADERS;
    s->start = now;
    pthread_mutex_lock(&g->lock);
    append_slot(g, s);
    g->stats.open++;
    g->stats.accepted++;
    if (g->stats.open > g->limit) {
        pd_conn_slot *v = victim_locked(g, s);
        if (v) drop_locked(g, v, &g->stats.evicted);
        else drop_locked(g, s, &g->stats.refused);
    }
    pthread_mutex_unlock(&g->lock);
    return s;
}

bool pd_conn_guard_set_phase(pd_conn_guard *g, pd_conn_slot *s, pd_conn_phase ph, double now) {
    if (!s) return true;
    pthread_mutex_lock(&g->lock);
    if (s->dropped) {
        pthread_mutex_unlock(&g->lock);
        return false;
    }
    s->phase = ph;
    if (ph == PD_CONN_HEADERS) { /* a new request: it joins the end of the queue by start time */
        s->start = now;
        unlink_slot(g, s);
        append_slot(g, s);
    }
    pthread_mutex_unlock(&g->lock);
    return true;
}

void pd_conn_guard_close(pd_conn_guard *g, pd_conn_slot *s) {
    if (!s) return;
    pthread_mutex_lock(&g->lock);
    unlink_slot(g, s);
    if (!s->dropped) g->stats.open--;
    pthread_mutex_unlock(&g->lock);
    free(s);
}

int pd_conn_guard_sweep(pd_conn_guard *g, double now) {
    int n = 0;
    pthread_mutex_lock(&g->lock);
    for (pd_conn_slot *s = g->head; s; s = s->next) {
        if (s->dropped || s->phase == PD_CONN_BUSY) continue;
        double limit = s->phase == PD_CONN_HEADERS ? g->header_s : g->body_s;
        if (now - s->start > limit) {
            drop_locked(g, s, &g->stats.expired);
            n++;
        }
    }
    pthread_mutex_unlock(&g->lock);
    return n;
}

void pd_conn_guard_stats_get(pd_conn_guard *g, pd_conn_guard_stats *out) {
    pthread_mutex_lock(&g->lock);
    *out = g->stats;
    pthread_mutex_unlock(&g->lock);
}
