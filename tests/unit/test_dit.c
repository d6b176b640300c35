/* The Wan2.1 DiT: layout detection, loader errors (missing tensor, wrong shape, bad config.json),
 * batch-2 = two batch-1 evaluations, both layouts of one seed = the same model, forward input checks,
 * arena reuse, the cached default model folder, and stops between blocks. Numerics against an
 * independent reference live in tests/ref/test_dit_ref.sh. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/backend_impl.h" /* to hide the fused ops from one backend */
#include "engine/safetensors.h"
#include "models/model_dir.h"
#include "models/random_init.h"
#include "models/wan/dit.h"
#include "tests/unit/test.h"

static char g_tmp[512];
static pd_backend *g_be;
static const pd_wan_dit_config *g_cfg;

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_tmp, name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    PD_CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Copies checkpoint src to dst, renaming with prefix, dropping `drop`, giving `reshape` the shape
 * (ndim 2) new_shape (zeros) and adding a (4) tensor named `extra`. */
static void copy_checkpoint_ex(const char *src, const char *dst, const char *prefix, const char *drop,
                               const char *reshape, const int64_t *new_shape, const char *extra) {
    pd_st *st;
    pd_st_writer *w;
    PD_CHECK_OK(pd_st_open(src, &st));
    PD_CHECK_OK(pd_st_writer_create(&w));
    for (int i = 0; i < pd_st_count(st); i++) {
        const char *name = pd_st_name(st, i);
        if (drop && !strcmp(name, drop)) continue;
        char full[256];
        snprintf(full, sizeof full, "%s%s", prefix, name);
        pd_tensor t;
        PD_CHECK_OK(pd_st_get(st, name, &t));
        if (reshape && !strcmp(name, reshape)) {
            pd_tensor z;
            PD_CHECK_OK(pd_tensor_alloc(&z, t.dtype, 2, new_shape));
            PD_CHECK_OK(pd_st_writer_add(w, full, &z));
            pd_tensor_free(&z);
        } else {
            PD_CHECK_OK(pd_st_writer_add(w, full, &t));
        }
    }
    if (extra) {
        pd_tensor z;
        int64_t four = 4;
        PD_CHECK_OK(pd_tensor_alloc(&z, PD_DTYPE_F32, 1, &four));
        PD_CHECK_OK(pd_st_writer_add(w, extra, &z));
        pd_tensor_free(&z);
    }
    const char *heads = pd_st_metadata(st, "num_attention_heads");
    if (heads) PD_CHECK_OK(pd_st_writer_metadata(w, "num_attention_heads", heads));
    PD_CHECK_OK(pd_st_writer_save(w, dst));
    pd_st_writer_free(w);
    pd_st_close(st);
}

static void copy_checkpoint(const char *src, const char *dst, const char *prefix, const char *drop,
                            const char *reshape, const int64_t *new_shape) {
    copy_checkpoint_ex(src, dst, prefix, drop, reshape, new_shape, NULL);
}

/* Random inputs for batch B: latent (B, 16, T, H, W), context (B, L, text_dim). */
static void make_inputs(int64_t B, int64_t T, int64_t H, int64_t W, int64_t L, uint64_t seed, pd_tensor *lat,
                        pd_tensor *ctx) {
    int64_t ls[5] = {B, g_cfg->in_channels, T, H, W}, cs[3] = {B, L, g_cfg->text_dim};
    PD_CHECK_OK(pd_random_tensor(lat, PD_DTYPE_F32, 5, ls, seed, "latent", 0.0f, 1.0f));
    PD_CHECK_OK(pd_random_tensor(ctx, PD_DTYPE_F32, 3, cs, seed, "context", 0.0f, 1.0f));
}

