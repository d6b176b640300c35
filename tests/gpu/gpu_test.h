/* Shared by the GPU tests: the backend under test and when to skip.
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

#endif
