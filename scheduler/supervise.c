/* Worker supervision: one process per slot, spawned with its role, connected over its own Unix
 * socket, handshaken, watched (exit, silence), dropped on any protocol error and restarted with a
 * start-up backoff; role switches go through an orderly SHUTDOWN. The message reader hands each
 * message to the state machine it belongs to: the worker's lifecycle (here), its SP group's
 * formation (groups.c) or its job's stage (dispatch.c). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "scheduler/scheduler_impl.h"
#include "scheduler/spawn.h"

bool sched_role_denoises(pd_worker_role r) { return r == PD_ROLE_DENOISE || r == PD_ROLE_ALL; }

bool sched_role_decodes(pd_worker_role r) { return r == PD_ROLE_DECODE || r == PD_ROLE_ALL; }

bool sched_slot_up(const sched_wslot *w) { return w->state == SCHED_W_READY || w->state == SCHED_W_BUSY; }

static void describe_exit(int status, char *buf, size_t n) {
    if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, n, "ended (wait status 0x%x)", status);
}

static void close_conn(sched_wslot *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    pd_proto_reader_reset(w->rd);
}

static void schedule_restart(pd_scheduler *s, sched_wslot *w) {
    w->state = SCHED_W_OFF;
    w->role = w->want_role;
    if (!w->was_ready) w->fails++;
    else w->fails = 0;
    double backoff = w->fails ? fmin(0.25 * (double)(1 << (w->fails < 6 ? w->fails - 1 : 5)), 5.0) : 0.0;
    w->restart_at = pd_now_s() + backoff;
    w->was_ready = false;
}

/* sched_worker_lost, failing the worker's job with error code `code`. */
static void drop_worker(pd_scheduler *s, sched_wslot *w, const char *code, const char *reason) {
    char how[128] = "";
    pid_t pid = w->pid;
    if (pid > 0) {
        int status;
        kill(pid, SIGKILL);
        if (waitpid(pid, &status, 0) == pid) describe_exit(status, how, sizeof how);
        w->pid = 0;
    }
    close_conn(w);
    sched_aco_worker_lost(s, w);
    PD_WARN("scheduler", "worker %d (%s, pid %d): %s%s%s", w->index, pd_worker_role_name(w->role), (int)pid, reason,
            how[0] ? "; " : "", how);
    /* A rank of the current generation (joined, or asked to join) takes it down; a rank lost after
     * its generation already broke changes nothing more. */
    if (w->group >= 0 && (w->joined_gen == s->g[w->group].gen || s->g[w->group].joining)) {
        char why[256];
        snprintf(why, sizeof why, "rank %d (worker %d) lost", w->rank, w->index);
        sched_group_break(s, &s->g[w->group], why);
    }
    if (w->job && w->job->group >= 0 && w->job->state == SCHED_J_DENOISE) {
        sched_job *j = w->job;
        if (j->cancel_req) sched_fail_job(s, j, "cancelled", "cancelled by request");
        else
            sched_fail_job(s, j, code, "rank %d of SP group %d (worker %d, pid %d) failed during the denoise stage: "
                     "%s%s%s; the group is being restarted", w->rank, w->group, w->index, (int)pid, reason,
                     how[0] ? "; " : "", how);
        sched_group_rank_done(s, w, j);
    } else if (w->job) {
        sched_job *j = w->job;
        w->job = NULL;
        j->worker = -1;
        if (j->cancel_req)
            sched_fail_job(s, j, "cancelled", "cancelled by request");
        else
            sched_fail_job(s, j, code, "worker %d (%s, pid %d) failed during the %s stage: %s%s%s; it is being restarted",
                     w->index, pd_worker_role_name(w->role), (int)pid,
                     j->state == SCHED_J_TEXT ? "text" : j->state == SCHED_J_DENOISE ? "denoise" : "decode", reason,
                     how[0] ? "; " : "", how);
    }
    schedule_restart(s, w);
}

void sched_worker_lost(pd_scheduler *s, sched_wslot *w, const char *reason) { drop_worker(s, w, "worker_died", reason); }

pd_status sched_spawn_worker(pd_scheduler *s, sched_wslot *w) {
    char threads[16];
    snprintf(threads, sizeof threads, "%d", s->cfg.threads_per_worker > 0 ? s->cfg.threads_per_worker : 1);
    char *argv[] = {s->worker_exe, "worker", "--socket", w->sock_path, "--role", (char *)pd_worker_role_name(w->role),
                    "--model", s->model_dir, "--threads", threads, "--device", w->device, NULL};
    pid_t pid;
    pd_status st = pd_spawn_worker(s->worker_exe, argv, s->cfg.lock_fd, &pid);
    w->spawned_at = w->last_heard = pd_now_s();
    w->ticks = 0;
    if (st) return st;
    w->pid = pid;
    w->state = SCHED_W_SPAWNED;
    PD_INFO("scheduler", "worker %d (%s) started, pid %d", w->index, pd_worker_role_name(w->role), (int)pid);
    return PD_OK;
}

