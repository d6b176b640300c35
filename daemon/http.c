#include "daemon/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/clock.h"
#include "daemon/conn_guard.h"
#include "daemon/health.h"
#include "daemon/sse.h"

/* Route templates double as the metrics' route label, so they are static strings. */
enum { R_NONE, R_VIDEOS, R_VIDEO, R_CONTENT, R_CANCEL, R_EVENTS, R_MODELS, R_MODEL, R_LIVE, R_READY, R_METRICS, R_PAGE };
static const char *const route_names[] = {"other", "/v1/videos", "/v1/videos/{id}", "/v1/videos/{id}/content",
                                          "/v1/videos/{id}/cancel", "/v1/videos/{id}/events", "/v1/models",
                                          "/v1/models/{model}", "/health/live", "/health/ready", "/metrics", "/"};

/* daemon/web/index.html, embedded at build time (daemon/web/embed.cmake). */
extern const unsigned char pd_web_index[];
extern const unsigned long pd_web_index_len;

typedef struct req_ctx {
    pd_conn_slot *slot;   /* the connection's deadlines (conn_guard.h); NULL when untracked */
    bool started;         /* the headers were seen (the handler's first call) */
    bool ambiguous_path;  /* the raw path holds %00 or %2F */
    int route;
    const char *method; /* static */
    char id[PD_JOB_ID_LEN + 2];
    char model[128];
    bool id_ok;
    char *body;
    size_t len, cap;
    bool too_large;
} req_ctx;

static const char *method_of(const char *m) {
    static const char *const known[] = {"GET", "POST", "DELETE", "HEAD", "PUT", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(m, known[i])) return known[i];
    return "OTHER";
}

/* Splits the path into a route and its {id}. */
static void route_of(const char *url, req_ctx *c) {
    c->route = R_NONE;
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) c->route = R_PAGE;
    else if (!strcmp(url, "/health/live")) c->route = R_LIVE;
    else if (!strcmp(url, "/health/ready")) c->route = R_READY;
    else if (!strcmp(url, "/metrics")) c->route = R_METRICS;
    else if (!strcmp(url, "/v1/models") || !strcmp(url, "/v1/models/")) c->route = R_MODELS;
    else if (!strncmp(url, "/v1/models/", 11)) {
        c->route = R_MODEL;
        snprintf(c->model, sizeof c->model, "%s", url + 11);
    } else if (!strcmp(url, "/v1/videos") || !strcmp(url, "/v1/videos/")) c->route = R_VIDEOS;
    else if (!strncmp(url, "/v1/videos/", 11)) {
        const char *id = url + 11, *slash = strchr(id, '/');
        size_t n = slash ? (size_t)(slash - id) : strlen(id);
        const char *rest = slash ? slash : "";
        if (!*rest) c->route = R_VIDEO;
        else if (!strcmp(rest, "/content")) c->route = R_CONTENT;
        else if (!strcmp(rest, "/cancel")) c->route = R_CANCEL;
        else if (!strcmp(rest, "/events")) c->route = R_EVENTS;
        if (c->route != R_NONE) {
            if (n > PD_JOB_ID_LEN) n = PD_JOB_ID_LEN + 1; /* too long: keep it invalid */
            memcpy(c->id, id, n);
            c->id[n] = 0;
            c->id_ok = pd_job_id_valid(c->id);
        }
    }
}

static enum MHD_Result queue(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c, int status, struct MHD_Response *r) {
    if (!r) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "application/json");
    }
    if (status == 429 || status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", d->cfg.retry_after_s);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    pd_metrics_request(&d->metrics, route_names[c->route], c->method, status);
    return ret;
}

