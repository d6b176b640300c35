/* Aco, attention co-processing (DESIGN.md section 6): a denoise rank lends some heads of each
 * self-attention to a helper, a decode worker with nothing to decode, and computes the other heads
 * itself meanwhile.
 *
 * The two sides share a communicator (shared memory on the CPU, NCCL between GPUs); the lender is
 * one rank of it and the helper another. One lend of one attention call (q (B, Nq, H, D), k (B, Nk,
 * H, D), v (B, Nk, H, Dv), contiguous on the lender's backend) of which l heads are lent:
 *   lender                                   helper
 *   request {shape, l, scale}      ------>   (declines when asked to stop helping)
 *                                  <------   answer {accepted or declined}
 *   q, k, v of heads H-l..H-1      ------>   (sends issued before local compute)
 *   attention of heads 0..H-l-1              attention of the l heads (the engine's op)
 *                                  <------   their output, then the helper's compute time
 *   output copied into its heads (receives waited after local compute)
 * Attention of one head does not depend on the others, and both sides run the same op on the same
 * values, so on the same backend and dtype the result is the same bytes as without Aco.
 *
 * A declined request costs one round trip: the lender computes every head itself for that call. A
 * failed lend (the helper died, or the communicator timed out or was aborted) is not an error: the
 * lender computes the lent heads itself from its own copies, stops lending for its lifetime, and
 * reports the failure in its stats; the caller's result is unchanged.
 *
 * The share. How many heads to lend is chosen per attention shape from times measured at run time
 * (pd_aco_choose_share): the first call of a shape computes every head locally (the local time per
 * head), the next two lend half the heads (the first of them also grows both sides' buffers and is
 * not measured), and every later call lends the chosen share. Every measured lend updates the
 * estimates (running averages) and the share is chosen again, changing only for a clear predicted
 * gain: the kept heads' time per head, the helper's compute time per head (its report), and the
 * transfer time per head (the helper's path minus its compute, known when the lender had to wait
 * for it, bounded by the kept heads' time when it did not). A shape that lends nothing is not
 * measured again. A new shape is measured anew (a few shapes are remembered: PipeSP's chunks
 * alternate between two). */
#ifndef PD_WAN_ACO_H
#define PD_WAN_ACO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "comm/comm.h"
#include "engine/backend.h"

/* ---- the share rule (pure) ---- */

typedef struct pd_aco_share_in {
    int heads;       /* heads of one attention call on the lender (>= 1) */
    double local_s;  /* attention seconds per head on the lender */
    double helper_s; /* attention seconds per head on the helper */
    double xfer_s;   /* seconds per head to move q, k, v to the helper and the output back */
    double fixed_s;  /* seconds per lend independent of the heads (the request's round trip) */
} pd_aco_share_in;

/* A share must be predicted faster than lending nothing by this fraction to be taken: timings on a
 * shared machine move by a few percent between calls. */
#define PD_ACO_SHARE_MARGIN 0.05

/* Predicted seconds of one attention call lending `lent` of the heads (0..heads): the kept heads
 * compute locally while the lent ones travel and compute on the helper, so the call takes the longer
 * of the two: max((heads - lent) * local_s, fixed_s + lent * (xfer_s + helper_s)); lent 0 is
 * heads * local_s. Inputs must be finite and >= 0 (a broken requirement aborts). */
double pd_aco_predict(const pd_aco_share_in *in, int lent);

/* The number of heads to lend: the share with the smallest predicted time, the smaller share on a
 * tie, and 0 unless that time beats lending nothing by PD_ACO_SHARE_MARGIN (a shape where lending
 * does not pay lends nothing). */
int pd_aco_choose_share(const pd_aco_share_in *in);

/* ---- the lender (a denoise rank) ---- */

typedef struct pd_aco_lender pd_aco_lender;

typedef struct pd_aco_stats {
    uint64_t calls;          /* attention calls made through the lender */
    uint64_t lends;          /* calls that lent heads and got them back */
    uint64_t declined;       /* requests the helper declined */
    uint64_t heads_total;    /* heads over all calls */
    uint64_t heads_lent;     /* heads computed by the helper */
    double lend_wait_s;      /* time blocked waiting for lent heads after the local compute */
    bool failed;             /* a lend failed: lending stopped, the heads were recomputed here */
    char error[256];         /* the failure's message ("" when none) */
} pd_aco_stats;

/* share for pd_aco_lender_create: lend half the heads of every call (at least one). */
#define PD_ACO_SHARE_HALF (-2)

/* Makes a lender that lends to rank `helper` of communicator c (which must outlive it), running its
 * own heads and the copies on backend be. share -1 chooses the share from measurements (above);
 * PD_ACO_SHARE_HALF lends max(1, heads / 2) heads of every call; a share >= 0 lends min(share, heads)
 * heads of every call (0: never lends; for comparisons and tests).
 * PD_ERR_INVALID for a bad rank, PD_ERR_NOMEM. */
pd_status pd_aco_lender_create(pd_comm *c, int helper, pd_backend *be, int share, pd_aco_lender **out);

/* out (B, Nq, H, Dv) = attention(q, k, v, scale), with some heads lent (above). The signature is
 * pd_wan_attention_fn's (models/wan/dit.h) with the lender as ud, so a DiT can route its
 * self-attention here. Errors: those of pd_op_attention and pd_op_copy on the lender's backend
 * (never the helper's or the communicator's). */
pd_status pd_aco_attention(void *lender, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                           float scale);

/* Tells the helper that no more requests come, so pd_aco_serve returns PD_OK. Call it once, when done.
 * After a failure it does nothing and returns PD_OK. */
pd_status pd_aco_lender_finish(pd_aco_lender *l);

/* The counts so far. */
void pd_aco_lender_stats(const pd_aco_lender *l, pd_aco_stats *out);

/* The heads the last call of the given shape lent (-1 before that shape's first call). */
int pd_aco_lender_last_share(const pd_aco_lender *l);

/* Frees the lender's buffers (not the communicator or the backend). NULL is a no-op. */
void pd_aco_lender_free(pd_aco_lender *l);

/* ---- the helper (a decode worker) ---- */

typedef struct pd_aco_serve_options {
    /* Read before each request: while set, requests are declined. A decode that arrives sets it, so
     * it waits for at most the one lend in progress. NULL: never declines. */
    const atomic_bool *decline;
    /* Set while a lend is accepted and in progress (set before decline is read, cleared when the
     * output is sent or the request declined), so a decode that set decline can wait for it to be
     * false before it uses the backend. NULL: not reported. */
    atomic_bool *lending;
    /* Fault injection for tests and benchmarks: > 0 makes the helper kill itself (SIGKILL) after
     * receiving the q, k and v of its kill_after-th lend, before sending the output. */
    int kill_after;
} pd_aco_serve_options;

typedef struct pd_aco_serve_stats {
    uint64_t lends, declined, heads;
    double compute_s; /* attention time spent on lent heads */
    double compute_max_s; /* the longest one lend's attention took */
} pd_aco_serve_stats;

/* Serves the lender at rank `lender` of c on backend be until the lender finishes (PD_OK) or the
 * communicator fails (its PD_ERR_TIMEOUT / PD_ERR_DEVICE: the lender died or went silent for the
 * communicator's timeout). opts and stats may be NULL. PD_ERR_FORMAT for a malformed request, and
 * the backend's errors. */
pd_status pd_aco_serve(pd_comm *c, int lender, pd_backend *be, const pd_aco_serve_options *opts,
                       pd_aco_serve_stats *stats);

#endif
