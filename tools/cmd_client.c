/* pipedit client: talks to a running pipeditd over HTTP/1.1 on a plain TCP socket.
 *
 *   pipedit client create --prompt TEXT [--seconds S] [--size WxH] [--seed N] [--steps N] ... [--wait]
 *   pipedit client get ID | wait ID [--poll] | download ID [--variant video|thumbnail] [--output FILE]
 *   pipedit client list [--limit N] [--after ID] [--order asc|desc] | delete ID | cancel ID
 * Global options: --url http://127.0.0.1:8000 (or $PIPEDIT_URL), --api-key K (or $PIPEDIT_API_KEY).
 * `wait` follows the job's Server-Sent Events with a progress bar on stderr and falls back to polling
 * when the stream is unavailable; it exits 0 when the video completed and 1 when it failed. */
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/file_io.h"
#include "tools/commands.h"
#ifdef PD_HAVE_GRPC
#include "tools/client_grpc.h"
#endif

#define MAX_BODY (64u << 20)  /* largest JSON answer kept in memory */
#define MAX_HEADERS (64u << 10)

typedef struct client {
    char host[256], port[8], prefix[256];
    const char *api_key;
} client;

typedef void (*sink_fn)(void *ud, const char *p, size_t n);

typedef struct response {
    int status;
    char headers[MAX_HEADERS];
    char *body;
    size_t len;
    bool overflow;
} response;

static int parse_url(client *c, const char *url) {
    if (strncmp(url, "http://", 7)) {
        fprintf(stderr, "pipedit client: --url must start with http:// (got '%s')\n", url);
        return -1;
    }
    const char *h = url + 7, *end;
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end) return -1;
        snprintf(c->host, sizeof c->host, "%.*s", (int)(end - h - 1), h + 1);
        end++;
    } else {
        end = h + strcspn(h, ":/");
        snprintf(c->host, sizeof c->host, "%.*s", (int)(end - h), h);
    }
    snprintf(c->port, sizeof c->port, "80");
    if (*end == ':') {
        size_t n = strspn(end + 1, "0123456789");
        if (n == 0 || n > 5) return -1;
        snprintf(c->port, sizeof c->port, "%.*s", (int)n, end + 1);
        end += 1 + n;
    }
    snprintf(c->prefix, sizeof c->prefix, "%s", end);
    size_t pl = strlen(c->prefix);
    if (pl && c->prefix[pl - 1] == '/') c->prefix[pl - 1] = 0;
    /* base URLs given as .../v1 (as the OpenAI SDK wants) work too */
    pl = strlen(c->prefix);
    if (pl >= 3 && !strcmp(c->prefix + pl - 3, "/v1")) c->prefix[pl - 3] = 0;
    return c->host[0] ? 0 : -1;
}

static int dial(const client *c) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai, *a;
    int rc = getaddrinfo(c->host, c->port, &hints, &ai);
    if (rc) {
        fprintf(stderr, "pipedit client: %s: %s\n", c->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) fprintf(stderr, "pipedit client: cannot connect to %s:%s: %s\n", c->host, c->port, strerror(errno));
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Buffered reads from the socket. */
typedef struct rbuf {
    int fd;
    char b[65536];
    size_t off, len;
} rbuf;

static ssize_t rb_fill(rbuf *r) {
    if (r->off < r->len) return (ssize_t)(r->len - r->off);
    ssize_t n;
    do n = recv(r->fd, r->b, sizeof r->b, 0);
    while (n < 0 && errno == EINTR);
    r->off = 0;
    r->len = n > 0 ? (size_t)n : 0;
    return n;
}

/* Reads one line (CRLF or LF stripped) into out; -1 on EOF/error or an over-long line. */
static int rb_line(rbuf *r, char *out, size_t cap) {
    size_t n = 0;
    for (;;) {
        if (rb_fill(r) <= 0) return -1;
        char ch = r->b[r->off++];
        if (ch == '\n') break;
        if (n + 1 >= cap) return -1;
        out[n++] = ch;
    }
    if (n && out[n - 1] == '\r') n--;
    out[n] = 0;
    return 0;
}

static const char *header(const response *rs, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = rs->headers; *p;) {
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ') p++;
            return p;
        }
        p = strchr(p, '\n');
        if (!p) break;
        p++;
    }
    return NULL;
}

