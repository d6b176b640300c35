/* Normalisations on CUDA: LAYER_NORM, RMS_NORM and the fused LAYER_NORM_MODULATE over the last dim,
 * CHANNEL_RMS_NORM over the first. Same formulas as engine/cpu/cpu_norm.c: layer norm is two-pass
 * (mean, then the mean of squared deviations, biased), y = (x - mean) * (1 / sqrt(var + eps)) * w + b,
 * then for LAYER_NORM_MODULATE y * (1 + scale) + shift. */
#include <math.h>

#include "engine/cuda/cuda_kernels.cuh"

enum { PD_NORM_THREADS = 256, PD_NORM_WARPS = PD_NORM_THREADS / 32 };

/* One warp per row (grid-stride over rows), lanes across C: rows are short (C = 1536 in the 1.3B
 * DiT, 4096 in umT5), so a warp covers one with a few float4 loads per lane and reduces with
 * shuffles, no shared memory and no block barriers. The row is read three times (sum, squared
 * deviations, output); the second and third reads hit L1/L2. f32 throughout: each lane sums C/32
 * values, then a shuffle tree, which keeps the error near f32 rounding of the result.
 * y may be x: every lane has finished its reads of passes 1-2 when the shuffles of pass 2 complete,
 * and in pass 3 each element is read and written by the same lane.
 * LAYER_NORM_MODULATE passes shift and scale (w, b NULL): row r belongs to batch r / N, whose shift
 * and scale rows sit at byte offsets (r / N) * s_shift and (r / N) * s_scale; they are read one float
 * at a time, so they need only the f32 alignment x has. */
template <bool RMS, bool VEC>
__global__ void pd_norm_kernel(float *y, const float *x, const void *w, pd_dtype wdt, const void *b, pd_dtype bdt,
                               const char *shift, int64_t s_shift, const char *scale, int64_t s_scale, int64_t N,
                               int64_t rows, int64_t C, float eps) {
    const int lane = threadIdx.x & 31;
    const float inv_c = 1.0f / (float)C;
    PD_CUDA_WARP_ROW_LOOP(r, rows) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        const float *sh = nullptr, *sc = nullptr;
        if (shift) {
            sh = (const float *)(shift + r / N * s_shift);
            sc = (const float *)(scale + r / N * s_scale);
        }
        float mean = 0.0f;
        if (!RMS) {
            float s = 0.0f;
            if (VEC) {
                for (int64_t c = lane; c < C / 4; c += 32) {
                    float4 v = reinterpret_cast<const float4 *>(xr)[c];
                    s += (v.x + v.y) + (v.z + v.w);
                }
            } else {
                for (int64_t c = lane; c < C; c += 32) s += xr[c];
            }
            mean = pd_cuda_warp_sum(s) * inv_c;
        }
        float q = 0.0f;
        if (VEC) {
            for (int64_t c = lane; c < C / 4; c += 32) {
                float4 v = reinterpret_cast<const float4 *>(xr)[c];
                float a = v.x - mean, bb = v.y - mean, cc = v.z - mean, d = v.w - mean;
                q += (a * a + bb * bb) + (cc * cc + d * d);
            }
        } else {
            for (int64_t c = lane; c < C; c += 32) {
                float a = xr[c] - mean;
                q += a * a;
            }
        }
        const float inv = 1.0f / sqrtf(pd_cuda_warp_sum(q) * inv_c + eps);
        if (VEC) {
            for (int64_t c = lane; c < C / 4; c += 32) {
                float4 v = reinterpret_cast<const float4 *>(xr)[c];
                float o[4] = {(v.x - mean) * inv, (v.y - mean) * inv, (v.z - mean) * inv, (v.w - mean) * inv};
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    if (w) o[k] *= pd_cuda_load(w, wdt, 4 * c + k);
                    if (b) o[k] += pd_cuda_load(b, bdt, 4 * c + k);
                    if (sh) o[k] = o[k] * (1.0f + sc[4 * c + k]) + sh[4 * c + k];
                }
                reinterpret_cast<float4 *>(yr)[c] = make_float4(o[0], o[1], o[2], o[3]);
            }
        } else {
            for (int64_t c = lane; c < C; c += 32) {
                float o = (xr[c] - mean) * inv;
                if (w) o *= pd_cuda_load(w, wdt, c);
                if (b) o += pd_cuda_load(b, bdt, c);
                if (sh) o = o * (1.0f + sc[c]) + sh[c];
                yr[c] = o;
            }
        }
    }
}

