/* The scheduler: one thread owns every socket and every job state change; the public calls only touch
 * the queue and flags under the mutex and wake that thread. Events are queued under the mutex and
 * delivered by the scheduler thread with the mutex released, so the daemon's callback can take its own
 * locks while other daemon threads call pd_scheduler_submit without a lock-order deadlock.
 * The four jobs live in their own files (scheduler/scheduler_impl.h); this one holds the public calls
 * and the scheduler thread's loop. */
#include "scheduler/scheduler.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "comm/comm.h"
#include "comm/shm.h"
#include "models/presets.h"
#include "models/wan/pipesp_plan.h"
#include "plan/deploy.h"
#include "scheduler/scheduler_impl.h"
#include "scheduler/split.h"

/* Stops every worker: asks politely, then insists. Runs on the scheduler thread as it ends, since the
 * workers it restarted get their parent-death signal when this thread exits (scheduler/spawn.h). */
static void stop_workers(pd_scheduler *s) {
    for (int i = 0; i < s->n; i++)
        if (s->w[i].pid > 0 && s->w[i].state != SCHED_W_EXITING) sched_shutdown_worker(s, &s->w[i]);
    double deadline = pd_now_s() + SCHED_EXIT_GRACE_S;
    for (;;) {
        bool left = false;
        for (int i = 0; i < s->n; i++) {
            sched_wslot *w = &s->w[i];
            if (w->pid > 0 && waitpid(w->pid, NULL, WNOHANG) == w->pid) w->pid = 0;
            left |= w->pid > 0;
        }
        if (!left || pd_now_s() > deadline) break;
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    for (int i = 0; i < s->n; i++)
        if (s->w[i].pid > 0) {
            kill(s->w[i].pid, SIGKILL);
            waitpid(s->w[i].pid, NULL, 0);
        }
}

static void *sched_main(void *arg) {
    pd_scheduler *s = arg;
    int cap = 1 + 2 * s->n;
    struct pollfd *pf = calloc((size_t)cap, sizeof *pf);
    int *who = calloc((size_t)cap, sizeof *who); /* slot index, -1 wake pipe; + listen flag */
    bool *is_listen = calloc((size_t)cap, sizeof *is_listen);
    PD_ASSERT(pf && who && is_listen);
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        sched_supervise(s);
        sched_form_groups(s);
        sched_send_cancels(s);
        sched_dispatch(s);
        sched_aco_form(s);
        sched_deliver_events(s);
        if (s->stopping) break;
        int np = 0;
        pf[np] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        who[np++] = -1;
        for (int i = 0; i < s->n; i++) {
            sched_wslot *w = &s->w[i];
            if (w->state == SCHED_W_SPAWNED) {
                pf[np] = (struct pollfd){.fd = w->listen_fd, .events = POLLIN};
                is_listen[np] = true;
                who[np++] = i;
            }
            if (w->fd >= 0) {
                pf[np] = (struct pollfd){.fd = w->fd, .events = POLLIN};
                is_listen[np] = false;
                who[np++] = i;
            }
        }
        pthread_mutex_unlock(&s->mu);
        int k = poll(pf, (nfds_t)np, SCHED_POLL_MS);
        pthread_mutex_lock(&s->mu);
        if (k <= 0) continue;
        for (int i = 0; i < np; i++) {
            if (!pf[i].revents) continue;
            if (who[i] < 0) {
                char buf[64];
                while (read(s->wake[0], buf, sizeof buf) > 0) {}
                continue;
            }
            sched_wslot *w = &s->w[who[i]];
            if (is_listen[i]) {
                sched_accept_worker(s, w);
            } else if (w->fd == pf[i].fd) {
                sched_read_worker(s, w);
            }
        }
    }
    stop_workers(s);
    pthread_mutex_unlock(&s->mu);
    free(pf);
    free(who);
    free(is_listen);
    return NULL;
}

/* What `pipedit plan` would deploy on these devices (the SP degree and groups are configured, not
 * planned: this is advice for the operator). */
