#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/json_file.h"
#include "engine/safetensors.h"
#include "models/model_dir.h"
#include "models/text/umt5.h"
#include "models/wan/aco.h"
#include "models/wan/dit.h"
#include "models/wan/pipesp_plan.h"
#include "models/wan/vae.h"
#include "plan/cost.h"

/* ---- profiles ---- */

/* Links: section 9 measures no link, so both GPU profiles take NVLink 4's published 450 GB/s per
 * direction per GPU at 80% (what NCCL's all-to-all reaches on 8-GPU NVSwitch systems) and 25 us per
 * collective; these are specifications, not measurements, until `pipedit calibrate` replaces them. */
static const pd_plan_profile pd_plan_builtin[] = {
    {
        .name = "h100",
        .source = "DESIGN.md section 9, H100 80GB column (measured); links from NVLink 4's published bandwidth",
        .gemm_bf16 = 761e12,   /* torch bf16 GEMM 8192^3: 761 TFLOP/s */
        .gemm_f32 = 67e12,     /* published FP32 peak (not measured) */
        .attn = 586e12,        /* attention alone, 32760 tokens, 12x128, cuDNN: 11.3 ms (586 TFLOP/s) */
        .mem_bw = 2.9e12,      /* device copy (read + write): 2.9 TB/s */
        .conv = 175e12,        /* conv3d 96->96 k3, 4 frames 480x832 (cuDNN): 175 TFLOP/s */
        .mem_bytes = 80.0 * 1073741824.0, /* 80 GB card */
        .eltwise_passes = PD_PLAN_EAGER_PASSES,
        .act_bytes = 2,
        .topology = PD_PLAN_NVLINK,
        .a2a = {.bw = 360e9, .latency = 25e-6},
        .p2p = {.bw = 360e9, .latency = 15e-6},
    },
    {
        .name = "h200",
        .source = "DESIGN.md section 9, H200 column (measured); links from NVLink 4's published bandwidth",
        .gemm_bf16 = 769e12,   /* torch bf16 GEMM 8192^3: 769 TFLOP/s (cuBLAS alone 802) */
        .gemm_f32 = 67e12,     /* published FP32 peak (not measured) */
        .attn = 587e12,        /* attention alone, 32760 tokens, cuDNN: 11.2 ms (587 TFLOP/s) */
        .mem_bw = 4.1e12,      /* device copy (read + write): 4.1 TB/s */
        .conv = 203e12,        /* conv3d 96->96 k3, 4 frames 480x832: 203 TFLOP/s */
        .mem_bytes = 141e9,    /* 141 GB card */
        .eltwise_passes = PD_PLAN_EAGER_PASSES,
        .act_bytes = 2,
        .topology = PD_PLAN_NVLINK,
        .a2a = {.bw = 360e9, .latency = 25e-6},
        .p2p = {.bw = 360e9, .latency = 15e-6},
    },
    {
        .name = "l4",
        .source = "published specifications only (NVIDIA L4 datasheet), not measured: bf16 121 TFLOP/s, 300 GB/s, "
                  "24 GB, PCIe Gen4 x16; attention and conv rates scaled by the H100's measured ratios",
        .gemm_bf16 = 121e12 * 0.8, /* datasheet dense bf16 peak at the 80% torch reaches on the H100 */
        .gemm_f32 = 30e12,
        .attn = 121e12 * 0.8 * (586.0 / 761.0),
        .mem_bw = 300e9 * 2.0 * 0.8, /* datasheet bandwidth, read + write counted, at 80% */
        .conv = 121e12 * 0.8 * (175.0 / 761.0),
        .mem_bytes = 24e9,
        .eltwise_passes = PD_PLAN_EAGER_PASSES,
        .act_bytes = 2,
        .topology = PD_PLAN_PCIE,
        .a2a = {.bw = 20e9, .latency = 50e-6},
        .p2p = {.bw = 25e9, .latency = 20e-6},
    },
};
#define PD_PLAN_NBUILTIN (sizeof pd_plan_builtin / sizeof pd_plan_builtin[0])

const pd_plan_profile *pd_plan_profile_builtin(const char *name) {
    for (size_t i = 0; i < PD_PLAN_NBUILTIN; i++)
        if (!strcmp(pd_plan_builtin[i].name, name)) return &pd_plan_builtin[i];
    return NULL;
}

const char *const *pd_plan_profile_names(void) {
    static const char *const names[] = {"h100", "h200", "l4", NULL};
    return names;
}

static bool pd_plan_pos(double v) { return isfinite(v) && v > 0; }

/* The profile's optional figures (>= 0; 0 or absent: not priced), by JSON key. */
static const struct {
    const char *key;
    size_t off;
} pd_plan_opt[] = {{"encode_first_px", offsetof(pd_plan_profile, encode_first_px)},
                   {"encode_px", offsetof(pd_plan_profile, encode_px)},
                   {"fault_bytes", offsetof(pd_plan_profile, fault_bw)},
                   {"crowd_wait_s", offsetof(pd_plan_profile, crowd_wait)}};
