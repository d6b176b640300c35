/* The two tensor-name layouts Wan2.1 checkpoints come in. Loaders detect which one a file uses;
 * writers can produce either (tests check both). */
#ifndef PD_WAN_LAYOUT_H
#define PD_WAN_LAYOUT_H

typedef enum pd_wan_layout {
    PD_WAN_LAYOUT_DIFFUSERS = 0, /* diffusers: condition_embedder.*, attn1.*, scale_shift_table, ... */
    PD_WAN_LAYOUT_ORIGINAL = 1,  /* official / Comfy-Org: patch_embedding, self_attn.*, modulation, ... */
} pd_wan_layout;

#endif
