#!/usr/bin/env bash
# The GPU caching benchmark (#16): a gemma-2-2b-shaped model with random weights (from its config
# alone, no download), bf16, batches of 32 x 256 tokens, hook layers.12, random TopK SAEs (k 32) at
# widths 16,384 and 131,072. Prints tokens/s for
#   (a) the forward pass to layers.12 alone,
#   (b) forward + encode with nothing copied to the host (the limit of any cache loop),
#   (c) `autointerp cache` end to end (spills, checkpoints, split files), with its peak host RSS,
# and (c)/(b) per width. Goal: (c) >= 80 % of (b), host RSS flat in the number of tokens.
#
# Build here, run on the GPU machine (its own torch 2.11.0+cu130 is used through LD_LIBRARY_PATH):
#   cargo build --release -p autointerp-cli --bin autointerp
#   cargo build --release -p autointerp-cache --example gpu_bench
#   scripts/gpu-bench.sh [--small] [OUT]       # --small: tiny shapes, to check it on a CPU
# Env: DEVICE (cuda), DTYPE (bf16), BIN (target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
small=()
if [[ "${1:-}" == "--small" ]]; then small=(--small); shift; fi
out=${1:-/tmp/autointerp-gpu-bench}
device=${DEVICE:-cuda}
dtype=${DTYPE:-bf16}
bin=${BIN:-target/release}
for b in "$bin/autointerp" "$bin/examples/gpu_bench"; do
  [[ -x $b ]] || { echo "missing $b: build it first (see the header of $0)" >&2; exit 1; }
done
if [[ -z ${LD_LIBRARY_PATH:-} ]] && torch=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then
  export LD_LIBRARY_PATH="$torch/lib"
fi
mkdir -p "$out"

echo "== (a), (b): device only"
"$bin/examples/gpu_bench" "$out" --device "$device" --dtype "$dtype" "${small[@]}" | tee "$out/ab.txt"

rows=$(python3 - "$out/tokens.safetensors" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    print(json.loads(f.read(n))["tokens"]["shape"][0])
PY
)
for sae in "$out"/sae-*; do
  width=${sae##*-}
  echo "== (c): autointerp cache, width $width"
  rm -rf "$out/cache-$width"
  /usr/bin/time -v "$bin/autointerp" cache --model "$out/model" --sparse-model "$sae" \
    --hookpoints layers.12 --dataset "$out/tokens.safetensors" --n-tokens $((rows * 256)) \
    --ctx-len 256 --batch-size 32 --device "$device" --dtype "$dtype" --out "$out/cache-$width" \
    >"$out/c-$width.txt" 2>"$out/c-$width.time"
  c=$(awk '$1 == "layers.12" { print $NF }' "$out/c-$width.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.2f GB", $2 / 1048576 }' "$out/c-$width.time")
  b=$(awk -v w="$width" '$0 ~ "width " w ":" { print $(NF-1) }' "$out/ab.txt")
  echo "(c) autointerp cache, width $width: $c tokens/s, peak host RSS $rss"
  awk -v b="$b" -v c="$c" -v w="$width" 'BEGIN { printf "(c)/(b), width %s: %.1f %%\n", w, 100 * c / b }'
done
