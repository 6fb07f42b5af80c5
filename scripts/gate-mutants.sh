#!/usr/bin/env bash
# Measures which deliberate engine bugs the gate blocks: for each tests/mutants/NAME.patch,
# builds pv with it (scripts/build-mutant.sh), makes a scratch repository of this one at
# HEAD (the base), applies the patch as a pull request, and runs
#   pv gate --base base --discharge-stale --engine target/release/pv-mutant-NAME
# with this build of pv as the judge. Prints one row per mutant: blocked or open, and the
# re-checked verdict of each required test. Slow (one crate build per mutant); not a test.
#
#   scripts/gate-mutants.sh                  # every patch in tests/mutants/
#   scripts/gate-mutants.sh swap-gate-up     # some of them
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin pv
scripts/fetch-models.sh >/dev/null
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for p in tests/mutants/*.patch; do names+=("$(basename "$p" .patch)"); done
fi
printf '%-28s %-8s %s\n' mutant gate "re-checked verdicts (required tests)"
for name in "${names[@]}"; do
  engine=$(scripts/build-mutant.sh "$name")
  scratch=$(mktemp -d)
  git archive --format=tar HEAD | tar -x -C "$scratch"
  (
    cd "$scratch"
    git init -q -b main
    git -c user.name=m -c user.email=m@example.org add -A
    git -c user.name=m -c user.email=m@example.org commit -q -m base
    git tag base
    git apply "$OLDPWD/tests/mutants/$name.patch"
    git -c user.name=m -c user.email=m@example.org commit -q -am "pr: $name"
  )
  set +e
  "$PWD/target/release/pv" gate --root "$scratch" --base base --discharge-stale \
    --engine "$PWD/$engine" --models "$PWD/models" --format json > "$scratch/gate.json"
  code=$?
  set -e
  verdicts=$(python3 - "$scratch/gate.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
print(", ".join(f"{f['test_id']} {f['verdict'] or 'error'}" for f in g["fresh"]) or "nothing re-checked")
PY
)
  printf '%-28s %-8s %s\n' "$name" "$([ $code -eq 0 ] && echo open || echo BLOCKED)" "$verdicts"
  rm -rf "$scratch"
done
