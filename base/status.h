/* Status codes, error messages, invariant checks and logging shared by every part of pipedit.
 *
 * Two kinds of error, never mixed:
 *  - A broken invariant (a bug) aborts through PD_ASSERT, which stays on in release builds.
 *  - An expected failure (bad input, missing file, out of memory, device lost) is returned as a
 *    negative pd_status. The function that detects it records a message a user can act on with
 *    pd_error_set(); callers may add context with pd_error_prefix() and read it with pd_error_msg().
 * The message is kept per thread, so concurrent workers do not overwrite each other's errors. */
#ifndef PD_STATUS_H
#define PD_STATUS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum pd_status {
    PD_OK = 0,
    PD_ERR_INVALID = -1,     /* bad argument or input value */
    PD_ERR_IO = -2,          /* a file could not be opened, read or written */
    PD_ERR_NOMEM = -3,       /* an allocation failed */
    PD_ERR_FORMAT = -4,      /* a file's contents are malformed */
    PD_ERR_UNSUPPORTED = -5, /* valid, but not implemented by this build or backend */
    PD_ERR_NOT_FOUND = -6,   /* a named tensor, file or key does not exist */
    PD_ERR_DEVICE = -7,      /* an accelerator or communication failure */
    PD_ERR_CANCELLED = -8,   /* the caller's cancel flag was seen */
    PD_ERR_TIMEOUT = -9,     /* a wait ran past its deadline */
    PD_ERR_BUSY = -10,       /* a bounded queue or pool is full; retry later */
    PD_ERR_DEADLINE = -11,   /* the job's deadline passed (its stop flag said so) */
} pd_status;

/* Stable short name of a status ("invalid", "io", ...). Never NULL. */
const char *pd_status_name(pd_status st);

/* Records a printf-style message for the calling thread and returns st, so a failing function can
 * write `return pd_error_set(PD_ERR_IO, "open %s: %s", path, strerror(errno));`. */
pd_status pd_error_set(pd_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "<context>: " to the calling thread's message and returns st unchanged. */
pd_status pd_error_prefix(pd_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The calling thread's last message ("" when none). Valid until the next pd_error_* call. */
const char *pd_error_msg(void);

/* Propagates a failing status from an expression. */
#define PD_TRY(expr)                                                                               \
    do {                                                                                           \
        pd_status pd_try_st_ = (expr);                                                             \
        if (pd_try_st_ != PD_OK) return pd_try_st_;                                                \
    } while (0)

/* Aborts with file, line and message when an invariant does not hold. On in every build. */
#define PD_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) pd_assert_fail(#cond, __FILE__, __LINE__);                                    \
    } while (0)
_Noreturn void pd_assert_fail(const char *expr, const char *file, int line);

/* Logging: one line per call, "<ISO time> <LEVEL> <module>: message", to stderr by default.
 * The level is read once from PIPEDIT_LOG (error, warn, info, debug; default info). */
typedef enum pd_log_level { PD_LOG_ERROR = 0, PD_LOG_WARN, PD_LOG_INFO, PD_LOG_DEBUG } pd_log_level;
void pd_log_set_level(pd_log_level level);
pd_log_level pd_log_get_level(void);
void pd_log_write(pd_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define PD_LOG(level, module, ...)                                                                 \
    do {                                                                                           \
        if ((level) <= pd_log_get_level()) pd_log_write((level), (module), __VA_ARGS__);           \
    } while (0)
#define PD_ERROR(module, ...) PD_LOG(PD_LOG_ERROR, module, __VA_ARGS__)
#define PD_WARN(module, ...) PD_LOG(PD_LOG_WARN, module, __VA_ARGS__)
#define PD_INFO(module, ...) PD_LOG(PD_LOG_INFO, module, __VA_ARGS__)
#define PD_DEBUG(module, ...) PD_LOG(PD_LOG_DEBUG, module, __VA_ARGS__)

#endif
