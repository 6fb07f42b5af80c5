#!/usr/bin/env bash
# Builds the adapters that let pv run other engines under its engine protocol (pv-engine/1,
# src/trace/engine.rs) into target/engines/bin/, where `pv trace --engine NAME` and contracts
# naming the engine find them.
#
#   scripts/engines.sh realizar     # realizar (crates.io aprender-serve 0.72.3, library
#                                   # `realizar`, no default features): engines/realizar,
#                                   # with its own pinned Cargo.lock; about 3-8 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/engines/bin
[ $# -gt 0 ] || { echo "usage: scripts/engines.sh realizar" >&2; exit 2; }
for engine in "$@"; do
  case "$engine" in
    realizar)
      cargo build --release --locked --quiet \
        --manifest-path engines/realizar/Cargo.toml --target-dir target/engines/build
      cp target/engines/build/release/pv-engine-realizar target/engines/bin/pv-engine-realizar.tmp
      mv target/engines/bin/pv-engine-realizar.tmp target/engines/bin/pv-engine-realizar
      echo "target/engines/bin/pv-engine-realizar: $(target/engines/bin/pv-engine-realizar --version)"
      ;;
    *)
      echo "scripts/engines.sh: unknown engine $engine (known: realizar)" >&2
      exit 2
      ;;
  esac
done
