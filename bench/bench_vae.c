/* Wan2.1 VAE decode on the CPU backend: the tiny preset's VAE (base_dim 8, f32) at latent 24x32
 * (192x256 px) for T = 3, 9 and 21 latent frames (9, 33 and 81 RGB frames).
 *
 * Each measurement runs in a fresh process (the program re-executes itself with --child), because
 * the peak RSS of a process is a high-water mark: the streaming decoder's peak must stay flat as T
 * grows, the whole-clip decode's grows with T (recorded for contrast). Per T it records the median
 * streaming decode time of several runs, the streaming peak RSS, the whole-clip peak RSS, and the
 * time of streaming decode straight into an MP4 (libx264 + the io_uring file sink). It also times
 * one latent frame at 64 x 64 (one 512 x 512 image, the shape of a single-frame request) decoded six
 * times in one process: the first decode (it grows the decoder's working memory) and the median of
 * the five after it (the model keeps that memory between decodes, as a worker's later jobs see it),
 * and the file sink alone (64 MiB in 256 KiB writes, then fsync) through io_uring and through pwrite.
 *
 *   bench_vae [--threads N] [--runs R] [--results DIR]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/common/bench.h"
#include "media/file_sink.h"
#include "media/video_writer.h"
#include "models/presets.h"
#include "models/random_init.h"
#include "models/wan/vae.h"

#define LAT_H 24
#define LAT_W 32

static pd_status on_frame_discard(void *ud, int64_t index, const pd_tensor *f) {
    (void)ud, (void)index, (void)f;
    return PD_OK;
}

static pd_status on_frame_mp4(void *ud, int64_t index, const pd_tensor *f) {
    (void)index;
    return pd_video_writer_add_frame(ud, f);
}

#define FRAME_SIDE 64 /* latent side of the one-frame case (512 x 512 pixels) */
#define FRAME_LATER 5 /* decodes after the first in the one-frame case */

/* One measurement in this process: prints "RESULT <seconds> <peak rss bytes>" (mode "frame": the
 * median later decode, and "FIRST <seconds>"). */
static int child(const char *vae_dir, const char *mode, int t, int threads, const char *out_dir) {
    pd_backend *be = NULL;
    pd_wan_vae *v = NULL;
    pd_tensor z = {0};
    const bool frame = !strcmp(mode, "frame");
    int64_t shape[4] = {16, frame ? 1 : t, frame ? FRAME_SIDE : LAT_H, frame ? FRAME_SIDE : LAT_W};
    double later[FRAME_LATER], first = 0;
    pd_video_writer *vw = NULL;
    char mp4[600];
    pd_status st = pd_backend_cpu_create(threads, &be);
    if (st == PD_OK) st = pd_wan_vae_load(vae_dir, be, &v);
    if (st == PD_OK) st = pd_random_tensor(&z, PD_DTYPE_F32, 4, shape, 3, "latent", 0.0f, 1.0f);
    double t0 = pd_bench_now();
    if (st == PD_OK && frame) {
        for (int i = 0; i <= FRAME_LATER && st == PD_OK; i++) {
            const double t1 = pd_bench_now();
            st = pd_wan_vae_decode(v, &z, on_frame_discard, NULL, NULL, NULL);
            if (i == 0) first = pd_bench_now() - t1;
            else later[i - 1] = pd_bench_now() - t1;
        }
    } else if (st == PD_OK && !strcmp(mode, "stream")) st = pd_wan_vae_decode(v, &z, on_frame_discard, NULL, NULL, NULL);
    else if (st == PD_OK && !strcmp(mode, "whole")) st = pd_wan_vae_decode_whole(v, &z, on_frame_discard, NULL);
    else if (st == PD_OK) {
        snprintf(mp4, sizeof mp4, "%s/clip-%d.mp4", out_dir, t);
        st = pd_video_writer_open(mp4, 8 * LAT_W, 8 * LAT_H, 16, threads, &vw);
        if (st == PD_OK) st = pd_wan_vae_decode(v, &z, on_frame_mp4, NULL, vw, NULL);
        if (st == PD_OK) st = pd_video_writer_close(vw);
        else pd_video_writer_abort(vw);
    }
    double secs = frame ? pd_bench_median(later, FRAME_LATER) : pd_bench_now() - t0;
    pd_tensor_free(&z);
    pd_wan_vae_free(v);
    pd_backend_free(be);
    if (st != PD_OK) {
        fprintf(stderr, "bench_vae child (%s, T=%d): %s\n", mode, t, pd_error_msg());
        return 1;
    }
    if (frame) printf("FIRST %.6f\n", first);
    printf("RESULT %.6f %llu\n", secs, (unsigned long long)pd_bench_peak_rss_bytes());
    return 0;
}

