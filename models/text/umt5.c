#include "models/text/umt5.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/arena.h"
#include "base/json_file.h"
#include "engine/safetensors.h"
#include "models/model_dir.h"
#include "models/random_init.h"

typedef struct pd_umt5_layer {
    pd_tensor q, k, v, o;  // (H*dk, D) x3, (D, H*dk)
    pd_tensor ln0, ln1;    // (D)
    pd_tensor wi0, wi1;    // (F, D)
    pd_tensor wo;          // (D, F)
    pd_tensor rel;         // (num_buckets, H) as stored (host view)
    float *rel_f32;        // (num_buckets, H) widened once
} pd_umt5_layer;

struct pd_umt5 {
    pd_umt5_config cfg;
    pd_backend *be;
    pd_st *st;
    pd_arena *arena;
    pd_tensor shared;      // (V, D)
    pd_tensor final_ln;    // (D)
    pd_umt5_layer *layers; // (num_layers)
};

/* ---- config ---- */

pd_status pd_umt5_config_check(const pd_umt5_config *c) {
#define PD_UMT5_BOUND(field, lo, hi)                                                                 \
    if (c->field < (lo) || c->field > (hi))                                                          \
        return pd_error_set(PD_ERR_INVALID, "umT5 config: " #field " = %d outside %d .. %d", c->field, lo, hi);
    PD_UMT5_BOUND(vocab_size, 1, 1 << 22)
    PD_UMT5_BOUND(d_model, 1, 1 << 15)
    PD_UMT5_BOUND(d_kv, 1, 1024)
    PD_UMT5_BOUND(num_heads, 1, 1024)
    PD_UMT5_BOUND(d_ff, 1, 1 << 17)
    PD_UMT5_BOUND(num_layers, 1, 256)
    PD_UMT5_BOUND(num_buckets, 2, 1024)
    PD_UMT5_BOUND(max_distance, 1, 1 << 20)
#undef PD_UMT5_BOUND
    if (c->num_buckets % 4)
        return pd_error_set(PD_ERR_INVALID, "umT5 config: num_buckets %d must be a multiple of 4", c->num_buckets);
    if ((int64_t)c->d_kv * c->num_heads > (1 << 17))
        return pd_error_set(PD_ERR_INVALID, "umT5 config: d_kv * num_heads too large");
    if (!(c->eps > 0.0f && c->eps < 1.0f))
        return pd_error_set(PD_ERR_INVALID, "umT5 config: layer_norm_epsilon %g outside (0, 1)", (double)c->eps);
    return PD_OK;
}

static pd_status pd_umt5_get_int(const json_t *root, const char *key, int def, int *out, const char *path) {
    const json_t *v = json_object_get(root, key);
    if (!v) {
        if (def < 0) return pd_error_set(PD_ERR_FORMAT, "%s: missing \"%s\"", path, key);
        *out = def;
        return PD_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
        return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" is not a non-negative integer", path, key);
    *out = (int)json_integer_value(v);
    return PD_OK;
}

pd_status pd_umt5_config_load(const char *model_dir, pd_umt5_config *cfg) {
    char path[4200];
    if (snprintf(path, sizeof path, "%s/text_encoder/config.json", model_dir) >= (int)sizeof path)
        return pd_error_set(PD_ERR_INVALID, "model folder path too long: %s", model_dir);
    json_t *root;
    PD_TRY(pd_json_file_load(path, 1 << 20, &root));
    pd_status st = PD_OK;
    pd_umt5_config c = {0};
    if (!json_is_object(root)) st = pd_error_set(PD_ERR_FORMAT, "%s: not a JSON object", path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "vocab_size", -1, &c.vocab_size, path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "d_model", -1, &c.d_model, path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "d_kv", -1, &c.d_kv, path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "num_heads", -1, &c.num_heads, path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "d_ff", -1, &c.d_ff, path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "num_layers", -1, &c.num_layers, path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "relative_attention_num_buckets", 32, &c.num_buckets, path);
    if (st == PD_OK) st = pd_umt5_get_int(root, "relative_attention_max_distance", 128, &c.max_distance, path);
    c.eps = 1e-6f;
    const json_t *eps = json_object_get(root, "layer_norm_epsilon");
    if (st == PD_OK && eps) {
        if (!json_is_number(eps)) st = pd_error_set(PD_ERR_FORMAT, "%s: \"layer_norm_epsilon\" is not a number", path);
        else c.eps = (float)json_number_value(eps);
    }
    const char *ffp = json_string_value(json_object_get(root, "feed_forward_proj"));
    if (st == PD_OK && ffp && strcmp(ffp, "gated-gelu"))
        st = pd_error_set(PD_ERR_UNSUPPORTED, "%s: feed_forward_proj \"%s\" is not supported (umT5 uses \"gated-gelu\")",
                          path, ffp);
    json_decref(root);
    if (st == PD_OK) {
        st = pd_umt5_config_check(&c);
        if (st != PD_OK) st = pd_error_prefix(PD_ERR_FORMAT, "%s", path);
    }
    if (st == PD_OK) *cfg = c;
    return st;
}

/* ---- tensor table: one list of names and shapes serves loading and writing ---- */

typedef struct pd_umt5_spec {
    char name[128];
    int ndim;
    int64_t shape[2];
    float mean, std;
    pd_tensor *slot; /* where the loader puts it (NULL when writing) */
} pd_umt5_spec;

typedef pd_status (*pd_umt5_spec_fn)(void *ud, const pd_umt5_spec *s);

static pd_status pd_umt5_each_tensor(const pd_umt5_config *c, pd_umt5 *m, pd_umt5_spec_fn fn, void *ud) {
    const int64_t D = c->d_model, F = c->d_ff, HK = (int64_t)c->num_heads * c->d_kv;
    pd_umt5_spec s;
#define PD_SPEC(slot_, nd, s0, s1, mu, sd, ...)                                                      \
    do {                                                                                           \
        snprintf(s.name, sizeof s.name, __VA_ARGS__);                                              \
        s.ndim = nd, s.shape[0] = s0, s.shape[1] = s1, s.mean = mu, s.std = sd;                    \
        s.slot = m ? (slot_) : NULL;                                                               \
        PD_TRY(fn(ud, &s));                                                                        \
    } while (0)
    PD_SPEC(&m->shared, 2, c->vocab_size, D, 0.0f, 1.0f, "shared.weight");
    for (int l = 0; l < c->num_layers; l++) {
        pd_umt5_layer *L = m ? &m->layers[l] : NULL;
#define PD_ATT "encoder.block.%d.layer.0.SelfAttention.%s.weight"
#define PD_FFN "encoder.block.%d.layer.1.DenseReluDense.%s.weight"
        PD_SPEC(&L->q, 2, HK, D, 0.0f, (float)(1.0 / sqrt((double)D * c->d_kv)), PD_ATT, l, "q");
        PD_SPEC(&L->k, 2, HK, D, 0.0f, (float)(1.0 / sqrt((double)D)), PD_ATT, l, "k");
        PD_SPEC(&L->v, 2, HK, D, 0.0f, (float)(1.0 / sqrt((double)D)), PD_ATT, l, "v");
        PD_SPEC(&L->o, 2, D, HK, 0.0f, (float)(1.0 / sqrt((double)HK)), PD_ATT, l, "o");
        PD_SPEC(&L->rel, 2, c->num_buckets, c->num_heads, 0.0f, 1.0f, PD_ATT, l, "relative_attention_bias");
        PD_SPEC(&L->ln0, 1, D, 0, 1.0f, 0.1f, "encoder.block.%d.layer.0.layer_norm.weight", l);
        PD_SPEC(&L->wi0, 2, F, D, 0.0f, (float)(1.0 / sqrt((double)D)), PD_FFN, l, "wi_0");
        PD_SPEC(&L->wi1, 2, F, D, 0.0f, (float)(1.0 / sqrt((double)D)), PD_FFN, l, "wi_1");
        PD_SPEC(&L->wo, 2, D, F, 0.0f, (float)(1.0 / sqrt((double)F)), PD_FFN, l, "wo");
        PD_SPEC(&L->ln1, 1, D, 0, 1.0f, 0.1f, "encoder.block.%d.layer.1.layer_norm.weight", l);
    }
    PD_SPEC(&m->final_ln, 1, D, 0, 1.0f, 0.1f, "encoder.final_layer_norm.weight");
#undef PD_SPEC
#undef PD_ATT
#undef PD_FFN
    return PD_OK;
}

/* ---- loading ---- */

static pd_status pd_umt5_load_one(void *ud, const pd_umt5_spec *s) {
    pd_umt5 *m = ud;
    const char *name = s->name;
    if (!strcmp(name, "shared.weight") && !pd_st_has(m->st, name) && pd_st_has(m->st, "encoder.embed_tokens.weight"))
        name = "encoder.embed_tokens.weight";
    pd_tensor host;
    PD_TRY(pd_st_get_shaped(m->st, name, s->ndim, s->shape, &host));
    if (host.dtype != PD_DTYPE_F32 && host.dtype != PD_DTYPE_BF16 && host.dtype != PD_DTYPE_F16)
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s (F32, BF16 or F16 expected)",
                            pd_st_path(m->st), name, pd_dtype_name(host.dtype));
    if (strstr(name, "relative_attention_bias")) { /* read on the host to build the bias */
        *s->slot = host;
        return PD_OK;
    }
    return pd_backend_import_weight(m->be, s->slot, &host);
}

