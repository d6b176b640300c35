#include "models/wan/aco.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"

/* ---- the share rule ---- */

double pd_aco_predict(const pd_aco_share_in *in, int lent) {
    PD_ASSERT(in->heads >= 1 && lent >= 0 && lent <= in->heads);
    PD_ASSERT(isfinite(in->local_s) && isfinite(in->helper_s) && isfinite(in->xfer_s) && isfinite(in->fixed_s));
    PD_ASSERT(in->local_s >= 0 && in->helper_s >= 0 && in->xfer_s >= 0 && in->fixed_s >= 0);
    double local = (double)(in->heads - lent) * in->local_s;
    if (lent == 0) return local;
    double remote = in->fixed_s + (double)lent * (in->xfer_s + in->helper_s);
    return local > remote ? local : remote;
}

int pd_aco_choose_share(const pd_aco_share_in *in) {
    double none = pd_aco_predict(in, 0), best_t = none;
    int best = 0;
    for (int l = 1; l <= in->heads; l++) {
        double t = pd_aco_predict(in, l);
        if (t < best_t) best_t = t, best = l;
    }
    return best_t <= none * (1.0 - PD_ACO_SHARE_MARGIN) ? best : 0;
}

/* ---- wire messages: 64-byte request, 16-byte answer and trailer, through backend memory ---- */

enum { ACO_MAGIC = 0x4f434170, ACO_ATTEND = 1, ACO_FINISH = 2, ACO_MSG_WORDS = 16 };

typedef struct aco_request {
    uint32_t magic, op;
    int64_t B, Nq, Nk, heads, D, Dv;
    float scale;
    uint32_t seq;
} aco_request;
_Static_assert(sizeof(aco_request) == 64, "request is 64 bytes");

typedef struct aco_answer {
    uint32_t magic, accepted;
    double compute_s; /* in the trailer: the helper's attention time for this lend */
} aco_answer;
_Static_assert(sizeof(aco_answer) == 16, "answer is 16 bytes");

/* A small message buffer on the backend (device memory under NCCL) and its host mirror. */
typedef struct aco_msg {
    pd_tensor dev; // (16,) f32 words holding raw bytes
    uint32_t host[ACO_MSG_WORDS];
} aco_msg;

static pd_status msg_init(pd_backend *be, aco_msg *m) {
    int64_t n = ACO_MSG_WORDS;
    return pd_backend_tensor_alloc(be, &m->dev, PD_DTYPE_F32, 1, &n);
}

static pd_status msg_put(pd_backend *be, aco_msg *m, const void *src, size_t bytes) {
    memset(m->host, 0, sizeof m->host);
    memcpy(m->host, src, bytes);
    int64_t n = ACO_MSG_WORDS;
    pd_tensor h = pd_tensor_view(m->host, PD_DTYPE_F32, 1, &n);
    return pd_backend_upload(be, &m->dev, &h);
}

static pd_status msg_get(pd_backend *be, aco_msg *m, void *dst, size_t bytes) {
    int64_t n = ACO_MSG_WORDS;
    pd_tensor h = pd_tensor_view(m->host, PD_DTYPE_F32, 1, &n);
    PD_TRY(pd_backend_download(be, &h, &m->dev));
    memcpy(dst, m->host, bytes);
    return PD_OK;
}

/* A backend tensor that grows to the largest (B, N, heads, D) asked for; views are cut from it. */
typedef struct aco_buf {
    pd_tensor t;
    int64_t cap; // elements
} aco_buf;

static pd_status buf_view(pd_backend *be, aco_buf *b, int64_t B, int64_t N, int64_t H, int64_t D, pd_tensor *out) {
    int64_t n = B * N * H * D;
    if (n > b->cap) {
        pd_backend_tensor_free(be, &b->t);
        b->cap = 0;
        PD_TRY(pd_backend_tensor_alloc(be, &b->t, PD_DTYPE_F32, 1, &n));
        b->cap = n;
    }
    int64_t shape[4] = {B, N, H, D};
    *out = pd_tensor_view(b->t.data, PD_DTYPE_F32, 4, shape);
    out->device = b->t.device;
    return PD_OK;
}

