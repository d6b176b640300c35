/* ATTENTION on CUDA: the op entry (cuDNN fused SDPA where it applies, else the own kernel) and the own
 * flash-style kernel, f32 in and out, optional bias, any head dims up to 512.
 *
 * Online softmax. For one query row with scores s_1..s_N (already scale * q.k + bias), the output is
 *   o = sum_j e^(s_j - M) v_j / sum_j e^(s_j - M)   for any constant M (M = max_j s_j keeps e^ <= 1).
 * The keys arrive in tiles. After tiles 1..t we keep m = max of the scores seen, the unnormalised
 * l = sum_j e^(s_j - m) and acc = sum_j e^(s_j - m) v_j over the keys seen. A new tile with scores s'_j
 * gives m' = max(m, max_j s'_j); every old term rescales as e^(s - m') = e^(s - m) * alpha with
 * alpha = e^(m - m') <= 1, so
 *   l'   = l * alpha + sum_j e^(s'_j - m')
 *   acc' = acc * alpha + sum_j e^(s'_j - m') v'_j
 * and after the last tile o = acc / l. Masked scores (-inf) contribute e^(-inf) = 0; while every score
 * seen is -inf, m stays -inf, nothing is accumulated and alpha is taken as 1 (no rescale needed). A row
 * whose scores are all -inf ends with l = 0 and gets o = 0, as the CPU reference does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_kernels.cuh"

/* Threads per block of the own kernel: 8 warps. */
#define PD_FLASH_WARPS 8
#define PD_FLASH_THREADS (PD_FLASH_WARPS * 32)

/* Largest head dim (q/k and v alike) the own kernel takes. */
#define PD_FLASH_MAX_DIM 512

typedef struct pd_flash_args {
    const float *q, *k, *v, *bias;
    float *out;
    int64_t B, Nq, Nk, H, D, Dv, q_blocks;
    /* element strides, outermost first: q/k/v/out (b, n, h, d); bias (h, n, key) */
    int64_t sq[4], sk[4], sv[4], so[4], sb[3];
    float scale;
} pd_flash_args;


/* Parallelisation: one block per (batch, head, tile of BQ = 8 * RW queries); blocks of one (b, h) are
 * neighbours in the grid so they share K/V in L2. Each of the 8 warps owns RW query rows. The block
 * walks the keys in tiles of BK = 32 * KPL, staged in shared memory (K rows padded to a stride of 1 mod 32 so
 * the lane-per-key reads hit distinct banks; V rows read lane-contiguous). Scores: lane j holds the
 * KPL keys j, j + 32, ... of the tile for each of its warp's RW rows, so the row max and sum are warp
 * shuffles and no score matrix is stored anywhere. P.V: each lane owns output columns lane + 32 u
 * (u < DVC) of its warp's rows in registers; the probability of key j is broadcast from lane j by a
 * shuffle. Memory is O(tile) per block: the Nq x Nk matrix never exists. Registers per lane: RW * DVC
 * accumulators (32, or 48 for head dims up to 384) plus RW * KPL scores. */