pd_status sched_open_listener(sched_wslot *w) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, w->sock_path, strlen(w->sock_path) + 1);
    unlink(w->sock_path); /* a stale socket from an earlier run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return pd_error_set(PD_ERR_IO, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0) {
        int e = errno;
        close(fd);
        return pd_error_set(PD_ERR_IO, "listen on %s: %s", w->sock_path, strerror(e));
    }
    w->listen_fd = fd;
    return PD_OK;
}

pd_status sched_send_to(pd_scheduler *s, sched_wslot *w, const pd_msg *m) {
    pd_status st = pd_proto_send(w->fd, m);
    if (st) {
        char why[PD_PROTO_MSG_MAX];
        snprintf(why, sizeof why, "control channel lost: %s", pd_error_msg());
        sched_worker_lost(s, w, why);
    }
    return st;
}

void sched_shutdown_worker(pd_scheduler *s, sched_wslot *w) {
    if (w->fd >= 0) {
        pd_msg *m = s->tx;
        pd_msg_init(m, PD_MSG_SHUTDOWN);
        pd_proto_send(w->fd, m);
    }
    w->state = SCHED_W_EXITING;
    w->exit_deadline = pd_now_s() + SCHED_EXIT_GRACE_S;
}

/* The worker's lifecycle: HELLO while connected, HEARTBEAT, READY after loading, a start-up failure. */
static sched_msg_result worker_on_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m) {
    char why[PD_PROTO_MSG_MAX + PD_PROTO_CODE_MAX + 96];
    if (w->state == SCHED_W_CONNECTED) {
        if (m->kind != PD_MSG_HELLO || m->magic != PD_PROTO_MAGIC || m->version != PD_PROTO_VERSION ||
            m->role != (int32_t)w->role) {
            snprintf(why, sizeof why, "bad hello (kind %d, magic 0x%08x, version %u, role %d; want version %u, role %s)",
                     (int)m->kind, m->magic, m->version, (int)m->role, PD_PROTO_VERSION, pd_worker_role_name(w->role));
            sched_worker_lost(s, w, why);
            return SCHED_MSG_DROPPED;
        }
        pd_msg *r = s->tx;
        pd_msg_init(r, PD_MSG_HELLO);
        r->pid = (int32_t)getpid();
        r->role = w->role;
        r->heartbeat_ms = s->heartbeat_ms;
        if (sched_send_to(s, w, r)) return SCHED_MSG_DROPPED;
        w->state = SCHED_W_LOADING;
        return SCHED_MSG_HANDLED;
    }
    if (m->kind == PD_MSG_HEARTBEAT) {
        if (m->ticks != w->ticks) w->progressed_at = w->last_heard; /* the running stage advanced */
        w->ticks = m->ticks;
        return SCHED_MSG_HANDLED;
    }
    if (w->state != SCHED_W_LOADING) return SCHED_MSG_NOT_MINE;
    if (m->kind == PD_MSG_READY) {
        for (int i = 0; i < PD_STAGE_COUNT; i++)
            if (m->stage_seconds[i] > 0 && isfinite(m->stage_seconds[i])) s->warm[i] = m->stage_seconds[i];
        const pd_gen_params wp = pd_proto_warmup_params();
        const pd_plan_request wr = sched_plan_request(&wp);
        for (int i = 0; i < PD_PLAN_STAGES; i++) /* an SP rank warms up alone: not its group's denoise time */
            if (s->sp == 1 || i != PD_PLAN_DENOISE)
                pd_plan_online_observe(&s->plan, (pd_plan_stage)i, PD_PLAN_OBS_WARMUP, &wr, m->stage_seconds[i]);
        if (s->have_cost) {
            for (int i = 0; i < PD_STAGE_ENCODE; i++)
                pd_estimate_rates_update(&s->cost, &s->warm_rates, &wp, i, m->stage_seconds[i], 1.0);
        }
        w->state = SCHED_W_READY;
        w->was_ready = true;
        w->aco_capable = m->aco_capable != 0;
        w->fails = 0;
        PD_INFO("scheduler", "worker %d (%s, pid %d) ready", w->index, pd_worker_role_name(w->role), (int)w->pid);
        sched_replan(s);
        return SCHED_MSG_HANDLED;
    }
    if (m->kind == PD_MSG_ERROR) {
        snprintf(why, sizeof why, "start-up failed: %s: %s", m->code, m->message);
        sched_worker_lost(s, w, why);
        return SCHED_MSG_DROPPED;
    }
    return SCHED_MSG_NOT_MINE;
}

/* Hands m to the state machine it belongs to; anything none of them expects in the worker's state is
 * a protocol error that drops the worker. Returns false when the worker was dropped. */
