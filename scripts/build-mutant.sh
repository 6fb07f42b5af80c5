#!/usr/bin/env bash
# Builds pv with one deliberate bug, for the test that a pull request carrying that bug is
# blocked by the gate (the judge is the real pv; the mutant is the code under test):
# tests/mutants/NAME.patch applied to a copy of the sources, built as the binary
# target/release/pv-mutant-NAME. It shares target/ with the real build, so only pv itself is
# compiled again; the real target/release/pv is not touched.
#
#   scripts/build-mutant.sh swap-gate-up
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/build-mutant.sh NAME (a patch in tests/mutants/)}
case "$name" in *[!a-z0-9-]*) echo "error: mutant names are lower-case letters, digits and -" >&2; exit 2 ;; esac
patchfile=tests/mutants/$name.patch
[ -f "$patchfile" ] || { echo "error: no $patchfile" >&2; exit 2; }
src=target/mutants/$name
rm -rf "$src"
mkdir -p "$src"
cp -r Cargo.toml Cargo.lock src benches "$src/"
patch --quiet -p1 -d "$src" < "$patchfile"
# Its own package, library and binary name per mutant, so nothing of the real build (or of
# another mutant) is overwritten or reused: cargo keys a package's artifacts by its name.
python3 - "$src" "$name" <<'PY'
import sys, pathlib
src, name = pathlib.Path(sys.argv[1]), sys.argv[2]
toml = (src / "Cargo.toml").read_text()
toml = toml.replace('[package]\nname = "pv"', f'[package]\nname = "pv-mutant-{name}"', 1)
toml = toml.replace('[[bin]]\nname = "pv"', f'[[bin]]\nname = "pv-mutant-{name}"', 1)
(src / "Cargo.toml").write_text(toml)
main = src / "src/main.rs"
lib = "pv_mutant_" + name.replace("-", "_")
main.write_text(main.read_text().replace("pv::cli::main()", f"{lib}::cli::main()"))
PY
CARGO_TARGET_DIR="$PWD/target" cargo build --release --quiet \
  --manifest-path "$src/Cargo.toml" --bin "pv-mutant-$name"
echo "target/release/pv-mutant-$name"
