/* The CPU backend: its function table, memory calls and shared helpers. */
#include "engine/cpu/cpu_backend.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void pd_cpu_parallel(pd_backend *be, int64_t n_tasks, pd_threadpool_fn fn, void *ctx) {
    pd_threadpool_run(((pd_cpu *)be->context)->pool, n_tasks, fn, ctx);
}

/* f16 -> f32 by table: the bit-twiddling conversion has branches per element and does not vectorise. */
static float pd_cpu_f16_table[65536];
static pthread_once_t pd_cpu_f16_once = PTHREAD_ONCE_INIT;
static void pd_cpu_f16_init(void) {
    for (uint32_t h = 0; h < 65536; h++) pd_cpu_f16_table[h] = pd_f16_to_f32((uint16_t)h);
}

void pd_cpu_widen(float *dst, const void *src, pd_dtype dt, int64_t first, int64_t n) {
    const char *p = (const char *)src + first * (int64_t)pd_dtype_size(dt);
    if (dt == PD_DTYPE_F16) {
        pthread_once(&pd_cpu_f16_once, pd_cpu_f16_init);
        const uint16_t *h = (const uint16_t *)p;
        for (int64_t i = 0; i < n; i++) dst[i] = pd_cpu_f16_table[h[i]];
        return;
    }
    pd_convert_to_f32(dst, p, dt, n);
}

const float *pd_cpu_f32(const pd_tensor *t, float **owned) {
    *owned = NULL;
    if (t->dtype == PD_DTYPE_F32) return t->data;
    int64_t n = pd_tensor_numel(t);
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    if (!f) {
        pd_error_set(PD_ERR_NOMEM, "out of memory widening %lld weights", (long long)n);
        return NULL;
    }
    pd_cpu_widen(f, t->data, t->dtype, 0, n);
    *owned = f;
    return f;
}

float *pd_cpu_scratch(int n_threads, size_t per_thread) {
    per_thread = (per_thread + 15) & ~(size_t)15; /* keep each thread's part 64-byte aligned */
    size_t bytes = (size_t)n_threads * per_thread * sizeof(float);
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) pd_error_set(PD_ERR_NOMEM, "out of memory for %zu bytes of scratch", bytes);
    return p;
}

static void pd_cpu_free(pd_backend *be) {
    pd_cpu *c = be->context;
    pd_threadpool_free(c->pool);
    free(c);
    free(be);
}

static pd_status pd_cpu_tensor_alloc(pd_backend *be, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape) {
    return pd_tensor_alloc(out, dt, ndim, shape);
}

static void pd_cpu_tensor_free(pd_backend *be, pd_tensor *t) { pd_tensor_free(t); }

static pd_status pd_cpu_import_weight(pd_backend *be, pd_tensor *out, const pd_tensor *host) {
    *out = *host;
    out->owns_data = false;
    return PD_OK;
}

static pd_status pd_cpu_upload(pd_backend *be, pd_tensor *dst, const pd_tensor *host_src) {
    return pd_tensor_copy(dst, host_src);
}

static pd_status pd_cpu_download(pd_backend *be, pd_tensor *host_dst, const pd_tensor *src) {
    return pd_tensor_copy(host_dst, src);
}

static pd_status pd_cpu_synchronize(pd_backend *be) { return PD_OK; }

static const pd_backend_ops pd_cpu_ops = {
    .free = pd_cpu_free,
    .tensor_alloc = pd_cpu_tensor_alloc,
    .tensor_free = pd_cpu_tensor_free,
    .import_weight = pd_cpu_import_weight,
    .upload = pd_cpu_upload,
    .download = pd_cpu_download,
    .synchronize = pd_cpu_synchronize,
    .linear = pd_cpu_linear,
    .layer_norm = pd_cpu_layer_norm,
    .rms_norm = pd_cpu_rms_norm,
    .rope3d_freqs = pd_cpu_rope3d_freqs,
    .rope = pd_cpu_rope,
    .attention = pd_cpu_attention,
    .gelu_tanh = pd_cpu_gelu_tanh,
    .silu = pd_cpu_silu,
    .modulate = pd_cpu_modulate,
    .gated_add = pd_cpu_gated_add,
    .add = pd_cpu_add,
    .mul = pd_cpu_mul,
    .timestep_embed = pd_cpu_timestep_embed,
    .patchify = pd_cpu_patchify,
    .unpatchify = pd_cpu_unpatchify,
    .copy = pd_cpu_copy,
    .conv3d = pd_cpu_conv3d,
    .upsample_nearest2d = pd_cpu_upsample_nearest2d,
    .channel_rms_norm = pd_cpu_channel_rms_norm,
    .clamp = pd_cpu_clamp,
    .embedding = pd_cpu_embedding,
    .layer_norm_modulate = pd_cpu_layer_norm_modulate,
    .linear_gelu = pd_cpu_linear_gelu,
    .rms_norm_rope = pd_cpu_rms_norm_rope,
};

/* OpenBLAS picks its kernels from cpuid; in some VMs it falls back to the SSE3 "Prescott" kernels
 * on an AVX2 CPU, which makes every GEMM about 3x slower. Say so once, with the fix. */
static pthread_once_t pd_cpu_blas_once = PTHREAD_ONCE_INIT;
static void pd_cpu_blas_check(void) {
    const char *core = openblas_get_corename();
#if defined(__x86_64__)
    if (core && (!strcmp(core, "Prescott") || !strcmp(core, "Core2") || !strcmp(core, "Nehalem") ||
                 !strcmp(core, "Sandybridge")) &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        PD_WARN("cpu", "OpenBLAS uses its %s kernels on a CPU with AVX2/FMA; set OPENBLAS_CORETYPE=%s for faster GEMMs",
                core, __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell");
#endif
    PD_DEBUG("cpu", "OpenBLAS core %s", core ? core : "?");
}

pd_status pd_backend_cpu_create(int n_threads, pd_backend **out) {
    if (n_threads < 0 || n_threads > 1024)
        return pd_error_set(PD_ERR_INVALID, "CPU backend: thread count %d outside 0..1024", n_threads);
    if (n_threads == 0) n_threads = pd_backend_cpu_share(1);
    /* GEMMs run single-threaded inside our own tasks (one fixed tiling for every thread count), so
     * OpenBLAS must not start threads of its own. */
    openblas_set_num_threads(1);
    pthread_once(&pd_cpu_blas_once, pd_cpu_blas_check);
    pd_backend *be = calloc(1, sizeof *be);
    pd_cpu *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return pd_error_set(PD_ERR_NOMEM, "out of memory creating the CPU backend");
    }
    pd_status st = pd_threadpool_create(n_threads, &c->pool);
    if (st != PD_OK) {
        free(be);
        free(c);
        return st;
    }
    be->ops = &pd_cpu_ops;
    be->device = PD_DEVICE_CPU;
    be->n_threads = n_threads;
    snprintf(be->name, sizeof be->name, "cpu");
    be->context = c;
    *out = be;
    return PD_OK;
}
