#!/usr/bin/env bash
# Sequence parallelism is exact: `pipedit dit --sp N` over N worker processes joined by the shared-
# memory communicator gives the single-device velocity (relative L2 error and max error relative to
# the largest value both < 1e-5 in f32) for SP degrees 1-4, plain Ulysses and PipeSP with several
# chunk sizes g (1, 2, the measured default), batch 1 and the CFG pair, with and without CFG
# parallelism. The tiny model has 4 heads, so degree 3 exercises head padding (ranks own 2, 2 and 0
# real heads); the latent (16, 3, 6, 10) has 3 x 3 x 5 = 45 tokens (T > 1, H != W), not divisible by
# 2 or 4 (uneven shards). The same weights split as 8 x 16 and 2 x 64 heads cover other paddings.
# The single-device CFG pair is itself checked against two batch-1 runs.
# Then faults: a rank killed before its first collective makes the command fail fast with a clear
# message and a non-zero exit (no hang), and bad option combinations are usage errors.
# (test_sp_generate.sh checks the whole sampler loop.)
source "$(dirname "$0")/../lib/script_env.sh" sp_exact

pd_dit_fixture

# compare A B: the two velocity tensors must agree to 1e-5 (same shape).
compare() {
    "$PYTHON" - "$1" "$2" "$PIPEDIT_SRC/tests/ref" <<'PY'
import sys
sys.path.insert(0, sys.argv[3])
from dit_ref import st_read_file
import numpy as np
a = st_read_file(sys.argv[1])[0]["velocity"]
b = st_read_file(sys.argv[2])[0]["velocity"]
if a.shape != b.shape:
    sys.exit("shape %s != %s" % (a.shape, b.shape))
rel = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
mx = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
if not (rel < 1e-5 and mx < 1e-5) or not np.isfinite(a).all() or np.abs(b).max() < 1e-3:
    sys.exit("relative L2 error %.3g, max error %.3g (limit 1e-5)" % (rel, mx))
print("rel %.2e max %.2e" % (rel, mx))
PY
}

"$pd" dit "${base[@]}" --out "$work/ref1.safetensors" --threads 1
"$pd" dit "${base[@]}" "${pair[@]}" --out "$work/ref2.safetensors" --threads 1
"$pd" dit --model "$work/model" --latent "$work/lat.safetensors" --timestep 613 \
    --context "$work/uctx.safetensors" --out "$work/refu.safetensors" --threads 1
# The pair's elements are the two batch-1 evaluations.
"$PYTHON" - "$work/ref2.safetensors" "$work/ref1.safetensors" "$work/refu.safetensors" "$PIPEDIT_SRC/tests/ref" <<'PY'
import sys
sys.path.insert(0, sys.argv[4])
from dit_ref import st_read_file
import numpy as np
p = st_read_file(sys.argv[1])[0]["velocity"]
c = st_read_file(sys.argv[2])[0]["velocity"]
u = st_read_file(sys.argv[3])[0]["velocity"]
assert p.shape == (2,) + c.shape, (p.shape, c.shape)
for got, want in ((p[0], c), (p[1], u)):
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < 1e-5, rel
assert np.linalg.norm(c - u) / np.linalg.norm(c) > 1e-3, "the two contexts should give different velocities"
print("ok: the CFG pair equals two batch-1 evaluations")
PY

run() { # tag reference-file dit-args...
    local tag=$1 want=$2; shift 2
    local out="$work/sp_$tag.safetensors"
    if ! timeout 120 "$pd" dit "$@" --out "$out" --threads 1; then
        bad "$tag: pipedit dit exited non-zero"; return
    fi
    local msg
    if msg=$(compare "$out" "$want" 2>&1); then
        ok "$tag ($msg)"
    else
        bad "$tag: $msg"
    fi
}

# batch 1: degrees 1-4, plain Ulysses (g 99 >= heads per rank), PipeSP g 1 and 2, measured default
run sp1 "$work/ref1.safetensors" "${base[@]}" --sp 1
for n in 2 3 4; do
    for g in 1 2 99 0; do
        run "sp${n}_g${g}" "$work/ref1.safetensors" "${base[@]}" --sp "$n" --pipesp-chunk "$g"
    done
