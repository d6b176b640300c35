/* The media half of the pipeline: streaming VAE decode into the MP4 writer (and the thumbnail), and
 * every stage chained in one process. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "media/image_writer.h"
#include "engine/safetensors.h"
#include "media/video_writer.h"
#include "models/pipeline_impl.h"

/* x264's bitstream (and the settings string it embeds) depends on its thread count: one fixed count
 * keeps a seed's MP4 identical whatever the machine or --threads. */
#define PD_PIPELINE_ENCODER_THREADS 1

/* ---- decode ---- */

typedef struct pd_decode_ctx {
    pd_video_writer *vw;
    pd_tensor first; /* frame 0, kept for the thumbnail */
    int want_first;
    double encode_s;
    pd_progress_fn progress;
    void *ud;
} pd_decode_ctx;

static pd_status pd_on_frame(void *ud, int64_t index, const pd_tensor *frame) {
    pd_decode_ctx *dc = ud;
    if (index == 0 && dc->want_first) {
        PD_TRY(pd_tensor_alloc(&dc->first, PD_DTYPE_F32, 3, frame->shape));
        PD_TRY(pd_tensor_copy(&dc->first, frame));
    }
    double t0 = pd_now_s();
    pd_status st = pd_video_writer_add_frame(dc->vw, frame);
    dc->encode_s += pd_now_s() - t0;
    return st;
}

static void pd_on_latent_frame(void *ud, int done, int total) {
    pd_decode_ctx *dc = ud;
    if (dc->progress) dc->progress(dc->ud, PD_STAGE_DECODE, done, total);
}

pd_status pd_pipeline_decode(pd_pipeline *pl, const pd_tensor *latent, const pd_gen_params *p, const char *mp4_path,
                             const char *thumb_path, pd_progress_fn progress, void *ud, const atomic_int *cancel) {
    pl->decode_s = pl->encode_s = 0;
    if (!pl->vae) return pd_error_set(PD_ERR_INVALID, "decode: the pipeline was loaded without the VAE");
    if (!latent || latent->dtype != PD_DTYPE_F32 || latent->ndim != 4 || latent->device != PD_DEVICE_CPU ||
        !pd_tensor_is_contiguous(latent) || latent->shape[0] != 16 || latent->shape[1] < 1 ||
        latent->shape[1] > (PD_GEN_MAX_FRAMES - 1) / 4 + 1 || latent->shape[2] < PD_GEN_MIN_SIDE / 8 ||
        latent->shape[2] > PD_GEN_MAX_SIDE / 8 || latent->shape[3] < PD_GEN_MIN_SIDE / 8 ||
        latent->shape[3] > PD_GEN_MAX_SIDE / 8) {
        char buf[96];
        return pd_error_set(PD_ERR_INVALID, "decode: latent must be a host f32 (16, T, H/8, W/8) tensor within the size limits, got %s",
                            latent ? pd_tensor_describe(latent, buf, sizeof buf) : "none");
    }
    const int fps = p->fps;
    if (fps < 1 || fps > PD_GEN_MAX_FPS) return pd_error_set(PD_ERR_INVALID, "fps: %d must be in 1..%d", fps, PD_GEN_MAX_FPS);
    const int W = (int)latent->shape[3] * 8, H = (int)latent->shape[2] * 8;
    const int64_t frames = pd_wan_vae_frames_for(pl->vae, latent->shape[1]);
    double t0 = pd_now_s();
    pd_decode_ctx dc = {.want_first = thumb_path != NULL, .progress = progress, .ud = ud};
    char comment[256];
    pd_pipeline_describe(p, comment, sizeof comment);
    pd_status st = pd_video_writer_open_tagged(mp4_path, W, H, fps, PD_PIPELINE_ENCODER_THREADS, comment, &dc.vw);
    if (st) return st;
    st = pd_wan_vae_decode(pl->vae, latent, pd_on_frame, pd_on_latent_frame, &dc, cancel);
    /* Both files or neither: the thumbnail first, then the video; a failing video removes it. */
    if (!st && thumb_path) st = pd_image_write_png(thumb_path, &dc.first);
    if (st) {
        pd_video_writer_abort(dc.vw);
    } else {
        double t1 = pd_now_s();
        st = pd_video_writer_close(dc.vw);
        dc.encode_s += pd_now_s() - t1;
        if (st && thumb_path) unlink(thumb_path);
    }
    pd_tensor_free(&dc.first);
    if (st) return st;
    pl->encode_s = dc.encode_s;
    pl->decode_s = pd_now_s() - t0 - dc.encode_s;
    if (progress) progress(ud, PD_STAGE_ENCODE, (int)frames, (int)frames);
    return PD_OK;
}

