#!/usr/bin/env bash
# quantforge against llama.cpp, side by side on this machine: `quantize` against llama-quantize and
# `eval perplexity` against llama-perplexity, same inputs, same thread count, the two tools run in alternation
# (A B A B ...) so that drift of a shared machine hits both. For each row it prints the median, min and max
# wall time, the median CPU time (user + sys) and the peak resident memory of each tool (from /usr/bin/time),
# and the ratios quantforge / llama.cpp of the median wall times and of the peak memory. Quantize rows also
# say whether the two outputs are byte-identical.
#
# Usage: scripts/bench-vs-llama-cpp.sh
#   SECTIONS="quantize eval"   which tables to make ("calib" adds the calibration table, not run by default)
#   RUNS=3                     timed runs per tool and row (the inputs are read once before timing)
#   THREADS=2                  threads for both tools
#   TYPES="Q4_K_M Q6_K Q8_0"   quantize types
#   QWEN_F16=path              Qwen2.5-1.5B as an F16 GGUF: adds quantize rows for it (skipped when unset or
#                              missing: no pinned offline source for it is known to this script)
#   WIKI=path                  evaluation text (default: ../shared/data/text/wiki.test.raw beside the repository)
#   CHUNKS=16                  perplexity chunks of 512 tokens
#   CALIB_TYPES="Q4_K_M"       types of the calib section
#   NSAMPLES=32                calibration windows of 512 tokens (the second half of WIKI) in the calib section
#   QUANTFORGE=path            use this binary instead of building target/release/quantforge
#   CACHE=~/.cache/quantforge  where llama.cpp is built and models are written (outside the repository)
#
# llama.cpp is built offline from the PyPI source distribution of llama-cpp-python (scripts/lib/llama-cpp.sh);
# a build already in the cache is reused. The quantize input is the 1.1B-parameter TinyLlama-shaped synthetic
# F16 model of quant/benches/quantize.rs (QF_BENCH_WRITE_MODEL). The eval rows use SmolLM2-135M-Instruct from
# scripts/fetch-models.sh (pinned PyPI wheel and sha256), made F32 by llama-quantize --allow-requantize (as
# ../shared/data/README.md describes) and quantized from that F32 file by llama-quantize, so both tools
# evaluate the same files. The calib section times calibrated quantization of the same SmolLM2 F32 file:
# llama-imatrix (--no-ppl) against `eval imatrix`, llama-quantize --imatrix against `quantize --imatrix` (both
# with llama-imatrix's file, outputs compared), and llama.cpp's whole method (llama-imatrix, then llama-quantize
# --imatrix) against `quantize --method gptq` on the same windows. Benchmarks only: never run by the tests or CI.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${CACHE:-$HOME/.cache/quantforge}
sections=${SECTIONS:-quantize eval}
runs=${RUNS:-3}
threads=${THREADS:-2}
types=${TYPES:-Q4_K_M Q6_K Q8_0}
wiki=${WIKI:-$root/../shared/data/text/wiki.test.raw}
chunks=${CHUNKS:-16}
llama_dir=$cache/llama.cpp-build
work=$cache/bench-vs-llama-cpp
mkdir -p "$work"

# 1. llama.cpp's tools and our release binary
. "$root/scripts/lib/llama-cpp.sh"
llama_cpp_build "$llama_dir" llama-quantize llama-perplexity llama-imatrix
lq=$llama_dir/build/bin/llama-quantize
lp=$llama_dir/build/bin/llama-perplexity
li=$llama_dir/build/bin/llama-imatrix
cd "$root"
if [ -z "${QUANTFORGE:-}" ]; then
  nice -n 5 cargo build --release -p quantforge-cli
  QUANTFORGE=$root/target/release/quantforge
fi

times_file=$(mktemp)
trap 'rm -f "$times_file" "$work"/out-*.gguf' EXIT

# time_run LOG CMD...: run CMD once (output to LOG); sets wall, cpu (user + sys, s) and rss (KiB).
time_run() {
  local log=$1
  shift
  /usr/bin/time -f '%e %U %S %M' -o "$times_file" "$@" >"$log" 2>&1 || {
    echo "failed: $* (see $log)" >&2
    exit 1
  }
  read -r wall user sys rss <"$times_file"
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
}

