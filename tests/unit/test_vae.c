/* models/wan/vae: config parsing and its bounds, layout detection, shape checks on load, frame counts,
 * causality, callback errors and cancellation. (Numerics against the NumPy reference live in
 * tests/ref/test_vae_ref.sh.) */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "models/presets.h"
#include "models/random_init.h"
#include "models/wan/vae.h"
#include "tests/unit/test.h"

static char dir[256];
static pd_backend *be;

static const pd_wan_vae_config *tiny(void) { return &pd_model_preset_find("tiny")->vae; }

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    PD_ASSERT(f);
    fputs(text, f);
    fclose(f);
}

typedef struct collect {
    int64_t frames, fail_at;
    int64_t h, w;
    float first[3 * 64 * 64]; // frame 0, when small enough
} collect;

static pd_status on_frame(void *ud, int64_t index, const pd_tensor *f) {
    collect *c = ud;
    if (index != c->frames) return pd_error_set(PD_ERR_INVALID, "frame %lld out of order", (long long)index);
    if (f->ndim != 3 || f->shape[0] != 3) return pd_error_set(PD_ERR_INVALID, "bad frame shape");
    if (index == c->fail_at) return pd_error_set(PD_ERR_IO, "callback refused frame %lld", (long long)index);
    c->h = f->shape[1], c->w = f->shape[2];
    const float *p = f->data;
    for (int64_t i = 0; i < pd_tensor_numel(f); i++)
        if (!(p[i] >= -1.0f && p[i] <= 1.0f)) return pd_error_set(PD_ERR_INVALID, "value %g outside [-1, 1]", p[i]);
    if (index == 0 && pd_tensor_numel(f) <= 3 * 64 * 64) memcpy(c->first, p, sizeof(float) * (size_t)pd_tensor_numel(f));
    c->frames++;
    return PD_OK;
}

static void latent(pd_tensor *z, int64_t t, int64_t h, int64_t w, const char *name) {
    int64_t shape[4] = {16, t, h, w};
    PD_ASSERT(pd_random_tensor(z, PD_DTYPE_F32, 4, shape, 7, name, 0.0f, 1.0f) == PD_OK);
}

static void test_write_load(void) {
    char p[512];
    path_in(p, sizeof p, "vae_d");
    PD_CHECK_OK(pd_wan_vae_write_random(p, tiny(), 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32));
    pd_wan_vae *v = NULL;
    PD_CHECK_OK(pd_wan_vae_load(p, be, &v));
    if (!v) return;
    const pd_wan_vae_config *c = pd_wan_vae_get_config(v);
    PD_CHECK(c->base_dim == 8 && c->z_dim == 16 && c->dim_mult[3] == 4 && c->num_res_blocks == 2);
    PD_CHECK(!c->temporal_downsample[0] && c->temporal_downsample[1] && c->temporal_downsample[2]);
    PD_CHECK(fabsf(c->latents_mean[7] - 1.5508f) < 1e-6f && fabsf(c->latents_std[15] - 1.9160f) < 1e-6f);
    PD_CHECK(pd_wan_vae_get_layout(v) == PD_WAN_LAYOUT_DIFFUSERS);
    PD_CHECK(pd_wan_vae_frames_for(v, 1) == 1 && pd_wan_vae_frames_for(v, 21) == 81);
    PD_CHECK(pd_wan_vae_spatial_factor(v) == 8);
    pd_wan_vae_free(v);

    path_in(p, sizeof p, "vae_o.safetensors");
    PD_CHECK_OK(pd_wan_vae_write_random(p, tiny(), 1, PD_WAN_LAYOUT_ORIGINAL, PD_DTYPE_BF16));
    v = NULL;
    PD_CHECK_OK(pd_wan_vae_load(p, be, &v));
    if (!v) return;
    c = pd_wan_vae_get_config(v); // inferred from shapes
    PD_CHECK(c->base_dim == 8 && c->dim_mult[0] == 1 && c->dim_mult[1] == 2 && c->dim_mult[2] == 4 && c->dim_mult[3] == 4);
    PD_CHECK(c->num_res_blocks == 2 && !c->temporal_downsample[0] && c->temporal_downsample[1]);
    PD_CHECK(pd_wan_vae_get_layout(v) == PD_WAN_LAYOUT_ORIGINAL);
    pd_wan_vae_free(v);
}

