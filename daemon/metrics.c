#include "daemon/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stage times span milliseconds (tiny model on a CPU) to minutes (50 steps of a 14B DiT). */
static const double bucket_le[PD_METRICS_BUCKETS] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

void pd_metrics_init(pd_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void pd_metrics_free(pd_metrics *m) { pthread_mutex_destroy(&m->mu); }

void pd_metrics_request(pd_metrics *m, const char *route, const char *method, int code) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    for (; i < m->n_series; i++) {
        pd_metrics_series *s = &m->series[i];
        if (s->code == code && s->route == route && s->method == method) break;
    }
    if (i == m->n_series) {
        if (i == PD_METRICS_MAX_SERIES) {
            m->series_dropped++;
            pthread_mutex_unlock(&m->mu);
            return;
        }
        m->series[i] = (pd_metrics_series){route, method, code, 0};
        m->n_series++;
    }
    m->series[i].count++;
    pthread_mutex_unlock(&m->mu);
}

void pd_metrics_stage(pd_metrics *m, pd_stage stage, double seconds) {
    if (stage < 0 || stage >= PD_STAGE_COUNT || !(seconds >= 0)) return;
    pthread_mutex_lock(&m->mu);
    pd_metrics_hist *h = &m->stage[stage];
    for (int b = 0; b < PD_METRICS_BUCKETS; b++)
        if (seconds <= bucket_le[b]) {
            h->buckets[b]++;
            break;
        }
    h->count++;
    h->sum += seconds;
    pthread_mutex_unlock(&m->mu);
}

void pd_metrics_steps(pd_metrics *m, int n) {
    if (n <= 0) return;
    pthread_mutex_lock(&m->mu);
    m->denoise_steps += (uint64_t)n;
    pthread_mutex_unlock(&m->mu);
}

void pd_metrics_job_finished(pd_metrics *m, pd_job_status s, bool cancelled) {
    pthread_mutex_lock(&m->mu);
    m->jobs_finished[s]++;
    if (cancelled) m->jobs_cancelled++;
    pthread_mutex_unlock(&m->mu);
}

typedef struct buf {
    char *s;
    size_t n, cap;
    bool oom;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)k;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