# compare ROW 'LLAMA CMD' 'QUANTFORGE CMD': both in alternation, RUNS times each; prints two table rows and
# the ratios. Commands are split on spaces (no paths with spaces).
compare() {
  local row=$1 a=$2 b=$3 r
  local aw=() ac=() bw=() bc=() arss=0 brss=0
  for ((r = 0; r < runs; r++)); do
    # shellcheck disable=SC2086
    time_run "$work/log-llama.txt" $a
    aw+=("$wall") ac+=("$cpu") arss=$((rss > arss ? rss : arss))
    # shellcheck disable=SC2086
    time_run "$work/log-quantforge.txt" $b
    bw+=("$wall") bc+=("$cpu") brss=$((rss > brss ? rss : brss))
  done
  ratio_line "$row" "$(median "${aw[@]}")" "$(median "${bw[@]}")" "$arss" "$brss" "${aw[*]}" "${bw[*]}" \
    "${ac[*]}" "${bc[*]}"
}

# ratio_line ROW MEDIAN_A MEDIAN_B RSS_A RSS_B 'WALLS_A' 'WALLS_B' 'CPUS_A' 'CPUS_B': the two rows and the ratios.
ratio_line() {
  local row=$1 am=$2 bm=$3 arss=$4 brss=$5
  local awl bwl acl bcl
  read -r -a awl <<<"$6"
  read -r -a bwl <<<"$7"
  read -r -a acl <<<"$8"
  read -r -a bcl <<<"$9"
  printf '%-24s %-11s %8s %15s %8s %9d\n' "$row" llama.cpp "$am" \
    "$(printf '%s\n' "${awl[@]}" | sort -g | head -1)-$(printf '%s\n' "${awl[@]}" | sort -g | tail -1)" \
    "$(median "${acl[@]}")" $((arss / 1024))
  printf '%-24s %-11s %8s %15s %8s %9d\n' "$row" quantforge "$bm" \
    "$(printf '%s\n' "${bwl[@]}" | sort -g | head -1)-$(printf '%s\n' "${bwl[@]}" | sort -g | tail -1)" \
    "$(median "${bcl[@]}")" $((brss / 1024))
  awk -v r="$row" -v a="$am" -v b="$bm" -v ar="$arss" -v br="$brss" \
    'BEGIN { printf "%-24s %-11s %8.2fx %15s %8s %8.2fx\n", r, "ratio q/l", b / a, "", "", br / ar }'
}

header() {
  echo
  echo "$1"
  printf '%-24s %-11s %8s %15s %8s %9s\n' row tool "wall s" "min-max s" "cpu s" "peak MiB"
}

echo "machine: $(nproc) cores, $(uname -r), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "threads $threads; $runs runs per tool and row, alternating; medians"
echo "llama.cpp:  $llama_dir/build/bin (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist)"
echo "quantforge: $QUANTFORGE ($(git -C "$root" rev-parse --short HEAD))"

# smollm2_f32: sets f32 to SmolLM2-135M-Instruct as F32 (made by llama-quantize from the pinned Q4_1 file).
smollm2_f32() {
  local smol_cache
  smol_cache=$("$root/scripts/fetch-models.sh")
  f32=$work/smollm2-F32.gguf
  [ -f "$f32" ] || "$lq" --allow-requantize "$smol_cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$f32" F32 "$threads" \
    >"$work/log-make.txt" 2>&1
}

