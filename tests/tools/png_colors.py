#!/usr/bin/python3
"""png_colors.py PNG X0,Y0,X1,Y1 [...] -- RRGGBB [RRGGBB ...]: decode an 8-bit
RGB or RGBA, non-interlaced PNG (what chromium --screenshot writes) with zlib
and NumPy alone, and print, for each rectangle [X0, X1) x [Y0, Y1) and each
colour, how many of its pixels are within 40 of it (sum of channel
differences), as a JSON list of {"RRGGBB": count, ...}; then the image size."""
import json
import struct
import sys
import zlib

import numpy as np


def decode(path):
    b = open(path, "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    i, idat, hdr = 8, b"", None
    while i < len(b):
        n, kind = struct.unpack(">I4s", b[i:i + 8])
        data = b[i + 8:i + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        i += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, hdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    out = np.zeros((h, w * bpp), np.uint8)
    prev = np.zeros(w * bpp, np.int32)
    stride = w * bpp + 1
    for y in range(h):
        f, line = raw[y * stride], np.frombuffer(raw[y * stride + 1:(y + 1) * stride], np.uint8).astype(np.int32)
        cur = np.zeros(w * bpp, np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:  # 1 sub, 3 average, 4 Paeth: left-dependent, byte by byte
            for x in range(w * bpp):
                a = cur[x - bpp] if x >= bpp else 0
                c = prev[x - bpp] if x >= bpp else 0
                up = prev[x]
                if f == 1:
                    p = a
                elif f == 3:
                    p = (a + up) >> 1
                else:
                    pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2 * c)
                    p = a if pa <= pb and pa <= pc else (up if pb <= pc else c)
                cur[x] = (line[x] + p) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)[:, :, :3].astype(np.int32)


img = decode(sys.argv[1])
sep = sys.argv.index("--")
out = []
for rect in sys.argv[2:sep]:
    x0, y0, x1, y1 = (int(v) for v in rect.split(","))
    box = img[y0:y1, x0:x1]
    res = {}
    for hexc in sys.argv[sep + 1:]:
        rgb = np.array([int(hexc[k:k + 2], 16) for k in (0, 2, 4)])
        res[hexc] = int((np.abs(box - rgb).sum(axis=2) <= 40).sum())
    out.append(res)
print(json.dumps(out))
print(json.dumps({"width": img.shape[1], "height": img.shape[0]}))
