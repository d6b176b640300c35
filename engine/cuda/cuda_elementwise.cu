/* Elementwise ops and data movement on CUDA: GELU (tanh), SiLU, clamp, modulate, gated residual,
 * broadcasting add / mul, the timestep embedding, strided copy, nearest 2x upsampling and the
 * embedding lookup. Same formulas as engine/cpu/cpu_elementwise.c and cpu_layout.c. */
#include <math.h>

#include "engine/cuda/cuda_kernels.cuh"

/* ---- unary: GELU (tanh), SiLU, clamp ---- */

enum { PD_U_GELU, PD_U_SILU, PD_U_CLAMP };

template <int K> __device__ __forceinline__ float pd_unary_f(float v, float lo, float hi) {
    if (K == PD_U_GELU) /* 0.5 v (1 + tanh u) = v / (1 + e^(-2u)): no cancellation, right limits at +-inf */
        return v / (1.0f + expf(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
    if (K == PD_U_SILU) return v / (1.0f + expf(-v));
    return v < lo ? lo : v > hi ? hi : v; /* NaN stays NaN, as on the CPU */
}

/* Grid-stride over float4 groups (bandwidth-bound: 16-byte accesses), tail of n % 4 on the first
 * threads; VEC = false when a pointer is not 16-byte aligned. y may be x: each element is read
 * before it is written, by the same thread. */
template <int K, bool VEC>
__global__ void pd_unary_kernel(float *y, const float *x, int64_t n, float lo, float hi) {
    int64_t done = 0;
    if (VEC) {
        int64_t n4 = n / 4;
        PD_CUDA_GRID_LOOP(i, n4) {
            float4 v = reinterpret_cast<const float4 *>(x)[i];
            v.x = pd_unary_f<K>(v.x, lo, hi);
            v.y = pd_unary_f<K>(v.y, lo, hi);
            v.z = pd_unary_f<K>(v.z, lo, hi);
            v.w = pd_unary_f<K>(v.w, lo, hi);
            reinterpret_cast<float4 *>(y)[i] = v;
        }
        done = n4 * 4;
    }
    PD_CUDA_GRID_LOOP(j, n - done) y[done + j] = pd_unary_f<K>(x[done + j], lo, hi);
}

template <int K> static pd_status pd_unary(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t n = pd_tensor_numel(x);
    if (n == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    if (pd_cuda_aligned(x->data, 16) && pd_cuda_aligned(y->data, 16))
        pd_unary_kernel<K, true><<<pd_cuda_blocks(n / 4 > 0 ? n / 4 : 1, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
            (float *)y->data, (const float *)x->data, n, lo, hi);
    else
        pd_unary_kernel<K, false><<<pd_cuda_blocks(n, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
            (float *)y->data, (const float *)x->data, n, lo, hi);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

pd_status pd_cuda_gelu_tanh(pd_backend *be, pd_tensor *y, const pd_tensor *x) { return pd_unary<PD_U_GELU>(be, y, x, 0, 0); }
pd_status pd_cuda_silu(pd_backend *be, pd_tensor *y, const pd_tensor *x) { return pd_unary<PD_U_SILU>(be, y, x, 0, 0); }
pd_status pd_cuda_clamp(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi) {
    return pd_unary<PD_U_CLAMP>(be, y, x, lo, hi);
}

/* ---- modulate and gated residual: x (B, N, C), per-batch rows of C elements ---- */

enum { PD_MOD_THREADS = 128 };

/* One block per (b, n) row in a grid-stride loop over rows, threads across C (float4 when C % 4 == 0
 * and every pointer and batch stride allows): the batch index b = row / N is one division per row,
 * not per element, and the C-vectors stay in L1/L2 across the N rows of a batch.
 * MODULATE: out = in * (1 + m1) + m0 (m0 = shift, m1 = scale); out may be in.
 * GATED:    out += m0 * in, or out += in when m0 is NULL (out is the residual x, in is y). */
template <bool GATED, bool VEC>
__global__ void pd_mod_kernel(float *out, const float *in, const char *m0, const char *m1, int64_t s0, int64_t s1,
                              int64_t N, int64_t C, int64_t rows) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int64_t b = r / N;
        const float *xi = in + r * C;
        float *yo = out + r * C;
        const float *a = m0 ? (const float *)(m0 + b * s0) : nullptr;
        const float *s = GATED ? nullptr : (const float *)(m1 + b * s1);
        if (VEC) {
            for (int64_t c4 = threadIdx.x; c4 < C / 4; c4 += blockDim.x) {
                float4 v = reinterpret_cast<const float4 *>(xi)[c4];
                float4 o;
                if (GATED) {
                    o = reinterpret_cast<float4 *>(yo)[c4];
                    if (a) {
                        float4 g = reinterpret_cast<const float4 *>(a)[c4];
                        o.x += g.x * v.x, o.y += g.y * v.y, o.z += g.z * v.z, o.w += g.w * v.w;
                    } else {
                        o.x += v.x, o.y += v.y, o.z += v.z, o.w += v.w;
                    }
                } else {
                    float4 sh = reinterpret_cast<const float4 *>(a)[c4], sc = reinterpret_cast<const float4 *>(s)[c4];
                    o.x = v.x * (1.0f + sc.x) + sh.x;
                    o.y = v.y * (1.0f + sc.y) + sh.y;
                    o.z = v.z * (1.0f + sc.z) + sh.z;
                    o.w = v.w * (1.0f + sc.w) + sh.w;
                }
                reinterpret_cast<float4 *>(yo)[c4] = o;
            }
        } else {
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
                if (GATED) yo[c] += a ? a[c] * xi[c] : xi[c];
                else yo[c] = xi[c] * (1.0f + s[c]) + a[c];
            }
        }
    }
}

template <bool GATED>
static pd_status pd_mod_launch(pd_backend *be, float *out, const float *in, const pd_tensor *m0, const pd_tensor *m1,
                               const pd_tensor *x) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t B = x->shape[0], N = x->shape[1], C = x->shape[2], rows = B * N;
    if (rows == 0 || C == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    const char *p0 = m0 ? (const char *)m0->data : nullptr, *p1 = m1 ? (const char *)m1->data : nullptr;
    /* A batch stride only matters when there is more than one batch. */
    int64_t s0 = m0 && B > 1 ? m0->stride[0] : 0, s1 = m1 && B > 1 ? m1->stride[0] : 0;
    bool vec = C % 4 == 0 && pd_cuda_aligned(out, 16) && pd_cuda_aligned(in, 16) && s0 % 16 == 0 && s1 % 16 == 0 &&
               (!p0 || pd_cuda_aligned(p0, 16)) && (!p1 || pd_cuda_aligned(p1, 16));
    unsigned blocks = pd_cuda_blocks(rows, 1);
    if (vec)
        pd_mod_kernel<GATED, true><<<blocks, PD_MOD_THREADS, 0, c->stream>>>(out, in, p0, p1, s0, s1, N, C, rows);
    else
        pd_mod_kernel<GATED, false><<<blocks, PD_MOD_THREADS, 0, c->stream>>>(out, in, p0, p1, s0, s1, N, C, rows);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

pd_status pd_cuda_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift, const pd_tensor *scale) {
    return pd_mod_launch<false>(be, (float *)y->data, (const float *)x->data, shift, scale, x);
}

pd_status pd_cuda_gated_add(pd_backend *be, pd_tensor *x, const pd_tensor *gate, const pd_tensor *y) {
    /* x += gate * y: the kernel reads y and accumulates into x. */
    return pd_mod_launch<true>(be, (float *)x->data, (const float *)y->data, gate, nullptr, x);
}

/* ---- broadcasting add / mul ---- */

/* a's dims after merging, and b's element stride along each (0 = broadcast). */
typedef struct {
    int nd;
    int64_t shape[PD_MAX_DIMS];
    int64_t bstride[PD_MAX_DIMS];
} pd_bcast_geom;

/* One thread per element of a in a grid-stride loop; b's offset comes from the element's index,
 * decomposed over the merged dims (most cases merge to one or two dims, so at most one division).
 * y may be a: each element is read before it is written, by the same thread. */
template <bool MUL>
__global__ void pd_binary_kernel(float *y, const float *a, const void *b, pd_dtype bdt, pd_bcast_geom g, int64_t n) {
    PD_CUDA_GRID_LOOP(i, n) {
        int64_t rem = i, off = 0;
        for (int d = g.nd - 1; d > 0; d--) {
            off += (rem % g.shape[d]) * g.bstride[d];
            rem /= g.shape[d];
        }
        off += rem * g.bstride[0];
        float bv = pd_cuda_load(b, bdt, off);
        y[i] = MUL ? a[i] * bv : a[i] + bv;
    }
}

template <bool MUL> static pd_status pd_binary(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t n = pd_tensor_numel(a);
    if (n == 0) return PD_OK;
    /* b's element strides along a's dims (b right-aligned; a dim of 1 in b broadcasts). */
    int nd = a->ndim;
    int64_t shape[PD_MAX_DIMS], bst[PD_MAX_DIMS], s = 1;
    for (int d = nd - 1, bd = b->ndim - 1; d >= 0; d--, bd--) {
        shape[d] = a->shape[d];
        if (bd < 0 || b->shape[bd] == 1) {
            bst[d] = 0;
        } else {
            bst[d] = s;
            s *= b->shape[bd];
        }
    }
    /* Merge: drop dims of 1, and fold dim d into the next kept one when b walks them as one. */
    pd_bcast_geom g = {};
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 1) continue;
        if (g.nd > 0 && g.bstride[g.nd - 1] == bst[d] * shape[d]) {
            g.shape[g.nd - 1] *= shape[d];
            g.bstride[g.nd - 1] = bst[d];
        } else {
            g.shape[g.nd] = shape[d];
            g.bstride[g.nd] = bst[d];
            g.nd++;
        }
    }
    if (g.nd == 0) { /* every dim is 1: a single element */
        g.nd = 1;
        g.shape[0] = 1;
        g.bstride[0] = 0;
    }
    PD_TRY(pd_cuda_enter(be));
    pd_binary_kernel<MUL><<<pd_cuda_blocks(n, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
        (float *)y->data, (const float *)a->data, b->data, b->dtype, g, n);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

