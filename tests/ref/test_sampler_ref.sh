#!/bin/bash
# Samplers against the independent NumPy reference: the C unit-test program writes schedules and
# trajectories on an analytic model, sampler_ref.py recomputes and compares them.
set -euo pipefail
: "${PIPEDIT_BIN:?}" "${PYTHON:?}" "${PIPEDIT_SRC:?}" "${PIPEDIT_TMP:?}"
"$PYTHON" -c 'import numpy' 2>/dev/null || { echo "FAIL: numpy missing for $PYTHON (scripts/deps.sh installs python3-numpy)"; exit 1; }
mkdir -p "$PIPEDIT_TMP"
dir=$(mktemp -d "$PIPEDIT_TMP/sampler_ref.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$PIPEDIT_BIN/test_sampler" --trace "$dir/trace.txt"
"$PYTHON" "$PIPEDIT_SRC/tests/ref/sampler_ref.py" "$dir/trace.txt"
