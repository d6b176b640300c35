#!/bin/bash
# `pipedit generate` end to end on the embedded tiny model: a valid MP4 with the right frame count,
# bit-identical output for a seed (also across --threads), a different video for another seed, a
# thumbnail, cancellation, and a clear error with no output for every invalid argument.
source "$(dirname "$0")/../lib/script_env.sh" generate
set +e # every step's failure is a counted check (bad), not the end of the test
command -v ffprobe >/dev/null || { echo "FAIL: ffprobe not installed (scripts/deps.sh installs it)"; exit 1; }
export PIPEDIT_CACHE="$work/cache"
small=(--size 32x32 --frames 5 --steps 2)

gen() { "$pd" generate --prompt "a red fox running through snow" "$@" >"$work/out.txt" 2>"$work/err.txt"; }

# 1. an MP4 that ffprobe accepts: H.264 yuv420p, 1 + 4 (T - 1) frames, and the thumbnail PNG
if gen --seed 7 --size 48x32 --frames 9 --steps 2 --out "$work/a.mp4" --thumbnail "$work/a.png"; then
    info=$(ffprobe -v error -count_frames -select_streams v:0 \
        -show_entries stream=codec_name,pix_fmt,width,height,nb_read_frames -of csv=p=0 "$work/a.mp4")
    # 9 frames -> T = 3 latent frames -> 1 + 4 * 2 = 9 video frames
    [ "$info" = "h264,48,32,yuv420p,9" ] && ok "MP4 ($info)" || bad "MP4: ffprobe says '$info'"
    png=$(ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 "$work/a.png")
    [ "$png" = "png,48,32" ] && ok "thumbnail ($png)" || bad "thumbnail: ffprobe says '$png'"
    grep -q "^seed 7$" "$work/out.txt" && grep -q "^denoise" "$work/out.txt" && grep -q "^total" "$work/out.txt" \
        && ok "seed and stage timings printed" || { bad "summary missing"; cat "$work/out.txt"; }
    grep -q "^denoise 2/2$" "$work/err.txt" && ok "progress lines" || bad "no progress lines"
else
    bad "generate failed: $(cat "$work/err.txt")"
fi

# 2. other sizes and frame counts: 1 + 4 (T - 1) frames, with each sampler
for spec in "32x16 1 1 euler" "16x16 13 13 dpm++" "16x32 5 5 unipc"; do
    read -r size frames want sampler <<<"$spec"
    if gen --seed 3 --size "$size" --frames "$frames" --steps 2 --sampler "$sampler" --out "$work/s.mp4"; then
        n=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames,width,height \
            -of csv=p=0 "$work/s.mp4")
        [ "$n" = "${size%x*},${size#*x},$want" ] && ok "$size, $frames frames, $sampler -> $n" || bad "$size $frames frames: got '$n'"
    else
        bad "generate $size $frames frames failed: $(cat "$work/err.txt")"
    fi
    rm -f "$work/s.mp4"
done

# 3. determinism: same seed twice, and with another thread count, gives the same bytes
gen "${small[@]}" --seed 42 --threads 1 --out "$work/d1.mp4" || bad "d1: $(cat "$work/err.txt")"
gen "${small[@]}" --seed 42 --threads 1 --out "$work/d2.mp4" || bad "d2: $(cat "$work/err.txt")"
gen "${small[@]}" --seed 42 --threads 2 --out "$work/d3.mp4" || bad "d3: $(cat "$work/err.txt")"
gen "${small[@]}" --seed 43 --threads 2 --out "$work/d4.mp4" || bad "d4: $(cat "$work/err.txt")"
cmp -s "$work/d1.mp4" "$work/d2.mp4" && ok "same seed, same bytes" || bad "same seed gave different files"
cmp -s "$work/d1.mp4" "$work/d3.mp4" && ok "--threads 1 and 2 give the same bytes" || bad "thread count changed the file"
if cmp -s "$work/d1.mp4" "$work/d4.mp4"; then bad "seeds 42 and 43 gave the same file"; else ok "another seed, another video"; fi
# the decoded pictures differ too, not just the container
f1=$(ffmpeg -v error -i "$work/d1.mp4" -f framemd5 - | grep -v '^#' | md5sum)
f4=$(ffmpeg -v error -i "$work/d4.mp4" -f framemd5 - | grep -v '^#' | md5sum)
[ "$f1" != "$f4" ] && ok "another seed, other pixels" || bad "seeds 42 and 43 decode to the same pixels"
# a random seed is printed and replays
gen "${small[@]}" --threads 1 --out "$work/r1.mp4" || bad "r1: $(cat "$work/err.txt")"
rs=$(sed -n 's/^seed \([0-9]*\)$/\1/p' "$work/out.txt")
if [ -n "$rs" ] && gen "${small[@]}" --threads 1 --seed "$rs" --out "$work/r2.mp4" && cmp -s "$work/r1.mp4" "$work/r2.mp4"; then
    ok "random seed $rs printed and replayed"
else
    bad "random seed not printed or not replayable ('$rs')"
