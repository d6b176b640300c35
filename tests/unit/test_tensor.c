/* Tensors: bf16/f16 conversions against independent references (exhaustive where the space allows),
 * strided and converting copies, reshape/slice rules, allocation errors, and the activation arena. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/arena.h"
#include "engine/backend.h"
#include "engine/tensor.h"
#include "tests/unit/test.h"

static float f_of(uint32_t u) {
    union { uint32_t u; float f; } v = {.u = u};
    return v.f;
}
static uint32_t u_of(float f) {
    union { uint32_t u; float f; } v = {.f = f};
    return v.u;
}

/* ---- independent references ---- */

/* f16 bits -> value by the IEEE formula. */
static double ref_f16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1024.0 + m, e - 25);
    return s ? -v : v;
}

/* Nearest f16 to a finite f32 (ties to even), by search over the ordered positive codes. */
static uint16_t ref_f32_to_f16(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00; /* at or past the midpoint between 65504 and 2^16 */
    unsigned lo = 0, hi = 0x7bff;           /* largest code with value <= a */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (ref_f16_value((uint16_t)mid) <= a) lo = mid;
        else hi = mid - 1;
    }
    if (lo == 0x7bff) return sign | 0x7bff;
    double d0 = a - ref_f16_value((uint16_t)lo), d1 = ref_f16_value((uint16_t)(lo + 1)) - a;
    unsigned r = d0 < d1 ? lo : d1 < d0 ? lo + 1 : (lo & 1 ? lo + 1 : lo);
    return (uint16_t)(sign | r);
}

/* Nearest bf16 to a finite f32 (ties to even): candidates are the truncation and the next code. */
static uint16_t ref_f32_to_bf16(float f) {
    uint32_t u = u_of(f);
    uint16_t t = (uint16_t)(u >> 16);
    double a = fabs((double)f), lo = fabs((double)f_of((uint32_t)t << 16));
    uint16_t up = (uint16_t)(t + 1);
    double hi = ((up & 0x7f80) == 0x7f80) ? ldexp(1.0, 128) : fabs((double)f_of((uint32_t)up << 16));
    double d0 = a - lo, d1 = hi - a;
    return d0 < d1 ? t : d1 < d0 ? up : (t & 1 ? up : t);
}

static void test_bf16_cases(void) {
    PD_CHECK(pd_f32_to_bf16(1.0f) == 0x3f80);
    PD_CHECK(pd_f32_to_bf16(-2.0f) == 0xc000);
    PD_CHECK(pd_f32_to_bf16(f_of(0x3f808000)) == 0x3f80); /* 1 + 2^-8: tie, to even (down) */
    PD_CHECK(pd_f32_to_bf16(f_of(0x3f818000)) == 0x3f82); /* tie from an odd code: up */
    PD_CHECK(pd_f32_to_bf16(f_of(0x3f808001)) == 0x3f81); /* just past the tie: up */
    PD_CHECK(pd_f32_to_bf16(INFINITY) == 0x7f80);
    PD_CHECK(pd_f32_to_bf16(-INFINITY) == 0xff80);
    PD_CHECK(pd_f32_to_bf16(f_of(0x7f7fffff)) == 0x7f80); /* FLT_MAX rounds to inf */
    PD_CHECK(pd_f32_to_bf16(f_of(0x00010000)) == 0x0001); /* f32 subnormal */
    PD_CHECK(pd_f32_to_bf16(f_of(0x80000000)) == 0x8000);
    uint16_t qn = pd_f32_to_bf16(NAN), sn = pd_f32_to_bf16(f_of(0x7f800001)); /* a signalling NaN must not become inf */
    PD_CHECK((qn & 0x7f80) == 0x7f80 && (qn & 0x7f));
    PD_CHECK((sn & 0x7f80) == 0x7f80 && (sn & 0x7f));
    PD_CHECK(isnan(pd_bf16_to_f32(sn)));
}

