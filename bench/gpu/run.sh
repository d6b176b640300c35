#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (H100 / H200): build, check and time in a single call of
# about 5 minutes (hard cap BUDGET seconds, default 480). Run from anywhere in the checkout:
#
#   bash bench/gpu/run.sh [--quick]
#
# Steps; each has a timeout (clipped to what is left of the budget), a failing step is reported and the
# rest still run:
#   1. build (Release, PIPEDIT_CUDA=ON, PIPEDIT_SERVING=OFF, NCCL when found) of the GPU_TESTS below and
#      bench_gpu into build-gpu-run/ (git-ignored, reused by a second call on the same machine). CMake when
#      cmake and pkg-config are there, else (or when that fails, or with PIPEDIT_GPU_BUILD_DIRECT=1)
#      bench/gpu/build_direct.sh (cc + nvcc). nvcc, OpenBLAS, jansson (the image's, else the static copy
#      bench/gpu/prepare.sh put in bench/gpu/deps/) and NCCL are found once, by bench/gpu/find_deps.sh.
#   2. the GPU_TESTS: test_gpu_ops, test_gpu_fused, test_gpu_models, test_gpu_fallbacks (start-up architecture
#      check, cuDNN SDPA refusals at build and at execution falling back, CONV3D weight copies never stale),
#      test_comm_nccl (host buffers refused, waits after an abort) and test_gpu_sp (SP over NCCL with the chunk
#      measured: calibration through device memory) (exit 77 = skipped: no device or no NCCL); then archs:
#      the GPU code in the built programs (cuobjdump: sm_80 and sm_90 machine code, compute_90 PTX).
#   3. the PyTorch anchor bench/gpu/anchor/anchor_torch.py (prepare.sh's copy of shared/gpu/anchor_torch.py)
#      when present (skipped with --quick).
#   4. bench_gpu --anchor <its output>: figures, ratios and the issue's targets (MET / MISSED).
#   5. compute-sanitizer --tool memcheck on test_gpu_ops with PD_GPU_OPS_SMALL=1, when compute-sanitizer exists.
#   6. results: bench/results/bench_gpu-<gpu>-<date>.json (written by bench_gpu) and
#      bench/results/gpu_run-<gpu>-<date>.txt (this run's step table and key lines); both, and every
#      step's full log, are copied into $OUT when it is set.
# Exit status: 0 when every step passed, 1 otherwise.
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
cd "$SRC"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
BUDGET=${BUDGET:-480}
START=$(date +%s)
BUILD=${PIPEDIT_GPU_BUILD:-$SRC/build-gpu-run}
LOGS=${OUT:+$OUT/gpu-run-logs}
LOGS=${LOGS:-$BUILD/logs}
mkdir -p "$BUILD" "$LOGS" "$SRC/bench/results"
export TMPDIR=${TMPDIR:-/tmp}
export PIPEDIT_SRC=$SRC
JOBS=$(nproc 2>/dev/null || echo 8)
STEPS=()
FAILED=0
# The tests/gpu programs: name:timeout in seconds:log lines shown.
GPU_TESTS=(test_gpu_ops:120:6 test_gpu_fused:60:6 test_gpu_models:120:14 test_gpu_fallbacks:60:14 test_comm_nccl:90:8
           test_gpu_sp:90:10)
GPU_TEST_NAMES=("${GPU_TESTS[@]%%:*}")
. "$SRC/bench/gpu/find_deps.sh"

elapsed() { echo $(($(date +%s) - START)); }
# check_archs CUOBJDUMP PROGRAM SM,SM...: prints the machine code and PTX architectures PROGRAM holds; fails
# when one of the listed sm_XY is missing.
check_archs() {
    local elf ptx sm
    elf=$("$1" --list-elf "$2" | grep -o 'sm_[0-9]*[af]*' | sort -u | tr '\n' ' ')
    ptx=$("$1" --list-ptx "$2" | grep -o 'sm_[0-9]*[af]*' | sort -u | tr '\n' ' ')
    echo "machine code: $elf; PTX: $ptx"
    for sm in ${3//,/ }; do
        case " $elf " in *" $sm "*) ;; *) echo "missing $sm machine code"; return 1 ;; esac
    done
}
CUOBJDUMP=$(command -v cuobjdump || ls "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump" 2>/dev/null | head -1)
say() { printf '[%4ss] %s\n' "$(elapsed)" "$*"; }

