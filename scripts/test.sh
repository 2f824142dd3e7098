#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test including the slow real-model ones
# (which need the pinned models fetched into the cache first). For a quick local loop use `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --include-ignored
