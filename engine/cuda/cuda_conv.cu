/* The zero-padded input copy of CONV3D for asymmetric padding (cuDNN pads symmetrically only). */
#include "engine/cuda/cuda_conv.h"
#include "engine/cuda/cuda_kernels.cuh"

/* Parallelisation: one thread per destination element (grid-stride, int64 indices), so writes are
 * fully coalesced and each source element is read once, coalesced along W; the copy is bandwidth
 * bound and needs nothing smarter. */
static __global__ void pd_conv_pad_kernel(float *dst, const float *src, int64_t T, int64_t H, int64_t W, int64_t Tp,
                                   int64_t Hp, int64_t Wp, int64_t ft, int64_t fh, int64_t fw, int64_t n) {
    PD_CUDA_GRID_LOOP(i, n) {
        int64_t wp = i % Wp, r = i / Wp, hp = r % Hp;
        r /= Hp;
        int64_t tp = r % Tp, c = r / Tp;
        int64_t t = tp - ft, h = hp - fh, w = wp - fw;
        bool in = t >= 0 && t < T && h >= 0 && h < H && w >= 0 && w < W;
        dst[i] = in ? src[((c * T + t) * H + h) * W + w] : 0.0f;
    }
}

extern "C" pd_status pd_cuda_conv_pad(pd_backend *be, float *dst, const float *src, const int64_t src_dims[4],
                                      const int64_t front[3], const int64_t back[3]) {
    pd_cuda *c = pd_cuda_of(be);
    const int64_t C = src_dims[0], T = src_dims[1], H = src_dims[2], W = src_dims[3];
    const int64_t Tp = T + front[0] + back[0], Hp = H + front[1] + back[1], Wp = W + front[2] + back[2];
    const int64_t n = C * Tp * Hp * Wp;
    if (n == 0) return PD_OK;
    pd_conv_pad_kernel<<<pd_cuda_blocks(n, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
        dst, src, T, H, W, Tp, Hp, Wp, front[0], front[1], front[2], n);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}
