#!/bin/bash
# --device for `pipedit dit`, `pipedit decode` and `pipedit generate`: malformed values and --sp with a
# GPU are usage errors (exit 2) before anything is loaded; an explicit cpu works; cuda either generates
# (a GPU and a CUDA build) or fails at once with a message that names the reason and leaves no output.
source "$(dirname "$0")/../lib/script_env.sh" device_option
export PIPEDIT_CACHE="$work/cache"

# expect CODE TEXT CMD...: CMD exits with CODE and its stderr contains TEXT.
expect() {
    local code=$1 text=$2 rc=0
    shift 2
    "$@" >"$work/out.txt" 2>"$work/err.txt" || rc=$?
    local what="$*"
    what=${what#"$pd "}
    what=${what//"$work/"/}
    if [ "$rc" = "$code" ] && grep -qF -- "$text" "$work/err.txt"; then ok "$what -> $code"
    else bad "$what -> exit $rc, stderr: $(head -c 300 "$work/err.txt")"; fi
}

dit=(dit --model "$work/none" --latent "$work/l.safetensors" --timestep 500 --context "$work/c.safetensors" --out "$work/v.safetensors")
expect 2 "--device must be cpu, cuda or cuda:N" "$pd" "${dit[@]}" --device gpu
expect 2 "--device must be cpu, cuda or cuda:N" "$pd" "${dit[@]}" --device cuda:x
expect 2 "--sp with --device cuda:1 is not supported yet" "$pd" "${dit[@]}" --device cuda:1 --sp 2
expect 2 "--device must be cpu, cuda or cuda:N" "$pd" decode --model "$work/none" --latent "$work/l.safetensors" \
    --out "$work/v.mp4" --device cuda:-1
gen=(generate --prompt "a lighthouse" --size 32x32 --frames 1 --steps 1 --seed 5)
expect 2 "--sp with --device cuda is not supported yet" "$pd" "${gen[@]}" --out "$work/a.mp4" --device cuda --sp 2
[ ! -e "$work/a.mp4" ] && ok "no output after a usage error" || bad "an output file after a usage error"

# explicit cpu: the default path
if "$pd" "${gen[@]}" --out "$work/cpu.mp4" --device cpu >"$work/out.txt" 2>"$work/err.txt" && [ -s "$work/cpu.mp4" ]; then
    ok "generate --device cpu"
else
    bad "generate --device cpu: $(tail -3 "$work/err.txt")"
fi

# cuda: works where there is a GPU and a CUDA build, else a clear refusal and no file
rc=0
"$pd" "${gen[@]}" --out "$work/gpu.mp4" --device cuda >"$work/out.txt" 2>"$work/err.txt" || rc=$?
if [ $rc = 0 ]; then
    [ -s "$work/gpu.mp4" ] && grep -q "on cuda:0" "$work/out.txt" && ok "generate --device cuda ran on the GPU" \
        || bad "generate --device cuda: exit 0 but no video or no 'on cuda:0' line"
elif [ $rc = 1 ] && grep -qE "no CUDA backend|no CUDA device is visible" "$work/err.txt" && [ ! -e "$work/gpu.mp4" ]; then
    ok "generate --device cuda refused: $(head -c 160 "$work/err.txt")"
else
    bad "generate --device cuda: exit $rc, stderr: $(head -c 300 "$work/err.txt")"
fi
pd_summary
