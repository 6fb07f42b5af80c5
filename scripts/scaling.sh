#!/usr/bin/env bash
# How pv's cost grows with model size, on synthetic models at real shapes.
#
#   scripts/scaling.sh [SHAPE...]        (default: every shape of `pv synth --list`)
#
# For each shape: writes the model once into models/synth (pv synth; kept as a cache),
# measures the GGUF engine (pv bench, 2 threads, pp64/tg32, one repetition), converts it to
# f16 APR (pv convert), traces the APR file (pv trace), and discharges the shape's test of
# contracts/synthetic-scaling-v1.yaml (pv discharge SCALE-00N, APR file present), each with
# its wall time, peak RSS and peak anonymous memory (scripts/measure.py). The APR file is
# deleted after each shape (a 7B one is 15 GB). Prints a Markdown table; the raw figures go
# to target/scaling/SHAPE.json. Signing uses pv's default key, or PV_KEY if set.
set -euo pipefail
cd "$(dirname "$0")/.."
PV=${PV:-target/release/pv}
[ -x "$PV" ] || cargo build --release --quiet
DIR=models/synth
OUT=target/scaling
mkdir -p "$DIR" "$OUT"
KEY=()
[ -n "${PV_KEY:-}" ] && KEY=(--key "$PV_KEY")

# The test of each shape, in the contract's order.
declare -A TEST=([qwen2-0.5b]=SCALE-001 [llama-1b]=SCALE-002 [qwen2-1.5b]=SCALE-003
                 [llama-3b]=SCALE-004 [qwen2-7b]=SCALE-005 [llama-8b]=SCALE-006)
SHAPES=("$@")
[ ${#SHAPES[@]} -gt 0 ] || SHAPES=(qwen2-0.5b llama-1b qwen2-1.5b llama-3b qwen2-7b llama-8b)

m() { scripts/measure.py "$OUT/$1.json" -- "${@:2}"; }
field() { python3 -c "import json,sys; print(json.load(open('$OUT/$1.json'))['$2'])"; }

for s in "${SHAPES[@]}"; do
  gguf=$DIR/$s.gguf
  apr=$DIR/$s.f16.apr
  [ -f "$gguf" ] || m "$s.synth" "$PV" synth "$s" -o "$gguf"
  echo "== $s" >&2
  "$PV" bench "$gguf" -t 2 -r 1 --format json > "$OUT/$s.bench.json"
  rm -f "$apr"
  m "$s.convert" "$PV" convert "$gguf" -o "$apr" --dtype f16
  m "$s.trace" "$PV" trace "$apr" --prompt "What is 2+2?" > /dev/null
  m "$s.discharge" "$PV" discharge "${TEST[$s]}" --models "$DIR" "${KEY[@]}" > "$OUT/$s.discharge.txt"
  grep -E "verdict|status" "$OUT/$s.discharge.txt" >&2 || true
  python3 - "$s" "$gguf" "$OUT" <<'PY'
import json, os, sys
s, gguf, out = sys.argv[1:]
load = lambda n: json.load(open(f"{out}/{s}.{n}.json"))
b, c, t, d = load("bench"), load("convert"), load("trace"), load("discharge")
row = {"shape": s, "gguf_gb": os.path.getsize(gguf) / 1e9,
       "pp": b["pp_tokens_per_s"], "tg": b["tg_tokens_per_s"],
       "convert": c, "trace": t, "discharge": d}
json.dump(row, open(f"{out}/{s}.json", "w"))
PY
  rm -f "$apr"
done

python3 - "$OUT" "${SHAPES[@]}" <<'PY'
import json, sys
out, shapes = sys.argv[1], sys.argv[2:]
params = {"qwen2-0.5b": 0.49, "llama-1b": 1.24, "qwen2-1.5b": 1.54, "llama-3b": 3.21,
          "qwen2-7b": 7.62, "llama-8b": 8.03}
print("| shape | params | GGUF | pp64 tok/s | tg32 tok/s | convert f16: s / RSS / anon | "
      "APR trace: s / RSS / anon | discharge: s / RSS / anon | convert + discharge |")
print("|---|---:|---:|---:|---:|---|---|---|---:|")
gib = lambda m: f"{m / 1024:.1f} GiB" if m >= 1024 else f"{m} MiB"
for s in shapes:
    r = json.load(open(f"{out}/{s}.json"))
    cell = lambda k: f"{r[k]['seconds']:.1f} / {gib(r[k]['peak_rss_mib'])} / {gib(r[k]['peak_anon_mib'])}"
    total = r["convert"]["seconds"] + r["discharge"]["seconds"]
    print(f"| {s} | {params.get(s, 0):.2f}B | {r['gguf_gb']:.2f} GB | {r['pp']:.1f} | {r['tg']:.2f} | "
          f"{cell('convert')} | {cell('trace')} | {cell('discharge')} | {total:.0f} s |")
PY
