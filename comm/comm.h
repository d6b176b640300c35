/* The communicator: collectives and point-to-point transfers among the ranks of one group (the
 * denoise group's sequence-parallel ranks, or a denoise/decode pair for Aco).
 *
 * One interface, two backends: shared memory for CPU worker processes on one host (pd_comm_shm_*),
 * and NCCL for GPUs (pd_comm_nccl_*, only in CUDA builds; elsewhere it returns PD_ERR_UNSUPPORTED).
 * Buffers live where the backend's tensors live (host memory for shm, device memory for NCCL). The
 * NCCL backend checks every buffer's pointer before a call begins and refuses host memory (and another
 * device's memory) with PD_ERR_INVALID, which leaves the group as it was; host values (timings,
 * counts) must be copied into a device buffer first.
 *
 * Every call that waits has a deadline (the communicator's timeout). When a wait runs past it, or a
 * peer is found dead, the call returns PD_ERR_TIMEOUT or PD_ERR_DEVICE with a message naming the
 * collective and the peer, and the communicator is aborted: every later call on any rank fails at
 * once instead of hanging. The group must then be rebuilt (the scheduler restarts it).
 *
 * Calls on one communicator are issued by one thread at a time in the same order on every rank.
 * Asynchronous variants return a request completed by pd_comm_wait; several may be in flight and
 * complete in issue order. */
#ifndef PD_COMM_H
#define PD_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Largest group any backend accepts. */
#define PD_COMM_MAX_RANKS 64

typedef struct pd_comm pd_comm;
typedef struct pd_comm_req pd_comm_req;

/* Joins (rank 0: creates) the shared-memory group `name` of `size` ranks. All ranks must call it
 * with the same name, size and timeout; it returns when every rank has joined, or PD_ERR_TIMEOUT.
 * name is a plain identifier (letters, digits, '_', '-'), at most 64 bytes.
 * The group lives in the segment "/pd-comm-<name>"; rank 0 replaces one left by a crashed run (ranks
 * that opened the stale one notice and join the new one). Asynchronous calls run in issue order on
 * one communication thread per communicator; a blocking call with none in flight runs on the
 * caller's thread. A shm wait fails when nothing moved for the timeout (a long
 * transfer that keeps moving is not cut off), or within about 50 ms of a waited-for peer's death
 * (the error names the peer's rank and pid). A mismatched call (other op, other byte count) fails
 * with PD_ERR_DEVICE naming both sides instead of desynchronising the group. Sends are buffered up to
 * a ring of 1 MiB per rank pair (smaller in groups over 8), so a send larger than that waits for
 * its recv. */
pd_status pd_comm_shm_create(const char *name, int rank, int size, double timeout_s, pd_comm **out);

/* Removes the shared segment of group `name` if one is left (a run whose ranks were killed before
 * rank 0 could destroy it). Harmless when there is none. */
void pd_comm_shm_unlink(const char *name);

/* NCCL: rank 0 makes the unique id (PD_COMM_NCCL_ID_BYTES bytes) and the daemon hands it to every
 * rank over the control channel. */
#define PD_COMM_NCCL_ID_BYTES 128
pd_status pd_comm_nccl_unique_id(uint8_t id[PD_COMM_NCCL_ID_BYTES]);
pd_status pd_comm_nccl_create(const uint8_t id[PD_COMM_NCCL_ID_BYTES], int rank, int size, int device,
                              double timeout_s, pd_comm **out);

int pd_comm_rank(const pd_comm *c);
int pd_comm_size(const pd_comm *c);
const char *pd_comm_backend(const pd_comm *c); /* "shm" or "nccl" */

/* All-to-all with per-rank byte counts and offsets: rank r sends send + send_off[p] (send_bytes[p]
 * bytes) to every rank p, and receives from p into recv + recv_off[p] (recv_bytes[p] bytes, which
 * must equal what p sends it). */
pd_status pd_comm_alltoallv(pd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_off,
                            void *recv, const size_t *recv_bytes, const size_t *recv_off);
pd_status pd_comm_alltoallv_async(pd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_off,
                                  void *recv, const size_t *recv_bytes, const size_t *recv_off, pd_comm_req **req);

/* Every rank contributes `bytes` from send; recv receives size * bytes in rank order. */
pd_status pd_comm_allgather(pd_comm *c, const void *send, void *recv, size_t bytes);
/* root's buf (bytes) is copied into every rank's buf. */
pd_status pd_comm_broadcast(pd_comm *c, void *buf, size_t bytes, int root);
/* Point to point: a send on one rank pairs with a recv of the same size on the peer. */
pd_status pd_comm_send(pd_comm *c, const void *buf, size_t bytes, int peer);
pd_status pd_comm_recv(pd_comm *c, void *buf, size_t bytes, int peer);
pd_status pd_comm_send_async(pd_comm *c, const void *buf, size_t bytes, int peer, pd_comm_req **req);
pd_status pd_comm_recv_async(pd_comm *c, void *buf, size_t bytes, int peer, pd_comm_req **req);
pd_status pd_comm_barrier(pd_comm *c);

/* Waits for an asynchronous call (up to the timeout) and frees req. Its buffers may be reused after.
 * Once the group is aborted (by a failed call, or by pd_comm_abort from any thread, also while this
 * wait runs) it returns PD_ERR_DEVICE with the group's reason for every request, completed or not:
 * the results of an aborted group are not guaranteed. */
pd_status pd_comm_wait(pd_comm *c, pd_comm_req *req);

/* NCCL: the CUDA stream (a cudaStream_t) whose queued work produces the send buffers; each later call
 * makes the communicator's own stream wait for the work queued on it so far (an event), so compute and
 * communication stay ordered without a host sync. NULL (the default) is the legacy default stream.
 * A no-op on the shm backend, whose buffers are host memory. */
void pd_comm_set_stream(pd_comm *c, void *stream);

/* Marks the group failed: wakes every waiter on every rank with PD_ERR_DEVICE. Safe from any thread. */
void pd_comm_abort(pd_comm *c, const char *why);
/* Leaves the group and frees the communicator (rank 0 also removes the shared segment). */
void pd_comm_destroy(pd_comm *c);

#endif
