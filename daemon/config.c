#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "comm/comm.h"
#ifdef PD_HAVE_PG
#include "daemon/pg_store.h"
#endif
#include "models/pipeline.h"
#include "models/wan/pipesp_plan.h"
#include "proto/proto.h"
#include "scheduler/scheduler.h"
#include "scheduler/split.h"

typedef enum { CT_INT, CT_SIZE, CT_DOUBLE, CT_STR, CT_KEYS } cfg_type;

typedef struct cfg_entry {
    const char *name;
    cfg_type type;
    size_t off;
    const char *def;   /* default, as text, parsed like any other source */
    double lo, hi;     /* bounds for numbers; for strings hi is unused */
    const char *help;
} cfg_entry;

#define F(field) offsetof(pd_config, field)
static const cfg_entry cfg_table[] = {
    {"host", CT_STR, F(host), "127.0.0.1", 0, 0, "address to listen on (0.0.0.0 for every interface)"},
    {"port", CT_INT, F(port), "8000", 0, 65535, "TCP port (0 = any free port, logged at start)"},
    {"http_threads", CT_INT, F(http_threads), "4", 1, 256, "HTTP threads (libmicrohttpd thread pool over epoll)"},
    {"max_connections", CT_INT, F(max_connections), "512", 1, 100000, "open connections at most; a new one beyond it drops the one waiting longest for its request"},
    {"connection_timeout_s", CT_INT, F(connection_timeout_s), "60", 1, 3600, "idle connections are closed after this"},
    {"header_timeout_s", CT_DOUBLE, F(header_timeout_s), "20", 0.1, 3600, "a request's line and headers must arrive within this, however slowly they trickle (also the keep-alive wait)"},
    {"body_timeout_s", CT_DOUBLE, F(body_timeout_s), "60", 0.1, 86400, "a request's headers and body must arrive within this (>= header_timeout_s)"},
    {"body_limit", CT_SIZE, F(body_limit), "1048576", 1024, 64.0 * 1024 * 1024, "largest request body in bytes; larger is 413"},
    {"grpc_port", CT_INT, F(grpc_port), "0", 0, 65535, "gRPC port of the pipedit.v1 API and grpc.health.v1 (0 = no gRPC server)"},
    {"grpc_threads", CT_INT, F(grpc_threads), "2", 1, 64, "threads serving the gRPC completion queue"},
    {"grpc_max_calls", CT_INT, F(grpc_max_calls), "4096", 1, 1000000, "open gRPC calls (watch and download streams included) at most; more are RESOURCE_EXHAUSTED"},
    {"data_dir", CT_STR, F(data_dir), "./data", 0, 0, "journal and outputs (videos/<id>.mp4, .png)"},
    {"output_ttl_s", CT_DOUBLE, F(output_ttl_s), "86400", 1, 365.0 * 86400, "finished videos are deleted this long after completion"},
    {"outputs_dir", CT_STR, F(outputs_dir), "", 0, 0, "folder finished videos (<id>.mp4, <id>.png) are written to and served from; empty = <data_dir>/videos. Replicas on one store name the same (shared) folder"},
    {"store", CT_STR, F(store), "", 0, 0, "job store: empty = the local journal; postgres://... = a PostgreSQL job store and queue shared by every replica that names it"},
    {"replica_id", CT_STR, F(replica_id), "", 0, 0, "this replica's name as a lease holder in the shared store; empty = <hostname>-<pid>"},
    {"store_lease_s", CT_DOUBLE, F(store_lease_s), "30", 0.5, 3600, "lease on a job taken from the shared store, renewed every third of it; a job whose lease expired is run by another replica"},
    {"housekeeping_interval_s", CT_DOUBLE, F(housekeeping_interval_s), "30", 0.1, 3600, "period of the expiry sweep"},
    {"model_dir", CT_STR, F(model_dir), "", 0, 0, "model folder; empty = the embedded tiny model"},
    {"model_name", CT_STR, F(model_name), "", 0, 0, "model id clients send; empty = the model's preset name"},
    {"worker_exe", CT_STR, F(worker_exe), "", 0, 0, "the pipedit binary workers run; empty = next to pipeditd"},
    {"run_dir", CT_STR, F(run_dir), "", 0, 0, "sockets and shared memory names; empty = <data_dir>/run"},
    {"workers", CT_INT, F(workers), "2", 1, PD_SCHED_MAX_DEVICES, "worker processes (devices) for denoise and decode; 1 = no pipelining"},
    {"decode_workers", CT_INT, F(decode_workers), "0", 0, PD_SCHED_MAX_DEVICES - 1, "decode group size; 0 = planned from the cost model and re-planned from measured stage times"},
    {"threads_per_worker", CT_INT, F(threads_per_worker), "0", 0, PD_SCHED_MAX_THREADS, "CPU backend threads per worker; 0 = the online cores shared out among the workers"},
    {"worker_timeout_s", CT_DOUBLE, F(worker_timeout_s), "120", 1, PD_SCHED_MAX_TIMEOUT_S, "a silent worker is restarted after this"},
    {"worker_stall_timeout_s", CT_DOUBLE, F(worker_stall_timeout_s), "600", 1, PD_SCHED_MAX_TIMEOUT_S, "a worker whose stage makes no progress this long is restarted (job: worker_stuck)"},
    {"device", CT_STR, F(device), "cpu", 0, 0, "cpu, or cuda: worker i runs on GPU cuda:i"},
    {"sp_degree", CT_INT, F(sp_degree), "1", 1, PD_COMM_MAX_RANKS, "ranks per denoise group (sequence parallelism); 1 = every denoise worker alone"},
    {"cfg_parallel", CT_INT, F(cfg_parallel), "0", 0, 1, "1 = each SP group evaluates the CFG pair on two halves (even sp_degree)"},
    {"pipesp_chunk", CT_INT, F(pipesp_chunk), "0", 0, PD_SP_MAX_CHUNK, "PipeSP heads per chunk; 0 = planned from the cost model, 1 = per head"},
    {"profile", CT_STR, F(profile), "", 0, 0, "device profile the scheduler plans with (plan/cost.h): h100, h200, l4 or a PROFILE.json from pipedit calibrate; empty = h100 on cuda, a measured 2-core CPU reference on cpu"},
    {"comm_timeout_s", CT_DOUBLE, F(comm_timeout_s), "60", 0.1, PD_SCHED_MAX_TIMEOUT_S, "deadline of each collective in an SP group; a group that misses it is restarted"},
    {"queue_capacity", CT_INT, F(queue_capacity), "32", 1, PD_SCHED_MAX_QUEUE, "jobs waiting at most; more are 429"},
    {"aco", CT_STR, F(aco), "auto", 0, 0, "Aco: idle decode workers compute attention heads for the denoise ranks; auto (the share the cost model plans, none when it does not pay), on (half the heads whenever a decode worker is idle) or off"},
    {"max_prompt_bytes", CT_INT, F(max_prompt_bytes), "8192", 1, PD_PROTO_TEXT_MAX - 1, "longest prompt (and negative prompt) in bytes"},
    {"max_width", CT_INT, F(max_width), "1280", 16, PD_GEN_MAX_SIDE, "widest output in pixels"},
    {"max_height", CT_INT, F(max_height), "1280", 16, PD_GEN_MAX_SIDE, "tallest output in pixels"},
    {"max_frames", CT_INT, F(max_frames), "129", 1, PD_GEN_MAX_FRAMES, "most frames per video"},
    {"max_steps", CT_INT, F(max_steps), "100", 1, PD_GEN_MAX_STEPS, "most denoising steps"},
    {"max_seconds", CT_DOUBLE, F(max_seconds), "20", 0.1, 3600, "longest video in seconds"},
    {"max_job_seconds", CT_DOUBLE, F(max_job_seconds), "3600", 1, PD_SCHED_MAX_JOB_SECONDS, "longest a job may run (from leaving the queue); a longer estimate is refused with 400, a job past it fails with deadline_exceeded"},
    {"job_memory_bytes", CT_DOUBLE, F(job_memory_bytes), "0", 0, PD_SCHED_MAX_JOB_MEMORY, "activation memory a job may use on one worker; a larger estimate is refused with 400 (0 = the machine's RAM / workers on the CPU, unchecked on cuda)"},
    {"retry_after_s", CT_INT, F(retry_after_s), "5", 1, 3600, "Retry-After sent with 429 and 503"},
    {"poll_after_ms", CT_INT, F(poll_after_ms), "1000", 10, 600000, "openai-poll-after-ms sent on retrieve"},
    {"drain_timeout_s", CT_DOUBLE, F(drain_timeout_s), "30", 0, 86400, "on SIGTERM, wait this long for live jobs"},
    {"api_keys", CT_KEYS, F(api_keys), "", 0, 0, "bearer keys (comma separated in env/flags); empty = no auth"},
    {"log_level", CT_STR, F(log_level), "info", 0, 0, "error, warn, info or debug"},
};
#undef F
#define N_ENTRIES (sizeof cfg_table / sizeof cfg_table[0])

