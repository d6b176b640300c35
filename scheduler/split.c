#include "scheduler/split.h"

#include <math.h>
#include <string.h>

int pd_split_decode_workers(int n_workers, int pinned, double t_denoise, double t_decode) {
    if (n_workers < 2) return 0;
    int n;
    if (pinned > 0)
        n = pinned;
    else if (!(t_denoise > 0) || !(t_decode > 0) || !isfinite(t_denoise) || !isfinite(t_decode))
        n = 1;
    else
        n = (int)lround(t_decode / (t_decode + t_denoise) * n_workers);
    return n < 1 ? 1 : n > n_workers - 1 ? n_workers - 1 : n;
}

int pd_split_replan(int n_workers, int pinned, int current, double t_denoise, double t_decode) {
    int target = pd_split_decode_workers(n_workers, pinned, t_denoise, t_decode);
    if (pinned > 0 || n_workers < 2 || current < 1 || current > n_workers - 1 || target == current) return target;
    if (!(t_denoise > 0) || !(t_decode > 0) || !isfinite(t_denoise) || !isfinite(t_decode)) return current;
    double f = t_decode / (t_decode + t_denoise) * n_workers;
    if (target > current && f < current + 0.5 + PD_SPLIT_HYSTERESIS) return current;
    if (target < current && f > current - 0.5 - PD_SPLIT_HYSTERESIS) return current;
    return target;
}

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

double pd_split_aco_throughput(int n_workers, int n_dec, double t_denoise, double t_decode, double speedup) {
    PD_ASSERT(n_workers >= 2 && n_dec >= 1 && n_dec <= n_workers - 1);
    PD_ASSERT(isfinite(t_denoise) && isfinite(t_decode) && t_denoise > 0 && t_decode > 0);
    PD_ASSERT(isfinite(speedup) && speedup >= 1);
    const int n_den = n_workers - n_dec, h = n_den < n_dec ? n_den : n_dec;
    const double g = speedup - 1.0;
    double den = ((double)n_den + h * g) / (t_denoise + h * g * t_decode / n_dec);
    double dec = (double)n_dec / t_decode;
    return den < dec ? den : dec;
}

int pd_split_replan_aco(int n_workers, int pinned, int current, double t_denoise, double t_decode, double speedup) {
    bool usable = t_denoise > 0 && t_decode > 0 && isfinite(t_denoise) && isfinite(t_decode) && isfinite(speedup);
    if (pinned > 0 || n_workers < 2 || !usable || !(speedup > 1))
        return pd_split_replan(n_workers, pinned, current, t_denoise, t_decode);
    int best = 1;
    double best_x = pd_split_aco_throughput(n_workers, 1, t_denoise, t_decode, speedup);
    for (int d = 2; d <= n_workers - 1; d++) {
        double x = pd_split_aco_throughput(n_workers, d, t_denoise, t_decode, speedup);
        if (x > best_x) best = d, best_x = x;
    }
    if (current < 1 || current > n_workers - 1 || best == current) return best;
    double stay = pd_split_aco_throughput(n_workers, current, t_denoise, t_decode, speedup);
    return best_x >= stay * (1.0 + PD_SPLIT_ACO_GAIN) ? best : current;
}
