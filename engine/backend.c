/* Backend dispatch: argument checks shared by every backend, then a call through the backend's table. */
#include "engine/backend.h"

#include <math.h>
#include <string.h>

#include "engine/backend_impl.h"

static const char *const pd_op_names[PD_OP_COUNT] = {
    [PD_OP_LINEAR] = "LINEAR",
    [PD_OP_LAYER_NORM] = "LAYER_NORM",
    [PD_OP_RMS_NORM] = "RMS_NORM",
    [PD_OP_ROPE3D_FREQS] = "ROPE3D_FREQS",
    [PD_OP_ROPE] = "ROPE",
    [PD_OP_ATTENTION] = "ATTENTION",
    [PD_OP_GELU_TANH] = "GELU_TANH",
    [PD_OP_SILU] = "SILU",
    [PD_OP_MODULATE] = "MODULATE",
    [PD_OP_GATED_ADD] = "GATED_ADD",
    [PD_OP_ADD] = "ADD",
    [PD_OP_MUL] = "MUL",
    [PD_OP_TIMESTEP_EMBED] = "TIMESTEP_EMBED",
    [PD_OP_PATCHIFY] = "PATCHIFY",
    [PD_OP_UNPATCHIFY] = "UNPATCHIFY",
    [PD_OP_COPY] = "COPY",
    [PD_OP_CONV3D] = "CONV3D",
    [PD_OP_UPSAMPLE_NEAREST2D] = "UPSAMPLE_NEAREST2D",
    [PD_OP_CHANNEL_RMS_NORM] = "CHANNEL_RMS_NORM",
    [PD_OP_CLAMP] = "CLAMP",
    [PD_OP_EMBEDDING] = "EMBEDDING",
    [PD_OP_LAYER_NORM_MODULATE] = "LAYER_NORM_MODULATE",
    [PD_OP_LINEAR_GELU] = "LINEAR_GELU",
    [PD_OP_RMS_NORM_ROPE] = "RMS_NORM_ROPE",
};

const char *pd_op_name(pd_op op) {
    if (op < 0 || op >= PD_OP_COUNT) return "UNKNOWN";
    return pd_op_names[op];
}

/* ---- backend ---- */

void pd_backend_free(pd_backend *be) {
    if (be) be->ops->free(be);
}
const char *pd_backend_name(const pd_backend *be) { return be->name; }
pd_device_kind pd_backend_device(const pd_backend *be) { return be->device; }
int pd_backend_device_index(const pd_backend *be) { return be->device_index; }
void *pd_backend_stream(const pd_backend *be) { return be->stream; }
int pd_backend_threads(const pd_backend *be) { return be->n_threads; }

static bool pd_op_entry_present(const pd_backend *be, pd_op op) {
    const pd_backend_ops *o = be->ops;
    switch (op) {
    case PD_OP_LINEAR: return o->linear;
    case PD_OP_LAYER_NORM: return o->layer_norm;
    case PD_OP_RMS_NORM: return o->rms_norm;
    case PD_OP_ROPE3D_FREQS: return o->rope3d_freqs;
    case PD_OP_ROPE: return o->rope;
    case PD_OP_ATTENTION: return o->attention;
    case PD_OP_GELU_TANH: return o->gelu_tanh;
    case PD_OP_SILU: return o->silu;
    case PD_OP_MODULATE: return o->modulate;
    case PD_OP_GATED_ADD: return o->gated_add;
    case PD_OP_ADD: return o->add;
    case PD_OP_MUL: return o->mul;
    case PD_OP_TIMESTEP_EMBED: return o->timestep_embed;
    case PD_OP_PATCHIFY: return o->patchify;
    case PD_OP_UNPATCHIFY: return o->unpatchify;
    case PD_OP_COPY: return o->copy;
    case PD_OP_CONV3D: return o->conv3d;
    case PD_OP_UPSAMPLE_NEAREST2D: return o->upsample_nearest2d;
    case PD_OP_CHANNEL_RMS_NORM: return o->channel_rms_norm;
    case PD_OP_CLAMP: return o->clamp;
    case PD_OP_EMBEDDING: return o->embedding;
    case PD_OP_LAYER_NORM_MODULATE: return o->layer_norm_modulate;
    case PD_OP_LINEAR_GELU: return o->linear_gelu;
    case PD_OP_RMS_NORM_ROPE: return o->rms_norm_rope;
    case PD_OP_COUNT: break;
    }
    return false;
}

static bool pd_is_float(pd_dtype dt) { return dt == PD_DTYPE_F32 || dt == PD_DTYPE_BF16 || dt == PD_DTYPE_F16; }

bool pd_backend_supports_op(const pd_backend *be, pd_op op, pd_dtype weight_dtype) {
    if (op < 0 || op >= PD_OP_COUNT || !pd_op_entry_present(be, op)) return false;
    return be->ops->supports_op ? be->ops->supports_op(be, op, weight_dtype) : pd_is_float(weight_dtype);
}

/* ---- argument checks ---- */

