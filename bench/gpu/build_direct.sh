#!/usr/bin/env bash
# Builds the GPU programs (tests/gpu/test_*, bench/gpu/bench_gpu) with the compilers alone, for a GPU
# machine without cmake or pkg-config: the same sources CMake builds with PIPEDIT_CUDA=ON and
# PIPEDIT_SERVING=OFF (base, engine with engine/cuda, comm with NCCL where bench/gpu/find_deps.sh finds it,
# models without models/pipeline_media.c (it needs media/), workers/sp_group.c, bench/common), Release flags, sm_90 code plus
# compute_90 PTX.
#
#   bash bench/gpu/build_direct.sh OUT_DIR      (programs land in OUT_DIR/bin)
#
# Environment: CC (default cc), JOBS (default nproc); NVCC, CUDA_HOME, JANSSON_DIR, the OpenBLAS and the
# NCCL folders as bench/gpu/find_deps.sh describes them (run.sh passes what it found; unset ones are searched).
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: build_direct.sh OUT_DIR}
mkdir -p "$OUT/obj" "$OUT/bin"
CC=${CC:-cc}
JOBS=${JOBS:-$(nproc)}
. "$SRC/bench/gpu/find_deps.sh"
pd_find_cuda
pd_find_openblas
pd_find_jansson
[ -n "$NVCC" ] || { echo "build_direct: nvcc not found (PATH, /usr/local/cuda/bin; or set NVCC)" >&2; exit 1; }

# Header folders and libraries that are not in the default search paths.
INC=(-I"$SRC" -I"$CUDA_HOME/include")
LIBDIRS=(-L"$CUDA_HOME/lib64" -L"$CUDA_HOME/lib")
[ -n "$PD_OPENBLAS_INCLUDE" ] && INC+=(-I"$PD_OPENBLAS_INCLUDE")
[ -n "$PD_OPENBLAS_LIBDIR" ] && LIBDIRS+=(-L"$PD_OPENBLAS_LIBDIR")
if [ -n "$JANSSON_DIR" ]; then INC+=(-I"$JANSSON_DIR/include"); LIBDIRS+=(-L"$JANSSON_DIR/lib"); fi
for f in cblas.h jansson.h cudnn.h cublasLt.h; do
    found=no
    for d in /usr/include "${INC[@]#-I}"; do [ -f "$d/$f" ] && found=yes; done
    [ $found = yes ] || echo "build_direct: warning: $f not found in /usr/include ${INC[*]#-I}" >&2
done

# NCCL: the communicator's GPU backend, when headers and library are there.
NCCL_LIB=()
if pd_find_nccl; then
    INC+=(-I"$PD_NCCL_INCLUDE")
    NCCL_LIB=("$PD_NCCL_LIBRARY" -Wl,-rpath,"$(dirname "$PD_NCCL_LIBRARY")")
    DEFS_NCCL=(-DPD_HAVE_NCCL)
    echo "build_direct: NCCL $PD_NCCL_LIBRARY (headers $PD_NCCL_INCLUDE)"
else
    DEFS_NCCL=()
    echo "build_direct: warning: NCCL not found (bench/gpu/find_deps.sh): the NCCL tests will skip" >&2
fi

# PD_CUDA_ARCHS: what the backend checks a device against at start (the -gencode list below).
CFLAGS=(-std=c11 -O3 -DNDEBUG -D_GNU_SOURCE -DPD_HAVE_CUDA -DPD_HAVE_PIPELINE "${DEFS_NCCL[@]}" -Wall -Wno-unused-parameter
        -DPD_CUDA_ARCHS='"90-real,90-virtual"' "${INC[@]}")
NVFLAGS=(-std=c++17 -O3 -DNDEBUG -D_GNU_SOURCE -DPD_HAVE_CUDA --expt-relaxed-constexpr
         -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 "${INC[@]}")

LIB_SOURCES=()
for f in "$SRC"/base/*.c "$SRC"/engine/*.c "$SRC"/engine/cpu/*.c "$SRC"/engine/cuda/*.c "$SRC"/engine/cuda/*.cu \
         "$SRC"/bench/common/*.c "$SRC"/comm/*.c "$SRC"/workers/sp_group.c; do
    [ -f "$f" ] || continue
    case "$f" in */comm/comm_nccl.c) [ ${#NCCL_LIB[@]} -gt 0 ] || continue ;; esac
    LIB_SOURCES+=("$f")
done
while IFS= read -r f; do
    case "$f" in */models/pipeline_media.c) continue ;; esac
    LIB_SOURCES+=("$f")
done < <(find "$SRC/models" -name '*.c' | sort)

# Compiles one source into OUT/obj (a path-derived name); prints the compiler's errors.
compile() {
    local src=$1 rel obj
    rel=${src#"$SRC"/}
    obj="$OUT/obj/${rel//\//_}.o"
    if [ "$obj" -nt "$src" ]; then return 0; fi
    case "$src" in
    *.cu) "$NVCC" "${NVFLAGS[@]}" -c "$src" -o "$obj" ;;
    *) "$CC" "${CFLAGS[@]}" -c "$src" -o "$obj" ;;
    esac || { echo "build_direct: FAILED $rel" >&2; return 1; }
}
fail=0
# Plain job control: at most JOBS compilers at once.
running=0
for f in "${LIB_SOURCES[@]}" "$SRC"/tests/gpu/test_*.c "$SRC"/bench/gpu/*.c; do
    compile "$f" &
    running=$((running + 1))
    if [ $running -ge "$JOBS" ]; then wait -n || fail=1; running=$((running - 1)); fi
done
while [ $running -gt 0 ]; do wait -n || fail=1; running=$((running - 1)); done
[ $fail = 0 ] || { echo "build_direct: compile errors (above)" >&2; exit 1; }

LIB_OBJS=()
for f in "${LIB_SOURCES[@]}"; do rel=${f#"$SRC"/}; LIB_OBJS+=("$OUT/obj/${rel//\//_}.o"); done
LIBS=("${NCCL_LIB[@]}" -lcublasLt -lcublas -lcudnn -lcudart -ljansson -lopenblas -lstdc++ -lpthread -lm -lrt -ldl)
for f in "$SRC"/tests/gpu/test_*.c "$SRC"/bench/gpu/*.c; do
    rel=${f#"$SRC"/}
    name=$(basename "$f" .c)
    "$CC" -o "$OUT/bin/$name" "$OUT/obj/${rel//\//_}.o" "${LIB_OBJS[@]}" "${LIBDIRS[@]}" "${LIBS[@]}" \
        -Wl,-rpath,"$CUDA_HOME/lib64" || { echo "build_direct: link of $name failed" >&2; fail=1; }
done
[ $fail = 0 ] && echo "build_direct: built $(ls "$OUT/bin" | tr '\n' ' ')in $OUT/bin"
exit $fail
