#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/json_file.h"
#include "models/wan/dit_impl.h"

#define PD_DIT_MAX_CONFIG_BYTES (1 << 20)

static pd_status pd_dit_range(const char *what, const char *field, long long v, long long lo, long long hi) {
    if (v < lo || v > hi)
        return pd_error_set(PD_ERR_INVALID, "%s: %s = %lld is outside %lld..%lld", what, field, v, lo, hi);
    return PD_OK;
}

pd_status pd_wan_dit_config_check(const pd_wan_dit_config *c, const char *what) {
    PD_TRY(pd_dit_range(what, "num_attention_heads", c->heads, 1, 1024));
    PD_TRY(pd_dit_range(what, "attention_head_dim", c->head_dim, 2, 1024));
    if (c->head_dim % 2)
        return pd_error_set(PD_ERR_INVALID, "%s: attention_head_dim = %d must be even (RoPE rotates pairs)", what,
                            c->head_dim);
    if ((long long)c->heads * c->head_dim != c->dim)
        return pd_error_set(PD_ERR_INVALID, "%s: dim %d != num_attention_heads %d x attention_head_dim %d", what,
                            c->dim, c->heads, c->head_dim);
    PD_TRY(pd_dit_range(what, "dim", c->dim, 2, 65536));
    PD_TRY(pd_dit_range(what, "num_layers", c->layers, 1, 1024));
    PD_TRY(pd_dit_range(what, "ffn_dim", c->ffn_dim, 1, 1 << 20));
    PD_TRY(pd_dit_range(what, "freq_dim", c->freq_dim, 2, 65536));
    if (c->freq_dim % 2) return pd_error_set(PD_ERR_INVALID, "%s: freq_dim = %d must be even", what, c->freq_dim);
    PD_TRY(pd_dit_range(what, "text_dim", c->text_dim, 1, 65536));
    PD_TRY(pd_dit_range(what, "text_len", c->text_len, 1, 65536));
    PD_TRY(pd_dit_range(what, "in_channels", c->in_channels, 1, 1024));
    PD_TRY(pd_dit_range(what, "out_channels", c->out_channels, 1, 1024));
    for (int i = 0; i < 3; i++) PD_TRY(pd_dit_range(what, "patch_size", c->patch[i], 1, 16));
    if (!(c->eps > 0.0f && c->eps < 1.0f)) return pd_error_set(PD_ERR_INVALID, "%s: eps = %g is outside (0, 1)", what, c->eps);
    if (!(c->rope_theta > 1.0 && c->rope_theta < 1e12))
        return pd_error_set(PD_ERR_INVALID, "%s: rope theta = %g is outside (1, 1e12)", what, c->rope_theta);
    return PD_OK;
}

/* ---- config.json ---- */

/* A bad value read from a file is a format error, not a bad argument: re-tag the status. */
static pd_status pd_dit_as_format(pd_status st, const char *suffix) {
    if (st == PD_OK) return PD_OK;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", pd_error_msg());
    return pd_error_set(PD_ERR_FORMAT, "%s%s", msg, suffix);
}

static pd_status pd_dit_json_int(json_t *root, const char *path, const char *key, int lo, int hi, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v) return pd_error_set(PD_ERR_FORMAT, "%s: missing key \"%s\"", path, key);
    if (!json_is_integer(v)) return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" must be an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" = %lld is outside %d..%d", path, key, (long long)x, lo, hi);
    *out = (int)x;
    return PD_OK;
}