static void test_bf16_exhaustive(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) { /* bf16 -> f32 -> bf16 */
        float f = pd_bf16_to_f32((uint16_t)h);
        PD_CHECK(u_of(f) == h << 16);
        uint16_t back = pd_f32_to_bf16(f);
        if (isnan(f)) bad += !isnan(pd_bf16_to_f32(back));
        else bad += back != h;
    }
    PD_CHECK_MSG(bad == 0, "%d bf16 codes do not round-trip", bad);
    /* f32 -> bf16 over a sweep of bit patterns against the reference */
    int wrong = 0;
    uint32_t first_wrong = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 4093) {
        float f = f_of((uint32_t)u);
        if (isnan(f)) continue;
        if (pd_f32_to_bf16(f) != ref_f32_to_bf16(f) && !wrong++) first_wrong = (uint32_t)u;
    }
    for (uint32_t k = 0; k < (1u << 16); k++) { /* every tie and near-tie around a range of codes */
        uint32_t base = (0x3f80u + k % 512u) << 16 | (k & 0x8000u ? 0x8000u : 0x7fffu);
        float f = f_of(base ^ (k & 1 ? 0x80000000u : 0));
        if (pd_f32_to_bf16(f) != ref_f32_to_bf16(f) && !wrong++) first_wrong = u_of(f);
    }
    PD_CHECK_MSG(wrong == 0, "%d f32 values round wrongly to bf16, first 0x%08x", wrong, first_wrong);
}

static void test_f16_exhaustive(void) {
    int bad_val = 0, bad_rt = 0;
    for (uint32_t h = 0; h < 65536; h++) { /* f16 -> f32 matches the formula, then round-trips */
        float f = pd_f16_to_f32((uint16_t)h);
        double r = ref_f16_value((uint16_t)h);
        if (isnan(r)) bad_val += !isnan(f);
        else bad_val += (double)f != r || (signbit(f) != 0) != (int)(h >> 15);
        uint16_t back = pd_f32_to_f16(f);
        if (isnan(r)) bad_rt += !((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        else bad_rt += back != h;
    }
    PD_CHECK_MSG(bad_val == 0, "%d f16 codes decode wrongly", bad_val);
    PD_CHECK_MSG(bad_rt == 0, "%d f16 codes do not round-trip", bad_rt);
}

static void test_f16_rounding(void) {
    PD_CHECK(pd_f32_to_f16(65504.0f) == 0x7bff);
    PD_CHECK(pd_f32_to_f16(65519.996f) == 0x7bff);
    PD_CHECK(pd_f32_to_f16(65520.0f) == 0x7c00);
    PD_CHECK(pd_f32_to_f16(-1e9f) == 0xfc00);
    PD_CHECK(pd_f32_to_f16(INFINITY) == 0x7c00);
    PD_CHECK(pd_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001); /* smallest subnormal */
    PD_CHECK(pd_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000); /* tie with 0: to even */
    PD_CHECK(pd_f32_to_f16(ldexpf(1.5f, -25)) == 0x0001);
    PD_CHECK(pd_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002); /* 1.5 ulp: tie, to even */
    PD_CHECK(pd_f32_to_f16(ldexpf(1.0f, -14)) == 0x0400); /* smallest normal */
    PD_CHECK(pd_f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400); /* rounds up across the subnormal edge */
    PD_CHECK(pd_f32_to_f16(-0.0f) == 0x8000);
    uint16_t n = pd_f32_to_f16(NAN);
    PD_CHECK((n & 0x7c00) == 0x7c00 && (n & 0x3ff));
    int wrong = 0;
    uint32_t first = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 65521) {
        float f = f_of((uint32_t)u);
        if (isnan(f)) continue;
        if (pd_f32_to_f16(f) != ref_f32_to_f16(f) && !wrong++) first = (uint32_t)u;
    }
    /* every f32 in the exponent range of f16 subnormals and small normals, strided finely */
    for (uint32_t u = 0x33000000u; u < 0x39000000u; u += 37) {
        float f = f_of(u);
        if (pd_f32_to_f16(f) != ref_f32_to_f16(f) && !wrong++) first = u;
    }
    /* the exact midpoints between neighbouring f16 codes and their f32 neighbours */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float mid = (float)((ref_f16_value((uint16_t)h) + ref_f16_value((uint16_t)(h + 1))) / 2);
        float fs[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int i = 0; i < 3; i++)
            if (pd_f32_to_f16(fs[i]) != ref_f32_to_f16(fs[i]) && !wrong++) first = u_of(fs[i]);
    }
    PD_CHECK_MSG(wrong == 0, "%d f32 values round wrongly to f16, first 0x%08x", wrong, first);
}

