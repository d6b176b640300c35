#!/usr/bin/env bash
# `pipedit generate --sp N` (every rank runs the sampler loop with the sequence-parallel DiT; rank 0
# decodes) gives the single-device video: degrees 2 and 3 (PipeSP g = 1) and CFG parallelism over 4
# ranks, against one process with the same seed. A rank killed mid-run fails the command cleanly.
source "$(dirname "$0")/../lib/script_env.sh" sp_generate
command -v ffmpeg >/dev/null || { echo "FAIL: ffmpeg not installed (scripts/deps.sh installs it)"; exit 1; }
fails=0

# The whole sampler loop: `pipedit generate --sp N` gives the single-device video. The MP4 is lossy
# H.264, whose encoder decisions may flip on a pixel that rounds differently, so frames are compared
# by PSNR (>= 40 dB; a different seed gives < 20 dB).
gen() { # tag extra-args...
    local tag=$1; shift
    if ! timeout 300 "$pd" generate --prompt "a red fox in snow" --seed 7 --steps 4 --threads 1 \
            --out "$work/gen_$tag.mp4" "$@" >/dev/null; then
        echo "FAIL: generate $tag exited non-zero"; fails=$((fails + 1)); return 1
    fi
    ffmpeg -loglevel error -y -i "$work/gen_$tag.mp4" -f rawvideo -pix_fmt rgb24 "$work/gen_$tag.rgb"
}
psnr() { # a b -> prints the PSNR in dB
    "$PYTHON" -c '
import sys, numpy as np
a = np.fromfile(sys.argv[1], np.uint8).astype(float); b = np.fromfile(sys.argv[2], np.uint8).astype(float)
assert a.size == b.size and a.size > 0, (a.size, b.size)
mse = ((a - b) ** 2).mean()
print("%.1f" % (99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)))' "$1" "$2"
}
gen ref
gen seed8 --seed 8
for spec in "sp2:--sp 2" "sp3_g1:--sp 3 --pipesp-chunk 1" "cfgpar4_g1:--sp 4 --cfg-parallel --pipesp-chunk 1"; do
    tag=${spec%%:*}
    # shellcheck disable=SC2086
    gen "$tag" ${spec#*:} || continue
    db=$(psnr "$work/gen_$tag.rgb" "$work/gen_ref.rgb")
    if "$PYTHON" -c "import sys; sys.exit(0 if float('$db') >= 40 else 1)"; then
        echo "ok: generate $tag (PSNR $db dB against one device)"
    else
        echo "FAIL: generate $tag: PSNR $db dB against one device"; fails=$((fails + 1))
    fi
done
db=$(psnr "$work/gen_seed8.rgb" "$work/gen_ref.rgb")
if ! "$PYTHON" -c "import sys; sys.exit(0 if float('$db') < 20 else 1)"; then
    echo "FAIL: another seed gives PSNR $db dB: the comparison cannot tell videos apart"; fails=$((fails + 1))
fi

# A rank dies mid-run: non-zero exit, a message naming it, no video.
set +e
PIPEDIT_SP_FAULT_RANK=2 timeout 120 "$pd" generate --prompt "a red fox in snow" --seed 7 --steps 4 --threads 1 \
    --sp 3 --out "$work/dead.mp4" >/dev/null 2>"$work/err.txt"
rc=$?
set -e
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || ! grep -q "rank 2 of 3 was killed by signal 9" "$work/err.txt" \
        || [ -e "$work/dead.mp4" ]; then
    echo "FAIL: killed rank: exit $rc"; cat "$work/err.txt"; fails=$((fails + 1))
else
    echo "ok: killed rank -> exit $rc"
fi
set +e
"$pd" generate --prompt x --seed 1 --sp 3 --cfg-parallel --out "$work/bad.mp4" 2>/dev/null
rc=$?
set -e
[ "$rc" -eq 2 ] || { echo "FAIL: --sp 3 --cfg-parallel exited $rc, expected 2"; fails=$((fails + 1)); }

if [ "$fails" -ne 0 ]; then
    echo "$fails failure(s)"; exit 1
fi
echo "all SP generate checks passed"