static void sink_buffer(void *ud, const char *p, size_t n) {
    response *rs = ud;
    if (rs->overflow || rs->len + n > MAX_BODY) {
        rs->overflow = true;
        return;
    }
    char *b = realloc(rs->body, rs->len + n + 1);
    if (!b) {
        rs->overflow = true;
        return;
    }
    memcpy(b + rs->len, p, n);
    rs->body = b;
    rs->len += n;
    rs->body[rs->len] = 0;
}

/* One request; the body goes to sink (NULL: into rs->body). Returns 0 when a response was read. */
static int request(const client *c, const char *method, const char *path, const char *ctype, const char *body, sink_fn sink, void *ud,
                   response *rs) {
    memset(rs, 0, sizeof *rs);
    int fd = dial(c);
    if (fd < 0) return -1;
    char head[4096];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head, "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: pipedit-client\r\nAccept: */*\r\nConnection: close\r\n",
                     method, c->prefix, path, c->host, c->port);
    if (c->api_key) n += snprintf(head + n, sizeof head - (size_t)n, "Authorization: Bearer %s\r\n", c->api_key);
    if (body) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, blen);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    if (n >= (int)sizeof head || send_all(fd, head, (size_t)n) || (body && send_all(fd, body, blen))) {
        fprintf(stderr, "pipedit client: sending the request failed\n");
        close(fd);
        return -1;
    }
    static rbuf r;
    r.fd = fd;
    r.off = r.len = 0;
    char line[8192];
    if (rb_line(&r, line, sizeof line) || sscanf(line, "HTTP/1.%*d %d", &rs->status) != 1) {
        fprintf(stderr, "pipedit client: no HTTP response from %s:%s\n", c->host, c->port);
        close(fd);
        return -1;
    }
    size_t hl = 0;
    while (rb_line(&r, line, sizeof line) == 0 && line[0]) {
        size_t l = strlen(line);
        if (hl + l + 2 < sizeof rs->headers) {
            memcpy(rs->headers + hl, line, l);
            rs->headers[hl + l] = '\n';
            hl += l + 1;
            rs->headers[hl] = 0;
        }
    }
    if (!sink) sink = sink_buffer, ud = rs;
    const char *te = header(rs, "Transfer-Encoding");
    const char *cl = header(rs, "Content-Length");
    if (te && !strncasecmp(te, "chunked", 7)) {
        for (;;) {
            if (rb_line(&r, line, sizeof line)) break;
            unsigned long long sz = strtoull(line, NULL, 16);
            if (sz == 0) break;
            while (sz) {
                if (rb_fill(&r) <= 0) goto done;
                size_t k = r.len - r.off < sz ? r.len - r.off : (size_t)sz;
                sink(ud, r.b + r.off, k);
                r.off += k;
                sz -= k;
            }
            if (rb_line(&r, line, sizeof line)) break;
        }
    } else {
        unsigned long long left = cl ? strtoull(cl, NULL, 10) : ~0ull;
        if (!strcmp(method, "HEAD") || rs->status == 204 || rs->status == 304) left = 0;
        while (left && rb_fill(&r) > 0) {
            size_t k = r.len - r.off < left ? r.len - r.off : (size_t)left;
            sink(ud, r.b + r.off, k);
            r.off += k;
            left -= k;
        }
    }
done:
    close(fd);
    return 0;
}

/* Prints an error answer (OpenAI envelope) and returns 1. */
static int print_error(const response *rs) {
    json_t *e = rs->body ? json_loads(rs->body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_object_get(e, "error"), "message"));
    fprintf(stderr, "pipedit client: HTTP %d: %s\n", rs->status, msg ? msg : (rs->body ? rs->body : ""));
    json_decref(e);
    return 1;
}

static int print_json(response *rs) {
    if (rs->status != 200) return print_error(rs);
    json_t *v = json_loadb(rs->body ? rs->body : "", rs->len, 0, NULL);
    if (!v) {
        fprintf(stderr, "pipedit client: the answer is not JSON\n");
        return 1;
    }
    json_dumpf(v, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(v);
    return 0;
}

static bool id_ok(const char *id) {
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || *p == '_')) return false;
    return *id && strlen(id) < 64;
}

/* ---- wait: progress bar from SSE, or polling ---- */

static void bar(const char *id, int progress, const char *status, const char *stage) {
    char b[31];
    int k = progress * 30 / 100;
    for (int i = 0; i < 30; i++) b[i] = i < k ? '#' : '.';
    b[30] = 0;
    fprintf(stderr, "\r%s [%s] %3d%% %-11s %-8s", id, b, progress, status, stage ? stage : "");
    fflush(stderr);
}

