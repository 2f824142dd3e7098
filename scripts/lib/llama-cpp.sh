# Shared by the benchmark scripts (sourced, not run): build llama.cpp's tools offline from the PyPI source
# distribution of llama-cpp-python (vendor/llama.cpp), with cmake and ninja from PyPI in a private venv, into a
# cache folder outside the repository. Nothing of it enters the repository; never used by the tests or CI.
#
#   llama_cpp_build DIR TARGET...   builds the missing TARGETs (llama-quantize, llama-perplexity, ...) into
#                                   DIR/build/bin; a binary already there is reused as it is.
#   median V...                     the median of the numbers given (mean of the middle two for an even count).

LLAMA_CPP_PYTHON_VERSION=0.3.36

llama_cpp_build() {
  local dir=$1 missing=() t
  shift
  for t in "$@"; do
    [ -x "$dir/build/bin/$t" ] || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$dir"
  if [ ! -x "$dir/venv/bin/cmake" ]; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q cmake ninja
  fi
  local src=$dir/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp
  if [ ! -d "$src" ]; then
    "$dir/venv/bin/pip" download -q --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dir"
    tar -xzf "$dir/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$dir"
  fi
  PATH=$dir/venv/bin:$PATH nice -n 10 cmake -S "$src" -B "$dir/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  PATH=$dir/venv/bin:$PATH nice -n 10 cmake --build "$dir/build" -j2 --target "${missing[@]}" >/dev/null
}

median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
