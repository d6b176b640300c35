#include "engine/cpu/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct pd_threadpool {
    int n_threads;
    pthread_t *workers;
    pthread_mutex_t run_lock; /* one run at a time */
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    uint64_t generation; /* bumped per run; workers wait for a change */
    int busy;            /* workers still inside the current run */
    int stop;
    pd_threadpool_fn fn;
    void *ctx;
    int64_t n_tasks;
    atomic_llong next;
};

typedef struct {
    pd_threadpool *pool;
    int index;
} pd_worker_arg;

static void pd_threadpool_drain(pd_threadpool *p, int thread) {
    for (;;) {
        int64_t t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) return;
        p->fn(p->ctx, t, thread);
    }
}

static void *pd_threadpool_main(void *arg) {
    pd_worker_arg a = *(pd_worker_arg *)arg;
    free(arg);
    pd_threadpool *p = a.pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        pd_threadpool_drain(p, a.index);
        pthread_mutex_lock(&p->lock);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

pd_status pd_threadpool_create(int n_threads, pd_threadpool **out) {
    PD_ASSERT(n_threads >= 1);
    pd_threadpool *p = calloc(1, sizeof *p);
    if (!p) return pd_error_set(PD_ERR_NOMEM, "out of memory creating a thread pool");
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return pd_error_set(PD_ERR_NOMEM, "out of memory creating a thread pool");
    }
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->n_threads = 1;
    for (int i = 1; i < n_threads; i++) {
        pd_worker_arg *a = malloc(sizeof *a);
        if (a) *a = (pd_worker_arg){p, i};
        if (!a || pthread_create(&p->workers[i], NULL, pd_threadpool_main, a)) {
            free(a);
            pd_threadpool_free(p);
            return pd_error_set(PD_ERR_INVALID, "could not start thread %d of %d", i, n_threads);
        }
        p->n_threads++;
    }
    *out = p;
    return PD_OK;
}

void pd_threadpool_free(pd_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->run_lock);
    free(p->workers);
    free(p);
}

void pd_threadpool_run(pd_threadpool *p, int64_t n_tasks, pd_threadpool_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->busy = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pd_threadpool_drain(p, 0);
    pthread_mutex_lock(&p->lock);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->run_lock);
}
