/* The shared-memory data plane of the CPU backend: one named POSIX shared-memory segment per tensor
 * handed between worker processes (a job's text contexts, the latent going from the denoise group to
 * the decode group).
 *
 * A segment is a 64-byte-aligned header (magic, version, dtype, ndim, shape, byte size) followed by the
 * tensor's contiguous bytes. The producer creates it with the exact shape (so the consumer needs no
 * size agreed in advance); the consumer opens it read-only and gets a tensor view after the header has
 * been checked against the segment's real size. The scheduler picks the names (pd_shm_job_name) and
 * owns their lifetime: it unlinks them when the job ends or fails, also when the producer died midway.
 * Segments are bounded by PD_SHM_MAX_BYTES. */
#ifndef PD_COMM_SHM_H
#define PD_COMM_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"

#define PD_SHM_MAGIC 0x4d485344u       /* "DSHM" */
#define PD_SHM_VERSION 1u
#define PD_SHM_MAX_BYTES (8ull << 30) /* largest tensor a segment may hold */
#define PD_SHM_NAME_MAX 64             /* including the NUL */

typedef struct pd_shm {
    char name[PD_SHM_NAME_MAX];
    void *base;        /* the mapping (header + data) */
    size_t map_bytes;
    pd_tensor tensor;  /* view of the data; valid until pd_shm_close */
} pd_shm;

/* Formats a segment name "/pd-<pid>-<instance>-<job_seq>-<what>" into out (PD_SHM_NAME_MAX bytes).
 * pid is the scheduler's process id and instance tells schedulers of one process apart, so two
 * daemons on one host (or two schedulers in one program) never collide. */
void pd_shm_job_name(char *out, int pid, unsigned instance, uint64_t job_seq, const char *what);

/* Removes job segments (pd_shm_job_name's names) that nobody can be using: those of scheduler
 * `instance` of process `pid` (the caller's own names, left by an earlier process that had the same
 * pid and was killed before it removed them: a pid is reused, and the next job of that number would
 * find its name taken) and those of processes that no longer exist. "No longer exist" is judged in
 * the caller's pid namespace: /dev/shm must not be shared with daemons of another one (containers
 * get their own unless run with the host's IPC namespace). Returns how many it removed. */
int pd_shm_sweep_stale(int pid, unsigned instance);

/* Creates a new segment `name` (it must not exist) for a contiguous tensor of dtype dt and shape, maps
 * it read-write and returns it with a zeroed tensor view to fill. PD_ERR_INVALID for a bad name or
 * shape or a size over PD_SHM_MAX_BYTES, PD_ERR_IO when the segment cannot be made (exists, no space). */
pd_status pd_shm_create(const char *name, pd_dtype dt, int ndim, const int64_t *shape, pd_shm *out);

/* Creates a segment holding a copy of src (any strides, float dtypes kept). */
pd_status pd_shm_create_from(const char *name, const pd_tensor *src, pd_shm *out);

/* Opens an existing segment read-only and checks its header against its real size: magic, version,
 * known dtype, 0..PD_MAX_DIMS dims, non-negative dims, byte count = elements x dtype size and within
 * PD_SHM_MAX_BYTES and the segment. PD_ERR_NOT_FOUND when it does not exist, PD_ERR_FORMAT naming the
 * segment and the field otherwise. The view must not be written. */
pd_status pd_shm_open(const char *name, pd_shm *out);

/* Creates the segment `name` ('/' then up to 254 bytes, no other '/'; pd_shm_create's tighter
 * PD_SHM_NAME_MAX rule is not applied) exclusively (it must not exist) with `bytes` zeroed bytes and maps it
 * read-write into *base (bytes long; the caller unmaps it with munmap). On failure nothing is left
 * behind: PD_ERR_INVALID for a bad name, PD_ERR_IO naming the segment when it exists or cannot be
 * sized or mapped. The raw form of pd_shm_create, shared with the communicator's control segment. */
pd_status pd_shm_map_new(const char *name, size_t bytes, void **base);

/* Unmaps (the segment itself stays until unlinked). Safe on a zeroed struct. */
void pd_shm_close(pd_shm *s);

/* Removes the segment name; a missing one is not an error. */
void pd_shm_unlink(const char *name);

#endif