static float max_abs_diff(const float *a, const float *b, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static pd_status run(pd_wan_dit *m, const pd_tensor *lat, const float *t, const pd_tensor *ctx, pd_tensor *vel) {
    int64_t vs[5] = {lat->shape[0], g_cfg->out_channels, lat->shape[2], lat->shape[3], lat->shape[4]};
    PD_TRY(pd_tensor_alloc(vel, PD_DTYPE_F32, 5, vs));
    return pd_wan_dit_forward(m, vel, lat, t, ctx);
}

/* The DiT on a backend without the fused ops (their table slots emptied, so supports_op says no) takes
 * the unfused sequence; both paths give the same velocity. */
static void test_fused_and_unfused_paths_agree(void) {
    pd_backend *plain = NULL;
    PD_CHECK_OK(pd_backend_cpu_create(2, &plain));
    if (!plain) return;
    static pd_backend_ops no_fused;
    no_fused = *plain->ops;
    no_fused.layer_norm_modulate = NULL;
    no_fused.linear_gelu = NULL;
    no_fused.rms_norm_rope = NULL;
    plain->ops = &no_fused;
    PD_CHECK(!pd_backend_supports_op(plain, PD_OP_LAYER_NORM_MODULATE, PD_DTYPE_F32) &&
             !pd_backend_supports_op(plain, PD_OP_LINEAR_GELU, PD_DTYPE_F32) &&
             !pd_backend_supports_op(plain, PD_OP_RMS_NORM_ROPE, PD_DTYPE_F32));
    PD_CHECK(pd_backend_supports_op(g_be, PD_OP_LAYER_NORM_MODULATE, PD_DTYPE_F32) &&
             pd_backend_supports_op(g_be, PD_OP_LINEAR_GELU, PD_DTYPE_F32) &&
             pd_backend_supports_op(g_be, PD_OP_RMS_NORM_ROPE, PD_DTYPE_F32));
    char d[600];
    path_in(d, sizeof d, "diff");
    pd_wan_dit *mf = NULL, *mu = NULL;
    PD_CHECK_OK(pd_wan_dit_load(d, g_be, &mf));
    PD_CHECK_OK(pd_wan_dit_load(d, plain, &mu));
    if (mf && mu) {
        pd_tensor lat, ctx, vf, vu;
        make_inputs(2, 3, 6, 10, 9, 5, &lat, &ctx);
        const float t[2] = {937.0f, 250.0f};
        PD_CHECK_OK(run(mf, &lat, t, &ctx, &vf));
        PD_CHECK_OK(run(mu, &lat, t, &ctx, &vu));
        float diff = max_abs_diff(vf.data, vu.data, pd_tensor_numel(&vf)), ref = 0;
        for (int64_t i = 0; i < pd_tensor_numel(&vu); i++) ref = fmaxf(ref, fabsf(((float *)vu.data)[i]));
        PD_CHECK_MSG(diff <= 1e-5f * ref, "fused vs unfused DiT: max difference %g (max |v| %g)", (double)diff, (double)ref);
        pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&vf), pd_tensor_free(&vu);
    }
    pd_wan_dit_free(mf);
    pd_wan_dit_free(mu);
    pd_backend_free(plain);
}

static void test_layout_detection(void) {
    char d[600], o[600], p[600];
    path_in(d, sizeof d, "diff/transformer/diffusion_pytorch_model.safetensors");
    path_in(o, sizeof o, "orig/transformer/diffusion_pytorch_model.safetensors");
    path_in(p, sizeof p, "prefixed.safetensors");
    copy_checkpoint(o, p, "model.diffusion_model.", NULL, NULL, NULL);
    const char *files[3] = {d, o, p};
    const pd_wan_layout want[3] = {PD_WAN_LAYOUT_DIFFUSERS, PD_WAN_LAYOUT_ORIGINAL, PD_WAN_LAYOUT_ORIGINAL};
    const char *want_prefix[3] = {"", "", "model.diffusion_model."};
    for (int i = 0; i < 3; i++) {
        pd_st *st;
        PD_CHECK_OK(pd_st_open(files[i], &st));
        pd_wan_layout l = (pd_wan_layout)-1;
        const char *prefix = NULL;
        PD_CHECK_OK(pd_wan_dit_detect_layout(st, &l, &prefix));
        PD_CHECK_MSG(l == want[i] && prefix && !strcmp(prefix, want_prefix[i]), "file %d: layout %d prefix %s", i,
                     (int)l, prefix ? prefix : "(null)");
        pd_st_close(st);
    }
    /* The prefixed file loads, and is the same model. */
    pd_wan_dit *m;
    PD_CHECK_OK(pd_wan_dit_load(p, g_be, &m));
    if (m) {
        PD_CHECK(pd_wan_dit_get_layout(m) == PD_WAN_LAYOUT_ORIGINAL);
        PD_CHECK(pd_wan_dit_get_config(m)->heads == g_cfg->heads && pd_wan_dit_get_config(m)->layers == g_cfg->layers);
        pd_wan_dit_free(m);
    }
    /* A safetensors file that is no DiT. */
    char junk[600];
    path_in(junk, sizeof junk, "junk.safetensors");
    pd_st_writer *w;
    pd_tensor t;
    int64_t s1[1] = {4};
    PD_CHECK_OK(pd_random_tensor(&t, PD_DTYPE_F32, 1, s1, 1, "x", 0, 1));
    PD_CHECK_OK(pd_st_writer_create(&w));
    PD_CHECK_OK(pd_st_writer_add(w, "encoder.weight", &t));
    PD_CHECK_OK(pd_st_writer_save(w, junk));
    pd_st_writer_free(w);
    pd_tensor_free(&t);
    PD_CHECK_ERR(pd_wan_dit_load(junk, g_be, &m), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "not a Wan2.1 DiT") != NULL);
}

