#include "models/model_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file_io.h"
#include "models/text/tokenizer.h"
#include "models/text/umt5.h"
#include "models/wan/dit.h"
#include "models/wan/vae.h"

#define PD_DIFFUSERS_VERSION "0.33.0.dev0"

pd_status pd_model_dir_mkdirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return pd_error_set(PD_ERR_IO, "bad folder path \"%s\"", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return pd_error_set(PD_ERR_IO, "cannot create folder %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return pd_error_set(PD_ERR_IO, "%s is not a folder", path);
    return PD_OK;
}

pd_status pd_model_dir_write_json(const char *path, const json_t *root) {
    /* 0644: configs are meant to be shared like the weights. */
    return pd_file_write_json(path, root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(10), 0644);
}

static pd_status pd_model_dir_write_index(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    json_t *j = json_pack("{s:s, s:s, s:[s,s], s:[s,s], s:[s,s], s:[s,s], s:[s,s]}", "_class_name", "WanPipeline",
                          "_diffusers_version", PD_DIFFUSERS_VERSION, "scheduler", "diffusers",
                          "UniPCMultistepScheduler", "text_encoder", "transformers", "UMT5EncoderModel", "tokenizer",
                          "transformers", "T5TokenizerFast", "transformer", "diffusers", "WanTransformer3DModel",
                          "vae", "diffusers", "AutoencoderKLWan");
    if (!j) return pd_error_set(PD_ERR_NOMEM, "out of memory writing %s", path);
    pd_status st = pd_model_dir_write_json(path, j);
    json_decref(j);
    return st;
}

static pd_status pd_model_dir_write_scheduler(const char *dir, const pd_model_preset *p) {
    char sub[4200], path[4300];
    snprintf(sub, sizeof sub, "%s/scheduler", dir);
    PD_TRY(pd_model_dir_mkdirs(sub));
    snprintf(path, sizeof path, "%s/scheduler_config.json", sub);
    json_t *j = json_pack(
        "{s:s, s:s, s:f, s:s, s:f, s:[], s:f, s:s, s:f, s:b, s:i, s:b, s:s, s:b, s:f, s:i, s:n, s:s, s:i, s:b, s:s,"
        " s:n, s:b, s:b, s:b, s:b}",
        "_class_name", "UniPCMultistepScheduler", "_diffusers_version", PD_DIFFUSERS_VERSION, "beta_end", 0.02,
        "beta_schedule", "linear", "beta_start", 0.0001, "disable_corrector", "dynamic_thresholding_ratio", 0.995,
        "final_sigmas_type", "zero", "flow_shift", (double)p->default_shift, "lower_order_final", 1,
        "num_train_timesteps", 1000, "predict_x0", 1, "prediction_type", "flow_prediction",
        "rescale_betas_zero_snr", 0, "sample_max_value", 1.0, "solver_order", 2, "solver_p", "solver_type", "bh2",
        "steps_offset", 0, "thresholding", 0, "timestep_spacing", "linspace", "trained_betas", "use_beta_sigmas", 0,
        "use_exponential_sigmas", 0, "use_flow_sigmas", 1, "use_karras_sigmas", 0);
    if (!j) return pd_error_set(PD_ERR_NOMEM, "out of memory writing %s", path);
    pd_status st = pd_model_dir_write_json(path, j);
    json_decref(j);
    return st;
}

pd_status pd_model_dir_write(const char *dir, const pd_model_preset *p, uint64_t seed, pd_wan_layout layout,
                             pd_dtype dtype) {
    if (dtype != PD_DTYPE_F32 && dtype != PD_DTYPE_BF16 && dtype != PD_DTYPE_F16)
        return pd_error_set(PD_ERR_INVALID, "model weights must be F32, BF16 or F16, not %s", pd_dtype_name(dtype));
    if (strlen(dir) > 3900) return pd_error_set(PD_ERR_INVALID, "model folder path too long: %s", dir);
    PD_TRY(pd_model_dir_mkdirs(dir));
    PD_TRY(pd_model_dir_write_index(dir));
    PD_TRY(pd_model_dir_write_scheduler(dir, p));

    char sub[4200], file[4300];
    snprintf(sub, sizeof sub, "%s/transformer", dir);
    if (layout == PD_WAN_LAYOUT_DIFFUSERS) {
        PD_TRY(pd_wan_dit_write_random(sub, &p->dit, seed, layout, dtype));
    } else {
        PD_TRY(pd_model_dir_mkdirs(sub));
        snprintf(file, sizeof file, "%s/wan2.1_t2v.safetensors", sub);
        PD_TRY(pd_wan_dit_write_random(file, &p->dit, seed, layout, dtype));
    }

    /* ---- other components: each writer adds its call here ---- */
    /* VAE (models/wan/vae.h: pd_wan_vae_write_random) */
    snprintf(sub, sizeof sub, "%s/vae", dir);
    snprintf(file, sizeof file, "%s/wan_2.1_vae.safetensors", sub);
    if (layout == PD_WAN_LAYOUT_ORIGINAL) PD_TRY(pd_model_dir_mkdirs(sub));
    PD_TRY(pd_wan_vae_write_random(layout == PD_WAN_LAYOUT_DIFFUSERS ? sub : file, &p->vae, seed, layout, dtype));
    /* text encoder and tokenizer (models/text/) */
    PD_TRY(pd_umt5_write_random(dir, &p->text, seed, dtype));
    PD_TRY(pd_tokenizer_write_tiny(dir, p->tokenizer_vocab));
    /* ---- end of other components ---- */
    return PD_OK;
}

/* ---- the embedded default ---- */

static int pd_model_dir_rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static pd_status pd_model_dir_cache_root(char *out, size_t n) {
    const char *c = getenv("PIPEDIT_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    int w;
    if (c && *c) w = snprintf(out, n, "%s", c);
    else if (x && *x) w = snprintf(out, n, "%s/pipedit", x);
    else if (h && *h) w = snprintf(out, n, "%s/.cache/pipedit", h);
    else return pd_error_set(PD_ERR_IO, "no cache folder: set PIPEDIT_CACHE, XDG_CACHE_HOME or HOME");
    if (w < 0 || (size_t)w >= n) return pd_error_set(PD_ERR_IO, "cache folder path too long");
    return PD_OK;
}

pd_status pd_model_dir_default(char *out, size_t n) {
    char root[4096], final[4200], tmp[4300];
    PD_TRY(pd_model_dir_cache_root(root, sizeof root));
    snprintf(final, sizeof final, "%s/tiny-v1", root);
    if ((size_t)snprintf(out, n, "%s", final) >= n)
        return pd_error_set(PD_ERR_INVALID, "buffer of %zu bytes too small for the model path", n);
    struct stat sb;
    if (stat(final, &sb) == 0 && S_ISDIR(sb.st_mode)) return PD_OK; /* only ever appears complete */
    PD_TRY(pd_model_dir_mkdirs(root));
    snprintf(tmp, sizeof tmp, "%s/.tiny-v1.tmp.XXXXXX", root);
    if (!mkdtemp(tmp)) return pd_error_set(PD_ERR_IO, "cannot create a folder in %s: %s", root, strerror(errno));
    chmod(tmp, 0755);
    pd_status st = pd_model_dir_write(tmp, pd_model_preset_default(), 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32);
    if (st == PD_OK && rename(tmp, final) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) {
            PD_INFO("model", "default model written concurrently; using %s", final);
        } else {
            st = pd_error_set(PD_ERR_IO, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
        }
    } else if (st == PD_OK) {
        PD_INFO("model", "wrote the default tiny model to %s", final);
        return PD_OK;
    }
    nftw(tmp, pd_model_dir_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return st;
}
