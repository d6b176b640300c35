/* The pipeline library on a tiny model folder: parameter bounds, the denoise loop against the same
 * loop written out here from separate batch-1 DiT calls (seeded noise, int(sigma * 1000) timesteps,
 * the cond/uncond order of the CFG batch, guidance, Euler and UniPC steps), zero-padded contexts,
 * progress and cancellation, and the decode's all-or-nothing files. */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/model_dir.h"
#include "models/pipeline.h"
#include "models/sampler/noise.h"
#include "models/sampler/sampler.h"
#include "models/wan/dit.h"
#include "tests/unit/test.h"

static char g_tmp[512], g_model[600];
static pd_backend *g_be;
static pd_pipeline *g_pl;
static pd_wan_dit *g_dit; /* a second copy of the transformer, driven directly */

static int rm_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)type, (void)ftw;
    return remove(p);
}

static pd_gen_params small_params(void) {
    pd_gen_params p;
    pd_pipeline_default_params(g_pl, &p);
    p.prompt = "a lighthouse in a storm";
    p.seed = 99;
    p.width = 32;
    p.height = 48;
    p.frames = 5;
    p.steps = 3;
    return p;
}

static void test_validate(void) {
    pd_gen_params p;
    pd_pipeline_default_params(NULL, &p);
    p.prompt = "x";
    p.seed = 1;
    PD_CHECK_OK(pd_pipeline_validate(NULL, &p));
    const pd_model_preset *tiny = pd_model_preset_default();
    PD_CHECK(p.width == tiny->default_width && p.frames == tiny->default_frames && p.sampler == PD_SAMPLER_UNIPC);
    pd_gen_params q;
    /* Each bound, just past its edge: refused by the one validation, which names the field the way
     * the HTTP API spells it (an HTTP 400's param), and by pd_pipeline_validate alike. */
#define PD_BAD(field_stmt, want)                                                                    \
    do {                                                                                           \
        q = p;                                                                                     \
        field_stmt;                                                                                \
        pd_gen_field f_ = PD_GEN_FIELD_NONE;                                                       \
        PD_CHECK_ERR(pd_gen_params_check(&q, &f_), PD_ERR_INVALID);                                \
        const char *name_ = pd_gen_field_name(want);                                               \
        PD_CHECK_MSG(f_ == (want) && !strncmp(pd_error_msg(), name_, strlen(name_)), "%s: field %d, message '%s'", \
                     #field_stmt, (int)f_, pd_error_msg());                                        \
        PD_CHECK_ERR(pd_pipeline_validate(NULL, &q), PD_ERR_INVALID);                              \
    } while (0)
    PD_BAD(q.width = 100, PD_GEN_FIELD_WIDTH);
    PD_BAD(q.width = 0, PD_GEN_FIELD_WIDTH);
    PD_BAD(q.width = 4112, PD_GEN_FIELD_WIDTH);
    PD_BAD(q.height = 4112, PD_GEN_FIELD_HEIGHT);
    PD_BAD(q.height = -16, PD_GEN_FIELD_HEIGHT);
    PD_BAD(q.height = 0, PD_GEN_FIELD_HEIGHT);
    PD_BAD(q.frames = 8, PD_GEN_FIELD_FRAMES);
    PD_BAD(q.frames = 0, PD_GEN_FIELD_FRAMES);
    PD_BAD(q.frames = 1025, PD_GEN_FIELD_FRAMES);
    PD_BAD(q.steps = 0, PD_GEN_FIELD_STEPS);
    PD_BAD(q.steps = 1001, PD_GEN_FIELD_STEPS);
    PD_BAD(q.guidance = -0.5f, PD_GEN_FIELD_GUIDANCE);
    PD_BAD(q.guidance = 50.5f, PD_GEN_FIELD_GUIDANCE);
    PD_BAD(q.guidance = 75.0f, PD_GEN_FIELD_GUIDANCE);
    PD_BAD(q.guidance = NAN, PD_GEN_FIELD_GUIDANCE);
    PD_BAD(q.shift = 0.0f, PD_GEN_FIELD_SHIFT);
    PD_BAD(q.shift = 100.5f, PD_GEN_FIELD_SHIFT);
    PD_BAD(q.shift = INFINITY, PD_GEN_FIELD_SHIFT);
    PD_BAD(q.fps = 0, PD_GEN_FIELD_FPS);
    PD_BAD(q.fps = 121, PD_GEN_FIELD_FPS);
    PD_BAD(q.sampler = (pd_sampler_kind)5, PD_GEN_FIELD_SAMPLER);
    PD_BAD(q.noise = (pd_noise_kind)2, PD_GEN_FIELD_NOISE);
    PD_CHECK(p.noise == PD_NOISE_PHILOX && p.init_latent == NULL);
    /* an initial latent must have the request's latent shape, f32, on the host */
    pd_tensor init = {0}, init16 = {0};
    int64_t ishape[4];
    pd_pipeline_latent_shape(&p, ishape);
    PD_CHECK_OK(pd_tensor_alloc(&init, PD_DTYPE_F32, 4, ishape));
    PD_CHECK_OK(pd_tensor_alloc(&init16, PD_DTYPE_F16, 4, ishape));
    q = p;
    q.init_latent = &init;
    PD_CHECK_OK(pd_pipeline_validate(NULL, &q));
    /* the shape check is the pipeline's (pd_pipeline_validate), on top of the request's bounds */
#define PD_BAD_INIT(field_stmt)                                                                    \
    do {                                                                                           \
        q = p;                                                                                     \
        field_stmt;                                                                                \
        PD_CHECK_OK(pd_gen_params_check(&q, NULL));                                                \
        PD_CHECK_ERR(pd_pipeline_validate(NULL, &q), PD_ERR_INVALID);                              \
        PD_CHECK_MSG(strstr(pd_error_msg(), "init_latent") != NULL, "%s: '%s'", #field_stmt, pd_error_msg()); \
    } while (0)
    PD_BAD_INIT((q.init_latent = &init, q.frames = p.frames + 4));
    PD_BAD_INIT((q.init_latent = &init, q.width = p.width + 16));
    PD_BAD_INIT(q.init_latent = &init16);
#undef PD_BAD_INIT
    pd_tensor_free(&init);
    pd_tensor_free(&init16);
    char desc[256];
    q = p;
    q.seed = 42, q.noise = PD_NOISE_TORCH_CPU, q.steps = 50, q.shift = 3.0f, q.guidance = 5.0f;
    pd_pipeline_describe(&q, desc, sizeof desc);
    PD_CHECK_MSG(!strcmp(desc, "pipedit seed=42 noise=torch-cpu sampler=unipc steps=50 shift=3 guidance=5"), "%s", desc);
    q = p;
    PD_BAD(q.prompt = NULL, PD_GEN_FIELD_PROMPT);
    PD_BAD(q.prompt = " \t\n", PD_GEN_FIELD_PROMPT);
    static char big[PD_GEN_MAX_PROMPT_BYTES + 2];
    memset(big, 'a', sizeof big - 1);
    PD_BAD(q.prompt = big, PD_GEN_FIELD_PROMPT);
    PD_BAD(q.negative_prompt = big, PD_GEN_FIELD_NEGATIVE_PROMPT);
    PD_CHECK(pd_gen_field_name(PD_GEN_FIELD_NONE) == NULL && !strcmp(pd_gen_field_name(PD_GEN_FIELD_STEPS), "num_inference_steps"));
    /* the edges of each range are accepted */
    q = p;
    q.width = 4096, q.height = 16, q.frames = 1, q.steps = 1000, q.guidance = 0, q.shift = 100, q.fps = 120;
    pd_gen_field f = PD_GEN_FIELD_SAMPLER;
    PD_CHECK_OK(pd_gen_params_check(&q, &f));
    PD_CHECK(f == PD_GEN_FIELD_NONE);
    PD_CHECK_OK(pd_pipeline_validate(NULL, &q));
    q.width = 16, q.height = 4096, q.frames = 1021, q.steps = 1, q.guidance = 50, q.shift = 1e-6f, q.fps = 1;
    big[PD_GEN_MAX_PROMPT_BYTES] = 0; /* exactly the limit */
    q.prompt = big, q.negative_prompt = big;
    PD_CHECK_OK(pd_gen_params_check(&q, NULL));
    q = p;
    q.width = 4096, q.height = 16, q.frames = 1, q.steps = 1000, q.guidance = 0, q.shift = 100, q.fps = 120;
    q.frames = 1021;
    PD_CHECK_OK(pd_pipeline_validate(g_pl, &q));
    int64_t shape[4];
    q.width = 832, q.height = 480, q.frames = 81;
    pd_pipeline_latent_shape(&q, shape);
    PD_CHECK(shape[0] == 16 && shape[1] == 21 && shape[2] == 60 && shape[3] == 104);
}

/* The denoise loop written out: separate batch-1 calls for cond and uncond, guidance, sampler. */
static void reference_denoise(const pd_gen_params *p, const pd_tensor *cc, const pd_tensor *cu, float *x) {
    int64_t shape[4];
    pd_pipeline_latent_shape(p, shape);
    const int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
    if (p->noise == PD_NOISE_TORCH_CPU) pd_noise_fill_torch(x, 0, n, n, p->seed);
    else pd_noise_fill(x, 0, n, p->seed);
    const int64_t ls[5] = {1, shape[0], shape[1], shape[2], shape[3]};
    pd_tensor lat, vc, vu, ctx_c, ctx_u;
    PD_CHECK_OK(pd_tensor_alloc(&lat, PD_DTYPE_F32, 5, ls));
    PD_CHECK_OK(pd_tensor_alloc(&vc, PD_DTYPE_F32, 5, ls));
    PD_CHECK_OK(pd_tensor_alloc(&vu, PD_DTYPE_F32, 5, ls));
    const int64_t cs[3] = {1, cc->shape[0], cc->shape[1]}, us[3] = {1, cu ? cu->shape[0] : 0, cc->shape[1]};
    ctx_c = pd_tensor_view(cc->data, PD_DTYPE_F32, 3, cs);
    if (cu) ctx_u = pd_tensor_view(cu->data, PD_DTYPE_F32, 3, us);
    pd_sampler *s = NULL;
    PD_CHECK_OK(pd_sampler_create(p->sampler, p->steps, p->shift, n, &s));
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; s && v && i < p->steps; i++) {
        float t = (float)(int)(pd_sampler_sigma(s, i) * 1000.0);
        memcpy(lat.data, x, sizeof(float) * (size_t)n);
        PD_CHECK_OK(pd_wan_dit_forward(g_dit, &vc, &lat, &t, &ctx_c));
        const float *fc = vc.data, *fu = vu.data;
        if (cu) {
            PD_CHECK_OK(pd_wan_dit_forward(g_dit, &vu, &lat, &t, &ctx_u));
            for (int64_t j = 0; j < n; j++) v[j] = fu[j] + p->guidance * (fc[j] - fu[j]);
        } else {
            memcpy(v, fc, sizeof(float) * (size_t)n);
        }
        pd_sampler_step(s, x, v, i);
    }
    free(v);
    pd_sampler_free(s);
    pd_tensor_free(&lat);
    pd_tensor_free(&vc);
    pd_tensor_free(&vu);
}

typedef struct progress_log {
    int calls, last_step, last_total, in_order;
} progress_log;

static void on_progress(void *ud, pd_stage stage, int step, int total) {
    progress_log *l = ud;
    if (stage != PD_STAGE_DENOISE) return;
    l->in_order &= step == l->last_step + 1;
    l->calls++;
    l->last_step = step;
    l->last_total = total;
}

static float max_diff(const pd_tensor *a, const float *b) {
    float d = 0;
    const float *x = a->data;
    for (int64_t i = 0; i < pd_tensor_numel(a); i++) d = fmaxf(d, fabsf(x[i] - b[i]));
    return d;
}

static void test_denoise_matches_reference(void) {
    pd_tensor cc = {0}, cu = {0};
    PD_CHECK_OK(pd_pipeline_encode_text(g_pl, "a lighthouse in a storm", &cc));
    PD_CHECK_OK(pd_pipeline_encode_text(g_pl, "blurry, low quality, watermark text", &cu));
    PD_CHECK(cc.ndim == 2 && cc.shape[1] == pd_wan_dit_get_config(g_dit)->text_dim && cc.shape[0] != cu.shape[0]);
    const struct {
        pd_sampler_kind k;
        float g;
        int steps;
        pd_noise_kind noise;
    } cases[] = {{PD_SAMPLER_EULER, 5.0f, 3, PD_NOISE_PHILOX}, {PD_SAMPLER_UNIPC, 5.0f, 4, PD_NOISE_PHILOX},
                 {PD_SAMPLER_UNIPC, 1.0f, 2, PD_NOISE_TORCH_CPU}, {PD_SAMPLER_EULER, 0.5f, 1, PD_NOISE_PHILOX},
                 {PD_SAMPLER_DPMPP, 5.0f, 4, PD_NOISE_TORCH_CPU}, {PD_SAMPLER_DPMPP, 1.0f, 1, PD_NOISE_PHILOX}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pd_gen_params p = small_params();
        p.sampler = cases[c].k;
        p.guidance = cases[c].g;
        p.steps = cases[c].steps;
        p.noise = cases[c].noise;
        pd_tensor lat = {0};
        progress_log log = {.in_order = 1};
        PD_CHECK_OK(pd_pipeline_denoise(g_pl, &p, &cc, p.guidance > 1 ? &cu : NULL, &lat, on_progress, &log, NULL));
        PD_CHECK(log.calls == p.steps && log.last_total == p.steps && log.in_order);
        int64_t shape[4];
        pd_pipeline_latent_shape(&p, shape);
        PD_CHECK(lat.ndim == 4 && lat.shape[0] == 16 && lat.shape[1] == shape[1] && lat.shape[2] == 6 && lat.shape[3] == 4);
        float *ref = malloc(sizeof(float) * (size_t)pd_tensor_numel(&lat));
        if (ref && lat.data) {
            reference_denoise(&p, &cc, p.guidance > 1 ? &cu : NULL, ref);
            float d = max_diff(&lat, ref);
            PD_CHECK_MSG(d < 1e-4f, "case %zu (%s, g %g, %d steps): max diff %g", c, pd_sampler_kind_name(p.sampler),
                         (double)p.guidance, p.steps, (double)d);
            /* not trivially equal: guidance / the uncond branch matter */
            if (p.guidance > 1) {
                reference_denoise(&p, &cc, NULL, ref);
                PD_CHECK_MSG(max_diff(&lat, ref) > 1e-3f, "case %zu: CFG made no difference", c);
            }
        }
        free(ref);
        pd_tensor_free(&lat);
    }
    pd_tensor_free(&cc);
    pd_tensor_free(&cu);
}

/* Extra zero rows in a context change nothing (the DiT pads to text_len with zeros). */
/* The text stage cleans prompts as Wan2.1's does: an HTML-escaped, mojibake'd, curly-quoted,
 * oddly spaced prompt gives the context of its clean form, and a different prompt does not. */
static void test_prompt_cleaned(void) {
    pd_tensor a = {0}, b = {0}, c = {0};
    PD_CHECK_OK(pd_pipeline_encode_text(g_pl, "  Tom &amp; Jerry\xE2\x80\x99s   caf\xC3\x83\xC2\xA9\n", &a));
    PD_CHECK_OK(pd_pipeline_encode_text(g_pl, "Tom & Jerry's caf\xC3\xA9", &b));
    PD_CHECK_OK(pd_pipeline_encode_text(g_pl, "Tom and Jerry's cafe", &c));
    PD_CHECK(a.data && b.data && c.data && a.shape[0] == b.shape[0] &&
             !memcmp(a.data, b.data, sizeof(float) * (size_t)pd_tensor_numel(&a)));
    PD_CHECK(c.data && b.data && (c.shape[0] != b.shape[0] || memcmp(c.data, b.data, sizeof(float) * (size_t)pd_tensor_numel(&b))));
    pd_tensor_free(&a);
    pd_tensor_free(&b);
    pd_tensor_free(&c);
}

static void test_padded_context(void) {
    pd_tensor cc = {0}, pad = {0}, a = {0}, b = {0};
    PD_CHECK_OK(pd_pipeline_encode_text(g_pl, "waves", &cc));
    const int64_t ps[2] = {cc.shape[0] + 5, cc.shape[1]};
    PD_CHECK_OK(pd_tensor_alloc(&pad, PD_DTYPE_F32, 2, ps));
    if (cc.data && pad.data) memcpy(pad.data, cc.data, pd_tensor_nbytes(&cc));
    pd_gen_params p = small_params();
    p.guidance = 1.0f;
    PD_CHECK_OK(pd_pipeline_denoise(g_pl, &p, &cc, NULL, &a, NULL, NULL, NULL));
    PD_CHECK_OK(pd_pipeline_denoise(g_pl, &p, &pad, NULL, &b, NULL, NULL, NULL));
    if (a.data && b.data) PD_CHECK_MSG(max_diff(&a, b.data) < 1e-5f, "padding changed the latent by %g", (double)max_diff(&a, b.data));
    pd_tensor_free(&cc);
    pd_tensor_free(&pad);
    pd_tensor_free(&a);
    pd_tensor_free(&b);
}

static void cancel_at_2(void *ud, pd_stage stage, int step, int total) {
    if (step == 2) atomic_store((atomic_int *)ud, 1);
}

static void test_cancel_and_errors(void) {
    pd_tensor cc = {0}, lat = {0};
    PD_CHECK_OK(pd_pipeline_encode_text(g_pl, "rain", &cc));
    pd_gen_params p = small_params();
    p.steps = 6;
    atomic_int cancel = 1;
    PD_CHECK_ERR(pd_pipeline_denoise(g_pl, &p, &cc, &cc, &lat, NULL, NULL, &cancel), PD_ERR_CANCELLED);
    PD_CHECK(lat.data == NULL);
    atomic_store(&cancel, 0);
    PD_CHECK_ERR(pd_pipeline_denoise(g_pl, &p, &cc, &cc, &lat, cancel_at_2, &cancel, &cancel), PD_ERR_CANCELLED);
    PD_CHECK(lat.data == NULL && strstr(pd_error_msg(), "step 3") != NULL);
    /* guidance > 1 needs the unconditional context; contexts must be (L, text_dim) */
    PD_CHECK_ERR(pd_pipeline_denoise(g_pl, &p, &cc, NULL, &lat, NULL, NULL, NULL), PD_ERR_INVALID);
    pd_tensor wrong = {0};
    const int64_t ws[2] = {3, cc.shape[1] + 1};
    PD_CHECK_OK(pd_tensor_alloc(&wrong, PD_DTYPE_F32, 2, ws));
    PD_CHECK_ERR(pd_pipeline_denoise(g_pl, &p, &wrong, &cc, &lat, NULL, NULL, NULL), PD_ERR_INVALID);
    p.frames = 6;
    PD_CHECK_ERR(pd_pipeline_denoise(g_pl, &p, &cc, &cc, &lat, NULL, NULL, NULL), PD_ERR_INVALID);
    pd_tensor_free(&wrong);
    pd_tensor_free(&cc);
}

/* decode: both files or neither; a cancelled decode leaves nothing. */
static void test_decode_files(void) {
    pd_gen_params p = small_params();
    int64_t shape[4];
    pd_pipeline_latent_shape(&p, shape);
    pd_tensor lat = {0};
    PD_CHECK_OK(pd_tensor_alloc(&lat, PD_DTYPE_F32, 4, shape));
    if (lat.data) pd_noise_fill(lat.data, 0, pd_tensor_numel(&lat), 5);
    pd_gen_params dp = p;
    char mp4[700], png[700];
    snprintf(mp4, sizeof mp4, "%s/d.mp4", g_tmp);
    snprintf(png, sizeof png, "%s/d.png", g_tmp);
    atomic_int cancel = 1;
    PD_CHECK_ERR(pd_pipeline_decode(g_pl, &lat, &dp, mp4, png, NULL, NULL, &cancel), PD_ERR_CANCELLED);
    PD_CHECK(access(mp4, F_OK) && access(png, F_OK));
    /* a thumbnail that cannot be written: no video either */
    char badpng[700];
    snprintf(badpng, sizeof badpng, "%s/missing/d.png", g_tmp);
    PD_CHECK(pd_pipeline_decode(g_pl, &lat, &dp, mp4, badpng, NULL, NULL, NULL) != PD_OK);
    PD_CHECK(access(mp4, F_OK));
    PD_CHECK_OK(pd_pipeline_decode(g_pl, &lat, &dp, mp4, png, NULL, NULL, NULL));
    PD_CHECK(!access(mp4, F_OK) && !access(png, F_OK));
    dp.fps = 0;
    PD_CHECK_ERR(pd_pipeline_decode(g_pl, &lat, &dp, mp4, NULL, NULL, NULL, NULL), PD_ERR_INVALID);
    pd_tensor_free(&lat);
}

/* A pipeline loaded by parts refuses the stages it lacks. */
static void test_parts(void) {
    pd_pipeline *vae_only = NULL;
    PD_CHECK_OK(pd_pipeline_load(g_model, g_be, PD_PART_VAE, &vae_only));
    if (!vae_only) return;
    pd_tensor t = {0};
    PD_CHECK_ERR(pd_pipeline_encode_text(vae_only, "x", &t), PD_ERR_INVALID);
    pd_gen_params p = small_params();
    PD_CHECK_ERR(pd_pipeline_denoise(vae_only, &p, &t, NULL, &t, NULL, NULL, NULL), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_pipeline_generate(vae_only, &p, "/nonexistent/x.mp4", NULL, NULL, NULL, NULL, NULL, NULL), PD_ERR_INVALID);
    pd_pipeline_free(vae_only);
    pd_pipeline *none = NULL;
    char missing[700];
    snprintf(missing, sizeof missing, "%s/no-model", g_tmp);
    PD_CHECK_ERR(pd_pipeline_load(missing, g_be, PD_PART_ALL, &none), PD_ERR_NOT_FOUND);
    PD_CHECK(none == NULL && strstr(pd_error_msg(), "no-model") != NULL);
}

int main(void) {
    pd_log_set_level(PD_LOG_WARN);
    const char *base = getenv("PIPEDIT_TMP");
    if (!base || !*base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    snprintf(g_tmp, sizeof g_tmp, "%s/pd_test_pipeline.XXXXXX", base);
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_model, sizeof g_model, "%s/model", g_tmp);
    int rc = 1;
    if (pd_backend_cpu_create(2, &g_be) || pd_model_dir_write(g_model, pd_model_preset_default(), 3, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32) ||
        pd_pipeline_load(g_model, g_be, PD_PART_ALL, &g_pl) || pd_wan_dit_load(g_model, g_be, &g_dit)) {
        fprintf(stderr, "setup: %s\n", pd_error_msg());
        goto out;
    }
    PD_RUN(test_validate);
    PD_RUN(test_denoise_matches_reference);
    PD_RUN(test_prompt_cleaned);
    PD_RUN(test_padded_context);
    PD_RUN(test_cancel_and_errors);
    PD_RUN(test_decode_files);
    PD_RUN(test_parts);
    rc = pd_test_summary();
out:
    pd_wan_dit_free(g_dit);
    pd_pipeline_free(g_pl);
    pd_backend_free(g_be);
    nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
