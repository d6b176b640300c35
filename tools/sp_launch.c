#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/process.h"
#include "tools/sp_launch.h"
#include "workers/sp_group.h"

#define PD_SP_LAUNCH_MAX 64

static void launch_name(char name[64]) {
    static int run;
    snprintf(name, 64, "pdsp-%d-%d", (int)getpid(), run++);
}

void pd_sp_launch_fault_point(int rank) {
    const char *fault = getenv("PIPEDIT_SP_FAULT_RANK");
    if (fault && *fault && atoi(fault) == rank) raise(SIGKILL);
}

int pd_sp_launch(const char *cmd, int ranks, int (*rank_main)(void *ud, int rank), void *ud, char name[64]) {
    if (ranks < 1 || ranks > PD_SP_LAUNCH_MAX) {
        fprintf(stderr, "%s: %d ranks is outside 1..%d\n", cmd, ranks, PD_SP_LAUNCH_MAX);
        return 1;
    }
    launch_name(name);
    pid_t kids[PD_SP_LAUNCH_MAX];
    int started = 0, rc = 0, status[PD_SP_LAUNCH_MAX];
    bool failed[PD_SP_LAUNCH_MAX] = {false};
    fflush(NULL);
    const pid_t self = getpid();
    for (; started < ranks; started++) {
        pid_t k = fork();
        if (k < 0) {
            fprintf(stderr, "%s: could not start rank %d: %s\n", cmd, started, strerror(errno));
            rc = 1;
            break;
        }
        if (k == 0) {
            if (pd_process_die_with_parent(self) < 0) _exit(1); /* the command is gone */
            int r = rank_main(ud, started);
            fflush(NULL);
            _exit(r);
        }
        kids[started] = k;
    }
    bool stopped = rc != 0;
    if (stopped)
        for (int i = 0; i < started; i++) kill(kids[i], SIGTERM);
    for (int left = started; left > 0;) {
        int ws;
        pid_t k = waitpid(-1, &ws, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int r = -1;
        for (int i = 0; i < started; i++)
            if (kids[i] == k) r = i;
        if (r < 0) continue;
        kids[r] = -1;
        left--;
        status[r] = ws;
        /* ranks stopped by our SIGTERM are not failures of their own */
        failed[r] = !(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) && !(stopped && WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM);
        if (!failed[r] || stopped) continue;
        rc = 1;
        stopped = true;
        for (int i = 0; i < started; i++)
            if (kids[i] > 0) kill(kids[i], SIGTERM);
    }
    for (int r = 0; r < started; r++) {
        if (!failed[r]) continue;
        if (WIFSIGNALED(status[r]))
            fprintf(stderr, "%s: rank %d of %d was killed by signal %d\n", cmd, r, ranks, WTERMSIG(status[r]));
        else
            fprintf(stderr, "%s: rank %d of %d failed (exit status %d)\n", cmd, r, ranks, WEXITSTATUS(status[r]));
    }
    if (stopped) {
        fprintf(stderr, "%s: the run over %d ranks failed; the other ranks were stopped\n", cmd, ranks);
        pd_sp_group_unlink(name); /* rank 0 could not */
    }
    return rc;
}