#define PD_DESC(t) pd_tensor_describe((t), (char[96]){0}, 96)

enum {
    PD_CHK_F32 = 1 << 0,    /* dtype must be f32 */
    PD_CHK_FLOAT = 1 << 1,  /* f32, bf16 or f16 */
    PD_CHK_I32 = 1 << 2,    /* dtype must be i32 */
    PD_CHK_CONTIG = 1 << 3, /* row-major contiguous */
};

static pd_status pd_chk(const pd_backend *be, pd_op op, const char *name, const pd_tensor *t, unsigned flags) {
    const char *o = pd_op_name(op);
    if (!t) return pd_error_set(PD_ERR_INVALID, "%s: %s is NULL", o, name);
    if (t->ndim < 0 || t->ndim > PD_MAX_DIMS)
        return pd_error_set(PD_ERR_INVALID, "%s: %s has rank %d", o, name, t->ndim);
    if (t->dtype < 0 || t->dtype >= PD_DTYPE_COUNT)
        return pd_error_set(PD_ERR_INVALID, "%s: %s has an unknown dtype %d", o, name, (int)t->dtype);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0) return pd_error_set(PD_ERR_INVALID, "%s: %s %s has a negative dim", o, name, PD_DESC(t));
    if (t->device != be->device || (be->device != PD_DEVICE_CPU && t->device_index != be->device_index))
        return pd_error_set(PD_ERR_INVALID, "%s: %s %s is not on backend %s's device", o, name, PD_DESC(t), be->name);
    if (!t->data && pd_tensor_numel(t) > 0) return pd_error_set(PD_ERR_INVALID, "%s: %s %s has no data", o, name, PD_DESC(t));
    if ((flags & PD_CHK_F32) && t->dtype != PD_DTYPE_F32)
        return pd_error_set(PD_ERR_INVALID, "%s: %s %s must be f32", o, name, PD_DESC(t));
    if ((flags & PD_CHK_FLOAT) && !pd_is_float(t->dtype))
        return pd_error_set(PD_ERR_INVALID, "%s: %s %s must be f32, bf16 or f16", o, name, PD_DESC(t));
    if ((flags & PD_CHK_I32) && t->dtype != PD_DTYPE_I32)
        return pd_error_set(PD_ERR_INVALID, "%s: %s %s must be i32", o, name, PD_DESC(t));
    if ((flags & PD_CHK_CONTIG) && !pd_tensor_is_contiguous(t))
        return pd_error_set(PD_ERR_INVALID, "%s: %s %s must be contiguous", o, name, PD_DESC(t));
    return PD_OK;
}

static pd_status pd_chk_rank(pd_op op, const char *name, const pd_tensor *t, int ndim) {
    if (t->ndim != ndim)
        return pd_error_set(PD_ERR_INVALID, "%s: %s %s must have %d dims", pd_op_name(op), name, PD_DESC(t), ndim);
    return PD_OK;
}

static pd_status pd_mismatch(pd_op op, const char *an, const pd_tensor *a, const char *bn, const pd_tensor *b,
                             const char *what) {
    return pd_error_set(PD_ERR_INVALID, "%s: %s %s and %s %s: %s", pd_op_name(op), an, PD_DESC(a), bn, PD_DESC(b), what);
}

/* Same rank and dims (dtype not compared). */
static bool pd_same_dims(const pd_tensor *a, const pd_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

static void pd_span(const pd_tensor *t, uintptr_t *lo, uintptr_t *hi) {
    intptr_t l = 0, h = (intptr_t)pd_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        intptr_t e = (intptr_t)(t->shape[i] - 1) * (intptr_t)t->stride[i];
        if (e < 0) l += e;
        else h += e;
    }
    *lo = (uintptr_t)t->data + (uintptr_t)l;
    *hi = (uintptr_t)t->data + (uintptr_t)h;
}

static bool pd_overlaps(const pd_tensor *a, const pd_tensor *b) {
    if (!a || !b || pd_tensor_numel(a) == 0 || pd_tensor_numel(b) == 0) return false;
    uintptr_t alo, ahi, blo, bhi;
    pd_span(a, &alo, &ahi);
    pd_span(b, &blo, &bhi);
    return alo < bhi && blo < ahi;
}

/* The output may not overlap the input, except where `exact_ok` and the two are the same tensor
 * (same data, dtype and strides), which elementwise ops handle. */
static pd_status pd_chk_alias(pd_op op, const char *yn, const pd_tensor *y, const char *xn, const pd_tensor *x,
                              bool exact_ok) {
    if (!pd_overlaps(y, x)) return PD_OK;
    if (exact_ok && y->data == x->data && y->dtype == x->dtype && y->ndim == x->ndim &&
        !memcmp(y->stride, x->stride, sizeof(int64_t) * (size_t)y->ndim))
        return PD_OK;
    return pd_error_set(PD_ERR_INVALID, "%s: output %s %s overlaps input %s %s", pd_op_name(op), yn, PD_DESC(y), xn,
                        PD_DESC(x));
}

