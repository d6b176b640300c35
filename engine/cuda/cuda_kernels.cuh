/* Private to the CUDA backend's .cu files: element loads and stores by dtype, the launch-size helper
 * and the grid-stride loop every elementwise kernel uses. Element indices are int64 throughout: the
 * VAE's largest activations hold more than 2^31 elements. */
#ifndef PD_CUDA_KERNELS_CUH
#define PD_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "engine/cuda/cuda_backend.h"

/* Threads per block of the elementwise kernels, and the most blocks one launch uses (grid-stride
 * loops cover the rest; gridDim.x allows 2^31 - 1, this keeps launches cheap to schedule). */
#define PD_CUDA_THREADS 256
#define PD_CUDA_MAX_BLOCKS ((int64_t)1 << 20)

/* Blocks for n work items at per_block items per block, clamped to [1, PD_CUDA_MAX_BLOCKS]. */
static inline unsigned pd_cuda_blocks(int64_t n, int64_t per_block) {
    int64_t b = n > 0 ? (n + per_block - 1) / per_block : 1;
    return (unsigned)(b > PD_CUDA_MAX_BLOCKS ? PD_CUDA_MAX_BLOCKS : b);
}

/* for (i over [0, n)) spread over every thread of the grid. */
#define PD_CUDA_GRID_LOOP(i, n)                                                                      \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                       \
         i += (int64_t)gridDim.x * blockDim.x)

/* Element i of a float tensor (f32, bf16 or f16) as f32; widening is exact. */
__device__ __forceinline__ float pd_cuda_load(const void *p, pd_dtype dt, int64_t i) {
    if (dt == PD_DTYPE_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (dt == PD_DTYPE_F16) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

/* Stores v as element i of a float tensor, rounding to nearest even when narrowing. */
__device__ __forceinline__ void pd_cuda_store(void *p, pd_dtype dt, int64_t i, float v) {
    if (dt == PD_DTYPE_BF16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else if (dt == PD_DTYPE_F16) ((__half *)p)[i] = __float2half_rn(v);
    else ((float *)p)[i] = v;
}

/* for (r over [0, rows)) one row per warp, spread over every warp of the grid (the row index is the
 * same for all lanes of a warp, so warp shuffles inside the loop stay convergent). */
#define PD_CUDA_WARP_ROW_LOOP(r, rows)                                                               \
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < (rows);             \
         r += ((int64_t)gridDim.x * blockDim.x) >> 5)

/* Sum and maximum over the 32 lanes of a warp (every lane gets the result; all lanes must call). */
__device__ __forceinline__ float pd_cuda_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float pd_cuda_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* True when p is aligned to `bytes`. */
static inline bool pd_cuda_aligned(const void *p, size_t bytes) { return ((uintptr_t)p % bytes) == 0; }

#endif
