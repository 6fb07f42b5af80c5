#!/usr/bin/env python3
"""The `cases:` of a `reference_agreement` test, as YAML, from a figures file.

  scripts/reference-cases.py FIGURES.json [--top-k K] [--ids-only] [--indent N]

FIGURES.json is what scripts/llamacpp-figures.py writes (or a fixture of the same shape):
{"prompts": [{"name", "text", "tokens", "top20"?, "greedy"?, "greedy_text"?}]}. Each prompt
becomes a case with its ids, its first K (default 10) last-position logits and its greedy
continuation; with --ids-only, the ids alone (a tokenisation case). Strings are written as
JSON strings (valid YAML double-quoted scalars), logits as the exact decimal of the f64
that holds each f32, so the contract holds the reference's bits.
"""
import argparse
import json

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("figures")
ap.add_argument("--top-k", type=int, default=10)
ap.add_argument("--ids-only", action="store_true")
ap.add_argument("--indent", type=int, default=6)
a = ap.parse_args()
pad = " " * a.indent


def f32(v):
    """The f32 value exactly, as the f64 that holds it (no double rounding on reading)."""
    return repr(float(np.float32(v)))


for p in json.load(open(a.figures))["prompts"]:
    print(f"{pad}- name: {json.dumps(p['name'])}")
    print(f"{pad}  text: {json.dumps(p['text'], ensure_ascii=False)}")
    print(f"{pad}  tokens: {json.dumps(p['tokens'])}")
    if a.ids_only:
        continue
    if "top20" in p:
        top = ", ".join(f"[{t}, {f32(v)}]" for t, v in p["top20"][: a.top_k])
        print(f"{pad}  top: [{top}]")
    if "greedy" in p:
        print(f"{pad}  greedy: {json.dumps(p['greedy'])}")
        print(f"{pad}  greedy_text: {json.dumps(p['greedy_text'], ensure_ascii=False)}")
