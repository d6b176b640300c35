#!/usr/bin/env bash
# `pipedit plan`: usage errors (exit 2, a message naming the option), the JSON shape of a
# recommendation (best, why, every alternative with latency, throughput and memory per GPU; the
# one-SP-group baseline, DeDiVAE splits, PipeSP, CFG parallelism and Aco among the alternatives;
# the best has the lowest score), a profile file and a model folder as inputs, a rate goal, and the
# case that does not fit in memory (exit 1, "DOES NOT FIT", no recommendation). `pipedit calibrate`:
# usage errors, and a measured CPU profile that `pipedit plan` accepts.
source "$(dirname "$0")/../lib/script_env.sh" plan

expect_usage() { # NAME PATTERN ARGS...: exit 2 with PATTERN on stderr
    local name=$1 pat=$2 rc=0
    shift 2
    "$pd" plan "$@" >"$work/out" 2>"$work/err" || rc=$?
    if [ "$rc" -eq 2 ] && grep -q -- "$pat" "$work/err"; then ok "usage: $name"; else bad "usage: $name (rc $rc: $(head -c 300 "$work/err"))"; fi
}
m14=(--model wan2.1-t2v-14b)
expect_usage "no arguments" "required"
expect_usage "no --gpus" "required" "${m14[@]}" --device h100
expect_usage "gpus 0" "--gpus must be an integer in 1..64" "${m14[@]}" --device h100 --gpus 0
expect_usage "gpus 65" "--gpus must be an integer" "${m14[@]}" --device h100 --gpus 65
expect_usage "unknown device" "--device must be h100, h200, l4" "${m14[@]}" --device a100 --gpus 8
expect_usage "missing profile file" "--device" "${m14[@]}" --device "$work/none.json" --gpus 8
expect_usage "bad size" "--size must be WxH" "${m14[@]}" --device h100 --gpus 8 --size 1280by720
expect_usage "size not a multiple of 16" "width 1000 must be a multiple of 16" "${m14[@]}" --device h100 --gpus 8 --size 1000x720
expect_usage "frames not 1+4k" "frames 80 must be 1 + 4k" "${m14[@]}" --device h100 --gpus 8 --frames 80
expect_usage "bad rate" "--rate must be a number" "${m14[@]}" --device h100 --gpus 8 --rate -1
expect_usage "unknown model" "neither a preset" --model wan9 --device h100 --gpus 8
expect_usage "unknown option" "unknown option --fast" "${m14[@]}" --device h100 --gpus 8 --fast
expect_usage "option without value" "--steps needs a value" "${m14[@]}" --device h100 --gpus 8 --steps

# A recommendation as JSON.
"$pd" plan "${m14[@]}" --gpus 8 --device h100 --size 1280x720 --frames 81 --steps 50 --json >"$work/p14.json" &&
    ok "14B on 8 x h100: exit 0" || bad "14B on 8 x h100: exit $?"
