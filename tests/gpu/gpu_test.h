/* Shared by the GPU tests: the backend under test, when to skip, the start of main(), and guarded
 * device outputs.
 *
 * PD_GPU_TESTS_ON_CPU=1 lets a second CPU backend stand in for CUDA, which checks a test's own harness
 * (guards, tolerances, case naming) on machines without a GPU; it says nothing about the CUDA backend.
 * Otherwise a test skips (exit 77) in builds without CUDA or when no device is visible. */
#ifndef PD_TESTS_GPU_TEST_H
#define PD_TESTS_GPU_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "tests/unit/test.h"

/* True when the environment variable is set to something other than "" or "0". */
static inline bool pd_gpu_test_env_on(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0");
}

static bool g_on_cpu; /* PD_GPU_TESTS_ON_CPU: a CPU backend stands in for CUDA */

/* Reads PD_GPU_TESTS_ON_CPU; returns true (after saying why on stdout) when the test must exit 77. */
static inline bool pd_gpu_test_skip(void) {
    g_on_cpu = pd_gpu_test_env_on("PD_GPU_TESTS_ON_CPU");
    if (g_on_cpu) {
        printf("PD_GPU_TESTS_ON_CPU: a CPU backend stands in for CUDA (checks this harness only)\n");
        return false;
    }
    if (pd_backend_cuda_device_count() > 0) return false;
#ifdef PD_HAVE_CUDA
    printf("no CUDA device: skipped\n");
#else
    printf("built without CUDA: skipped\n");
#endif
    return true;
}

/* The backend under test: cuda:0, or the stand-in CPU backend. */
static inline pd_status pd_gpu_test_backend(pd_backend **out) {
    return g_on_cpu ? pd_backend_cpu_create(3, out) : pd_backend_cuda_create(0, out);
}

/* The start of a GPU test's main(): line-buffered stdout, the skip decision, then the reference CPU
 * backend (cpu_threads threads, 0 for every core) in *cpu and the backend under test in *gpu. Returns 0
 * when both exist, 77 when the test must skip, and 1 after printing "<name>: <error>" on stderr when a
 * backend cannot be made (the caller frees whichever exists). */
static inline int pd_gpu_test_start(const char *name, int cpu_threads, pd_backend **cpu, pd_backend **gpu) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pd_gpu_test_skip()) return 77;
    if (pd_backend_cpu_create(cpu_threads, cpu) != PD_OK || pd_gpu_test_backend(gpu) != PD_OK) {
        fprintf(stderr, "%s: %s\n", name, pd_error_msg());
        return 1;
    }
    return 0;
}

/* ---- guarded device outputs ----
 * An output under test sits inside a larger f32 device buffer: PD_GPU_GUARD bytes on each side hold
 * the byte PD_GPU_CANARY, and an op that writes outside its output changes them. */

#define PD_GPU_GUARD 256 /* canary bytes on each side of a guarded output */
#define PD_GPU_CANARY 0xA5

/* The whole buffer as it should look, in a new host buffer of `total` bytes (free it): canary guards
 * and tail, and `bytes` bytes of interior after the first guard, copied from `interior` or, when it is
 * NULL, every byte `fill`. */
static inline unsigned char *pd_gout_expected(size_t total, size_t bytes, const void *interior, int fill) {
    unsigned char *h = malloc(total);
    PD_ASSERT(h);
    memset(h, PD_GPU_CANARY, total);
    if (interior) memcpy(h + PD_GPU_GUARD, interior, bytes);
    else memset(h + PD_GPU_GUARD, fill, bytes);
    return h;
}

/* Waits for be, then downloads the f32 device buffer buf of `elems` elements into a new host buffer
 * (free it); a failed wait or download is a failed check. */
static inline unsigned char *pd_gout_download(pd_backend *be, const pd_tensor *buf, int64_t elems) {
    PD_CHECK_OK(pd_backend_synchronize(be));
    unsigned char *h = malloc((size_t)elems * 4);
    PD_ASSERT(h);
    pd_tensor hv = pd_tensor_view(h, PD_DTYPE_F32, 1, &elems);
    PD_CHECK_OK(pd_backend_download(be, &hv, buf));
    return h;
}

/* How many guard bytes of a downloaded buffer h (with `bytes` bytes of interior) lost the canary. */
static inline size_t pd_gout_bad_guards(const unsigned char *h, size_t bytes) {
    size_t bad = 0;
    for (size_t i = 0; i < PD_GPU_GUARD; i++)
        bad += (h[i] != PD_GPU_CANARY) + (h[PD_GPU_GUARD + bytes + i] != PD_GPU_CANARY);
    return bad;
}

#endif