typedef struct sse {
    const char *id;
    char line[1 << 20];
    size_t n;
    char event[32];
    int final; /* 0 running, 1 completed, 2 failed or gone */
} sse;

static void show_video(const char *id, json_t *v) {
    json_int_t p = json_integer_value(json_object_get(v, "progress"));
    bar(id, (int)p, json_string_value(json_object_get(v, "status")) ? json_string_value(json_object_get(v, "status")) : "?",
        json_string_value(json_object_get(v, "stage")));
}

static void sse_sink(void *ud, const char *p, size_t n) {
    sse *s = ud;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (s->n + 1 < sizeof s->line) s->line[s->n++] = p[i];
            continue;
        }
        s->line[s->n] = 0;
        s->n = 0;
        if (!strncmp(s->line, "event: ", 7)) snprintf(s->event, sizeof s->event, "%s", s->line + 7);
        else if (!strncmp(s->line, "data: ", 6)) {
            json_t *v = json_loads(s->line + 6, 0, NULL);
            if (v && strcmp(s->event, "deleted")) show_video(s->id, v);
            if (!strcmp(s->event, "completed")) s->final = 1;
            else if (!strcmp(s->event, "failed") || !strcmp(s->event, "deleted")) {
                s->final = 2;
                json_t *e = json_object_get(v, "error");
                if (e) fprintf(stderr, "\n%s failed: %s: %s", s->id, json_string_value(json_object_get(e, "code")),
                               json_string_value(json_object_get(e, "message")));
            }
            json_decref(v);
        }
    }
}

