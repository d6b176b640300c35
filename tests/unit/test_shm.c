/* The shared-memory data plane: a tensor written by one process is read bit-exactly by another;
 * names are exclusive; forged or truncated headers are rejected; unlink removes the segment; the
 * sweep removes the segments a killed process left and nothing a live one uses. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/test.h"
#include "comm/shm.h"

static char name[PD_SHM_NAME_MAX];

static void test_cross_process(void) {
    pd_shm_job_name(name, (int)getpid(), 3, 7, "latent");
    PD_CHECK(name[0] == '/' && strstr(name, "-3-7-latent"));
    pd_shm_unlink(name);
    int64_t shape[4] = {16, 3, 5, 7}; // (C, T, H, W)
    pid_t pid = fork();
    if (pid == 0) {
        /* The producer: fills element i with i * 0.5 - 3 (exact in f32) and exits. */
        pd_shm s;
        if (pd_shm_create(name, PD_DTYPE_F32, 4, shape, &s)) _exit(1);
        float *d = s.tensor.data;
        for (int64_t i = 0; i < pd_tensor_numel(&s.tensor); i++) d[i] = (float)i * 0.5f - 3.0f;
        pd_shm_close(&s);
        _exit(0);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    PD_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pd_shm r;
    PD_CHECK_OK(pd_shm_open(name, &r));
    PD_CHECK(r.tensor.ndim == 4 && r.tensor.dtype == PD_DTYPE_F32);
    for (int i = 0; i < 4; i++) PD_CHECK(r.tensor.shape[i] == shape[i]);
    PD_CHECK(pd_tensor_is_contiguous(&r.tensor));
    PD_CHECK(((uintptr_t)r.tensor.data & 63) == 0);
    const float *d = r.tensor.data;
    int bad = 0;
    for (int64_t i = 0; i < 16 * 3 * 5 * 7; i++) bad += d[i] != (float)i * 0.5f - 3.0f;
    PD_CHECK(bad == 0);
    pd_shm_close(&r);
    /* Names are exclusive: a second create of a live name fails. */
    pd_shm dup;
    PD_CHECK_ERR(pd_shm_create(name, PD_DTYPE_F32, 4, shape, &dup), PD_ERR_IO);
    pd_shm_unlink(name);
    PD_CHECK_ERR(pd_shm_open(name, &r), PD_ERR_NOT_FOUND);
    pd_shm_unlink(name); /* unlinking twice is harmless */
}

static void test_create_from_strided(void) {
    /* A transposed (non-contiguous) source lands contiguous in the segment. */
    float src[6] = {1, 2, 3, 4, 5, 6}; // (2, 3)
    int64_t sh[2] = {2, 3};
    pd_tensor t = pd_tensor_view(src, PD_DTYPE_F32, 2, sh);
    pd_tensor tt = t;
    tt.shape[0] = 3;
    tt.shape[1] = 2;
    tt.stride[0] = 4;
    tt.stride[1] = 12; // (3, 2) transpose view
    pd_shm_job_name(name, (int)getpid(), 0, 8, "cond");
    pd_shm_unlink(name);
    pd_shm s;
    PD_CHECK_OK(pd_shm_create_from(name, &tt, &s));
    pd_shm_close(&s);
    pd_shm r;
    PD_CHECK_OK(pd_shm_open(name, &r));
    const float *d = r.tensor.data;
    const float want[6] = {1, 4, 2, 5, 3, 6};
    PD_CHECK(r.tensor.shape[0] == 3 && r.tensor.shape[1] == 2);
    PD_CHECK(!memcmp(d, want, sizeof want));
    pd_shm_close(&r);
    pd_shm_unlink(name);
}

