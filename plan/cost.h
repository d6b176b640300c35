/* The cost model (DESIGN.md section 6): pure functions that predict stage times and memory of a
 * Wan2.1 text-to-video request on a deployment of GPUs, from a device profile and a model config.
 * No processes, no devices, no state: the scheduler, `pipedit plan` and tests call the same code.
 *
 * What it models. A DiT block is priced part by part (models/wan/dit.h, pd_wan_dit_flops_split):
 * the linears at the profile's GEMM rate, self- and cross-attention at its attention rate, and the
 * elementwise work (norms, modulation, RoPE, gates, residuals, GELU) as bytes moved at its memory
 * bandwidth. Sequence parallelism over n ranks (Ulysses, heads padded up to a multiple of n) gives
 * each rank N/n tokens for the linears and h = ceil(H/n) head slots over all N tokens for the
 * attention; the Q, K, V and output all-to-alls and their overlap with the attention follow PipeSP's
 * chunk schedule (models/wan/pipesp_plan.h, pd_pipesp_simulate; g = h is plain Ulysses). Aco lends
 * heads of each attention call to decode workers at the share models/wan/aco.h's rule picks
 * (pd_aco_predict, pd_aco_choose_share). The VAE decoder is walked layer by layer from its config
 * (conv FLOPs at the profile's conv rate, elementwise bytes at its bandwidth); its streaming peak
 * memory scales with one chunk of four full-resolution frames.
 *
 * Units: seconds, bytes, FLOP/s, bytes/s. Every function here is deterministic. */
#ifndef PD_PLAN_COST_H
#define PD_PLAN_COST_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "models/presets.h"

/* The most conv rates by output width a profile holds (pd_plan_profile.conv_cout). */
#define PD_PLAN_CONV_POINTS 8

/* How the GPUs of a group talk. */
typedef enum pd_plan_topology { PD_PLAN_NVLINK = 0, PD_PLAN_PCIE, PD_PLAN_SHM } pd_plan_topology;

/* A collective's time for `bytes` sent by each rank of a group of n: latency + bytes * (n - 1) / n / bw
 * for the all-to-all (a rank keeps 1/n of its data), latency + bytes / bw point to point. */
typedef struct pd_plan_link {
    double bw;      /* bytes/s each rank sends (and receives) */
    double latency; /* seconds per collective or message */
} pd_plan_link;

