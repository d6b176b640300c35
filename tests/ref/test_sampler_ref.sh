#!/bin/bash
# Samplers against the independent NumPy reference: the C unit-test program writes schedules and
# trajectories on an analytic model, sampler_ref.py recomputes and compares them.
source "$(dirname "$0")/../lib/script_env.sh" sampler_ref
pd_require_numpy
"$PIPEDIT_BIN/test_sampler" --trace "$work/trace.txt"
"$PYTHON" "$PIPEDIT_SRC/tests/ref/sampler_ref.py" "$work/trace.txt"