/* Sends v (consumed) as the JSON body. */
static enum MHD_Result send_json(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c, int status, json_t *v, const char *h1,
                                 const char *v1) {
    char *s = pd_api_dump(v);
    if (!s) return queue(d, conn, c, 500, NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return queue(d, conn, c, 500, NULL);
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (h1) MHD_add_response_header(r, h1, v1);
    return queue(d, conn, c, status, r);
}

static enum MHD_Result send_error(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c, const pd_api_error *e) {
    const char *h = NULL, *v = NULL;
    if (e->http_status == 401) h = "WWW-Authenticate", v = "Bearer";
    return send_json(d, conn, c, e->http_status, pd_api_error_json(e), h, v);
}

static enum MHD_Result fail(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c, int status, const char *param, const char *code,
                            const char *msg) {
    pd_api_error e;
    pd_api_error_set(&e, status, param, code, "%s", msg);
    return send_error(d, conn, c, &e);
}

/* Sends whatever an operation produced: its JSON or its error. */
static enum MHD_Result reply(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c, int status, json_t *out, const pd_api_error *e,
                             const char *h1, const char *v1) {
    if (status != 200) return send_error(d, conn, c, e);
    return send_json(d, conn, c, 200, out, h1, v1);
}

bool pd_http_key_ok(const pd_config *cfg, const char *hdr) {
    if (cfg->n_api_keys == 0) return true;
    if (!hdr || strncmp(hdr, "Bearer ", 7)) return false;
    const char *k = hdr + 7;
    size_t kl = strnlen(k, sizeof cfg->api_keys[0]);
    unsigned match = 0;
    for (int i = 0; i < cfg->n_api_keys; i++) {
        const char *key = cfg->api_keys[i]; /* zero-padded to its full size */
        unsigned diff = (unsigned)(kl ^ strlen(key));
        for (size_t b = 0; b < sizeof cfg->api_keys[0]; b++) diff |= (unsigned char)(b < kl ? k[b] : 0) ^ (unsigned char)key[b];
        match |= diff == 0;
    }
    return match != 0;
}

/* ---- content with Range ---- */

/* Parses a single "bytes=" range against size. 1: range set, 0: ignore the header (malformed or
 * multiple ranges: the whole file is sent), -1: unsatisfiable, numbers that overflow included. */
static int parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *to) {
    if (strncmp(h, "bytes=", 6) || strchr(h, ',')) return 0;
    const char *p = h + 6;
    char *end;
    if (*p == '-') {
        if (p[1] < '0' || p[1] > '9') return 0;
        errno = 0;
        unsigned long long n = strtoull(p + 1, &end, 10);
        if (*end) return 0;
        if (errno == ERANGE || n == 0 || size == 0) return -1;
        *from = n >= size ? 0 : size - n;
        *to = size - 1;
        return 1;
    }
    if (*p < '0' || *p > '9') return 0;
    errno = 0;
    unsigned long long a = strtoull(p, &end, 10);
    if (*end != '-') return 0;
    bool overflow = errno == ERANGE;
    p = end + 1;
    unsigned long long b = size ? size - 1 : 0;
    if (*p) {
        if (*p < '0' || *p > '9') return 0;
        errno = 0;
        b = strtoull(p, &end, 10);
        if (*end) return 0;
        overflow |= errno == ERANGE;
        if (!overflow && b < a) return 0;
    }
    if (overflow || a >= size) return -1;
    if (b >= size) b = size - 1;
    *from = a;
    *to = b;
    return 1;
}

static enum MHD_Result send_file(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c, const char *path, const char *type) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return fail(d, conn, c, 404, "id", "content_not_found", "the output file is missing");
    }
    uint64_t size = (uint64_t)st.st_size, from = 0, to = size ? size - 1 : 0;
    const char *range = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Range");
    int rk = range ? parse_range(range, size, &from, &to) : 0;
    char cr[96];
    if (rk < 0) {
        close(fd);
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (r) {
            snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
            MHD_add_response_header(r, "Content-Range", cr);
        }
        return queue(d, conn, c, 416, r);
    }
    uint64_t len = size ? to - from + 1 : 0;
    struct MHD_Response *r = MHD_create_response_from_fd_at_offset64(len, fd, from); /* owns fd now */
    if (!r) {
        close(fd);
        return queue(d, conn, c, 500, NULL);
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Accept-Ranges", "bytes");
    if (rk > 0) {
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)from, (unsigned long long)to, (unsigned long long)size);
        MHD_add_response_header(r, "Content-Range", cr);
    }
    return queue(d, conn, c, rk > 0 ? 206 : 200, r);
}

/* ---- routes ---- */

static enum MHD_Result method_not_allowed(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c, const char *allow) {
    pd_api_error e;
    pd_api_error_set(&e, 405, NULL, "method_not_allowed", "%s is not allowed here; use %s", c->method, allow);
    return send_json(d, conn, c, 405, pd_api_error_json(&e), "Allow", allow);
}

