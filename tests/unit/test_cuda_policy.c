/* The CUDA backend's device-free decisions (engine/cuda_policy.h), which every build compiles:
 *  - compute capability against a build's CUDA architectures: the default list runs on Ampere, Ada
 *    and Hopper (machine code) and later GPUs (PTX), and refuses Turing with a message naming what it
 *    has and the option that adds it; "a"/"f" suffixes, "-real"/"-virtual", unreadable lists;
 *  - cuDNN SDPA statuses: a refusal (NOT_SUPPORTED, BAD_PARAM of any kind) falls back the same way at
 *    build and at execution; out of memory fails; other execution failures are device errors;
 *  - CONV3D weights: only owning bf16/f16 tensors keep a widened copy; a view (a slice of a shared
 *    blob) is widened per call; a kept copy is voided by a write or free that overlaps its bytes, so a
 *    new tensor at a reused address never meets it. */
#include <stdint.h>

#include "engine/cuda_policy.h"
#include "tests/unit/test.h"

/* The default of CMakeLists.txt (kept in step by hand: the CPU build does not see it). */
static const char *const default_archs = "80-real,90-real,90-virtual";

static void test_default_architectures(void) {
    static const struct { int major, minor; pd_cuda_arch_fit fit; const char *gpu; } cs[] = {
        {8, 0, PD_CUDA_ARCH_MACHINE_CODE, "A100"},     {8, 6, PD_CUDA_ARCH_MACHINE_CODE, "A6000, RTX 3090"},
        {8, 9, PD_CUDA_ARCH_MACHINE_CODE, "L40, RTX 4090"}, {9, 0, PD_CUDA_ARCH_MACHINE_CODE, "H100, H200"},
        {10, 0, PD_CUDA_ARCH_PTX, "B200"},             {12, 0, PD_CUDA_ARCH_PTX, "RTX 5090"},
        {7, 5, PD_CUDA_ARCH_NONE, "T4"},               {7, 0, PD_CUDA_ARCH_NONE, "V100"},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        char built[256];
        pd_cuda_arch_fit f = pd_cuda_policy_arch_fit(default_archs, cs[i].major, cs[i].minor, built, sizeof built);
        PD_CHECK_MSG(f == cs[i].fit, "%d.%d (%s): fit %d, want %d", cs[i].major, cs[i].minor, cs[i].gpu, f, cs[i].fit);
        PD_CHECK_MSG(!strcmp(built, "sm_80, sm_90 (machine code); compute_90 (PTX for 9.0 and later)"), "built: %s",
                     built);
        pd_status st = pd_cuda_policy_check_arch(default_archs, "cuda:0 (test)", cs[i].major, cs[i].minor);
        PD_CHECK_MSG(st == (cs[i].fit == PD_CUDA_ARCH_NONE ? PD_ERR_UNSUPPORTED : PD_OK), "%d.%d: %s", cs[i].major,
                     cs[i].minor, pd_status_name(st));
    }
    PD_CHECK_ERR(pd_cuda_policy_check_arch(default_archs, "cuda:1 (Tesla T4)", 7, 5), PD_ERR_UNSUPPORTED);
    PD_CHECK_MSG(strstr(pd_error_msg(), "cuda:1 (Tesla T4) has compute capability 7.5") &&
                     strstr(pd_error_msg(), "sm_80, sm_90 (machine code)") &&
                     strstr(pd_error_msg(), "-DCMAKE_CUDA_ARCHITECTURES=\"75-real;80-real;90-real;90-virtual\""),
                 "message: %s", pd_error_msg());
}

/* What a build for sm_90 alone (the old default) says to the GPUs many users own. */
static void test_hopper_only_build(void) {
    const char *archs = "90-real;90-virtual";
    PD_CHECK(pd_cuda_policy_arch_fit(archs, 9, 0, NULL, 0) == PD_CUDA_ARCH_MACHINE_CODE);
    PD_CHECK_ERR(pd_cuda_policy_check_arch(archs, "cuda:0 (NVIDIA L40)", 8, 9), PD_ERR_UNSUPPORTED);
    PD_CHECK_MSG(strstr(pd_error_msg(), "compute capability 8.9") &&
                     strstr(pd_error_msg(), "sm_90 (machine code); compute_90 (PTX for 9.0 and later)") &&
                     strstr(pd_error_msg(), "\"89-real;90-real;90-virtual\""),
                 "message: %s", pd_error_msg());
    PD_CHECK(pd_cuda_policy_arch_fit(archs, 8, 6, NULL, 0) == PD_CUDA_ARCH_NONE);
}