static void test_missing_tensor(void) {
    char o[600], bad[600];
    path_in(o, sizeof o, "orig/transformer/diffusion_pytorch_model.safetensors");
    path_in(bad, sizeof bad, "missing.safetensors");
    copy_checkpoint(o, bad, "", "blocks.1.cross_attn.k.weight", NULL, NULL);
    pd_wan_dit *m = NULL;
    PD_CHECK_ERR(pd_wan_dit_load(bad, g_be, &m), PD_ERR_NOT_FOUND);
    PD_CHECK_MSG(strstr(pd_error_msg(), "blocks.1.cross_attn.k.weight") && strstr(pd_error_msg(), "missing.safetensors"),
                 "message: %s", pd_error_msg());
    PD_CHECK(m == NULL);
}

static void test_image_to_video_rejected(void) {
    char o[600], bad[600];
    path_in(o, sizeof o, "orig/transformer/diffusion_pytorch_model.safetensors");
    path_in(bad, sizeof bad, "i2v.safetensors");
    copy_checkpoint_ex(o, bad, "", NULL, NULL, NULL, "img_emb.proj.1.weight");
    pd_wan_dit *m = NULL;
    PD_CHECK_ERR(pd_wan_dit_load(bad, g_be, &m), PD_ERR_UNSUPPORTED);
    PD_CHECK_MSG(strstr(pd_error_msg(), "image-to-video") != NULL, "message: %s", pd_error_msg());
}

static void test_wrong_shape(void) {
    char o[600], bad[600];
    path_in(o, sizeof o, "orig/transformer/diffusion_pytorch_model.safetensors");
    path_in(bad, sizeof bad, "wrongshape.safetensors");
    int64_t s[2] = {g_cfg->dim, g_cfg->ffn_dim + 1};
    copy_checkpoint(o, bad, "", NULL, "blocks.0.ffn.2.weight", s);
    pd_wan_dit *m = NULL;
    PD_CHECK_ERR(pd_wan_dit_load(bad, g_be, &m), PD_ERR_FORMAT);
    PD_CHECK_MSG(strstr(pd_error_msg(), "blocks.0.ffn.2.weight") != NULL, "message: %s", pd_error_msg());
}

/* A diffusers transformer folder whose config.json is replaced by `json`. */
static pd_status load_with_config(const char *json, pd_wan_dit **m) {
    char dir[600], cfgp[700], src[700], dst[700];
    path_in(dir, sizeof dir, "badcfg");
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    snprintf(dst, sizeof dst, "%s/diffusion_pytorch_model.safetensors", dir);
    struct stat sb;
    if (stat(dst, &sb) != 0) {
        mkdir(dir, 0755);
        snprintf(src, sizeof src, "%s/diff/transformer/diffusion_pytorch_model.safetensors", g_tmp);
        copy_checkpoint(src, dst, "", NULL, NULL, NULL);
    }
    write_text(cfgp, json);
    return pd_wan_dit_load(dir, g_be, m);
}

/* Keys every case shares; patch_size, eps and qk_norm are added per case (duplicate keys are an error). */
#define CFG_BASE "{\"_class_name\": \"WanTransformer3DModel\", \"in_channels\": 16, \"out_channels\": 16, "      \
                 "\"text_dim\": 32, \"freq_dim\": 256, \"ffn_dim\": 256, \"cross_attn_norm\": true, "            \
                 "\"rope_max_seq_len\": 1024, "
