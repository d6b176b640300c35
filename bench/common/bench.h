/* Shared helpers for the benchmark programs (each links the pd_bench library): timing, peak memory,
 * a description of the machine and source revision, and the JSON result file of DESIGN.md section 10.
 *
 * A benchmark typically does:
 *
 *     pd_bench_result *r = pd_bench_result_create("bench_dit");
 *     pd_bench_result_config_str(r, "model", "tiny");
 *     pd_bench_result_config_int(r, "threads", 2);
 *     pd_bench_stats s;
 *     pd_bench_time(run_one_step, &ctx, 1, 5, &s);            // 1 warm-up, median of 5
 *     pd_bench_result_figure(r, "step_time", s.median * 1e3, "ms");
 *     pd_bench_result_figure(r, "peak_rss", pd_bench_peak_rss_bytes() / 1048576.0, "MiB");
 *     const char *path = pd_bench_result_write(r, NULL);      // bench/results/bench_dit-cpu-2core-2026-11-27.json
 *     pd_bench_result_free(r);
 *
 * The JSON holds {bench, commit, date, time, machine, machine_slug, config{...},
 * figures:[{name, value, unit}], anchors:[{name, value, unit, figure, ratio}] (only when added)}.
 * bench/summarize.py turns the newest file per bench and machine into bench/README.md's tables. */
#ifndef PD_BENCH_H
#define PD_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* ---- timing ---- */

/* The flags every CPU benchmark takes: --threads N (0 = all cores; pass threads NULL when the program
 * has no such flag), --runs R within [min_runs, max_runs], --results DIR. *threads, *runs and *results
 * keep their defaults when a flag is absent. An unknown flag or a value out of range prints a usage line
 * naming the program and returns false (the caller exits 2). */
bool pd_bench_parse_args(int argc, char **argv, const char *prog, int *threads, int *runs, int min_runs,
                         int max_runs, const char **results);

/* Takes `name VALUE` out of argv for a program's own flags before pd_bench_parse_args: returns VALUE
 * and removes both (the rest shift down, *argc shrinks), or NULL when the flag is absent (or has no
 * value, which is then left for pd_bench_parse_args to refuse). The last occurrence wins. */
const char *pd_bench_take_opt(int *argc, char **argv, const char *name);

/* Parses a latent shape "T,H,W" (each 1..4096) into out; false for anything else. */
bool pd_bench_parse_latent(const char *v, int64_t out[3]);

/* Seconds on the monotonic clock (an arbitrary origin; only differences mean anything): pd_now_s(). */
double pd_bench_now(void);

/* The median of v[0..n-1] (the mean of the middle two for even n); sorts v in place. n >= 1. */
double pd_bench_median(double *v, int n);

typedef struct pd_bench_stats {
    double median, min, max, mean; /* seconds */
    int runs;
} pd_bench_stats;

/* Calls fn(ctx) `warmup` times untimed, then `runs` times (1..1000) timed one by one, and fills out.
 * Stops at, and returns, the first failing status of fn (out is then left zeroed). */
pd_status pd_bench_time(pd_status (*fn)(void *ctx), void *ctx, int warmup, int runs, pd_bench_stats *out);

/* ---- memory ---- */

/* The process's peak resident set size in bytes: VmHWM from /proc/self/status, or getrusage's
 * ru_maxrss where that file is unreadable. 0 if neither is available. */
uint64_t pd_bench_peak_rss_bytes(void);
/* Resets the peak (VmHWM) to the current RSS so a later phase can be measured on its own; returns
 * false where the kernel does not allow it (ru_maxrss cannot be reset, so the fallback keeps the
 * whole-process peak). */
bool pd_bench_peak_rss_reset(void);

/* ---- machine and revision ---- */

/* "Intel(R) Xeon(R) Processor, 2 cores" from /proc/cpuinfo and the online core count. Writes at most
 * n bytes (always NUL-terminated) into buf and returns buf. */
const char *pd_bench_cpu_description(char *buf, size_t n);
/* Number of online cores (>= 1). */
int pd_bench_cpu_cores(void);
/* Turns a name into a file-name slug: lower case, runs of anything but [a-z0-9] become one '-',
 * no leading or trailing '-' ("NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"). Returns buf. */
const char *pd_bench_slug(const char *name, char *buf, size_t n);
/* The source revision: `git rev-parse HEAD` run in $PIPEDIT_SRC when set, else in the current
 * folder, with "-dirty" appended when tracked files differ from it; "unknown" when git or the
 * repository is unavailable. Returns buf. */
const char *pd_bench_git_commit(char *buf, size_t n);

/* ---- result files ---- */

typedef struct pd_bench_result pd_bench_result;

/* Starts a result for the benchmark `bench` (a file-name-safe name such as "bench_dit"), filling in
 * commit, date (UTC) and the CPU machine description. Returns NULL only when out of memory. */
pd_bench_result *pd_bench_result_create(const char *bench);
void pd_bench_result_free(pd_bench_result *r);

/* Marks the result as measured on a GPU: machine becomes gpu_name and the slug its lower-cased form.
 * Without this call the machine is the CPU ("cpu-<N>core"). */
void pd_bench_result_set_gpu(pd_bench_result *r, const char *gpu_name);

/* Configuration entries (model, shape, steps, backend, threads, ...); a repeated key replaces the
 * earlier value. */
void pd_bench_result_config_str(pd_bench_result *r, const char *key, const char *value);
void pd_bench_result_config_int(pd_bench_result *r, const char *key, int64_t value);
void pd_bench_result_config_num(pd_bench_result *r, const char *key, double value);

/* Appends a measured figure, e.g. ("dit_step_median", 412.5, "ms"). Figures keep their order.
 * Non-finite values are written as null. */
void pd_bench_result_figure(pd_bench_result *r, const char *name, double value, const char *unit);
/* The value of the last figure named `name` that holds a number (not null), or NAN when there is none. */
double pd_bench_result_figure_value(const pd_bench_result *r, const char *name);
/* Appends an anchor measured in the same run (e.g. the same op through a reference library) and its
 * ratio to our figure `figure` (added earlier): ratio = figure's value / anchor value (the value
 * pd_bench_result_figure_value gives), so > 1 means ours is larger (slower for times, faster for rates).
 * An unknown figure, or a ratio that is not finite, gives ratio null. */
void pd_bench_result_anchor(pd_bench_result *r, const char *name, double value, const char *unit, const char *figure);

/* Writes <dir>/<bench>-<machine slug>-<YYYY-MM-DD>.json (replacing a same-day file, atomically) and
 * returns its path, owned by r and valid until the next write or free. dir NULL means
 * $PIPEDIT_BENCH_RESULTS, else $PIPEDIT_SRC/bench/results, else ./bench/results; it is created when
 * missing. Returns NULL with pd_error_msg() set (PD_ERR_IO naming the path) on failure. */
const char *pd_bench_result_write(pd_bench_result *r, const char *dir);

/* ---- processes and files ---- */

/* Flushes stdio, forks n processes (1..64) and waits for all of them: process r runs fn(r, ctx) and
 * exits with its return value. Returns true when every process was forked and exited with status 0. */
bool pd_bench_fork_ranks(int n, int (*fn)(int rank, void *ctx), void *ctx);

/* Removes the folder dir and everything in it (symbolic links are removed, not followed); best effort:
 * for the benchmarks' scratch folders, errors are ignored. */
void pd_bench_rmtree(const char *dir);

#endif
