/* Choosing a backend by name, and the CUDA entry points of a build without CUDA. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"

pd_status pd_backend_create(const char *spec, int n_threads, pd_backend **out) {
    *out = NULL;
    if (!spec || !strcmp(spec, "cpu")) return pd_backend_cpu_create(n_threads, out);
    if (!strcmp(spec, "cuda")) return pd_backend_cuda_create(0, out);
    if (!strncmp(spec, "cuda:", 5) && spec[5] >= '0' && spec[5] <= '9') {
        char *end;
        long dev = strtol(spec + 5, &end, 10);
        if (!*end && dev >= 0 && dev < 1024) return pd_backend_cuda_create((int)dev, out);
    }
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
