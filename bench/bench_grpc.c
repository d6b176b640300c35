/* gRPC serving benchmark against a running pipeditd (bench/grpc_get.sh starts it, keeps one long job
 * running, measures HTTP with wrk in the same run and passes those figures in):
 *   1. load: --threads clients (one connection each, the gRPC C core library) call GetVideo on --id
 *      back to back for --duration seconds after a 1 s warm-up: requests/s, p50/p99/max latency, errors;
 *   2. soak: --rounds rounds (default 5) of --watches WatchVideo streams, opened --batch at a time (all 1000 at
 *      once by default), each read to its first event and then dropped (cancelled); the daemon's RSS
 *      (/proc/<pid>/status) after each round shows whether dropped streams leave memory behind.
 * Writes bench/results/bench_grpc-<machine>-<date>.json; the HTTP figures are an anchor, so the ratio
 * is gRPC / HTTP requests per second. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "daemon/grpc_client.h"
#include "pipedit/v1/video.pb-c.h"

#define MAX_ROUNDS 100

typedef struct opts {
    const char *target, *id, *key, *results;
    int pid, threads, watches, batch, rounds;
    double duration, http_rps, http_p50_ms, http_p99_ms;
    int http_connections;
} opts;

typedef struct worker {
    const opts *o;
    double until, measure_from;
    double *lat; /* seconds, measured calls only */
    size_t n, cap;
    long errors;
    char first_error[600];
} worker;

