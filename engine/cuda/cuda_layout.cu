/* Patchify / unpatchify on CUDA, in the orders of engine/cpu/cpu_layout.c: tokens in (t, h, w)
 * order; a patchify token's values ordered (c, pt, ph, pw), an unpatchify token's (pt, ph, pw, c). */
#include "engine/cuda/cuda_kernels.cuh"

typedef struct {
    int64_t C, T, H, W, Hp, Wp; /* latent (C, T, H, W); Hp = H / ph, Wp = W / pw */
    int pt, ph, pw;
} pd_patch_geom;

/* One thread per token element (grid-stride over N * D): the token side is walked contiguously (the
 * tokens feed GEMMs and come from them), the latent side is a gather / scatter of pw-long runs. Both
 * ops move a few MB once per step, so the simple mapping is enough. Every element is written by
 * exactly one thread (the mapping is a bijection), so no ordering is needed. */
template <bool TO_TOKENS>
__global__ void pd_patch_kernel(float *tokens, float *latent, pd_patch_geom g, int64_t n) {
    const int64_t ppp = (int64_t)g.pt * g.ph * g.pw, D = g.C * ppp;
    PD_CUDA_GRID_LOOP(i, n) {
        int64_t tok = i / D, d = i % D;
        int64_t ti = tok / (g.Hp * g.Wp), hi = (tok / g.Wp) % g.Hp, wi = tok % g.Wp;
        int64_t c, a, b, e;
        if (TO_TOKENS) { /* d = ((c * pt + a) * ph + b) * pw + e */
            e = d % g.pw;
            b = (d / g.pw) % g.ph;
            a = (d / ((int64_t)g.pw * g.ph)) % g.pt;
            c = d / ppp;
        } else {         /* d = ((a * ph + b) * pw + e) * C + c */
            c = d % g.C;
            e = (d / g.C) % g.pw;
            b = (d / (g.C * g.pw)) % g.ph;
            a = d / (g.C * g.pw * g.ph);
        }
        int64_t l = ((c * g.T + ti * g.pt + a) * g.H + hi * g.ph + b) * g.W + wi * g.pw + e;
        if (TO_TOKENS) tokens[i] = latent[l];
        else latent[l] = tokens[i];
    }
}

template <bool TO_TOKENS>
static pd_status pd_patch_run(pd_backend *be, float *tokens, float *latent, const pd_tensor *lat, int pt, int ph, int pw) {
    pd_cuda *c = pd_cuda_of(be);
    pd_patch_geom g = {lat->shape[0], lat->shape[1], lat->shape[2], lat->shape[3], 0, 0, pt, ph, pw};
    g.Hp = g.H / ph;
    g.Wp = g.W / pw;
    int64_t n = pd_tensor_numel(lat); /* = tokens' N * D: the checks made the patch divide the latent */
    if (n == 0) return PD_OK;
    PD_TRY(pd_cuda_enter(be));
    pd_patch_kernel<TO_TOKENS><<<pd_cuda_blocks(n, PD_CUDA_THREADS), PD_CUDA_THREADS, 0, c->stream>>>(tokens, latent, g, n);
    PD_CUDA_LAUNCH_CHECK(c->device);
    return PD_OK;
}

pd_status pd_cuda_patchify(pd_backend *be, pd_tensor *tokens, const pd_tensor *latent, int pt, int ph, int pw) {
    return pd_patch_run<true>(be, (float *)tokens->data, (float *)latent->data, latent, pt, ph, pw);
}

pd_status pd_cuda_unpatchify(pd_backend *be, pd_tensor *latent, const pd_tensor *tokens, int pt, int ph, int pw) {
    return pd_patch_run<false>(be, (float *)tokens->data, (float *)latent->data, latent, pt, ph, pw);
}
