#include "daemon/grpc_server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "daemon/http.h"
#include "daemon/pb_json.h"
#include "grpc/health/v1/health.pb-c.h"
#include "pipedit/v1/video.pb-c.h"

#define CHUNK_BYTES (64 * 1024)   /* DownloadVideo chunk */
#define MAX_SEND_BYTES (1 << 20)  /* largest response message (a 100-video page is far below) */
#define PENDING_PER_THREAD 8      /* calls the server may accept at once, per completion-queue thread */
#define WATCH_TICK_S 1.0          /* the watch thread's period without job changes (health watches) */

enum kind { K_CREATE, K_GET, K_LIST, K_CANCEL, K_DELETE, K_WATCH, K_DOWNLOAD, K_MODELS, K_HEALTH_CHECK, K_HEALTH_WATCH };

typedef struct method {
    const char *path; /* static: doubles as the metrics route label */
    enum kind kind;
    const ProtobufCMessageDescriptor *in, *out; /* out: unary answers */
    bool auth;
} method;

static const method methods[] = {
    {"/pipedit.v1.VideoService/CreateVideo", K_CREATE, &pipedit__v1__create_video_request__descriptor, &pipedit__v1__video__descriptor, true},
    {"/pipedit.v1.VideoService/GetVideo", K_GET, &pipedit__v1__get_video_request__descriptor, &pipedit__v1__video__descriptor, true},
    {"/pipedit.v1.VideoService/ListVideos", K_LIST, &pipedit__v1__list_videos_request__descriptor,
     &pipedit__v1__list_videos_response__descriptor, true},
    {"/pipedit.v1.VideoService/CancelVideo", K_CANCEL, &pipedit__v1__cancel_video_request__descriptor, &pipedit__v1__video__descriptor, true},
    {"/pipedit.v1.VideoService/DeleteVideo", K_DELETE, &pipedit__v1__delete_video_request__descriptor,
     &pipedit__v1__delete_video_response__descriptor, true},
    {"/pipedit.v1.VideoService/WatchVideo", K_WATCH, &pipedit__v1__watch_video_request__descriptor, NULL, true},
    {"/pipedit.v1.VideoService/DownloadVideo", K_DOWNLOAD, &pipedit__v1__download_video_request__descriptor, NULL, true},
    {"/pipedit.v1.VideoService/ListModels", K_MODELS, &pipedit__v1__list_models_request__descriptor,
     &pipedit__v1__list_models_response__descriptor, true},
    {"/grpc.health.v1.Health/Check", K_HEALTH_CHECK, &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, false},
    {"/grpc.health.v1.Health/Watch", K_HEALTH_WATCH, &grpc__health__v1__health_check_request__descriptor, NULL, false},
};
static const method unknown_method = {"unknown", K_GET, NULL, NULL, false};

/* A completion-queue tag: the function its completion runs. */
typedef struct tag {
    void (*fn)(struct tag *t, bool ok);
} tag;

typedef struct gcall gcall;

struct pd_grpc {
    pd_daemon *d;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *threads;
    int n_threads;
    pthread_t watch_thread;
    bool watch_started;
    bool stopping;              /* d->lock */
    gcall *watchers;            /* d->lock: WatchVideo and Health.Watch streams */
    atomic_bool shutting;       /* no new request_call */
    atomic_long live_calls;     /* accepted and not yet freed (logged at debug level when it changes) */
    tag shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_done;         /* mu */
};

/* One outstanding grpc_server_request_call. */
typedef struct pending {
    tag t;
    pd_grpc *g;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
} pending;

/* One accepted call. References: the op chain (the first receive, then each send in turn; a
 * watcher's list membership carries it while idle) and the RECV_CLOSE_ON_SERVER op. */
struct gcall {
    tag op, close;
    pd_grpc *g;
    grpc_call *call;
    const method *m;
    gpr_timespec deadline;
    bool auth_ok;
    atomic_int refs;
    int cancelled;                    /* set by RECV_CLOSE_ON_SERVER */
    grpc_byte_buffer *recv, *send;
    grpc_metadata trailing[2];
    size_t n_trailing;
    /* WatchVideo / Health.Watch: fields under d->lock */
    char id[PD_JOB_ID_LEN + 1];
    pd_watch_cursor cursor;
    int health_sent;                  /* last serving status sent; -1 = none */
    bool busy, final, closed;
    gcall *next;
    /* DownloadVideo */
    int fd;
    uint64_t off, end, total;
    const char *content_type;
};

