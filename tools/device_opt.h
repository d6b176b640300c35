/* The --device option shared by `pipedit dit`, `pipedit decode` and `pipedit generate`: "cpu" (the
 * default), "cuda" (device 0) or "cuda:N".
 *
 * With --sp N and a CUDA device, rank r is meant to use device r (cuda:r) joined by the NCCL
 * communicator (comm/comm.h, which the daemon's SP groups already use); these commands do not
 * start GPU ranks yet, so pd_device_opt_check rejects the combination. */
#ifndef PD_TOOLS_DEVICE_OPT_H
#define PD_TOOLS_DEVICE_OPT_H

#include <stdbool.h>

#include "engine/backend.h"

/* The usage lines of the option, for a command's --help. */
#define PD_DEVICE_OPT_USAGE                                                                        \
    "  --device SPEC    cpu (default), cuda (GPU 0) or cuda:N; cuda needs a build with\n"              \
    "                   PIPEDIT_CUDA and a visible GPU\n"

/* Checks a --device value before anything is loaded: the spec's form, and that it is "cpu" when
 * sp_ranks > 0 (the commands start CPU ranks only). Prints "<cmd>: <message>" on stderr and returns
 * false when the value is refused. */
bool pd_device_opt_check(const char *cmd, const char *spec, int sp_ranks);

/* Creates the backend of spec (NULL = "cpu") with n_threads CPU threads (0 = all cores; ignored for
 * CUDA). On failure prints "<cmd>: <message>" on stderr, with a hint when CUDA is missing from the
 * build or no GPU is visible, and returns the failing status (*out NULL). */
pd_status pd_device_opt_create(const char *cmd, const char *spec, int n_threads, pd_backend **out);

#endif
