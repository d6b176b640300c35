#!/usr/bin/env bash
# `pipedit generate --sp N` (every rank runs the sampler loop with the sequence-parallel DiT; rank 0
# decodes) gives the single-device video: degrees 2 and 3 (PipeSP g = 1) and CFG parallelism over 4
# ranks, against one process with the same seed. A rank killed mid-run fails the command cleanly.
source "$(dirname "$0")/../lib/script_env.sh" sp_generate
command -v ffmpeg >/dev/null || { echo "FAIL: ffmpeg not installed (scripts/deps.sh installs it)"; exit 1; }
psnr="$PIPEDIT_SRC/tests/lib/psnr.py"

# The whole sampler loop: `pipedit generate --sp N` gives the single-device video. The MP4 is lossy
# H.264, whose encoder decisions may flip on a pixel that rounds differently, so frames are compared
# by PSNR (>= 40 dB; a different seed gives < 20 dB).
gen() { # tag extra-args...
    local tag=$1; shift
    if ! timeout 300 "$pd" generate --prompt "a red fox in snow" --seed 7 --steps 4 --threads 1 \
            --out "$work/gen_$tag.mp4" "$@" >/dev/null; then
        bad "generate $tag exited non-zero"; return 1
    fi
    ffmpeg -loglevel error -y -i "$work/gen_$tag.mp4" -f rawvideo -pix_fmt rgb24 "$work/gen_$tag.rgb"
}
gen ref
gen seed8 --seed 8
for spec in "sp2:--sp 2" "sp3_g1:--sp 3 --pipesp-chunk 1" "cfgpar4_g1:--sp 4 --cfg-parallel --pipesp-chunk 1"; do
    tag=${spec%%:*}
    # shellcheck disable=SC2086
    gen "$tag" ${spec#*:} || continue
    if db=$("$PYTHON" "$psnr" "$work/gen_$tag.rgb" "$work/gen_ref.rgb" --at-least 40); then
        ok "generate $tag (PSNR $db dB against one device)"
    else
        bad "generate $tag: PSNR $db dB against one device"
    fi
done
if ! db=$("$PYTHON" "$psnr" "$work/gen_seed8.rgb" "$work/gen_ref.rgb" --below 20); then
    bad "another seed gives PSNR $db dB: the comparison cannot tell videos apart"
fi

# A rank dies mid-run: non-zero exit, a message naming it, no video.
set +e
PIPEDIT_SP_FAULT_RANK=2 timeout 120 "$pd" generate --prompt "a red fox in snow" --seed 7 --steps 4 --threads 1 \
    --sp 3 --out "$work/dead.mp4" >/dev/null 2>"$work/err.txt"
rc=$?
set -e
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || ! grep -q "rank 2 of 3 was killed by signal 9" "$work/err.txt" \
        || [ -e "$work/dead.mp4" ]; then
    bad "killed rank: exit $rc"; cat "$work/err.txt"
else
    ok "killed rank -> exit $rc"
fi
set +e
"$pd" generate --prompt x --seed 1 --sp 3 --cfg-parallel --out "$work/bad.mp4" 2>/dev/null
rc=$?
set -e
[ "$rc" -eq 2 ] || bad "--sp 3 --cfg-parallel exited $rc, expected 2"
pd_summary