static const cfg_entry *cfg_find(const char *key) {
    char norm[64];
    size_t n = strlen(key);
    if (n >= sizeof norm) return NULL;
    for (size_t i = 0; i <= n; i++) norm[i] = key[i] == '-' ? '_' : key[i];
    if (!strcmp(norm, "model")) snprintf(norm, sizeof norm, "model_dir"); /* pipeditd --model DIR */
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (!strcmp(cfg_table[i].name, norm)) return &cfg_table[i];
    return NULL;
}

static pd_status set_keys(pd_config *cfg, const char *value) {
    int n = 0;
    const char *p = value;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && isspace((unsigned char)*p)) p++, len--;
        while (len && isspace((unsigned char)p[len - 1])) len--;
        if (len) {
            if (n == PD_CONFIG_MAX_KEYS) return pd_error_set(PD_ERR_INVALID, "api_keys: at most %d keys", PD_CONFIG_MAX_KEYS);
            if (len >= sizeof cfg->api_keys[0] || len < 8)
                return pd_error_set(PD_ERR_INVALID, "api_keys: each key must be 8 to %zu characters", sizeof cfg->api_keys[0] - 1);
            memcpy(cfg->api_keys[n], p, len);
            cfg->api_keys[n][len] = 0;
            n++;
        }
        if (!e) break;
        p = e + 1;
    }
    cfg->n_api_keys = n;
    return PD_OK;
}