/* out = attention of `n` heads starting at head h0 of q, k, v, through packed copies in the given
 * buffers (the op wants contiguous tensors). */
static pd_status attend_heads(pd_backend *be, aco_buf bufs[4], pd_tensor *out, const pd_tensor *q, const pd_tensor *k,
                              const pd_tensor *v, int64_t h0, int64_t n, float scale) {
    int64_t B = q->shape[0], Nq = q->shape[1], Nk = k->shape[1], D = q->shape[3], Dv = v->shape[3];
    pd_tensor pq, pk, pv, po;
    PD_TRY(buf_view(be, &bufs[0], B, Nq, n, D, &pq));
    PD_TRY(buf_view(be, &bufs[1], B, Nk, n, D, &pk));
    PD_TRY(buf_view(be, &bufs[2], B, Nk, n, Dv, &pv));
    PD_TRY(buf_view(be, &bufs[3], B, Nq, n, Dv, &po));
    pd_tensor sq = pd_tensor_slice(q, 2, h0, n), sk = pd_tensor_slice(k, 2, h0, n), sv = pd_tensor_slice(v, 2, h0, n);
    pd_tensor so = pd_tensor_slice(out, 2, h0, n);
    PD_TRY(pd_op_copy(be, &pq, &sq));
    PD_TRY(pd_op_copy(be, &pk, &sk));
    PD_TRY(pd_op_copy(be, &pv, &sv));
    PD_TRY(pd_op_attention(be, &po, &pq, &pk, &pv, NULL, scale));
    return pd_op_copy(be, &so, &po);
}

/* ---- the lender ---- */

enum { ACO_SHAPES = 4 };

typedef struct aco_shape {
    int64_t key[6]; // B, Nq, Nk, H, D, Dv
    int phase;      // 0: measure local, 1: warm-up probe (buffers), 2: measured probe, 3: adapting
    int share;
    double local_s, helper_s, xfer_s, fixed_s; // estimates (seconds, per head but fixed_s)
    double last_used;
} aco_shape;

struct pd_aco_lender {
    pd_comm *c;
    pd_backend *be;
    int helper, fixed_share, last_share;
    uint32_t seq;
    bool failed, finished;
    aco_msg req, ans, trailer;
    aco_buf lent[4]; // q, k, v, out of the lent heads: what travels
    aco_buf kept[4]; // packed copies of the kept heads
    aco_shape shapes[ACO_SHAPES];
    pd_aco_stats stats;
};

pd_status pd_aco_lender_create(pd_comm *c, int helper, pd_backend *be, int share, pd_aco_lender **out) {
    *out = NULL;
    if (!c || !be) return pd_error_set(PD_ERR_INVALID, "aco lender: communicator and backend are required");
    if (share < PD_ACO_SHARE_HALF)
        return pd_error_set(PD_ERR_INVALID, "aco lender: share %d (want -2, -1 or >= 0)", share);
    if (helper < 0 || helper >= pd_comm_size(c) || helper == pd_comm_rank(c))
        return pd_error_set(PD_ERR_INVALID, "aco lender: helper rank %d is not another rank of a group of %d", helper,
                            pd_comm_size(c));
    pd_aco_lender *l = calloc(1, sizeof *l);
    if (!l) return pd_error_set(PD_ERR_NOMEM, "aco lender: out of memory");
    l->c = c, l->be = be, l->helper = helper, l->fixed_share = share, l->last_share = -1;
    pd_status st = msg_init(be, &l->req);
    if (st == PD_OK) st = msg_init(be, &l->ans);
    if (st == PD_OK) st = msg_init(be, &l->trailer);
    if (st != PD_OK) {
        pd_aco_lender_free(l);
        return st;
    }
    *out = l;
    return PD_OK;
}

