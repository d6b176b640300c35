#include "daemon/health.h"

int pd_health_live(pd_daemon *d, json_t **body) {
    *body = json_pack("{s:s, s:f}", "status", "ok", "uptime_s", pd_daemon_now() - d->started_at);
    return 200;
}

int pd_health_ready(pd_daemon *d, json_t **body) {
    pd_scheduler_stats s;
    bool ready = pd_daemon_ready(d, &s);
    const char *status = ready                         ? "ready"
                         : atomic_load(&d->draining)   ? "draining"
                         : !pd_daemon_store_up(d)      ? "store_unavailable"
                                                       : "starting";
    *body = json_pack("{s:s, s:i, s:i, s:i, s:i}", "status", status, "workers_up", s.workers_up, "workers_total", s.workers_total,
                      "queued", s.queued, "running", s.running);
    return ready ? 200 : 503;
}
