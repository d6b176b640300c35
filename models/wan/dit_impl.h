/* Private to models/wan/dit*.c: the DiT's weight struct, the one table of its tensors (name in
 * each layout, shape, random-init scale) that the loader and the writer both walk, and the view
 * helpers the forward passes (single-device and sequence-parallel) share. */
#ifndef PD_WAN_DIT_IMPL_H
#define PD_WAN_DIT_IMPL_H

#include "engine/arena.h"
#include "models/wan/dit.h"

typedef struct pd_dit_linear {
    pd_tensor w; // (N, K)
    pd_tensor b; // (N)
} pd_dit_linear;

typedef struct pd_dit_attn {
    pd_dit_linear q, k, v, o;
    pd_tensor norm_q, norm_k; // (dim) RMSNorm over the full dim
} pd_dit_attn;

typedef struct pd_dit_block {
    pd_tensor modulation; // (1, 6, dim)
    pd_dit_attn self_attn, cross_attn;
    pd_tensor cross_norm_w, cross_norm_b; // (dim) the affine LayerNorm before cross-attention
    pd_dit_linear ffn0, ffn2;
} pd_dit_block;

typedef struct pd_dit_weights {
    pd_dit_linear patch; // w viewed as (dim, in_channels * pt * ph * pw) after loading
    pd_dit_linear text0, text2, time0, time2, time_proj, head;
    pd_tensor head_modulation; // (1, 2, dim)
    pd_dit_block *blocks;      // (layers)
} pd_dit_weights;

struct pd_wan_dit {
    pd_wan_dit_config cfg;
    pd_wan_layout layout;
    pd_backend *be;
    pd_st *st;
    pd_dit_weights w;
    pd_tensor zeros; // (text_len, text_dim) f32 zeros: the context padding rows
    pd_arena *arena;
    pd_wan_attention_fn self_attn_fn; // NULL: the backend's op
    void *self_attn_ud;
    const atomic_int *stop;        /* read before every block (pd_wan_dit_set_stop) */
    pd_wan_dit_block_fn block_fn;  /* called after every block (pd_wan_dit_set_block_hook) */
    void *block_ud;
};

/* Self-attention (B, N, H, D) through the model's route (pd_wan_dit_set_self_attention). */
static inline pd_status pd_dit_self_attention(pd_wan_dit *m, pd_tensor *out, const pd_tensor *q, const pd_tensor *k,
                                              const pd_tensor *v, float scale) {
    if (m->self_attn_fn) return m->self_attn_fn(m->self_attn_ud, out, q, k, v, scale);
    return pd_op_attention(m->be, out, q, k, v, NULL, scale);
}

/* Same data, another shape (contiguous tensors only). */
static inline pd_tensor pd_dit_view(const pd_tensor *t, int ndim, const int64_t *shape) {
    pd_tensor v = *t;
    v.owns_data = false;
    PD_ASSERT(pd_tensor_reshape(&v, ndim, shape) == PD_OK);
    return v;
}

/* Element i of the outermost dim, that dim dropped. */
static inline pd_tensor pd_dit_item(const pd_tensor *t, int64_t i) {
    pd_tensor v = pd_tensor_slice(t, 0, i, 1);
    for (int d = 0; d + 1 < v.ndim; d++) {
        v.shape[d] = v.shape[d + 1];
        v.stride[d] = v.stride[d + 1];
    }
    v.ndim--;
    return v;
}

/* How one forward is spread over a sequence-parallel group (dit_sp.c). This device computes tokens
 * [offset, offset + count) of the N-token sequence; every op is local but two:
 *  - self_attn: att (B, count, D) = attention over the whole sequence for this device's tokens, from
 *    their q, k (RMS-normed, rotated) and v (B, count, D);
 *  - gather: full (B, N, P*Cout) = every device's head outputs, from this one's (B, count, P*Cout);
 *  - before_block: whether the group goes on to block i (in place of the model's own stop check).
 * (gather is called only when count < N.) */
typedef struct pd_dit_shard {
    int64_t offset, count;
    pd_status (*self_attn)(void *ud, pd_tensor *att, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v);
    pd_status (*gather)(void *ud, pd_tensor *full, const pd_tensor *local);
    /* before block i: the group's agreement on the stop flag (PD_OK: go on) */
    pd_status (*before_block)(void *ud, int block);
    void *ud;
} pd_dit_shard;

/* pd_wan_dit_forward for one shard (shard NULL: the whole sequence on this device). */
pd_status pd_dit_forward_shard(pd_wan_dit *m, pd_tensor *vel, const pd_tensor *latent, const float *timesteps,
                               const pd_tensor *context, const pd_dit_shard *shard);

/* The single-device stop check before block (0-based): the model's stop flag (pd_wan_dit_set_stop). */
pd_status pd_dit_before_block(pd_wan_dit *m, int block);

/* One tensor of the checkpoint. */
typedef struct pd_dit_tensor_spec {
    char name[160];   /* full name in the requested layout, prefix included */
    char key[160];    /* original-layout name without prefix: the random-init key */
    int ndim;
    int64_t shape[PD_MAX_DIMS];
    float mean, std;  /* random-init distribution */
    pd_tensor *slot;  /* where a loader stores it; NULL when walked without weights */
} pd_dit_tensor_spec;

typedef pd_status (*pd_dit_tensor_fn)(void *ud, const pd_dit_tensor_spec *s);

/* Calls fn for every tensor of a DiT of config cfg in layout (names prefixed by prefix), in a fixed
 * order; w may be NULL (slots are then NULL). Stops at and returns the first failing status. */
pd_status pd_dit_each_tensor(const pd_wan_dit_config *cfg, pd_wan_layout layout, const char *prefix,
                             pd_dit_weights *w, pd_dit_tensor_fn fn, void *ud);

#endif
