#include "daemon/daemon.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/file_io.h"
#include "daemon/conn_guard.h"
#include "daemon/http.h"
#ifdef PD_HAVE_PG
#include "daemon/replica.h"
#endif
#ifdef PD_HAVE_GRPC
#include "daemon/grpc_server.h"
#endif
#include "daemon/sse.h"
#include "models/model_dir.h"
#include "models/presets.h"
#include "models/wan/dit.h"
#include "models/wan/vae.h"

static const pd_daemon_ops local_ops;

double pd_daemon_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- model resolution ---- */

/* The preset whose DiT matches the folder's transformer/config.json (dim and layers); request
 * defaults come from it. NULL when no preset matches. */
static const pd_model_preset *preset_of_dir(const char *dir) {
    char path[PATH_MAX];
    pd_wan_dit_config c;
    if (snprintf(path, sizeof path, "%s/transformer/config.json", dir) >= (int)sizeof path) return NULL;
    if (pd_wan_dit_config_load(path, &c) != PD_OK) return NULL;
    return pd_model_preset_match_dit(&c);
}

static pd_status resolve_model(pd_daemon *d) {
    const pd_config *c = &d->cfg;
    if (!c->model_dir[0]) {
        PD_TRY(pd_model_dir_default(d->model_dir, sizeof d->model_dir));
        d->preset = pd_model_preset_default();
        if (snprintf(d->model_name, sizeof d->model_name, "%s", c->model_name[0] ? c->model_name : d->preset->name) >=
            (int)sizeof d->model_name)
            return pd_error_set(PD_ERR_INVALID, "model_name is longer than %zu bytes", sizeof d->model_name - 1);
        return PD_OK;
    }
    if (!realpath(c->model_dir, d->model_dir)) return pd_error_set(PD_ERR_IO, "model_dir %s: %s", c->model_dir, strerror(errno));
    d->preset = preset_of_dir(d->model_dir);
    if (!d->preset) {
        PD_WARN("daemon", "%s matches no known preset; request defaults are the tiny preset's", d->model_dir);
        d->preset = pd_model_preset_default();
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", d->model_dir);
    if (snprintf(d->model_name, sizeof d->model_name, "%s", c->model_name[0] ? c->model_name : basename(tmp)) >= (int)sizeof d->model_name)
        return pd_error_set(PD_ERR_INVALID, "model name '%s' is longer than %zu bytes (set model_name)", basename(tmp), sizeof d->model_name - 1);
    return PD_OK;
}

/* The profile setting: a built-in name or a profile file, read now so a bad one stops the start. */
static pd_status resolve_profile(pd_daemon *d) {
    const char *p = d->cfg.profile;
    if (!p[0]) return PD_OK;
    const pd_plan_profile *b = pd_plan_profile_builtin(p);
    if (b) d->profile = *b;
    else if (pd_plan_profile_load(p, &d->profile) != PD_OK)
        return pd_error_prefix(PD_ERR_INVALID, "profile: neither a built-in profile (h100, h200, l4) nor a readable profile file");
    d->have_profile = true;
    return PD_OK;
}

static void fill_limits(pd_daemon *d) {
    const pd_config *c = &d->cfg;
    const pd_model_preset *p = d->preset;
    pd_api_limits *l = &d->limits;
    l->model_name = d->model_name;
    l->max_prompt_bytes = c->max_prompt_bytes;
    l->max_width = c->max_width;
    l->max_height = c->max_height;
    l->max_frames = c->max_frames;
    l->max_steps = c->max_steps;
    l->max_seconds = c->max_seconds;
    l->default_width = p->default_width;
    l->default_height = p->default_height;
    l->default_frames = p->default_frames;
    l->default_steps = p->default_steps;
    l->default_fps = p->fps;
    l->default_guidance = p->default_guidance;
    l->default_shift = p->default_shift;
}

static void job_finish(pd_job *j, pd_job_status s, double t, double ttl) {
    j->status = s;
    j->stage = -1;
    j->completed_at = t;
    j->expires_at = t + ttl;
    if (s == PD_JOB_COMPLETED) j->progress = 100;
}

#define LOCK_WAIT_S 10.0

/* Takes the data folder's lock (see pd_daemon_open). */
static pd_status lock_data_dir(pd_daemon *d) {
    const char *dir = d->cfg.data_dir;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/pipeditd.lock", dir) >= (int)sizeof path) return pd_error_set(PD_ERR_INVALID, "data_dir is too long: %s", dir);
    PD_TRY(pd_model_dir_mkdirs(dir));
    double deadline = pd_daemon_now() + LOCK_WAIT_S;
    for (bool told = false;; told = true) {
        long holder;
        pd_status st = pd_file_lock(path, &d->lock_fd, &holder);
        if (st != PD_ERR_BUSY) return st;
        if (holder > 0 && (kill((pid_t)holder, 0) == 0 || errno == EPERM))
            return pd_error_set(PD_ERR_BUSY, "data folder %s is in use by another pipeditd (pid %ld holds %s); each daemon needs its own data_dir",
                                dir, holder, path);
        /* The daemon that took it is gone: its workers hold it until their parent-death signal lands. */
        if (pd_daemon_now() >= deadline && holder > 0)
            return pd_error_set(PD_ERR_BUSY, "data folder %s is still locked (%s) by processes left by pipeditd pid %ld, which has exited; "
                                "they did not exit within %.0f s",
                                dir, path, holder, LOCK_WAIT_S);
        if (pd_daemon_now() >= deadline)
            return pd_error_set(PD_ERR_BUSY, "data folder %s is locked (%s) by a process that did not release it within %.0f s", dir, path,
                                LOCK_WAIT_S);
        if (!told) PD_WARN("daemon", "waiting for the workers of the previous pipeditd (pid %ld) to release %s", holder, path);
        struct timespec nap = {0, 100 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

pd_status pd_daemon_open(pd_daemon *d, const pd_config *cfg) {
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    d->started_at = pd_daemon_now();
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->changed, NULL);
    pd_jobs_init(&d->jobs);
    pd_metrics_init(&d->metrics);
    atomic_init(&d->draining, false);

    PD_TRY(resolve_model(d));
    PD_TRY(resolve_profile(d));
    fill_limits(d);
    PD_TRY(lock_data_dir(d));
    PD_TRY(pd_store_init(&d->store, cfg->data_dir, cfg->outputs_dir));
    if (cfg->run_dir[0]) snprintf(d->run_dir, sizeof d->run_dir, "%s", cfg->run_dir);
    else snprintf(d->run_dir, sizeof d->run_dir, "%s/run", cfg->data_dir);
    if (cfg->worker_exe[0]) {
        snprintf(d->worker_exe, sizeof d->worker_exe, "%s", cfg->worker_exe);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0) return pd_error_set(PD_ERR_IO, "readlink /proc/self/exe: %s (set worker_exe)", strerror(errno));
        self[n] = 0;
        snprintf(d->worker_exe, sizeof d->worker_exe, "%s/pipedit", dirname(self));
    }

    PD_INFO("daemon", "model %s (%s), serving it as '%s'", d->model_dir, d->preset->name, d->model_name);
    if (cfg->store[0]) {
#ifdef PD_HAVE_PG
        d->ops = &pd_replica_ops;
        return pd_replica_open(d);
#else
        return pd_error_set(PD_ERR_INVALID, "store: this pipeditd was built without libpq");
#endif
    }
    d->ops = &local_ops;

    /* Rebuild the table from the journal, settle what the last run left, and rewrite it compactly. */
    snprintf(d->journal_path, sizeof d->journal_path, "%s/journal.jsonl", cfg->data_dir);
    size_t n_rec, n_bad;
    PD_TRY(pd_journal_replay(d->journal_path, &d->jobs, &n_rec, &n_bad));
    double now = pd_daemon_now();
    int expired = 0, requeued = 0, lost = 0;
    for (size_t i = 0; i < d->jobs.n;) {
        pd_job *j = d->jobs.v[i];
        if (j->expires_at > 0 && j->expires_at <= now) {
            pd_store_remove(&d->store, j->id);
            pd_jobs_remove(&d->jobs, j->id);
            expired++;
            continue;
        }
        if (j->status == PD_JOB_COMPLETED && !pd_store_has_video(&d->store, j->id)) {
            job_finish(j, PD_JOB_FAILED, now, cfg->output_ttl_s);
            snprintf(j->error_code, sizeof j->error_code, "output_missing");
            snprintf(j->error_message, sizeof j->error_message, "the video file was missing when the daemon restarted");
            lost++;
        } else if (j->status == PD_JOB_QUEUED || j->status == PD_JOB_IN_PROGRESS) {
            j->status = PD_JOB_QUEUED;
            j->progress = 0;
            j->started_at = 0;
            requeued++;
        }
        i++;
    }
    PD_TRY(pd_journal_compact(d->journal_path, &d->jobs));
    PD_TRY(pd_journal_open(d->journal_path, &d->journal));
    PD_INFO("daemon", "journal %s: %zu records (%zu skipped), %zu jobs kept, %d expired, %d to run again, %d lost outputs",
            d->journal_path, n_rec, n_bad, d->jobs.n, expired, requeued, lost);
    return PD_OK;
}

/* ---- scheduler events ---- */

void pd_daemon_apply_event(pd_daemon *d, pd_job *j, const pd_job_event *ev) {
    double ttl = d->cfg.output_ttl_s;
    switch (ev->kind) {
    case PD_JOB_EVENT_STARTED:
        j->status = PD_JOB_IN_PROGRESS;
        j->started_at = ev->t;
        break;
    case PD_JOB_EVENT_STAGE:
        j->status = PD_JOB_IN_PROGRESS;
        if ((int)ev->stage != j->stage) {
            if (j->stage >= 0) pd_metrics_stage(&d->metrics, (pd_stage)j->stage, ev->t - j->stage_started_at);
            j->stage = (int)ev->stage;
            j->stage_started_at = ev->t;
            j->step = j->total = 0;
        }
        if (ev->progress > j->progress) j->progress = ev->progress > 99 ? 99 : ev->progress;
        break;
    case PD_JOB_EVENT_PROGRESS:
        j->status = PD_JOB_IN_PROGRESS;
        if (ev->stage == PD_STAGE_DENOISE && j->stage == PD_STAGE_DENOISE && ev->step > j->step)
            pd_metrics_steps(&d->metrics, ev->step - j->step);
        /* Workers report sub-stages (encode inside decode) through progress: a later stage closes
         * the current one; a report from an earlier stage changes nothing but the numbers. */
        if ((int)ev->stage > j->stage) {
            if (j->stage >= 0) pd_metrics_stage(&d->metrics, (pd_stage)j->stage, ev->t - j->stage_started_at);
            j->stage = (int)ev->stage;
            j->stage_started_at = ev->t;
        }
        j->step = ev->step;
        j->total = ev->total;
        /* 100 means completed, which only the COMPLETED event says. */
        if (ev->progress > j->progress) j->progress = ev->progress > 99 ? 99 : ev->progress;
        break;
    case PD_JOB_EVENT_COMPLETED:
        if (j->stage >= 0) pd_metrics_stage(&d->metrics, (pd_stage)j->stage, ev->t - j->stage_started_at);
        job_finish(j, PD_JOB_COMPLETED, ev->t, ttl);
        if (!d->replica) pd_metrics_job_finished(&d->metrics, PD_JOB_COMPLETED, false); /* shared store: where the store accepts it */
        break;
    case PD_JOB_EVENT_FAILED:
        job_finish(j, PD_JOB_FAILED, ev->t, ttl);
        snprintf(j->error_code, sizeof j->error_code, "%s", ev->error_code ? ev->error_code : "failed");
        snprintf(j->error_message, sizeof j->error_message, "%s", ev->error_message ? ev->error_message : "generation failed");
        if (!d->replica) pd_metrics_job_finished(&d->metrics, PD_JOB_FAILED, !strcmp(j->error_code, "cancelled"));
        break;
    }
}

static void on_job_event(void *ud, const pd_job_event *ev) {
    pd_daemon *d = ud;
    json_t *rec = NULL;
    bool sync = false, orphan = false;
    PD_DEBUG("daemon", "event %d for %s: stage %d step %d/%d progress %d", (int)ev->kind, ev->job_id, (int)ev->stage, ev->step, ev->total,
             ev->progress);
    pthread_mutex_lock(&d->lock);
    pd_job *j = pd_jobs_find(&d->jobs, ev->job_id);
    if (!j) {
        /* Deleted while running: whatever it still wrote goes too. */
        orphan = ev->kind == PD_JOB_EVENT_COMPLETED && pd_job_id_valid(ev->job_id);
        pthread_mutex_unlock(&d->lock);
        if (orphan) pd_store_remove(&d->store, ev->job_id);
        return;
    }
    if (j->status == PD_JOB_COMPLETED || j->status == PD_JOB_FAILED) {
        /* Cancelled, but the worker finished before it saw the cancel: the job stays cancelled. */
        bool stray = ev->kind == PD_JOB_EVENT_COMPLETED && j->status == PD_JOB_FAILED;
        pthread_mutex_unlock(&d->lock);
        if (stray) pd_store_remove(&d->store, ev->job_id);
        return;
    }
    pd_daemon_apply_event(d, j, ev);
    double t = ev->t;
    if (ev->kind == PD_JOB_EVENT_STARTED) rec = pd_journal_rec_start(j->id, t);
    if (ev->kind == PD_JOB_EVENT_COMPLETED) rec = pd_journal_rec_complete(j->id, t, j->expires_at);
    if (ev->kind == PD_JOB_EVENT_FAILED) rec = pd_journal_rec_fail(j->id, t, j->expires_at, j->error_code, j->error_message);
    sync = ev->kind == PD_JOB_EVENT_COMPLETED || ev->kind == PD_JOB_EVENT_FAILED;
    j->version++;
    pd_daemon_wake_streams_locked(d);
    pthread_mutex_unlock(&d->lock);
    if (rec) {
        pd_status st = pd_journal_append(d->journal, rec, sync);
        if (st) PD_ERROR("daemon", "%s", pd_error_msg());
    }
    if (ev->kind == PD_JOB_EVENT_FAILED) PD_INFO("daemon", "%s failed: %s: %s", ev->job_id, ev->error_code ? ev->error_code : "", ev->error_message ? ev->error_message : "");
    if (ev->kind == PD_JOB_EVENT_COMPLETED) PD_INFO("daemon", "%s completed", ev->job_id);
}

static void paths_of(pd_daemon *d, const char *id, char *mp4, char *png) {
    pd_store_path(&d->store, id, PD_STORE_VIDEO, mp4);
    pd_store_path(&d->store, id, PD_STORE_THUMBNAIL, png);
}

/* Journals (fdatasync) and then applies a job's failure, so that what the table says is on disk;
 * on a journal error the job is left as it was. d->lock must be held: no event of the job can slip in
 * between, and its later events are ignored (it has finished). */
static pd_status fail_job_locked(pd_daemon *d, pd_job *j, const char *code, const char *msg) {
    double now = pd_daemon_now();
    pd_status st = pd_journal_append(d->journal, pd_journal_rec_fail(j->id, now, now + d->cfg.output_ttl_s, code, msg), true);
    if (st) {
        PD_ERROR("daemon", "%s", pd_error_msg());
        return st;
    }
    job_finish(j, PD_JOB_FAILED, now, d->cfg.output_ttl_s);
    snprintf(j->error_code, sizeof j->error_code, "%s", code);
    snprintf(j->error_message, sizeof j->error_message, "%s", msg);
    pd_metrics_job_finished(&d->metrics, PD_JOB_FAILED, !strcmp(code, "cancelled"));
    j->version++;
    pd_daemon_wake_streams_locked(d);
    return PD_OK;
}

/* Marks a job failed (and journals it) when it cannot be handed to the scheduler. */
static void fail_job(pd_daemon *d, const char *id, const char *code, const char *msg) {
    pthread_mutex_lock(&d->lock);
    pd_job *j = pd_jobs_find(&d->jobs, id);
    if (j) fail_job_locked(d, j, code, msg);
    pthread_mutex_unlock(&d->lock);
}

/* Hands backlog jobs to the scheduler in order while its queue has room. Returns how many remain. */
static size_t submit_backlog(pd_daemon *d) {
    for (;;) {
        char id[PD_JOB_ID_LEN + 1];
        pd_job_request req;
        pthread_mutex_lock(&d->lock);
        if (d->n_backlog == 0) {
            pthread_mutex_unlock(&d->lock);
            return 0;
        }
        snprintf(id, sizeof id, "%s", d->backlog[0]);
        pd_job *j = pd_jobs_find(&d->jobs, id);
        bool live = j && j->status == PD_JOB_QUEUED;
        pd_status cst = live ? pd_job_request_copy(&req, &j->req) : PD_OK;
        pthread_mutex_unlock(&d->lock);
        pd_status st = PD_OK;
        if (live && cst == PD_OK) {
            char mp4[PATH_MAX], png[PATH_MAX];
            paths_of(d, id, mp4, png);
            st = pd_scheduler_submit(d->sched, id, &req.p, mp4, png);
            pd_job_request_free(&req);
            if (st == PD_ERR_BUSY) {
                pthread_mutex_lock(&d->lock);
                size_t left = d->n_backlog;
                pthread_mutex_unlock(&d->lock);
                return left;
            }
            if (st) {
                PD_WARN("daemon", "%s could not be re-submitted: %s", id, pd_error_msg());
                fail_job(d, id, "requeue_failed", "the job could not be queued again after a restart");
            } else {
                PD_INFO("daemon", "%s re-submitted after restart", id);
            }
        } else if (live) {
            return 1; /* out of memory: try again at the next tick */
        }
        pthread_mutex_lock(&d->lock);
        if (d->n_backlog && !strcmp(d->backlog[0], id)) {
            memmove(d->backlog, d->backlog + 1, (d->n_backlog - 1) * sizeof *d->backlog);
            d->n_backlog--;
        }
        pthread_mutex_unlock(&d->lock);
    }
}

/* Takes id off the backlog; true when it was there. d->lock must be held. */
static bool backlog_remove_locked(pd_daemon *d, const char *id) {
    for (size_t i = 0; i < d->n_backlog; i++)
        if (!strcmp(d->backlog[i], id)) {
            memmove(d->backlog + i, d->backlog + i + 1, (d->n_backlog - i - 1) * sizeof *d->backlog);
            d->n_backlog--;
            return true;
        }
    return false;
}

/* The model's cost description for admission: the folder's transformer and VAE configs (the preset's
 * where a folder lacks them). */
static void cost_model_of(const pd_daemon *d, pd_estimate_model *m) {
    char path[sizeof d->model_dir + 32]; /* the folder and the longest name below */
    pd_wan_vae_config vae;
    m->dit = d->preset->dit;
    m->vae_base_dim = d->preset->vae.base_dim;
    m->attn_weight = strcmp(d->cfg.device, "cpu") ? PD_ESTIMATE_ATTN_WEIGHT_CUDA : PD_ESTIMATE_ATTN_WEIGHT_CPU;
    snprintf(path, sizeof path, "%s/transformer/config.json", d->model_dir);
    if (pd_wan_dit_config_load(path, &m->dit) != PD_OK) {
        PD_WARN("daemon", "cost estimates use the %s preset's transformer: %s", d->preset->name, pd_error_msg());
        m->dit = d->preset->dit;
    }
    snprintf(path, sizeof path, "%s/vae/config.json", d->model_dir);
    if (pd_wan_vae_config_load(path, &vae) == PD_OK) m->vae_base_dim = vae.base_dim;
    else PD_WARN("daemon", "cost estimates use the %s preset's VAE: %s", d->preset->name, pd_error_msg());
}

/* job_memory_bytes, or 0 (unchecked) on cuda, or the machine's RAM shared by the workers on the CPU. */
static double job_memory_limit(const pd_config *c) {
    if (c->job_memory_bytes > 0 || strcmp(c->device, "cpu")) return c->job_memory_bytes;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page / (double)c->workers : 0;
}

pd_status pd_daemon_start_scheduler(pd_daemon *d) {
    pd_estimate_model cost;
    cost_model_of(d, &cost);
    pd_scheduler_config sc;
    pd_config_scheduler(&d->cfg, &sc);
    sc.model_dir = d->model_dir;
    sc.worker_exe = d->worker_exe;
    sc.run_dir = d->run_dir;
    sc.lock_fd = d->lock_fd;
    if (!sc.threads_per_worker) sc.threads_per_worker = pd_backend_cpu_share(d->cfg.workers);
    sc.cost_model = &cost;
    sc.profile = d->have_profile ? &d->profile : NULL;
    sc.typical = (pd_plan_request){.width = d->preset->default_width, .height = d->preset->default_height,
                                   .frames = d->preset->default_frames, .steps = d->preset->default_steps,
                                   .cfg = d->preset->default_guidance > 1.0f};
    sc.job_memory_bytes = job_memory_limit(&d->cfg);
    pd_status st = pd_scheduler_create(&sc, d->ops->on_job_event, d, &d->sched);
    if (st) return pd_error_prefix(st, "cannot start workers");
    return d->ops->start(d);
}

static pd_status local_start(pd_daemon *d) {
    /* Jobs the last run left queued or running go first, in creation order; those the queue has no
     * room for wait in the backlog, and new requests get 429 until it is empty. */
    pthread_mutex_lock(&d->lock);
    d->backlog = calloc(d->jobs.n + 1, sizeof *d->backlog);
    for (size_t i = 0; d->backlog && i < d->jobs.n; i++)
        if (d->jobs.v[i]->status == PD_JOB_QUEUED) snprintf(d->backlog[d->n_backlog++], PD_JOB_ID_LEN + 1, "%s", d->jobs.v[i]->id);
    pthread_mutex_unlock(&d->lock);
    if (!d->backlog) return pd_error_set(PD_ERR_NOMEM, "out of memory re-submitting jobs");
    size_t left = submit_backlog(d);
    if (left) PD_INFO("daemon", "%zu recovered jobs wait for room in the queue", left);
    return PD_OK;
}

/* ---- operations ---- */

int pd_daemon_not_found(pd_api_error *err, const char *id) {
    return pd_api_error_set(err, 404, "id", "video_not_found", "no video with id '%.60s'", id);
}

static void local_add_queue_position(pd_daemon *d, json_t *v) {
    const char *status = json_string_value(json_object_get(v, "status"));
    if (!d->sched || !status || (strcmp(status, "queued") && strcmp(status, "in_progress"))) return;
    const char *id = json_string_value(json_object_get(v, "id"));
    const double eta = pd_scheduler_estimated_completion(d->sched, id);
    if (eta > 0) json_object_set_new(v, "estimated_completed_at", json_integer((json_int_t)ceil(eta)));
    if (strcmp(status, "queued")) return;
    int pos = pd_scheduler_queue_position(d->sched, id);
    if (pos >= 0) json_object_set_new(v, "queue_position", json_integer(pos));
}

json_t *pd_daemon_model_json(pd_daemon *d) {
    return json_pack("{s:s, s:s, s:I, s:s}", "id", d->model_name, "object", "model", "created", (json_int_t)d->started_at, "owned_by",
                     "pipedit");
}

pd_watch_event pd_daemon_watch_next_locked(pd_daemon *d, const char *id, pd_watch_cursor *c, json_t **video) {
    *video = NULL;
    pd_job *j = pd_jobs_find(&d->jobs, id);
    if (!j) return PD_WATCH_DELETED;
    if (c->sent_any && j->version == c->version) return PD_WATCH_NONE;
    pd_watch_event ev = PD_WATCH_PROGRESS;
    if (j->status == PD_JOB_COMPLETED) ev = PD_WATCH_COMPLETED;
    else if (j->status == PD_JOB_FAILED) ev = PD_WATCH_FAILED;
    else if (c->sent_any && j->stage != c->stage && j->stage >= 0) ev = PD_WATCH_STAGE;
    c->sent_any = true;
    c->version = j->version;
    c->stage = j->stage;
    *video = pd_api_video_json(j, -1);
    return ev;
}

static int local_create_video(pd_daemon *d, pd_job_request *req, json_t **out, pd_api_error *err) {
    if (atomic_load(&d->draining))
        return pd_api_error_set(err, 503, NULL, "shutting_down", "the server is shutting down; retry against another instance");
    if (!d->sched) return pd_api_error_set(err, 503, NULL, "not_ready", "the server has no workers");
    pd_scheduler_stats stats;
    pd_scheduler_stats_get(d->sched, &stats);
    pthread_mutex_lock(&d->lock);
    size_t backlog = d->n_backlog;
    pthread_mutex_unlock(&d->lock);
    if (backlog)
        return pd_api_error_set(err, 429, NULL, "queue_full", "%zu jobs from before a restart are waiting to be queued; retry later", backlog);
    if (stats.queued >= d->cfg.queue_capacity)
        return pd_api_error_set(err, 429, NULL, "queue_full", "the queue is full (%d jobs waiting); retry later", stats.queued);
    /* What cannot finish within max_job_seconds or fit in memory is refused before anything is made. */
    if (pd_scheduler_admit(d->sched, &req->p, NULL))
        return pd_api_error_set(err, 400, NULL, "job_too_large", "%s", pd_error_msg());
    char id[PD_JOB_ID_LEN + 1];
    if (pd_job_id_new(id)) return pd_api_error_set(err, 503, NULL, "internal_error", "%s", pd_error_msg());
    if (!req->seed_given) {
        uint32_t r;
        if (pd_random_bytes(&r, sizeof r)) return pd_api_error_set(err, 503, NULL, "internal_error", "%s", pd_error_msg());
        req->p.seed = r;
    }
    pd_job_request copy;
    if (pd_job_request_copy(&copy, req)) return pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");

    pthread_mutex_lock(&d->lock);
    pd_job *j;
    pd_status st = pd_jobs_add(&d->jobs, id, 0, req, &j);
    json_t *rec = NULL;
    if (st == PD_OK) {
        j->created_at = (double)(long long)pd_daemon_now();
        rec = pd_journal_rec_job(j);
    }
    pthread_mutex_unlock(&d->lock);
    if (st) {
        pd_job_request_free(&copy);
        return pd_api_error_set(err, 503, NULL, "internal_error", "%s", pd_error_msg());
    }
    /* On disk before anyone is told the job exists. */
    st = pd_journal_append(d->journal, rec, true);
    if (st == PD_OK) {
        char mp4[PATH_MAX], png[PATH_MAX];
        paths_of(d, id, mp4, png);
        st = pd_scheduler_submit(d->sched, id, &copy.p, mp4, png);
        if (st) {
            pd_status sub = st;
            const char *msg = pd_error_msg();
            if (sub == PD_ERR_BUSY) pd_api_error_set(err, 429, NULL, "queue_full", "the queue is full; retry later");
            else if (sub == PD_ERR_CANCELLED) pd_api_error_set(err, 503, NULL, "shutting_down", "the server is shutting down");
            else pd_api_error_set(err, 503, NULL, "scheduler_error", "the job could not be queued: %s", msg);
            pd_journal_append(d->journal, pd_journal_rec_delete(id), true);
        }
    } else {
        PD_ERROR("daemon", "%s", pd_error_msg());
        pd_api_error_set(err, 503, NULL, "journal_error", "the job could not be recorded: %s", pd_error_msg());
    }
    pd_job_request_free(&copy);
    pthread_mutex_lock(&d->lock);
    if (st) {
        pd_jobs_remove(&d->jobs, id);
        pthread_mutex_unlock(&d->lock);
        return err->http_status;
    }
    j = pd_jobs_find(&d->jobs, id);
    *out = j ? pd_api_video_json(j, -1) : NULL;
    pthread_mutex_unlock(&d->lock);
    if (!*out) return pd_daemon_not_found(err, id); /* deleted in the meantime */
    pd_daemon_add_queue_position(d, *out);
    PD_INFO("daemon", "%s queued", id);
    return 200;
}

static int local_get_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) {
    pthread_mutex_lock(&d->lock);
    pd_job *j = pd_jobs_find(&d->jobs, id);
    *out = j ? pd_api_video_json(j, -1) : NULL;
    pthread_mutex_unlock(&d->lock);
    if (!j) return pd_daemon_not_found(err, id);
    if (!*out) return pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
    pd_daemon_add_queue_position(d, *out);
    return 200;
}

static int local_list_videos(pd_daemon *d, const char *after, int limit, bool ascending, json_t **out, pd_api_error *err) {
    json_t *data = json_array();
    if (!data) return pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
    pthread_mutex_lock(&d->lock);
    long n = (long)d->jobs.n, start = ascending ? 0 : n - 1;
    if (after) {
        long k = pd_jobs_index(&d->jobs, after);
        if (k < 0) {
            pthread_mutex_unlock(&d->lock);
            json_decref(data);
            return pd_api_error_set(err, 400, "after", "invalid_value", "'after' names no video (it may have been deleted)");
        }
        start = ascending ? k + 1 : k - 1;
    }
    long step = ascending ? 1 : -1, i = start;
    for (; i >= 0 && i < n && (long)json_array_size(data) < limit; i += step)
        json_array_append_new(data, pd_api_video_json(d->jobs.v[i], -1));
    bool more = i >= 0 && i < n;
    pthread_mutex_unlock(&d->lock);
    size_t k;
    json_t *v;
    json_array_foreach(data, k, v) pd_daemon_add_queue_position(d, v);
    return pd_daemon_list_reply(data, more, out, err);
}

int pd_daemon_list_reply(json_t *data, bool more, json_t **out, pd_api_error *err) {
    size_t cnt = json_array_size(data);
    json_t *first = cnt ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = cnt ? json_object_get(json_array_get(data, cnt - 1), "id") : NULL;
    *out = json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data", data, "first_id", first, "last_id", last, "has_more", more);
    return *out ? 200 : pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
}

static bool job_live(const pd_job *j) { return j->status == PD_JOB_QUEUED || j->status == PD_JOB_IN_PROGRESS; }

static int local_cancel_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) {
    pthread_mutex_lock(&d->lock);
    pd_job *j = pd_jobs_find(&d->jobs, id);
    pd_job_status s = j ? j->status : PD_JOB_FAILED;
    bool live = j && job_live(j);
    pd_status st = live ? fail_job_locked(d, j, "cancelled", "cancelled by request") : PD_OK;
    if (live && st == PD_OK) backlog_remove_locked(d, id);
    pthread_mutex_unlock(&d->lock);
    if (!j) return pd_daemon_not_found(err, id);
    if (s == PD_JOB_COMPLETED) return pd_api_error_set(err, 400, "id", "invalid_state", "video '%s' has already completed", id);
    if (st) return pd_api_error_set(err, 503, NULL, "journal_error", "the cancel could not be recorded: %s", pd_error_msg());
    if (live && d->sched) {
        /* Durable already; the worker stops before its next DiT block or latent frame. */
        st = pd_scheduler_cancel(d->sched, id);
        if (st && st != PD_ERR_NOT_FOUND) PD_WARN("daemon", "cancel %s: %s", id, pd_error_msg());
        else PD_INFO("daemon", "%s cancelled", id);
    }
    return pd_daemon_get_video(d, id, out, err);
}

