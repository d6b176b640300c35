/* 3D rotary embeddings on CUDA: the (cos, sin) table in double and the pairwise rotation, with the
 * formulas of engine/cpu/cpu_rope.c. */
#include <math.h>

#include "engine/cuda/cuda_kernels.cuh"

/* One thread per (token, pair) entry (grid-stride): the pair's axis and frequency follow from its
 * index, so no table has to be built on the host and uploaded. Angles, powers, cos and sin are in
 * double as on the CPU; the table is built once per video shape, so the cost does not matter.
 * Pair p < n_t/2 rotates by t, the next n_h/2 by h, the last n_w/2 by w (n_h = n_w = 2*(D/6),
 * n_t = D - 2*n_h); per axis w_j = theta^(-2j / n_axis). */
__global__ void pd_freqs_kernel(float *f, int64_t N, int64_t D2, int64_t gh, int64_t gw, int64_t off, double theta) {
    const int64_t D = 2 * D2, nh = 2 * (D / 6), nt = D - 2 * nh;
    PD_CUDA_GRID_LOOP(k, N * D2) {
        int64_t n = k / D2, p = k % D2, i = off + n;
        int64_t pos, j, n_axis;
        if (p < nt / 2) {
            pos = i / (gh * gw), j = p, n_axis = nt;
        } else if (p < nt / 2 + nh / 2) {
            pos = (i / gw) % gh, j = p - nt / 2, n_axis = nh;
        } else {
            pos = i % gw, j = p - nt / 2 - nh / 2, n_axis = nh;
        }
        double a = (double)pos * pow(theta, -2.0 * (double)j / (double)n_axis);
        f[2 * k] = (float)cos(a);
        f[2 * k + 1] = (float)sin(a);
    }
}

pd_status pd_cuda_rope3d_freqs(pd_backend *be, pd_tensor *freqs, int64_t gt, int64_t gh, int64_t gw, int64_t off,
                               double theta) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t N = freqs->shape[0], D2 = freqs->shape[1];
    if (N * D2 == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    pd_freqs_kernel<<<pd_cuda_blocks(N * D2, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
        (float *)freqs->data, N, D2, gh, gw, off, theta);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

/* One thread per rotated pair (grid-stride) over x (B, N, H, D/2 pairs): each thread loads its pair
 * as one float2 and its (cos, sin) as one float2, so warps read contiguous memory; the freqs rows
 * are shared by the B*H heads of a token and stay in cache. y may be x: a thread reads its pair
 * before writing it. */
__global__ void pd_rope_kernel(float2 *y, const float2 *x, const float2 *f, int64_t N, int64_t H, int64_t D2, int64_t n) {
    PD_CUDA_GRID_LOOP(q, n) {
        int64_t p = q % D2, tok = q / D2 / H; /* tok = b * N + token */
        float2 cs = f[(tok % N) * D2 + p], v = x[q];
        y[q] = make_float2(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x);
    }
}

pd_status pd_cuda_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *freqs) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t N = x->shape[1], H = x->shape[2], D2 = x->shape[3] / 2, n = pd_tensor_numel(x) / 2;
    if (n == 0) return PD_OK;
    /* float2 accesses: every contiguous f32 tensor from the allocators is 8-byte aligned. */
    if (!pd_cuda_aligned(x->data, 8) || !pd_cuda_aligned(y->data, 8) || !pd_cuda_aligned(freqs->data, 8))
        return pd_error_set(PD_ERR_UNSUPPORTED, "ROPE on %s: x, y and freqs must be 8-byte aligned", be->name);
    PD_TRY(pd_cuda_enter(be));
    pd_rope_kernel<<<pd_cuda_blocks(n, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
        (float2 *)y->data, (const float2 *)x->data, (const float2 *)freqs->data, N, H, D2, n);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}
