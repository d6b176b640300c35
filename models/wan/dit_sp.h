/* The Wan2.1 DiT under sequence parallelism (dit_sp.c): one denoiser evaluation spread over the n ranks of
 * a communicator (Ulysses sequence parallelism, with PipeSP's pipelining of the all-to-alls into
 * attention; DESIGN.md section 6). Every rank holds the whole model and calls pd_wan_dit_sp_forward with
 * the same inputs; every rank returns the whole velocity, equal to pd_wan_dit_forward's on one device up
 * to float rounding of the attention sums (the same ops on the same values, summed in other blocks:
 * relative errors of a few 1e-7 in f32).
 *
 * Sharding. The N tokens (t, h, w order) are cut into n contiguous ranges of balanced size: rank r
 * gets count_r = N/n tokens, plus one when r < N % n, starting at the sum of the counts before it
 * (uneven shards, no pad tokens; N >= n is required). Each rank patchifies the whole latent (it is
 * small: N x 64 values) and keeps its range; its RoPE table starts at its offset. Every op is local
 * except self-attention: q, k, v (local tokens, all heads) go through an all-to-all to (all tokens,
 * h local heads), attention runs, and a second all-to-all brings each rank its tokens back for the
 * output projection. Cross-attention needs no communication (the context is replicated). The head's
 * output rows are then gathered (an all-to-all with every rank sending its rows to all) so every
 * rank unpatchifies the whole velocity.
 *
 * Head padding. With H heads, each rank owns h = ceil(H / n) head slots: rank p's slots are the
 * global heads p*h .. p*h + h - 1, and slots at or past H are padding heads (zero heads). Their
 * outputs would be dropped, so they are never sent and never computed: a padded slot moves no bytes
 * and costs no time, and a rank whose slots are all padding only routes data (H = 4, n = 3: ranks own
 * 2, 2 and 0 real heads). The critical path is ceil(H / n) heads either way.
 *
 * PipeSP. Attention runs in chunks of g head slots (chunk j = slots j*g .. j*g + g - 1 on every
 * rank; per batch element). All Q, K, V all-to-alls of a layer are issued asynchronously up front
 * (one per tensor and chunk, run by the communicator's thread in issue order) and waited per chunk
 * just before that chunk's attention; right after a chunk's attention its output all-to-all is
 * issued, so it overlaps the next chunk's compute. Received output chunks arrive rank-major (for
 * each source rank p, its g heads); the fix-up after the loop copies each into global heads
 * p*h + j*g .., which restores the single-device head order exactly. g = 1 is the paper's
 * algorithm; g >= h is one chunk, i.e. plain Ulysses (nothing to overlap).
 *
 * Default g (chunk_heads 0). At the first forward of a sequence length, every rank times one
 * attention and one output all-to-all of g = 1 and of g = h heads (the all-to-all from a barrier,
 * so waiting for a peer's attention does not count as transfer): one untimed warm-up rep, then
 * the median of 5 reps. The ranks share these four medians (an all-gather) and each takes, per
 * figure, the slowest rank's, so all compute the same g from the same numbers:
 * pd_pipesp_choose_chunk (models/wan/pipesp_plan.h) fits each time as a + b*g through its two
 * points, simulates the schedule above for every g in 1..h (Q/K/V transfers queued first, then
 * each chunk's output transfer on the one FIFO communication thread) and returns the largest g whose
 * predicted finish time is within 3% of the fastest g's. A smaller g (more, smaller messages) is
 * thus taken only for a clear predicted gain; near ties go to the larger g, so timing noise of a
 * percent between runs can move the choice only where a prediction sits at the 3% edge.
 *
 * CFG parallelism. Given a second communicator cfg of 2*m ranks whose rank i and i + m are rank
 * i % m of their halves' SP communicators (sp, of m ranks), forward takes the CFG pair (batch 2:
 * element 0 conditional, 1 unconditional) on every rank; the first half evaluates element 0 and the
 * second element 1, each as an SP group, and partners i and i + m exchange their velocities (one
 * all-to-all over cfg with only the partner's counts non-zero), so every rank returns both.
 */
