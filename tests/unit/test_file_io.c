/* base/file_io: atomic replacement, the all-or-nothing append and the folder lock, including their
 * failure paths. Failures are made with the file size limit (RLIMIT_FSIZE with SIGXFSZ ignored, so a
 * write is cut short and then refused with EFBIG, as on a full disk). */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "base/file_io.h"
#include "tests/unit/test.h"

static char dir[256];

/* Files in dir other than the ones named (NULL-terminated): temporary files left behind. */
static int stray_files(const char *const keep[]) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        bool kept = false;
        for (int i = 0; keep[i]; i++) kept |= !strcmp(e->d_name, keep[i]);
        if (!kept) {
            fprintf(stderr, "  left behind: %s\n", e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

static bool file_is(const char *path, const char *want) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == strlen(want) && !memcmp(buf, want, n);
}

/* Limits files this process writes to `bytes` (0 restores the limit saved at the first call). */
static void limit_file_size(rlim_t bytes) {
    static struct rlimit saved;
    static bool have;
    if (!have) {
        getrlimit(RLIMIT_FSIZE, &saved);
        have = true;
        signal(SIGXFSZ, SIG_IGN);
    }
    struct rlimit r = saved;
    if (bytes) r.rlim_cur = bytes;
    PD_CHECK(setrlimit(RLIMIT_FSIZE, &r) == 0);
}

static void test_atomic_write(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/out.json", dir);
    PD_CHECK_OK(pd_file_write_atomic(path, "first\n", 6, 0640));
    PD_CHECK(file_is(path, "first\n"));
    struct stat sb;
    PD_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0640);
    PD_CHECK_OK(pd_file_write_atomic(path, "second\n", 7, 0644));
    PD_CHECK(file_is(path, "second\n"));
    PD_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644);
    json_t *j = json_pack("{s:i}", "a", 1);
    PD_CHECK_OK(pd_file_write_json(path, j, JSON_COMPACT, 0644));
    json_decref(j);
    PD_CHECK(file_is(path, "{\"a\":1}\n"));
    PD_CHECK(stray_files((const char *const[]){"out.json", NULL}) == 0);
}

static void test_atomic_write_failure_keeps_old_file(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/keep.txt", dir);
    PD_CHECK_OK(pd_file_write_atomic(path, "old contents\n", 13, 0644));
    char big[8192];
    memset(big, 'x', sizeof big);
    limit_file_size(1000);
    PD_CHECK_ERR(pd_file_write_atomic(path, big, sizeof big, 0644), PD_ERR_IO);
    limit_file_size(0);
    PD_CHECK(file_is(path, "old contents\n"));
    /* Opened, written, then abandoned. */
    pd_file_atomic a;
    PD_CHECK_OK(pd_file_atomic_open(&a, path));
    PD_CHECK_OK(pd_file_write_all(a.fd, "partial", 7, a.tmp));
    pd_file_atomic_abort(&a);
    pd_file_atomic_abort(&a); /* a second abort is a no-op */
    PD_CHECK(file_is(path, "old contents\n"));
    /* A folder that does not exist: nothing created anywhere. */
    char missing[320];
    snprintf(missing, sizeof missing, "%s/no/such/file", dir);
    PD_CHECK_ERR(pd_file_write_atomic(missing, "x", 1, 0644), PD_ERR_IO);
    PD_CHECK_ERR(pd_file_write_atomic("", "x", 1, 0644), PD_ERR_INVALID);
    PD_CHECK(stray_files((const char *const[]){"out.json", "keep.txt", NULL}) == 0);
}

static void test_append_all_or_nothing(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/log", dir);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    PD_CHECK(fd >= 0);
    PD_CHECK_OK(pd_file_append(fd, "one\n", 4, true, path));
    char big[4096];
    memset(big, 'y', sizeof big);
    big[sizeof big - 1] = '\n';
    limit_file_size(100); /* the write gets 96 bytes in, then EFBIG */
    PD_CHECK_ERR(pd_file_append(fd, big, sizeof big, true, path), PD_ERR_IO);
    limit_file_size(0);
    PD_CHECK(file_is(path, "one\n"));
    PD_CHECK_OK(pd_file_append(fd, "two\n", 4, false, path));
    PD_CHECK(file_is(path, "one\ntwo\n"));
    close(fd);
    unlink(path);
}

static void test_lock(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/x.lock", dir);
    int fd, fd2;
    long holder;
    PD_CHECK_OK(pd_file_lock(path, &fd, &holder));
    PD_CHECK(fd >= 3 && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
    PD_CHECK(pd_file_lock_holder(path) == (long)getpid());
    /* flock locks belong to open files: a second open in the same process is refused too. */
    PD_CHECK_ERR(pd_file_lock(path, &fd2, &holder), PD_ERR_BUSY);
    PD_CHECK(fd2 == -1 && holder == (long)getpid());
    PD_CHECK_MSG(strstr(pd_error_msg(), path) != NULL, "message does not name the file: %s", pd_error_msg());
    /* A copy of the descriptor (what a worker inherits) keeps it locked after the original closes. */
    int copy = dup(fd);
    close(fd);
    PD_CHECK_ERR(pd_file_lock(path, &fd2, &holder), PD_ERR_BUSY);
    close(copy);
    PD_CHECK_OK(pd_file_lock(path, &fd2, &holder));
    close(fd2);
    unlink(path);
}

int main(void) {
    if (!pd_test_scratch_dir(dir, sizeof dir, "pd_file_io")) return 1;
    PD_RUN(test_atomic_write);
    PD_RUN(test_atomic_write_failure_keeps_old_file);
    PD_RUN(test_append_all_or_nothing);
    PD_RUN(test_lock);
    pd_test_rmtree(dir);
    return pd_test_summary();
}
