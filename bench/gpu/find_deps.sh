# shellcheck shell=bash
# Sourced (not run) by bench/gpu/run.sh, build_direct.sh and prepare.sh: finds what the GPU builds need.
# Each pd_find_* function sets its variables and returns at once when they are already set (also when set
# empty, meaning "searched, not found"), so run.sh searches once and exports the answers (pd_find_deps)
# and build_direct.sh, run from it, reuses them; run alone, build_direct.sh searches itself. A variable
# set in the environment beforehand overrides the search.
#   NVCC, CUDA_HOME               nvcc (PATH, else /usr/local/cuda/bin/nvcc; empty when neither) and the
#                                 folder above its bin/
#   PD_OPENBLAS_INCLUDE           the folder holding cblas.h, PD_OPENBLAS_LIBDIR the one holding
#                                 libopenblas.so* (each empty when not found)
#   JANSSON_DIR                   empty: the system's jansson (pkg-config knows it, or without pkg-config
#                                 /usr/include/jansson.h exists); else bench/gpu/deps/jansson, the static
#                                 copy prepare.sh made (include/, lib/, lib/pkgconfig/jansson.pc)
#   PD_NCCL_INCLUDE, PD_NCCL_LIBRARY
#                                 nccl.h's folder and the library file, from the first of $NCCL_HOME,
#                                 $CUDA_HOME, /usr/local/cuda, /usr and a pip-installed nvidia-nccl package
#                                 (PyTorch images; it ships only libnccl.so.2) that has both (empty when none)
PD_DEPS_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

pd_find_cuda() {
    if [ -z "${NVCC+x}" ]; then
        NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
    fi
    if [ -z "${CUDA_HOME+x}" ]; then
        CUDA_HOME=
        [ -n "$NVCC" ] && CUDA_HOME=$(cd "$(dirname "$NVCC")/.." && pwd)
    fi
    return 0
}

pd_find_openblas() {
    [ -n "${PD_OPENBLAS_LIBDIR+x}" ] && return 0
    PD_OPENBLAS_INCLUDE='' PD_OPENBLAS_LIBDIR=''
    local d
    for d in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include/x86_64-linux-gnu /usr/include; do
        [ -f "$d/cblas.h" ] && { PD_OPENBLAS_INCLUDE=$d; break; }
    done
    for d in /usr/lib/x86_64-linux-gnu/openblas-pthread /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib; do
        ls "$d"/libopenblas.so* >/dev/null 2>&1 && { PD_OPENBLAS_LIBDIR=$d; break; }
    done
    return 0
}

pd_find_jansson() {
    [ -n "${JANSSON_DIR+x}" ] && return 0
    JANSSON_DIR=
    local system=no
    if command -v pkg-config >/dev/null; then
        pkg-config --exists jansson 2>/dev/null && system=yes
    elif [ -f /usr/include/jansson.h ]; then
        system=yes
    fi
    if [ $system = no ] && [ -f "$PD_DEPS_SRC/bench/gpu/deps/jansson/include/jansson.h" ]; then
        JANSSON_DIR=$PD_DEPS_SRC/bench/gpu/deps/jansson
    fi
    return 0
}

# Returns 1 when NCCL was not found.
pd_find_nccl() {
    if [ -z "${PD_NCCL_LIBRARY+x}" ]; then
        PD_NCCL_INCLUDE='' PD_NCCL_LIBRARY=''
        pd_find_cuda
        local roots=() r d f pip_dir
        [ -n "${NCCL_HOME:-}" ] && roots+=("$NCCL_HOME")
        [ -n "$CUDA_HOME" ] && roots+=("$CUDA_HOME")
        roots+=(/usr/local/cuda /usr)
        if command -v python3 >/dev/null; then
            pip_dir=$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null)
            [ -n "$pip_dir" ] && roots+=("$pip_dir")
        fi
        for r in "${roots[@]}"; do
            [ -f "$r/include/nccl.h" ] || continue
            for d in "$r/lib64" "$r/lib" "$r/lib/x86_64-linux-gnu" /usr/lib/x86_64-linux-gnu; do
                for f in "$d/libnccl.so" "$d/libnccl.so.2"; do
                    [ -e "$f" ] && { PD_NCCL_INCLUDE=$r/include PD_NCCL_LIBRARY=$f; break 3; }
                done
            done
        done
    fi
    [ -n "$PD_NCCL_LIBRARY" ]
}

# All of the above, exported for the programs run next (build_direct.sh among them).
pd_find_deps() {
    pd_find_cuda
    pd_find_openblas
    pd_find_jansson
    pd_find_nccl
    export NVCC CUDA_HOME PD_OPENBLAS_INCLUDE PD_OPENBLAS_LIBDIR JANSSON_DIR PD_NCCL_INCLUDE PD_NCCL_LIBRARY
    return 0
}

# pd_git_revision DIR: prints DIR's git revision, with "-dirty" when tracked files differ from it;
# prints nothing and returns 1 where git or the repository is missing.
pd_git_revision() {
    local rev
    rev=$(git -C "$1" rev-parse HEAD 2>/dev/null) || return 1
    git -C "$1" diff --quiet HEAD 2>/dev/null || rev+=-dirty
    echo "$rev"
}