static int run_child(const char *self, const char *vae_dir, const char *mode, int t, int threads, const char *dir,
                     double *secs, double *rss_mib, double *first) {
    char cmd[2048], line[256];
    snprintf(cmd, sizeof cmd, "'%s' --child '%s' %s %d %d '%s'", self, vae_dir, mode, t, threads, dir);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    int ok = 0;
    unsigned long long rss = 0;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "RESULT %lf %llu", secs, &rss) == 2) ok = 1;
        else if (first) sscanf(line, "FIRST %lf", first);
    if (pclose(p) != 0 || !ok) return -1;
    *rss_mib = (double)rss / 1048576.0;
    return 0;
}

static double sink_mibps(const char *dir, unsigned flags) {
    char path[600];
    snprintf(path, sizeof path, "%s/sink.bin", dir);
    static char buf[256 * 1024];
    memset(buf, 0x5a, sizeof buf);
    pd_file_sink *s;
    double t0 = pd_bench_now();
    if (pd_file_sink_open(path, flags, &s) != PD_OK) return -1;
    pd_status st = PD_OK;
    for (int i = 0; st == PD_OK && i < 256; i++) st = pd_file_sink_write(s, (int64_t)i * (int64_t)sizeof buf, buf, sizeof buf);
    if (st == PD_OK) st = pd_file_sink_commit(s);
    else pd_file_sink_abort(s);
    double dt = pd_bench_now() - t0;
    unlink(path);
    return st == PD_OK ? 64.0 / dt : -1;
}