static void test_convert_arrays(void) {
    float src[5] = {1.0f, -0.333333f, 65504.0f, 1e-8f, 3.14159f}, back[5];
    uint16_t h[5];
    pd_convert_from_f32(h, PD_DTYPE_BF16, src, 5);
    pd_convert_to_f32(back, h, PD_DTYPE_BF16, 5);
    for (int i = 0; i < 5; i++) PD_CHECK(h[i] == pd_f32_to_bf16(src[i]) && back[i] == pd_bf16_to_f32(h[i]));
    pd_convert_from_f32(h, PD_DTYPE_F16, src, 5);
    pd_convert_to_f32(back, h, PD_DTYPE_F16, 5);
    for (int i = 0; i < 5; i++) PD_CHECK(h[i] == pd_f32_to_f16(src[i]) && back[i] == pd_f16_to_f32(h[i]));
    pd_convert_from_f32(back, PD_DTYPE_F32, src, 5);
    PD_CHECK(!memcmp(back, src, sizeof src));
}

/* ---- tensors ---- */

static void test_basics(void) {
    PD_CHECK(pd_dtype_size(PD_DTYPE_F32) == 4 && pd_dtype_size(PD_DTYPE_BF16) == 2 && pd_dtype_size(PD_DTYPE_I64) == 8);
    pd_dtype dt;
    PD_CHECK_OK(pd_dtype_parse("BF16", &dt));
    PD_CHECK(dt == PD_DTYPE_BF16 && !strcmp(pd_dtype_name(dt), "BF16"));
    PD_CHECK_ERR(pd_dtype_parse("F64", &dt), PD_ERR_UNSUPPORTED);
    int64_t s[3] = {2, 3, 4};
    pd_tensor t;
    PD_CHECK_OK(pd_tensor_alloc(&t, PD_DTYPE_F16, 3, s));
    PD_CHECK(pd_tensor_numel(&t) == 24 && pd_tensor_nbytes(&t) == 48 && pd_tensor_is_contiguous(&t));
    PD_CHECK(t.stride[0] == 24 && t.stride[1] == 8 && t.stride[2] == 2 && ((uintptr_t)t.data & 63) == 0);
    char buf[64];
    PD_CHECK(!strcmp(pd_tensor_describe(&t, buf, sizeof buf), "(2, 3, 4) F16"));
    pd_tensor scalar = pd_tensor_view(buf, PD_DTYPE_F32, 0, NULL);
    PD_CHECK(pd_tensor_numel(&scalar) == 1 && !strcmp(pd_tensor_describe(&scalar, buf + 8, 32), "() F32"));
    pd_tensor_free(&t);
    PD_CHECK(t.data == NULL);
    pd_tensor_free(&t); /* cleared struct: a no-op */
    PD_CHECK_ERR(pd_tensor_alloc(&t, PD_DTYPE_F32, 6, s), PD_ERR_INVALID);
    int64_t neg[2] = {3, -1};
    PD_CHECK_ERR(pd_tensor_alloc(&t, PD_DTYPE_F32, 2, neg), PD_ERR_INVALID);
    int64_t zero[2] = {0, 5};
    PD_CHECK_OK(pd_tensor_alloc(&t, PD_DTYPE_F32, 2, zero));
    PD_CHECK(pd_tensor_numel(&t) == 0);
    pd_tensor_free(&t);
}

static void test_reshape_slice(void) {
    int64_t s[3] = {4, 5, 6};
    pd_tensor t;
    PD_CHECK_OK(pd_tensor_alloc(&t, PD_DTYPE_F32, 3, s));
    for (int i = 0; i < 120; i++) ((float *)t.data)[i] = (float)i;
    pd_tensor sl = pd_tensor_slice(&t, 1, 2, 2); /* (4, 2, 6) */
    PD_CHECK(sl.shape[1] == 2 && sl.stride[1] == 24 && !sl.owns_data && ((float *)sl.data)[0] == 12.0f);
    PD_CHECK(!pd_tensor_is_contiguous(&sl));
    int64_t flat[1] = {48};
    PD_CHECK_ERR(pd_tensor_reshape(&sl, 1, flat), PD_ERR_INVALID); /* strided */
    pd_tensor r = t;
    int64_t bad[2] = {7, 17};
    PD_CHECK_ERR(pd_tensor_reshape(&r, 2, bad), PD_ERR_INVALID); /* element count */
    int64_t six[6] = {1, 1, 1, 1, 1, 120};
    PD_CHECK_ERR(pd_tensor_reshape(&r, 6, six), PD_ERR_INVALID); /* rank */
    int64_t good[2] = {20, 6};
    PD_CHECK_OK(pd_tensor_reshape(&r, 2, good));
    PD_CHECK(r.shape[0] == 20 && r.stride[0] == 24 && r.stride[1] == 4 && r.data == t.data);
    pd_tensor row = pd_tensor_slice(&t, 0, 3, 1); /* (1, 5, 6): contiguous */
    PD_CHECK(pd_tensor_is_contiguous(&row) && ((float *)row.data)[0] == 90.0f);
    pd_tensor empty = pd_tensor_slice(&t, 2, 6, 0);
    PD_CHECK(pd_tensor_numel(&empty) == 0);
    /* an out-of-range slice is a bug: it aborts */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        pd_tensor_slice(&t, 1, 4, 2);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    PD_CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "out-of-range slice did not abort");
    pd_tensor_free(&t);
}