#define CFG_PATCH "\"patch_size\": [1, 2, 2], "
#define CFG_EPS "\"eps\": 1e-6, "
#define CFG_QK "\"qk_norm\": \"rms_norm_across_heads\", "
#define CFG_HEAD CFG_BASE CFG_PATCH CFG_EPS CFG_QK

static void test_bad_config(void) {
    pd_wan_dit *m = NULL;
    PD_CHECK_OK(load_with_config(CFG_HEAD "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 2}", &m));
    pd_wan_dit_free(m);
    m = NULL;
    static const struct {
        const char *json, *want;
        pd_status st;
    } cases[] = {
        {CFG_HEAD "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": -3}", "num_layers", PD_ERR_FORMAT},
        {CFG_HEAD "\"num_attention_heads\": \"four\", \"attention_head_dim\": 32, \"num_layers\": 2}", "num_attention_heads", PD_ERR_FORMAT},
        {CFG_HEAD "\"num_attention_heads\": 4, \"num_layers\": 2}", "attention_head_dim", PD_ERR_FORMAT},
        {CFG_HEAD "\"num_attention_heads\": 4, \"attention_head_dim\": 31, \"num_layers\": 2}", "attention_head_dim", PD_ERR_FORMAT},
        {CFG_BASE CFG_PATCH CFG_QK "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 2, \"eps\": -1}", "eps", PD_ERR_FORMAT},
        {CFG_BASE CFG_EPS CFG_QK "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 2, \"patch_size\": [1, 2]}", "patch_size", PD_ERR_FORMAT},
        {CFG_BASE CFG_PATCH CFG_EPS "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 2, \"qk_norm\": \"rms_norm\"}", "qk_norm", PD_ERR_UNSUPPORTED},
        {CFG_HEAD "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 2, \"image_dim\": 1280}", "image_dim", PD_ERR_UNSUPPORTED},
        {CFG_HEAD "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 2", "bad JSON", PD_ERR_FORMAT},
        {CFG_HEAD "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 2, \"eps\": 1e-5}", "duplicate", PD_ERR_FORMAT},
        /* consistent JSON that does not match the tensors */
        {CFG_HEAD "\"num_attention_heads\": 4, \"attention_head_dim\": 32, \"num_layers\": 3}", "blocks.2.", PD_ERR_NOT_FOUND},
        {CFG_HEAD "\"num_attention_heads\": 2, \"attention_head_dim\": 32, \"num_layers\": 2}", "patch_embedding.weight", PD_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        PD_CHECK_ERR(load_with_config(cases[i].json, &m), cases[i].st);
        PD_CHECK_MSG(strstr(pd_error_msg(), cases[i].want) && strstr(pd_error_msg(), "badcfg"),
                     "case %zu: message \"%s\" lacks \"%s\" or the file", i, pd_error_msg(), cases[i].want);
        PD_CHECK(m == NULL);
    }
}

static void test_batch2_equals_two_batch1(void) {
    char d[600];
    path_in(d, sizeof d, "diff");
    pd_wan_dit *m;
    PD_CHECK_OK(pd_wan_dit_load(d, g_be, &m));
    if (!m) return;
    pd_tensor lat2, ctx2, v2, v0, v1;
    make_inputs(2, 3, 6, 10, 9, 11, &lat2, &ctx2);
    const float t2[2] = {937.0f, 250.0f};
    PD_CHECK_OK(run(m, &lat2, t2, &ctx2, &v2));
    size_t after_first = pd_wan_dit_arena_bytes(m);
    PD_CHECK_MSG(pd_wan_dit_activation_bytes(g_cfg, 2, 3, 6, 10) == after_first, "activation estimate %zu, arena %zu",
                 pd_wan_dit_activation_bytes(g_cfg, 2, 3, 6, 10), after_first);
    pd_tensor l0 = pd_tensor_slice(&lat2, 0, 0, 1), l1 = pd_tensor_slice(&lat2, 0, 1, 1);
    pd_tensor c0 = pd_tensor_slice(&ctx2, 0, 0, 1), c1 = pd_tensor_slice(&ctx2, 0, 1, 1);
    PD_CHECK_OK(run(m, &l0, &t2[0], &c0, &v0));
    PD_CHECK_OK(run(m, &l1, &t2[1], &c1, &v1));
    int64_t n = pd_tensor_numel(&v0);
    const float *b2 = v2.data;
    float d0 = max_abs_diff(b2, v0.data, n), d1 = max_abs_diff(b2 + n, v1.data, n);
    PD_CHECK_MSG(d0 < 1e-5f && d1 < 1e-5f, "batch 2 vs batch 1: max diff %g, %g", d0, d1);
    /* The two elements differ (timestep and inputs matter) and the velocity is O(1). */
    float between = max_abs_diff(v0.data, v1.data, n);
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)b2[i] * b2[i];
    PD_CHECK_MSG(between > 0.1f && sqrt(ss / (double)n) > 0.1 && sqrt(ss / (double)n) < 10, "between %g rms %g",
                 between, sqrt(ss / (double)n));
    /* Smaller calls reuse the arena grown by the first. */
    PD_CHECK_MSG(pd_wan_dit_arena_bytes(m) == after_first, "arena grew from %zu to %zu", after_first,
                 pd_wan_dit_arena_bytes(m));
    /* Same call twice: same result. */
    pd_tensor again;
    PD_CHECK_OK(run(m, &lat2, t2, &ctx2, &again));
    PD_CHECK(max_abs_diff(again.data, v2.data, 2 * n) == 0.0f);
    pd_tensor_free(&again);
    pd_tensor_free(&lat2), pd_tensor_free(&ctx2), pd_tensor_free(&v2), pd_tensor_free(&v0), pd_tensor_free(&v1);
    pd_wan_dit_free(m);
}