# 2. quantize
if [[ " $sections " == *" quantize "* ]]; then
  synth=$cache/iquants-bench/tinyllama-shape-f16.gguf
  if [ ! -f "$synth" ]; then
    QF_BENCH_WRITE_MODEL=$cache/iquants-bench nice -n 5 cargo bench -p quantforge-quant --bench quantize
  fi
  models=("synth-1.1B:$synth")
  if [ -n "${QWEN_F16:-}" ] && [ -f "$QWEN_F16" ]; then
    models+=("qwen2.5-1.5B:$QWEN_F16")
  else
    echo "quantize: Qwen2.5-1.5B rows skipped (set QWEN_F16 to an F16 GGUF of it)"
  fi
  header "quantize (llama-quantize IN OUT TYPE $threads vs quantforge quantize IN OUT -t TYPE --threads $threads)"
  for m in "${models[@]}"; do
    name=${m%%:*} model=${m#*:}
    cat "$model" >/dev/null # into the page cache before the first timed run
    for ty in $types; do
      compare "$name $ty" "$lq $model $work/out-llama.gguf $ty $threads" \
        "$QUANTFORGE quantize --quiet $model $work/out-quantforge.gguf -t $ty --threads $threads"
      if cmp -s "$work/out-llama.gguf" "$work/out-quantforge.gguf"; then
        echo "$name $ty: outputs byte-identical"
      else
        echo "$name $ty: OUTPUTS DIFFER"
      fi
    done
  done
fi

# 3. eval perplexity
if [[ " $sections " == *" eval "* ]]; then
  if [ ! -f "$wiki" ]; then
    echo "eval: skipped, no evaluation text at $wiki (set WIKI)"
  else
    smollm2_f32
    for ty in Q8_0 Q4_K_M; do
      [ -f "$work/smollm2-$ty.gguf" ] || "$lq" "$f32" "$work/smollm2-$ty.gguf" "$ty" "$threads" >"$work/log-make.txt" 2>&1
    done
    header "eval perplexity, $chunks x 512 tokens of $(basename "$wiki") (llama-perplexity -c 512 --chunks $chunks -t $threads vs quantforge eval perplexity)"
    for ty in F32 Q8_0 Q4_K_M; do
      model=$work/smollm2-$ty.gguf
      cat "$model" >/dev/null
      compare "smollm2-135M $ty" "$lp -m $model -f $wiki -c 512 --chunks $chunks -t $threads" \
        "$QUANTFORGE eval perplexity --quiet $model -f $wiki -c 512 --chunks $chunks --threads $threads"
      echo "smollm2-135M $ty: tokens/s ratio quantforge/llama.cpp = the inverse of the wall ratio (same tokens)"
    done
  fi
fi

# 4. calibrated quantization: llama.cpp's importance-matrix method against `quantize --method gptq`
if [[ " $sections " == *" calib "* ]]; then
  if [ ! -f "$wiki" ]; then
    echo "calib: skipped, no text at $wiki (set WIKI)"
  else
    smollm2_f32
    nsamples=${NSAMPLES:-32}
    calib=$work/calibration.txt
    tail -c 644806 "$wiki" >"$calib" # the second half: never the evaluated chunks
    imat_l=$work/imatrix-llama.gguf imat_q=$work/imatrix-quantforge.gguf
    # llama.cpp's whole method as one command for compare(): METHOD TYPE OUT
    method=$work/llama-imatrix-method.sh
    {
      echo '#!/bin/sh'
      echo 'set -e'
      echo "\"$li\" -m \"$f32\" -f \"$calib\" -c 512 --chunks $nsamples --no-ppl -t $threads -o \"$work/imatrix-method.gguf\""
      echo "\"$lq\" --imatrix \"$work/imatrix-method.gguf\" \"$f32\" \"\$2\" \"\$1\" $threads"
    } >"$method"
    chmod +x "$method"
    cat "$f32" >/dev/null
    header "calibration, SmolLM2-135M F32, $nsamples x 512 tokens of the second half of $(basename "$wiki")"
    compare "imatrix" "$li -m $f32 -f $calib -c 512 --chunks $nsamples --no-ppl -t $threads -o $imat_l" \
      "$QUANTFORGE eval imatrix --quiet $f32 -f $calib -c 512 --chunks $nsamples -t $threads -o $imat_q"
    for ty in ${CALIB_TYPES:-Q4_K_M}; do
      compare "$ty quantize --imatrix" "$lq --imatrix $imat_l $f32 $work/out-llama.gguf $ty $threads" \
        "$QUANTFORGE quantize --quiet $f32 $work/out-quantforge.gguf -t $ty --imatrix $imat_l --threads $threads"
      if cmp -s "$work/out-llama.gguf" "$work/out-quantforge.gguf"; then
        echo "$ty --imatrix: outputs byte-identical"
      else
        echo "$ty --imatrix: OUTPUTS DIFFER"
      fi
      compare "$ty method" "$method $ty $work/out-llama.gguf" \
        "$QUANTFORGE quantize --quiet $f32 $work/out-quantforge.gguf -t $ty --method gptq --calib $calib --nsamples $nsamples --seqlen 512 --threads $threads"
      echo "$ty method: llama.cpp = llama-imatrix then llama-quantize --imatrix; quantforge = quantize --method gptq"
    done
  fi
fi