static pd_status pd_unsupported(const pd_backend *be, pd_op op) {
    return pd_error_set(PD_ERR_UNSUPPORTED, "%s: not supported by backend %s", pd_op_name(op), be->name);
}

#define PD_DISPATCH(be, op, fn, ...) \
    ((be)->ops->fn ? (be)->ops->fn(__VA_ARGS__) : pd_unsupported((be), (op)))

/* A (C) vector of a float dtype, or NULL when allowed. */
static pd_status pd_chk_vec(const pd_backend *be, pd_op op, const char *name, const pd_tensor *v, int64_t c,
                            const char *xn, const pd_tensor *x) {
    PD_TRY(pd_chk(be, op, name, v, PD_CHK_FLOAT | PD_CHK_CONTIG));
    if (v->ndim != 1 || v->shape[0] != c) return pd_mismatch(op, xn, x, name, v, "vector length differs from channels");
    return PD_OK;
}

/* ---- memory ---- */

pd_status pd_backend_tensor_alloc(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > PD_MAX_DIMS) return pd_error_set(PD_ERR_INVALID, "tensor rank %d outside 0..%d", ndim, PD_MAX_DIMS);
    if (dt < 0 || dt >= PD_DTYPE_COUNT) return pd_error_set(PD_ERR_INVALID, "unknown dtype %d", (int)dt);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return pd_error_set(PD_ERR_INVALID, "negative tensor dim %lld", (long long)shape[i]);
    return be->ops->tensor_alloc(be, out, dt, ndim, shape);
}

void pd_backend_tensor_free(pd_backend *be, pd_tensor *t) {
    if (!t) return;
    be->ops->tensor_free(be, t);
}

pd_status pd_backend_import_weight(pd_backend *be, pd_tensor *out, const pd_tensor *host) {
    if (!host || host->device != PD_DEVICE_CPU)
        return pd_error_set(PD_ERR_INVALID, "import_weight: the source is not a host tensor");
    if (!pd_tensor_is_contiguous(host))
        return pd_error_set(PD_ERR_INVALID, "import_weight: weight %s is not contiguous", PD_DESC(host));
    return be->ops->import_weight(be, out, host);
}

static pd_status pd_chk_transfer(const pd_backend *be, const char *what, const pd_tensor *dev, const pd_tensor *host) {
    if (!dev || !host) return pd_error_set(PD_ERR_INVALID, "%s: NULL tensor", what);
    if (host->device != PD_DEVICE_CPU) return pd_error_set(PD_ERR_INVALID, "%s: %s is not a host tensor", what, PD_DESC(host));
    if (dev->device != be->device || (be->device != PD_DEVICE_CPU && dev->device_index != be->device_index))
        return pd_error_set(PD_ERR_INVALID, "%s: %s is not on backend %s's device", what, PD_DESC(dev), be->name);
    if (!pd_tensor_same_shape(dev, host))
        return pd_error_set(PD_ERR_INVALID, "%s: device %s and host %s differ", what, PD_DESC(dev), PD_DESC(host));
    return PD_OK;
}

pd_status pd_backend_upload(pd_backend *be, pd_tensor *dst, const pd_tensor *host_src) {
    PD_TRY(pd_chk_transfer(be, "upload", dst, host_src));
    return be->ops->upload(be, dst, host_src);
}

pd_status pd_backend_download(pd_backend *be, pd_tensor *host_dst, const pd_tensor *src) {
    PD_TRY(pd_chk_transfer(be, "download", src, host_dst));
    return be->ops->download(be, host_dst, src);
}

pd_status pd_backend_synchronize(pd_backend *be) {
    return be->ops->synchronize ? be->ops->synchronize(be) : PD_OK;
}

/* ---- ops ---- */

/* LINEAR's checks, shared with LINEAR_GELU. */
static pd_status pd_chk_linear(const pd_backend *be, pd_op op, const pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                               const pd_tensor *b) {
    PD_TRY(pd_chk(be, op, "y", y, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "x", x, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "w", w, PD_CHK_FLOAT | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "w", w, 2));
    if (x->ndim < 1) return pd_error_set(PD_ERR_INVALID, "%s: x %s must have at least 1 dim", pd_op_name(op), PD_DESC(x));
    if (x->shape[x->ndim - 1] != w->shape[1]) return pd_mismatch(op, "x", x, "w", w, "K differs");
    if (y->ndim != x->ndim) return pd_mismatch(op, "x", x, "y", y, "ranks differ");
    for (int i = 0; i < x->ndim - 1; i++)
        if (x->shape[i] != y->shape[i]) return pd_mismatch(op, "x", x, "y", y, "leading dims differ");
    if (y->shape[y->ndim - 1] != w->shape[0]) return pd_mismatch(op, "y", y, "w", w, "N differs");
    if (b) PD_TRY(pd_chk_vec(be, op, "b", b, w->shape[0], "w", w));
    PD_TRY(pd_chk_alias(op, "y", y, "x", x, false));
    PD_TRY(pd_chk_alias(op, "y", y, "w", w, false));
    PD_TRY(pd_chk_alias(op, "y", y, "b", b, false));
    return PD_OK;
}