static void *load_main(void *arg) {
    worker *w = arg;
    pd_grpc_client *c;
    if (pd_grpc_client_open(w->o->target, w->o->key, &c)) {
        w->errors++;
        return NULL;
    }
    Pipedit__V1__GetVideoRequest req = PIPEDIT__V1__GET_VIDEO_REQUEST__INIT;
    req.id = (char *)w->o->id;
    for (;;) {
        double t0 = pd_bench_now();
        if (t0 >= w->until) break;
        ProtobufCMessage *resp;
        pd_grpc_result r;
        pd_status st = pd_grpc_client_unary(c, "/pipedit.v1.VideoService/GetVideo", &req.base, &pipedit__v1__video__descriptor, 10, &resp, &r);
        double t1 = pd_bench_now();
        if (st || r.code) {
            if (!w->errors) snprintf(w->first_error, sizeof w->first_error, "%s", st ? pd_error_msg() : r.details);
            w->errors++;
            continue;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        if (t0 < w->measure_from) continue;
        if (w->n == w->cap) {
            size_t cap = w->cap ? 2 * w->cap : 4096;
            double *l = realloc(w->lat, cap * sizeof *l);
            if (!l) break;
            w->lat = l;
            w->cap = cap;
        }
        w->lat[w->n++] = t1 - t0;
    }
    pd_grpc_client_close(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double rss_mib(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    double kib = NAN;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kib = strtod(line + 6, NULL);
    if (f) fclose(f);
    return kib / 1024.0;
}

/* One soak round: n watches in batches; returns the number that failed to open or deliver. */
static long soak_round(const opts *o, pd_grpc_client *c, int n) {
    Pipedit__V1__WatchVideoRequest req = PIPEDIT__V1__WATCH_VIDEO_REQUEST__INIT;
    req.id = (char *)o->id;
    pd_grpc_stream **s = calloc((size_t)o->batch, sizeof *s);
    long failed = 0;
    for (int done = 0; s && done < n; done += o->batch) {
        int k = n - done < o->batch ? n - done : o->batch;
        for (int i = 0; i < k; i++)
            if (pd_grpc_stream_open(c, "/pipedit.v1.VideoService/WatchVideo", &req.base, 30, &s[i])) s[i] = NULL;
        for (int i = 0; i < k; i++) {
            ProtobufCMessage *m = NULL;
            pd_grpc_result r;
            if (!s[i] || pd_grpc_stream_next(s[i], &pipedit__v1__watch_video_event__descriptor, &m, &r) != 1) failed++;
            if (m) protobuf_c_message_free_unpacked(m, NULL);
        }
        for (int i = 0; i < k; i++) pd_grpc_stream_close(s[i]); /* dropped: cancelled mid-stream */
    }
    free(s);
    return s ? failed : n;
}

static const char *arg(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}

int main(int argc, char **argv) {
    opts o = {
        .target = arg(argc, argv, "--target", NULL),
        .id = arg(argc, argv, "--id", NULL),
        .key = arg(argc, argv, "--key", NULL),
        .results = arg(argc, argv, "--results", NULL),
        .pid = atoi(arg(argc, argv, "--pid", "0")),
        .threads = atoi(arg(argc, argv, "--threads", "16")),
        .watches = atoi(arg(argc, argv, "--watches", "1000")),
        .batch = atoi(arg(argc, argv, "--batch", "1000")),
        .rounds = atoi(arg(argc, argv, "--rounds", "5")),
        .duration = atof(arg(argc, argv, "--duration", "10")),
        .http_rps = atof(arg(argc, argv, "--http-rps", "nan")),
        .http_p50_ms = atof(arg(argc, argv, "--http-p50-ms", "nan")),
        .http_p99_ms = atof(arg(argc, argv, "--http-p99-ms", "nan")),
        .http_connections = atoi(arg(argc, argv, "--http-connections", "0")),
    };
    if (!o.target && argc == 1) { /* bench/run_cpu.sh runs every bench_* bare */
        printf("bench_grpc: needs a running pipeditd; bench/grpc_get.sh starts one and drives this program\n");
        return 77;
    }
    if (!o.target || !o.id || o.pid <= 0 || o.threads < 1 || o.threads > 256 || o.duration <= 0 || o.watches < 0 || o.batch < 1 || o.rounds < 1 || o.rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: bench_grpc --target HOST:PORT --id VIDEO_ID --pid DAEMON_PID [--key K] [--threads 16] [--duration 10]\n"
                        "                  [--watches 1000] [--batch 1000] [--rounds 5] [--http-rps R --http-p50-ms A --http-p99-ms B --http-connections N]\n"
                        "                  [--results DIR]\n");
        return 2;
    }

    /* ---- load ---- */
    worker *w = calloc((size_t)o.threads, sizeof *w);
    pthread_t *th = calloc((size_t)o.threads, sizeof *th);
    if (!w || !th) return 1;
    double start = pd_bench_now();
    for (int i = 0; i < o.threads; i++) {
        w[i].o = &o;
        w[i].measure_from = start + 1.0;
        w[i].until = start + 1.0 + o.duration;
        pthread_create(&th[i], NULL, load_main, &w[i]);
    }
    size_t total = 0;
    long errors = 0;
    for (int i = 0; i < o.threads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    double *lat = malloc((total ? total : 1) * sizeof *lat);
    size_t k = 0;
    for (int i = 0; i < o.threads; i++) {
        memcpy(lat + k, w[i].lat, w[i].n * sizeof *lat);
        k += w[i].n;
    }
    qsort(lat, total, sizeof *lat, cmp_double);
    double rps = (double)total / o.duration;
    double p50 = total ? lat[total / 2] * 1e3 : NAN, p99 = total ? lat[(size_t)(0.99 * (double)(total - 1))] * 1e3 : NAN;
    double mx = total ? lat[total - 1] * 1e3 : NAN;
    printf("bench_grpc: GetVideo %zu calls in %.1f s over %d connections: %.0f req/s, p50 %.3f ms, p99 %.3f ms, max %.3f ms, %ld errors\n",
           total, o.duration, o.threads, rps, p50, p99, mx, errors);
    for (int i = 0; i < o.threads; i++)
        if (w[i].errors) {
            printf("bench_grpc: first error: %s\n", w[i].first_error);
            break;
        }

    /* ---- soak ---- */
    pd_grpc_client *c;
    if (pd_grpc_client_open(o.target, o.key, &c)) return 1;
    double rss[MAX_ROUNDS + 1], t0 = pd_bench_now();
    long failed = 0;
    rss[0] = rss_mib(o.pid);
    printf("bench_grpc: soak: %d rounds of %d watches opened and dropped; daemon RSS %.2f MiB", o.rounds, o.watches, rss[0]);
    for (int i = 1; i <= o.rounds; i++) {
        failed += soak_round(&o, c, o.watches);
        sleep(1); /* the daemon releases dropped watches on its next pass */
        rss[i] = rss_mib(o.pid);
        printf(" -> %.2f", rss[i]);
        fflush(stdout);
    }
    double soak_s = pd_bench_now() - t0 - o.rounds;
    pd_grpc_client_close(c);
    printf(" MiB; %ld failed, %.1f s\n", failed, soak_s);

    pd_bench_result *r = pd_bench_result_create("bench_grpc");
    pd_bench_result_config_str(r, "route", "pipedit.v1.VideoService/GetVideo vs HTTP GET /v1/videos/{id}");
    pd_bench_result_config_str(r, "model", "tiny (embedded)");
    pd_bench_result_config_int(r, "grpc_connections", o.threads);
    pd_bench_result_config_int(r, "http_connections", o.http_connections);
    pd_bench_result_config_num(r, "duration_s", o.duration);
    pd_bench_result_config_int(r, "soak_watches_per_round", o.watches);
    pd_bench_result_config_int(r, "soak_rounds", o.rounds);
    pd_bench_result_config_int(r, "soak_batch", o.batch);
    pd_bench_result_figure(r, "grpc_get_requests_per_s", rps, "req/s");
    pd_bench_result_figure(r, "grpc_get_latency_p50", p50, "ms");
    pd_bench_result_figure(r, "grpc_get_latency_p99", p99, "ms");
    pd_bench_result_figure(r, "grpc_get_latency_max", mx, "ms");
    pd_bench_result_figure(r, "grpc_get_errors", (double)errors, "count");
    pd_bench_result_figure(r, "http_get_latency_p50", o.http_p50_ms, "ms");
    pd_bench_result_figure(r, "http_get_latency_p99", o.http_p99_ms, "ms");
    pd_bench_result_figure(r, "soak_rss_before", rss[0], "MiB");
    for (int i = 1; i <= o.rounds; i++) {
        char name[48];
        snprintf(name, sizeof name, "soak_rss_after_round_%d", i);
        pd_bench_result_figure(r, name, rss[i], "MiB");
    }
    /* Flat = what the later rounds add once the first has warmed the allocator and gRPC's caches. */
    pd_bench_result_figure(r, "soak_rss_growth_rounds_2_to_last", rss[o.rounds] - rss[1], "MiB");
    pd_bench_result_figure(r, "soak_failed_watches", (double)failed, "count");
    pd_bench_result_figure(r, "soak_seconds", soak_s, "s");
    pd_bench_result_anchor(r, "http_get_requests_per_s", o.http_rps, "req/s", "grpc_get_requests_per_s");
    const char *path = pd_bench_result_write(r, o.results);
    if (path) printf("bench_grpc: %s\n", path);
    else fprintf(stderr, "bench_grpc: %s\n", pd_error_msg());
    pd_bench_result_free(r);
    for (int i = 0; i < o.threads; i++) free(w[i].lat);
    free(w);
    free(th);
    free(lat);
    return path && errors == 0 && failed == 0 ? 0 : 1;
}