void pd_umt5_free(pd_umt5 *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.num_layers; l++) {
            pd_umt5_layer *L = &m->layers[l];
            pd_tensor *ts[] = {&L->q, &L->k, &L->v, &L->o, &L->ln0, &L->ln1, &L->wi0, &L->wi1, &L->wo};
            for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
                if (ts[i]->data) pd_backend_tensor_free(m->be, ts[i]);
            free(L->rel_f32);
        }
        free(m->layers);
    }
    if (m->shared.data) pd_backend_tensor_free(m->be, &m->shared);
    if (m->final_ln.data) pd_backend_tensor_free(m->be, &m->final_ln);
    pd_arena_free(m->arena);
    pd_st_close(m->st);
    free(m);
}

pd_status pd_umt5_load(const char *model_dir, pd_backend *be, pd_umt5 **out) {
    *out = NULL;
    pd_umt5 *m = calloc(1, sizeof *m);
    if (!m) return pd_error_set(PD_ERR_NOMEM, "out of memory loading the text encoder");
    m->be = be;
    pd_status st = pd_umt5_config_load(model_dir, &m->cfg);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/text_encoder", model_dir);
    if (st == PD_OK) st = pd_st_open(dir, &m->st);
    if (st == PD_OK) {
        m->layers = calloc((size_t)m->cfg.num_layers, sizeof *m->layers);
        if (!m->layers) st = pd_error_set(PD_ERR_NOMEM, "out of memory loading the text encoder");
    }
    if (st == PD_OK) st = pd_umt5_each_tensor(&m->cfg, m, pd_umt5_load_one, m);
    for (int l = 0; st == PD_OK && l < m->cfg.num_layers; l++) {
        pd_umt5_layer *L = &m->layers[l];
        int64_t n = pd_tensor_numel(&L->rel);
        L->rel_f32 = malloc((size_t)n * sizeof(float));
        if (!L->rel_f32) st = pd_error_set(PD_ERR_NOMEM, "out of memory loading the text encoder");
        else pd_convert_to_f32(L->rel_f32, L->rel.data, L->rel.dtype, n);
    }
    if (st == PD_OK) st = pd_arena_create(be, 0, &m->arena);
    if (st != PD_OK) {
        pd_umt5_free(m);
        return pd_error_prefix(st, "text encoder in %s", model_dir);
    }
    *out = m;
    return PD_OK;
}

