#!/usr/bin/env bash
# pipedit decode -> MP4 + PNG thumbnail, checked with Debian's ffprobe: h264, yuv420p, frame count
# (decoded with -count_frames), size, fps, moov before mdat; the thumbnail decodes as a 1-frame PNG; the
# decoded pixels match the decoder's frames.
# An unwritable or missing output folder is a clear error that leaves no file.
source "$(dirname "$0")/../lib/script_env.sh" decode_mp4
command -v ffprobe >/dev/null && command -v ffmpeg >/dev/null || { echo "FAIL: ffmpeg/ffprobe not installed (scripts/deps.sh installs them)"; exit 1; }
fail=0
check() { # name, got, want
  if [ "$2" == "$3" ]; then echo "ok   $1 = $2"; else echo "FAIL $1 = '$2', want '$3'"; fail=1; fi
}

"$pd" mkmodel --out "$work/model" --seed 3 >/dev/null
# latent (16, 4, 6, 10): 13 frames of 80x48
$PYTHON "$PIPEDIT_SRC/tests/ref/vae_ref.py" latent --shape 16,4,6,10 --seed 5 --out "$work/lat.safetensors"
"$pd" decode --model "$work/model" --latent "$work/lat.safetensors" --out "$work/out/clip.mp4" 2>"$work/err" && {
  echo "FAIL decode into a missing folder succeeded"; fail=1; }
grep -q "cannot create a file in" "$work/err" || { echo "FAIL no useful message: $(cat "$work/err")"; fail=1; }
mkdir "$work/out"
"$pd" decode --model "$work/model" --latent "$work/lat.safetensors" --out "$work/out/clip.mp4" \
  --thumbnail "$work/out/thumb.png" --fps 12 --threads 2

probe() { ffprobe -v error -select_streams v:0 -count_frames -show_entries "stream=$2" -of default=nw=1:nk=1 "$1"; }
check codec "$(probe "$work/out/clip.mp4" codec_name)" h264
check pix_fmt "$(probe "$work/out/clip.mp4" pix_fmt)" yuv420p
check width "$(probe "$work/out/clip.mp4" width)" 80
check height "$(probe "$work/out/clip.mp4" height)" 48
check fps "$(probe "$work/out/clip.mp4" r_frame_rate)" 12/1
check frames "$(probe "$work/out/clip.mp4" nb_read_frames)" 13
check faststart "$(head -c 64 "$work/out/clip.mp4" | grep -c moov || true)" 1
check thumb_codec "$(probe "$work/out/thumb.png" codec_name)" png
check thumb_size "$(probe "$work/out/thumb.png" width)x$(probe "$work/out/thumb.png" height)" 80x48
check thumb_frames "$(probe "$work/out/thumb.png" nb_read_frames)" 1
check leftovers "$(ls -A "$work/out" | tr '\n' ' ')" "clip.mp4 thumb.png "

# content: the MP4 decodes back to the decoder's frames within codec error (luma PSNR; a swapped
# channel or a shifted frame falls far below), the PNG thumbnail is frame 0 exactly (lossless).
"$pd" decode --model "$work/model" --latent "$work/lat.safetensors" --out "$work/video.safetensors" >/dev/null
ffmpeg -v error -y -i "$work/out/clip.mp4" -f rawvideo -pix_fmt rgb24 "$work/clip.rgb"
ffmpeg -v error -y -i "$work/out/thumb.png" -f rawvideo -pix_fmt rgb24 "$work/thumb.rgb"
$PYTHON - "$PIPEDIT_SRC/tests/ref" "$work" <<'PY' || fail=1
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import vae_ref
w = sys.argv[2]
v = vae_ref.st_read(w + "/video.safetensors")["video"]                        # (3, F, H, W) in [-1, 1]
ref = np.clip(np.rint((v + 1) * 127.5), 0, 255).transpose(1, 2, 3, 0)        # (F, H, W, 3)
mp4 = np.fromfile(w + "/clip.rgb", np.uint8).astype(float)
png = np.fromfile(w + "/thumb.rgb", np.uint8).astype(float)
ok = mp4.size == ref.size and png.size == ref[0].size
if ok:
    mp4, png = mp4.reshape(ref.shape), png.reshape(ref[0].shape)
    luma = np.array([0.299, 0.587, 0.114])
    psnr = lambda a, b: 10 * np.log10(255.0 ** 2 / max(((a - b) ** 2).mean(), 1e-12))
    y, rgb, d = psnr(mp4 @ luma, ref @ luma), psnr(mp4, ref), np.abs(png - ref[0]).max()
    ok = y > 32 and rgb > 22 and d <= 1
    print(f"{'ok  ' if ok else 'FAIL'} mp4 luma PSNR {y:.1f} dB (> 32), RGB {rgb:.1f} dB (> 22); png max diff {d:.0f} (<= 1)")
else:
    print(f"FAIL sizes: mp4 {mp4.size}, png {png.size}, want {ref.size}, {ref[0].size}")
sys.exit(0 if ok else 1)
PY

# unwritable folder (/proc refuses new files even to root): clear error, no file
if "$pd" decode --model "$work/model" --latent "$work/lat.safetensors" --out /proc/pipedit-clip.mp4 2>"$work/err"; then
  echo "FAIL decode into /proc succeeded"; fail=1
else
  echo "ok   unwritable folder: $(tail -n 1 "$work/err")"
  grep -q "/proc" "$work/err" || { echo "FAIL message does not name the folder"; fail=1; }
fi
[ ! -e /proc/pipedit-clip.mp4 ] || { echo "FAIL file left in /proc"; fail=1; }
# a read-only folder for a non-root user
if [ "$(id -u)" != 0 ]; then
  mkdir "$work/ro" && chmod 555 "$work/ro"
  "$pd" decode --model "$work/model" --latent "$work/lat.safetensors" --out "$work/ro/c.mp4" 2>/dev/null && { echo "FAIL read-only folder"; fail=1; }
  check ro_leftovers "$(ls -A "$work/ro")" ""
  chmod 755 "$work/ro"
fi
exit $fail