void pd_aco_lender_free(pd_aco_lender *l) {
    if (!l) return;
    pd_backend_tensor_free(l->be, &l->req.dev);
    pd_backend_tensor_free(l->be, &l->ans.dev);
    pd_backend_tensor_free(l->be, &l->trailer.dev);
    for (int i = 0; i < 4; i++) {
        pd_backend_tensor_free(l->be, &l->lent[i].t);
        pd_backend_tensor_free(l->be, &l->kept[i].t);
    }
    free(l);
}

void pd_aco_lender_stats(const pd_aco_lender *l, pd_aco_stats *out) { *out = l->stats; }
int pd_aco_lender_last_share(const pd_aco_lender *l) { return l->last_share; }

static void lender_fail(pd_aco_lender *l, pd_status st) {
    if (l->failed) return;
    l->failed = true;
    l->stats.failed = true;
    snprintf(l->stats.error, sizeof l->stats.error, "%s: %s", pd_status_name(st), pd_error_msg());
    pd_comm_abort(l->c, "aco: lend failed");
    PD_LOG(PD_LOG_WARN, "aco", "lending stopped, the lent heads are computed locally: %s", l->stats.error);
}

static aco_shape *shape_of(pd_aco_lender *l, const int64_t key[6]) {
    aco_shape *oldest = &l->shapes[0];
    for (int i = 0; i < ACO_SHAPES; i++) {
        aco_shape *s = &l->shapes[i];
        if (!memcmp(s->key, key, sizeof s->key)) return s;
        if (s->last_used < oldest->last_used) oldest = s;
    }
    memset(oldest, 0, sizeof *oldest);
    memcpy(oldest->key, key, sizeof oldest->key);
    return oldest;
}

/* Sends the request and reads the answer; *accepted tells whether the helper takes the heads. */
static pd_status lender_ask(pd_aco_lender *l, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v, int64_t n,
                            float scale, bool *accepted) {
    aco_request r = {.magic = ACO_MAGIC, .op = ACO_ATTEND, .B = q->shape[0], .Nq = q->shape[1], .Nk = k->shape[1],
                     .heads = n, .D = q->shape[3], .Dv = v->shape[3], .scale = scale, .seq = ++l->seq};
    PD_TRY(msg_put(l->be, &l->req, &r, sizeof r));
    PD_TRY(pd_comm_send(l->c, l->req.dev.data, sizeof r, l->helper));
    PD_TRY(pd_comm_recv(l->c, l->ans.dev.data, sizeof(aco_answer), l->helper));
    aco_answer a;
    PD_TRY(msg_get(l->be, &l->ans, &a, sizeof a));
    if (a.magic != ACO_MAGIC) return pd_error_set(PD_ERR_FORMAT, "aco: malformed answer from the helper");
    *accepted = a.accepted != 0;
    return PD_OK;
}

/* What one lend took (seconds). */
typedef struct aco_lend_times {
    double helper; /* the helper's attention compute (its report) */
    double kept;   /* this side's compute of the kept heads (packing included) */
    double span;   /* from the first transfer issued to the last one done */
    double wait;   /* the part of span spent waiting after the kept heads were done */
} aco_lend_times;

/* One lend of the last n heads: transfers in flight while the kept heads compute here. On a
 * communication failure the lent heads are computed here too (failure reported through *comm_st). */