const pd_umt5_config *pd_umt5_config_of(const pd_umt5 *m) { return &m->cfg; }

/* ---- forward ---- */

int pd_umt5_bucket(int r, int num_buckets, int max_distance) {
    int half = num_buckets / 2, exact = half / 2;
    int base = r > 0 ? half : 0;
    int a = r < 0 ? -r : r;
    if (a < exact) return base + a;
    /* float32 as the reference: log(a / exact) / log(max / exact) * (half - exact), truncated */
    float v = logf((float)a / (float)exact) / (float)log((double)max_distance / exact) * (float)(half - exact);
    int b = exact + (int)v;
    return base + (b < half - 1 ? b : half - 1);
}

pd_status pd_umt5_encode(pd_umt5 *m, const int32_t *ids, int n, pd_tensor *out) {
    memset(out, 0, sizeof *out);
    const pd_umt5_config *c = &m->cfg;
    if (n < 1 || n > PD_UMT5_MAX_TOKENS)
        return pd_error_set(PD_ERR_INVALID, "text encoder: %d tokens (1 .. %d allowed)", n, PD_UMT5_MAX_TOKENS);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return pd_error_set(PD_ERR_INVALID, "text encoder: token id %d at position %d outside the vocabulary of %d",
                                ids[i], i, c->vocab_size);
    pd_backend *be = m->be;
    const int64_t L = n, D = c->d_model, F = c->d_ff, H = c->num_heads, K = c->d_kv, HK = H * K;
    int *bucket = malloc((size_t)(L * L) * sizeof *bucket);
    float *bias_host = malloc((size_t)(H * L * L) * sizeof *bias_host);
    if (!bucket || !bias_host) {
        free(bucket), free(bias_host);
        return pd_error_set(PD_ERR_NOMEM, "text encoder: out of memory for %d tokens", n);
    }
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) bucket[i * L + j] = pd_umt5_bucket((int)(j - i), c->num_buckets, c->max_distance);

    size_t mark = pd_arena_mark(m->arena);
    pd_tensor tid = {0}, x = {0}, h = {0}, q = {0}, k = {0}, v = {0}, att = {0}, o = {0}, a = {0}, g = {0}, bias = {0};
    pd_status st = PD_OK;
