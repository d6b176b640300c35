/* Jobs: the queue, stage assignment, cancels, the answers to a running stage, and the DeDiVAE split
 * re-planned from measured stage times. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "scheduler/scheduler_impl.h"
#include "scheduler/split.h"
#include "comm/shm.h"

static const char *stage_str(int s) {
    static const char *const names[PD_STAGE_COUNT] = {"text", "denoise", "decode", "encode"};
    return s >= 0 && s < PD_STAGE_COUNT ? names[s] : "?";
}

sched_job *sched_find_job(pd_scheduler *s, const char *id) {
    for (sched_job *j = s->jobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

int sched_count_jobs(const pd_scheduler *s, sched_jstate st) {
    int n = 0;
    for (const sched_job *j = s->jobs; j; j = j->next) n += j->state == st;
    return n;
}

void sched_unlink_job_shm(const sched_job *j) {
    pd_shm_unlink(j->req->shm_cond);
    pd_shm_unlink(j->req->shm_uncond);
    pd_shm_unlink(j->req->shm_latent);
}

void sched_remove_job(pd_scheduler *s, sched_job *j) {
    for (sched_job **pp = &s->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    for (int i = 0; i < s->n; i++)
        if (s->w[i].job == j) s->w[i].job = NULL;
    if (j->group >= 0 && s->g[j->group].job == j) s->g[j->group].job = NULL;
    sched_unlink_job_shm(j);
    free(j->req);
    free(j);
    pthread_cond_broadcast(&s->idle_cv);
}

void sched_fail_job(pd_scheduler *s, sched_job *j, const char *code, const char *fmt, ...) {
    if (j->failed) return;
    const bool waits = j->pending > 0;
    if (waits) {
        j->failed = true;
        j->fail_deadline = pd_now_s() + s->comm_timeout_s + 10.0;
    }
    sched_evrec *r = sched_push_event(s, PD_JOB_EVENT_FAILED, j);
    r->ev.stage = j->state == SCHED_J_DECODE || j->state == SCHED_J_WAIT_DECODE ? PD_STAGE_DECODE
                  : j->state == SCHED_J_DENOISE                          ? PD_STAGE_DENOISE
                                                                   : PD_STAGE_TEXT;
    snprintf(r->code, sizeof r->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    PD_INFO("scheduler", "job %s failed (%s): %s", j->id, r->code, r->msg);
    if (!waits) sched_remove_job(s, j);
}

void sched_send_stage(pd_scheduler *s, sched_wslot *w, sched_job *j, pd_stage stage, unsigned gen, int rank) {
    pd_msg *m = s->tx;
    memcpy(m, j->req, sizeof *m);
    m->kind = PD_MSG_ASSIGN;
    m->stage = stage;
    m->group_gen = gen;
    m->rank = rank;
    w->job = j;
    w->state = SCHED_W_BUSY;
    w->progressed_at = pd_now_s();
    w->aco_tried = false;
    sched_send_to(s, w, m);
}

/* Sends one stage of j to w. */
static void assign(pd_scheduler *s, sched_wslot *w, sched_job *j, pd_stage stage) {
    j->state = stage == PD_STAGE_TEXT ? SCHED_J_TEXT : stage == PD_STAGE_DENOISE ? SCHED_J_DENOISE : SCHED_J_DECODE;
    j->worker = w->index;
    j->cancel_sent = false;
    sched_ev_stage(s, j, stage, stage == PD_STAGE_DECODE ? 90 : 0);
    sched_send_stage(s, w, j, stage, 0, 0);
}

double sched_stage_estimate(const pd_scheduler *s, int stage) {
    return s->have_ema[stage] ? s->ema[stage] : s->warm[stage];
}

pd_plan_request sched_plan_request(const pd_gen_params *p) {
    return (pd_plan_request){.width = p->width, .height = p->height, .frames = p->frames, .steps = p->steps,
                             .cfg = p->guidance > 1.0f};
}

