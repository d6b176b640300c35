/* Wan2.1 VAE decoder: loading (both name layouts), streaming and whole-clip decode, random writer. */
#include "models/wan/vae.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/arena.h"
#include "base/json_file.h"
#include "engine/safetensors.h"
#include "models/model_dir.h"
#include "models/random_init.h"

#define VAE_MAX_WEIGHTS 1024
#define VAE_NAME 256
#define VAE_STAGES 4

typedef struct vae_conv {
    pd_tensor w, b;              // w (Cout, Cin, kt, kh, kw); 2D convs are kt = 1
    /* kt = 3: w's last temporal tap (Cout, Cin, 1, kh, kw), the whole conv for a one-frame chunk
     * behind two zero frames (the first chunk a conv sees): a third of the multiplies. */
    pd_tensor w_now;
    int cin, cout, kt, kh, kw;
    int cache;                   // cache slot of a kt = 3 causal conv, else -1
} vae_conv;

typedef struct vae_res {
    pd_tensor g1, g2;            // (Cin), (Cout)
    vae_conv c1, c2, sc;         // sc only when Cin != Cout
    int cin, cout;
} vae_res;

typedef struct vae_attn {
    pd_tensor g;                 // (C)
    pd_tensor qkv_w, qkv_b;      // (3C, C), (3C) as stored (q | k | v rows)
    pd_tensor wq, wk, wv, wo;    // (C, C) row slices of to_qkv and proj
    pd_tensor bq, bk, bv, bo;    // (C)
    int c;
} vae_attn;

typedef struct vae_stage {
    vae_res res[PD_WAN_VAE_MAX_RES_BLOCKS + 1];
    int n_res;
    int up;                      // 0 none, 2 upsample2d, 3 upsample3d
    vae_conv time_conv, up_conv; // time_conv (2C, C, 3, 1, 1); up_conv (C/2, C, 1, 3, 3)
} vae_stage;

struct pd_wan_vae {
    pd_backend *be;
    pd_st *st;
    pd_wan_vae_config cfg;
    pd_wan_layout layout;
    pd_tensor mean_host, std_host; // (z, 1, 1, 1) f32
    pd_tensor mean, std;           // imported for be
    vae_conv post_quant, conv_in;
    vae_res mid0, mid1;
    vae_attn mid_attn;
    vae_stage stages[VAE_STAGES];
    pd_tensor head_g;              // (C)
    vae_conv head;
    int n_cache, n_temporal;
    /* The decode's working memory (two activation arenas and one for temporaries), kept from one
     * decode to the next like the DiT's arena: the first decode at a size grows it, later ones at the
     * same or a smaller size allocate nothing and touch no fresh pages. Created on first use. */
    pd_arena *act[2], *tmp;
    pd_tensor *imported[VAE_MAX_WEIGHTS];
    int n_imported;
    pd_tensor owned[VAE_MAX_WEIGHTS]; // host tensors made at load (the w_now slices), backing imports
    int n_owned;
};

/* ---- tensor names of both layouts ---- */

typedef enum vae_part {
    VP_POST_QUANT, VP_QUANT, VP_CONV_IN, VP_MID_RES, VP_MID_ATTN, VP_UP_RES, VP_UP_SAMPLE, VP_DOWN, VP_NORM_OUT,
    VP_CONV_OUT
} vae_part;

/* Prefix of a module: i, j index it (mid resnet i; up stage i resnet j; down block i). */
static void vae_prefix(char *buf, pd_wan_layout L, bool enc, vae_part p, int i, int j, int nrb) {
    const char *co = enc ? "encoder" : "decoder";
    bool d = L == PD_WAN_LAYOUT_DIFFUSERS;
    switch (p) {
    case VP_POST_QUANT: snprintf(buf, VAE_NAME, "%s", d ? "post_quant_conv" : "conv2"); break;
    case VP_QUANT: snprintf(buf, VAE_NAME, "%s", d ? "quant_conv" : "conv1"); break;
    case VP_CONV_IN: snprintf(buf, VAE_NAME, "%s.%s", co, d ? "conv_in" : "conv1"); break;
    case VP_MID_RES:
        if (d) snprintf(buf, VAE_NAME, "%s.mid_block.resnets.%d", co, i);
        else snprintf(buf, VAE_NAME, "%s.middle.%d", co, 2 * i);
        break;
    case VP_MID_ATTN: snprintf(buf, VAE_NAME, "%s.%s", co, d ? "mid_block.attentions.0" : "middle.1"); break;
    case VP_UP_RES:
        if (d) snprintf(buf, VAE_NAME, "decoder.up_blocks.%d.resnets.%d", i, j);
        else snprintf(buf, VAE_NAME, "decoder.upsamples.%d", i * (nrb + 2) + j);
        break;
    case VP_UP_SAMPLE:
        if (d) snprintf(buf, VAE_NAME, "decoder.up_blocks.%d.upsamplers.0", i);
        else snprintf(buf, VAE_NAME, "decoder.upsamples.%d", i * (nrb + 2) + nrb + 1);
        break;
    case VP_DOWN: snprintf(buf, VAE_NAME, "encoder.%s.%d", d ? "down_blocks" : "downsamples", i); break;
    case VP_NORM_OUT: snprintf(buf, VAE_NAME, "%s.%s", co, d ? "norm_out" : "head.0"); break;
    case VP_CONV_OUT: snprintf(buf, VAE_NAME, "%s.%s", co, d ? "conv_out" : "head.2"); break;
    }
}

/* Resnet members: norm1, conv1, norm2, conv2, shortcut. */
static const char *vae_res_member(pd_wan_layout L, int k) {
    static const char *const orig[5] = {"residual.0", "residual.2", "residual.3", "residual.6", "shortcut"};
    static const char *const diff[5] = {"norm1", "conv1", "norm2", "conv2", "conv_shortcut"};
    return L == PD_WAN_LAYOUT_DIFFUSERS ? diff[k] : orig[k];
}

/* ---- one walk over the architecture, loading or writing ---- */

typedef struct vae_walk {
    pd_wan_vae *v;        // loading: fill v from st
    pd_st_writer *wr;     // writing: random tensors into wr
    uint64_t seed;
    pd_dtype dtype;
    pd_wan_layout layout;
} vae_walk;

static pd_status vae_tensor(vae_walk *w, pd_tensor *dst, const char *name, int ndim, const int64_t *shape, float mean,
                            float std) {
    if (w->wr) {
        return pd_random_tensor_write(w->wr, name, name, w->dtype, ndim, shape, w->seed, mean, std);
    }
    pd_wan_vae *v = w->v;
    pd_tensor host;
    PD_TRY(pd_st_get_shaped(v->st, name, ndim, shape, &host));
    PD_ASSERT(v->n_imported < VAE_MAX_WEIGHTS);
    PD_TRY(pd_backend_import_weight(v->be, dst, &host));
    v->imported[v->n_imported++] = dst;
    return PD_OK;
}

