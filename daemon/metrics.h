/* Prometheus metrics for GET /metrics: counters and histograms fed by the HTTP layer and the
 * scheduler's job events, and gauges sampled by the caller at scrape time. Every call is thread-safe
 * (one lock per pd_metrics). */
#ifndef PD_DAEMON_METRICS_H
#define PD_DAEMON_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/jobs.h"
#include "scheduler/scheduler.h"

#define PD_METRICS_MAX_SERIES 96
#define PD_METRICS_BUCKETS 14

typedef struct pd_metrics_series {
    const char *route;  /* static string: the route template, e.g. "/v1/videos/{id}" */
    const char *method; /* static string */
    int code;
    uint64_t count;
} pd_metrics_series;

typedef struct pd_metrics_hist {
    uint64_t buckets[PD_METRICS_BUCKETS]; /* cumulative counts are formed when rendering */
    uint64_t count;
    double sum;
} pd_metrics_hist;

typedef struct pd_metrics {
    pthread_mutex_t mu;
    pd_metrics_series series[PD_METRICS_MAX_SERIES];
    int n_series;
    uint64_t series_dropped;  /* requests that found the series table full */
    pd_metrics_hist stage[PD_STAGE_COUNT];
    uint64_t denoise_steps;
    uint64_t jobs_finished[PD_JOB_STATUS_COUNT]; /* completed / failed totals since start */
    uint64_t jobs_cancelled;
} pd_metrics;

/* What the daemon samples when /metrics is scraped. */
typedef struct pd_metrics_gauges {
    int jobs[PD_JOB_STATUS_COUNT]; /* jobs in the table by status */
    int queue_depth, running;
    int workers_up, workers_total;
    int n_denoise, n_decode;
    int sp_groups, sp_groups_formed; /* sequence-parallel denoise groups, and those with live communicators */
    double worker_memory_bytes;
    pd_scheduler_aco_stats aco;      /* Aco counts since start */
    pd_scheduler_plan_stats plan;    /* the plan in force (plan/online.h) */
    bool ready, draining;
    double uptime_s;
    int http_connections;              /* open and not dropped (daemon/conn_guard.h) */
    uint64_t http_dropped[3];          /* connections dropped: past a deadline, evicted, refused */
    /* the shared job store (rendered only when store_enabled) */
    bool store_enabled, store_up;
    const char *replica_id;
    uint64_t store_queries, store_notifications, lease_renewals, jobs_taken, stale_results, progress_writes;
} pd_metrics_gauges;

void pd_metrics_init(pd_metrics *m);
void pd_metrics_free(pd_metrics *m);

/* Counts one answered request. route and method must be static strings. */
void pd_metrics_request(pd_metrics *m, const char *route, const char *method, int code);
/* Records that a job spent seconds in a stage. */
void pd_metrics_stage(pd_metrics *m, pd_stage stage, double seconds);
/* Adds n finished denoising steps. */
void pd_metrics_steps(pd_metrics *m, int n);
/* Counts a job reaching completed or failed (cancelled counts as failed and as cancelled). */
void pd_metrics_job_finished(pd_metrics *m, pd_job_status s, bool cancelled);

/* The Prometheus text exposition (format 0.0.4) of everything; malloc'ed, NULL when out of memory. */
char *pd_metrics_render(pd_metrics *m, const pd_metrics_gauges *g);

#endif
