/* Ulysses sequence parallelism and PipeSP for the Wan DiT (see dit_sp.h). The forward itself is
 * dit.c's, run on this rank's token shard; this file supplies its two communicating steps. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "models/wan/dit_impl.h"
#include "models/wan/dit_sp.h"
#include "models/wan/pipesp_plan.h"

#define PD_SP_CALIB_REPS 5 /* timed, after one untimed warm-up; the median is kept */

/* An outstanding request and its index in this forward's timeline (-1: not recorded). */
typedef struct pd_sp_slot {
    pd_comm_req *r;
    int64_t k;
} pd_sp_slot;

struct pd_wan_dit_sp {
    pd_wan_dit *m;
    pd_comm *comm, *cfg;
    pd_comm *stop_comm;       /* the stop agreement's (options.stop_comm, or cfg, or comm) */
    pd_tensor flag;           /* (1) i32 on the backend's device: the stop flag in flight */
    pd_wan_dit_sp_options opts;
    int rank, n;              /* in the SP group */
    pd_arena *arena;          /* per-layer exchange buffers, reset at every self-attention */
    /* plan for the current shape */
    int64_t N, B, hd, H;
    int h, g, m_chunks;       /* head slots per rank, heads per chunk, chunks per batch element */
    int64_t own;              /* real heads among this rank's slots (all chunks) */
    int64_t plan_B, plan_H;   /* the shape gp and reqs were made for (0: none yet) */
    int64_t *count, *offset;  /* (n) token shard of every rank */
    int calib_g;              /* g measured for calib_N tokens (0: not yet) */
    int64_t calib_N;
    /* per chunk j (m_chunks x n): real heads of rank p's slots in chunk j */
    int *gp;
    size_t *a2a;              /* scratch: 4 arrays of n */
    pd_sp_slot *reqs;         /* (4 * B * m_chunks) q, k, v, o per chunk */
    size_t reqs_cap;
    double *tl;               /* per SP collective of this forward: issued, wait began, wait ended */
    int64_t tl_n, tl_cap;
    pd_wan_dit_sp_stats st;
};

pd_status pd_wan_dit_sp_create(pd_wan_dit *m, pd_comm *comm, pd_comm *cfg, const pd_wan_dit_sp_options *opts,
                               pd_wan_dit_sp **out) {
    *out = NULL;
    if (!m || !comm) return pd_error_set(PD_ERR_INVALID, "DiT SP: model and communicator are required");
    pd_wan_dit_sp_options o = {0};
    if (opts) o = *opts;
    if (o.chunk_heads < 0 || o.chunk_heads > PD_SP_MAX_CHUNK)
        return pd_error_set(PD_ERR_INVALID, "DiT SP: chunk_heads %d is outside 0..%d", o.chunk_heads, PD_SP_MAX_CHUNK);
    const int n = pd_comm_size(comm), rank = pd_comm_rank(comm);
    if (cfg) {
        const int cn = pd_comm_size(cfg), cr = pd_comm_rank(cfg);
        if (cn != 2 * n || cr % n != rank)
            return pd_error_set(PD_ERR_INVALID,
                                "DiT SP: CFG communicator rank %d of %d does not pair with SP rank %d of %d "
                                "(need 2 x the SP ranks, and CFG rank %% SP size = SP rank)",
                                cr, cn, rank, n);
    }
    pd_wan_dit_sp *sp = calloc(1, sizeof *sp);
    if (!sp) return pd_error_set(PD_ERR_NOMEM, "DiT SP: out of memory");
    sp->m = m, sp->comm = comm, sp->cfg = cfg, sp->opts = o, sp->rank = rank, sp->n = n;
    sp->count = calloc((size_t)n, sizeof *sp->count);
    sp->offset = calloc((size_t)n, sizeof *sp->offset);
    sp->a2a = calloc(4 * (size_t)(n < 2 ? 2 : n), sizeof *sp->a2a);
    sp->stop_comm = o.stop_comm ? o.stop_comm : cfg ? cfg : comm;
    const int64_t one = 1;
    pd_status s = (sp->count && sp->offset && sp->a2a) ? PD_OK : pd_error_set(PD_ERR_NOMEM, "DiT SP: out of memory");
    if (s == PD_OK) s = pd_arena_create(m->be, 1 << 20, &sp->arena);
    if (s == PD_OK) s = pd_backend_tensor_alloc(m->be, &sp->flag, PD_DTYPE_I32, 1, &one);
    if (s != PD_OK) {
        pd_wan_dit_sp_free(sp);
        return s;
    }
    *out = sp;
    return PD_OK;
}