#define PD_PLAN_OPT_N (sizeof pd_plan_opt / sizeof pd_plan_opt[0])
static double *pd_plan_opt_field(pd_plan_profile *p, size_t i) { return (double *)((char *)p + pd_plan_opt[i].off); }
static const double *pd_plan_opt_cfield(const pd_plan_profile *p, size_t i) {
    return (const double *)((const char *)p + pd_plan_opt[i].off);
}

pd_status pd_plan_profile_check(const pd_plan_profile *p) {
    const struct {
        const char *key;
        double v;
    } f[] = {{"gemm_bf16_flops", p->gemm_bf16}, {"gemm_f32_flops", p->gemm_f32}, {"attn_flops", p->attn},
             {"mem_bw_bytes", p->mem_bw},       {"conv_flops", p->conv},         {"mem_bytes", p->mem_bytes},
             {"eltwise_passes", p->eltwise_passes}, {"a2a.bw_bytes", p->a2a.bw}, {"p2p.bw_bytes", p->p2p.bw}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!pd_plan_pos(f[i].v)) return pd_error_set(PD_ERR_INVALID, "profile %s: %s must be positive", p->name, f[i].key);
    if (!(isfinite(p->a2a.latency) && p->a2a.latency >= 0) || !(isfinite(p->p2p.latency) && p->p2p.latency >= 0))
        return pd_error_set(PD_ERR_INVALID, "profile %s: latency_s must be >= 0", p->name);
    if (p->act_bytes < 1 || p->act_bytes > 8) return pd_error_set(PD_ERR_INVALID, "profile %s: act_bytes must be 1..8", p->name);
    if (p->conv_n < 0 || p->conv_n > PD_PLAN_CONV_POINTS)
        return pd_error_set(PD_ERR_INVALID, "profile %s: conv_by_cout holds 0..%d points", p->name, PD_PLAN_CONV_POINTS);
    for (int i = 0; i < p->conv_n; i++)
        if (!pd_plan_pos(p->conv_cout[i]) || !pd_plan_pos(p->conv_rate[i]) || (i > 0 && p->conv_cout[i] <= p->conv_cout[i - 1]))
            return pd_error_set(PD_ERR_INVALID, "profile %s: conv_by_cout needs positive rates at ascending widths", p->name);
    if (!(isfinite(p->silu) && p->silu >= 0)) return pd_error_set(PD_ERR_INVALID, "profile %s: silu_elems must be >= 0", p->name);
    for (size_t i = 0; i < PD_PLAN_OPT_N; i++) {
        const double v = *pd_plan_opt_cfield(p, i);
        if (!(isfinite(v) && v >= 0)) return pd_error_set(PD_ERR_INVALID, "profile %s: %s must be >= 0", p->name, pd_plan_opt[i].key);
    }
    if (p->cores < 0 || p->cores > 4096) return pd_error_set(PD_ERR_INVALID, "profile %s: cores must be 0..4096", p->name);
    if (p->topology < PD_PLAN_NVLINK || p->topology > PD_PLAN_SHM)
        return pd_error_set(PD_ERR_INVALID, "profile %s: bad topology", p->name);
    return PD_OK;
}

static const char *const pd_plan_topo_names[] = {"nvlink", "pcie", "shm"};

static pd_status pd_plan_json_num(json_t *o, const char *key, const char *path, double *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" must be a number", path, key);
    *out = json_number_value(v);
    return PD_OK;
}

static pd_status pd_plan_json_link(json_t *root, const char *key, const char *path, pd_plan_link *l) {
    json_t *o = json_object_get(root, key);
    if (!json_is_object(o)) return pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" must be an object {bw_bytes, latency_s}", path, key);
    PD_TRY(pd_plan_json_num(o, "bw_bytes", path, &l->bw));
    return pd_plan_json_num(o, "latency_s", path, &l->latency);
}

