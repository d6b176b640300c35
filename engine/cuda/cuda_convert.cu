/* Dtype conversion of contiguous device arrays: the bf16 staging copies of GEMM and attention
 * operands, weight widening, and the contiguous case of COPY. */
#include "engine/cuda/cuda_kernels.cuh"

__device__ __forceinline__ float pd_cvt_in(float v) { return v; }
__device__ __forceinline__ float pd_cvt_in(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float pd_cvt_in(__half v) { return __half2float(v); }

template <typename D> __device__ __forceinline__ D pd_cvt_out(float v);
template <> __device__ __forceinline__ float pd_cvt_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 pd_cvt_out<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half pd_cvt_out<__half>(float v) { return __float2half_rn(v); }

/* Four elements moved as one vector load and one vector store. */
template <typename T> struct alignas(4 * sizeof(T)) pd_vec4 {
    T v[4];
};

/* Each thread converts groups of four elements (one 16-byte f32 access, one 8-byte 16-bit access)
 * in a grid-stride loop: the op is bandwidth-bound and wide accesses keep the memory pipes full.
 * The n % 4 tail goes to the first threads of the grid. VEC = false is the element-wise form for
 * pointers not aligned to the vector size. */
template <typename S, typename D, bool VEC>
__global__ void pd_convert_kernel(D *__restrict__ dst, const S *__restrict__ src, int64_t n) {
    int64_t done = 0;
    if (VEC) {
        int64_t n4 = n / 4;
        const pd_vec4<S> *s4 = reinterpret_cast<const pd_vec4<S> *>(src);
        pd_vec4<D> *d4 = reinterpret_cast<pd_vec4<D> *>(dst);
        PD_CUDA_GRID_LOOP(i, n4) {
            pd_vec4<S> a = s4[i];
            pd_vec4<D> b;
#pragma unroll
            for (int k = 0; k < 4; k++) b.v[k] = pd_cvt_out<D>(pd_cvt_in(a.v[k]));
            d4[i] = b;
        }
        done = n4 * 4;
    }
    PD_CUDA_GRID_LOOP(j, n - done) dst[done + j] = pd_cvt_out<D>(pd_cvt_in(src[done + j]));
}

template <typename S, typename D>
static pd_status pd_convert_launch(pd_cuda *c, void *dst, const void *src, int64_t n) {
    bool vec = pd_cuda_aligned(dst, 4 * sizeof(D)) && pd_cuda_aligned(src, 4 * sizeof(S));
    if (vec)
        pd_convert_kernel<S, D, true><<<pd_cuda_blocks(n / 4 > 0 ? n / 4 : 1, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
            (D *)dst, (const S *)src, n);
    else
        pd_convert_kernel<S, D, false><<<pd_cuda_blocks(n, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
            (D *)dst, (const S *)src, n);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

template <typename S>
static pd_status pd_convert_from(pd_cuda *c, void *dst, pd_dtype dst_dt, const void *src, int64_t n) {
    switch (dst_dt) {
    case PD_DTYPE_F32: return pd_convert_launch<S, float>(c, dst, src, n);
    case PD_DTYPE_BF16: return pd_convert_launch<S, __nv_bfloat16>(c, dst, src, n);
    case PD_DTYPE_F16: return pd_convert_launch<S, __half>(c, dst, src, n);
    default: break;
    }
    return pd_error_set(PD_ERR_INVALID, "cuda convert: destination dtype %s is not a float dtype", pd_dtype_name(dst_dt));
}

pd_status pd_cuda_convert(pd_backend *be, void *dst, pd_dtype dst_dt, const void *src, pd_dtype src_dt, int64_t n) {
    pd_cuda *c = pd_cuda_of(be);
    if (n <= 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    if (dst_dt == src_dt) {
        PD_CUDA_CHECK(c->device, cudaMemcpyAsync(dst, src, (size_t)n * pd_dtype_size(dst_dt), cudaMemcpyDeviceToDevice, c->stream));
        return PD_OK;
    }
    switch (src_dt) {
    case PD_DTYPE_F32: return pd_convert_from<float>(c, dst, dst_dt, src, n);
    case PD_DTYPE_BF16: return pd_convert_from<__nv_bfloat16>(c, dst, dst_dt, src, n);
    case PD_DTYPE_F16: return pd_convert_from<__half>(c, dst, dst_dt, src, n);
    default: break;
    }
    return pd_error_set(PD_ERR_INVALID, "cuda convert: source dtype %s is not a float dtype", pd_dtype_name(src_dt));
}

cudaError_t pd_cuda_kernel_image_status(void) {
    cudaFuncAttributes a;
    cudaError_t e = cudaFuncGetAttributes(&a, pd_convert_kernel<float, __nv_bfloat16, true>);
    if (e != cudaSuccess) (void)cudaGetLastError();
    return e;
}
