#include "scheduler/split.h"

#include <math.h>

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
