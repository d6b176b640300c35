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

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/stop.h"
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

/* The loaded model's configuration and layout (valid while m lives). */
const pd_wan_dit_config *pd_wan_dit_get_config(const pd_wan_dit *m);
pd_wan_layout pd_wan_dit_get_layout(const pd_wan_dit *m);

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

/* An attention implementation with pd_op_attention's contract (no bias): out (B, Nq, H, Dv) =
 * softmax(q k^T * scale) v for q (B, Nq, H, D), k (B, Nk, H, D), v (B, Nk, H, Dv), contiguous on the
 * model's backend. */
typedef pd_status (*pd_wan_attention_fn)(void *ud, pd_tensor *out, const pd_tensor *q, const pd_tensor *k,
                                         const pd_tensor *v, float scale);

/* Routes the self-attention of every block through fn(ud, ...) instead of the backend's op (Aco lends
 * heads this way: models/wan/aco.h); the SP evaluator (dit_sp.h) routes each chunk of heads there
 * too. Cross-attention is unaffected. fn NULL restores the op. */
void pd_wan_dit_set_self_attention(pd_wan_dit *m, pd_wan_attention_fn fn, void *ud);

/* Stopping between blocks. Before block i of every forward (i = 0 .. layers - 1) the model reads the
 * stop flag set here (base/status.h: PD_STOP_CANCEL, PD_STOP_DEADLINE); a set flag ends the
 * forward with PD_ERR_CANCELLED or PD_ERR_DEADLINE naming the block, so a stop takes effect within
 * one block of being set. On a device backend the forward first waits for the blocks already issued,
 * so "before block i" holds on the device too. Under the SP evaluator only the flag of rank 0 of its
 * stop communicator counts, and every rank stops before the same block (dit_sp.h). stop NULL:
 * none. The flag must outlive the calls that read it. */
void pd_wan_dit_set_stop(pd_wan_dit *m, const atomic_int *stop);

/* Calls fn(ud, i) after block i of every forward has been issued (progress watchers, tests); fn NULL
 * removes it. fn must not call back into the model. */
typedef void (*pd_wan_dit_block_fn)(void *ud, int block);
void pd_wan_dit_set_block_hook(pd_wan_dit *m, pd_wan_dit_block_fn fn, void *ud);

/* Bytes the activation arena holds after the calls so far. */
size_t pd_wan_dit_arena_bytes(const pd_wan_dit *m);

/* Bytes of the activation arena one forward reserves for batch B and a latent of (T, H, W) on one
 * device (what pd_wan_dit_arena_bytes reports after such a call). For admission estimates. */
size_t pd_wan_dit_activation_bytes(const pd_wan_dit_config *cfg, int64_t B, int64_t T, int64_t H, int64_t W);

/* Multiply-adds x 2 of one forward for batch B and a latent of (T, H, W) (matmuls and attention only;
 * norms and elementwise ops are not counted). For benchmarks. */
double pd_wan_dit_flops(const pd_wan_dit_config *cfg, int64_t B, int64_t T, int64_t H, int64_t W);

/* The same count for batch 1, split by kind of work, for N query tokens of which a rank computes the
 * linears, over a self-attention of Nk keys (Nk = N on one device). pd_wan_dit_flops is the sum of
 * the parts (outside + layers * every block part) with N = Nk = the latent's tokens. The cost model
 * (plan/cost.h) prices each part at its own rate. */
typedef struct pd_wan_dit_flop_parts {
    double block_linear;     /* self q, k, v, o, cross q, o and the FFN over N tokens */
    double block_context;    /* cross-attention k, v over text_len context rows */
    double block_self_attn;  /* q k^T and p v: 4 * N * Nk * dim */
    double block_cross_attn; /* the same against text_len keys */
    double outside;          /* patch embedding, time and text embeddings, head */
} pd_wan_dit_flop_parts;
void pd_wan_dit_flops_split(const pd_wan_dit_config *cfg, double N, double Nk, pd_wan_dit_flop_parts *out);

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