/* Writes a raw segment of n bytes whose header the test then corrupts. */
static void *raw_segment(const char *nm, size_t n) {
    shm_unlink(nm);
    int fd = shm_open(nm, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)n) != 0) return NULL;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static void test_bad_headers(void) {
    pd_shm_job_name(name, (int)getpid(), 0, 9, "bad");
    pd_shm s, r;
    int64_t shape[2] = {4, 8};
    /* A good segment, then each header field corrupted in turn. */
    struct { size_t off; uint64_t val; int width; const char *what; } cases[] = {
        {0, 0x12345678u, 4, "magic"},
        {4, 99, 4, "version"},
        {8, 77, 4, "dtype"},
        {12, 6, 4, "ndim"},
        {16, (uint64_t)-1, 8, "negative dim"},
        {16, (uint64_t)1 << 40, 8, "dim over the limit"},
        {56, 4 * 8 * 4 + 4, 8, "byte count vs shape"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pd_shm_unlink(name);
        PD_CHECK_OK(pd_shm_create(name, PD_DTYPE_F32, 2, shape, &s));
        uint8_t *h = s.base;
        memcpy(h + cases[c].off, &cases[c].val, (size_t)cases[c].width);
        pd_shm_close(&s);
        pd_status st = pd_shm_open(name, &r);
        PD_CHECK_MSG(st == PD_ERR_FORMAT, "%s: got %s", cases[c].what, pd_status_name(st));
        PD_CHECK_MSG(pd_error_msg()[0] && strstr(pd_error_msg(), name), "%s: message '%s' names the segment",
                     cases[c].what, pd_error_msg());
    }
    /* A header that claims more data than the segment holds. */
    pd_shm_unlink(name);
    PD_CHECK_OK(pd_shm_create(name, PD_DTYPE_F32, 2, shape, &s));
    uint8_t hdr[64];
    memcpy(hdr, s.base, 64);
    pd_shm_close(&s);
    pd_shm_unlink(name);
    uint8_t *p = raw_segment(name, 64 + 16); /* header for 128 data bytes, only 16 present */
    PD_CHECK(p != NULL);
    if (p) {
        memcpy(p, hdr, 64);
        munmap(p, 80);
    }
    PD_CHECK_ERR(pd_shm_open(name, &r), PD_ERR_FORMAT);
    /* Smaller than a header. */
    pd_shm_unlink(name);
    p = raw_segment(name, 10);
    if (p) munmap(p, 10);
    PD_CHECK_ERR(pd_shm_open(name, &r), PD_ERR_FORMAT);
    pd_shm_unlink(name);
    /* Bad names and shapes on create. */
    PD_CHECK_ERR(pd_shm_create("no-slash", PD_DTYPE_F32, 2, shape, &s), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_shm_create("/a/b", PD_DTYPE_F32, 2, shape, &s), PD_ERR_INVALID);
    int64_t neg[2] = {4, -1};
    PD_CHECK_ERR(pd_shm_create(name, PD_DTYPE_F32, 2, neg, &s), PD_ERR_INVALID);
    int64_t huge[2] = {1 << 20, 1 << 20};
    PD_CHECK_ERR(pd_shm_create(name, PD_DTYPE_F32, 2, huge, &s), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_shm_open(name, &r), PD_ERR_NOT_FOUND); /* failed creates leave nothing */
}

static bool exists(const char *n) {
    int fd = shm_open(n, O_RDONLY, 0);
    if (fd >= 0) close(fd);
    return fd >= 0;
}

static void test_sweep_stale(void) {
    const int64_t shape[1] = {4};
    pd_shm s;
    /* a pid that no longer exists: a child that has exited and been reaped */
    pid_t gone = fork();
    if (gone == 0) _exit(0);
    waitpid(gone, NULL, 0);
    char mine[PD_SHM_NAME_MAX], other[PD_SHM_NAME_MAX], dead[PD_SHM_NAME_MAX], parent[PD_SHM_NAME_MAX];
    pd_shm_job_name(mine, (int)getpid(), 41, 1, "cond");   /* this pid, this instance: a predecessor's */
    pd_shm_job_name(other, (int)getpid(), 42, 1, "cond");  /* this pid, another scheduler of it: live */
    pd_shm_job_name(dead, (int)gone, 41, 2, "latent");     /* a process that is gone */
    pd_shm_job_name(parent, (int)getppid(), 41, 3, "cond"); /* a live process */
    const char *all[] = {mine, other, dead, parent};
    for (size_t i = 0; i < 4; i++) {
        pd_shm_unlink(all[i]);
        PD_CHECK_OK(pd_shm_create(all[i], PD_DTYPE_F32, 1, shape, &s));
        pd_shm_close(&s); /* left behind, as a killed process leaves it */
    }
    PD_CHECK(pd_shm_sweep_stale((int)getpid(), 41) >= 2);
    PD_CHECK(!exists(mine) && !exists(dead) && exists(other) && exists(parent));
    PD_CHECK_OK(pd_shm_create(mine, PD_DTYPE_F32, 1, shape, &s)); /* the name is free again */
    pd_shm_close(&s);
    for (size_t i = 0; i < 4; i++) pd_shm_unlink(all[i]);
}

int main(void) {
    PD_RUN(test_cross_process);
    PD_RUN(test_create_from_strided);
    PD_RUN(test_bad_headers);
    PD_RUN(test_sweep_stale);
    return pd_test_summary();
}
