#include <math.h>
#include <stdio.h>

#include "models/wan/dit_impl.h"

typedef struct pd_dit_walk {
    pd_wan_layout layout;
    const char *prefix;
    pd_dit_tensor_fn fn;
    void *ud;
} pd_dit_walk;

/* Emits one tensor. orig / diff are the names in the two layouts (the original one keys the values,
 * so both layouts hold the same model for a seed). */
static pd_status pd_dit_emit(const pd_dit_walk *wk, const char *orig, const char *diff, pd_tensor *slot, int ndim,
                             const int64_t *shape, float mean, float std) {
    pd_dit_tensor_spec s = {.ndim = ndim, .mean = mean, .std = std, .slot = slot};
    for (int i = 0; i < ndim; i++) s.shape[i] = shape[i];
    snprintf(s.key, sizeof s.key, "%s", orig);
    snprintf(s.name, sizeof s.name, "%s%s", wk->prefix, wk->layout == PD_WAN_LAYOUT_ORIGINAL ? orig : diff);
    return wk->fn(wk->ud, &s);
}

/* A linear layer (N, K) + bias (N): weights normal(0, gain / sqrt(K)), bias normal(0, 0.05). */
static pd_status pd_dit_emit_linear(const pd_dit_walk *wk, const char *orig, const char *diff, pd_dit_linear *l,
                                    int64_t n, int64_t k, float gain) {
    char on[160], dn[160];
    int64_t ws[2] = {n, k}, bs[1] = {n};
    snprintf(on, sizeof on, "%s.weight", orig);
    snprintf(dn, sizeof dn, "%s.weight", diff);
    PD_TRY(pd_dit_emit(wk, on, dn, l ? &l->w : NULL, 2, ws, 0.0f, gain / sqrtf((float)k)));
    snprintf(on, sizeof on, "%s.bias", orig);
    snprintf(dn, sizeof dn, "%s.bias", diff);
    return pd_dit_emit(wk, on, dn, l ? &l->b : NULL, 1, bs, 0.0f, 0.05f);
}

/* A norm weight (dim) around 1. */
static pd_status pd_dit_emit_norm(const pd_dit_walk *wk, const char *orig, const char *diff, pd_tensor *slot,
                                  int64_t dim) {
    return pd_dit_emit(wk, orig, diff, slot, 1, &dim, 1.0f, 0.1f);
}

