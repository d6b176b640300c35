#include "proto/proto.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "models/wan/pipesp_plan.h"

static const char *const role_names[PD_ROLE_COUNT] = {"denoise", "decode", "all"};

const char *pd_worker_role_name(pd_worker_role r) {
    return (r >= 0 && r < PD_ROLE_COUNT) ? role_names[r] : "unknown";
}

pd_status pd_worker_role_parse(const char *s, pd_worker_role *out) {
    for (int i = 0; i < PD_ROLE_COUNT; i++)
        if (s && !strcmp(s, role_names[i])) {
            *out = (pd_worker_role)i;
            return PD_OK;
        }
    return pd_error_set(PD_ERR_INVALID, "unknown worker role '%s' (expected denoise, decode or all)",
                        s ? s : "(null)");
}

void pd_msg_init(pd_msg *m, pd_msg_kind kind) {
    memset(m, 0, sizeof *m);
    m->kind = kind;
    if (kind == PD_MSG_HELLO) {
        m->magic = PD_PROTO_MAGIC;
        m->version = PD_PROTO_VERSION;
    }
}

pd_status pd_msg_set_str(char *dst, size_t cap, const char *src, const char *what) {
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) return pd_error_set(PD_ERR_INVALID, "%s is %zu bytes, over the limit of %zu", what, n, cap - 1);
    if (n) memcpy(dst, src, n);
    dst[n] = 0;
    return PD_OK;
}

pd_status pd_msg_set_params(pd_msg *m, const pd_gen_params *p) {
    PD_TRY(pd_msg_set_str(m->prompt, sizeof m->prompt, p->prompt, "prompt"));
    PD_TRY(pd_msg_set_str(m->negative_prompt, sizeof m->negative_prompt, p->negative_prompt, "negative_prompt"));
    m->seed = p->seed;
    m->width = p->width;
    m->height = p->height;
    m->frames = p->frames;
    m->steps = p->steps;
    m->fps = p->fps;
    m->guidance = p->guidance;
    m->shift = p->shift;
    m->sampler = (int32_t)p->sampler;
    m->noise = (int32_t)p->noise;
    return PD_OK;
}

pd_gen_params pd_msg_params(const pd_msg *m) {
    pd_gen_params p = {
        .prompt = m->prompt,
        .negative_prompt = m->negative_prompt,
        .seed = m->seed,
        .width = m->width,
        .height = m->height,
        .frames = m->frames,
        .steps = m->steps,
        .guidance = m->guidance,
        .shift = m->shift,
        .sampler = (pd_sampler_kind)m->sampler,
        .noise = (pd_noise_kind)m->noise,
        .fps = m->fps,
    };
    return p;
}

/* ---- encoding ---- */

pd_gen_params pd_proto_warmup_params(void) {
    return (pd_gen_params){.prompt = "a warm-up", .negative_prompt = "", .seed = 1, .width = 64, .height = 64,
                           .frames = 5, .steps = 2, .guidance = 5.0f, .shift = 5.0f, .sampler = PD_SAMPLER_EULER,
                           .fps = 16};
}

typedef struct wbuf {
    uint8_t *p;
    size_t cap, n;
    bool overflow;
} wbuf;

static void put_bytes(wbuf *w, const void *src, size_t n) {
    if (w->overflow || n > w->cap - w->n) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->n, src, n);
    w->n += n;
}
static void put_u8(wbuf *w, uint8_t v) { put_bytes(w, &v, 1); }
static void put_u32(wbuf *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put_bytes(w, b, 4);
}
static void put_u64(wbuf *w, uint64_t v) {
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}
static void put_i32(wbuf *w, int32_t v) { put_u32(w, (uint32_t)v); }
static void put_f32(wbuf *w, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(w, u);
}
static void put_f64(wbuf *w, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(w, u);
}
/* A string field; its length is bounded by the fixed buffer it came from. */
static void put_str(wbuf *w, const char *s, size_t cap) {
    size_t n = strnlen(s, cap - 1);
    put_u32(w, (uint32_t)n);
    put_bytes(w, s, n);
}

