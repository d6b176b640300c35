#!/usr/bin/env bash
# `pipedit dit` against the independent float64 NumPy reference (tests/ref/dit_ref.py): tiny models in
# both tensor-name layouts, f32 and bf16 weights, two latent shapes (T > 1, H != W), context lengths
# below 512, different timesteps; relative L2 error must stay below 1e-4. Then bad inputs must fail
# with a clear message and a non-zero exit.
source "$(dirname "$0")/../lib/script_env.sh" dit_ref
ref="$PIPEDIT_SRC/tests/ref/dit_ref.py"

"$pd" mkmodel --preset tiny --seed 3 --out "$work/diff_f32" --layout diffusers --dtype f32
"$pd" mkmodel --preset tiny --seed 4 --out "$work/orig_f32" --layout original --dtype f32
"$pd" mkmodel --preset tiny --seed 5 --out "$work/orig_bf16" --layout original --dtype bf16
"$pd" mkmodel --preset tiny --seed 6 --out "$work/diff_bf16" --layout diffusers --dtype bf16

# The folder tree is what diffusers' WanPipeline folders hold (DESIGN.md section 5).
"$PYTHON" - "$work/diff_f32" "$work/orig_f32" <<'PY'
import json, os, sys
diff, orig = sys.argv[1], sys.argv[2]
idx = json.load(open(os.path.join(diff, "model_index.json")))
assert idx["_class_name"] == "WanPipeline", idx
for k in ("scheduler", "text_encoder", "tokenizer", "transformer", "vae"):
    assert isinstance(idx[k], list) and len(idx[k]) == 2, (k, idx.get(k))
sch = json.load(open(os.path.join(diff, "scheduler", "scheduler_config.json")))
assert sch["_class_name"] == "UniPCMultistepScheduler" and sch["prediction_type"] == "flow_prediction", sch
assert sch["use_flow_sigmas"] is True and sch["num_train_timesteps"] == 1000 and sch["flow_shift"] == 5.0, sch
cfg = json.load(open(os.path.join(diff, "transformer", "config.json")))
want = {"patch_size": [1, 2, 2], "num_attention_heads": 4, "attention_head_dim": 32, "in_channels": 16,
        "out_channels": 16, "text_dim": 32, "freq_dim": 256, "ffn_dim": 256, "num_layers": 2,
        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}
for k, v in want.items():
    assert cfg.get(k) == v, (k, cfg.get(k), v)
assert cfg["_class_name"] == "WanTransformer3DModel"
assert os.path.isfile(os.path.join(diff, "transformer", "diffusion_pytorch_model.safetensors"))
assert os.path.isfile(os.path.join(orig, "transformer", "wan2.1_t2v.safetensors"))
assert not os.path.exists(os.path.join(orig, "transformer", "config.json"))
print("ok: model folder layout")
PY

# mkmodel usage errors exit 2 with a message.
for args in "--out $work/x --layout foo" "--out $work/x --preset nope" "--seed 1" "--out $work/x --dtype f8" \
            "--out $work/x --seed -1"; do
    set +e
    # shellcheck disable=SC2086
    "$pd" mkmodel $args 2>"$work/err.txt"
    rc=$?
    set -e
    if [ "$rc" -ne 2 ] || [ ! -s "$work/err.txt" ]; then
        echo "FAIL: pipedit mkmodel $args exited $rc"; exit 1
    fi
done

"$PYTHON" "$ref" inputs --latent "$work/lat_a.safetensors" --context "$work/ctx_a.safetensors" \
    --shape 16,3,6,10 --ctx-len 7 --text-dim 32 --seed 1
"$PYTHON" "$ref" inputs --latent "$work/lat_b.safetensors" --context "$work/ctx_b.safetensors" \
    --shape 16,2,8,4 --ctx-len 23 --text-dim 32 --seed 2 --ctx-batch-dim

fails=0
check() { # model-path shape-tag timestep
    local model=$1 tag=$2 t=$3 out="$work/vel_$RANDOM.safetensors"
    if ! "$pd" dit --model "$model" --latent "$work/lat_$tag.safetensors" --timestep "$t" \
            --context "$work/ctx_$tag.safetensors" --out "$out" --threads 2; then
        echo "FAIL: pipedit dit exited non-zero for $model ($tag)"; fails=$((fails + 1)); return
    fi
    if ! "$PYTHON" "$ref" compare --model "$model" --latent "$work/lat_$tag.safetensors" \
            --context "$work/ctx_$tag.safetensors" --timestep "$t" --velocity "$out" --tol 1e-4; then
        fails=$((fails + 1))
    fi
}
check "$work/diff_f32" a 937
check "$work/diff_f32" b 250
check "$work/diff_f32/transformer" b 0
check "$work/orig_f32" a 500
check "$work/orig_f32/transformer/wan2.1_t2v.safetensors" b 12.5
check "$work/orig_bf16" a 999
check "$work/orig_bf16" b 71
check "$work/diff_bf16" b 400

# Bad inputs: non-zero exit and a message naming the problem.
expect_fail() { # pattern, then the dit arguments
    local pat=$1; shift
    local err="$work/err.txt"
    if "$pd" dit --model "$work/diff_f32" --timestep 500 --out "$work/bad.safetensors" "$@" 2>"$err"; then
        echo "FAIL: pipedit dit accepted $*"; fails=$((fails + 1)); return
    fi
    if ! grep -q -- "$pat" "$err"; then
        echo "FAIL: message for $* lacks '$pat':"; cat "$err"; fails=$((fails + 1))
    else
        echo "ok: rejected ($(tail -n 1 "$err"))"
    fi
}
"$PYTHON" "$ref" inputs --latent "$work/lat_odd.safetensors" --context "$work/ctx_odd.safetensors" \
    --shape 16,2,7,4 --ctx-len 5 --text-dim 32
"$PYTHON" "$ref" inputs --latent "$work/lat_c8.safetensors" --context "$work/ctx_long.safetensors" \
    --shape 8,2,4,4 --ctx-len 513 --text-dim 32
"$PYTHON" "$ref" inputs --latent "$work/lat_ok.safetensors" --context "$work/ctx_td.safetensors" \
    --shape 16,1,4,4 --ctx-len 5 --text-dim 31
expect_fail "height (H) = 7 must be a positive multiple of the patch size 2" \
    --latent "$work/lat_odd.safetensors" --context "$work/ctx_odd.safetensors"
expect_fail "must be (16, T, H, W)" --latent "$work/lat_c8.safetensors" --context "$work/ctx_odd.safetensors"
expect_fail "1 <= L <= 512" --latent "$work/lat_ok.safetensors" --context "$work/ctx_long.safetensors"
expect_fail "(L, 32)" --latent "$work/lat_ok.safetensors" --context "$work/ctx_td.safetensors"
expect_fail "latent" --latent "$work/missing.safetensors" --context "$work/ctx_odd.safetensors"
if "$pd" dit --model "$work/diff_f32" --latent "$work/lat_ok.safetensors" --context "$work/ctx_odd.safetensors" \
        --timestep abc --out "$work/bad.safetensors" 2>/dev/null; then
    echo "FAIL: accepted --timestep abc"; fails=$((fails + 1))
fi

if [ "$fails" -ne 0 ]; then
    echo "$fails failure(s)"; exit 1
fi
echo "all DiT reference checks passed"