static pd_status vae_conv_walk(vae_walk *w, vae_conv *cv, const char *prefix, int cout, int cin, int kt, int kh, int kw,
                               bool is2d, float gain) {
    char name[VAE_NAME + 16];
    int64_t shape5[5] = {cout, cin, kt, kh, kw}, shape4[4] = {cout, cin, kh, kw}, bshape[1] = {cout};
    float std = gain / sqrtf((float)cin * kt * kh * kw);
    snprintf(name, sizeof name, "%.200s.weight", prefix);
    PD_TRY(vae_tensor(w, &cv->w, name, is2d ? 4 : 5, is2d ? shape4 : shape5, 0.0f, std));
    snprintf(name, sizeof name, "%.200s.bias", prefix);
    PD_TRY(vae_tensor(w, &cv->b, name, 1, bshape, 0.0f, 0.02f));
    cv->cin = cin, cv->cout = cout, cv->kt = kt, cv->kh = kh, cv->kw = kw, cv->cache = -1;
    if (w->wr) return PD_OK;
    if (is2d) PD_TRY(pd_tensor_reshape(&cv->w, 5, shape5));
    if (kt != 3) return PD_OK;
    pd_wan_vae *v = w->v;
    cv->cache = v->n_cache++;
    pd_tensor full, *now = &v->owned[v->n_owned];
    int64_t now_shape[5] = {cout, cin, 1, kh, kw};
    snprintf(name, sizeof name, "%.200s.weight", prefix);
    PD_TRY(pd_st_get_shaped(v->st, name, 5, shape5, &full));
    PD_ASSERT(v->n_owned < VAE_MAX_WEIGHTS && v->n_imported < VAE_MAX_WEIGHTS);
    PD_TRY(pd_tensor_alloc(now, full.dtype, 5, now_shape));
    v->n_owned++;
    pd_tensor last = pd_tensor_slice(&full, 2, 2, 1);
    PD_TRY(pd_tensor_copy(now, &last));
    PD_TRY(pd_backend_import_weight(v->be, &cv->w_now, now));
    v->imported[v->n_imported++] = &cv->w_now;
    return PD_OK;
}

/* RMS_norm gamma, stored (C, 1, 1, 1) (video) or (C, 1, 1) (the attention's per-frame norm). */
static pd_status vae_gamma_walk(vae_walk *w, pd_tensor *g, const char *prefix, int c, bool images) {
    char name[VAE_NAME + 16];
    int64_t shape[4] = {c, 1, 1, 1}, flat[1] = {c};
    snprintf(name, sizeof name, "%.200s.gamma", prefix);
    PD_TRY(vae_tensor(w, g, name, images ? 3 : 4, shape, 1.0f, 0.1f));
    return w->wr ? PD_OK : pd_tensor_reshape(g, 1, flat);
}

static pd_status vae_res_walk(vae_walk *w, vae_res *r, const char *prefix, int cin, int cout) {
    char name[VAE_NAME + 32];
    r->cin = cin, r->cout = cout;
    snprintf(name, sizeof name, "%.200s.%s", prefix, vae_res_member(w->layout, 0));
    PD_TRY(vae_gamma_walk(w, &r->g1, name, cin, false));
    snprintf(name, sizeof name, "%.200s.%s", prefix, vae_res_member(w->layout, 1));
    PD_TRY(vae_conv_walk(w, &r->c1, name, cout, cin, 3, 3, 3, false, 1.0f));
    snprintf(name, sizeof name, "%.200s.%s", prefix, vae_res_member(w->layout, 2));
    PD_TRY(vae_gamma_walk(w, &r->g2, name, cout, false));
    snprintf(name, sizeof name, "%.200s.%s", prefix, vae_res_member(w->layout, 3));
    PD_TRY(vae_conv_walk(w, &r->c2, name, cout, cout, 3, 3, 3, false, 1.0f));
    if (cin != cout) {
        snprintf(name, sizeof name, "%.200s.%s", prefix, vae_res_member(w->layout, 4));
        PD_TRY(vae_conv_walk(w, &r->sc, name, cout, cin, 1, 1, 1, false, 1.0f));
    }
    return PD_OK;
}

static pd_status vae_attn_walk(vae_walk *w, vae_attn *a, const char *prefix, int c) {
    char name[VAE_NAME + 32];
    int64_t wq[4] = {3 * c, c, 1, 1}, bq[1] = {3 * c}, wp[4] = {c, c, 1, 1}, bp[1] = {c}, mat[2] = {3 * c, c},
            sq[2] = {c, c};
    float std = 1.0f / sqrtf((float)c);
    a->c = c;
    snprintf(name, sizeof name, "%.200s.norm", prefix);
    PD_TRY(vae_gamma_walk(w, &a->g, name, c, true));
    snprintf(name, sizeof name, "%.200s.to_qkv.weight", prefix);
    PD_TRY(vae_tensor(w, &a->qkv_w, name, 4, wq, 0.0f, std));
    snprintf(name, sizeof name, "%.200s.to_qkv.bias", prefix);
    PD_TRY(vae_tensor(w, &a->qkv_b, name, 1, bq, 0.0f, 0.02f));
    snprintf(name, sizeof name, "%.200s.proj.weight", prefix);
    PD_TRY(vae_tensor(w, &a->wo, name, 4, wp, 0.0f, std));
    snprintf(name, sizeof name, "%.200s.proj.bias", prefix);
    PD_TRY(vae_tensor(w, &a->bo, name, 1, bp, 0.0f, 0.02f));
    if (w->wr) return PD_OK;
    /* q | k | v are consecutive row blocks of the 1x1 to_qkv conv: views, not copies. */
    PD_TRY(pd_tensor_reshape(&a->qkv_w, 2, mat));
    PD_TRY(pd_tensor_reshape(&a->wo, 2, sq));
    a->wq = pd_tensor_slice(&a->qkv_w, 0, 0, c);
    a->wk = pd_tensor_slice(&a->qkv_w, 0, c, c);
    a->wv = pd_tensor_slice(&a->qkv_w, 0, 2 * c, c);
    a->bq = pd_tensor_slice(&a->qkv_b, 0, 0, c);
    a->bk = pd_tensor_slice(&a->qkv_b, 0, c, c);
    a->bv = pd_tensor_slice(&a->qkv_b, 0, 2 * c, c);
    return PD_OK;
}

/* Channel schedule of the decoder: dims[0] = base * mult[3], stage i maps in_i -> dims[i + 1]
 * with in_0 = dims[0] and in_i = dims[i] / 2 after an upsample halved it. */
static void vae_decoder_dims(const pd_wan_vae_config *c, int dims[5]) {
    dims[0] = c->base_dim * c->dim_mult[3];
    for (int i = 0; i < 4; i++) dims[i + 1] = c->base_dim * c->dim_mult[3 - i];
}

