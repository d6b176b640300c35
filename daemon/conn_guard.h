/* Deadlines and headroom for HTTP connections, so that slow clients cannot hold every slot.
 *
 * Each connection the server accepts is registered here and moves through three phases:
 *   HEADERS  the request line and headers are arriving (also the wait for the next request on a
 *            kept-alive connection);
 *   BODY     the headers are complete and the body is arriving;
 *   BUSY     the request is being answered (handler, file download, event stream).
 * A connection must leave HEADERS within header_timeout_s and BODY within body_timeout_s, both
 * counted from the start of its request: its acceptance, or the end of the previous request on a
 * kept-alive connection. Bytes trickling in do not extend them (libmicrohttpd's own idle timeout is
 * reset by every byte, so it alone lets a client hold a slot for ever). BUSY has no deadline here.
 *
 * Headroom: the guard keeps at most `limit` connections. A connection accepted beyond that makes
 * room by dropping the one that has waited longest in HEADERS (else in BODY); when every other
 * connection is BUSY, the new one is dropped. A flood of slow connections therefore churns among
 * itself, while a client that sends its request at once (a health probe, a normal client) is
 * served: it is the newest, and it leaves HEADERS within milliseconds. This works whatever address
 * the flood comes from (a per-address limit would also shut out a probe from that address). The
 * server's own connection limit must sit above `limit` so that new connections reach the guard.
 *
 * Dropping a connection is shutdown(2) of its socket: the server reads end-of-file and closes the
 * connection itself, so the descriptor stays the server's. The server must call
 * pd_conn_guard_close before it closes the descriptor (libmicrohttpd notifies first).
 *
 * Times are monotonic seconds (pd_now_s). Every call is thread-safe. */
#ifndef PD_DAEMON_CONN_GUARD_H
#define PD_DAEMON_CONN_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

typedef enum pd_conn_phase { PD_CONN_HEADERS = 0, PD_CONN_BODY, PD_CONN_BUSY } pd_conn_phase;

typedef struct pd_conn_guard pd_conn_guard;
typedef struct pd_conn_slot pd_conn_slot; /* one registered connection, owned by the guard */

typedef struct pd_conn_guard_stats {
    int open;          /* registered and not dropped */
    uint64_t accepted; /* registered since creation */
    uint64_t expired;  /* dropped past their header or body deadline */
    uint64_t evicted;  /* dropped to make room for a newer connection */
    uint64_t refused;  /* dropped on arrival: every other connection was BUSY */
} pd_conn_guard_stats;

/* limit >= 1, 0 < header_timeout_s <= body_timeout_s. sweep_period_s > 0 starts a thread that
 * calls pd_conn_guard_sweep that often; 0 leaves sweeping to the caller. PD_ERR_INVALID for bad
 * arguments, PD_ERR_NOMEM. */
pd_status pd_conn_guard_create(int limit, double header_timeout_s, double body_timeout_s, double sweep_period_s,
                               pd_conn_guard **out);

/* Stops the sweep thread and frees every slot still registered (their sockets are left alone). */
void pd_conn_guard_destroy(pd_conn_guard *g);

/* Registers the connection on socket fd, accepted at now, in HEADERS; over the limit, drops a
 * waiting connection (or this one) as described above. NULL when out of memory: the caller should
 * then drop the connection itself. */
pd_conn_slot *pd_conn_guard_open(pd_conn_guard *g, int fd, double now);

/* Moves s to phase ph; entering HEADERS starts a new request at now. False (and nothing changed)
 * when s was already dropped: the caller must then abandon the request, so that a request whose
 * last byte raced its deadline is either answered or never acted on. s NULL: true. */
bool pd_conn_guard_set_phase(pd_conn_guard *g, pd_conn_slot *s, pd_conn_phase ph, double now);

/* Unregisters and frees s (NULL is a no-op); call before the socket is closed. */
void pd_conn_guard_close(pd_conn_guard *g, pd_conn_slot *s);

/* Drops every connection past its deadline at now; returns how many. */
int pd_conn_guard_sweep(pd_conn_guard *g, double now);

void pd_conn_guard_stats_get(pd_conn_guard *g, pd_conn_guard_stats *out);

#endif
