/* Choosing a backend by name, and the CUDA entry points of a build without CUDA. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/backend.h"

int pd_backend_spec_device(const char *spec) {
    if (!spec || !strcmp(spec, "cpu")) return -1;
    if (!strcmp(spec, "cuda")) return 0;
    if (strncmp(spec, "cuda:", 5) || spec[5] < '0' || spec[5] > '9') return -2;
    char *end;
    long n = strtol(spec + 5, &end, 10);
    return *end || n < 0 || n >= 1024 ? -2 : (int)n;
}

int pd_backend_cpu_share(int parts) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long t = cores > 0 ? (parts > 0 ? cores / parts : cores) : 1;
    return t < 1 ? 1 : t > 1024 ? 1024 : (int)t;
}

pd_status pd_backend_create(const char *spec, int n_threads, pd_backend **out) {
    *out = NULL;
    int dev = pd_backend_spec_device(spec);
    if (dev == -1) return pd_backend_cpu_create(n_threads, out);
    if (dev >= 0) return pd_backend_cuda_create(dev, out);
    return pd_error_set(PD_ERR_INVALID, "device '%s' is not one of cpu, cuda, cuda:N", spec);
}

#ifndef PD_HAVE_CUDA
pd_status pd_backend_cuda_create(int device, pd_backend **out) {
    *out = NULL;
    return pd_error_set(PD_ERR_UNSUPPORTED, "cuda:%d: this build has no CUDA backend (configure with PIPEDIT_CUDA=ON "
                        "on a machine with the CUDA toolkit and cuDNN)", device);
}

int pd_backend_cuda_device_count(void) { return 0; }
#endif
