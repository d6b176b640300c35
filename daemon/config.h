/* pipeditd's settings: one declarative table (name, type, default, bounds, help) read, in this order,
 * from a JSON config file, from PIPEDIT_<NAME> environment variables and from --<name> flags; each
 * later source overrides the earlier ones. docs/config.md lists every setting.
 *
 * The same table drives parsing, bounds checks, `pipeditd --help` and the documentation, so a new
 * setting is one row. */
#ifndef PD_DAEMON_CONFIG_H
#define PD_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"
#include "scheduler/scheduler.h"

#define PD_CONFIG_STR_MAX 512 /* longest string setting (paths included) */
#define PD_CONFIG_MAX_KEYS 16 /* most API keys */
#define PD_PG_REPLICA_ID_MAX 128 /* replica_id: the longest lease holder name + 1 */

typedef struct pd_config {
    /* network */
    char host[PD_CONFIG_STR_MAX];
    int port;
    int http_threads;
    int max_connections;
    int connection_timeout_s;
    double header_timeout_s;            /* request line + headers, from the request's start */
    double body_timeout_s;              /* headers + body, from the same start */
    size_t body_limit;
    int grpc_port;                      /* 0 = no gRPC server */
    int grpc_threads;
    int grpc_max_calls;                 /* open gRPC calls (streams included) at most */
    /* storage */
    char data_dir[PD_CONFIG_STR_MAX];
    double output_ttl_s;
    double housekeeping_interval_s;
    char outputs_dir[PD_CONFIG_STR_MAX]; /* "" = <data_dir>/videos */
    /* the shared job store (daemon/pg_store.h): "" = the local journal */
    char store[PD_CONFIG_STR_MAX];      /* "" or postgres://... / postgresql://... */
    char replica_id[PD_PG_REPLICA_ID_MAX]; /* "" = <hostname>-<pid> */
    double store_lease_s;
    /* model and workers */
    char model_dir[PD_CONFIG_STR_MAX];  /* "" = the embedded tiny model */
    char model_name[PD_CONFIG_STR_MAX]; /* "" = the preset's or folder's name */
    char worker_exe[PD_CONFIG_STR_MAX]; /* "" = the pipedit binary next to pipeditd */
    char run_dir[PD_CONFIG_STR_MAX];    /* "" = <data_dir>/run */
    int workers;
    int decode_workers;
    int threads_per_worker;
    double worker_timeout_s;
    double worker_stall_timeout_s;
    char device[16];                    /* "cpu" or "cuda" (worker i uses cuda:i) */
    /* sequence parallelism of the denoise group */
    int sp_degree;
    int cfg_parallel;                   /* 0 or 1 */
    int pipesp_chunk;
    double comm_timeout_s;
    char profile[PD_CONFIG_STR_MAX];    /* "" = pd_plan_online_default_profile(device); a built-in name or a file */
    /* admission and request bounds */
    int queue_capacity;
    int max_prompt_bytes;
    int max_width, max_height, max_frames, max_steps;
    double max_seconds;
    double max_job_seconds;             /* a job's deadline after it starts; admission by estimate */
    double job_memory_bytes;            /* 0 = RAM / workers on the CPU, unchecked on cuda */
    int retry_after_s;
    int poll_after_ms;
    /* shutdown */
    double drain_timeout_s;
    /* auth: bearer keys; none = no authentication */
    char api_keys[PD_CONFIG_MAX_KEYS][128];
    int n_api_keys;
    char log_level[16];
    char aco[8];                        /* auto, on or off (scheduler/split.h pd_aco_mode) */
} pd_config;

/* Fills cfg with every setting's default. */
void pd_config_defaults(pd_config *cfg);

/* Reads a JSON object of settings from path. Unknown keys, wrong types and out-of-range values are
 * PD_ERR_INVALID naming the key and file; an unreadable file is PD_ERR_IO. */
pd_status pd_config_load_file(pd_config *cfg, const char *path);

/* Applies every PIPEDIT_<NAME> environment variable (NAME = the key in upper case). Errors as above. */
pd_status pd_config_load_env(pd_config *cfg);

/* Sets one setting from text; key may use '-' for '_'. PD_ERR_NOT_FOUND for an unknown key,
 * PD_ERR_INVALID for a bad value. api_keys takes a comma-separated list. */
pd_status pd_config_set(pd_config *cfg, const char *key, const char *value);

/* Applies flags "--key value" or "--key=value" from argv[1..argc-1], skipping "--config FILE" (read it
 * first with pd_config_find_file). Unknown flags are PD_ERR_NOT_FOUND. */
pd_status pd_config_load_args(pd_config *cfg, int argc, char **argv);

/* The config file named by --config or PIPEDIT_CONFIG, or NULL when none. */
const char *pd_config_find_file(int argc, char **argv);

/* Checks what no single setting's bounds can (call it once every source is read): body_timeout_s
 * >= header_timeout_s, and the worker settings through the scheduler's own check
 * (pd_scheduler_config_check), so that what the scheduler would refuse is refused here, before
 * anything starts. PD_ERR_INVALID naming the settings. More CPU workers than online cores is
 * allowed, with a warning in the log. */
pd_status pd_config_check(const pd_config *cfg);

/* The scheduler's configuration for cfg, paths left NULL and threads_per_worker as configured (the
 * daemon resolves those: 0 threads = the online cores shared out among the workers). */
void pd_config_scheduler(const pd_config *cfg, pd_scheduler_config *sc);

/* Writes one line per setting (flag, default, help) to f, for --help. */
void pd_config_print_help(FILE *f);

/* Writes the settings in effect (API keys masked) to the log at info level. */
void pd_config_log(const pd_config *cfg);

#endif
