#!/usr/bin/env bash
# llama.cpp 0c1e57098 built for a CPU without AVX-512: the same source tree as
# ../shared/tools/llamacpp.sh builds (the llama-cpp-python 0.3.36 sdist, in
# $LLAMACPP_DIR, default ~/.cache/pv-llamacpp), configured with GGML_NATIVE off and AVX,
# AVX2, FMA, F16C and BMI2 on, AVX-512 and AVX-VNNI off, into build-avx2/. Prints the bin
# directory; scripts/bench.sh uses it with AVX2=1.
set -euo pipefail
DIR=${LLAMACPP_DIR:-$HOME/.cache/pv-llamacpp}
SRC=$DIR/llama.cpp
BIN=$SRC/build-avx2/bin
if [ -x "$BIN/llama-bench" ]; then echo "$BIN"; exit 0; fi
[ -f "$SRC/CMakeLists.txt" ] || ../shared/tools/llamacpp.sh build >/dev/null
command -v cmake >/dev/null || python3 -m pip install -q cmake
{ cmake -S "$SRC" -B "$SRC/build-avx2" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_BF16=OFF \
    -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF &&
  cmake --build "$SRC/build-avx2" -j"$(nproc)" --target llama-bench llama-completion
} >"$DIR/build-avx2.log" 2>&1 || { tail -n 20 "$DIR/build-avx2.log" >&2; echo "llama.cpp AVX2 build failed; log: $DIR/build-avx2.log" >&2; exit 1; }
echo "$BIN"
