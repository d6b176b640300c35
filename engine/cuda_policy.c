/* The CUDA backend's device-free decisions (cuda_policy.h). */
#include "engine/cuda_policy.h"

#include <stdio.h>
#include <string.h>

/* ---- architectures ---- */

typedef struct pd_arch {
    int major, minor;
    char kind;      /* 0, 'a' (this exact device) or 'f' (this family) */
    bool real, ptx; /* an sm_XY cubin, compute_XY PTX */
} pd_arch;

/* Parses one entry of n bytes; false for anything that is not XY[a|f][-real|-virtual]. */
static bool pd_arch_parse(const char *s, size_t n, pd_arch *out) {
    size_t i = 0;
    int num = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9' && i < 4) num = num * 10 + (s[i++] - '0');
    if (i < 2 || num < 10) return false;
    pd_arch a = {.major = num / 10, .minor = num % 10, .real = true, .ptx = true};
    if (i < n && (s[i] == 'a' || s[i] == 'f')) a.kind = s[i++];
    if (n - i == 5 && !memcmp(s + i, "-real", 5)) a.ptx = false;
    else if (n - i == 8 && !memcmp(s + i, "-virtual", 8)) a.real = false;
    else if (i != n) return false;
    *out = a;
    return true;
}

/* Whether code of a (cubin, or PTX when ptx) runs on major.minor. */
static bool pd_arch_runs(const pd_arch *a, bool ptx, int major, int minor) {
    if (a->kind == 'a') return major == a->major && minor == a->minor;
    if (a->kind == 'f' || !ptx) return major == a->major && minor >= a->minor;
    return major * 10 + minor >= a->major * 10 + a->minor;
}

pd_cuda_arch_fit pd_cuda_policy_arch_fit(const char *archs, int major, int minor, char *built, size_t built_bytes) {
    pd_arch list[32];
    int n = 0;
    bool unknown = !archs || !archs[0];
    for (const char *p = archs ? archs : ""; *p && !unknown;) {
        size_t len = strcspn(p, ";,");
        if (len) {
            if (n == (int)(sizeof list / sizeof list[0]) || !pd_arch_parse(p, len, &list[n])) unknown = true;
            else n++;
        }
        p += len;
        if (*p) p++;
    }
    if (built && built_bytes) built[0] = 0;
    if (unknown || n == 0) {
        if (built && built_bytes) snprintf(built, built_bytes, "'%s' (not a list of architectures)", archs ? archs : "");
        return PD_CUDA_ARCH_UNKNOWN;
    }
    bool cubin = false, ptx = false;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        cubin = cubin || (list[i].real && pd_arch_runs(&list[i], false, major, minor));
        ptx = ptx || (list[i].ptx && pd_arch_runs(&list[i], true, major, minor));
    }
    /* "sm_80, sm_90 (machine code); compute_90 (PTX for 9.0 and later)" */
    int reals = 0, virts = 0;
    for (int i = 0; i < n; i++)
        if (list[i].real && built && used < built_bytes) {
            int w = snprintf(built + used, built_bytes - used, "%ssm_%d%d%s", reals++ ? ", " : "", list[i].major,
                             list[i].minor, list[i].kind == 'a' ? "a" : list[i].kind == 'f' ? "f" : "");
            if (w > 0) used += (size_t)w;
        }
    if (reals && built && used < built_bytes) {
        int w = snprintf(built + used, built_bytes - used, " (machine code)");
        if (w > 0) used += (size_t)w;
    }
    for (int i = 0; i < n; i++)
        if (list[i].ptx && built && used < built_bytes) {
            const pd_arch *a = &list[i];
            int w = snprintf(built + used, built_bytes - used, "%scompute_%d%d%s (PTX for %d.%d%s)",
                             virts++ ? ", " : reals ? "; " : "", a->major, a->minor,
                             a->kind == 'a' ? "a" : a->kind == 'f' ? "f" : "", a->major, a->minor,
                             a->kind == 'a' ? " only" : a->kind == 'f' ? " and its family" : " and later");
            if (w > 0) used += (size_t)w;
        }
    return cubin ? PD_CUDA_ARCH_MACHINE_CODE : ptx ? PD_CUDA_ARCH_PTX : PD_CUDA_ARCH_NONE;
}

pd_status pd_cuda_policy_check_arch(const char *archs, const char *device, int major, int minor) {
    char built[256], list[256];
    if (pd_cuda_policy_arch_fit(archs, major, minor, built, sizeof built) != PD_CUDA_ARCH_NONE) return PD_OK;
    snprintf(list, sizeof list, "%s", archs);
    for (char *p = list; *p; p++)
        if (*p == ',') *p = ';'; /* a CMake list */
    return pd_error_set(PD_ERR_UNSUPPORTED,
                        "%s has compute capability %d.%d, which none of this build's GPU code runs on: it has %s. "
                        "Rebuild with cmake -DCMAKE_CUDA_ARCHITECTURES=\"%d%d-real;%s\" (or \"native\" on that machine)",
                        device, major, minor, built, major, minor, list);
}

/* ---- cuDNN SDPA ---- */

pd_cuda_sdpa_action pd_cuda_policy_sdpa_action(int status, bool executing) {
    if (status == 0) return PD_SDPA_RUN;
    if (status == PD_CUDNN_STATUS_HOST_ALLOCATION_FAILED || status == PD_CUDNN_STATUS_DEVICE_ALLOCATION_FAILED)
        return PD_SDPA_NOMEM;
    const int category = status / 1000 * 1000;
    if (category == PD_CUDNN_STATUS_BAD_PARAM || category == PD_CUDNN_STATUS_NOT_SUPPORTED) return PD_SDPA_FALL_BACK;
    return executing ? PD_SDPA_FAIL : PD_SDPA_FALL_BACK;
}

/* ---- CONV3D weights ---- */

pd_cuda_conv_weight pd_cuda_policy_conv_weight(const pd_tensor *t) {
    if (t->dtype == PD_DTYPE_F32) return PD_CONV_WEIGHT_AS_IS;
    return t->owns_data ? PD_CONV_WEIGHT_KEEP : PD_CONV_WEIGHT_PER_CALL;
}

bool pd_cuda_policy_conv_kept_matches(const pd_cuda_conv_kept *k, const pd_tensor *t) {
    return k->src == t->data && k->dtype == t->dtype && k->n == pd_tensor_numel(t);
}

bool pd_cuda_policy_conv_kept_void(const pd_cuda_conv_kept *k, const void *data, size_t bytes) {
    const char *a = k->src, *b = data;
    const size_t kb = (size_t)(k->n > 0 ? k->n : 1) * pd_dtype_size(k->dtype);
    if (!a || !b || !bytes) return false;
    return a < b + bytes && b < a + kb;
}

size_t pd_cuda_policy_span_bytes(const pd_tensor *t) {
    if (pd_tensor_numel(t) == 0) return 0;
    int64_t last = 0;
    for (int i = 0; i < t->ndim; i++) last += (t->shape[i] - 1) * (t->stride[i] > 0 ? t->stride[i] : 0);
    return (size_t)last + pd_dtype_size(t->dtype);
}
