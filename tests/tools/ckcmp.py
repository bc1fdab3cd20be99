#!/usr/bin/python3
"""ckcmp.py A B TOL: compare two clipd checkpoints tensor by tensor with
NumPy: the same names, dtypes and shapes; F32 tensors within TOL times
max(1, max |a|) of each other; integer tensors (streams, detector state)
equal. Prints the worst F32 tensor; exit 0 same, 1 different."""
import json
import struct
import sys

import numpy as np


def load(path):
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    dt = {"F32": "<f4", "U64": "<u8", "I32": "<i4"}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(buf[8 + n + b:8 + n + e], dt[t["dtype"]]).reshape(t["shape"])
    return out


a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
if sorted(a) != sorted(b):
    sys.exit(f"tensor names differ: {sorted(set(a) ^ set(b))}")
worst, worst_name = 0.0, ""
for name in sorted(a):
    x, y = a[name], b[name]
    if x.dtype != y.dtype or x.shape != y.shape:
        sys.exit(f"{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
    if x.dtype.kind == "f":
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            sys.exit(f"{name}: non-finite values")
        scale = max(1.0, float(np.abs(x).max()) if x.size else 1.0)
        d = float(np.abs(x.astype(np.float64) - y).max()) / scale if x.size else 0.0
        if d > worst:
            worst, worst_name = d, name
    elif not np.array_equal(x, y):
        sys.exit(f"{name}: differs")
print(f"ckcmp: {len(a)} tensors, worst relative difference {worst:.3g} ({worst_name or '-'}), tol {tol:g}")
sys.exit(0 if worst <= tol else 1)