template <int RW, int DVC, int KPL>
__global__ void __launch_bounds__(PD_FLASH_THREADS) pd_flash_kernel(pd_flash_args a) {
    constexpr int BQ = PD_FLASH_WARPS * RW, BK = 32 * KPL;
    extern __shared__ float smem[];
    const int64_t D = a.D, Dv = a.Dv, ldk = ((D + 31) / 32) * 32 + 1;
    float *Qs = smem;        // (BQ, D)
    float *Ks = Qs + BQ * D; // (BK, ldk)
    float *Vs = Ks + BK * ldk; // (BK, Dv)

    const int64_t qb = (int64_t)blockIdx.x % a.q_blocks, bh = (int64_t)blockIdx.x / a.q_blocks;
    const int64_t h = bh % a.H, b = bh / a.H, q0 = qb * BQ;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

    const float *qg = a.q + b * a.sq[0] + h * a.sq[2];
    const float *kg = a.k + b * a.sk[0] + h * a.sk[2];
    const float *vg = a.v + b * a.sv[0] + h * a.sv[2];
    for (int64_t e = tid; e < BQ * D; e += PD_FLASH_THREADS) {
        int64_t r = e / D, d = e % D, n = q0 + r;
        Qs[e] = n < a.Nq ? qg[n * a.sq[1] + d * a.sq[3]] : 0.0f;
    }

    float acc[RW][DVC], m[RW], l[RW];
#pragma unroll
    for (int i = 0; i < RW; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int u = 0; u < DVC; u++) acc[i][u] = 0.0f;
    }
    const bool vec4 = (D & 3) == 0; /* Qs rows 16-byte aligned: broadcast float4 reads */

    for (int64_t k0 = 0; k0 < a.Nk; k0 += BK) {
        __syncthreads(); /* Q is stored (first tile) / the previous tile's K, V are consumed */
        for (int64_t e = tid; e < BK * D; e += PD_FLASH_THREADS) {
            int64_t r = e / D, d = e % D, n = k0 + r;
            Ks[r * ldk + d] = n < a.Nk ? kg[n * a.sk[1] + d * a.sk[3]] : 0.0f;
        }
        for (int64_t e = tid; e < BK * Dv; e += PD_FLASH_THREADS) {
            int64_t r = e / Dv, d = e % Dv, n = k0 + r;
            Vs[e] = n < a.Nk ? vg[n * a.sv[1] + d * a.sv[3]] : 0.0f; /* zeros: p = 0 must not meet NaN */
        }
        __syncthreads();

        float s[RW][KPL];
#pragma unroll
        for (int i = 0; i < RW; i++)
#pragma unroll
            for (int kk = 0; kk < KPL; kk++) s[i][kk] = 0.0f;
        const float *qrow = Qs + (int64_t)warp * RW * D;
        if (vec4) {
            for (int64_t d = 0; d < D; d += 4) {
                float kv[KPL][4];
#pragma unroll
                for (int kk = 0; kk < KPL; kk++)
#pragma unroll
                    for (int c = 0; c < 4; c++) kv[kk][c] = Ks[(int64_t)(lane + 32 * kk) * ldk + d + c];
#pragma unroll
                for (int i = 0; i < RW; i++) {
                    const float4 qv = *reinterpret_cast<const float4 *>(qrow + i * D + d);
#pragma unroll
                    for (int kk = 0; kk < KPL; kk++)
                        s[i][kk] += qv.x * kv[kk][0] + qv.y * kv[kk][1] + qv.z * kv[kk][2] + qv.w * kv[kk][3];
                }
            }
        } else {
            for (int64_t d = 0; d < D; d++) {
                float kv[KPL];
#pragma unroll
                for (int kk = 0; kk < KPL; kk++) kv[kk] = Ks[(int64_t)(lane + 32 * kk) * ldk + d];
#pragma unroll
                for (int i = 0; i < RW; i++) {
                    const float qv = qrow[i * D + d];
#pragma unroll
                    for (int kk = 0; kk < KPL; kk++) s[i][kk] += qv * kv[kk];
                }
            }
        }

        /* scale, bias, key mask; then the online-softmax update of each row (see the file comment) */
#pragma unroll
        for (int i = 0; i < RW; i++) {
            const int64_t n = q0 + warp * RW + i;
            float tmax = -INFINITY;
#pragma unroll
            for (int kk = 0; kk < KPL; kk++) {
                const int64_t key = k0 + lane + 32 * kk;
                float x = -INFINITY;
                if (key < a.Nk) {
                    x = s[i][kk] * a.scale;
                    if (a.bias && n < a.Nq) x += a.bias[h * a.sb[0] + n * a.sb[1] + key * a.sb[2]];
                }
                s[i][kk] = x;
                tmax = fmaxf(tmax, x);
            }
            tmax = pd_cuda_warp_max(tmax);
            const float mnew = fmaxf(m[i], tmax);
            float alpha = 1.0f, psum = 0.0f;
            if (mnew != -INFINITY) {
                alpha = expf(m[i] - mnew); /* m = -inf: 0, nothing accumulated yet */
#pragma unroll
                for (int kk = 0; kk < KPL; kk++) {
                    s[i][kk] = expf(s[i][kk] - mnew);
                    psum += s[i][kk];
                }
            } else {
#pragma unroll
                for (int kk = 0; kk < KPL; kk++) s[i][kk] = 0.0f;
            }
            psum = pd_cuda_warp_sum(psum);
            l[i] = l[i] * alpha + psum;
            m[i] = mnew;
#pragma unroll
            for (int u = 0; u < DVC; u++) acc[i][u] *= alpha;
        }

        /* acc += P V over the tile's keys (tail keys have p = 0 and zero V rows) */
        const int64_t kn = a.Nk - k0 < BK ? a.Nk - k0 : BK;
#pragma unroll
        for (int kk = 0; kk < KPL; kk++) {
            const int jn = (int)(kn - 32 * kk < 32 ? kn - 32 * kk : 32); /* warp-uniform */
            for (int j = 0; j < jn; j++) {
                const float *vrow = Vs + (int64_t)(j + 32 * kk) * Dv;
                float vv[DVC];
#pragma unroll
                for (int u = 0; u < DVC; u++) vv[u] = lane + 32 * u < Dv ? vrow[lane + 32 * u] : 0.0f;
#pragma unroll
                for (int i = 0; i < RW; i++) {
                    const float p = __shfl_sync(0xffffffffu, s[i][kk], j);
#pragma unroll
                    for (int u = 0; u < DVC; u++) acc[i][u] += p * vv[u];
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < RW; i++) {
        const int64_t n = q0 + warp * RW + i;
        if (n >= a.Nq) continue;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        float *o = a.out + b * a.so[0] + n * a.so[1] + h * a.so[2];
#pragma unroll
        for (int u = 0; u < DVC; u++)
            if (lane + 32 * u < Dv) o[(lane + 32 * u) * a.so[3]] = acc[i][u] * inv;
    }
}

/* Shared-memory floats of one block of configuration (RW, KPL) for head dims D, Dv. */
static size_t pd_flash_smem(int rw, int kpl, int64_t D, int64_t Dv) {
    int64_t bq = PD_FLASH_WARPS * rw, bk = 32 * kpl, ldk = ((D + 31) / 32) * 32 + 1;
    return (size_t)(bq * D + bk * ldk + bk * Dv) * sizeof(float);
}

template <int RW, int DVC, int KPL>
static pd_status pd_flash_launch(pd_cuda *c, const pd_flash_args *a) {
    constexpr int BQ = PD_FLASH_WARPS * RW;
    pd_flash_args args = *a;
    args.q_blocks = (a->Nq + BQ - 1) / BQ;
    const int64_t blocks = args.q_blocks * a->B * a->H;
    if (blocks > INT32_MAX)
        return pd_error_set(PD_ERR_UNSUPPORTED, "ATTENTION (cuda:%d): %lld query tiles exceed one launch's grid",
                            c->device, (long long)blocks);
    const size_t smem = pd_flash_smem(RW, KPL, a->D, a->Dv);
    if (smem > c->smem_optin)
        return pd_error_set(PD_ERR_UNSUPPORTED,
                            "ATTENTION (cuda:%d): head dims D=%lld, Dv=%lld need %zu bytes of shared memory per block, "
                            "the device allows %zu",
                            c->device, (long long)a->D, (long long)a->Dv, smem, c->smem_optin);
    PD_CUDA_CHECK(c->device, cudaFuncSetAttribute(pd_flash_kernel<RW, DVC, KPL>,
                                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    pd_flash_kernel<RW, DVC, KPL><<<(unsigned)blocks, PD_FLASH_THREADS, smem, c->stream>>>(args);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

/* Element strides of a float tensor's first n dims (its byte strides are multiples of 4). */
static void pd_flash_strides(const pd_tensor *t, int n, int64_t *s) {
    for (int i = 0; i < n; i++) {
        PD_ASSERT(t->stride[i] % (int64_t)sizeof(float) == 0);
        s[i] = t->stride[i] / (int64_t)sizeof(float);
    }
}

extern "C" pd_status pd_cuda_attention_flash(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k,
                                             const pd_tensor *v, const pd_tensor *bias, float scale) {
    pd_cuda *c = pd_cuda_of(be);
    pd_flash_args a;
    memset(&a, 0, sizeof a);
    a.q = (const float *)q->data, a.k = (const float *)k->data, a.v = (const float *)v->data;
    a.bias = bias ? (const float *)bias->data : NULL;
    a.out = (float *)out->data;
    a.B = q->shape[0], a.Nq = q->shape[1], a.H = q->shape[2], a.D = q->shape[3];
    a.Nk = k->shape[1], a.Dv = v->shape[3], a.scale = scale;
    if (a.B == 0 || a.Nq == 0 || a.H == 0 || a.Dv == 0) return PD_OK; /* nothing to write */
    if (a.D > PD_FLASH_MAX_DIM || a.Dv > PD_FLASH_MAX_DIM)
        return pd_error_set(PD_ERR_UNSUPPORTED, "ATTENTION (cuda:%d): head dims D=%lld, Dv=%lld above the kernel's %d",
                            c->device, (long long)a.D, (long long)a.Dv, PD_FLASH_MAX_DIM);
    pd_flash_strides(q, 4, a.sq);
    pd_flash_strides(k, 4, a.sk);
    pd_flash_strides(v, 4, a.sv);
    pd_flash_strides(out, 4, a.so);
    if (bias) pd_flash_strides(bias, 3, a.sb);
    /* The configuration follows the larger head dim: accumulators stay at 32-48 registers per lane
     * and the tiles within the shared memory of one SM (at most 160 KiB, at D = Dv = 512). */
    const int64_t dmax = a.D > a.Dv ? a.D : a.Dv;
    if (dmax <= 64) return pd_flash_launch<8, 2, 2>(c, &a);
    if (dmax <= 128) return pd_flash_launch<8, 4, 2>(c, &a);
    if (dmax <= 256) return pd_flash_launch<4, 8, 1>(c, &a);
    if (dmax <= 384) return pd_flash_launch<4, 12, 1>(c, &a); /* the VAE's single head of 384 */
    return pd_flash_launch<2, 16, 1>(c, &a);
}

/* Which implementation PD_CUDA_ATTENTION asks for. */
typedef enum { PD_ATT_AUTO, PD_ATT_FLASH, PD_ATT_CUDNN } pd_att_choice;

static pd_status pd_att_choice_get(pd_att_choice *out) {
    const char *e = getenv("PD_CUDA_ATTENTION");
    if (!e || !*e || !strcmp(e, "auto")) *out = PD_ATT_AUTO;
    else if (!strcmp(e, "flash")) *out = PD_ATT_FLASH;
    else if (!strcmp(e, "cudnn")) *out = PD_ATT_CUDNN;
    else
        return pd_error_set(PD_ERR_INVALID, "ATTENTION: PD_CUDA_ATTENTION='%s' is not one of auto, flash, cudnn", e);
    return PD_OK;
}

/* Shapes the cuDNN fused flash SDPA documents for bf16 (Ampere and Hopper prefill): no bias, equal
 * q/k and v head dims, a multiple of 8 up to 256. cuDNN may still refuse; that is learnt per shape. */
static bool pd_att_cudnn_shape(const pd_tensor *q, const pd_tensor *v, const pd_tensor *bias) {
    int64_t d = q->shape[3];
    return !bias && v->shape[3] == d && d % 8 == 0 && d >= 8 && d <= 256;
}

extern "C" pd_status pd_cuda_attention(pd_backend *be, pd_tensor *out, const pd_tensor *q, const pd_tensor *k,
                                       const pd_tensor *v, const pd_tensor *bias, float scale) {
    pd_cuda *c = pd_cuda_of(be);
    PD_TRY(pd_cuda_enter(be));
    pd_att_choice ch;
    PD_TRY(pd_att_choice_get(&ch));
    if (ch == PD_ATT_FLASH) return pd_cuda_attention_flash(be, out, q, k, v, bias, scale);
    if (ch == PD_ATT_CUDNN) {
        if (!pd_att_cudnn_shape(q, v, bias))
            return pd_error_set(PD_ERR_UNSUPPORTED,
                                "ATTENTION (cuda:%d): PD_CUDA_ATTENTION=cudnn, but cuDNN SDPA takes no bias and equal "
                                "head dims that are multiples of 8 up to 256 (D=%lld, Dv=%lld, bias %s)",
                                c->device, (long long)q->shape[3], (long long)v->shape[3], bias ? "given" : "none");
        return pd_cuda_sdpa_cudnn(be, out, q, k, v, scale);
    }
    if (c->sm_major >= 8 && pd_att_cudnn_shape(q, v, bias)) { /* SDPA needs Ampere+ */
        pd_status st = pd_cuda_sdpa_cudnn(be, out, q, k, v, scale);
        if (st != PD_ERR_UNSUPPORTED) return st;
    }
    return pd_cuda_attention_flash(be, out, q, k, v, bias, scale);
}