void pd_wan_dit_sp_free(pd_wan_dit_sp *sp) {
    if (!sp) return;
    pd_arena_free(sp->arena);
    if (sp->flag.data) pd_backend_tensor_free(sp->m->be, &sp->flag);
    free(sp->count);
    free(sp->offset);
    free(sp->gp);
    free(sp->a2a);
    free(sp->reqs);
    free(sp->tl);
    free(sp);
}

int pd_wan_dit_sp_chunk_heads(const pd_wan_dit_sp *sp) { return sp->g; }

void pd_wan_dit_sp_last_stats(const pd_wan_dit_sp *sp, pd_wan_dit_sp_stats *out) { *out = sp->st; }

/* Real heads among rank p's slots j*g .. j*g + g - 1. */
static int pd_sp_real_heads(int64_t H, int h, int g, int p, int j) {
    int64_t first = (int64_t)p * h + (int64_t)j * g, slots = h - j * g < g ? h - j * g : g;
    int64_t r = H - first;
    return (int)(r < 0 ? 0 : r > slots ? slots : r);
}

/* (Re)computes the per-chunk head table for chunk size g (kept while g, B and H stay the same: h
 * follows from H for this group). */
static pd_status pd_sp_plan_chunks(pd_wan_dit_sp *sp, int g) {
    if (sp->g == g && sp->plan_B == sp->B && sp->plan_H == sp->H) return PD_OK;
    sp->plan_B = sp->plan_H = 0;
    sp->g = g;
    sp->m_chunks = (sp->h + g - 1) / g;
    free(sp->gp);
    sp->gp = malloc((size_t)sp->m_chunks * (size_t)sp->n * sizeof *sp->gp);
    const size_t nreq = 4 * (size_t)sp->B * (size_t)sp->m_chunks;
    if (nreq > sp->reqs_cap) {
        free(sp->reqs);
        sp->reqs = calloc(nreq, sizeof *sp->reqs);
        sp->reqs_cap = sp->reqs ? nreq : 0;
    }
    if (!sp->gp || !sp->reqs) return pd_error_set(PD_ERR_NOMEM, "DiT SP: out of memory");
    for (int j = 0; j < sp->m_chunks; j++)
        for (int p = 0; p < sp->n; p++) sp->gp[j * sp->n + p] = pd_sp_real_heads(sp->H, sp->h, g, p, j);
    sp->own = 0;
    for (int j = 0; j < sp->m_chunks; j++) sp->own += sp->gp[j * sp->n + sp->rank];
    sp->plan_B = sp->B, sp->plan_H = sp->H;
    return PD_OK;
}

/* Issues an all-to-all, counts its bytes to and from other ranks and notes when it was issued. */
static pd_status pd_sp_a2a(pd_wan_dit_sp *sp, pd_comm *c, const void *send, const size_t *sb, const size_t *so,
                           void *recv, const size_t *rb, const size_t *ro, pd_sp_slot *slot) {
    const int me = pd_comm_rank(c), n = pd_comm_size(c);
    for (int p = 0; p < n; p++)
        if (p != me) sp->st.bytes_sent += sb[p], sp->st.bytes_received += rb[p];
    sp->st.collectives++;
    slot->k = -1;
    if (c == sp->comm) {
        if (sp->tl_n == sp->tl_cap) {
            int64_t cap = sp->tl_cap ? 2 * sp->tl_cap : 256;
            double *tl = realloc(sp->tl, (size_t)cap * 3 * sizeof *tl);
            if (!tl) return pd_error_set(PD_ERR_NOMEM, "DiT SP: out of memory");
            sp->tl = tl, sp->tl_cap = cap;
        }
        slot->k = sp->tl_n++;
        sp->tl[3 * slot->k] = pd_now_s();
        sp->tl[3 * slot->k + 1] = sp->tl[3 * slot->k + 2] = sp->tl[3 * slot->k];
    }
    return pd_comm_alltoallv_async(c, send, sb, so, recv, rb, ro, &slot->r);
}

