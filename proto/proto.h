/* The control protocol between the scheduler (in the daemon) and its worker processes.
 *
 * Transport: a Unix stream socket per worker. Every message is one frame: a 4-byte little-endian
 * payload length (1 .. PD_PROTO_MAX_FRAME), then the payload. The payload starts with a one-byte
 * message kind and continues with that kind's fields in a fixed order: integers little-endian
 * (u8/i32/u32/u64), floats as IEEE-754 f32/f64 bit patterns, strings as a u32 byte count followed by
 * that many bytes (no NUL, bounded by the destination field). A frame must be consumed exactly by its
 * fields; trailing bytes are an error.
 *
 * Handshake: the worker connects and sends HELLO (magic, version, pid, role); the scheduler checks
 * magic and version and answers with its own HELLO carrying the heartbeat interval. Either side drops
 * a peer whose first message is not a matching HELLO. The worker then loads its model parts, warms up
 * and sends READY with the stage times it measured. After that the scheduler sends ASSIGN / CANCEL /
 * SHUTDOWN and the worker answers with PROGRESS / DONE / ERROR and sends HEARTBEAT periodically. Every
 * HEARTBEAT carries the worker's progress counter, which grows whenever its running stage advances at
 * any grain (a DiT evaluation, a denoising step, a decoded frame, an encoded prompt): the scheduler
 * tells a worker that is alive but stuck (heartbeats, counter still) from a slow one (counter moving).
 * Workers of a sequence-parallel denoise group are also sent GROUP while idle (after READY and after
 * every group failure) and answer JOINED once their communicators are up; every ASSIGN of a group job
 * names the generation it expects, so a worker never computes on a stale group.
 * Aco (scheduler/aco_pair in scheduler_impl.h): the scheduler sends ACO to a denoise worker running a
 * denoise stage and to an idle decode worker with the same pair communicator; the decode worker serves
 * lends on a thread of its own until the lender finishes (or the pair fails) and then answers ACO_DONE;
 * the denoise worker joins at its next self-attention and reports what it lent in its stage's DONE.
 *
 * Only small messages travel here. Tensors go through named shared-memory segments (comm/shm.h)
 * whose names an ASSIGN carries. Every length read from the peer is bounded: a malformed, truncated,
 * oversized or unknown message is a protocol error (PD_ERR_FORMAT) after which the caller drops the
 * peer; decoding never reads outside the frame and never crashes. */
#ifndef PD_PROTO_H
#define PD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "models/pipeline.h"
#include "comm/comm.h"

#define PD_PROTO_MAGIC 0x4b574450u /* "PDWK" */
#define PD_PROTO_VERSION 5u
#define PD_PROTO_MAX_FRAME (64 * 1024) /* payload bytes; larger length prefixes are rejected */
#define PD_PROTO_ID_MAX 128            /* job id field, including the NUL */
#define PD_PROTO_TEXT_MAX 16384        /* prompt / negative prompt, including the NUL */
#define PD_PROTO_PATH_MAX 1024         /* file paths, including the NUL */
#define PD_PROTO_SHM_MAX 64            /* shared-memory names, including the NUL */
#define PD_PROTO_CODE_MAX 32           /* error codes ("cancelled", "invalid", ...), including the NUL */
#define PD_PROTO_MSG_MAX 512           /* error messages, including the NUL (longer ones are cut on encode) */
#define PD_PROTO_MAX_RANKS PD_COMM_MAX_RANKS         /* ranks of one group: the communicator's limit */
#define PD_PROTO_NCCL_ID_BYTES PD_COMM_NCCL_ID_BYTES /* one NCCL unique id */
#define PD_PROTO_GROUP_COMMS 3         /* a group's communicators: SP halves 0 and 1, the CFG pair */

typedef enum pd_msg_kind {
    PD_MSG_HELLO = 1,  /* both directions, first message: magic, version, pid, role / heartbeat_ms */
    PD_MSG_READY,      /* worker: loaded and warmed up; stage_seconds holds the warm-up times
                        * (of pd_proto_warmup_params()'s request) */
    PD_MSG_ASSIGN,     /* scheduler: run one stage of a job */
    PD_MSG_PROGRESS,   /* worker: step of total done within stage */
    PD_MSG_DONE,       /* worker: the assigned stage finished; seconds = its wall time */
    PD_MSG_ERROR,      /* worker: the assigned stage (or start-up when job_id is "") failed */
    PD_MSG_CANCEL,     /* scheduler: stop job_id before its next DiT block or latent frame */
    PD_MSG_HEARTBEAT,  /* worker: still alive; ticks = its progress counter */
    PD_MSG_SHUTDOWN,   /* scheduler: finish nothing, exit */
    PD_MSG_GROUP,      /* scheduler: leave any SP group, join group generation group_gen as rank of ranks */
    PD_MSG_JOINED,     /* worker: joined group generation group_gen (a failed join is an ERROR, job "") */
    PD_MSG_ACO,        /* scheduler: join Aco pair session aco_seq: serve lends (aco_serve 1) or lend (0) */
    PD_MSG_ACO_DONE,   /* helper: session aco_seq ended (aco: its counts; code/message: why, "" = finished) */
    PD_MSG_KIND_END
} pd_msg_kind;