static void plan_advise(const pd_scheduler *s, const pd_plan_online_config *pc) {
    pd_plan_eval *ev = NULL;
    int ne = 0;
    if (s->n > 64 || pd_plan_search(&pc->profile, &pc->model, &pc->typical, s->n,
                                    &(pd_plan_goal){.rate = 0, .requests = 10 * s->n}, &ev, &ne) != PD_OK || ne < 1) {
        free(ev);
        return;
    }
    char d[200];
    pd_plan_describe(&ev[0], d, sizeof d);
    if (ev[0].fits)
        PD_INFO("scheduler", "plan: for %d devices the cost model would deploy %s (a job alone %.3f s; `pipedit plan` "
                "explains); configured: SP degree %d%s", s->n, d, ev[0].alone_s, s->sp, pc->cfg_parallel ? ", CFG parallel" : "");
    else
        PD_WARN("scheduler", "plan: no deployment of %d devices fits the typical request in the profile's memory: %s", s->n,
                ev[0].why_not);
    free(ev);
}

/* The live plan at start: the cost model of the configured profile and the model in model_dir, or,
 * where that model cannot be priced, measured stage times alone. Logged either way. */
static pd_status plan_start(pd_scheduler *s, const pd_scheduler_config *cfg, const char *device) {
    pd_plan_online_config pc = {.workers = s->n, .pinned_decode = cfg->n_decode, .sp_degree = s->sp,
                                .cfg_parallel = cfg->cfg_parallel, .pinned_chunk = cfg->pipesp_chunk,
                                .aco = cfg->aco != PD_ACO_OFF, .aco_half = cfg->aco == PD_ACO_ON};
    if (cfg->profile) PD_TRY(pd_plan_profile_check(cfg->profile));
    const pd_plan_profile *prof = cfg->profile ? cfg->profile : pd_plan_online_default_profile(device);
    char why[300] = "no profile for this device";
    if (prof && pd_plan_model_get(s->model_dir, &pc.model) == PD_OK) {
        pc.profile = *prof;
        pc.typical = cfg->typical;
        if (pc.typical.width <= 0) {
            const pd_model_preset *pre = pd_model_preset_match_dit(&pc.model.dit);
            if (!pre) pre = pd_model_preset_default();
            pc.typical = (pd_plan_request){.width = pre->default_width, .height = pre->default_height,
                                           .frames = pre->default_frames, .steps = pre->default_steps,
                                           .cfg = pre->default_guidance > 1.0f};
        }
        pc.have_model = true;
        if (pd_plan_online_init(&s->plan, &pc) == PD_OK) {
            snprintf(s->plan_profile, sizeof s->plan_profile, "%s", prof->name);
            char line[768];
            pd_plan_online_describe(&s->plan, line, sizeof line);
            PD_INFO("scheduler", "plan (profile %s, model %s, typical request %dx%d, %d frames, %d steps%s): %s", prof->name,
                    pc.model.name, pc.typical.width, pc.typical.height, pc.typical.frames, pc.typical.steps,
                    pc.typical.cfg ? ", CFG" : "", line);
            plan_advise(s, &pc);
            return PD_OK;
        }
        snprintf(why, sizeof why, "%s", pd_error_msg());
        pc.have_model = false;
    } else if (prof) {
        snprintf(why, sizeof why, "%s", pd_error_msg());
    }
    PD_TRY(pd_plan_online_init(&s->plan, &pc));
    PD_WARN("scheduler", "plan: no cost model (%s): the split is planned from measured stage times alone, SP groups "
            "measure their PipeSP chunk and Aco lenders their share", why);
    return PD_OK;
}

static void free_scheduler(pd_scheduler *s) {
    if (!s) return;
    for (int i = 0; s->w && i < s->n; i++) {
        sched_wslot *w = &s->w[i];
        if (w->listen_fd >= 0) {
            close(w->listen_fd);
            unlink(w->sock_path);
        }
        if (w->fd >= 0) close(w->fd);
        free(w->rd);
    }
    while (s->jobs) {
        sched_job *j = s->jobs;
        s->jobs = j->next;
        sched_unlink_job_shm(j);
        free(j->req);
        free(j);
    }
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    pthread_cond_destroy(&s->idle_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->w);
    free(s->g);
    free(s->ev);
    free(s->tx);
    free(s->rx);
    free(s->model_dir);
    free(s->worker_exe);
    free(s->run_dir);
    free(s);
}

