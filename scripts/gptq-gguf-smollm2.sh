#!/usr/bin/env bash
# Builds the GPTQ-into-GGUF comparison in docs/: SmolLM2-135M-Instruct (F32, dequantized from the pinned PyPI
# Q4_1 file) quantized to each GGUF type TYPE three ways, all with llama-quantize's mix and file sizes:
#   (a) the plain quantizer, no importance matrix;
#   (b) the quantizer with an importance matrix collected on the calibration text (llama.cpp's method);
#   (c) --method gptq, calibrated on the same text (its own statistics give the quantizer's weighting).
# Calibration text is the second half of wiki.test.raw (never the evaluated chunks): NSAMPLES windows of 512
# tokens for GPTQ, as many 512-token chunks of it for the importance matrix. Every model is measured by `eval compare` against
# the F32 model on WikiText-2 (16 chunks of 512). Writes docs/gptq-gguf-smollm2.{md,json} and timings to
# docs/gptq-gguf-smollm2.log.
#
#   scripts/gptq-gguf-smollm2.sh [THREADS] [NSAMPLES] [TYPE...]     (default: 2 32 Q4_K_M Q3_K_M)
#
# Models are cached under $QUANTFORGE_CACHE (default ~/.cache/quantforge): a second run only measures.
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${1:-2}"
nsamples="${2:-32}"
shift $(($# < 2 ? $# : 2))
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(Q4_K_M Q3_K_M)
cache=$(scripts/fetch-models.sh)
work="$cache/smollm2-gptq-gguf"
mkdir -p "$work"
cargo build --release --locked -p quantforge-cli >&2
qf=target/release/quantforge
wiki=fixtures/text/wiki.test.raw
log=docs/gptq-gguf-smollm2.log

[ -f "$work/F32.gguf" ] || $qf quantize --allow-requantize "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/F32.gguf" --type F32 -q
calib="$work/calibration.txt"
[ -f "$calib" ] || tail -c 644806 "$wiki" > "$calib"
[ -f "$work/imatrix.gguf" ] ||
  $qf eval imatrix "$work/F32.gguf" --text "$calib" --ctx 512 --chunks "$nsamples" -o "$work/imatrix.gguf" -q

touch "$log"   # one line per file built; files already in the cache are not timed again
timed() {
  local name=$1
  shift
  if [ ! -f "$work/$name.gguf" ]; then
    /usr/bin/time -f "$name: %e s wall, %M KiB peak RSS" -a -o "$log" "$qf" "$@" -q
    echo "$name done" >&2
  fi
}
models=("$work/F32.gguf")
for t in "${types[@]}"; do
  timed "$t" quantize "$work/F32.gguf" "$work/$t.gguf" --type "$t" --threads "$threads"
  timed "$t-imatrix" quantize "$work/F32.gguf" "$work/$t-imatrix.gguf" --type "$t" --imatrix "$work/imatrix.gguf" \
    --threads "$threads"
  timed "$t-gptq" quantize "$work/F32.gguf" "$work/$t-gptq.gguf" --type "$t" --method gptq --calib "$calib" \
    --nsamples "$nsamples" --seqlen 512 --threads "$threads"
  models+=("$work/$t.gguf" "$work/$t-imatrix.gguf" "$work/$t-gptq.gguf")
done

common=(--text "$wiki" --ctx 512 --chunks 16 -t "$threads" --cache "$work/compare-cache")
$qf eval compare "${models[@]}" "${common[@]}" --markdown -q > docs/gptq-gguf-smollm2.md
$qf eval compare "${models[@]}" "${common[@]}" --json -q > docs/gptq-gguf-smollm2.json
sed -i "s#$work/##g" docs/gptq-gguf-smollm2.json docs/gptq-gguf-smollm2.md
cat docs/gptq-gguf-smollm2.md "$log"