static void put_aco(wbuf *w, const pd_msg_aco *a) {
    put_u64(w, a->calls);
    put_u64(w, a->lends);
    put_u64(w, a->declined);
    put_u64(w, a->heads_total);
    put_u64(w, a->heads_lent);
    put_f64(w, a->wait_s);
    put_f64(w, a->backoff_s);
    put_f64(w, a->lend_max_s);
    put_i32(w, a->failed);
}

pd_status pd_proto_encode(const pd_msg *m, uint8_t *buf, size_t cap, size_t *n) {
    if (m->kind < PD_MSG_HELLO || m->kind >= PD_MSG_KIND_END)
        return pd_error_set(PD_ERR_INVALID, "proto: cannot encode message kind %d", (int)m->kind);
    if (cap < 4) return pd_error_set(PD_ERR_INVALID, "proto: encode buffer of %zu bytes is too small", cap);
    wbuf w = {.p = buf + 4, .cap = cap - 4 < PD_PROTO_MAX_FRAME ? cap - 4 : PD_PROTO_MAX_FRAME};
    put_u8(&w, (uint8_t)m->kind);
    switch (m->kind) {
    case PD_MSG_HELLO:
        put_u32(&w, m->magic);
        put_u32(&w, m->version);
        put_i32(&w, m->pid);
        put_i32(&w, m->role);
        put_i32(&w, m->heartbeat_ms);
        break;
    case PD_MSG_READY:
        for (int i = 0; i < PD_STAGE_COUNT; i++) put_f64(&w, m->stage_seconds[i]);
        put_i32(&w, m->aco_capable);
        break;
    case PD_MSG_ASSIGN:
        put_str(&w, m->job_id, sizeof m->job_id);
        put_i32(&w, m->stage);
        put_str(&w, m->prompt, sizeof m->prompt);
        put_str(&w, m->negative_prompt, sizeof m->negative_prompt);
        put_u64(&w, m->seed);
        put_i32(&w, m->width);
        put_i32(&w, m->height);
        put_i32(&w, m->frames);
        put_i32(&w, m->steps);
        put_i32(&w, m->fps);
        put_f32(&w, m->guidance);
        put_f32(&w, m->shift);
        put_i32(&w, m->sampler);
        put_i32(&w, m->noise);
        put_str(&w, m->shm_cond, sizeof m->shm_cond);
        put_str(&w, m->shm_uncond, sizeof m->shm_uncond);
        put_str(&w, m->shm_latent, sizeof m->shm_latent);
        put_str(&w, m->mp4_path, sizeof m->mp4_path);
        put_str(&w, m->thumb_path, sizeof m->thumb_path);
        put_u32(&w, m->group_gen);
        put_i32(&w, m->rank);
        put_f64(&w, m->deadline);
        break;
    case PD_MSG_GROUP:
        put_u32(&w, m->group_gen);
        put_i32(&w, m->rank);
        put_i32(&w, m->ranks);
        put_i32(&w, m->chunk_heads);
        put_i32(&w, m->cfg_parallel);
        put_f64(&w, m->comm_timeout_s);
        put_str(&w, m->comm_name, sizeof m->comm_name);
        put_i32(&w, m->comm_nccl);
        put_bytes(&w, m->nccl_ids, sizeof m->nccl_ids);
        break;
    case PD_MSG_JOINED:
        put_u32(&w, m->group_gen);
        break;
    case PD_MSG_ACO:
        put_str(&w, m->job_id, sizeof m->job_id);
        put_u32(&w, m->aco_seq);
        put_i32(&w, m->aco_serve);
        put_i32(&w, m->aco_share);
        put_f64(&w, m->comm_timeout_s);
        put_str(&w, m->comm_name, sizeof m->comm_name);
        put_i32(&w, m->comm_nccl);
        put_bytes(&w, m->nccl_ids[0], sizeof m->nccl_ids[0]);
        break;
    case PD_MSG_ACO_DONE:
        put_u32(&w, m->aco_seq);
        put_aco(&w, &m->aco);
        put_str(&w, m->code, sizeof m->code);
        put_str(&w, m->message, sizeof m->message);
        break;
    case PD_MSG_PROGRESS:
        put_str(&w, m->job_id, sizeof m->job_id);
        put_i32(&w, m->stage);
        put_i32(&w, m->step);
        put_i32(&w, m->total);
        break;
    case PD_MSG_DONE:
        put_str(&w, m->job_id, sizeof m->job_id);
        put_i32(&w, m->stage);
        put_f64(&w, m->seconds);
        put_aco(&w, &m->aco);
        break;
    case PD_MSG_ERROR:
        put_str(&w, m->job_id, sizeof m->job_id);
        put_i32(&w, m->stage);
        put_str(&w, m->code, sizeof m->code);
        put_str(&w, m->message, sizeof m->message);
        break;
    case PD_MSG_CANCEL:
        put_str(&w, m->job_id, sizeof m->job_id);
        break;
    case PD_MSG_HEARTBEAT:
        put_u64(&w, m->ticks);
        break;
    case PD_MSG_SHUTDOWN:
    case PD_MSG_KIND_END:
        break;
    }
    if (w.overflow) return pd_error_set(PD_ERR_INVALID, "proto: message kind %d does not fit a frame", (int)m->kind);
    uint32_t len = (uint32_t)w.n;
    buf[0] = (uint8_t)len;
    buf[1] = (uint8_t)(len >> 8);
    buf[2] = (uint8_t)(len >> 16);
    buf[3] = (uint8_t)(len >> 24);
    *n = 4 + w.n;
    return PD_OK;
}