static void test_architecture_forms(void) {
    char built[256];
    /* "XY" alone: machine code and PTX */
    PD_CHECK(pd_cuda_policy_arch_fit("86", 8, 9, built, sizeof built) == PD_CUDA_ARCH_MACHINE_CODE);
    PD_CHECK_MSG(!strcmp(built, "sm_86 (machine code); compute_86 (PTX for 8.6 and later)"), "built: %s", built);
    PD_CHECK(pd_cuda_policy_arch_fit("86", 8, 0, NULL, 0) == PD_CUDA_ARCH_NONE); /* cubins run on later minors only */
    PD_CHECK(pd_cuda_policy_arch_fit("86", 9, 0, NULL, 0) == PD_CUDA_ARCH_PTX);
    /* machine code does not cross majors */
    PD_CHECK(pd_cuda_policy_arch_fit("80-real", 9, 0, NULL, 0) == PD_CUDA_ARCH_NONE);
    PD_CHECK(pd_cuda_policy_arch_fit("80-virtual", 9, 0, NULL, 0) == PD_CUDA_ARCH_PTX);
    /* "a": this exact device; "f": its family */
    PD_CHECK(pd_cuda_policy_arch_fit("90a-real", 9, 0, NULL, 0) == PD_CUDA_ARCH_MACHINE_CODE);
    PD_CHECK(pd_cuda_policy_arch_fit("90a", 10, 0, built, sizeof built) == PD_CUDA_ARCH_NONE);
    PD_CHECK_MSG(strstr(built, "sm_90a") && strstr(built, "compute_90a (PTX for 9.0 only)"), "built: %s", built);
    PD_CHECK(pd_cuda_policy_arch_fit("100f-real", 10, 3, NULL, 0) == PD_CUDA_ARCH_MACHINE_CODE);
    PD_CHECK(pd_cuda_policy_arch_fit("100f", 12, 0, NULL, 0) == PD_CUDA_ARCH_NONE);
    PD_CHECK(pd_cuda_policy_arch_fit("120-real", 12, 0, NULL, 0) == PD_CUDA_ARCH_MACHINE_CODE);
    /* lists CMake resolves elsewhere, or nothing at all: the device decides */
    const char *unknown[] = {"native", "all", "all-major", "OFF", "", "90-real;native", "9", "90-fake", "90x"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        PD_CHECK_MSG(pd_cuda_policy_arch_fit(unknown[i], 7, 5, NULL, 0) == PD_CUDA_ARCH_UNKNOWN, "'%s'", unknown[i]);
        PD_CHECK_OK(pd_cuda_policy_check_arch(unknown[i], "cuda:0", 7, 5));
    }
    PD_CHECK(pd_cuda_policy_arch_fit(NULL, 9, 0, NULL, 0) == PD_CUDA_ARCH_UNKNOWN);
}

static void test_sdpa_refusals(void) {
    /* every NOT_SUPPORTED and BAD_PARAM sub-code, at either step: the same fall back */
    for (int executing = 0; executing <= 1; executing++) {
        for (int code = 3000; code <= 3014; code++)
            PD_CHECK_MSG(pd_cuda_policy_sdpa_action(code, executing) == PD_SDPA_FALL_BACK, "%d at %s", code,
                         executing ? "execute" : "build");
        for (int code = 2000; code <= 2012; code++)
            PD_CHECK_MSG(pd_cuda_policy_sdpa_action(code, executing) == PD_SDPA_FALL_BACK, "%d at %s", code,
                         executing ? "execute" : "build");
        PD_CHECK(pd_cuda_policy_sdpa_action(0, executing) == PD_SDPA_RUN);
        PD_CHECK(pd_cuda_policy_sdpa_action(4003, executing) == PD_SDPA_NOMEM);
        PD_CHECK(pd_cuda_policy_sdpa_action(4004, executing) == PD_SDPA_NOMEM);
    }
    /* other failures: nothing ran at build (fall back); while executing the device may be broken */
    PD_CHECK(pd_cuda_policy_sdpa_action(4000, false) == PD_SDPA_FALL_BACK);
    PD_CHECK(pd_cuda_policy_sdpa_action(4001, false) == PD_SDPA_FALL_BACK);
    PD_CHECK(pd_cuda_policy_sdpa_action(4000, true) == PD_SDPA_FAIL);
    PD_CHECK(pd_cuda_policy_sdpa_action(5000, true) == PD_SDPA_FAIL);
    PD_CHECK(pd_cuda_policy_sdpa_action(5003, true) == PD_SDPA_FAIL);
    PD_CHECK(pd_cuda_policy_sdpa_action(1001, true) == PD_SDPA_FAIL);
}

