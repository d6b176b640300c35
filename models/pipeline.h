/* Text to video as a library: tokenizer + text encoder -> flow-matching sampler over the DiT (with
 * classifier-free guidance) -> streaming VAE decode -> MP4 (+ thumbnail).
 *
 * The stages are separate calls so the daemon's workers can run each one in its own process (the text
 * stage, the denoise group, the decode group); pd_pipeline_generate() chains them in one process.
 * Every long call reports progress through a callback and reads its stop flag *cancel (base/status.h
 * PD_STOP_*): the denoiser before every DiT block and step, the decoder before every latent frame;
 * a set flag ends the call with PD_ERR_CANCELLED (PD_STOP_CANCEL) or PD_ERR_DEADLINE (PD_STOP_DEADLINE). */
#ifndef PD_MODELS_PIPELINE_H
#define PD_MODELS_PIPELINE_H

#include <stdatomic.h>
#include <stdint.h>

#include "base/stop.h"
#include "engine/backend.h"

typedef enum pd_sampler_kind {
    PD_SAMPLER_UNIPC = 0,
    PD_SAMPLER_EULER = 1,
    PD_SAMPLER_DPMPP = 2, /* "dpm++": the official scripts' --sample_solver dpm++ */
    PD_SAMPLER_COUNT
} pd_sampler_kind;

/* Parses "unipc" / "euler" / "dpm++"; PD_ERR_INVALID otherwise. */
pd_status pd_sampler_kind_parse(const char *s, pd_sampler_kind *out);
const char *pd_sampler_kind_name(pd_sampler_kind k);

/* Where the starting noise comes from (models/sampler/noise.h says exactly what each one computes):
 * PD_NOISE_PHILOX, ours, the default (any element computable on its own); PD_NOISE_TORCH_CPU, bit-exact
 * torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) in f32. */
typedef enum pd_noise_kind { PD_NOISE_PHILOX = 0, PD_NOISE_TORCH_CPU = 1 } pd_noise_kind;

/* Parses "philox" / "torch-cpu"; PD_ERR_INVALID (naming the field "noise") otherwise. */
pd_status pd_noise_kind_parse(const char *s, pd_noise_kind *out);
const char *pd_noise_kind_name(pd_noise_kind k);

typedef struct pd_gen_params {
    const char *prompt;          /* required, UTF-8 */
    const char *negative_prompt; /* NULL or "" = empty prompt for the unconditional branch */
    uint64_t seed;               /* resolved by the caller */
    int width, height;           /* pixels, multiples of 16 */
    int frames;                  /* 4k + 1 */
    int steps;                   /* >= 1 */
    float guidance;              /* CFG scale; <= 1 disables the unconditional branch */
    float shift;                 /* flow shift (> 0) */
    pd_sampler_kind sampler;
    int fps;                     /* output frame rate (> 0) */
    pd_noise_kind noise;         /* the generator of the starting noise (with seed) */
    const pd_tensor *init_latent; /* NULL, or a host f32 (16, T, H/8, W/8) latent that replaces the
                                  * noise (borrowed; shape checked against the request) */
} pd_gen_params;

/* Stages reported through progress callbacks. */
typedef enum pd_stage { PD_STAGE_TEXT = 0, PD_STAGE_DENOISE, PD_STAGE_DECODE, PD_STAGE_ENCODE, PD_STAGE_COUNT } pd_stage;
const char *pd_stage_name(pd_stage s); /* "text", "denoise", "decode", "encode" */

/* step counts 1..total within a stage (for decode: latent frames decoded). */
typedef void (*pd_progress_fn)(void *ud, pd_stage stage, int step, int total);

/* Which parts of a model folder to load (a decode worker needs only the VAE). */
enum { PD_PART_TEXT = 1, PD_PART_DIT = 2, PD_PART_VAE = 4, PD_PART_ALL = 7 };

typedef struct pd_pipeline pd_pipeline;

/* Loads the requested parts of a Wan2.1 model folder (diffusers layout as written by
 * `pipedit mkmodel`, or real checkpoints) onto backend be, which must outlive the pipeline.
 * Errors name the file at fault: PD_ERR_IO, PD_ERR_FORMAT, PD_ERR_NOT_FOUND, PD_ERR_UNSUPPORTED. */
pd_status pd_pipeline_load(const char *model_dir, pd_backend *be, unsigned parts, pd_pipeline **out);
void pd_pipeline_free(pd_pipeline *pl);

