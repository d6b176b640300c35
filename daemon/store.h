/* The output store: finished videos live in the outputs folder (<data_dir>/videos unless configured)
 * as <id>.mp4 with the first frame as <id>.png beside them. The scheduler's workers write there (complete files only, by rename); the
 * daemon serves, deletes and expires them. File names come only from validated job ids. */
#ifndef PD_DAEMON_STORE_H
#define PD_DAEMON_STORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

typedef enum pd_store_variant { PD_STORE_VIDEO = 0, PD_STORE_THUMBNAIL = 1 } pd_store_variant;

typedef struct pd_store {
    char dir[PATH_MAX]; /* the outputs folder */
} pd_store;

/* Uses outputs_dir, or data_dir/videos when it is empty; creates it when absent. PD_ERR_IO naming the
 * folder. */
pd_status pd_store_init(pd_store *s, const char *data_dir, const char *outputs_dir);

/* Writes the path of a job's output into out (PATH_MAX bytes). The id must be valid
 * (pd_job_id_valid). */
void pd_store_path(const pd_store *s, const char *id, pd_store_variant v, char *out);

/* The path one attempt of a job writes its output to before it is known to be the job's result
 * (".<id>.a<attempt>.mp4"): the shared store's replicas publish it with pd_store_publish only once
 * the store accepted the result, so a stale attempt never overwrites the job's files. */
void pd_store_attempt_path(const pd_store *s, const char *id, long long attempt, pd_store_variant v, char *out);
/* Renames an attempt's files to the job's. Idempotent, and safe when several processes publish the
 * same attempt at once (the folder is shared): an attempt file already gone is fine when the job's own
 * file is there, and a missing thumbnail is always fine. PD_ERR_NOT_FOUND when neither the attempt's
 * video nor the job's exists; PD_ERR_IO naming the file. */
pd_status pd_store_publish(const pd_store *s, const char *id, long long attempt);
/* Removes an attempt's files; absent files are fine. */
void pd_store_remove_attempt(const pd_store *s, const char *id, long long attempt);

/* True when the job's MP4 exists. */
bool pd_store_has_video(const pd_store *s, const char *id);

/* Removes a job's files; absent files are fine. */
void pd_store_remove(const pd_store *s, const char *id);

/* What becomes of an attempt's files (pd_store_sweep_attempts). */
typedef enum pd_store_attempt_fate {
    PD_ATTEMPT_KEEP,    /* it may still become the job's result (or the store cannot say now) */
    PD_ATTEMPT_PUBLISH, /* it is the job's accepted result: publish it now */
    PD_ATTEMPT_REMOVE,  /* it never will be: remove it once it is older than the safe age */
} pd_store_attempt_fate;

/* Walks the attempt files (".<id>.a<attempt>.mp4/.png", and the temporary files they are written
 * through) and asks fate(ud, id, attempt) about each: publishes accepted attempts at once and removes
 * files of the others older than min_age_s (a temporary file is never published, only removed).
 * Several processes may sweep one folder at once: a file another one removed or renamed meanwhile is
 * skipped. Returns how many files were removed; *published receives how many attempts were
 * published. */
int pd_store_sweep_attempts(const pd_store *s, double min_age_s, pd_store_attempt_fate (*fate)(void *ud, const char *id, long long attempt),
                            void *ud, int *published);

/* Removes output files older than min_age_s whose job known(ud, id) does not know (left behind by a
 * job deleted while its worker was still writing). Returns how many were removed. */
int pd_store_sweep_orphans(const pd_store *s, double min_age_s, bool (*known)(void *ud, const char *id), void *ud);

#endif