#define PD_A(t, dt, nd, ...)                                                                       \
    if (st == PD_OK) st = pd_arena_tensor(m->arena, &t, dt, nd, (const int64_t[]){__VA_ARGS__})
    PD_A(tid, PD_DTYPE_I32, 1, L);
    PD_A(x, PD_DTYPE_F32, 2, L, D);   // residual stream
    PD_A(h, PD_DTYPE_F32, 2, L, D);   // normed
    PD_A(q, PD_DTYPE_F32, 2, L, HK);
    PD_A(k, PD_DTYPE_F32, 2, L, HK);
    PD_A(v, PD_DTYPE_F32, 2, L, HK);
    PD_A(att, PD_DTYPE_F32, 2, L, HK);
    PD_A(o, PD_DTYPE_F32, 2, L, D);
    PD_A(a, PD_DTYPE_F32, 2, L, F);   // gelu(wi_0 h) * wi_1 h
    PD_A(g, PD_DTYPE_F32, 2, L, F);
    PD_A(bias, PD_DTYPE_F32, 3, H, L, L);
#undef PD_A
    pd_tensor ids_host = pd_tensor_view((void *)ids, PD_DTYPE_I32, 1, (const int64_t[]){L});
    if (st == PD_OK) st = pd_backend_upload(be, &tid, &ids_host);
    if (st == PD_OK) st = pd_op_embedding(be, &x, &tid, &m->shared); // (L, D)
    /* 4-D views for attention: (1, L, H, K) */
    pd_tensor q4 = q, k4 = k, v4 = v, att4 = att;
    const int64_t s4[4] = {1, L, H, K};
    if (st == PD_OK) st = pd_tensor_reshape(&q4, 4, s4);
    if (st == PD_OK) st = pd_tensor_reshape(&k4, 4, s4);
    if (st == PD_OK) st = pd_tensor_reshape(&v4, 4, s4);
    if (st == PD_OK) st = pd_tensor_reshape(&att4, 4, s4);
    pd_tensor bias_view = pd_tensor_view(bias_host, PD_DTYPE_F32, 3, (const int64_t[]){H, L, L});
    for (int l = 0; st == PD_OK && l < c->num_layers; l++) {
        const pd_umt5_layer *Ly = &m->layers[l];
        for (int64_t hh = 0; hh < H; hh++) // bias[h, i, j] = rel[bucket(j - i), h]
            for (int64_t ij = 0; ij < L * L; ij++) bias_host[hh * L * L + ij] = Ly->rel_f32[bucket[ij] * H + hh];
        st = pd_backend_upload(be, &bias, &bias_view);
        if (st == PD_OK) st = pd_op_rms_norm(be, &h, &x, &Ly->ln0, c->eps);
        if (st == PD_OK) st = pd_op_linear(be, &q, &h, &Ly->q, NULL);
        if (st == PD_OK) st = pd_op_linear(be, &k, &h, &Ly->k, NULL);
        if (st == PD_OK) st = pd_op_linear(be, &v, &h, &Ly->v, NULL);
        if (st == PD_OK) st = pd_op_attention(be, &att4, &q4, &k4, &v4, &bias, 1.0f); // no 1/sqrt(d)
        if (st == PD_OK) st = pd_op_linear(be, &o, &att, &Ly->o, NULL);
        if (st == PD_OK) st = pd_op_add(be, &x, &x, &o);
        if (st == PD_OK) st = pd_op_rms_norm(be, &h, &x, &Ly->ln1, c->eps);
        if (st == PD_OK) st = pd_op_linear(be, &a, &h, &Ly->wi0, NULL);
        if (st == PD_OK) st = pd_op_gelu_tanh(be, &a, &a);
        if (st == PD_OK) st = pd_op_linear(be, &g, &h, &Ly->wi1, NULL);
        if (st == PD_OK) st = pd_op_mul(be, &a, &a, &g);
        if (st == PD_OK) st = pd_op_linear(be, &o, &a, &Ly->wo, NULL);
        if (st == PD_OK) st = pd_op_add(be, &x, &x, &o);
        if (st != PD_OK) pd_error_prefix(st, "text encoder layer %d", l);
    }
    if (st == PD_OK) st = pd_op_rms_norm(be, &h, &x, &m->final_ln, c->eps);
    if (st == PD_OK) st = pd_tensor_alloc(out, PD_DTYPE_F32, 2, (const int64_t[]){L, D});
    if (st == PD_OK) st = pd_backend_download(be, out, &h);
    if (st == PD_OK) st = pd_backend_synchronize(be);
    if (st != PD_OK) pd_tensor_free(out);
    pd_arena_reset(m->arena, mark);
    free(bucket);
    free(bias_host);
    return st;
}

