#include "models/sampler/noise.h"

#include <math.h>

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
