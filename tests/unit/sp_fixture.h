/* Shared by the SP group tests (tests/unit/test_sp_group.c over shared memory, tests/gpu/test_gpu_sp.c
 * over NCCL): the tiny model's DiT written to a scratch folder, deterministic inputs, and the squared
 * relative error of a velocity. */
#ifndef PD_TESTS_SP_FIXTURE_H
#define PD_TESTS_SP_FIXTURE_H

#include <stdio.h>

#include "models/presets.h"
#include "models/wan/dit.h"
#include "tests/unit/test.h"

static char g_tmp[512], g_model[600]; /* the scratch folder and the DiT folder inside it */

/* Warning-only logging, a scratch folder "<name>.XXXXXX" (g_tmp) and the tiny preset's random DiT
 * (seed 3, diffusers layout, f32) in g_tmp/transformer (g_model). Returns false after printing why
 * (the folder is removed again); pd_test_rmtree(g_tmp) at the end. */
static inline bool sp_fixture_setup(const char *name) {
    pd_log_set_level(PD_LOG_WARN);
    if (!pd_test_scratch_dir(g_tmp, sizeof g_tmp, name)) return false;
    snprintf(g_model, sizeof g_model, "%s/transformer", g_tmp);
    if (pd_wan_dit_write_random(g_model, &pd_model_preset_default()->dit, 3, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32)) {
        fprintf(stderr, "write: %s\n", pd_error_msg());
        pd_test_rmtree(g_tmp);
        return false;
    }
    return true;
}

/* Deterministic inputs: allocates latent (B, in_channels, 2, 4, 6) and context (B, 5, text_dim) of
 * config c and fills them. On failure returns the error; whatever was allocated is the caller's to
 * free (pd_tensor_free of a zeroed tensor is a no-op). */
static inline pd_status make_inputs(const pd_wan_dit_config *c, int64_t B, pd_tensor *lat, pd_tensor *ctx) {
    const int64_t ls[5] = {B, c->in_channels, 2, 4, 6}, cs[3] = {B, 5, c->text_dim};
    PD_TRY(pd_tensor_alloc(lat, PD_DTYPE_F32, 5, ls));
    PD_TRY(pd_tensor_alloc(ctx, PD_DTYPE_F32, 3, cs));
    float *l = lat->data, *x = ctx->data;
    for (int64_t i = 0; i < pd_tensor_numel(lat); i++) l[i] = (float)((i * 37 % 101) - 50) / 50.0f;
    for (int64_t i = 0; i < pd_tensor_numel(ctx); i++) x[i] = (float)((i * 11 % 23) - 11) / 11.0f;
    return PD_OK;
}

/* sum (x - y)^2 / sum y^2 over n values (the plain sum when y is all zeros). */
static inline double rel_err_sq(const float *x, const float *y, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num += (x[i] - y[i]) * (double)(x[i] - y[i]), den += (double)y[i] * y[i];
    return den > 0 ? num / den : num;
}

#endif
