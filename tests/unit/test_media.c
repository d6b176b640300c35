/* media/: MP4 and PNG writers and the atomic io_uring file sink, including their failure paths
 * (unwritable folder, disk full simulated with RLIMIT_FSIZE in a child process, bad sizes). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "media/file_sink.h"
#include "media/image_writer.h"
#include "media/video_writer.h"
#include "tests/unit/test.h"

static char tmpdir[256];

static void setup_dir(void) {
    const char *base = getenv("PIPEDIT_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    snprintf(tmpdir, sizeof tmpdir, "%s/test_media.XXXXXX", base);
    PD_ASSERT(mkdtemp(tmpdir));
}

/* Number of entries in tmpdir (temporary files must never be left behind). */
static int dir_entries(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void clear_dir(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    if (d) closedir(d);
}

static bool exists(const char *p) { return access(p, F_OK) == 0; }

/* A frame (3, h, w) in [-1, 1]: a moving gradient, plus hash noise when noisy (hard to compress). */
static void make_frame(pd_tensor *f, int h, int w, int index, bool noisy) {
    int64_t shape[3] = {3, h, w};
    PD_ASSERT(pd_tensor_alloc(f, PD_DTYPE_F32, 3, shape) == PD_OK);
    float *p = f->data;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float v = (float)((x + y + 7 * index + 20 * c) % 64) / 32.0f - 1.0f;
                if (noisy) v = (float)((((uint32_t)(x * 73856093u ^ y * 19349663u ^ index * 83492791u ^ c)) * 2654435761u) >> 24) / 127.5f - 1.0f;
                p[(c * h + y) * w + x] = v;
            }
}

static pd_status write_video(const char *path, int w, int h, int frames, bool noisy) {
    pd_video_writer *vw;
    PD_TRY(pd_video_writer_open(path, w, h, 16, 1, &vw));
    for (int i = 0; i < frames; i++) {
        pd_tensor f;
        make_frame(&f, h, w, i, noisy);
        pd_status st = pd_video_writer_add_frame(vw, &f);
        pd_tensor_free(&f);
        if (st != PD_OK) {
            pd_video_writer_abort(vw);
            return st;
        }
    }
    return pd_video_writer_close(vw);
}

static void test_mp4_faststart(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/clip.mp4", tmpdir);
    PD_CHECK_OK(write_video(path, 64, 48, 9, false));
    PD_CHECK(exists(path));
    PD_CHECK_MSG(dir_entries() == 1, "%d entries left in %s", dir_entries(), tmpdir);
    unsigned char head[64] = {0};
    FILE *f = fopen(path, "rb");
    PD_CHECK(f && fread(head, 1, sizeof head, f) == sizeof head);
    if (f) fclose(f);
    PD_CHECK(!memcmp(head + 4, "ftyp", 4));
    uint32_t ftyp = (uint32_t)head[0] << 24 | head[1] << 16 | head[2] << 8 | head[3];
    PD_CHECK_MSG(ftyp + 8 <= sizeof head && !memcmp(head + ftyp + 4, "moov", 4), "moov does not follow ftyp (no faststart)");
    struct stat sb;
    PD_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644);
    clear_dir();
}

static void test_png(void) {
    char path[512];
    pd_tensor f;
    snprintf(path, sizeof path, "%s/thumb.png", tmpdir);
    make_frame(&f, 30, 50, 0, false);
    PD_CHECK_OK(pd_image_write_png(path, &f));
    pd_tensor_free(&f);
    unsigned char head[24] = {0};
    FILE *fp = fopen(path, "rb");
    PD_CHECK(fp && fread(head, 1, sizeof head, fp) == sizeof head);
    if (fp) fclose(fp);
    PD_CHECK(!memcmp(head, "\x89PNG\r\n\x1a\n", 8) && !memcmp(head + 12, "IHDR", 4));
    PD_CHECK(head[16] == 0 && head[17] == 0 && head[18] == 0 && head[19] == 50); // width
    PD_CHECK(head[20] == 0 && head[21] == 0 && head[22] == 0 && head[23] == 30); // height
    PD_CHECK(dir_entries() == 1);
    clear_dir();
}