void sched_replan(pd_scheduler *s) {
    if (s->stopping) return;
    int n_dec = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->w[i].want_role != s->w[i].role) return; /* one switch at a time */
        n_dec += s->w[i].want_role == PD_ROLE_DECODE;
    }
    if (pd_plan_online_revise(&s->plan, n_dec)) {
        char line[768];
        pd_plan_online_describe(&s->plan, line, sizeof line);
        PD_INFO("scheduler", "plan %s", line);
    }
    if (s->n < 2 || s->sp > 1) return;
    const int target = s->plan.plan.decode_workers;
    if (target == n_dec) return;
    const double t_den =
        pd_plan_online_stage_seconds(&s->plan, PD_PLAN_TEXT) + pd_plan_online_stage_seconds(&s->plan, PD_PLAN_DENOISE);
    const double t_dec = pd_plan_online_stage_seconds(&s->plan, PD_PLAN_DECODE);
    pd_worker_role from = target > n_dec ? PD_ROLE_DENOISE : PD_ROLE_DECODE;
    pd_worker_role to = target > n_dec ? PD_ROLE_DECODE : PD_ROLE_DENOISE;
    for (int i = s->n - 1; i >= 0; i--) {
        sched_wslot *w = &s->w[i];
        if (w->role != from || w->state != SCHED_W_READY || w->aco_seq) continue;
        PD_INFO("scheduler", "split %d+%d -> %d+%d (T_den %.3f s, T_dec %.3f s): worker %d becomes %s", s->n - n_dec,
                n_dec, s->n - target, target, t_den, t_dec, i, pd_worker_role_name(to));
        w->want_role = to;
        sched_shutdown_worker(s, w);
        return;
    }
}

void sched_record_time(pd_scheduler *s, const sched_job *j, int stage, double secs) {
    if (!(secs >= 0) || !isfinite(secs)) return;
    if (s->have_cost) {
        const pd_gen_params p = pd_msg_params(j->req);
        pd_estimate_rates_update(&s->cost, &s->live_rates, &p, stage, secs, SCHED_EMA_ALPHA);
    }
    s->ema[stage] = s->have_ema[stage] ? (1 - SCHED_EMA_ALPHA) * s->ema[stage] + SCHED_EMA_ALPHA * secs : secs;
    s->have_ema[stage] = true;
    if (stage <= PD_STAGE_DECODE) {
        const pd_gen_params p = pd_msg_params(j->req);
        const pd_plan_request r = sched_plan_request(&p);
        pd_plan_online_observe(&s->plan, (pd_plan_stage)stage, PD_PLAN_OBS_JOB, &r, secs);
    }
}

static sched_wslot *idle_slot(pd_scheduler *s, bool (*can)(pd_worker_role)) {
    for (int i = 0; i < s->n; i++)
        if (s->w[i].state == SCHED_W_READY && can(s->w[i].role)) return &s->w[i];
    return NULL;
}

void sched_dispatch(pd_scheduler *s) {
    if (s->stopping) return;
    /* Latents first (FIFO), so finished denoising never waits behind new work on an all-role worker. */
    for (sched_job *j = s->jobs; j; j = j->next) {
        if (j->state != SCHED_J_WAIT_DECODE) continue;
        sched_wslot *w = idle_slot(s, sched_role_decodes);
        if (!w) break;
        assign(s, w, j, PD_STAGE_DECODE);
        return sched_dispatch(s); /* the list may have changed (a failed send removes the job) */
    }
    int n_dec = 0;
    for (int i = 0; i < s->n; i++) n_dec += sched_role_decodes(s->w[i].role);
    /* Bound the latents parked between the groups. */
    if (sched_count_jobs(s, SCHED_J_WAIT_DECODE) >= 2 * (n_dec > 0 ? n_dec : 1)) return;
    for (sched_job *j = s->jobs; j; j = j->next) {
        if (j->state != SCHED_J_QUEUED) continue;
        sched_wslot *w = NULL;
        if (s->sp > 1) {
            for (int gi = 0; gi < s->n_groups && !w; gi++) {
                sched_group *g = &s->g[gi];
                if (g->job || !sched_group_formed(s, g) || !sched_group_idle(s, g)) continue;
                g->job = j;
                j->group = gi;
                w = &s->w[g->first];
            }
        } else {
            w = idle_slot(s, sched_role_denoises);
        }
        if (!w) return;
        sched_push_event(s, PD_JOB_EVENT_STARTED, j);
        j->started_at = sched_now_real();
        if (s->cfg.max_job_seconds > 0) j->req->deadline = j->started_at + s->cfg.max_job_seconds;
        assign(s, w, j, PD_STAGE_TEXT); /* a group's leader encodes the prompts */
        return sched_dispatch(s);
    }
}