/* The DiT evaluation the denoise loop calls, with pd_wan_dit_forward's contract (the pipeline's own
 * loaded DiT is the default). A sequence-parallel rank sets pd_wan_dit_sp_forward here so every rank
 * runs the same sampler loop over the group. fn NULL restores the default; ud is passed through.
 * The pipeline gives its cancel flag to its own DiT only (pd_wan_dit_set_stop): a forward set here
 * stops between blocks by its own agreement (workers/sp_group.h). */
typedef pd_status (*pd_dit_forward_fn)(void *ud, pd_tensor *velocity, const pd_tensor *latent, const float *timesteps,
                                       const pd_tensor *context);
void pd_pipeline_set_dit_forward(pd_pipeline *pl, pd_dit_forward_fn fn, void *ud);

/* The pipeline's loaded DiT (NULL when it was loaded without PD_PART_DIT), e.g. to build a
 * sequence-parallel evaluator over it; owned by the pipeline. */
typedef struct pd_wan_dit pd_wan_dit;
pd_wan_dit *pd_pipeline_dit(pd_pipeline *pl);

/* The documented bounds pd_gen_params_check enforces. */
#define PD_GEN_MIN_SIDE 16            /* width and height: multiples of 16 in 16..4096 */
#define PD_GEN_MAX_SIDE 4096
#define PD_GEN_MAX_FRAMES 1024        /* frames: 4k + 1 in 1..1024 */
#define PD_GEN_MAX_STEPS 1000         /* steps: 1..1000 */
#define PD_GEN_MAX_GUIDANCE 50.0f     /* guidance: 0..50 */
#define PD_GEN_MAX_SHIFT 100.0f       /* shift: (0, 100] */
#define PD_GEN_MAX_FPS 120            /* fps: 1..120 */
#define PD_GEN_MAX_PROMPT_BYTES (256 << 10) /* prompt: 1..this many bytes, not only white space;
                                             * the negative prompt: 0..this many */

/* The fields of a request, for front ends that must say which one is wrong (an HTTP 400's param, a
 * gRPC INVALID_ARGUMENT). */
typedef enum pd_gen_field {
    PD_GEN_FIELD_NONE = 0,
    PD_GEN_FIELD_PROMPT,
    PD_GEN_FIELD_NEGATIVE_PROMPT,
    PD_GEN_FIELD_WIDTH,
    PD_GEN_FIELD_HEIGHT,
    PD_GEN_FIELD_FRAMES,
    PD_GEN_FIELD_STEPS,
    PD_GEN_FIELD_GUIDANCE,
    PD_GEN_FIELD_SHIFT,
    PD_GEN_FIELD_SAMPLER,
    PD_GEN_FIELD_FPS,
    PD_GEN_FIELD_NOISE,
} pd_gen_field;

/* The request field's name as the HTTP API spells it ("num_frames", "num_inference_steps",
 * "guidance_scale", "flow_shift", ...); NULL for PD_GEN_FIELD_NONE. */
const char *pd_gen_field_name(pd_gen_field f);

/* The one check of a request against the documented bounds above (size a multiple of 16 within
 * limits, frames 4k+1, steps, guidance, shift, sampler, fps, prompt length). Every front end (the
 * HTTP API, `pipedit generate`, the workers) calls it, so none accepts what another refuses; a front
 * end adds only its own, tighter limits. PD_ERR_INVALID with a message that starts with the field's
 * name (pd_gen_field_name); *field (when not NULL) receives the field, PD_GEN_FIELD_NONE on success. */
pd_status pd_gen_params_check(const pd_gen_params *p, pd_gen_field *field);

/* pd_gen_params_check, then (pl not NULL, with a DiT) whether the model can run that shape.
 * pl may be NULL: then only the documented bounds are checked (a front end can reject a request
 * before loading anything). */
pd_status pd_pipeline_validate(const pd_pipeline *pl, const pd_gen_params *p);

/* Fills every field of *p but prompt and seed (left as they are) with the defaults of the preset
 * matching the loaded model (by its DiT dims; the embedded default preset when none matches, or
 * when pl is NULL): size, frames, steps, guidance, shift, fps, UniPC, an empty negative prompt. */
void pd_pipeline_default_params(const pd_pipeline *pl, pd_gen_params *p);

/* Latent shape (16, T, H/8, W/8) for params, T = (frames - 1) / 4 + 1. */
void pd_pipeline_latent_shape(const pd_gen_params *p, int64_t shape[4]);

