/* Fused RMS_NORM_ROPE on CUDA: RMS norm over the whole row, weight, then ROPE per head, in one kernel
 * that reads a row and writes it once. Same formulas as the CPU reference (engine/cpu/cpu_norm.c,
 * cpu_rope.c) and as cuda_norm.cu / cuda_rope.cu. (LAYER_NORM_MODULATE is pd_norm_kernel's
 * shift/scale case in cuda_norm.cu.) */
#include <math.h>

#include "engine/cuda/cuda_kernels.cuh"

enum { PD_FUSED_THREADS = 256, PD_FUSED_WARPS = PD_FUSED_THREADS / 32 };

/* One warp per row of C = H * D (grid-stride over rows; the row index is the same for every lane of
 * a warp, so the shuffles are convergent), lanes across C, as the norms of cuda_norm.cu: the sum of
 * squares over the whole row, then each lane takes pairs (2p, 2p + 1), scales them by 1 / rms and w,
 * and rotates them by the (cos, sin) of pair p % (D/2) of the row's token (r % N). y may be x: a lane
 * reads a pair before writing it, and the reduction has read the whole row before any write. */
__global__ void pd_rms_rope_kernel(float *y, const float *x, const void *w, pd_dtype wdt, const float *f, int64_t rows,
                                   int64_t N, int64_t C, int64_t D2, float eps) {
    const int lane = threadIdx.x & 31;
    const float inv_c = 1.0f / (float)C;
    PD_CUDA_WARP_ROW_LOOP(r, rows) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float q = 0.0f;
        for (int64_t c = lane; c < C; c += 32) q += xr[c] * xr[c];
        const float inv = 1.0f / sqrtf(pd_cuda_warp_sum(q) * inv_c + eps);
        const float *fr = f + (r % N) * D2 * 2;
        for (int64_t p = lane; p < C / 2; p += 32) {
            float a = xr[2 * p] * inv, bb = xr[2 * p + 1] * inv;
            if (w) {
                a *= pd_cuda_load(w, wdt, 2 * p);
                bb *= pd_cuda_load(w, wdt, 2 * p + 1);
            }
            const int64_t j = p % D2;
            const float cs = fr[2 * j], sn = fr[2 * j + 1];
            yr[2 * p] = a * cs - bb * sn;
            yr[2 * p + 1] = a * sn + bb * cs;
        }
    }
}

pd_status pd_cuda_rms_norm_rope(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                                const pd_tensor *freqs, int heads, float eps) {
    pd_cuda *c = pd_cuda_of(be);
    const int64_t N = x->shape[1], C = x->shape[2], rows = x->shape[0] * N, D2 = C / heads / 2;
    if (rows == 0 || C == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    pd_rms_rope_kernel<<<pd_cuda_blocks(rows, PD_FUSED_WARPS), PD_FUSED_THREADS, 0, c->stream>>>(
        (float *)y->data, (const float *)x->data, w ? w->data : nullptr, w ? w->dtype : PD_DTYPE_F32,
        (const float *)freqs->data, rows, N, C, D2, eps);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}
