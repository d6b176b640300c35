#include "scheduler/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/process.h"

extern char **environ;

/* Between fork and exec only async-signal-safe calls: the daemon is multi-threaded. */
static _Noreturn void child(const char *exe, char *const argv[], int keep_fd, pid_t parent, int report_fd) {
    int e = pd_process_die_with_parent(parent);
    if (e < 0) _exit(127); /* the daemon died before the request: nobody to work for */
    if (!e && setpgid(0, 0) != 0) e = errno;
    static const int dfl[] = {SIGINT, SIGTERM, SIGPIPE, SIGCHLD};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (size_t i = 0; !e && i < sizeof dfl / sizeof dfl[0]; i++)
        if (sigaction(dfl[i], &sa, NULL) != 0) e = errno;
    sigset_t none;
    sigemptyset(&none);
    if (!e && sigprocmask(SIG_SETMASK, &none, NULL) != 0) e = errno;
    if (!e && keep_fd >= 3 && fcntl(keep_fd, F_SETFD, 0) != 0) e = errno;
    if (!e) {
        execve(exe, argv, environ);
        e = errno;
    }
    (void)!write(report_fd, &e, sizeof e);
    _exit(127);
}

pd_status pd_spawn_worker(const char *exe, char *const argv[], int keep_fd, pid_t *pid) {
    /* The child reports a failure before exec through a close-on-exec pipe; EOF means exec worked. */
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) return pd_error_set(PD_ERR_IO, "spawn %s worker: pipe: %s", exe, strerror(errno));
    pid_t parent = getpid();
    pid_t k = fork();
    if (k == 0) child(exe, argv, keep_fd, parent, pfd[1]);
    int fork_err = errno;
    close(pfd[1]);
    if (k < 0) {
        close(pfd[0]);
        return pd_error_set(PD_ERR_IO, "spawn %s worker: fork: %s", exe, strerror(fork_err));
    }
    int e = 0;
    ssize_t n;
    do n = read(pfd[0], &e, sizeof e);
    while (n < 0 && errno == EINTR);
    close(pfd[0]);
    if (n > 0) {
        waitpid(k, NULL, 0);
        return pd_error_set(PD_ERR_IO, "spawn %s worker: %s", exe, strerror(e));
    }
    *pid = k;
    return PD_OK;
}
