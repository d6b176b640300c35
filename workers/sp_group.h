/* One process's membership in a sequence-parallel denoise group: its communicators, its SP evaluator
 * of the DiT (models/wan/dit_sp.h) and the step-boundary agreement that makes cancellation stop every
 * rank at the same step.
 *
 * Layout of a group of `ranks` processes (rank 0 is the leader: it reads the cancel flag, reports
 * progress and publishes the result):
 *  - without CFG parallelism: one SP communicator over all ranks;
 *  - with CFG parallelism (ranks even): two SP communicators over the halves 0..m-1 and m..2m-1
 *    (m = ranks / 2), and a CFG communicator over all ranks; the first half evaluates the conditional
 *    batch element, the second the unconditional one (a batch of 1 is evaluated by both halves).
 * Shared-memory communicator names derive from one base name: "<base>-sp0", "<base>-sp1", "<base>-cfg";
 * NCCL communicators come from three unique ids in that order (made by the daemon, which hands them
 * out over the control channel), each rank on its backend's GPU and ordered after its stream.
 *
 * Cancellation and deadlines: before every DiT block of every forward through the group, rank 0
 * broadcasts the leader's stop flag (4 bytes, base/status.h PD_STOP_*) over every rank of the group
 * (dit_sp.h, options.stop_comm); when it is set, every rank returns PD_ERR_CANCELLED (or PD_ERR_DEADLINE)
 * before that same block, so a stop takes effect within one block and all ranks stop at the same
 * point. A rank must therefore not check a stop flag of its own between steps (give the sampler loop
 * no cancel flag; the group does it). */
#ifndef PD_WORKERS_SP_GROUP_H
#define PD_WORKERS_SP_GROUP_H

#include <stdatomic.h>
#include <stdbool.h>

#include "models/pipeline.h"
#include "models/wan/dit_sp.h"

/* Longest base name: the communicator names add 4 bytes and must stay within 64. */
#define PD_SP_GROUP_NAME_MAX 56

typedef struct pd_sp_group_spec {
    const char *name;     /* base of the communicator names: letters, digits, '_', '-' */
    int rank, ranks;      /* this process's rank in the whole group, 0 <= rank < ranks <= 64 */
    bool cfg_parallel;    /* split the group into a conditional and an unconditional half */
    int chunk_heads;      /* PipeSP g (0 = measured at the first forward; see models/wan/dit_sp.h) */
    double timeout_s;     /* every collective's deadline (> 0) */
    pd_backend *be;       /* the backend the DiT runs on (the cancel flag's buffer lives there) */
    bool nccl;            /* NCCL (device memory) instead of shared memory */
    const uint8_t (*nccl_ids)[PD_COMM_NCCL_ID_BYTES]; /* [3]: SP half 0, SP half 1, CFG pair */
} pd_sp_group_spec;

typedef struct pd_sp_group pd_sp_group;

/* Joins the group: creates the communicators (waiting up to timeout_s for every rank to join) and the
 * SP evaluator over dit, which must outlive the group. PD_ERR_INVALID for a bad spec (naming the
 * field), PD_ERR_TIMEOUT when some rank did not join, PD_ERR_NOMEM. */
pd_status pd_sp_group_join(pd_wan_dit *dit, const pd_sp_group_spec *spec, pd_sp_group **out);

/* Removes the shared-memory segments of the group with base name `name` that a killed rank 0 could
 * not remove (harmless when there are none). */
void pd_sp_group_unlink(const char *name);

/* Leaves the group and frees it (the communicators included). NULL is a no-op. */
void pd_sp_group_leave(pd_sp_group *g);

/* The stop flag the leader reads before every DiT block (ignored on other ranks): it becomes the
 * group's DiT's stop flag (pd_wan_dit_set_stop). NULL = none. */
void pd_sp_group_set_cancel(pd_sp_group *g, const atomic_int *cancel);

/* A pd_dit_forward_fn (models/pipeline.h) with ud = the group: pd_wan_dit_sp_forward over the group.
 * Every rank calls it with the same shapes. PD_ERR_CANCELLED or PD_ERR_DEADLINE (on every rank, before
 * the same block of the same call) when the leader's flag was set; the communicators' errors when a
 * rank fails. */
pd_status pd_sp_group_forward(void *group, pd_tensor *velocity, const pd_tensor *latent, const float *timesteps,
                              const pd_tensor *context);

/* Forward calls that computed since the last pd_sp_group_reset_steps (the denoising steps done). */
int pd_sp_group_steps(const pd_sp_group *g);
void pd_sp_group_reset_steps(pd_sp_group *g);

int pd_sp_group_rank(const pd_sp_group *g);
int pd_sp_group_size(const pd_sp_group *g);

/* The evaluator's accounting of the last forward (models/wan/dit_sp.h). */
void pd_sp_group_last_stats(const pd_sp_group *g, pd_wan_dit_sp_stats *out);

#endif
