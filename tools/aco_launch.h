/* An Aco helper process for a local run (`pipedit dit --aco`, `pipedit generate --aco`): a child
 * process with its own CPU backend that computes lent self-attention heads for this process over a
 * fresh shared-memory pair (models/wan/aco.h). With --sp every rank starts its own. */
#ifndef PD_TOOLS_ACO_LAUNCH_H
#define PD_TOOLS_ACO_LAUNCH_H

#include <sys/types.h>

#include "models/wan/aco.h"
#include "models/wan/dit.h"

typedef struct pd_aco_local {
    pid_t pid;             /* the helper process (0: none) */
    pd_comm *comm;         /* this process is rank 0, the helper rank 1 */
    pd_aco_lender *lender; /* routes the DiT's self-attention while started */
    pd_wan_dit *dit;
    char name[64];         /* the pair's shared-memory name */
} pd_aco_local;

/* Forks the helper (helper_threads CPU threads; share as pd_aco_lender_create's: -1 measured),
 * joins the pair within timeout_s and routes dit's self-attention through the lender, whose copies
 * run on be. When PIPEDIT_ACO_FAULT_AFTER=N is set the helper kills itself during its N-th lend (the
 * fault tests). On failure nothing is left running and the error is returned. */
pd_status pd_aco_local_start(pd_wan_dit *dit, pd_backend *be, int helper_threads, int share, double timeout_s,
                             pd_aco_local *out);

/* Restores dit's own attention, tells the helper to finish, waits for it and frees everything; fills
 * stats (may be NULL). Returns PD_OK also when the helper had failed (the lender recomputed its heads;
 * stats->failed says so). */
pd_status pd_aco_local_stop(pd_aco_local *a, pd_aco_stats *stats);

#endif
