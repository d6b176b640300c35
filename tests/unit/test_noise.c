/* Seeded noise: Philox4x32-10 against Random123's published known-answer vectors, the Box-Muller
 * mapping against values derived by hand from a published vector, shard independence, and the
 * moments of the normal distribution; torch-cpu against values printed by torch 1.13
 * (torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed)), float.hex) and its shards.
 * tests/ref/test_torch_noise.sh compares many more shapes and seeds with a live torch through
 * `test_noise --torch-dump SEED TOTAL [START N]` (raw f32 on stdout). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/sampler/noise.h"
#include "tests/unit/test.h"

/* Random123 tests/kat_vectors, "philox4x32 10" lines: counter[4] key[2] -> output[4]. */
static const struct {
    uint32_t ctr[4], key[2], out[4];
} pd_kat[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000}, {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

static void test_philox_kat(void) {
    for (size_t c = 0; c < sizeof pd_kat / sizeof pd_kat[0]; c++) {
        uint32_t out[4];
        pd_philox4x32_10(pd_kat[c].ctr, pd_kat[c].key, out);
        for (int k = 0; k < 4; k++)
            PD_CHECK_MSG(out[k] == pd_kat[c].out[k], "vector %zu word %d: got %08x want %08x", c, k, out[k],
                         pd_kat[c].out[k]);
    }
}

/* Seed 0, elements 0 and 1 come from the all-zero block: Box-Muller of the published words. */
static void test_noise_from_kat(void) {
    const double u1 = ((double)((((uint64_t)0xe169c58du << 32) | 0x6627e8d5u) >> 11) + 0.5) / 9007199254740992.0;
    const double u2 = ((double)((((uint64_t)0x9b00dbd8u << 32) | 0xbc57ac4cu) >> 11) + 0.5) / 9007199254740992.0;
    const double r = sqrt(-2.0 * log(u1));
    const float want0 = (float)(r * cos(2.0 * M_PI * u2)), want1 = (float)(r * sin(2.0 * M_PI * u2));
    float got[2];
    pd_noise_fill(got, 0, 2, 0);
    PD_CHECK_MSG(got[0] == want0 && got[1] == want1, "got (%.9g, %.9g) want (%.9g, %.9g)", got[0], got[1], want0,
                 want1);
    float odd;
    pd_noise_fill(&odd, 1, 1, 0);
    PD_CHECK(odd == want1);
}

/* Any split of a range gives the same values as one call; seeds differ; values repeat. */
static void test_noise_shards(void) {
    enum { N = 1001 };
    static float whole[N], part[N], again[N], other[N];
    const uint64_t seed = 0x123456789abcdef0ull;
    pd_noise_fill(whole, 0, N, seed);
    const int64_t cuts[][2] = {{0, 1}, {1, 2}, {3, 3}, {6, 499}, {505, 1}, {506, N - 506}};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) pd_noise_fill(part + cuts[c][0], cuts[c][0], cuts[c][1], seed);
    PD_CHECK(!memcmp(whole, part, sizeof whole));
    pd_noise_fill(again, 0, N, seed);
    PD_CHECK(!memcmp(whole, again, sizeof whole));
    pd_noise_fill(other, 0, N, seed + 1);
    int same = 0;
    for (int i = 0; i < N; i++) same += other[i] == whole[i];
    PD_CHECK_MSG(same == 0, "%d equal values across seeds", same);
    /* high seed bits and a far-away start matter too */
    float hi[4], far[4];
    pd_noise_fill(hi, 0, 4, seed ^ (1ull << 63));
    PD_CHECK(memcmp(hi, whole, sizeof hi));
    pd_noise_fill(far, (int64_t)1 << 33, 4, seed);
    PD_CHECK(memcmp(far, whole, sizeof far));
    pd_noise_fill(part, 0, 0, seed); /* n = 0 writes nothing */
}

