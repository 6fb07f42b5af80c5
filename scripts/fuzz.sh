#!/usr/bin/env bash
# The suite's structural fuzzer (tests/fuzz.rs) for a long run: N cases per target
# (default 2,000,000: twelve million in all), or a time budget with SECONDS=S.
#
#   scripts/fuzz.sh [N]            N cases per target (six targets)
#   SECONDS_BUDGET=3600 scripts/fuzz.sh   one hour, split across the targets
#   PV_FUZZ_SEED=42 scripts/fuzz.sh 100000
#
# Prints each target's case count, how many were accepted and refused, and the peak
# allocation of one case; exits non-zero on the first panic or over-allocation, naming the
# target and the seed that reproduces it (PV_FUZZ_SEED=that PV_FUZZ_CASES=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${SECONDS_BUDGET:-}" ]]; then
    export PV_FUZZ_SECONDS="$SECONDS_BUDGET"
else
    export PV_FUZZ_CASES="${1:-2000000}"
fi
exec cargo test --release --test fuzz -- --nocapture
