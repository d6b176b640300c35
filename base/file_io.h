/* Writing files so that a failure never leaves one torn: whole writes, atomic replacement, an
 * all-or-nothing append, and an exclusive lock file. Every file pipedit writes (journal, weights,
 * videos, model configs, downloads, benchmark results) goes through these.
 *
 * Atomic replacement: the bytes go to a temporary file ".<name>.tmp.XXXXXX" in the target's folder
 * (same file system, so the rename is atomic); commit sets the mode, fsyncs the file, renames it over
 * the target and fsyncs the folder, so after a crash the target is either the old file or the whole
 * new one. Any failure removes the temporary file and leaves the target as it was.
 *
 * Errors are PD_ERR_IO with a message naming the file and the system's reason (ENOSPC, EFBIG, ...). */
#ifndef PD_BASE_FILE_IO_H
#define PD_BASE_FILE_IO_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "base/status.h"

/* Writes all n bytes of buf to fd at its current offset, retrying short writes and EINTR (a write
 * that makes no progress counts as ENOSPC). name is the file named in the error message. */
pd_status pd_file_write_all(int fd, const void *buf, size_t n, const char *name);

/* A file being written for atomic replacement of path. fd is open for writing (close-on-exec, mode
 * 0600 until commit); write to it with pd_file_write_all, pwrite or io_uring. */
typedef struct pd_file_atomic {
    int fd;
    char path[PATH_MAX];     /* the target */
    char tmp[PATH_MAX + 32]; /* the temporary file */
} pd_file_atomic;

/* Creates the temporary file next to path. PD_ERR_INVALID for an empty or too long path, PD_ERR_IO
 * naming the folder (missing, not writable, ...). On failure a->fd is -1 and nothing is left. */
pd_status pd_file_atomic_open(pd_file_atomic *a, const char *path);

/* Sets mode, fsyncs, closes and renames the temporary file over the target, then fsyncs the folder.
 * On failure the temporary file is removed and the target is unchanged. Either way a is finished
 * (fd -1); pd_file_atomic_abort on it afterwards is a no-op. */
pd_status pd_file_atomic_commit(pd_file_atomic *a, mode_t mode);

/* Discards the temporary file (closes and removes it). A finished or never-opened a (fd -1) is a
 * no-op. */
void pd_file_atomic_abort(pd_file_atomic *a);

/* Replaces path by the n bytes of buf atomically, with the given mode. */
pd_status pd_file_write_atomic(const char *path, const void *buf, size_t n, mode_t mode);

/* Replaces path atomically by root dumped with jansson's flags (JSON_INDENT(2), ...) and a final
 * newline. Does not take a reference to root. PD_ERR_NOMEM, or the errors above. */
pd_status pd_file_write_json(const char *path, const json_t *root, size_t flags, mode_t mode);

/* Appends the n bytes of buf to the end of fd's file (open with O_APPEND) as one unit, then
 * fdatasyncs when sync. On any failure (a short or failed write such as ENOSPC or EFBIG, a failed
 * fdatasync) the file is truncated back to its length before the call, so it holds the whole record or
 * none of it. The caller serialises appends to one file. */
pd_status pd_file_append(int fd, const void *buf, size_t n, bool sync, const char *name);

/* Takes an exclusive lock (flock) on the file at path, creating it (mode 0644) when absent, and
 * writes the caller's pid into it. On success *fd is the lock file's descriptor: close-on-exec and 3
 * or higher, so a child spawned with it made inheritable keeps the lock held for as long as it lives;
 * the lock is released when the last copy is closed. PD_ERR_BUSY when the lock is held by another open
 * file: *holder receives the pid written in the lock file (0 when unknown) and the file is unchanged.
 * PD_ERR_IO otherwise. */
pd_status pd_file_lock(const char *path, int *fd, long *holder);

/* Reads the pid written in the lock file at path (0 when absent, empty or unreadable). */
long pd_file_lock_holder(const char *path);

#endif