/* Zero rows appended to a context change nothing: the model pads to text_len with zeros anyway. */
static void test_context_padding(void) {
    char d[600];
    path_in(d, sizeof d, "diff");
    pd_wan_dit *m;
    PD_CHECK_OK(pd_wan_dit_load(d, g_be, &m));
    if (!m) return;
    pd_tensor lat, ctx, padded, a, b, c;
    make_inputs(1, 1, 4, 4, 5, 3, &lat, &ctx);
    int64_t ps[3] = {1, 40, g_cfg->text_dim};
    PD_CHECK_OK(pd_tensor_alloc(&padded, PD_DTYPE_F32, 3, ps)); /* zeroed */
    memcpy(padded.data, ctx.data, pd_tensor_nbytes(&ctx));
    float t = 700.0f;
    PD_CHECK_OK(run(m, &lat, &t, &ctx, &a));
    PD_CHECK_OK(run(m, &lat, &t, &padded, &b));
    int64_t n = pd_tensor_numel(&a);
    PD_CHECK_MSG(max_abs_diff(a.data, b.data, n) < 1e-6f, "padded context: max diff %g", max_abs_diff(a.data, b.data, n));
    /* while a non-zero extra row does change the result */
    ((float *)padded.data)[5 * g_cfg->text_dim] = 3.0f;
    PD_CHECK_OK(run(m, &lat, &t, &padded, &c));
    PD_CHECK(max_abs_diff(a.data, c.data, n) > 1e-4f);
    pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&padded);
    pd_tensor_free(&a), pd_tensor_free(&b), pd_tensor_free(&c);
    pd_wan_dit_free(m);
}

static void test_layouts_same_model(void) {
    char d[600], o[600];
    path_in(d, sizeof d, "diff");
    path_in(o, sizeof o, "orig");
    pd_wan_dit *md, *mo;
    PD_CHECK_OK(pd_wan_dit_load(d, g_be, &md));
    PD_CHECK_OK(pd_wan_dit_load(o, g_be, &mo));
    if (!md || !mo) return;
    PD_CHECK(pd_wan_dit_get_layout(md) == PD_WAN_LAYOUT_DIFFUSERS && pd_wan_dit_get_layout(mo) == PD_WAN_LAYOUT_ORIGINAL);
    pd_tensor lat, ctx, a, b;
    make_inputs(1, 2, 8, 4, 30, 5, &lat, &ctx);
    float t = 500.0f;
    PD_CHECK_OK(run(md, &lat, &t, &ctx, &a));
    PD_CHECK_OK(run(mo, &lat, &t, &ctx, &b));
    float diff = max_abs_diff(a.data, b.data, pd_tensor_numel(&a));
    PD_CHECK_MSG(diff == 0.0f, "diffusers vs original layout: max diff %g", diff);
    pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&a), pd_tensor_free(&b);
    pd_wan_dit_free(md);
    pd_wan_dit_free(mo);
}

