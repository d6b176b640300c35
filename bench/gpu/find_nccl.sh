#!/usr/bin/env bash
# Finds NCCL for the GPU run's builds (run.sh passes it to CMake, build_direct.sh compiles with it):
# prints "INCLUDE_DIR LIBRARY_FILE" for the first of $NCCL_HOME, $CUDA_HOME, /usr/local/cuda, the
# system folders and a pip-installed nvidia-nccl package (PyTorch images) that has both nccl.h and
# libnccl.so (or only libnccl.so.2, as pip ships it); prints nothing and exits 1 when none has.
set -u
roots=()
[ -n "${NCCL_HOME:-}" ] && roots+=("$NCCL_HOME")
[ -n "${CUDA_HOME:-}" ] && roots+=("$CUDA_HOME")
roots+=(/usr/local/cuda /usr)
if command -v python3 >/dev/null; then
    pip_dir=$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null)
    [ -n "$pip_dir" ] && roots+=("$pip_dir")
fi
for r in "${roots[@]}"; do
    [ -f "$r/include/nccl.h" ] || continue
    for d in "$r/lib64" "$r/lib" "$r/lib/x86_64-linux-gnu" /usr/lib/x86_64-linux-gnu; do
        for f in "$d/libnccl.so" "$d/libnccl.so.2"; do
            [ -e "$f" ] && { echo "$r/include $f"; exit 0; }
        done
    done
done
exit 1
