/* The gRPC front door: pipedit.v1.VideoService (proto/pipedit/v1/video.proto, the reference for every
 * call, field and status code) and grpc.health.v1.Health, on cfg.grpc_port beside the HTTP port.
 *
 * It is a second edge over the one job core: every call goes through the same daemon operations as
 * the HTTP routes (pd_api_parse_create_object for validation, pd_daemon_create_video & co. for the
 * queue, journal, limits and backpressure), the same API keys (metadata "authorization: Bearer
 * <key>", pd_http_key_ok) and the same drain. Errors keep the HTTP API's messages and codes and map
 * to canonical status codes (400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404 NOT_FOUND, 429
 * RESOURCE_EXHAUSTED, 503 UNAVAILABLE, ...).
 *
 * Threads: cfg.grpc_threads threads drive one completion queue of the gRPC C core library; every
 * call is a small state machine advanced by its completions, so a streaming call never holds a
 * thread. WatchVideo and Health.Watch streams wait in a list that one watch thread serves: it sleeps
 * on d->changed (broadcast whenever a job changes) or a 1 s tick, and starts a send for each idle
 * watcher with something new. A send in flight is never doubled: a slow reader gets the latest state,
 * never a backlog. DownloadVideo reads and sends one 64 KiB chunk per completion.
 * Server reflection is not offered: the C core library has no reflection service (grpc++ has one);
 * clients use the .proto files. */
#ifndef PD_DAEMON_GRPC_SERVER_H
#define PD_DAEMON_GRPC_SERVER_H

#include "daemon/daemon.h"

/* Starts the server on cfg.host:cfg.grpc_port and its threads; d->grpc holds it. *bound_port
 * receives the port. PD_ERR_IO naming the address when it cannot listen. Call after the scheduler
 * has started and with the daemon's signal mask in place (the threads inherit it). */
pd_status pd_grpc_start(pd_daemon *d, int *bound_port);

/* Ends every call (streams end with UNAVAILABLE), stops the threads and frees the server; a no-op
 * when it is not running. */
void pd_grpc_stop(pd_daemon *d);

#endif
