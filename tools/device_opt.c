/* --device for the CLI: form checks up front, then pd_backend_create with messages a user can act on. */
#include "tools/device_opt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool pd_device_opt_check(const char *cmd, const char *spec, int sp_ranks) {
    int dev = pd_backend_spec_device(spec);
    if (dev == -2) {
        fprintf(stderr, "%s: --device must be cpu, cuda or cuda:N (N in 0..1023), got \"%s\"\n", cmd, spec);
        return false;
    }
    if (dev >= 0 && sp_ranks > 0) {
        fprintf(stderr, "%s: --sp with --device %s is not supported yet: this command starts CPU ranks only (GPU "
                        "ranks, rank r on cuda:r over NCCL, run in pipeditd's SP groups); use --sp on the CPU, or one "
                        "GPU without --sp\n", cmd, spec);
        return false;
    }
    return true;
}

pd_status pd_device_opt_create(const char *cmd, const char *spec, int n_threads, pd_backend **out) {
    *out = NULL;
    int dev = pd_backend_spec_device(spec);
    pd_status st;
    if (dev >= 0) {
        /* 0 both without CUDA in the build and without a GPU; the create call says which. */
        int count = pd_backend_cuda_device_count();
        if (count > 0 && dev >= count) {
            fprintf(stderr, "%s: --device %s: this machine has %d CUDA device%s (cuda:0..cuda:%d)\n", cmd, spec, count,
                    count == 1 ? "" : "s", count - 1);
            return PD_ERR_DEVICE;
        }
        st = pd_backend_create(spec, n_threads, out);
        if (st == PD_OK) return PD_OK;
        if (st == PD_ERR_UNSUPPORTED)
            fprintf(stderr, "%s: --device: %s\n", cmd, pd_error_msg()); /* the message names cuda:N */
        else if (count == 0)
            fprintf(stderr, "%s: --device %s: no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES "
                            "hides them): %s\n", cmd, spec, pd_error_msg());
        else
            fprintf(stderr, "%s: --device %s: %s\n", cmd, spec, pd_error_msg());
        return st;
    }
    st = pd_backend_create(spec ? spec : "cpu", n_threads, out);
    if (st != PD_OK) fprintf(stderr, "%s: backend: %s\n", cmd, pd_error_msg());
    return st;
}