static int local_delete_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) {
    pthread_mutex_lock(&d->lock);
    pd_job *j = pd_jobs_find(&d->jobs, id);
    bool live = j && job_live(j);
    /* On disk before it leaves the table, so a crash cannot bring it back. */
    pd_status st = j ? pd_journal_append(d->journal, pd_journal_rec_delete(id), true) : PD_OK;
    if (j && st == PD_OK) {
        backlog_remove_locked(d, id);
        pd_jobs_remove(&d->jobs, id);
        pd_daemon_wake_streams_locked(d);
    }
    pthread_mutex_unlock(&d->lock);
    if (!j) return pd_daemon_not_found(err, id);
    if (st) {
        PD_ERROR("daemon", "%s", pd_error_msg());
        return pd_api_error_set(err, 503, NULL, "journal_error", "the delete could not be recorded: %s", pd_error_msg());
    }
    if (live && d->sched) {
        st = pd_scheduler_cancel(d->sched, id);
        if (st && st != PD_ERR_NOT_FOUND) PD_WARN("daemon", "cancel %s: %s", id, pd_error_msg());
    }
    pd_store_remove(&d->store, id);
    PD_INFO("daemon", "%s deleted", id);
    *out = json_pack("{s:s, s:s, s:b}", "id", id, "object", "video.deleted", "deleted", 1);
    return *out ? 200 : pd_api_error_set(err, 503, NULL, "out_of_memory", "out of memory");
}