static int wait_video(const client *c, const char *id, bool poll_only) {
    char path[128];
    response rs;
    if (!poll_only) {
        static sse s;
        memset(&s, 0, sizeof s);
        s.id = id;
        snprintf(path, sizeof path, "/v1/videos/%s/events", id);
        if (request(c, "GET", path, NULL, NULL, sse_sink, &s, &rs) == 0 && rs.status == 200 && s.final) {
            fputc('\n', stderr);
            return s.final == 1 ? 0 : 1;
        }
        if (rs.status == 404) return print_error(&rs);
    }
    /* Polling, at the pace the server asks for. */
    snprintf(path, sizeof path, "/v1/videos/%s", id);
    for (;;) {
        if (request(c, "GET", path, NULL, NULL, NULL, NULL, &rs)) return 1;
        if (rs.status != 200) {
            int rc = print_error(&rs);
            free(rs.body);
            return rc;
        }
        json_t *v = json_loadb(rs.body, rs.len, 0, NULL);
        const char *hdr = header(&rs, "openai-poll-after-ms");
        long ms = hdr ? strtol(hdr, NULL, 10) : 1000;
        free(rs.body);
        if (!v) return 1;
        show_video(id, v);
        const char *st = json_string_value(json_object_get(v, "status"));
        int rc = st && !strcmp(st, "completed") ? 0 : st && !strcmp(st, "failed") ? 1 : -1;
        if (rc == 1) {
            json_t *e = json_object_get(v, "error");
            fprintf(stderr, "\n%s failed: %s: %s", id, json_string_value(json_object_get(e, "code")), json_string_value(json_object_get(e, "message")));
        }
        json_decref(v);
        if (rc >= 0) {
            fputc('\n', stderr);
            return rc;
        }
        if (ms < 50 || ms > 60000) ms = 1000;
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* A download in progress: the first write error sticks. */
typedef struct download {
    pd_file_atomic file;
    pd_status st;
} download;

static void sink_file(void *ud, const char *p, size_t n) {
    download *dl = ud;
    if (dl->st == PD_OK) dl->st = pd_file_write_all(dl->file.fd, p, n, dl->file.path);
}

static void usage(FILE *f) {
    fprintf(f, "usage: pipedit client [--url http://127.0.0.1:8000 | --grpc HOST:PORT] [--api-key K] <action> ...\n"
               "  create --prompt TEXT [--model M] [--seconds S] [--size WxH] [--negative-prompt TEXT] [--seed N]\n"
               "         [--steps N] [--guidance G] [--shift S] [--frames N] [--fps N] [--sampler unipc|euler|dpm++] [--noise philox|torch-cpu] [--wait]\n"
               "  get ID            print the Video object\n"
               "  wait ID [--poll]  progress bar until the video completes (exit 0) or fails (exit 1)\n"
               "  download ID [--variant video|thumbnail] [--output FILE]\n"
               "  list [--limit N] [--after ID] [--order asc|desc]\n"
               "  cancel ID | delete ID\n"
               "  models            the served model (--grpc only)\n"
               "--grpc (or $PIPEDIT_GRPC) speaks the gRPC API (proto/pipedit/v1/video.proto) instead of HTTP.\n");
}

/* Option value lookup: "--name value" among argv[from..]. */
static const char *opt(int argc, char **argv, int from, const char *name) {
    for (int i = from; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return NULL;
}

static bool flag(int argc, char **argv, int from, const char *name) {
    for (int i = from; i < argc; i++)
        if (!strcmp(argv[i], name)) return true;
    return false;
}

/* The create request as REST JSON from the flags; 0, or 2 (usage) with a message. */
static int create_request(int argc, char **argv, int from, json_t **out) {
    static const struct { const char *flag, *field; char kind; } fields[] = {
        {"--prompt", "prompt", 's'},     {"--model", "model", 's'},       {"--seconds", "seconds", 's'},
        {"--size", "size", 's'},         {"--negative-prompt", "negative_prompt", 's'}, {"--sampler", "sampler", 's'},
        {"--noise", "noise", 's'},
        {"--seed", "seed", 'i'},         {"--steps", "num_inference_steps", 'i'},      {"--frames", "num_frames", 'i'},
        {"--fps", "fps", 'i'},           {"--guidance", "guidance_scale", 'f'},        {"--shift", "flow_shift", 'f'},
    };
    json_t *req = json_object();
    for (int i = from; i < argc; i++) {
        if (!strcmp(argv[i], "--wait")) continue;
        size_t k = 0;
        while (k < sizeof fields / sizeof fields[0] && strcmp(argv[i], fields[k].flag)) k++;
        if (k == sizeof fields / sizeof fields[0] || i + 1 >= argc) {
            fprintf(stderr, "pipedit client create: unknown option or missing value: %s\n", argv[i]);
            json_decref(req);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        json_t *jv = NULL;
        if (fields[k].kind == 's') jv = json_string(v);
        else if (fields[k].kind == 'i') {
            long long x = strtoll(v, &end, 10);
            if (*v && !*end) jv = json_integer(x);
        } else {
            double x = strtod(v, &end);
            if (*v && !*end) jv = json_real(x);
        }
        if (!jv) {
            fprintf(stderr, "pipedit client create: bad value for %s: '%s'\n", argv[i - 1], v);
            json_decref(req);
            return 2;
        }
        json_object_set_new(req, fields[k].field, jv);
    }
    if (!json_object_get(req, "prompt")) {
        fprintf(stderr, "pipedit client create: --prompt is required\n");
        json_decref(req);
        return 2;
    }
    *out = req;
    return 0;
}

static int create(const client *c, int argc, char **argv, int from) {
    json_t *req;
    int urc = create_request(argc, argv, from, &req);
    if (urc) return urc;
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    response rs;
    int rc = request(c, "POST", "/v1/videos", "application/json", body, NULL, NULL, &rs);
    free(body);
    if (rc) return 1;
    rc = print_json(&rs);
    if (rc == 0 && flag(argc, argv, from, "--wait")) {
        json_t *v = json_loadb(rs.body, rs.len, 0, NULL);
        char id[64];
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(v, "id")) ? json_string_value(json_object_get(v, "id")) : "");
        json_decref(v);
        rc = id_ok(id) ? wait_video(c, id, false) : 1;
    }
    free(rs.body);
    return rc;
}

int pd_cmd_client(int argc, char **argv) {
    client c = {0};
    const char *url = getenv("PIPEDIT_URL"), *grpc = getenv("PIPEDIT_GRPC");
    c.api_key = getenv("PIPEDIT_API_KEY");
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
        if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) break;
        if (!strcmp(argv[i], "--url")) url = argv[i + 1];
        else if (!strcmp(argv[i], "--grpc")) grpc = argv[i + 1];
        else if (!strcmp(argv[i], "--api-key")) c.api_key = argv[i + 1];
        else break;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (parse_url(&c, url ? url : "http://127.0.0.1:8000")) {
        fprintf(stderr, "pipedit client: cannot parse the URL\n");
        return 2;
    }
    const char *action = argv[i++];
    if (grpc && *grpc) {
#ifdef PD_HAVE_GRPC
        json_t *req = NULL;
        if (!strcmp(action, "create")) {
            int urc = create_request(argc, argv, i, &req);
            if (urc) return urc;
        } else if (strcmp(action, "list") && strcmp(action, "models") && (i >= argc || !id_ok(argv[i]))) {
            fprintf(stderr, "pipedit client %s: needs a video id\n", action);
            return 2;
        }
        int rc = pd_client_grpc(grpc, c.api_key, action, req, argc, argv, i);
        json_decref(req);
        return rc;
#else
        fprintf(stderr, "pipedit client: this pipedit was built without gRPC; use --url\n");
        return 2;
#endif
    }
    if (!strcmp(action, "create")) return create(&c, argc, argv, i);
    if (!strcmp(action, "list")) {
        char path[256] = "/v1/videos?";
        const char *lim = opt(argc, argv, i, "--limit"), *after = opt(argc, argv, i, "--after"), *order = opt(argc, argv, i, "--order");
        if ((lim && strspn(lim, "0123456789") != strlen(lim)) || (after && !id_ok(after)) || (order && strcmp(order, "asc") && strcmp(order, "desc"))) {
            usage(stderr);
            return 2;
        }
        size_t n = strlen(path);
        if (lim) n += (size_t)snprintf(path + n, sizeof path - n, "limit=%s&", lim);
        if (after) n += (size_t)snprintf(path + n, sizeof path - n, "after=%s&", after);
        if (order) snprintf(path + n, sizeof path - n, "order=%s", order);
        response rs;
        if (request(&c, "GET", path, NULL, NULL, NULL, NULL, &rs)) return 1;
        int rc = print_json(&rs);
        free(rs.body);
        return rc;
    }
    if (i >= argc || !id_ok(argv[i])) {
        fprintf(stderr, "pipedit client %s: needs a video id\n", action);
        return 2;
    }
    const char *id = argv[i++];
    char path[256];
    response rs;
    int rc;
    if (!strcmp(action, "get") || !strcmp(action, "delete") || !strcmp(action, "cancel")) {
        bool get = !strcmp(action, "get"), del = !strcmp(action, "delete");
        snprintf(path, sizeof path, "/v1/videos/%s%s", id, get || del ? "" : "/cancel");
        if (request(&c, get ? "GET" : del ? "DELETE" : "POST", path, get || del ? NULL : "application/json", get || del ? NULL : "{}", NULL, NULL, &rs)) return 1;
        rc = print_json(&rs);
        free(rs.body);
        return rc;
    }
    if (!strcmp(action, "wait")) return wait_video(&c, id, flag(argc, argv, i, "--poll"));
    if (!strcmp(action, "download")) {
        const char *variant = opt(argc, argv, i, "--variant");
        if (!variant) variant = "video";
        if (strcmp(variant, "video") && strcmp(variant, "thumbnail")) {
            usage(stderr);
            return 2;
        }
        char def[128];
        snprintf(def, sizeof def, "%s.%s", id, strcmp(variant, "video") ? "png" : "mp4");
        const char *outp = opt(argc, argv, i, "--output");
        if (!outp) outp = def;
        download dl;
        dl.st = pd_file_atomic_open(&dl.file, outp);
        if (dl.st) {
            fprintf(stderr, "pipedit client: %s\n", pd_error_msg());
            return 1;
        }
        snprintf(path, sizeof path, "/v1/videos/%s/content?variant=%s", id, variant);
        /* Answer bodies other than 200 are errors: read them into memory instead of the file. */
        rc = request(&c, "GET", path, NULL, NULL, sink_file, &dl, &rs);
        if (rc != 0 || rs.status != 200 || dl.st != PD_OK) {
            pd_file_atomic_abort(&dl.file);
            if (dl.st) fprintf(stderr, "pipedit client: %s\n", pd_error_msg());
            else if (rc == 0) fprintf(stderr, "pipedit client: HTTP %d downloading %s\n", rs.status, id);
            return 1;
        }
        if (pd_file_atomic_commit(&dl.file, 0644)) {
            fprintf(stderr, "pipedit client: %s\n", pd_error_msg());
            return 1;
        }
        printf("%s\n", outp);
        return 0;
    }
    fprintf(stderr, "pipedit client: unknown action '%s'\n", action);
    usage(stderr);
    return 2;
}
