/* Private to backends: the function table every backend fills in. backend.c validates arguments once
 * for all backends and then calls through this table, so an implementation may assume shapes and
 * dtypes are consistent. A NULL entry means the op is unsupported. */
#ifndef PD_BACKEND_IMPL_H
#define PD_BACKEND_IMPL_H

#include "engine/backend.h"

typedef struct pd_backend_ops {
    void (*free)(pd_backend *be);
    /* NULL: every op with a table entry runs with f32, bf16 and f16 weights. */
    bool (*supports_op)(const pd_backend *be, pd_op op, pd_dtype weight_dtype);
    pd_status (*tensor_alloc)(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape);
    void (*tensor_free)(pd_backend *be, pd_tensor *t);
    pd_status (*import_weight)(pd_backend *be, pd_tensor *out, const pd_tensor *host);
    pd_status (*upload)(pd_backend *be, pd_tensor *dst, const pd_tensor *host_src);
    pd_status (*download)(pd_backend *be, pd_tensor *host_dst, const pd_tensor *src);
    pd_status (*synchronize)(pd_backend *be);

    pd_status (*linear)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);
    pd_status (*layer_norm)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b, float eps);
    pd_status (*rms_norm)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps);
    pd_status (*rope3d_freqs)(pd_backend *be, pd_tensor *freqs, int64_t gt, int64_t gh, int64_t gw, int64_t off, double theta);
    pd_status (*rope)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *freqs);
    pd_status (*attention)(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k, const pd_tensor *v,
                           const pd_tensor *bias, float scale);
    pd_status (*gelu_tanh)(pd_backend *be, pd_tensor *y, const pd_tensor *x);
    pd_status (*silu)(pd_backend *be, pd_tensor *y, const pd_tensor *x);
    pd_status (*modulate)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift, const pd_tensor *scale);
    pd_status (*gated_add)(pd_backend *be, pd_tensor *x, const pd_tensor *gate, const pd_tensor *y);
    pd_status (*add)(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);
    pd_status (*mul)(pd_backend *be, pd_tensor *y, const pd_tensor *a, const pd_tensor *b);
    pd_status (*timestep_embed)(pd_backend *be, pd_tensor *out, const pd_tensor *t);
    pd_status (*patchify)(pd_backend *be, pd_tensor *tokens, const pd_tensor *latent, int pt, int ph, int pw);
    pd_status (*unpatchify)(pd_backend *be, pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw);
    pd_status (*copy)(pd_backend *be, pd_tensor *dst, const pd_tensor *src);
    pd_status (*conv3d)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b, const int pad[6]);
    pd_status (*upsample_nearest2d)(pd_backend *be, pd_tensor *y, const pd_tensor *x);
    pd_status (*channel_rms_norm)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *gamma,
                                  const pd_tensor *bias, float eps);
    pd_status (*clamp)(pd_backend *be, pd_tensor *y, const pd_tensor *x, float lo, float hi);
    pd_status (*embedding)(pd_backend *be, pd_tensor *out, const pd_tensor *ids, const pd_tensor *table);
    pd_status (*layer_norm_modulate)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                     const pd_tensor *scale, float eps);
    pd_status (*linear_gelu)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b);
    pd_status (*rms_norm_rope)(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w,
                               const pd_tensor *freqs, int heads, float eps);
} pd_backend_ops;

struct pd_backend {
    const pd_backend_ops *ops;
    pd_device_kind device;
    int device_index;
    int n_threads;
    char name[32];
    void *stream;  /* the stream ops are queued on (CUDA: cudaStream_t); NULL on the CPU */
    void *context; /* the implementation's own state */
};

#endif
