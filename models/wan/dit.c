#include <math.h>
#include <string.h>

#include "models/wan/dit_impl.h"

#define PD_DIT_MAX_TOKENS ((int64_t)1 << 22)
#define PD_DIT_MAX_BATCH 64

pd_status pd_wan_dit_grid_of(const pd_wan_dit_config *cfg, int64_t T, int64_t H, int64_t W, pd_wan_dit_grid *out) {
    const int64_t dims[3] = {T, H, W};
    const char *names[3] = {"frames (T)", "height (H)", "width (W)"};
    for (int i = 0; i < 3; i++)
        if (dims[i] <= 0 || dims[i] % cfg->patch[i])
            return pd_error_set(PD_ERR_INVALID, "latent %s = %lld must be a positive multiple of the patch size %d",
                                names[i], (long long)dims[i], cfg->patch[i]);
    out->t = T / cfg->patch[0];
    out->h = H / cfg->patch[1];
    out->w = W / cfg->patch[2];
    if (out->t > PD_DIT_MAX_TOKENS || out->h > PD_DIT_MAX_TOKENS || out->w > PD_DIT_MAX_TOKENS ||
        out->t * out->h > PD_DIT_MAX_TOKENS || out->t * out->h * out->w > PD_DIT_MAX_TOKENS)
        return pd_error_set(PD_ERR_INVALID, "latent (%lld, %lld, %lld) has more than %lld tokens", (long long)T,
                            (long long)H, (long long)W, (long long)PD_DIT_MAX_TOKENS);
    out->tokens = out->t * out->h * out->w;
    return PD_OK;
}

void pd_wan_dit_flops_split(const pd_wan_dit_config *c, double N, double Nk, pd_wan_dit_flop_parts *out) {
    const double P = (double)c->patch[0] * c->patch[1] * c->patch[2];
    const double D = c->dim, F = c->ffn_dim, Lc = c->text_len;
    out->block_linear = 2.0 * N * D * D * 4.0 + 2.0 * N * D * D * 2.0 + 2.0 * N * D * F * 2.0;
    out->block_context = 2.0 * Lc * D * D * 2.0;
    out->block_self_attn = 4.0 * N * Nk * D;
    out->block_cross_attn = 4.0 * N * Lc * D;
    out->outside = 2.0 * N * c->in_channels * P * D                 /* patch embed */
                   + 2.0 * (c->freq_dim * D + D * D + D * 6.0 * D) /* time */
                   + 2.0 * Lc * (c->text_dim * D + D * D)          /* text */
                   + 2.0 * N * D * c->out_channels * P;            /* head */
}

double pd_wan_dit_flops(const pd_wan_dit_config *c, int64_t B, int64_t T, int64_t H, int64_t W) {
    const double N = (double)(T / c->patch[0]) * (double)(H / c->patch[1]) * (double)(W / c->patch[2]);
    pd_wan_dit_flop_parts p;
    pd_wan_dit_flops_split(c, N, N, &p);
    double blk = p.block_linear + p.block_context + p.block_self_attn + p.block_cross_attn;
    return (p.outside + blk * c->layers) * (double)B;
}

/* Activations a block reuses; allocated once per forward. */
typedef struct pd_dit_scratch {
    pd_tensor mod;        // (B, 6, D)
    pd_tensor h, q, k, v; // (B, N, D)
    pd_tensor att, o;     // (B, N, D)
    pd_tensor ck, cv;     // (B, Lc, D)
    pd_tensor f;          // (B, N, F)
} pd_dit_scratch;

/* att (B, N, D) = attention over heads; self-attention goes through the model's route. */
static pd_status pd_dit_attend(pd_wan_dit *m, pd_tensor *att, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                               bool self) {
    const pd_wan_dit_config *c = &m->cfg;
    int64_t qs[4] = {q->shape[0], q->shape[1], c->heads, c->head_dim};
    int64_t ks[4] = {k->shape[0], k->shape[1], c->heads, c->head_dim};
    pd_tensor q4 = pd_dit_view(q, 4, qs), k4 = pd_dit_view(k, 4, ks), v4 = pd_dit_view(v, 4, ks);
    pd_tensor a4 = pd_dit_view(att, 4, qs);
    float scale = 1.0f / sqrtf((float)c->head_dim);
    if (self) return pd_dit_self_attention(m, &a4, &q4, &k4, &v4, scale);
    return pd_op_attention(m->be, &a4, &q4, &k4, &v4, NULL, scale);
}

