#include "media/image_writer.h"

#include <libavcodec/avcodec.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <math.h>

#include "media/file_sink.h"
#include "media/video_writer.h"

pd_status pd_image_check_frame(const pd_tensor *f, const char *what) {
    char buf[96];
    if (!f || f->dtype != PD_DTYPE_F32 || f->ndim != 3 || f->shape[0] != 3 || f->shape[1] < 1 || f->shape[2] < 1 ||
        f->shape[1] > 16384 || f->shape[2] > 16384 || f->device != PD_DEVICE_CPU || !pd_tensor_is_contiguous(f))
        return pd_error_set(PD_ERR_INVALID, "%s %s must be a contiguous host f32 (3, H, W) tensor", what,
                            f ? pd_tensor_describe(f, buf, sizeof buf) : "(null)");
    return PD_OK;
}

void pd_image_frame_to_rgb24(const pd_tensor *frame, uint8_t *dst, int stride) {
    int64_t h = frame->shape[1], w = frame->shape[2], plane = h * w;
    const float *src = frame->data;
    for (int64_t y = 0; y < h; y++) {
        uint8_t *row = dst + y * stride;
        for (int64_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                float v = (src[c * plane + y * w + x] + 1.0f) * 127.5f;
                v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v; // NaN stays NaN here: mapped to 0 below
                row[3 * x + c] = v == v ? (uint8_t)lrintf(v) : 0;
            }
    }
}

pd_status pd_image_write_png(const char *path, const pd_tensor *frame) {
    PD_TRY(pd_image_check_frame(frame, "thumbnail frame"));
    pd_media_log_init();
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
    if (!codec) return pd_error_set(PD_ERR_UNSUPPORTED, "this FFmpeg build has no PNG encoder (needed for %s)", path);
    AVCodecContext *cc = avcodec_alloc_context3(codec);
    AVFrame *fr = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    pd_file_sink *sink = NULL;
    pd_status st = PD_OK;
    int rc;
    if (!cc || !fr || !pkt) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory encoding %s", path);
        goto done;
    }
    cc->width = (int)frame->shape[2];
    cc->height = (int)frame->shape[1];
    cc->pix_fmt = AV_PIX_FMT_RGB24;
    cc->time_base = (AVRational){1, 1};
    if ((rc = avcodec_open2(cc, codec, NULL)) < 0) {
        st = pd_error_set(PD_ERR_UNSUPPORTED, "opening the PNG encoder for %s: %s", path, av_err2str(rc));
        goto done;
    }
    fr->format = AV_PIX_FMT_RGB24, fr->width = cc->width, fr->height = cc->height;
    if (av_frame_get_buffer(fr, 0) < 0) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory encoding %s", path);
        goto done;
    }
    pd_image_frame_to_rgb24(frame, fr->data[0], fr->linesize[0]);
    if ((rc = avcodec_send_frame(cc, fr)) < 0 || (rc = avcodec_send_frame(cc, NULL)) < 0 ||
        (rc = avcodec_receive_packet(cc, pkt)) < 0) {
        st = pd_error_set(PD_ERR_IO, "encoding PNG %s: %s", path, av_err2str(rc));
        goto done;
    }
    st = pd_file_sink_open(path, 0, &sink);
    if (st == PD_OK) st = pd_file_sink_write(sink, 0, pkt->data, (size_t)pkt->size);
    if (st == PD_OK) {
        st = pd_file_sink_commit(sink);
        sink = NULL;
    }
done:
    pd_file_sink_abort(sink);
    av_packet_free(&pkt);
    av_frame_free(&fr);
    avcodec_free_context(&cc);
    return st;
}