static bool handle_msg(pd_scheduler *s, sched_wslot *w, const pd_msg *m) {
    w->last_heard = pd_now_s();
    sched_msg_result r = worker_on_msg(s, w, m);
    if (r == SCHED_MSG_NOT_MINE) r = sched_aco_on_msg(s, w, m);
    if (r == SCHED_MSG_NOT_MINE) r = sched_group_on_msg(s, w, m);
    if (r == SCHED_MSG_NOT_MINE) r = sched_job_on_msg(s, w, m);
    if (r != SCHED_MSG_NOT_MINE) return r == SCHED_MSG_HANDLED;
    char why[96];
    snprintf(why, sizeof why, "protocol error: unexpected message kind %d in state %d", (int)m->kind, (int)w->state);
    sched_worker_lost(s, w, why);
    return false;
}

void sched_read_worker(pd_scheduler *s, sched_wslot *w) {
    pd_status st = pd_proto_reader_fill(w->rd, w->fd);
    for (;;) {
        bool got = false;
        pd_status pst = pd_proto_reader_next(w->rd, s->rx, &got);
        if (pst) {
            char why[PD_PROTO_MSG_MAX];
            snprintf(why, sizeof why, "protocol error: %s", pd_error_msg());
            sched_worker_lost(s, w, why);
            return;
        }
        if (!got) break;
        if (!handle_msg(s, w, s->rx)) return;
        if (w->fd < 0) return;
    }
    if (st) {
        if (w->state == SCHED_W_EXITING) {
            close_conn(w);
            return;
        }
        sched_worker_lost(s, w, "control channel closed");
    }
}

void sched_supervise(pd_scheduler *s) {
    double now = pd_now_s();
    double connect_limit = fmax(s->timeout_s, 10.0);
    for (int i = 0; i < s->n; i++) {
        sched_wslot *w = &s->w[i];
        if (w->state == SCHED_W_OFF) {
            if (!s->stopping && now >= w->restart_at && sched_spawn_worker(s, w)) {
                PD_ERROR("scheduler", "worker %d: %s", i, pd_error_msg());
                w->was_ready = false;
                schedule_restart(s, w);
            }
            continue;
        }
        int status;
        if (w->pid > 0 && waitpid(w->pid, &status, WNOHANG) == w->pid) {
            char how[128];
            describe_exit(status, how, sizeof how);
            w->pid = 0;
            if (w->state == SCHED_W_EXITING) {
                close_conn(w);
                sched_aco_worker_lost(s, w);
                w->state = SCHED_W_OFF;
                w->role = w->want_role;
                w->restart_at = now;
                w->was_ready = false;
                continue;
            }
            sched_worker_lost(s, w, how);
            continue;
        }
        if (w->state == SCHED_W_EXITING) {
            if (now > w->exit_deadline) {
                if (w->pid > 0) {
                    kill(w->pid, SIGKILL);
                    waitpid(w->pid, &status, 0);
                    w->pid = 0;
                }
                close_conn(w);
                w->state = SCHED_W_OFF;
                w->role = w->want_role;
                w->restart_at = now;
            }
            continue;
        }
        if (w->state == SCHED_W_BUSY && w->job && w->job->failed && now > w->job->fail_deadline) {
            sched_worker_lost(s, w, "did not stop after its SP group failed");
        } else if (w->state == SCHED_W_SPAWNED && now - w->spawned_at > connect_limit) {
            char why[96];
            snprintf(why, sizeof why, "did not connect within %.0f s", connect_limit);
            sched_worker_lost(s, w, why);
        } else if (w->state != SCHED_W_SPAWNED && now - w->last_heard > s->timeout_s) {
            char why[96];
            snprintf(why, sizeof why, "silent for %.1f s (timeout %.1f s)", now - w->last_heard, s->timeout_s);
            sched_worker_lost(s, w, why);
        } else if (w->state == SCHED_W_BUSY && now - w->progressed_at > s->stall_s) {
            /* Alive (its heartbeats arrive) but its stage has not advanced: stuck, not slow. */
            char why[160];
            snprintf(why, sizeof why, "made no progress for %.1f s (stall limit %g s) while still answering heartbeats",
                     now - w->progressed_at, s->stall_s);
            drop_worker(s, w, "worker_stuck", why);
        }
    }
}

void sched_accept_worker(pd_scheduler *s, sched_wslot *w) {
    int fd = accept4(w->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    struct ucred cred;
    socklen_t len = sizeof cred;
    /* Only the process we started may connect, once. */
    if (w->state != SCHED_W_SPAWNED || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != w->pid) {
        close(fd);
        return;
    }
    w->fd = fd;
    w->state = SCHED_W_CONNECTED;
    w->last_heard = pd_now_s();
    pd_proto_reader_reset(w->rd);
}
