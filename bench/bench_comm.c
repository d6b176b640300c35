/* The shared-memory communicator's alltoallv: 2 and 4 rank processes on this host, m bytes from every
 * rank to every other (64 KiB, 1 MiB, 8 MiB per pair). Rank 0 times each call after a barrier and
 * reports the median over runs; bandwidth is the bytes one rank sends to the others (m * (n - 1)) per
 * second, and the aggregate is n times that. Also the barrier latency.
 *
 *   bench_comm [--threads N] [--runs R] [--results DIR]
 *
 * --threads is accepted and ignored (each rank is one single-threaded process), so bench/run_cpu.sh can
 * pass the same flags to every benchmark.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "comm/comm.h"

static const size_t SIZES[] = {64 << 10, 1 << 20, 8 << 20};
#define NSIZES 3
#define MAX_RUNS 100

/* One rank: runs every size; rank 0 writes "<bytes> <median seconds>" lines, then "barrier <s>", to fd. */
static int rank_main(const char *name, int rank, int n, int runs, int fd) {
    pd_comm *c = NULL;
    if (pd_comm_shm_create(name, rank, n, 30.0, &c)) {
        fprintf(stderr, "rank %d: %s\n", rank, pd_error_msg());
        return 1;
    }
    FILE *out = rank == 0 ? fdopen(fd, "w") : NULL;
    size_t sb[8], so[8];
    double t[MAX_RUNS];
    for (int s = 0; s < NSIZES; s++) {
        size_t m = SIZES[s];
        uint8_t *send = malloc(m * (size_t)n), *recv = malloc(m * (size_t)n);
        if (!send || !recv) return 1;
        memset(send, rank + 1, m * (size_t)n);
        memset(recv, 0, m * (size_t)n); /* touch the pages before timing */
        for (int p = 0; p < n; p++) sb[p] = m, so[p] = (size_t)p * m;
        for (int i = -2; i < runs; i++) { /* two warm-up calls */
            if (pd_comm_barrier(c)) break;
            double t0 = pd_bench_now();
            if (pd_comm_alltoallv(c, send, sb, so, recv, sb, so)) {
                fprintf(stderr, "rank %d: %s\n", rank, pd_error_msg());
                return 1;
            }
            if (i >= 0) t[i] = pd_bench_now() - t0;
        }
        if (out) fprintf(out, "%zu %.9f\n", m, pd_bench_median(t, runs));
        free(send);
        free(recv);
    }
    for (int i = -2; i < runs; i++) {
        double t0 = pd_bench_now();
        if (pd_comm_barrier(c)) return 1;
        if (i >= 0) t[i] = pd_bench_now() - t0;
    }
    if (out) {
        fprintf(out, "barrier %.9f\n", pd_bench_median(t, runs));
        fclose(out);
    }
    pd_comm_destroy(c);
    return 0;
}

typedef struct group_run {
    char name[64];
    int n, runs, fds[2];
} group_run;

static int group_rank(int rank, void *ud) {
    group_run *g = ud;
    close(g->fds[0]);
    return rank_main(g->name, rank, g->n, g->runs, g->fds[1]);
}

/* Runs n ranks; fills med[s] (seconds per call) and *barrier. Rank 0's few lines fit in the pipe's
 * buffer, so they are read once every rank has exited. */
static int run_group(int n, int runs, double *med, double *barrier) {
    group_run g = {.n = n, .runs = runs};
    snprintf(g.name, sizeof g.name, "bench-%d-%d", (int)getpid(), n);
    if (pipe(g.fds)) return 1;
    const bool ranks_ok = pd_bench_fork_ranks(n, group_rank, &g);
    close(g.fds[1]);
    FILE *in = fdopen(g.fds[0], "r");
    int got = 0;
    char line[128];
    while (in && fgets(line, sizeof line, in)) {
        size_t m;
        double v;
        if (sscanf(line, "barrier %lf", &v) == 1) *barrier = v, got++;
        else if (sscanf(line, "%zu %lf", &m, &v) == 2)
            for (int s = 0; s < NSIZES; s++)
                if (SIZES[s] == m) med[s] = v, got++;
    }
    if (in) fclose(in);
    return !ranks_ok || got != NSIZES + 1;
}

int main(int argc, char **argv) {
    int threads = 0, runs = 15; /* threads: ignored, see above */
    const char *results = NULL;
    if (!pd_bench_parse_args(argc, argv, "bench_comm", &threads, &runs, 1, MAX_RUNS, &results)) return 2;
    pd_bench_result *res = pd_bench_result_create("bench_comm");
    pd_bench_result_config_str(res, "backend", "shm");
    pd_bench_result_config_str(res, "op", "alltoallv, equal bytes per pair, rank 0's median after a barrier");
    pd_bench_result_config_int(res, "runs", runs);
    pd_bench_result_config_int(res, "cores", pd_bench_cpu_cores());
    const int ranks[2] = {2, 4};
    for (int g = 0; g < 2; g++) {
        int n = ranks[g];
        double med[NSIZES] = {0}, barrier = 0;
        if (run_group(n, runs, med, &barrier)) {
            fprintf(stderr, "bench_comm: the %d-rank group failed\n", n);
            pd_bench_result_free(res);
            return 1;
        }
        for (int s = 0; s < NSIZES; s++) {
            char fig[64];
            size_t m = SIZES[s];
            const char *unit = m >= (1 << 20) ? "MiB" : "KiB";
            size_t shown = m >= (1 << 20) ? m >> 20 : m >> 10;
            double gbps = (double)m * (n - 1) / med[s] / 1e9;
            snprintf(fig, sizeof fig, "a2a_%dr_%zu%s_time", n, shown, unit);
            pd_bench_result_figure(res, fig, med[s] * 1e3, "ms");
            snprintf(fig, sizeof fig, "a2a_%dr_%zu%s_per_rank_bw", n, shown, unit);
            pd_bench_result_figure(res, fig, gbps, "GB/s");
            snprintf(fig, sizeof fig, "a2a_%dr_%zu%s_aggregate_bw", n, shown, unit);
            pd_bench_result_figure(res, fig, gbps * n, "GB/s");
            printf("%d ranks, %7zu %s per pair: %8.3f ms  %6.2f GB/s per rank  %6.2f GB/s aggregate\n", n, shown, unit,
                   med[s] * 1e3, gbps, gbps * n);
        }
        char fig[64];
        snprintf(fig, sizeof fig, "barrier_%dr", n);
        pd_bench_result_figure(res, fig, barrier * 1e6, "us");
        printf("%d ranks, barrier: %.1f us\n", n, barrier * 1e6);
    }
    const char *path = pd_bench_result_write(res, results);
    if (path) printf("wrote %s\n", path);
    else fprintf(stderr, "bench_comm: %s\n", pd_error_msg());
    pd_bench_result_free(res);
    return path ? 0 : 1;
}
