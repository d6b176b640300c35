#include "daemon/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file_io.h"

struct pd_journal {
    int fd;
    pthread_mutex_t mu;
    char path[PATH_MAX];
};

pd_status pd_journal_open(const char *path, pd_journal **out) {
    pd_journal *jn = calloc(1, sizeof *jn);
    if (!jn) return pd_error_set(PD_ERR_NOMEM, "out of memory opening the journal");
    jn->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (jn->fd < 0) {
        free(jn);
        return pd_error_set(PD_ERR_IO, "journal %s: %s", path, strerror(errno));
    }
    pthread_mutex_init(&jn->mu, NULL);
    snprintf(jn->path, sizeof jn->path, "%s", path);
    *out = jn;
    return PD_OK;
}

void pd_journal_close(pd_journal *jn) {
    if (!jn) return;
    fdatasync(jn->fd);
    close(jn->fd);
    pthread_mutex_destroy(&jn->mu);
    free(jn);
}

/* One line: compact JSON + '\n'; malloc'ed. */
static char *rec_line(json_t *rec, size_t *len) {
    char *s = json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = 0;
    *len = n + 1;
    return line;
}

pd_status pd_journal_append(pd_journal *jn, json_t *rec, bool sync) {
    if (!rec) return pd_error_set(PD_ERR_NOMEM, "out of memory building a journal record");
    size_t len;
    char *line = rec_line(rec, &len);
    json_decref(rec);
    if (!line) return pd_error_set(PD_ERR_NOMEM, "out of memory writing the journal");
    pthread_mutex_lock(&jn->mu);
    pd_status st = pd_file_append(jn->fd, line, len, sync, jn->path);
    pthread_mutex_unlock(&jn->mu);
    free(line);
    return st;
}

json_t *pd_journal_rec_job(const pd_job *j) {
    const pd_gen_params *p = &j->req.p;
    json_t *r = json_pack("{s:s, s:s, s:I, s:s, s:f, s:f, s:f, s:f, s:s, s:s, s:s, s:o, s:I, s:b, s:i, s:i, s:i, s:i, s:f, s:f, "
                          "s:s, s:s, s:i, s:s, s:s}",
                          "op", "job", "id", j->id, "seq", (json_int_t)j->seq, "status", pd_job_status_name(j->status),
                          "created_at", j->created_at, "started_at", j->started_at, "completed_at", j->completed_at,
                          "expires_at", j->expires_at, "error_code", j->error_code, "error_message", j->error_message,
                          "prompt", j->req.prompt ? j->req.prompt : "", "negative_prompt",
                          j->req.negative_prompt ? json_string(j->req.negative_prompt) : json_null(), "seed",
                          (json_int_t)p->seed, "seed_given", j->req.seed_given, "width", p->width, "height", p->height,
                          "frames", p->frames, "steps", p->steps, "guidance", (double)p->guidance, "shift",
                          (double)p->shift, "sampler", pd_sampler_kind_name(p->sampler), "noise", pd_noise_kind_name(p->noise), "fps", p->fps, "model",
                          j->req.model, "seconds", j->req.seconds);
    return r;
}

json_t *pd_journal_rec_start(const char *id, double t) { return json_pack("{s:s, s:s, s:f}", "op", "start", "id", id, "t", t); }

json_t *pd_journal_rec_complete(const char *id, double t, double expires_at) {
    return json_pack("{s:s, s:s, s:f, s:f}", "op", "complete", "id", id, "t", t, "expires_at", expires_at);
}

json_t *pd_journal_rec_fail(const char *id, double t, double expires_at, const char *code, const char *message) {
    return json_pack("{s:s, s:s, s:f, s:f, s:s, s:s}", "op", "fail", "id", id, "t", t, "expires_at", expires_at, "code", code,
                     "message", message);
}

json_t *pd_journal_rec_delete(const char *id) { return json_pack("{s:s, s:s}", "op", "delete", "id", id); }

