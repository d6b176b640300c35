/* Aco pairs: which decode worker helps which denoise rank, the sessions between them (one per denoise
 * stage at most), their end, and the counts the workers report. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "scheduler/scheduler_impl.h"

static void session_name(const pd_scheduler *s, uint32_t seq, char *buf, size_t n) {
    snprintf(buf, n, "pda-%d-%u-%u", (int)getpid(), s->instance, seq);
}

/* Ends w's session on the scheduler's side (the communicator's segment goes: names are never reused). */
static void session_end(pd_scheduler *s, sched_wslot *w) {
    char name[64];
    session_name(s, w->aco_seq, name, sizeof name);
    if (!s->gpu) pd_comm_shm_unlink(name);
    w->aco_seq = 0;
    w->aco_partner = -1;
}

double sched_aco_speedup(const pd_scheduler *s) { return pd_plan_online_aco_speedup(&s->plan); }

/* Starts a session between lender slot li (running job j's denoise stage) and helper slot H. */
static void session_start(pd_scheduler *s, int li, sched_wslot *h, sched_job *j) {
    sched_wslot *l = &s->w[li];
    l->aco_tried = true;
    pd_msg *m = s->tx;
    pd_msg_init(m, PD_MSG_ACO);
    const uint32_t seq = ++s->aco_next_seq;
    snprintf(m->job_id, sizeof m->job_id, "%s", j->id);
    m->aco_seq = seq;
    m->aco_share = s->plan.plan.aco_share; /* planned; PD_ACO_SHARE_HALF (on); -1 measured (no model) */
    m->comm_timeout_s = s->comm_timeout_s;
    session_name(s, seq, m->comm_name, sizeof m->comm_name);
    m->comm_nccl = s->gpu;
    if (s->gpu && pd_comm_nccl_unique_id(m->nccl_ids[0]) != PD_OK) {
        PD_WARN("scheduler", "Aco: no NCCL id for worker %d and helper %d: %s", li, h->index, pd_error_msg());
        return;
    }
    h->aco_seq = seq;
    h->aco_partner = li;
    m->aco_serve = 1;
    if (sched_send_to(s, h, m)) return; /* h was dropped */
    m->aco_serve = 0;
    s->aco.sessions++;
    PD_INFO("scheduler", "Aco session %u: worker %d lends to worker %d during job %s", seq, li, h->index, j->id);
    sched_send_to(s, l, m);
}

void sched_aco_form(pd_scheduler *s) {
    if (s->stopping || s->plan.plan.aco_share == 0 || s->n < 2) return; /* off, or lending does not pay */
    bool den[256], dec[256]; /* n_devices is at most 256 (pd_scheduler_create) */
    int helper_of[256];
    for (int i = 0; i < s->n; i++) {
        den[i] = sched_role_denoises(s->w[i].role);
        dec[i] = sched_role_decodes(s->w[i].role);
    }
    pd_split_aco_helpers(s->n, den, dec, helper_of);
    for (int i = 0; i < s->n; i++) {
        if (helper_of[i] < 0) continue;
        sched_wslot *l = &s->w[i], *h = &s->w[helper_of[i]];
        sched_job *j = l->job;
        if (l->state != SCHED_W_BUSY || !j || j->state != SCHED_J_DENOISE || j->failed || j->aco_off || j->cancel_req ||
            l->aco_tried)
            continue;
        if (!l->aco_capable || !h->aco_capable || h->state != SCHED_W_READY || h->aco_seq || h->want_role != h->role)
            continue;
        session_start(s, i, h, j);
    }
}

void sched_aco_stage_done(pd_scheduler *s, sched_wslot *w, const pd_msg *m) {
    const pd_msg_aco *a = &m->aco;
    pd_scheduler_aco_stats *t = &s->aco;
    if (m->stage == PD_STAGE_DECODE) {
        if (!(a->backoff_s >= 0) || !isfinite(a->backoff_s)) return;
        t->decodes++;
        t->decode_delay_sum_s += a->backoff_s;
        if (a->backoff_s > t->decode_delay_max_s) t->decode_delay_max_s = a->backoff_s;
        return;
    }
    if (m->stage != PD_STAGE_DENOISE) return;
    t->calls += a->calls;
    t->lends += a->lends;
    t->declined += a->declined;
    t->heads_total += a->heads_total;
    t->heads_lent += a->heads_lent;
    t->failures += a->failed != 0;
    if (isfinite(a->wait_s) && a->wait_s > 0) t->lend_wait_s += a->wait_s;
    if (w->aco_tried && a->heads_total) {
        t->lent_share = (double)a->heads_lent / (double)a->heads_total;
        PD_INFO("scheduler", "job %s denoise (worker %d): %.3f s, Aco lent %llu of %llu heads in %llu lends, waited %.3f s "
                "for them, %llu declined%s", m->job_id, w->index, m->seconds, (unsigned long long)a->heads_lent,
                (unsigned long long)a->heads_total, (unsigned long long)a->lends, a->wait_s,
                (unsigned long long)a->declined, a->failed ? ", a lend failed (recomputed here)" : "");
    }
    /* The stage's time, with heads lent or without any pair, for the plan's Aco speedup (the leader
     * speaks for a group). */
    if (w->rank != 0 || !w->job || (!a->heads_lent && w->aco_tried)) return;
    const pd_gen_params p = pd_msg_params(w->job->req);
    const pd_plan_request r = sched_plan_request(&p);
    pd_plan_online_observe(&s->plan, PD_PLAN_DENOISE, a->heads_lent ? PD_PLAN_OBS_ACO : PD_PLAN_OBS_PLAIN, &r,
                           m->seconds);
}

void sched_aco_worker_lost(pd_scheduler *s, sched_wslot *w) {
    if (!w->aco_seq) return;
    sched_wslot *l = w->aco_partner >= 0 ? &s->w[w->aco_partner] : NULL;
    s->aco.helpers_lost++;
    if (l && l->job && l->job->state == SCHED_J_DENOISE) {
        l->job->aco_off = true; /* the lender recomputes what was lent and goes on alone */
        PD_WARN("scheduler", "Aco: helper worker %d lost while serving worker %d; job %s finishes without Aco", w->index,
                l->index, l->job->id);
    }
    session_end(s, w);
}

sched_msg_result sched_aco_on_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m) {
    if (m->kind != PD_MSG_ACO_DONE) return SCHED_MSG_NOT_MINE;
    if (!sched_slot_up(w) || !w->aco_seq || m->aco_seq != w->aco_seq) return SCHED_MSG_HANDLED; /* a stale one */
    s->aco.helper_lends += m->aco.lends;
    if (isfinite(m->aco.wait_s) && m->aco.wait_s > 0) s->aco.helper_compute_s += m->aco.wait_s;
    if (isfinite(m->aco.lend_max_s) && m->aco.lend_max_s > s->aco.helper_lend_max_s)
        s->aco.helper_lend_max_s = m->aco.lend_max_s;
    if (m->code[0])
        PD_WARN("scheduler", "Aco session %u (helper worker %d): %s: %s", m->aco_seq, w->index, m->code, m->message);
    session_end(s, w);
    return SCHED_MSG_HANDLED;
}
