/* The Wan2.1 diffusion transformer (DiT): loading a checkpoint in either tensor-name layout, one
 * denoiser evaluation for a batch, and writing random-weight checkpoints with the real names and
 * shapes (the tiny embedded model and tests).
 *
 * The model follows DESIGN.md section 5: patch embedding (a linear over 2x2 patches), sinusoidal time
 * embedding -> e (B, dim) and e0 (B, 6, dim), text projection of the context zero-padded to text_len
 * rows, `layers` blocks of modulated self-attention with 3D RoPE, unmodulated cross-attention over all
 * text_len context rows (no mask) and a modulated GELU(tanh) FFN, then the modulated head whose 64
 * outputs per token are ordered (pt, ph, pw, c). The output is a flow-matching velocity. */
#ifndef PD_WAN_DIT_H
#define PD_WAN_DIT_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/backend.h"
#include "engine/safetensors.h"
#include "models/presets.h"
#include "models/wan/layout.h"

typedef struct pd_wan_dit pd_wan_dit;

/* Checks that every field of cfg is within the bounds this implementation supports (dim =
 * heads * head_dim, head_dim even, channel counts, patch sizes 1..8, eps in (0, 1), ...).
 * Returns PD_ERR_INVALID with a message naming the field; `what` prefixes the message (a file name,
 * or "config"). */
pd_status pd_wan_dit_config_check(const pd_wan_dit_config *cfg, const char *what);

/* Parses a diffusers transformer/config.json (WanTransformer3DModel) into *cfg. Fields the file does
 * not carry (text_len 512, rope_theta 10000) get the Wan2.1 values. Every value is bound-checked.
 * Errors: PD_ERR_IO (unreadable), PD_ERR_FORMAT (bad JSON, missing or mistyped key, value out of
 * bounds; the message names the file and the key), PD_ERR_UNSUPPORTED (a variant this code does not
 * implement, e.g. image conditioning or another qk_norm). */
pd_status pd_wan_dit_config_load(const char *config_json_path, pd_wan_dit_config *cfg);

/* Detects which layout a checkpoint uses from its tensor names. Original-layout files may carry a
 * prefix ("model.diffusion_model."); *prefix (may be NULL) receives it, a static string ("" when
 * none). PD_ERR_FORMAT when the checkpoint is neither (names the file). */
pd_status pd_wan_dit_detect_layout(const pd_st *st, pd_wan_layout *layout, const char **prefix);

/* Loads a DiT onto backend be, which must outlive the model. path may be
 *  - a model folder holding transformer/ (diffusers pipeline layout),
 *  - a diffusers transformer folder (config.json + one safetensors file or a sharded index), or
 *  - a single .safetensors file, or a folder holding one without config.json (original / Comfy
 *    names, or diffusers names); the config is then inferred from tensor shapes (heads from the
 *    file's metadata, else from a known preset of the same dim, else dim / 128).
 * Every tensor is checked against the shape the config implies. Weights stay in their stored dtype:
 * on the CPU backend they are views into the read-only mapping, held until pd_wan_dit_free.
 * Errors name the file and tensor at fault: PD_ERR_IO, PD_ERR_FORMAT, PD_ERR_NOT_FOUND,
 * PD_ERR_UNSUPPORTED, PD_ERR_NOMEM. */
pd_status pd_wan_dit_load(const char *path, pd_backend *be, pd_wan_dit **out);
/* Releases the model: its weights (device copies, or the views and the checkpoint mapping on the CPU
 * backend) and its activation arena. Tensors from earlier forward calls that the caller allocated stay
 * valid. NULL is a no-op. */
void pd_wan_dit_free(pd_wan_dit *m);

/* The loaded model's configuration, layout and checkpoint path (valid while m lives). */
const pd_wan_dit_config *pd_wan_dit_get_config(const pd_wan_dit *m);
pd_wan_layout pd_wan_dit_get_layout(const pd_wan_dit *m);
const char *pd_wan_dit_path(const pd_wan_dit *m);

/* Token grid of a latent (C, T, H, W): grid = (T/pt, H/ph, W/pw), tokens in t, h, w order (w fastest).
 * A sequence-parallel rank owns the contiguous token range [offset, offset + count); the RoPE
 * frequencies of that range are pd_op_rope3d_freqs(..., grid, offset, theta). */
typedef struct pd_wan_dit_grid {
    int64_t t, h, w;   /* grid dims */
    int64_t tokens;    /* t * h * w */
} pd_wan_dit_grid;