static enum MHD_Result handle(pd_daemon *d, struct MHD_Connection *conn, req_ctx *c) {
    const char *m = c->method;
    bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST"), del = !strcmp(m, "DELETE");
    json_t *out = NULL;
    pd_api_error e;
    int st;
    char path[PATH_MAX];

    switch (c->route) {
    case R_LIVE:
    case R_READY:
        if (!get) return method_not_allowed(d, conn, c, "GET");
        st = c->route == R_LIVE ? pd_health_live(d, &out) : pd_health_ready(d, &out);
        return send_json(d, conn, c, st, out, "Cache-Control", "no-store");
    case R_METRICS: {
        if (!get) return method_not_allowed(d, conn, c, "GET");
        pd_metrics_gauges g;
        pd_daemon_gauges(d, &g);
        char *text = pd_metrics_render(&d->metrics, &g);
        if (!text) return queue(d, conn, c, 500, NULL);
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!r) free(text);
        else MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
        return queue(d, conn, c, 200, r);
    }
    case R_PAGE: {
        /* The page itself needs no key: it asks for one when the API answers 401. */
        if (!get) return method_not_allowed(d, conn, c, "GET");
        struct MHD_Response *r = MHD_create_response_from_buffer(pd_web_index_len, (void *)pd_web_index, MHD_RESPMEM_PERSISTENT);
        if (r) {
            MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
            MHD_add_response_header(r, "Cache-Control", "no-cache");
            MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
            /* Everything is inline and same-origin; nothing may load from elsewhere. */
            MHD_add_response_header(r, "Content-Security-Policy",
                                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
                                    "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'");
        }
        return queue(d, conn, c, 200, r);
    }
    case R_NONE: return fail(d, conn, c, 404, NULL, "not_found", "no such route");
    default: break;
    }

    /* Everything under /v1/ */
    if (!pd_http_key_ok(&d->cfg, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization")))
        return fail(d, conn, c, 401, NULL, "invalid_api_key", "missing or invalid API key; send 'Authorization: Bearer <key>'");
    if (c->route >= R_VIDEO && c->route <= R_EVENTS && !c->id_ok)
        return fail(d, conn, c, 404, "id", "video_not_found", "no video with that id (ids look like video_ followed by 32 hex digits)");

    switch (c->route) {
    case R_MODELS:
    case R_MODEL: {
        if (!get) return method_not_allowed(d, conn, c, "GET");
        json_t *model = pd_daemon_model_json(d);
        if (c->route == R_MODEL) {
            if (strcmp(c->model, d->model_name)) {
                json_decref(model);
                return fail(d, conn, c, 404, "model", "model_not_found", "no such model");
            }
            return send_json(d, conn, c, 200, model, NULL, NULL);
        }
        return send_json(d, conn, c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model), NULL, NULL);
    }
    case R_VIDEOS:
        if (post) {
            if (c->too_large)
                return fail(d, conn, c, 413, NULL, "request_too_large", "the request body is larger than the server's limit");
            pd_job_request req;
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
            st = pd_api_parse_create(&d->limits, ct, c->body ? c->body : "", c->len, &req, &e);
            if (st) return send_error(d, conn, c, &e);
            st = pd_daemon_create_video(d, &req, &out, &e);
            pd_job_request_free(&req);
            return reply(d, conn, c, st, out, &e, NULL, NULL);
        }
        if (get) {
            const char *after = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "after");
            const char *lim = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
            const char *order = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "order");
            long limit = 20;
            if (lim) {
                char *end;
                errno = 0;
                limit = strtol(lim, &end, 10);
                if (!*lim || *end || errno) limit = 0; /* out of range: refused below */
            }
            if ((st = pd_api_check_list(limit, order, after, &e))) return send_error(d, conn, c, &e);
            st = pd_daemon_list_videos(d, after && *after ? after : NULL, (int)limit, order && !strcmp(order, "asc"), &out, &e);
            return reply(d, conn, c, st, out, &e, NULL, NULL);
        }
        return method_not_allowed(d, conn, c, "GET, POST");
    case R_VIDEO:
        if (get) {
            char poll[16];
            snprintf(poll, sizeof poll, "%d", d->cfg.poll_after_ms);
            st = pd_daemon_get_video(d, c->id, &out, &e);
            return reply(d, conn, c, st, out, &e, "openai-poll-after-ms", poll);
        }
        if (del) {
            st = pd_daemon_delete_video(d, c->id, &out, &e);
            return reply(d, conn, c, st, out, &e, NULL, NULL);
        }
        return method_not_allowed(d, conn, c, "GET, DELETE");
    case R_CANCEL:
        if (!post) return method_not_allowed(d, conn, c, "POST");
        st = pd_daemon_cancel_video(d, c->id, &out, &e);
        return reply(d, conn, c, st, out, &e, NULL, NULL);
    case R_CONTENT: {
        if (!get) return method_not_allowed(d, conn, c, "GET");
        const char *variant = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "variant");
        pd_store_variant v = PD_STORE_VIDEO;
        if (variant && !strcmp(variant, "thumbnail")) v = PD_STORE_THUMBNAIL;
        else if (variant && strcmp(variant, "video"))
            return fail(d, conn, c, 400, "variant", "invalid_value", "'variant' must be \"video\" or \"thumbnail\"");
        st = pd_daemon_content_path(d, c->id, v, path, &e);
        if (st != 200) return send_error(d, conn, c, &e);
        return send_file(d, conn, c, path, v == PD_STORE_VIDEO ? "video/mp4" : "image/png");
    }
    case R_EVENTS: {
        if (!get) return method_not_allowed(d, conn, c, "GET");
        st = pd_daemon_get_video(d, c->id, &out, &e);
        if (st != 200) return send_error(d, conn, c, &e);
        json_decref(out);
        return queue(d, conn, c, 200, pd_sse_response(d, conn, c->id));
    }
    default: return fail(d, conn, c, 404, NULL, "not_found", "no such route");
    }
}