char *pd_metrics_render(pd_metrics *m, const pd_metrics_gauges *g) {
    buf b = {malloc(8192), 0, 8192, false};
    if (!b.s) return NULL;
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    bprintf(&b, "# HELP pipedit_http_requests_total HTTP requests answered, by route template, method and status code.\n"
                "# TYPE pipedit_http_requests_total counter\n");
    for (int i = 0; i < m->n_series; i++) {
        const pd_metrics_series *s = &m->series[i];
        bprintf(&b, "pipedit_http_requests_total{route=\"%s\",method=\"%s\",code=\"%d\"} %llu\n", s->route, s->method, s->code,
                (unsigned long long)s->count);
    }
    bprintf(&b, "# HELP pipedit_jobs_finished_total Jobs that reached a final status since start.\n"
                "# TYPE pipedit_jobs_finished_total counter\n");
    for (int s = PD_JOB_COMPLETED; s <= PD_JOB_FAILED; s++)
        bprintf(&b, "pipedit_jobs_finished_total{status=\"%s\"} %llu\n", pd_job_status_name((pd_job_status)s),
                (unsigned long long)m->jobs_finished[s]);
    bprintf(&b, "# HELP pipedit_jobs_cancelled_total Jobs cancelled (counted as failed too).\n"
                "# TYPE pipedit_jobs_cancelled_total counter\npipedit_jobs_cancelled_total %llu\n",
            (unsigned long long)m->jobs_cancelled);
    bprintf(&b, "# HELP pipedit_denoise_steps_total Denoising steps finished.\n"
                "# TYPE pipedit_denoise_steps_total counter\npipedit_denoise_steps_total %llu\n",
            (unsigned long long)m->denoise_steps);
    bprintf(&b, "# HELP pipedit_stage_duration_seconds Time a job spent in each stage.\n"
                "# TYPE pipedit_stage_duration_seconds histogram\n");
    for (int st = 0; st < PD_STAGE_COUNT; st++) {
        const pd_metrics_hist *h = &m->stage[st];
        const char *name = pd_stage_name((pd_stage)st);
        uint64_t cum = 0;
        for (int k = 0; k < PD_METRICS_BUCKETS; k++) {
            cum += h->buckets[k];
            bprintf(&b, "pipedit_stage_duration_seconds_bucket{stage=\"%s\",le=\"%g\"} %llu\n", name, bucket_le[k], (unsigned long long)cum);
        }
        bprintf(&b, "pipedit_stage_duration_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
        bprintf(&b, "pipedit_stage_duration_seconds_sum{stage=\"%s\"} %.6f\n", name, h->sum);
        bprintf(&b, "pipedit_stage_duration_seconds_count{stage=\"%s\"} %llu\n", name, (unsigned long long)h->count);
    }
    pthread_mutex_unlock(&m->mu);
    bprintf(&b, "# HELP pipedit_jobs Jobs in the jobs table by status.\n# TYPE pipedit_jobs gauge\n");
    for (int s = 0; s < PD_JOB_STATUS_COUNT; s++)
        bprintf(&b, "pipedit_jobs{status=\"%s\"} %d\n", pd_job_status_name((pd_job_status)s), g->jobs[s]);
    bprintf(&b, "# HELP pipedit_queue_depth Jobs admitted and waiting to start.\n# TYPE pipedit_queue_depth gauge\npipedit_queue_depth %d\n",
            g->queue_depth);
    bprintf(&b, "# HELP pipedit_jobs_running Jobs in some stage.\n# TYPE pipedit_jobs_running gauge\npipedit_jobs_running %d\n", g->running);
    bprintf(&b, "# HELP pipedit_workers_up Worker processes alive and loaded.\n# TYPE pipedit_workers_up gauge\npipedit_workers_up %d\n",
            g->workers_up);
    bprintf(&b, "# HELP pipedit_workers_total Worker processes configured.\n# TYPE pipedit_workers_total gauge\npipedit_workers_total %d\n",
            g->workers_total);
    bprintf(&b, "# HELP pipedit_worker_memory_bytes Resident memory of the worker processes (the CPU backend's device memory).\n"
                "# TYPE pipedit_worker_memory_bytes gauge\npipedit_worker_memory_bytes %.0f\n",
            g->worker_memory_bytes);
    bprintf(&b, "# HELP pipedit_group_size Devices in each pipeline group.\n# TYPE pipedit_group_size gauge\n"
                "pipedit_group_size{group=\"denoise\"} %d\npipedit_group_size{group=\"decode\"} %d\n",
            g->n_denoise, g->n_decode);
    bprintf(&b, "# HELP pipedit_sp_groups Sequence-parallel denoise groups configured, and those formed (communicators up).\n"
                "# TYPE pipedit_sp_groups gauge\npipedit_sp_groups{state=\"configured\"} %d\npipedit_sp_groups{state=\"formed\"} %d\n",
            g->sp_groups, g->sp_groups_formed);
    const pd_scheduler_aco_stats *a = &g->aco;
    bprintf(&b, "# HELP pipedit_aco_lent_share Share of self-attention heads lent to Aco helpers in the last denoise stage "
                "that had a pair.\n# TYPE pipedit_aco_lent_share gauge\npipedit_aco_lent_share %.4f\n", a->lent_share);
    bprintf(&b, "# HELP pipedit_aco_sessions_total Aco pair sessions started (a denoise stage and an idle decode worker).\n"
                "# TYPE pipedit_aco_sessions_total counter\npipedit_aco_sessions_total %llu\n",
            (unsigned long long)a->sessions);
    bprintf(&b, "# HELP pipedit_aco_lends_total Self-attention calls whose lent heads came back from a helper.\n"
                "# TYPE pipedit_aco_lends_total counter\npipedit_aco_lends_total %llu\n", (unsigned long long)a->lends);
    bprintf(&b, "# HELP pipedit_aco_heads_total Self-attention heads of denoise ranks, and those lent.\n"
                "# TYPE pipedit_aco_heads_total counter\npipedit_aco_heads_total{where=\"all\"} %llu\n"
                "pipedit_aco_heads_total{where=\"lent\"} %llu\n",
            (unsigned long long)a->heads_total, (unsigned long long)a->heads_lent);
    bprintf(&b, "# HELP pipedit_aco_declines_total Lend requests a helper declined (back-offs: a decode came first).\n"
                "# TYPE pipedit_aco_declines_total counter\npipedit_aco_declines_total %llu\n",
            (unsigned long long)a->declined);
    bprintf(&b, "# HELP pipedit_aco_helper_failures_total Sessions whose lend failed (the heads were recomputed by the "
                "denoise rank), and helpers lost while serving.\n# TYPE pipedit_aco_helper_failures_total counter\n"
                "pipedit_aco_helper_failures_total{kind=\"lend_failed\"} %llu\n"
                "pipedit_aco_helper_failures_total{kind=\"helper_lost\"} %llu\n",
            (unsigned long long)a->failures, (unsigned long long)a->helpers_lost);
    bprintf(&b, "# HELP pipedit_aco_lend_wait_seconds_total Time denoise ranks waited for lent heads after their own.\n"
                "# TYPE pipedit_aco_lend_wait_seconds_total counter\npipedit_aco_lend_wait_seconds_total %.6f\n",
            a->lend_wait_s);
    bprintf(&b, "# HELP pipedit_aco_helper_lends_total Lends the helpers computed, and their attention time.\n"
                "# TYPE pipedit_aco_helper_lends_total counter\npipedit_aco_helper_lends_total %llu\n"
                "# HELP pipedit_aco_helper_compute_seconds_total Attention time of the helpers' lends.\n"
                "# TYPE pipedit_aco_helper_compute_seconds_total counter\npipedit_aco_helper_compute_seconds_total %.6f\n",
            (unsigned long long)a->helper_lends, a->helper_compute_s);
    bprintf(&b, "# HELP pipedit_aco_helper_lend_seconds_max The longest attention time of one lend (one block's lent work).\n"
                "# TYPE pipedit_aco_helper_lend_seconds_max gauge\npipedit_aco_helper_lend_seconds_max %.6f\n",
            a->helper_lend_max_s);
    bprintf(&b, "# HELP pipedit_aco_speedup Measured denoise stage speedup with a pair (1 until measured both ways).\n"
                "# TYPE pipedit_aco_speedup gauge\npipedit_aco_speedup %.4f\n", a->speedup);
    bprintf(&b, "# HELP pipedit_decode_start_delay_seconds From a decode's assignment reaching its worker to the decode "
                "starting (a helper first finishes the lend in progress).\n# TYPE pipedit_decode_start_delay_seconds summary\n"
                "pipedit_decode_start_delay_seconds_sum %.6f\npipedit_decode_start_delay_seconds_count %llu\n"
                "# HELP pipedit_decode_start_delay_seconds_max The longest such delay since start.\n"
                "# TYPE pipedit_decode_start_delay_seconds_max gauge\npipedit_decode_start_delay_seconds_max %.6f\n",
            a->decode_delay_sum_s, (unsigned long long)a->decodes, a->decode_delay_max_s);
    const pd_scheduler_plan_stats *pl = &g->plan;
    bprintf(&b, "# HELP pipedit_plan_info The plan in force: the profile it was made with, and whether it comes from the cost "
                "model or from measured stage times alone.\n# TYPE pipedit_plan_info gauge\n"
                "pipedit_plan_info{profile=\"%s\",source=\"%s\"} 1\n",
            pl->have_model ? pl->profile : "none", pl->have_model ? "cost_model" : "measured");
    bprintf(&b, "# HELP pipedit_plan_denoise_workers Denoise workers the plan in force asks for.\n"
                "# TYPE pipedit_plan_denoise_workers gauge\npipedit_plan_denoise_workers %d\n"
                "# HELP pipedit_plan_decode_workers Decode workers the plan in force asks for.\n"
                "# TYPE pipedit_plan_decode_workers gauge\npipedit_plan_decode_workers %d\n",
            pl->plan.denoise_workers, pl->plan.decode_workers);
    bprintf(&b, "# HELP pipedit_plan_pipesp_chunk PipeSP chunk (heads) sent to SP groups; 0 = none or measured by the group.\n"
                "# TYPE pipedit_plan_pipesp_chunk gauge\npipedit_plan_pipesp_chunk %d\n"
                "# HELP pipedit_plan_aco_share Heads a denoise rank lends per self-attention call (-2 half of each call, "
                "-1 measured by the lender, 0 none).\n# TYPE pipedit_plan_aco_share gauge\npipedit_plan_aco_share %d\n",
            pl->plan.chunk, pl->plan.aco_share);
    bprintf(&b, "# HELP pipedit_plan_predicted_stage_seconds One typical job's stage time the plan in force predicted.\n"
                "# TYPE pipedit_plan_predicted_stage_seconds gauge\n");
    for (int i = 0; i < PD_PLAN_STAGES; i++)
        bprintf(&b, "pipedit_plan_predicted_stage_seconds{stage=\"%s\"} %.6f\n", pd_plan_stage_name((pd_plan_stage)i),
                pl->plan.predicted_s[i]);
    bprintf(&b, "# HELP pipedit_plan_measured_stage_seconds One typical job's stage time from measured stage times (the "
                "model's shape scaled by measured / predicted; 0 until measured).\n"
                "# TYPE pipedit_plan_measured_stage_seconds gauge\n");
    for (int i = 0; i < PD_PLAN_STAGES; i++)
        bprintf(&b, "pipedit_plan_measured_stage_seconds{stage=\"%s\"} %.6f\n", pd_plan_stage_name((pd_plan_stage)i),
                pl->measured_s[i]);
    bprintf(&b, "# HELP pipedit_plan_revisions_total Changes of plan since start (re-plans from measured stage times).\n"
                "# TYPE pipedit_plan_revisions_total counter\npipedit_plan_revisions_total %u\n",
            pl->plan.revision > 0 ? pl->plan.revision - 1 : 0);
    bprintf(&b, "# HELP pipedit_ready 1 when every worker group is loaded and the daemon is not draining.\n"
                "# TYPE pipedit_ready gauge\npipedit_ready %d\n",
            g->ready && !g->draining);
    bprintf(&b, "# HELP pipedit_draining 1 while shutting down.\n# TYPE pipedit_draining gauge\npipedit_draining %d\n", g->draining);
    bprintf(&b, "# HELP pipedit_uptime_seconds Seconds since the daemon started.\n# TYPE pipedit_uptime_seconds gauge\n"
                "pipedit_uptime_seconds %.3f\n",
            g->uptime_s);
    bprintf(&b, "# HELP pipedit_http_connections Open HTTP connections.\n# TYPE pipedit_http_connections gauge\n"
                "pipedit_http_connections %d\n",
            g->http_connections);
    bprintf(&b, "# HELP pipedit_http_connections_dropped_total Connections the server dropped: past their header or body "
                "deadline, evicted to make room for a newer one, or refused with every slot busy.\n"
                "# TYPE pipedit_http_connections_dropped_total counter\n");
    static const char *const reasons[3] = {"deadline", "evicted", "refused"};
    for (int i = 0; i < 3; i++)
        bprintf(&b, "pipedit_http_connections_dropped_total{reason=\"%s\"} %llu\n", reasons[i], (unsigned long long)g->http_dropped[i]);
    if (g->store_enabled) {
        /* The replica id is validated printable ASCII without spaces; quotes and backslashes are escaped. */
        char rid[2 * 128 + 1];
        size_t k = 0;
        for (const char *c = g->replica_id ? g->replica_id : ""; *c && k + 2 < sizeof rid; c++) {
            if (*c == '"' || *c == '\\') rid[k++] = '\\';
            rid[k++] = *c;
        }
        rid[k] = 0;
        bprintf(&b, "# HELP pipedit_replica_info This replica's name as a lease holder in the shared job store.\n"
                    "# TYPE pipedit_replica_info gauge\npipedit_replica_info{replica=\"%s\"} 1\n", rid);
        bprintf(&b, "# HELP pipedit_store_up 1 while the shared job store answers.\n# TYPE pipedit_store_up gauge\npipedit_store_up %d\n",
                g->store_up);
        const struct {
            const char *name, *help;
            uint64_t v;
        } c[] = {
            {"pipedit_store_queries_total", "Round trips to the shared job store since start.", g->store_queries},
            {"pipedit_store_notifications_total", "Job change notifications received from the shared store.", g->store_notifications},
            {"pipedit_store_lease_renewals_total", "Leases on running jobs this replica renewed.", g->lease_renewals},
            {"pipedit_store_jobs_taken_total", "Jobs this replica took from the shared queue.", g->jobs_taken},
            {"pipedit_store_stale_results_total", "Writes by this replica refused because it had lost the job's lease.", g->stale_results},
            {"pipedit_store_progress_writes_total", "Progress writes to the shared store (throttled to about one a second per job).", g->progress_writes},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
            bprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", c[i].name, c[i].help, c[i].name, c[i].name, (unsigned long long)c[i].v);
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