static void test_rgb_conversion(void) {
    int64_t shape[3] = {3, 1, 4};
    float v[12] = {-1.0f, 1.0f, 0.0f, -2.0f, 0.5f, 0.5f, 0.5f, 0.5f, 7.0f, -1.0f, -1.0f, -1.0f};
    pd_tensor f = pd_tensor_view(v, PD_DTYPE_F32, 3, shape);
    uint8_t rgb[12];
    pd_image_frame_to_rgb24(&f, rgb, 12);
    PD_CHECK(rgb[0] == 0 && rgb[1] == 191 && rgb[2] == 255); // pixel 0: r -1, g 0.5, b 7 (clamped)
    PD_CHECK(rgb[3] == 255 && rgb[6] == 128 && rgb[9] == 0);  // r of pixels 1..3: 1, 0 (127.5 rounds to even), -2
}

static void test_bad_arguments(void) {
    char path[512];
    pd_video_writer *vw = NULL;
    snprintf(path, sizeof path, "%s/bad.mp4", tmpdir);
    PD_CHECK_ERR(pd_video_writer_open(path, 63, 48, 16, 0, &vw), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_video_writer_open(path, 64, 47, 16, 0, &vw), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_video_writer_open(path, 64, 48, 0, 0, &vw), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_video_writer_open(path, 0, 48, 16, 0, &vw), PD_ERR_INVALID);
    PD_CHECK(dir_entries() == 0);
    /* frame of the wrong size, then zero frames at close: errors and no file */
    PD_CHECK_OK(pd_video_writer_open(path, 64, 48, 16, 0, &vw));
    pd_tensor f;
    make_frame(&f, 48, 62, 0, false);
    PD_CHECK_ERR(pd_video_writer_add_frame(vw, &f), PD_ERR_INVALID);
    pd_tensor_free(&f);
    PD_CHECK_ERR(pd_video_writer_close(vw), PD_ERR_INVALID);
    PD_CHECK(!exists(path));
    PD_CHECK_MSG(dir_entries() == 0, "%d entries left", dir_entries());
    /* abort after frames: nothing left */
    PD_CHECK_OK(pd_video_writer_open(path, 64, 48, 16, 0, &vw));
    make_frame(&f, 48, 64, 0, false);
    PD_CHECK_OK(pd_video_writer_add_frame(vw, &f));
    pd_tensor_free(&f);
    pd_video_writer_abort(vw);
    PD_CHECK(dir_entries() == 0);
}

static void test_unwritable_folder(void) {
    pd_video_writer *vw = NULL;
    pd_tensor f;
    /* /proc refuses new files even to root; a missing folder fails the same way */
    PD_CHECK_ERR(pd_video_writer_open("/proc/pipedit-test/out.mp4", 64, 48, 16, 0, &vw), PD_ERR_IO);
    PD_CHECK_ERR(pd_video_writer_open("/proc/out.mp4", 64, 48, 16, 0, &vw), PD_ERR_IO);
    PD_CHECK(strstr(pd_error_msg(), "/proc") != NULL);
    PD_CHECK(!exists("/proc/out.mp4"));
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/folder/out.mp4", tmpdir);
    PD_CHECK_ERR(pd_video_writer_open(path, 64, 48, 16, 0, &vw), PD_ERR_IO);
    make_frame(&f, 8, 8, 0, false);
    PD_CHECK_ERR(pd_image_write_png("/proc/thumb.png", &f), PD_ERR_IO);
    pd_tensor_free(&f);
}

/* Disk full: a child process with a 16 KiB file size limit (writes beyond it fail with EFBIG, as
 * on a full disk) writes a noisy video. Returns the child's status: 0 = failed cleanly with
 * PD_ERR_IO, 1 = unexpectedly succeeded, 2 = wrong error, 3 = a file was left behind. */