static pd_status pd_dit_config_parse(json_t *root, const char *path, pd_wan_dit_config *c) {
    if (!json_is_object(root)) return pd_error_set(PD_ERR_FORMAT, "%s: not a JSON object", path);
    json_t *cls = json_object_get(root, "_class_name");
    if (cls && (!json_is_string(cls) || strcmp(json_string_value(cls), "WanTransformer3DModel")))
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: _class_name is not \"WanTransformer3DModel\"", path);
    memset(c, 0, sizeof *c);
    PD_TRY(pd_dit_json_int(root, path, "num_attention_heads", 1, 1024, &c->heads));
    PD_TRY(pd_dit_json_int(root, path, "attention_head_dim", 2, 1024, &c->head_dim));
    PD_TRY(pd_dit_json_int(root, path, "num_layers", 1, 1024, &c->layers));
    PD_TRY(pd_dit_json_int(root, path, "ffn_dim", 1, 1 << 20, &c->ffn_dim));
    PD_TRY(pd_dit_json_int(root, path, "freq_dim", 2, 65536, &c->freq_dim));
    PD_TRY(pd_dit_json_int(root, path, "text_dim", 1, 65536, &c->text_dim));
    PD_TRY(pd_dit_json_int(root, path, "in_channels", 1, 1024, &c->in_channels));
    json_t *oc = json_object_get(root, "out_channels");
    if (oc && !json_is_null(oc)) {
        PD_TRY(pd_dit_json_int(root, path, "out_channels", 1, 1024, &c->out_channels));
    } else {
        c->out_channels = c->in_channels; /* diffusers: out_channels defaults to in_channels */
    }
    json_t *ps = json_object_get(root, "patch_size");
    if (!json_is_array(ps) || json_array_size(ps) != 3)
        return pd_error_set(PD_ERR_FORMAT, "%s: \"patch_size\" must be an array of 3 integers", path);
    for (int i = 0; i < 3; i++) {
        json_t *v = json_array_get(ps, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 16)
            return pd_error_set(PD_ERR_FORMAT, "%s: \"patch_size\"[%d] must be an integer in 1..16", path, i);
        c->patch[i] = (int)json_integer_value(v);
    }
    json_t *eps = json_object_get(root, "eps");
    if (!eps) return pd_error_set(PD_ERR_FORMAT, "%s: missing key \"eps\"", path);
    if (!json_is_number(eps) || !(json_number_value(eps) > 0.0 && json_number_value(eps) < 1.0))
        return pd_error_set(PD_ERR_FORMAT, "%s: \"eps\" must be a number in (0, 1)", path);
    c->eps = (float)json_number_value(eps);
    json_t *qk = json_object_get(root, "qk_norm");
    if (qk && (!json_is_string(qk) || strcmp(json_string_value(qk), "rms_norm_across_heads")))
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: only qk_norm \"rms_norm_across_heads\" is supported", path);
    json_t *can = json_object_get(root, "cross_attn_norm");
    if (can && !json_is_true(can))
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: only cross_attn_norm true is supported (Wan2.1 text-to-video)",
                            path);
    static const char *const absent[] = {"image_dim", "added_kv_proj_dim", "pos_embed_seq_len"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        json_t *v = json_object_get(root, absent[i]);
        if (v && !json_is_null(v))
            return pd_error_set(PD_ERR_UNSUPPORTED, "%s: \"%s\" is set: image-conditioned Wan models are not supported",
                                path, absent[i]);
    }
    json_t *rl = json_object_get(root, "rope_max_seq_len");
    if (rl && (!json_is_integer(rl) || json_integer_value(rl) < 1 || json_integer_value(rl) > (1 << 20)))
        return pd_error_set(PD_ERR_FORMAT, "%s: \"rope_max_seq_len\" must be an integer in 1..1048576", path);
    c->dim = c->heads * c->head_dim;
    c->text_len = 512;
    c->rope_theta = 10000.0;
    return pd_dit_as_format(pd_wan_dit_config_check(c, path), "");
}

pd_status pd_wan_dit_config_load(const char *path, pd_wan_dit_config *cfg) {
    json_t *root;
    PD_TRY(pd_json_file_load(path, PD_DIT_MAX_CONFIG_BYTES, &root));
    pd_status st = pd_dit_config_parse(root, path, cfg);
    json_decref(root);
    return st;
}

/* ---- layout and config inference ---- */