static pd_status vae_decoder_walk(vae_walk *w, pd_wan_vae *v, const pd_wan_vae_config *c) {
    char p[VAE_NAME];
    int dims[5], z = c->z_dim, nrb = c->num_res_blocks;
    pd_wan_layout L = w->layout;
    vae_decoder_dims(c, dims);
    vae_prefix(p, L, false, VP_POST_QUANT, 0, 0, nrb);
    PD_TRY(vae_conv_walk(w, &v->post_quant, p, z, z, 1, 1, 1, false, 1.0f));
    vae_prefix(p, L, false, VP_CONV_IN, 0, 0, nrb);
    PD_TRY(vae_conv_walk(w, &v->conv_in, p, dims[0], z, 3, 3, 3, false, 1.0f));
    vae_prefix(p, L, false, VP_MID_RES, 0, 0, nrb);
    PD_TRY(vae_res_walk(w, &v->mid0, p, dims[0], dims[0]));
    vae_prefix(p, L, false, VP_MID_ATTN, 0, 0, nrb);
    PD_TRY(vae_attn_walk(w, &v->mid_attn, p, dims[0]));
    vae_prefix(p, L, false, VP_MID_RES, 1, 0, nrb);
    PD_TRY(vae_res_walk(w, &v->mid1, p, dims[0], dims[0]));
    v->n_temporal = 0;
    for (int i = 0; i < VAE_STAGES; i++) {
        vae_stage *s = &v->stages[i];
        int in = i == 0 ? dims[0] : dims[i] / 2, out = dims[i + 1];
        s->n_res = nrb + 1;
        for (int r = 0; r < s->n_res; r++) {
            vae_prefix(p, L, false, VP_UP_RES, i, r, nrb);
            PD_TRY(vae_res_walk(w, &s->res[r], p, r == 0 ? in : out, out));
        }
        s->up = 0;
        if (i == VAE_STAGES - 1) break;
        bool temporal = c->temporal_downsample[2 - i]; // the decoder mirrors the encoder
        s->up = temporal ? 3 : 2;
        vae_prefix(p, L, false, VP_UP_SAMPLE, i, 0, nrb);
        char q[VAE_NAME + 16];
        snprintf(q, sizeof q, "%.200s.resample.1", p);
        PD_TRY(vae_conv_walk(w, &s->up_conv, q, out / 2, out, 1, 3, 3, true, 1.0f));
        if (temporal) {
            snprintf(q, sizeof q, "%.200s.time_conv", p);
            PD_TRY(vae_conv_walk(w, &s->time_conv, q, 2 * out, out, 3, 1, 1, false, 1.0f));
            v->n_temporal++;
        }
    }
    vae_prefix(p, L, false, VP_NORM_OUT, 0, 0, nrb);
    PD_TRY(vae_gamma_walk(w, &v->head_g, p, dims[4], false));
    vae_prefix(p, L, false, VP_CONV_OUT, 0, 0, nrb);
    return vae_conv_walk(w, &v->head, p, 3, dims[4], 3, 3, 3, false, 0.5f);
}

/* The encoder half, written only (the decoder never reads it). Dims [b, b*m0, b*m1, b*m2, b*m3]. */
static pd_status vae_encoder_write(vae_walk *w, const pd_wan_vae_config *c) {
    char p[VAE_NAME], q[VAE_NAME + 16];
    vae_conv cv;
    vae_res r;
    vae_attn a;
    pd_tensor g;
    int dims[5] = {c->base_dim}, nrb = c->num_res_blocks, z2 = 2 * c->z_dim, idx = 0;
    pd_wan_layout L = w->layout;
    for (int i = 0; i < 4; i++) dims[i + 1] = c->base_dim * c->dim_mult[i];
    vae_prefix(p, L, true, VP_QUANT, 0, 0, nrb);
    PD_TRY(vae_conv_walk(w, &cv, p, z2, z2, 1, 1, 1, false, 1.0f));
    vae_prefix(p, L, true, VP_CONV_IN, 0, 0, nrb);
    PD_TRY(vae_conv_walk(w, &cv, p, dims[0], 3, 3, 3, 3, false, 1.0f));
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < nrb; k++) {
            vae_prefix(p, L, true, VP_DOWN, idx++, 0, nrb);
            PD_TRY(vae_res_walk(w, &r, p, k == 0 ? dims[i] : dims[i + 1], dims[i + 1]));
        }
        if (i == 3) break;
        vae_prefix(p, L, true, VP_DOWN, idx++, 0, nrb);
        snprintf(q, sizeof q, "%.200s.resample.1", p);
        PD_TRY(vae_conv_walk(w, &cv, q, dims[i + 1], dims[i + 1], 1, 3, 3, true, 1.0f));
        if (c->temporal_downsample[i]) {
            snprintf(q, sizeof q, "%.200s.time_conv", p);
            PD_TRY(vae_conv_walk(w, &cv, q, dims[i + 1], dims[i + 1], 3, 1, 1, false, 1.0f));
        }
    }
    for (int k = 0; k < 2; k++) {
        vae_prefix(p, L, true, VP_MID_RES, k, 0, nrb);
        PD_TRY(vae_res_walk(w, &r, p, dims[4], dims[4]));
    }
    vae_prefix(p, L, true, VP_MID_ATTN, 0, 0, nrb);
    PD_TRY(vae_attn_walk(w, &a, p, dims[4]));
    vae_prefix(p, L, true, VP_NORM_OUT, 0, 0, nrb);
    PD_TRY(vae_gamma_walk(w, &g, p, dims[4], false));
    vae_prefix(p, L, true, VP_CONV_OUT, 0, 0, nrb);
    return vae_conv_walk(w, &cv, p, z2, dims[4], 3, 3, 3, false, 1.0f);
}

/* ---- config ---- */

static pd_status vae_config_check(const pd_wan_vae_config *c, const char *src) {
    if (c->z_dim != 16) return pd_error_set(PD_ERR_FORMAT, "%s: z_dim %d unsupported (Wan2.1 uses 16)", src, c->z_dim);
    if (c->base_dim < 1 || c->base_dim > PD_WAN_VAE_MAX_BASE_DIM)
        return pd_error_set(PD_ERR_FORMAT, "%s: base_dim %d outside 1..%d", src, c->base_dim, PD_WAN_VAE_MAX_BASE_DIM);
    for (int i = 0; i < 4; i++) {
        if (c->dim_mult[i] < 1 || c->dim_mult[i] > PD_WAN_VAE_MAX_MULT)
            return pd_error_set(PD_ERR_FORMAT, "%s: dim_mult[%d] = %d outside 1..%d", src, i, c->dim_mult[i],
                                PD_WAN_VAE_MAX_MULT);
        if (i > 0 && (c->base_dim * c->dim_mult[i]) % 2)
            return pd_error_set(PD_ERR_FORMAT, "%s: base_dim * dim_mult[%d] = %d must be even (upsamples halve it)", src,
                                i, c->base_dim * c->dim_mult[i]);
    }
    if (c->num_res_blocks < 1 || c->num_res_blocks > PD_WAN_VAE_MAX_RES_BLOCKS)
        return pd_error_set(PD_ERR_FORMAT, "%s: num_res_blocks %d outside 1..%d", src, c->num_res_blocks,
                            PD_WAN_VAE_MAX_RES_BLOCKS);
    for (int i = 0; i < c->z_dim; i++)
        if (!isfinite(c->latents_mean[i]) || !isfinite(c->latents_std[i]) || !(c->latents_std[i] > 0.0f))
            return pd_error_set(PD_ERR_FORMAT, "%s: latents_mean[%d] = %g / latents_std[%d] = %g (std must be > 0)", src,
                                i, c->latents_mean[i], i, c->latents_std[i]);
    return PD_OK;
}

static pd_status vae_json_int(json_t *root, const char *path, const char *key, int lo, int hi, int *out) {
    json_t *j = json_object_get(root, key);
    if (!json_is_integer(j)) return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" missing or not an integer", path, key);
    json_int_t x = json_integer_value(j);
    if (x < lo || x > hi) return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" = %lld outside %d..%d", path, key, (long long)x, lo, hi);
    *out = (int)x;
    return PD_OK;
}

