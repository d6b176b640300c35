/* Model folders: writing a complete Wan2.1 pipeline folder with random weights (the diffusers
 * WanPipeline layout: model_index.json, scheduler/, transformer/, vae/, text_encoder/, tokenizer/),
 * the embedded tiny model kept in a per-user cache, and small file helpers the component writers
 * share (folder creation, atomic JSON files). */
#ifndef PD_MODELS_MODEL_DIR_H
#define PD_MODELS_MODEL_DIR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"
#include "models/presets.h"
#include "models/wan/layout.h"

/* Writes a complete model folder for preset p into dir (created with its parents if missing; files
 * already there are replaced). Random weights are deterministic in seed. layout picks the tensor
 * names of the transformer and VAE: diffusers names (transformer/config.json +
 * diffusion_pytorch_model.safetensors), or original names in one Comfy-style file per component
 * (transformer/wan2.1_t2v.safetensors, no config.json: the loader infers it); dtype (F32, BF16, F16) is the storage dtype of the weights. The scheduler config is
 * diffusers' UniPCMultistepScheduler with the preset's flow shift and flow sigmas.
 * Errors: PD_ERR_INVALID (bad preset values or dtype), PD_ERR_IO naming the path, PD_ERR_NOMEM. */
pd_status pd_model_dir_write(const char *dir, const pd_model_preset *p, uint64_t seed, pd_wan_layout layout,
                             pd_dtype dtype);

/* Writes the embedded default model (preset "tiny", seed 1, diffusers layout, f32) into the cache on
 * first use and returns its folder in out (n bytes). The cache is $PIPEDIT_CACHE, else
 * $XDG_CACHE_HOME/pipedit, else $HOME/.cache/pipedit; the model lives in its subfolder "tiny-v1".
 * The folder is written under a temporary name and renamed into place, so concurrent first uses (other
 * threads or processes) are safe and a reader never sees a half-written model. Errors: PD_ERR_IO (no
 * usable cache folder, disk full), PD_ERR_INVALID (out too small). */
pd_status pd_model_dir_default(char *out, size_t n);

/* Creates folder path and any missing parents (mode 0755). PD_ERR_IO naming the path on failure. */
pd_status pd_model_dir_mkdirs(const char *path);

/* Writes root as indented JSON (keys sorted) to path atomically: a temporary file in the same folder,
 * fsync, rename, fsync of the folder (pd_file_write_atomic); mode 0644. Does not take a reference to
 * root. PD_ERR_IO naming the path on failure, which leaves an existing file as it was. */
pd_status pd_model_dir_write_json(const char *path, const json_t *root);

#endif
