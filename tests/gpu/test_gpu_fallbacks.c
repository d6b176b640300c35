/* The CUDA backend's start-up check, attention fallback and CONV3D weight copies on a real GPU:
 *  - start: the backend starts on this card, a kernel image loads, and this build has machine code
 *    for it (its architectures and the card's compute capability are printed);
 *  - a cuDNN SDPA refusal at plan build and at execution (injected: cuDNN accepts every shape these
 *    cards see) falls back to the own kernel for that shape the same way: every call succeeds with
 *    the own kernel's f32 accuracy, one warning per shape, and other shapes keep cuDNN;
 *  - CONV3D with bf16 weights: an owning weight rewritten by upload, a new weight at a freed one's
 *    address, and a view into a blob rewritten behind the backend's back each give the result of
 *    their current contents, never a stale widened copy.
 * Exits 77 (skipped) in builds without CUDA or without a visible device. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/backend.h"
#include "tests/unit/test.h"

#ifdef PD_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda_policy.h"

static pd_backend *g_cpu, *g_gpu;

/* A host tensor of shape filled from seed (values in [-1, 1)). */
static pd_tensor host_rand(pd_dtype dt, int ndim, const int64_t *shape, unsigned seed) {
    pd_tensor f = {0}, t = {0};
    PD_ASSERT(pd_tensor_alloc(&f, PD_DTYPE_F32, ndim, shape) == PD_OK);
    float *p = f.data;
    for (int64_t i = 0; i < pd_tensor_numel(&f); i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / (float)(1u << 23) - 1.0f;
    }
    if (dt == PD_DTYPE_F32) return f;
    PD_ASSERT(pd_tensor_alloc(&t, dt, ndim, shape) == PD_OK);
    PD_ASSERT(pd_tensor_copy(&t, &f) == PD_OK);
    pd_tensor_free(&f);
    return t;
}

static pd_tensor dev_of(const pd_tensor *h) {
    pd_tensor d = {0};
    PD_CHECK_OK(pd_backend_tensor_alloc(g_gpu, &d, h->dtype, h->ndim, h->shape));
    if (d.data) PD_CHECK_OK(pd_backend_upload(g_gpu, &d, h));
    return d;
}

/* Relative L2 error of the device f32 tensor d against the host f32 tensor ref. */
static double rel_err_dev(const pd_tensor *d, const pd_tensor *ref) {
    pd_tensor h = {0};
    PD_ASSERT(pd_tensor_alloc(&h, PD_DTYPE_F32, ref->ndim, ref->shape) == PD_OK);
    PD_CHECK_OK(pd_backend_download(g_gpu, &h, d));
    const float *a = h.data, *b = ref->data;
    double num = 0, den = 0;
    for (int64_t i = 0; i < pd_tensor_numel(ref); i++) num += (a[i] - b[i]) * (double)(a[i] - b[i]), den += (double)b[i] * b[i];
    pd_tensor_free(&h);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- start-up ---- */

static void test_start(void) {
    pd_cuda *c = pd_cuda_of(g_gpu);
    char built[256];
    pd_cuda_arch_fit fit = pd_cuda_policy_arch_fit(pd_cuda_architectures(), c->sm_major, c->sm_minor, built, sizeof built);
    printf("  %s: compute capability %d.%d; build architectures '%s': %s -> %s\n", c->gpu_name, c->sm_major,
           c->sm_minor, pd_cuda_architectures(), built,
           fit == PD_CUDA_ARCH_MACHINE_CODE ? "machine code" : fit == PD_CUDA_ARCH_PTX ? "PTX (JIT)" : "none/unknown");
    PD_CHECK_MSG(fit == PD_CUDA_ARCH_MACHINE_CODE, "no machine code for %d.%d in '%s'", c->sm_major, c->sm_minor,
                 pd_cuda_architectures());
    PD_CHECK_MSG(pd_cuda_kernel_image_status() == cudaSuccess, "kernel image: %s",
                 cudaGetErrorString(pd_cuda_kernel_image_status()));
    /* what a card one generation older would be told by a build for this card alone */
    char only[32];
    snprintf(only, sizeof only, "%d%d-real", c->sm_major, c->sm_minor);
    PD_CHECK_ERR(pd_cuda_policy_check_arch(only, "cuda:0 (older card)", c->sm_major - 1, 0), PD_ERR_UNSUPPORTED);
    printf("  e.g.: %s\n", pd_error_msg());
}

/* ---- cuDNN SDPA refusals ---- */

/* The log goes to stderr: captured into a temporary file between capture_begin and capture_end. */
static int g_saved_stderr = -1;

static FILE *capture_begin(void) {
    FILE *f = tmpfile();
    PD_ASSERT(f);
    fflush(stderr);
    g_saved_stderr = dup(2);
    dup2(fileno(f), 2);
    return f;
}

/* Restores stderr; returns how many captured lines contain needle (and closes f). */
static int capture_end(FILE *f, const char *needle) {
    char line[1024];
    int n = 0;
    fflush(stderr);
    dup2(g_saved_stderr, 2);
    close(g_saved_stderr);
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        n += strstr(line, needle) != NULL;
        fputs(line, stderr); /* shown after all */
    }
    fclose(f);
    return n;
}

