#include "media/video_writer.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "media/file_sink.h"
#include "media/image_writer.h"

#define VW_IO_BUF (256 * 1024)

struct pd_video_writer {
    pd_file_sink *sink;
    int64_t pos, size;               // AVIO position and end of file
    AVFormatContext *oc;
    AVCodecContext *cc;
    AVStream *vs;
    AVFrame *yuv, *rgb;
    AVPacket *pkt;
    struct SwsContext *sws;
    int (*io_open_default)(struct AVFormatContext *, AVIOContext **, const char *, int, AVDictionary **);
    int width, height;
    long frames;
};

/* ---- FFmpeg log lines ---- */

static void vw_av_log(void *avcl, int level, const char *fmt, va_list vl) {
    pd_log_level pl = level <= AV_LOG_WARNING ? PD_LOG_WARN : PD_LOG_DEBUG;
    if (pl > pd_log_get_level()) return;
    char line[1024];
    int prefix = 1;
    av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &prefix);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    if (n) pd_log_write(pl, "media", "ffmpeg: %s", line);
}

static void vw_log_install(void) { av_log_set_callback(vw_av_log); }

void pd_media_log_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, vw_log_install);
}

/* ---- AVIO over the file sink ---- */

static int vw_write(void *opaque, uint8_t *buf, int n) {
    pd_video_writer *w = opaque;
    if (pd_file_sink_write(w->sink, w->pos, buf, (size_t)n) != PD_OK) return AVERROR(EIO);
    w->pos += n;
    if (w->pos > w->size) w->size = w->pos;
    return n;
}

static int64_t vw_seek(void *opaque, int64_t offset, int whence) {
    pd_video_writer *w = opaque;
    if (whence & AVSEEK_SIZE) return w->size;
    int64_t base = 0;
    switch (whence & ~AVSEEK_FORCE) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = w->pos; break;
    case SEEK_END: base = w->size; break;
    default: return AVERROR(EINVAL);
    }
    if (base + offset < 0) return AVERROR(EINVAL);
    // A seek precedes rewriting a header field; writes in flight are unordered, so land them first.
    if (pd_file_sink_flush(w->sink) != PD_OK) return AVERROR(EIO);
    w->pos = base + offset;
    return w->pos;
}

/* The faststart pass re-opens the url for reading: everything written must be in the file by then. */
static int vw_io_open(struct AVFormatContext *s, AVIOContext **pb, const char *url, int flags, AVDictionary **options) {
    pd_video_writer *w = s->opaque;
    if (pd_file_sink_flush(w->sink) != PD_OK) return AVERROR(EIO);
    return w->io_open_default(s, pb, url, flags, options);
}

/* ---- writer ---- */

static void vw_free(pd_video_writer *w) {
    if (w->oc) {
        if (w->oc->pb) {
            av_freep(&w->oc->pb->buffer);
            avio_context_free(&w->oc->pb);
        }
        avformat_free_context(w->oc);
    }
    avcodec_free_context(&w->cc);
    av_frame_free(&w->yuv);
    av_frame_free(&w->rgb);
    av_packet_free(&w->pkt);
    sws_freeContext(w->sws);
    free(w);
}

void pd_video_writer_abort(pd_video_writer *w) {
    if (!w) return;
    pd_file_sink_abort(w->sink);
    vw_free(w);
}

static pd_status vw_av_error(pd_video_writer *w, int rc, const char *what) {
    // a failed write already recorded the sink's message (ENOSPC, ...): keep it
    if (rc == AVERROR(EIO) && pd_file_sink_flush(w->sink) != PD_OK) return PD_ERR_IO;
    return pd_error_set(PD_ERR_IO, "%s %s: %s", what, pd_file_sink_final_path(w->sink), av_err2str(rc));
}

pd_status pd_video_writer_open(const char *path, int width, int height, int fps, int threads, pd_video_writer **out) {
    return pd_video_writer_open_tagged(path, width, height, fps, threads, NULL, out);
}

