#!/usr/bin/env bash
# Aco is exact: `pipedit dit --aco`, where a helper process computes some heads of every
# self-attention, writes the same velocity bytes as the same command without --aco: single device
# with a fixed share of 1 and 3 of the tiny model's 4 heads and the measured share, batch 1 and the
# CFG pair; SP degrees 2 and 3 (PipeSP g 1, and Ulysses) with a helper per rank, with and without CFG
# parallelism; and when a helper is killed in the middle of its second lend (the lender recomputes
# the lent heads itself: same bytes, exit 0). `pipedit generate --aco` writes the same MP4 bytes.
# Bad option combinations are usage errors.
source "$(dirname "$0")/../lib/script_env.sh" aco_exact

pd_dit_fixture

# same TAG ARGS...: the velocity with --aco ARGS equals the one without, byte for byte.
same() {
    local tag=$1; shift
    local off="$work/off_$tag.safetensors" on="$work/on_$tag.safetensors"
    if ! timeout 120 "$pd" dit "${base[@]}" "$@" --out "$off" --threads 1; then
        bad "$tag: pipedit dit without --aco exited non-zero"; return
    fi
    if ! PIPEDIT_LOG=info timeout 120 "$pd" dit "${base[@]}" "$@" --aco ${ACO_SHARE:+--aco-share $ACO_SHARE} \
            --out "$on" --threads 1 2>"$work/on_$tag.log"; then
        bad "$tag: pipedit dit --aco exited non-zero: $(tail -3 "$work/on_$tag.log")"; return
    fi
    if cmp -s "$off" "$on"; then ok "$tag: same bytes with Aco on and off"; else bad "$tag: the velocities differ"; fi
    # with a fixed share, rank 0's helper must really have computed heads
    if [ -n "${ACO_SHARE:-}" ] && ! grep -Eq "aco \(rank 0\): [1-9][0-9]* of [0-9]+ heads lent" "$work/on_$tag.log"; then
        bad "$tag: no heads were lent: $(grep aco "$work/on_$tag.log" | tail -2)"
    fi
}

ACO_SHARE=1 same share1
ACO_SHARE=3 same share3
same measured
ACO_SHARE=2 same pair "${pair[@]}"
for n in 2 3; do
    ACO_SHARE=1 same "sp${n}_g1" --sp $n --pipesp-chunk 1
    same "sp${n}_ulysses_measured" --sp $n --pipesp-chunk 99
done
ACO_SHARE=1 same sp2_cfg_parallel "${pair[@]}" --sp 2 --cfg-parallel --pipesp-chunk 1
same sp2_cfg_parallel_measured "${pair[@]}" --sp 2 --cfg-parallel

# A helper killed mid-lend: the run still succeeds with the same bytes, and says the helper failed.
if PIPEDIT_ACO_FAULT_AFTER=2 PIPEDIT_LOG=info timeout 120 "$pd" dit "${base[@]}" --aco --aco-share 2 \
        --out "$work/fault.safetensors" --threads 1 2>"$work/fault.log"; then
    if cmp -s "$work/fault.safetensors" "$work/off_share1.safetensors"; then
        ok "helper killed mid-lend: same bytes"
    else
        bad "helper killed mid-lend: the velocity differs"
    fi
    if grep -q "the helper failed" "$work/fault.log"; then ok "the helper's failure is reported"
    else bad "no report of the helper's failure: $(tail -3 "$work/fault.log")"; fi
else
    bad "helper killed mid-lend: pipedit dit failed: $(tail -3 "$work/fault.log")"
fi
if PIPEDIT_ACO_FAULT_AFTER=1 timeout 120 "$pd" dit "${base[@]}" --sp 2 --aco --aco-share 1 \
        --out "$work/fault_sp.safetensors" --threads 1 2>/dev/null &&
        timeout 120 "$pd" dit "${base[@]}" --sp 2 --out "$work/nofault_sp.safetensors" --threads 1 &&
        cmp -s "$work/fault_sp.safetensors" "$work/nofault_sp.safetensors"; then
    ok "SP 2, a rank's helper killed mid-lend: same bytes"
else
    bad "SP 2, a rank's helper killed mid-lend"
fi

# Whole videos: `pipedit generate --aco` writes the same MP4 bytes as without, on one device and on
# SP 2 (PipeSP g 1) with CFG parallelism.
gen() { # TAG ARGS...: generate with the given extra arguments into $work/gen_TAG.mp4
    local tag=$1; shift
    timeout 300 "$pd" generate --prompt "a red fox in snow" --seed 7 --steps 3 --threads 1 "$@" \
        --out "$work/gen_$tag.mp4" >"$work/gen_$tag.log" 2>&1
}
for v in "one:" "sp2cfg:--sp 2 --cfg-parallel --pipesp-chunk 1"; do
    tag=${v%%:*} args=${v#*:}
    # shellcheck disable=SC2086
    if gen "${tag}_off" $args && gen "${tag}_on" $args --aco; then
        if cmp -s "$work/gen_${tag}_off.mp4" "$work/gen_${tag}_on.mp4"; then ok "generate $tag: same MP4 bytes with Aco on and off"
        else bad "generate $tag: the videos differ"; fi
    else
        bad "generate $tag failed: $(tail -2 "$work/gen_${tag}_on.log")"
    fi
done
if grep -Eq "aco: [1-9][0-9]* of [0-9]+ self-attention heads lent" "$work/gen_one_on.log"; then ok "generate --aco lent heads"
else bad "generate --aco lent no heads: $(grep aco "$work/gen_one_on.log")"; fi

# usage errors
if "$pd" dit "${base[@]}" --aco-share 1 --out "$work/x.safetensors" 2>/dev/null; then bad "--aco-share without --aco accepted"
else ok "--aco-share without --aco refused"; fi
if "$pd" dit "${base[@]}" --aco --device cuda --out "$work/x.safetensors" 2>/dev/null; then bad "--aco with --device cuda accepted"
else ok "--aco with --device cuda refused"; fi
pd_summary
