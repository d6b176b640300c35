#!/bin/bash
# torch-cpu noise against a live torch: bit for bit equal to torch.randn(shape, generator=
# torch.Generator("cpu").manual_seed(seed)) for several seeds and shapes (below, at and above torch's
# vectorised threshold of 16 elements, odd sizes, latent shapes [16, T, H, W]) and for shards of them.
# Skips (77) when Debian's python3-torch is not installed.
source "$(dirname "$0")/../lib/script_env.sh" torch_noise
"$PYTHON" -c 'import torch' 2>/dev/null || {
    echo "SKIP: torch missing for $PYTHON (apt-get install python3-torch, or PIPEDIT_DEPS_TORCH=1 scripts/deps.sh)"
    exit 77
}
pd_require_numpy
"$PYTHON" - "$PIPEDIT_BIN/test_noise" <<'PY'
import subprocess, sys
import numpy as np, torch

exe = sys.argv[1]
print("torch", torch.__version__)
shapes = [(1,), (2,), (3,), (15,), (16,), (17,), (31,), (33,), (100,), (1001,), (65537,),
          (16, 1, 2, 2), (16, 2, 3, 5), (16, 3, 7, 9), (16, 21, 6, 13), (16, 5, 60, 104)]
seeds = [0, 42, 2**31 + 11, 2**32 + 42, 2**64 - 1]
fails = checked = 0
for shape in shapes:
    for seed in (seeds if np.prod(shape) < 100000 else seeds[:2]):
        want = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).numpy().ravel()
        n = want.size
        runs = [(0, n)]
        if n >= 4:  # a few shards: the head, a middle piece and the tail
            runs += [(0, n // 3), (n // 3, n // 2 - n // 3), (n - n // 5 - 1, n // 5 + 1)]
        for start, count in runs:
            out = subprocess.run([exe, "--torch-dump", str(seed), str(n), str(start), str(count)], capture_output=True)
            got = np.frombuffer(out.stdout, dtype=np.float32)
            ref = want[start:start + count]
            checked += 1
            if out.returncode or got.size != ref.size or np.any(got.view(np.uint32) != ref.view(np.uint32)):
                bad = np.flatnonzero(got.view(np.uint32) != ref.view(np.uint32)) if got.size == ref.size else []
                print(f"FAIL shape {shape} seed {seed} elements [{start}, {start + count}): "
                      f"{len(bad)} differ, first {bad[:5]}")
                fails += 1
print(f"{checked} runs checked, {fails} failures")
sys.exit(1 if fails or not checked else 0)
PY