/* Fills a (2, 3, 4) tensor with value 100a + 10b + c. */
static void fill_abc(pd_tensor *t) {
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 4; c++) {
                float v = (float)(100 * a + 10 * b + c) + 0.3f;
                pd_convert_from_f32((char *)t->data + a * t->stride[0] + b * t->stride[1] + c * t->stride[2], t->dtype, &v, 1);
            }
}

static void test_copy(void) {
    int64_t s[3] = {2, 3, 4};
    static const pd_dtype dts[3] = {PD_DTYPE_F32, PD_DTYPE_BF16, PD_DTYPE_F16};
    for (int si = 0; si < 3; si++)
        for (int di = 0; di < 3; di++) {
            pd_tensor src, dst;
            PD_CHECK_OK(pd_tensor_alloc(&src, dts[si], 3, s));
            fill_abc(&src);
            /* view of src as (4, 2, 3): permutation (c, a, b) */
            pd_tensor v = src;
            v.shape[0] = 4, v.shape[1] = 2, v.shape[2] = 3;
            v.stride[0] = src.stride[2], v.stride[1] = src.stride[0], v.stride[2] = src.stride[1];
            int64_t ds[3] = {4, 2, 3};
            PD_CHECK_OK(pd_tensor_alloc(&dst, dts[di], 3, ds));
            PD_CHECK_OK(pd_tensor_copy(&dst, &v));
            int bad = 0;
            for (int c = 0; c < 4; c++)
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 3; b++) {
                        float want = (float)(100 * a + 10 * b + c) + 0.3f, got;
                        /* the value stored in src's dtype, then in dst's */
                        uint16_t h;
                        if (dts[si] == PD_DTYPE_BF16) want = pd_bf16_to_f32(pd_f32_to_bf16(want));
                        if (dts[si] == PD_DTYPE_F16) want = pd_f16_to_f32(pd_f32_to_f16(want));
                        if (dts[di] == PD_DTYPE_BF16) want = pd_bf16_to_f32(pd_f32_to_bf16(want));
                        if (dts[di] == PD_DTYPE_F16) want = pd_f16_to_f32(pd_f32_to_f16(want));
                        int64_t idx = (c * 2 + a) * 3 + b;
                        if (dts[di] == PD_DTYPE_F32) got = ((float *)dst.data)[idx];
                        else {
                            h = ((uint16_t *)dst.data)[idx];
                            got = dts[di] == PD_DTYPE_BF16 ? pd_bf16_to_f32(h) : pd_f16_to_f32(h);
                        }
                        bad += got != want;
                    }
            PD_CHECK_MSG(bad == 0, "%s -> %s transposed copy: %d wrong", pd_dtype_name(dts[si]), pd_dtype_name(dts[di]), bad);
            pd_tensor_free(&src);
            pd_tensor_free(&dst);
        }
    /* copy into a strided destination: column 1..2 of a (3, 5) i32 tensor, from a (3, 2) source */
    int32_t big[15] = {0}, small[6] = {1, 2, 3, 4, 5, 6};
    pd_tensor bt = pd_tensor_view(big, PD_DTYPE_I32, 2, (int64_t[]){3, 5});
    pd_tensor st = pd_tensor_view(small, PD_DTYPE_I32, 2, (int64_t[]){3, 2});
    pd_tensor dv = pd_tensor_slice(&bt, 1, 1, 2);
    PD_CHECK_OK(pd_tensor_copy(&dv, &st));
    static const int32_t want[15] = {0, 1, 2, 0, 0, 0, 3, 4, 0, 0, 0, 5, 6, 0, 0};
    PD_CHECK(!memcmp(big, want, sizeof want));
    /* errors */
    float f6[6];
    pd_tensor ft = pd_tensor_view(f6, PD_DTYPE_F32, 2, (int64_t[]){3, 2});
    PD_CHECK_ERR(pd_tensor_copy(&ft, &st), PD_ERR_INVALID); /* i32 -> f32 */
    pd_tensor f23 = pd_tensor_view(f6, PD_DTYPE_F32, 2, (int64_t[]){2, 3});
    PD_CHECK_ERR(pd_tensor_copy(&f23, &ft), PD_ERR_INVALID); /* shape */
    pd_tensor f1 = pd_tensor_view(f6, PD_DTYPE_F32, 1, (int64_t[]){6});
    PD_CHECK_ERR(pd_tensor_copy(&f1, &ft), PD_ERR_INVALID); /* rank */
}

