/* A small fixed pool of worker threads for the CPU backend. The calling thread takes part in every
 * run, so a pool of n threads starts n - 1 workers. Work is handed out as numbered tasks; which
 * thread runs a task never changes what the task computes, so results do not depend on the pool
 * size as long as each task writes only its own outputs. */
#ifndef PD_THREADPOOL_H
#define PD_THREADPOOL_H

#include <stdint.h>

#include "base/status.h"

typedef struct pd_threadpool pd_threadpool;

/* Runs task number `task` (0 .. n_tasks-1) on thread `thread` (0 .. pool size - 1; 0 is the caller).
 * `thread` is only meant for picking a per-thread scratch buffer. */
typedef void (*pd_threadpool_fn)(void *ctx, int64_t task, int thread);

/* Creates a pool of n_threads threads (>= 1) counting the caller. Returns PD_ERR_NOMEM or
 * PD_ERR_INVALID (thread creation failed) with a message. */
pd_status pd_threadpool_create(int n_threads, pd_threadpool **out);
/* Stops and joins the workers. NULL is a no-op. */
void pd_threadpool_free(pd_threadpool *pool);
/* Runs fn for every task and returns when all have finished. Concurrent callers are serialised. */
void pd_threadpool_run(pd_threadpool *pool, int64_t n_tasks, pd_threadpool_fn fn, void *ctx);

#endif
