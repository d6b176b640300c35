/* Model configurations and the presets pipedit knows: "tiny" (the embedded default, random weights,
 * same architecture and tensor names as Wan2.1 with smaller dims), "attn-bench" (tiny's text encoder
 * and VAE with an attention-heavy DiT, for benchmarks), "wan2.1-t2v-1.3b" and "wan2.1-t2v-14b". This header is the one source of truth for the tiny preset's dims; the tiny model
 * writer and every test take them from here. Real checkpoints carry their own config.json files,
 * which the loaders parse into these same structs. */
#ifndef PD_MODELS_PRESETS_H
#define PD_MODELS_PRESETS_H

#include <stdbool.h>

/* transformer/config.json (diffusers WanTransformer3DModel) */
typedef struct pd_wan_dit_config {
    int dim;          /* num_attention_heads * attention_head_dim */
    int heads;        /* num_attention_heads */
    int head_dim;     /* attention_head_dim */
    int layers;       /* num_layers */
    int ffn_dim;
    int freq_dim;     /* sinusoidal time embedding width (256) */
    int text_dim;     /* text encoder width (4096 for umT5-XXL) */
    int text_len;     /* rows the context is padded to (512) */
    int in_channels;  /* 16 */
    int out_channels; /* 16 */
    int patch[3];     /* (pt, ph, pw) = (1, 2, 2) */
    float eps;        /* 1e-6 */
    double rope_theta;/* 10000 */
} pd_wan_dit_config;

/* vae/config.json (diffusers AutoencoderKLWan) */
typedef struct pd_wan_vae_config {
    int base_dim;              /* 96 */
    int z_dim;                 /* 16 */
    int dim_mult[4];           /* 1, 2, 4, 4 */
    int num_res_blocks;        /* 2 */
    bool temporal_downsample[3]; /* false, true, true (the decoder upsamples in time where true, reversed) */
    float latents_mean[16];
    float latents_std[16];
} pd_wan_vae_config;

/* text_encoder/config.json (HF UMT5EncoderModel) */
typedef struct pd_umt5_config {
    int vocab_size;   /* 256384 */
    int d_model;      /* 4096 */
    int d_kv;         /* 64 */
    int num_heads;    /* 64 */
    int d_ff;         /* 10240 */
    int num_layers;   /* 24 */
    int num_buckets;  /* 32 */
    int max_distance; /* 128 */
    float eps;        /* 1e-6 */
} pd_umt5_config;

typedef struct pd_model_preset {
    const char *name;
    pd_wan_dit_config dit;
    pd_wan_vae_config vae;
    pd_umt5_config text;
    int tokenizer_vocab;   /* pieces in the tokenizer (equals text.vocab_size for tiny) */
    /* Defaults a request gets when it names none. */
    int default_width, default_height, default_frames, default_steps;
    float default_guidance, default_shift;
    int fps;
} pd_model_preset;

/* The preset of that name, or NULL. */
const pd_model_preset *pd_model_preset_find(const char *name);
/* The known preset whose DiT has the same dim, heads and layers as c, or NULL. */
const pd_model_preset *pd_model_preset_match_dit(const pd_wan_dit_config *c);
/* The embedded default ("tiny"). */
const pd_model_preset *pd_model_preset_default(void);

#endif