static pd_status set_entry(pd_config *cfg, const cfg_entry *e, const char *value) {
    char *base = (char *)cfg + e->off;
    if (e->type == CT_STR) {
        if (strlen(value) >= PD_CONFIG_STR_MAX) return pd_error_set(PD_ERR_INVALID, "%s: longer than %d bytes", e->name, PD_CONFIG_STR_MAX - 1);
        if (!strcmp(e->name, "log_level") && strcmp(value, "error") && strcmp(value, "warn") && strcmp(value, "info") &&
            strcmp(value, "debug"))
            return pd_error_set(PD_ERR_INVALID, "log_level: '%s' is not error, warn, info or debug", value);
        pd_aco_mode mode;
        if (!strcmp(e->name, "aco")) PD_TRY(pd_aco_mode_parse(value, &mode));
        if (!strcmp(e->name, "store") && *value && strncmp(value, "postgres://", 11) && strncmp(value, "postgresql://", 13))
            return pd_error_set(PD_ERR_INVALID, "store: the value is neither empty (the local journal) nor a postgres:// or postgresql:// URL "
                                                "(not shown: it may hold a password)");
        if (!strcmp(e->name, "replica_id")) {
            if (strlen(value) >= sizeof cfg->replica_id) return pd_error_set(PD_ERR_INVALID, "replica_id: longer than %zu bytes", sizeof cfg->replica_id - 1);
            for (const char *c = value; *c; c++)
                if ((unsigned char)*c <= ' ' || (unsigned char)*c > '~')
                    return pd_error_set(PD_ERR_INVALID, "replica_id: only printable ASCII without spaces");
        }
        size_t cap = !strcmp(e->name, "log_level")    ? sizeof cfg->log_level
                     : !strcmp(e->name, "aco")        ? sizeof cfg->aco
                     : !strcmp(e->name, "replica_id") ? sizeof cfg->replica_id
                                                      : PD_CONFIG_STR_MAX;
        snprintf(base, cap, "%s", value);
        return PD_OK;
    }
    if (e->type == CT_KEYS) return set_keys(cfg, value);
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    while (*end && isspace((unsigned char)*end)) end++;
    if (!*value || *end || errno || !isfinite(v)) return pd_error_set(PD_ERR_INVALID, "%s: '%s' is not a number", e->name, value);
    if (e->type != CT_DOUBLE && v != floor(v)) return pd_error_set(PD_ERR_INVALID, "%s: '%s' is not an integer", e->name, value);
    if (v < e->lo || v > e->hi) return pd_error_set(PD_ERR_INVALID, "%s: %s is outside [%g, %g]", e->name, value, e->lo, e->hi);
    if (e->type == CT_INT) *(int *)base = (int)v;
    else if (e->type == CT_SIZE) *(size_t *)base = (size_t)v;
    else *(double *)base = v;
    return PD_OK;
}