static void test_frames_and_causality(void) {
    char p[512];
    path_in(p, sizeof p, "vae_d");
    pd_wan_vae *v = NULL;
    PD_CHECK_OK(pd_wan_vae_load(p, be, &v));
    if (!v) return;
    pd_tensor z3, z1;
    latent(&z3, 3, 2, 3, "z");
    static collect a, b, c;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b), memset(&c, 0, sizeof c);
    a.fail_at = b.fail_at = c.fail_at = -1;
    PD_CHECK_OK(pd_wan_vae_decode(v, &z3, on_frame, NULL, &a, NULL));
    PD_CHECK(a.frames == 9 && a.h == 16 && a.w == 24);
    /* frame 0 depends only on latent frame 0 (causal): a one-frame latent gives the same frame, exactly
     * when streamed (the same ops), and to float rounding from the whole-clip decode (whose k3 convs
     * multiply the two zero frames in front where streaming uses the last tap alone) */
    z1 = pd_tensor_slice(&z3, 1, 0, 1);
    PD_CHECK_OK(pd_wan_vae_decode(v, &z1, on_frame, NULL, &b, NULL));
    PD_CHECK_OK(pd_wan_vae_decode_whole(v, &z1, on_frame, &c));
    PD_CHECK(b.frames == 1 && c.frames == 1);
    PD_CHECK(!memcmp(a.first, b.first, sizeof(float) * 3 * 16 * 24));
    float most = 0;
    for (int i = 0; i < 3 * 16 * 24; i++) most = fmaxf(most, fabsf(a.first[i] - c.first[i]));
    PD_CHECK(most <= 1e-5f);
    pd_tensor_free(&z3);
    pd_wan_vae_free(v);
}

/* Every frame of a decode, in order. */
typedef struct frames_all {
    int64_t n, floats;
    float data[9 * 3 * 16 * 24];
} frames_all;

static pd_status on_frame_all(void *ud, int64_t index, const pd_tensor *f) {
    frames_all *c = ud;
    const int64_t k = pd_tensor_numel(f);
    if (index != c->n || c->floats + k > (int64_t)(sizeof c->data / sizeof c->data[0]))
        return pd_error_set(PD_ERR_INVALID, "frame %lld unexpected", (long long)index);
    memcpy(c->data + c->floats, f->data, sizeof(float) * (size_t)k);
    c->floats += k, c->n++;
    return PD_OK;
}

/* The model keeps its working memory from one decode to the next: decodes after a larger one, after
 * a smaller one and after one that failed part-way give exactly a fresh model's frames (no cache or
 * activation of an earlier decode leaks into a later one). */
static void test_decodes_share_nothing(void) {
    char p[512];
    path_in(p, sizeof p, "vae_d");
    pd_wan_vae *fresh = NULL, *used = NULL;
    PD_CHECK_OK(pd_wan_vae_load(p, be, &fresh));
    PD_CHECK_OK(pd_wan_vae_load(p, be, &used));
    if (!fresh || !used) return;
    pd_tensor z, big, small;
    latent(&z, 3, 2, 3, "z");
    latent(&big, 2, 4, 5, "big");
    latent(&small, 1, 1, 2, "small");
    static frames_all want, got, scratch;
    memset(&want, 0, sizeof want);
    PD_CHECK_OK(pd_wan_vae_decode(fresh, &z, on_frame_all, NULL, &want, NULL));
    PD_CHECK(want.n == 9);
    collect stop = {.fail_at = 3};
    PD_CHECK_ERR(pd_wan_vae_decode(used, &z, on_frame, NULL, &stop, NULL), PD_ERR_IO); /* stops after latent frame 1 */
    const pd_tensor *before[] = {&big, &small, &z};
    for (size_t i = 0; i < sizeof before / sizeof before[0]; i++) {
        memset(&scratch, 0, sizeof scratch), memset(&got, 0, sizeof got);
        /* big grows the working memory; its later frames overflow scratch and are refused */
        if (before[i] != &z) pd_wan_vae_decode(used, before[i], on_frame_all, NULL, &scratch, NULL);
        PD_CHECK_OK(pd_wan_vae_decode(used, &z, on_frame_all, NULL, &got, NULL));
        PD_CHECK(got.n == want.n && got.floats == want.floats);
        PD_CHECK(!memcmp(got.data, want.data, sizeof(float) * (size_t)want.floats));
    }
    pd_tensor_free(&z), pd_tensor_free(&big), pd_tensor_free(&small);
    pd_wan_vae_free(fresh);
    pd_wan_vae_free(used);
}

static void test_errors_in_decode(void) {
    char p[512];
    path_in(p, sizeof p, "vae_d");
    pd_wan_vae *v = NULL;
    PD_CHECK_OK(pd_wan_vae_load(p, be, &v));
    if (!v) return;
    pd_tensor z;
    latent(&z, 3, 2, 2, "z2");
    static collect a;
    memset(&a, 0, sizeof a);
    a.fail_at = 3; // inside the second latent frame's four
    PD_CHECK_ERR(pd_wan_vae_decode(v, &z, on_frame, NULL, &a, NULL), PD_ERR_IO);
    PD_CHECK(a.frames == 3);
    atomic_int cancel = 1;
    memset(&a, 0, sizeof a);
    a.fail_at = -1;
    PD_CHECK_ERR(pd_wan_vae_decode(v, &z, on_frame, NULL, &a, &cancel), PD_ERR_CANCELLED);
    PD_CHECK(a.frames == 0);
    pd_tensor bad;
    int64_t s1[4] = {8, 1, 2, 2}, s2[3] = {16, 2, 2};
    PD_CHECK_OK(pd_tensor_alloc(&bad, PD_DTYPE_F32, 4, s1));
    PD_CHECK_ERR(pd_wan_vae_decode(v, &bad, on_frame, NULL, &a, NULL), PD_ERR_INVALID);
    pd_tensor_free(&bad);
    PD_CHECK_OK(pd_tensor_alloc(&bad, PD_DTYPE_F32, 3, s2));
    PD_CHECK_ERR(pd_wan_vae_decode_whole(v, &bad, on_frame, &a), PD_ERR_INVALID);
    pd_tensor_free(&bad);
    pd_tensor_free(&z);
    pd_wan_vae_free(v);
}

