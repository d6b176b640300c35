# Sourced by the script tests (tests/*/test_*.sh) as `source "$(dirname "$0")/../lib/script_env.sh" NAME`:
# strict mode, the variables ctest passes (PIPEDIT_BIN, PYTHON, PIPEDIT_SRC, PIPEDIT_TMP), a scratch
# folder $work (removed at exit), $pd = the pipedit binary, warnings-only logging, and the check helpers
# below.
set -euo pipefail
: "${PIPEDIT_BIN:?}" "${PYTHON:?}" "${PIPEDIT_SRC:?}" "${PIPEDIT_TMP:?}"
mkdir -p "$PIPEDIT_TMP"
work=$(mktemp -d "$PIPEDIT_TMP/$1.XXXXXX")
trap 'rm -rf "$work"' EXIT
pd="$PIPEDIT_BIN/pipedit"
export PIPEDIT_LOG=warn

# ok TEXT / bad TEXT: one check passed / failed, printed as "ok   TEXT" / "FAIL TEXT" and counted.
# pd_summary prints "N passed, N failed" and returns non-zero when a check failed: end a test with it.
passes=0 fails=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
pd_summary() {
    echo "$passes passed, $fails failed"
    [ "$fails" -eq 0 ]
}

# pd_require_numpy: ends the test as failed, saying how to install it, when $PYTHON has no NumPy.
pd_require_numpy() {
    "$PYTHON" -c 'import numpy' 2>/dev/null || {
        echo "FAIL: numpy missing for $PYTHON (scripts/deps.sh installs python3-numpy)"
        exit 1
    }
}

# pd_dit_fixture: the tiny model (seed 11, f32, diffusers layout) in $work/model, a latent (16, 3, 6,
# 10) = 45 tokens with a 7-row context and a second 4-row context, and the `pipedit dit` argument
# arrays base (model, latent, timestep 613, context) and pair (the second context: the CFG pair).
pd_dit_fixture() {
    local ref="$PIPEDIT_SRC/tests/ref/dit_ref.py"
    "$pd" mkmodel --preset tiny --seed 11 --out "$work/model" --layout diffusers --dtype f32 >/dev/null
    "$PYTHON" "$ref" inputs --latent "$work/lat.safetensors" --context "$work/ctx.safetensors" \
        --shape 16,3,6,10 --ctx-len 7 --text-dim 32 --seed 21
    "$PYTHON" "$ref" inputs --latent "$work/lat_unused.safetensors" --context "$work/uctx.safetensors" \
        --shape 16,1,2,2 --ctx-len 4 --text-dim 32 --seed 22
    base=(--model "$work/model" --latent "$work/lat.safetensors" --timestep 613 --context "$work/ctx.safetensors")
    pair=(--context-uncond "$work/uctx.safetensors")
}