/* shift and scale (LAYER_NORM_MODULATE only, x then (B, N, C)): (B, C) or (B, 1, C), unit stride
 * along C, any batch stride. */
template <bool RMS>
static pd_status pd_norm_run(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                             const pd_tensor *shift, const pd_tensor *scale, float eps) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t C = x->shape[x->ndim - 1], rows = C ? pd_tensor_numel(x) / C : 0;
    if (rows == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    const void *wp = w ? w->data : nullptr, *bp = b ? b->data : nullptr;
    pd_dtype wdt = w ? w->dtype : PD_DTYPE_F32, bdt = b ? b->dtype : PD_DTYPE_F32;
    const char *shp = shift ? (const char *)shift->data : nullptr, *scp = shift ? (const char *)scale->data : nullptr;
    const int64_t s_sh = shift ? shift->stride[0] : 0, s_sc = shift ? scale->stride[0] : 0, N = shift ? x->shape[1] : 1;
    unsigned blocks = pd_cuda_blocks(rows, PD_NORM_WARPS);
    float *yp = (float *)y->data;
    const float *xp = (const float *)x->data;
    if (C % 4 == 0 && pd_cuda_aligned(xp, 16) && pd_cuda_aligned(yp, 16))
        pd_norm_kernel<RMS, true><<<blocks, PD_NORM_THREADS, 0, c->stream>>>(yp, xp, wp, wdt, bp, bdt, shp, s_sh, scp,
                                                                               s_sc, N, rows, C, eps);
    else
        pd_norm_kernel<RMS, false><<<blocks, PD_NORM_THREADS, 0, c->stream>>>(yp, xp, wp, wdt, bp, bdt, shp, s_sh, scp,
                                                                                s_sc, N, rows, C, eps);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

pd_status pd_cuda_layer_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, const pd_tensor *b,
                             float eps) {
    return pd_norm_run<false>(be, y, x, w, b, nullptr, nullptr, eps);
}

pd_status pd_cuda_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *w, float eps) {
    return pd_norm_run<true>(be, y, x, w, nullptr, nullptr, nullptr, eps);
}

/* x (B, N, C): LAYER_NORM without affine, each row then modulated by its batch's shift and scale. */
pd_status pd_cuda_layer_norm_modulate(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *shift,
                                      const pd_tensor *scale, float eps) {
    return pd_norm_run<false>(be, y, x, nullptr, nullptr, shift, scale, eps);
}

/* x (C, P): one thread per position p (grid-stride), looping over the C channels: neighbouring
 * threads read neighbouring positions of each channel plane, so every access is coalesced, and the
 * reduction needs no communication. The sum of squares is in double, as on the CPU (C <= a few
 * hundred, so this costs nothing against the memory traffic). y may be x: a thread reads and writes
 * only its own position. */
__global__ void pd_cnorm_kernel(float *y, const float *x, const void *g, pd_dtype gdt, const void *b, pd_dtype bdt,
                                int64_t C, int64_t P, float eps) {
    const double sc = sqrt((double)C);
    PD_CUDA_GRID_LOOP(p, P) {
        double ss = 0.0;
        for (int64_t c = 0; c < C; c++) {
            double v = x[c * P + p];
            ss += v * v;
        }
        double norm = sqrt(ss);
        float scale = (float)(sc / (norm > (double)eps ? norm : (double)eps));
        for (int64_t c = 0; c < C; c++) {
            float o = x[c * P + p] * scale * pd_cuda_load(g, gdt, c);
            if (b) o += pd_cuda_load(b, bdt, c);
            y[c * P + p] = o;
        }
    }
}

pd_status pd_cuda_channel_rms_norm(pd_backend *be, pd_tensor *y, const pd_tensor *x, const pd_tensor *gamma,
                                   const pd_tensor *bias, float eps) {
    pd_cuda *c = pd_cuda_of(be);
    int64_t C = x->shape[0], P = C ? pd_tensor_numel(x) / C : 0;
    if (P == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    pd_cnorm_kernel<<<pd_cuda_blocks(P, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(
        (float *)y->data, (const float *)x->data, gamma->data, gamma->dtype, bias ? bias->data : nullptr,
        bias ? bias->dtype : PD_DTYPE_F32, C, P, eps);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}
