#include "daemon/sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#define KEEPALIVE_S 15.0

struct pd_sse_stream {
    pd_daemon *d;
    struct MHD_Connection *conn;
    char id[PD_JOB_ID_LEN + 1];
    bool finished, waiting;
    pd_watch_cursor cursor;
    double last_send;
    char *buf; /* pending event text */
    size_t len, off;
    pd_sse_stream *next; /* in d->sse_waiters while waiting */
};

void pd_daemon_wake_streams_locked(pd_daemon *d) {
    pthread_cond_broadcast(&d->changed);
    for (pd_sse_stream *s = d->sse_waiters; s;) {
        pd_sse_stream *next = s->next;
        s->waiting = false;
        s->next = NULL;
        MHD_resume_connection(s->conn);
        s = next;
    }
    d->sse_waiters = NULL;
}

static void unlink_waiter(pd_daemon *d, pd_sse_stream *s) {
    for (pd_sse_stream **p = &d->sse_waiters; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    s->waiting = false;
}

static void set_event(pd_sse_stream *s, const char *event, json_t *data) {
    char *js = pd_api_dump(data);
    free(s->buf);
    s->buf = NULL;
    s->len = s->off = 0;
    if (!js) return;
    size_t n = strlen(js) + strlen(event) + 32;
    s->buf = malloc(n);
    if (s->buf) s->len = (size_t)snprintf(s->buf, n, "event: %s\ndata: %s\n\n", event, js);
    free(js);
}

static ssize_t reader(void *cls, uint64_t pos, char *out, size_t max) {
    pd_sse_stream *s = cls;
    pd_daemon *d = s->d;
    if (s->off == s->len) {
        if (s->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        json_t *video = NULL;
        const char *event = NULL;
        bool keepalive = false;
        double now = pd_daemon_now();
        pthread_mutex_lock(&d->lock);
        if (d->http_stopping) {
            pthread_mutex_unlock(&d->lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        static const char *const names[] = {"", "progress", "stage", "completed", "failed", "deleted"};
        pd_watch_event ev = pd_daemon_watch_next_locked(d, s->id, &s->cursor, &video);
        if (ev == PD_WATCH_DELETED) {
            event = names[ev];
            video = json_pack("{s:s, s:s, s:b}", "id", s->id, "object", "video.deleted", "deleted", 1);
            s->finished = true;
        } else if (ev != PD_WATCH_NONE) {
            event = names[ev];
            s->finished = ev == PD_WATCH_COMPLETED || ev == PD_WATCH_FAILED;
        } else if (now - s->last_send >= KEEPALIVE_S) {
            keepalive = true;
        } else {
            /* Nothing new: park the connection until a job changes or the next housekeeping tick. */
            s->waiting = true;
            s->next = d->sse_waiters;
            d->sse_waiters = s;
            MHD_suspend_connection(s->conn);
            pthread_mutex_unlock(&d->lock);
            return 0;
        }
        pthread_mutex_unlock(&d->lock);
        s->last_send = now;
        if (keepalive) {
            free(s->buf);
            s->buf = strdup(": keep-alive\n\n");
            s->len = s->buf ? strlen(s->buf) : 0;
            s->off = 0;
        } else {
            if (video && strcmp(event, "deleted")) pd_daemon_add_queue_position(d, video);
            if (!video) return MHD_CONTENT_READER_END_WITH_ERROR;
            set_event(s, event, video);
        }
        if (!s->buf) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(out, s->buf + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    pd_sse_stream *s = cls;
    pthread_mutex_lock(&s->d->lock);
    if (s->waiting) unlink_waiter(s->d, s);
    pthread_mutex_unlock(&s->d->lock);
    free(s->buf);
    free(s);
}

struct MHD_Response *pd_sse_response(pd_daemon *d, struct MHD_Connection *conn, const char *id) {
    pd_sse_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->d = d;
    s->conn = conn;
    s->cursor.stage = -1;
    snprintf(s->id, sizeof s->id, "%s", id);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, reader, s, stream_free);
    if (!r) {
        free(s);
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return r;
}
