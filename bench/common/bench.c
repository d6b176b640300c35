#include "bench/common/bench.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/file_io.h"

double pd_bench_now(void) { return pd_now_s(); }

static int pd_bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double pd_bench_median(double *v, int n) {
    PD_ASSERT(n >= 1);
    qsort(v, (size_t)n, sizeof *v, pd_bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

pd_status pd_bench_time(pd_status (*fn)(void *ctx), void *ctx, int warmup, int runs, pd_bench_stats *out) {
    memset(out, 0, sizeof *out);
    if (runs < 1 || runs > 1000 || warmup < 0)
        return pd_error_set(PD_ERR_INVALID, "pd_bench_time: %d runs, %d warm-ups (want 1..1000 and >= 0)", runs, warmup);
    for (int i = 0; i < warmup; i++) PD_TRY(fn(ctx));
    double t[1000], sum = 0;
    for (int i = 0; i < runs; i++) {
        double t0 = pd_bench_now();
        PD_TRY(fn(ctx));
        t[i] = pd_bench_now() - t0;
        sum += t[i];
    }
    out->runs = runs;
    out->mean = sum / runs;
    out->median = pd_bench_median(t, runs); /* sorts t */
    out->min = t[0];
    out->max = t[runs - 1];
    return PD_OK;
}

/* ---- memory ---- */

static uint64_t pd_bench_status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t fl = strlen(field);
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            kb = strtoull(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

uint64_t pd_bench_peak_rss_bytes(void) {
    uint64_t kb = pd_bench_status_kb("VmHWM");
    if (!kb) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0 && ru.ru_maxrss > 0) kb = (uint64_t)ru.ru_maxrss; /* KiB on Linux */
    }
    return kb * 1024;
}

bool pd_bench_peak_rss_reset(void) {
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = write(fd, "5", 1) == 1; /* 5: reset the peak RSS */
    close(fd);
    return ok;
}

/* ---- machine and revision ---- */

int pd_bench_cpu_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

const char *pd_bench_cpu_description(char *buf, size_t n) {
    char model[256] = "unknown CPU", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10)) continue;
            char *p = strchr(line, ':');
            if (!p) continue;
            p++;
            while (*p == ' ' || *p == '\t') p++;
            size_t l = strcspn(p, "\n");
            while (l && isspace((unsigned char)p[l - 1])) l--;
            if (l) snprintf(model, sizeof model, "%.*s", (int)l, p);
            break;
        }
        fclose(f);
    }
    int cores = pd_bench_cpu_cores();
    snprintf(buf, n, "%s, %d core%s", model, cores, cores == 1 ? "" : "s");
    return buf;
}

const char *pd_bench_slug(const char *name, char *buf, size_t n) {
    PD_ASSERT(n >= 2);
    size_t o = 0;
    bool dash = false;
    for (const char *p = name; *p && o + 1 < n; p++) {
        unsigned char c = (unsigned char)*p;
        if (isalnum(c) && c < 128) {
            if (dash && o) buf[o++] = '-';
            if (o + 1 < n) buf[o++] = (char)tolower(c);
            dash = false;
        } else {
            dash = true;
        }
    }
    if (!o) buf[o++] = 'x';
    buf[o] = 0;
    return buf;
}

/* Runs `git -C dir <args>` and returns its first output line in out ("" on failure). */
static bool pd_bench_git(const char *dir, const char *args, char *out, size_t n) {
    /* Single-quote the folder for the shell: ' becomes '\''. */
    char q[1100], cmd[1300];
    size_t o = 0;
    q[o++] = '\'';
    for (const char *p = dir; *p && o + 5 < sizeof q; p++) {
        if (*p == '\'') {
            memcpy(q + o, "'\\''", 4);
            o += 4;
        } else {
            q[o++] = *p;
        }
    }
    q[o++] = '\'';
    q[o] = 0;
    snprintf(cmd, sizeof cmd, "git -C %s %s 2>/dev/null", q, args);
    out[0] = 0;
    FILE *f = popen(cmd, "r");
    if (!f) return false;
    bool got = fgets(out, (int)n, f) != NULL;
    char sink[256];
    while (fgets(sink, sizeof sink, f)) {
    }
    int rc = pclose(f);
    out[strcspn(out, "\n")] = 0;
    return rc == 0 && got;
}

