/* The scheduler's pure placement rules: which decode worker helps which denoise rank (Aco), and the Aco
 * modes. The DeDiVAE split itself is planned by plan/online.h (pd_plan_online_revise, from the cost
 * model corrected by measured stage times). */
#ifndef PD_SCHEDULER_SPLIT_H
#define PD_SCHEDULER_SPLIT_H

#include <stdbool.h>

#include "base/status.h"

/* ---- Aco (models/wan/aco.h): decode workers lend themselves to the denoise ranks when idle ---- */

/* auto: pairs form and each lender lends the share the live plan (plan/online.h) says pays (none: no
 * pairs form);
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

#endif
