#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test including the slow real-model ones
# (which need the pinned models fetched into the cache first). For a quick local loop use `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
cargo fmt --all -- --check
# One lint pass over every crate and target, the burn-cpu backend's code included.
cargo clippy --workspace --all-targets --locked --features quantforge-eval/burn-cpu -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked -- --include-ignored 2>&1 | tee "$log"
# The forward pass's matrix products on burn's CPU backend (cargo feature burn-cpu, off by default) against the
# default gemm path; its results are counted with the rest. (The burn-wgpu feature is not built here.)
cargo test -p quantforge-eval --features burn-cpu --locked --test burn_backend 2>&1 | tee -a "$log"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
