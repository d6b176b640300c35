/* The benchmark helper library: timing statistics, peak RSS, machine and revision strings, the JSON
 * result file, and bench/summarize.py turning result files into bench/README.md tables. */
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "tests/unit/test.h"

static char tmpdir[256], srcdir[1024];

static void test_median(void) {
    double a[] = {3, 1, 2};
    PD_CHECK(pd_bench_median(a, 3) == 2);
    double b[] = {4, 1, 3, 2};
    PD_CHECK(pd_bench_median(b, 4) == 2.5);
    double c[] = {7};
    PD_CHECK(pd_bench_median(c, 1) == 7);
}

static int calls;

static pd_status sleep_2ms(void *ctx) {
    calls++;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    return PD_OK;
}

static pd_status fail_third(void *ctx) {
    return ++calls == 3 ? pd_error_set(PD_ERR_DEVICE, "third call fails") : PD_OK;
}

/* A program's own flags come out of argv before pd_bench_parse_args sees the rest. */
static void test_take_opt(void) {
    char *argv[] = {"prog", "--runs", "2", "--model", "/m", "--latent", "4,32,32", "--model", "/n", NULL};
    int argc = 9;
    PD_CHECK(!strcmp(pd_bench_take_opt(&argc, argv, "--model"), "/n")); /* the last wins, both removed */
    PD_CHECK(argc == 5 && !strcmp(argv[3], "--latent") && !strcmp(argv[4], "4,32,32"));
    PD_CHECK(pd_bench_take_opt(&argc, argv, "--size") == NULL && argc == 5);
    int64_t lat[3];
    PD_CHECK(pd_bench_parse_latent(pd_bench_take_opt(&argc, argv, "--latent"), lat) && lat[0] == 4 && lat[2] == 32);
    int runs = 0;
    const char *res = NULL;
    PD_CHECK(argc == 3 && pd_bench_parse_args(argc, argv, "prog", NULL, &runs, 1, 9, &res) && runs == 2);
    char *dangling[] = {"prog", "--model", NULL};
    argc = 2;
    PD_CHECK(pd_bench_take_opt(&argc, dangling, "--model") == NULL && argc == 2); /* left to be refused */
    const char *bad[] = {"4,32", "4,32,32,1", "0,32,32", "4,32,x", "4, 32,32x", "", NULL};
    for (int i = 0; bad[i]; i++) PD_CHECK_MSG(!pd_bench_parse_latent(bad[i], lat), "accepted \"%s\"", bad[i]);
    PD_CHECK(!pd_bench_parse_latent(NULL, lat));
}

static void test_time(void) {
    double t0 = pd_bench_now();
    pd_bench_stats s;
    calls = 0;
    PD_CHECK_OK(pd_bench_time(sleep_2ms, NULL, 2, 5, &s));
    double el = pd_bench_now() - t0;
    PD_CHECK(calls == 7 && s.runs == 5);
    PD_CHECK_MSG(s.min >= 0.0019 && s.min <= s.median && s.median <= s.max && s.max < 1.0, "%g %g %g", s.min,
                 s.median, s.max);
    PD_CHECK(s.mean >= s.min && s.mean <= s.max);
    PD_CHECK(el >= 7 * 0.0019 && el >= 5 * s.min);
    calls = 0;
    PD_CHECK_ERR(pd_bench_time(fail_third, NULL, 1, 5, &s), PD_ERR_DEVICE);
    PD_CHECK(calls == 3 && s.runs == 0);
    PD_CHECK_ERR(pd_bench_time(sleep_2ms, NULL, 0, 0, &s), PD_ERR_INVALID);
}