static pd_status pd_sp_wait(pd_wan_dit_sp *sp, pd_comm *c, pd_sp_slot *slot) {
    if (!slot->r) return PD_OK;
    double t0 = pd_now_s();
    pd_status s = pd_comm_wait(c, slot->r);
    double t1 = pd_now_s();
    slot->r = NULL;
    sp->st.wait_s += t1 - t0;
    if (slot->k >= 0) sp->tl[3 * slot->k + 1] = t0, sp->tl[3 * slot->k + 2] = t1;
    return s;
}

/* All-gathers `bytes` (a multiple of 4) host bytes of every rank into all (n * bytes, rank order)
 * through buffers of the backend's device: the communicator moves only memory where the backend's
 * tensors live (device memory on NCCL, which refuses host pointers). Resets the arena, which no
 * tensor of this file outlives a self-attention in. */
static pd_status pd_sp_allgather_host(pd_wan_dit_sp *sp, const void *mine, void *all, size_t bytes) {
    PD_ASSERT(bytes % 4 == 0);
    const int64_t words = (int64_t)(bytes / 4), total = words * sp->n;
    pd_tensor send, recv;
    pd_arena_reset(sp->arena, 0);
    PD_TRY(pd_arena_tensor(sp->arena, &send, PD_DTYPE_I32, 1, &words));
    PD_TRY(pd_arena_tensor(sp->arena, &recv, PD_DTYPE_I32, 1, &total));
    pd_tensor hs = pd_tensor_view((void *)mine, PD_DTYPE_I32, 1, &words), hr = pd_tensor_view(all, PD_DTYPE_I32, 1, &total);
    PD_TRY(pd_backend_upload(sp->m->be, &send, &hs));
    PD_TRY(pd_comm_allgather(sp->comm, send.data, recv.data, bytes));
    return pd_backend_download(sp->m->be, &hr, &recv);
}

/* Splits this forward's waits into waiting for a peer to issue the collective at all (skew: it was
 * still computing) and waiting for the transfer, from every rank's issue times (one all-gather; the
 * ranks share one host clock). */
static pd_status pd_sp_account(pd_wan_dit_sp *sp) {
    const int64_t K = sp->tl_n;
    double *mine = malloc((size_t)(K ? K : 1) * sizeof *mine), *all = malloc((size_t)(K ? K : 1) * (size_t)sp->n * sizeof *all);
    pd_status s = mine && all ? PD_OK : pd_error_set(PD_ERR_NOMEM, "DiT SP: out of memory");
    for (int64_t k = 0; k < K && s == PD_OK; k++) mine[k] = sp->tl[3 * k];
    if (s == PD_OK && K) s = pd_sp_allgather_host(sp, mine, all, (size_t)K * sizeof *mine);
    for (int64_t k = 0; k < K && s == PD_OK; k++) {
        double last = 0;
        for (int r = 0; r < sp->n; r++) last = fmax(last, all[(int64_t)r * K + k]);
        const double w0 = sp->tl[3 * k + 1], w1 = sp->tl[3 * k + 2];
        sp->st.wait_skew_s += fmax(0, fmin(w1, last) - w0);
    }
    free(mine);
    free(all);
    return s;
}

/* Waits for (and so frees) every request still out after a failure, keeping the first error. */
static pd_status pd_sp_drain(pd_wan_dit_sp *sp, pd_status s) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", pd_error_msg());
    for (size_t i = 0; i < sp->reqs_cap; i++)
        if (sp->reqs[i].r) {
            (void)pd_comm_wait(sp->comm, sp->reqs[i].r);
            sp->reqs[i].r = NULL;
        }
    return pd_error_set(s, "%s", msg);
}

/* Byte counts and offsets of chunk j's transfers, into a (sb, so, rb, ro; n each).
 * q: this rank sends rank p its tokens of p's chunk-j heads, packed (count_me, gp, hd) at p's place
 *    in a [p] layout; it receives from rank r r's tokens of its own chunk-j heads, which lands as rows
 *    offset_r.. of a (N, g_own, hd) buffer.
 * o: the reverse (out == true). */