static void test_forward_input_errors(void) {
    char d[600];
    path_in(d, sizeof d, "diff");
    pd_wan_dit *m;
    PD_CHECK_OK(pd_wan_dit_load(d, g_be, &m));
    if (!m) return;
    pd_tensor lat, ctx, vel, bad;
    make_inputs(1, 1, 4, 4, 3, 1, &lat, &ctx);
    int64_t vs[5] = {1, 16, 1, 4, 4};
    PD_CHECK_OK(pd_tensor_alloc(&vel, PD_DTYPE_F32, 5, vs));
    float t = 10.0f, tn = NAN;
    int64_t odd[5] = {1, 16, 1, 5, 4}, c8[5] = {1, 8, 1, 4, 4}, lc[3] = {1, 513, 32}, td[3] = {1, 3, 16};
    PD_CHECK_OK(pd_tensor_alloc(&bad, PD_DTYPE_F32, 5, odd));
    PD_CHECK_ERR(pd_wan_dit_forward(m, &vel, &bad, &t, &ctx), PD_ERR_INVALID);
    PD_CHECK(strstr(pd_error_msg(), "height") != NULL);
    pd_tensor_free(&bad);
    PD_CHECK_OK(pd_tensor_alloc(&bad, PD_DTYPE_F32, 5, c8));
    PD_CHECK_ERR(pd_wan_dit_forward(m, &vel, &bad, &t, &ctx), PD_ERR_INVALID);
    pd_tensor_free(&bad);
    PD_CHECK_OK(pd_tensor_alloc(&bad, PD_DTYPE_F32, 3, lc));
    PD_CHECK_ERR(pd_wan_dit_forward(m, &vel, &lat, &t, &bad), PD_ERR_INVALID);
    PD_CHECK(strstr(pd_error_msg(), "context") != NULL);
    pd_tensor_free(&bad);
    PD_CHECK_OK(pd_tensor_alloc(&bad, PD_DTYPE_F32, 3, td));
    PD_CHECK_ERR(pd_wan_dit_forward(m, &vel, &lat, &t, &bad), PD_ERR_INVALID);
    pd_tensor_free(&bad);
    PD_CHECK_ERR(pd_wan_dit_forward(m, &vel, &lat, &tn, &ctx), PD_ERR_INVALID);
    pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&vel);
    pd_wan_dit_free(m);
}