static void test_conv_weight_cache(void) {
    static uint16_t blob[64]; /* stands for a device blob: the test only compares addresses */
    int64_t s16 = 16, s64 = 64;
    pd_tensor whole = pd_tensor_view(blob, PD_DTYPE_BF16, 1, &s64);
    whole.owns_data = true; /* as the backend's tensor_alloc / import_weight make it */
    pd_tensor view = pd_tensor_slice(&whole, 0, 16, 16);
    view.owns_data = false; /* a slice of a shared blob */
    pd_tensor f32 = pd_tensor_view(blob, PD_DTYPE_F32, 1, &s16);
    PD_CHECK(pd_cuda_policy_conv_weight(&whole) == PD_CONV_WEIGHT_KEEP);
    PD_CHECK(pd_cuda_policy_conv_weight(&view) == PD_CONV_WEIGHT_PER_CALL);
    PD_CHECK(pd_cuda_policy_conv_weight(&f32) == PD_CONV_WEIGHT_AS_IS);
    pd_tensor f16 = whole;
    f16.dtype = PD_DTYPE_F16;
    PD_CHECK(pd_cuda_policy_conv_weight(&f16) == PD_CONV_WEIGHT_KEEP);

    const pd_cuda_conv_kept k = {.src = blob, .dtype = PD_DTYPE_BF16, .n = 64};
    PD_CHECK(pd_cuda_policy_conv_kept_matches(&k, &whole));
    PD_CHECK(!pd_cuda_policy_conv_kept_matches(&k, &f16)); /* same bytes, other dtype */
    pd_tensor half = pd_tensor_slice(&whole, 0, 0, 32);
    PD_CHECK(!pd_cuda_policy_conv_kept_matches(&k, &half)); /* same address, fewer elements */
    /* a write or free of any overlapping bytes voids it; neighbours do not */
    PD_CHECK(pd_cuda_policy_conv_kept_void(&k, blob, sizeof blob));
    PD_CHECK(pd_cuda_policy_conv_kept_void(&k, blob + 20, 2));        /* upload into a slice of it */
    PD_CHECK(pd_cuda_policy_conv_kept_void(&k, blob + 63, 2));        /* its last element */
    PD_CHECK(!pd_cuda_policy_conv_kept_void(&k, blob + 64, 16));      /* just after */
    PD_CHECK(!pd_cuda_policy_conv_kept_void(&k, (const void *)((uintptr_t)blob - 8), 8)); /* just before */
    PD_CHECK(!pd_cuda_policy_conv_kept_void(&k, blob, 0));
    /* the span a write into a strided view can touch */
    PD_CHECK(pd_cuda_policy_span_bytes(&whole) == sizeof blob);
    const int64_t sh[2] = {4, 8};
    pd_tensor m = pd_tensor_view(blob, PD_DTYPE_BF16, 2, sh);
    pd_tensor col = pd_tensor_slice(&m, 1, 2, 3); /* rows of 8, 3 columns from column 2 */
    PD_CHECK(pd_cuda_policy_span_bytes(&col) == (size_t)(3 * 16 + 3 * 2));
    pd_tensor none = pd_tensor_slice(&m, 0, 0, 0);
    PD_CHECK(pd_cuda_policy_span_bytes(&none) == 0);
}

int main(void) {
    PD_RUN(test_default_architectures);
    PD_RUN(test_hopper_only_build);
    PD_RUN(test_architecture_forms);
    PD_RUN(test_sdpa_refusals);
    PD_RUN(test_conv_weight_cache);
    return pd_test_summary();
}