typedef struct pd_plan_profile {
    char name[48];
    char source[200];       /* where the numbers come from (measured, or a published specification) */
    double gemm_bf16;       /* FLOP/s, large bf16 GEMM */
    double gemm_f32;        /* FLOP/s, large f32 GEMM */
    double attn;            /* FLOP/s, self-attention at video lengths (tens of thousands of tokens) */
    double mem_bw;          /* bytes/s moved (read + write counted) by a device copy */
    double conv;            /* FLOP/s, 3D convolution (VAE decoder shapes) */
    double mem_bytes;       /* device memory */
    /* Passes over a (tokens, dim) activation a DiT block makes outside matmuls and attention (each
     * eager elementwise op reads its inputs and writes its output). A property of the runtime the
     * profile was measured with, not of the card: see PD_PLAN_EAGER_PASSES. */
    double eltwise_passes;
    int act_bytes;          /* bytes per activation element (2: bf16) */
    pd_plan_topology topology;
    pd_plan_link a2a;       /* all-to-all inside an SP group */
    pd_plan_link p2p;       /* point to point (Aco's lends, latents to the decode group) */
    /* The FFN's GELU runs inside its first linear, on the tile just computed (the CPU backend's
     * LINEAR_GELU): no passes over (tokens, ffn_dim). false: two (an eager GELU reads and writes). */
    bool gelu_fused;
    /* A CPU profile: the cores its rates were measured on, every one busy (pipedit calibrate runs one
     * thread per core). Processes on such a device share it (pd_plan_profile_share). 0: a GPU, whose
     * rates are one rank's own. */
    int cores;
    /* Conv3d rates by output channels (conv_n points, conv_cout ascending, FLOP/s), for backends whose
     * rate depends on the width: the CPU's conv is an im2col gather of cin * taps values per output
     * voxel, then an sgemm of cout rows (so the gather costs more per FLOP the fewer outputs share
     * it), and for cout <= 8 a direct loop without the gather. pd_plan_conv_rate interpolates.
     * conv_n 0: every conv at `conv` (cuDNN's implicit GEMM). */
    int conv_n;
    double conv_cout[PD_PLAN_CONV_POINTS], conv_rate[PD_PLAN_CONV_POINTS];
    /* Elements per second of SiLU (an exp per element: on the CPU bound by compute, not by memory).
     * 0: priced as two passes at mem_bw, as an eager kernel streams it on a GPU. */
    double silu;
    /* What a worker's decode stage does besides the VAE walk, on the CPU (0: not priced; the
     * built-in GPU profiles leave them 0, so their predictions are unchanged: encoding next to a GPU
     * is a story of its own). The media writer (models/pipeline_media.c: MP4 through x264 on one
     * thread, and the PNG thumbnail) in output pixels per second: encode_first_px for a one-frame
     * clip (open, first frame, PNG, close), encode_px for each further frame. fault_bw: bytes per
     * second of first-touch page faults on fresh allocations (each decode of more than one latent
     * frame allocates its causal convs' caches anew; the decoder's working memory is kept between
     * decodes, so only a worker's first decode at a size pays for it, which is not priced). One
     * thread each: a process with a share of a CPU gets min(1, share * cores) of a core for them
     * (pd_plan_profile_share). */
    double encode_first_px, encode_px, fault_bw;
    /* Seconds each collective of a CPU group costs beyond its transfer when the group's ranks
     * outnumber the cores (a peer it waits for, woken, queues for a core behind ranks already
     * computing). 0: not priced (GPU profiles: one rank per device). */
    double crowd_wait;
} pd_plan_profile;

/* Passes of an eager (one kernel per op) bf16 block, counted op by op from the block of
 * shared/gpu/anchor_torch.py, in units of one (tokens, dim) read or write: LayerNorm + modulate 6,
 * q and k RMSNorm 13 each (f32 upcast, square, mean, scale, weight), RoPE 11 each (two products, a
 * roll, a sum), attention output relayout 2 and gated residual 5, cross-attention norm, q RMSNorm,
 * relayout and residual 20, FFN norm + modulate 6 and gated residual 5. The FFN's GELU adds 2 passes
 * over (tokens, ffn_dim) on top. */
#define PD_PLAN_EAGER_PASSES 92.0

/* The same count for our CPU backend (models/wan/dit.c on engine/cpu, f32 activations), whose fused
 * ops read their inputs and write their output once: LayerNorm + modulate 2, q and k RMSNorm + RoPE
 * 2 each, gated residual 3, cross-attention LayerNorm 2, its q RMSNorm 2, residual 3, FFN LayerNorm
 * + modulate 2 and gated residual 3. Biases and the GELU are applied to each output tile of a linear
 * while it is in cache, and attention writes its output in place: no passes (profile gelu_fused). */
#define PD_PLAN_CPU_PASSES 21.0

/* Memory held back on every device (runtime context, allocator slack, fragmentation). */
#define PD_PLAN_MEM_RESERVE (3.0 * 1073741824.0)

/* The built-in profiles: "h100", "h200" (DESIGN.md section 9's measured figures) and "l4"
 * (published specifications only, marked so in its source). NULL for an unknown name. */
const pd_plan_profile *pd_plan_profile_builtin(const char *name);
/* The built-in names, NULL-terminated. */
const char *const *pd_plan_profile_names(void);

