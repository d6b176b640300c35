#include "tools/aco_launch.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/process.h"

static int helper_main(const char *name, int threads, double timeout_s) {
    pd_backend *be = NULL;
    pd_comm *c = NULL;
    const char *fault = getenv("PIPEDIT_ACO_FAULT_AFTER");
    pd_aco_serve_options o = {.kill_after = fault && *fault ? atoi(fault) : 0};
    pd_status st = pd_backend_cpu_create(threads, &be);
    if (st == PD_OK) st = pd_comm_shm_create(name, 1, 2, timeout_s, &c);
    if (st == PD_OK) st = pd_aco_serve(c, 0, be, &o, NULL);
    if (st != PD_OK) fprintf(stderr, "aco helper: %s\n", pd_error_msg());
    pd_comm_destroy(c);
    pd_backend_free(be);
    return st == PD_OK ? 0 : 1;
}

pd_status pd_aco_local_start(pd_wan_dit *dit, pd_backend *be, int helper_threads, int share, double timeout_s,
                             pd_aco_local *out) {
    static int run;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "pdaco-%d-%d", (int)getpid(), run++);
    fflush(NULL);
    const pid_t self = getpid();
    pid_t kid = fork();
    if (kid < 0) return pd_error_set(PD_ERR_IO, "aco: could not start the helper: %s", strerror(errno));
    if (kid == 0) _exit(pd_process_die_with_parent(self) < 0 ? 1 : helper_main(out->name, helper_threads, timeout_s));
    out->pid = kid;
    pd_status st = pd_comm_shm_create(out->name, 0, 2, timeout_s, &out->comm);
    if (st == PD_OK) st = pd_aco_lender_create(out->comm, 1, be, share, &out->lender);
    if (st != PD_OK) {
        pd_error_prefix(st, "aco: joining the helper");
        kill(kid, SIGKILL);
        pd_aco_local_stop(out, NULL);
        return st;
    }
    out->dit = dit;
    pd_wan_dit_set_self_attention(dit, pd_aco_attention, out->lender);
    return PD_OK;
}

pd_status pd_aco_local_stop(pd_aco_local *a, pd_aco_stats *stats) {
    if (a->dit) pd_wan_dit_set_self_attention(a->dit, NULL, NULL);
    if (a->lender) {
        pd_aco_lender_finish(a->lender);
        if (stats) pd_aco_lender_stats(a->lender, stats);
    }
    if (a->pid > 0) {
        int ws;
        while (waitpid(a->pid, &ws, 0) < 0 && errno == EINTR) {}
    }
    pd_aco_lender_free(a->lender);
    pd_comm_destroy(a->comm);
    pd_comm_shm_unlink(a->name);
    memset(a, 0, sizeof *a);
    return PD_OK;
}
