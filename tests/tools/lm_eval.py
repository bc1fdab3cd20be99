#!/usr/bin/python3
"""lm_eval.py WEIGHTS TOKENS STREAMS T: an independent NumPy (float64) forward
pass of clipd's word LSTM over a token file (RUN_DIR/tokens-*.u32), in the
layout clipd --eval uses: STREAMS streams of L = (N-1)//STREAMS tokens, each
read from its start in floor(L/T) steps of T with the state carried; every
target counted once (<eos> and <unk> included). With the adaptive softmax
(tail.K.* tensors) the log-probability of every word of the vocabulary is
computed (head, then each tail cluster through its projection) and checked
to sum to 1 before the targets' are taken. Prints the mean loss in nats per
token and the count, as JSON."""
import json
import struct
import sys

import numpy as np


def load_weights(path):  # as docs/CHECKPOINTS.md shows a user
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    out = {}
    for name, t in header.items():
        if name.startswith("param."):
            b, e = t["data_offsets"]
            out[name[6:]] = np.frombuffer(buf[8 + n + b:8 + n + e], "<f4").reshape(t["shape"]).astype(np.float64)
    return out


w = load_weights(sys.argv[1])
tok = np.fromfile(sys.argv[2], "<u4").astype(np.int64)
S, T = int(sys.argv[3]), int(sys.argv[4])
L = (len(tok) - 1) // S
n = (L // T) * T
layers = len([k for k in w if k.endswith(".wx")])
starts = np.arange(S) * L
x = w["embed.weight"][tok[starts[:, None] + np.arange(n)[None, :]]]  # (S, n, E)
y = tok[starts[:, None] + np.arange(n)[None, :] + 1]                  # (S, n)
sig = lambda v: 1 / (1 + np.exp(-v))
for l in range(layers):
    wx, wh, b = w[f"layers.{l}.wx"], w[f"layers.{l}.wh"], w[f"layers.{l}.bias"]
    H = wh.shape[0]
    h, c, out = np.zeros((S, H)), np.zeros((S, H)), np.zeros((S, n, H))
    for t in range(n):
        g = x[:, t] @ wx + h @ wh + b
        i, f, gg, o = sig(g[:, :H]), sig(g[:, H:2 * H]), np.tanh(g[:, 2 * H:3 * H]), sig(g[:, 3 * H:])
        c = f * c + i * gg
        h = o * np.tanh(c)
        out[:, t] = h
    x = out
def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


logp = log_softmax(x @ w["head.weight"] + w["head.bias"])
K = len([k for k in w if k.startswith("tail.") and k.endswith(".proj")])
if K:  # adaptive: shortlist = head outputs - K, cluster k's words follow in id order
    head = logp
    parts = [head[:, :, :head.shape[2] - K]]
    for k in range(K):
        tail = log_softmax((x @ w[f"tail.{k}.proj"]) @ w[f"tail.{k}.weight"] + w[f"tail.{k}.bias"])
        parts.append(head[:, :, head.shape[2] - K + k:head.shape[2] - K + k + 1] + tail)
    logp = np.concatenate(parts, axis=2)
    total = np.exp(logp).sum(axis=2)
    assert np.abs(total - 1).max() < 1e-9, f"adaptive softmax not normalised: {np.abs(total - 1).max()}"
nll = -np.take_along_axis(logp, y[:, :, None], axis=2)
print(json.dumps({"loss": float(nll.mean()), "tokens": int(nll.size)}))
