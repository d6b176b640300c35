/* Running one command over N local worker processes (`pipedit dit --sp N`, `pipedit generate --sp N`):
 * fork the ranks, wait for them, and turn any rank's failure into a clear message and a non-zero
 * exit without a hang. */
#ifndef PD_TOOLS_SP_LAUNCH_H
#define PD_TOOLS_SP_LAUNCH_H

/* Fills name (64 bytes) with an SP group base name unique to this process and run ("pdsp-<pid>-<run>";
 * workers/sp_group.h derives its communicators' names from it), then forks `ranks` children
 * (1..64), so each sees the name (ud may hold the buffer); child r runs rank_main(ud, r) and exits
 * with its return value.
 * Waits for all of them. When one fails (non-zero exit or a signal), the others are sent SIGTERM at
 * once (so none waits out a communicator timeout), every rank that failed on its own is reported on
 * stderr as "<cmd>: rank R of N was killed by signal S" / "failed (exit status X)", and the shared-
 * memory segments of the group `name` are removed (a killed rank 0 cannot). Returns 0 when every
 * rank exited 0, else 1. stdio is flushed before forking. */
int pd_sp_launch(const char *cmd, int ranks, int (*rank_main)(void *ud, int rank), void *ud, char name[64]);

/* For the fault tests: when PIPEDIT_SP_FAULT_RANK equals rank, the calling process kills itself
 * with SIGKILL (as a crashed worker would). Call it once the rank has joined its communicators. */
void pd_sp_launch_fault_point(int rank);

#endif