/* Moments of 2^20 samples against N(0, 1), each within 5 standard errors. */
static void test_noise_moments(void) {
    const int64_t n = (int64_t)1 << 20;
    float *z = malloc(sizeof(float) * (size_t)n);
    PD_CHECK(z != NULL);
    if (!z) return;
    pd_noise_fill(z, 12345, n, 42);
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0, tail = 0, pair = 0, lag = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = z[i];
        s1 += x;
        s2 += x * x;
        s3 += x * x * x;
        s4 += x * x * x * x;
        tail += fabs(x) > 1.959963985;
        if (i + 1 < n) lag += x * z[i + 1];
        if (!(i & 1) && i + 1 < n) pair += x * z[i + 1];
    }
    const double N = (double)n, mean = s1 / N, var = s2 / N - mean * mean;
    const double skew = s3 / N, kurt = s4 / N;
    PD_CHECK_MSG(fabs(mean) < 5 * sqrt(1 / N), "mean %g", mean);
    PD_CHECK_MSG(fabs(var - 1) < 5 * sqrt(2 / N), "variance %g", var);
    PD_CHECK_MSG(fabs(skew) < 5 * sqrt(15 / N), "third moment %g", skew);
    PD_CHECK_MSG(fabs(kurt - 3) < 5 * sqrt(96 / N), "fourth moment %g", kurt);
    PD_CHECK_MSG(fabs(tail / N - 0.05) < 5 * sqrt(0.05 * 0.95 / N), "two-sided 5%% tail %g", tail / N);
    PD_CHECK_MSG(fabs(lag / N) < 5 * sqrt(1 / N), "lag-1 correlation %g", lag / N);
    PD_CHECK_MSG(fabs(pair / (N / 2)) < 5 * sqrt(2 / N), "cos/sin pair correlation %g", pair / (N / 2));
    free(z);
}

/* From torch 1.13 (Debian's python3-torch): seed 42 (20 values, the vectorised path with a redone
 * tail), seed 7 (5 values, the scalar path) and seed 2^64 - 1 (33 values). */
static const double pd_torch42[20] = {
    0x1.ed4a52p+0,  0x1.7cbea6p+0,  0x1.cd2acep-1,  -0x1.0d81b6p+1, -0x1.8429c4p-1, 0x1.140ca0p+0, 0x1.9a0288p-1,
    0x1.ae3d26p+0,  0x1.6c668ap-2,  -0x1.5f8d0cp-1, -0x1.f93268p-2, 0x1.ee9126p-3,  -0x1.da5ddap-3, 0x1.561800p-5,
    -0x1.019cf4p-2, 0x1.b83f60p-1,  -0x1.3d2904p-2, -0x1.953522p-2, 0x1.9b5878p-1,  -0x1.3e41c0p-1};
static const double pd_torch7[5] = {-0x1.2ca2e8p-3, 0x1.92811cp-1, 0x1.e4c5cep-1, -0x1.1d45a6p+0, 0x1.b0d7a0p+0};
static const double pd_torch_max[33] = {
    -0x1.5507b4p+1, -0x1.174ef6p+0, 0x1.ce483cp-2,  0x1.d3aec6p-3,  0x1.e60bd2p+0,  0x1.906ffep+0,  -0x1.4161e0p+0,
    0x1.96588ap-1,  -0x1.c061f4p+0, -0x1.6b5a7cp-1, 0x1.37e04cp+0,  0x1.c72928p-3,  -0x1.42087ep+1, 0x1.ef5cbep-2,
    0x1.aefea6p-1,  0x1.209538p-3,  0x1.cb1c42p+0,  0x1.b8d89ep+0,  0x1.8a42bap-1,  -0x1.7b68b6p+0, -0x1.ba339ep-1,
    -0x1.a5f46ep-4, -0x1.37d25ep+0, -0x1.e86d3ap-1, 0x1.86bf4ep-1,  -0x1.ff324ap-1, 0x1.5d1734p-1,  -0x1.19c124p+0,
    0x1.8fef02p+0,  -0x1.e2c514p+0, -0x1.0c81cap+0, -0x1.6c0d54p-1, 0x1.4ab836p-5};