pd_status pd_op_linear(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b) {
    PD_TRY(pd_chk_linear(be, PD_OP_LINEAR, y, x, w, b));
    return PD_DISPATCH(be, PD_OP_LINEAR, linear, be, y, x, w, b);
}

pd_status pd_op_linear_gelu(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b) {
    PD_TRY(pd_chk_linear(be, PD_OP_LINEAR_GELU, y, x, w, b));
    return PD_DISPATCH(be, PD_OP_LINEAR_GELU, linear_gelu, be, y, x, w, b);
}

/* y, x f32 contiguous of the same shape with y == x allowed; at least one dim when rows are needed. */
static pd_status pd_chk_unary(const pd_backend *be, pd_op op, const pd_tensor *y, const pd_tensor *x, int min_rank) {
    PD_TRY(pd_chk(be, op, "y", y, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "x", x, PD_CHK_F32 | PD_CHK_CONTIG));
    if (!pd_same_dims(x, y)) return pd_mismatch(op, "x", x, "y", y, "shapes differ");
    if (x->ndim < min_rank)
        return pd_error_set(PD_ERR_INVALID, "%s: x %s must have at least %d dims", pd_op_name(op), PD_DESC(x), min_rank);
    return pd_chk_alias(op, "y", y, "x", x, true);
}

/* freqs (N, D2, 2) f32 contiguous with N = x's dim 1; `want` names the expected shape in the message. */
static pd_status pd_chk_freqs(const pd_backend *be, pd_op op, const pd_tensor *freqs, const pd_tensor *x, int64_t d2,
                              const char *want) {
    PD_TRY(pd_chk(be, op, "freqs", freqs, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "freqs", freqs, 3));
    if (freqs->shape[0] != x->shape[1] || freqs->shape[1] != d2 || freqs->shape[2] != 2)
        return pd_mismatch(op, "x", x, "freqs", freqs, want);
    return PD_OK;
}

static pd_status pd_chk_eps(pd_op op, float eps) {
    if (!(eps >= 0.0f) || isinf(eps)) return pd_error_set(PD_ERR_INVALID, "%s: eps %g must be finite and >= 0", pd_op_name(op), eps);
    return PD_OK;
}

pd_status pd_op_layer_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                           float eps) {
    const pd_op op = PD_OP_LAYER_NORM;
    PD_TRY(pd_chk_unary(be, op, y, x, 1));
    PD_TRY(pd_chk_eps(op, eps));
    int64_t c = x->shape[x->ndim - 1];
    if (w) PD_TRY(pd_chk_vec(be, op, "w", w, c, "x", x));
    if (b) PD_TRY(pd_chk_vec(be, op, "b", b, c, "x", x));
    PD_TRY(pd_chk_alias(op, "y", y, "w", w, false));
    PD_TRY(pd_chk_alias(op, "y", y, "b", b, false));
    return PD_DISPATCH(be, op, layer_norm, be, y, x, w, b, eps);
}

pd_status pd_op_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps) {
    const pd_op op = PD_OP_RMS_NORM;
    PD_TRY(pd_chk_unary(be, op, y, x, 1));
    PD_TRY(pd_chk_eps(op, eps));
    if (w) PD_TRY(pd_chk_vec(be, op, "w", w, x->shape[x->ndim - 1], "x", x));
    PD_TRY(pd_chk_alias(op, "y", y, "w", w, false));
    return PD_DISPATCH(be, op, rms_norm, be, y, x, w, eps);
}

pd_status pd_op_rope3d_freqs(pd_backend *be, pd_tensor *freqs, int64_t grid_t, int64_t grid_h, int64_t grid_w,
                             int64_t token_offset, double theta) {
    const pd_op op = PD_OP_ROPE3D_FREQS;
    PD_TRY(pd_chk(be, op, "freqs", freqs, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "freqs", freqs, 3));
    if (freqs->shape[2] != 2 || freqs->shape[1] < 1)
        return pd_error_set(PD_ERR_INVALID, "ROPE3D_FREQS: freqs %s must be (N, D/2, 2)", PD_DESC(freqs));
    if (grid_t < 1 || grid_h < 1 || grid_w < 1 || grid_t > (1 << 20) || grid_h > (1 << 20) || grid_w > (1 << 20))
        return pd_error_set(PD_ERR_INVALID, "ROPE3D_FREQS: grid (%lld, %lld, %lld) must be positive", (long long)grid_t,
                            (long long)grid_h, (long long)grid_w);
    if (token_offset < 0 || token_offset + freqs->shape[0] > grid_t * grid_h * grid_w)
        return pd_error_set(PD_ERR_INVALID, "ROPE3D_FREQS: tokens %lld..%lld outside the (%lld, %lld, %lld) grid",
                            (long long)token_offset, (long long)(token_offset + freqs->shape[0]), (long long)grid_t,
                            (long long)grid_h, (long long)grid_w);
    if (!(theta > 0.0) || isinf(theta))
        return pd_error_set(PD_ERR_INVALID, "ROPE3D_FREQS: theta %g must be positive and finite", theta);
    return PD_DISPATCH(be, op, rope3d_freqs, be, freqs, grid_t, grid_h, grid_w, token_offset, theta);
}