static pd_status vae_json_array(json_t *root, const char *path, const char *key, size_t n, json_t **out) {
    json_t *a = json_object_get(root, key);
    if (!json_is_array(a) || json_array_size(a) != n)
        return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" must be an array of %zu entries", path, key, n);
    *out = a;
    return PD_OK;
}

static pd_status vae_config_parse(json_t *root, const char *path, pd_wan_vae_config *c) {
    json_t *a = NULL;
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) return pd_error_set(PD_ERR_FORMAT, "%s: not a JSON object", path);
    PD_TRY(vae_json_int(root, path, "base_dim", 1, PD_WAN_VAE_MAX_BASE_DIM, &c->base_dim));
    PD_TRY(vae_json_int(root, path, "z_dim", 16, 16, &c->z_dim));
    PD_TRY(vae_json_int(root, path, "num_res_blocks", 1, PD_WAN_VAE_MAX_RES_BLOCKS, &c->num_res_blocks));
    PD_TRY(vae_json_array(root, path, "dim_mult", 4, &a));
    for (int i = 0; i < 4; i++) {
        json_t *e = json_array_get(a, (size_t)i);
        if (!json_is_integer(e)) return pd_error_set(PD_ERR_FORMAT, "%s: dim_mult[%d] is not an integer", path, i);
        json_int_t x = json_integer_value(e);
        if (x < 1 || x > PD_WAN_VAE_MAX_MULT)
            return pd_error_set(PD_ERR_FORMAT, "%s: dim_mult[%d] = %lld outside 1..%d", path, i, (long long)x, PD_WAN_VAE_MAX_MULT);
        c->dim_mult[i] = (int)x;
    }
    PD_TRY(vae_json_array(root, path, "temperal_downsample", 3, &a));
    for (int i = 0; i < 3; i++) {
        json_t *e = json_array_get(a, (size_t)i);
        if (!json_is_boolean(e)) return pd_error_set(PD_ERR_FORMAT, "%s: temperal_downsample[%d] is not a boolean", path, i);
        c->temporal_downsample[i] = json_is_true(e);
    }
    json_t *attn = json_object_get(root, "attn_scales");
    if (attn && !json_is_array(attn)) return pd_error_set(PD_ERR_FORMAT, "%s: \"attn_scales\" must be an array", path);
    if (attn && json_array_size(attn) != 0)
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: non-empty \"attn_scales\" (attention inside up blocks) is not supported",
                            path);
    const char *keys[2] = {"latents_mean", "latents_std"};
    float *dst[2] = {c->latents_mean, c->latents_std};
    for (int k = 0; k < 2; k++) {
        PD_TRY(vae_json_array(root, path, keys[k], 16, &a));
        for (int i = 0; i < 16; i++) {
            json_t *e = json_array_get(a, (size_t)i);
            if (!json_is_number(e)) return pd_error_set(PD_ERR_FORMAT, "%s: %s[%d] is not a number", path, keys[k], i);
            dst[k][i] = (float)json_number_value(e);
        }
    }
    return vae_config_check(c, path);
}

pd_status pd_wan_vae_config_load(const char *path, pd_wan_vae_config *out) {
    json_t *root;
    PD_TRY(pd_json_file_load(path, 1 << 20, &root));
    pd_status st = vae_config_parse(root, path, out);
    json_decref(root);
    return st;
}

/* A single file carries no config: read dims from the shapes (base_dim from the encoder's first
 * conv when present, else from the decoder's output norm with dim_mult[0] = 1). */
static pd_status vae_config_infer(const pd_st *st, pd_wan_layout L, pd_wan_vae_config *c) {
    const pd_model_preset *ref = pd_model_preset_find("wan2.1-t2v-1.3b");
    char p[VAE_NAME], name[VAE_NAME + 48];
    pd_tensor t;
    const char *file = pd_st_path(st);
    *c = ref->vae;
    vae_prefix(p, L, false, VP_POST_QUANT, 0, 0, 0);
    snprintf(name, sizeof name, "%.200s.weight", p);
    PD_TRY(pd_st_get(st, name, &t));
    if (t.ndim != 5 || t.shape[0] != 16)
        return pd_error_set(PD_ERR_FORMAT, "%s: %s has %d dims / %lld channels, want (16, 16, 1, 1, 1)", file, name, t.ndim,
                            (long long)t.shape[0]);
    vae_prefix(p, L, false, VP_NORM_OUT, 0, 0, 0);
    snprintf(name, sizeof name, "%.200s.gamma", p);
    PD_TRY(pd_st_get(st, name, &t));
    if (t.ndim != 4) return pd_error_set(PD_ERR_FORMAT, "%s: %s has %d dims, want (C, 1, 1, 1)", file, name, t.ndim);
    int out_c = (int)t.shape[0];
    vae_prefix(p, L, true, VP_CONV_IN, 0, 0, 0);
    snprintf(name, sizeof name, "%.200s.weight", p);
    c->base_dim = pd_st_has(st, name) && pd_st_get(st, name, &t) == PD_OK && t.ndim == 5 ? (int)t.shape[0] : out_c;
    if (c->base_dim < 1 || out_c % c->base_dim)
        return pd_error_set(PD_ERR_FORMAT, "%s: cannot infer base_dim from %s", file, name);
    c->dim_mult[0] = out_c / c->base_dim;
    int nrb = 0; // resnets per up stage = num_res_blocks + 1
    for (; nrb <= PD_WAN_VAE_MAX_RES_BLOCKS + 1; nrb++) {
        if (L == PD_WAN_LAYOUT_DIFFUSERS) snprintf(name, sizeof name, "decoder.up_blocks.0.resnets.%d.norm1.gamma", nrb);
        else snprintf(name, sizeof name, "decoder.upsamples.%d.residual.0.gamma", nrb);
        if (!pd_st_has(st, name)) break;
    }
    if (nrb < 2 || nrb > PD_WAN_VAE_MAX_RES_BLOCKS + 1)
        return pd_error_set(PD_ERR_FORMAT, "%s: found %d resnets in the first up stage, want 2..%d", file, nrb,
                            PD_WAN_VAE_MAX_RES_BLOCKS + 1);
    c->num_res_blocks = nrb - 1;
    for (int i = 0; i < 3; i++) { // stages 0..2 set dim_mult[3..1]
        vae_prefix(p, L, false, VP_UP_RES, i, 0, c->num_res_blocks);
        snprintf(name, sizeof name, "%.200s.%s.weight", p, vae_res_member(L, 3));
        PD_TRY(pd_st_get(st, name, &t));
        if (t.ndim != 5 || t.shape[0] % c->base_dim || t.shape[0] / c->base_dim > PD_WAN_VAE_MAX_MULT)
            return pd_error_set(PD_ERR_FORMAT, "%s: %s has an unexpected shape", file, name);
        c->dim_mult[3 - i] = (int)(t.shape[0] / c->base_dim);
        vae_prefix(p, L, false, VP_UP_SAMPLE, i, 0, c->num_res_blocks);
        snprintf(name, sizeof name, "%.200s.time_conv.weight", p);
        c->temporal_downsample[2 - i] = pd_st_has(st, name);
    }
    return vae_config_check(c, file);
}

