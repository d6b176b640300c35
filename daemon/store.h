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
/* Renames an attempt's files to the job's (a missing thumbnail is fine); PD_ERR_IO naming the file. */
pd_status pd_store_publish(const pd_store *s, const char *id, long long attempt);
/* Removes an attempt's files; absent files are fine. */
void pd_store_remove_attempt(const pd_store *s, const char *id, long long attempt);

/* True when the job's MP4 exists. */
bool pd_store_has_video(const pd_store *s, const char *id);

/* Removes a job's files; absent files are fine. */
void pd_store_remove(const pd_store *s, const char *id);

/* Removes output files older than min_age_s whose job known(ud, id) does not know (left behind by a
 * job deleted while its worker was still writing). Returns how many were removed. */
int pd_store_sweep_orphans(const pd_store *s, double min_age_s, bool (*known)(void *ud, const char *id), void *ud);

#endif