pd_status pd_op_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *freqs) {
    const pd_op op = PD_OP_ROPE;
    PD_TRY(pd_chk_unary(be, op, y, x, 4));
    PD_TRY(pd_chk_rank(op, "x", x, 4));
    if (x->shape[3] % 2) return pd_error_set(PD_ERR_INVALID, "ROPE: x %s head dim must be even", PD_DESC(x));
    PD_TRY(pd_chk_freqs(be, op, freqs, x, x->shape[3] / 2, "freqs must be (N, D/2, 2)"));
    PD_TRY(pd_chk_alias(op, "y", y, "freqs", freqs, false));
    return PD_DISPATCH(be, op, rope, be, y, x, freqs);
}

pd_status pd_op_attention(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                          const pd_tensor *bias, float scale) {
    const pd_op op = PD_OP_ATTENTION;
    PD_TRY(pd_chk(be, op, "out", out, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "q", q, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "k", k, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "v", v, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "out", out, 4));
    PD_TRY(pd_chk_rank(op, "q", q, 4));
    PD_TRY(pd_chk_rank(op, "k", k, 4));
    PD_TRY(pd_chk_rank(op, "v", v, 4));
    if (k->shape[0] != q->shape[0] || k->shape[2] != q->shape[2] || k->shape[3] != q->shape[3])
        return pd_mismatch(op, "q", q, "k", k, "B, H or D differs");
    if (v->shape[0] != k->shape[0] || v->shape[1] != k->shape[1] || v->shape[2] != k->shape[2])
        return pd_mismatch(op, "k", k, "v", v, "B, Nk or H differs");
    if (out->shape[0] != q->shape[0] || out->shape[1] != q->shape[1] || out->shape[2] != q->shape[2] ||
        out->shape[3] != v->shape[3])
        return pd_mismatch(op, "q", q, "out", out, "out must be (B, Nq, H, Dv)");
    if (k->shape[1] < 1 && q->shape[1] > 0) return pd_mismatch(op, "q", q, "k", k, "no keys");
    if (q->shape[3] < 1) return pd_error_set(PD_ERR_INVALID, "ATTENTION: q %s has head dim 0", PD_DESC(q));
    if (bias) {
        PD_TRY(pd_chk(be, op, "bias", bias, PD_CHK_F32 | PD_CHK_CONTIG));
        if (bias->ndim != 3 || bias->shape[0] != q->shape[2] || bias->shape[1] != q->shape[1] ||
            bias->shape[2] != k->shape[1])
            return pd_mismatch(op, "q", q, "bias", bias, "bias must be (H, Nq, Nk)");
    }
    if (!isfinite(scale)) return pd_error_set(PD_ERR_INVALID, "ATTENTION: scale %g is not finite", scale);
    PD_TRY(pd_chk_alias(op, "out", out, "q", q, false));
    PD_TRY(pd_chk_alias(op, "out", out, "k", k, false));
    PD_TRY(pd_chk_alias(op, "out", out, "v", v, false));
    PD_TRY(pd_chk_alias(op, "out", out, "bias", bias, false));
    return PD_DISPATCH(be, op, attention, be, out, q, k, v, bias, scale);
}

pd_status pd_op_gelu_tanh(pd_backend *be, pd_tensor *y, const pd_tensor *x) {
    PD_TRY(pd_chk_unary(be, PD_OP_GELU_TANH, y, x, 0));
    return PD_DISPATCH(be, PD_OP_GELU_TANH, gelu_tanh, be, y, x);
}

pd_status pd_op_silu(pd_backend *be, pd_tensor *y, const pd_tensor *x) {
    PD_TRY(pd_chk_unary(be, PD_OP_SILU, y, x, 0));
    return PD_DISPATCH(be, PD_OP_SILU, silu, be, y, x);
}

/* shift/scale/gate: B*C f32 elements as (B, C) or (B, 1, C), unit stride along C, any batch stride. */
static pd_status pd_chk_mod(const pd_backend *be, pd_op op, const char *name, const pd_tensor *m, const pd_tensor *x) {
    PD_TRY(pd_chk(be, op, name, m, PD_CHK_F32));
    int64_t B = x->shape[0], C = x->shape[2];
    bool ok = (m->ndim == 2 && m->shape[0] == B && m->shape[1] == C) ||
              (m->ndim == 3 && m->shape[0] == B && m->shape[1] == 1 && m->shape[2] == C);
    if (!ok) return pd_mismatch(op, "x", x, name, m, "must be (B, C) or (B, 1, C)");
    if (C > 1 && m->stride[m->ndim - 1] != 4) return pd_mismatch(op, "x", x, name, m, "needs unit stride along C");
    return PD_OK;
}

