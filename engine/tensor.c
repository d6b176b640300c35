#include "engine/tensor.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} pd_dtype_info[PD_DTYPE_COUNT] = {
    [PD_DTYPE_F32] = {"F32", 4}, [PD_DTYPE_BF16] = {"BF16", 2}, [PD_DTYPE_F16] = {"F16", 2},
    [PD_DTYPE_I32] = {"I32", 4}, [PD_DTYPE_I64] = {"I64", 8},
};

size_t pd_dtype_size(pd_dtype dt) {
    PD_ASSERT(dt >= 0 && dt < PD_DTYPE_COUNT);
    return pd_dtype_info[dt].size;
}

const char *pd_dtype_name(pd_dtype dt) {
    PD_ASSERT(dt >= 0 && dt < PD_DTYPE_COUNT);
    return pd_dtype_info[dt].name;
}

pd_status pd_dtype_parse(const char *s, pd_dtype *out) {
    for (int i = 0; i < PD_DTYPE_COUNT; i++)
        if (!strcmp(s, pd_dtype_info[i].name)) {
            *out = (pd_dtype)i;
            return PD_OK;
        }
    return pd_error_set(PD_ERR_UNSUPPORTED, "unsupported dtype \"%s\"", s);
}

int64_t pd_tensor_numel(const pd_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t pd_tensor_nbytes(const pd_tensor *t) {
    return (size_t)pd_tensor_numel(t) * pd_dtype_size(t->dtype);
}

bool pd_tensor_is_contiguous(const pd_tensor *t) {
    int64_t s = (int64_t)pd_dtype_size(t->dtype);
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool pd_tensor_same_shape(const pd_tensor *a, const pd_tensor *b) {
    if (a->dtype != b->dtype || a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *pd_tensor_describe(const pd_tensor *t, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "(");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (o < n) snprintf(buf + o, n - o, ") %s", pd_dtype_name(t->dtype));
    return buf;
}

static void pd_set_contiguous_strides(pd_tensor *t) {
    int64_t s = (int64_t)pd_dtype_size(t->dtype);
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

pd_tensor pd_tensor_view(void *data, pd_dtype dt, int ndim, const int64_t *shape) {
    PD_ASSERT(ndim >= 0 && ndim <= PD_MAX_DIMS);
    pd_tensor t = {.dtype = dt, .ndim = ndim, .data = data, .device = PD_DEVICE_CPU};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    pd_set_contiguous_strides(&t);
    return t;
}

pd_status pd_tensor_alloc(pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape) {
    memset(out, 0, sizeof *out);
    if (ndim < 0 || ndim > PD_MAX_DIMS)
        return pd_error_set(PD_ERR_INVALID, "tensor rank %d outside 0..%d", ndim, PD_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return pd_error_set(PD_ERR_INVALID, "negative tensor dim %lld", (long long)shape[i]);
    pd_tensor t = pd_tensor_view(NULL, dt, ndim, shape);
    size_t bytes = pd_tensor_nbytes(&t);
    size_t padded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, padded ? padded : 64);
    if (!p) return pd_error_set(PD_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
    memset(p, 0, padded ? padded : 64);
    t.data = p;
    t.owns_data = true;
    *out = t;
    return PD_OK;
}

void pd_tensor_free(pd_tensor *t) {
    if (!t) return;
    if (t->owns_data) free(t->data);
    memset(t, 0, sizeof *t);
}

pd_status pd_tensor_reshape(pd_tensor *t, int ndim, const int64_t *shape) {
    if (!pd_tensor_is_contiguous(t)) return pd_error_set(PD_ERR_INVALID, "reshape of a strided tensor");
    if (ndim < 0 || ndim > PD_MAX_DIMS) return pd_error_set(PD_ERR_INVALID, "tensor rank %d", ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (n != pd_tensor_numel(t))
        return pd_error_set(PD_ERR_INVALID, "reshape changes the element count (%lld -> %lld)",
                            (long long)pd_tensor_numel(t), (long long)n);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    pd_set_contiguous_strides(t);
    return PD_OK;
}

pd_tensor pd_tensor_slice(const pd_tensor *t, int dim, int64_t start, int64_t len) {
    PD_ASSERT(dim >= 0 && dim < t->ndim && start >= 0 && len >= 0 && start + len <= t->shape[dim]);
    pd_tensor v = *t;
    v.owns_data = false;
    v.data = (char *)t->data + start * t->stride[dim];
    v.shape[dim] = len;
    return v;
}

float pd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ffu;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    union { uint32_t u; float f; } v = {.u = u};
    return v.f;
}

uint16_t pd_f32_to_f16(float f) {
    union { uint32_t u; float f; } v = {.f = f};
    uint32_t u = v.u, sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (absu > 0x7f800000u ? 0x200u : 0));
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (absu < 0x38800000u) {                                    /* below the smallest normal */
        if (absu < 0x33000000u) return (uint16_t)sign;           /* < 2^-25 rounds to 0 */
        uint32_t e = absu >> 23, m = (absu & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absu - 0x38000000u; /* rebias exponent 127 -> 15 */
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | r);
}

void pd_convert_to_f32(float *dst, const void *src, pd_dtype src_dt, int64_t n) {
    switch (src_dt) {
    case PD_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); return;
    case PD_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = pd_bf16_to_f32(((const uint16_t *)src)[i]);
        return;
    case PD_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = pd_f16_to_f32(((const uint16_t *)src)[i]);
        return;
    default: PD_ASSERT(!"pd_convert_to_f32: not a float dtype");
    }
}

void pd_convert_from_f32(void *dst, pd_dtype dst_dt, const float *src, int64_t n) {
    switch (dst_dt) {
    case PD_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); return;
    case PD_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = pd_f32_to_bf16(src[i]);
        return;
    case PD_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = pd_f32_to_f16(src[i]);
        return;
    default: PD_ASSERT(!"pd_convert_from_f32: not a float dtype");
    }
}

static bool pd_is_float(pd_dtype dt) {
    return dt == PD_DTYPE_F32 || dt == PD_DTYPE_BF16 || dt == PD_DTYPE_F16;
}

pd_status pd_tensor_copy(pd_tensor *dst, const pd_tensor *src) {
    if (dst->ndim != src->ndim) return pd_error_set(PD_ERR_INVALID, "copy between ranks %d and %d", src->ndim, dst->ndim);
    for (int i = 0; i < dst->ndim; i++)
        if (dst->shape[i] != src->shape[i]) return pd_error_set(PD_ERR_INVALID, "copy between different shapes");
    if (dst->dtype != src->dtype && !(pd_is_float(dst->dtype) && pd_is_float(src->dtype)))
        return pd_error_set(PD_ERR_INVALID, "copy between %s and %s", pd_dtype_name(src->dtype), pd_dtype_name(dst->dtype));
    int64_t n = pd_tensor_numel(src);
    if (n == 0) return PD_OK;
    /* Walk the outer dims with an index vector; the innermost dim is handled as a strided row. */
    int64_t idx[PD_MAX_DIMS] = {0};
    int nd = src->ndim;
    int64_t inner = nd ? src->shape[nd - 1] : 1;
    size_t es = pd_dtype_size(src->dtype), ed = pd_dtype_size(dst->dtype);
    for (int64_t done = 0; done < n; done += inner) {
        const char *s = src->data;
        char *d = dst->data;
        for (int i = 0; i < nd - 1; i++) {
            s += idx[i] * src->stride[i];
            d += idx[i] * dst->stride[i];
        }
        int64_t ss = nd ? src->stride[nd - 1] : (int64_t)es, ds = nd ? dst->stride[nd - 1] : (int64_t)ed;
        bool rows = ss == (int64_t)es && ds == (int64_t)ed; /* both innermost dims contiguous */
        if (rows && src->dtype == dst->dtype) {
            memcpy(d, s, (size_t)inner * es);
        } else if (rows && dst->dtype == PD_DTYPE_F32) {
            pd_convert_to_f32((float *)d, s, src->dtype, inner);
        } else if (rows && src->dtype == PD_DTYPE_F32) {
            pd_convert_from_f32(d, dst->dtype, (const float *)s, inner);
        } else {
            for (int64_t j = 0; j < inner; j++) {
                const char *sp = s + j * ss;
                char *dp = d + j * ds;
                if (src->dtype == dst->dtype) {
                    memcpy(dp, sp, es);
                } else {
                    float f;
                    pd_convert_to_f32(&f, sp, src->dtype, 1);
                    pd_convert_from_f32(dp, dst->dtype, &f, 1);
                }
            }
        }
        for (int i = nd - 2; i >= 0; i--) {
            if (++idx[i] < src->shape[i]) break;
            idx[i] = 0;
        }
    }
    return PD_OK;
}