/* Three calls of one shape with cuDNN's answer at `at` turned into a refusal, on a fresh backend. */
static void sdpa_refusal(int at, const char *label) {
    pd_backend *be = NULL;
    PD_CHECK_OK(pd_backend_cuda_create(0, &be));
    if (!be) return;
    pd_backend *keep = g_gpu;
    g_gpu = be;
    FILE *log = capture_begin();
    pd_cuda_sdpa_inject_refusal(be, at);
    const int64_t s[4] = {1, 200, 2, 64}, s2[4] = {1, 136, 2, 64};
    for (int shape = 0; shape < 2; shape++) {
        const int64_t *sh = shape ? s2 : s;
        if (shape) pd_cuda_sdpa_inject_refusal(be, 0); /* another shape: cuDNN again */
        pd_tensor q = host_rand(PD_DTYPE_F32, 4, sh, 11), k = host_rand(PD_DTYPE_F32, 4, sh, 12);
        pd_tensor v = host_rand(PD_DTYPE_F32, 4, sh, 13), ref = {0};
        PD_ASSERT(pd_tensor_alloc(&ref, PD_DTYPE_F32, 4, sh) == PD_OK);
        PD_CHECK_OK(pd_op_attention(g_cpu, &ref, &q, &k, &v, NULL, 0.125f));
        pd_tensor dq = dev_of(&q), dk = dev_of(&k), dv = dev_of(&v), dout = {0};
        PD_CHECK_OK(pd_backend_tensor_alloc(be, &dout, PD_DTYPE_F32, 4, sh));
        for (int call = 0; call < 3 && dout.data; call++) {
            PD_CHECK_OK(pd_op_attention(be, &dout, &dq, &dk, &dv, NULL, 0.125f));
            double e = rel_err_dev(&dout, &ref);
            /* the own kernel is f32 (~1e-6); cuDNN's bf16 operands give ~1e-3 */
            PD_CHECK_MSG(shape ? e < 2e-2 : e < 1e-4, "%s, shape %d, call %d: relative error %.3g", label, shape, call, e);
            if (call == 0) printf("  %s, shape %d: relative error %.3g (%s)\n", label, shape, e, shape ? "cuDNN" : "own kernel");
        }
        pd_tensor_free(&q), pd_tensor_free(&k), pd_tensor_free(&v), pd_tensor_free(&ref);
        pd_backend_tensor_free(be, &dq), pd_backend_tensor_free(be, &dk), pd_backend_tensor_free(be, &dv);
        pd_backend_tensor_free(be, &dout);
    }
    int warned = capture_end(log, "cuDNN SDPA refused");
    PD_CHECK_MSG(warned == 1, "%s: %d warnings (want 1, for the refused shape only)", label, warned);
    g_gpu = keep;
    pd_backend_free(be);
}

static void test_sdpa_refusals(void) {
    if (pd_cuda_of(g_gpu)->sm_major < 8) {
        printf("  compute capability below 8.0: cuDNN SDPA is not used (skipped)\n");
        return;
    }
    unsetenv("PD_CUDA_ATTENTION");
    sdpa_refusal(PD_SDPA_STEP_BUILD, "refused at build");
    sdpa_refusal(PD_SDPA_STEP_EXECUTE, "refused at execution");
}

/* ---- CONV3D widened weights ---- */

static const int g_pad[6] = {0, 0, 1, 1, 1, 1};
static const int64_t g_xs[4] = {4, 2, 6, 6}, g_ws[5] = {8, 4, 1, 3, 3}, g_bs[1] = {8}, g_ys[4] = {8, 2, 6, 6};