pd_status pd_op_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift, const pd_tensor *scale) {
    const pd_op op = PD_OP_MODULATE;
    PD_TRY(pd_chk_unary(be, op, y, x, 3));
    PD_TRY(pd_chk_rank(op, "x", x, 3));
    PD_TRY(pd_chk_mod(be, op, "shift", shift, x));
    PD_TRY(pd_chk_mod(be, op, "scale", scale, x));
    PD_TRY(pd_chk_alias(op, "y", y, "shift", shift, false));
    PD_TRY(pd_chk_alias(op, "y", y, "scale", scale, false));
    return PD_DISPATCH(be, op, modulate, be, y, x, shift, scale);
}

pd_status pd_op_gated_add(pd_backend *be, pd_tensor *x, const pd_tensor *gate, const pd_tensor *y) {
    const pd_op op = PD_OP_GATED_ADD;
    PD_TRY(pd_chk(be, op, "x", x, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "y", y, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "x", x, 3));
    if (!pd_same_dims(x, y)) return pd_mismatch(op, "x", x, "y", y, "shapes differ");
    if (gate) PD_TRY(pd_chk_mod(be, op, "gate", gate, x));
    PD_TRY(pd_chk_alias(op, "x", x, "y", y, false));
    PD_TRY(pd_chk_alias(op, "x", x, "gate", gate, false));
    return PD_DISPATCH(be, op, gated_add, be, x, gate, y);
}

static pd_status pd_chk_binary(const pd_backend *be, pd_op op, const pd_tensor *y, const pd_tensor *a, const pd_tensor *b) {
    PD_TRY(pd_chk(be, op, "y", y, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "a", a, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "b", b, PD_CHK_FLOAT | PD_CHK_CONTIG));
    if (!pd_same_dims(a, y)) return pd_mismatch(op, "a", a, "y", y, "shapes differ");
    if (b->ndim > a->ndim) return pd_mismatch(op, "a", a, "b", b, "b has more dims than a");
    for (int i = 0; i < b->ndim; i++) {
        int64_t bd = b->shape[b->ndim - 1 - i], ad = a->shape[a->ndim - 1 - i];
        if (bd != 1 && bd != ad) return pd_mismatch(op, "a", a, "b", b, "b does not broadcast onto a");
    }
    PD_TRY(pd_chk_alias(op, "y", y, "a", a, true));
    return pd_chk_alias(op, "y", y, "b", b, false);
}

pd_status pd_op_add(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b) {
    PD_TRY(pd_chk_binary(be, PD_OP_ADD, y, a, b));
    return PD_DISPATCH(be, PD_OP_ADD, add, be, y, a, b);
}

pd_status pd_op_mul(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b) {
    PD_TRY(pd_chk_binary(be, PD_OP_MUL, y, a, b));
    return PD_DISPATCH(be, PD_OP_MUL, mul, be, y, a, b);
}

pd_status pd_op_timestep_embed(pd_backend *be, pd_tensor *out, const pd_tensor *t) {
    const pd_op op = PD_OP_TIMESTEP_EMBED;
    PD_TRY(pd_chk(be, op, "out", out, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "t", t, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "out", out, 2));
    PD_TRY(pd_chk_rank(op, "t", t, 1));
    if (out->shape[0] != t->shape[0]) return pd_mismatch(op, "t", t, "out", out, "B differs");
    if (out->shape[1] % 2 || out->shape[1] < 2) return pd_error_set(PD_ERR_INVALID, "TIMESTEP_EMBED: out %s needs an even F >= 2", PD_DESC(out));
    PD_TRY(pd_chk_alias(op, "out", out, "t", t, false));
    return PD_DISPATCH(be, op, timestep_embed, be, out, t);
}

static pd_status pd_chk_patch(pd_op op, const pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw,
                              bool c_last) {
    if (pt < 1 || ph < 1 || pw < 1)
        return pd_error_set(PD_ERR_INVALID, "%s: patch (%d, %d, %d) must be positive", pd_op_name(op), pt, ph, pw);
    int64_t C = latent->shape[0], T = latent->shape[1], H = latent->shape[2], W = latent->shape[3];
    if (T % pt || H % ph || W % pw)
        return pd_error_set(PD_ERR_INVALID, "%s: latent %s is not divisible by patch (%d, %d, %d)", pd_op_name(op),
                            PD_DESC(latent), pt, ph, pw);
    int64_t n = (T / pt) * (H / ph) * (W / pw), d = C * pt * ph * pw;
    if (tokens->shape[0] != n || tokens->shape[1] != d)
        return pd_mismatch(op, "latent", latent, "tokens", tokens,
                           c_last ? "tokens must be (T/pt*H/ph*W/pw, pt*ph*pw*C)" : "tokens must be (T/pt*H/ph*W/pw, C*pt*ph*pw)");
    return PD_OK;
}