void sched_send_cancels(pd_scheduler *s) {
    const double now = sched_now_real();
    for (sched_job *j = s->jobs, *next; j; j = next) {
        next = j->next;
        if (j->state == SCHED_J_WAIT_DECODE && j->req->deadline > 0 && now >= j->req->deadline && !j->cancel_req) {
            sched_fail_job(s, j, "deadline_exceeded", "the job ran past its deadline (max_job_seconds %.0f s) waiting "
                           "for a decode worker", s->cfg.max_job_seconds);
            continue;
        }
        if (!j->cancel_req || j->cancel_sent || j->failed) continue;
        if (j->state == SCHED_J_WAIT_DECODE || j->state == SCHED_J_QUEUED) {
            sched_fail_job(s, j, "cancelled", "cancelled by request");
            continue;
        }
        j->cancel_sent = true;
        if (j->worker < 0) continue;
        pd_msg *m = s->tx;
        pd_msg_init(m, PD_MSG_CANCEL);
        snprintf(m->job_id, sizeof m->job_id, "%s", j->id);
        if (sched_send_to(s, &s->w[j->worker], m)) return; /* the list changed */
    }
}

static int progress_of(int stage, int step, int total) {
    if (total <= 0) total = 1;
    if (step < 0) step = 0;
    if (step > total) step = total;
    if (stage == PD_STAGE_DENOISE) return 90 * step / total;
    if (stage == PD_STAGE_DECODE || stage == PD_STAGE_ENCODE) {
        int p = 90 + 10 * step / total;
        return p > 99 ? 99 : p;
    }
    return 0;
}

static void stage_done(pd_scheduler *s, sched_wslot *w, sched_job *j, int stage, double secs) {
    sched_record_time(s, j, stage, secs);
    w->job = NULL;
    w->state = SCHED_W_READY;
    j->worker = -1;
    if (j->cancel_req) {
        sched_fail_job(s, j, "cancelled", "cancelled by request");
        return;
    }
    if (stage == PD_STAGE_TEXT && j->group >= 0) {
        sched_group *g = &s->g[j->group];
        if (sched_group_formed(s, g) && sched_group_idle(s, g)) sched_group_assign_denoise(s, g, j);
        else sched_fail_job(s, j, "worker_died", "SP group %d lost a rank while the prompts were encoded; it is being restarted",
                      j->group);
    } else if (stage == PD_STAGE_TEXT) {
        assign(s, w, j, PD_STAGE_DENOISE); /* the same worker: it holds the DiT */
    } else if (stage == PD_STAGE_DENOISE) {
        j->state = SCHED_J_WAIT_DECODE;
    } else {
        sched_evrec *r = sched_push_event(s, PD_JOB_EVENT_PROGRESS, j);
        r->ev.stage = PD_STAGE_DECODE;
        r->ev.progress = 100;
        sched_push_event(s, PD_JOB_EVENT_COMPLETED, j)->ev.progress = 100;
        sched_remove_job(s, j);
    }
    sched_replan(s);
}