static double num(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static const char *str(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

bool pd_journal_request_parse(json_t *r, pd_job_request *q) {
    const char *prompt = str(r, "prompt"), *neg = str(r, "negative_prompt"), *sampler = str(r, "sampler");
    const char *noise = str(r, "noise"); /* absent in journals written before it existed: philox */
    memset(q, 0, sizeof *q);
    if (!prompt) return false;
    q->prompt = strdup(prompt);
    q->negative_prompt = neg ? strdup(neg) : NULL;
    q->p.noise = PD_NOISE_PHILOX;
    if (!q->prompt || (neg && !q->negative_prompt) || !sampler || pd_sampler_kind_parse(sampler, &q->p.sampler) ||
        (noise && pd_noise_kind_parse(noise, &q->p.noise))) {
        pd_job_request_free(q);
        return false;
    }
    q->p.seed = (uint64_t)num(r, "seed");
    json_t *seed = json_object_get(r, "seed");
    if (json_is_integer(seed)) q->p.seed = (uint64_t)json_integer_value(seed);
    q->seed_given = json_is_true(json_object_get(r, "seed_given"));
    q->p.width = (int)num(r, "width");
    q->p.height = (int)num(r, "height");
    q->p.frames = (int)num(r, "frames");
    q->p.steps = (int)num(r, "steps");
    q->p.guidance = (float)num(r, "guidance");
    q->p.shift = (float)num(r, "shift");
    q->p.fps = (int)num(r, "fps");
    snprintf(q->model, sizeof q->model, "%s", str(r, "model") ? str(r, "model") : "");
    snprintf(q->seconds, sizeof q->seconds, "%s", str(r, "seconds") ? str(r, "seconds") : "");
    if (q->p.width <= 0 || q->p.height <= 0 || q->p.frames <= 0 || q->p.steps <= 0 || q->p.fps <= 0) {
        pd_job_request_free(q);
        return false;
    }
    q->p.prompt = q->prompt;
    q->p.negative_prompt = q->negative_prompt;
    return true;
}

pd_job_status pd_journal_status_parse(const char *s) {
    for (int i = 0; i < PD_JOB_STATUS_COUNT; i++)
        if (s && !strcmp(s, pd_job_status_name((pd_job_status)i))) return (pd_job_status)i;
    return PD_JOB_QUEUED;
}

/* Applies one record; false when it is malformed. */
static bool apply(pd_jobs *jobs, json_t *r) {
    const char *op = str(r, "op"), *id = str(r, "id");
    if (!op || !id || !pd_job_id_valid(id)) return false;
    if (!strcmp(op, "job")) {
        pd_jobs_remove(jobs, id); /* a later full record supersedes */
        pd_job_request q;
        if (!pd_journal_request_parse(r, &q)) return false;
        pd_job *j;
        json_t *seq = json_object_get(r, "seq");
        if (pd_jobs_add(jobs, id, json_is_integer(seq) && json_integer_value(seq) > 0 ? (uint64_t)json_integer_value(seq) : 0, &q, &j)) {
            pd_job_request_free(&q);
            return false;
        }
        j->status = pd_journal_status_parse(str(r, "status"));
        j->created_at = num(r, "created_at");
        j->started_at = num(r, "started_at");
        j->completed_at = num(r, "completed_at");
        j->expires_at = num(r, "expires_at");
        snprintf(j->error_code, sizeof j->error_code, "%s", str(r, "error_code") ? str(r, "error_code") : "");
        snprintf(j->error_message, sizeof j->error_message, "%s", str(r, "error_message") ? str(r, "error_message") : "");
        if (j->status == PD_JOB_COMPLETED) j->progress = 100;
        return true;
    }
    if (!strcmp(op, "delete")) {
        pd_jobs_remove(jobs, id);
        return true;
    }
    pd_job *j = pd_jobs_find(jobs, id);
    if (!j) return true; /* a transition of a job deleted since: nothing to do */
    if (!strcmp(op, "start")) {
        if (j->status == PD_JOB_QUEUED) j->status = PD_JOB_IN_PROGRESS;
        j->started_at = num(r, "t");
    } else if (!strcmp(op, "complete")) {
        j->status = PD_JOB_COMPLETED;
        j->progress = 100;
        j->completed_at = num(r, "t");
        j->expires_at = num(r, "expires_at");
    } else if (!strcmp(op, "fail")) {
        j->status = PD_JOB_FAILED;
        j->completed_at = num(r, "t");
        j->expires_at = num(r, "expires_at");
        snprintf(j->error_code, sizeof j->error_code, "%s", str(r, "code") ? str(r, "code") : "failed");
        snprintf(j->error_message, sizeof j->error_message, "%s", str(r, "message") ? str(r, "message") : "");
    } else {
        return false;
    }
    return true;
}

pd_status pd_journal_replay(const char *path, pd_jobs *jobs, size_t *n_records, size_t *n_bad) {
    *n_records = *n_bad = 0;
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT) return PD_OK;
        return pd_error_set(PD_ERR_IO, "journal %s: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (n <= 1) continue;
        json_t *r = NULL;
        if ((size_t)n <= PD_JOURNAL_MAX_LINE) {
            json_error_t jerr;
            r = json_loadb(line, (size_t)n, 0, &jerr);
        }
        if (r && json_is_object(r) && apply(jobs, r)) {
            (*n_records)++;
        } else {
            (*n_bad)++;
            PD_WARN("journal", "%s:%zu: skipping a malformed record", path, lineno);
        }
        json_decref(r);
    }
    free(line);
    bool err = ferror(f);
    fclose(f);
    if (err) return pd_error_set(PD_ERR_IO, "journal %s: read error", path);
    return PD_OK;
}

pd_status pd_journal_compact(const char *path, const pd_jobs *jobs) {
    pd_file_atomic a;
    PD_TRY(pd_file_atomic_open(&a, path));
    pd_status st = PD_OK;
    for (size_t i = 0; i < jobs->n && st == PD_OK; i++) {
        json_t *r = pd_journal_rec_job(jobs->v[i]);
        size_t len;
        char *line = r ? rec_line(r, &len) : NULL;
        json_decref(r);
        if (!line) st = pd_error_set(PD_ERR_NOMEM, "out of memory compacting the journal");
        else st = pd_file_write_all(a.fd, line, len, a.tmp);
        free(line);
    }
    if (st) {
        pd_file_atomic_abort(&a);
        return st;
    }
    return pd_file_atomic_commit(&a, 0644);
}
