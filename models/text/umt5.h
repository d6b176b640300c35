/* The umT5 encoder (google/umt5-xxl's encoder, as Wan2.1 uses it): token ids -> context (L, d_model).
 *
 * Architecture (DESIGN.md section 5), all activations f32:
 *   x = shared[ids]                                           // (L, D)
 *   per layer n:  h = RMSNorm(x) * layer.0.layer_norm          T5 norm: no mean, no bias, eps 1e-6
 *                 q, k, v = h Wq^T, h Wk^T, h Wv^T             // (L, H, d_kv), no biases
 *                 x += Wo softmax(q k^T + bias_n) v            NO 1/sqrt(d_kv) scale
 *                 bias_n[h, i, j] = relative_attention_bias_n[bucket(j - i), h]   (each layer its own)
 *                 h = RMSNorm(x) * layer.1.layer_norm
 *                 x += wo( wi_1(h) * gelu_tanh(wi_0(h)) )
 *   out = RMSNorm(x) * encoder.final_layer_norm
 * bucket(r), bidirectional, B buckets, max distance M: half the buckets per direction (r > 0 adds
 * B/2); inside a half, |r| < B/4 is exact, larger |r| takes B/4 + floor(log(|r| / (B/4)) /
 * log(M / (B/4)) * (B/4)) capped at B/2 - 1, computed in float32 as the reference implementation does.
 * The encoder runs on the real length L (one prompt, so no padding mask is needed).
 *
 * Checkpoint: <model>/text_encoder/ with config.json (HF UMT5 config) and model.safetensors or a
 * sharded set (model.safetensors.index.json), HF names: shared.weight (or encoder.embed_tokens.weight),
 * encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight, ...relative_attention_bias.weight,
 * encoder.block.N.layer.0.layer_norm.weight, encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight,
 * encoder.block.N.layer.1.layer_norm.weight, encoder.final_layer_norm.weight. Weights stay in their
 * stored dtype (f32, bf16, f16); ops widen them with f32 accumulation. */
#ifndef PD_MODELS_TEXT_UMT5_H
#define PD_MODELS_TEXT_UMT5_H

#include <stdint.h>

#include "engine/backend.h"
#include "models/presets.h"

typedef struct pd_umt5 pd_umt5;

/* Reads and bound-checks <model_dir>/text_encoder/config.json into cfg: vocab_size, d_model, d_kv,
 * num_heads, d_ff, num_layers, relative_attention_num_buckets (default 32),
 * relative_attention_max_distance (default 128), layer_norm_epsilon (default 1e-6); feed_forward_proj
 * must be "gated-gelu". Errors name the file and the key: PD_ERR_IO, PD_ERR_FORMAT (missing or
 * out-of-range value), PD_ERR_UNSUPPORTED (another feed_forward_proj). */
pd_status pd_umt5_config_load(const char *model_dir, pd_umt5_config *cfg);

/* Checks a config's values against the loader's bounds; PD_ERR_INVALID naming the field. */
pd_status pd_umt5_config_check(const pd_umt5_config *cfg);

/* Loads the encoder of <model_dir>/text_encoder onto backend be (which must outlive the model).
 * Every tensor is checked against the config's shape. Errors: those of pd_umt5_config_load and
 * pd_st_open, PD_ERR_NOT_FOUND / PD_ERR_FORMAT naming a missing or misshapen tensor, PD_ERR_NOMEM.
 * The caller frees *out with pd_umt5_free. */
pd_status pd_umt5_load(const char *model_dir, pd_backend *be, pd_umt5 **out);
/* Releases the model and its checkpoint mapping. NULL is a no-op. */
void pd_umt5_free(pd_umt5 *m);
/* The loaded config. */
const pd_umt5_config *pd_umt5_config_of(const pd_umt5 *m);

/* Encodes n token ids (1 <= n <= PD_UMT5_MAX_TOKENS, each in [0, vocab_size)) into out, allocated
 * here as a host f32 tensor (n, d_model) the caller frees with pd_tensor_free. Not thread-safe on one
 * model (it reuses the model's activation arena). PD_ERR_INVALID for a bad n or id; backend errors
 * pass through. */
#define PD_UMT5_MAX_TOKENS 1024 /* bounds the (H, L, L) position bias: 256 MiB at umT5-XXL */
pd_status pd_umt5_encode(pd_umt5 *m, const int32_t *ids, int n, pd_tensor *out);

/* The relative-position bucket of key position minus query position r (see above). */
int pd_umt5_bucket(int r, int num_buckets, int max_distance);

/* Writes <model_dir>/text_encoder/{config.json, model.safetensors}: an HF UMT5 encoder config and
 * every tensor above with the config's shapes, random values deterministic in seed, stored as dtype
 * (F32, BF16 or F16). Scales keep activations of order one through any number of layers. Errors:
 * PD_ERR_INVALID (bad config or dtype), PD_ERR_IO naming the path, PD_ERR_NOMEM. */
pd_status pd_umt5_write_random(const char *model_dir, const pd_umt5_config *cfg, uint64_t seed, pd_dtype dtype);

#endif
