#!/usr/bin/env python3
"""Independent float64 NumPy reference of the Wan2.1 text-to-video DiT, written from DESIGN.md section 5.

Reads checkpoints itself (safetensors header via json, data via numpy; BF16 widened by a 16-bit shift),
in either tensor-name layout, and computes the velocity for one latent.

  dit_ref.py inputs   --latent F --context F --shape C,T,H,W --ctx-len L --text-dim D [--seed S] [--ctx-batch-dim]
  dit_ref.py compare  --model PATH --latent F --context F --timestep T --velocity F [--tol 1e-4]
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

# ---------------------------------------------------------------- safetensors

_NP = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4", "I64": "<i8"}


def st_read_file(path):
    """Returns ({name: float64 array}, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, ent in header.items():
        b, e = ent["data_offsets"]
        raw = blob[base + b:base + e]
        if ent["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_NP[ent["dtype"]]))
        out[name] = arr.reshape(ent["shape"]).astype(np.float64)
    return out, meta


def st_read_any(path):
    """A file, or a folder holding a sharded index or exactly one .safetensors file."""
    if os.path.isfile(path):
        return st_read_file(path)
    names = os.listdir(path)
    idx = [n for n in names if n.endswith(".safetensors.index.json")]
    if idx:
        with open(os.path.join(path, idx[0])) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    else:
        shards = [n for n in names if n.endswith(".safetensors")]
        if len(shards) != 1:
            sys.exit("dit_ref: %s holds %d safetensors files" % (path, len(shards)))
    tensors, meta = {}, {}
    for s in shards:
        t, m = st_read_file(os.path.join(path, s))
        tensors.update(t)
        meta.update(m)
    return tensors, meta


def st_write(path, tensors):
    """Writes float32 tensors in name order."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- checkpoint names

# diffusers name -> original name (DESIGN.md: the cross-attention norm is diffusers norm2 = original norm3)
_RENAME = [
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.to_([qkv])\.", r"blocks.\1.self_attn.\2."),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.self_attn.norm_\2."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.to_([qkv])\.", r"blocks.\1.cross_attn.\2."),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])\.", r"blocks.\1.cross_attn.norm_\2."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
]


def to_original(w):
    out = {}
    for name, a in w.items():
        new = name
        for pat, rep in _RENAME:
            new, n = re.subn(pat, rep, name)
            if n:
                break
        if not n and not name.startswith("patch_embedding."):
            sys.exit("dit_ref: unexpected diffusers tensor name %s" % name)
        out[new] = a
    return out


def expected_names(layers):
    """Every tensor of an original-layout Wan2.1 DiT checkpoint (DESIGN.md section 5)."""
    wb = lambda p: [p + ".weight", p + ".bias"]
    names = wb("patch_embedding") + wb("text_embedding.0") + wb("text_embedding.2") + wb("time_embedding.0")
    names += wb("time_embedding.2") + wb("time_projection.1") + ["head.modulation"] + wb("head.head")
    for i in range(layers):
        b = "blocks.%d." % i
        names += [b + "modulation"] + wb(b + "norm3") + wb(b + "ffn.0") + wb(b + "ffn.2")
        for a in ("self_attn", "cross_attn"):
            for p in "qkvo":
                names += wb(b + a + "." + p)
            names += [b + a + ".norm_q.weight", b + a + ".norm_k.weight"]
    return set(names)


def load_model(path):
    if os.path.isdir(os.path.join(path, "transformer")):
        path = os.path.join(path, "transformer")
    cfg = None
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
    w, meta = st_read_any(path)
    if "condition_embedder.time_embedder.linear_1.weight" in w:
        w = to_original(w)
    else:
        pre = "model.diffusion_model."
        if pre + "time_embedding.0.weight" in w:
            w = {k[len(pre):]: v for k, v in w.items()}
    heads = cfg["num_attention_heads"] if cfg else int(meta["num_attention_heads"])
    eps = cfg["eps"] if cfg else 1e-6
    layers = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
    want = expected_names(layers)
    if set(w) != want:
        sys.exit("dit_ref: %s: tensor names differ from a Wan2.1 checkpoint: missing %s, unexpected %s" %
                 (path, sorted(want - set(w))[:5], sorted(set(w) - want)[:5]))
    return w, heads, eps, layers


# ---------------------------------------------------------------- the model

def linear(x, w, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, eps, g=None, b=None):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * g + b if g is not None else y


def rms_norm(x, g, eps):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * g


def timestep_sinusoid(t, dim):
    half = dim // 2
    freqs = 10000.0 ** (-np.arange(half, dtype=np.float64) / half)
    a = t * freqs
    return np.concatenate([np.cos(a), np.sin(a)])


def rope_angles(gt, gh, gw, d, theta=10000.0):
    """(N, d/2) angles: pairs split t / h / w as n_t = d - 4(d//6), n_h = n_w = 2(d//6) dims."""
    nh = 2 * (d // 6)
    nt = d - 2 * nh
    pos = np.stack(np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij"), -1).reshape(-1, 3)
    parts = []
    for axis, n in enumerate((nt, nh, nh)):
        wj = theta ** (-2.0 * np.arange(n // 2) / n)
        parts.append(pos[:, axis:axis + 1].astype(np.float64) * wj[None, :])
    return np.concatenate(parts, 1)


def apply_rope(x, ang):
    """x (N, H, d): rotate adjacent pairs (x[2j], x[2j+1]) by ang (N, d/2)."""
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    xr, xi = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = xr * c - xi * s
    out[..., 1::2] = xr * s + xi * c
    return out


def attention(q, k, v):
    """q (N, H, d), k, v (M, H, d), full softmax."""
    s = np.einsum("nhd,mhd->hnm", q, k) / np.sqrt(q.shape[-1])
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hnm,mhd->nhd", p, v)


def attn_block(w, pre, x, ctx, heads, eps, ang):
    n, dim = x.shape
    hd = dim // heads
    q = rms_norm(linear(x, w, pre + ".q"), w[pre + ".norm_q.weight"], eps).reshape(n, heads, hd)
    k = rms_norm(linear(ctx, w, pre + ".k"), w[pre + ".norm_k.weight"], eps).reshape(ctx.shape[0], heads, hd)
    v = linear(ctx, w, pre + ".v").reshape(ctx.shape[0], heads, hd)
    if ang is not None:
        q, k = apply_rope(q, ang), apply_rope(k, ang)
    return linear(attention(q, k, v).reshape(n, dim), w, pre + ".o")


def forward(w, heads, eps, layers, latent, t, context, text_len=512):
    C, T, H, W = latent.shape
    dim, cin, pt, ph, pw = w["patch_embedding.weight"].shape
    gt, gh, gw = T // pt, H // ph, W // pw
    # patch embed: values of a token ordered (c, pt, ph, pw)
    tok = latent.reshape(C, gt, pt, gh, ph, gw, pw).transpose(1, 3, 5, 0, 2, 4, 6).reshape(gt * gh * gw, -1)
    x = tok @ w["patch_embedding.weight"].reshape(dim, -1).T + w["patch_embedding.bias"]
    # time
    freq_dim = w["time_embedding.0.weight"].shape[1]
    e = linear(silu(linear(timestep_sinusoid(t, freq_dim), w, "time_embedding.0")), w, "time_embedding.2")
    e0 = linear(silu(e), w, "time_projection.1").reshape(6, dim)
    # text, zero-padded to text_len rows; all rows attended
    ctx = np.zeros((text_len, context.shape[1]))
    ctx[:context.shape[0]] = context
    ctx = linear(gelu_tanh(linear(ctx, w, "text_embedding.0")), w, "text_embedding.2")
    ang = rope_angles(gt, gh, gw, dim // heads)
    for i in range(layers):
        b = "blocks.%d" % i
        m = w[b + ".modulation"][0] + e0
        shift_msa, scale_msa, gate_msa, shift_ffn, scale_ffn, gate_ffn = m
        h = layer_norm(x, eps) * (1 + scale_msa) + shift_msa
        x = x + gate_msa * attn_block(w, b + ".self_attn", h, h, heads, eps, ang)
        h = layer_norm(x, eps, w[b + ".norm3.weight"], w[b + ".norm3.bias"])
        x = x + attn_block(w, b + ".cross_attn", h, ctx, heads, eps, None)
        h = layer_norm(x, eps) * (1 + scale_ffn) + shift_ffn
        x = x + gate_ffn * linear(gelu_tanh(linear(h, w, b + ".ffn.0")), w, b + ".ffn.2")
    hm = w["head.modulation"][0] + e
    shift, scale = hm[0], hm[1]
    out = linear(layer_norm(x, eps) * (1 + scale) + shift, w, "head.head")
    cout = out.shape[1] // (pt * ph * pw)
    # outputs of a token ordered (pt, ph, pw, c)
    return out.reshape(gt, gh, gw, pt, ph, pw, cout).transpose(6, 0, 3, 1, 4, 2, 5).reshape(cout, T, H, W)


# ---------------------------------------------------------------- commands

def cmd_inputs(a):
    rng = np.random.default_rng(a.seed)
    shape = [int(s) for s in a.shape.split(",")]
    st_write(a.latent, {"latent": rng.standard_normal(shape)})
    ctx = rng.standard_normal((a.ctx_len, a.text_dim))
    if a.ctx_batch_dim:
        ctx = ctx[None]
    st_write(a.context, {"context": ctx})


def cmd_compare(a):
    w, heads, eps, layers = load_model(a.model)
    lat, _ = st_read_file(a.latent)
    ctx, _ = st_read_file(a.context)
    ctx = ctx["context"]
    if ctx.ndim == 3:
        ctx = ctx[0]
    ref = forward(w, heads, eps, layers, lat["latent"], a.timestep, ctx)
    got, _ = st_read_file(a.velocity)
    got = got["velocity"]
    if got.shape != ref.shape:
        print("dit_ref: shape %s != reference %s" % (got.shape, ref.shape))
        return 1
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    print("dit_ref: %s t=%g shape %s: rel L2 error %.3e (ref rms %.3f, max abs diff %.3e)" %
          (a.model, a.timestep, ref.shape, rel, np.sqrt((ref ** 2).mean()), np.abs(got - ref).max()))
    if not np.isfinite(rel) or rel >= a.tol:
        print("dit_ref: FAIL: error above %g" % a.tol)
        return 1
    if np.sqrt((ref ** 2).mean()) < 1e-3:
        print("dit_ref: FAIL: degenerate reference velocity")
        return 1
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("inputs")
    i.add_argument("--latent", required=True)
    i.add_argument("--context", required=True)
    i.add_argument("--shape", required=True)
    i.add_argument("--ctx-len", type=int, required=True)
    i.add_argument("--text-dim", type=int, required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--ctx-batch-dim", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("--model", required=True)
    c.add_argument("--latent", required=True)
    c.add_argument("--context", required=True)
    c.add_argument("--timestep", type=float, required=True)
    c.add_argument("--velocity", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    if a.cmd == "inputs":
        cmd_inputs(a)
        return 0
    return cmd_compare(a)


if __name__ == "__main__":
    sys.exit(main())