/* h = layer_norm(x) (no affine) * (1 + scale) + shift: the fused op where the backend has it. */
static pd_status pd_dit_norm_modulate(pd_backend *be, pd_tensor *h, const pd_tensor *x, const pd_tensor *shift,
                                      const pd_tensor *scale, float eps) {
    if (pd_backend_supports_op(be, PD_OP_LAYER_NORM_MODULATE, PD_DTYPE_F32))
        return pd_op_layer_norm_modulate(be, h, x, shift, scale, eps);
    PD_TRY(pd_op_layer_norm(be, h, x, NULL, NULL, eps));
    return pd_op_modulate(be, h, h, shift, scale);
}

/* t (B, N, D) = rope(rms_norm(t) * w) in place: q and k are RMS-normed over the full dim D, then
 * split into heads (B, N, heads, head_dim) and rotated by freqs. */
static pd_status pd_dit_norm_rope(pd_wan_dit *m, pd_tensor *t, const pd_tensor *w, const pd_tensor *freqs) {
    const pd_wan_dit_config *c = &m->cfg;
    if (pd_backend_supports_op(m->be, PD_OP_RMS_NORM_ROPE, w->dtype))
        return pd_op_rms_norm_rope(m->be, t, t, w, freqs, c->heads, c->eps);
    PD_TRY(pd_op_rms_norm(m->be, t, t, w, c->eps));
    int64_t hs[4] = {t->shape[0], t->shape[1], c->heads, c->head_dim};
    pd_tensor t4 = pd_dit_view(t, 4, hs);
    return pd_op_rope(m->be, &t4, &t4, freqs);
}

/* x (B, N, D) += one transformer block. e0 (B, 6, D); ctx (B, Lc, D) the projected text; freqs
 * (N, hd/2, 2) the RoPE table of x's tokens. Sequence parallelism (dit_sp.c) runs this same code
 * on each device's token range (shard != NULL: only self-attention's exchange differs), so the fused
 * ops chosen here apply there too. */