static void pd_sp_counts(const pd_wan_dit_sp *sp, int j, bool out, size_t *sb, size_t *so, size_t *rb, size_t *ro) {
    const int n = sp->n, me = sp->rank;
    const size_t row = (size_t)sp->hd * sizeof(float);
    const int gown = sp->gp[j * n + me];
    size_t packed = 0;
    for (int p = 0; p < n; p++) {
        const size_t pk = (size_t)sp->count[me] * (size_t)sp->gp[j * n + p] * row; /* my tokens, p's heads */
        const size_t mine = (size_t)sp->count[p] * (size_t)gown * row;              /* p's tokens, my heads */
        const size_t at = (size_t)sp->offset[p] * (size_t)gown * row;
        if (!out) sb[p] = pk, so[p] = packed, rb[p] = mine, ro[p] = at;
        else sb[p] = mine, so[p] = at, rb[p] = pk, ro[p] = packed;
        packed += pk;
    }
}

/* Elements before chunk (b, j) in the packed [b][j][p] layout and in the (N, g_own) layout. */
static int64_t pd_sp_packed_base(const pd_wan_dit_sp *sp, int64_t b, int j) {
    int64_t heads = 0;
    for (int jj = 0; jj < j; jj++)
        for (int p = 0; p < sp->n; p++) heads += sp->gp[jj * sp->n + p];
    return (b * sp->H + heads) * sp->count[sp->rank] * sp->hd;
}
static int64_t pd_sp_own_base(const pd_wan_dit_sp *sp, int64_t b, int j, int64_t own_heads) {
    int64_t heads = 0;
    for (int jj = 0; jj < j; jj++) heads += sp->gp[jj * sp->n + sp->rank];
    return (b * own_heads + heads) * sp->N * sp->hd;
}

/* (count_me, gp, hd) view of heads first.. of batch element b of a contiguous (B, count_me, H*hd) tensor. */
static pd_tensor pd_sp_heads(const pd_wan_dit_sp *sp, const pd_tensor *x, int64_t b, int64_t first, int64_t gp) {
    const int64_t shape[3] = {sp->count[sp->rank], sp->H, sp->hd};
    const pd_tensor item = pd_dit_item(x, b), heads = pd_dit_view(&item, 3, shape);
    return pd_tensor_slice(&heads, 1, first, gp);
}

/* A contiguous view of the evaluator's buffers, on the backend's device. */
static pd_tensor pd_sp_buf(const pd_wan_dit_sp *sp, float *base, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    pd_tensor v = pd_tensor_view(base, PD_DTYPE_F32, ndim, shape);
    v.device = pd_backend_device(sp->m->be);
    v.device_index = pd_backend_device_index(sp->m->be);
    return v;
}

/* Copies every chunk's heads of x (B, count_me, H*hd) into the packed [b][j][p] layout at packed, or
 * back (unpack). The chunks follow one another without gaps (the gp of every (j, p) sum to H), so the
 * running pointer is at pd_sp_packed_base(sp, b, j) when chunk (b, j) begins. */
static pd_status pd_sp_repack(const pd_wan_dit_sp *sp, const pd_tensor *x, float *packed, bool unpack) {
    pd_backend *be = sp->m->be;
    const int n = sp->n, h = sp->h, g = sp->g;
    const int64_t cme = sp->count[sp->rank], hd = sp->hd;
    float *at = packed;
    for (int64_t b = 0; b < sp->B; b++)
        for (int j = 0; j < sp->m_chunks; j++)
            for (int p = 0; p < n; p++) {
                const int gp = sp->gp[j * n + p];
                if (!gp) continue;
                pd_tensor heads = pd_sp_heads(sp, x, b, (int64_t)p * h + (int64_t)j * g, gp);
                pd_tensor buf = pd_sp_buf(sp, at, 3, cme, gp, hd, 0);
                PD_TRY(unpack ? pd_op_copy(be, &heads, &buf) : pd_op_copy(be, &buf, &heads));
                at += cme * gp * hd;
            }
    PD_ASSERT(at == packed + sp->B * sp->H * cme * hd);
    return PD_OK;
}