static pd_status pd_dit_emit_attn(const pd_dit_walk *wk, int i, const char *orig_name, const char *diff_name,
                                  pd_dit_attn *a, int64_t dim) {
    static const char *const orig_proj[4] = {"q", "k", "v", "o"};
    static const char *const diff_proj[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    char on[160], dn[160];
    pd_dit_linear *lin[4] = {a ? &a->q : NULL, a ? &a->k : NULL, a ? &a->v : NULL, a ? &a->o : NULL};
    for (int p = 0; p < 4; p++) {
        snprintf(on, sizeof on, "blocks.%d.%s.%s", i, orig_name, orig_proj[p]);
        snprintf(dn, sizeof dn, "blocks.%d.%s.%s", i, diff_name, diff_proj[p]);
        PD_TRY(pd_dit_emit_linear(wk, on, dn, lin[p], dim, dim, 1.0f));
    }
    snprintf(on, sizeof on, "blocks.%d.%s.norm_q.weight", i, orig_name);
    snprintf(dn, sizeof dn, "blocks.%d.%s.norm_q.weight", i, diff_name);
    PD_TRY(pd_dit_emit_norm(wk, on, dn, a ? &a->norm_q : NULL, dim));
    snprintf(on, sizeof on, "blocks.%d.%s.norm_k.weight", i, orig_name);
    snprintf(dn, sizeof dn, "blocks.%d.%s.norm_k.weight", i, diff_name);
    return pd_dit_emit_norm(wk, on, dn, a ? &a->norm_k : NULL, dim);
}

pd_status pd_dit_each_tensor(const pd_wan_dit_config *cfg, pd_wan_layout layout, const char *prefix,
                             pd_dit_weights *w, pd_dit_tensor_fn fn, void *ud) {
    pd_dit_walk wk = {.layout = layout, .prefix = prefix ? prefix : "", .fn = fn, .ud = ud};
    const int64_t D = cfg->dim, P = (int64_t)cfg->patch[0] * cfg->patch[1] * cfg->patch[2];
    const int64_t cin = cfg->in_channels;

    int64_t pw_shape[5] = {D, cin, cfg->patch[0], cfg->patch[1], cfg->patch[2]};
    PD_TRY(pd_dit_emit(&wk, "patch_embedding.weight", "patch_embedding.weight", w ? &w->patch.w : NULL, 5, pw_shape,
                       0.0f, 1.0f / sqrtf((float)(cin * P))));
    PD_TRY(pd_dit_emit(&wk, "patch_embedding.bias", "patch_embedding.bias", w ? &w->patch.b : NULL, 1, &D, 0.0f,
                       0.05f));
    PD_TRY(pd_dit_emit_linear(&wk, "text_embedding.0", "condition_embedder.text_embedder.linear_1",
                              w ? &w->text0 : NULL, D, cfg->text_dim, 1.0f));
    PD_TRY(pd_dit_emit_linear(&wk, "text_embedding.2", "condition_embedder.text_embedder.linear_2",
                              w ? &w->text2 : NULL, D, D, 1.0f));
    PD_TRY(pd_dit_emit_linear(&wk, "time_embedding.0", "condition_embedder.time_embedder.linear_1",
                              w ? &w->time0 : NULL, D, cfg->freq_dim, 1.0f));
    PD_TRY(pd_dit_emit_linear(&wk, "time_embedding.2", "condition_embedder.time_embedder.linear_2",
                              w ? &w->time2 : NULL, D, D, 1.0f));
    /* e0 drives every block's scales and gates: keep it well below 1. */
    PD_TRY(pd_dit_emit_linear(&wk, "time_projection.1", "condition_embedder.time_proj", w ? &w->time_proj : NULL,
                              6 * D, D, 0.5f));

    for (int i = 0; i < cfg->layers; i++) {
        pd_dit_block *b = w ? &w->blocks[i] : NULL;
        char on[160], dn[160];
        int64_t mod_shape[3] = {1, 6, D};
        snprintf(on, sizeof on, "blocks.%d.modulation", i);
        snprintf(dn, sizeof dn, "blocks.%d.scale_shift_table", i);
        PD_TRY(pd_dit_emit(&wk, on, dn, b ? &b->modulation : NULL, 3, mod_shape, 0.0f, 0.1f));
        PD_TRY(pd_dit_emit_attn(&wk, i, "self_attn", "attn1", b ? &b->self_attn : NULL, D));
        /* The affine cross-attention norm: original norm3 is diffusers norm2. */
        snprintf(on, sizeof on, "blocks.%d.norm3.weight", i);
        snprintf(dn, sizeof dn, "blocks.%d.norm2.weight", i);
        PD_TRY(pd_dit_emit_norm(&wk, on, dn, b ? &b->cross_norm_w : NULL, D));
        snprintf(on, sizeof on, "blocks.%d.norm3.bias", i);
        snprintf(dn, sizeof dn, "blocks.%d.norm2.bias", i);
        PD_TRY(pd_dit_emit(&wk, on, dn, b ? &b->cross_norm_b : NULL, 1, &D, 0.0f, 0.1f));
        PD_TRY(pd_dit_emit_attn(&wk, i, "cross_attn", "attn2", b ? &b->cross_attn : NULL, D));
        snprintf(on, sizeof on, "blocks.%d.ffn.0", i);
        snprintf(dn, sizeof dn, "blocks.%d.ffn.net.0.proj", i);
        PD_TRY(pd_dit_emit_linear(&wk, on, dn, b ? &b->ffn0 : NULL, cfg->ffn_dim, D, 1.0f));
        snprintf(on, sizeof on, "blocks.%d.ffn.2", i);
        snprintf(dn, sizeof dn, "blocks.%d.ffn.net.2", i);
        PD_TRY(pd_dit_emit_linear(&wk, on, dn, b ? &b->ffn2 : NULL, D, cfg->ffn_dim, 1.0f));
    }

    int64_t hm_shape[3] = {1, 2, D};
    PD_TRY(pd_dit_emit(&wk, "head.modulation", "scale_shift_table", w ? &w->head_modulation : NULL, 3, hm_shape, 0.0f,
                       0.1f));
    return pd_dit_emit_linear(&wk, "head.head", "proj_out", w ? &w->head : NULL, cfg->out_channels * P, D, 1.0f);
}