static pd_status lender_lend(pd_aco_lender *l, pd_tensor *out, const pd_tensor *q, const pd_tensor *k,
                             const pd_tensor *v, int64_t n, float scale, aco_lend_times *tm, pd_status *comm_st) {
    pd_backend *be = l->be;
    int64_t B = q->shape[0], Nq = q->shape[1], Nk = k->shape[1], H = q->shape[2], D = q->shape[3], Dv = v->shape[3];
    pd_tensor lq, lk, lv, lo;
    PD_TRY(buf_view(be, &l->lent[0], B, Nq, n, D, &lq));
    PD_TRY(buf_view(be, &l->lent[1], B, Nk, n, D, &lk));
    PD_TRY(buf_view(be, &l->lent[2], B, Nk, n, Dv, &lv));
    PD_TRY(buf_view(be, &l->lent[3], B, Nq, n, Dv, &lo));
    pd_tensor sq = pd_tensor_slice(q, 2, H - n, n), sk = pd_tensor_slice(k, 2, H - n, n);
    pd_tensor sv = pd_tensor_slice(v, 2, H - n, n), so = pd_tensor_slice(out, 2, H - n, n);
    PD_TRY(pd_op_copy(be, &lq, &sq));
    PD_TRY(pd_op_copy(be, &lk, &sk));
    PD_TRY(pd_op_copy(be, &lv, &sv));
    PD_TRY(pd_backend_synchronize(be));

    pd_comm_req *reqs[5] = {0};
    const double t_issue = pd_now_s();
    pd_status cs = pd_comm_send_async(l->c, lq.data, pd_tensor_nbytes(&lq), l->helper, &reqs[0]);
    if (cs == PD_OK) cs = pd_comm_send_async(l->c, lk.data, pd_tensor_nbytes(&lk), l->helper, &reqs[1]);
    if (cs == PD_OK) cs = pd_comm_send_async(l->c, lv.data, pd_tensor_nbytes(&lv), l->helper, &reqs[2]);
    if (cs == PD_OK) cs = pd_comm_recv_async(l->c, lo.data, pd_tensor_nbytes(&lo), l->helper, &reqs[3]);
    if (cs == PD_OK) cs = pd_comm_recv_async(l->c, l->trailer.dev.data, sizeof(aco_answer), l->helper, &reqs[4]);

    pd_status st = H > n ? attend_heads(be, l->kept, out, q, k, v, 0, H - n, scale) : PD_OK;
    if (st == PD_OK) st = pd_backend_synchronize(be);

    double t0 = pd_now_s();
    tm->kept = t0 - t_issue;
    for (int i = 0; i < 5; i++) {
        if (!reqs[i]) continue;
        pd_status w = pd_comm_wait(l->c, reqs[i]);
        if (cs == PD_OK) cs = w;
    }
    tm->wait = pd_now_s() - t0;
    tm->span = tm->kept + tm->wait;
    PD_TRY(st);
    if (cs == PD_OK) {
        aco_answer t;
        cs = msg_get(be, &l->trailer, &t, sizeof t);
        if (cs == PD_OK && t.magic != ACO_MAGIC) cs = pd_error_set(PD_ERR_FORMAT, "aco: malformed trailer");
        if (cs == PD_OK) tm->helper = t.compute_s;
    }
    *comm_st = cs;
    if (cs != PD_OK) {
        lender_fail(l, cs);
        PD_TRY(pd_op_attention(be, &lo, &lq, &lk, &lv, NULL, scale));
    }
    return pd_op_copy(be, &so, &lo);
}

static double ema(double old, double x, bool first) { return first ? x : 0.5 * old + 0.5 * x; }

/* Folds one lend's times into the shape's estimates and re-chooses its share. The first lend of a
 * shape also grows both sides' buffers: it is not measured. When the lender waited for the lent
 * heads, the helper's path (transfers and its compute) was the whole span, so what the helper did
 * not spend computing was transfer; when it did not wait, that path took at most the kept heads'
 * time, an upper bound on the transfer. A new share is taken only for a clear predicted gain. */
