#!/usr/bin/env python3
"""llama.cpp's intermediate tensors next to pv's, element by element.

  PYTHONPATH=~/.cache/pv-llamacpp/llama_cpp_python-0.3.36 \
  LLAMA_CPP_LIB_PATH=~/.cache/pv-llamacpp/llama.cpp/build/bin \
  scripts/llamacpp-tensors.py dump MODEL PROMPT DIR

evaluates PROMPT (BOS added, special tokens parsed, only the last position's logits asked
for, as generation asks) through the llama.cpp that ../shared/tools/llamacpp.sh builds,
with an eval callback that saves every contiguous f32 tensor of the graph as
DIR/NAME#K.npy (K counts tensors of the same name: `Qcur-3#0` is the projection, `#2` the
rotated queries).

  pv trace MODEL --prompt PROMPT --dump PVDIR --slots embd,attn_norm,...
  scripts/llamacpp-tensors.py compare DIR PVDIR N_LAYER

then prints, slot by slot in execution order, the share of bit-identical values and the
largest difference. The first slot that is not 100% names the kernel that differs.
"""
import ctypes
import os
import sys

import numpy as np


class Tensor(ctypes.Structure):
    """`struct ggml_tensor` of the vendored ggml (GGML_MAX_DIMS 4, MAX_SRC 10, MAX_NAME 64)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def dump(model, prompt, out):
    import llama_cpp
    import llama_cpp.llama_cpp as lc

    os.makedirs(out, exist_ok=True)
    seen = {}

    @ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)
    def callback(ptr, ask, _user):
        if ask:
            return True
        t = Tensor.from_address(ptr)
        ne, nb = list(t.ne), list(t.nb)
        contiguous = nb[0] == 4 and nb[1] == 4 * ne[0] and nb[2] == nb[1] * ne[1] and nb[3] == nb[2] * ne[2]
        if t.type != 0 or not t.data or not contiguous:  # f32 only
            return True
        name = t.name.decode()
        n = ne[0] * ne[1] * ne[2] * ne[3]
        values = np.ctypeslib.as_array(ctypes.cast(t.data, ctypes.POINTER(ctypes.c_float)), shape=(n,))
        k = seen.get(name, 0)
        seen[name] = k + 1
        # rows = tokens: a [head_dim, heads, tokens] tensor becomes tokens x (heads * head_dim)
        np.save(os.path.join(out, f"{name}#{k}.npy"), values.copy().reshape(ne[2] * ne[3] if ne[2] > 1 else ne[1] * ne[2] * ne[3], -1))
        return True

    default_params = lc.llama_context_default_params

    def with_callback():
        p = default_params()
        p.cb_eval = callback
        return p

    lc.llama_context_default_params = with_callback
    llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_threads=2, verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.eval(tokens)
    print(f"{len(tokens)} tokens, {sum(seen.values())} tensors in {out}", file=sys.stderr)


# pv slot -> llama.cpp tensor (per layer L), in execution order
LAYER = [
    ("attn_norm", "attn_norm-{L}#0"),
    ("q", "Qcur-{L}#0"),
    ("k", "Kcur-{L}#0"),
    ("v", "Vcur-{L}#0"),
    ("q_norm", "Qcur_normed-{L}#0"),
    ("k_norm", "Kcur_normed-{L}#0"),
    ("q_rope", "Qcur-{L}#2"),
    ("k_rope", "Kcur-{L}#2"),
    ("attn_post_norm", "attn_post_norm-{L}#0"),
    ("ffn_inp", "ffn_inp-{L}#0"),
    ("ffn_inp", "sa_out-{L}#0"),
    ("ffn_norm", "ffn_norm-{L}#0"),
    ("ffn_gate", "ffn_gate-{L}#0"),
    ("ffn_up", "ffn_up-{L}#0"),
    ("ffn_inner", "ffn_swiglu-{L}#0"),
    ("ffn_inner", "ffn_geglu-{L}#0"),
    ("ffn_down", "ffn_out-{L}#0"),
    ("ffn_post_norm", "ffn_post_norm-{L}#0"),
    ("l_out", "l_out-{L}#0"),
]


def compare(theirs, ours, n_layer):
    pairs = [("embd", "inp_scaled#0"), ("embd", "inp_embd#0")]
    for layer in range(n_layer):
        pairs += [((slot, layer), name.format(L=layer)) for slot, name in LAYER]
    pairs += [("final_norm", "result_norm#0"), ("logits", "result_output#0")]
    for slot, name in pairs:
        ref = os.path.join(theirs, f"{name}.npy")
        mine = os.path.join(ours, f"{slot[0]}-{slot[1]}.npy" if isinstance(slot, tuple) else f"{slot}.npy")
        if not (os.path.exists(ref) and os.path.exists(mine)):
            continue
        a = np.load(ref).reshape(-1)
        b = np.load(mine).reshape(-1)
        b = b[-a.size:]  # llama.cpp keeps only the output rows after the last layer's attention
        same = np.mean(a == b) * 100
        where = slot if isinstance(slot, str) else f"{slot[0]}@{slot[1]}"
        print(f"{where:<22} {same:6.1f}% bit-identical  max |diff| {np.abs(a - b).max():.3e}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "dump":
        dump(*sys.argv[2:5])
    elif len(sys.argv) == 5 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
