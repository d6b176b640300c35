/* pipedit decode: latent -> Wan VAE decoder -> MP4 (+ PNG thumbnail) or a safetensors video tensor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"
#include "media/image_writer.h"
#include "media/video_writer.h"
#include "models/wan/vae.h"
#include "tools/cli_opt.h"
#include "tools/commands.h"
#include "tools/device_opt.h"

static void pd_decode_usage(FILE *f) {
    fprintf(f, "usage: pipedit decode --model PATH --latent IN.safetensors --out OUT.mp4|OUT.safetensors\n"
               "                       [--thumbnail OUT.png] [--fps N] [--threads N] [--whole]\n"
               "                       [--device cpu|cuda|cuda:N]\n"
               "Decodes a latent with the Wan2.1 VAE, one latent frame at a time.\n"
               "  --model PATH     model folder (uses vae/), vae folder, or a single .safetensors VAE file\n"
               "                   (original/Comfy or diffusers names)\n"
               "  --latent FILE    tensor \"latent\" (16, T, h, w), normalised as the DiT produces it\n"
               "  --out FILE       .mp4: H.264 yuv420p video of 1 + 4 (T - 1) frames at 8h x 8w;\n"
               "                   .safetensors: tensor \"video\" (3, F, 8h, 8w) f32 in [-1, 1]\n"
               "  --thumbnail FILE the first frame as PNG\n"
               "  --fps N          frame rate of the MP4 (default 16)\n"
               "  --threads N      CPU threads (default: all cores)\n"
               PD_DEVICE_OPT_USAGE
               "  --whole          decode all latent frames at once instead of streaming (tests)\n");
}

static int pd_decode_fail(const char *what) {
    fprintf(stderr, "pipedit decode: %s%s%s\n", what ? what : "", what ? ": " : "", pd_error_msg());
    return 1;
}

static bool pd_decode_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

typedef struct pd_decode_sink {
    pd_video_writer *vw;  // MP4 output, or
    pd_tensor video;      // (3, F, H, W) for a safetensors output
    pd_tensor first;      // (3, H, W) frame 0 for the thumbnail
    bool want_first;
} pd_decode_sink;

static pd_status pd_decode_on_frame(void *ud, int64_t index, const pd_tensor *frame) {
    pd_decode_sink *s = ud;
    if (index == 0 && s->want_first) {
        PD_TRY(pd_tensor_alloc(&s->first, PD_DTYPE_F32, 3, frame->shape));
        PD_TRY(pd_tensor_copy(&s->first, frame));
    }
    if (s->vw) return pd_video_writer_add_frame(s->vw, frame);
    PD_ASSERT(index < s->video.shape[1]);
    pd_tensor dst = pd_tensor_slice(&s->video, 1, index, 1);
    int64_t shape[3] = {3, frame->shape[1], frame->shape[2]};
    dst.ndim = 3; // (3, 1, H, W) slice seen without its unit dim
    dst.shape[1] = shape[1], dst.shape[2] = shape[2];
    dst.stride[1] = dst.stride[2], dst.stride[2] = dst.stride[3];
    return pd_tensor_copy(&dst, frame);
}

int pd_cmd_decode(int argc, char **argv) {
    const char *model = NULL, *latent_path = NULL, *out_path = NULL, *thumb = NULL, *device = "cpu";
    int fps = 16, threads = 0;
    bool whole = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            pd_decode_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--whole")) {
            whole = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pipedit decode: %s needs a value\n", a);
            pd_decode_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--latent")) latent_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--thumbnail")) thumb = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--fps")) {
            if (!pd_cli_opt_int("pipedit decode", a, v, 1, PD_VIDEO_MAX_FPS, &fps)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!pd_cli_opt_int("pipedit decode", a, v, 1, 1024, &threads)) return 2;
        } else {
            fprintf(stderr, "pipedit decode: unknown option %s\n", a);
            pd_decode_usage(stderr);
            return 2;
        }
    }
    if (!model || !latent_path || !out_path) {
        fprintf(stderr, "pipedit decode: --model, --latent and --out are required\n");
        pd_decode_usage(stderr);
        return 2;
    }
    if (!pd_device_opt_check("pipedit decode", device, 0)) return 2;
    bool to_st = pd_decode_ends_with(out_path, ".safetensors");
    if (!to_st && !pd_decode_ends_with(out_path, ".mp4")) {
        fprintf(stderr, "pipedit decode: --out must end in .mp4 or .safetensors, got \"%s\"\n", out_path);
        return 2;
    }

    int rc = 1;
    pd_st *lst = NULL;
    pd_backend *be = NULL;
    pd_wan_vae *vae = NULL;
    pd_st_writer *wr = NULL;
    pd_tensor lat = {0}, raw;
    pd_decode_sink sink = {.want_first = thumb != NULL};
    char d[96];
    if (pd_st_open(latent_path, &lst) != PD_OK || pd_st_get(lst, "latent", &raw) != PD_OK) {
        rc = pd_decode_fail("reading the latent");
        goto done;
    }
    if (raw.ndim != 4 || raw.shape[0] != 16 || (raw.dtype != PD_DTYPE_F32 && raw.dtype != PD_DTYPE_BF16 && raw.dtype != PD_DTYPE_F16)) {
        fprintf(stderr, "pipedit decode: %s: latent %s must be (16, T, h, w) of a float dtype\n", latent_path,
                pd_tensor_describe(&raw, d, sizeof d));
        goto done;
    }
    if (pd_tensor_alloc(&lat, PD_DTYPE_F32, 4, raw.shape) != PD_OK || pd_tensor_copy(&lat, &raw) != PD_OK) {
        rc = pd_decode_fail("reading the latent");
        goto done;
    }
    if (pd_device_opt_create("pipedit decode", device, threads, &be) != PD_OK) goto done;
    if (pd_wan_vae_load(model, be, &vae) != PD_OK) {
        rc = pd_decode_fail(NULL);
        goto done;
    }
    int sf = pd_wan_vae_spatial_factor(vae);
    int64_t frames = pd_wan_vae_frames_for(vae, lat.shape[1]), h = lat.shape[2] * sf, w = lat.shape[3] * sf;
    if (to_st) {
        int64_t shape[4] = {3, frames, h, w};
        if (pd_tensor_alloc(&sink.video, PD_DTYPE_F32, 4, shape) != PD_OK) {
            rc = pd_decode_fail("allocating the output");
            goto done;
        }
    } else if (pd_video_writer_open(out_path, (int)w, (int)h, fps, threads, &sink.vw) != PD_OK) {
        rc = pd_decode_fail(NULL);
        goto done;
    }
    pd_status st = whole ? pd_wan_vae_decode_whole(vae, &lat, pd_decode_on_frame, &sink)
                         : pd_wan_vae_decode(vae, &lat, pd_decode_on_frame, NULL, &sink, NULL);
    if (st != PD_OK) {
        rc = pd_decode_fail("decoding");
        goto done;
    }
    if (sink.vw) {
        st = pd_video_writer_close(sink.vw);
        sink.vw = NULL;
    } else {
        st = pd_st_writer_create(&wr);
        if (st == PD_OK) st = pd_st_writer_add(wr, "video", &sink.video);
        if (st == PD_OK) st = pd_st_writer_save(wr, out_path);
    }
    if (st != PD_OK) {
        rc = pd_decode_fail(out_path);
        goto done;
    }
    if (thumb && pd_image_write_png(thumb, &sink.first) != PD_OK) {
        rc = pd_decode_fail("writing the thumbnail");
        goto done;
    }
    printf("decoded %lld latent frames -> %lld frames of %lldx%lld into %s\n", (long long)lat.shape[1], (long long)frames,
           (long long)w, (long long)h, out_path);
    rc = 0;
done:
    pd_video_writer_abort(sink.vw);
    pd_tensor_free(&sink.video);
    pd_tensor_free(&sink.first);
    pd_st_writer_free(wr);
    pd_wan_vae_free(vae);
    pd_backend_free(be);
    pd_tensor_free(&lat);
    pd_st_close(lst);
    return rc;
}
