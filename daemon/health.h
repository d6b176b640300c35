/* Health endpoints for orchestrators.
 *   GET /health/live   200 while the process serves HTTP at all (a liveness probe).
 *   GET /health/ready  200 once the scheduler reports every worker group loaded and warmed up, 503
 *                      before that and from the moment a drain starts (SIGTERM), so a load balancer
 *                      stops sending new work while running jobs finish. */
#ifndef PD_DAEMON_HEALTH_H
#define PD_DAEMON_HEALTH_H

#include "daemon/daemon.h"

/* Fills *body (a new reference) and returns the HTTP status. */
int pd_health_live(pd_daemon *d, json_t **body);
int pd_health_ready(pd_daemon *d, json_t **body);

#endif
