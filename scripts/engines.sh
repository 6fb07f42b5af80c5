#!/usr/bin/env bash
# Builds the adapters that let pv run other engines under its engine protocol (pv-engine/1,
# src/trace/engine.rs) into target/engines/bin/, where `pv trace --engine NAME` and contracts
# naming the engine find them.
#
#   scripts/engines.sh realizar     # realizar (crates.io aprender-serve 0.72.3, library
#                                   # `realizar`, no default features): engines/realizar,
#                                   # with its own pinned Cargo.lock; about 3-8 minutes
#   scripts/engines.sh realizar-0.8.6
#                                   # the same adapter over crates.io realizar 0.8.6 (no
#                                   # per-op tap: embeddings and logits only), into
#                                   # target/engines/bin/pv-engine-realizar-0.8.6; use it
#                                   # with PV_ENGINE_REALIZAR=that path, or as --engine-a
#                                   # PATH; about 6-8 minutes
#   scripts/engines.sh llama.cpp    # llama.cpp 0c1e57098, the copy scripts/fetch-models.sh
#                                   # builds from the llama-cpp-python 0.3.36 sdist (built
#                                   # here if absent: needs g++ and cmake): engines/llamacpp's
#                                   # C++ half (dump.cpp, against libllama) and its Rust half
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/engines/bin
[ $# -gt 0 ] || { echo "usage: scripts/engines.sh realizar|realizar-0.8.6|llama.cpp ..." >&2; exit 2; }
for engine in "$@"; do
  case "$engine" in
    realizar)
      cargo build --release --locked --quiet \
        --manifest-path engines/realizar/Cargo.toml --target-dir target/engines/build
      cp target/engines/build/release/pv-engine-realizar target/engines/bin/pv-engine-realizar.tmp
      mv target/engines/bin/pv-engine-realizar.tmp target/engines/bin/pv-engine-realizar
      echo "target/engines/bin/pv-engine-realizar: $(target/engines/bin/pv-engine-realizar --version)"
      ;;
    realizar-0.8.6)
      cargo build --release --locked --quiet --no-default-features --features realizar-0_8_6 \
        --manifest-path engines/realizar/Cargo.toml --target-dir target/engines/build
      bin=target/engines/bin/pv-engine-realizar-0.8.6
      cp target/engines/build/release/pv-engine-realizar "$bin.tmp"
      mv "$bin.tmp" "$bin"
      echo "$bin: $("$bin" --version) (realizar 0.8.6)"
      ;;
    llama.cpp)
      lc=models/llama.cpp-0c1e57098
      if [ ! -e "$lc/build/bin/libllama.so" ]; then
        [ -d "$lc" ] || scripts/fetch-models.sh formats
        cmake --build "$lc/build" -j"$(nproc)" --target llama >/dev/null
      fi
      lib=$(cd "$lc/build/bin" && pwd)
      g++ -O2 -std=c++17 -I"$lc/include" -I"$lc/ggml/include" engines/llamacpp/dump.cpp \
        -L"$lib" -lllama -lggml -lggml-base -Wl,-rpath,"$lib" \
        -o target/engines/bin/pv-llamacpp-dump.tmp
      mv target/engines/bin/pv-llamacpp-dump.tmp target/engines/bin/pv-llamacpp-dump
      cargo build --release --locked --quiet \
        --manifest-path engines/llamacpp/Cargo.toml --target-dir target/engines/build
      cp target/engines/build/release/pv-engine-llamacpp target/engines/bin/pv-engine-llamacpp.tmp
      mv target/engines/bin/pv-engine-llamacpp.tmp target/engines/bin/pv-engine-llamacpp
      echo "target/engines/bin/pv-engine-llamacpp: $(target/engines/bin/pv-engine-llamacpp --version)"
      ;;
    *)
      echo "scripts/engines.sh: unknown engine $engine (known: realizar, realizar-0.8.6, llama.cpp)" >&2
      exit 2
      ;;
  esac
done
