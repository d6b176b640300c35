/* A worker process: `pipedit worker --socket PATH --role denoise|decode|all --model DIR
 * [--threads N] [--device cpu|cuda[:N]]`.
 *
 * It connects to the scheduler's Unix socket, exchanges HELLO, loads only the model parts its role
 * needs, warms up (one small run of each of its stages, timed), sends READY with those times and then
 * waits on the control channel. For each ASSIGN it runs one stage, sending PROGRESS after every step and
 * DONE (with the stage's wall time) or ERROR at the end. A reader thread handles CANCEL (the stage's
 * stop flag, read before every DiT block, denoising step and latent frame) and SHUTDOWN; a heartbeat
 * thread sends HEARTBEAT at the interval the scheduler's HELLO names, with the worker's progress
 * counter: every step, every encoded prompt and whatever finer point the stages report through
 * pd_worker_note_progress advance it, so the scheduler's watchdog can tell a stuck stage from a slow
 * one (pipeline_stages.c counts every DiT evaluation). At the deadline an ASSIGN carries, the same
 * thread sets the stop flag to PD_STOP_DEADLINE: the stage then ends with ERROR code
 * "deadline_exceeded". Tensors between stages go through shared memory (comm/shm.h):
 *   text:    prompt -> context (L, text_dim) f32 into shm_cond, negative prompt into shm_uncond
 *            (only when guidance > 1)
 *   denoise: shm_cond (+ shm_uncond) -> latent (16, T, H/8, W/8) f32 into shm_latent
 *   decode:  shm_latent -> mp4_path (+ thumb_path)
 *
 * Sequence parallelism: a denoise worker that belongs to an SP group gets GROUP while idle; it leaves
 * any earlier group, joins the new one (workers/sp_group.h) and answers JOINED (or ERROR with job ""
 * when joining failed). A DENOISE ASSIGN then names the group generation and the worker's rank: every
 * rank runs the same sampler loop over the group; the leader (rank 0) reports progress, reads the
 * stop flag (shared with the others before every DiT block, so every rank stops at the same block)
 * and alone writes the latent. A TEXT ASSIGN of a group job goes to the leader only; the other ranks
 * read the contexts from shared memory.
 *
 * Aco (models/wan/aco.h): an ACO names a two-rank pair communicator and a side. A decode worker
 * (rank 1) serves lends on a thread of its own, on its stages' backend, until the lender finishes or
 * the pair fails, then answers ACO_DONE. Decoding comes first: a DECODE ASSIGN sets the decline flag
 * in the reader thread the moment it arrives, the decode waits for the one lend in progress (if any)
 * and then runs; the time from the ASSIGN to the decode starting goes back in DONE (aco.backoff_s),
 * and the flag is cleared when the decode ends. A denoise worker (rank 0) joins at the next
 * self-attention of its running denoise stage (its DiT's self-attention goes through the worker while
 * a denoise runs), lends from then on and finishes the pair when the stage ends (whatever its
 * result); what it lent goes back in the stage's DONE (aco). A failed lend costs nothing but the
 * lending: the lent heads are recomputed locally (aco.h), so the latent is the same bytes. An ACO that
 * arrives for no running denoise is joined and finished at once, so its helper never waits.
 *
 * The stage work itself goes through a pd_worker_stages table so the protocol side can be exercised
 * with synthetic stages; pd_worker_pipeline_stages() (workers/pipeline_stages.c) is the real one,
 * running models/pipeline.h. */
#ifndef PD_WORKERS_WORKER_H
#define PD_WORKERS_WORKER_H

#include <stdatomic.h>

#include "models/pipeline.h"
#include "models/wan/dit.h"
#include "proto/proto.h"
#include "workers/sp_group.h"

/* The stage implementations a worker runs. self is the table's own context. Every call returns a
 * pd_status with pd_error_set() on failure; PD_ERR_CANCELLED when *cancel was seen. */
typedef struct pd_worker_stages {
    void *self;
    /* Loads the model parts (PD_PART_* bits) from model_dir onto the backend `device` names
     * (engine/backend.h pd_backend_create) with `threads` CPU threads. */
    pd_status (*load)(void *self, const char *model_dir, const char *device, int threads, unsigned parts);
    /* Checks a request against the loaded model (PD_ERR_INVALID naming the field). */
    pd_status (*validate)(void *self, const pd_gen_params *p);
    /* ctx_out: host f32 (L, text_dim), allocated by the call, freed by the caller with pd_tensor_free. */
    pd_status (*encode_text)(void *self, const char *prompt, pd_tensor *ctx_out);
    /* latent_out: host f32 (16, T, H/8, W/8), allocated by the call. ctx_uncond NULL when guidance <= 1.
     * In a group every rank calls it; cancel is then read by the leader only (sp_group.h). */
    pd_status (*denoise)(void *self, const pd_gen_params *p, const pd_tensor *ctx_cond, const pd_tensor *ctx_uncond,
                         pd_tensor *latent_out, pd_progress_fn progress, void *ud, const atomic_int *cancel);
    /* Writes the MP4 at p->fps, tagged with how p made it (and the thumbnail when thumb_path is not
     * NULL). */
    pd_status (*decode)(void *self, const pd_tensor *latent, const pd_gen_params *p, const char *mp4_path,
                        const char *thumb_path, pd_progress_fn progress, void *ud, const atomic_int *cancel);
    /* Latent shape (16, T, H/8, W/8) for p (used to warm up a decode-only worker). */
    void (*latent_shape)(void *self, const pd_gen_params *p, int64_t shape[4]);
    void (*unload)(void *self);
    /* Leaves any group, then joins the one spec describes: later denoise calls run over it (unload
     * leaves it). NULL: the stages cannot run in groups (a GROUP is then answered with an ERROR). */
    pd_status (*join_group)(void *self, const pd_sp_group_spec *spec);
    /* Aco: the backend the stages compute on (loaded), and the route of the DiT's self-attention
     * (fn NULL: the engine's op again). NULL members: the stages take no part in Aco (an ACO to serve
     * is then answered with a failed ACO_DONE; one to lend is joined and finished at once). */
    pd_backend *(*backend)(void *self);
    void (*set_self_attention)(void *self, pd_wan_attention_fn fn, void *ud);
} pd_worker_stages;

/* The stages of models/pipeline.h on the CPU backend. The table is static; one per process. */
const pd_worker_stages *pd_worker_pipeline_stages(void);

/* Tells the watchdog that the running stage advanced, at a grain finer than the steps it reports through
 * its progress callback (e.g. one DiT evaluation). progress_ud is the ud the worker passed to the
 * stage's denoise or decode call; NULL (warm-up) does nothing. Safe from any thread. */
void pd_worker_note_progress(void *progress_ud);

/* The `pipedit worker` command (argv[0] = "worker"): parses the command line, then runs a worker with
 * stages until SHUTDOWN or until the scheduler's connection closes. Returns the exit code: 0 after an
 * orderly end or `--help`, 2 for a usage error, 1 when connecting, the handshake, loading or warm-up
 * failed (the message goes to stderr; a start-up failure is also sent to the scheduler as an ERROR
 * with an empty job id). */
int pd_worker_main(int argc, char **argv, const pd_worker_stages *stages);

#endif