static int local_content_path(pd_daemon *d, const char *id, pd_store_variant v, char *path, pd_api_error *err) {
    pthread_mutex_lock(&d->lock);
    pd_job *j = pd_jobs_find(&d->jobs, id);
    pd_job_status s = j ? j->status : PD_JOB_FAILED;
    pthread_mutex_unlock(&d->lock);
    if (!j) return pd_daemon_not_found(err, id);
    if (s != PD_JOB_COMPLETED)
        return pd_api_error_set(err, 404, "id", "video_not_ready", "video '%s' is %s; content exists once it has completed", id,
                                pd_job_status_name(s));
    pd_store_path(&d->store, id, v, path);
    return 200;
}

bool pd_daemon_ready(pd_daemon *d, pd_scheduler_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (d->sched) pd_scheduler_stats_get(d->sched, stats);
    return stats->ready && !atomic_load(&d->draining) && pd_daemon_store_up(d);
}

static void local_gauges(pd_daemon *d, pd_metrics_gauges *g) {
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->jobs.n; i++) g->jobs[d->jobs.v[i]->status]++;
    pthread_mutex_unlock(&d->lock);
}

void pd_daemon_gauges(pd_daemon *d, pd_metrics_gauges *g) {
    memset(g, 0, sizeof *g);
    d->ops->gauges(d, g);
    pd_scheduler_stats s;
    pd_daemon_ready(d, &s);
    g->queue_depth = s.queued;
    g->running = s.running;
    g->workers_up = s.workers_up;
    g->workers_total = s.workers_total;
    g->n_denoise = s.n_denoise;
    g->n_decode = s.n_decode;
    g->sp_groups = s.sp_groups;
    g->sp_groups_formed = s.sp_groups_formed;
    g->aco = s.aco;
    g->plan = s.plan;
    g->worker_memory_bytes = d->sched ? pd_scheduler_worker_memory_bytes(d->sched) : 0;
    g->ready = s.ready;
    g->draining = atomic_load(&d->draining);
    g->uptime_s = pd_daemon_now() - d->started_at;
    if (d->conns) {
        pd_conn_guard_stats cs;
        pd_conn_guard_stats_get(d->conns, &cs);
        g->http_connections = cs.open;
        g->http_dropped[0] = cs.expired;
        g->http_dropped[1] = cs.evicted;
        g->http_dropped[2] = cs.refused;
    }
}