/* The self-attention hook: att (B, count_me, D) from q, k, v (B, count_me, D). */
static pd_status pd_sp_self_attn(void *ud, pd_tensor *att, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v) {
    pd_wan_dit_sp *sp = ud;
    pd_backend *be = sp->m->be;
    const int n = sp->n, me = sp->rank, mc = sp->m_chunks;
    const int64_t B = sp->B, N = sp->N, hd = sp->hd, cme = sp->count[me], own = sp->own;
    pd_arena_reset(sp->arena, 0);
    /* packed send (and output receive) buffers: B * count_me * H * hd each; own-head buffers B * N * own * hd */
    pd_tensor sq, sk, sv, ro, rq, rk, rv, oo;
    const int64_t packed = B * cme * sp->H * hd, ownsz = B * N * (own ? own : 1) * hd;
    PD_TRY(pd_arena_tensor(sp->arena, &sq, PD_DTYPE_F32, 1, &packed));
    PD_TRY(pd_arena_tensor(sp->arena, &sk, PD_DTYPE_F32, 1, &packed));
    PD_TRY(pd_arena_tensor(sp->arena, &sv, PD_DTYPE_F32, 1, &packed));
    PD_TRY(pd_arena_tensor(sp->arena, &ro, PD_DTYPE_F32, 1, &packed));
    PD_TRY(pd_arena_tensor(sp->arena, &rq, PD_DTYPE_F32, 1, &ownsz));
    PD_TRY(pd_arena_tensor(sp->arena, &rk, PD_DTYPE_F32, 1, &ownsz));
    PD_TRY(pd_arena_tensor(sp->arena, &rv, PD_DTYPE_F32, 1, &ownsz));
    PD_TRY(pd_arena_tensor(sp->arena, &oo, PD_DTYPE_F32, 1, &ownsz));
    const pd_tensor *src[3] = {q, k, v};
    float *snd[3] = {sq.data, sk.data, sv.data}, *rcv[3] = {rq.data, rk.data, rv.data};

    /* pack every chunk's Q/K/V */
    double t0 = pd_now_s();
    for (int t = 0; t < 3; t++) PD_TRY(pd_sp_repack(sp, src[t], snd[t], false));
    sp->st.pack_s += pd_now_s() - t0;

    /* issue every Q/K/V all-to-all up front */
    size_t *sb = sp->a2a, *so = sb + n, *rb = so + n, *rofs = rb + n;
    pd_sp_slot *reqs = sp->reqs;
    pd_status s = PD_OK;
    for (int64_t b = 0; b < B && s == PD_OK; b++)
        for (int j = 0; j < mc && s == PD_OK; j++) {
            const int64_t c = b * mc + j;
            pd_sp_counts(sp, j, false, sb, so, rb, rofs);
            const int64_t pb = pd_sp_packed_base(sp, b, j), ob = pd_sp_own_base(sp, b, j, own);
            for (int t = 0; t < 3 && s == PD_OK; t++)
                s = pd_sp_a2a(sp, sp->comm, snd[t] + pb, sb, so, rcv[t] + ob, rb, rofs, &reqs[4 * c + t]);
        }
    /* per chunk: wait for its Q/K/V, attend, send its output back while the next chunk computes */
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t b = 0; b < B && s == PD_OK; b++)
        for (int j = 0; j < mc && s == PD_OK; j++) {
            const int64_t c = b * mc + j;
            for (int t = 0; t < 3 && s == PD_OK; t++) s = pd_sp_wait(sp, sp->comm, &reqs[4 * c + t]);
            if (s != PD_OK) break;
            const int gown = sp->gp[j * n + me];
            const int64_t ob = pd_sp_own_base(sp, b, j, own);
            if (gown) {
                pd_tensor q4 = pd_sp_buf(sp, rcv[0] + ob, 4, 1, N, gown, hd), k4 = pd_sp_buf(sp, rcv[1] + ob, 4, 1, N, gown, hd);
                pd_tensor v4 = pd_sp_buf(sp, rcv[2] + ob, 4, 1, N, gown, hd), o4 = pd_sp_buf(sp, (float *)oo.data + ob, 4, 1, N, gown, hd);
                double t1 = pd_now_s();
                s = sp->opts.comm_only ? pd_op_copy(be, &o4, &q4) : pd_dit_self_attention(sp->m, &o4, &q4, &k4, &v4, scale);
                if (s == PD_OK) s = pd_backend_synchronize(be);
                sp->st.attn_s += pd_now_s() - t1;
            }
            if (s != PD_OK) break;
            pd_sp_counts(sp, j, true, sb, so, rb, rofs);
            s = pd_sp_a2a(sp, sp->comm, (float *)oo.data + ob, sb, so, (float *)ro.data + pd_sp_packed_base(sp, b, j),
                          rb, rofs, &reqs[4 * c + 3]);
        }
    for (int64_t c = 0; c < B * mc && s == PD_OK; c++) s = pd_sp_wait(sp, sp->comm, &reqs[4 * c + 3]);
    if (s != PD_OK) return pd_sp_drain(sp, s);

    /* head-order fix-up: chunk (b, j) holds, for each rank p, p's heads p*h + j*g .. */
    t0 = pd_now_s();
    PD_TRY(pd_sp_repack(sp, att, ro.data, true));
    sp->st.pack_s += pd_now_s() - t0;
    return PD_OK;
}

