/* SP denoise groups: formation over GROUP / JOINED, generations bumped on any failure, and the
 * bookkeeping of a group job whose ranks answer one by one. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "comm/comm.h"
#include "scheduler/scheduler_impl.h"
#include "workers/sp_group.h"

static void group_name(const pd_scheduler *s, int gi, unsigned gen, char *buf, size_t n) {
    snprintf(buf, n, "pdg-%d-%u-%d-%u", (int)getpid(), s->instance, gi, gen);
}

bool sched_group_formed(const pd_scheduler *s, const sched_group *g) {
    if (g->joining) return false;
    for (int r = 0; r < g->size; r++) {
        const sched_wslot *w = &s->w[g->first + r];
        if (!sched_slot_up(w) || w->joined_gen != g->gen) return false;
    }
    return true;
}

bool sched_group_idle(const pd_scheduler *s, const sched_group *g) {
    for (int r = 0; r < g->size; r++)
        if (s->w[g->first + r].state != SCHED_W_READY) return false;
    return true;
}

void sched_group_break(pd_scheduler *s, sched_group *g, const char *why) {
    char base[64];
    group_name(s, (int)(g - s->g), g->gen, base, sizeof base);
    pd_sp_group_unlink(base);
    g->gen++;
    g->joining = false;
    PD_WARN("scheduler", "SP group %d (workers %d..%d): %s; it will be re-formed as generation %u", (int)(g - s->g),
            g->first, g->first + g->size - 1, why, g->gen);
}

void sched_group_rank_done(pd_scheduler *s, sched_wslot *w, sched_job *j) {
    if (w) {
        w->job = NULL;
        if (w->state == SCHED_W_BUSY) w->state = SCHED_W_READY;
    }
    if (--j->pending > 0) return;
    s->g[j->group].job = NULL;
    j->worker = -1;
    if (j->failed) sched_remove_job(s, j);
    else if (j->cancel_req) sched_fail_job(s, j, "cancelled", "cancelled by request");
    else j->state = SCHED_J_WAIT_DECODE;
}

void sched_group_assign_denoise(pd_scheduler *s, sched_group *g, sched_job *j) {
    j->state = SCHED_J_DENOISE;
    j->worker = g->first;
    j->cancel_sent = false;
    j->pending = g->size;
    sched_ev_stage(s, j, PD_STAGE_DENOISE, 0);
    for (int r = 0; r < g->size; r++) {
        if (j->failed) { /* an earlier rank's send failed: the rest never start */
            sched_group_rank_done(s, NULL, j);
            continue;
        }
        sched_send_stage(s, &s->w[g->first + r], j, PD_STAGE_DENOISE, g->gen, r);
    }
}

void sched_form_groups(pd_scheduler *s) {
    if (s->stopping) return;
    double now = pd_now_s();
    for (int gi = 0; gi < s->n_groups; gi++) {
        sched_group *g = &s->g[gi];
        if (g->job || g->joining || now < g->retry_at || !sched_group_idle(s, g)) continue;
        bool joined = true;
        for (int r = 0; r < g->size; r++) joined &= s->w[g->first + r].joined_gen == g->gen;
        if (joined) continue;
        /* GPU groups talk over NCCL: this process makes the unique ids (and hosts NCCL's bootstrap
         * root for them), every rank receives them in its GROUP. */
        const bool nccl = s->gpu;
        uint8_t ids[PD_PROTO_GROUP_COMMS][PD_PROTO_NCCL_ID_BYTES];
        for (int i = 0; nccl && i < PD_PROTO_GROUP_COMMS; i++) {
            pd_status st = pd_comm_nccl_unique_id(ids[i]);
            if (st) {
                PD_ERROR("scheduler", "SP group %d cannot be formed: %s", gi, pd_error_msg());
                g->retry_at = now + 5.0;
                break;
            }
        }
        if (now < g->retry_at) continue;
        g->joining = true;
        PD_INFO("scheduler", "SP group %d: forming generation %u over workers %d..%d", gi, g->gen, g->first,
                g->first + g->size - 1);
        for (int r = 0; r < g->size && g->joining; r++) {
            sched_wslot *w = &s->w[g->first + r];
            pd_msg *m = s->tx;
            pd_msg_init(m, PD_MSG_GROUP);
            m->group_gen = g->gen;
            m->rank = r;
            m->ranks = g->size;
            m->chunk_heads = s->plan.plan.chunk; /* planned, pinned, or 0: measured by the group */
            m->cfg_parallel = s->cfg.cfg_parallel;
            m->comm_timeout_s = s->comm_timeout_s;
            group_name(s, gi, g->gen, m->comm_name, sizeof m->comm_name);
            m->comm_nccl = nccl;
            if (nccl) memcpy(m->nccl_ids, ids, sizeof ids);
            w->state = SCHED_W_JOINING;
            sched_send_to(s, w, m); /* a lost rank breaks the group (joining false): stop sending */
        }
    }
}

/* A JOINED or a failed join from w (in SCHED_W_JOINING). */
static void group_join_answer(pd_scheduler *s, sched_wslot *w, bool ok, unsigned gen, const char *why) {
    sched_group *g = &s->g[w->group];
    w->state = SCHED_W_READY;
    if (ok && gen == g->gen) w->joined_gen = gen;
    if (!ok && g->joining) {
        g->join_fails++;
        g->retry_at = pd_now_s() + fmin(0.5 * (double)g->join_fails, 5.0);
        sched_group_break(s, g, why);
    }
    bool waiting = false;
    for (int r = 0; r < g->size; r++) waiting |= s->w[g->first + r].state == SCHED_W_JOINING;
    if (waiting || !g->joining) return;
    g->joining = false;
    if (sched_group_formed(s, g)) {
        g->join_fails = 0;
        PD_INFO("scheduler", "SP group %d: generation %u formed (%d ranks%s, PipeSP chunk %d)", (int)(g - s->g), g->gen,
                g->size, s->cfg.cfg_parallel ? ", CFG parallel" : "", s->plan.plan.chunk);
    }
}

sched_msg_result sched_group_on_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m) {
    if (w->state != SCHED_W_JOINING || w->group < 0) return SCHED_MSG_NOT_MINE;
    if (m->kind == PD_MSG_JOINED) {
        group_join_answer(s, w, true, m->group_gen, NULL);
        return SCHED_MSG_HANDLED;
    }
    if (m->kind == PD_MSG_ERROR && !m->job_id[0]) {
        char why[PD_PROTO_MSG_MAX + PD_PROTO_CODE_MAX + 96];
        snprintf(why, sizeof why, "rank %d (worker %d) could not join: %s: %s", w->rank, w->index, m->code, m->message);
        group_join_answer(s, w, false, 0, why);
        return SCHED_MSG_HANDLED;
    }
    return SCHED_MSG_NOT_MINE;
}
