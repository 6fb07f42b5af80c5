#!/usr/bin/env python3
"""Reference figures from llama.cpp for a GGUF model and a list of prompts.

Drives the llama.cpp built by ../shared/tools/llamacpp.sh (libllama.so in its build/bin)
through llama-cpp-python's ctypes bindings from the same sdist, with that package's
defaults (flash attention off, f16 KV cache), n_ctx 512, 2 threads:

  PYTHONPATH=~/.cache/pv-llamacpp/llama_cpp_python-0.3.36 \
  LLAMA_CPP_LIB_PATH=~/.cache/pv-llamacpp/llama.cpp/build/bin \
  scripts/llamacpp-figures.py MODEL PROMPTS.json OUT_PREFIX [N_CTX]

N_CTX (default 512) is the context size; a prompt longer than 512 tokens needs a larger one,
and is evaluated as llama-cpp-python evaluates it, in calls of n_batch = 512 tokens (each
one micro-batch, n_ubatch 512), with the full-size sliding-window cache of llama.cpp's
default context parameters. PROMPTS.json is a list of {"name", "text"}. Writes OUT_PREFIX.json (token ids with BOS and
special tokens parsed, last-position top-20 logits, the greedy continuation of 32 tokens
stopping at an end-of-generation token, its text) and OUT_PREFIX_logits_pN.f32 (the full
last-position logits, little-endian f32).
"""
import json
import sys

import llama_cpp
import numpy as np

model, prompts_path, out = sys.argv[1:4]
n_ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 512
prompts = json.load(open(prompts_path))
llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_threads=2, verbose=False)
vocab = llama_cpp.llama_model_get_vocab(llm.model)
eos = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
N_GEN = 32


def last_logits():
    """The last position's logits as llama.cpp computed them (only that row is asked for)."""
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32).copy()


records = []
for i, p in enumerate(prompts):
    tokens = llm.tokenize(p["text"].encode(), add_bos=True, special=True)
    llm.reset()
    llm.eval(tokens)
    logits = last_logits()
    open(f"{out}_logits_p{i}.f32", "wb").write(logits.astype("<f4").tobytes())
    order = sorted(range(len(logits)), key=lambda t: (-logits[t], t))[:20]
    top20 = [[t, float(logits[t])] for t in order]
    greedy = []
    row = logits
    while len(greedy) < N_GEN:
        nxt = int(np.argmax(row))
        greedy.append(nxt)
        if nxt in eos:
            break
        llm.eval([nxt])
        row = last_logits()
    text = llm.detokenize(greedy).decode("utf-8", errors="replace")
    records.append(
        {
            "name": p["name"],
            "text": p["text"],
            "tokens": tokens,
            "top20": top20,
            "greedy": greedy,
            "greedy_text": text,
        }
    )
    print(p["name"], len(tokens), "tokens; greedy", len(greedy), file=sys.stderr)
json.dump(
    {
        "model": model.split("/")[-1],
        "eos": eos,
        "n_gen": N_GEN,
        "source": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} ctypes, "
        f"built by ../shared/tools/llamacpp.sh, CPU, n_ctx {n_ctx}, 2 threads",
        "prompts": records,
    },
    open(f"{out}.json", "w"),
    indent=1,
)