/* The gather hook: every rank's head output rows, per batch element. */
static pd_status pd_sp_gather(void *ud, pd_tensor *full, const pd_tensor *local) {
    pd_wan_dit_sp *sp = ud;
    const int n = sp->n;
    const size_t row = (size_t)full->shape[2] * sizeof(float);
    size_t *sb = sp->a2a, *so = sb + n, *rb = so + n, *ro = rb + n;
    for (int p = 0; p < n; p++) {
        sb[p] = (size_t)sp->count[sp->rank] * row, so[p] = 0;
        rb[p] = (size_t)sp->count[p] * row, ro[p] = (size_t)sp->offset[p] * row;
    }
    for (int64_t b = 0; b < sp->B; b++) {
        PD_TRY(pd_sp_a2a(sp, sp->comm, (char *)local->data + b * local->stride[0], sb, so,
                         (char *)full->data + b * full->stride[0], rb, ro, &sp->reqs[0]));
        PD_TRY(pd_sp_wait(sp, sp->comm, &sp->reqs[0]));
    }
    return PD_OK;
}

/* The stop agreement before block i: rank 0 of the stop communicator broadcasts its model's stop
 * flag, every rank returns the status of that one value, so all stop before the same block. */
static pd_status pd_sp_before_block(void *ud, int block) {
    pd_wan_dit_sp *sp = ud;
    pd_backend *be = sp->m->be;
    const int me = pd_comm_rank(sp->stop_comm), n = pd_comm_size(sp->stop_comm);
    int32_t value = me == 0 && sp->m->stop ? atomic_load(sp->m->stop) : PD_STOP_NONE;
    pd_tensor host = pd_tensor_view(&value, PD_DTYPE_I32, 1, (int64_t[]){1});
    PD_TRY(pd_backend_upload(be, &sp->flag, &host));
    PD_TRY(pd_comm_broadcast(sp->stop_comm, sp->flag.data, sizeof value, 0));
    PD_TRY(pd_backend_download(be, &host, &sp->flag));
    return pd_stop_status(value, "before DiT block %d of %d (rank %d of %d)", block + 1, sp->m->cfg.layers, me, n);
}

/* Median of n values (n <= PD_SP_CALIB_REPS); sorts them in place. */
static double pd_sp_median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double x = v[j];
            v[j] = v[j - 1], v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Times one attention and one output all-to-all of g heads: one untimed warm-up (first-touch page
 * faults, cold caches), then the median of PD_SP_CALIB_REPS reps, which one descheduled rep cannot
 * move the way it moves a mean, nor one lucky rep the way it moves a minimum. The transfer is timed
 * from a barrier: without it, it would include waiting for the slowest peer's attention, which the
 * plan would mistake for a per-head transfer cost that smaller chunks can hide. */
