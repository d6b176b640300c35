/* MP4 video output: H.264 (libx264 through libavcodec), yuv420p, BT.601 limited range, `movflags
 * +faststart` (the moov index first, so players and HTTP range clients start at once), fed one frame
 * at a time, e.g. straight from the VAE decoder's callback, so a clip never has to be held whole.
 *
 * File I/O goes through media/file_sink.h (io_uring, pwrite fallback): the muxer writes through a
 * custom AVIOContext whose write and seek callbacks become positioned writes into a temporary file
 * next to the target. The format context keeps the temporary path as its url, because the mov
 * muxer's faststart pass (FFmpeg 5.1 movenc shift_data) re-opens that url for reading to move the
 * media data behind the moov atom; the writer flushes all writes in flight before that re-open (it
 * wraps the context's io_open) and before every seek (a rewrite of an already written region must
 * not race the original write). pd_video_writer_close() renames the file into place only when the
 * trailer is written and synced; every failure path removes the temporary file, so the final name
 * never holds a partial video.
 *
 * Encoder settings: x264 preset "veryfast", CRF 18, one frame per fps tick (pts = frame index,
 * time base 1/fps). Frames: contiguous host f32 (3, H, W) RGB in [-1, 1] (media/image_writer.h). */
#ifndef PD_MEDIA_VIDEO_WRITER_H
#define PD_MEDIA_VIDEO_WRITER_H

#include "engine/tensor.h"

typedef struct pd_video_writer pd_video_writer;

/* Routes FFmpeg's own log lines into pipedit's log (media module): its errors and warnings at
 * PD_LOG_WARN, everything else at PD_LOG_DEBUG, so encoder chatter stays out of normal output.
 * Process-wide (FFmpeg has one log callback); safe to call more than once, from any thread. */
void pd_media_log_init(void);

/* Limits on what open accepts. */
#define PD_VIDEO_MAX_SIDE 8192
#define PD_VIDEO_MAX_FPS 240

/* Starts an MP4 at path (the file appears only at close): width and height even, 2..PD_VIDEO_MAX_SIDE;
 * fps 1..PD_VIDEO_MAX_FPS; threads is the encoder's thread count (0 = FFmpeg's choice).
 * Errors: PD_ERR_INVALID (odd or out-of-range size, bad fps), PD_ERR_UNSUPPORTED (this FFmpeg has no
 * libx264 or mp4 muxer), PD_ERR_IO (folder missing or not writable, naming it), PD_ERR_NOMEM. */
pd_status pd_video_writer_open(const char *path, int width, int height, int fps, int threads, pd_video_writer **out);

/* Like pd_video_writer_open, and the MP4 carries comment (UTF-8, at most PD_VIDEO_MAX_COMMENT
 * bytes; NULL = none) as its "comment" tag (the udta ©cmt atom; ffprobe shows it as TAG:comment). */
#define PD_VIDEO_MAX_COMMENT 1024
pd_status pd_video_writer_open_tagged(const char *path, int width, int height, int fps, int threads, const char *comment,
                                      pd_video_writer **out);

/* Encodes the next frame (3, H, W) matching the size given to open. Errors: PD_ERR_INVALID (shape),
 * PD_ERR_IO (a write failed: disk full, ...). After an error only pd_video_writer_abort is useful. */
pd_status pd_video_writer_add_frame(pd_video_writer *w, const pd_tensor *frame);

/* Flushes the encoder, writes the trailer (with the faststart pass), syncs and renames the file into
 * place, then frees w. With zero frames added it fails with PD_ERR_INVALID. On any error the
 * temporary file is removed and w is freed all the same. */
pd_status pd_video_writer_close(pd_video_writer *w);

/* Discards the video (no file is left) and frees w. NULL is a no-op. */
void pd_video_writer_abort(pd_video_writer *w);

#endif
