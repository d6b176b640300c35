#!/usr/bin/python3
"""Independent NumPy reference of the umT5 encoder (DESIGN.md section 5), in float64.

Usage: umt5_ref.py --model DIR --check CTX.safetensors [--tol 1e-4]
Reads the token ids stored in CTX ("ids"), recomputes the encoder output from the checkpoint in
DIR/text_encoder, and compares it with CTX's "context": relative L2 error must be below tol.
Prints the error; exit 0 on pass, 1 on failure.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    """Returns {name: float64 or int array} read with nothing but json + numpy."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    data = raw[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = data[b:e]
        shape = info["shape"]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        elif dt == "I32":
            a = np.frombuffer(buf, dtype="<i4").astype(np.int64)
        elif dt == "I64":
            a = np.frombuffer(buf, dtype="<i8")
        else:
            raise SystemExit("unsupported dtype %s for %s" % (dt, name))
        out[name] = a.reshape(shape)
    return out


def rel_bucket(rel, num_buckets, max_distance):
    """T5 bidirectional bucket of key - query distances (int array), float32 log as T5 computes it."""
    half = num_buckets // 2
    exact = half // 2
    bucket = np.where(rel > 0, half, 0)
    a = np.abs(rel)
    with np.errstate(divide="ignore"):
        large = np.log(a.astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact)) \
            * np.float32(half - exact)
    large = exact + np.where(a >= exact, large, 0).astype(np.int64)
    large = np.minimum(large, half - 1)
    return bucket + np.where(a < exact, a, large)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def encode(model_dir, ids):
    cfg = json.load(open(os.path.join(model_dir, "text_encoder", "config.json")))
    W = read_safetensors(os.path.join(model_dir, "text_encoder", "model.safetensors"))
    H, dk = cfg["num_heads"], cfg["d_kv"]
    eps = cfg.get("layer_norm_epsilon", 1e-6)
    nb = cfg.get("relative_attention_num_buckets", 32)
    md = cfg.get("relative_attention_max_distance", 128)
    emb = W["shared.weight"] if "shared.weight" in W else W["encoder.embed_tokens.weight"]
    L = len(ids)
    x = emb[ids]                                          # (L, D)
    pos = np.arange(L)
    buckets = rel_bucket(pos[None, :] - pos[:, None], nb, md)  # (Lq, Lk): key - query
    for n in range(cfg["num_layers"]):
        p = "encoder.block.%d." % n
        h = rms_norm(x, W[p + "layer.0.layer_norm.weight"], eps)
        q = (h @ W[p + "layer.0.SelfAttention.q.weight"].T).reshape(L, H, dk)
        k = (h @ W[p + "layer.0.SelfAttention.k.weight"].T).reshape(L, H, dk)
        v = (h @ W[p + "layer.0.SelfAttention.v.weight"].T).reshape(L, H, dk)
        table = W[p + "layer.0.SelfAttention.relative_attention_bias.weight"]  # (buckets, H)
        bias = table[buckets].transpose(2, 0, 1)          # (H, Lq, Lk)
        s = np.einsum("ihd,jhd->hij", q, k) + bias        # no 1/sqrt(d_kv)
        s -= s.max(axis=-1, keepdims=True)
        pr = np.exp(s)
        pr /= pr.sum(axis=-1, keepdims=True)
        att = np.einsum("hij,jhd->ihd", pr, v).reshape(L, H * dk)
        x = x + att @ W[p + "layer.0.SelfAttention.o.weight"].T
        h = rms_norm(x, W[p + "layer.1.layer_norm.weight"], eps)
        g = gelu_tanh(h @ W[p + "layer.1.DenseReluDense.wi_0.weight"].T) * (h @ W[p + "layer.1.DenseReluDense.wi_1.weight"].T)
        x = x + g @ W[p + "layer.1.DenseReluDense.wo.weight"].T
    return rms_norm(x, W["encoder.final_layer_norm.weight"], eps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--check", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    got = read_safetensors(a.check)
    ids = got["ids"].astype(np.int64)
    ctx = got["context"]
    ref = encode(a.model, ids)
    if ctx.shape != ref.shape:
        print("shape %s, reference %s" % (ctx.shape, ref.shape))
        return 1
    err = np.linalg.norm(ctx - ref) / max(np.linalg.norm(ref), 1e-30)
    print("%d tokens: relative L2 error %.3e (tol %.0e), |ref| rms %.3f" %
          (len(ids), err, a.tol, np.sqrt(np.mean(ref ** 2))))
    return 0 if err < a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