static int child_full_disk(int mode) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {16 * 1024, 16 * 1024};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 4;
    char path[512];
    pd_status st;
    if (mode == 0) {
        snprintf(path, sizeof path, "%s/full.mp4", tmpdir);
        st = write_video(path, 128, 96, 24, true);
    } else { // the sink alone, io_uring (1) or pwrite (2)
        snprintf(path, sizeof path, "%s/full.bin", tmpdir);
        pd_file_sink *s;
        st = pd_file_sink_open(path, mode == 2 ? PD_FILE_SINK_PWRITE : 0, &s);
        if (st != PD_OK) return 2;
        static char block[4096];
        for (int i = 0; st == PD_OK && i < 16; i++) st = pd_file_sink_write(s, (int64_t)i * 4096, block, sizeof block);
        if (st == PD_OK) st = pd_file_sink_commit(s);
        else pd_file_sink_abort(s);
    }
    if (st == PD_OK) return 1;
    fprintf(stderr, "  (expected) %s: %s\n", pd_status_name(st), pd_error_msg());
    if (st != PD_ERR_IO || !strstr(pd_error_msg(), "too large")) return 2;
    return exists(path) || dir_entries() ? 3 : 0;
}

static void test_disk_full(void) {
    for (int mode = 0; mode < 3; mode++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(child_full_disk(mode));
        int status = 0;
        PD_CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        PD_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "mode %d: child status %d", mode,
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        PD_CHECK(dir_entries() == 0);
        clear_dir();
    }
}

static void test_sink_roundtrip(void) {
    for (int mode = 0; mode < 2; mode++) {
        char path[512];
        snprintf(path, sizeof path, "%s/data.bin", tmpdir);
        pd_file_sink *s;
        PD_CHECK_OK(pd_file_sink_open(path, mode ? PD_FILE_SINK_PWRITE : 0, &s));
        if (mode == 0 && !pd_file_sink_uses_uring(s)) printf("  note: io_uring unavailable here, pwrite fallback in use\n");
        static unsigned char buf[3][100000];
        for (int k = 0; k < 3; k++) memset(buf[k], 'a' + k, sizeof buf[k]);
        /* out of order, then an overwrite after a flush (as the muxer's seek-back does) */
        PD_CHECK_OK(pd_file_sink_write(s, 200000, buf[2], sizeof buf[2]));
        PD_CHECK_OK(pd_file_sink_write(s, 0, buf[0], sizeof buf[0]));
        PD_CHECK_OK(pd_file_sink_write(s, 100000, buf[1], sizeof buf[1]));
        PD_CHECK(!exists(path));
        PD_CHECK_OK(pd_file_sink_flush(s));
        PD_CHECK_OK(pd_file_sink_write(s, 99998, "XYZW", 4));
        PD_CHECK_OK(pd_file_sink_commit(s));
        FILE *f = fopen(path, "rb");
        static unsigned char got[300000];
        PD_CHECK(f && fread(got, 1, sizeof got, f) == sizeof got);
        if (f) fclose(f);
        PD_CHECK(got[0] == 'a' && got[99997] == 'a' && !memcmp(got + 99998, "XYZW", 4) && got[100002] == 'b' &&
                 got[199999] == 'b' && got[200000] == 'c' && got[299999] == 'c');
        PD_CHECK(dir_entries() == 1);
        clear_dir();
    }
}

int main(void) {
    setup_dir();
    PD_RUN(test_rgb_conversion);
    PD_RUN(test_sink_roundtrip);
    PD_RUN(test_mp4_faststart);
    PD_RUN(test_png);
    PD_RUN(test_bad_arguments);
    PD_RUN(test_unwritable_folder);
    PD_RUN(test_disk_full);
    rmdir(tmpdir);
    return pd_test_summary();
}
