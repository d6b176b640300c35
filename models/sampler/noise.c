#include "models/sampler/noise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

#define PD_PHILOX_M0 0xD2511F53u
#define PD_PHILOX_M1 0xCD9E8D57u
#define PD_PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PD_PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

void pd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r > 0) { /* the key schedule bumps before every round but the first */
            k0 += PD_PHILOX_W0;
            k1 += PD_PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PD_PHILOX_M0 * c0, p1 = (uint64_t)PD_PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static double pd_unit53(uint32_t lo, uint32_t hi) {
    uint64_t w = ((uint64_t)hi << 32) | lo;
    return ((double)(w >> 11) + 0.5) * 0x1.0p-53; /* in (0, 1): log never sees 0 */
}

void pd_noise_fill(float *dst, int64_t start, int64_t n, uint64_t seed) {
    PD_ASSERT(start >= 0 && n >= 0);
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (int64_t i = start; i < start + n;) {
        uint64_t block = (uint64_t)i >> 1;
        uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0}, w[4];
        pd_philox4x32_10(ctr, key, w);
        double r = sqrt(-2.0 * log(pd_unit53(w[0], w[1])));
        double th = 2.0 * M_PI * pd_unit53(w[2], w[3]);
        if (!(i & 1)) {
            dst[i - start] = (float)(r * cos(th));
            if (++i == start + n) break;
        }
        dst[i - start] = (float)(r * sin(th));
        i++;
    }
}

/* ---- torch-cpu ---- */


pd_status pd_noise_kind_parse(const char *s, pd_noise_kind *out) {
    if (s && !strcmp(s, "philox")) *out = PD_NOISE_PHILOX;
    else if (s && !strcmp(s, "torch-cpu")) *out = PD_NOISE_TORCH_CPU;
    else return pd_error_set(PD_ERR_INVALID, "noise: unknown generator '%s' (expected philox or torch-cpu)", s ? s : "");
    return PD_OK;
}

const char *pd_noise_kind_name(pd_noise_kind k) {
    switch (k) {
    case PD_NOISE_PHILOX: return "philox";
    case PD_NOISE_TORCH_CPU: return "torch-cpu";
    }
    return "unknown";
}

enum { PD_MT_N = 624, PD_MT_M = 397 };

typedef struct pd_mt19937 {
    uint32_t s[PD_MT_N];
    int next;
    int64_t drawn; /* words returned so far */
} pd_mt19937;

static void pd_mt_seed(pd_mt19937 *mt, uint32_t seed) {
    mt->s[0] = seed;
    for (uint32_t j = 1; j < PD_MT_N; j++) mt->s[j] = 1812433253u * (mt->s[j - 1] ^ (mt->s[j - 1] >> 30)) + j;
    mt->next = PD_MT_N;
    mt->drawn = 0;
}

