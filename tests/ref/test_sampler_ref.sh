#!/bin/bash
# Samplers against the independent NumPy reference: the C unit-test program writes schedules and
# trajectories on an analytic model (a fixed initial latent, an exact velocity function) for Euler and,
# for 72 (steps, shift) pairs each, the official solvers UniPC and DPM++; sampler_ref.py recomputes them
# and requires agreement within 1e-5 relative at every step.
source "$(dirname "$0")/../lib/script_env.sh" sampler_ref
pd_require_numpy
"$PIPEDIT_BIN/test_sampler" --trace "$work/trace.txt"
"$PYTHON" "$PIPEDIT_SRC/tests/ref/sampler_ref.py" "$work/trace.txt"
