/* Monotonic time in seconds, for durations and deadlines (never wall-clock time). */
#ifndef PD_BASE_CLOCK_H
#define PD_BASE_CLOCK_H

#include <time.h>

static inline double pd_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