static pd_status vae_detect_layout(const pd_st *st, pd_wan_layout *out) {
    if (pd_st_has(st, "decoder.conv_in.weight")) *out = PD_WAN_LAYOUT_DIFFUSERS;
    else if (pd_st_has(st, "decoder.conv1.weight")) *out = PD_WAN_LAYOUT_ORIGINAL;
    else
        return pd_error_set(PD_ERR_FORMAT,
                            "%s: not a Wan VAE checkpoint (neither decoder.conv_in.weight nor decoder.conv1.weight)",
                            pd_st_path(st));
    return PD_OK;
}

static bool vae_is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

pd_status pd_wan_vae_load(const char *path, pd_backend *be, pd_wan_vae **out) {
    char dir[4096], cfg_path[4200];
    *out = NULL;
    if (strlen(path) >= 4000) return pd_error_set(PD_ERR_INVALID, "VAE path too long: %.100s...", path);
    snprintf(dir, sizeof dir, "%.4000s", path);
    bool has_cfg = false;
    if (vae_is_dir(path)) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%.4000s/vae", path);
        if (vae_is_dir(sub)) memcpy(dir, sub, sizeof dir);
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
        has_cfg = access(cfg_path, F_OK) == 0;
    }
    pd_wan_vae *v = calloc(1, sizeof *v);
    if (!v) return pd_error_set(PD_ERR_NOMEM, "out of memory loading VAE %s", path);
    v->be = be;
    pd_status st = pd_st_open(dir, &v->st);
    if (st == PD_OK) st = vae_detect_layout(v->st, &v->layout);
    if (st == PD_OK) st = has_cfg ? pd_wan_vae_config_load(cfg_path, &v->cfg) : vae_config_infer(v->st, v->layout, &v->cfg);
    if (st == PD_OK) {
        vae_walk w = {.v = v, .layout = v->layout};
        st = vae_decoder_walk(&w, v, &v->cfg);
    }
    int64_t shape[4] = {v->cfg.z_dim, 1, 1, 1};
    if (st == PD_OK) st = pd_tensor_alloc(&v->mean_host, PD_DTYPE_F32, 4, shape);
    if (st == PD_OK) st = pd_tensor_alloc(&v->std_host, PD_DTYPE_F32, 4, shape);
    if (st == PD_OK) {
        memcpy(v->mean_host.data, v->cfg.latents_mean, sizeof(float) * (size_t)v->cfg.z_dim);
        memcpy(v->std_host.data, v->cfg.latents_std, sizeof(float) * (size_t)v->cfg.z_dim);
        st = pd_backend_import_weight(be, &v->mean, &v->mean_host);
        if (st == PD_OK) v->imported[v->n_imported++] = &v->mean;
    }
    if (st == PD_OK) {
        st = pd_backend_import_weight(be, &v->std, &v->std_host);
        if (st == PD_OK) v->imported[v->n_imported++] = &v->std;
    }
    if (st != PD_OK) {
        pd_error_prefix(st, "loading VAE from %s", path);
        pd_wan_vae_free(v);
        return st;
    }
    PD_INFO("vae", "loaded %s (%s names): base_dim %d, dim_mult %d,%d,%d,%d, %d res blocks, %d temporal upsamples",
            dir, v->layout == PD_WAN_LAYOUT_DIFFUSERS ? "diffusers" : "original", v->cfg.base_dim, v->cfg.dim_mult[0],
            v->cfg.dim_mult[1], v->cfg.dim_mult[2], v->cfg.dim_mult[3], v->cfg.num_res_blocks, v->n_temporal);
    *out = v;
    return PD_OK;
}

void pd_wan_vae_free(pd_wan_vae *v) {
    if (!v) return;
    for (int i = 0; i < v->n_imported; i++) pd_backend_tensor_free(v->be, v->imported[i]);
    for (int i = 0; i < v->n_owned; i++) pd_tensor_free(&v->owned[i]);
    pd_arena_free(v->act[0]);
    pd_arena_free(v->act[1]);
    pd_arena_free(v->tmp);
    pd_tensor_free(&v->mean_host);
    pd_tensor_free(&v->std_host);
    pd_st_close(v->st);
    free(v);
}

const pd_wan_vae_config *pd_wan_vae_get_config(const pd_wan_vae *v) { return &v->cfg; }
pd_wan_layout pd_wan_vae_get_layout(const pd_wan_vae *v) { return v->layout; }
int64_t pd_wan_vae_frames_for(const pd_wan_vae *v, int64_t t) { return t < 1 ? 0 : 1 + ((int64_t)1 << v->n_temporal) * (t - 1); }
int pd_wan_vae_spatial_factor(const pd_wan_vae *v) { return 1 << (VAE_STAGES - 1); }

/* ---- decode ---- */

/* Block outputs alternate between two arenas (the input of a block stays alive while its output is
 * written to the other one); a block's temporaries live in a third arena reset per block. So a
 * chunk's peak is two activations plus one block's temporaries. */
typedef struct vae_run {
    pd_wan_vae *v;
    pd_backend *be;
    pd_arena *act[2], *tmp;
    int cur;                  // act[cur] holds the current activation
    bool stream, first, last; // streaming with caches; first latent frame; last latent frame
    pd_tensor *cache;         // n_cache slots, (Cin, 2, H, W) each, allocated when first saved
} vae_run;

static pd_status vae_t4(pd_arena *a, pd_tensor *t, int64_t c, int64_t f, int64_t h, int64_t w) {
    int64_t shape[4] = {c, f, h, w};
    return pd_arena_tensor(a, t, PD_DTYPE_F32, 4, shape);
}

/* The next block's output tensor, in the arena not holding the current activation. */
static pd_status vae_out(vae_run *r, pd_tensor *t, int64_t c, int64_t f, int64_t h, int64_t w) {
    pd_arena_reset(r->act[1 - r->cur], 0);
    pd_arena_reset(r->tmp, 0);
    return vae_t4(r->act[1 - r->cur], t, c, f, h, w);
}

/* A causal conv. kt = 3 pads two frames in front: zeros for the whole clip, the cached last two
 * input frames when streaming. A conv whose cache holds nothing yet (its first chunk) pads with zeros
 * through the conv itself, with no cache to read, and a one-frame chunk there meets only the last
 * tap (w_now); on the last latent frame no cache is saved (nothing reads it), so a one-frame decode
 * moves no cache at all. */
