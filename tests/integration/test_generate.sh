#!/bin/bash
# `pipedit generate` end to end on the embedded tiny model: a valid MP4 with the right frame count,
# bit-identical output for a seed (also across --threads), a different video for another seed, a
# thumbnail, cancellation, and a clear error with no output for every invalid argument.
set -uo pipefail
: "${PIPEDIT_BIN:?}" "${PIPEDIT_TMP:?}"
command -v ffprobe >/dev/null || { echo "FAIL: ffprobe not installed (scripts/deps.sh installs it)"; exit 1; }
mkdir -p "$PIPEDIT_TMP"
dir=$(mktemp -d "$PIPEDIT_TMP/generate.XXXXXX")
trap 'rm -rf "$dir"' EXIT
export PIPEDIT_CACHE="$dir/cache" PIPEDIT_LOG=warn
pd="$PIPEDIT_BIN/pipedit"
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
small=(--size 32x32 --frames 5 --steps 2)

gen() { "$pd" generate --prompt "a red fox running through snow" "$@" >"$dir/out.txt" 2>"$dir/err.txt"; }

# 1. an MP4 that ffprobe accepts: H.264 yuv420p, 1 + 4 (T - 1) frames, and the thumbnail PNG
if gen --seed 7 --size 48x32 --frames 9 --steps 2 --out "$dir/a.mp4" --thumbnail "$dir/a.png"; then
    info=$(ffprobe -v error -count_frames -select_streams v:0 \
        -show_entries stream=codec_name,pix_fmt,width,height,nb_read_frames -of csv=p=0 "$dir/a.mp4")
    # 9 frames -> T = 3 latent frames -> 1 + 4 * 2 = 9 video frames
    [ "$info" = "h264,48,32,yuv420p,9" ] && ok "MP4 ($info)" || bad "MP4: ffprobe says '$info'"
    png=$(ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 "$dir/a.png")
    [ "$png" = "png,48,32" ] && ok "thumbnail ($png)" || bad "thumbnail: ffprobe says '$png'"
    grep -q "^seed 7$" "$dir/out.txt" && grep -q "^denoise" "$dir/out.txt" && grep -q "^total" "$dir/out.txt" \
        && ok "seed and stage timings printed" || { bad "summary missing"; cat "$dir/out.txt"; }
    grep -q "^denoise 2/2$" "$dir/err.txt" && ok "progress lines" || bad "no progress lines"
else
    bad "generate failed: $(cat "$dir/err.txt")"
fi

# 2. other sizes and frame counts: 1 + 4 (T - 1) frames
for spec in "32x16 1 1" "16x16 13 13" "16x32 5 5"; do
    read -r size frames want <<<"$spec"
    if gen --seed 3 --size "$size" --frames "$frames" --steps 1 --sampler euler --out "$dir/s.mp4"; then
        n=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames,width,height \
            -of csv=p=0 "$dir/s.mp4")
        [ "$n" = "${size%x*},${size#*x},$want" ] && ok "$size, $frames frames -> $n" || bad "$size $frames frames: got '$n'"
    else
        bad "generate $size $frames frames failed: $(cat "$dir/err.txt")"
    fi
    rm -f "$dir/s.mp4"
done

# 3. determinism: same seed twice, and with another thread count, gives the same bytes
gen "${small[@]}" --seed 42 --threads 1 --out "$dir/d1.mp4" || bad "d1: $(cat "$dir/err.txt")"
gen "${small[@]}" --seed 42 --threads 1 --out "$dir/d2.mp4" || bad "d2: $(cat "$dir/err.txt")"
gen "${small[@]}" --seed 42 --threads 2 --out "$dir/d3.mp4" || bad "d3: $(cat "$dir/err.txt")"
gen "${small[@]}" --seed 43 --threads 2 --out "$dir/d4.mp4" || bad "d4: $(cat "$dir/err.txt")"
cmp -s "$dir/d1.mp4" "$dir/d2.mp4" && ok "same seed, same bytes" || bad "same seed gave different files"
cmp -s "$dir/d1.mp4" "$dir/d3.mp4" && ok "--threads 1 and 2 give the same bytes" || bad "thread count changed the file"
if cmp -s "$dir/d1.mp4" "$dir/d4.mp4"; then bad "seeds 42 and 43 gave the same file"; else ok "another seed, another video"; fi
# the decoded pictures differ too, not just the container
f1=$(ffmpeg -v error -i "$dir/d1.mp4" -f framemd5 - | grep -v '^#' | md5sum)
f4=$(ffmpeg -v error -i "$dir/d4.mp4" -f framemd5 - | grep -v '^#' | md5sum)
[ "$f1" != "$f4" ] && ok "another seed, other pixels" || bad "seeds 42 and 43 decode to the same pixels"
# a random seed is printed and replays
gen "${small[@]}" --threads 1 --out "$dir/r1.mp4" || bad "r1: $(cat "$dir/err.txt")"
rs=$(sed -n 's/^seed \([0-9]*\)$/\1/p' "$dir/out.txt")
if [ -n "$rs" ] && gen "${small[@]}" --threads 1 --seed "$rs" --out "$dir/r2.mp4" && cmp -s "$dir/r1.mp4" "$dir/r2.mp4"; then
    ok "random seed $rs printed and replayed"
else
    bad "random seed not printed or not replayable ('$rs')"