/* ---- housekeeping and shutdown ---- */

static bool job_known(void *ud, const char *id) {
    pd_daemon *d = ud;
    pthread_mutex_lock(&d->lock);
    bool k = pd_jobs_find(&d->jobs, id) != NULL;
    pthread_mutex_unlock(&d->lock);
    return k;
}

static void local_housekeep(pd_daemon *d, bool sweep) {
    if (d->sched && !atomic_load(&d->draining)) submit_backlog(d);
    double now = pd_daemon_now();
    char(*gone)[PD_JOB_ID_LEN + 1] = NULL;
    size_t n_gone = 0;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->jobs.n;) {
        pd_job *j = d->jobs.v[i];
        bool done = j->status == PD_JOB_COMPLETED || j->status == PD_JOB_FAILED;
        if (done && j->expires_at > 0 && j->expires_at <= now) {
            void *g = realloc(gone, (n_gone + 1) * sizeof *gone);
            if (!g) break;
            gone = g;
            snprintf(gone[n_gone++], PD_JOB_ID_LEN + 1, "%s", j->id);
            pd_jobs_remove(&d->jobs, j->id);
            continue;
        }
        i++;
    }
    pd_daemon_wake_streams_locked(d); /* keep-alives */
    pthread_mutex_unlock(&d->lock);
    for (size_t i = 0; i < n_gone; i++) {
        pd_store_remove(&d->store, gone[i]);
        pd_journal_append(d->journal, pd_journal_rec_delete(gone[i]), false);
        PD_INFO("daemon", "%s expired", gone[i]);
    }
    free(gone);
    if (sweep) {
        int k = pd_store_sweep_orphans(&d->store, 120, job_known, d);
        if (k) PD_INFO("daemon", "removed %d orphaned output files", k);
    }
}