/* mkdir -p, private to the daemon's user (sockets accept any local process that can reach them). */
static pd_status make_dirs(const char *path) {
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf) return pd_error_set(PD_ERR_INVALID, "scheduler: run_dir path is too long");
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        bool end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return pd_error_set(PD_ERR_IO, "scheduler: cannot create run_dir %s: %s", buf, strerror(errno));
            if (end) break;
            *p = '/';
        }
    }
    return PD_OK;
}

pd_status pd_scheduler_create(const pd_scheduler_config *cfg, pd_job_event_fn fn, void *ud, pd_scheduler **out) {
    *out = NULL;
    if (!cfg->model_dir || !cfg->model_dir[0]) return pd_error_set(PD_ERR_INVALID, "scheduler: model_dir is required");
    if (!cfg->worker_exe || !cfg->worker_exe[0])
        return pd_error_set(PD_ERR_INVALID, "scheduler: worker_exe (the pipedit binary) is required");
    if (!cfg->run_dir || !cfg->run_dir[0]) return pd_error_set(PD_ERR_INVALID, "scheduler: run_dir is required");
    PD_TRY(pd_scheduler_config_check(cfg));
    const int sp = cfg->sp_degree > 1 ? cfg->sp_degree : 1;
    const char *device = cfg->device && cfg->device[0] ? cfg->device : "cpu";
    if (access(cfg->worker_exe, X_OK) != 0)
        return pd_error_set(PD_ERR_IO, "scheduler: worker program %s is not executable: %s", cfg->worker_exe, strerror(errno));
    PD_TRY(make_dirs(cfg->run_dir));

    pd_scheduler *s = calloc(1, sizeof *s);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    static atomic_uint instances;
    s->instance = atomic_fetch_add(&instances, 1);
    const int swept = pd_shm_sweep_stale((int)getpid(), s->instance);
    if (swept > 0) PD_INFO("scheduler", "removed %d job segment(s) of killed processes from /dev/shm", swept);
    s->cfg = *cfg;
    s->cfg.cost_model = NULL; /* the copy below */
    if (cfg->cost_model) s->cost = *cfg->cost_model, s->have_cost = true;
    s->fn = fn;
    s->ud = ud;
    s->n = cfg->n_devices;
    s->timeout_s = cfg->worker_timeout_s > 0 ? cfg->worker_timeout_s : 30.0;
    s->stall_s = cfg->stall_timeout_s > 0 ? cfg->stall_timeout_s : 600.0;
    /* Heartbeats carry the progress counter too: several per stall limit. */
    s->heartbeat_ms = (int)fmin(fmax(fmin(s->timeout_s, s->stall_s) * 1000.0 / 4.0, 50.0), 5000.0);
    s->model_dir = strdup(cfg->model_dir);
    s->worker_exe = strdup(cfg->worker_exe);
    s->run_dir = strdup(cfg->run_dir);
    s->w = calloc((size_t)s->n, sizeof *s->w);
    s->tx = malloc(sizeof *s->tx);
    s->rx = malloc(sizeof *s->rx);
    pd_status st = PD_OK;
    if (!s->model_dir || !s->worker_exe || !s->run_dir || !s->w || !s->tx || !s->rx) {
        st = pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
        goto fail;
    }
    s->cfg.model_dir = s->model_dir;
    s->cfg.worker_exe = s->worker_exe;
    s->cfg.run_dir = s->run_dir;
    for (int i = 0; i < s->n; i++) s->w[i].listen_fd = s->w[i].fd = -1;
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        st = pd_error_set(PD_ERR_IO, "scheduler: pipe: %s", strerror(errno));
        goto fail;
    }
    s->sp = sp;
    if ((st = plan_start(s, cfg, device))) goto fail;
    int n_dec = s->plan.plan.decode_workers;
    s->gpu = !strcmp(device, "cuda");
    s->comm_timeout_s = cfg->comm_timeout_s > 0 ? cfg->comm_timeout_s : 60.0;
    if (sp > 1) {
        /* Whole groups in the slots the decode group leaves; any remainder decodes too. */
        s->n_groups = (s->n - n_dec) / sp;
        n_dec = s->n - s->n_groups * sp;
        s->g = calloc((size_t)s->n_groups, sizeof *s->g);
        if (!s->g) {
            st = pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
            goto fail;
        }
        for (int gi = 0; gi < s->n_groups; gi++) s->g[gi] = (sched_group){.first = gi * sp, .size = sp, .gen = 1};
    }
    for (int i = 0; i < s->n; i++) {
        sched_wslot *w = &s->w[i];
        w->index = i;
        w->aco_partner = -1;
        w->group = i < s->n_groups * sp ? i / sp : -1;
        w->rank = i % sp;
        if (s->gpu) snprintf(w->device, sizeof w->device, "cuda:%d", i);
        else snprintf(w->device, sizeof w->device, "cpu");
        /* The last n_dec slots decode; with one device the single worker does everything. */
        w->role = w->want_role = s->n == 1 ? PD_ROLE_ALL : i >= s->n - n_dec ? PD_ROLE_DECODE : PD_ROLE_DENOISE;
        w->rd = malloc(sizeof *w->rd);
        if (!w->rd) {
            st = pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
            goto fail;
        }
        pd_proto_reader_reset(w->rd);
        int len = snprintf(w->sock_path, sizeof w->sock_path, "%s/worker-%d.sock", s->run_dir, i);
        if (len < 0 || (size_t)len >= sizeof w->sock_path) {
            st = pd_error_set(PD_ERR_INVALID, "scheduler: run_dir %s is too long for a Unix socket path (max %zu bytes)",
                              s->run_dir, sizeof w->sock_path - 20);
            goto fail;
        }
        if ((st = sched_open_listener(w))) goto fail;
        if ((st = sched_spawn_worker(s, w))) goto fail;
    }
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        st = pd_error_set(PD_ERR_NOMEM, "scheduler: cannot start its thread");
        goto fail;
    }
    *out = s;
    return PD_OK;
