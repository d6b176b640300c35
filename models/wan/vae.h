/* The Wan2.1 VAE decoder (AutoencoderKLWan): latent (16, T, h, w) -> RGB video (3, 1 + 4(T-1), 8h, 8w).
 *
 * Architecture (DESIGN.md section 5): z * std + mean -> post_quant_conv (1x1x1) -> decoder: conv_in
 * (causal k3) -> middle (ResBlock, spatial Attention, ResBlock) -> up stages (num_res_blocks + 1
 * ResBlocks each, then an upsample3d or upsample2d except after the last) -> RMS_norm, SiLU, causal
 * conv -> 3 channels -> clamp to [-1, 1]. Every causal conv pads H and W symmetrically and T only in
 * front (two zero frames).
 *
 * Two decode paths run the same ops:
 *  - streaming (pd_wan_vae_decode): one latent frame at a time. Every temporal-kernel conv keeps the
 *    last two frames of its input as a cache; an upsample3d's time_conv is skipped on latent frame 0
 *    and its cache only ever holds frames from latent frame 1 on. Latent frame 0 yields 1 RGB frame,
 *    every later one 4, and each is handed to the callback as soon as it exists, so memory is one
 *    chunk's activations plus the caches, whatever T is. A conv's first chunk (one frame behind two
 *    zero frames) multiplies only its last temporal tap, and the last latent frame saves no cache, so
 *    a one-frame decode is a third of the conv work and copies no cache. The activations' working
 *    memory stays with the model between decodes (like the DiT's arena): later decodes at the same
 *    or a smaller size allocate none of it; the caches are allocated per decode.
 *  - whole clip (pd_wan_vae_decode_whole): all T frames at once with zero front padding instead of
 *    caches (an upsample3d passes frame 0 through and runs time_conv over frames 1..). Its memory
 *    grows with T; it exists to test the streaming path and for short clips.
 * Both emit the same frames through the same callback.
 *
 * Checkpoints: a diffusers `vae/` folder (config.json + diffusion_pytorch_model.safetensors, or a
 * sharded index), a model folder holding `vae/`, or a single safetensors file in either name layout
 * (the original / Comfy-Org names: conv2, decoder.conv1, decoder.middle.N, decoder.upsamples.N, ...;
 * or diffusers names: post_quant_conv, decoder.conv_in, decoder.mid_block, decoder.up_blocks, ...).
 * The layout is detected from the tensor names. A single file carries no config: its dims are read
 * from the tensor shapes and latents_mean / latents_std are Wan2.1's. Only the decoder half
 * (post_quant_conv and decoder.*) is loaded; the encoder's tensors are ignored. */
#ifndef PD_WAN_VAE_H
#define PD_WAN_VAE_H

#include <stdatomic.h>
#include <stdint.h>

#include "base/stop.h"
#include "engine/backend.h"
#include "models/presets.h"
#include "models/wan/layout.h"

typedef struct pd_wan_vae pd_wan_vae;

/* Bounds on config values accepted from config.json or inferred from shapes. */
#define PD_WAN_VAE_MAX_BASE_DIM 1024
#define PD_WAN_VAE_MAX_MULT 16
#define PD_WAN_VAE_MAX_RES_BLOCKS 8

/* Parses a diffusers vae/config.json (keys base_dim, z_dim, dim_mult (4 entries), num_res_blocks,
 * attn_scales (must be empty: no released Wan2.1 VAE uses attention outside the middle block),
 * temperal_downsample (3 booleans), latents_mean and latents_std (z_dim numbers each); dropout is
 * ignored). Every value is bound-checked (z_dim 16, base_dim 1..PD_WAN_VAE_MAX_BASE_DIM, std > 0, ...).
 * Errors: PD_ERR_IO (unreadable), PD_ERR_FORMAT (bad JSON, missing or out-of-range key, naming it),
 * PD_ERR_UNSUPPORTED (non-empty attn_scales). */
pd_status pd_wan_vae_config_load(const char *config_json_path, pd_wan_vae_config *out);

