/* pipeditd: the text-to-video serving daemon. See daemon/http.h for the API and docs/config.md for
 * the settings. Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when it cannot start,
 * 2 for a configuration error. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon/daemon.h"
#include "daemon/http.h"
#ifdef PD_HAVE_GRPC
#include "daemon/grpc_server.h"
#endif

static void usage(FILE *f) {
    fprintf(f, "usage: pipeditd [--config FILE] [--port P] [--host ADDR] [--data-dir DIR] [--model-dir DIR] [--SETTING VALUE]...\n\n"
               "Serves OpenAI-compatible /v1/videos generation over HTTP (and the pipedit.v1 gRPC API with --grpc-port). Settings come from the JSON file given by\n"
               "--config (or PIPEDIT_CONFIG), then PIPEDIT_<SETTING> environment variables, then flags.\n"
               "--model is short for --model-dir; without one the embedded tiny model is served.\n\nsettings:\n");
    pd_config_print_help(f);
}

static pd_log_level level_of(const char *s) {
    if (!strcmp(s, "error")) return PD_LOG_ERROR;
    if (!strcmp(s, "warn")) return PD_LOG_WARN;
    if (!strcmp(s, "debug")) return PD_LOG_DEBUG;
    return PD_LOG_INFO;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    }
    pd_config cfg;
    pd_config_defaults(&cfg);
    const char *file = pd_config_find_file(argc, argv);
    pd_status st = file ? pd_config_load_file(&cfg, file) : PD_OK;
    if (st == PD_OK) st = pd_config_load_env(&cfg);
    if (st == PD_OK) st = pd_config_load_args(&cfg, argc, argv);
    if (st == PD_OK) {
        pd_log_set_level(level_of(cfg.log_level));
        st = pd_config_check(&cfg);
    }
#ifndef PD_HAVE_GRPC
    if (st == PD_OK && cfg.grpc_port)
        st = pd_error_set(PD_ERR_INVALID, "grpc_port: this pipeditd was built without gRPC (PIPEDIT_GRPC=OFF, or libgrpc-dev, libprotobuf-c-dev or "
                                          "protobuf-c-compiler missing); set grpc_port to 0");
#endif
    if (st) {
        fprintf(stderr, "pipeditd: %s\n", pd_error_msg());
        return 2;
    }

    /* Signals are taken synchronously by the main thread; every thread started later inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    static pd_daemon d;
    st = pd_daemon_open(&d, &cfg);
    if (st == PD_OK) st = pd_daemon_start_scheduler(&d);
    int port = 0;
    if (st == PD_OK) st = pd_http_start(&d, &port);
    int grpc_port = 0;
#ifdef PD_HAVE_GRPC
    if (st == PD_OK && cfg.grpc_port) st = pd_grpc_start(&d, &grpc_port);
#endif
    if (st) {
        PD_ERROR("pipeditd", "%s", pd_error_msg());
        fprintf(stderr, "pipeditd: %s\n", pd_error_msg());
        pd_daemon_close(&d);
        return 1;
    }
    pd_config_log(&cfg);
    PD_INFO("pipeditd", "listening on http://%s:%d", cfg.host, port);
    if (grpc_port) PD_INFO("pipeditd", "gRPC listening on %s:%d", cfg.host, grpc_port);

    bool was_ready = false;
    double last_sweep = pd_daemon_now();
    for (;;) {
        struct timespec tick = {1, 0};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            PD_INFO("pipeditd", "%s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        pd_scheduler_stats s;
        bool ready = pd_daemon_ready(&d, &s);
        if (ready != was_ready) PD_INFO("pipeditd", "%s (%d/%d workers up)", ready ? "ready" : "not ready", s.workers_up, s.workers_total);
        was_ready = ready;
        double now = pd_daemon_now();
        bool sweep = now - last_sweep >= cfg.housekeeping_interval_s;
        if (sweep) last_sweep = now;
        pd_daemon_housekeep(&d, sweep);
    }
    pd_daemon_shutdown(&d);
    pd_daemon_close(&d);
    return 0;
}
