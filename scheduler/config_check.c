/* The scheduler's configuration bounds, apart from pd_scheduler_create so that a front end can
 * check a configuration before it starts anything. */
#include "scheduler/scheduler.h"

#include <string.h>

#include "comm/comm.h"
#include "models/wan/pipesp_plan.h"

pd_status pd_scheduler_config_check(const pd_scheduler_config *cfg) {
    if (cfg->n_devices < 1 || cfg->n_devices > PD_SCHED_MAX_DEVICES)
        return pd_error_set(PD_ERR_INVALID, "scheduler: n_devices is %d (want 1..%d)", cfg->n_devices, PD_SCHED_MAX_DEVICES);
    if (cfg->n_decode < 0 || (cfg->n_decode > 0 && cfg->n_decode > cfg->n_devices - 1))
        return pd_error_set(PD_ERR_INVALID, "scheduler: n_decode is %d (want 0 = measured, or 1..%d with %d devices)",
                            cfg->n_decode, cfg->n_devices - 1, cfg->n_devices);
    if (cfg->threads_per_worker < 0 || cfg->threads_per_worker > PD_SCHED_MAX_THREADS)
        return pd_error_set(PD_ERR_INVALID, "scheduler: threads_per_worker is %d (want 0..%d)", cfg->threads_per_worker,
                            PD_SCHED_MAX_THREADS);
    if (cfg->queue_capacity < 1 || cfg->queue_capacity > PD_SCHED_MAX_QUEUE)
        return pd_error_set(PD_ERR_INVALID, "scheduler: queue_capacity is %d (want 1..%d)", cfg->queue_capacity, PD_SCHED_MAX_QUEUE);
    if (!(cfg->worker_timeout_s >= 0) || cfg->worker_timeout_s > PD_SCHED_MAX_TIMEOUT_S)
        return pd_error_set(PD_ERR_INVALID, "scheduler: worker_timeout_s is %g (want 0 = 30 s default, up to %g)",
                            cfg->worker_timeout_s, PD_SCHED_MAX_TIMEOUT_S);
    if (!(cfg->stall_timeout_s >= 0) || cfg->stall_timeout_s > PD_SCHED_MAX_TIMEOUT_S)
        return pd_error_set(PD_ERR_INVALID, "scheduler: stall_timeout_s is %g (want 0 = 600 s default, up to %g)",
                            cfg->stall_timeout_s, PD_SCHED_MAX_TIMEOUT_S);
    const int sp = cfg->sp_degree > 1 ? cfg->sp_degree : 1;
    if (cfg->sp_degree < 0 || cfg->sp_degree > PD_COMM_MAX_RANKS)
        return pd_error_set(PD_ERR_INVALID, "scheduler: sp_degree is %d (want 0..%d)", cfg->sp_degree, PD_COMM_MAX_RANKS);
    if (sp > 1 && cfg->n_devices < sp + 1)
        return pd_error_set(PD_ERR_INVALID, "scheduler: sp_degree %d needs at least %d workers (one group of %d "
                            "denoise ranks and a decode worker), not %d", sp, sp + 1, sp, cfg->n_devices);
    if (cfg->cfg_parallel && (sp < 2 || sp % 2))
        return pd_error_set(PD_ERR_INVALID, "scheduler: cfg_parallel needs an even sp_degree >= 2, not %d", cfg->sp_degree);
    if (cfg->pipesp_chunk < 0 || cfg->pipesp_chunk > PD_SP_MAX_CHUNK)
        return pd_error_set(PD_ERR_INVALID, "scheduler: pipesp_chunk is %d (want 0 = measured, or 1..%d)", cfg->pipesp_chunk,
                            PD_SP_MAX_CHUNK);
    if (cfg->aco < PD_ACO_AUTO || cfg->aco > PD_ACO_OFF)
        return pd_error_set(PD_ERR_INVALID, "scheduler: aco mode %d (want auto, on or off)", (int)cfg->aco);
    if (!(cfg->comm_timeout_s >= 0) || cfg->comm_timeout_s > PD_SCHED_MAX_TIMEOUT_S)
        return pd_error_set(PD_ERR_INVALID, "scheduler: comm_timeout_s is %g (want 0 = 60 s default, up to %g)",
                            cfg->comm_timeout_s, PD_SCHED_MAX_TIMEOUT_S);
    if (!(cfg->max_job_seconds >= 0) || cfg->max_job_seconds > PD_SCHED_MAX_JOB_SECONDS)
        return pd_error_set(PD_ERR_INVALID, "scheduler: max_job_seconds is %g (want 0 = no deadline, up to %g)",
                            cfg->max_job_seconds, PD_SCHED_MAX_JOB_SECONDS);
    if (!(cfg->job_memory_bytes >= 0) || cfg->job_memory_bytes > PD_SCHED_MAX_JOB_MEMORY)
        return pd_error_set(PD_ERR_INVALID, "scheduler: job_memory_bytes is %g (want 0 = unchecked, up to %g)",
                            cfg->job_memory_bytes, PD_SCHED_MAX_JOB_MEMORY);
    const char *device = cfg->device && cfg->device[0] ? cfg->device : "cpu";
    if (strcmp(device, "cpu") && strcmp(device, "cuda"))
        return pd_error_set(PD_ERR_INVALID, "scheduler: device '%s' (want cpu or cuda; worker i then uses cuda:i)", device);
    return PD_OK;
}