static pd_status pd_dit_block_forward(pd_wan_dit *m, const pd_dit_block *w, pd_tensor *x, const pd_tensor *e0,
                              const pd_tensor *ctx, const pd_tensor *freqs, pd_dit_scratch *s,
                              const pd_dit_shard *shard) {
    pd_backend *be = m->be;
    const pd_wan_dit_config *c = &m->cfg;
    const float eps = c->eps;

    PD_TRY(pd_op_add(be, &s->mod, e0, &w->modulation));
    pd_tensor shift_msa = pd_tensor_slice(&s->mod, 1, 0, 1), scale_msa = pd_tensor_slice(&s->mod, 1, 1, 1);
    pd_tensor gate_msa = pd_tensor_slice(&s->mod, 1, 2, 1), shift_ffn = pd_tensor_slice(&s->mod, 1, 3, 1);
    pd_tensor scale_ffn = pd_tensor_slice(&s->mod, 1, 4, 1), gate_ffn = pd_tensor_slice(&s->mod, 1, 5, 1);

    /* self-attention: q, k RMS-normed over the full dim, then split into heads and rotated */
    const pd_dit_attn *sa = &w->self_attn;
    PD_TRY(pd_dit_norm_modulate(be, &s->h, x, &shift_msa, &scale_msa, eps));
    PD_TRY(pd_op_linear(be, &s->q, &s->h, &sa->q.w, &sa->q.b));
    PD_TRY(pd_dit_norm_rope(m, &s->q, &sa->norm_q, freqs));
    PD_TRY(pd_op_linear(be, &s->k, &s->h, &sa->k.w, &sa->k.b));
    PD_TRY(pd_dit_norm_rope(m, &s->k, &sa->norm_k, freqs));
    PD_TRY(pd_op_linear(be, &s->v, &s->h, &sa->v.w, &sa->v.b));
    if (shard) PD_TRY(shard->self_attn(shard->ud, &s->att, &s->q, &s->k, &s->v));
    else PD_TRY(pd_dit_attend(m, &s->att, &s->q, &s->k, &s->v, true));
    PD_TRY(pd_op_linear(be, &s->o, &s->att, &sa->o.w, &sa->o.b));
    PD_TRY(pd_op_gated_add(be, x, &gate_msa, &s->o));

    /* cross-attention over every context row, no modulation, no gate */
    const pd_dit_attn *ca = &w->cross_attn;
    PD_TRY(pd_op_layer_norm(be, &s->h, x, &w->cross_norm_w, &w->cross_norm_b, eps));
    PD_TRY(pd_op_linear(be, &s->q, &s->h, &ca->q.w, &ca->q.b));
    PD_TRY(pd_op_rms_norm(be, &s->q, &s->q, &ca->norm_q, eps));
    PD_TRY(pd_op_linear(be, &s->ck, ctx, &ca->k.w, &ca->k.b));
    PD_TRY(pd_op_rms_norm(be, &s->ck, &s->ck, &ca->norm_k, eps));
    PD_TRY(pd_op_linear(be, &s->cv, ctx, &ca->v.w, &ca->v.b));
    PD_TRY(pd_dit_attend(m, &s->att, &s->q, &s->ck, &s->cv, false));
    PD_TRY(pd_op_linear(be, &s->o, &s->att, &ca->o.w, &ca->o.b));
    PD_TRY(pd_op_gated_add(be, x, NULL, &s->o));

    /* FFN */
    PD_TRY(pd_dit_norm_modulate(be, &s->h, x, &shift_ffn, &scale_ffn, eps));
    if (pd_backend_supports_op(be, PD_OP_LINEAR_GELU, w->ffn0.w.dtype)) {
        PD_TRY(pd_op_linear_gelu(be, &s->f, &s->h, &w->ffn0.w, &w->ffn0.b));
    } else {
        PD_TRY(pd_op_linear(be, &s->f, &s->h, &w->ffn0.w, &w->ffn0.b));
        PD_TRY(pd_op_gelu_tanh(be, &s->f, &s->f));
    }
    PD_TRY(pd_op_linear(be, &s->o, &s->f, &w->ffn2.w, &w->ffn2.b));
    return pd_op_gated_add(be, x, &gate_ffn, &s->o);
}

static pd_status pd_dit_check_inputs(const pd_wan_dit *m, const pd_tensor *vel, const pd_tensor *latent,
                                     const float *timesteps, const pd_tensor *ctx, pd_wan_dit_grid *grid) {
    const pd_wan_dit_config *c = &m->cfg;
    char a[96], b[96];
    if (latent->ndim != 5 || latent->dtype != PD_DTYPE_F32 || latent->shape[1] != c->in_channels ||
        !pd_tensor_is_contiguous(latent))
        return pd_error_set(PD_ERR_INVALID, "DiT: latent %s must be a contiguous (B, %d, T, H, W) f32 tensor",
                            pd_tensor_describe(latent, a, sizeof a), c->in_channels);
    const int64_t B = latent->shape[0];
    if (B < 1 || B > PD_DIT_MAX_BATCH)
        return pd_error_set(PD_ERR_INVALID, "DiT: batch %lld is outside 1..%d", (long long)B, PD_DIT_MAX_BATCH);
    PD_TRY(pd_wan_dit_grid_of(c, latent->shape[2], latent->shape[3], latent->shape[4], grid));
    if (vel->ndim != 5 || vel->dtype != PD_DTYPE_F32 || vel->shape[0] != B || vel->shape[1] != c->out_channels ||
        vel->shape[2] != latent->shape[2] || vel->shape[3] != latent->shape[3] || vel->shape[4] != latent->shape[4] ||
        !pd_tensor_is_contiguous(vel))
        return pd_error_set(PD_ERR_INVALID, "DiT: velocity %s does not match latent %s with %d output channels",
                            pd_tensor_describe(vel, a, sizeof a), pd_tensor_describe(latent, b, sizeof b),
                            c->out_channels);
    if (ctx->ndim != 3 || ctx->dtype != PD_DTYPE_F32 || ctx->shape[0] != B || ctx->shape[2] != c->text_dim ||
        ctx->shape[1] < 0 || ctx->shape[1] > c->text_len || !pd_tensor_is_contiguous(ctx))
        return pd_error_set(PD_ERR_INVALID, "DiT: context %s must be a contiguous (%lld, L <= %d, %d) f32 tensor",
                            pd_tensor_describe(ctx, a, sizeof a), (long long)B, c->text_len, c->text_dim);
    if (!timesteps) return pd_error_set(PD_ERR_INVALID, "DiT: no timesteps given");
    for (int64_t i = 0; i < B; i++)
        if (!isfinite(timesteps[i]) || fabsf(timesteps[i]) > 1e6f)
            return pd_error_set(PD_ERR_INVALID, "DiT: timestep %g of batch element %lld is not a finite value <= 1e6",
                                timesteps[i], (long long)i);
    return PD_OK;
}