# step NAME TIMEOUT CMD...: runs CMD with its output in $LOGS/NAME.log and the last lines on stdout.
# Records "NAME status seconds" (status: ok, skipped (exit 77), FAILED (exit N), TIMEOUT, no time left).
step() {
    local name=$1 want=$2
    shift 2
    local left=$((BUDGET - $(elapsed) - 10)) t status t0 rc
    t=$want
    [ "$left" -lt "$t" ] && t=$left
    if [ "$t" -lt 5 ]; then
        STEPS+=("$name|no time left|0")
        say "$name: skipped, no time left in the ${BUDGET}s budget"
        FAILED=1
        return 1
    fi
    say "$name (timeout ${t}s): $*"
    t0=$(date +%s)
    timeout -k 10 "$t" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    case $rc in
    0) status=ok ;;
    77) status="skipped (exit 77)" ;;
    124 | 137) status="TIMEOUT after ${t}s"; FAILED=1 ;;
    *) status="FAILED (exit $rc)"; FAILED=1 ;;
    esac
    STEPS+=("$name|$status|$(($(date +%s) - t0))")
    grep -E '^(FAIL|  FAIL)|ERROR SUMMARY|error:' "$LOGS/$name.log" | head -20
    tail -n "${TAIL_LINES:-12}" "$LOGS/$name.log"
    say "$name: $status"
    return $rc
}

# ---- machine ----
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
GPU=${GPU:-unknown-gpu}
SLUG=$(echo "$GPU" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//')
DATE=$(date -u +%F)
say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
# The revision: git where the copy has .git, else what prepare.sh recorded.
PIPEDIT_COMMIT=$(pd_git_revision "$SRC" || cat "$SRC/bench/gpu/deps/commit" 2>/dev/null || echo unknown)
export PIPEDIT_COMMIT
say "source revision: $PIPEDIT_COMMIT"
pd_find_deps # exported: build_direct.sh uses the same answers
[ -n "$NVCC" ] && export PATH=$(dirname "$NVCC"):$PATH
say "tools: nvcc ${NVCC:-MISSING}; cmake $(command -v cmake || echo missing); pkg-config $(command -v pkg-config || echo missing); python3 $(command -v python3 || echo missing)"

# ---- 1. build ----
if [ -n "$JANSSON_DIR" ]; then
    export PKG_CONFIG_PATH=$JANSSON_DIR/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    say "jansson: not in the image, using $JANSSON_DIR"
fi
if ! pkg-config --exists openblas 2>/dev/null && [ -n "$PD_OPENBLAS_LIBDIR" ]; then
    # Ubuntu's libopenblas0 without -dev: describe it ourselves.
    mkdir -p "$BUILD/pc"
    printf 'Name: openblas\nDescription: OpenBLAS\nVersion: 0\nLibs: -L%s -lopenblas\nCflags: -I%s\n' "$PD_OPENBLAS_LIBDIR" \
        "${PD_OPENBLAS_INCLUDE:-/usr/include}" > "$BUILD/pc/openblas.pc"
    export PKG_CONFIG_PATH=$BUILD/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    say "openblas: no openblas.pc, using $PD_OPENBLAS_LIBDIR (headers ${PD_OPENBLAS_INCLUDE:-not found})"
fi
# NCCL (for test_comm_nccl and test_gpu_sp): CMake gets the folders find_deps.sh found, which also covers
# a pip-installed nvidia-nccl that ships only libnccl.so.2.
NCCL_ARGS=()
if [ -n "$PD_NCCL_LIBRARY" ]; then
    NCCL_ARGS=(-DPD_NCCL_INCLUDE_DIR="$PD_NCCL_INCLUDE" -DPD_NCCL_LIBRARY="$PD_NCCL_LIBRARY")
    say "nccl: $PD_NCCL_LIBRARY (headers $PD_NCCL_INCLUDE)"
else
    say "nccl: NOT FOUND (bench/gpu/find_deps.sh): test_comm_nccl and test_gpu_sp will skip"
fi
BIN=
if [ -n "${PIPEDIT_GPU_BUILD_DIRECT:-}" ]; then
    say "build: PIPEDIT_GPU_BUILD_DIRECT set, building with bench/gpu/build_direct.sh"
elif command -v cmake >/dev/null && command -v pkg-config >/dev/null; then
    if step configure 120 cmake -S "$SRC" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release -DPIPEDIT_CUDA=ON \
        -DPIPEDIT_SERVING=OFF -DPIPEDIT_NCCL=AUTO "${NCCL_ARGS[@]}" ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} &&
        step build 240 cmake --build "$BUILD/cmake" -j "$JOBS" --target "${GPU_TEST_NAMES[@]}" bench_gpu; then
        BIN=$BUILD/cmake/bin
    fi
else
    say "build: cmake or pkg-config missing, building with bench/gpu/build_direct.sh"
fi
if [ -z "$BIN" ]; then
    TAIL_LINES=25 step build_direct 240 env JOBS="$JOBS" bash "$SRC/bench/gpu/build_direct.sh" "$BUILD/direct" &&
        BIN=$BUILD/direct/bin
fi