fail:
    for (int i = 0; s->w && i < s->n; i++)
        if (s->w[i].pid > 0) {
            kill(s->w[i].pid, SIGKILL);
            waitpid(s->w[i].pid, NULL, 0);
        }
    free_scheduler(s);
    return st;
}

pd_status pd_scheduler_submit(pd_scheduler *s, const char *job_id, const pd_gen_params *p, const char *mp4_path,
                              const char *thumb_path) {
    if (!job_id || !job_id[0]) return pd_error_set(PD_ERR_INVALID, "job id is empty");
    if (!p || !p->prompt) return pd_error_set(PD_ERR_INVALID, "job %s: prompt is required", job_id);
    if (!mp4_path || !mp4_path[0]) return pd_error_set(PD_ERR_INVALID, "job %s: the MP4 path is required", job_id);
    if (p->width < 1 || p->height < 1 || p->frames < 1 || p->steps < 1 || p->fps < 1)
        return pd_error_set(PD_ERR_INVALID, "job %s: width, height, frames, steps and fps must be positive", job_id);
    sched_job *j = calloc(1, sizeof *j);
    pd_msg *m = j ? malloc(sizeof *m) : NULL;
    if (!m) {
        free(j);
        return pd_error_set(PD_ERR_NOMEM, "scheduler: out of memory");
    }
    pd_msg_init(m, PD_MSG_ASSIGN);
    pd_status st = pd_msg_set_str(j->id, sizeof j->id, job_id, "job id");
    if (!st) st = pd_msg_set_str(m->job_id, sizeof m->job_id, job_id, "job id");
    if (!st) st = pd_msg_set_params(m, p);
    if (!st) st = pd_msg_set_str(m->mp4_path, sizeof m->mp4_path, mp4_path, "MP4 path");
    if (!st) st = pd_msg_set_str(m->thumb_path, sizeof m->thumb_path, thumb_path, "thumbnail path");
    if (st) {
        free(m);
        free(j);
        return pd_error_prefix(st, "job %s", job_id);
    }
    j->req = m;
    j->worker = -1;
    j->group = -1;
    pthread_mutex_lock(&s->mu);
    if (s->draining) st = pd_error_set(PD_ERR_CANCELLED, "the server is draining and accepts no new jobs");
    else if (sched_find_job(s, job_id)) st = pd_error_set(PD_ERR_INVALID, "job %s is already live", job_id);
    else if (sched_count_jobs(s, SCHED_J_QUEUED) >= s->cfg.queue_capacity)
        st = pd_error_set(PD_ERR_BUSY, "the queue is full (%d jobs waiting); retry later", s->cfg.queue_capacity);
    if (!st) {
        j->seq = s->next_seq++;
        pd_shm_job_name(m->shm_cond, (int)getpid(), s->instance, j->seq, "cond");
        pd_shm_job_name(m->shm_uncond, (int)getpid(), s->instance, j->seq, "uncond");
        pd_shm_job_name(m->shm_latent, (int)getpid(), s->instance, j->seq, "latent");
        sched_job **pp = &s->jobs;
        while (*pp) pp = &(*pp)->next;
        *pp = j;
        sched_wake(s);
    }
    pthread_mutex_unlock(&s->mu);
    if (st) {
        free(m);
        free(j);
    }
    return st;
}