static void shape_update(aco_shape *s, int H, int n, const aco_lend_times *tm, double ask_s) {
    if (s->phase == 1) {
        s->phase = 2;
        return;
    }
    bool first = s->phase == 2;
    if (H > n) s->local_s = ema(s->local_s, tm->kept / (double)(H - n), false);
    s->helper_s = ema(s->helper_s, tm->helper / (double)n, first);
    s->fixed_s = ema(s->fixed_s, ask_s, first);
    double xfer = (tm->span - tm->helper) / (double)n;
    if (xfer < 0) xfer = 0;
    if (tm->wait > 0.02 * tm->span) s->xfer_s = ema(s->xfer_s, xfer, first);
    else s->xfer_s = first || xfer < s->xfer_s ? xfer : s->xfer_s;
    pd_aco_share_in in = {.heads = H, .local_s = s->local_s, .helper_s = s->helper_s, .xfer_s = s->xfer_s,
                          .fixed_s = s->fixed_s};
    int best = pd_aco_choose_share(&in);
    if (first || pd_aco_predict(&in, best) < pd_aco_predict(&in, s->share) * (1.0 - 0.02)) s->share = best;
    s->phase = 3;
    PD_LOG(PD_LOG_DEBUG, "aco", "%d heads: local %.3g s/head, helper %.3g s/head, transfer %.3g s/head, request %.3g s "
           "-> lend %d", H, s->local_s, s->helper_s, s->xfer_s, s->fixed_s, s->share);
}

pd_status pd_aco_attention(void *lender, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                           float scale) {
    pd_aco_lender *l = lender;
    pd_backend *be = l->be;
    int64_t H = q->shape[2];
    l->stats.calls++;
    l->stats.heads_total += (uint64_t)H;
    int64_t key[6] = {q->shape[0], q->shape[1], k->shape[1], H, q->shape[3], v->shape[3]};
    aco_shape *s = shape_of(l, key);
    s->last_used = pd_now_s();

    int64_t n;
    if (l->fixed_share == PD_ACO_SHARE_HALF) n = H / 2 > 0 ? H / 2 : 1;
    else if (l->fixed_share >= 0) n = l->fixed_share < H ? l->fixed_share : H;
    else if (s->phase == 0) n = 0;
    else if (s->phase <= 2) n = H / 2 > 0 ? H / 2 : 1;
    else n = s->share;
    if (l->failed || l->finished) n = 0;
    l->last_share = (int)n;

    bool accepted = false;
    double ask_s = 0;
    if (n > 0) {
        double t0 = pd_now_s();
        pd_status cs = lender_ask(l, q, k, v, n, scale, &accepted);
        ask_s = pd_now_s() - t0;
        if (cs != PD_OK) lender_fail(l, cs);
        if (cs == PD_OK && !accepted) l->stats.declined++;
    }
    if (!accepted) {
        l->last_share = 0;
        double t0 = pd_now_s();
        PD_TRY(pd_op_attention(be, out, q, k, v, NULL, scale));
        if (l->fixed_share == -1 && s->phase == 0 && !l->failed) {
            PD_TRY(pd_backend_synchronize(be));
            s->local_s = (pd_now_s() - t0) / (double)H;
            s->phase = 1;
        }
        return PD_OK;
    }

    aco_lend_times tm = {0};
    pd_status cs = PD_OK;
    PD_TRY(lender_lend(l, out, q, k, v, n, scale, &tm, &cs));
    if (cs != PD_OK) return PD_OK;
    l->stats.lends++;
    l->stats.heads_lent += (uint64_t)n;
    l->stats.lend_wait_s += tm.wait;
    if (l->fixed_share == -1) shape_update(s, (int)H, (int)n, &tm, ask_s);
    return PD_OK;
}

pd_status pd_aco_lender_finish(pd_aco_lender *l) {
    if (l->failed || l->finished) return PD_OK;
    l->finished = true;
    aco_request r = {.magic = ACO_MAGIC, .op = ACO_FINISH, .seq = ++l->seq};
    pd_status st = msg_put(l->be, &l->req, &r, sizeof r);
    if (st == PD_OK) st = pd_comm_send(l->c, l->req.dev.data, sizeof r, l->helper);
    if (st != PD_OK) lender_fail(l, st);
    return PD_OK;
}

/* ---- the helper ---- */