static pd_status pd_sp_time_chunk(pd_wan_dit_sp *sp, int g, double *t_att, double *t_comm) {
    pd_backend *be = sp->m->be;
    const int n = sp->n;
    const int64_t shape[4] = {1, sp->N, g, sp->hd};
    pd_tensor q = {0}, o = {0}, r = {0};
    int64_t rs = sp->count[sp->rank] * (int64_t)n * g * sp->hd;
    pd_status s = pd_backend_tensor_alloc(be, &q, PD_DTYPE_F32, 4, shape);
    if (s == PD_OK) s = pd_backend_tensor_alloc(be, &o, PD_DTYPE_F32, 4, shape);
    if (s == PD_OK) s = pd_backend_tensor_alloc(be, &r, PD_DTYPE_F32, 1, &rs);
    size_t *sb = sp->a2a, *so = sb + n, *rb = so + n, *ro = rb + n;
    const size_t row = (size_t)g * (size_t)sp->hd * sizeof(float);
    for (int p = 0; p < n; p++) {
        sb[p] = (size_t)sp->count[p] * row, so[p] = (size_t)sp->offset[p] * row;
        rb[p] = (size_t)sp->count[sp->rank] * row, ro[p] = (size_t)p * rb[p];
    }
    double ta[PD_SP_CALIB_REPS], tc[PD_SP_CALIB_REPS];
    for (int i = -1; i < PD_SP_CALIB_REPS && s == PD_OK; i++) {
        double t0 = pd_now_s();
        s = pd_op_attention(be, &o, &q, &q, &q, NULL, 1.0f);
        if (s == PD_OK) s = pd_backend_synchronize(be);
        double t1 = pd_now_s();
        if (s == PD_OK) s = pd_comm_barrier(sp->comm); /* a peer still attending is not transfer time */
        const double tb = pd_now_s();
        pd_comm_req *req = NULL;
        if (s == PD_OK) s = pd_comm_alltoallv_async(sp->comm, o.data, sb, so, r.data, rb, ro, &req);
        if (s == PD_OK) s = pd_comm_wait(sp->comm, req);
        double t2 = pd_now_s();
        if (i >= 0) ta[i] = t1 - t0, tc[i] = t2 - tb;
    }
    if (s == PD_OK) *t_att = pd_sp_median(ta, PD_SP_CALIB_REPS), *t_comm = pd_sp_median(tc, PD_SP_CALIB_REPS);
    pd_backend_tensor_free(be, &q);
    pd_backend_tensor_free(be, &o);
    pd_backend_tensor_free(be, &r);
    return s;
}

/* Chooses g from measurements shared by every rank (dit_sp.h): each rank's medians are all-gathered and
 * every rank takes, per figure, the slowest rank's, so all pass the same numbers to the plan. */
static pd_status pd_sp_calibrate(pd_wan_dit_sp *sp, int *g_out) {
    const int h = sp->h;
    if (h <= 1) {
        *g_out = 1;
        return PD_OK;
    }
    double mine[4], *all = malloc((size_t)sp->n * sizeof mine);
    if (!all) return pd_error_set(PD_ERR_NOMEM, "DiT SP: out of memory");
    pd_status s = pd_sp_time_chunk(sp, 1, &mine[0], &mine[1]);
    if (s == PD_OK) s = pd_sp_time_chunk(sp, h, &mine[2], &mine[3]);
    if (s == PD_OK) {
        sp->st.collectives++;
        s = pd_sp_allgather_host(sp, mine, all, sizeof mine);
    }
    if (s != PD_OK) {
        free(all);
        return s;
    }
    double t[4] = {0, 0, 0, 0};
    for (int r = 0; r < sp->n; r++)
        for (int i = 0; i < 4; i++) t[i] = fmax(t[i], all[4 * r + i]);
    free(all);
    *g_out = pd_pipesp_choose_chunk(sp->B, h, t[0], t[2], t[1], t[3]);
    PD_DEBUG("dit-sp", "rank %d: chunk attention %.3g s (g = 1), %.3g s (g = %d); transfer %.3g s, %.3g s -> g = %d",
             sp->rank, t[0], t[2], h, t[1], t[3], *g_out);
    return PD_OK;
}