/* Computes the grid for a latent of (T, H, W); PD_ERR_INVALID naming the dimension when one is not a
 * positive multiple of the patch, or the token count exceeds 1 << 22. */
pd_status pd_wan_dit_grid_of(const pd_wan_dit_config *cfg, int64_t T, int64_t H, int64_t W, pd_wan_dit_grid *out);

/* One denoiser evaluation for a batch (batch 2 is the CFG pair):
 *   velocity (B, out_channels, T, H, W) f32 = DiT(latent (B, in_channels, T, H, W) f32,
 *                                                 timesteps[B] (host floats, usually int(sigma*1000)),
 *                                                 context (B, L, text_dim) f32, 0 <= L <= text_len)
 * The context is zero-padded to text_len rows inside; cross-attention sees all of them, so a caller
 * batching prompts of different lengths (the CFG pair) zero-pads the shorter one to the longer's L and
 * gets exactly the per-prompt result. Tensors live on the model's backend device, contiguous;
 * velocity is allocated by the caller. Activations come
 * from the model's arena, which is reset at every call (the first call grows it; later calls of the
 * same or smaller shape allocate nothing). Not thread-safe per model. Errors: PD_ERR_INVALID with a
 * message naming the tensor and shapes; backend errors as returned by the ops. */
pd_status pd_wan_dit_forward(pd_wan_dit *m, pd_tensor *velocity, const pd_tensor *latent, const float *timesteps,
                             const pd_tensor *context);

/* Bytes the activation arena holds after the calls so far. */
size_t pd_wan_dit_arena_bytes(const pd_wan_dit *m);

/* Multiply-adds x 2 of one forward for batch B and a latent of (T, H, W) (matmuls and attention only;
 * norms and elementwise ops are not counted). For benchmarks. */
double pd_wan_dit_flops(const pd_wan_dit_config *cfg, int64_t B, int64_t T, int64_t H, int64_t W);

/* ---- sequence parallelism (dit_sp.c) ----
 *
 * One denoiser evaluation spread over the n ranks of a communicator (Ulysses sequence parallelism,
 * with PipeSP's pipelining of the all-to-alls into attention; DESIGN.md section 6). Every rank holds
 * the whole model and calls pd_wan_dit_sp_forward with the same inputs; every rank returns the whole
 * velocity, equal to pd_wan_dit_forward's on one device up to float rounding of the attention sums
 * (the same ops on the same values, summed in other blocks: relative errors of a few 1e-7 in f32).
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
#include "workers/comm/comm.h"

typedef struct pd_wan_dit_sp pd_wan_dit_sp;

/* The largest PipeSP chunk (g) a caller may ask for. */
#define PD_SP_MAX_CHUNK 4096

typedef struct pd_wan_dit_sp_options {
    int chunk_heads;  /* g: 0 = chosen from measurements (above); 1 = the paper's PipeSP; >= the
                       * heads per rank = plain Ulysses. Bounded to 0..PD_SP_MAX_CHUNK. */
    bool comm_only;   /* accounting only: skip the attention compute (its output is a copy of q) so
                       * a benchmark can time the communication schedule alone. Results are wrong. */
    bool accounting;  /* end every forward with an all-gather of the ranks' issue times of each
                       * collective, so stats.wait_skew_s can tell waiting for a late peer from
                       * waiting for bytes (the ranks must share one clock: one host). */
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

/* Writes a random-weight DiT with every tensor name and shape of a real checkpoint. Values are
 * deterministic in (seed, tensor), and the same model in both layouts (values are keyed by the
 * original name), scaled so activations stay O(1) through the layers (linear weights normal(0,
 * 1/sqrt(fan_in)), norm weights 1 +- 0.1, small modulation tables). dtype is F32, BF16 or F16.
 *  - PD_WAN_LAYOUT_DIFFUSERS: out is a folder (created if missing) that receives config.json and
 *    diffusion_pytorch_model.safetensors.
 *  - PD_WAN_LAYOUT_ORIGINAL: out is the .safetensors file path (original names; the metadata carries
 *    num_attention_heads so the loader need not guess).
 * Files are written atomically. Errors: PD_ERR_INVALID (bad cfg or dtype), PD_ERR_IO, PD_ERR_NOMEM. */
pd_status pd_wan_dit_write_random(const char *out, const pd_wan_dit_config *cfg, uint64_t seed, pd_wan_layout layout,
                                  pd_dtype dtype);

#endif
