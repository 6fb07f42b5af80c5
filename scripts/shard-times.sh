#!/usr/bin/env bash
# Measures the gate's re-check wall time split over N shards, the shards run as parallel
# processes on this machine (as the job matrix runs them on separate runners, but here
# sharing this machine's cores), for an engine pull request that makes every required test
# stale (a comment added to src/model/forward.rs in a scratch copy of HEAD). Prints one row
# per N: the wall time, and the longest and shortest shard. Then the merge.
#
#   scripts/shard-times.sh            # N = 1 2 4
#   scripts/shard-times.sh 1 3        # other counts
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2 4)
cargo build --release --quiet --bin pv
scripts/fetch-models.sh gemma3 >/dev/null
pv=$here/target/release/pv
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q --no-local "$here" "$work/repo"
(
  cd "$work/repo"
  git tag base
  printf '\n// An honest change: a comment.\n' >> src/model/forward.rs
  git -c user.name=m -c user.email=m@example.org commit -q -am "pr: a comment"
)
threads=$(nproc)
printf '%-3s %-10s %-14s %-14s %s\n' N wall "longest shard" "shortest shard" "merge"
for n in "${counts[@]}"; do
  mkdir -p "$work/s$n"
  start=$(date +%s.%N)
  pids=()
  for k in $(seq 1 "$n"); do
    (
      s=$(date +%s.%N)
      "$pv" gate --root "$work/repo" --base base --discharge-stale --engine "$pv" \
        --models "$here/models" --shard "$k/$n" --scratch "$work/s$n/shard-$k" \
        --threads "$threads" --format json > "$work/s$n/$k.json" 2>/dev/null || true
      echo "$(date +%s.%N) - $s" | bc > "$work/s$n/$k.secs"
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  ms=$(date +%s.%N)
  "$pv" gate --root "$work/repo" --base base --merge "$work/s$n"/shard-* > "$work/merge$n.txt" 2>&1 \
    && merged=open || merged=BLOCKED
  mwall=$(echo "$(date +%s.%N) - $ms" | bc)
  longest=$(sort -g "$work/s$n"/*.secs | tail -1)
  shortest=$(sort -g "$work/s$n"/*.secs | head -1)
  printf '%-3s %-10.0f %-14.0f %-14.0f %s in %.1f s\n' "$n" "$wall" "$longest" "$shortest" "$merged" "$mwall"
done