/* ---- arena ---- */

static void test_arena(void) {
    pd_backend *be = NULL;
    PD_CHECK_OK(pd_backend_cpu_create(1, &be));
    if (!be) return;
    pd_arena *a = NULL;
    PD_CHECK_OK(pd_arena_create(be, 1024, &a));
    PD_CHECK(pd_arena_reserved(a) == 0 && pd_arena_mark(a) == 0);
    pd_tensor t1, t2, t3, big;
    PD_CHECK_OK(pd_arena_tensor(a, &t1, PD_DTYPE_F32, 1, (int64_t[]){10})); /* 40 -> 64 bytes */
    size_t m1 = pd_arena_mark(a);
    PD_CHECK(m1 == 64 && pd_arena_reserved(a) == 1024);
    PD_CHECK_OK(pd_arena_tensor(a, &t2, PD_DTYPE_BF16, 2, (int64_t[]){3, 7}));
    PD_CHECK(((uintptr_t)t1.data & 63) == 0 && ((uintptr_t)t2.data & 63) == 0);
    PD_CHECK((char *)t2.data == (char *)t1.data + 64 && !t2.owns_data && pd_tensor_is_contiguous(&t2));
    /* a request bigger than a chunk gets its own; earlier tensors stay where they are */
    PD_CHECK_OK(pd_arena_tensor(a, &big, PD_DTYPE_F32, 1, (int64_t[]){1000}));
    PD_CHECK(pd_arena_reserved(a) == 1024 + 4032);
    memset(big.data, 0x5a, 4000);
    memset(t1.data, 0x11, 40);
    PD_CHECK(((unsigned char *)t2.data)[0] != 0x5a);
    size_t m2 = pd_arena_mark(a);
    PD_CHECK(m2 > m1);
    /* reset to m1 releases t2 and big: the next tensor lands where t2 was; no new memory */
    pd_arena_reset(a, m1);
    PD_CHECK(pd_arena_mark(a) == m1);
    PD_CHECK_OK(pd_arena_tensor(a, &t3, PD_DTYPE_F32, 1, (int64_t[]){5}));
    PD_CHECK(t3.data == t2.data);
    PD_CHECK_OK(pd_arena_tensor(a, &t2, PD_DTYPE_F32, 1, (int64_t[]){1000})); /* reuses the big chunk */
    PD_CHECK(t2.data == big.data && pd_arena_reserved(a) == 1024 + 4032);
    /* reset to 0 and run the same sequence again: same addresses (a steady-state step allocates nothing) */
    pd_arena_reset(a, 0);
    pd_tensor u1;
    PD_CHECK_OK(pd_arena_tensor(a, &u1, PD_DTYPE_F32, 1, (int64_t[]){10}));
    PD_CHECK(u1.data == t1.data);
    /* growth: many small tensors fill chunks and add new ones; none overlap */
    pd_arena_reset(a, 0);
    char *prev_end = NULL;
    int overlaps = 0;
    for (int i = 0; i < 100; i++) {
        pd_tensor x;
        PD_CHECK_OK(pd_arena_tensor(a, &x, PD_DTYPE_F32, 1, (int64_t[]){50}));
        if (prev_end && (char *)x.data < prev_end && (char *)x.data + 200 > prev_end - 200) overlaps++;
        prev_end = (char *)x.data + 200;
        memset(x.data, i, 200);
    }
    PD_CHECK(overlaps == 0);
    PD_CHECK(pd_arena_reserved(a) >= 100 * 256);
    PD_CHECK_ERR(pd_arena_tensor(a, &t1, PD_DTYPE_F32, 2, (int64_t[]){3, -2}), PD_ERR_INVALID);
    pd_arena_free(a);
    pd_arena_free(NULL);
    pd_backend_free(be);
}

int main(void) {
    PD_RUN(test_bf16_cases);
    PD_RUN(test_bf16_exhaustive);
    PD_RUN(test_f16_exhaustive);
    PD_RUN(test_f16_rounding);
    PD_RUN(test_convert_arrays);
    PD_RUN(test_basics);
    PD_RUN(test_reshape_slice);
    PD_RUN(test_copy);
    PD_RUN(test_arena);
    return pd_test_summary();
}
