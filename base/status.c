#include "base/status.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

static _Thread_local char pd_err_buf[1024];

const char *pd_status_name(pd_status st) {
    switch (st) {
    case PD_OK: return "ok";
    case PD_ERR_INVALID: return "invalid";
    case PD_ERR_IO: return "io";
    case PD_ERR_NOMEM: return "nomem";
    case PD_ERR_FORMAT: return "format";
    case PD_ERR_UNSUPPORTED: return "unsupported";
    case PD_ERR_NOT_FOUND: return "not_found";
    case PD_ERR_DEVICE: return "device";
    case PD_ERR_CANCELLED: return "cancelled";
    case PD_ERR_TIMEOUT: return "timeout";
    case PD_ERR_BUSY: return "busy";
    case PD_ERR_DEADLINE: return "deadline_exceeded";
    }
    return "unknown";
}

pd_status pd_error_set(pd_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pd_err_buf, sizeof pd_err_buf, fmt, ap);
    va_end(ap);
    return st;
}

pd_status pd_error_prefix(pd_status st, const char *fmt, ...) {
    char prev[sizeof pd_err_buf], ctx[512];
    memcpy(prev, pd_err_buf, sizeof prev);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    snprintf(pd_err_buf, sizeof pd_err_buf, "%s: %s", ctx, prev);
    return st;
}

const char *pd_error_msg(void) { return pd_err_buf; }

_Noreturn void pd_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "pipedit: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

static pthread_once_t pd_log_once = PTHREAD_ONCE_INIT;
static int pd_log_level_v = PD_LOG_INFO;

static void pd_log_init(void) {
    const char *e = getenv("PIPEDIT_LOG");
    if (!e) return;
    if (!strcmp(e, "error")) pd_log_level_v = PD_LOG_ERROR;
    else if (!strcmp(e, "warn")) pd_log_level_v = PD_LOG_WARN;
    else if (!strcmp(e, "info")) pd_log_level_v = PD_LOG_INFO;
    else if (!strcmp(e, "debug")) pd_log_level_v = PD_LOG_DEBUG;
}

void pd_log_set_level(pd_log_level level) {
    pthread_once(&pd_log_once, pd_log_init);
    pd_log_level_v = level;
}

pd_log_level pd_log_get_level(void) {
    pthread_once(&pd_log_once, pd_log_init);
    return (pd_log_level)pd_log_level_v;
}


void pd_log_write(pd_log_level level, const char *module, const char *fmt, ...) {
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[2048], ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof line, "%s.%03ldZ %s %s: ", ts, now.tv_nsec / 1000000,
                     names[level], module);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}