/* ---- the latent as a file ---- */

pd_status pd_pipeline_save_latent(const pd_tensor *latent, const pd_gen_params *p, const char *path) {
    pd_st_writer *w = NULL;
    char desc[256];
    pd_pipeline_describe(p, desc, sizeof desc);
    pd_status st = pd_st_writer_create(&w);
    if (!st) st = pd_st_writer_add(w, "latent", latent);
    if (!st) st = pd_st_writer_metadata(w, "pipedit", desc);
    if (!st) st = pd_st_writer_save(w, path);
    pd_st_writer_free(w);
    return st;
}

pd_status pd_pipeline_load_latent(const char *path, pd_tensor *out) {
    memset(out, 0, sizeof *out);
    pd_st *f = NULL;
    pd_tensor raw;
    char d[96];
    pd_status st = pd_st_open(path, &f);
    if (!st) st = pd_st_get(f, "latent", &raw);
    if (!st && (raw.ndim != 4 || raw.shape[0] != 16 ||
                (raw.dtype != PD_DTYPE_F32 && raw.dtype != PD_DTYPE_BF16 && raw.dtype != PD_DTYPE_F16)))
        st = pd_error_set(PD_ERR_INVALID, "%s: latent %s must be (16, T, h, w) of a float dtype", path,
                          pd_tensor_describe(&raw, d, sizeof d));
    if (!st) st = pd_tensor_alloc(out, PD_DTYPE_F32, 4, raw.shape);
    if (!st) st = pd_tensor_copy(out, &raw);
    for (int64_t i = 0, n = st ? 0 : pd_tensor_numel(out); i < n; i++)
        if (!isfinite(((const float *)out->data)[i])) {
            st = pd_error_set(PD_ERR_INVALID, "%s: latent element %lld is not finite", path, (long long)i);
            break;
        }
    if (st) pd_tensor_free(out);
    pd_st_close(f);
    return st;
}

/* ---- all stages ---- */

pd_status pd_pipeline_generate(pd_pipeline *pl, const pd_gen_params *p, const char *mp4_path, const char *thumb_path,
                               const char *latent_path, pd_progress_fn progress, void *ud, const atomic_int *cancel,
                               pd_gen_timings *timings) {
    pd_gen_timings t = {0};
    if (timings) *timings = t;
    if ((pl->parts & PD_PART_ALL) != PD_PART_ALL)
        return pd_error_set(PD_ERR_INVALID, "generate: the pipeline needs all of its parts loaded");
    pd_tensor latent = {0};
    pd_status st = pd_pipeline_text_denoise(pl, p, &latent, progress, ud, cancel, &t);
    if (!st && latent_path) st = pd_pipeline_save_latent(&latent, p, latent_path);
    if (!st) {
        st = pd_pipeline_decode(pl, &latent, p, mp4_path, thumb_path, progress, ud, cancel);
        t.seconds[PD_STAGE_DECODE] = pl->decode_s;
        t.seconds[PD_STAGE_ENCODE] = pl->encode_s;
    }
    pd_tensor_free(&latent);
    if (!st && timings) *timings = t;
    return st;
}
