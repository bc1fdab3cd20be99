#!/usr/bin/python3
"""ckcraft IN OUT EDIT...: a crafted checkpoint, as an attacker with a text
editor would make it: values edited, both checksums recomputed (see
docs/CHECKPOINTS.md), so only clipd's checks of the contents stand between it
and the workers. EDIT is one of
  meta:KEY=VALUE            a __metadata__ string
  NAME[INDEX]=VALUE         one element of a tensor (flat index; VALUE a
                            Python number: 1e30, nan, inf, -1, 4294967295)
Run with /usr/bin/python3 (numpy)."""
import json
import struct
import sys

import numpy as np


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for x in data:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    buf = open(argv[1], "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    data = bytearray(buf[8 + n:])
    dt = {"F32": "<f4", "U64": "<u8", "I32": "<i4"}
    for edit in argv[3:]:
        lhs, value = edit.split("=", 1)
        if lhs.startswith("meta:"):
            header["__metadata__"][lhs[5:]] = value
            continue
        name, index = lhs[:-1].split("[")
        t = header[name]
        b, e = t["data_offsets"]
        arr = np.frombuffer(bytes(data[b:e]), dt[t["dtype"]]).copy()
        arr[int(index)] = float(value) if t["dtype"] == "F32" else int(value)
        data[b:e] = arr.tobytes()
    meta = header["__metadata__"]
    meta["checksum"] = "%016x" % fnv1a64(data)
    meta["header_checksum"] = "0" * 16
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    meta["header_checksum"] = "%016x" % fnv1a64(text)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    open(argv[2], "wb").write(struct.pack("<Q", len(text)) + text + bytes(data))


if __name__ == "__main__":
    main(sys.argv)