pd_status pd_wan_dit_detect_layout(const pd_st *st, pd_wan_layout *layout, const char **prefix) {
    static const char *const prefixes[] = {"", "model.diffusion_model.", "diffusion_model.", "model."};
    if (prefix) *prefix = "";
    if (pd_st_has(st, "condition_embedder.time_embedder.linear_1.weight")) {
        *layout = PD_WAN_LAYOUT_DIFFUSERS;
        return PD_OK;
    }
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "%stime_embedding.0.weight", prefixes[i]);
        if (pd_st_has(st, name)) {
            *layout = PD_WAN_LAYOUT_ORIGINAL;
            if (prefix) *prefix = prefixes[i];
            return PD_OK;
        }
    }
    return pd_error_set(PD_ERR_FORMAT,
                        "%s: not a Wan2.1 DiT checkpoint (neither condition_embedder.time_embedder.linear_1.weight "
                        "nor time_embedding.0.weight is present)",
                        pd_st_path(st));
}

/* Shape of a named tensor, with the expected rank. */
static pd_status pd_dit_shape_of(const pd_st *st, const char *prefix, const char *name, int ndim, pd_tensor *t) {
    char full[200];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    PD_TRY(pd_st_get(st, full, t));
    if (t->ndim != ndim)
        return pd_error_set(PD_ERR_FORMAT, "%s: tensor %s has %d dims, expected %d", pd_st_path(st), full, t->ndim,
                            ndim);
    return PD_OK;
}