int main(int argc, char **argv) {
    if (argc == 7 && !strcmp(argv[1], "--child")) {
        pd_log_set_level(PD_LOG_WARN);
        return child(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argv[6]);
    }
    int threads = 0, runs = 3;
    const char *results = NULL;
    if (!pd_bench_parse_args(argc, argv, "bench_vae", &threads, &runs, 1, 50, &results)) return 2;
    if (threads == 0) threads = pd_bench_cpu_cores();
    pd_log_set_level(PD_LOG_WARN);
    char self[1024], dir[] = "/tmp/bench_vae.XXXXXX", vae_dir[600];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || !mkdtemp(dir)) {
        fprintf(stderr, "bench_vae: cannot find myself or make a scratch folder\n");
        return 1;
    }
    self[n] = 0;
    snprintf(vae_dir, sizeof vae_dir, "%s/vae", dir);
    const pd_wan_vae_config *cfg = &pd_model_preset_find("tiny")->vae;
    if (pd_wan_vae_write_random(vae_dir, cfg, 1, PD_WAN_LAYOUT_DIFFUSERS, PD_DTYPE_F32) != PD_OK) {
        fprintf(stderr, "bench_vae: %s\n", pd_error_msg());
        return 1;
    }
    pd_bench_result *res = pd_bench_result_create("bench_vae");
    pd_bench_result_config_str(res, "model", "tiny VAE (base_dim 8, dim_mult 1,2,4,4, f32)");
    pd_bench_result_config_str(res, "backend", "cpu");
    pd_bench_result_config_int(res, "threads", threads);
    pd_bench_result_config_str(res, "latent", "(16, T, 24, 32) -> (3, 1 + 4 (T - 1), 192, 256)");
    pd_bench_result_config_int(res, "runs", runs);
    int ts[3] = {3, 9, 21}, rc = 0;
    printf("%-4s %-7s %12s %12s %14s %14s %12s\n", "T", "frames", "stream s", "frames/s", "stream RSS MiB",
           "whole RSS MiB", "mp4 s");
    for (int k = 0; k < 3 && rc == 0; k++) {
        int t = ts[k], frames = 1 + 4 * (t - 1);
        double times[50], rss[50], secs, whole_rss, mp4_s, mp4_rss;
        for (int r = 0; r < runs && rc == 0; r++)
            if (run_child(self, vae_dir, "stream", t, threads, dir, &times[r], &rss[r], NULL) != 0) rc = 1;
        if (rc == 0 && run_child(self, vae_dir, "whole", t, threads, dir, &secs, &whole_rss, NULL) != 0) rc = 1;
        if (rc == 0 && run_child(self, vae_dir, "mp4", t, threads, dir, &mp4_s, &mp4_rss, NULL) != 0) rc = 1;
        if (rc) break;
        double med = pd_bench_median(times, runs), rss_med = pd_bench_median(rss, runs);
        printf("%-4d %-7d %12.3f %12.1f %14.1f %14.1f %12.3f\n", t, frames, med, frames / med, rss_med, whole_rss, mp4_s);
        char name[64];
        snprintf(name, sizeof name, "stream_decode_T%d", t);
        pd_bench_result_figure(res, name, med, "s");
        snprintf(name, sizeof name, "stream_frames_per_s_T%d", t);
        pd_bench_result_figure(res, name, frames / med, "frames/s");
        snprintf(name, sizeof name, "stream_peak_rss_T%d", t);
        pd_bench_result_figure(res, name, rss_med, "MiB");
        snprintf(name, sizeof name, "whole_peak_rss_T%d", t);
        pd_bench_result_figure(res, name, whole_rss, "MiB");
        snprintf(name, sizeof name, "stream_decode_to_mp4_T%d", t);
        pd_bench_result_figure(res, name, mp4_s, "s");
        snprintf(name, sizeof name, "stream_to_mp4_peak_rss_T%d", t);
        pd_bench_result_figure(res, name, mp4_rss, "MiB");
    }
    if (rc == 0) {
        double later = 0, first = 0, rss = 0;
        if (run_child(self, vae_dir, "frame", 1, threads, dir, &later, &rss, &first) != 0) rc = 1;
        printf("one frame at 512x512 (latent 64 x 64), one process: first decode %.3f s, later decodes %.3f s "
               "(median of %d)\n", first, later, FRAME_LATER);
        pd_bench_result_figure(res, "frame512_first_decode", first, "s");
        pd_bench_result_figure(res, "frame512_decode", later, "s");
    }
    if (rc == 0) {
        double u[5], p[5];
        for (int r = 0; r < 5; r++) u[r] = sink_mibps(dir, 0), p[r] = sink_mibps(dir, PD_FILE_SINK_PWRITE);
        double um = pd_bench_median(u, 5), pm = pd_bench_median(p, 5);
        printf("file sink, 64 MiB in 256 KiB writes + fsync (median of 5): io_uring %.0f MiB/s, pwrite %.0f MiB/s\n", um, pm);
        pd_bench_result_figure(res, "file_sink_uring_64MiB", um, "MiB/s");
        pd_bench_result_figure(res, "file_sink_pwrite_64MiB", pm, "MiB/s");
        const char *path = pd_bench_result_write(res, results);
        if (path) printf("wrote %s\n", path);
        else {
            fprintf(stderr, "bench_vae: %s\n", pd_error_msg());
            rc = 1;
        }
    } else {
        fprintf(stderr, "bench_vae: a measurement failed\n");
    }
    pd_bench_result_free(res);
    pd_bench_rmtree(dir);
    return rc;
}