static pd_status vae_conv_apply(vae_run *r, const vae_conv *cv, pd_tensor *y, const pd_tensor *x) {
    int ph = cv->kh / 2, pw = cv->kw / 2;
    if (cv->kt == 1 || !r->stream) {
        int pad[6] = {cv->kt - 1, 0, ph, ph, pw, pw};
        return pd_op_conv3d(r->be, y, x, &cv->w, &cv->b, pad);
    }
    PD_ASSERT(cv->kt == 3 && cv->cache >= 0 && cv->cache < r->v->n_cache);
    int64_t c = x->shape[0], t = x->shape[1], h = x->shape[2], w = x->shape[3];
    pd_tensor *cache = &r->cache[cv->cache];
    if (!cache->data) {
        int pad[6] = {2, 0, ph, ph, pw, pw}, pad_now[6] = {0, 0, ph, ph, pw, pw};
        PD_TRY(t == 1 ? pd_op_conv3d(r->be, y, x, &cv->w_now, &cv->b, pad_now)
                      : pd_op_conv3d(r->be, y, x, &cv->w, &cv->b, pad));
        if (r->last) return PD_OK;
        int64_t shape[4] = {c, 2, h, w};
        PD_TRY(pd_backend_tensor_alloc(r->be, cache, PD_DTYPE_F32, 4, shape)); // zeroed: the padding
        int64_t keep = t < 2 ? t : 2;
        pd_tensor dst = pd_tensor_slice(cache, 1, 2 - keep, keep), src = pd_tensor_slice(x, 1, t - keep, keep);
        return pd_op_copy(r->be, &dst, &src);
    }
    PD_ASSERT(cache->shape[0] == c && cache->shape[2] == h && cache->shape[3] == w);
    pd_tensor buf;
    PD_TRY(vae_t4(r->tmp, &buf, c, t + 2, h, w)); // (C, 2 + t, H, W) = cache | x
    pd_tensor head = pd_tensor_slice(&buf, 1, 0, 2), tail = pd_tensor_slice(&buf, 1, 2, t);
    PD_TRY(pd_op_copy(r->be, &head, cache));
    PD_TRY(pd_op_copy(r->be, &tail, x));
    int pad[6] = {0, 0, ph, ph, pw, pw};
    PD_TRY(pd_op_conv3d(r->be, y, &buf, &cv->w, &cv->b, pad));
    if (r->last) return PD_OK;
    pd_tensor last = pd_tensor_slice(&buf, 1, t, 2);
    return pd_op_copy(r->be, cache, &last);
}

typedef struct vae_state {
    vae_run *r;
    pd_tensor x; // (C, T, H, W) current activation in act[cur]
} vae_state;

static pd_status vae_step_conv(vae_state *s, const vae_conv *cv) {
    vae_run *r = s->r;
    pd_tensor y;
    PD_TRY(vae_out(r, &y, cv->cout, s->x.shape[1], s->x.shape[2], s->x.shape[3]));
    PD_TRY(vae_conv_apply(r, cv, &y, &s->x));
    s->x = y, r->cur = 1 - r->cur;
    return PD_OK;
}

/* norm -> SiLU into a temporary. */
static pd_status vae_norm_silu(vae_run *r, pd_tensor *h, const pd_tensor *x, const pd_tensor *gamma) {
    PD_TRY(vae_t4(r->tmp, h, x->shape[0], x->shape[1], x->shape[2], x->shape[3]));
    PD_TRY(pd_op_channel_rms_norm(r->be, h, x, gamma, NULL, 1e-12f));
    return pd_op_silu(r->be, h, h);
}

static pd_status vae_step_res(vae_state *s, const vae_res *rb) {
    vae_run *r = s->r;
    const pd_tensor *x = &s->x;
    int64_t t = x->shape[1], hh = x->shape[2], ww = x->shape[3];
    pd_tensor y, h, h2;
    PD_TRY(vae_out(r, &y, rb->cout, t, hh, ww));
    PD_TRY(vae_norm_silu(r, &h, x, &rb->g1));
    PD_TRY(vae_t4(r->tmp, &h2, rb->cout, t, hh, ww));
    PD_TRY(vae_conv_apply(r, &rb->c1, &h2, &h));
    PD_TRY(pd_op_channel_rms_norm(r->be, &h2, &h2, &rb->g2, NULL, 1e-12f));
    PD_TRY(pd_op_silu(r->be, &h2, &h2));
    PD_TRY(vae_conv_apply(r, &rb->c2, &y, &h2));
    if (rb->cin != rb->cout) {
        pd_tensor sc;
        PD_TRY(vae_t4(r->tmp, &sc, rb->cout, t, hh, ww));
        PD_TRY(vae_conv_apply(r, &rb->sc, &sc, x));
        PD_TRY(pd_op_add(r->be, &y, &y, &sc));
    } else {
        PD_TRY(pd_op_add(r->be, &y, &y, x));
    }
    s->x = y, r->cur = 1 - r->cur;
    return PD_OK;
}

/* (C, T, H*W) channel-first data seen as (T, H*W, C) tokens: a strided view. */
static pd_tensor vae_tokens_view(const pd_tensor *x) {
    int64_t c = x->shape[0], t = x->shape[1], n = x->shape[2] * x->shape[3], es = (int64_t)sizeof(float);
    pd_tensor v = *x;
    v.owns_data = false;
    v.ndim = 3;
    v.shape[0] = t, v.shape[1] = n, v.shape[2] = c;
    v.stride[0] = n * es, v.stride[1] = es, v.stride[2] = t * n * es;
    return v;
}

/* Per-frame single-head self-attention over the H*W positions, plus the residual. */
static pd_status vae_step_attn(vae_state *s, const vae_attn *a) {
    vae_run *r = s->r;
    const pd_tensor *x = &s->x;
    int64_t c = a->c, t = x->shape[1], n = x->shape[2] * x->shape[3];
    int64_t tok_shape[3] = {t, n, c}, head_shape[4] = {t, n, 1, c};
    pd_tensor y, h, tok, q, k, v, o;
    PD_TRY(vae_out(r, &y, c, t, x->shape[2], x->shape[3]));
    PD_TRY(vae_t4(r->tmp, &h, c, t, x->shape[2], x->shape[3]));
    PD_TRY(pd_op_channel_rms_norm(r->be, &h, x, &a->g, NULL, 1e-12f));
    pd_tensor hv = vae_tokens_view(&h);
    PD_TRY(pd_arena_tensor(r->tmp, &tok, PD_DTYPE_F32, 3, tok_shape)); // (T, N, C)
    PD_TRY(pd_op_copy(r->be, &tok, &hv));
    PD_TRY(pd_arena_tensor(r->tmp, &q, PD_DTYPE_F32, 3, tok_shape));
    PD_TRY(pd_arena_tensor(r->tmp, &k, PD_DTYPE_F32, 3, tok_shape));
    PD_TRY(pd_arena_tensor(r->tmp, &v, PD_DTYPE_F32, 3, tok_shape));
    PD_TRY(pd_arena_tensor(r->tmp, &o, PD_DTYPE_F32, 4, head_shape));
    PD_TRY(pd_op_linear(r->be, &q, &tok, &a->wq, &a->bq));
    PD_TRY(pd_op_linear(r->be, &k, &tok, &a->wk, &a->bk));
    PD_TRY(pd_op_linear(r->be, &v, &tok, &a->wv, &a->bv));
    PD_TRY(pd_tensor_reshape(&q, 4, head_shape)); // (T, N, 1, C): frames are the batch
    PD_TRY(pd_tensor_reshape(&k, 4, head_shape));
    PD_TRY(pd_tensor_reshape(&v, 4, head_shape));
    PD_TRY(pd_op_attention(r->be, &o, &q, &k, &v, NULL, 1.0f / sqrtf((float)c)));
    PD_TRY(pd_tensor_reshape(&o, 3, tok_shape));
    PD_TRY(pd_op_linear(r->be, &tok, &o, &a->wo, &a->bo));
    pd_tensor yv = vae_tokens_view(&y);
    PD_TRY(pd_op_copy(r->be, &yv, &tok));
    PD_TRY(pd_op_add(r->be, &y, &y, x));
    s->x = y, r->cur = 1 - r->cur;
    return PD_OK;
}

