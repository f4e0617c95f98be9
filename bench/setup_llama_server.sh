#!/usr/bin/env bash
# Build llama.cpp's llama-server from the same llama.cpp that llama-cpp-python 0.3.36 vendors,
# so the benchmark compares servers over one inference library.
#
#   bench/setup_llama_server.sh            # builds bench/.build/llama-server
#   PYTHON=.venv/bin/python JOBS=4 bench/setup_llama_server.sh
set -euo pipefail

VERSION="0.3.36"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BUILD="$HERE/.build"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
JOBS="${JOBS:-2}"
SRC="$BUILD/llama_cpp_python-$VERSION"

mkdir -p "$BUILD"
if [[ -x "$BUILD/llama-server" ]]; then
    echo "llama-server already built: $BUILD/llama-server"
    exit 0
fi

if [[ ! -d "$SRC" ]]; then
    "$PYTHON" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$BUILD"
    tar -xzf "$BUILD/llama_cpp_python-$VERSION.tar.gz" -C "$BUILD"
fi

cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD/cmake" \
    -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DBUILD_SHARED_LIBS=OFF
cmake --build "$BUILD/cmake" --config Release --target llama-server -j "$JOBS"
cp "$BUILD/cmake/bin/llama-server" "$BUILD/llama-server"
echo "built $BUILD/llama-server"
