#!/usr/bin/env bash
# Builds llama-cpp-python (the version pyproject.toml pins) once per machine as a portable wheel:
# llama.cpp compiled for x86-64 with AVX2/FMA/F16C, not for this machine's CPU, so the same wheel
# serves the virtualenv and the CPU runtime image. The wheel is kept in a cache directory outside
# the repository, keyed by version and build flags; later calls only print its directory.
#
#   scripts/llama-wheel.sh [PYTHON]     prints the directory that holds the wheel
#
# PYKAITO_WHEEL_CACHE overrides the cache (default ~/.cache/pykaito/wheels).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-python3}"
version="$(sed -n 's/^ *"llama-cpp-python==\([^"]*\)".*/\1/p' "$root/pyproject.toml" | head -n 1)"
if [ -z "$version" ]; then
  echo "error: no llama-cpp-python==VERSION pin found in $root/pyproject.toml" >&2
  exit 1
fi
# GGML_NATIVE=OFF: no -march=native; llama.cpp then enables AVX, AVX2, FMA, F16C and BMI2 (x86-64-v3).
flags="-DGGML_NATIVE=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
flags="$flags -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF"
key="$(printf '%s' "$flags" | sha256sum | cut -c1-12)"
dir="${PYKAITO_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pykaito/wheels}/llama-cpp-python-$version-$(uname -m)-$key"

mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9  # one build at a time; a second caller waits and then finds the wheel
if ! ls "$dir"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version once (portable llama.cpp, minutes) into $dir" >&2
  mkdir -p "$dir"
  staging="$(mktemp -d "$dir.tmp.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  start=$SECONDS
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$python" -m pip wheel --quiet --no-deps --no-binary llama-cpp-python --no-cache-dir \
    --wheel-dir "$staging" "llama-cpp-python==$version" >&2
  printf '%s\n' "$flags" >"$staging/FLAGS"
  mv "$staging"/* "$dir"/
  echo "built $(basename "$(ls "$dir"/llama_cpp_python-*.whl)") in $((SECONDS - start)) s" >&2
fi
printf '%s\n' "$dir"