#ifndef PD_WAN_DIT_SP_H
#define PD_WAN_DIT_SP_H

#include "comm/comm.h"
#include "models/wan/dit.h"
#include "models/wan/pipesp_plan.h"
typedef struct pd_wan_dit_sp pd_wan_dit_sp;

typedef struct pd_wan_dit_sp_options {
    int chunk_heads;  /* g: 0 = chosen from measurements (above); 1 = the paper's PipeSP; >= the
                       * heads per rank = plain Ulysses. Bounded to 0..PD_SP_MAX_CHUNK. */
    bool comm_only;   /* accounting only: skip the attention compute (its output is a copy of q) so
                       * a benchmark can time the communication schedule alone. Results are wrong. */
    bool accounting;  /* end every forward with an all-gather of the ranks' issue times of each
                       * collective, so stats.wait_skew_s can tell waiting for a late peer from
                       * waiting for bytes (the ranks must share one clock: one host). */
    pd_comm *stop_comm; /* the stop agreement's communicator (NULL: cfg when given, else sp): before
                       * every block its rank 0 broadcasts its model's stop flag (4 bytes,
                       * pd_wan_dit_set_stop) and every rank acts on that value, so all stop before
                       * the same block. Every rank of it must run the same forwards (a group whose
                       * halves evaluate a batch of 1 apart passes the communicator over both). */
} pd_wan_dit_sp_options;

/* What the last forward did on this rank (times in seconds, bytes to and from other ranks). */
typedef struct pd_wan_dit_sp_stats {
    int ranks, chunk_heads, heads_per_rank, chunks_per_layer; /* chunks per layer and batch element */
    int64_t tokens, tokens_local;
    double forward_s;   /* the whole call */
    double attn_s;      /* self-attention compute (the chunks' attention ops) */
    double wait_s;      /* blocked in communication waits: communication not hidden behind compute,
                         * plus waiting for peers that issued the collective later (skew) */
    double wait_skew_s; /* the skew part of wait_s (with options.accounting; else 0) */
    double pack_s;      /* packing the Q/K/V chunks and the head-order fix-up */
    double calib_s;     /* choosing g (first call of a sequence length only) */
    uint64_t bytes_sent, bytes_received, collectives;
} pd_wan_dit_sp_stats;

/* Makes the SP evaluator of model m (which must outlive it) over communicator sp (this rank's SP
 * group; size 1 is allowed and then communicates with itself only) and, for CFG parallelism, cfg
 * (NULL: none; else 2 * size(sp) ranks as described above). Both must outlive the evaluator.
 * opts may be NULL (all defaults). PD_ERR_INVALID for a bad option or mismatched communicators,
 * PD_ERR_NOMEM. */
pd_status pd_wan_dit_sp_create(pd_wan_dit *m, pd_comm *sp, pd_comm *cfg, const pd_wan_dit_sp_options *opts,
                               pd_wan_dit_sp **out);
/* Frees the evaluator (not the model or the communicators). NULL is a no-op. */
void pd_wan_dit_sp_free(pd_wan_dit_sp *sp);

/* pd_wan_dit_forward over the group: same arguments, same result, on every rank; every rank must
 * make the call with the same shapes (the values of latent, timesteps and context are taken from
 * each rank's own copy; they must be equal). With CFG parallelism the batch must be 2. Errors:
 * PD_ERR_INVALID (as pd_wan_dit_forward; fewer tokens than ranks; batch not 2 under CFG
 * parallelism), and the communicator's PD_ERR_TIMEOUT / PD_ERR_DEVICE when a rank fails (the
 * communicator is then aborted on every rank; no call hangs past its timeout). */
pd_status pd_wan_dit_sp_forward(pd_wan_dit_sp *sp, pd_tensor *velocity, const pd_tensor *latent, const float *timesteps,
                                const pd_tensor *context);

/* The chunk size g of the last forward (chosen by measurement or given; 0 before the first). */
int pd_wan_dit_sp_chunk_heads(const pd_wan_dit_sp *sp);
/* Accounting of the last forward on this rank. */
void pd_wan_dit_sp_last_stats(const pd_wan_dit_sp *sp, pd_wan_dit_sp_stats *out);

#endif