/* CONV3D of dx with the device weight dw and bias db, against the CPU's with the host hw, hb. */
static void conv_check(const char *what, const pd_tensor *hx, const pd_tensor *dx, const pd_tensor *hw,
                       const pd_tensor *dw, const pd_tensor *hb, const pd_tensor *db) {
    pd_tensor ref = {0}, dy = {0};
    PD_ASSERT(pd_tensor_alloc(&ref, PD_DTYPE_F32, 4, g_ys) == PD_OK);
    PD_CHECK_OK(pd_op_conv3d(g_cpu, &ref, hx, hw, hb, g_pad));
    PD_CHECK_OK(pd_backend_tensor_alloc(g_gpu, &dy, PD_DTYPE_F32, 4, g_ys));
    if (dy.data) {
        PD_CHECK_OK(pd_op_conv3d(g_gpu, &dy, dx, dw, db, g_pad));
        double e = rel_err_dev(&dy, &ref);
        PD_CHECK_MSG(e < 1e-2, "%s: relative error %.3g (a stale weight copy gives ~1)", what, e);
    }
    pd_tensor_free(&ref);
    pd_backend_tensor_free(g_gpu, &dy);
}

static void test_conv_weights(void) {
    pd_tensor hx = host_rand(PD_DTYPE_F32, 4, g_xs, 1), dx = dev_of(&hx);
    pd_tensor wa = host_rand(PD_DTYPE_BF16, 5, g_ws, 2), wb = host_rand(PD_DTYPE_BF16, 5, g_ws, 3);
    pd_tensor ba = host_rand(PD_DTYPE_BF16, 1, g_bs, 4), bb = host_rand(PD_DTYPE_BF16, 1, g_bs, 5);

    /* owning weight and bias, then new contents uploaded into the same tensors */
    pd_tensor dw = dev_of(&wa), db = dev_of(&ba);
    conv_check("owning, first contents", &hx, &dx, &wa, &dw, &ba, &db);
    PD_CHECK_OK(pd_backend_upload(g_gpu, &dw, &wb));
    PD_CHECK_OK(pd_backend_upload(g_gpu, &db, &bb));
    conv_check("owning, contents uploaded again", &hx, &dx, &wb, &dw, &bb, &db);

    /* freed, and new tensors allocated (the allocator tends to hand the same addresses back) */
    void *old_w = dw.data, *old_b = db.data;
    pd_backend_tensor_free(g_gpu, &dw), pd_backend_tensor_free(g_gpu, &db);
    dw = dev_of(&wa), db = dev_of(&ba);
    printf("  new weight %s the freed one's address, new bias %s\n", dw.data == old_w ? "at" : "not at",
           db.data == old_b ? "at it too" : "elsewhere");
    conv_check("owning, at a freed weight's address", &hx, &dx, &wa, &dw, &ba, &db);
    pd_backend_tensor_free(g_gpu, &dw), pd_backend_tensor_free(g_gpu, &db);

    /* a view into a shared blob whose bytes change behind the backend's back */
    const int64_t n = pd_tensor_numel(&wa), blob_n = 2 * n;
    pd_tensor blob = {0};
    PD_CHECK_OK(pd_backend_tensor_alloc(g_gpu, &blob, PD_DTYPE_BF16, 1, &blob_n));
    if (blob.data) {
        pd_tensor view = pd_tensor_view((char *)blob.data + n * 2, PD_DTYPE_BF16, 5, g_ws);
        view.device = blob.device, view.device_index = blob.device_index;
        cudaMemcpy(view.data, wa.data, (size_t)n * 2, cudaMemcpyHostToDevice);
        conv_check("view, first contents", &hx, &dx, &wa, &view, NULL, NULL);
        cudaMemcpy(view.data, wb.data, (size_t)n * 2, cudaMemcpyHostToDevice); /* not through the backend */
        conv_check("view, contents rewritten", &hx, &dx, &wb, &view, NULL, NULL);
    }
    pd_backend_tensor_free(g_gpu, &blob);
    pd_tensor_free(&hx), pd_tensor_free(&wa), pd_tensor_free(&wb), pd_tensor_free(&ba), pd_tensor_free(&bb);
    pd_backend_tensor_free(g_gpu, &dx);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pd_backend_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    pd_log_set_level(PD_LOG_WARN);
    if (pd_backend_cpu_create(2, &g_cpu) != PD_OK || pd_backend_cuda_create(0, &g_gpu) != PD_OK) {
        fprintf(stderr, "test_gpu_fallbacks: %s\n", pd_error_msg());
        return 1;
    }
    PD_RUN(test_start);
    PD_RUN(test_sdpa_refusals);
    PD_RUN(test_conv_weights);
    pd_backend_free(g_gpu);
    pd_backend_free(g_cpu);
    return pd_test_summary();
}
#else
int main(void) {
    printf("built without CUDA: skipped\n");
    return 77;
}
#endif