/* ---- messages ---- */

/* The message of type desc that o describes, serialised; NULL when out of memory. */
static grpc_byte_buffer *pack_json(const ProtobufCMessageDescriptor *desc, json_t *o) {
    pd_pb_pool pl = {0};
    ProtobufCMessage *m = pd_pb_pool_alloc(&pl, desc->sizeof_message);
    grpc_byte_buffer *bb = m && pd_pb_from_json(desc, o, m, &pl) ? pd_pb_pack(m) : NULL;
    pd_pb_pool_free(&pl);
    return bb;
}

/* ---- calls ---- */

static void call_unref(gcall *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    atomic_fetch_sub(&c->g->live_calls, 1);
    grpc_call_unref(c->call);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    for (size_t i = 0; i < c->n_trailing; i++) grpc_slice_unref(c->trailing[i].value);
    if (c->fd >= 0) close(c->fd);
    free(c);
}

static int http_of(grpc_status_code s) {
    switch (s) {
    case GRPC_STATUS_OK: return 200;
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_FAILED_PRECONDITION: return 400;
    case GRPC_STATUS_UNAUTHENTICATED: return 401;
    case GRPC_STATUS_NOT_FOUND: return 404;
    case GRPC_STATUS_OUT_OF_RANGE: return 416;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: return 429;
    case GRPC_STATUS_UNAVAILABLE: return 503;
    case GRPC_STATUS_UNIMPLEMENTED: return 501;
    default: return 500;
    }
}

static grpc_status_code status_of(const pd_api_error *e) {
    switch (e->http_status) {
    case 400: return strcmp(e->code, "invalid_state") ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_FAILED_PRECONDITION;
    case 401: return GRPC_STATUS_UNAUTHENTICATED;
    case 404: return GRPC_STATUS_NOT_FOUND;
    case 413:
    case 429: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case 416: return GRPC_STATUS_OUT_OF_RANGE;
    case 503: return GRPC_STATUS_UNAVAILABLE;
    default: return GRPC_STATUS_INTERNAL;
    }
}

static void on_final(tag *t, bool ok) {
    gcall *c = (gcall *)((char *)t - offsetof(gcall, op));
    call_unref(c);
}

/* Sends msg (consumed; may be NULL) and then the status; the op chain ends with it. e (may be NULL)
 * adds the error's code and field as trailing metadata. */
static void send_last(gcall *c, grpc_byte_buffer *msg, grpc_status_code code, const char *text, const pd_api_error *e) {
    pd_metrics_request(&c->g->d->metrics, c->m->path, "GRPC", http_of(code));
    if (e && e->code[0]) {
        c->trailing[c->n_trailing].key = grpc_slice_from_static_string("pipedit-error-code");
        c->trailing[c->n_trailing++].value = grpc_slice_from_copied_string(e->code);
    }
    if (e && e->param[0]) {
        c->trailing[c->n_trailing].key = grpc_slice_from_static_string("pipedit-error-param");
        c->trailing[c->n_trailing++].value = grpc_slice_from_copied_string(e->param);
    }
    grpc_slice details = grpc_slice_from_copied_string(text ? text : "");
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (msg) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = msg;
        c->send = msg;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &details;
    ops[n].data.send_status_from_server.trailing_metadata = c->trailing;
    ops[n++].data.send_status_from_server.trailing_metadata_count = c->n_trailing;
    c->op.fn = on_final;
    grpc_call_error rc = grpc_call_start_batch(c->call, ops, n, &c->op, NULL);
    grpc_slice_unref(details);
    if (rc != GRPC_CALL_OK) {
        PD_WARN("grpc", "%s: cannot send the status (call error %d)", c->m->path, (int)rc);
        call_unref(c);
    }
}