/* Loads the decoder from path (a model folder with vae/, a vae folder, or a single safetensors file;
 * see above) for backend be, which must outlive the VAE. Weights stay in their stored dtype (mmapped
 * on the CPU backend). Every tensor's shape is checked against the config.
 * Errors name the file and tensor: PD_ERR_IO, PD_ERR_FORMAT, PD_ERR_NOT_FOUND, PD_ERR_UNSUPPORTED,
 * PD_ERR_NOMEM. */
pd_status pd_wan_vae_load(const char *path, pd_backend *be, pd_wan_vae **out);
/* Releases the VAE and unmaps its weights. NULL is a no-op. */
void pd_wan_vae_free(pd_wan_vae *vae);

/* The config in use and the layout the checkpoint was found in. */
const pd_wan_vae_config *pd_wan_vae_get_config(const pd_wan_vae *vae);
pd_wan_layout pd_wan_vae_get_layout(const pd_wan_vae *vae);

/* RGB frames for a latent of T frames: 1 + 4 (T - 1) with the Wan2.1 config (in general
 * 1 + 2^u (T - 1), u the number of temporal upsamples). Spatial factor: 2^(number of up stages - 1). */
int64_t pd_wan_vae_frames_for(const pd_wan_vae *vae, int64_t latent_frames);
int pd_wan_vae_spatial_factor(const pd_wan_vae *vae);

/* Receives decoded frame `index` (0-based, in order): a contiguous host f32 tensor (3, H, W), RGB,
 * values in [-1, 1]. It is only valid during the call (copy what you keep). Returning a non-OK
 * status (with pd_error_set) stops the decode, which returns that status. */
typedef pd_status (*pd_wan_vae_frame_fn)(void *ud, int64_t index, const pd_tensor *frame);

/* Per-latent-frame progress: done latent frames 1..total. May be NULL. Both callbacks of a decode
 * receive the same ud. */
typedef void (*pd_wan_vae_progress_fn)(void *ud, int done, int total);

/* Streaming decode of latent (16, T, h, w), a host f32 tensor normalised as the DiT produces it
 * (z * latents_std + latents_mean is applied here). Frames go to on_frame as they are produced.
 * The stop flag cancel (may be NULL; base/status.h PD_STOP_*) is read before every latent frame:
 * PD_ERR_CANCELLED or PD_ERR_DEADLINE. Shape errors are
 * PD_ERR_INVALID; h and w must be >= 1 and T >= 1. */
pd_status pd_wan_vae_decode(pd_wan_vae *vae, const pd_tensor *latent, pd_wan_vae_frame_fn on_frame,
                            pd_wan_vae_progress_fn progress, void *ud, const atomic_int *cancel);

/* Whole-clip decode: the same result computed over all T latent frames at once (memory grows with
 * T), frames emitted through on_frame after the whole clip is done. */
pd_status pd_wan_vae_decode_whole(pd_wan_vae *vae, const pd_tensor *latent, pd_wan_vae_frame_fn on_frame, void *ud);

/* Writes a complete AutoencoderKLWan checkpoint with random weights: ALL tensors of the real model
 * (encoder, quant_conv, post_quant_conv, decoder) with the real names of `layout` and the shapes of
 * cfg, values of dtype (F32, BF16, F16) drawn from (seed, tensor name) with scales that keep
 * activations of order one. For PD_WAN_LAYOUT_DIFFUSERS path is a folder (created if missing) that
 * receives config.json and diffusion_pytorch_model.safetensors; for PD_WAN_LAYOUT_ORIGINAL path is
 * the .safetensors file itself (no config, as Comfy's wan_2.1_vae.safetensors). Files are written
 * atomically. Errors: PD_ERR_INVALID (bad cfg), PD_ERR_IO, PD_ERR_NOMEM. */
pd_status pd_wan_vae_write_random(const char *vae_dir_or_file, const pd_wan_vae_config *cfg, uint64_t seed,
                                  pd_wan_layout layout, pd_dtype dtype);

#endif