/* Encodes a prompt, cleaned first as Wan2.1's text encoder does (models/text/prompt_clean.h: ftfy-style
 * fixes, HTML unescaped twice, white space collapsed): ctx_out is allocated here as a host f32 tensor (L, text_dim), L the real token
 * count (<= 512). The caller frees it with pd_tensor_free. */
pd_status pd_pipeline_encode_text(pd_pipeline *pl, const char *prompt, pd_tensor *ctx_out);

/* Runs the sampler: seeded noise (p->noise; or p->init_latent) -> steps of the DiT (batch 2 with CFG) -> latent_out, a host f32
 * tensor (16, T, H/8, W/8) allocated here. ctx_uncond may be NULL when guidance <= 1. */
pd_status pd_pipeline_denoise(pd_pipeline *pl, const pd_gen_params *p, const pd_tensor *ctx_cond,
                              const pd_tensor *ctx_uncond, pd_tensor *latent_out, pd_progress_fn progress,
                              void *ud, const atomic_int *cancel);

/* The MP4 "comment" tag that records how a video was made: "pipedit seed=S noise=N sampler=K steps=N
 * shift=X guidance=G" (plus " init_latent=1" when the noise was replaced). Writes at most n bytes
 * (always terminated). */
void pd_pipeline_describe(const pd_gen_params *p, char *buf, size_t n);

/* Decodes a latent and writes an MP4 (H.264, yuv420p, p->fps, with pd_pipeline_describe(p) as its
 * comment tag) to mp4_path and, when thumb_path is not NULL, the first frame as PNG. Only p's fps
 * and the described fields are read. Files appear complete or not at all (temporary name + rename). */
pd_status pd_pipeline_decode(pd_pipeline *pl, const pd_tensor *latent, const pd_gen_params *p, const char *mp4_path,
                             const char *thumb_path, pd_progress_fn progress, void *ud, const atomic_int *cancel);

/* Seconds spent per stage by the last pd_pipeline_generate. */
typedef struct pd_gen_timings {
    double seconds[PD_STAGE_COUNT];
    double denoise_step_seconds; /* mean per step */
} pd_gen_timings;

/* The stages before decoding, without any media dependency: checks p, encodes the prompt (and, with
 * guidance > 1, the negative prompt), checks *cancel, and runs the sampler into latent_out, a host
 * f32 tensor (16, T, H/8, W/8) allocated here (left empty on failure; free it with pd_tensor_free).
 * Needs the text encoder and the DiT loaded. Progress: text 1 of 1 (or 1 and 2 of 2), then every
 * denoising step. When timings is not NULL, its text and denoise seconds and denoise_step_seconds
 * are written (as far as the call got); its other fields are left as they are. pd_pipeline_generate
 * runs it before decoding; a sequence-parallel rank that does not decode runs it alone. */
pd_status pd_pipeline_text_denoise(pd_pipeline *pl, const pd_gen_params *p, pd_tensor *latent_out, pd_progress_fn progress,
                                   void *ud, const atomic_int *cancel, pd_gen_timings *timings);

/* All stages in order (pd_pipeline_text_denoise, then pd_pipeline_decode). When latent_path is not
 * NULL the final latent is also written there (pd_pipeline_save_latent) before decoding. timings may
 * be NULL. */
pd_status pd_pipeline_generate(pd_pipeline *pl, const pd_gen_params *p, const char *mp4_path, const char *thumb_path,
                               const char *latent_path, pd_progress_fn progress, void *ud, const atomic_int *cancel,
                               pd_gen_timings *timings);

/* Writes latent as a safetensors file (tensor "latent", f32, metadata "pipedit" =
 * pd_pipeline_describe(p)) atomically: `pipedit decode --latent` and `pipedit generate --init-latent`
 * read it back. PD_ERR_IO naming the path. */
pd_status pd_pipeline_save_latent(const pd_tensor *latent, const pd_gen_params *p, const char *path);

/* Reads tensor "latent" (16, T, h, w) of a float dtype from a safetensors file into out, a host f32
 * tensor allocated here (the caller frees it). Errors name the file: PD_ERR_IO, PD_ERR_FORMAT,
 * PD_ERR_NOT_FOUND (no such tensor), PD_ERR_INVALID (wrong shape or dtype, a non-finite element).
 * Its shape is checked against a request by pd_pipeline_validate (p->init_latent). */
pd_status pd_pipeline_load_latent(const char *path, pd_tensor *out);

#endif
