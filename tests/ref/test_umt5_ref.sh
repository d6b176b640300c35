#!/bin/bash
# umT5 encoder vs the independent NumPy reference (tests/ref/umt5_ref.py): `pipedit encode-text` on
# a tiny random model (f32 and bf16 weights), prompts of 1 to > 128 tokens (far relative-position
# buckets), relative L2 error < 1e-4.
source "$(dirname "$0")/../lib/script_env.sh" umt5_ref
pd_require_numpy

long=""
for i in $(seq 1 12); do
  long+="A golden retriever runs along the beach at sunset, waves crash, slow motion, cinematic light. "
done
prompts=(
  "a cat"
  ""
  "Close shot: a red fox jumps over the lazy dog in the snowy forest (slow motion), 4k!"
  "ｃａｔ ﬁre ① 猫 café"
  "$long"
)

fail=0
for dtype in f32 bf16; do
  model="$work/model-$dtype"
  "$PIPEDIT_BIN/pipedit" mkmodel --out "$model" --preset tiny --seed 7 --dtype "$dtype" >/dev/null
  for i in "${!prompts[@]}"; do
    out="$work/ctx-$dtype-$i.safetensors"
    "$PIPEDIT_BIN/pipedit" encode-text --model "$model" --prompt "${prompts[$i]}" --out "$out" --threads 2 >/dev/null
    printf '%s prompt %d: ' "$dtype" "$i"
    "$PYTHON" "$PIPEDIT_SRC/tests/ref/umt5_ref.py" --model "$model" --check "$out" --tol 1e-4 || fail=1
  done
done

# The long prompt must really exceed 128 tokens (the last exact-bucket range ends at 128).
n=$("$PIPEDIT_BIN/pipedit" tokenize --model "$work/model-f32" --prompt "$long" | tail -n 1 | cut -d' ' -f1)
echo "long prompt: $n tokens"
[ "$n" -gt 128 ] || { echo "long prompt has only $n tokens"; fail=1; }

# Bad inputs fail cleanly.
if "$PIPEDIT_BIN/pipedit" encode-text --model "$work/nonexistent" --prompt x --out "$work/x.safetensors" 2>"$work/err"; then
  echo "encode-text on a missing model succeeded"; fail=1
fi
grep -q "tokenizer" "$work/err" || { echo "unclear error: $(cat "$work/err")"; fail=1; }
exit $fail