fi
# guidance <= 1 (no unconditional branch) and a negative prompt both run and differ
gen "${small[@]}" --seed 42 --threads 1 --guidance 1 --out "$dir/g1.mp4" || bad "guidance 1: $(cat "$dir/err.txt")"
gen "${small[@]}" --seed 42 --threads 1 --negative-prompt "blurry" --out "$dir/n1.mp4" || bad "negative: $(cat "$dir/err.txt")"
if cmp -s "$dir/g1.mp4" "$dir/d1.mp4" || cmp -s "$dir/n1.mp4" "$dir/d1.mp4"; then
    bad "guidance 1 or a negative prompt left the video unchanged"
else
    ok "guidance and negative prompt change the video"
fi

# 4. invalid arguments: non-zero exit, a message naming the problem, no output file
check_invalid() {
    local what=$1 pattern=$2
    shift 2
    rm -f "$dir/bad.mp4"
    "$pd" generate "$@" >"$dir/out.txt" 2>"$dir/err.txt"
    local rc=$?
    if [ $rc -ne 0 ] && grep -qi -- "$pattern" "$dir/err.txt" && [ ! -e "$dir/bad.mp4" ] \
        && [ -z "$(ls -A "$dir" | grep '^\.bad')" ]; then
        ok "invalid $what -> exit $rc: $(head -1 "$dir/err.txt")"
    else
        bad "invalid $what: exit $rc, stderr '$(head -3 "$dir/err.txt")'"
    fi
}
p=(--prompt "a fox" --seed 1)
check_invalid "size" "multiple of 16" "${p[@]}" --size 100x96 --out "$dir/bad.mp4"
check_invalid "size too small" "16..4096" "${p[@]}" --size 0x96 --out "$dir/bad.mp4"
check_invalid "size too large" "16..4096" "${p[@]}" --size 8192x96 --out "$dir/bad.mp4"
check_invalid "size format" "832x480" "${p[@]}" --size 128 --out "$dir/bad.mp4"
check_invalid "frames" "4k+1" "${p[@]}" --frames 8 --out "$dir/bad.mp4"
check_invalid "frames too many" "frames" "${p[@]}" --frames 2001 --out "$dir/bad.mp4"
check_invalid "steps" "steps" "${p[@]}" --steps 0 --out "$dir/bad.mp4"
check_invalid "steps text" "integer" "${p[@]}" --steps ten --out "$dir/bad.mp4"
check_invalid "guidance" "guidance" "${p[@]}" --guidance 60 --out "$dir/bad.mp4"
check_invalid "shift" "shift" "${p[@]}" --shift 0 --out "$dir/bad.mp4"
check_invalid "sampler" "unipc or euler" "${p[@]}" --sampler ddim --out "$dir/bad.mp4"
check_invalid "seed" "seed" "${p[@]}" --seed -5 --out "$dir/bad.mp4"
check_invalid "fps" "fps" "${p[@]}" --fps 0 --out "$dir/bad.mp4"
check_invalid "empty prompt" "prompt" --prompt "   " --out "$dir/bad.mp4"
check_invalid "missing prompt" "--prompt" --out "$dir/bad.mp4"
check_invalid "missing --out" "--out" "${p[@]}"
check_invalid "unknown option" "unknown option" "${p[@]}" --colour red --out "$dir/bad.mp4"
check_invalid "missing model folder" "$dir/nope" "${p[@]}" --model "$dir/nope" --out "$dir/bad.mp4"
check_invalid "unwritable output folder" "cannot write" "${p[@]}" --out "$dir/no/such/dir/bad.mp4"
# a model folder missing its VAE weights: the error names the file
cp -r "$PIPEDIT_CACHE/tiny-v1" "$dir/broken"
rm -f "$dir/broken/vae/diffusion_pytorch_model.safetensors"
check_invalid "missing model files" "vae" "${p[@]}" --model "$dir/broken" --out "$dir/bad.mp4"

# 5. cancellation (SIGINT) at a step boundary leaves no file; the second run, with every default,
#    also shows the embedded model's defaults (tests/unit/test_pipeline.c cancels a decode)
cancel_run() { # what, the line to wait for in stderr, generate args...
    local what=$1 line=$2
    shift 2
    rm -f "$dir/c.mp4"
    "$pd" generate --prompt "a fox" --seed 1 "$@" --out "$dir/c.mp4" >"$dir/out.txt" 2>"$dir/err.txt" &
    local pid=$! rc
    for _ in $(seq 600); do grep -q "$line" "$dir/err.txt" 2>/dev/null && break; sleep 0.1; done
    kill -INT $pid
    wait $pid
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "cancelled" "$dir/err.txt" && [ ! -e "$dir/c.mp4" ] \
        && [ -z "$(ls -A "$dir" | grep '^\.c\.mp4')" ]; then
        ok "SIGINT $what (exit $rc)"
    else
        bad "cancel $what: exit $rc, $(tail -1 "$dir/err.txt")"
    fi
}
cancel_run "in denoise" "^denoise 2/" --size 32x32 --frames 5 --steps 1000
cancel_run "with the defaults" "^denoise 1/8"
grep -q "^embedded tiny model: 128x96, 9 frames at 16 fps, 8 unipc steps, guidance 5, shift 5," "$dir/out.txt" \
    && ok "embedded model defaults" || bad "defaults: $(grep embedded "$dir/out.txt")"

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
