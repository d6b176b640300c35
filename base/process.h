/* Child processes that die with their parent. */
#ifndef PD_BASE_PROCESS_H
#define PD_BASE_PROCESS_H

#include <sys/types.h>

/* Call first thing in a child right after fork, with the parent's pid taken before the fork: asks
 * for SIGKILL when the parent (the thread that forked) dies, and closes the race where it died before
 * that request: returns -1 when the child is already orphaned (it should exit at once), 0 when set,
 * else the errno of prctl. Async-signal-safe (usable between fork and exec in a threaded process). */
int pd_process_die_with_parent(pid_t parent);

#endif