static const char *good_cfg =
    "{\"base_dim\": 8, \"z_dim\": 16, \"dim_mult\": [1, 2, 4, 4], \"num_res_blocks\": 2, \"attn_scales\": [],"
    " \"temperal_downsample\": [false, true, true], \"dropout\": 0.0,"
    " \"latents_mean\": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0], \"latents_std\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}";

static pd_status cfg_with(const char *from, const char *to) {
    char p[512], text[2048];
    const char *at = strstr(good_cfg, from);
    PD_ASSERT(at);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good_cfg), good_cfg, to, at + strlen(from));
    path_in(p, sizeof p, "config_test.json");
    write_text(p, text);
    pd_wan_vae_config c;
    return pd_wan_vae_config_load(p, &c);
}

static void test_config_bounds(void) {
    PD_CHECK_OK(cfg_with("\"z_dim\": 16", "\"z_dim\": 16"));
    PD_CHECK_ERR(cfg_with("\"z_dim\": 16", "\"z_dim\": 8"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("\"base_dim\": 8", "\"base_dim\": 0"), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "base_dim") != NULL);
    PD_CHECK_ERR(cfg_with("\"base_dim\": 8", "\"base_dim\": 100000000"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("\"base_dim\": 8", "\"base_dim\": \"8\""), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("[1, 2, 4, 4]", "[1, 2, 4]"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("[1, 2, 4, 4]", "[1, 2, 4, 1000]"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("\"num_res_blocks\": 2", "\"num_res_blocks\": 99"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("[false, true, true]", "[false, true]"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("\"attn_scales\": []", "\"attn_scales\": [1.0]"), PD_ERR_UNSUPPORTED);
    PD_CHECK_ERR(cfg_with("\"latents_std\": [1,", "\"latents_std\": [-1,"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("\"latents_mean\": [0,0,", "\"latents_mean\": [0,"), PD_ERR_FORMAT);
    PD_CHECK_ERR(cfg_with("\"z_dim\": 16,", ""), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "z_dim") != NULL);
    PD_CHECK_ERR(cfg_with("{", "["), PD_ERR_FORMAT);
    pd_wan_vae_config c;
    PD_CHECK_ERR(pd_wan_vae_config_load("/nonexistent/config.json", &c), PD_ERR_IO);
}

static void test_load_errors(void) {
    char p[512], cfg[600];
    pd_wan_vae *v = NULL;
    /* config dims that disagree with the weights: a shape error naming the tensor */
    path_in(p, sizeof p, "vae_mismatch");
    PD_CHECK_OK(pd_wan_vae_write_random(p, tiny(), 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32));
    snprintf(cfg, sizeof cfg, "%s/config.json", p);
    char text[2048];
    snprintf(text, sizeof text, "%s", good_cfg);
    memcpy(strstr(text, "\"base_dim\": 8"), "\"base_dim\": 6", 13);
    write_text(cfg, text);
    PD_CHECK_ERR(pd_wan_vae_load(p, be, &v), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "decoder.") != NULL);
    PD_CHECK(v == NULL);
    /* not a VAE */
    pd_st_writer *w;
    pd_tensor t;
    int64_t shape[1] = {4};
    PD_CHECK_OK(pd_tensor_alloc(&t, PD_DTYPE_F32, 1, shape));
    PD_CHECK_OK(pd_st_writer_create(&w));
    PD_CHECK_OK(pd_st_writer_add(w, "something.else", &t));
    path_in(p, sizeof p, "other.safetensors");
    PD_CHECK_OK(pd_st_writer_save(w, p));
    pd_st_writer_free(w);
    pd_tensor_free(&t);
    PD_CHECK_ERR(pd_wan_vae_load(p, be, &v), PD_ERR_FORMAT);
    PD_CHECK_ERR(pd_wan_vae_load("/nonexistent/vae", be, &v), PD_ERR_IO);
    pd_wan_vae_config bad = *tiny();
    bad.base_dim = 0;
    path_in(p, sizeof p, "never");
    PD_CHECK(pd_wan_vae_write_random(p, &bad, 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32) != PD_OK);
}

int main(void) {
    const char *base = getenv("PIPEDIT_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    snprintf(dir, sizeof dir, "%s/test_vae.XXXXXX", base);
    PD_ASSERT(mkdtemp(dir));
    pd_log_set_level(PD_LOG_WARN);
    PD_ASSERT(pd_backend_cpu_create(2, &be) == PD_OK);
    PD_RUN(test_write_load);
    PD_RUN(test_frames_and_causality);
    PD_RUN(test_decodes_share_nothing);
    PD_RUN(test_errors_in_decode);
    PD_RUN(test_config_bounds);
    PD_RUN(test_load_errors);
    pd_backend_free(be);
    pd_test_rmtree(dir);
    return pd_test_summary();
}