/* Answers with the error: the HTTP API's message, prefixed with the field at fault. */
static void send_error(gcall *c, const pd_api_error *e) {
    char text[sizeof e->message + sizeof e->param + 4];
    size_t pl = strlen(e->param);
    bool named = pl && !strncmp(e->message, e->param, pl) && e->message[pl] == ':'; /* "seed: ..." already */
    if (e->param[0] && !named) snprintf(text, sizeof text, "%s: %s", e->param, e->message);
    else snprintf(text, sizeof text, "%s", e->message);
    send_last(c, NULL, status_of(e), text, e);
}

static void send_ok(gcall *c, const ProtobufCMessageDescriptor *desc, json_t *out) {
    grpc_byte_buffer *bb = out ? pack_json(desc, out) : NULL;
    json_decref(out);
    if (!bb) {
        send_last(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    send_last(c, bb, GRPC_STATUS_OK, NULL, NULL);
}

/* ---- watches (WatchVideo, Health.Watch) ---- */

typedef struct watch_send {
    gcall *c;
    pd_watch_event ev; /* WatchVideo */
    json_t *video;
    int health;        /* Health.Watch */
    bool stop;         /* end the stream: the server is stopping */
} watch_send;

/* Sends one message of a server stream (c takes bb until it is sent); then() runs when it is sent, or
 * with ok false when the batch cannot start. */
static void send_next(gcall *c, grpc_byte_buffer *bb, void (*then)(tag *t, bool ok)) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    c->send = bb;
    c->op.fn = then;
    if (grpc_call_start_batch(c->call, &op, 1, &c->op, NULL) != GRPC_CALL_OK) then(&c->op, false);
}

static void on_watch_sent(tag *t, bool ok);

/* d->lock held. What idle watcher c sends next: true (and c busy) when there is something. ready is
 * the daemon's readiness, sampled by the caller without the lock. */
static bool watch_next_locked(pd_daemon *d, gcall *c, bool ready, bool stopping, watch_send *ws) {
    memset(ws, 0, sizeof *ws);
    ws->c = c;
    if (stopping) {
        ws->stop = true;
        c->final = true;
    } else if (c->m->kind == K_HEALTH_WATCH) {
        int st = ready ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        if (st == c->health_sent) return false;
        c->health_sent = ws->health = st;
    } else {
        ws->ev = pd_daemon_watch_next_locked(d, c->id, &c->cursor, &ws->video);
        if (ws->ev == PD_WATCH_NONE) return false;
        c->final = ws->ev == PD_WATCH_COMPLETED || ws->ev == PD_WATCH_FAILED || ws->ev == PD_WATCH_DELETED;
    }
    c->busy = true;
    return true;
}

/* Starts the send chosen by watch_next_locked (without d->lock). */
static void watch_send_start(pd_daemon *d, watch_send *ws) {
    gcall *c = ws->c;
    grpc_byte_buffer *bb = NULL;
    if (ws->stop) {
        send_last(c, NULL, GRPC_STATUS_UNAVAILABLE, "the server is shutting down; watch again on another instance", NULL);
        return;
    }
    if (c->m->kind == K_HEALTH_WATCH) {
        Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        r.status = ws->health;
        bb = pd_pb_pack(&r.base);
    } else {
        static const Pipedit__V1__WatchVideoEvent__Type types[] = {
            PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_UNSPECIFIED, PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_PROGRESS,
            PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_STAGE,       PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_COMPLETED,
            PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_FAILED,      PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_DELETED};
        json_t *video = ws->video;
        if (ws->ev == PD_WATCH_DELETED) video = json_pack("{s:s}", "id", c->id);
        else if (video) pd_daemon_add_queue_position(d, video);
        json_t *o = video ? json_pack("{s:o}", "video", video) : NULL;
        if (o) {
            pd_pb_pool pl = {0};
            Pipedit__V1__WatchVideoEvent ev = PIPEDIT__V1__WATCH_VIDEO_EVENT__INIT;
            if (pd_pb_from_json(&pipedit__v1__watch_video_event__descriptor, o, &ev.base, &pl)) {
                ev.type = types[ws->ev];
                if (ws->ev == PD_WATCH_PROGRESS && ev.video && ev.video->status == PIPEDIT__V1__VIDEO_STATUS__VIDEO_STATUS_QUEUED)
                    ev.type = PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_QUEUED;
                bb = pd_pb_pack(&ev.base);
            }
            pd_pb_pool_free(&pl);
            json_decref(o);
        }
    }
    if (!bb) {
        send_last(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    if (c->final) {
        send_last(c, bb, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    send_next(c, bb, on_watch_sent);
}

static void watch_remove_locked(pd_grpc *g, gcall *c) {
    for (gcall **p = &g->watchers; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
}

static void on_watch_sent(tag *t, bool ok) {
    gcall *c = (gcall *)((char *)t - offsetof(gcall, op));
    pd_daemon *d = c->g->d;
    if (c->send) grpc_byte_buffer_destroy(c->send);
    c->send = NULL;
    bool ready = false;
    if (c->m->kind == K_HEALTH_WATCH) {
        pd_scheduler_stats s;
        ready = pd_daemon_ready(d, &s);
    }
    watch_send ws;
    pthread_mutex_lock(&d->lock);
    c->busy = false;
    if (!ok || c->closed) {
        watch_remove_locked(c->g, c);
        pthread_mutex_unlock(&d->lock);
        call_unref(c);
        return;
    }
    /* The job may have changed while this was in flight: send the latest at once. */
    bool more = watch_next_locked(d, c, ready, c->g->stopping, &ws);
    if (more && c->final) watch_remove_locked(c->g, c);
    pthread_mutex_unlock(&d->lock);
    if (more) watch_send_start(d, &ws);
}

/* The watch thread: wakes on job changes and on its tick, and starts a send for every idle watcher
 * with news; on stop, ends every idle watcher with UNAVAILABLE. */
static void *watch_main(void *arg) {
    pd_grpc *g = arg;
    pd_daemon *d = g->d;
    watch_send *batch = NULL;
    size_t cap = 0;
    long logged = -1;
    for (;;) {
        long live = atomic_load(&g->live_calls);
        if (live != logged) PD_DEBUG("grpc", "%ld calls open", live);
        logged = live;
        pd_scheduler_stats s;
        bool ready = pd_daemon_ready(d, &s);
        size_t n = 0;
        pthread_mutex_lock(&d->lock);
        bool stopping = g->stopping;
        for (gcall **p = &g->watchers; *p;) {
            gcall *c = *p;
            if (c->busy) {
                p = &c->next;
                continue;
            }
            if (c->closed) { /* cancelled or past its deadline while idle */
                *p = c->next;
                pthread_mutex_unlock(&d->lock);
                call_unref(c);
                pthread_mutex_lock(&d->lock);
                p = &g->watchers; /* the list may have changed meanwhile */
                continue;
            }
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 64;
                watch_send *b = realloc(batch, nc * sizeof *b);
                if (!b) break;
                batch = b;
                cap = nc;
            }
            if (watch_next_locked(d, c, ready, stopping, &batch[n])) {
                n++;
                if (c->final) {
                    *p = c->next;
                    continue;
                }
            }
            p = &c->next;
        }
        if (n == 0) {
            if (stopping) {
                pthread_mutex_unlock(&d->lock);
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)WATCH_TICK_S;
            pthread_cond_timedwait(&d->changed, &d->lock, &ts);
        }
        pthread_mutex_unlock(&d->lock);
        for (size_t i = 0; i < n; i++) watch_send_start(d, &batch[i]);
    }
    free(batch);
    return NULL;
}

static void watch_add(gcall *c) {
    pd_daemon *d = c->g->d;
    pthread_mutex_lock(&d->lock);
    if (c->g->stopping) { /* the watch thread is gone */
        pthread_mutex_unlock(&d->lock);
        send_last(c, NULL, GRPC_STATUS_UNAVAILABLE, "the server is shutting down; watch again on another instance", NULL);
        return;
    }
    c->next = c->g->watchers;
    c->g->watchers = c;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
}

/* ---- DownloadVideo ---- */

static void on_chunk_sent(tag *t, bool ok);

static void send_chunk(gcall *c) {
    size_t n = c->end - c->off < CHUNK_BYTES ? (size_t)(c->end - c->off) : CHUNK_BYTES;
    uint8_t *buf = malloc(n ? n : 1);
    ssize_t got = buf ? pread(c->fd, buf, n, (off_t)c->off) : -1;
    if (got != (ssize_t)n) {
        free(buf);
        pd_api_error e;
        pd_api_error_set(&e, 500, NULL, "read_error", "reading the output file failed");
        send_error(c, &e);
        return;
    }
    Pipedit__V1__DownloadVideoChunk ch = PIPEDIT__V1__DOWNLOAD_VIDEO_CHUNK__INIT;
    ch.data.data = buf;
    ch.data.len = n;
    ch.offset = (int64_t)c->off;
    ch.total_size = (int64_t)c->total;
    if (c->content_type) ch.content_type = (char *)c->content_type;
    c->content_type = NULL; /* first chunk only */
    grpc_byte_buffer *bb = pd_pb_pack(&ch.base);
    free(buf);
    c->off += n;
    if (c->off == c->end) {
        send_last(c, bb, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    send_next(c, bb, on_chunk_sent);
}

static void on_chunk_sent(tag *t, bool ok) {
    gcall *c = (gcall *)((char *)t - offsetof(gcall, op));
    if (c->send) grpc_byte_buffer_destroy(c->send);
    c->send = NULL;
    if (!ok || c->cancelled) { /* the client went away or the deadline passed */
        call_unref(c);
        return;
    }
    send_chunk(c);
}

static void start_download(gcall *c, const Pipedit__V1__DownloadVideoRequest *r) {
    pd_daemon *d = c->g->d;
    pd_api_error e;
    char path[PATH_MAX];
    bool thumb = r->variant == PIPEDIT__V1__DOWNLOAD_VIDEO_REQUEST__VARIANT__VARIANT_THUMBNAIL;
    if (r->variant != PIPEDIT__V1__DOWNLOAD_VIDEO_REQUEST__VARIANT__VARIANT_VIDEO && !thumb) {
        pd_api_error_set(&e, 400, "variant", "invalid_value", "'variant' must be VARIANT_VIDEO or VARIANT_THUMBNAIL");
        {
            send_error(c, &e);
            return;
        }
    }
    if (r->offset < 0 || r->length < 0) {
        pd_api_error_set(&e, 400, r->offset < 0 ? "offset" : "length", "invalid_value", "'%s' must not be negative",
                         r->offset < 0 ? "offset" : "length");
        {
            send_error(c, &e);
            return;
        }
    }
    if (pd_daemon_content_path(d, c->id, thumb ? PD_STORE_THUMBNAIL : PD_STORE_VIDEO, path, &e) != 200) {
            send_error(c, &e);
            return;
        }
    c->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (c->fd < 0 || fstat(c->fd, &st) || !S_ISREG(st.st_mode)) {
        pd_api_error_set(&e, 404, "id", "content_not_found", "the output file is missing");
        {
            send_error(c, &e);
            return;
        }
    }
    c->total = (uint64_t)st.st_size;
    c->off = (uint64_t)r->offset;
    if (c->off > c->total || (c->off == c->total && c->total > 0)) {
        pd_api_error_set(&e, 416, "offset", "range_not_satisfiable", "'offset' %lld is past the end of the %llu-byte file", (long long)r->offset,
                         (unsigned long long)c->total);
        {
            send_error(c, &e);
            return;
        }
    }
    c->end = r->length && (uint64_t)r->length < c->total - c->off ? c->off + (uint64_t)r->length : c->total;
    c->content_type = thumb ? "image/png" : "video/mp4";
    send_chunk(c);
}

/* ---- unary calls ---- */

static bool id_ok(gcall *c, const char *id) {
    snprintf(c->id, sizeof c->id, "%s", id ? id : "");
    if (id && pd_job_id_valid(id)) return true;
    pd_api_error e;
    pd_api_error_set(&e, 404, "id", "video_not_found", "no video with that id (ids look like video_ followed by 32 hex digits)");
    send_error(c, &e);
    return false;
}

static void dispatch(gcall *c, ProtobufCMessage *req) {
    pd_daemon *d = c->g->d;
    pd_api_error e;
    json_t *out = NULL;
    int st = 200;
    switch (c->m->kind) {
    case K_CREATE: {
        const char *bad = NULL;
        json_t *root = pd_pb_to_json(req, &bad);
        if (!root) {
            if (bad) pd_api_error_set(&e, 400, bad, "invalid_value", "'%s' is not valid UTF-8 or not a finite number", bad);
            else pd_api_error_set(&e, 503, NULL, "out_of_memory", "out of memory");
            {
            send_error(c, &e);
            return;
        }
        }
        pd_job_request jr;
        st = pd_api_parse_create_object(&d->limits, root, &jr, &e);
        json_decref(root);
        if (st) {
            send_error(c, &e);
            return;
        }
        st = pd_daemon_create_video(d, &jr, &out, &e);
        pd_job_request_free(&jr);
        break;
    }
    case K_GET: {
        const Pipedit__V1__GetVideoRequest *r = (const void *)req;
        if (!id_ok(c, r->id)) return;
        st = pd_daemon_get_video(d, c->id, &out, &e);
        break;
    }
    case K_CANCEL: {
        const Pipedit__V1__CancelVideoRequest *r = (const void *)req;
        if (!id_ok(c, r->id)) return;
        st = pd_daemon_cancel_video(d, c->id, &out, &e);
        break;
    }
    case K_DELETE: {
        const Pipedit__V1__DeleteVideoRequest *r = (const void *)req;
        if (!id_ok(c, r->id)) return;
        st = pd_daemon_delete_video(d, c->id, &out, &e);
        break;
    }
    case K_LIST: {
        const Pipedit__V1__ListVideosRequest *r = (const void *)req;
        long limit = r->limit ? r->limit : 20;
        const char *order = r->order && *r->order ? r->order : NULL, *after = r->after && *r->after ? r->after : NULL;
        if ((st = pd_api_check_list(limit, order, after, &e))) break;
        st = pd_daemon_list_videos(d, after, (int)limit, order && !strcmp(order, "asc"), &out, &e);
        break;
    }
    case K_MODELS: out = json_pack("{s:s, s:[o]}", "object", "list", "data", pd_daemon_model_json(d)); break;
    case K_HEALTH_CHECK: {
        const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
        if (r->service && *r->service && strcmp(r->service, "pipedit.v1.VideoService"))
            return send_last(c, NULL, GRPC_STATUS_NOT_FOUND, "unknown service; this server reports \"\" and \"pipedit.v1.VideoService\"", NULL);
        pd_scheduler_stats s;
        bool ready = pd_daemon_ready(d, &s);
        Grpc__Health__V1__HealthCheckResponse h = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        h.status = ready ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                         : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        {
            send_last(c, pd_pb_pack(&h.base), GRPC_STATUS_OK, NULL, NULL);
            return;
        }
    }
    case K_HEALTH_WATCH: {
        const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
        if (r->service && *r->service && strcmp(r->service, "pipedit.v1.VideoService"))
            return send_last(c, NULL, GRPC_STATUS_NOT_FOUND, "unknown service; this server reports \"\" and \"pipedit.v1.VideoService\"", NULL);
        {
            watch_add(c);
            return;
        }
    }
    case K_WATCH: {
        const Pipedit__V1__WatchVideoRequest *r = (const void *)req;
        if (!id_ok(c, r->id)) return;
        if ((st = pd_daemon_get_video(d, c->id, &out, &e)) != 200) break;
        json_decref(out);
        {
            watch_add(c);
            return;
        }
    }
    case K_DOWNLOAD: {
        const Pipedit__V1__DownloadVideoRequest *r = (const void *)req;
        if (!id_ok(c, r->id)) return;
        {
            start_download(c, r);
            return;
        }
    }
    }
    if (st != 200) {
            send_error(c, &e);
            return;
        }
    send_ok(c, c->m->out, out);
}

static void on_message(tag *t, bool ok) {
    gcall *c = (gcall *)((char *)t - offsetof(gcall, op));
    if (!ok) { /* cancelled before its request arrived: nothing to answer */
        call_unref(c);
        return;
    }
    pd_api_error e;
    if (!c->m->in) {
            send_last(c, NULL, GRPC_STATUS_UNIMPLEMENTED, "no such method", NULL);
            return;
        }
    if (!c->recv) {
        pd_api_error_set(&e, 400, NULL, "invalid_request", "the call carried no request message");
        {
            send_error(c, &e);
            return;
        }
    }
    if (c->m->auth && !c->auth_ok) {
        pd_api_error_set(&e, 401, NULL, "invalid_api_key", "missing or invalid API key; send the metadata 'authorization: Bearer <key>'");
        {
            send_error(c, &e);
            return;
        }
    }
    if (gpr_time_cmp(gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC), gpr_now(GPR_CLOCK_MONOTONIC)) <= 0)
        {
            send_last(c, NULL, GRPC_STATUS_DEADLINE_EXCEEDED, "the deadline passed before the call was served", NULL);
            return;
        }
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, c->recv)) {
        pd_api_error_set(&e, 400, NULL, "invalid_request", "the request message cannot be read");
        {
            send_error(c, &e);
            return;
        }
    }
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *req = protobuf_c_message_unpack(c->m->in, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!req) {
        pd_api_error_set(&e, 400, NULL, "invalid_request", "the request is not a valid %s message", c->m->in->name);
        {
            send_error(c, &e);
            return;
        }
    }
    dispatch(c, req);
    protobuf_c_message_free_unpacked(req, NULL);
}

static void on_close(tag *t, bool ok) {
    gcall *c = (gcall *)((char *)t - offsetof(gcall, close));
    pd_daemon *d = c->g->d;
    pthread_mutex_lock(&d->lock);
    c->closed = true;
    pthread_cond_broadcast(&d->changed); /* an idle watcher is released by the watch thread */
    pthread_mutex_unlock(&d->lock);
    call_unref(c);
}

/* ---- accepting calls ---- */

static void on_request(tag *t, bool ok);

static void request_next(pending *p) {
    grpc_call_details_init(&p->details);
    grpc_metadata_array_init(&p->md);
    p->call = NULL;
    p->t.fn = on_request;
    grpc_call_error rc = grpc_server_request_call(p->g->server, &p->call, &p->details, &p->md, p->g->cq, p->g->cq, &p->t);
    if (rc != GRPC_CALL_OK) {
        PD_ERROR("grpc", "grpc_server_request_call: call error %d", (int)rc);
        grpc_call_details_destroy(&p->details);
        grpc_metadata_array_destroy(&p->md);
        free(p);
    }
}

static void on_request(tag *t, bool ok) {
    pending *p = (pending *)t;
    pd_grpc *g = p->g;
    /* Every open call costs memory until it ends: bound them (a watch is cheap but a client can open many). */
    bool full = ok && atomic_load(&g->live_calls) >= g->d->cfg.grpc_max_calls;
    gcall *c = ok && !full ? calloc(1, sizeof *c) : NULL;
    if (ok && !c) {
        grpc_call_cancel_with_status(p->call, GRPC_STATUS_RESOURCE_EXHAUSTED, full ? "too many open calls (grpc_max_calls); retry later" : "out of memory",
                                     NULL);
        pd_metrics_request(&g->d->metrics, "unknown", "GRPC", 429);
    }
    if (c) {
        c->g = g;
        c->call = p->call;
        c->fd = -1;
        c->health_sent = -1;
        c->cursor.stage = -1;
        c->m = &unknown_method;
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
            if (!grpc_slice_str_cmp(p->details.method, methods[i].path)) c->m = &methods[i];
        c->deadline = p->details.deadline;
        char auth[256] = "";
        for (size_t i = 0; i < p->md.count; i++) {
            if (grpc_slice_str_cmp(p->md.metadata[i].key, "authorization")) continue;
            size_t n = GRPC_SLICE_LENGTH(p->md.metadata[i].value);
            if (n < sizeof auth) {
                memcpy(auth, GRPC_SLICE_START_PTR(p->md.metadata[i].value), n);
                auth[n] = 0;
            }
        }
        c->auth_ok = pd_http_key_ok(&g->d->cfg, auth[0] ? auth : NULL);
    } else if (ok) {
        grpc_call_unref(p->call);
    }
    grpc_call_details_destroy(&p->details);
    grpc_metadata_array_destroy(&p->md);
    if (ok && !atomic_load(&g->shutting)) request_next(p);
    else free(p);
    if (!c) return;

    atomic_init(&c->refs, 2);
    atomic_fetch_add(&g->live_calls, 1);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &c->recv;
    c->op.fn = on_message;
    if (grpc_call_start_batch(c->call, ops, 2, &c->op, NULL) != GRPC_CALL_OK) call_unref(c);
    grpc_op cl;
    memset(&cl, 0, sizeof cl);
    cl.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    cl.data.recv_close_on_server.cancelled = &c->cancelled;
    c->close.fn = on_close;
    if (grpc_call_start_batch(c->call, &cl, 1, &c->close, NULL) != GRPC_CALL_OK) call_unref(c);
}

static void on_shutdown(tag *t, bool ok) {
    pd_grpc *g = (pd_grpc *)((char *)t - offsetof(pd_grpc, shutdown_tag));
    pthread_mutex_lock(&g->mu);
    g->shutdown_done = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void *cq_main(void *arg) {
    pd_grpc *g = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) {
            tag *t = ev.tag;
            t->fn(t, ev.success != 0);
        }
    }
    return NULL;
}

/* Frees g after its threads are gone (or were never started). */
static void destroy(pd_grpc *g) {
    if (g->cq) {
        grpc_completion_queue_shutdown(g->cq);
        for (int i = 0; i < g->n_threads; i++) pthread_join(g->threads[i], NULL);
        if (g->n_threads == 0)
            while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
            }
    }
    if (g->server) grpc_server_destroy(g->server);
    if (g->cq) grpc_completion_queue_destroy(g->cq);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->threads);
    free(g);
    grpc_shutdown();
}

pd_status pd_grpc_start(pd_daemon *d, int *bound_port) {
    const pd_config *cfg = &d->cfg;
    grpc_init();
    pd_grpc *g = calloc(1, sizeof *g);
    if (!g) {
        grpc_shutdown();
        return pd_error_set(PD_ERR_NOMEM, "out of memory starting the gRPC server");
    }
    g->d = d;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    atomic_init(&g->shutting, false);
    atomic_init(&g->live_calls, 0);
    g->shutdown_tag.fn = on_shutdown;
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = (int)cfg->body_limit},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, .value.integer = MAX_SEND_BYTES},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_METADATA_SIZE, .value.integer = 16 * 1024},
        /* One daemon per port: a second one must fail to bind, not share it. */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
    };
    grpc_channel_args ca = {sizeof args / sizeof args[0], args};
    g->server = grpc_server_create(&ca, NULL);
    g->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    char addr[PD_CONFIG_STR_MAX + 16];
    snprintf(addr, sizeof addr, strchr(cfg->host, ':') ? "[%s]:%d" : "%s:%d", cfg->host, cfg->grpc_port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(g->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        grpc_server_destroy(g->server);
        g->server = NULL;
        destroy(g);
        return pd_error_set(PD_ERR_IO, "gRPC: cannot listen on %s (in use, or not an address of this host)", addr);
    }
    grpc_server_start(g->server);
    g->threads = calloc((size_t)cfg->grpc_threads, sizeof *g->threads);
    for (int i = 0; g->threads && i < cfg->grpc_threads; i++) {
        if (pthread_create(&g->threads[i], NULL, cq_main, g)) break;
        g->n_threads++;
    }
    bool ok = g->n_threads > 0 && !pthread_create(&g->watch_thread, NULL, watch_main, g);
    g->watch_started = ok;
    for (int i = 0; ok && i < PENDING_PER_THREAD * g->n_threads; i++) {
        pending *p = calloc(1, sizeof *p);
        if (!p) break;
        p->g = g;
        request_next(p);
    }
    d->grpc = g;
    if (!ok) {
        pd_grpc_stop(d);
        return pd_error_set(PD_ERR_NOMEM, "gRPC: cannot start its threads");
    }
    *bound_port = port;
    return PD_OK;
}

void pd_grpc_stop(pd_daemon *d) {
    pd_grpc *g = d->grpc;
    if (!g) return;
    pthread_mutex_lock(&d->lock);
    g->stopping = true;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
    if (g->watch_started) pthread_join(g->watch_thread, NULL);
    atomic_store(&g->shutting, true);
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->shutdown_tag);
    grpc_server_cancel_all_calls(g->server);
    if (g->n_threads > 0) {
        pthread_mutex_lock(&g->mu);
        while (!g->shutdown_done) pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
    }
    d->grpc = NULL;
    destroy(g);
}
