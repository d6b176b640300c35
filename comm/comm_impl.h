/* Inside the communicator: the request record and the backend function table that comm.c dispatches
 * through. comm.c checks every argument and owns the abort state; a backend only moves bytes, and
 * reports a failed wait as PD_ERR_TIMEOUT (deadline) or PD_ERR_DEVICE (dead peer, aborted group,
 * protocol mismatch), which comm.c then turns into an abort of the whole group.
 *
 * After an abort comm.c never calls finish again: a request still out is handed to drop, and its wait
 * fails with the group's error (an aborted backend, such as NCCL after ncclCommAbort, has freed what
 * finish would query, and no longer guarantees the result of work that was in flight). */
#ifndef PD_COMM_IMPL_H
#define PD_COMM_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "comm/comm.h"

typedef enum pd_comm_op {
    PD_COMM_ALLTOALLV = 1,
    PD_COMM_ALLGATHER,
    PD_COMM_BROADCAST,
    PD_COMM_SEND,
    PD_COMM_RECV,
    PD_COMM_BARRIER,
} pd_comm_op;

/* "alltoallv", "allgather", ... for messages. */
const char *pd_comm_op_name(pd_comm_op op);

#define PD_COMM_ERR_BYTES 320

struct pd_comm_req {
    pd_comm_op op;
    const void *send;
    void *recv;   /* broadcast: the one buffer (send == recv) */
    size_t bytes; /* allgather (per rank), broadcast, send, recv */
    int peer;     /* send/recv peer, broadcast root */
    /* alltoallv: size entries each, copied from the caller (the request outlives its arrays) */
    size_t *send_bytes, *send_off, *recv_bytes, *recv_off;
    /* Completion, written by the backend before it reports the request done. */
    pd_status status;
    char err[PD_COMM_ERR_BYTES];
    atomic_int done;
    void *impl;                          /* backend's per-request state */
    struct pd_comm_req *next;            /* backend queue link */
    struct pd_comm_req *all_prev, *all_next; /* comm.c's list of requests not yet waited for */
};

typedef struct pd_comm_ops {
    const char *name;
    /* Begins r (queues it, or enqueues it on a stream). PD_OK, or a failure that leaves r not begun. */
    pd_status (*start)(pd_comm *c, pd_comm_req *r);
    /* Waits for a begun r (each backend wait bounded by the timeout) and returns its status. Only
     * while the group is not aborted. */
    pd_status (*finish)(pd_comm *c, pd_comm_req *r);
    /* Releases a begun r of an aborted group, its result discarded: it returns promptly (the abort woke
     * every waiter) and touches nothing the abort released. The calling thread is the one issuing calls
     * on c, so a backend may finish its abort here (NCCL: ncclCommAbort when it was only asked for). */
    void (*drop)(pd_comm *c, pd_comm_req *r);
    /* Tells every rank the group failed (idempotent, any thread). why is never NULL. */
    void (*abort)(pd_comm *c, const char *why);
    /* Stops using every request begun on c and frees the backend state (not c itself). */
    void (*destroy)(pd_comm *c);
    /* Optional: runs a blocking call's r to completion on the calling thread and returns true with
     * its status in *st, or returns false (nothing done) when r must go through start/finish. */
    bool (*try_run)(pd_comm *c, pd_comm_req *r, pd_status *st);
    /* Optional: makes later calls wait for the work queued on `stream` so far. */
    void (*set_stream)(pd_comm *c, void *stream);
    /* Optional: PD_OK when the backend can move `which` (a buffer of the call op, at least one byte)
     * at p, else PD_ERR_INVALID saying why (NCCL: host memory instead of device memory). Runs before r
     * begins, so a refused buffer changes nothing. */
    pd_status (*check_buffer)(pd_comm *c, pd_comm_op op, const char *which, const void *p);
} pd_comm_ops;

struct pd_comm {
    const pd_comm_ops *be;
    void *impl;
    int rank, size;
    double timeout_s;
    atomic_int aborted;
    pthread_mutex_t mu; /* guards why and the request list */
    char why[PD_COMM_ERR_BYTES];
    pd_comm_req *reqs; /* begun, not yet waited for */
};

/* p + off, or NULL for a NULL p (a zero-byte transfer may pass no buffer). */
static inline const uint8_t *pd_comm__at(const void *p, size_t off) { return p ? (const uint8_t *)p + off : NULL; }
/* Copies the calling thread's error message into r->err and stores st as r's status. */
void pd_comm__req_fail(pd_comm_req *r, pd_status st);

/* Where a buffer's memory is, as a device backend's pointer query tells it. */
typedef enum pd_comm_mem {
    PD_COMM_MEM_HOST = 1,    /* pageable host memory: stack, malloc, mmap */
    PD_COMM_MEM_HOST_PINNED, /* page-locked or registered host memory */
    PD_COMM_MEM_DEVICE,      /* device memory of device `device` */
    PD_COMM_MEM_MANAGED,     /* unified (managed) memory */
} pd_comm_mem;

/* The rule of a communicator that moves device memory only (NCCL): PD_OK for device memory of
 * comm_device and for managed memory; PD_ERR_INVALID naming the call, the buffer, where it is and what
 * is wanted for host memory (pinned or not: collectives' kernels would read host addresses) and for
 * another device's memory. A pure function: the backend asks the driver, this decides. */
pd_status pd_comm__check_device_buffer(pd_comm_op op, const char *which, const void *p, pd_comm_mem where, int device,
                                       int comm_device);

/* Backend constructors: fill c->impl (c->rank, size and timeout_s are set and checked). */
pd_status pd_comm__shm_open(pd_comm *c, const char *name);
extern const pd_comm_ops pd_comm__shm_backend;
#ifdef PD_HAVE_NCCL
pd_status pd_comm__nccl_unique_id(uint8_t id[PD_COMM_NCCL_ID_BYTES]);
pd_status pd_comm__nccl_open(pd_comm *c, const uint8_t id[PD_COMM_NCCL_ID_BYTES], int device);
extern const pd_comm_ops pd_comm__nccl_backend;
#endif

#endif
