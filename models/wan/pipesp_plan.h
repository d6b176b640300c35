/* PipeSP's chunk plan: a model of one layer's self-attention schedule on one rank, and the rule that
 * picks the default chunk size g from four measured times (models/wan/dit_sp.h, "Default g"). Both calls
 * are pure: no allocation, no I/O, no state, so every rank given the same numbers computes the same g.
 *
 * The schedule modelled (dit_sp.h, "PipeSP"). A rank owns h head slots; a layer's attention runs for B
 * batch elements in chunks of g slots, element-major: element b's chunks j = 0 .. m - 1, m = ceil(h/g),
 * chunk j holding g_j = min(g, h - j*g) slots. One communication thread runs transfers one at a time
 * in the order they were queued: first the three Q, K, V transfers of every chunk, in chunk order (all
 * queued up front), then each chunk's output transfer, queued when that chunk's attention ends. A
 * chunk's attention starts when the previous chunk's attention has ended and its own three Q, K, V
 * transfers are done. A chunk of k slots costs a0 + a1*k seconds of attention, and each of its four
 * transfers costs c0 + c1*k seconds.
 */
#ifndef PD_PIPESP_PLAN_H
#define PD_PIPESP_PLAN_H

#include <stdint.h>

/* How much faster (as a fraction of the best predicted finish time) a smaller g must be predicted
 * to be before it is chosen over a larger one. Timings on a shared machine move by a few percent
 * between runs; differences below this are treated as ties. */
#define PD_PIPESP_PLAN_MARGIN 0.03

/* The largest PipeSP chunk (g) a caller may ask for (configs, the control protocol, the CLI). */
#define PD_SP_MAX_CHUNK 4096

/* The finish time (seconds from the start of the layer) of the schedule above: when the last output
 * transfer ends. g is clamped to h. B >= 1, h >= 1, g >= 1 and finite costs >= 0 are required (a
 * broken requirement aborts through PD_ASSERT). O(B * ceil(h/g)) time, O(1) memory. */
double pd_pipesp_simulate(int64_t B, int h, int g, double a0, double a1, double c0, double c1);

/* The chunk size g in 1..h for batch B (>= 1) and h head slots per rank, from the times of one
 * chunk's attention and of one chunk's output transfer measured at g = 1 (t_att_1, t_comm_1) and at
 * g = h (t_att_h, t_comm_h).
 *
 * Each time is fitted as a line through its two points, t(k) = x0 + x1*k with x1 = (t_h - t_1)/(h-1)
 * and x0 = t_1 - x1, each clamped at 0 (a measurement where t_h < t_1 is noise: x1 = 0). With f(g) the
 * pd_pipesp_simulate finish time of g and f* the smallest f over g = 1..h, the result is the largest g
 * with f(g) <= (1 + PD_PIPESP_PLAN_MARGIN) * f*: a smaller g wins only when every larger g is
 * predicted slower than the best by more than the margin. So a near tie goes to the larger g (fewer,
 * bigger messages), and measurement noise well below the margin does not move the choice.
 *
 * h <= 1 returns 1. A time that is negative, NaN or infinite carries no information: the result is
 * then h (one chunk, plain Ulysses). */
int pd_pipesp_choose_chunk(int64_t B, int h, double t_att_1, double t_att_h, double t_comm_1, double t_comm_h);

#endif