const char *pd_bench_git_commit(char *buf, size_t n) {
    const char *src = getenv("PIPEDIT_SRC");
    char cwd[1024];
    const char *dir = src && *src ? src : getcwd(cwd, sizeof cwd);
    char head[128], dirty[256];
    if (!dir || !pd_bench_git(dir, "rev-parse HEAD", head, sizeof head) || strlen(head) < 7) {
        snprintf(buf, n, "unknown");
        return buf;
    }
    bool is_dirty = pd_bench_git(dir, "status --porcelain --untracked-files=no", dirty, sizeof dirty) && dirty[0];
    snprintf(buf, n, "%s%s", head, is_dirty ? "-dirty" : "");
    return buf;
}

/* ---- result files ---- */

struct pd_bench_result {
    json_t *root, *config, *figures, *anchors;
    char slug[128], date[16];
    char *path;
    bool oom;
};

static void pd_bench_set(pd_bench_result *r, json_t *obj, const char *key, json_t *v) {
    if (!v || json_object_set_new(obj, key, v)) r->oom = true;
}

pd_bench_result *pd_bench_result_create(const char *bench) {
    pd_bench_result *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->root = json_object();
    r->config = json_object();
    r->figures = json_array();
    r->anchors = json_array();
    if (!r->root || !r->config || !r->figures || !r->anchors) {
        pd_bench_result_free(r);
        return NULL;
    }
    char commit[160], machine[400], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(r->date, sizeof r->date, "%Y-%m-%d", &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(r->slug, sizeof r->slug, "cpu-%dcore", pd_bench_cpu_cores());
    pd_bench_set(r, r->root, "bench", json_string(bench));
    pd_bench_set(r, r->root, "commit", json_string(pd_bench_git_commit(commit, sizeof commit)));
    pd_bench_set(r, r->root, "date", json_string(r->date));
    pd_bench_set(r, r->root, "time", json_string(stamp));
    pd_bench_set(r, r->root, "machine", json_string(pd_bench_cpu_description(machine, sizeof machine)));
    pd_bench_set(r, r->root, "machine_slug", json_string(r->slug));
    pd_bench_set(r, r->root, "config", json_incref(r->config));
    pd_bench_set(r, r->root, "figures", json_incref(r->figures));
    if (!json_object_get(r->root, "bench")) { /* a name that is not UTF-8 */
        pd_bench_result_free(r);
        return NULL;
    }
    return r;
}

void pd_bench_result_free(pd_bench_result *r) {
    if (!r) return;
    json_decref(r->root);
    json_decref(r->config);
    json_decref(r->figures);
    json_decref(r->anchors);
    free(r->path);
    free(r);
}

void pd_bench_result_set_gpu(pd_bench_result *r, const char *gpu_name) {
    pd_bench_slug(gpu_name, r->slug, sizeof r->slug);
    pd_bench_set(r, r->root, "machine", json_string(gpu_name));
    pd_bench_set(r, r->root, "machine_slug", json_string(r->slug));
}

static json_t *pd_bench_number(double v) { return isfinite(v) ? json_real(v) : json_null(); }

void pd_bench_result_config_str(pd_bench_result *r, const char *key, const char *value) {
    pd_bench_set(r, r->config, key, json_string(value));
}

void pd_bench_result_config_int(pd_bench_result *r, const char *key, int64_t value) {
    pd_bench_set(r, r->config, key, json_integer((json_int_t)value));
}

void pd_bench_result_config_num(pd_bench_result *r, const char *key, double value) {
    pd_bench_set(r, r->config, key, pd_bench_number(value));
}

void pd_bench_result_figure(pd_bench_result *r, const char *name, double value, const char *unit) {
    json_t *f = json_pack("{s:s, s:o, s:s}", "name", name, "value", pd_bench_number(value), "unit", unit);
    if (!f || json_array_append_new(r->figures, f)) r->oom = true;
}

double pd_bench_result_figure_value(const pd_bench_result *r, const char *name) {
    for (size_t i = json_array_size(r->figures); i-- > 0;) {
        json_t *f = json_array_get(r->figures, i), *fv = json_object_get(f, "value");
        if (!strcmp(json_string_value(json_object_get(f, "name")), name) && json_is_number(fv))
            return json_number_value(fv);
    }
    return NAN;
}

void pd_bench_result_anchor(pd_bench_result *r, const char *name, double value, const char *unit, const char *figure) {
    /* an unknown figure (NAN) or a zero anchor value gives a non-finite ratio: null */
    json_t *ratio = pd_bench_number(pd_bench_result_figure_value(r, figure) / value);
    json_t *a = json_pack("{s:s, s:o, s:s, s:s, s:o}", "name", name, "value", pd_bench_number(value), "unit", unit,
                          "figure", figure, "ratio", ratio);
    if (!a || json_array_append_new(r->anchors, a)) r->oom = true;
    if (!json_object_get(r->root, "anchors")) pd_bench_set(r, r->root, "anchors", json_incref(r->anchors));
}

static pd_status pd_bench_mkdirs(const char *dir) {
    char p[1024];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return pd_error_set(PD_ERR_INVALID, "results folder name too long: %s", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return pd_error_set(PD_ERR_IO, "cannot create %s: %s", p, strerror(errno));
        if (!c) break;
        *s = c;
    }
    return PD_OK;
}

const char *pd_bench_result_write(pd_bench_result *r, const char *dir) {
    if (r->oom) {
        pd_error_set(PD_ERR_NOMEM, "out of memory (or a non-UTF-8 string) while recording benchmark results");
        return NULL;
    }
    char dbuf[1024];
    if (!dir) {
        const char *env = getenv("PIPEDIT_BENCH_RESULTS"), *src = getenv("PIPEDIT_SRC");
        if (env && *env) dir = env;
        else if (src && *src) dir = (snprintf(dbuf, sizeof dbuf, "%s/bench/results", src), dbuf);
        else dir = "bench/results";
    }
    if (pd_bench_mkdirs(dir) != PD_OK) return NULL;
    char path[1400];
    snprintf(path, sizeof path, "%s/%s-%s-%s.json", dir, json_string_value(json_object_get(r->root, "bench")),
             r->slug, r->date);
    if (pd_file_write_json(path, r->root, JSON_INDENT(2) | JSON_REAL_PRECISION(10), 0644)) return NULL;
    free(r->path);
    r->path = strdup(path);
    if (!r->path) pd_error_set(PD_ERR_NOMEM, "out of memory");
    return r->path;
}

bool pd_bench_parse_args(int argc, char **argv, const char *prog, int *threads, int *runs, int min_runs,
                         int max_runs, const char **results) {
    for (int i = 1; i < argc; i++) {
        if (threads && !strcmp(argv[i], "--threads") && i + 1 < argc) *threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) *runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--results") && i + 1 < argc) *results = argv[++i];
        else goto usage;
    }
    if (*runs >= min_runs && *runs <= max_runs && (!threads || (*threads >= 0 && *threads <= 1024))) return true;
usage:
    fprintf(stderr, "usage: %s%s [--runs R (%d..%d)] [--results DIR]\n", prog, threads ? " [--threads N (0..1024)]" : "",
            min_runs, max_runs);
    return false;
}