pd_status pd_aco_serve(pd_comm *c, int lender, pd_backend *be, const pd_aco_serve_options *opts,
                       pd_aco_serve_stats *stats) {
    pd_aco_serve_options none = {0};
    if (!opts) opts = &none;
    pd_aco_serve_stats local = {0};
    if (!stats) stats = &local;
    aco_msg req = {0}, ans = {0};
    aco_buf bufs[4] = {0};
    pd_status st = msg_init(be, &req);
    if (st == PD_OK) st = msg_init(be, &ans);
    while (st == PD_OK) {
        aco_request r;
        st = pd_comm_recv(c, req.dev.data, sizeof r, lender);
        if (st == PD_OK) st = msg_get(be, &req, &r, sizeof r);
        if (st != PD_OK) break;
        if (r.magic != ACO_MAGIC || (r.op != ACO_ATTEND && r.op != ACO_FINISH)) {
            st = pd_error_set(PD_ERR_FORMAT, "aco helper: malformed request");
            break;
        }
        if (r.op == ACO_FINISH) break;
        if (r.B < 1 || r.Nq < 1 || r.Nk < 1 || r.heads < 1 || r.D < 1 || r.Dv < 1 || r.B > 64 || r.heads > 4096 ||
            r.D > 4096 || r.Dv > 4096 || r.Nq > (1 << 24) || r.Nk > (1 << 24) || !isfinite(r.scale)) {
            st = pd_error_set(PD_ERR_FORMAT, "aco helper: request shape out of bounds");
            break;
        }
        if (opts->lending) atomic_store(opts->lending, true); /* before decline is read: see the header */
        bool take = !(opts->decline && atomic_load(opts->decline));
        if (!take && opts->lending) atomic_store(opts->lending, false);
        aco_answer a = {.magic = ACO_MAGIC, .accepted = take};
        st = msg_put(be, &ans, &a, sizeof a);
        if (st == PD_OK) st = pd_comm_send(c, ans.dev.data, sizeof a, lender);
        if (st != PD_OK) break;
        if (!take) {
            stats->declined++;
            continue;
        }
        pd_tensor q, k, v, o;
        st = buf_view(be, &bufs[0], r.B, r.Nq, r.heads, r.D, &q);
        if (st == PD_OK) st = buf_view(be, &bufs[1], r.B, r.Nk, r.heads, r.D, &k);
        if (st == PD_OK) st = buf_view(be, &bufs[2], r.B, r.Nk, r.heads, r.Dv, &v);
        if (st == PD_OK) st = buf_view(be, &bufs[3], r.B, r.Nq, r.heads, r.Dv, &o);
        if (st == PD_OK) st = pd_comm_recv(c, q.data, pd_tensor_nbytes(&q), lender);
        if (st == PD_OK) st = pd_comm_recv(c, k.data, pd_tensor_nbytes(&k), lender);
        if (st == PD_OK) st = pd_comm_recv(c, v.data, pd_tensor_nbytes(&v), lender);
        if (st != PD_OK) break;
        if (opts->kill_after > 0 && stats->lends + 1 >= (uint64_t)opts->kill_after) raise(SIGKILL);
        double t0 = pd_now_s();
        st = pd_op_attention(be, &o, &q, &k, &v, NULL, r.scale);
        if (st == PD_OK) st = pd_backend_synchronize(be);
        double dt = pd_now_s() - t0;
        aco_answer t = {.magic = ACO_MAGIC, .accepted = 1, .compute_s = dt};
        if (st == PD_OK) st = msg_put(be, &ans, &t, sizeof t);
        if (st == PD_OK) st = pd_comm_send(c, o.data, pd_tensor_nbytes(&o), lender);
        if (st == PD_OK) st = pd_comm_send(c, ans.dev.data, sizeof t, lender);
        if (opts->lending) atomic_store(opts->lending, false);
        if (st != PD_OK) break;
        stats->lends++;
        stats->heads += (uint64_t)r.heads;
        stats->compute_s += dt;
        if (dt > stats->compute_max_s) stats->compute_max_s = dt;
    }
    if (opts->lending) atomic_store(opts->lending, false);
    pd_backend_tensor_free(be, &req.dev);
    pd_backend_tensor_free(be, &ans.dev);
    for (int i = 0; i < 4; i++) pd_backend_tensor_free(be, &bufs[i].t);
    return st;
}
