/* The DeDiVAE group split: how many of N workers form the decode group.
 *
 * Rule (PipeDiT): n_decode = round(T_dec / (T_dec + T_den) * N), clamped to [1, N - 1] when N >= 2,
 * where T_den is the time a job spends on a denoise worker (its text encoding plus its denoising) and
 * T_dec the time of its decode, both measured on one worker. With N = 1 there is no split (one worker
 * runs every stage): the result is 0. A pinned size (> 0) wins over the measurement, clamped likewise.
 * Without usable times (either <= 0 or not finite) the split is 1 decode worker. */
#ifndef PD_SCHEDULER_SPLIT_H
#define PD_SCHEDULER_SPLIT_H

#include <stdbool.h>

#include "base/status.h"

int pd_split_decode_workers(int n_workers, int pinned, double t_denoise, double t_decode);

/* The split to move to from `current` decode workers as live timings come in: like
 * pd_split_decode_workers, but the unrounded target T_dec / (T_dec + T_den) * N must clear the rounding
 * boundary by PD_SPLIT_HYSTERESIS before the split moves, so timings that hover around a boundary do not
 * make workers switch roles back and forth. A pinned size is returned as is (clamped). */
#define PD_SPLIT_HYSTERESIS 0.1
int pd_split_replan(int n_workers, int pinned, int current, double t_denoise, double t_decode);

/* ---- Aco (models/wan/aco.h): decode workers lend themselves to the denoise ranks when idle ---- */

/* auto: pairs form and each lender lends the share its measurements say pays (possibly none);
 * on: pairs form whenever a decode worker is idle and every self-attention lends half its heads;
 * off: never. */
typedef enum pd_aco_mode { PD_ACO_AUTO = 0, PD_ACO_ON, PD_ACO_OFF } pd_aco_mode;
/* "auto", "on", "off". */
const char *pd_aco_mode_name(pd_aco_mode m);
/* Parses a mode name; PD_ERR_INVALID naming the value otherwise. */
pd_status pd_aco_mode_parse(const char *s, pd_aco_mode *out);

/* Which decode worker helps which denoise rank. Slots 0..n-1; denoises[i] / decodes[i] say what slot i
 * does (a slot doing both, the single worker of N = 1, takes no part). Rule: the k-th denoise slot in
 * slot order gets the k-th decode slot in slot order, one helper per rank at most; ranks past the
 * number of decode workers get none (-1) and compute every head themselves. SP groups occupy the first
 * slots, so with fewer decode workers than ranks the first group's ranks are helped first.
 * helper_of[i] is the helper's slot for denoise slot i, -1 otherwise. */
void pd_split_aco_helpers(int n, const bool *denoises, const bool *decodes, int *helper_of);

/* Predicted jobs per second of n_workers split into n_dec decode workers (1..n-1) and the rest
 * denoising, where T_den / T_dec are one job's stage times on one worker without Aco and `speedup`
 * (>= 1) is how much faster a denoise rank runs while its helper is idle all the time. The
 * min(n_den, n_dec) helped ranks speed up in proportion to their helper's idle fraction
 * u = 1 - X T_dec / n_dec (X the job rate), so X solves X = (n_den + h g u) / T_den, g = speedup - 1:
 *   X = min(n_dec / T_dec, (n_den + h g) / (T_den + h g T_dec / n_dec)).
 * With speedup 1 this is min(n_den / T_den, n_dec / T_dec), the DeDiVAE balance. Inputs must be
 * finite, times > 0 (a broken requirement aborts). */
double pd_split_aco_throughput(int n_workers, int n_dec, double t_denoise, double t_decode, double speedup);

/* The split to move to with Aco. Without a measured gain (speedup <= 1, or times unusable) it is
 * pd_split_replan's answer. Otherwise the target is the n_dec with the highest predicted throughput
 * (the smaller one on a tie); a pinned size wins; the split moves from `current` only when the target
 * is predicted at least PD_SPLIT_ACO_GAIN faster than staying. With Aco the decode workers' idle time
 * is not wasted, so the best split can hold more decode workers than the DeDiVAE rule gives. */
#define PD_SPLIT_ACO_GAIN 0.05
int pd_split_replan_aco(int n_workers, int pinned, int current, double t_denoise, double t_decode, double speedup);

#endif
