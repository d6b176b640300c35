/* Private to cuda_conv.c and cuda_conv.cu: the kernel the convolution host code launches. */
#ifndef PD_CUDA_CONV_H
#define PD_CUDA_CONV_H

#include "engine/cuda/cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst (C, T + front[0] + back[0], H + front[1] + back[1], W + front[2] + back[2]) f32 = src (C, T, H, W)
 * f32 contiguous, surrounded by front[i] zeros before and back[i] zeros after along time, height and
 * width. Queued on the backend's stream. */
pd_status pd_cuda_conv_pad(pd_backend *be, float *dst, const float *src, const int64_t src_dims[4],
                           const int64_t front[3], const int64_t back[3]);


#ifdef __cplusplus
}
#endif

#endif