/* Evaluates batch element(s) of latent over the SP group into vel. */
static pd_status pd_sp_forward_group(pd_wan_dit_sp *sp, pd_tensor *vel, const pd_tensor *latent, const float *ts,
                                     const pd_tensor *ctx) {
    const pd_wan_dit_config *c = &sp->m->cfg;
    pd_wan_dit_grid grid;
    if (latent->ndim != 5) return pd_error_set(PD_ERR_INVALID, "DiT SP: latent must be (B, C, T, H, W)");
    PD_TRY(pd_wan_dit_grid_of(c, latent->shape[2], latent->shape[3], latent->shape[4], &grid));
    const int n = sp->n;
    if (grid.tokens < n)
        return pd_error_set(PD_ERR_INVALID, "DiT SP: %lld tokens cannot be split over %d ranks", (long long)grid.tokens, n);
    sp->N = grid.tokens, sp->B = latent->shape[0], sp->hd = c->head_dim, sp->H = c->heads;
    sp->h = (c->heads + n - 1) / n;
    for (int64_t r = 0, off = 0; r < n; r++) {
        sp->count[r] = grid.tokens / n + (r < grid.tokens % n);
        sp->offset[r] = off;
        off += sp->count[r];
    }
    int g = sp->opts.chunk_heads;
    if (g == 0) {
        if (sp->calib_N != sp->N || !sp->calib_g) {
            double t0 = pd_now_s();
            PD_TRY(pd_sp_calibrate(sp, &sp->calib_g));
            sp->calib_N = sp->N;
            sp->st.calib_s = pd_now_s() - t0;
        }
        g = sp->calib_g;
    }
    if (g > sp->h) g = sp->h;
    PD_TRY(pd_sp_plan_chunks(sp, g));
    pd_dit_shard shard = {.offset = sp->offset[sp->rank], .count = sp->count[sp->rank], .self_attn = pd_sp_self_attn,
                          .gather = pd_sp_gather, .before_block = pd_sp_before_block, .ud = sp};
    return pd_dit_forward_shard(sp->m, vel, latent, ts, ctx, &shard);
}

pd_status pd_wan_dit_sp_forward(pd_wan_dit_sp *sp, pd_tensor *vel, const pd_tensor *latent, const float *ts,
                                const pd_tensor *ctx) {
    const double t0 = pd_now_s();
    memset(&sp->st, 0, sizeof sp->st);
    sp->tl_n = 0;
    pd_status s;
    if (!sp->cfg) {
        s = pd_sp_forward_group(sp, vel, latent, ts, ctx);
    } else {
        /* half 0 evaluates element 0 (conditional), half 1 element 1; partners swap velocities */
        if (latent->ndim != 5 || latent->shape[0] != 2 || vel->ndim != 5 || vel->shape[0] != 2 || ctx->ndim != 3 ||
            ctx->shape[0] != 2 || !pd_tensor_is_contiguous(vel))
            return pd_error_set(PD_ERR_INVALID, "DiT SP: CFG parallelism needs the CFG pair: latent, context and "
                                                "velocity of batch 2");
        const int crank = pd_comm_rank(sp->cfg), half = crank / sp->n, partner = (crank + sp->n) % (2 * sp->n);
        pd_tensor l1 = pd_tensor_slice(latent, 0, half, 1), c1 = pd_tensor_slice(ctx, 0, half, 1);
        pd_tensor v1 = pd_tensor_slice(vel, 0, half, 1);
        s = pd_sp_forward_group(sp, &v1, &l1, ts + half, &c1);
        if (s == PD_OK) {
            const int cn = 2 * sp->n; /* the CFG group's size: at most PD_COMM_MAX_RANKS */
            size_t cnt[4 * PD_COMM_MAX_RANKS] = {0};
            const size_t bytes = pd_tensor_nbytes(&v1);
            cnt[partner] = bytes;                                  /* send bytes; offsets 0 */
            cnt[2 * cn + partner] = bytes;                         /* recv bytes */
            cnt[3 * cn + partner] = (size_t)(1 - half) * bytes;    /* recv offset in vel */
            pd_sp_slot r = {0};
            s = pd_sp_a2a(sp, sp->cfg, v1.data, cnt, cnt + cn, vel->data, cnt + 2 * cn, cnt + 3 * cn, &r);
            if (s == PD_OK) s = pd_sp_wait(sp, sp->cfg, &r);
        }
    }
    sp->st.ranks = sp->n, sp->st.chunk_heads = sp->g, sp->st.heads_per_rank = sp->h, sp->st.chunks_per_layer = sp->m_chunks;
    sp->st.tokens = sp->N, sp->st.tokens_local = sp->count[sp->rank];
    if (s == PD_OK && sp->opts.accounting) s = pd_sp_account(sp);
    sp->st.forward_s = pd_now_s() - t0;
    return s;
}
