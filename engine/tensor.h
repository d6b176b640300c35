/* Tensors: a typed, strided view of up to 5 dimensions over memory owned by someone else or by the
 * tensor itself.
 *
 * Shapes are listed outermost first, as numpy and safetensors do: a latent is (C, T, H, W) with W
 * varying fastest. Strides are in bytes. A tensor made by pd_tensor_view() does not own its data
 * (weights mmapped from a checkpoint, a slice of an arena); one made by pd_tensor_alloc() owns it and
 * releases it in pd_tensor_free(). Compute on the CPU backend is f32; bf16 and f16 are storage types
 * that ops widen on the fly (weights stay in their stored dtype). */
#ifndef PD_TENSOR_H
#define PD_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#define PD_MAX_DIMS 5

typedef enum pd_dtype {
    PD_DTYPE_F32 = 0,
    PD_DTYPE_BF16,
    PD_DTYPE_F16,
    PD_DTYPE_I32,
    PD_DTYPE_I64,
    PD_DTYPE_COUNT
} pd_dtype;

/* Where a tensor's bytes live. Model code never dereferences data of a non-host tensor. */
typedef enum pd_device_kind { PD_DEVICE_CPU = 0, PD_DEVICE_CUDA = 1 } pd_device_kind;

typedef struct pd_tensor {
    pd_dtype dtype;
    int ndim;                      /* 0..PD_MAX_DIMS; a 0-dim tensor is a scalar */
    int64_t shape[PD_MAX_DIMS];    /* outermost first */
    int64_t stride[PD_MAX_DIMS];   /* bytes between neighbours along each dim */
    void *data;
    pd_device_kind device;
    int device_index;
    bool owns_data;                /* pd_tensor_free() releases data */
} pd_tensor;

/* Bytes per element (4, 2, 2, 4, 8). */
size_t pd_dtype_size(pd_dtype dt);
/* Name as safetensors spells it: "F32", "BF16", "F16", "I32",
 * "I64". */
const char *pd_dtype_name(pd_dtype dt);
/* Parses a safetensors dtype string; returns PD_ERR_UNSUPPORTED for any other. */
pd_status pd_dtype_parse(const char *s, pd_dtype *out);

/* Number of elements (1 for a scalar). */
int64_t pd_tensor_numel(const pd_tensor *t);
/* Bytes spanned by a contiguous tensor of this shape and dtype. */
size_t pd_tensor_nbytes(const pd_tensor *t);
/* True when strides are the row-major strides of its shape. */
bool pd_tensor_is_contiguous(const pd_tensor *t);
/* True when dtype, ndim and every dim match. */
bool pd_tensor_same_shape(const pd_tensor *a, const pd_tensor *b);
/* Formats "(2, 16, 3, 8, 8) f32" into buf and returns buf (for error messages and logs). */
const char *pd_tensor_describe(const pd_tensor *t, char *buf, size_t n);

/* A contiguous host view of data with the given shape. Does not take ownership. */
pd_tensor pd_tensor_view(void *data, pd_dtype dt, int ndim, const int64_t *shape);
/* Allocates a zeroed contiguous host tensor (64-byte aligned). Returns PD_ERR_NOMEM or
 * PD_ERR_INVALID (bad ndim or negative dim) with a message. */
pd_status pd_tensor_alloc(pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape);
/* Releases owned data and clears the struct; a no-op on views and zeroed structs. */
void pd_tensor_free(pd_tensor *t);
/* Reinterprets a contiguous tensor with another shape of the same element count. */
pd_status pd_tensor_reshape(pd_tensor *t, int ndim, const int64_t *shape);
/* A view of elements [start, start+len) along dim `dim`; strides are kept. */
pd_tensor pd_tensor_slice(const pd_tensor *t, int dim, int64_t start, int64_t len);

/* Element conversions (round to nearest even when narrowing). */
static inline float pd_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}
static inline uint16_t pd_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v = {.f = f};
    if ((v.u & 0x7f800000u) == 0x7f800000u && (v.u & 0x007fffffu)) return (uint16_t)((v.u >> 16) | 0x40);
    uint32_t r = v.u + 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}
float pd_f16_to_f32(uint16_t h);
uint16_t pd_f32_to_f16(float f);

/* Converts n contiguous elements of a float dtype (F32, BF16, F16) to f32. */
void pd_convert_to_f32(float *dst, const void *src, pd_dtype src_dt, int64_t n);
/* Converts n f32 values into a float dtype (F32, BF16, F16). */
void pd_convert_from_f32(void *dst, pd_dtype dst_dt, const float *src, int64_t n);

/* Copies src into dst (same shape; any strides; float dtypes convert). */
pd_status pd_tensor_copy(pd_tensor *dst, const pd_tensor *src);

#endif