void pd_daemon_shutdown(pd_daemon *d) {
    atomic_store(&d->draining, true);
    if (d->sched) {
        pd_scheduler_stats s;
        pd_scheduler_stats_get(d->sched, &s);
        PD_INFO("daemon", "draining: %d queued, %d running, waiting up to %g s", s.queued, s.running, d->cfg.drain_timeout_s);
        pd_status st = pd_scheduler_drain(d->sched, d->cfg.drain_timeout_s);
        if (st == PD_ERR_TIMEOUT)
            PD_WARN("daemon", "drain timed out; unfinished jobs %s", d->replica ? "go back to the shared queue for another replica"
                                                                                : "stay journaled and run after the next start");
        else if (st) PD_WARN("daemon", "drain: %s", pd_error_msg());
    }
    pd_http_stop(d);
#ifdef PD_HAVE_GRPC
    pd_grpc_stop(d);
#endif
    d->ops->stop(d); /* before the scheduler goes: the shared store's threads use it */
    if (d->sched) {
        pd_scheduler_destroy(d->sched);
        d->sched = NULL;
    }
    if (d->replica) return;
    int left = 0;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->jobs.n; i++) left += d->jobs.v[i]->status == PD_JOB_QUEUED || d->jobs.v[i]->status == PD_JOB_IN_PROGRESS;
    pthread_mutex_unlock(&d->lock);
    PD_INFO("daemon", "stopped; %d unfinished job(s) journaled for the next start", left);
}

