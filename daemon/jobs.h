/* The daemon's jobs table: every video the daemon knows (queued, running, finished), in creation
 * order, with the request that made it and what the scheduler has reported since.
 *
 * The table does no locking of its own: the daemon holds its lock around every call. Job ids are
 * "video_" followed by 32 lower-case hex digits from the system's random source; pd_job_id_valid()
 * accepts exactly that, so an id taken from a URL can be used in a file name without any chance of
 * path traversal. */
#ifndef PD_DAEMON_JOBS_H
#define PD_DAEMON_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "models/pipeline.h"

#define PD_JOB_ID_LEN 38 /* "video_" + 32 hex digits */

typedef enum pd_job_status { PD_JOB_QUEUED = 0, PD_JOB_IN_PROGRESS, PD_JOB_COMPLETED, PD_JOB_FAILED, PD_JOB_STATUS_COUNT } pd_job_status;

/* "queued", "in_progress", "completed", "failed" (the OpenAI Video statuses). */
const char *pd_job_status_name(pd_job_status s);

/* A validated generation request. p.prompt and p.negative_prompt point at prompt and
 * negative_prompt, which the request owns (pd_job_request_free releases them). */
typedef struct pd_job_request {
    pd_gen_params p;
    char *prompt;
    char *negative_prompt; /* NULL when none was given */
    bool seed_given;       /* false: the daemon resolves a random seed at admission */
    char model[128];
    char seconds[24];      /* as reported in the Video object ("4", "0.5625") */
} pd_job_request;

void pd_job_request_free(pd_job_request *r);
/* Deep copy; PD_ERR_NOMEM. */
pd_status pd_job_request_copy(pd_job_request *dst, const pd_job_request *src);

typedef struct pd_job {
    char id[PD_JOB_ID_LEN + 1];
    uint64_t seq;            /* creation order, strictly increasing, survives restarts through the journal */
    pd_job_status status;
    int progress;            /* 0-100 */
    int stage;               /* pd_stage while in progress, -1 otherwise */
    int step, total;         /* within stage */
    double created_at, started_at, completed_at, expires_at; /* unix seconds; 0 = not yet */
    double stage_started_at; /* when the current stage began (metrics) */
    char error_code[32];
    char error_message[256];
    pd_job_request req;
    uint64_t version;        /* bumped on every change; event streams send when it moves */
} pd_job;

typedef struct pd_jobs {
    pd_job **v;              /* creation order */
    size_t n, cap;
    uint64_t next_seq;
} pd_jobs;

void pd_jobs_init(pd_jobs *t);
/* Frees every job and the table. */
void pd_jobs_free(pd_jobs *t);

/* Allocates a job with the given id (copied) and request (moved in: the caller's copy is zeroed),
 * appends it and returns it. seq 0 takes the next number; a larger seq from the journal is kept and
 * moves the counter past it. PD_ERR_NOMEM; PD_ERR_INVALID for a duplicate id. */
pd_status pd_jobs_add(pd_jobs *t, const char *id, uint64_t seq, pd_job_request *req, pd_job **out);

/* The job with this id, or NULL. */
pd_job *pd_jobs_find(const pd_jobs *t, const char *id);
/* Index of the job with this id in creation order, or -1. */
long pd_jobs_index(const pd_jobs *t, const char *id);

/* Removes and frees the job with this id; false when there is none. */
bool pd_jobs_remove(pd_jobs *t, const char *id);

/* Writes a fresh random id into out (PD_JOB_ID_LEN + 1 bytes). PD_ERR_IO when the system's random
 * source fails. */
pd_status pd_job_id_new(char *out);

/* True when s is exactly "video_" followed by 32 lower-case hex digits. */
bool pd_job_id_valid(const char *s);

/* Fills buf with n random bytes from the system's random source; PD_ERR_IO on failure. */
pd_status pd_random_bytes(void *buf, size_t n);

#endif