/* upsample3d: the first n_pass frames pass through, the rest go through time_conv whose two output
 * halves interleave in time; then (both modes) nearest x2 and a 3x3 conv halving the channels. */
static pd_status vae_step_up(vae_state *s, const vae_stage *st) {
    vae_run *r = s->r;
    const pd_tensor *x = &s->x;
    int64_t c = x->shape[0], t = x->shape[1], hh = x->shape[2], ww = x->shape[3], t2 = t;
    pd_tensor y, mid = *x, up;
    pd_arena_reset(r->tmp, 0);
    if (st->up == 3) {
        int64_t n_pass = r->stream ? (r->first ? t : 0) : 1, tn = t - n_pass;
        t2 = n_pass + 2 * tn;
        if (tn > 0) {
            pd_tensor xs = *x, tc;
            PD_TRY(vae_t4(r->tmp, &mid, c, t2, hh, ww));
            if (n_pass > 0) {
                pd_tensor dst = pd_tensor_slice(&mid, 1, 0, n_pass), src = pd_tensor_slice(x, 1, 0, n_pass), rest;
                PD_TRY(pd_op_copy(r->be, &dst, &src));
                rest = pd_tensor_slice(x, 1, n_pass, tn);
                PD_TRY(vae_t4(r->tmp, &xs, c, tn, hh, ww));
                PD_TRY(pd_op_copy(r->be, &xs, &rest));
            }
            PD_TRY(vae_t4(r->tmp, &tc, 2 * c, tn, hh, ww));
            PD_TRY(vae_conv_apply(r, &st->time_conv, &tc, &xs));
            for (int half = 0; half < 2; half++) { // frame n_pass + 2j + half <- half's frame j
                pd_tensor dst = pd_tensor_slice(&mid, 1, n_pass + half, 1), src = pd_tensor_slice(&tc, 0, half * c, c);
                dst.shape[1] = tn;
                dst.stride[1] = 2 * mid.stride[1];
                PD_TRY(pd_op_copy(r->be, &dst, &src));
            }
        }
    }
    PD_TRY(vae_t4(r->tmp, &up, c, t2, 2 * hh, 2 * ww));
    PD_TRY(pd_op_upsample_nearest2d(r->be, &up, &mid));
    pd_arena_reset(r->act[1 - r->cur], 0);
    PD_TRY(vae_t4(r->act[1 - r->cur], &y, c / 2, t2, 2 * hh, 2 * ww));
    PD_TRY(vae_conv_apply(r, &st->up_conv, &y, &up));
    s->x = y, r->cur = 1 - r->cur;
    return PD_OK;
}

static pd_status vae_step_head(vae_state *s) {
    vae_run *r = s->r;
    pd_tensor y, h;
    PD_TRY(vae_out(r, &y, 3, s->x.shape[1], s->x.shape[2], s->x.shape[3]));
    PD_TRY(vae_norm_silu(r, &h, &s->x, &r->v->head_g));
    PD_TRY(vae_conv_apply(r, &r->v->head, &y, &h));
    PD_TRY(pd_op_clamp(r->be, &y, &y, -1.0f, 1.0f));
    s->x = y, r->cur = 1 - r->cur;
    return PD_OK;
}

/* z (16, t, h, w) host f32 (any strides) -> rgb (3, F, 8h, 8w) in an activation arena. */
static pd_status vae_forward(vae_run *r, const pd_tensor *z, pd_tensor *rgb) {
    pd_wan_vae *v = r->v;
    vae_state s = {.r = r};
    pd_tensor host;
    int64_t shape[4] = {z->shape[0], z->shape[1], z->shape[2], z->shape[3]};
    PD_TRY(pd_tensor_alloc(&host, PD_DTYPE_F32, 4, shape));
    pd_status st = pd_tensor_copy(&host, z);
    r->cur = 0;
    pd_arena_reset(r->act[0], 0);
    if (st == PD_OK) st = pd_arena_tensor(r->act[0], &s.x, PD_DTYPE_F32, 4, shape);
    if (st == PD_OK) st = pd_backend_upload(r->be, &s.x, &host);
    pd_tensor_free(&host);
    PD_TRY(st);
    PD_TRY(pd_op_mul(r->be, &s.x, &s.x, &v->std)); // z * std + mean
    PD_TRY(pd_op_add(r->be, &s.x, &s.x, &v->mean));
    PD_TRY(vae_step_conv(&s, &v->post_quant));
    PD_TRY(vae_step_conv(&s, &v->conv_in));
    PD_TRY(vae_step_res(&s, &v->mid0));
    PD_TRY(vae_step_attn(&s, &v->mid_attn));
    PD_TRY(vae_step_res(&s, &v->mid1));
    for (int i = 0; i < VAE_STAGES; i++) {
        for (int k = 0; k < v->stages[i].n_res; k++) PD_TRY(vae_step_res(&s, &v->stages[i].res[k]));
        if (v->stages[i].up) PD_TRY(vae_step_up(&s, &v->stages[i]));
    }
    PD_TRY(vae_step_head(&s));
    *rgb = s.x;
    return PD_OK;
}

/* Hands frames [0, F) of rgb (3, F, H, W) to on_frame as contiguous host (3, H, W) tensors. */
static pd_status vae_emit(vae_run *r, const pd_tensor *rgb, int64_t first_index, pd_wan_vae_frame_fn on_frame, void *ud) {
    int64_t f = rgb->shape[1], shape[4] = {3, rgb->shape[1], rgb->shape[2], rgb->shape[3]};
    int64_t fshape[4] = {3, 1, rgb->shape[2], rgb->shape[3]}, flat[3] = {3, rgb->shape[2], rgb->shape[3]};
    pd_tensor host, frame;
    PD_TRY(pd_backend_synchronize(r->be));
    PD_TRY(pd_tensor_alloc(&host, PD_DTYPE_F32, 4, shape));
    pd_status st = pd_backend_download(r->be, &host, rgb);
    if (st == PD_OK) st = pd_tensor_alloc(&frame, PD_DTYPE_F32, 4, fshape);
    for (int64_t j = 0; st == PD_OK && j < f; j++) {
        pd_tensor src = pd_tensor_slice(&host, 1, j, 1), view;
        st = pd_tensor_copy(&frame, &src);
        if (st != PD_OK) break;
        view = pd_tensor_view(frame.data, PD_DTYPE_F32, 3, flat);
        st = on_frame(ud, first_index + j, &view);
    }
    pd_tensor_free(&frame);
    pd_tensor_free(&host);
    return st;
}

static pd_status vae_check_latent(const pd_wan_vae *v, const pd_tensor *z) {
    char buf[96];
    if (z->dtype != PD_DTYPE_F32 || z->ndim != 4 || z->shape[0] != v->cfg.z_dim || z->shape[1] < 1 || z->shape[2] < 1 ||
        z->shape[3] < 1)
        return pd_error_set(PD_ERR_INVALID, "VAE decode: latent %s must be (%d, T, h, w) f32 with T, h, w >= 1",
                            pd_tensor_describe(z, buf, sizeof buf), v->cfg.z_dim);
    if (z->shape[2] > 4096 || z->shape[3] > 4096 || z->shape[1] > 4096)
        return pd_error_set(PD_ERR_INVALID, "VAE decode: latent %s is too large", pd_tensor_describe(z, buf, sizeof buf));
    return PD_OK;
}