/* Reads a profile from JSON: {"name", "source", "gemm_bf16_flops", "gemm_f32_flops", "attn_flops",
 * "mem_bw_bytes", "conv_flops", "mem_bytes", "eltwise_passes", "act_bytes", "topology":
 * "nvlink"|"pcie"|"shm", "a2a": {"bw_bytes", "latency_s"}, "p2p": {...}} and optionally
 * "gelu_fused" (a boolean, default false), "cores" (an integer 0..4096, default 0) and "conv_by_cout"
 * ([[cout, FLOP/s], ...], at most PD_PLAN_CONV_POINTS, cout ascending; default none) and "silu_elems"
 * (default 0), "encode_first_px", "encode_px" and "fault_bytes" (each default 0). Every number is
 * checked (positive and finite; act_bytes 1..8). PD_ERR_IO, PD_ERR_FORMAT naming the key. */
pd_status pd_plan_profile_load(const char *path, pd_plan_profile *out);
/* Writes p as that JSON, atomically. PD_ERR_IO. */
pd_status pd_plan_profile_save(const char *path, const pd_plan_profile *p);
/* PD_ERR_INVALID naming the first field that is not positive and finite. */
pd_status pd_plan_profile_check(const pd_plan_profile *p);

/* An all-to-all of a group of n over link l, each rank holding `bytes` (of which (n - 1) / n leave):
 * latency + bytes * (n - 1) / n / bw; 0 for one rank. */
double pd_plan_a2a_s(const pd_plan_link *l, int n, double bytes);

/* The FLOP rate of a conv3d with cout output channels: with conv_n points, the nearest point's rate
 * outside them and the linear interpolation in cout between two; else p->conv. */
double pd_plan_conv_rate(const pd_plan_profile *p, double cout);

/* The fraction of a CPU device one process gets: its `threads` among `busy` threads on `cores`
 * cores, threads / max(busy, cores) (every thread busy; the kernel shares cores evenly). 1 for
 * cores < 1 (a GPU: a device per process) or threads < 1. */
double pd_plan_cpu_share(int cores, int threads, int busy);

/* The profile as one process sees it when it gets `share` (0 < share <= 1; anything else: 1) of the
 * device: every compute rate and the memory bandwidth times share. On a CPU profile (cores > 0) a
 * process copies its own messages on one of its threads, which gets min(1, share * cores) of a
 * core, and the link bandwidths (measured with a core per rank) scale by that. The conv rates by
 * width scale like the others. */
void pd_plan_profile_share(const pd_plan_profile *p, double share, pd_plan_profile *out);

/* A model: the three configs of a Wan2.1 checkpoint. */
typedef struct pd_plan_model {
    char name[64];
    pd_wan_dit_config dit;
    pd_wan_vae_config vae;
    pd_umt5_config text;
    /* Bytes per weight: 4 runs the linears at the profile's f32 GEMM rate; 2 (bf16) or 0 at its bf16
     * rate. pd_plan_model_get gives presets 2 and a folder its checkpoint's (its largest DiT tensor's
     * dtype; 2 without a readable checkpoint). */
    int weight_bytes;
} pd_plan_model;

/* The model of a preset name, or of a model folder (its transformer/config.json, vae/config.json and
 * text_encoder/config.json; a folder without the VAE or text config takes those of the preset whose
 * DiT matches, else of wan2.1-t2v-1.3b). PD_ERR_NOT_FOUND, and the config loaders' errors. */
pd_status pd_plan_model_get(const char *name_or_dir, pd_plan_model *out);

typedef struct pd_plan_request {
    int width, height, frames, steps;
    bool cfg; /* classifier-free guidance: two DiT evaluations (the CFG pair) per step */
} pd_plan_request;

/* Latent (T, h, w) and DiT tokens of a request. PD_ERR_INVALID when the size or frames do not fit
 * the model (width and height multiples of 16, frames 1 + 4k, positive steps). */
pd_status pd_plan_request_check(const pd_plan_model *m, const pd_plan_request *r, int64_t *tokens);

