/* GET /v1/videos/{id}/events: a Server-Sent Events stream of one job.
 *
 * Every change of the job is sent as one event whose data is the Video object (one JSON line):
 *   event: progress   (the first event, and progress changes; also while queued)
 *   event: stage      (the job entered a new stage: "stage" in the object names it)
 *   event: completed  or  event: failed   (final; the stream ends after it)
 *   event: deleted    (the job was deleted or expired; the stream ends)
 * Intermediate changes may be coalesced: a slow reader gets the latest state, never a backlog. A
 * comment line (": keep-alive") goes out every 15 s of silence so proxies keep the connection open.
 *
 * A waiting stream holds no thread: its connection is suspended in libmicrohttpd and resumed by
 * pd_daemon_wake_streams_locked() when any job changes or housekeeping ticks. */
#ifndef PD_DAEMON_SSE_H
#define PD_DAEMON_SSE_H

#include "daemon/daemon.h"

struct MHD_Connection;
struct MHD_Response;

/* The streaming response for job id (which the caller checked exists), or NULL when out of memory. */
struct MHD_Response *pd_sse_response(pd_daemon *d, struct MHD_Connection *conn, const char *id);

#endif
