#include "daemon/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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
        if (rename(from, to) == 0) continue;
        if (errno != ENOENT) return pd_error_set(PD_ERR_IO, "rename %s to %s: %s", from, to, strerror(errno));
        /* Gone: published already (by whoever got there first), or never written. */
        if (v == PD_STORE_VIDEO && !pd_store_has_video(s, id))
            return pd_error_set(PD_ERR_NOT_FOUND, "%s: neither %s nor %s exists", id, from, to);
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

/* Writes the path of file name in the store's folder into p (PATH_MAX bytes) and returns its age in
 * seconds at now (by its modification time); -1 when the path is too long or the file is gone. */
static double file_age_s(const pd_store *s, const char *name, time_t now, char *p) {
    if (snprintf(p, PATH_MAX, "%s/%s", s->dir, name) >= PATH_MAX) return -1;
    struct stat st;
    if (stat(p, &st) != 0) return -1;
    return difftime(now, st.st_mtime);
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
        if (file_age_s(s, e->d_name, now, p) >= min_age_s && unlink(p) == 0) removed++;
    }
    closedir(d);
    return removed;
}

/* Parses an attempt file's name: ".<id>.a<attempt>.mp4" or ".png", or the file sink's temporary
 * "..<id>.a<attempt>.<ext>.tmp.XXXXXX" of one (*tmp). False for anything else. */
static bool attempt_name(const char *name, char id[PD_JOB_ID_LEN + 1], long long *attempt, bool *tmp) {
    *tmp = name[0] == '.' && name[1] == '.';
    const char *p = name + 1 + *tmp;
    if (name[0] != '.' || strlen(p) < PD_JOB_ID_LEN + 3 || p[PD_JOB_ID_LEN] != '.' || p[PD_JOB_ID_LEN + 1] != 'a') return false;
    memcpy(id, p, PD_JOB_ID_LEN);
    id[PD_JOB_ID_LEN] = 0;
    if (!pd_job_id_valid(id)) return false;
    p += PD_JOB_ID_LEN + 2;
    if (*p < '0' || *p > '9') return false;
    char *end;
    errno = 0;
    *attempt = strtoll(p, &end, 10);
    if (errno || (strncmp(end, ".mp4", 4) && strncmp(end, ".png", 4))) return false;
    end += 4;
    return *tmp ? !strncmp(end, ".tmp.", 5) : *end == 0;
}

int pd_store_sweep_attempts(const pd_store *s, double min_age_s, pd_store_attempt_fate (*fate)(void *ud, const char *id, long long attempt),
                            void *ud, int *published) {
    *published = 0;
    DIR *d = opendir(s->dir);
    if (!d) return 0;
    int removed = 0;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        char id[PD_JOB_ID_LEN + 1], p[PATH_MAX];
        long long attempt;
        bool tmp;
        if (!attempt_name(e->d_name, id, &attempt, &tmp)) continue;
        double age = file_age_s(s, e->d_name, now, p);
        if (age < 0) continue; /* another sweeper or the publisher got there first */
        bool old = age >= min_age_s;
        pd_store_attempt_fate f = fate(ud, id, attempt);
        if (f == PD_ATTEMPT_PUBLISH && !tmp) {
            if (pd_store_publish(s, id, attempt) == PD_OK) (*published)++;
            else PD_WARN("store", "%s", pd_error_msg());
        } else if (f != PD_ATTEMPT_KEEP && old && unlink(p) == 0) {
            removed++;
        }
    }
    closedir(d);
    return removed;
}