static void pd_mt_twist(pd_mt19937 *mt) {
    for (int k = 0; k < PD_MT_N; k++) {
        uint32_t y = (mt->s[k] & 0x80000000u) | (mt->s[(k + 1) % PD_MT_N] & 0x7fffffffu);
        mt->s[k] = mt->s[(k + PD_MT_M) % PD_MT_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    mt->next = 0;
}

static uint32_t pd_mt_word(pd_mt19937 *mt) {
    if (mt->next >= PD_MT_N) pd_mt_twist(mt);
    uint32_t y = mt->s[mt->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    mt->drawn++;
    return y;
}

/* Skips words until `drawn` reaches k (k >= drawn). */
static void pd_mt_skip_to(pd_mt19937 *mt, int64_t k) {
    PD_ASSERT(k >= mt->drawn);
    while (mt->drawn < k) {
        int64_t left = PD_MT_N - mt->next;
        if (left <= 0) {
            pd_mt_twist(mt);
            continue;
        }
        int64_t take = k - mt->drawn < left ? k - mt->drawn : left;
        mt->next += (int)take;
        mt->drawn += take;
    }
}

static float pd_u24(uint32_t w) { return (float)(w & 0xffffffu) * 0x1.0p-24f; }

static float pd_f32_of(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t pd_bits_of(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* The Cephes float log of torch's AVX2 kernel for x in (0, 1] (normal numbers only). One operation per
 * statement, fmaf where that build fuses a multiply into the following add. */
static float pd_cephes_logf(float x) {
    uint32_t b = pd_bits_of(x);
    float e = (float)((int32_t)(b >> 23) - 0x7f);
    e = e + 1.0f;
    x = pd_f32_of((b & ~0x7f800000u) | pd_bits_of(0.5f)); /* mantissa in [0.5, 1) */
    const int small = x < 0.707106781186547524f;
    const float keep = small ? x : 0.0f;
    x = x - 1.0f;
    e = e - (small ? 1.0f : 0.0f);
    x = x + keep;
    const float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, 1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, 2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, 3.3333331174E-1f);
    y = y * x;
    const float eq1 = e * -2.12194440e-4f;
    y = fmaf(y, z, eq1);
    y = fmaf(-z, 0.5f, y);
    x = x + y;
    x = fmaf(e, 0.693359375f, x);
    return x;
}

/* sin and cos of x in [0, 2 pi) as torch's AVX2 sincos computes them (Cephes, three-part pi/4). */
static void pd_cephes_sincosf(float x, float *s, float *c) {
    const float y0 = x * 1.27323954473516f; /* 4 / pi */
    int32_t j = (int32_t)y0;
    j = (j + 1) & ~1;
    const float y = (float)j;
    const uint32_t sin_sign = ((uint32_t)j & 4u) << 29;
    const uint32_t cos_sign = (~(uint32_t)(j - 2) & 4u) << 29;
    const int use_sin_poly_for_sin = (j & 2) == 0;
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    const float z = x * x;
    float yc = 2.443315711809948E-005f;
    yc = fmaf(yc, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    const float half_z = z * 0.5f;
    yc = fmaf(yc, z, -half_z);
    yc = yc + 1.0f;
    float ys = -1.9515295891E-4f;
    ys = fmaf(ys, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    const float vs = use_sin_poly_for_sin ? ys : yc, vc = use_sin_poly_for_sin ? yc : ys;
    *s = pd_f32_of(pd_bits_of(vs + 0.0f) ^ sin_sign);
    *c = pd_f32_of(pd_bits_of(vc + 0.0f) ^ cos_sign);
}

/* Box-Muller over one group of 16 uniforms, in place (torch's normal_fill_16). */
static void pd_torch_fill16(float u[16]) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - u[j];
        const float l = pd_cephes_logf(u1);
        const float radius = sqrtf(-2.0f * l);
        const float theta = two_pi * u[j + 8];
        float sn, cs;
        pd_cephes_sincosf(theta, &sn, &cs);
        u[j] = radius * cs + 0.0f;
        u[j + 8] = radius * sn + 0.0f;
    }
}

static double pd_u53(pd_mt19937 *mt) {
    const uint64_t hi = pd_mt_word(mt), lo = pd_mt_word(mt);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * 0x1.0p-53;
}

void pd_noise_fill_torch(float *dst, int64_t start, int64_t n, int64_t total, uint64_t seed) {
    PD_ASSERT(start >= 0 && n >= 0 && start + n <= total);
    if (n == 0) return;
    pd_mt19937 *mt = malloc(sizeof *mt);
    PD_ASSERT(mt); /* 2.5 KB */
    pd_mt_seed(mt, (uint32_t)seed);
    const int64_t end = start + n;
    if (total < 16) { /* the scalar path: double Box-Muller pairs, cos then sin */
        float all[16];
        for (int64_t i = 0; i < total; i += 2) {
            const double u1 = pd_u53(mt), u2 = pd_u53(mt);
            const double r = sqrt(-2.0 * log(1.0 - u2));
            const double th = 2.0 * 3.14159265358979323846 * u1;
            all[i] = (float)(r * cos(th));
            if (i + 1 < total) all[i + 1] = (float)(r * sin(th));
        }
        memcpy(dst, all + start, sizeof(float) * (size_t)n);
        free(mt);
        return;
    }
    const int64_t tail = total % 16 ? total - 16 : total; /* elements from here on come from the redo */
    float g[16];
    for (int64_t g0 = start / 16 * 16; g0 < end && g0 < tail; g0 += 16) {
        pd_mt_skip_to(mt, g0);
        for (int k = 0; k < 16; k++) g[k] = pd_u24(pd_mt_word(mt));
        pd_torch_fill16(g);
        for (int64_t i = g0 > start ? g0 : start; i < g0 + 16 && i < end && i < tail; i++) dst[i - start] = g[i - g0];
    }
    if (end > tail) {
        pd_mt_skip_to(mt, total);
        for (int k = 0; k < 16; k++) g[k] = pd_u24(pd_mt_word(mt));
        pd_torch_fill16(g);
        for (int64_t i = start > tail ? start : tail; i < end; i++) dst[i - start] = g[i - tail];
    }
    free(mt);
}

void pd_noise_generate(pd_noise_kind kind, float *dst, int64_t start, int64_t n, int64_t total, uint64_t seed) {
    PD_ASSERT(start >= 0 && n >= 0 && start + n <= total);
    if (kind == PD_NOISE_TORCH_CPU) pd_noise_fill_torch(dst, start, n, total, seed);
    else pd_noise_fill(dst, start, n, seed);
}