static pd_status pd_dit_infer_config(const pd_st *st, pd_wan_layout layout, const char *prefix, pd_wan_dit_config *c) {
    const bool orig = layout == PD_WAN_LAYOUT_ORIGINAL;
    const char *path = pd_st_path(st);
    pd_tensor t;
    memset(c, 0, sizeof *c);
    PD_TRY(pd_dit_shape_of(st, prefix, "patch_embedding.weight", 5, &t));
    if (t.shape[0] > 65536 || t.shape[1] > 1024 || t.shape[2] > 16 || t.shape[3] > 16 || t.shape[4] > 16)
        return pd_error_set(PD_ERR_FORMAT, "%s: patch_embedding.weight has an implausible shape", path);
    c->dim = (int)t.shape[0];
    c->in_channels = (int)t.shape[1];
    for (int i = 0; i < 3; i++) c->patch[i] = (int)t.shape[2 + i];
    PD_TRY(pd_dit_shape_of(st, prefix, orig ? "text_embedding.0.weight" : "condition_embedder.text_embedder.linear_1.weight", 2, &t));
    c->text_dim = (int)(t.shape[1] > INT_MAX ? INT_MAX : t.shape[1]);
    PD_TRY(pd_dit_shape_of(st, prefix, orig ? "time_embedding.0.weight" : "condition_embedder.time_embedder.linear_1.weight", 2, &t));
    c->freq_dim = (int)(t.shape[1] > INT_MAX ? INT_MAX : t.shape[1]);
    PD_TRY(pd_dit_shape_of(st, prefix, orig ? "blocks.0.ffn.0.weight" : "blocks.0.ffn.net.0.proj.weight", 2, &t));
    c->ffn_dim = (int)(t.shape[0] > INT_MAX ? INT_MAX : t.shape[0]);
    PD_TRY(pd_dit_shape_of(st, prefix, orig ? "head.head.weight" : "proj_out.weight", 2, &t));
    int64_t P = (int64_t)c->patch[0] * c->patch[1] * c->patch[2];
    if (t.shape[0] % P || t.shape[0] / P > 1024)
        return pd_error_set(PD_ERR_FORMAT, "%s: head output rows %lld are not a multiple of the patch volume %lld", path,
                            (long long)t.shape[0], (long long)P);
    c->out_channels = (int)(t.shape[0] / P);

    /* Layers: the highest blocks.N present, + 1 (missing blocks in between fail the shape checks). */
    size_t plen = strlen(prefix);
    long layers = 0;
    for (int i = 0; i < pd_st_count(st); i++) {
        const char *n = pd_st_name(st, i);
        if (strncmp(n, prefix, plen) || strncmp(n + plen, "blocks.", 7)) continue;
        char *end;
        long b = strtol(n + plen + 7, &end, 10);
        if (end == n + plen + 7 || *end != '.' || b < 0 || b >= 1024)
            return pd_error_set(PD_ERR_FORMAT, "%s: tensor %s has a bad block index", path, n);
        if (b + 1 > layers) layers = b + 1;
    }
    c->layers = (int)layers;

    /* Heads: the file's metadata, else a known preset of this dim, else head_dim 128 as in Wan2.1. */
    const char *mh = pd_st_metadata(st, "num_attention_heads");
    if (mh) {
        char *end;
        long h = strtol(mh, &end, 10);
        if (end == mh || *end || h < 1 || h > 1024)
            return pd_error_set(PD_ERR_FORMAT, "%s: metadata num_attention_heads \"%s\" is not an integer in 1..1024",
                                path, mh);
        c->heads = (int)h;
    } else {
        static const char *const presets[] = {"tiny", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b"};
        for (size_t i = 0; i < sizeof presets / sizeof presets[0] && !c->heads; i++) {
            const pd_model_preset *p = pd_model_preset_find(presets[i]);
            if (p && p->dit.dim == c->dim) c->heads = p->dit.heads;
        }
        if (!c->heads && c->dim % 128 == 0) c->heads = c->dim / 128;
        if (!c->heads)
            return pd_error_set(PD_ERR_FORMAT,
                                "%s: cannot infer the number of heads for dim %d (no num_attention_heads metadata); "
                                "use a diffusers folder with config.json",
                                path, c->dim);
    }
    if (c->dim % c->heads)
        return pd_error_set(PD_ERR_FORMAT, "%s: dim %d is not a multiple of %d heads", path, c->dim, c->heads);
    c->head_dim = c->dim / c->heads;
    c->text_len = 512;
    c->eps = 1e-6f;
    c->rope_theta = 10000.0;
    return pd_dit_as_format(pd_wan_dit_config_check(c, path), " (inferred from tensor shapes)");
}

/* ---- loading ---- */

/* Image-to-video checkpoints carry an image embedder and extra cross-attention projections. */
static pd_status pd_dit_reject_i2v(const pd_st *st) {
    for (int i = 0; i < pd_st_count(st); i++) {
        const char *n = pd_st_name(st, i);
        if (strstr(n, "img_emb.") || strstr(n, "image_embedder.") || strstr(n, ".k_img.") || strstr(n, ".add_k_proj."))
            return pd_error_set(PD_ERR_UNSUPPORTED,
                                "%s: tensor %s belongs to an image-to-video model; only Wan2.1 text-to-video is supported",
                                pd_st_path(st), n);
    }
    return PD_OK;
}

static pd_status pd_dit_load_one(void *ud, const pd_dit_tensor_spec *s) {
    pd_wan_dit *m = ud;
    pd_tensor host;
    PD_TRY(pd_st_get_shaped(m->st, s->name, s->ndim, s->shape, &host));
    if (host.dtype != PD_DTYPE_F32 && host.dtype != PD_DTYPE_BF16 && host.dtype != PD_DTYPE_F16)
        return pd_error_set(PD_ERR_FORMAT, "%s: tensor %s is %s, expected a float dtype", pd_st_path(m->st), s->name,
                            pd_dtype_name(host.dtype));
    if (!pd_backend_supports_op(m->be, PD_OP_LINEAR, host.dtype))
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: backend %s cannot use %s weights (tensor %s)", pd_st_path(m->st),
                            pd_backend_name(m->be), pd_dtype_name(host.dtype), s->name);
    pd_status st = pd_backend_import_weight(m->be, s->slot, &host);
    return st == PD_OK ? PD_OK : pd_error_prefix(st, "%s: tensor %s", pd_st_path(m->st), s->name);
}

static bool pd_dit_is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool pd_dit_is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static pd_status pd_dit_free_weight(void *ud, const pd_dit_tensor_spec *s) {
    pd_backend_tensor_free(ud, s->slot);
    return PD_OK;
}