done
# the CFG pair on each SP group (batch 2 inside the group)
run pair_sp2_g1 "$work/ref2.safetensors" "${base[@]}" "${pair[@]}" --sp 2 --pipesp-chunk 1
run pair_sp3_g0 "$work/ref2.safetensors" "${base[@]}" "${pair[@]}" --sp 3
run pair_sp4_g99 "$work/ref2.safetensors" "${base[@]}" "${pair[@]}" --sp 4 --pipesp-chunk 99
# CFG parallelism: halves of 1, 2, 3 and 4 ranks
run cfgpar_2 "$work/ref2.safetensors" "${base[@]}" "${pair[@]}" --sp 2 --cfg-parallel
run cfgpar_4_g1 "$work/ref2.safetensors" "${base[@]}" "${pair[@]}" --sp 4 --cfg-parallel --pipesp-chunk 1
run cfgpar_6_g0 "$work/ref2.safetensors" "${base[@]}" "${pair[@]}" --sp 6 --cfg-parallel
run cfgpar_8_g2 "$work/ref2.safetensors" "${base[@]}" "${pair[@]}" --sp 8 --cfg-parallel --pipesp-chunk 2

# Other head counts, same weights (dim 128 kept, only the head split changes): 8 x 16 heads
# (degree 3: ranks own 3, 3 and 2 real heads; g 2 leaves a padded slot in a chunk) and 2 x 64 heads
# (degrees 3 and 4: ranks without any real head).
for hh in "8 16" "2 64"; do
    set -- $hh
    cp -r "$work/model" "$work/model_h$1"
    "$PYTHON" - "$work/model_h$1/transformer/config.json" "$1" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["num_attention_heads"], c["attention_head_dim"] = int(sys.argv[2]), int(sys.argv[3])
json.dump(c, open(sys.argv[1], "w"))
PY
    hb=(--model "$work/model_h$1" --latent "$work/lat.safetensors" --timestep 613 --context "$work/ctx.safetensors")
    "$pd" dit "${hb[@]}" --out "$work/ref_h$1.safetensors" --threads 1
    run "h$1_sp3_g2" "$work/ref_h$1.safetensors" "${hb[@]}" --sp 3 --pipesp-chunk 2
    run "h$1_sp4_g1" "$work/ref_h$1.safetensors" "${hb[@]}" --sp 4 --pipesp-chunk 1
    run "h$1_sp3_g0" "$work/ref_h$1.safetensors" "${hb[@]}" --sp 3
done
if "$PYTHON" -c '
import sys
sys.path.insert(0, sys.argv[3])
from dit_ref import st_read_file
import numpy as np
a = st_read_file(sys.argv[1])[0]["velocity"]; b = st_read_file(sys.argv[2])[0]["velocity"]
sys.exit(0 if np.linalg.norm(a - b) / np.linalg.norm(b) > 1e-3 else 1)' \
        "$work/ref_h8.safetensors" "$work/ref1.safetensors" "$PIPEDIT_SRC/tests/ref"; then
    ok "the 8-head split changes the velocity (the head count is in effect)"
else
    bad "8 x 16 heads gave the 4 x 32 velocity"
fi

# A rank dies: the command fails within seconds with a message naming it, and leaves no process.
start=$(date +%s)
set +e
PIPEDIT_SP_FAULT_RANK=1 timeout 60 "$pd" dit "${base[@]}" --sp 3 --out "$work/dead.safetensors" --threads 1 \
    --timeout 20 2>"$work/err.txt"
rc=$?
set -e
took=$(( $(date +%s) - start ))
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || ! grep -q "rank 1 of 3 was killed by signal 9" "$work/err.txt"; then
    bad "killed rank: exit $rc after ${took}s:"; cat "$work/err.txt"
elif [ -e "$work/dead.safetensors" ]; then
    bad "killed rank: an output was written"
else
    ok "killed rank -> exit $rc after ${took}s ($(head -n 1 "$work/err.txt"))"
fi

# Usage errors.
for args in "--sp 2 --cfg-parallel" "--sp 3 --cfg-parallel ${pair[*]}" "--sp 0" "--sp 65" "--sp 2 --pipesp-chunk -1"; do
    set +e
    # shellcheck disable=SC2086
    "$pd" dit "${base[@]}" $args --out "$work/bad.safetensors" 2>"$work/err.txt"
    rc=$?
    set -e
    if [ "$rc" -ne 2 ] || [ ! -s "$work/err.txt" ]; then
        bad "pipedit dit $args exited $rc"
    fi
done
pd_summary