/* How one denoise group evaluates the DiT. */
typedef struct pd_plan_sp {
    int degree;        /* SP ranks evaluating one batch (>= 1) */
    bool cfg_parallel; /* the CFG pair runs on two such groups, one element each (needs r->cfg) */
    int g;             /* PipeSP chunk in head slots; 0: one chunk (Ulysses); -1: the fastest g */
    int aco_helpers;   /* decode workers lending their attention (0: no Aco) */
    int aco_share;     /* heads lent per attention call; -1: pd_aco_choose_share's pick */
    /* The fraction of its device each rank (and each Aco helper) gets, pd_plan_cpu_share: SP ranks
     * sharing one CPU. 0 or 1: a device per rank. A rank with at most one core of its own
     * (share * cores <= 1 on a CPU profile) copies its messages on the core its attention needs, so
     * nothing overlaps: the self-attention is its attention plus every transfer. */
    double device_share;
} pd_plan_sp;

typedef struct pd_plan_step {
    double step_s;        /* one denoising step (every DiT evaluation it needs) */
    double block_s;       /* one block on one rank */
    double linear_s, eltwise_s, cross_s; /* of block_s: linears, elementwise, cross-attention */
    double self_s;        /* of block_s: self-attention with its all-to-alls (the PipeSP schedule) */
    double comm_exposed_s;/* of self_s: communication not hidden behind attention */
    int heads_per_rank;   /* h, head slots after padding */
    int g;                /* the chunk used */
    int aco_share;        /* heads lent per call (0: none) */
} pd_plan_step;

/* One denoising step. PD_ERR_INVALID for a degree < 1, cfg_parallel without CFG, g > h. */
/* One small collective of an SP group (a flag, a few timestamps): the all-to-all latency, and the
 * profile's crowd_wait when the group's ranks outnumber a CPU's cores (device_share * cores < 1). 0
 * for one rank. */
double pd_plan_sp_sync_s(const pd_plan_profile *p, const pd_plan_sp *sp);

pd_status pd_plan_dit_step(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r,
                           const pd_plan_sp *sp, pd_plan_step *out);

/* One DiT block on one device for B batch elements of N tokens (no parallelism): the figure DESIGN.md
 * section 9 measures. */
double pd_plan_block_seconds(const pd_plan_profile *p, const pd_wan_dit_config *c, double N, int B);

typedef struct pd_plan_vae {
    double seconds;      /* decode of the whole latent on one device, streaming */
    double flops;        /* conv and attention FLOPs */
    double peak_bytes;   /* activations held at once (one chunk plus caches) */
    double weight_bytes;
    double encode_s;     /* of seconds: the media writer (profile encode_first_px, encode_px) */
    double fault_s;      /* of seconds: first touch of the causal convs' caches (profile fault_bw) */
} pd_plan_vae;
/* Streaming VAE decode of a request's latent on one device, as models/wan/vae.c runs it (a causal
 * conv's first chunk multiplies only its last temporal tap; later chunks copy the cached frames), with
 * what the decode stage does around it: the MP4 and PNG (width * height / encode_first_px + (frames -
 * 1) * width * height / encode_px) and the first touch of the caches a decode of several latent
 * frames allocates (their bytes / fault_bw); each 0 where the profile's rate is 0. */
void pd_plan_vae_decode(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r, pd_plan_vae *out);

/* Text encoding of one prompt padded to 512 tokens (both prompts of the CFG pair when r->cfg). */
double pd_plan_text_seconds(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r);

/* Parameter counts (weights are stored in bf16: 2 bytes each). */
double pd_plan_dit_params(const pd_wan_dit_config *c);
double pd_plan_text_params(const pd_umt5_config *c);

/* Bytes one denoise rank needs for the DiT: weights plus the activations of one block (its N/n tokens
 * through the linears, and the full sequence of its h head slots around the attention). INFINITY for
 * a request pd_plan_request_check refuses. */
double pd_plan_dit_rank_bytes(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r,
                              const pd_plan_sp *sp);

#endif