/* ---- random checkpoint ---- */

typedef struct pd_umt5_writer {
    pd_st_writer *w;
    uint64_t seed;
    pd_dtype dtype;
} pd_umt5_writer;

static pd_status pd_umt5_write_one(void *ud, const pd_umt5_spec *s) {
    pd_umt5_writer *uw = ud;
    return pd_random_tensor_write(uw->w, s->name, s->name, uw->dtype, s->ndim, s->shape, uw->seed, s->mean, s->std);
}

static pd_status pd_umt5_write_config(const char *path, const pd_umt5_config *c, pd_dtype dtype) {
    char eps[32];
    snprintf(eps, sizeof eps, "%.7g", (double)c->eps);
    const char *td = dtype == PD_DTYPE_BF16 ? "bfloat16" : dtype == PD_DTYPE_F16 ? "float16" : "float32";
    json_t *j = json_pack(
        "{s:[s], s:f, s:i, s:i, s:i, s:i, s:s, s:f, s:i, s:s, s:f, s:b, s:b, s:f, s:s, s:i, s:i, s:i, s:b, s:i, "
        "s:i, s:i, s:b, s:b, s:s, s:s, s:s, s:b, s:i}",
        "architectures", "UMT5EncoderModel", "classifier_dropout", 0.0, "d_ff", c->d_ff, "d_kv", c->d_kv, "d_model",
        c->d_model, "decoder_start_token_id", 0, "dense_act_fn", "gelu_new", "dropout_rate", 0.1, "eos_token_id", 1,
        "feed_forward_proj", "gated-gelu", "initializer_factor", 1.0, "is_encoder_decoder", 1, "is_gated_act", 1,
        "layer_norm_epsilon", strtod(eps, NULL), "model_type", "umt5", "num_decoder_layers", c->num_layers,
        "num_heads", c->num_heads, "num_layers", c->num_layers, "output_past", 1, "pad_token_id", 0,
        "relative_attention_max_distance", c->max_distance, "relative_attention_num_buckets", c->num_buckets,
        "scalable_attention", 1, "tie_word_embeddings", 0, "tokenizer_class", "T5Tokenizer", "torch_dtype", td,
        "transformers_version", "4.44.2", "use_cache", 1, "vocab_size", c->vocab_size);
    if (!j) return pd_error_set(PD_ERR_NOMEM, "out of memory writing %s", path);
    pd_status st = pd_model_dir_write_json(path, j);
    json_decref(j);
    return st;
}

pd_status pd_umt5_write_random(const char *model_dir, const pd_umt5_config *cfg, uint64_t seed, pd_dtype dtype) {
    PD_TRY(pd_umt5_config_check(cfg));
    if (dtype != PD_DTYPE_F32 && dtype != PD_DTYPE_BF16 && dtype != PD_DTYPE_F16)
        return pd_error_set(PD_ERR_INVALID, "text encoder weights must be F32, BF16 or F16, not %s",
                            pd_dtype_name(dtype));
    char dir[4200], file[4300];
    if (snprintf(dir, sizeof dir, "%s/text_encoder", model_dir) >= (int)sizeof dir - 32)
        return pd_error_set(PD_ERR_INVALID, "model folder path too long: %s", model_dir);
    PD_TRY(pd_model_dir_mkdirs(dir));
    snprintf(file, sizeof file, "%s/config.json", dir);
    PD_TRY(pd_umt5_write_config(file, cfg, dtype));
    pd_umt5_writer uw = {.seed = seed, .dtype = dtype};
    PD_TRY(pd_st_writer_create(&uw.w));
    pd_status st = pd_umt5_each_tensor(cfg, NULL, pd_umt5_write_one, &uw);
    if (st == PD_OK) st = pd_st_writer_metadata(uw.w, "format", "pt");
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    if (st == PD_OK) st = pd_st_writer_save(uw.w, file);
    pd_st_writer_free(uw.w);
    return st;
}