/* A diffusers transformer folder split into two shards with an index loads as the same model. */
static void test_sharded_checkpoint(void) {
    char src[600], dir[600], shard[700], idx[700];
    path_in(src, sizeof src, "diff/transformer/diffusion_pytorch_model.safetensors");
    path_in(dir, sizeof dir, "sharded");
    PD_CHECK_OK(pd_model_dir_mkdirs(dir));
    snprintf(idx, sizeof idx, "%s/config.json", dir);
    char cfgsrc[600];
    path_in(cfgsrc, sizeof cfgsrc, "diff/transformer/config.json");
    PD_CHECK(link(cfgsrc, idx) == 0);
    pd_st *st;
    PD_CHECK_OK(pd_st_open(src, &st));
    if (!st) return;
    json_t *map = json_object();
    for (int part = 0; part < 2; part++) {
        pd_st_writer *w;
        PD_CHECK_OK(pd_st_writer_create(&w));
        char fname[64];
        snprintf(fname, sizeof fname, "diffusion_pytorch_model-%05d-of-00002.safetensors", part + 1);
        for (int i = part; i < pd_st_count(st); i += 2) {
            pd_tensor t;
            PD_CHECK_OK(pd_st_get(st, pd_st_name(st, i), &t));
            PD_CHECK_OK(pd_st_writer_add(w, pd_st_name(st, i), &t));
            json_object_set_new(map, pd_st_name(st, i), json_string(fname));
        }
        snprintf(shard, sizeof shard, "%s/%s", dir, fname);
        PD_CHECK_OK(pd_st_writer_save(w, shard));
        pd_st_writer_free(w);
    }
    pd_st_close(st);
    json_t *root = json_pack("{s:{s:i}, s:o}", "metadata", "total_size", 0, "weight_map", map);
    snprintf(idx, sizeof idx, "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    PD_CHECK_OK(pd_model_dir_write_json(idx, root));
    json_decref(root);

    pd_wan_dit *ms, *md;
    char d[600];
    path_in(d, sizeof d, "diff");
    PD_CHECK_OK(pd_wan_dit_load(dir, g_be, &ms));
    PD_CHECK_OK(pd_wan_dit_load(d, g_be, &md));
    if (!ms || !md) return;
    pd_tensor lat, ctx, a, b;
    make_inputs(1, 2, 4, 6, 12, 9, &lat, &ctx);
    float t = 42.0f;
    PD_CHECK_OK(run(ms, &lat, &t, &ctx, &a));
    PD_CHECK_OK(run(md, &lat, &t, &ctx, &b));
    PD_CHECK(max_abs_diff(a.data, b.data, pd_tensor_numel(&a)) == 0.0f);
    pd_tensor_free(&lat), pd_tensor_free(&ctx), pd_tensor_free(&a), pd_tensor_free(&b);
    pd_wan_dit_free(ms);
    pd_wan_dit_free(md);
}

static void test_default_model_dir(void) {
    char cache[600], a[700], b[700], idx[800];
    path_in(cache, sizeof cache, "cache");
    setenv("PIPEDIT_CACHE", cache, 1);
    PD_CHECK_OK(pd_model_dir_default(a, sizeof a));
    PD_CHECK_OK(pd_model_dir_default(b, sizeof b));
    PD_CHECK(!strcmp(a, b) && strstr(a, "/cache/tiny-v1") != NULL);
    snprintf(idx, sizeof idx, "%s/model_index.json", a);
    struct stat sb;
    PD_CHECK(stat(idx, &sb) == 0);
    pd_wan_dit *m;
    PD_CHECK_OK(pd_wan_dit_load(a, g_be, &m));
    pd_wan_dit_free(m);
    char small[8];
    PD_CHECK_ERR(pd_model_dir_default(small, sizeof small), PD_ERR_INVALID);

    /* Concurrent first uses in two processes: both succeed, one complete folder, no temporaries left. */
    path_in(cache, sizeof cache, "cache2");
    setenv("PIPEDIT_CACHE", cache, 1);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            char out[700];
            _exit(pd_model_dir_default(out, sizeof out) == PD_OK ? 0 : 1);
        }
    }
    for (int i = 0; i < 2; i++) {
        int status = 0;
        PD_CHECK(kids[i] > 0 && waitpid(kids[i], &status, 0) == kids[i]);
        PD_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d status %d", i, status);
    }
    PD_CHECK_OK(pd_model_dir_default(a, sizeof a));
    PD_CHECK_OK(pd_wan_dit_load(a, g_be, &m));
    pd_wan_dit_free(m);
    int leftovers = 0;
    DIR *dd = opendir(cache);
    PD_CHECK(dd != NULL);
    for (struct dirent *e; dd && (e = readdir(dd));) leftovers += strstr(e->d_name, "tmp") != NULL;
    if (dd) closedir(dd);
    PD_CHECK_MSG(leftovers == 0, "%d temporary folders left in %s", leftovers, cache);
    unsetenv("PIPEDIT_CACHE");
}

/* Stops take effect between blocks: a flag set by the hook after block k ends the forward before
 * block k + 1 (blocks run: k + 1), with the status its value names; a clear flag runs every block. */
typedef struct block_watch {
    atomic_int *flag;
    int set_after, value, blocks;
} block_watch;

static void on_block(void *ud, int block) {
    block_watch *w = ud;
    w->blocks++;
    if (block == w->set_after) atomic_store(w->flag, w->value);
}

