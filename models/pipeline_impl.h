/* Private to models/pipeline*.c: the pipeline's state. pipeline.c loads, validates, encodes text and
 * denoises (no media dependency, so it builds where FFmpeg is missing); pipeline_media.c decodes to
 * MP4 and chains every stage (pd_pipeline_generate). */
#ifndef PD_MODELS_PIPELINE_IMPL_H
#define PD_MODELS_PIPELINE_IMPL_H

#include "base/clock.h"
#include "models/pipeline.h"
#include "models/text/tokenizer.h"
#include "models/text/umt5.h"
#include "models/wan/dit.h"
#include "models/wan/vae.h"

struct pd_pipeline {
    pd_backend *be;
    unsigned parts;
    pd_tokenizer *tok;
    pd_umt5 *te;
    pd_wan_dit *dit;
    pd_wan_vae *vae;
    double decode_s, encode_s; /* split of the last pd_pipeline_decode */
    pd_dit_forward_fn dit_fn;  /* NULL: pd_wan_dit_forward on dit */
    void *dit_ud;
};

#endif