void pd_wan_dit_free(pd_wan_dit *m) {
    if (!m) return;
    if (m->w.blocks) pd_dit_each_tensor(&m->cfg, m->layout, "", &m->w, pd_dit_free_weight, m->be);
    free(m->w.blocks);
    pd_backend_tensor_free(m->be, &m->zeros);
    pd_arena_free(m->arena);
    pd_st_close(m->st);
    free(m);
}

pd_status pd_wan_dit_load(const char *path, pd_backend *be, pd_wan_dit **out) {
    *out = NULL;
    char base[4200], cfg_path[4224];
    if (strlen(path) >= sizeof base - 16) return pd_error_set(PD_ERR_INVALID, "model path too long: %s", path);
    snprintf(base, sizeof base, "%s", path);
    if (!pd_dit_is_dir(path) && !pd_dit_is_file(path))
        return pd_error_set(PD_ERR_IO, "%s: no such model file or folder", path);
    if (pd_dit_is_dir(path)) {
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/transformer", path);
        if (pd_dit_is_dir(sub)) snprintf(base, sizeof base, "%s", sub);
    }
    bool have_cfg = false;
    if (pd_dit_is_dir(base)) {
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", base);
        have_cfg = pd_dit_is_file(cfg_path);
    }

    pd_wan_dit *m = calloc(1, sizeof *m);
    if (!m) return pd_error_set(PD_ERR_NOMEM, "out of memory loading %s", path);
    m->be = be;
    pd_status st = PD_OK;
    const char *prefix = "";
    if (have_cfg) st = pd_wan_dit_config_load(cfg_path, &m->cfg);
    if (st == PD_OK) st = pd_st_open(base, &m->st);
    if (st == PD_OK) st = pd_wan_dit_detect_layout(m->st, &m->layout, &prefix);
    if (st == PD_OK) st = pd_dit_reject_i2v(m->st);
    if (st == PD_OK && !have_cfg) st = pd_dit_infer_config(m->st, m->layout, prefix, &m->cfg);
    if (st == PD_OK) {
        m->w.blocks = calloc((size_t)m->cfg.layers, sizeof *m->w.blocks);
        if (!m->w.blocks) st = pd_error_set(PD_ERR_NOMEM, "out of memory loading %s", path);
    }
    if (st == PD_OK) st = pd_dit_each_tensor(&m->cfg, m->layout, prefix, &m->w, pd_dit_load_one, m);
    if (st == PD_OK) {
        int64_t pshape[2] = {m->cfg.dim, (int64_t)m->cfg.in_channels * m->cfg.patch[0] * m->cfg.patch[1] * m->cfg.patch[2]};
        st = pd_tensor_reshape(&m->w.patch.w, 2, pshape);
    }
    if (st == PD_OK) {
        int64_t zshape[2] = {m->cfg.text_len, m->cfg.text_dim};
        st = pd_backend_tensor_alloc(be, &m->zeros, PD_DTYPE_F32, 2, zshape);
    }
    if (st != PD_OK) {
        pd_wan_dit_free(m);
        return st;
    }
    PD_INFO("dit", "loaded %s (%s layout): dim %d, %d heads x %d, %d layers, ffn %d, text_dim %d, weights %s", base,
            m->layout == PD_WAN_LAYOUT_DIFFUSERS ? "diffusers" : "original", m->cfg.dim, m->cfg.heads,
            m->cfg.head_dim, m->cfg.layers, m->cfg.ffn_dim, m->cfg.text_dim, pd_dtype_name(m->w.patch.w.dtype));
    *out = m;
    return PD_OK;
}

const pd_wan_dit_config *pd_wan_dit_get_config(const pd_wan_dit *m) { return &m->cfg; }
pd_wan_layout pd_wan_dit_get_layout(const pd_wan_dit *m) { return m->layout; }
void pd_wan_dit_set_self_attention(pd_wan_dit *m, pd_wan_attention_fn fn, void *ud) {
    m->self_attn_fn = fn;
    m->self_attn_ud = fn ? ud : NULL;
}
size_t pd_wan_dit_arena_bytes(const pd_wan_dit *m) { return m->arena ? pd_arena_reserved(m->arena) : 0; }
