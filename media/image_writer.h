/* Still images: a decoded frame as PNG (FFmpeg's png encoder), written atomically through
 * media/file_sink.h, and the frame conversion the video writer shares.
 *
 * A frame is what the VAE decoder emits: a contiguous host f32 tensor (3, H, W), planar RGB with
 * values in [-1, 1] (values outside are clamped). */
#ifndef PD_MEDIA_IMAGE_WRITER_H
#define PD_MEDIA_IMAGE_WRITER_H

#include <stdint.h>

#include "engine/tensor.h"

/* Checks frame is a contiguous host f32 (3, H, W) tensor with 1 <= H, W <= 16384. PD_ERR_INVALID
 * with a message naming what (e.g. "video frame 3") otherwise. */
pd_status pd_image_check_frame(const pd_tensor *frame, const char *what);

/* Converts frame to packed 8-bit RGB: dst row y starts at dst + y * stride and holds 3 * W bytes,
 * value = round((x + 1) * 127.5) clamped to 0..255. */
void pd_image_frame_to_rgb24(const pd_tensor *frame, uint8_t *dst, int stride);

/* Writes frame as an RGB PNG file at path (temporary name + rename: the file appears complete or
 * not at all). Errors: PD_ERR_INVALID (bad frame), PD_ERR_UNSUPPORTED (no png encoder in this
 * FFmpeg), PD_ERR_IO (folder not writable, disk full; naming the path), PD_ERR_NOMEM. */
pd_status pd_image_write_png(const char *path, const pd_tensor *frame);

#endif