pd_status pd_scheduler_cancel(pd_scheduler *s, const char *job_id) {
    pthread_mutex_lock(&s->mu);
    sched_job *j = job_id ? sched_find_job(s, job_id) : NULL;
    pd_status st = PD_OK;
    if (!j) st = pd_error_set(PD_ERR_NOT_FOUND, "job %s is not queued or running", job_id ? job_id : "(null)");
    else if (j->state == SCHED_J_QUEUED || j->state == SCHED_J_WAIT_DECODE)
        sched_fail_job(s, j, "cancelled", "cancelled by request"); /* delivered by the scheduler thread */
    else
        j->cancel_req = true;
    if (!st) sched_wake(s);
    pthread_mutex_unlock(&s->mu);
    return st;
}

int pd_scheduler_queue_position(pd_scheduler *s, const char *job_id) {
    pthread_mutex_lock(&s->mu);
    int pos = -1, k = 0;
    for (sched_job *j = s->jobs; j && job_id; j = j->next) {
        if (j->state != SCHED_J_QUEUED) continue;
        if (!strcmp(j->id, job_id)) {
            pos = k;
            break;
        }
        k++;
    }
    pthread_mutex_unlock(&s->mu);
    return pos;
}

/* The rates in force: measured on real jobs where known, else from the warm-ups. */
static pd_estimate_rates cost_rates(const pd_scheduler *s) {
    const pd_estimate_rates *l = &s->live_rates, *w = &s->warm_rates;
    return (pd_estimate_rates){.text_s = l->text_s > 0 ? l->text_s : w->text_s,
                               .dit_s_per_flop = l->dit_s_per_flop > 0 ? l->dit_s_per_flop : w->dit_s_per_flop,
                               .vae_s_per_pixel = l->vae_s_per_pixel > 0 ? l->vae_s_per_pixel : w->vae_s_per_pixel};
}

pd_status pd_scheduler_admit(pd_scheduler *s, const pd_gen_params *p, pd_estimate *est) {
    pd_estimate e = {0};
    pthread_mutex_lock(&s->mu);
    const pd_estimate_rates r = cost_rates(s);
    pthread_mutex_unlock(&s->mu);
    pd_status st = PD_OK;
    if (s->have_cost) {
        pd_estimate_job(&s->cost, &r, p, &e);
        st = pd_estimate_admit(&e, s->cfg.max_job_seconds, s->cfg.job_memory_bytes);
    }
    if (est) *est = e;
    return st;
}