/* ---- framing: what a proxy in front might read differently is refused, not guessed ---- */

typedef struct header_count {
    int host, content_length, transfer_encoding;
    const char *first_length;
    bool lengths_differ, chunked;
} header_count;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    header_count *n = cls;
    if (!strcasecmp(key, "Host")) n->host++;
    else if (!strcasecmp(key, "Transfer-Encoding")) n->transfer_encoding++, n->chunked = value && !strcasecmp(value, "chunked");
    else if (!strcasecmp(key, "Content-Length")) {
        if (n->content_length++ == 0) n->first_length = value;
        else n->lengths_differ |= !value || !n->first_length || strcmp(value, n->first_length);
    }
    return MHD_YES;
}

/* NULL when the request's framing is unambiguous, else what is wrong with it. */
static const char *framing_problem(struct MHD_Connection *conn, const char *version) {
    header_count n = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &n);
    if (n.transfer_encoding && n.content_length) return "the request has both Content-Length and Transfer-Encoding";
    if (n.lengths_differ) return "the request has conflicting Content-Length headers";
    if (n.transfer_encoding > 1 || (n.transfer_encoding && !n.chunked)) return "the only Transfer-Encoding accepted is a single \"chunked\"";
    if (n.host > 1) return "the request has more than one Host header";
    if (!n.host && version && !strcmp(version, "HTTP/1.1")) return "an HTTP/1.1 request needs a Host header";
    return NULL;
}

/* True when the path (before any '?') holds a percent-encoded NUL or slash: decoded, those would
 * end the string early or move a segment boundary (/v1/videos/{id}%2Fcancel). */
static bool ambiguous_path(const char *uri) {
    for (const char *p = uri; *p && *p != '?' && *p != '#'; p++)
        if (p[0] == '%' && p[1] && p[2] && ((p[1] == '0' && p[2] == '0') || (p[1] == '2' && (p[2] == 'f' || p[2] == 'F'))))
            return true;
    return false;
}

/* ---- connection life: the request context, the guard's phases ---- */

/* Called with the raw request line's URI, before it is decoded; the context it returns is the
 * handler's *con_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
    req_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    c->slot = ci ? ci->socket_context : NULL;
    c->ambiguous_path = ambiguous_path(uri);
    return c;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context, enum MHD_ConnectionNotificationCode code) {
    pd_daemon *d = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        pd_conn_guard_close(d->conns, *socket_context);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return;
    *socket_context = pd_conn_guard_open(d->conns, ci->connect_fd, pd_now_s());
    if (!*socket_context) shutdown(ci->connect_fd, SHUT_RDWR); /* out of memory: no unguarded connections */
}