static void pd_check_torch(uint64_t seed, int n, const double *want) {
    float got[64];
    pd_noise_generate(PD_NOISE_TORCH_CPU, got, 0, n, n, seed);
    for (int i = 0; i < n; i++)
        PD_CHECK_MSG(got[i] == (float)want[i], "seed %llu n %d element %d: got %a want %a", (unsigned long long)seed, n, i,
                     (double)got[i], want[i]);
}

static void test_torch_known(void) {
    pd_check_torch(42, 20, pd_torch42);
    pd_check_torch(7, 5, pd_torch7);
    pd_check_torch(UINT64_MAX, 33, pd_torch_max);
    /* only the low 32 bits seed torch's MT19937 */
    pd_check_torch(42 + (5ull << 32), 20, pd_torch42);
}

/* Every shard of a torch-cpu stream equals the same slice of the whole, for totals on each path. */
static void test_torch_shards(void) {
    const int64_t totals[] = {1, 2, 15, 16, 17, 32, 33, 1001, 4096};
    for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++) {
        const int64_t n = totals[t];
        float *whole = malloc(sizeof(float) * (size_t)n), *part = malloc(sizeof(float) * (size_t)n);
        PD_CHECK(whole && part);
        if (!whole || !part) break;
        pd_noise_fill_torch(whole, 0, n, n, 99);
        for (int64_t cut = 1; cut <= 7; cut++) { /* cut the stream into pieces of about n/cut */
            int64_t a = 0;
            for (int k = 0; k < cut; k++) {
                int64_t b = k == cut - 1 ? n : n * (k + 1) / cut;
                pd_noise_fill_torch(part + a, a, b - a, n, 99);
                a = b;
            }
            PD_CHECK_MSG(!memcmp(whole, part, sizeof(float) * (size_t)n), "total %lld in %lld pieces", (long long)n,
                         (long long)cut);
        }
        free(whole);
        free(part);
    }
}

static void test_noise_kind_names(void) {
    pd_noise_kind k = PD_NOISE_PHILOX;
    PD_CHECK_OK(pd_noise_kind_parse("torch-cpu", &k));
    PD_CHECK(k == PD_NOISE_TORCH_CPU && !strcmp(pd_noise_kind_name(k), "torch-cpu"));
    PD_CHECK_OK(pd_noise_kind_parse("philox", &k));
    PD_CHECK(k == PD_NOISE_PHILOX && !strcmp(pd_noise_kind_name(k), "philox"));
    PD_CHECK_ERR(pd_noise_kind_parse("torch-cuda", &k), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_noise_kind_parse(NULL, &k), PD_ERR_INVALID);
    PD_CHECK(k == PD_NOISE_PHILOX); /* unchanged on error */
    /* the dispatcher gives each generator's own stream */
    float a[4], b[4];
    pd_noise_generate(PD_NOISE_PHILOX, a, 0, 4, 4, 3);
    pd_noise_fill(b, 0, 4, 3);
    PD_CHECK(!memcmp(a, b, sizeof a));
}

/* test_noise --torch-dump SEED TOTAL [START N]: elements START..START+N-1 (default all) as raw f32. */
static int pd_torch_dump(int argc, char **argv) {
    if (argc != 4 && argc != 6) return 2;
    const uint64_t seed = strtoull(argv[2], NULL, 10);
    const int64_t total = strtoll(argv[3], NULL, 10);
    const int64_t start = argc == 6 ? strtoll(argv[4], NULL, 10) : 0, n = argc == 6 ? strtoll(argv[5], NULL, 10) : total;
    if (total < 0 || start < 0 || n < 0 || start + n > total) return 2;
    float *d = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!d) return 1;
    pd_noise_fill_torch(d, start, n, total, seed);
    const int ok = fwrite(d, sizeof(float), (size_t)n, stdout) == (size_t)n;
    free(d);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--torch-dump")) return pd_torch_dump(argc, argv);
    PD_RUN(test_torch_known);
    PD_RUN(test_torch_shards);
    PD_RUN(test_noise_kind_names);
    PD_RUN(test_philox_kat);
    PD_RUN(test_noise_from_kat);
    PD_RUN(test_noise_shards);
    PD_RUN(test_noise_moments);
    return pd_test_summary();
}