void pd_config_defaults(pd_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_ENTRIES; i++) {
        pd_status st = set_entry(cfg, &cfg_table[i], cfg_table[i].def);
        PD_ASSERT(st == PD_OK);
    }
}

pd_status pd_config_set(pd_config *cfg, const char *key, const char *value) {
    const cfg_entry *e = cfg_find(key);
    if (!e) return pd_error_set(PD_ERR_NOT_FOUND, "unknown setting '%s' (pipeditd --help lists them)", key);
    return set_entry(cfg, e, value);
}

pd_status pd_config_load_file(pd_config *cfg, const char *path) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return pd_error_set(PD_ERR_IO, "config %s: line %d: %s", path, jerr.line, jerr.text);
    pd_status st = PD_OK;
    if (!json_is_object(root)) {
        st = pd_error_set(PD_ERR_INVALID, "config %s: the top level must be an object", path);
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (key[0] == '_') continue; /* "_comment" keys document the file */
        const cfg_entry *e = cfg_find(key);
        if (!e) {
            st = pd_error_set(PD_ERR_INVALID, "config %s: unknown key '%s'", path, key);
            goto done;
        }
        char buf[PD_CONFIG_MAX_KEYS * 130];
        if (e->type == CT_KEYS && json_is_array(v)) {
            size_t i, off = 0;
            json_t *k;
            buf[0] = 0;
            json_array_foreach(v, i, k) {
                if (!json_is_string(k) || strchr(json_string_value(k), ',') ||
                    json_string_length(k) + 2 > sizeof buf - off) {
                    st = pd_error_set(PD_ERR_INVALID, "config %s: api_keys must be an array of strings without commas", path);
                    goto done;
                }
                off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", i ? "," : "", json_string_value(k));
            }
        } else if (json_is_string(v) && e->type != CT_KEYS) {
            if (e->type != CT_STR) {
                st = pd_error_set(PD_ERR_INVALID, "config %s: '%s' must be a number, not a string", path, key);
                goto done;
            }
            snprintf(buf, sizeof buf, "%s", json_string_value(v));
            if (json_string_length(v) >= PD_CONFIG_STR_MAX) {
                st = pd_error_set(PD_ERR_INVALID, "config %s: '%s' is too long", path, key);
                goto done;
            }
        } else if (json_is_number(v) && (e->type == CT_INT || e->type == CT_SIZE || e->type == CT_DOUBLE)) {
            snprintf(buf, sizeof buf, "%.17g", json_number_value(v));
        } else {
            st = pd_error_set(PD_ERR_INVALID, "config %s: '%s' has the wrong type", path, key);
            goto done;
        }
        st = set_entry(cfg, e, buf);
        if (st) {
            pd_error_prefix(st, "config %s", path);
            goto done;
        }
    }
done:
    json_decref(root);
    return st;
}

pd_status pd_config_load_env(pd_config *cfg) {
    for (size_t i = 0; i < N_ENTRIES; i++) {
        char name[80] = "PIPEDIT_";
        size_t n = strlen(name);
        for (const char *p = cfg_table[i].name; *p && n + 1 < sizeof name; p++) name[n++] = (char)toupper((unsigned char)*p);
        name[n] = 0;
        const char *v = getenv(name);
        if (!v) continue;
        pd_status st = set_entry(cfg, &cfg_table[i], v);
        if (st) return pd_error_prefix(st, "environment %s", name);
    }
    return PD_OK;
}

const char *pd_config_find_file(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) return argv[i + 1];
        if (!strncmp(argv[i], "--config=", 9)) return argv[i] + 9;
    }
    const char *env = getenv("PIPEDIT_CONFIG");
    return env && *env ? env : NULL;
}