static pd_status vae_run_init(vae_run *r, pd_wan_vae *v, bool stream) {
    memset(r, 0, sizeof *r);
    r->v = v, r->be = v->be, r->stream = stream;
    for (int i = 0; i < 2; i++)
        if (!v->act[i]) PD_TRY(pd_arena_create(v->be, (size_t)16 << 20, &v->act[i]));
    if (!v->tmp) PD_TRY(pd_arena_create(v->be, (size_t)16 << 20, &v->tmp));
    r->act[0] = v->act[0], r->act[1] = v->act[1], r->tmp = v->tmp;
    if (stream) {
        r->cache = calloc((size_t)(v->n_cache ? v->n_cache : 1), sizeof *r->cache);
        if (!r->cache) return pd_error_set(PD_ERR_NOMEM, "out of memory for VAE caches");
    }
    return PD_OK;
}

static void vae_run_free(vae_run *r) {
    for (int i = 0; r->cache && i < r->v->n_cache; i++) pd_backend_tensor_free(r->be, &r->cache[i]);
    free(r->cache);
}

pd_status pd_wan_vae_decode(pd_wan_vae *v, const pd_tensor *z, pd_wan_vae_frame_fn on_frame, pd_wan_vae_progress_fn progress,
                            void *ud, const atomic_int *cancel) {
    PD_TRY(vae_check_latent(v, z));
    vae_run r;
    pd_status st = vae_run_init(&r, v, true);
    int64_t t = z->shape[1], emitted = 0;
    for (int64_t i = 0; st == PD_OK && i < t; i++) {
        st = pd_stop_check(cancel, "in the VAE decode after %lld of %lld latent frames", (long long)i, (long long)t);
        if (st != PD_OK) break;
        pd_tensor zi = pd_tensor_slice(z, 1, i, 1), rgb;
        r.first = i == 0, r.last = i == t - 1;
        st = vae_forward(&r, &zi, &rgb);
        if (st != PD_OK) break;
        PD_ASSERT(rgb.shape[1] == (i == 0 ? 1 : (int64_t)1 << v->n_temporal));
        st = vae_emit(&r, &rgb, emitted, on_frame, ud);
        emitted += rgb.shape[1];
        if (st == PD_OK && progress) progress(ud, (int)(i + 1), (int)t);
    }
    vae_run_free(&r);
    return st;
}

pd_status pd_wan_vae_decode_whole(pd_wan_vae *v, const pd_tensor *z, pd_wan_vae_frame_fn on_frame, void *ud) {
    PD_TRY(vae_check_latent(v, z));
    vae_run r;
    pd_tensor rgb;
    pd_status st = vae_run_init(&r, v, false);
    if (st == PD_OK) st = vae_forward(&r, z, &rgb);
    if (st == PD_OK) {
        PD_ASSERT(rgb.shape[1] == pd_wan_vae_frames_for(v, z->shape[1]));
        st = vae_emit(&r, &rgb, 0, on_frame, ud);
    }
    vae_run_free(&r);
    return st;
}

/* ---- random checkpoint ---- */

/* The double with the fewest digits that reads back as f (0.7571, not 0.757099986). */
static double vae_short_decimal(float f) {
    char buf[32];
    for (int prec = 1; prec < 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

static pd_status vae_write_config(const char *dir, const pd_wan_vae_config *c) {
    char path[4200];
    json_t *root = json_object(), *mult = json_array(), *td = json_array(), *mean = json_array(), *std = json_array();
    if (!root || !mult || !td || !mean || !std) {
        json_decref(root), json_decref(mult), json_decref(td), json_decref(mean), json_decref(std);
        return pd_error_set(PD_ERR_NOMEM, "out of memory writing the VAE config");
    }
    json_object_set_new(root, "_class_name", json_string("AutoencoderKLWan"));
    json_object_set_new(root, "_diffusers_version", json_string("0.33.0.dev0"));
    json_object_set_new(root, "attn_scales", json_array());
    json_object_set_new(root, "base_dim", json_integer(c->base_dim));
    for (int i = 0; i < 4; i++) json_array_append_new(mult, json_integer(c->dim_mult[i]));
    json_object_set_new(root, "dim_mult", mult);
    json_object_set_new(root, "dropout", json_real(0.0));
    for (int i = 0; i < c->z_dim; i++) {
        json_array_append_new(mean, json_real(vae_short_decimal(c->latents_mean[i])));
        json_array_append_new(std, json_real(vae_short_decimal(c->latents_std[i])));
    }
    json_object_set_new(root, "latents_mean", mean);
    json_object_set_new(root, "latents_std", std);
    json_object_set_new(root, "num_res_blocks", json_integer(c->num_res_blocks));
    for (int i = 0; i < 3; i++) json_array_append_new(td, json_boolean(c->temporal_downsample[i]));
    json_object_set_new(root, "temperal_downsample", td);
    json_object_set_new(root, "z_dim", json_integer(c->z_dim));
    snprintf(path, sizeof path, "%s/config.json", dir);
    pd_status st = pd_model_dir_write_json(path, root);
    json_decref(root);
    return st;
}

pd_status pd_wan_vae_write_random(const char *path, const pd_wan_vae_config *cfg, uint64_t seed, pd_wan_layout layout,
                                  pd_dtype dtype) {
    char file[4200];
    PD_TRY(vae_config_check(cfg, "VAE config"));
    if (dtype != PD_DTYPE_F32 && dtype != PD_DTYPE_BF16 && dtype != PD_DTYPE_F16)
        return pd_error_set(PD_ERR_INVALID, "VAE weights must be F32, BF16 or F16, not %s", pd_dtype_name(dtype));
    if (strlen(path) > 4000) return pd_error_set(PD_ERR_INVALID, "VAE path too long");
    if (layout == PD_WAN_LAYOUT_DIFFUSERS) {
        PD_TRY(pd_model_dir_mkdirs(path));
        snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
    }
    pd_st_writer *wr;
    PD_TRY(pd_st_writer_create(&wr));
    pd_wan_vae *scratch = calloc(1, sizeof *scratch); // the walk fills structs nobody reads
    pd_status st = scratch ? PD_OK : pd_error_set(PD_ERR_NOMEM, "out of memory writing VAE");
    vae_walk w = {.wr = wr, .seed = seed, .dtype = dtype, .layout = layout};
    if (st == PD_OK) st = vae_encoder_write(&w, cfg);
    if (st == PD_OK) st = vae_decoder_walk(&w, scratch, cfg);
    if (st == PD_OK) st = pd_st_writer_metadata(wr, "format", "pt");
    if (st == PD_OK) st = pd_st_writer_save(wr, file);
    if (st == PD_OK && layout == PD_WAN_LAYOUT_DIFFUSERS) st = vae_write_config(path, cfg);
    pd_st_writer_free(wr);
    free(scratch);
    return st;
}