check_json() { # FILE EXPECT_FITS
    "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); want_fit = sys.argv[2] == "1"
assert j["fits"] == want_fit, j["fits"]
for k in ("model", "profile", "gpus", "request", "goal", "stages", "why", "considered", "fitting", "alternatives"):
    assert k in j, k
alts = j["alternatives"]
assert len(alts) == j["considered"] > 10
keys = ("deployment", "replicas", "denoise_gpus", "decode_gpus", "sp", "cfg_parallel", "attention", "pipesp_g",
        "aco", "aco_share", "step_s", "latency_alone_s", "p50_s", "p99_s", "throughput_rps", "mem_denoise_bytes",
        "mem_decode_bytes", "fits", "score")
for a in alts:
    for k in keys: assert k in a, (k, a)
    assert a["replicas"] * (a["denoise_gpus"] + a["decode_gpus"]) == j["gpus"], a
    assert a["p99_s"] >= a["p50_s"] >= a["latency_alone_s"] * 0.999 > 0, a
    assert a["mem_denoise_bytes"] > 0 and a["throughput_rps"] > 0
    assert a["fits"] or a["why_not"]
# The alternatives the plan must consider.
assert any(a["replicas"] == 1 and a["decode_gpus"] == 0 and a["sp"] == j["gpus"] and a["attention"] == "ulysses" for a in alts), "baseline"
assert any(a["decode_gpus"] > 0 and not a["aco"] for a in alts), "DeDiVAE split"
assert any(a["attention"] == "pipesp" for a in alts), "PipeSP"
assert any(a["cfg_parallel"] for a in alts), "CFG parallelism"
assert any(a["aco"] and a["aco_share"] > 0 for a in alts), "Aco"
if want_fit:
    b = j["best"]; assert b == alts[0] and b["fits"], b
    fit = [a for a in alts if a["fits"]]
    assert j["fitting"] == len(fit)
    # Nothing fitting is more than the tie margin better than the best.
    assert all(b["score"] <= a["score"] * 1.02 + 1e-9 for a in fit)
    assert "why" in j and len(j["why"]) > 40
else:
    assert j["best"] is None and j["fitting"] == 0 and "fits" in j["why"]
    assert not any(a["fits"] for a in alts)
print("ok")
PY
}
check_json "$work/p14.json" 1 >/dev/null && ok "14B JSON shape and ranking" || bad "14B JSON shape and ranking"

# Text output names the best deployment and the baseline.
"$pd" plan --model wan2.1-t2v-1.3b --gpus 8 --device h100 --size 832x480 >"$work/p13.txt"
grep -q "^best: " "$work/p13.txt" && grep -q "why: " "$work/p13.txt" && grep -q "(baseline)" "$work/p13.txt" &&
    ok "1.3B text output" || bad "1.3B text output: $(head -c 400 "$work/p13.txt")"

# A rate goal, a profile file (the h200 profile with NVLink slowed to PCIe) and a model folder.
"$pd" plan --model wan2.1-t2v-1.3b --gpus 4 --device h200 --size 832x480 --rate 0.02 --requests 200 --json >"$work/r.json"
"$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["goal"]["objective"]=="p99_latency" and j["goal"]["requests"]==200 and j["best"]["p99_s"]>0' "$work/r.json" &&
    ok "rate goal" || bad "rate goal"
"$PYTHON" - "$work/slow.json" <<'PY'
import json, sys
json.dump({"name": "slow", "source": "test", "gemm_bf16_flops": 7.6e14, "gemm_f32_flops": 6e13, "attn_flops": 5.8e14,
           "mem_bw_bytes": 2.9e12, "conv_flops": 1.7e14, "mem_bytes": 8.6e10, "eltwise_passes": 92, "act_bytes": 2,
           "topology": "pcie", "a2a": {"bw_bytes": 2e9, "latency_s": 1e-4}, "p2p": {"bw_bytes": 2e9, "latency_s": 1e-4}},
          open(sys.argv[1], "w"))
PY
"$pd" plan --model wan2.1-t2v-1.3b --gpus 8 --device "$work/slow.json" --size 832x480 --json >"$work/slow_out.json" &&
    "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["profile"]["name"]=="slow" and j["best"]["sp"]==1, j["best"]' "$work/slow_out.json" &&
    ok "profile file: a slow link keeps SP out of the best" || bad "profile file"
echo '{"name": "broken"}' >"$work/broken.json"
expect_usage "malformed profile" "gemm_bf16_flops" "${m14[@]}" --device "$work/broken.json" --gpus 8
"$pd" mkmodel --preset tiny --seed 1 --out "$work/tiny" --layout diffusers --dtype f32 >/dev/null
"$pd" plan --model "$work/tiny" --gpus 2 --device h100 --size 64x64 --frames 5 --steps 2 --json >"$work/tiny.json" &&
    ok "model folder" || bad "model folder"

