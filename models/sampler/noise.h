/* Seeded Gaussian noise, by generator (pd_noise_kind, models/pipeline.h).
 *
 * philox (ours, the default). Element i of the noise for seed s is a pure function of (s, i): a Philox4x32-10 block with key
 * (low, high 32 bits of s) and counter (low, high 32 bits of i / 2, 0, 0) gives four 32-bit words;
 * words 0-1 and 2-3 make two uniforms u1, u2 in (0, 1) of 53 bits each ((w_hi:w_lo >> 11) + 0.5) / 2^53,
 * with w0/w2 the low halves; Box-Muller turns them into sqrt(-2 ln u1) * cos(2 pi u2) for even i and
 * sqrt(-2 ln u1) * sin(2 pi u2) for odd i, rounded to f32. So a worker holding tokens [a, b) of a
 * latent generates exactly the values the whole latent would have there, and results never depend
 * on the thread count or on how the latent is split.
 *
 * torch-cpu. Bit for bit what torch.randn(total, generator=torch.Generator("cpu").manual_seed(seed)) gives
 * in f32 (then viewed in any shape: the stream is flat, row-major), as PyTorch's CPU kernel computes it
 * (aten/src/ATen/native/cpu/DistributionTemplates.h normal_kernel; checked against Debian's torch 1.13):
 *  - the generator is MT19937 seeded with the low 32 bits of seed (so seeds that differ only in their
 *    high 32 bits give the same noise, as in torch);
 *  - total >= 16: output k of the generator makes the uniform u_k = (k-th word & 0xffffff) * 2^-24;
 *    elements come in groups of 16, element j < 8 of a group is r cos(theta) and element j + 8 is
 *    r sin(theta) with r = sqrt(-2 log(1 - u_j)) and theta = 2 pi u_{j+8} (u of the same group); when
 *    total is not a multiple of 16 the last 16 elements are redone from 16 more words (outputs
 *    total .. total+15). log, sin and cos are the float Cephes polynomials of torch's AVX2 kernel
 *    (avx_mathfun.h, with the multiply-adds the compiler fused there), which is the kernel torch runs
 *    on any x86-64 CPU with AVX2. A torch build without it (ARM, or a CPU without AVX2) uses libm's
 *    functions and may differ in the last bit of some elements;
 *  - total < 16: each pair of elements is one double Box-Muller draw from two 53-bit uniforms (each
 *    from two words, the first the high one), r cos then r sin, rounded to f32.
 * A shard [start, start + n) is computed by running the generator over the words it needs and
 * skipping the ones before (MT19937 has no cheap jump), so any split gives the same bytes; the cost of
 * a shard grows with its end. An 832x480x81 latent (2.1 M elements) takes 0.12-0.22 s on the shared
 * 2-core VM (philox: 0.12-0.19 s; torch.randn itself, AVX2: 0.03 s), once per request: the fmaf calls
 * are library calls in a baseline x86-64 build. */
#ifndef PD_SAMPLER_NOISE_H
#define PD_SAMPLER_NOISE_H

#include <stdint.h>

#include "models/pipeline.h" /* pd_noise_kind */

/* One Philox4x32 block with 10 rounds (Salmon et al., SC'11; Random123's philox4x32_R(10, ...)):
 * out = philox4x32_10(ctr, key). */
void pd_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Writes elements start .. start+n-1 of the standard-normal noise of seed into dst (n floats).
 * start >= 0 and n >= 0 (checked: a violation is a bug and aborts). */
void pd_noise_fill(float *dst, int64_t start, int64_t n, uint64_t seed);

/* torch-cpu: writes elements start .. start+n-1 of the torch.randn stream of `total` elements for seed
 * into dst (n floats). 0 <= start, 0 <= n, start + n <= total (checked: a violation aborts). */
void pd_noise_fill_torch(float *dst, int64_t start, int64_t n, int64_t total, uint64_t seed);

/* Elements start .. start+n-1 of the noise of the given kind for a latent of `total` elements (the
 * Philox stream ignores total). Same checks as above. */
void pd_noise_generate(pd_noise_kind kind, float *dst, int64_t start, int64_t n, int64_t total, uint64_t seed);

#endif
