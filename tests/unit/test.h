/* A minimal test harness: each test is a function; a test passes when none of its checks failed.
 * main() runs the tests it lists with PD_RUN and ends with pd_test_summary(), which prints
 * "N passed, N failed" and returns the exit status (0 when all passed). */
#ifndef PD_TEST_H
#define PD_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/status.h"
#include "engine/tensor.h"

static int pd_test_failed_checks __attribute__((unused)), pd_test_passed __attribute__((unused)),
    pd_test_failed __attribute__((unused));

#define PD_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
            pd_test_failed_checks++;                                                               \
        }                                                                                          \
    } while (0)

#define PD_CHECK_MSG(cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            pd_test_failed_checks++;                                                               \
        }                                                                                          \
    } while (0)

/* Checks a pd_status expression is PD_OK, printing the error message otherwise. */
#define PD_CHECK_OK(expr)                                                                          \
    do {                                                                                           \
        pd_status st_ = (expr);                                                                    \
        PD_CHECK_MSG(st_ == PD_OK, "%s: %s", pd_status_name(st_), pd_error_msg());                 \
    } while (0)

/* Checks a pd_status expression fails with the given status and a non-empty message. */
#define PD_CHECK_ERR(expr, want)                                                                   \
    do {                                                                                           \
        pd_status st_ = (expr);                                                                    \
        PD_CHECK_MSG(st_ == (want), "got %s (%s), want %s", pd_status_name(st_), pd_error_msg(),  \
                     pd_status_name(want));                                                        \
        PD_CHECK_MSG(st_ == PD_OK || pd_error_msg()[0], "error without a message");                \
    } while (0)

#define PD_RUN(fn)                                                                                 \
    do {                                                                                           \
        int before_ = pd_test_failed_checks;                                                       \
        fn();                                                                                      \
        if (pd_test_failed_checks == before_) {                                                    \
            pd_test_passed++;                                                                      \
            printf("ok   %s\n", #fn);                                                              \
        } else {                                                                                   \
            pd_test_failed++;                                                                      \
            printf("FAIL %s\n", #fn);                                                              \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

/* For parameterised cases: run one named case. */
#define PD_RUN_CASE(name, call)                                                                    \
    do {                                                                                           \
        int before_ = pd_test_failed_checks;                                                       \
        call;                                                                                      \
        if (pd_test_failed_checks == before_) {                                                    \
            pd_test_passed++;                                                                      \
            printf("ok   %s\n", name);                                                             \
        } else {                                                                                   \
            pd_test_failed++;                                                                      \
            printf("FAIL %s\n", name);                                                             \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

#define PD_TEST_CASE_NAME_MAX 256

/* The name of the case PD_RUN_NAMED is running (or ran last), for messages inside the case. */
static inline char *pd_test_case_name(void) {
    static char name[PD_TEST_CASE_NAME_MAX];
    return name;
}

/* Runs one case named by a printf format and its arguments, e.g.
 * PD_RUN_NAMED(case_add(3, 5), "ADD(a=(%d,%d))", 3, 5). */
#define PD_RUN_NAMED(call, ...)                                                                    \
    do {                                                                                           \
        snprintf(pd_test_case_name(), PD_TEST_CASE_NAME_MAX, __VA_ARGS__);                         \
        PD_RUN_CASE(pd_test_case_name(), call);                                                    \
    } while (0)

/* The weight dtypes that op tests run every case over, and their short names in case names. */
static const pd_dtype pd_test_wdts[3] = {PD_DTYPE_F32, PD_DTYPE_BF16, PD_DTYPE_F16};
static inline const char *pd_test_dtype_name(pd_dtype dt) {
    return dt == PD_DTYPE_F32 ? "f32" : dt == PD_DTYPE_BF16 ? "bf16" : "f16";
}

/* Makes a fresh scratch folder "$TMPDIR/<name>.XXXXXX" (/tmp when TMPDIR is unset) and writes its path
 * into out. Returns false after printing why when it cannot. */
static inline bool pd_test_scratch_dir(char *out, size_t n, const char *name) {
    const char *base = getenv("TMPDIR");
    int len = snprintf(out, n, "%s/%s.XXXXXX", base && *base ? base : "/tmp", name);
    if (len < 0 || (size_t)len >= n || !mkdtemp(out)) {
        fprintf(stderr, "%s: cannot make a scratch folder under %s\n", name, base && *base ? base : "/tmp");
        return false;
    }
    return true;
}

/* Removes a test's scratch folder and everything in it (a message on failure, never fatal). */
static inline void pd_test_rmtree(const char *dir) {
    char cmd[4200];
    if (!dir || !dir[0] || strchr(dir, '\'') || snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir) >= (int)sizeof cmd ||
        system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir ? dir : "(null)");
}

static inline int pd_test_summary(void) {
    printf("%d passed, %d failed\n", pd_test_passed, pd_test_failed);
    return pd_test_failed ? 1 : 0;
}

#endif
