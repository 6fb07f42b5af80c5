#!/usr/bin/env bash
# The workflow file, tested: runs .github/workflows/pv-gate.yml with scripts/run-workflow.py
# (jobs in needs order, matrix expanded, a fresh clone per job, artifacts and caches passed
# through directories) on two pull requests against this repository's HEAD:
#
#   honest   a comment added to an engine file (src/model/forward.rs): every required test
#            goes stale and is re-checked over the shards; every job must pass (gate open)
#   bug      tests/mutants/swap-gate-up.patch (gate and up projections swapped): the gate
#            job must fail (blocked, an H2 verdict)
#
# Slow (a cold run builds pv three times and realizar once, fetches the models, and re-checks
# every required test: about 40 minutes on 2 cores; the bug run reuses the caches). Not part
# of scripts/test.sh; CI runs it from .github/workflows/pv-long.yml.
#
#   scripts/workflow-check.sh            # both
#   scripts/workflow-check.sh honest     # one
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
work=${PV_WORKFLOW_WORK:-$here/target/workflow-check}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(honest bug)
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'pyyaml==6.0.3'

repo=$work/repo
rm -rf "$repo"
mkdir -p "$work"
git clone -q --no-local "$here" "$repo"
git -C "$repo" checkout -q --detach "$(git rev-parse HEAD)"
git -C "$repo" branch -q -f base HEAD
g() { git -C "$repo" -c user.name=pr -c user.email=pr@example.org "$@"; }

status=0
for c in "${cases[@]}"; do
  g checkout -q --detach base
  case $c in
    honest)
      printf '\n// An honest change: a comment.\n' >> "$repo/src/model/forward.rs"
      want=0 ;;
    bug)
      g apply "$here/tests/mutants/swap-gate-up.patch"
      want=1 ;;
    *) echo "unknown case $c (honest, bug)" >&2; exit 2 ;;
  esac
  g commit -q -am "pr: $c"
  g branch -q -f "pr-$c" HEAD
  echo "== $c pull request: $(g log --oneline -1)"
  set +e
  python3 "$here/scripts/run-workflow.py" "$here/.github/workflows/pv-gate.yml" \
    --repo "$repo" --base base --head "pr-$c" --work "$work/$c" --cache "$work/cache" \
    | tee "$work/$c.log"
  code=${PIPESTATUS[0]}
  set -e
  if [ "$code" -ne "$want" ]; then
    echo "FAIL: the $c pull request's workflow exited $code, expected $want" >&2
    status=1
  elif [ "$c" = bug ] && ! grep -q '"gate": "failure"' "$work/$c.log"; then
    echo "FAIL: the bug pull request was not blocked by the gate job" >&2
    status=1
  else
    echo "ok: the $c pull request's workflow exited $code as expected"
  fi
done
exit "$status"
