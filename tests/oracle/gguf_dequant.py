#!/usr/bin/env python3
"""Independent dequantization oracle: streams every tensor of a GGUF file, dequantized to
float32 by the `gguf` package from PyPI (gguf-py, llama.cpp's own Python reader).

Output on stdout, per tensor: one JSON line {"name", "type", "n"} then n little-endian f32.
A tensor whose type gguf-py cannot dequantize is announced with "n": -1 and no data.
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main(path: str) -> None:
    out = sys.stdout.buffer
    for t in GGUFReader(path).tensors:
        head = {"name": t.name, "type": t.tensor_type.name}
        try:
            values = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype="<f4").reshape(-1)
        except NotImplementedError:
            out.write((json.dumps({**head, "n": -1}) + "\n").encode())
            continue
        out.write((json.dumps({**head, "n": int(values.size)}) + "\n").encode())
        out.write(values.tobytes())
    out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