pd_status pd_plan_profile_load(const char *path, pd_plan_profile *out) {
    json_t *root = NULL;
    PD_TRY(pd_json_file_load(path, 1 << 16, &root));
    pd_plan_profile p = {0};
    pd_status st = PD_ERR_FORMAT;
    double act = 0;
    const char *topo = json_string_value(json_object_get(root, "topology"));
    const char *name = json_string_value(json_object_get(root, "name"));
    const char *src = json_string_value(json_object_get(root, "source"));
    if (!json_is_object(root)) {
        st = pd_error_set(PD_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    snprintf(p.name, sizeof p.name, "%s", name ? name : path);
    snprintf(p.source, sizeof p.source, "%s", src ? src : path);
    if ((st = pd_plan_json_num(root, "gemm_bf16_flops", path, &p.gemm_bf16)) ||
        (st = pd_plan_json_num(root, "gemm_f32_flops", path, &p.gemm_f32)) ||
        (st = pd_plan_json_num(root, "attn_flops", path, &p.attn)) ||
        (st = pd_plan_json_num(root, "mem_bw_bytes", path, &p.mem_bw)) ||
        (st = pd_plan_json_num(root, "conv_flops", path, &p.conv)) ||
        (st = pd_plan_json_num(root, "mem_bytes", path, &p.mem_bytes)) ||
        (st = pd_plan_json_num(root, "eltwise_passes", path, &p.eltwise_passes)) ||
        (st = pd_plan_json_num(root, "act_bytes", path, &act)) ||
        (st = pd_plan_json_link(root, "a2a", path, &p.a2a)) || (st = pd_plan_json_link(root, "p2p", path, &p.p2p)))
        goto done;
    if (act != floor(act) || act < 1 || act > 8) {
        st = pd_error_set(PD_ERR_FORMAT, "%s: \"act_bytes\" must be an integer in 1..8", path);
        goto done;
    }
    p.act_bytes = (int)act;
    json_t *fused = json_object_get(root, "gelu_fused"), *cores = json_object_get(root, "cores");
    if (fused && !json_is_boolean(fused)) {
        st = pd_error_set(PD_ERR_FORMAT, "%s: \"gelu_fused\" must be true or false", path);
        goto done;
    }
    p.gelu_fused = json_is_true(fused);
    if (cores && !(json_is_integer(cores) && json_integer_value(cores) >= 0 && json_integer_value(cores) <= 4096)) {
        st = pd_error_set(PD_ERR_FORMAT, "%s: \"cores\" must be an integer in 0..4096", path);
        goto done;
    }
    p.cores = cores ? (int)json_integer_value(cores) : 0;
    json_t *convs = json_object_get(root, "conv_by_cout"), *pt;
    if (convs && (!json_is_array(convs) || json_array_size(convs) > PD_PLAN_CONV_POINTS)) {
        st = pd_error_set(PD_ERR_FORMAT, "%s: \"conv_by_cout\" must be an array of at most %d [cout, FLOP/s] pairs",
                          path, PD_PLAN_CONV_POINTS);
        goto done;
    }
    size_t ci;
    json_array_foreach(convs, ci, pt) {
        if (!json_is_array(pt) || json_array_size(pt) != 2 || !json_is_number(json_array_get(pt, 0)) ||
            !json_is_number(json_array_get(pt, 1))) {
            st = pd_error_set(PD_ERR_FORMAT, "%s: \"conv_by_cout\"[%zu] must be [cout, FLOP/s]", path, ci);
            goto done;
        }
        p.conv_cout[ci] = json_number_value(json_array_get(pt, 0));
        p.conv_rate[ci] = json_number_value(json_array_get(pt, 1));
    }
    p.conv_n = convs ? (int)json_array_size(convs) : 0;
    json_t *silu = json_object_get(root, "silu_elems");
    if (silu && !json_is_number(silu)) {
        st = pd_error_set(PD_ERR_FORMAT, "%s: \"silu_elems\" must be a number", path);
        goto done;
    }
    p.silu = silu ? json_number_value(silu) : 0;
    for (size_t i = 0; i < PD_PLAN_OPT_N; i++) {
        json_t *v = json_object_get(root, pd_plan_opt[i].key);
        if (v && !json_is_number(v)) {
            st = pd_error_set(PD_ERR_FORMAT, "%s: \"%s\" must be a number", path, pd_plan_opt[i].key);
            goto done;
        }
        *pd_plan_opt_field(&p, i) = v ? json_number_value(v) : 0;
    }
    p.topology = (pd_plan_topology)-1;
    for (int i = 0; i < 3; i++)
        if (topo && !strcmp(topo, pd_plan_topo_names[i])) p.topology = (pd_plan_topology)i;
    if ((int)p.topology < 0) {
        st = pd_error_set(PD_ERR_FORMAT, "%s: \"topology\" must be \"nvlink\", \"pcie\" or \"shm\"", path);
        goto done;
    }
    if ((st = pd_plan_profile_check(&p)) != PD_OK) {
        st = pd_error_prefix(PD_ERR_FORMAT, "%s", path);
        goto done;
    }
    *out = p;
done:
    json_decref(root);
    return st;
}

pd_status pd_plan_profile_save(const char *path, const pd_plan_profile *p) {
    PD_TRY(pd_plan_profile_check(p));
    json_t *r = json_pack("{s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:s, s:{s:f, s:f}, s:{s:f, s:f}, s:b, s:i}",
                          "name", p->name, "source", p->source, "gemm_bf16_flops", p->gemm_bf16, "gemm_f32_flops",
                          p->gemm_f32, "attn_flops", p->attn, "mem_bw_bytes", p->mem_bw, "conv_flops", p->conv,
                          "mem_bytes", p->mem_bytes, "eltwise_passes", p->eltwise_passes, "act_bytes", p->act_bytes,
                          "topology", pd_plan_topo_names[p->topology], "a2a", "bw_bytes", p->a2a.bw, "latency_s",
                          p->a2a.latency, "p2p", "bw_bytes", p->p2p.bw, "latency_s", p->p2p.latency,
                          "gelu_fused", (int)p->gelu_fused, "cores", p->cores);
    if (!r) return pd_error_set(PD_ERR_NOMEM, "profile JSON");
    if (p->conv_n > 0) {
        json_t *convs = json_array();
        for (int i = 0; i < p->conv_n; i++) json_array_append_new(convs, json_pack("[f, f]", p->conv_cout[i], p->conv_rate[i]));
        json_object_set_new(r, "conv_by_cout", convs);
    }
    if (p->silu > 0) json_object_set_new(r, "silu_elems", json_real(p->silu));
    for (size_t i = 0; i < PD_PLAN_OPT_N; i++) {
        const double v = *pd_plan_opt_cfield(p, i);
        if (v > 0) json_object_set_new(r, pd_plan_opt[i].key, json_real(v));
    }
    pd_status st = pd_model_dir_write_json(path, r);
    json_decref(r);
    return st;
}

double pd_plan_conv_rate(const pd_plan_profile *p, double cout) {
    const int n = p->conv_n;
    if (n <= 0) return p->conv;
    if (cout <= p->conv_cout[0]) return p->conv_rate[0];
    for (int i = 1; i < n; i++)
        if (cout <= p->conv_cout[i]) {
            const double f = (cout - p->conv_cout[i - 1]) / (p->conv_cout[i] - p->conv_cout[i - 1]);
            return p->conv_rate[i - 1] + f * (p->conv_rate[i] - p->conv_rate[i - 1]);
        }
    return p->conv_rate[n - 1];
}

double pd_plan_cpu_share(int cores, int threads, int busy) {
    if (cores < 1 || threads < 1) return 1.0;
    const int all = busy > cores ? busy : cores;
    return threads >= all ? 1.0 : (double)threads / all;
}

void pd_plan_profile_share(const pd_plan_profile *p, double share, pd_plan_profile *out) {
    *out = *p;
    if (!(share > 0 && share < 1)) return;
    out->gemm_bf16 *= share, out->gemm_f32 *= share, out->attn *= share, out->conv *= share, out->mem_bw *= share;
    for (int i = 0; i < out->conv_n; i++) out->conv_rate[i] *= share;
    out->silu *= share;
    if (p->cores > 0) {
        const double copy = share * p->cores < 1 ? share * p->cores : 1.0;
        out->a2a.bw *= copy, out->p2p.bw *= copy;
        out->encode_first_px *= copy, out->encode_px *= copy, out->fault_bw *= copy;
    }
}

/* ---- models and requests ---- */

/* Bytes per element of a model folder's largest DiT weight (the linears' storage), 2 (bf16) when its
 * transformer/ holds no readable checkpoint (a config-only folder). */
static int pd_plan_weight_bytes(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/transformer", dir);
    pd_st *st = NULL;
    if (pd_st_open(path, &st) != PD_OK) return 2;
    int64_t most = 0;
    int bytes = 2;
    for (int i = 0; i < pd_st_count(st); i++) {
        pd_tensor t;
        if (pd_st_get(st, pd_st_name(st, i), &t) != PD_OK) continue;
        if (pd_tensor_numel(&t) > most) most = pd_tensor_numel(&t), bytes = (int)pd_dtype_size(t.dtype);
    }
    pd_st_close(st);
    return bytes;
}

pd_status pd_plan_model_get(const char *name_or_dir, pd_plan_model *out) {
    pd_plan_model m = {0};
    const pd_model_preset *pre = pd_model_preset_find(name_or_dir);
    if (pre) {
        snprintf(m.name, sizeof m.name, "%s", pre->name);
        m.dit = pre->dit, m.vae = pre->vae, m.text = pre->text, m.weight_bytes = 2;
        *out = m;
        return PD_OK;
    }
    struct stat sb;
    if (stat(name_or_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return pd_error_set(PD_ERR_NOT_FOUND, "model \"%s\": neither a preset (wan2.1-t2v-1.3b, wan2.1-t2v-14b, tiny) nor a model folder",
                            name_or_dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/transformer/config.json", name_or_dir);
    PD_TRY(pd_wan_dit_config_load(path, &m.dit));
    pre = pd_model_preset_match_dit(&m.dit);
    if (!pre) pre = pd_model_preset_find("wan2.1-t2v-1.3b");
    PD_ASSERT(pre);
    m.vae = pre->vae, m.text = pre->text;
    m.weight_bytes = pd_plan_weight_bytes(name_or_dir);
    snprintf(path, sizeof path, "%s/vae/config.json", name_or_dir);
    if (stat(path, &sb) == 0) PD_TRY(pd_wan_vae_config_load(path, &m.vae));
    snprintf(path, sizeof path, "%s/text_encoder/config.json", name_or_dir);
    if (stat(path, &sb) == 0) PD_TRY(pd_umt5_config_load(name_or_dir, &m.text));
    const char *base = strrchr(name_or_dir, '/');
    snprintf(m.name, sizeof m.name, "%s", base && base[1] ? base + 1 : name_or_dir);
    *out = m;
    return PD_OK;
}

pd_status pd_plan_request_check(const pd_plan_model *m, const pd_plan_request *r, int64_t *tokens) {
    const int sh = 8 * m->dit.patch[1], sw = 8 * m->dit.patch[2];
    if (r->width < sw || r->width > 8192 || r->width % sw)
        return pd_error_set(PD_ERR_INVALID, "width %d must be a multiple of %d in %d..8192", r->width, sw, sw);
    if (r->height < sh || r->height > 8192 || r->height % sh)
        return pd_error_set(PD_ERR_INVALID, "height %d must be a multiple of %d in %d..8192", r->height, sh, sh);
    if (r->frames < 1 || r->frames > 4097 || (r->frames - 1) % 4)
        return pd_error_set(PD_ERR_INVALID, "frames %d must be 1 + 4k, at most 4097", r->frames);
    if (r->steps < 1 || r->steps > 10000) return pd_error_set(PD_ERR_INVALID, "steps %d must be in 1..10000", r->steps);
    const int64_t T = (r->frames - 1) / 4 + 1;
    if (tokens) *tokens = T / m->dit.patch[0] * (r->height / sh) * (r->width / sw);
    return PD_OK;
}

/* ---- the DiT ---- */

double pd_plan_a2a_s(const pd_plan_link *l, int n, double bytes) {
    return n <= 1 ? 0.0 : l->latency + bytes * (n - 1) / n / l->bw;
}

/* The GEMM rate of a model's linears: f32 weights run at the f32 rate, bf16 ones at the bf16 rate. */
static double pd_plan_gemm(const pd_plan_profile *p, int weight_bytes) {
    return weight_bytes == 4 ? p->gemm_f32 : p->gemm_bf16;
}

/* One block minus its self-attention, on one rank holding n_tok tokens, batch B. */
static void pd_plan_block_rest(const pd_plan_profile *p, const pd_wan_dit_config *c, int weight_bytes, double n_tok,
                               int B, pd_plan_step *o) {
    pd_wan_dit_flop_parts f;
    pd_wan_dit_flops_split(c, n_tok, n_tok, &f);
    o->linear_s = B * (f.block_linear + f.block_context) / pd_plan_gemm(p, weight_bytes);
    o->cross_s = B * f.block_cross_attn / p->attn;
    const double ffn_passes = p->gelu_fused ? 0.0 : 2.0;
    o->eltwise_s = B * n_tok * (p->eltwise_passes * c->dim + ffn_passes * c->ffn_dim) * p->act_bytes / p->mem_bw;
}

double pd_plan_block_seconds(const pd_plan_profile *p, const pd_wan_dit_config *c, double N, int B) {
    pd_plan_step o;
    pd_plan_block_rest(p, c, 2, N, B, &o);
    pd_wan_dit_flop_parts f;
    pd_wan_dit_flops_split(c, N, N, &f);
    return o.linear_s + o.cross_s + o.eltwise_s + B * f.block_self_attn / p->attn;
}

/* Aco's share rule inputs for one attention call of g slots and B elements, each slot costing a1
 * seconds locally per element and moving slot_elems values each way (q, k, v out; the output back).
 * Helpers have the lender's profile; one serves ceil(lenders / helpers) lenders. */
static pd_aco_share_in pd_plan_aco_in(const pd_plan_profile *p, const pd_plan_sp *sp, int B, int g, double a1,
                                      double slot_elems) {
    const int lenders = sp->degree * (sp->cfg_parallel ? 2 : 1);
    return (pd_aco_share_in){.heads = g,
                             .local_s = B * a1,
                             .helper_s = B * a1 * ceil((double)lenders / sp->aco_helpers),
                             .xfer_s = B * 4.0 * slot_elems * p->act_bytes / p->p2p.bw,
                             .fixed_s = 2.0 * p->p2p.latency};
}

/* The self-attention schedule of one layer on one rank (h slots, chunks of g, B elements, a chunk's
 * attention a1 per slot, each transfer c0 + c1 per slot): PipeSP's, or with `serial` every transfer
 * after the attention it would have overlapped (no core left to copy on). */
static double pd_plan_self_schedule(int B, int h, int g, double a1, double c0, double c1, bool serial) {
    if (!serial) return pd_pipesp_simulate(B, h, g, 0.0, a1, c0, c1);
    const double chunks = ceil((double)h / g);
    return B * (h * a1 + 4.0 * (chunks * c0 + h * c1));
}

/* The fraction of its device a rank gets (device_share outside (0, 1): all of it). */
static double pd_plan_rank_share(const pd_plan_sp *sp) {
    return sp->device_share > 0 && sp->device_share < 1 ? sp->device_share : 1.0;
}

/* What a collective of the group waits beyond its transfer: crowd_wait with less than a core per rank
 * (a peer the collective waits for may be waiting for a core), else nothing. */
static double pd_plan_crowd_s(const pd_plan_profile *p, const pd_plan_sp *sp) {
    return sp->degree > 1 && p->cores > 0 && pd_plan_rank_share(sp) * p->cores < 1.0 ? p->crowd_wait : 0.0;
}

double pd_plan_sp_sync_s(const pd_plan_profile *p, const pd_plan_sp *sp) {
    return sp->degree > 1 ? p->a2a.latency + pd_plan_crowd_s(p, sp) : 0.0;
}

pd_status pd_plan_dit_step(const pd_plan_profile *p_dev, const pd_plan_model *m, const pd_plan_request *r,
                           const pd_plan_sp *sp, pd_plan_step *out) {
    pd_plan_profile ps;
    pd_plan_profile_share(p_dev, sp->device_share, &ps);
    const pd_plan_profile *p = &ps;
    const bool serial = p->cores > 0 && pd_plan_rank_share(sp) * p->cores <= 1.0;
    int64_t N = 0;
    PD_TRY(pd_plan_request_check(m, r, &N));
    const pd_wan_dit_config *c = &m->dit;
    if (sp->degree < 1 || sp->degree > 1024) return pd_error_set(PD_ERR_INVALID, "SP degree %d must be in 1..1024", sp->degree);
    if (sp->cfg_parallel && !r->cfg) return pd_error_set(PD_ERR_INVALID, "CFG parallelism needs a request with CFG");
    const int n = sp->degree, h = (c->heads + n - 1) / n;
    if (sp->g > h) return pd_error_set(PD_ERR_INVALID, "PipeSP chunk %d exceeds the %d head slots per rank", sp->g, h);
    const int B = r->cfg && !sp->cfg_parallel ? 2 : 1;
    const double n_tok = ceil((double)N / n), hd = c->head_dim;
    pd_plan_step o = {0};
    pd_plan_block_rest(p, c, m->weight_bytes, n_tok, B, &o);
    o.heads_per_rank = h;

    /* Per head slot and batch element: attention over all N tokens, and one transfer of it. */
    double a1 = 4.0 * (double)N * (double)N * hd / p->attn;
    const double c1 = n > 1 ? (double)N * hd * p->act_bytes * (n - 1) / n / p->a2a.bw : 0.0;
    const double c0 = pd_plan_sp_sync_s(p_dev, sp); /* a transfer's fixed cost: one small collective */
    double best = INFINITY;
    int g_best = h, share_best = 0;
    const int g_lo = sp->g < 0 ? 1 : (sp->g == 0 ? h : sp->g), g_hi = sp->g < 0 ? h : g_lo;
    for (int g = g_hi; g >= g_lo; g--) {
        double a1g = a1;
        int share = 0;
        if (sp->aco_helpers > 0) {
            pd_aco_share_in in = pd_plan_aco_in(p, sp, B, g, a1, (double)N * hd);
            share = sp->aco_share < 0 ? pd_aco_choose_share(&in) : (sp->aco_share < g ? sp->aco_share : g);
            a1g = pd_aco_predict(&in, share) / (B * (double)g);
        }
        double t = pd_plan_self_schedule(B, h, g, a1g, c0, c1, serial);
        if (t < best * (1.0 - 1e-12)) best = t, g_best = g, share_best = share;
    }
    o.self_s = best;
    o.g = g_best;
    o.aco_share = share_best;
    /* What the schedule adds over the attention alone (a1 at the chosen share). */
    {
        double a1g = a1;
        if (share_best > 0) {
            pd_aco_share_in in = pd_plan_aco_in(p, sp, B, g_best, a1, (double)N * hd);
            a1g = pd_aco_predict(&in, share_best) / (B * (double)g_best);
        }
        o.comm_exposed_s = best - B * h * a1g;
        if (o.comm_exposed_s < 0) o.comm_exposed_s = 0;
    }
    o.block_s = o.linear_s + o.cross_s + o.eltwise_s + o.self_s;
    pd_wan_dit_flop_parts f;
    pd_wan_dit_flops_split(c, n_tok, n_tok, &f);
    double step = c->layers * o.block_s + B * f.outside / pd_plan_gemm(p, m->weight_bytes);
    /* Before each block the ranks agree whether to stop (a broadcast of one flag). */
    step += c->layers * c0;
    /* The ranks gather the velocity (f32) at the end; with CFG parallelism the two halves meet too. */
    step += pd_plan_a2a_s(&p->a2a, n, n_tok * n * c->out_channels * 4.0 * B) + pd_plan_crowd_s(p_dev, sp);
    if (sp->cfg_parallel) step += p->p2p.latency + (double)N * c->out_channels * 4.0 / p->p2p.bw;
    o.step_s = step;
    *out = o;
    return PD_OK;
}

double pd_plan_dit_params(const pd_wan_dit_config *c) {
    const double D = c->dim, F = c->ffn_dim, P = (double)c->patch[0] * c->patch[1] * c->patch[2];
    const double blk = 8 * (D * D + D) + 2 * D * F + F + D + 4 * D + 2 * D + 6 * D;
    return c->layers * blk + c->in_channels * P * D + D + c->text_dim * D + D + D * D + D + c->freq_dim * D + D +
           D * D + D + 6 * D * D + 6 * D + D * c->out_channels * P + c->out_channels * P + 2 * D;
}

double pd_plan_text_params(const pd_umt5_config *c) {
    const double d = c->d_model, inner = (double)c->num_heads * c->d_kv;
    return (double)c->vocab_size * d + c->num_layers * (4 * d * inner + 3 * d * c->d_ff + 2 * d + c->num_buckets * c->num_heads) + d;
}

double pd_plan_dit_rank_bytes(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r,
                              const pd_plan_sp *sp) {
    int64_t N = 0;
    if (pd_plan_request_check(m, r, &N) != PD_OK) return INFINITY;
    const pd_wan_dit_config *c = &m->dit;
    const int n = sp->degree < 1 ? 1 : sp->degree, h = (c->heads + n - 1) / n;
    const int B = r->cfg && !sp->cfg_parallel ? 2 : 1;
    const double n_tok = ceil((double)N / n);
    /* Weights in bf16; a block holds x, the modulated input, q, k, v, the attention output and o for
     * its tokens (8 x dim), the FFN hidden (ffn_dim), and q, k, v, out of its head slots over all N
     * tokens; the latent, noise and velocity are f32. */
    const double weights = 2.0 * pd_plan_dit_params(c);
    const double act = B * (n_tok * (8.0 * c->dim + c->ffn_dim) + 4.0 * (double)N * h * c->head_dim) * p->act_bytes +
                       3.0 * 4.0 * (double)N * c->in_channels * 4.0 * B;
    return weights + act;
}

/* ---- the VAE decoder ---- */

typedef struct pd_plan_vae_acc {
    const pd_plan_profile *p;
    double flops, conv_s, bytes, params, silu_s;
    double fresh; /* bytes allocated anew by every decode: the causal convs' caches */
    double later; /* latent frames after the first (the chunks that read caches) */
    int act;
} pd_plan_vae_acc;

/* SiLU over n elements: at the profile's SiLU rate, or as two passes (read, write). */
static void pd_plan_silu(pd_plan_vae_acc *a, double n) {
    if (a->p->silu > 0) a->silu_s += n / a->p->silu;
    else a->bytes += 2.0 * n * a->act;
}

/* A conv of cin -> cout with `taps` taps over `vox` output voxels, at its width's rate. */
static void pd_plan_conv(pd_plan_vae_acc *a, double cin, double cout, double taps, double vox) {
    const double f = 2.0 * cin * cout * taps * vox;
    a->flops += f;
    a->conv_s += f / pd_plan_conv_rate(a->p, cout);
}

/* A causal conv with a temporal kernel of 3 and `taps_hw` spatial taps over `vox` output voxels in
 * frames of `hw` (models/wan/vae.c, vae_conv_apply). The first chunk (one frame, behind two zero
 * frames) multiplies only the last temporal tap; every later chunk copies the two cached frames and
 * its own into one buffer and, except on the last latent frame, saves its last two frames back:
 * (2 + 2) cached frames read and written per later chunk and its own frames once more. The cache is a
 * fresh allocation per decode that has later chunks. `first` false: the conv skips the first chunk
 * (an upsample's time_conv). */
static void pd_plan_causal_conv(pd_plan_vae_acc *a, double cin, double cout, double taps_hw, double vox, double hw,
                                bool first) {
    const double first_vox = first ? hw : 0.0;
    pd_plan_conv(a, cin, cout, 3.0 * taps_hw, vox - first_vox);
    pd_plan_conv(a, cin, cout, taps_hw, first_vox);
    a->params += cin * cout * 3.0 * taps_hw + cout;
    a->params += first ? cin * cout * taps_hw : 0.0; /* the last tap, kept apart for first chunks */
    if (a->later > 0) {
        a->bytes += 2.0 * cin * ((vox - first_vox) + 4.0 * hw * a->later) * a->act;
        a->fresh += 2.0 * cin * hw * a->act;
    }
}

/* A conv without a temporal kernel (1x1x1 and the upsamplers' 2D convs). */
static void pd_plan_plain_conv(pd_plan_vae_acc *a, double cin, double cout, double taps, double vox) {
    pd_plan_conv(a, cin, cout, taps, vox);
    a->params += cin * cout * taps + cout;
}

/* ResBlock cin -> cout over vox voxels in frames of hw: two (RMS_norm, SiLU, causal 3x3x3 conv), a
 * 1x1x1 shortcut when the widths differ. Elementwise passes over its tensors, counted as eager ops:
 * RMS_norm 6 each time, the residual add 3; the SiLUs by pd_plan_silu. */
static void pd_plan_resblock(pd_plan_vae_acc *a, double cin, double cout, double vox, double hw) {
    pd_plan_causal_conv(a, cin, cout, 9, vox, hw, true);
    pd_plan_causal_conv(a, cout, cout, 9, vox, hw, true);
    if (cin != cout) pd_plan_plain_conv(a, cin, cout, 1, vox);
    a->bytes += (6.0 * cin + 6.0 * cout + 3.0 * cout) * vox * a->act;
    pd_plan_silu(a, (cin + cout) * vox);
}

void pd_plan_vae_decode(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r, pd_plan_vae *out) {
    const pd_wan_vae_config *v = &m->vae;
    double T = (r->frames - 1) / 4 + 1, H = r->height / 8.0, W = r->width / 8.0;
    pd_plan_vae_acc a = {.p = p, .act = p->act_bytes, .later = T - 1};
    const double top = (double)v->base_dim * v->dim_mult[3];
    double dims[5] = {top, v->base_dim * (double)v->dim_mult[3], v->base_dim * (double)v->dim_mult[2],
                      v->base_dim * (double)v->dim_mult[1], v->base_dim * (double)v->dim_mult[0]};
    pd_plan_plain_conv(&a, v->z_dim, v->z_dim, 1, T * H * W); /* conv2 (post-quant) */
    pd_plan_causal_conv(&a, v->z_dim, dims[0], 9, T * H * W, H * W, true);
    pd_plan_resblock(&a, dims[0], dims[0], T * H * W, H * W);
    /* middle attention: per frame, one head over H*W positions, qkv and proj 1x1 */
    pd_plan_plain_conv(&a, dims[0], 3 * dims[0], 1, T * H * W);
    const double attn_flops = T * 4.0 * (H * W) * (H * W) * dims[0];
    a.flops += attn_flops;
    pd_plan_plain_conv(&a, dims[0], dims[0], 1, T * H * W);
    pd_plan_resblock(&a, dims[0], dims[0], T * H * W, H * W);
    for (int i = 0; i < 4; i++) {
        double cin = i >= 1 ? dims[i] / 2 : dims[i], cout = dims[i + 1];
        for (int j = 0; j <= v->num_res_blocks; j++, cin = cout) pd_plan_resblock(&a, cin, cout, T * H * W, H * W);
        if (i == 3) break;
        if (v->temporal_downsample[2 - i]) { /* upsample3d: time_conv doubles the frames after the first */
            pd_plan_causal_conv(&a, cout, 2 * cout, 1, (T - 1) * H * W, H * W, false);
            T = 1 + 2 * (T - 1);
        }
        H *= 2, W *= 2;
        pd_plan_plain_conv(&a, cout, cout / 2, 9, T * H * W); /* nearest x2, then Conv2d(C, C/2, 3) */
        a.bytes += 1.25 * cout * T * H * W * a.act; /* the nearest upsample reads 1/4, writes all */
    }
    a.bytes += 6.0 * dims[4] * T * H * W * a.act; /* head: RMS_norm, SiLU, conv to RGB */
    pd_plan_silu(&a, dims[4] * T * H * W);
    pd_plan_causal_conv(&a, dims[4], 3, 9, T * H * W, H * W, true);
    out->flops = a.flops;
    const double px = (double)r->width * r->height;
    out->encode_s = (p->encode_first_px > 0 ? px / p->encode_first_px : 0) +
                    (p->encode_px > 0 ? (r->frames - 1) * px / p->encode_px : 0);
    out->fault_s = p->fault_bw > 0 ? a.fresh / p->fault_bw : 0;
    out->seconds = a.conv_s + attn_flops / p->attn + a.bytes / p->mem_bw + a.silu_s + out->encode_s + out->fault_s;
    out->weight_bytes = 2.0 * a.params;
    /* Streaming holds one chunk of 4 frames at full resolution plus the causal caches: 12.6 tensors of
     * (2*base_dim, 4, height, width), the ratio of section 9's 832x480 bf16 peak (7.2 GiB) to that
     * tensor; its 1280x720 peak (16.5 GiB) checks the scaling. */
    out->peak_bytes = 12.6 * 2.0 * v->base_dim * 4.0 * r->height * r->width * p->act_bytes;
}

double pd_plan_text_seconds(const pd_plan_profile *p, const pd_plan_model *m, const pd_plan_request *r) {
    const pd_umt5_config *c = &m->text;
    const double L = 512, d = c->d_model, inner = (double)c->num_heads * c->d_kv;
    const double per_layer = 2.0 * L * (4 * d * inner + 3 * d * c->d_ff) + 4.0 * L * L * inner;
    const double prompts = r->cfg ? 2 : 1;
    return prompts * (c->num_layers * per_layer / pd_plan_gemm(p, m->weight_bytes) + c->num_layers * L * d * 40.0 * p->act_bytes / p->mem_bw);
}