const char *pd_bench_take_opt(int *argc, char **argv, const char *name) {
    const char *v = NULL;
    for (int i = 1; i + 1 < *argc;) {
        if (strcmp(argv[i], name)) {
            i++;
            continue;
        }
        v = argv[i + 1];
        for (int k = i; k + 2 <= *argc; k++) argv[k] = argv[k + 2];
        *argc -= 2;
    }
    return v;
}

bool pd_bench_parse_latent(const char *v, int64_t out[3]) {
    long long t, h, w;
    int used = 0;
    if (!v || sscanf(v, "%lld,%lld,%lld%n", &t, &h, &w, &used) != 3 || v[used]) return false;
    if (t < 1 || t > 4096 || h < 1 || h > 4096 || w < 1 || w > 4096) return false;
    out[0] = t, out[1] = h, out[2] = w;
    return true;
}

/* ---- processes and files ---- */

bool pd_bench_fork_ranks(int n, int (*fn)(int rank, void *ctx), void *ctx) {
    PD_ASSERT(n >= 1 && n <= 64);
    pid_t kids[64];
    fflush(NULL); /* buffered output would otherwise be written once more by every child */
    for (int r = 0; r < n; r++) {
        kids[r] = fork();
        if (kids[r] == 0) _exit(fn(r, ctx));
    }
    bool ok = true;
    for (int r = 0; r < n; r++) {
        int ws;
        if (kids[r] < 0 || waitpid(kids[r], &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws)) ok = false;
    }
    return ok;
}

static int pd_bench_rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

void pd_bench_rmtree(const char *dir) { nftw(dir, pd_bench_rm_entry, 16, FTW_DEPTH | FTW_PHYS); }