# ---- 2-5. tests, anchor, benchmark, memcheck ----
ANCHOR_OUT=
if [ -n "$BIN" ]; then
    for t in "${GPU_TESTS[@]}"; do
        IFS=: read -r name limit tail <<< "$t"
        if [ -x "$BIN/$name" ]; then
            TAIL_LINES=$tail step "$name" "$limit" "$BIN/$name"
        else # both builds make every tests/gpu program (the NCCL ones skip without NCCL)
            say "$name: not built"
            STEPS+=("$name|not built|0")
            FAILED=1
        fi
    done
    # The GPU code the build holds (CMake's default: sm_80 and sm_90 machine code, compute_90 PTX;
    # build_direct.sh: sm_90 only).
    if [ -n "$CUOBJDUMP" ] && [ -x "$BIN/test_gpu_fallbacks" ]; then
        WANT_SM=sm_80,sm_90
        [ "$BIN" = "$BUILD/direct/bin" ] && WANT_SM=sm_90
        TAIL_LINES=4 step archs 30 bash -c "$(declare -f check_archs); check_archs \"\$@\"" check_archs \
            "$CUOBJDUMP" "$BIN/test_gpu_fallbacks" "$WANT_SM"
    else
        say "archs: cuobjdump or test_gpu_fallbacks missing"
        STEPS+=("archs|cuobjdump missing|0")
    fi
    ANCHOR=
    for a in "$SRC/bench/gpu/anchor/anchor_torch.py" "$SRC/shared/gpu/anchor_torch.py" "$SRC/../shared/gpu/anchor_torch.py"; do
        [ -f "$a" ] && { ANCHOR=$a; break; }
    done
    if [ $QUICK = 1 ]; then
        say "anchor: skipped (--quick)"
    elif [ -z "$ANCHOR" ]; then
        say "anchor: no anchor_torch.py (run bench/gpu/prepare.sh here and carry bench/gpu/anchor): no ratios"
        STEPS+=("anchor|missing|0")
    elif TAIL_LINES=30 step anchor 180 python3 "$ANCHOR"; then
        ANCHOR_OUT=$LOGS/anchor.log
    elif grep -q "block(CUDNN_ATTENTION)" "$LOGS/anchor.log" 2>/dev/null; then
        ANCHOR_OUT=$LOGS/anchor.log # cut short, but what it printed is usable
    fi
    BENCH_ARGS=(--results "$SRC/bench/results")
    [ $QUICK = 1 ] && BENCH_ARGS+=(--quick)
    [ -n "$ANCHOR_OUT" ] && BENCH_ARGS+=(--anchor "$ANCHOR_OUT")
    TAIL_LINES=40 step bench_gpu 260 "$BIN/bench_gpu" "${BENCH_ARGS[@]}"
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
    if [ -n "$CS" ]; then
        TAIL_LINES=4 step memcheck 120 env PD_GPU_OPS_SMALL=1 "$CS" --tool memcheck --leak-check no --error-exitcode 3 \
            "$BIN/test_gpu_ops"
    else
        say "memcheck: compute-sanitizer not found"
        STEPS+=("memcheck|compute-sanitizer missing|0")
    fi
fi

# ---- 6. summary and results ----
SUMMARY=$SRC/bench/results/gpu_run-$SLUG-$DATE.txt
{
    echo "bench/gpu/run.sh on $GPU, $(date -u '+%F %T') UTC, $(elapsed) s$([ $QUICK = 1 ] && echo ', --quick')"
    echo "source revision $PIPEDIT_COMMIT"
    printf '%-19s %-28s %s\n' step status seconds
    for s in "${STEPS[@]}"; do IFS='|' read -r n st sec <<< "$s"; printf '%-19s %-28s %s\n' "$n" "$st" "$sec"; done
    for t in "${GPU_TEST_NAMES[@]}"; do
        [ -f "$LOGS/$t.log" ] || continue
        echo "$t: $(grep -E '^[0-9]+ passed|skip' "$LOGS/$t.log" | tail -1)"
        grep -E '^ *FAIL ' "$LOGS/$t.log" | head -20
    done
    [ -f "$LOGS/memcheck.log" ] && grep -E 'ERROR SUMMARY' "$LOGS/memcheck.log" | tail -1
    [ -f "$LOGS/bench_gpu.log" ] && grep -E '^(block|forward|attention|vae) |^  (block|attention|VAE|torch_)|MET|MISSED|^wrote' "$LOGS/bench_gpu.log"
} > "$SUMMARY"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/bench/results"
    cp "$SUMMARY" "$OUT/bench/results/"
    for f in "$SRC"/bench/results/bench_gpu*-"$DATE".json; do [ -f "$f" ] && cp "$f" "$OUT/bench/results/"; done
fi
echo "================ summary ($SUMMARY) ================"
cat "$SUMMARY"
exit $FAILED