void pd_daemon_close(pd_daemon *d) {
    pd_http_stop(d);
#ifdef PD_HAVE_GRPC
    pd_grpc_stop(d);
#endif
    if (d->ops) d->ops->stop(d);
    if (d->sched) pd_scheduler_destroy(d->sched);
    d->sched = NULL;
#ifdef PD_HAVE_PG
    pd_replica_close(d);
#endif
    pd_journal_close(d->journal);
    d->journal = NULL;
    if (d->lock_fd > 2) close(d->lock_fd); /* the workers are gone: the folder is free */
    d->lock_fd = 0;
    pd_jobs_free(&d->jobs);
    free(d->backlog);
    d->backlog = NULL;
    pd_metrics_free(&d->metrics);
    pthread_cond_destroy(&d->changed);
    pthread_mutex_destroy(&d->lock);
}

static void local_stop(pd_daemon *d) { (void)d; }

static bool local_store_up(pd_daemon *d) {
    (void)d;
    return true;
}

static const pd_daemon_ops local_ops = {
    .name = "local journal",
    .start = local_start,
    .stop = local_stop,
    .on_job_event = on_job_event,
    .create_video = local_create_video,
    .get_video = local_get_video,
    .list_videos = local_list_videos,
    .cancel_video = local_cancel_video,
    .delete_video = local_delete_video,
    .content_path = local_content_path,
    .add_queue_position = local_add_queue_position,
    .housekeep = local_housekeep,
    .store_up = local_store_up,
    .gauges = local_gauges,
};