static bool set_phase(pd_daemon *d, req_ctx *c, pd_conn_phase ph) { return pd_conn_guard_set_phase(d->conns, c->slot, ph, pd_now_s()); }

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    pd_daemon *d = cls;
    req_ctx *c = *con_cls;
    if (!c) return MHD_NO; /* on_uri ran out of memory */
    if (!c->started) {
        c->started = true;
        c->method = method_of(method);
        route_of(url, c);
        set_phase(d, c, PD_CONN_BODY);
        /* Refused before any body is read; the connection is then closed. */
        const char *problem = framing_problem(conn, version);
        if (problem || c->ambiguous_path) {
            set_phase(d, c, PD_CONN_BUSY);
            c->route = R_NONE;
            return problem ? fail(d, conn, c, 400, NULL, "invalid_request", problem)
                           : fail(d, conn, c, 400, NULL, "invalid_path", "the path must not hold a percent-encoded NUL or slash (%00, %2F)");
        }
        /* Refuse a declared oversized body before reading any of it. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n > d->cfg.body_limit) {
                c->too_large = true;
                set_phase(d, c, PD_CONN_BUSY);
                return fail(d, conn, c, 413, NULL, "request_too_large", "the request body is larger than the server's limit");
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (c->too_large || c->len + n > d->cfg.body_limit) {
            c->too_large = true;
            free(c->body);
            c->body = NULL;
            c->len = c->cap = 0;
            return MHD_YES;
        }
        if (c->len + n + 1 > c->cap) {
            size_t cap = c->cap ? c->cap : 4096;
            while (cap < c->len + n + 1) cap *= 2;
            char *b = realloc(c->body, cap);
            if (!b) return MHD_NO;
            c->body = b;
            c->cap = cap;
        }
        memcpy(c->body + c->len, upload_data, n);
        c->len += n;
        c->body[c->len] = 0;
        return MHD_YES;
    }
    /* The whole request is in: no deadline while it is answered, unless the deadline won the race. */
    if (!set_phase(d, c, PD_CONN_BUSY)) return MHD_NO;
    if (c->too_large) return fail(d, conn, c, 413, NULL, "request_too_large", "the request body is larger than the server's limit");
    return handle(d, conn, c);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    pd_daemon *d = cls;
    req_ctx *c = *con_cls;
    if (!c) return;
    set_phase(d, c, PD_CONN_HEADERS); /* a kept-alive connection waits for its next request */
    free(c->body);
    free(c);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    PD_DEBUG("http", "%s", msg);
}

pd_status pd_http_start(pd_daemon *d, int *bound_port) {
    const pd_config *cfg = &d->cfg;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai) return pd_error_set(PD_ERR_INVALID, "host '%s' is not a numeric IPv4/IPv6 address: %s", cfg->host, gai_strerror(gai));
    pd_status st = pd_conn_guard_create(cfg->max_connections, cfg->header_timeout_s, cfg->body_timeout_s, 0.25, &d->conns);
    if (st) {
        freeaddrinfo(ai);
        return st;
    }
    /* libmicrohttpd's own limit sits above the guard's, so that a connection past max_connections
     * still reaches the guard, which then drops the slowest waiting one instead (conn_guard.h). */
    unsigned hard_limit = (unsigned)cfg->max_connections + (unsigned)cfg->max_connections / 8 + 16;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    d->mhd = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, d, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_LIMIT, hard_limit,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                              (size_t)64 * 1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed, d, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
                              d, MHD_OPTION_URI_LOG_CALLBACK, on_uri, d, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, d, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d->mhd) {
        pd_conn_guard_destroy(d->conns);
        d->conns = NULL;
        return pd_error_set(PD_ERR_IO, "cannot listen on %s:%d (in use, or not an address of this host)", cfg->host, cfg->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? info->port : cfg->port;
    return PD_OK;
}

void pd_http_stop(pd_daemon *d) {
    if (!d->mhd) return;
    pthread_mutex_lock(&d->lock);
    d->http_stopping = true;
    pd_daemon_wake_streams_locked(d);
    pthread_mutex_unlock(&d->lock);
    MHD_stop_daemon(d->mhd);
    d->mhd = NULL;
    pd_conn_guard_destroy(d->conns); /* after the server: closing its connections unregisters them */
    d->conns = NULL;
}