pd_status pd_cuda_add(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b) { return pd_binary<false>(be, y, a, b); }
pd_status pd_cuda_mul(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b) { return pd_binary<true>(be, y, a, b); }

/* ---- timestep embedding ---- */

/* One thread per (b, i < F/2) pair writing cos and sin; in double as on the CPU (tiny: B x F). */
__global__ void pd_temb_kernel(float *out, const float *t, int64_t B, int64_t half) {
    PD_CUDA_GRID_LOOP(k, B * half) {
        int64_t b = k / half, i = k % half;
        double a = (double)t[b] * pow(10000.0, -(double)i / (double)half);
        out[b * 2 * half + i] = (float)cos(a);
        out[b * 2 * half + half + i] = (float)sin(a);
    }
}

pd_status pd_cuda_timestep_embed(pd_backend *be, pd_tensor *out, const pd_tensor *t) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t B = out->shape[0], half = out->shape[1] / 2;
    if (B * half == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    pd_temb_kernel<<<pd_cuda_blocks(B * half, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
        (float *)out->data, (const float *)t->data, B, half);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

/* ---- copy: any strides, any dtypes of the same shape (floats convert) ---- */

typedef struct {
    int nd;
    int64_t shape[PD_MAX_DIMS];
    int64_t sstride[PD_MAX_DIMS], dstride[PD_MAX_DIMS]; /* bytes */
} pd_copy_geom;

/* Byte offsets of element i (row-major over the merged dims) in src and dst. */
__device__ __forceinline__ void pd_copy_offsets(const pd_copy_geom &g, int64_t i, int64_t *so, int64_t *dof) {
    int64_t rem = i, s = 0, d = 0;
    for (int k = g.nd - 1; k > 0; k--) {
        int64_t idx = rem % g.shape[k];
        rem /= g.shape[k];
        s += idx * g.sstride[k];
        d += idx * g.dstride[k];
    }
    *so = s + rem * g.sstride[0];
    *dof = d + rem * g.dstride[0];
}

/* One thread per element (grid-stride): strided gathers do not vectorise in general, and merged
 * dims keep the index arithmetic to a division or two. T is an unsigned type of the element size
 * when the dtypes match (a bit copy, any dtype); CONVERT widens / narrows through f32. */
template <typename T>
__global__ void pd_copy_kernel(char *dst, const char *src, pd_copy_geom g, int64_t n) {
    PD_CUDA_GRID_LOOP(i, n) {
        int64_t so, dof;
        pd_copy_offsets(g, i, &so, &dof);
        *(T *)(dst + dof) = *(const T *)(src + so);
    }
}

__global__ void pd_copy_convert_kernel(char *dst, pd_dtype ddt, const char *src, pd_dtype sdt, pd_copy_geom g, int64_t n) {
    PD_CUDA_GRID_LOOP(i, n) {
        int64_t so, dof;
        pd_copy_offsets(g, i, &so, &dof);
        pd_cuda_store(dst + dof, ddt, 0, pd_cuda_load(src + so, sdt, 0));
    }
}

pd_status pd_cuda_copy(pd_backend *be, pd_tensor *dst, const pd_tensor *src) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t n = pd_tensor_numel(src);
    if (n == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    if (pd_tensor_is_contiguous(src) && pd_tensor_is_contiguous(dst))
        return pd_cuda_convert(be, dst->data, dst->dtype, src->data, src->dtype, n);
    size_t es = pd_dtype_size(src->dtype), ed = pd_dtype_size(dst->dtype);
    /* Elements must be aligned to their size for the typed accesses below (true of every tensor
     * made by the allocators, views and slices). */
    bool ok = pd_cuda_aligned(src->data, es) && pd_cuda_aligned(dst->data, ed);
    for (int d = 0; d < src->ndim; d++)
        ok = ok && src->stride[d] % (int64_t)es == 0 && dst->stride[d] % (int64_t)ed == 0;
    if (!ok)
        return pd_error_set(PD_ERR_UNSUPPORTED, "COPY on %s: a tensor's data or strides are not aligned to its element size",
                            be->name);
    /* Merge: drop dims of 1, fold a dim into the previous kept one when both tensors walk them as one. */
    pd_copy_geom g = {};
    for (int d = 0; d < src->ndim; d++) {
        int64_t len = src->shape[d];
        if (len == 1) continue;
        int k = g.nd - 1;
        if (k >= 0 && g.sstride[k] == src->stride[d] * len && g.dstride[k] == dst->stride[d] * len) {
            g.shape[k] *= len;
            g.sstride[k] = src->stride[d];
            g.dstride[k] = dst->stride[d];
        } else {
            g.shape[g.nd] = len;
            g.sstride[g.nd] = src->stride[d];
            g.dstride[g.nd] = dst->stride[d];
            g.nd++;
        }
    }
    if (g.nd == 0) {
        g.nd = 1;
        g.shape[0] = 1;
    }
    unsigned blocks = pd_cuda_blocks(n, PD_CUDA_THREADS);
    char *d = (char *)dst->data;
    const char *s = (const char *)src->data;
    if (src->dtype != dst->dtype)
        pd_copy_convert_kernel<<<blocks, PD_CUDA_THREADS, 0, c->stream>>>(d, dst->dtype, s, src->dtype, g, n);
    else if (es == 2)
        pd_copy_kernel<uint16_t><<<blocks, PD_CUDA_THREADS, 0, c->stream>>>(d, s, g, n);
    else if (es == 4)
        pd_copy_kernel<uint32_t><<<blocks, PD_CUDA_THREADS, 0, c->stream>>>(d, s, g, n);
    else if (es == 8)
        pd_copy_kernel<uint64_t><<<blocks, PD_CUDA_THREADS, 0, c->stream>>>(d, s, g, n);
    else
        return pd_error_set(PD_ERR_UNSUPPORTED, "COPY on %s: element size %zu", be->name, es);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

/* ---- nearest 2x upsampling: y (C, T, 2H, 2W) from x (C, T, H, W) ---- */

/* One thread per input element (grid-stride), writing its 2x2 block as two float2 stores: reads and
 * writes are both coalesced. VEC = false when y is not 8-byte aligned. */
template <bool VEC>
__global__ void pd_upsample_kernel(float *y, const float *x, int64_t H, int64_t W, int64_t n) {
    PD_CUDA_GRID_LOOP(i, n) {
        int64_t w = i % W, rest = i / W, h = rest % H, plane = rest / H;
        float v = x[i];
        float *o = y + plane * 4 * H * W + 2 * h * 2 * W + 2 * w;
        if (VEC) {
            reinterpret_cast<float2 *>(o)[0] = make_float2(v, v);
            reinterpret_cast<float2 *>(o + 2 * W)[0] = make_float2(v, v);
        } else {
            o[0] = o[1] = o[2 * W] = o[2 * W + 1] = v;
        }
    }
}

pd_status pd_cuda_upsample_nearest2d(pd_backend *be, pd_tensor *y, const pd_tensor *x) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t n = pd_tensor_numel(x), H = x->shape[2], W = x->shape[3];
    if (n == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    unsigned blocks = pd_cuda_blocks(n, PD_CUDA_THREADS);
    if (pd_cuda_aligned(y->data, 8))
        pd_upsample_kernel<true><<<blocks, PD_CUDA_THREADS, 0, c->stream>>>((float *)y->data, (const float *)x->data, H, W, n);
    else
        pd_upsample_kernel<false><<<blocks, PD_CUDA_THREADS, 0, c->stream>>>((float *)y->data, (const float *)x->data, H, W, n);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

/* ---- embedding lookup ---- */

/* One block per output row (grid-stride over rows), threads across D: the row's id is read once and
 * the table row is read coalesced. The ids live on the device, so backend.c cannot check them: an
 * id outside [0, V) is clamped into the table (no out-of-bounds read) and raises *bad, which the
 * host reads after the kernel and turns into PD_ERR_INVALID. */
__global__ void pd_embedding_kernel(float *out, const int32_t *ids, const void *table, pd_dtype tdt, int64_t L,
                                    int64_t V, int64_t D, int *bad) {
    for (int64_t l = blockIdx.x; l < L; l += gridDim.x) {
        int64_t id = ids[l];
        if (id < 0 || id >= V) {
            if (threadIdx.x == 0) *bad = 1;
            id = id < 0 ? 0 : V - 1;
        }
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[l * D + d] = pd_cuda_load(table, tdt, id * D + d);
    }
}

pd_status pd_cuda_embedding(pd_backend *be, pd_tensor *out, const pd_tensor *ids, const pd_tensor *table) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t L = ids->shape[0], V = table->shape[0], D = table->shape[1];
    if (L == 0) return PD_OK;
    if (V == 0)
        return pd_error_set(PD_ERR_INVALID, "EMBEDDING: the table has no rows, so no id of the %lld can be looked up", (long long)L);
    PD_TRY(pd_cuda_enter(be));
    /* The flag borrows the start of the library workspace: ops on the one stream never overlap. */
    void *flag = nullptr;
    PD_TRY(pd_cuda_scratch(be, PD_CUDA_SCRATCH_WORKSPACE, sizeof(int), &flag));
    PD_CUDA_CHECK(c->device, cudaMemsetAsync(flag, 0, sizeof(int), c->stream));
    pd_embedding_kernel<<<pd_cuda_blocks(L, 1), PD_CUDA_THREADS, 0, c->stream>>>(
        (float *)out->data, (const int32_t *)ids->data, table->data, table->dtype, L, V, D, (int *)flag);
    PD_CUDA_LAUNCH_CHECK(c->device);
    int bad = 0;
    PD_CUDA_CHECK(c->device, cudaMemcpyAsync(&bad, flag, sizeof bad, cudaMemcpyDeviceToHost, c->stream));
    PD_CUDA_CHECK(c->device, cudaStreamSynchronize(c->stream));
    if (bad)
        return pd_error_set(PD_ERR_INVALID, "EMBEDDING: an id in ids (%lld) lies outside the table (%lld, %lld) (checked on %s)",
                            (long long)L, (long long)V, (long long)D, be->name);
    return PD_OK;
}
