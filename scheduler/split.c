#include "scheduler/split.h"

#include <string.h>

static const char *const aco_mode_names[] = {"auto", "on", "off"};

const char *pd_aco_mode_name(pd_aco_mode m) { return m >= PD_ACO_AUTO && m <= PD_ACO_OFF ? aco_mode_names[m] : "?"; }

pd_status pd_aco_mode_parse(const char *s, pd_aco_mode *out) {
    for (int i = PD_ACO_AUTO; i <= PD_ACO_OFF; i++)
        if (s && !strcmp(s, aco_mode_names[i])) {
            *out = (pd_aco_mode)i;
            return PD_OK;
        }
    return pd_error_set(PD_ERR_INVALID, "aco: '%s' is not auto, on or off", s ? s : "(null)");
}

void pd_split_aco_helpers(int n, const bool *denoises, const bool *decodes, int *helper_of) {
    int next = 0; /* the next decode slot to hand out */
    for (int i = 0; i < n; i++) {
        helper_of[i] = -1;
        if (!denoises[i] || decodes[i]) continue;
        while (next < n && (!decodes[next] || denoises[next])) next++;
        if (next < n) helper_of[i] = next++;
    }
}
