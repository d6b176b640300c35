#include "workers/sp_group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pd_sp_group {
    int rank, ranks;
    pd_comm *sp, *cfg;        /* cfg only with CFG parallelism */
    pd_comm *world;           /* the communicator spanning every rank: cfg, or sp */
    pd_wan_dit_sp *pair;      /* CFG-parallel evaluator (batch 2); NULL without CFG parallelism */
    pd_wan_dit_sp *plain;     /* evaluator over this rank's SP communicator (any batch) */
    pd_wan_dit_sp *last;      /* the one the last forward used */
    pd_wan_dit *dit;
    int steps;
};

static const char *const comm_parts[3] = {"sp0", "sp1", "cfg"};

void pd_sp_group_unlink(const char *name) {
    char full[96];
    for (int i = 0; i < 3; i++) {
        snprintf(full, sizeof full, "%s-%s", name, comm_parts[i]);
        pd_comm_shm_unlink(full);
    }
}

/* Communicator i (0, 1: SP halves; 2: the CFG pair) over `size` ranks. */
static pd_status open_comm(const pd_sp_group_spec *spec, int i, int rank, int size, pd_comm **out) {
    if (spec->nccl) {
        PD_TRY(pd_comm_nccl_create(spec->nccl_ids[i], rank, size, pd_backend_device_index(spec->be), spec->timeout_s, out));
        pd_comm_set_stream(*out, pd_backend_stream(spec->be));
        return PD_OK;
    }
    char name[80];
    snprintf(name, sizeof name, "%s-%s", spec->name, comm_parts[i]);
    return pd_comm_shm_create(name, rank, size, spec->timeout_s, out);
}

pd_status pd_sp_group_join(pd_wan_dit *dit, const pd_sp_group_spec *spec, pd_sp_group **out) {
    *out = NULL;
    if (!spec->name || !spec->name[0] || strlen(spec->name) > PD_SP_GROUP_NAME_MAX)
        return pd_error_set(PD_ERR_INVALID, "SP group: name must be 1..%d characters", PD_SP_GROUP_NAME_MAX);
    if (spec->ranks < 1 || spec->ranks > PD_COMM_MAX_RANKS || spec->rank < 0 || spec->rank >= spec->ranks)
        return pd_error_set(PD_ERR_INVALID, "SP group: rank %d of %d (want 0 <= rank < ranks <= %d)", spec->rank,
                            spec->ranks, PD_COMM_MAX_RANKS);
    if (spec->cfg_parallel && (spec->ranks < 2 || spec->ranks % 2))
        return pd_error_set(PD_ERR_INVALID, "SP group: CFG parallelism needs an even number of ranks, not %d", spec->ranks);
    if (!(spec->timeout_s > 0))
        return pd_error_set(PD_ERR_INVALID, "SP group: timeout %g s (want > 0)", spec->timeout_s);
    if (!spec->be || (spec->nccl && !spec->nccl_ids))
        return pd_error_set(PD_ERR_INVALID, "SP group: no backend%s", spec->nccl ? " or no NCCL ids" : "");
    pd_sp_group *g = calloc(1, sizeof *g);
    if (!g) return pd_error_set(PD_ERR_NOMEM, "SP group: out of memory");
    g->rank = spec->rank;
    g->ranks = spec->ranks;
    g->dit = dit;
    const int m = spec->cfg_parallel ? spec->ranks / 2 : spec->ranks;
    pd_status st = open_comm(spec, spec->rank / m, spec->rank % m, m, &g->sp);
    if (st == PD_OK && spec->cfg_parallel) st = open_comm(spec, 2, spec->rank, spec->ranks, &g->cfg);
    g->world = g->cfg ? g->cfg : g->sp;
    /* Both evaluators agree on stopping over every rank: the halves stop before the same block
     * even when each evaluates a batch of 1 on its own. */
    const pd_wan_dit_sp_options opts = {.chunk_heads = spec->chunk_heads, .stop_comm = g->world};
    if (st == PD_OK) st = pd_wan_dit_sp_create(dit, g->sp, NULL, &opts, &g->plain);
    if (st == PD_OK && g->cfg) st = pd_wan_dit_sp_create(dit, g->sp, g->cfg, &opts, &g->pair);
    if (st != PD_OK) {
        pd_sp_group_leave(g);
        return pd_error_prefix(st, "rank %d of %d joining SP group %s", spec->rank, spec->ranks, spec->name);
    }
    *out = g;
    return PD_OK;
}

void pd_sp_group_leave(pd_sp_group *g) {
    if (!g) return;
    pd_wan_dit_sp_free(g->pair);
    pd_wan_dit_sp_free(g->plain);
    pd_comm_destroy(g->cfg);
    pd_comm_destroy(g->sp);
    free(g);
}

void pd_sp_group_set_cancel(pd_sp_group *g, const atomic_int *cancel) { pd_wan_dit_set_stop(g->dit, cancel); }

pd_status pd_sp_group_forward(void *group, pd_tensor *velocity, const pd_tensor *latent, const float *timesteps,
                              const pd_tensor *context) {
    pd_sp_group *g = group;
    /* Under CFG parallelism a batch of 1 (no guidance) runs on both halves, each as its own SP group. */
    pd_wan_dit_sp *e = g->pair && latent->shape[0] == 2 ? g->pair : g->plain;
    g->last = e;
    PD_TRY(pd_wan_dit_sp_forward(e, velocity, latent, timesteps, context));
    g->steps++;
    return PD_OK;
}

int pd_sp_group_steps(const pd_sp_group *g) { return g->steps; }
void pd_sp_group_reset_steps(pd_sp_group *g) { g->steps = 0; }
int pd_sp_group_rank(const pd_sp_group *g) { return g->rank; }
int pd_sp_group_size(const pd_sp_group *g) { return g->ranks; }

void pd_sp_group_last_stats(const pd_sp_group *g, pd_wan_dit_sp_stats *out) {
    pd_wan_dit_sp_last_stats(g->last ? g->last : g->plain, out);
}
