#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model_dir.h"
#include "models/random_init.h"
#include "models/wan/dit_impl.h"

typedef struct pd_dit_writer {
    pd_st_writer *w;
    uint64_t seed;
    pd_dtype dtype;
} pd_dit_writer;

static pd_status pd_dit_write_one(void *ud, const pd_dit_tensor_spec *s) {
    pd_dit_writer *dw = ud;
    return pd_random_tensor_write(dw->w, s->name, s->key, dw->dtype, s->ndim, s->shape, dw->seed, s->mean, s->std);
}

/* diffusers WanTransformer3DModel config.json; text_len and the RoPE theta are fixed by the format. */
static pd_status pd_dit_write_config(const char *path, const pd_wan_dit_config *c) {
    char eps[32];
    snprintf(eps, sizeof eps, "%.7g", (double)c->eps); /* 1e-06, not 9.99999997e-07 */
    json_t *j = json_pack("{s:s, s:s, s:n, s:i, s:b, s:f, s:i, s:i, s:n, s:i, s:i, s:i, s:i, s:[i,i,i], s:s, s:i, s:i}",
                          "_class_name", "WanTransformer3DModel", "_diffusers_version", "0.33.0.dev0",
                          "added_kv_proj_dim", "attention_head_dim", c->head_dim, "cross_attn_norm", 1, "eps",
                          strtod(eps, NULL), "ffn_dim", c->ffn_dim, "freq_dim", c->freq_dim, "image_dim",
                          "in_channels", c->in_channels, "num_attention_heads", c->heads, "num_layers", c->layers,
                          "out_channels", c->out_channels, "patch_size", c->patch[0], c->patch[1], c->patch[2],
                          "qk_norm", "rms_norm_across_heads", "rope_max_seq_len", 1024, "text_dim", c->text_dim);
    if (!j) return pd_error_set(PD_ERR_NOMEM, "out of memory writing %s", path);
    pd_status st = pd_model_dir_write_json(path, j);
    json_decref(j);
    return st;
}

pd_status pd_wan_dit_write_random(const char *out, const pd_wan_dit_config *cfg, uint64_t seed, pd_wan_layout layout,
                                  pd_dtype dtype) {
    PD_TRY(pd_wan_dit_config_check(cfg, "DiT config"));
    if (dtype != PD_DTYPE_F32 && dtype != PD_DTYPE_BF16 && dtype != PD_DTYPE_F16)
        return pd_error_set(PD_ERR_INVALID, "DiT weights must be F32, BF16 or F16, not %s", pd_dtype_name(dtype));
    if (layout == PD_WAN_LAYOUT_DIFFUSERS && (cfg->text_len != 512 || cfg->rope_theta != 10000.0))
        return pd_error_set(PD_ERR_INVALID, "a diffusers config.json cannot hold text_len %d / rope theta %g "
                            "(Wan2.1 fixes them at 512 / 10000)", cfg->text_len, cfg->rope_theta);
    if (strlen(out) > 4000) return pd_error_set(PD_ERR_INVALID, "output path too long: %s", out);

    pd_dit_writer dw = {.seed = seed, .dtype = dtype};
    PD_TRY(pd_st_writer_create(&dw.w));
    pd_status st = pd_dit_each_tensor(cfg, layout, "", NULL, pd_dit_write_one, &dw);
    char file[4200], heads[16];
    if (st == PD_OK) st = pd_st_writer_metadata(dw.w, "format", "pt");
    if (layout == PD_WAN_LAYOUT_DIFFUSERS) {
        if (st == PD_OK) st = pd_model_dir_mkdirs(out);
        snprintf(file, sizeof file, "%s/config.json", out);
        if (st == PD_OK) st = pd_dit_write_config(file, cfg);
        snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", out);
    } else {
        snprintf(heads, sizeof heads, "%d", cfg->heads);
        if (st == PD_OK) st = pd_st_writer_metadata(dw.w, "num_attention_heads", heads);
        snprintf(file, sizeof file, "%s", out);
    }
    if (st == PD_OK) st = pd_st_writer_save(dw.w, file);
    pd_st_writer_free(dw.w);
    return st;
}
