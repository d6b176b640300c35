/* Seeded noise: Philox4x32-10 against Random123's published known-answer vectors, the Box-Muller
 * mapping against values derived by hand from a published vector, shard independence, and the
 * moments of the normal distribution. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

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

int main(void) {
    PD_RUN(test_philox_kat);
    PD_RUN(test_noise_from_kat);
    PD_RUN(test_noise_shards);
    PD_RUN(test_noise_moments);
    return pd_test_summary();
}
