#include "base/file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

pd_status pd_file_write_all(int fd, const void *buf, size_t n, const char *name) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return pd_error_set(PD_ERR_IO, "writing %s: %s", name, strerror(w < 0 ? errno : ENOSPC));
        p += w;
        n -= (size_t)w;
    }
    return PD_OK;
}

/* The folder part of path ("." when it has none). */
static void dir_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == path) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

pd_status pd_file_atomic_open(pd_file_atomic *a, const char *path) {
    a->fd = -1;
    a->tmp[0] = 0;
    size_t n = path ? strlen(path) : 0;
    const char *slash = path ? strrchr(path, '/') : NULL;
    const char *base = slash ? slash + 1 : path;
    if (n == 0 || n >= sizeof a->path || !*base) return pd_error_set(PD_ERR_INVALID, "bad output path \"%s\"", path ? path : "");
    memcpy(a->path, path, n + 1);
    snprintf(a->tmp, sizeof a->tmp, "%.*s.%s.tmp.XXXXXX", (int)(base - path), path, base);
    a->fd = mkostemp(a->tmp, O_CLOEXEC);
    if (a->fd < 0) {
        char dir[PATH_MAX];
        dir_of(path, dir, sizeof dir);
        int e = errno;
        a->tmp[0] = 0;
        return pd_error_set(PD_ERR_IO, "cannot create a file in %s for %s: %s", dir, path, strerror(e));
    }
    return PD_OK;
}

void pd_file_atomic_abort(pd_file_atomic *a) {
    if (a->fd < 0) return;
    close(a->fd);
    a->fd = -1;
    unlink(a->tmp);
}

pd_status pd_file_atomic_commit(pd_file_atomic *a, mode_t mode) {
    PD_ASSERT(a->fd >= 0);
    const char *what = NULL;
    if (fchmod(a->fd, mode) != 0) what = "setting the mode of";
    else if (fsync(a->fd) != 0) what = "syncing";
    if (what) {
        pd_status st = pd_error_set(PD_ERR_IO, "%s %s: %s", what, a->path, strerror(errno));
        pd_file_atomic_abort(a);
        return st;
    }
    int rc = close(a->fd);
    a->fd = -1;
    if (rc != 0 || rename(a->tmp, a->path) != 0) {
        pd_status st = pd_error_set(PD_ERR_IO, "%s %s: %s", rc ? "closing" : "renaming into place", a->path, strerror(errno));
        unlink(a->tmp);
        return st;
    }
    /* Makes the rename durable; a failure here cannot undo it, so it is not reported. */
    char dir[PATH_MAX];
    dir_of(a->path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return PD_OK;
}

pd_status pd_file_write_atomic(const char *path, const void *buf, size_t n, mode_t mode) {
    pd_file_atomic a;
    PD_TRY(pd_file_atomic_open(&a, path));
    pd_status st = pd_file_write_all(a.fd, buf, n, path);
    if (st) {
        pd_file_atomic_abort(&a);
        return st;
    }
    return pd_file_atomic_commit(&a, mode);
}

pd_status pd_file_write_json(const char *path, const json_t *root, size_t flags, mode_t mode) {
    char *text = json_dumps(root, flags);
    size_t n = text ? strlen(text) : 0;
    char *line = text ? realloc(text, n + 1) : NULL;
    if (!line) {
        free(text);
        return pd_error_set(PD_ERR_NOMEM, "out of memory writing %s", path);
    }
    line[n] = '\n'; /* over the terminating NUL: the length is known */
    pd_status st = pd_file_write_atomic(path, line, n + 1, mode);
    free(line);
    return st;
}

pd_status pd_file_append(int fd, const void *buf, size_t n, bool sync, const char *name) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) return pd_error_set(PD_ERR_IO, "%s: %s", name, strerror(errno));
    pd_status st = pd_file_write_all(fd, buf, n, name);
    if (st == PD_OK && sync && fdatasync(fd) != 0) st = pd_error_set(PD_ERR_IO, "syncing %s: %s", name, strerror(errno));
    if (st == PD_OK) return st;
    /* Whatever part of the record reached the file goes, so the next append starts on a clean line. */
    int rc;
    do rc = ftruncate(fd, sb.st_size);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) return pd_error_prefix(st, "%s is torn: truncating it back to %lld bytes failed (%s)", name, (long long)sb.st_size,
                                        strerror(errno));
    return st;
}

long pd_file_lock_holder(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && (*end == '\n' || *end == 0) ? pid : 0;
}

pd_status pd_file_lock(const char *path, int *fd, long *holder) {
    *fd = -1;
    *holder = 0;
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) return pd_error_set(PD_ERR_IO, "lock file %s: %s", path, strerror(errno));
    if (f < 3) { /* never 0-2, so a caller may treat those as "no lock" */
        int g = fcntl(f, F_DUPFD_CLOEXEC, 3);
        int e = errno;
        close(f);
        if (g < 0) return pd_error_set(PD_ERR_IO, "lock file %s: %s", path, strerror(e));
        f = g;
    }
    int rc;
    do rc = flock(f, LOCK_EX | LOCK_NB);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        int e = errno;
        close(f);
        if (e != EWOULDBLOCK) return pd_error_set(PD_ERR_IO, "locking %s: %s", path, strerror(e));
        *holder = pd_file_lock_holder(path);
        return pd_error_set(PD_ERR_BUSY, "%s is locked by another process (pid %ld)", path, *holder);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)len, 0) != len) {
        int e = errno;
        close(f);
        return pd_error_set(PD_ERR_IO, "writing %s: %s", path, strerror(e));
    }
    *fd = f;
    return PD_OK;
}
