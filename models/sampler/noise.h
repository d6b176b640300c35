/* Seeded Gaussian noise that any shard of a latent can generate on its own.
 *
 * Element i of the noise for seed s is a pure function of (s, i): a Philox4x32-10 block with key
 * (low, high 32 bits of s) and counter (low, high 32 bits of i / 2, 0, 0) gives four 32-bit words;
 * words 0-1 and 2-3 make two uniforms u1, u2 in (0, 1) of 53 bits each ((w_hi:w_lo >> 11) + 0.5) / 2^53,
 * with w0/w2 the low halves; Box-Muller turns them into sqrt(-2 ln u1) * cos(2 pi u2) for even i and
 * sqrt(-2 ln u1) * sin(2 pi u2) for odd i, rounded to f32. So a worker holding tokens [a, b) of a
 * latent generates exactly the values the whole latent would have there, and results never depend
 * on the thread count or on how the latent is split. */
#ifndef PD_SAMPLER_NOISE_H
#define PD_SAMPLER_NOISE_H

#include <stdint.h>

/* One Philox4x32 block with 10 rounds (Salmon et al., SC'11; Random123's philox4x32_R(10, ...)):
 * out = philox4x32_10(ctr, key). */
void pd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Writes elements start .. start+n-1 of the standard-normal noise of seed into dst (n floats).
 * start >= 0 and n >= 0 (checked: a violation is a bug and aborts). */
void pd_noise_fill(float *dst, int64_t start, int64_t n, uint64_t seed);

#endif
