/* Atomic file output through io_uring: bytes are written at explicit offsets into a temporary file in
 * the target's folder, and the file appears under its final name only when pd_file_sink_commit()
 * succeeds (fsync, rename, fsync of the folder). Any failure leaves no file under the final name and
 * removes the temporary one.
 *
 * Writes are asynchronous: pd_file_sink_write() copies the bytes into one of a few slot buffers,
 * submits an io_uring write at the given offset and returns; the caller (an encoder) keeps encoding
 * while the kernel writes. Completions are reaped when a slot is needed again, by
 * pd_file_sink_flush() (which waits for all of them: call it before anyone reads the file, or before
 * rewriting a region already written, since writes in flight are unordered) and by commit.
 *
 * Why asynchronous: the writer's caller is the x264 encoder fed by the VAE decoder; with io_uring a
 * slow or remote disk never stalls encoding for the length of a write. Measured by bench/bench_vae.c on
 * a 2-core Debian 12 CPU VM shared with other jobs (64 MiB in 256 KiB writes to the page cache, then
 * fsync, median of 5): io_uring 840 MiB/s, pwrite 889 MiB/s (500 / 615 in a run under heavier load).
 * So on a fast local disk the extra copy into a slot and the submission cost a little throughput; an MP4 from the decoder is a few
 * hundred KiB to a few MiB written over seconds of encoding, where either path is far below 1% of the
 * time. The asynchronous path is kept for the slow-disk case; PD_FILE_SINK_PWRITE selects the other.
 *
 * If io_uring cannot be set up (seccomp in some containers, old kernels) the sink logs one warning and
 * falls back to synchronous pwrite(2); PD_FILE_SINK_PWRITE asks for that path directly. */
#ifndef PD_MEDIA_FILE_SINK_H
#define PD_MEDIA_FILE_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct pd_file_sink pd_file_sink;

enum { PD_FILE_SINK_PWRITE = 1 }; /* flags: synchronous pwrite instead of io_uring */

/* Creates a temporary file ".<name>.tmp.XXXXXX" next to final_path (mode 0644 once committed).
 * Errors: PD_ERR_IO naming the folder (missing, not writable, ...), PD_ERR_INVALID (empty or too long
 * path), PD_ERR_NOMEM. */
pd_status pd_file_sink_open(const char *final_path, unsigned flags, pd_file_sink **out);

/* The temporary file's path (readable by others once pd_file_sink_flush has returned). */
const char *pd_file_sink_temp_path(const pd_file_sink *s);
/* The final path given to open. */
const char *pd_file_sink_final_path(const pd_file_sink *s);
/* True when writes go through io_uring. */
int pd_file_sink_uses_uring(const pd_file_sink *s);

/* Writes n bytes of buf at offset (buf may be reused once this returns). The first write error
 * (ENOSPC, EFBIG, EIO, ...) is reported here or by a later call, as PD_ERR_IO naming the file; after
 * it every call fails. */
pd_status pd_file_sink_write(pd_file_sink *s, int64_t offset, const void *buf, size_t n);

/* Waits until every submitted write has completed; PD_ERR_IO if any failed. */
pd_status pd_file_sink_flush(pd_file_sink *s);

/* Flushes, fsyncs, closes and renames the file into place, then frees s (on failure too, after
 * removing the temporary file). */
pd_status pd_file_sink_commit(pd_file_sink *s);

/* Discards the file: waits for writes in flight, removes the temporary file and frees s. NULL is a
 * no-op. */
void pd_file_sink_abort(pd_file_sink *s);

#endif
