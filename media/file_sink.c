#include "media/file_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file_io.h"

#define SINK_SLOTS 4

typedef struct sink_slot {
    void *buf;
    size_t cap, len;
    int64_t offset;
    bool busy;
} sink_slot;

struct pd_file_sink {
    pd_file_atomic file; // the temporary file (its fd is the one io_uring writes to) and the final path
    bool uring;
    struct io_uring ring;
    sink_slot slot[SINK_SLOTS];
    int inflight;
    pd_status err; // first write error, sticky
};

/* Records the first failure; its message stays the one the caller sees. */
static pd_status sink_fail(pd_file_sink *s, int e, const char *what) {
    if (s->err == PD_OK) s->err = pd_error_set(PD_ERR_IO, "%s %s: %s", what, s->file.path, strerror(e));
    return s->err;
}

static pd_status sink_pwrite_all(pd_file_sink *s, int64_t off, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = pwrite(s->file.fd, p, n, off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return sink_fail(s, errno, "writing");
        if (w == 0) return sink_fail(s, ENOSPC, "writing");
        p += w, n -= (size_t)w, off += w;
    }
    return PD_OK;
}

/* Waits for one completion. A short write finishes synchronously (rare: signals, near-full disks). */
static pd_status sink_reap_one(pd_file_sink *s) {
    struct io_uring_cqe *cqe;
    int rc;
    do rc = io_uring_wait_cqe(&s->ring, &cqe);
    while (rc == -EINTR);
    if (rc < 0) { // the ring is unusable: stop waiting (queue_exit cancels what is left)
        s->inflight = 0;
        return sink_fail(s, -rc, "waiting for a write to");
    }
    sink_slot *sl = &s->slot[io_uring_cqe_get_data64(cqe)];
    int res = cqe->res;
    io_uring_cqe_seen(&s->ring, cqe);
    s->inflight--;
    sl->busy = false;
    if (res < 0) return sink_fail(s, -res, "writing");
    if ((size_t)res < sl->len) return sink_pwrite_all(s, sl->offset + res, (uint8_t *)sl->buf + res, sl->len - (size_t)res);
    return PD_OK;
}

pd_status pd_file_sink_open(const char *final_path, unsigned flags, pd_file_sink **out) {
    *out = NULL;
    pd_file_sink *s = calloc(1, sizeof *s);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "out of memory opening %s", final_path ? final_path : "");
    pd_status st = pd_file_atomic_open(&s->file, final_path);
    if (st) {
        free(s);
        return st;
    }
    if (!(flags & PD_FILE_SINK_PWRITE)) {
        int rc = io_uring_queue_init(SINK_SLOTS * 2, &s->ring, 0);
        if (rc == 0) s->uring = true;
        else PD_WARN("media", "io_uring unavailable (%s): writing %s with pwrite", strerror(-rc), final_path);
    }
    *out = s;
    return PD_OK;
}

const char *pd_file_sink_temp_path(const pd_file_sink *s) { return s->file.tmp; }
const char *pd_file_sink_final_path(const pd_file_sink *s) { return s->file.path; }
int pd_file_sink_uses_uring(const pd_file_sink *s) { return s->uring; }

pd_status pd_file_sink_write(pd_file_sink *s, int64_t offset, const void *buf, size_t n) {
    if (s->err != PD_OK) return s->err;
    if (offset < 0) return pd_error_set(PD_ERR_INVALID, "negative write offset for %s", s->file.path);
    if (n == 0) return PD_OK;
    if (!s->uring) return sink_pwrite_all(s, offset, buf, n);
    int k = -1;
    for (;;) {
        for (int i = 0; i < SINK_SLOTS && k < 0; i++)
            if (!s->slot[i].busy) k = i;
        if (k >= 0) break;
        PD_TRY(sink_reap_one(s));
    }
    sink_slot *sl = &s->slot[k];
    if (sl->cap < n) {
        void *nb = realloc(sl->buf, n);
        if (!nb) return pd_error_set(PD_ERR_NOMEM, "out of memory writing %s", s->file.path);
        sl->buf = nb, sl->cap = n;
    }
    memcpy(sl->buf, buf, n);
    sl->len = n, sl->offset = offset;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    PD_ASSERT(sqe); // the ring has twice as many entries as slots
    io_uring_prep_write(sqe, s->file.fd, sl->buf, (unsigned)n, (uint64_t)offset);
    io_uring_sqe_set_data64(sqe, (uint64_t)k);
    int rc = io_uring_submit(&s->ring);
    if (rc < 0) return sink_fail(s, -rc, "submitting a write to");
    sl->busy = true;
    s->inflight++;
    return PD_OK;
}

pd_status pd_file_sink_flush(pd_file_sink *s) {
    while (s->uring && s->inflight > 0) {
        pd_status st = sink_reap_one(s);
        if (st != PD_OK && s->inflight == 0) return st;
    }
    return s->err;
}

static void sink_release(pd_file_sink *s) {
    if (s->uring) io_uring_queue_exit(&s->ring);
    pd_file_atomic_abort(&s->file); // no-op once committed
    for (int i = 0; i < SINK_SLOTS; i++) free(s->slot[i].buf);
    free(s);
}

void pd_file_sink_abort(pd_file_sink *s) {
    if (!s) return;
    while (s->uring && s->inflight > 0) (void)sink_reap_one(s);
    sink_release(s);
}

pd_status pd_file_sink_commit(pd_file_sink *s) {
    pd_status st = pd_file_sink_flush(s);
    if (st != PD_OK) {
        pd_file_sink_abort(s);
        return st;
    }
    st = pd_file_atomic_commit(&s->file, 0644);
    sink_release(s);
    return st;
}