pd_status pd_config_load_args(pd_config *cfg, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2)) return pd_error_set(PD_ERR_INVALID, "unexpected argument '%s'", a);
        char key[64];
        const char *val;
        const char *eq = strchr(a, '=');
        if (eq) {
            size_t n = (size_t)(eq - a - 2);
            if (n >= sizeof key) return pd_error_set(PD_ERR_NOT_FOUND, "unknown flag '%s'", a);
            memcpy(key, a + 2, n);
            key[n] = 0;
            val = eq + 1;
        } else {
            snprintf(key, sizeof key, "%s", a + 2);
            if (i + 1 >= argc) return pd_error_set(PD_ERR_INVALID, "flag '%s' needs a value", a);
            val = argv[++i];
        }
        if (!strcmp(key, "config")) continue;
        pd_status st = pd_config_set(cfg, key, val);
        if (st) return pd_error_prefix(st, "flag --%s", key);
    }
    return PD_OK;
}

void pd_config_scheduler(const pd_config *cfg, pd_scheduler_config *sc) {
    pd_aco_mode aco = PD_ACO_AUTO;
    if (pd_aco_mode_parse(cfg->aco, &aco) != PD_OK) aco = PD_ACO_AUTO; /* checked when it was set */
    *sc = (pd_scheduler_config){
        .n_devices = cfg->workers,
        .n_decode = cfg->decode_workers,
        .threads_per_worker = cfg->threads_per_worker,
        .queue_capacity = cfg->queue_capacity,
        .worker_timeout_s = cfg->worker_timeout_s,
        .stall_timeout_s = cfg->worker_stall_timeout_s,
        .sp_degree = cfg->sp_degree,
        .cfg_parallel = cfg->cfg_parallel != 0,
        .pipesp_chunk = cfg->pipesp_chunk,
        .comm_timeout_s = cfg->comm_timeout_s,
        .device = cfg->device,
        .max_job_seconds = cfg->max_job_seconds,
        .job_memory_bytes = cfg->job_memory_bytes,
        .aco = aco,
    };
}

pd_status pd_config_check(const pd_config *cfg) {
    if (cfg->body_timeout_s < cfg->header_timeout_s)
        return pd_error_set(PD_ERR_INVALID, "body_timeout_s (%g) must be at least header_timeout_s (%g): the body deadline counts from "
                            "the same start", cfg->body_timeout_s, cfg->header_timeout_s);
#ifdef PD_HAVE_PG
    if (cfg->store[0] && !pd_pg_url_valid(cfg->store))
        return pd_error_set(PD_ERR_INVALID, "store: libpq cannot parse the URL (postgres://user@host:port/database?option=value; not shown: it "
                                            "may hold a password)");
#else
    if (cfg->store[0])
        return pd_error_set(PD_ERR_INVALID, "store: this pipeditd was built without libpq (libpq-dev missing); leave store empty for the local journal");
#endif
    pd_scheduler_config sc;
    pd_config_scheduler(cfg, &sc);
    pd_status st = pd_scheduler_config_check(&sc);
    if (st) return pd_error_prefix(st, "the worker settings do not fit together (workers is the scheduler's n_devices, decode_workers its n_decode)");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (!strcmp(cfg->device, "cpu") && cores > 0 && cfg->workers > cores)
        PD_WARN("config", "workers = %d is more than the %ld online cores: the workers will share them and each job runs slower",
                cfg->workers, cores);
    return PD_OK;
}

void pd_config_print_help(FILE *f) {
    for (size_t i = 0; i < N_ENTRIES; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", cfg_table[i].name);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_') *p = '-';
        fprintf(f, "  %-26s %s (default \"%s\")\n", flag, cfg_table[i].help, cfg_table[i].def);
    }
}

void pd_config_log(const pd_config *cfg) {
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &cfg_table[i];
        const char *base = (const char *)cfg + e->off;
        switch (e->type) {
        case CT_INT: PD_DEBUG("config", "%s = %d", e->name, *(const int *)base); break;
        case CT_SIZE: PD_DEBUG("config", "%s = %zu", e->name, *(const size_t *)base); break;
        case CT_DOUBLE: PD_DEBUG("config", "%s = %g", e->name, *(const double *)base); break;
        case CT_STR: PD_DEBUG("config", "%s = \"%s\"", e->name, strcmp(e->name, "store") ? base : *base ? "postgres://(hidden)" : ""); break;
        case CT_KEYS: PD_DEBUG("config", "%s = %d key(s)", e->name, cfg->n_api_keys); break;
        }
    }
}