static void test_stop_between_blocks(void) {
    pd_wan_dit_config cfg = *g_cfg;
    cfg.layers = 6;
    char d[600];
    path_in(d, sizeof d, "deep");
    PD_CHECK_OK(pd_wan_dit_write_random(d, &cfg, 5, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32));
    pd_wan_dit *m;
    PD_CHECK_OK(pd_wan_dit_load(d, g_be, &m));
    if (!m) return;
    pd_tensor lat, ctx, vel;
    make_inputs(1, 2, 4, 4, 3, 5, &lat, &ctx);
    const float t = 500.0f;
    atomic_int flag = PD_STOP_NONE;
    block_watch w = {.flag = &flag, .set_after = -1};
    pd_wan_dit_set_block_hook(m, on_block, &w);
    pd_wan_dit_set_stop(m, &flag);
    PD_CHECK_OK(run(m, &lat, &t, &ctx, &vel));
    PD_CHECK_MSG(w.blocks == 6, "no stop: %d blocks run, want 6", w.blocks);
    pd_tensor_free(&vel);
    const struct { int after, value; pd_status want; const char *msg; } cases[] = {
        {2, PD_STOP_CANCEL, PD_ERR_CANCELLED, "cancelled before DiT block 4 of 6"},
        {0, PD_STOP_DEADLINE, PD_ERR_DEADLINE, "deadline exceeded before DiT block 2 of 6"},
        {4, PD_STOP_CANCEL, PD_ERR_CANCELLED, "cancelled before DiT block 6 of 6"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        atomic_store(&flag, PD_STOP_NONE);
        w = (block_watch){.flag = &flag, .set_after = cases[i].after, .value = cases[i].value};
        PD_CHECK_ERR(run(m, &lat, &t, &ctx, &vel), cases[i].want);
        PD_CHECK_MSG(w.blocks == cases[i].after + 1, "case %zu: %d blocks run, want %d", i, w.blocks,
                     cases[i].after + 1);
        PD_CHECK_MSG(strstr(pd_error_msg(), cases[i].msg), "case %zu: message \"%s\" lacks \"%s\"", i, pd_error_msg(),
                     cases[i].msg);
        pd_tensor_free(&vel);
    }
    /* A flag already set stops before the first block. */
    w = (block_watch){.flag = &flag, .set_after = -1};
    PD_CHECK_ERR(run(m, &lat, &t, &ctx, &vel), PD_ERR_CANCELLED);
    PD_CHECK(w.blocks == 0);
    pd_tensor_free(&vel);
    /* Without a flag nothing stops. */
    pd_wan_dit_set_stop(m, NULL);
    w = (block_watch){.flag = &flag, .set_after = -1};
    PD_CHECK_OK(run(m, &lat, &t, &ctx, &vel));
    PD_CHECK(w.blocks == 6);
    pd_tensor_free(&vel), pd_tensor_free(&lat), pd_tensor_free(&ctx);
    pd_wan_dit_free(m);
}

int main(void) {
    pd_log_set_level(PD_LOG_WARN);
    if (!pd_test_scratch_dir(g_tmp, sizeof g_tmp, "test_dit")) return 1;
    g_cfg = &pd_model_preset_default()->dit;
    char p[600];
    int rc = 1;
    if (pd_backend_cpu_create(2, &g_be) != PD_OK) {
        fprintf(stderr, "backend: %s\n", pd_error_msg());
        goto out;
    }
    /* Only the transformer, laid out as in a model folder; the full folder is test_default_model_dir's. */
    path_in(p, sizeof p, "diff/transformer");
    if (pd_wan_dit_write_random(p, g_cfg, 7, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32) != PD_OK) {
        fprintf(stderr, "write: %s\n", pd_error_msg());
        goto out;
    }
    path_in(p, sizeof p, "orig/transformer");
    PD_CHECK_OK(pd_model_dir_mkdirs(p));
    path_in(p, sizeof p, "orig/transformer/diffusion_pytorch_model.safetensors");
    if (pd_wan_dit_write_random(p, g_cfg, 7, PD_WAN_LAYOUT_ORIGINAL, PD_DTYPE_F32) != PD_OK) {
        fprintf(stderr, "write: %s\n", pd_error_msg());
        goto out;
    }
    PD_RUN(test_layout_detection);
    PD_RUN(test_missing_tensor);
    PD_RUN(test_wrong_shape);
    PD_RUN(test_image_to_video_rejected);
    PD_RUN(test_bad_config);
    PD_RUN(test_batch2_equals_two_batch1);
    PD_RUN(test_fused_and_unfused_paths_agree);
    PD_RUN(test_context_padding);
    PD_RUN(test_layouts_same_model);
    PD_RUN(test_forward_input_errors);
    PD_RUN(test_sharded_checkpoint);
    PD_RUN(test_default_model_dir);
    PD_RUN(test_stop_between_blocks);
    rc = pd_test_summary();
out:
    pd_backend_free(g_be);
    pd_test_rmtree(g_tmp);
    return rc;
}
