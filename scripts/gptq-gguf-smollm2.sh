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
# CALIB=kjv calibrates both methods on the King James Bible instead (the first 644,806 bytes of kjv.plain.txt,
# out of the evaluation text's domain) and writes docs/gptq-gguf-smollm2-kjv.{md,json}. DOC=docs/NAME writes the
# tables to docs/NAME.{md,json} instead (a run over some of the types).
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
tag=""
[ "${CALIB:-wiki}" = wiki ] || tag="-${CALIB}"

[ -f "$work/F32.gguf" ] || $qf quantize --allow-requantize "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/F32.gguf" --type F32 -q
calib="$work/calibration$tag.txt"
case "${CALIB:-wiki}" in
  wiki) [ -f "$calib" ] || tail -c 644806 "$wiki" > "$calib" ;;
  kjv) [ -f "$calib" ] || head -c 644806 fixtures/text/kjv.plain.txt > "$calib" ;;
  *) echo "CALIB=$CALIB: use wiki or kjv" >&2; exit 2 ;;
esac
touch "$log"   # one line per file built (the importance matrix too); files already in the cache are not timed again
timed() {
  local name=$1
  shift
  if [ ! -f "$work/$name.gguf" ]; then
    /usr/bin/time -f "$name: %e s wall, %M KiB peak RSS" -a -o "$log" "$qf" "$@" -q
    echo "$name done" >&2
  fi
}
imatrix="$work/imatrix$tag.gguf"
timed "imatrix$tag" eval imatrix "$work/F32.gguf" --text "$calib" --ctx 512 --chunks "$nsamples" -o "$imatrix" \
  -t "$threads"
models=("$work/F32.gguf")
for t in "${types[@]}"; do
  timed "$t" quantize "$work/F32.gguf" "$work/$t.gguf" --type "$t" --threads "$threads"
  timed "$t-imatrix$tag" quantize "$work/F32.gguf" "$work/$t-imatrix$tag.gguf" --type "$t" --imatrix "$imatrix" \
    --threads "$threads"
  timed "$t-gptq$tag" quantize "$work/F32.gguf" "$work/$t-gptq$tag.gguf" --type "$t" --method gptq --calib "$calib" \
    --nsamples "$nsamples" --seqlen 512 --threads "$threads"
  models+=("$work/$t.gguf" "$work/$t-imatrix$tag.gguf" "$work/$t-gptq$tag.gguf")
done

common=(--text "$wiki" --ctx 512 --chunks 16 -t "$threads" --cache "$work/compare-cache")
out="${DOC:-docs/gptq-gguf-smollm2$tag}"
$qf eval compare "${models[@]}" "${common[@]}" --markdown -q > "$out.md"
$qf eval compare "${models[@]}" "${common[@]}" --json -q > "$out.json"
sed -i "s#$work/##g" "$out.json" "$out.md"
cat "$out.md" "$log"
