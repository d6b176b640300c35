#include "models/presets.h"

#include <string.h>

#define PD_WAN_LATENTS_MEAN                                                                        \
    {-0.7571f, -0.7089f, -0.9113f, 0.1075f, -0.1745f, 0.9653f, -0.1517f, 1.5508f,                  \
     0.4134f,  -0.0715f, 0.5517f,  -0.3632f, -0.1922f, -0.9497f, 0.2503f, -0.2921f}
#define PD_WAN_LATENTS_STD                                                                         \
    {2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f,                       \
     3.2687f, 2.1526f, 2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f}

/* The tiny model's VAE, text encoder and tokenizer (also under the attention-heavy benchmark DiT). */
#define PD_TINY_VAE_AND_TEXT                                                                                   \
    .vae = {.base_dim = 8, .z_dim = 16, .dim_mult = {1, 2, 4, 4}, .num_res_blocks = 2,                        \
            .temporal_downsample = {false, true, true},                                                        \
            .latents_mean = PD_WAN_LATENTS_MEAN, .latents_std = PD_WAN_LATENTS_STD},                           \
    .text = {.vocab_size = 2048, .d_model = 32, .d_kv = 8, .num_heads = 4, .d_ff = 64,                         \
             .num_layers = 2, .num_buckets = 32, .max_distance = 128, .eps = 1e-6f},                           \
    .tokenizer_vocab = 2048

static const pd_model_preset pd_presets[] = {
    {
        .name = "tiny",
        .dit = {.dim = 128, .heads = 4, .head_dim = 32, .layers = 2, .ffn_dim = 256, .freq_dim = 256,
                .text_dim = 32, .text_len = 512, .in_channels = 16, .out_channels = 16,
                .patch = {1, 2, 2}, .eps = 1e-6f, .rope_theta = 10000.0},
        PD_TINY_VAE_AND_TEXT,
        .default_width = 128, .default_height = 96, .default_frames = 9, .default_steps = 8,
        .default_guidance = 5.0f, .default_shift = 5.0f, .fps = 16,
    },
    {
        /* Attention-heavy benchmarks (Aco): a DiT whose self-attention is most of a block at thousands
         * of tokens (dim 512, 8 heads x 64, ffn 1024), with the tiny text encoder and VAE so the
         * decode stays short. Defaults: one 1536x1376 frame = 96 x 86 = 8256 tokens, no CFG. */
        .name = "attn-bench",
        .dit = {.dim = 512, .heads = 8, .head_dim = 64, .layers = 2, .ffn_dim = 1024, .freq_dim = 256,
                .text_dim = 32, .text_len = 512, .in_channels = 16, .out_channels = 16,
                .patch = {1, 2, 2}, .eps = 1e-6f, .rope_theta = 10000.0},
        PD_TINY_VAE_AND_TEXT,
        .default_width = 1536, .default_height = 1376, .default_frames = 1, .default_steps = 4,
        .default_guidance = 1.0f, .default_shift = 5.0f, .fps = 16,
    },
    {
        .name = "wan2.1-t2v-1.3b",
        .dit = {.dim = 1536, .heads = 12, .head_dim = 128, .layers = 30, .ffn_dim = 8960, .freq_dim = 256,
                .text_dim = 4096, .text_len = 512, .in_channels = 16, .out_channels = 16,
                .patch = {1, 2, 2}, .eps = 1e-6f, .rope_theta = 10000.0},
        .vae = {.base_dim = 96, .z_dim = 16, .dim_mult = {1, 2, 4, 4}, .num_res_blocks = 2,
                .temporal_downsample = {false, true, true},
                .latents_mean = PD_WAN_LATENTS_MEAN, .latents_std = PD_WAN_LATENTS_STD},
        .text = {.vocab_size = 256384, .d_model = 4096, .d_kv = 64, .num_heads = 64, .d_ff = 10240,
                 .num_layers = 24, .num_buckets = 32, .max_distance = 128, .eps = 1e-6f},
        .tokenizer_vocab = 256384,
        .default_width = 832, .default_height = 480, .default_frames = 81, .default_steps = 50,
        .default_guidance = 5.0f, .default_shift = 5.0f, .fps = 16,
    },
    {
        .name = "wan2.1-t2v-14b",
        .dit = {.dim = 5120, .heads = 40, .head_dim = 128, .layers = 40, .ffn_dim = 13824, .freq_dim = 256,
                .text_dim = 4096, .text_len = 512, .in_channels = 16, .out_channels = 16,
                .patch = {1, 2, 2}, .eps = 1e-6f, .rope_theta = 10000.0},
        .vae = {.base_dim = 96, .z_dim = 16, .dim_mult = {1, 2, 4, 4}, .num_res_blocks = 2,
                .temporal_downsample = {false, true, true},
                .latents_mean = PD_WAN_LATENTS_MEAN, .latents_std = PD_WAN_LATENTS_STD},
        .text = {.vocab_size = 256384, .d_model = 4096, .d_kv = 64, .num_heads = 64, .d_ff = 10240,
                 .num_layers = 24, .num_buckets = 32, .max_distance = 128, .eps = 1e-6f},
        .tokenizer_vocab = 256384,
        .default_width = 1280, .default_height = 720, .default_frames = 81, .default_steps = 50,
        .default_guidance = 5.0f, .default_shift = 5.0f, .fps = 16,
    },
};

const pd_model_preset *pd_model_preset_find(const char *name) {
    for (size_t i = 0; i < sizeof pd_presets / sizeof pd_presets[0]; i++)
        if (!strcmp(pd_presets[i].name, name)) return &pd_presets[i];
    return NULL;
}

const pd_model_preset *pd_model_preset_default(void) { return &pd_presets[0]; }

const pd_model_preset *pd_model_preset_match_dit(const pd_wan_dit_config *c) {
    for (size_t i = 0; i < sizeof pd_presets / sizeof pd_presets[0]; i++) {
        const pd_wan_dit_config *q = &pd_presets[i].dit;
        if (q->dim == c->dim && q->heads == c->heads && q->layers == c->layers) return &pd_presets[i];
    }
    return NULL;
}
