/* Stop flags: how a long call (a DiT forward, a denoising loop, a VAE decode) learns at its check
 * points that its job was cancelled or ran past its deadline. C only (stdatomic.h): CUDA sources
 * include base/status.h, never this. */
#ifndef PD_BASE_STOP_H
#define PD_BASE_STOP_H

#include <stdatomic.h>

#include "base/status.h"

/* The stop flag a long call reads at its check points (between DiT blocks, denoising steps, latent
 * frames): PD_STOP_NONE runs on; PD_STOP_CANCEL ends the call with PD_ERR_CANCELLED ("cancelled ...");
 * PD_STOP_DEADLINE with PD_ERR_DEADLINE ("deadline exceeded ..."). Whoever owns the flag stores one
 * of these values; the first reason stored wins (store with atomic_compare_exchange from 0). */
enum { PD_STOP_NONE = 0, PD_STOP_CANCEL = 1, PD_STOP_DEADLINE = 2 };

/* PD_OK when value is PD_STOP_NONE; otherwise the status value stands for (any other non-zero value
 * counts as a cancel), with the message "cancelled <where>" or "deadline exceeded <where>", where
 * is printf-formatted from fmt. */
pd_status pd_stop_status(int value, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* pd_stop_status of *flag's value; PD_OK when flag is NULL. */
pd_status pd_stop_check(const atomic_int *flag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
