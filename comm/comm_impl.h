/* Inside the communicator: the request record and the backend function table that comm.c dispatches
 * through. comm.c checks every argument and owns the abort state; a backend only moves bytes, and
 * reports a failed wait as PD_ERR_TIMEOUT (deadline) or PD_ERR_DEVICE (dead peer, aborted group,
 * protocol mismatch), which comm.c then turns into an abort of the whole group. */
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
    /* Waits for a begun r (each backend wait bounded by the timeout) and returns its status. */
    pd_status (*finish)(pd_comm *c, pd_comm_req *r);
    /* Tells every rank the group failed (idempotent, any thread). why is never NULL. */
    void (*abort)(pd_comm *c, const char *why);
    /* Stops using every request begun on c and frees the backend state (not c itself). */
    void (*destroy)(pd_comm *c);
    /* Optional: runs a blocking call's r to completion on the calling thread and returns true with
     * its status in *st, or returns false (nothing done) when r must go through start/finish. */
    bool (*try_run)(pd_comm *c, pd_comm_req *r, pd_status *st);
    /* Optional: makes later calls wait for the work queued on `stream` so far. */
    void (*set_stream)(pd_comm *c, void *stream);
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

/* Backend constructors: fill c->impl (c->rank, size and timeout_s are set and checked). */
pd_status pd_comm__shm_open(pd_comm *c, const char *name);
extern const pd_comm_ops pd_comm__shm_backend;
#ifdef PD_HAVE_NCCL
pd_status pd_comm__nccl_unique_id(uint8_t id[PD_COMM_NCCL_ID_BYTES]);
pd_status pd_comm__nccl_open(pd_comm *c, const uint8_t id[PD_COMM_NCCL_ID_BYTES], int device);
extern const pd_comm_ops pd_comm__nccl_backend;
#endif

#endif