pd_status pd_op_patchify(pd_backend *be, pd_tensor *tokens, const pd_tensor *latent, int pt, int ph, int pw) {
    const pd_op op = PD_OP_PATCHIFY;
    PD_TRY(pd_chk(be, op, "tokens", tokens, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "latent", latent, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "tokens", tokens, 2));
    PD_TRY(pd_chk_rank(op, "latent", latent, 4));
    PD_TRY(pd_chk_patch(op, latent, tokens, pt, ph, pw, false));
    PD_TRY(pd_chk_alias(op, "tokens", tokens, "latent", latent, false));
    return PD_DISPATCH(be, op, patchify, be, tokens, latent, pt, ph, pw);
}

pd_status pd_op_unpatchify(pd_backend *be, pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw) {
    const pd_op op = PD_OP_UNPATCHIFY;
    PD_TRY(pd_chk(be, op, "latent", latent, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "tokens", tokens, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "tokens", tokens, 2));
    PD_TRY(pd_chk_rank(op, "latent", latent, 4));
    PD_TRY(pd_chk_patch(op, latent, tokens, pt, ph, pw, true));
    PD_TRY(pd_chk_alias(op, "latent", latent, "tokens", tokens, false));
    return PD_DISPATCH(be, op, unpatchify, be, latent, tokens, pt, ph, pw);
}

pd_status pd_op_copy(pd_backend *be, pd_tensor *dst, const pd_tensor *src) {
    const pd_op op = PD_OP_COPY;
    PD_TRY(pd_chk(be, op, "dst", dst, 0));
    PD_TRY(pd_chk(be, op, "src", src, 0));
    if (!pd_same_dims(dst, src)) return pd_mismatch(op, "src", src, "dst", dst, "shapes differ");
    if (dst->dtype != src->dtype && !(pd_is_float(dst->dtype) && pd_is_float(src->dtype)))
        return pd_mismatch(op, "src", src, "dst", dst, "only float dtypes convert");
    PD_TRY(pd_chk_alias(op, "dst", dst, "src", src, false));
    return PD_DISPATCH(be, op, copy, be, dst, src);
}

pd_status pd_op_conv3d(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                       const int pad[6]) {
    const pd_op op = PD_OP_CONV3D;
    PD_TRY(pd_chk(be, op, "y", y, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "x", x, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "w", w, PD_CHK_FLOAT | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "y", y, 4));
    PD_TRY(pd_chk_rank(op, "x", x, 4));
    PD_TRY(pd_chk_rank(op, "w", w, 5));
    if (!pad) return pd_error_set(PD_ERR_INVALID, "CONV3D: pad is NULL");
    for (int i = 0; i < 6; i++)
        if (pad[i] < 0 || pad[i] > 64)
            return pd_error_set(PD_ERR_INVALID, "CONV3D: pad[%d] = %d outside 0..64", i, pad[i]);
    if (w->shape[1] != x->shape[0]) return pd_mismatch(op, "x", x, "w", w, "Cin differs");
    if (w->shape[2] < 1 || w->shape[3] < 1 || w->shape[4] < 1) return pd_error_set(PD_ERR_INVALID, "CONV3D: w %s has an empty kernel", PD_DESC(w));
    int64_t to = x->shape[1] + pad[0] + pad[1] - w->shape[2] + 1;
    int64_t ho = x->shape[2] + pad[2] + pad[3] - w->shape[3] + 1;
    int64_t wo = x->shape[3] + pad[4] + pad[5] - w->shape[4] + 1;
    if (to < 1 || ho < 1 || wo < 1) return pd_mismatch(op, "x", x, "w", w, "kernel larger than the padded input");
    if (y->shape[0] != w->shape[0] || y->shape[1] != to || y->shape[2] != ho || y->shape[3] != wo)
        return pd_error_set(PD_ERR_INVALID,
                            "CONV3D: y %s must be (%lld, %lld, %lld, %lld) for x %s, w %s and pad {%d,%d,%d,%d,%d,%d}",
                            PD_DESC(y), (long long)w->shape[0], (long long)to, (long long)ho, (long long)wo, PD_DESC(x),
                            PD_DESC(w), pad[0], pad[1], pad[2], pad[3], pad[4], pad[5]);
    if (b) PD_TRY(pd_chk_vec(be, op, "b", b, w->shape[0], "w", w));
    PD_TRY(pd_chk_alias(op, "y", y, "x", x, false));
    PD_TRY(pd_chk_alias(op, "y", y, "w", w, false));
    PD_TRY(pd_chk_alias(op, "y", y, "b", b, false));
    return PD_DISPATCH(be, op, conv3d, be, y, x, w, b, pad);
}

pd_status pd_op_upsample_nearest2d(pd_backend *be, pd_tensor *y, const pd_tensor *x) {
    const pd_op op = PD_OP_UPSAMPLE_NEAREST2D;
    PD_TRY(pd_chk(be, op, "y", y, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "x", x, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "y", y, 4));
    PD_TRY(pd_chk_rank(op, "x", x, 4));
    if (y->shape[0] != x->shape[0] || y->shape[1] != x->shape[1] || y->shape[2] != 2 * x->shape[2] ||
        y->shape[3] != 2 * x->shape[3])
        return pd_mismatch(op, "x", x, "y", y, "y must be (C, T, 2H, 2W)");
    PD_TRY(pd_chk_alias(op, "y", y, "x", x, false));
    return PD_DISPATCH(be, op, upsample_nearest2d, be, y, x);
}