/* What a worker's error code adds to the job's message: the limit behind a deadline. */
static const char *deadline_note(const pd_scheduler *s, const char *code) {
    static _Thread_local char note[96];
    if (strcmp(code, pd_status_name(PD_ERR_DEADLINE))) return "";
    snprintf(note, sizeof note, " (the job ran longer than max_job_seconds = %.0f s)", s->cfg.max_job_seconds);
    return note;
}

/* An answer from one rank of group job j in its denoise stage: progress counts from the leader only
 * (returns false to let the caller report it); the job moves on when every rank has answered. */
static bool group_rank_on_msg(pd_scheduler *s, sched_wslot *w, sched_job *j, const pd_msg *m) {
    if (m->kind == PD_MSG_PROGRESS) return w->rank != 0 || j->failed;
    if (m->kind == PD_MSG_DONE) {
        if (w->rank == 0) sched_record_time(s, j, PD_STAGE_DENOISE, m->seconds);
        sched_group_rank_done(s, w, j);
        return true;
    }
    bool cancelled = j->cancel_req || !strcmp(m->code, "cancelled");
    /* a deadline stops every rank before the same block, as a cancel does: the group stays good */
    bool stopped = cancelled || !strcmp(m->code, pd_status_name(PD_ERR_DEADLINE));
    PD_INFO("scheduler", "job %s: rank %d of SP group %d stopped: %s: %s", j->id, w->rank, w->group, m->code,
            m->message);
    /* The first failure of this generation breaks it; the peers' errors about the same failure arrive
     * after the bump and leave the new generation alone. */
    if (!stopped && w->joined_gen == s->g[w->group].gen) {
        char why[PD_PROTO_MSG_MAX + 64];
        snprintf(why, sizeof why, "rank %d failed: %s", w->rank, m->message);
        sched_group_break(s, &s->g[w->group], why);
    }
    if (cancelled) sched_fail_job(s, j, "cancelled", "cancelled by request");
    else
        sched_fail_job(s, j, m->code[0] ? m->code : "internal", "denoise stage (rank %d of %d): %s%s", w->rank,
                       s->g[w->group].size, m->message, deadline_note(s, m->code));
    sched_group_rank_done(s, w, j);
    return true;
}

sched_msg_result sched_job_on_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m) {
    if (m->kind != PD_MSG_PROGRESS && m->kind != PD_MSG_DONE && m->kind != PD_MSG_ERROR) return SCHED_MSG_NOT_MINE;
    sched_job *j = w->job;
    if (w->state != SCHED_W_BUSY || !j || strcmp(j->id, m->job_id)) return SCHED_MSG_NOT_MINE;
    if (m->kind == PD_MSG_PROGRESS) w->progressed_at = w->last_heard;
    if (m->kind == PD_MSG_DONE) sched_aco_stage_done(s, w, m);
    if (j->group >= 0 && j->state == SCHED_J_DENOISE && group_rank_on_msg(s, w, j, m)) return SCHED_MSG_HANDLED;
    if (m->kind == PD_MSG_PROGRESS) {
        sched_evrec *r = sched_push_event(s, PD_JOB_EVENT_PROGRESS, j);
        r->ev.stage = (pd_stage)m->stage;
        r->ev.step = m->step;
        r->ev.total = m->total;
        r->ev.progress = progress_of(m->stage, m->step, m->total);
    } else if (m->kind == PD_MSG_DONE) {
        stage_done(s, w, j, m->stage, m->seconds);
    } else {
        w->job = NULL;
        w->state = SCHED_W_READY;
        j->worker = -1;
        if (j->cancel_req || !strcmp(m->code, "cancelled"))
            sched_fail_job(s, j, "cancelled", "cancelled by request");
        else
            sched_fail_job(s, j, m->code[0] ? m->code : "internal", "%s stage: %s%s", stage_str(m->stage), m->message,
                           deadline_note(s, m->code));
    }
    return SCHED_MSG_HANDLED;
}
