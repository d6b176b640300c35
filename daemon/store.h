/* The output store: finished videos live in <data_dir>/videos/<id>.mp4 with the first frame as
 * <id>.png beside them. The scheduler's workers write there (complete files only, by rename); the
 * daemon serves, deletes and expires them. File names come only from validated job ids. */
#ifndef PD_DAEMON_STORE_H
#define PD_DAEMON_STORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

typedef enum pd_store_variant { PD_STORE_VIDEO = 0, PD_STORE_THUMBNAIL = 1 } pd_store_variant;

typedef struct pd_store {
    char dir[PATH_MAX]; /* <data_dir>/videos */
} pd_store;

/* Creates data_dir and data_dir/videos when absent. PD_ERR_IO naming the folder. */
pd_status pd_store_init(pd_store *s, const char *data_dir);

/* Writes the path of a job's output into out (PATH_MAX bytes). The id must be valid
 * (pd_job_id_valid). */
void pd_store_path(const pd_store *s, const char *id, pd_store_variant v, char *out);

/* True when the job's MP4 exists. */
bool pd_store_has_video(const pd_store *s, const char *id);

/* Removes a job's files; absent files are fine. */
void pd_store_remove(const pd_store *s, const char *id);

/* Removes output files older than min_age_s whose job known(ud, id) does not know (left behind by a
 * job deleted while its worker was still writing). Returns how many were removed. */
int pd_store_sweep_orphans(const pd_store *s, double min_age_s, bool (*known)(void *ud, const char *id), void *ud);

#endif
