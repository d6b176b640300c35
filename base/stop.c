#include "base/stop.h"

#include <stdio.h>

__attribute__((format(printf, 2, 0))) static pd_status pd_stop_vstatus(int value, const char *fmt, va_list ap) {
    if (value == PD_STOP_NONE) return PD_OK;
    char where[512];
    vsnprintf(where, sizeof where, fmt, ap);
    if (value == PD_STOP_DEADLINE) return pd_error_set(PD_ERR_DEADLINE, "deadline exceeded %s", where);
    return pd_error_set(PD_ERR_CANCELLED, "cancelled %s", where);
}

pd_status pd_stop_status(int value, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pd_status st = pd_stop_vstatus(value, fmt, ap);
    va_end(ap);
    return st;
}

pd_status pd_stop_check(const atomic_int *flag, const char *fmt, ...) {
    if (!flag) return PD_OK;
    va_list ap;
    va_start(ap, fmt);
    pd_status st = pd_stop_vstatus(atomic_load(flag), fmt, ap);
    va_end(ap);
    return st;
}
