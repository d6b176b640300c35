/* The DeDiVAE group split: how many of N workers form the decode group.
 *
 * Rule (PipeDiT): n_decode = round(T_dec / (T_dec + T_den) * N), clamped to [1, N - 1] when N >= 2,
 * where T_den is the time a job spends on a denoise worker (its text encoding plus its denoising) and
 * T_dec the time of its decode, both measured on one worker. With N = 1 there is no split (one worker
 * runs every stage): the result is 0. A pinned size (> 0) wins over the measurement, clamped likewise.
 * Without usable times (either <= 0 or not finite) the split is 1 decode worker. */
#ifndef PD_SCHEDULER_SPLIT_H
#define PD_SCHEDULER_SPLIT_H

int pd_split_decode_workers(int n_workers, int pinned, double t_denoise, double t_decode);

/* The split to move to from `current` decode workers as live timings come in: like
 * pd_split_decode_workers, but the unrounded target T_dec / (T_dec + T_den) * N must clear the rounding
 * boundary by PD_SPLIT_HYSTERESIS before the split moves, so timings that hover around a boundary do not
 * make workers switch roles back and forth. A pinned size is returned as is (clamped). */
#define PD_SPLIT_HYSTERESIS 0.1
int pd_split_replan(int n_workers, int pinned, int current, double t_denoise, double t_decode);

#endif