static void test_peak_rss(void) {
    uint64_t before = pd_bench_peak_rss_bytes();
    PD_CHECK(before > 1024 * 1024);
    size_t n = 96u << 20;
    volatile char *p = malloc(n);
    PD_CHECK(p != NULL);
    if (!p) return;
    for (size_t i = 0; i < n; i += 4096) p[i] = (char)i;
    uint64_t after = pd_bench_peak_rss_bytes();
    PD_CHECK_MSG(after >= before + (80u << 20), "peak %llu -> %llu", (unsigned long long)before,
                 (unsigned long long)after);
    free((void *)p);
    /* After a reset the peak is the current RSS (read here independently). */
    if (pd_bench_peak_rss_reset()) {
        uint64_t reset = pd_bench_peak_rss_bytes(), rss = 0;
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "VmRSS:", 6)) rss = strtoull(line + 6, NULL, 10) * 1024;
        if (f) fclose(f);
        PD_CHECK_MSG(reset + (8u << 20) >= rss && reset <= rss + (8u << 20), "peak after reset %llu, rss %llu",
                     (unsigned long long)reset, (unsigned long long)rss);
    }
}

static void test_machine(void) {
    char buf[512];
    PD_CHECK(pd_bench_cpu_cores() == (int)sysconf(_SC_NPROCESSORS_ONLN));
    pd_bench_cpu_description(buf, sizeof buf);
    char want[32];
    snprintf(want, sizeof want, ", %d core", pd_bench_cpu_cores());
    PD_CHECK_MSG(strstr(buf, want) != NULL, "%s", buf);
    PD_CHECK(!strcmp(pd_bench_slug("NVIDIA H100 80GB HBM3", buf, sizeof buf), "nvidia-h100-80gb-hbm3"));
    PD_CHECK(!strcmp(pd_bench_slug("  --A__b (x) ", buf, sizeof buf), "a-b-x"));
    PD_CHECK(!strcmp(pd_bench_slug("Ab", buf, 2), "a"));

    setenv("PIPEDIT_SRC", tmpdir, 1); /* not a repository */
    PD_CHECK(!strcmp(pd_bench_git_commit(buf, sizeof buf), "unknown"));
    char dotgit[1100];
    snprintf(dotgit, sizeof dotgit, "%s/.git", srcdir);
    if (access(dotgit, F_OK) == 0) {
        setenv("PIPEDIT_SRC", srcdir, 1);
        pd_bench_git_commit(buf, sizeof buf);
        size_t hex = 0;
        while (isxdigit((unsigned char)buf[hex])) hex++;
        PD_CHECK_MSG(hex == 40 && (!buf[40] || !strcmp(buf + 40, "-dirty")), "commit \"%s\"", buf);
    }
    unsetenv("PIPEDIT_SRC");
}

static json_t *load_json(const char *path) {
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    PD_CHECK_MSG(j != NULL, "%s: %s", path, e.text);
    return j;
}

static double fig(json_t *figs, const char *name, const char **unit) {
    size_t i;
    json_t *f;
    json_array_foreach(figs, i, f) if (!strcmp(json_string_value(json_object_get(f, "name")), name)) {
        if (unit) *unit = json_string_value(json_object_get(f, "unit"));
        return json_is_null(json_object_get(f, "value")) ? NAN : json_number_value(json_object_get(f, "value"));
    }
    return -1;
}

static char written[2][1400];

