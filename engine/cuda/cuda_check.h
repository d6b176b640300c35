/* One check-macro family for CUDA runtime, cuBLAS(Lt) and cuDNN calls, usable from .c and .cu files.
 *
 * Each macro evaluates the call once; on failure it records a message naming the library, the
 * statement, the file, the line, the device and the library's own error text (pd_error_set with
 * PD_ERR_DEVICE, or PD_ERR_NOMEM for an out-of-memory result) and returns that status from the
 * enclosing function, which must return pd_status. `dev` is the device index for the message.
 * PD_CUDA_LAUNCH_CHECK(dev) follows every kernel launch (it catches bad launch configurations at
 * once; errors inside the kernel surface at the next synchronising call). */
#ifndef PD_CUDA_CHECK_H
#define PD_CUDA_CHECK_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records the failure and returns the status to return (PD_ERR_NOMEM or PD_ERR_DEVICE). */
pd_status pd_cuda_fail_runtime(cudaError_t e, const char *stmt, const char *file, int line, int dev);
pd_status pd_cuda_fail_cublas(cublasStatus_t e, const char *stmt, const char *file, int line, int dev);
pd_status pd_cuda_fail_cudnn(cudnnStatus_t e, const char *stmt, const char *file, int line, int dev);

#ifdef __cplusplus
}
#endif

#define PD_CUDA_CHECK(dev, call)                                                                   \
    do {                                                                                           \
        cudaError_t pd_cuda_e_ = (call);                                                           \
        if (pd_cuda_e_ != cudaSuccess) return pd_cuda_fail_runtime(pd_cuda_e_, #call, __FILE__, __LINE__, (dev)); \
    } while (0)

#define PD_CUBLAS_CHECK(dev, call)                                                                 \
    do {                                                                                           \
        cublasStatus_t pd_cublas_e_ = (call);                                                      \
        if (pd_cublas_e_ != CUBLAS_STATUS_SUCCESS)                                                 \
            return pd_cuda_fail_cublas(pd_cublas_e_, #call, __FILE__, __LINE__, (dev));            \
    } while (0)

#define PD_CUDNN_CHECK(dev, call)                                                                  \
    do {                                                                                           \
        cudnnStatus_t pd_cudnn_e_ = (call);                                                        \
        if (pd_cudnn_e_ != CUDNN_STATUS_SUCCESS)                                                   \
            return pd_cuda_fail_cudnn(pd_cudnn_e_, #call, __FILE__, __LINE__, (dev));              \
    } while (0)

#define PD_CUDA_LAUNCH_CHECK(dev) PD_CUDA_CHECK((dev), cudaGetLastError())

#endif
