#!/usr/bin/env bash
# Builds the SmolLM2-135M-Instruct comparison in docs/: F32 (dequantized from the pinned PyPI Q4_1 file),
# Q8_0, Q6_K, Q4_K_M, Q4_K_M with an 8-chunk importance matrix, and Q4_0, measured by `eval compare` on
# WikiText-2 (16 chunks of 512) and MMLU quick10 (0-shot, first 20 questions per subject). Writes
# docs/compare-smollm2.{md,json,svg} and, with Chromium installed (Debian package `chromium`), a screenshot
# of the SVG as rendered by the browser: docs/compare-smollm2.png.
#
#   scripts/compare-smollm2.sh [THREADS]
#
# Models and measurements are cached under $QUANTFORGE_CACHE (default ~/.cache/quantforge): a second run
# only renders.
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${1:-2}"
cache=$(scripts/fetch-models.sh)
work="$cache/smollm2-compare"
mkdir -p "$work"
cargo build --release --locked -p quantforge-cli >&2
qf=target/release/quantforge
wiki=fixtures/text/wiki.test.raw

[ -f "$work/F32.gguf" ] || $qf quantize --allow-requantize "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/F32.gguf" --type F32 -q
for t in Q8_0 Q6_K Q4_K_M Q4_0; do
  [ -f "$work/$t.gguf" ] || $qf quantize "$work/F32.gguf" "$work/$t.gguf" --type "$t" -q
done
[ -f "$work/imatrix.gguf" ] || $qf eval imatrix "$work/F32.gguf" --text "$wiki" --chunks 8 -o "$work/imatrix.gguf" -q
[ -f "$work/Q4_K_M-imatrix.gguf" ] || \
  $qf quantize "$work/F32.gguf" "$work/Q4_K_M-imatrix.gguf" --type Q4_K_M --imatrix "$work/imatrix.gguf" -q

models=("$work/F32.gguf" "$work/Q8_0.gguf" "$work/Q6_K.gguf" "$work/Q4_K_M.gguf" "$work/Q4_K_M-imatrix.gguf" "$work/Q4_0.gguf")
common=(--text "$wiki" --ctx 512 --chunks 16 --mmlu fixtures/mmlu --subset quick10 --shots 0 --limit 20 -t "$threads")
$qf eval compare "${models[@]}" "${common[@]}" --svg docs/compare-smollm2.svg --markdown > docs/compare-smollm2.md
$qf eval compare "${models[@]}" "${common[@]}" --json -q > docs/compare-smollm2.json
# Paths in the JSON are machine-specific; keep the file names.
sed -i "s#$work/##g" docs/compare-smollm2.json

if command -v chromium > /dev/null; then
  profile=$(mktemp -d)
  trap 'rm -rf "$profile"' EXIT
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --window-size=900,560 --screenshot="$PWD/docs/compare-smollm2.png" "file://$PWD/docs/compare-smollm2.svg" 2> /dev/null
  echo "wrote docs/compare-smollm2.png" >&2
else
  echo "chromium not found: no screenshot (apt-get install chromium)" >&2
fi
cat docs/compare-smollm2.md
