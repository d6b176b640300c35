/* The HTTP server (libmicrohttpd: a pool of http_threads threads over epoll, a connection limit, a
 * per-connection memory pool and a body limit) and its routes:
 *
 *   POST   /v1/videos                      create (JSON or multipart/form-data)
 *   GET    /v1/videos?after=&limit=&order= list, newest first by default (limit 1-100, default 20)
 *   GET    /v1/videos/{id}                 retrieve (sends openai-poll-after-ms)
 *   DELETE /v1/videos/{id}                 cancel if live, remove files, {id, object, deleted}
 *   POST   /v1/videos/{id}/cancel          cancel; the job fails with error.code "cancelled"
 *   GET    /v1/videos/{id}/content?variant=video|thumbnail   the file, Range requests (206/416)
 *   GET    /v1/videos/{id}/events          Server-Sent Events (sse.h)
 *   GET    /v1/models, /v1/models/{model}
 *   GET    /health/live, /health/ready, /metrics   (never need an API key)
 *   GET    /                               the web page (daemon/web/index.html, embedded; no key needed)
 *
 * Every error is the OpenAI envelope with 400, 401, 404, 405, 413, 429 (+ Retry-After) or 503
 * (+ Retry-After); 416 has no body (its Content-Range gives the size). With api_keys set, /v1/ routes need
 * "Authorization: Bearer <key>" (compared in constant time).
 *
 * Framing that two parsers could read differently is refused with 400 before any body is read, and
 * the connection closed: Content-Length together with Transfer-Encoding, Content-Lengths that differ,
 * a Transfer-Encoding other than one "chunked", an HTTP/1.1 request without exactly one Host, and a
 * path holding %00 or %2F (decoded, they would cut the id short or move a segment boundary). A Range
 * whose numbers overflow is 416.
 *
 * Slow clients: every connection is registered with a pd_conn_guard (conn_guard.h) that enforces
 * header_timeout_s and body_timeout_s from the request's start and keeps max_connections as a soft
 * limit (the oldest connection still sending its request makes room for a new one);
 * libmicrohttpd's own connection limit sits above it, at max_connections + max_connections/8 + 16. */
#ifndef PD_DAEMON_HTTP_H
#define PD_DAEMON_HTTP_H

#include "daemon/daemon.h"

/* Starts listening on cfg.host:cfg.port; *bound_port receives the port (useful with port 0).
 * PD_ERR_IO with the address when the socket cannot be bound. */
pd_status pd_http_start(pd_daemon *d, int *bound_port);

/* Ends event streams and stops the server; a no-op when it is not running. */
void pd_http_stop(pd_daemon *d);

/* True when hdr is "Bearer <k>" for one of the configured keys (or when none are configured).
 * Takes the same time whichever key or byte differs. */
bool pd_http_key_ok(const pd_config *cfg, const char *hdr);

#endif
