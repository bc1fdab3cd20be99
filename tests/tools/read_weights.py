#!/usr/bin/python3
"""read_weights.py FINAL CHECKPOINT V E H: read clipd's safetensors with
NumPy alone, as docs/CHECKPOINTS.md shows a user, and check the shapes and
that the final weights equal the last checkpoint's parameters."""
import json
import struct
import sys

import numpy as np


def load_weights(path):  # the function of docs/CHECKPOINTS.md
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    dt = {"F32": "<f4", "U64": "<u8", "I32": "<i4"}
    out = {}
    for name, t in header.items():
        if name.startswith("param."):
            b, e = t["data_offsets"]
            out[name[6:]] = np.frombuffer(buf[8 + n + b:8 + n + e], dt[t["dtype"]]).reshape(t["shape"])
    return out


final, ckpt = load_weights(sys.argv[1]), load_weights(sys.argv[2])
V, E, H = (int(x) for x in sys.argv[3:6])
assert final["embed.weight"].shape == (V, E), final["embed.weight"].shape
assert final["layers.0.wx"].shape == (E, 4 * H), final["layers.0.wx"].shape
assert final["head.weight"].shape == (H, V), final["head.weight"].shape
assert sorted(final) == sorted(ckpt), (sorted(final), sorted(ckpt))
for k in final:
    assert np.array_equal(final[k], ckpt[k]), k
    assert np.all(np.isfinite(final[k])), k
print("numpy read %d tensors, %d floats; final == last checkpoint" %
      (len(final), sum(a.size for a in final.values())))
