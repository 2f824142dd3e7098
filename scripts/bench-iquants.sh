#!/usr/bin/env bash
# Time quantforge against llama.cpp's llama-quantize on the IQ file types, same input, same importance matrix,
# same thread count, the two tools run in alternation (A B A B ...) so drift of a shared machine hits both.
# Reports wall time (min / median / max) and peak resident memory per tool and type, the ratio of the
# medians, and checks the two outputs are byte-identical.
#
# Usage: scripts/bench-iquants.sh
#   RUNS=3             timed runs per tool and type (after no warm-up: the input is read once before timing)
#   THREADS=2          --threads for quantforge, nthreads for llama-quantize
#   TYPES="IQ2_XXS IQ3_S IQ1_M"
#   QUANTFORGE=path    use this quantforge binary instead of building target/release/quantforge
#   CACHE=~/.cache/quantforge   where llama.cpp is built and the model is written (outside the repository)
#
# llama.cpp is built offline from the PyPI source distribution of llama-cpp-python 0.3.36 (vendor/llama.cpp)
# with cmake and ninja from PyPI in a private venv; nothing of it enters the repository.
# The input is the 1.1B-parameter TinyLlama-shaped synthetic F16 model of quant/benches/quantize.rs
# (QF_BENCH_WRITE_MODEL), with its synthetic importance matrix in llama.cpp's GGUF imatrix layout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${CACHE:-$HOME/.cache/quantforge}
runs=${RUNS:-3}
threads=${THREADS:-2}
types=${TYPES:-IQ2_XXS IQ3_S IQ1_M}
llama_dir=$cache/llama.cpp-build
work=$cache/iquants-bench

# 1. llama-quantize
. "$root/scripts/lib/llama-cpp.sh"
lq=$llama_dir/build/bin/llama-quantize
llama_cpp_build "$llama_dir" llama-quantize

# 2. quantforge
cd "$root"
if [ -z "${QUANTFORGE:-}" ]; then
  nice -n 5 cargo build --release -p quantforge-cli
  QUANTFORGE=$root/target/release/quantforge
fi

# 3. input model and importance matrix
model=$work/tinyllama-shape-f16.gguf
imatrix=$work/tinyllama-shape-imatrix.gguf
if [ ! -f "$model" ] || [ ! -f "$imatrix" ]; then
  QF_BENCH_WRITE_MODEL=$work nice -n 5 cargo bench -p quantforge-quant --bench quantize
fi
cat "$model" >/dev/null # into the page cache before the first timed run

# 4. time both tools in alternation
stat_line() { # name, then values: min median max
  local name=$1
  shift
  printf '%s\n' "$@" | sort -g | awk -v name="$name" '{ v[NR] = $1 }
    END { printf "%s %s %s %s\n", name, v[1], (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }'
}
times_file=$(mktemp)
trap 'rm -f "$times_file" "$work"/out-*.gguf' EXIT
echo "machine: $(nproc) cores, $(uname -r); threads $threads; runs $runs per tool and type"
echo "llama-quantize: $lq"
echo "quantforge:     $QUANTFORGE"
printf '%-8s %-15s %8s %8s %8s %10s\n' type tool "min s" "median s" "max s" "peak MiB"
for ty in $types; do
  lq_out=$work/out-llama-$ty.gguf
  qf_out=$work/out-quantforge-$ty.gguf
  lq_wall=() qf_wall=() lq_rss=0 qf_rss=0
  for ((r = 0; r < runs; r++)); do
    /usr/bin/time -f '%e %M' -o "$times_file" "$lq" --imatrix "$imatrix" "$model" "$lq_out" "$ty" "$threads" \
      >"$work/log-llama-$ty.txt" 2>&1 || { echo "llama-quantize failed, see $work/log-llama-$ty.txt"; exit 1; }
    read -r wall rss <"$times_file"
    lq_wall+=("$wall")
    lq_rss=$((rss > lq_rss ? rss : lq_rss))
    /usr/bin/time -f '%e %M' -o "$times_file" "$QUANTFORGE" quantize "$model" "$qf_out" -t "$ty" \
      --imatrix "$imatrix" --threads "$threads" >"$work/log-quantforge-$ty.txt" 2>&1 ||
      { echo "quantforge failed, see $work/log-quantforge-$ty.txt"; exit 1; }
    read -r wall rss <"$times_file"
    qf_wall+=("$wall")
    qf_rss=$((rss > qf_rss ? rss : qf_rss))
  done
  read -r _ lmin lmed lmax < <(stat_line llama "${lq_wall[@]}")
  read -r _ qmin qmed qmax < <(stat_line qf "${qf_wall[@]}")
  printf '%-8s %-15s %8s %8s %8s %10d\n' "$ty" llama-quantize "$lmin" "$lmed" "$lmax" $((lq_rss / 1024))
  printf '%-8s %-15s %8s %8s %8s %10d\n' "$ty" quantforge "$qmin" "$qmed" "$qmax" $((qf_rss / 1024))
  if cmp -s "$lq_out" "$qf_out"; then same="byte-identical"; else same="OUTPUTS DIFFER"; fi
  awk -v t="$ty" -v q="$qmed" -v l="$lmed" -v s="$same" \
    'BEGIN { printf "%-8s quantforge/llama-quantize median wall %.2f; outputs %s\n", t, q / l, s }'
  rm -f "$lq_out" "$qf_out"
done