pd_status pd_op_channel_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *gamma,
                                 const pd_tensor *bias, float eps) {
    const pd_op op = PD_OP_CHANNEL_RMS_NORM;
    PD_TRY(pd_chk_unary(be, op, y, x, 1));
    PD_TRY(pd_chk_eps(op, eps));
    PD_TRY(pd_chk_vec(be, op, "gamma", gamma, x->shape[0], "x", x));
    if (bias) PD_TRY(pd_chk_vec(be, op, "bias", bias, x->shape[0], "x", x));
    PD_TRY(pd_chk_alias(op, "y", y, "gamma", gamma, false));
    PD_TRY(pd_chk_alias(op, "y", y, "bias", bias, false));
    return PD_DISPATCH(be, op, channel_rms_norm, be, y, x, gamma, bias, eps);
}

pd_status pd_op_clamp(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi) {
    PD_TRY(pd_chk_unary(be, PD_OP_CLAMP, y, x, 0));
    if (!(lo <= hi)) return pd_error_set(PD_ERR_INVALID, "CLAMP: lo %g > hi %g", lo, hi);
    return PD_DISPATCH(be, PD_OP_CLAMP, clamp, be, y, x, lo, hi);
}

pd_status pd_op_embedding(pd_backend *be, pd_tensor *out, const pd_tensor *ids, const pd_tensor *table) {
    const pd_op op = PD_OP_EMBEDDING;
    PD_TRY(pd_chk(be, op, "out", out, PD_CHK_F32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "ids", ids, PD_CHK_I32 | PD_CHK_CONTIG));
    PD_TRY(pd_chk(be, op, "table", table, PD_CHK_FLOAT | PD_CHK_CONTIG));
    PD_TRY(pd_chk_rank(op, "out", out, 2));
    PD_TRY(pd_chk_rank(op, "ids", ids, 1));
    PD_TRY(pd_chk_rank(op, "table", table, 2));
    if (out->shape[0] != ids->shape[0]) return pd_mismatch(op, "ids", ids, "out", out, "L differs");
    if (out->shape[1] != table->shape[1]) return pd_mismatch(op, "table", table, "out", out, "D differs");
    /* Ids in host memory are checked here; a device backend checks its own. */
    if (ids->device == PD_DEVICE_CPU) {
        const int32_t *id = ids->data;
        for (int64_t i = 0; i < ids->shape[0]; i++)
            if (id[i] < 0 || id[i] >= table->shape[0])
                return pd_error_set(PD_ERR_INVALID, "EMBEDDING: id %d at position %lld outside the table %s", id[i],
                                    (long long)i, PD_DESC(table));
    }
    PD_TRY(pd_chk_alias(op, "out", out, "ids", ids, false));
    PD_TRY(pd_chk_alias(op, "out", out, "table", table, false));
    return PD_DISPATCH(be, op, embedding, be, out, ids, table);
}

/* ---- fused ops ---- */

pd_status pd_op_layer_norm_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                    const pd_tensor *scale, float eps) {
    const pd_op op = PD_OP_LAYER_NORM_MODULATE;
    PD_TRY(pd_chk_unary(be, op, y, x, 3));
    PD_TRY(pd_chk_rank(op, "x", x, 3));
    PD_TRY(pd_chk_eps(op, eps));
    PD_TRY(pd_chk_mod(be, op, "shift", shift, x));
    PD_TRY(pd_chk_mod(be, op, "scale", scale, x));
    PD_TRY(pd_chk_alias(op, "y", y, "shift", shift, false));
    PD_TRY(pd_chk_alias(op, "y", y, "scale", scale, false));
    return PD_DISPATCH(be, op, layer_norm_modulate, be, y, x, shift, scale, eps);
}

pd_status pd_op_rms_norm_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                              const pd_tensor *freqs, int heads, float eps) {
    const pd_op op = PD_OP_RMS_NORM_ROPE;
    PD_TRY(pd_chk_unary(be, op, y, x, 3));
    PD_TRY(pd_chk_rank(op, "x", x, 3));
    PD_TRY(pd_chk_eps(op, eps));
    const int64_t C = x->shape[2];
    if (heads < 1 || C % heads || (C / heads) % 2)
        return pd_error_set(PD_ERR_INVALID, "RMS_NORM_ROPE: x %s does not split into %d heads of an even size", PD_DESC(x),
                            heads);
    if (w) PD_TRY(pd_chk_vec(be, op, "w", w, C, "x", x));
    PD_TRY(pd_chk_freqs(be, op, freqs, x, C / heads / 2, "freqs must be (N, D/2, 2) with D = C / heads"));
    PD_TRY(pd_chk_alias(op, "y", y, "w", w, false));
    PD_TRY(pd_chk_alias(op, "y", y, "freqs", freqs, false));
    return PD_DISPATCH(be, op, rms_norm_rope, be, y, x, w, freqs, heads, eps);
}