pd_status pd_video_writer_open_tagged(const char *path, int width, int height, int fps, int threads, const char *comment,
                                      pd_video_writer **out) {
    *out = NULL;
    if (comment && strnlen(comment, PD_VIDEO_MAX_COMMENT + 1) > PD_VIDEO_MAX_COMMENT)
        return pd_error_set(PD_ERR_INVALID, "video comment: longer than %d bytes", PD_VIDEO_MAX_COMMENT);
    if (width < 2 || height < 2 || width > PD_VIDEO_MAX_SIDE || height > PD_VIDEO_MAX_SIDE || width % 2 || height % 2)
        return pd_error_set(PD_ERR_INVALID, "video size %dx%d: width and height must be even and within 2..%d", width,
                            height, PD_VIDEO_MAX_SIDE);
    if (fps < 1 || fps > PD_VIDEO_MAX_FPS)
        return pd_error_set(PD_ERR_INVALID, "video fps %d outside 1..%d", fps, PD_VIDEO_MAX_FPS);
    if (threads < 0 || threads > 64) return pd_error_set(PD_ERR_INVALID, "encoder threads %d outside 0..64", threads);
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (!codec) return pd_error_set(PD_ERR_UNSUPPORTED, "this FFmpeg build has no libx264 H.264 encoder (needed for %s)", path);
    pd_media_log_init();
    pd_video_writer *w = calloc(1, sizeof *w);
    if (!w) return pd_error_set(PD_ERR_NOMEM, "out of memory opening %s", path);
    w->width = width, w->height = height;
    pd_status st = pd_file_sink_open(path, 0, &w->sink);
    if (st != PD_OK) {
        free(w);
        return st;
    }
    AVDictionary *opts = NULL;
    int rc = avformat_alloc_output_context2(&w->oc, NULL, "mp4", pd_file_sink_temp_path(w->sink));
    if (rc < 0 || !w->oc) {
        st = pd_error_set(PD_ERR_UNSUPPORTED, "this FFmpeg build has no mp4 muxer (needed for %s)", path);
        goto fail;
    }
    w->cc = avcodec_alloc_context3(codec);
    w->yuv = av_frame_alloc();
    w->rgb = av_frame_alloc();
    w->pkt = av_packet_alloc();
    uint8_t *iobuf = av_malloc(VW_IO_BUF);
    AVIOContext *pb = iobuf ? avio_alloc_context(iobuf, VW_IO_BUF, 1, w, NULL, vw_write, vw_seek) : NULL;
    if (!pb) av_free(iobuf);
    w->oc->pb = pb;
    if (!w->cc || !w->yuv || !w->rgb || !w->pkt || !pb) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory opening %s", path);
        goto fail;
    }
    w->oc->flags |= AVFMT_FLAG_CUSTOM_IO;
    w->oc->opaque = w;
    w->io_open_default = w->oc->io_open;
    w->oc->io_open = vw_io_open;

    AVCodecContext *cc = w->cc;
    cc->width = width, cc->height = height;
    cc->pix_fmt = AV_PIX_FMT_YUV420P;
    cc->time_base = (AVRational){1, fps};
    cc->framerate = (AVRational){fps, 1};
    cc->thread_count = threads;
    cc->color_range = AVCOL_RANGE_MPEG;
    cc->colorspace = AVCOL_SPC_SMPTE170M;
    cc->color_primaries = AVCOL_PRI_SMPTE170M;
    cc->color_trc = AVCOL_TRC_SMPTE170M;
    if (w->oc->oformat->flags & AVFMT_GLOBALHEADER) cc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    av_dict_set(&opts, "preset", "veryfast", 0);
    av_dict_set(&opts, "crf", "18", 0);
    rc = avcodec_open2(cc, codec, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        st = pd_error_set(PD_ERR_UNSUPPORTED, "opening libx264 for %s (%dx%d at %d fps): %s", path, width, height, fps,
                          av_err2str(rc));
        goto fail;
    }
    w->vs = avformat_new_stream(w->oc, NULL);
    if (!w->vs || avcodec_parameters_from_context(w->vs->codecpar, cc) < 0) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory opening %s", path);
        goto fail;
    }
    w->vs->time_base = cc->time_base;
    w->vs->avg_frame_rate = cc->framerate;
    w->yuv->format = AV_PIX_FMT_YUV420P, w->yuv->width = width, w->yuv->height = height;
    w->rgb->format = AV_PIX_FMT_RGB24, w->rgb->width = width, w->rgb->height = height;
    if (av_frame_get_buffer(w->yuv, 0) < 0 || av_frame_get_buffer(w->rgb, 0) < 0) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory opening %s", path);
        goto fail;
    }
    w->sws = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P, SWS_BICUBIC, NULL, NULL,
                            NULL);
    if (!w->sws) {
        st = pd_error_set(PD_ERR_UNSUPPORTED, "no RGB to yuv420p conversion for %dx%d", width, height);
        goto fail;
    }
    if (comment && av_dict_set(&w->oc->metadata, "comment", comment, 0) < 0) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory opening %s", path);
        goto fail;
    }
    av_dict_set(&opts, "movflags", "+faststart", 0);
    rc = avformat_write_header(w->oc, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        st = vw_av_error(w, rc, "writing the MP4 header of");
        goto fail;
    }
    *out = w;
    return PD_OK;