# pipedit calibrate: usage errors, then a measured CPU profile that pipedit plan takes.
expect_cal() { # NAME PATTERN ARGS...
    local name=$1 pat=$2 rc=0
    shift 2
    "$pd" calibrate "$@" >"$work/out" 2>"$work/err" || rc=$?
    if [ "$rc" -eq 2 ] && grep -q -- "$pat" "$work/err"; then ok "calibrate usage: $name"; else bad "calibrate usage: $name (rc $rc: $(head -c 300 "$work/err"))"; fi
}
expect_cal "no --out" "--out is required"
expect_cal "bad device" "--device must be cpu, cuda or cuda:N" --out "$work/x.json" --device tpu
expect_cal "cuda without memory" "--mem-gib is required" --out "$work/x.json" --device cuda:0
expect_cal "unknown option" "unknown option --fast" --out "$work/x.json" --fast
[ ! -e "$work/x.json" ] && ok "calibrate usage errors write nothing" || bad "calibrate usage errors write nothing"
if "$pd" calibrate --device cpu --threads 1 --out "$work/cpu.json" >"$work/cal.txt" 2>&1; then
    "$PYTHON" - "$work/cpu.json" <<'PY' && ok "calibrate: a complete CPU profile" || bad "calibrate: profile contents"
import json, sys
j = json.load(open(sys.argv[1]))
for k in ("gemm_bf16_flops", "gemm_f32_flops", "attn_flops", "mem_bw_bytes", "conv_flops", "mem_bytes"):
    assert 1e6 < j[k] < 1e16, (k, j[k])
assert j["topology"] == "shm" and j["act_bytes"] == 4 and "measured" in j["source"]
for l in ("a2a", "p2p"):
    assert 1e6 < j[l]["bw_bytes"] < 1e13 and 0 <= j[l]["latency_s"] < 0.1, j[l]
# the CPU's own facts: one core measured (--threads 1), the CPU backend's pass count, conv rates by width
assert j["cores"] == 1 and j["eltwise_passes"] == 21 and j["gelu_fused"] is True, j
w = [c for c, _ in j["conv_by_cout"]]
assert w == sorted(w) and w[0] == 8 and w[-1] == 96 and all(1e6 < r < 1e16 for _, r in j["conv_by_cout"]), j["conv_by_cout"]
# the decode stage around the VAE: the media writer's pixel rates and first-touch page faults
for k in ("encode_first_px", "encode_px"):
    assert 1e3 < j[k] < 1e11, (k, j[k])
assert 1e6 < j["fault_bytes"] < 1e13, j["fault_bytes"]
PY
    "$pd" plan --model wan2.1-t2v-1.3b --gpus 2 --device "$work/cpu.json" --size 832x480 --steps 2 --json >"$work/cpu_plan.json" &&
        ok "plan on the calibrated profile" || bad "plan on the calibrated profile"
elif grep -q "too noisy" "$work/cal.txt"; then
    ok "calibrate: refused a too-noisy communicator fit (machine busy): $(cat "$work/cal.txt")"
else
    bad "calibrate --device cpu: $(cat "$work/cal.txt")"
fi

# Does not fit: the 14B (28 GB of bf16 weights) on 24 GB L4s.
rc=0
"$pd" plan "${m14[@]}" --gpus 8 --device l4 >"$work/nofit.txt" || rc=$?
if [ "$rc" -eq 1 ] && grep -q "DOES NOT FIT" "$work/nofit.txt" && ! grep -q "^best:" "$work/nofit.txt"; then
    ok "not fit: says so, no recommendation, exit 1"
else
    bad "not fit (rc $rc): $(head -c 400 "$work/nofit.txt")"
fi
rc=0
"$pd" plan "${m14[@]}" --gpus 8 --device l4 --json >"$work/nofit.json" || rc=$?
[ "$rc" -eq 1 ] && check_json "$work/nofit.json" 0 >/dev/null && ok "not fit JSON" || bad "not fit JSON (rc $rc)"

pd_summary