/* ---- the operations, through the job store in use ---- */

int pd_daemon_create_video(pd_daemon *d, pd_job_request *req, json_t **out, pd_api_error *err) { return d->ops->create_video(d, req, out, err); }
int pd_daemon_get_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) { return d->ops->get_video(d, id, out, err); }
int pd_daemon_list_videos(pd_daemon *d, const char *after, int limit, bool ascending, json_t **out, pd_api_error *err) {
    return d->ops->list_videos(d, after, limit, ascending, out, err);
}
int pd_daemon_cancel_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) { return d->ops->cancel_video(d, id, out, err); }
int pd_daemon_delete_video(pd_daemon *d, const char *id, json_t **out, pd_api_error *err) { return d->ops->delete_video(d, id, out, err); }
int pd_daemon_content_path(pd_daemon *d, const char *id, pd_store_variant v, char *path, pd_api_error *err) {
    return d->ops->content_path(d, id, v, path, err);
}
void pd_daemon_add_queue_position(pd_daemon *d, json_t *video) { d->ops->add_queue_position(d, video); }
void pd_daemon_housekeep(pd_daemon *d, bool sweep) { d->ops->housekeep(d, sweep); }
bool pd_daemon_store_up(pd_daemon *d) { return !d->ops || d->ops->store_up(d); }
