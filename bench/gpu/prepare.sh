#!/usr/bin/env bash
# Run HERE (the build machine) before the device call: fills the git-ignored folders that bench/gpu/run.sh
# uses on the GPU machine and that the device tool carries (carry: ["bench/gpu/anchor", "bench/gpu/deps"]):
#   bench/gpu/anchor/anchor_torch.py   a copy of ../shared/gpu/anchor_torch.py (the PyTorch anchor)
#   bench/gpu/deps/jansson/            jansson's headers, static library and a relocatable jansson.pc, used
#                                      there only when the image has no jansson of its own
#   bench/gpu/deps/commit              this checkout's git revision ("-dirty" with uncommitted changes)
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/bench/gpu/find_deps.sh"
ANCHOR=${ANCHOR:-$SRC/../shared/gpu/anchor_torch.py}
mkdir -p "$SRC/bench/gpu/anchor"
if [ -f "$ANCHOR" ]; then
    cp "$ANCHOR" "$SRC/bench/gpu/anchor/anchor_torch.py"
    echo "prepare: anchor $ANCHOR -> bench/gpu/anchor/anchor_torch.py"
else
    echo "prepare: no $ANCHOR: run.sh will skip the PyTorch anchor" >&2
fi
J=$SRC/bench/gpu/deps/jansson
inc=/usr/include
lib=$(ls /usr/lib/x86_64-linux-gnu/libjansson.a /usr/lib64/libjansson.a /usr/lib/libjansson.a 2>/dev/null | head -1 || true)
if [ -f "$inc/jansson.h" ] && [ -n "$lib" ]; then
    mkdir -p "$J/include" "$J/lib/pkgconfig"
    cp "$inc/jansson.h" "$inc/jansson_config.h" "$J/include/"
    cp "$lib" "$J/lib/libjansson.a"
    ver=$(sed -n 's/^#define JANSSON_VERSION *"\(.*\)"/\1/p' "$inc/jansson.h")
    cat > "$J/lib/pkgconfig/jansson.pc" <<PC
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: Jansson
Description: Library for encoding, decoding and manipulating JSON data (static copy carried to a GPU machine)
Version: ${ver:-2.14}
Libs: -L\${libdir} -ljansson
Cflags: -I\${includedir}
PC
    echo "prepare: jansson ${ver:-?} (static) -> bench/gpu/deps/jansson"
else
    echo "prepare: no jansson.h / libjansson.a here: the GPU machine must have jansson" >&2
fi
# The revision the run is of (the copy on the GPU machine may come without .git).
mkdir -p "$SRC/bench/gpu/deps"
rev=$(pd_git_revision "$SRC" || echo unknown)
echo "$rev" > "$SRC/bench/gpu/deps/commit"
echo "prepare: source revision $rev -> bench/gpu/deps/commit"
du -sh "$SRC/bench/gpu/anchor" "$SRC/bench/gpu/deps" 2>/dev/null