/* ---- decoding ---- */

typedef struct rbuf {
    const uint8_t *p;
    size_t n, pos;
    const char *bad; /* first field that failed */
} rbuf;

static bool get_bytes(rbuf *r, void *dst, size_t n, const char *what) {
    if (r->bad) return false;
    if (n > r->n - r->pos) {
        r->bad = what;
        return false;
    }
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return true;
}
static uint32_t get_u32(rbuf *r, const char *what) {
    uint8_t b[4] = {0};
    get_bytes(r, b, 4, what);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint64_t get_u64(rbuf *r, const char *what) {
    uint64_t lo = get_u32(r, what);
    return lo | (uint64_t)get_u32(r, what) << 32;
}
static int32_t get_i32(rbuf *r, const char *what) { return (int32_t)get_u32(r, what); }
static float get_f32(rbuf *r, const char *what) {
    uint32_t u = get_u32(r, what);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double get_f64(rbuf *r, const char *what) {
    uint64_t u = get_u64(r, what);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static void get_str(rbuf *r, char *dst, size_t cap, const char *what) {
    uint32_t n = get_u32(r, what);
    if (r->bad) return;
    if (n >= cap || n > r->n - r->pos || memchr(r->p + r->pos, 0, n)) {
        r->bad = what;
        return;
    }
    memcpy(dst, r->p + r->pos, n);
    dst[n] = 0;
    r->pos += n;
}

static void get_aco(rbuf *r, pd_msg_aco *a, const char *what) {
    a->calls = get_u64(r, what);
    a->lends = get_u64(r, what);
    a->declined = get_u64(r, what);
    a->heads_total = get_u64(r, what);
    a->heads_lent = get_u64(r, what);
    a->wait_s = get_f64(r, what);
    a->backoff_s = get_f64(r, what);
    a->lend_max_s = get_f64(r, what);
    a->failed = get_i32(r, what);
}

pd_status pd_proto_decode(const uint8_t *payload, size_t n, pd_msg *m) {
    if (n < 1 || n > PD_PROTO_MAX_FRAME)
        return pd_error_set(PD_ERR_FORMAT, "proto: frame of %zu bytes (must be 1..%d)", n, PD_PROTO_MAX_FRAME);
    uint8_t kind = payload[0];
    if (kind < PD_MSG_HELLO || kind >= PD_MSG_KIND_END)
        return pd_error_set(PD_ERR_FORMAT, "proto: unknown message kind %u", kind);
    pd_msg_init(m, (pd_msg_kind)kind);
    rbuf r = {.p = payload, .n = n, .pos = 1};
    switch (m->kind) {
    case PD_MSG_HELLO:
        m->magic = get_u32(&r, "hello.magic");
        m->version = get_u32(&r, "hello.version");
        m->pid = get_i32(&r, "hello.pid");
        m->role = get_i32(&r, "hello.role");
        m->heartbeat_ms = get_i32(&r, "hello.heartbeat_ms");
        break;
    case PD_MSG_READY:
        for (int i = 0; i < PD_STAGE_COUNT; i++) m->stage_seconds[i] = get_f64(&r, "ready.stage_seconds");
        m->aco_capable = get_i32(&r, "ready.aco_capable");
        break;
    case PD_MSG_ASSIGN:
        get_str(&r, m->job_id, sizeof m->job_id, "assign.job_id");
        m->stage = get_i32(&r, "assign.stage");
        get_str(&r, m->prompt, sizeof m->prompt, "assign.prompt");
        get_str(&r, m->negative_prompt, sizeof m->negative_prompt, "assign.negative_prompt");
        m->seed = get_u64(&r, "assign.seed");
        m->width = get_i32(&r, "assign.width");
        m->height = get_i32(&r, "assign.height");
        m->frames = get_i32(&r, "assign.frames");
        m->steps = get_i32(&r, "assign.steps");
        m->fps = get_i32(&r, "assign.fps");
        m->guidance = get_f32(&r, "assign.guidance");
        m->shift = get_f32(&r, "assign.shift");
        m->sampler = get_i32(&r, "assign.sampler");
        m->noise = get_i32(&r, "assign.noise");
        get_str(&r, m->shm_cond, sizeof m->shm_cond, "assign.shm_cond");
        get_str(&r, m->shm_uncond, sizeof m->shm_uncond, "assign.shm_uncond");
        get_str(&r, m->shm_latent, sizeof m->shm_latent, "assign.shm_latent");
        get_str(&r, m->mp4_path, sizeof m->mp4_path, "assign.mp4_path");
        get_str(&r, m->thumb_path, sizeof m->thumb_path, "assign.thumb_path");
        m->group_gen = get_u32(&r, "assign.group_gen");
        m->rank = get_i32(&r, "assign.rank");
        m->deadline = get_f64(&r, "assign.deadline");
        break;
    case PD_MSG_GROUP:
        m->group_gen = get_u32(&r, "group.group_gen");
        m->rank = get_i32(&r, "group.rank");
        m->ranks = get_i32(&r, "group.ranks");
        m->chunk_heads = get_i32(&r, "group.chunk_heads");
        m->cfg_parallel = get_i32(&r, "group.cfg_parallel");
        m->comm_timeout_s = get_f64(&r, "group.comm_timeout_s");
        get_str(&r, m->comm_name, sizeof m->comm_name, "group.comm_name");
        m->comm_nccl = get_i32(&r, "group.comm_nccl");
        get_bytes(&r, m->nccl_ids, sizeof m->nccl_ids, "group.nccl_ids");
        break;
    case PD_MSG_JOINED:
        m->group_gen = get_u32(&r, "joined.group_gen");
        break;
    case PD_MSG_ACO:
        get_str(&r, m->job_id, sizeof m->job_id, "aco.job_id");
        m->aco_seq = get_u32(&r, "aco.aco_seq");
        m->aco_serve = get_i32(&r, "aco.aco_serve");
        m->aco_share = get_i32(&r, "aco.aco_share");
        m->comm_timeout_s = get_f64(&r, "aco.comm_timeout_s");
        get_str(&r, m->comm_name, sizeof m->comm_name, "aco.comm_name");
        m->comm_nccl = get_i32(&r, "aco.comm_nccl");
        get_bytes(&r, m->nccl_ids[0], sizeof m->nccl_ids[0], "aco.nccl_id");
        break;
    case PD_MSG_ACO_DONE:
        m->aco_seq = get_u32(&r, "aco_done.aco_seq");
        get_aco(&r, &m->aco, "aco_done.aco");
        get_str(&r, m->code, sizeof m->code, "aco_done.code");
        get_str(&r, m->message, sizeof m->message, "aco_done.message");
        break;
    case PD_MSG_PROGRESS:
        get_str(&r, m->job_id, sizeof m->job_id, "progress.job_id");
        m->stage = get_i32(&r, "progress.stage");
        m->step = get_i32(&r, "progress.step");
        m->total = get_i32(&r, "progress.total");
        break;
    case PD_MSG_DONE:
        get_str(&r, m->job_id, sizeof m->job_id, "done.job_id");
        m->stage = get_i32(&r, "done.stage");
        m->seconds = get_f64(&r, "done.seconds");
        get_aco(&r, &m->aco, "done.aco");
        break;
    case PD_MSG_ERROR:
        get_str(&r, m->job_id, sizeof m->job_id, "error.job_id");
        m->stage = get_i32(&r, "error.stage");
        get_str(&r, m->code, sizeof m->code, "error.code");
        get_str(&r, m->message, sizeof m->message, "error.message");
        break;
    case PD_MSG_CANCEL:
        get_str(&r, m->job_id, sizeof m->job_id, "cancel.job_id");
        break;
    case PD_MSG_HEARTBEAT:
        m->ticks = get_u64(&r, "heartbeat.ticks");
        break;
    case PD_MSG_SHUTDOWN:
    case PD_MSG_KIND_END:
        break;
    }
    if (r.bad) return pd_error_set(PD_ERR_FORMAT, "proto: malformed field %s in a %zu-byte frame", r.bad, n);
    if (r.pos != n)
        return pd_error_set(PD_ERR_FORMAT, "proto: %zu trailing bytes after a kind %u message", n - r.pos, kind);
    /* Enumerations must be in range so receivers can index with them. */
    bool has_stage = m->kind == PD_MSG_ASSIGN || m->kind == PD_MSG_PROGRESS || m->kind == PD_MSG_DONE ||
                     m->kind == PD_MSG_ERROR;
    if (has_stage && (m->stage < 0 || m->stage >= PD_STAGE_COUNT))
        return pd_error_set(PD_ERR_FORMAT, "proto: stage %d out of range", (int)m->stage);
    if (m->kind == PD_MSG_READY && m->aco_capable != 0 && m->aco_capable != 1)
        return pd_error_set(PD_ERR_FORMAT, "proto: aco_capable %d is not 0 or 1", (int)m->aco_capable);
    if (m->kind == PD_MSG_HELLO && (m->role < 0 || m->role >= PD_ROLE_COUNT))
        return pd_error_set(PD_ERR_FORMAT, "proto: worker role %d out of range", (int)m->role);
    if (m->kind == PD_MSG_ASSIGN && !(m->deadline >= 0 && m->deadline < 1e11))
        return pd_error_set(PD_ERR_FORMAT, "proto: deadline %g out of range", m->deadline);
    if (m->kind == PD_MSG_ASSIGN && (m->sampler < 0 || m->sampler >= PD_SAMPLER_COUNT))
        return pd_error_set(PD_ERR_FORMAT, "proto: sampler %d out of range", (int)m->sampler);
    if (m->kind == PD_MSG_ASSIGN && m->noise != PD_NOISE_PHILOX && m->noise != PD_NOISE_TORCH_CPU)
        return pd_error_set(PD_ERR_FORMAT, "proto: noise %d out of range", (int)m->noise);
    if ((m->kind == PD_MSG_ASSIGN || m->kind == PD_MSG_GROUP) && (m->rank < 0 || m->rank >= PD_PROTO_MAX_RANKS))
        return pd_error_set(PD_ERR_FORMAT, "proto: rank %d out of range", (int)m->rank);
    if (m->kind == PD_MSG_ACO && ((m->aco_serve != 0 && m->aco_serve != 1) || m->aco_share < -2 ||
                                  (m->comm_nccl != 0 && m->comm_nccl != 1) ||
                                  !(m->comm_timeout_s > 0 && m->comm_timeout_s <= 86400) || !m->comm_name[0]))
        return pd_error_set(PD_ERR_FORMAT, "proto: aco message out of range (serve %d, share %d, nccl %d, timeout %g)",
                            (int)m->aco_serve, (int)m->aco_share, (int)m->comm_nccl, m->comm_timeout_s);
    if (m->kind == PD_MSG_GROUP &&
        (m->ranks < 1 || m->ranks > PD_PROTO_MAX_RANKS || m->rank >= m->ranks || m->chunk_heads < 0 ||
         m->chunk_heads > PD_SP_MAX_CHUNK || (m->cfg_parallel != 0 && m->cfg_parallel != 1) ||
         (m->comm_nccl != 0 && m->comm_nccl != 1) ||
         !(m->comm_timeout_s > 0 && m->comm_timeout_s <= 86400) || !m->comm_name[0]))
        return pd_error_set(PD_ERR_FORMAT, "proto: group message out of range (rank %d of %d, chunk %d, cfg %d, "
                            "timeout %g s, name '%s')", (int)m->rank, (int)m->ranks, (int)m->chunk_heads,
                            (int)m->cfg_parallel, m->comm_timeout_s, m->comm_name);
    return PD_OK;
}

/* ---- I/O ---- */

static pd_status send_all(int fd, const uint8_t *frame, size_t n) {
    size_t off = 0;
    while (off < n) {
        ssize_t k = send(fd, frame + off, n - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 1000) <= 0)
                return pd_error_set(PD_ERR_IO, "proto: peer is not reading (send blocked for 1 s)");
            continue;
        }
        if (k <= 0) return pd_error_set(PD_ERR_IO, "proto: send: %s", k < 0 ? strerror(errno) : "closed");
        off += (size_t)k;
    }
    return PD_OK;
}

pd_status pd_proto_send(int fd, const pd_msg *m) {
    /* Heap, not a thread-local: every thread of the daemon would otherwise carry the buffer. */
    uint8_t *frame = malloc(4 + PD_PROTO_MAX_FRAME);
    if (!frame) return pd_error_set(PD_ERR_NOMEM, "proto: out of memory");
    size_t n;
    pd_status st = pd_proto_encode(m, frame, 4 + PD_PROTO_MAX_FRAME, &n);
    if (!st) st = send_all(fd, frame, n);
    free(frame);
    return st;
}

void pd_proto_reader_reset(pd_proto_reader *r) { r->len = 0; }

pd_status pd_proto_reader_fill(pd_proto_reader *r, int fd) {
    if (r->len == sizeof r->buf) return PD_OK; /* a whole frame is waiting; next() consumes it */
    ssize_t k = read(fd, r->buf + r->len, sizeof r->buf - r->len);
    if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return PD_OK;
    if (k < 0) return pd_error_set(PD_ERR_IO, "proto: read: %s", strerror(errno));
    if (k == 0) return pd_error_set(PD_ERR_IO, "proto: peer closed the connection");
    r->len += (size_t)k;
    return PD_OK;
}

pd_status pd_proto_reader_feed(pd_proto_reader *r, const uint8_t *data, size_t n) {
    if (n > sizeof r->buf - r->len)
        return pd_error_set(PD_ERR_FORMAT, "proto: %zu bytes do not fit the reader's buffer", n);
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    return PD_OK;
}

pd_status pd_proto_reader_next(pd_proto_reader *r, pd_msg *m, bool *got) {
    *got = false;
    if (r->len < 4) return PD_OK;
    uint32_t len = (uint32_t)r->buf[0] | (uint32_t)r->buf[1] << 8 | (uint32_t)r->buf[2] << 16 | (uint32_t)r->buf[3] << 24;
    if (len == 0 || len > PD_PROTO_MAX_FRAME)
        return pd_error_set(PD_ERR_FORMAT, "proto: frame length %u (must be 1..%d)", len, PD_PROTO_MAX_FRAME);
    if (r->len < 4 + (size_t)len) return PD_OK;
    PD_TRY(pd_proto_decode(r->buf + 4, len, m));
    memmove(r->buf, r->buf + 4 + len, r->len - 4 - len);
    r->len -= 4 + len;
    *got = true;
    return PD_OK;
}

pd_status pd_proto_recv(int fd, pd_proto_reader *r, pd_msg *m, int timeout_ms) {
    double deadline = timeout_ms < 0 ? 0 : pd_now_s() + timeout_ms / 1000.0;
    for (;;) {
        bool got;
        PD_TRY(pd_proto_reader_next(r, m, &got));
        if (got) return PD_OK;
        int wait = -1;
        if (timeout_ms >= 0) {
            double left = deadline - pd_now_s();
            if (left <= 0) return pd_error_set(PD_ERR_TIMEOUT, "proto: no message within %d ms", timeout_ms);
            wait = (int)(left * 1000.0) + 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int k = poll(&p, 1, wait);
        if (k < 0 && errno != EINTR) return pd_error_set(PD_ERR_IO, "proto: poll: %s", strerror(errno));
        if (k > 0) PD_TRY(pd_proto_reader_fill(r, fd));
    }
}