static pd_status pd_dit_alloc(pd_wan_dit *m, pd_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    return pd_arena_tensor(m->arena, t, PD_DTYPE_F32, ndim, shape);
}

/* Bytes of every activation one forward takes from the arena (each rounded to the arena's 64), for
 * N tokens of which this device computes n (n < N: a sequence-parallel shard). */
static size_t pd_dit_activation_bytes(const pd_wan_dit_config *c, int64_t B, int64_t N, int64_t n) {
    const int64_t D = c->dim, Lc = c->text_len, P = (int64_t)c->patch[0] * c->patch[1] * c->patch[2];
    const int64_t shard = n < N;
    const int64_t elems[] = {
        B * N * c->in_channels * P, shard * B * n * c->in_channels * P, B * n * D, /* patches, x */
        B, B * c->freq_dim, B * D, B * D, B * D, B * 6 * D,          /* time */
        B * Lc * c->text_dim, B * Lc * D, B * Lc * D,                /* text */
        n * c->head_dim,                                             /* RoPE table */
        B * 6 * D, B * n * D, B * n * D, B * n * D, B * n * D, B * n * D, B * n * D, /* block scratch */
        B * Lc * D, B * Lc * D, B * n * c->ffn_dim,
        B * D, B * D, B * n * c->out_channels * P, shard * B * N * c->out_channels * P, /* head */
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof elems / sizeof elems[0]; i++) total += ((size_t)elems[i] * 4 + 63) & ~(size_t)63;
    return total;
}

size_t pd_wan_dit_activation_bytes(const pd_wan_dit_config *c, int64_t B, int64_t T, int64_t H, int64_t W) {
    const int64_t N = (T / c->patch[0]) * (H / c->patch[1]) * (W / c->patch[2]);
    return pd_dit_activation_bytes(c, B, N, N);
}

/* Makes the arena one chunk large enough for a (B, N) forward, so the first call allocates once and
 * no more than it needs; a larger shape later replaces it. */
static pd_status pd_dit_reserve(pd_wan_dit *m, int64_t B, int64_t N, int64_t n, size_t *need_out) {
    size_t need = pd_dit_activation_bytes(&m->cfg, B, N, n);
    *need_out = need;
    if (m->arena && pd_arena_reserved(m->arena) >= need) return PD_OK;
    pd_arena_free(m->arena);
    m->arena = NULL;
    PD_TRY(pd_arena_create(m->be, need, &m->arena));
    PD_DEBUG("dit", "activation arena: %.1f MiB for batch %lld, %lld tokens", (double)need / 1048576.0,
             (long long)B, (long long)N);
    return PD_OK;
}

void pd_wan_dit_set_stop(pd_wan_dit *m, const atomic_int *stop) { m->stop = stop; }

void pd_wan_dit_set_block_hook(pd_wan_dit *m, pd_wan_dit_block_fn fn, void *ud) {
    m->block_fn = fn;
    m->block_ud = fn ? ud : NULL;
}

pd_status pd_dit_before_block(pd_wan_dit *m, int block) {
    if (!m->stop) return PD_OK;
    if (block > 0) PD_TRY(pd_backend_synchronize(m->be)); /* the check means "block - 1 has run" */
    return pd_stop_check(m->stop, "before DiT block %d of %d", block + 1, m->cfg.layers);
}

pd_status pd_wan_dit_forward(pd_wan_dit *m, pd_tensor *vel, const pd_tensor *latent, const float *timesteps,
                             const pd_tensor *context) {
    return pd_dit_forward_shard(m, vel, latent, timesteps, context, NULL);
}

