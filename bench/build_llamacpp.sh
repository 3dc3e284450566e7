#!/usr/bin/env bash
# Build llama.cpp's llama-bench and llama-quantize for bench/llamacpp.py, from the llama.cpp
# sources that the llama-cpp-python sdist on PyPI vendors (bench-only: nothing in edge-agent
# links or imports it). About 10 minutes on 2 cores.
#
#   bash bench/build_llamacpp.sh [WORK_DIR]      # default bench/work/llamacpp
#
# Prints the llama.cpp source directory (with build/bin/ and convert_hf_to_gguf.py) last.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
WORK="${1:-$(dirname "$0")/work/llamacpp}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    python -m pip download "llama-cpp-python==$VERSION" --no-deps --no-binary :all: -d "$WORK" >&2
    tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
fi
if [ ! -x "$SRC/build/bin/llama-bench" ] || [ ! -x "$SRC/build/bin/llama-quantize" ]; then
    # GGML_NATIVE: the kernels this CPU has (AVX-512 where present), as a user building it here gets
    cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$SRC/build" -j"$(nproc)" --target llama-bench llama-quantize >&2
fi
echo "$SRC"
