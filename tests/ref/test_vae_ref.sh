#!/usr/bin/env bash
# The Wan VAE decoder against the independent NumPy reference (tests/ref/vae_ref.py): tiny VAE in both
# name layouts (a model folder and the bare original-names file), two latent shapes (T > 1, h != w);
# streaming decode equals the whole-clip decode and yields 1 + 4 (T - 1) frames.
source "$(dirname "$0")/../lib/script_env.sh" vae_ref
ref="$PYTHON $PIPEDIT_SRC/tests/ref/vae_ref.py"

"$pd" mkmodel --out "$work/m_diff" --layout diffusers --seed 11 --dtype f32 >/dev/null
"$pd" mkmodel --out "$work/m_orig" --layout original --seed 12 --dtype bf16 >/dev/null
orig_file=$(ls "$work"/m_orig/vae/*.safetensors)

fail=0
i=0
for shape in 16,3,4,6 16,2,6,4; do
  i=$((i + 1))
  $ref latent --shape "$shape" --seed "$i" --out "$work/lat$i.safetensors"
  for model in "$work/m_diff" "$work/m_orig" "$orig_file"; do
    name="$(basename "$model") latent ($shape)"
    "$pd" decode --model "$model" --latent "$work/lat$i.safetensors" --out "$work/stream.safetensors" --threads 2 >/dev/null
    "$pd" decode --model "$model" --latent "$work/lat$i.safetensors" --out "$work/whole.safetensors" --threads 2 --whole >/dev/null
    echo "== $name: streaming vs reference"
    $ref check --vae "$model" --latent "$work/lat$i.safetensors" --video "$work/stream.safetensors" --tol 1e-4 || fail=1
    echo "== $name: whole clip vs reference"
    $ref check --vae "$model" --latent "$work/lat$i.safetensors" --video "$work/whole.safetensors" --tol 1e-4 || fail=1
    echo "== $name: streaming vs whole clip"
    $ref compare --a "$work/stream.safetensors" --b "$work/whole.safetensors" --tol 1e-5 || fail=1
  done
done
exit $fail
