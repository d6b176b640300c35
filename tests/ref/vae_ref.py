#!/usr/bin/env python3
"""Independent NumPy reference for the Wan2.1 VAE decoder, written from DESIGN.md section 5.

Whole-clip decode in float64: z * std + mean -> conv2 (1x1x1) -> decoder.conv1 (causal k3) -> middle
(ResBlock, per-frame attention, ResBlock) -> upsamples -> head (RMS_norm, SiLU, causal conv) -> clamp.
Causal convs pad H, W symmetrically and T with two zero frames in front. An upsample3d passes latent
frame 0 through and runs time_conv over the frames after it (as the streaming decode does: time_conv is
skipped on the first chunk and its history starts at the second), the two output halves interleaving in
time. Checkpoints are read here (JSON header + numpy.frombuffer; bf16 widened by a 16-bit shift) in
either name layout: diffusers names are first mapped to the original ones with DESIGN.md's table.

usage:
  vae_ref.py latent --shape 16,3,4,6 --seed 1 --out LAT.safetensors
  vae_ref.py check --vae PATH --latent LAT.safetensors --video OUT.safetensors [--tol 1e-4]
  vae_ref.py compare --a A.safetensors --b B.safetensors --tol 1e-5   (tensor "video" of both)
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

WAN_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
            -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
           1.6382, 1.1253, 2.8251, 1.9160]


# ---- safetensors ----

def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[base + b:base + e]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        elif dt == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {dt} not handled by the reference")
        out[name] = a.astype(np.float64).reshape(info["shape"])
    return out


def st_write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- checkpoint: find files, map names ----

def open_vae(path):
    """Returns (weights with original names, latents_mean, latents_std)."""
    cfg = None
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "vae")):
            path = os.path.join(path, "vae")
        if os.path.exists(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json")) as f:
                cfg = json.load(f)
        files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
        if len(files) != 1:
            raise SystemExit(f"{path}: expected one .safetensors file, found {files}")
        path = os.path.join(path, files[0])
    w = st_read(path)
    if "decoder.conv_in.weight" in w:
        w = diffusers_to_original(w)
    mean = cfg["latents_mean"] if cfg else WAN_MEAN
    std = cfg["latents_std"] if cfg else WAN_STD
    return w, np.array(mean, np.float64), np.array(std, np.float64)


RES_INNER = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut"}


def diffusers_to_original(w):
    # resnets per up block, to turn (block, resnet) into the flat upsamples index
    per = 1 + max(int(m.group(1)) for k in w for m in [re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k)] if m)
    out = {}
    for k, v in w.items():
        n = k
        n = re.sub(r"^post_quant_conv\.", "conv2.", n)
        n = re.sub(r"^quant_conv\.", "conv1.", n)
        n = re.sub(r"^(encoder|decoder)\.conv_in\.", r"\1.conv1.", n)
        n = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.head.0.", n)
        n = re.sub(r"^(encoder|decoder)\.conv_out\.", r"\1.head.2.", n)
        n = re.sub(r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1.", n)
        n = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.",
                   lambda m: f"{m.group(1)}.middle.{2 * int(m.group(2))}.", n)
        n = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
                   lambda m: f"decoder.upsamples.{(per + 1) * int(m.group(1)) + int(m.group(2))}.", n)
        n = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                   lambda m: f"decoder.upsamples.{(per + 1) * int(m.group(1)) + per}.", n)
        n = re.sub(r"^encoder\.down_blocks\.", "encoder.downsamples.", n)
        m = re.match(r"^(.*\.(?:middle\.[02]|upsamples\.\d+|downsamples\.\d+))\.(norm1|conv1|norm2|conv2|conv_shortcut)\.(.*)$", n)
        if m:
            n = f"{m.group(1)}.{RES_INNER[m.group(2)]}.{m.group(3)}"
        if n in out:
            raise SystemExit(f"name clash mapping {k} -> {n}")
        out[n] = v
    return out


# ---- ops (float64, channel-first (C, T, H, W)) ----

def conv3d(x, w, b, pad_t, pad_h, pad_w):
    c, t, h, wd = x.shape
    o, ci, kt, kh, kw = w.shape
    assert ci == c, (w.shape, x.shape)
    xp = np.pad(x, ((0, 0), (pad_t, 0), (pad_h, pad_h), (pad_w, pad_w)))
    to, ho, wo = xp.shape[1] - kt + 1, xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    y = np.zeros((o, to, ho, wo))
    for a in range(kt):
        for i in range(kh):
            for j in range(kw):
                y += np.tensordot(w[:, :, a, i, j], xp[:, a:a + to, i:i + ho, j:j + wo], axes=([1], [0]))
    return y + b[:, None, None, None]


def causal(x, w, b):
    kt, kh, kw = w.shape[2:]
    return conv3d(x, w, b, kt - 1, kh // 2, kw // 2)


def rms(x, g):
    n = np.sqrt((x * x).sum(axis=0, keepdims=True))
    return x / np.maximum(n, 1e-12) * np.sqrt(x.shape[0]) * g.reshape(-1, 1, 1, 1)


def silu(x):
    return x / (1.0 + np.exp(-x))


def resblock(W, p, x):
    h = causal(silu(rms(x, W[p + ".residual.0.gamma"])), W[p + ".residual.2.weight"], W[p + ".residual.2.bias"])
    h = causal(silu(rms(h, W[p + ".residual.3.gamma"])), W[p + ".residual.6.weight"], W[p + ".residual.6.bias"])
    if p + ".shortcut.weight" in W:
        x = causal(x, W[p + ".shortcut.weight"], W[p + ".shortcut.bias"])
    return x + h


def attention(W, p, x):
    c, t, h, w = x.shape
    n = rms(x, W[p + ".norm.gamma"])
    wq = W[p + ".to_qkv.weight"].reshape(3 * c, c)
    bq = W[p + ".to_qkv.bias"]
    wo = W[p + ".proj.weight"].reshape(c, c)
    bo = W[p + ".proj.bias"]
    out = np.empty_like(x)
    for f in range(t):
        tok = n[:, f].reshape(c, h * w).T                        # (N, C)
        qkv = tok @ wq.T + bq                                     # (N, 3C): q | k | v
        q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
        s = q @ k.T / np.sqrt(c)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        a = (s / s.sum(axis=1, keepdims=True)) @ v
        out[:, f] = (a @ wo.T + bo).T.reshape(c, h, w)
    return out + x


def upsample(W, p, x):
    c, t, h, w = x.shape
    if p + ".time_conv.weight" in W:
        y = [x[:, :1]]
        if t > 1:
            tc = causal(x[:, 1:], W[p + ".time_conv.weight"], W[p + ".time_conv.bias"])  # (2C, T-1, H, W)
            inter = np.stack([tc[:c], tc[c:]], axis=2).reshape(c, 2 * (t - 1), h, w)
            y.append(inter)
        x = np.concatenate(y, axis=1)
    x = x.repeat(2, axis=2).repeat(2, axis=3)
    w2 = W[p + ".resample.1.weight"]
    return conv3d(x, w2[:, :, None], W[p + ".resample.1.bias"], 0, 1, 1)


def decode(W, mean, std, z):
    x = z * std[:, None, None, None] + mean[:, None, None, None]
    x = causal(x, W["conv2.weight"], W["conv2.bias"])
    x = causal(x, W["decoder.conv1.weight"], W["decoder.conv1.bias"])
    x = resblock(W, "decoder.middle.0", x)
    x = attention(W, "decoder.middle.1", x)
    x = resblock(W, "decoder.middle.2", x)
    i = 0
    while f"decoder.upsamples.{i}.residual.0.gamma" in W or f"decoder.upsamples.{i}.resample.1.weight" in W:
        p = f"decoder.upsamples.{i}"
        x = resblock(W, p, x) if p + ".residual.0.gamma" in W else upsample(W, p, x)
        i += 1
    assert i > 0, "no decoder.upsamples found"
    x = causal(silu(rms(x, W["decoder.head.0.gamma"])), W["decoder.head.2.weight"], W["decoder.head.2.bias"])
    return np.clip(x, -1.0, 1.0)


def rel_l2(a, b):
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("latent")
    a.add_argument("--shape", required=True)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--vae", required=True)
    c.add_argument("--latent", required=True)
    c.add_argument("--video", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    m = sub.add_parser("compare")
    m.add_argument("--a", required=True)
    m.add_argument("--b", required=True)
    m.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    if args.cmd == "latent":
        shape = [int(s) for s in args.shape.split(",")]
        z = np.random.default_rng(args.seed).standard_normal(shape)
        st_write(args.out, {"latent": z})
        return 0
    if args.cmd == "compare":
        x, y = st_read(args.a)["video"], st_read(args.b)["video"]
        if x.shape != y.shape:
            print(f"FAIL shapes {x.shape} vs {y.shape}")
            return 1
        e = rel_l2(x, y)
        print(f"{'ok' if e < args.tol else 'FAIL'} relative L2 {e:.3e} (tol {args.tol:g}), shape {x.shape}")
        return 0 if e < args.tol else 1
    W, mean, std = open_vae(args.vae)
    z = st_read(args.latent)["latent"]
    ref = decode(W, mean, std, z)
    got = st_read(args.video)["video"]
    t = z.shape[1]
    want_shape = (3, 1 + 4 * (t - 1), 8 * z.shape[2], 8 * z.shape[3])
    if ref.shape != want_shape or got.shape != want_shape:
        print(f"FAIL shapes: reference {ref.shape}, pipedit {got.shape}, expected {want_shape}")
        return 1
    e = rel_l2(got, ref)
    clipped = float(np.mean(np.abs(ref) >= 1.0))
    print(f"{'ok' if e < args.tol else 'FAIL'} relative L2 {e:.3e} (tol {args.tol:g}), video {got.shape}, "
          f"std {ref.std():.3f}, clipped {100 * clipped:.1f}%")
    return 0 if e < args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