fi
# guidance <= 1 (no unconditional branch) and a negative prompt both run and differ
gen "${small[@]}" --seed 42 --threads 1 --guidance 1 --out "$work/g1.mp4" || bad "guidance 1: $(cat "$work/err.txt")"
gen "${small[@]}" --seed 42 --threads 1 --negative-prompt "blurry" --out "$work/n1.mp4" || bad "negative: $(cat "$work/err.txt")"
if cmp -s "$work/g1.mp4" "$work/d1.mp4" || cmp -s "$work/n1.mp4" "$work/d1.mp4"; then
    bad "guidance 1 or a negative prompt left the video unchanged"
else
    ok "guidance and negative prompt change the video"
fi

# 4. invalid arguments: non-zero exit, a message naming the problem, no output file
check_invalid() {
    local what=$1 pattern=$2
    shift 2
    rm -f "$work/bad.mp4"
    "$pd" generate "$@" >"$work/out.txt" 2>"$work/err.txt"
    local rc=$?
    if [ $rc -ne 0 ] && grep -qi -- "$pattern" "$work/err.txt" && [ ! -e "$work/bad.mp4" ] \
        && [ -z "$(ls -A "$work" | grep '^\.bad')" ]; then
        ok "invalid $what -> exit $rc: $(head -1 "$work/err.txt")"
    else
        bad "invalid $what: exit $rc, stderr '$(head -3 "$work/err.txt")'"
    fi
}
p=(--prompt "a fox" --seed 1)
check_invalid "size" "multiple of 16" "${p[@]}" --size 100x96 --out "$work/bad.mp4"
check_invalid "size too small" "16..4096" "${p[@]}" --size 0x96 --out "$work/bad.mp4"
check_invalid "size too large" "16..4096" "${p[@]}" --size 8192x96 --out "$work/bad.mp4"
check_invalid "size format" "832x480" "${p[@]}" --size 128 --out "$work/bad.mp4"
check_invalid "frames" "4k+1" "${p[@]}" --frames 8 --out "$work/bad.mp4"
check_invalid "frames too many" "frames" "${p[@]}" --frames 2001 --out "$work/bad.mp4"
check_invalid "steps" "steps" "${p[@]}" --steps 0 --out "$work/bad.mp4"
check_invalid "steps text" "integer" "${p[@]}" --steps ten --out "$work/bad.mp4"
check_invalid "guidance" "guidance" "${p[@]}" --guidance 60 --out "$work/bad.mp4"
check_invalid "shift" "shift" "${p[@]}" --shift 0 --out "$work/bad.mp4"
check_invalid "sampler" "unipc, euler or dpm++" "${p[@]}" --sampler ddim --out "$work/bad.mp4"
check_invalid "seed" "seed" "${p[@]}" --seed -5 --out "$work/bad.mp4"
check_invalid "fps" "fps" "${p[@]}" --fps 0 --out "$work/bad.mp4"
check_invalid "empty prompt" "prompt" --prompt "   " --out "$work/bad.mp4"
check_invalid "missing prompt" "--prompt" --out "$work/bad.mp4"
check_invalid "missing --out" "--out" "${p[@]}"
check_invalid "unknown option" "unknown option" "${p[@]}" --colour red --out "$work/bad.mp4"
check_invalid "missing model folder" "$work/nope" "${p[@]}" --model "$work/nope" --out "$work/bad.mp4"
check_invalid "unwritable output folder" "cannot write" "${p[@]}" --out "$work/no/such/dir/bad.mp4"
# a model folder missing its VAE weights: the error names the file
cp -r "$PIPEDIT_CACHE/tiny-v1" "$work/broken"
rm -f "$work/broken/vae/diffusion_pytorch_model.safetensors"
check_invalid "missing model files" "vae" "${p[@]}" --model "$work/broken" --out "$work/bad.mp4"

# 5. cancellation (SIGINT) at a step boundary leaves no file; the second run, with every default,
#    also shows the embedded model's defaults (tests/unit/test_pipeline.c cancels a decode)
cancel_run() { # what, the line to wait for in stderr, generate args...
    local what=$1 line=$2
    shift 2
    rm -f "$work/c.mp4"
    "$pd" generate --prompt "a fox" --seed 1 "$@" --out "$work/c.mp4" >"$work/out.txt" 2>"$work/err.txt" &
    local pid=$! rc
    for _ in $(seq 600); do grep -q "$line" "$work/err.txt" 2>/dev/null && break; sleep 0.1; done
    kill -INT $pid
    wait $pid
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "cancelled" "$work/err.txt" && [ ! -e "$work/c.mp4" ] \
        && [ -z "$(ls -A "$work" | grep '^\.c\.mp4')" ]; then
        ok "SIGINT $what (exit $rc)"
    else
        bad "cancel $what: exit $rc, $(tail -1 "$work/err.txt")"
    fi
}
cancel_run "in denoise" "^denoise 2/" --size 32x32 --frames 5 --steps 1000
cancel_run "with the defaults" "^denoise 1/8"
grep -q "^embedded tiny model: 128x96, 9 frames at 16 fps, 8 unipc steps, guidance 5, shift 5," "$work/out.txt" \
    && ok "embedded model defaults" || bad "defaults: $(grep embedded "$work/out.txt")"

pd_summary