pd_status pd_dit_forward_shard(pd_wan_dit *m, pd_tensor *vel, const pd_tensor *latent, const float *timesteps,
                               const pd_tensor *context, const pd_dit_shard *shard) {
    const pd_wan_dit_config *c = &m->cfg;
    pd_backend *be = m->be;
    pd_wan_dit_grid g;
    PD_TRY(pd_dit_check_inputs(m, vel, latent, timesteps, context, &g));
    const int64_t B = latent->shape[0], N = g.tokens, D = c->dim, Lc = c->text_len, L = context->shape[1];
    const int64_t P = (int64_t)c->patch[0] * c->patch[1] * c->patch[2];
    const int *pt = c->patch;
    /* this device's tokens [off, off + n) */
    const int64_t off = shard ? shard->offset : 0, n = shard ? shard->count : N;
    PD_ASSERT(off >= 0 && n >= 1 && off + n <= N);
    size_t need;
    PD_TRY(pd_dit_reserve(m, B, N, n, &need));
    pd_arena_reset(m->arena, 0);
    /* A fresh arena gets its single chunk at the first tensor; a reused one must not grow. */
    const size_t reserved = pd_arena_reserved(m->arena) ? pd_arena_reserved(m->arena) : need;

    /* patch embedding: a Conv3d with kernel = stride = patch is a linear over each patch. A shard
     * patchifies the whole (small) latent and keeps its token range. */
    pd_tensor patches, x;
    PD_TRY(pd_dit_alloc(m, &patches, 3, B, N, c->in_channels * P, 0)); // (B, N, Cin*P)
    for (int64_t b = 0; b < B; b++) {
        pd_tensor pb = pd_dit_item(&patches, b), lb = pd_dit_item(latent, b);
        PD_TRY(pd_op_patchify(be, &pb, &lb, pt[0], pt[1], pt[2]));
    }
    if (n < N) {
        pd_tensor mine, range = pd_tensor_slice(&patches, 1, off, n);
        PD_TRY(pd_dit_alloc(m, &mine, 3, B, n, c->in_channels * P, 0)); // (B, n, Cin*P)
        PD_TRY(pd_op_copy(be, &mine, &range));
        patches = mine;
    }
    PD_TRY(pd_dit_alloc(m, &x, 3, B, n, D, 0)); // (B, n, D)
    PD_TRY(pd_op_linear(be, &x, &patches, &m->w.patch.w, &m->w.patch.b));

    /* time: e (B, D) feeds the head, e0 (B, 6, D) the blocks */
    pd_tensor tt, temb, e1, e, se, e0;
    PD_TRY(pd_dit_alloc(m, &tt, 1, B, 0, 0, 0));
    pd_tensor t_host = pd_tensor_view((void *)timesteps, PD_DTYPE_F32, 1, &B);
    PD_TRY(pd_backend_upload(be, &tt, &t_host));
    PD_TRY(pd_dit_alloc(m, &temb, 2, B, c->freq_dim, 0, 0));
    PD_TRY(pd_op_timestep_embed(be, &temb, &tt));
    PD_TRY(pd_dit_alloc(m, &e1, 2, B, D, 0, 0));
    PD_TRY(pd_op_linear(be, &e1, &temb, &m->w.time0.w, &m->w.time0.b));
    PD_TRY(pd_op_silu(be, &e1, &e1));
    PD_TRY(pd_dit_alloc(m, &e, 2, B, D, 0, 0));
    PD_TRY(pd_op_linear(be, &e, &e1, &m->w.time2.w, &m->w.time2.b));
    PD_TRY(pd_dit_alloc(m, &se, 2, B, D, 0, 0));
    PD_TRY(pd_op_silu(be, &se, &e));
    PD_TRY(pd_dit_alloc(m, &e0, 2, B, 6 * D, 0, 0));
    PD_TRY(pd_op_linear(be, &e0, &se, &m->w.time_proj.w, &m->w.time_proj.b));
    int64_t e0s[3] = {B, 6, D};
    pd_tensor e0v = pd_dit_view(&e0, 3, e0s);

    /* text: the context zero-padded to text_len rows, projected */
    pd_tensor ctxp, c1, ctx;
    PD_TRY(pd_dit_alloc(m, &ctxp, 3, B, Lc, c->text_dim, 0)); // (B, Lc, text_dim)
    for (int64_t b = 0; b < B; b++) {
        pd_tensor dst = pd_dit_item(&ctxp, b), src = pd_dit_item(context, b);
        if (L > 0) {
            pd_tensor head = pd_tensor_slice(&dst, 0, 0, L);
            PD_TRY(pd_op_copy(be, &head, &src));
        }
        if (L < Lc) {
            pd_tensor tail = pd_tensor_slice(&dst, 0, L, Lc - L), zeros = pd_tensor_slice(&m->zeros, 0, 0, Lc - L);
            PD_TRY(pd_op_copy(be, &tail, &zeros));
        }
    }
    PD_TRY(pd_dit_alloc(m, &c1, 3, B, Lc, D, 0));
    PD_TRY(pd_op_linear(be, &c1, &ctxp, &m->w.text0.w, &m->w.text0.b));
    PD_TRY(pd_op_gelu_tanh(be, &c1, &c1));
    PD_TRY(pd_dit_alloc(m, &ctx, 3, B, Lc, D, 0));
    PD_TRY(pd_op_linear(be, &ctx, &c1, &m->w.text2.w, &m->w.text2.b));

    /* RoPE table of this device's tokens */
    pd_tensor freqs;
    PD_TRY(pd_dit_alloc(m, &freqs, 3, n, c->head_dim / 2, 2, 0));
    PD_TRY(pd_op_rope3d_freqs(be, &freqs, g.t, g.h, g.w, off, c->rope_theta));

    pd_dit_scratch s;
    PD_TRY(pd_dit_alloc(m, &s.mod, 3, B, 6, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.h, 3, B, n, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.q, 3, B, n, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.k, 3, B, n, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.v, 3, B, n, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.att, 3, B, n, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.o, 3, B, n, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.ck, 3, B, Lc, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.cv, 3, B, Lc, D, 0));
    PD_TRY(pd_dit_alloc(m, &s.f, 3, B, n, c->ffn_dim, 0));
    for (int i = 0; i < c->layers; i++) {
        PD_TRY(shard ? shard->before_block(shard->ud, i) : pd_dit_before_block(m, i));
        pd_status st = pd_dit_block_forward(m, &m->w.blocks[i], &x, &e0v, &ctx, &freqs, &s, shard);
        if (st != PD_OK) return pd_error_prefix(st, "DiT block %d", i);
        if (m->block_fn) m->block_fn(m->block_ud, i);
    }

    /* head: modulated by e (not e0); shift first */
    int64_t es[3] = {B, 1, D};
    pd_tensor ev = pd_dit_view(&e, 3, es), hshift, hscale, out;
    PD_TRY(pd_dit_alloc(m, &hshift, 3, B, 1, D, 0));
    PD_TRY(pd_dit_alloc(m, &hscale, 3, B, 1, D, 0));
    pd_tensor m0 = pd_tensor_slice(&m->w.head_modulation, 1, 0, 1), m1 = pd_tensor_slice(&m->w.head_modulation, 1, 1, 1);
    PD_TRY(pd_op_add(be, &hshift, &ev, &m0));
    PD_TRY(pd_op_add(be, &hscale, &ev, &m1));
    PD_TRY(pd_dit_norm_modulate(be, &s.h, &x, &hshift, &hscale, c->eps));
    PD_TRY(pd_dit_alloc(m, &out, 3, B, n, c->out_channels * P, 0)); // (B, n, P*Cout) ordered (pt, ph, pw, c)
    PD_TRY(pd_op_linear(be, &out, &s.h, &m->w.head.w, &m->w.head.b));
    if (n < N) {
        pd_tensor all;
        PD_TRY(pd_dit_alloc(m, &all, 3, B, N, c->out_channels * P, 0)); // (B, N, P*Cout) every shard's rows
        PD_TRY(shard->gather(shard->ud, &all, &out));
        out = all;
    }
    for (int64_t b = 0; b < B; b++) {
        pd_tensor vb = pd_dit_item(vel, b), ob = pd_dit_item(&out, b);
        PD_TRY(pd_op_unpatchify(be, &vb, &ob, pt[0], pt[1], pt[2]));
    }
    PD_ASSERT(pd_arena_reserved(m->arena) == reserved); /* pd_dit_activation_bytes covers every tensor */
    return PD_OK;
}
