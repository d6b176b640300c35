#!/usr/bin/env bash
# Runs every built CPU benchmark (build/bin/bench_*, each writes its own JSON under bench/results/),
# then regenerates bench/README.md's tables.
#   PIPEDIT_BIN            folder of the built programs (default: build/bin in the source tree)
#   PIPEDIT_BENCH_RESULTS  where results go (default: bench/results)
#   PIPEDIT_BENCH_TIMEOUT  seconds allowed per program (default 3600)
#   PIPEDIT_BENCH_ONLY     run only programs whose name contains this text
# Programs named bench_gpu* or *_cuda* are GPU benchmarks and skipped here; a program exiting 77
# reports itself skipped. Extra arguments are passed to every program.
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PIPEDIT_BIN:-$src/build/bin}
export PIPEDIT_SRC=$src
export PIPEDIT_BENCH_RESULTS=${PIPEDIT_BENCH_RESULTS:-$src/bench/results}
timeout_s=${PIPEDIT_BENCH_TIMEOUT:-3600}
mkdir -p "$PIPEDIT_BENCH_RESULTS"

ran=0 failed=0 skipped=0
shopt -s nullglob
for prog in "$bin"/bench_*; do
  name=$(basename "$prog")
  [[ -f $prog && -x $prog ]] || continue
  case $name in bench_gpu* | *_cuda*) continue ;; esac
  if [[ -n ${PIPEDIT_BENCH_ONLY:-} && $name != *"$PIPEDIT_BENCH_ONLY"* ]]; then continue; fi
  echo "== $name"
  start=$(date +%s)
  timeout "$timeout_s" "$prog" "$@"
  rc=$?
  if [[ $rc -eq 77 ]]; then
    echo "== $name: skipped"
    skipped=$((skipped + 1))
  elif [[ $rc -ne 0 ]]; then
    echo "== $name: FAILED (exit $rc)" >&2
    failed=$((failed + 1))
  else
    echo "== $name: done in $(($(date +%s) - start)) s"
    ran=$((ran + 1))
  fi
done
if [[ $ran -eq 0 && $failed -eq 0 && $skipped -eq 0 ]]; then
  echo "no benchmark programs in $bin (build first: make build)" >&2
fi

/usr/bin/python3 "$src/bench/summarize.py" "$PIPEDIT_BENCH_RESULTS" "$src/bench/README.md" || exit 1
echo "benchmarks: $ran ran, $skipped skipped, $failed failed"
[[ $failed -eq 0 ]]