/* What a worker process loads and runs. */
typedef enum pd_worker_role {
    PD_ROLE_DENOISE = 0, /* text encoder + DiT: encodes a job's prompts, then denoises it */
    PD_ROLE_DECODE,    /* VAE only */
    PD_ROLE_ALL,       /* everything: one worker runs whole jobs (N = 1) */
    PD_ROLE_COUNT
} pd_worker_role;

/* "denoise", "decode", "all". */
const char *pd_worker_role_name(pd_worker_role r);
/* Parses a role name; PD_ERR_INVALID naming the value otherwise. */
pd_status pd_worker_role_parse(const char *s, pd_worker_role *out);

/* What an Aco session did: a lender's figures in the DONE of its denoise stage, a helper's in
 * ACO_DONE; backoff_s in the DONE of a decode stage. */
typedef struct pd_msg_aco {
    uint64_t calls;      /* self-attention calls (lender) */
    uint64_t lends;      /* calls whose lent heads came back (lender), lends computed (helper) */
    uint64_t declined;   /* requests declined because a decode came first */
    uint64_t heads_total, heads_lent;
    double wait_s;       /* lender: time blocked on lent heads after its own; helper: attention compute time */
    double backoff_s;    /* decode: from its ASSIGN to the decode starting (the in-flight lend finished) */
    double lend_max_s;   /* helper: the longest attention time of one lend */
    int32_t failed;      /* 1: a lend failed and the lent heads were computed by the lender */
} pd_msg_aco;

/* One decoded message. Fields a kind does not carry are zero. Strings are NUL-terminated and owned by
 * the struct (fixed buffers), so a pd_msg needs no cleanup; it is large (~40 KiB): keep it off small
 * stacks or reuse one. */
typedef struct pd_msg {
    pd_msg_kind kind;
    /* HELLO */
    uint32_t magic, version;
    int32_t pid;
    int32_t role;          /* pd_worker_role (worker -> scheduler) */
    int32_t heartbeat_ms;  /* scheduler -> worker */
    /* READY: warm-up seconds per pd_stage (0 = not measured by this role); aco_capable 1 when the
     * worker's stages can lend or serve Aco heads */
    double stage_seconds[PD_STAGE_COUNT];
    int32_t aco_capable;
    /* ASSIGN, PROGRESS, DONE, ERROR, CANCEL */
    char job_id[PD_PROTO_ID_MAX];
    int32_t stage;         /* pd_stage */
    /* ASSIGN: the request (pd_gen_params fields) and where its tensors and files go */
    char prompt[PD_PROTO_TEXT_MAX];
    char negative_prompt[PD_PROTO_TEXT_MAX];
    uint64_t seed;
    int32_t width, height, frames, steps, fps;
    float guidance, shift;
    int32_t sampler;       /* pd_sampler_kind */
    int32_t noise;         /* pd_noise_kind */
    char shm_cond[PD_PROTO_SHM_MAX], shm_uncond[PD_PROTO_SHM_MAX], shm_latent[PD_PROTO_SHM_MAX];
    char mp4_path[PD_PROTO_PATH_MAX], thumb_path[PD_PROTO_PATH_MAX]; /* thumb_path "" = none */
    /* ASSIGN (the group generation the job runs on and this worker's rank in it; 0 and 0 outside
     * a group), GROUP, JOINED */
    uint32_t group_gen;
    int32_t rank;
    /* ASSIGN: the job's deadline, CLOCK_REALTIME seconds (0 = none; since version 5). The worker stops the
     * stage there as it stops for a cancel, with code "deadline_exceeded". */
    double deadline;
    /* GROUP: the group's size, PipeSP chunk, CFG parallelism, collective timeout and the base name of
     * its communicators (workers/sp_group.h) */
    int32_t ranks;
    int32_t chunk_heads;
    int32_t cfg_parallel;  /* 0 or 1 */
    double comm_timeout_s;
    char comm_name[PD_PROTO_SHM_MAX];
    int32_t comm_nccl;     /* 0: shared memory (names from comm_name); 1: NCCL with the ids below, made by
                            * the daemon (its process hosts NCCL's bootstrap root) */
    uint8_t nccl_ids[PD_PROTO_GROUP_COMMS][PD_PROTO_NCCL_ID_BYTES]; /* SP half 0, SP half 1, CFG pair */
    /* ACO: the session number, the side (1 = serve: rank 1 of the pair; 0 = lend: rank 0) and, for the
     * lender, the heads of each self-attention to lend (-1: chosen from measured times; -2: half of
     * them, PD_ACO_SHARE_HALF); job_id names the denoise stage it belongs to. The communicator is
     * comm_name / comm_nccl / nccl_ids[0] / comm_timeout_s as in GROUP. ACO_DONE: aco_seq, aco. */
    uint32_t aco_seq;
    int32_t aco_serve, aco_share;
    pd_msg_aco aco;        /* DONE (denoise: lender; decode: backoff_s), ACO_DONE */
    /* PROGRESS */
    int32_t step, total;
    /* DONE */
    double seconds;
    /* HEARTBEAT: how often the worker's stages have advanced since it started (only ever grows) */
    uint64_t ticks;
    /* ERROR */
    char code[PD_PROTO_CODE_MAX];
    char message[PD_PROTO_MSG_MAX];
} pd_msg;