fail:
    pd_video_writer_abort(w);
    return st;
}

/* Sends frame (NULL: flush) and writes every packet the encoder has ready. */
static pd_status vw_encode(pd_video_writer *w, AVFrame *frame) {
    int rc = avcodec_send_frame(w->cc, frame);
    if (rc < 0) return vw_av_error(w, rc, "encoding a frame of");
    for (;;) {
        rc = avcodec_receive_packet(w->cc, w->pkt);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return PD_OK;
        if (rc < 0) return vw_av_error(w, rc, "encoding a frame of");
        av_packet_rescale_ts(w->pkt, w->cc->time_base, w->vs->time_base);
        w->pkt->stream_index = w->vs->index;
        rc = av_interleaved_write_frame(w->oc, w->pkt); // takes the packet's reference
        if (rc < 0) return vw_av_error(w, rc, "writing a packet of");
    }
}

pd_status pd_video_writer_add_frame(pd_video_writer *w, const pd_tensor *frame) {
    char what[64];
    snprintf(what, sizeof what, "video frame %ld", w->frames);
    PD_TRY(pd_image_check_frame(frame, what));
    if (frame->shape[1] != w->height || frame->shape[2] != w->width)
        return pd_error_set(PD_ERR_INVALID, "video frame %ld is %lldx%lld, the video is %dx%d", w->frames,
                            (long long)frame->shape[2], (long long)frame->shape[1], w->width, w->height);
    if (av_frame_make_writable(w->yuv) < 0) return pd_error_set(PD_ERR_NOMEM, "out of memory encoding a video frame");
    pd_image_frame_to_rgb24(frame, w->rgb->data[0], w->rgb->linesize[0]);
    sws_scale(w->sws, (const uint8_t *const *)w->rgb->data, w->rgb->linesize, 0, w->height, w->yuv->data,
              w->yuv->linesize);
    w->yuv->pts = w->frames;
    PD_TRY(vw_encode(w, w->yuv));
    w->frames++;
    return PD_OK;
}

pd_status pd_video_writer_close(pd_video_writer *w) {
    pd_status st = PD_OK;
    if (w->frames == 0) st = pd_error_set(PD_ERR_INVALID, "no frames were written to %s", pd_file_sink_final_path(w->sink));
    if (st == PD_OK) st = vw_encode(w, NULL);
    if (st == PD_OK) {
        int rc = av_write_trailer(w->oc);
        if (rc < 0) st = vw_av_error(w, rc, "writing the MP4 trailer of");
    }
    if (st == PD_OK) {
        avio_flush(w->oc->pb);
        if (w->oc->pb->error < 0) st = vw_av_error(w, w->oc->pb->error, "writing");
    }
    if (st != PD_OK) {
        pd_video_writer_abort(w);
        return st;
    }
    st = pd_file_sink_commit(w->sink);
    w->sink = NULL;
    vw_free(w);
    return st;
}
