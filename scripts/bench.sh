#!/usr/bin/env bash
# pv against llama.cpp on the same machine in the same run: `pv bench` and `llama-bench`
# interleaved, 2 threads, prompt processing of 64 tokens (pp64) and generation of 32 (tg32),
# for each model given (default: SmolLM2 in every format of models/formats/). Prints a
# Markdown table of tokens/s and the pv / llama.cpp ratios.
#
#   scripts/bench.sh [MODEL.gguf ...]
#
# llama-bench comes from LLAMACPP_BIN (default: the build of ../shared/tools/llamacpp.sh,
# ~/.cache/pv-llamacpp/llama.cpp/build/bin); ROUNDS (default 2) interleaved rounds of
# REPS (default 3) repetitions each, the best round kept for both tools; THREADS (default 2).
#
# AVX2=1 measures both as on a CPU without AVX-512: llama.cpp's AVX2 build
# (scripts/llamacpp-avx2.sh, built on first use) against pv with PV_CPU=avx2 and
# --flavor avx2 (the AVX2 build's orders).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
PV_FLAGS=()
if [ "${AVX2:-0}" = 1 ]; then
  BIN=${LLAMACPP_BIN:-$(scripts/llamacpp-avx2.sh)}
  export PV_CPU=avx2
  PV_FLAGS=(--flavor avx2)
else
  BIN=${LLAMACPP_BIN:-$HOME/.cache/pv-llamacpp/llama.cpp/build/bin}
fi
ROUNDS=${ROUNDS:-2}
REPS=${REPS:-3}
[ -x "$BIN/llama-bench" ] || { echo "no llama-bench in $BIN (set LLAMACPP_BIN)" >&2; exit 2; }
cargo build --release --quiet
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(models/SmolLM2-135M-Instruct.Q4_1.gguf)
  for t in Q8_0 Q5_0 Q5_1 Q4_0 Q4_K_M Q5_K_M Q6_K Q3_K_M Q2_K; do
    [ -f "models/formats/smollm2-$t.gguf" ] && models+=("models/formats/smollm2-$t.gguf")
  done
fi
echo "| model | pv pp64 | llama.cpp pp64 | pv tg32 | llama.cpp tg32 | pp64 ratio | tg32 ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for m in "${models[@]}"; do
  best_pv=(0 0); best_cpp=(0 0)
  for _ in $(seq "$ROUNDS"); do
    read -r pp tg < <(./target/release/pv bench "$m" --prompt-tokens 64 --gen-tokens 32 \
      --threads "$THREADS" -r "$REPS" "${PV_FLAGS[@]}" --format json | python3 -c \
      "import json,sys; d=json.load(sys.stdin); print(d['pp_tokens_per_s'], d['tg_tokens_per_s'])")
    read -r cpp ctg < <("$BIN/llama-bench" -m "$m" -t "$THREADS" -p 64 -n 32 -r "$REPS" -o json 2>/dev/null |
      python3 -c "import json,sys; r=json.load(sys.stdin); d={('pp' if x['n_prompt'] else 'tg'): x['avg_ts'] for x in r}; print(d['pp'], d['tg'])")
    best_pv=($(python3 -c "print(max($pp,${best_pv[0]}), max($tg,${best_pv[1]}))"))
    best_cpp=($(python3 -c "print(max($cpp,${best_cpp[0]}), max($ctg,${best_cpp[1]}))"))
  done
  python3 - "$(basename "$m" .gguf)" "${best_pv[@]}" "${best_cpp[@]}" <<'PY'
import sys
n, pp, tg, cpp, ctg = sys.argv[1], *map(float, sys.argv[2:6])
print(f"| {n} | {pp:.1f} | {cpp:.1f} | {tg:.1f} | {ctg:.1f} | {pp/cpp:.2f}x | {tg/ctg:.2f}x |")
PY
done
