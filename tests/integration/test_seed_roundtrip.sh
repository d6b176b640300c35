#!/usr/bin/env bash
# A seed that round-trips: `pipedit generate --noise torch-cpu` starts from torch.randn's noise for the
# seed (fed back through --init-latent, the saved final latents are equal byte for byte), gives the same
# MP4 bytes in one process and on 1, 2 and 3 SP ranks, with and without CFG parallelism, and records
# seed and noise in the MP4's comment tag. With Debian's python3-torch the starting latent comes from
# torch.randn itself, otherwise from the same generator through `test_noise --torch-dump`.
# Bad --noise / --init-latent values are usage errors that write nothing.
source "$(dirname "$0")/../lib/script_env.sh" seed_roundtrip
command -v ffprobe >/dev/null || { echo "FAIL: ffprobe not installed (scripts/deps.sh installs it)"; exit 1; }
pd_require_numpy
req=(--prompt "a red fox in snow" --seed 7 --steps 4 --threads 1)

gen() { # tag extra-args...
    local tag=$1; shift
    if ! timeout 300 "$pd" generate "${req[@]}" --out "$work/$tag.mp4" "$@" >"$work/$tag.log" 2>&1; then
        bad "generate $tag exited non-zero"; cat "$work/$tag.log"; return 1
    fi
}
same() { cmp -s "$work/$1.mp4" "$work/$2.mp4"; }

# The noise of the embedded tiny model's default request (128x96, 9 frames: latent (16, 3, 12, 16)),
# written as a safetensors latent, from torch when it is there.
"$PYTHON" - "$work/noise.safetensors" "$PIPEDIT_BIN/test_noise" "$PIPEDIT_SRC/tests/ref" <<'PY'
import subprocess, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from dit_ref import st_write
shape = (16, 3, 12, 16)
try:
    import torch
    x = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(7)).numpy()
    print("noise from torch", torch.__version__)
except ImportError:
    out = subprocess.run([sys.argv[2], "--torch-dump", "7", str(int(np.prod(shape)))], capture_output=True, check=True)
    x = np.frombuffer(out.stdout, dtype=np.float32).reshape(shape)
    print("noise from test_noise --torch-dump (no torch here)")
st_write(sys.argv[1], {"latent": x})
PY

gen torch --noise torch-cpu --save-latent "$work/final_torch.safetensors"
gen init --init-latent "$work/noise.safetensors" --seed 12345 --save-latent "$work/final_init.safetensors"
"$PYTHON" - "$work/final_torch.safetensors" "$work/final_init.safetensors" "$PIPEDIT_SRC/tests/ref" <<'PY' \
    && ok "--init-latent with torch.randn's noise = --noise torch-cpu (final latents equal bit for bit)" \
    || bad "--init-latent with torch.randn's noise differs from --noise torch-cpu"
import sys
sys.path.insert(0, sys.argv[3])
from dit_ref import st_read_file
a, b = st_read_file(sys.argv[1])[0]["latent"], st_read_file(sys.argv[2])[0]["latent"]
sys.exit(0 if a.shape == b.shape == (16, 3, 12, 16) and a.tobytes() == b.tobytes() else 1)
PY

# The same MP4 bytes whatever the number of ranks.
for spec in "sp1:--sp 1" "sp2:--sp 2" "sp3:--sp 3" "sp2_cfgpar:--sp 2 --cfg-parallel"; do
    tag=${spec%%:*}
    # shellcheck disable=SC2086
    gen "$tag" --noise torch-cpu ${spec#*:} || continue
    if same "$tag" torch; then ok "--noise torch-cpu $tag: the same MP4 bytes as one process"
    else bad "--noise torch-cpu $tag: MP4 differs from one process"; fi
done
# --init-latent reaches every SP rank too
if gen init_sp2 --init-latent "$work/noise.safetensors" --seed 12345 --sp 2; then
    same init_sp2 init && ok "--init-latent --sp 2: the same MP4 bytes as one process" || bad "--init-latent --sp 2: MP4 differs"
fi
# ... and the comparison can tell: philox and another seed give other videos.
gen philox
gen seed8 --noise torch-cpu --seed 8
same philox torch && bad "philox and torch-cpu noise gave the same MP4"
same seed8 torch && bad "seeds 7 and 8 gave the same MP4"

comment=$(ffprobe -v error -show_entries format_tags=comment -of default=nw=1:nk=1 "$work/torch.mp4")
case "$comment" in
*"seed=7 noise=torch-cpu sampler=unipc steps=4"*) ok "MP4 comment: $comment" ;;
*) bad "MP4 comment \"$comment\" does not record seed and noise" ;;
esac
comment=$(ffprobe -v error -show_entries format_tags=comment -of default=nw=1:nk=1 "$work/init.mp4")
[[ $comment == *"init_latent=1"* ]] || bad "MP4 comment \"$comment\" does not say the noise was replaced"

# Usage errors: exit 2, a message naming the problem, nothing written.
usage() { # label want-in-message args...
    local label=$1 want=$2; shift 2
    set +e
    "$pd" generate "${req[@]}" --out "$work/bad.mp4" "$@" >/dev/null 2>"$work/err.txt"
    local rc=$?
    set -e
    if [ "$rc" -eq 2 ] && grep -q -- "$want" "$work/err.txt" && [ ! -e "$work/bad.mp4" ]; then ok "$label -> exit 2"
    else bad "$label: exit $rc, $(cat "$work/err.txt")"; fi
}
usage "unknown --noise" "philox or torch-cpu" --noise torch-cuda
usage "missing --init-latent file" "init-latent" --init-latent "$work/none.safetensors"
usage "--init-latent of another shape" "init_latent: must be a host f32 (16, 3, 6, 8) tensor for 64x48" \
    --init-latent "$work/noise.safetensors" --size 64x48
"$PYTHON" -c "
import sys; sys.path.insert(0, '$PIPEDIT_SRC/tests/ref')
import numpy as np; from dit_ref import st_write
st_write('$work/other.safetensors', {'noise': np.zeros((16, 3, 12, 16), np.float32)})"
usage "--init-latent without a 'latent' tensor" "latent" --init-latent "$work/other.safetensors"
pd_summary
