/* Starting worker processes that die with the daemon.
 *
 * The child gets a parent-death signal (SIGKILL) right after fork, before it runs the worker program,
 * so a daemon killed outright (SIGKILL, OOM killer, crash) takes its workers with it instead of leaving
 * them running, orphaned, on the devices. The race where the daemon dies between fork and prctl is
 * closed by comparing getppid() with the daemon's pid taken before fork: an already orphaned child
 * exits at once.
 *
 * Linux sends the parent-death signal when the *thread* that forked the child exits, not only when the
 * whole process does: a thread that spawns workers must outlive them (stop and reap them before it
 * returns). */
#ifndef PD_SCHEDULER_SPAWN_H
#define PD_SCHEDULER_SPAWN_H

#include <sys/types.h>

#include "base/status.h"

/* Starts exe with argv (argv[0] first, NULL-terminated) and the daemon's environment, in a process
 * group of its own, with every signal unblocked and SIGINT, SIGTERM, SIGPIPE and SIGCHLD at their
 * defaults. keep_fd, when 3 or higher, is left open in the child (every other descriptor the daemon
 * marked close-on-exec is closed): the data folder's lock, so that the folder stays locked as long as
 * any worker of this daemon lives. *pid receives the child's pid. PD_ERR_IO naming exe when fork or
 * exec fails (the child is then reaped). */
pd_status pd_spawn_worker(const char *exe, char *const argv[], int keep_fd, pid_t *pid);

#endif
