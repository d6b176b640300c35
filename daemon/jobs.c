#include "daemon/jobs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char *const status_names[PD_JOB_STATUS_COUNT] = {"queued", "in_progress", "completed", "failed"};

const char *pd_job_status_name(pd_job_status s) {
    PD_ASSERT(s >= 0 && s < PD_JOB_STATUS_COUNT);
    return status_names[s];
}

void pd_job_request_free(pd_job_request *r) {
    free(r->prompt);
    free(r->negative_prompt);
    memset(r, 0, sizeof *r);
}

pd_status pd_job_request_copy(pd_job_request *dst, const pd_job_request *src) {
    *dst = *src;
    dst->prompt = src->prompt ? strdup(src->prompt) : NULL;
    dst->negative_prompt = src->negative_prompt ? strdup(src->negative_prompt) : NULL;
    if ((src->prompt && !dst->prompt) || (src->negative_prompt && !dst->negative_prompt)) {
        pd_job_request_free(dst);
        return pd_error_set(PD_ERR_NOMEM, "out of memory copying a request");
    }
    dst->p.prompt = dst->prompt;
    dst->p.negative_prompt = dst->negative_prompt;
    return PD_OK;
}

void pd_jobs_init(pd_jobs *t) {
    memset(t, 0, sizeof *t);
    t->next_seq = 1;
}

static void job_free(pd_job *j) {
    pd_job_request_free(&j->req);
    free(j);
}

void pd_jobs_free(pd_jobs *t) {
    for (size_t i = 0; i < t->n; i++) job_free(t->v[i]);
    free(t->v);
    memset(t, 0, sizeof *t);
}

long pd_jobs_index(const pd_jobs *t, const char *id) {
    for (size_t i = t->n; i-- > 0;)
        if (!strcmp(t->v[i]->id, id)) return (long)i;
    return -1;
}

pd_job *pd_jobs_find(const pd_jobs *t, const char *id) {
    long i = pd_jobs_index(t, id);
    return i < 0 ? NULL : t->v[i];
}

pd_status pd_jobs_add(pd_jobs *t, const char *id, uint64_t seq, pd_job_request *req, pd_job **out) {
    if (strlen(id) > PD_JOB_ID_LEN || pd_jobs_find(t, id)) return pd_error_set(PD_ERR_INVALID, "job %s already exists", id);
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        pd_job **v = realloc(t->v, cap * sizeof *v);
        if (!v) return pd_error_set(PD_ERR_NOMEM, "out of memory growing the jobs table");
        t->v = v;
        t->cap = cap;
    }
    pd_job *j = calloc(1, sizeof *j);
    if (!j) return pd_error_set(PD_ERR_NOMEM, "out of memory adding a job");
    snprintf(j->id, sizeof j->id, "%s", id);
    if (seq == 0) seq = t->next_seq;
    if (seq >= t->next_seq) t->next_seq = seq + 1;
    j->seq = seq;
    j->stage = -1;
    j->req = *req;
    memset(req, 0, sizeof *req);
    j->req.p.prompt = j->req.prompt;
    j->req.p.negative_prompt = j->req.negative_prompt;
    /* Journal replay may add out of order after compaction; keep the table sorted by seq. */
    size_t pos = t->n;
    while (pos > 0 && t->v[pos - 1]->seq > seq) pos--;
    memmove(t->v + pos + 1, t->v + pos, (t->n - pos) * sizeof *t->v);
    t->v[pos] = j;
    t->n++;
    if (out) *out = j;
    return PD_OK;
}

bool pd_jobs_remove(pd_jobs *t, const char *id) {
    long i = pd_jobs_index(t, id);
    if (i < 0) return false;
    job_free(t->v[i]);
    memmove(t->v + i, t->v + i + 1, (t->n - (size_t)i - 1) * sizeof *t->v);
    t->n--;
    return true;
}

pd_status pd_random_bytes(void *buf, size_t n) {
    unsigned char *p = buf;
    while (n) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return pd_error_set(PD_ERR_IO, "getrandom: %s", strerror(errno));
        }
        p += got;
        n -= (size_t)got;
    }
    return PD_OK;
}

pd_status pd_job_id_new(char *out) {
    unsigned char r[16];
    PD_TRY(pd_random_bytes(r, sizeof r));
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "video_", 6);
    for (int i = 0; i < 16; i++) {
        out[6 + 2 * i] = hex[r[i] >> 4];
        out[7 + 2 * i] = hex[r[i] & 15];
    }
    out[PD_JOB_ID_LEN] = 0;
    return PD_OK;
}

bool pd_job_id_valid(const char *s) {
    if (strncmp(s, "video_", 6)) return false;
    for (int i = 6; i < PD_JOB_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return s[PD_JOB_ID_LEN] == 0;
}
