#include "daemon/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/jobs.h"
#include "models/model_dir.h"

pd_status pd_store_init(pd_store *s, const char *data_dir, const char *outputs_dir) {
    /* Room for "/.<id>.a<attempt>.mp4.tmp" and more must remain in PATH_MAX. */
    const char *base = outputs_dir && *outputs_dir ? outputs_dir : data_dir;
    if (strlen(base) + 96 >= sizeof s->dir) return pd_error_set(PD_ERR_INVALID, "%s is too long: %s", outputs_dir && *outputs_dir ? "outputs_dir" : "data_dir", base);
    if (outputs_dir && *outputs_dir) snprintf(s->dir, sizeof s->dir, "%s", outputs_dir);
    else snprintf(s->dir, sizeof s->dir, "%s/videos", data_dir);
    PD_TRY(pd_model_dir_mkdirs(s->dir));
    if (access(s->dir, W_OK) != 0) return pd_error_set(PD_ERR_IO, "%s is not writable: %s", s->dir, strerror(errno));
    return PD_OK;
}

void pd_store_path(const pd_store *s, const char *id, pd_store_variant v, char *out) {
    PD_ASSERT(pd_job_id_valid(id));
    int n = snprintf(out, PATH_MAX, "%s/%s.%s", s->dir, id, v == PD_STORE_VIDEO ? "mp4" : "png");
    PD_ASSERT(n > 0 && n < PATH_MAX); /* pd_store_init left room */
}

void pd_store_attempt_path(const pd_store *s, const char *id, long long attempt, pd_store_variant v, char *out) {
    PD_ASSERT(pd_job_id_valid(id));
    int n = snprintf(out, PATH_MAX, "%s/.%s.a%lld.%s", s->dir, id, attempt, v == PD_STORE_VIDEO ? "mp4" : "png");
    PD_ASSERT(n > 0 && n < PATH_MAX);
}

pd_status pd_store_publish(const pd_store *s, const char *id, long long attempt) {
    char from[PATH_MAX], to[PATH_MAX];
    for (int v = 0; v < 2; v++) {
        pd_store_attempt_path(s, id, attempt, (pd_store_variant)v, from);
        pd_store_path(s, id, (pd_store_variant)v, to);
        if (rename(from, to) != 0 && !(v == PD_STORE_THUMBNAIL && errno == ENOENT))
            return pd_error_set(PD_ERR_IO, "rename %s to %s: %s", from, to, strerror(errno));
    }
    return PD_OK;
}

void pd_store_remove_attempt(const pd_store *s, const char *id, long long attempt) {
    char p[PATH_MAX];
    for (int v = 0; v < 2; v++) {
        pd_store_attempt_path(s, id, attempt, (pd_store_variant)v, p);
        if (unlink(p) != 0 && errno != ENOENT) PD_WARN("store", "unlink %s: %s", p, strerror(errno));
    }
}

bool pd_store_has_video(const pd_store *s, const char *id) {
    char p[PATH_MAX];
    pd_store_path(s, id, PD_STORE_VIDEO, p);
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

void pd_store_remove(const pd_store *s, const char *id) {
    char p[PATH_MAX];
    for (int v = 0; v < 2; v++) {
        pd_store_path(s, id, (pd_store_variant)v, p);
        if (unlink(p) != 0 && errno != ENOENT) PD_WARN("store", "unlink %s: %s", p, strerror(errno));
    }
}

int pd_store_sweep_orphans(const pd_store *s, double min_age_s, bool (*known)(void *ud, const char *id), void *ud) {
    DIR *d = opendir(s->dir);
    if (!d) return 0;
    int removed = 0;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n != PD_JOB_ID_LEN + 4) continue;
        const char *ext = e->d_name + PD_JOB_ID_LEN;
        if (strcmp(ext, ".mp4") && strcmp(ext, ".png")) continue;
        char id[PD_JOB_ID_LEN + 1];
        memcpy(id, e->d_name, PD_JOB_ID_LEN);
        id[PD_JOB_ID_LEN] = 0;
        if (!pd_job_id_valid(id) || known(ud, id)) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", s->dir, e->d_name) >= (int)sizeof p) continue;
        struct stat st;
        if (stat(p, &st) != 0 || difftime(now, st.st_mtime) < min_age_s) continue;
        if (unlink(p) == 0) removed++;
    }
    closedir(d);
    return removed;
}