double pd_scheduler_estimated_completion(pd_scheduler *s, const char *job_id) {
    if (!s->have_cost || !job_id) return 0;
    pthread_mutex_lock(&s->mu);
    const pd_estimate_rates r = cost_rates(s);
    int n = 0, me = -1, servers = s->sp > 1 ? s->n_groups : 0;
    for (int i = 0; s->sp <= 1 && i < s->n; i++) servers += sched_role_denoises(s->w[i].role);
    for (sched_job *j = s->jobs; j; j = j->next) n++;
    double *v = r.dit_s_per_flop > 0 && n ? malloc(3 * (size_t)n * sizeof *v) : NULL;
    const double now = sched_now_real();
    int i = 0;
    for (sched_job *j = s->jobs; v && j; j = j->next, i++) {
        pd_estimate e;
        const pd_gen_params p = pd_msg_params(j->req);
        pd_estimate_job(&s->cost, &r, &p, &e);
        const double head = e.stage_seconds[PD_STAGE_TEXT] + e.stage_seconds[PD_STAGE_DENOISE];
        const double ran = j->started_at > 0 ? now - j->started_at : 0;
        /* running jobs count with what remains: past their denoise, only the decode is left */
        const bool decoding = j->state == SCHED_J_WAIT_DECODE || j->state == SCHED_J_DECODE;
        v[i] = decoding ? 0 : fmax(head - ran, 0);
        v[n + i] = decoding ? fmax(e.seconds - ran, 0) : e.stage_seconds[PD_STAGE_DECODE];
        if (!strcmp(j->id, job_id)) me = i;
    }
    if (v) pd_estimate_queue(v, v + n, n, servers, v + 2 * n);
    const double at = v && me >= 0 ? now + v[2 * n + me] : 0;
    pthread_mutex_unlock(&s->mu);
    free(v);
    return at;
}

/* VmRSS of a process in bytes, 0 when it cannot be read (the process just exited). */
static size_t process_rss_bytes(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024;
}

void pd_scheduler_stats_get(pd_scheduler *s, pd_scheduler_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    out->queued = sched_count_jobs(s, SCHED_J_QUEUED);
    for (sched_job *j = s->jobs; j; j = j->next) out->running += j->state != SCHED_J_QUEUED;
    bool den_up = false, dec_up = false;
    out->workers_total = s->n;
    for (int i = 0; i < s->n; i++) {
        sched_wslot *w = &s->w[i];
        out->n_denoise += sched_role_denoises(w->role);
        out->n_decode += sched_role_decodes(w->role);
        if (sched_slot_up(w)) {
            out->workers_up++;
            den_up |= sched_role_denoises(w->role);
            dec_up |= sched_role_decodes(w->role);
        }
    }
    out->sp_groups = s->n_groups;
    for (int gi = 0; gi < s->n_groups; gi++) out->sp_groups_formed += sched_group_formed(s, &s->g[gi]);
    if (s->n_groups) den_up = out->sp_groups_formed > 0;
    out->ready = den_up && dec_up;
    for (int i = 0; i < PD_STAGE_COUNT; i++) out->stage_seconds_mean[i] = sched_stage_estimate(s, i);
    out->aco = s->aco;
    out->aco.speedup = sched_aco_speedup(s);
    out->plan.plan = s->plan.plan;
    for (int i = 0; i < PD_PLAN_STAGES; i++)
        out->plan.measured_s[i] = pd_plan_online_measured_seconds(&s->plan, (pd_plan_stage)i);
    out->plan.have_model = s->plan.cfg.have_model;
    snprintf(out->plan.profile, sizeof out->plan.profile, "%s", s->plan_profile);
    pthread_mutex_unlock(&s->mu);
}

double pd_scheduler_worker_memory_bytes(pd_scheduler *s) {
    pid_t pids[256]; /* n_devices is at most 256 (pd_scheduler_create) */
    int n_pids = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n && n_pids < 256; i++)
        if (s->w[i].pid > 0) pids[n_pids++] = s->w[i].pid;
    pthread_mutex_unlock(&s->mu);
    double bytes = 0;
    for (int i = 0; i < n_pids; i++) bytes += (double)process_rss_bytes(pids[i]);
    return bytes;
}

pd_status pd_scheduler_drain(pd_scheduler *s, double timeout_s) {
    double deadline = sched_now_real() + (timeout_s > 0 ? timeout_s : 0);
    struct timespec ts = {.tv_sec = (time_t)deadline, .tv_nsec = (long)((deadline - floor(deadline)) * 1e9)};
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    while ((s->jobs || s->n_ev || s->emitting) && !s->stopping)
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts) == ETIMEDOUT) break;
    int live = 0;
    for (sched_job *j = s->jobs; j; j = j->next) live++;
    pthread_mutex_unlock(&s->mu);
    if (live) return pd_error_set(PD_ERR_TIMEOUT, "%d jobs still queued or running after %.1f s", live, timeout_s);
    return PD_OK;
}

void pd_scheduler_destroy(pd_scheduler *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    sched_wake(s);
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    free_scheduler(s);
}