/* Clears m and sets its kind (and, for HELLO, magic and version). */
void pd_msg_init(pd_msg *m, pd_msg_kind kind);

/* Fills the pd_gen_params fields of an ASSIGN from p (strings copied). PD_ERR_INVALID when a string
 * does not fit its field. */
pd_status pd_msg_set_params(pd_msg *m, const pd_gen_params *p);
/* A pd_gen_params view of an ASSIGN's fields; its strings point into m. */
pd_gen_params pd_msg_params(const pd_msg *m);

/* The request every worker runs once at start to warm up; READY's stage_seconds are its stage times
 * (the scheduler turns them into its first cost rates, scheduler/estimate.h). */
pd_gen_params pd_proto_warmup_params(void);

/* Copies src into a fixed field of size cap; PD_ERR_INVALID naming `what` when it does not fit. */
pd_status pd_msg_set_str(char *dst, size_t cap, const char *src, const char *what);

/* Encodes m as one frame (length prefix included) into buf of cap bytes and stores its size in *n.
 * PD_ERR_INVALID for an unknown kind or a frame over PD_PROTO_MAX_FRAME. */
pd_status pd_proto_encode(const pd_msg *m, uint8_t *buf, size_t cap, size_t *n);

/* Decodes one payload (without its length prefix) of n bytes. PD_ERR_FORMAT with a message for
 * anything malformed: unknown kind, a field running past the end, a string longer than its field or
 * holding a NUL, trailing bytes. */
pd_status pd_proto_decode(const uint8_t *payload, size_t n, pd_msg *m);

/* Encodes m and writes the whole frame to a stream socket (retrying short writes and EINTR; never
 * raises SIGPIPE). PD_ERR_IO when the peer is gone. Not thread-safe per fd: callers sharing a socket
 * between threads serialise their sends. */
pd_status pd_proto_send(int fd, const pd_msg *m);

/* Incremental frame reader for one connection: bytes arrive in any pieces, messages come out whole. */
typedef struct pd_proto_reader {
    size_t len;                          /* bytes buffered */
    uint8_t buf[4 + PD_PROTO_MAX_FRAME]; /* at most one frame */
} pd_proto_reader;

/* Empties the reader (after a reconnect). */
void pd_proto_reader_reset(pd_proto_reader *r);

/* Reads what one read(2) returns from fd into the reader. PD_OK when bytes arrived (or EINTR/EAGAIN),
 * PD_ERR_IO when the peer closed the connection or the read failed. */
pd_status pd_proto_reader_fill(pd_proto_reader *r, int fd);

/* Appends bytes from memory (tests, fuzzing). PD_ERR_FORMAT when they do not fit the buffer, which
 * only happens when the caller did not drain complete messages with pd_proto_reader_next. */
pd_status pd_proto_reader_feed(pd_proto_reader *r, const uint8_t *data, size_t n);

/* Takes the next complete message out of the reader: PD_OK with *got true and m filled, PD_OK with
 * *got false when the frame is still incomplete, PD_ERR_FORMAT for a length prefix of 0 or over
 * PD_PROTO_MAX_FRAME or an undecodable payload (the connection must then be dropped). */
pd_status pd_proto_reader_next(pd_proto_reader *r, pd_msg *m, bool *got);

/* Blocks until one whole message arrives on fd or timeout_ms passes (< 0: no limit).
 * PD_ERR_TIMEOUT, PD_ERR_IO (peer closed), PD_ERR_FORMAT (bad frame). */
pd_status pd_proto_recv(int fd, pd_proto_reader *r, pd_msg *m, int timeout_ms);

#endif