static void test_result_json(void) {
    pd_bench_result *r = pd_bench_result_create("bench_test");
    PD_CHECK(r != NULL);
    if (!r) return;
    pd_bench_result_config_str(r, "model", "tiny");
    pd_bench_result_config_int(r, "threads", 2);
    pd_bench_result_config_int(r, "threads", 3); /* replaces */
    pd_bench_result_config_num(r, "shift", 5.5);
    pd_bench_result_figure(r, "step_time", 412.5, "ms");
    pd_bench_result_figure(r, "peak_rss", 1536, "MiB");
    pd_bench_result_figure(r, "broken", NAN, "ms");
    pd_bench_result_anchor(r, "torch_step_time", 206.25, "ms", "step_time");
    pd_bench_result_anchor(r, "unmatched", 1, "ms", "no_such_figure");
    const char *p = pd_bench_result_write(r, tmpdir);
    PD_CHECK_MSG(p != NULL, "%s", pd_error_msg());
    if (!p) {
        pd_bench_result_free(r);
        return;
    }
    snprintf(written[0], sizeof written[0], "%s", p);
    /* The name: <dir>/<bench>-cpu-<N>core-<UTC date>.json */
    char date[16], want[1400];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%d", &tm);
    snprintf(want, sizeof want, "%s/bench_test-cpu-%dcore-%s.json", tmpdir, pd_bench_cpu_cores(), date);
    PD_CHECK_MSG(!strcmp(p, want), "%s vs %s", p, want);

    json_t *j = load_json(p);
    if (j) {
        PD_CHECK(!strcmp(json_string_value(json_object_get(j, "bench")), "bench_test"));
        PD_CHECK(!strcmp(json_string_value(json_object_get(j, "date")), date));
        PD_CHECK(json_string_value(json_object_get(j, "commit")) != NULL);
        PD_CHECK(strstr(json_string_value(json_object_get(j, "machine")), "core") != NULL);
        json_t *cfg = json_object_get(j, "config");
        PD_CHECK(!strcmp(json_string_value(json_object_get(cfg, "model")), "tiny"));
        PD_CHECK(json_integer_value(json_object_get(cfg, "threads")) == 3);
        PD_CHECK(json_number_value(json_object_get(cfg, "shift")) == 5.5);
        json_t *figs = json_object_get(j, "figures");
        PD_CHECK(json_array_size(figs) == 3);
        const char *unit = NULL;
        PD_CHECK(fig(figs, "step_time", &unit) == 412.5 && unit && !strcmp(unit, "ms"));
        PD_CHECK(fig(figs, "peak_rss", &unit) == 1536 && !strcmp(unit, "MiB"));
        PD_CHECK(isnan(fig(figs, "broken", NULL)));
        PD_CHECK(!strcmp(json_string_value(json_object_get(json_array_get(figs, 0), "name")), "step_time"));
        json_t *anc = json_object_get(j, "anchors");
        PD_CHECK(json_array_size(anc) == 2);
        PD_CHECK(json_number_value(json_object_get(json_array_get(anc, 0), "ratio")) == 2.0);
        PD_CHECK(json_is_null(json_object_get(json_array_get(anc, 1), "ratio")));
        json_decref(j);
    }
    pd_bench_result_free(r);

    /* A GPU result with no anchors: slug from the card's name, no "anchors" key. */
    r = pd_bench_result_create("bench_test");
    pd_bench_result_set_gpu(r, "NVIDIA H200");
    pd_bench_result_figure(r, "step_time", 9.75, "ms");
    char sub[400];
    snprintf(sub, sizeof sub, "%s/deeper/results", tmpdir);
    p = pd_bench_result_write(r, sub);
    PD_CHECK_MSG(p && strstr(p, "/deeper/results/bench_test-nvidia-h200-"), "%s", p ? p : pd_error_msg());
    if (p) {
        snprintf(written[1], sizeof written[1], "%s", p);
        j = load_json(p);
        if (j) {
            PD_CHECK(!strcmp(json_string_value(json_object_get(j, "machine")), "NVIDIA H200"));
            PD_CHECK(json_object_get(j, "anchors") == NULL);
            json_decref(j);
        }
    }
    pd_bench_result_free(r);
    /* The default folder comes from PIPEDIT_BENCH_RESULTS. */
    snprintf(sub, sizeof sub, "%s/env-results", tmpdir);
    setenv("PIPEDIT_BENCH_RESULTS", sub, 1);
    r = pd_bench_result_create("bench_env");
    p = pd_bench_result_write(r, NULL);
    PD_CHECK(p && !strncmp(p, sub, strlen(sub)));
    pd_bench_result_free(r);
    unsetenv("PIPEDIT_BENCH_RESULTS");
    /* An unwritable folder: NULL and a message naming it. */
    r = pd_bench_result_create("bench_x");
    PD_CHECK(pd_bench_result_write(r, "/proc/no-such-place") == NULL && strstr(pd_error_msg(), "/proc/no-such-place"));
    pd_bench_result_free(r);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    PD_CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* summarize.py: newest file per bench and machine, tables with figures and anchors, text outside
 * the markers kept. */
static void test_summarize(void) {
    if (access("/usr/bin/python3", X_OK) != 0 || !written[0][0]) {
        printf("  (skipped: no /usr/bin/python3 or no result written)\n");
        return;
    }
    char res[320], readme[400], path[600], cmd[2000];
    snprintf(res, sizeof res, "%s/sum", tmpdir);
    mkdir(res, 0755);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/'", written[0], res);
    PD_CHECK(system(cmd) == 0);
    /* An older result of the same bench and machine, one of another bench, and junk. */
    snprintf(path, sizeof path, "%s/bench_test-cpu-%dcore-2020-01-01.json", res, pd_bench_cpu_cores());
    char old[600];
    snprintf(old, sizeof old,
             "{\"bench\": \"bench_test\", \"commit\": \"abc\", \"date\": \"2020-01-01\", \"time\": \"2020-01-01T00:00:00Z\","
             " \"machine\": \"old cpu\", \"machine_slug\": \"cpu-%dcore\", \"config\": {},"
             " \"figures\": [{\"name\": \"step_time\", \"value\": 999.25, \"unit\": \"ms\"}]}",
             pd_bench_cpu_cores());
    put(path, old);
    snprintf(path, sizeof path, "%s/bench_vae-cpu-2core-2026-01-01.json", res);
    put(path, "{\"bench\": \"bench_vae\", \"date\": \"2026-01-01\", \"machine\": \"m\", \"machine_slug\": \"cpu-2core\","
              " \"figures\": [{\"name\": \"decode|frame\", \"value\": 0.0001234, \"unit\": \"s\"},"
              " {\"name\": \"frames\", \"value\": 81.0, \"unit\": \"\"}]}");
    snprintf(path, sizeof path, "%s/junk.json", res);
    put(path, "{not json");
    snprintf(readme, sizeof readme, "%s/README.md", res);
    put(readme, "# Bench notes kept\n\n<!-- bench-results:begin (old) -->\nSTALE TABLE\n<!-- bench-results:end -->\n\nFooter kept.\n");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/bench/summarize.py' '%s' '%s' 2>/dev/null >/dev/null", srcdir, res,
             readme);
    PD_CHECK(system(cmd) == 0);
    char *t = slurp(readme);
    PD_CHECK(t != NULL);
    if (!t) return;
    PD_CHECK_MSG(strstr(t, "# Bench notes kept") && strstr(t, "Footer kept."), "%s", t);
    PD_CHECK(!strstr(t, "STALE TABLE"));
    PD_CHECK(strstr(t, "### bench_test on ") && strstr(t, "### bench_vae on m"));
    PD_CHECK(strstr(t, "| step_time | 412.5 | ms |") && !strstr(t, "999.25"));
    PD_CHECK(strstr(t, "| peak_rss | 1536 | MiB |"));
    PD_CHECK(strstr(t, "| torch_step_time | 206.2") && strstr(t, "| step_time | 2 |"));
    PD_CHECK(strstr(t, "| decode\\|frame | 1.234e-04 | s |") && strstr(t, "| frames | 81 |  |"));
    PD_CHECK(strstr(t, "model=tiny") && strstr(t, "threads=3"));
    /* bench_test comes before bench_vae */
    PD_CHECK(strstr(t, "### bench_test") < strstr(t, "### bench_vae"));
    /* Running again gives the same file. */
    char first[65536];
    snprintf(first, sizeof first, "%s", t);
    PD_CHECK(system(cmd) == 0);
    t = slurp(readme);
    PD_CHECK(t && !strcmp(t, first));
}

int main(void) {
    /* The source tree: this file is <src>/tests/unit/test_bench_common.c. */
    snprintf(srcdir, sizeof srcdir, "%s", __FILE__);
    for (int up = 0; up < 3; up++) {
        char *s = strrchr(srcdir, '/');
        if (s) *s = 0;
    }
    if (!pd_test_scratch_dir(tmpdir, sizeof tmpdir, "test_bench_common")) return 1;
    PD_RUN(test_median);
    PD_RUN(test_take_opt);
    PD_RUN(test_time);
    PD_RUN(test_peak_rss);
    PD_RUN(test_machine);
    PD_RUN(test_result_json);
    PD_RUN(test_summarize);
    int rc = pd_test_summary();
    if (rc == 0) pd_test_rmtree(tmpdir);
    return rc;
}
