#!/usr/bin/env python3
"""slowclients PORT PID ROUNDS N: ROUNDS rounds of N slow HTTP clients against
the metrics endpoint at 127.0.0.1:PORT: each sends its request headers 1000
bytes at a time, 0.1 s apart, 30 kB in all (past the 16 kB a connection may
use), then all close. Prints one JSON line per round with the RSS of PID
(kB) before, at its peak while the clients are connected, and after they
closed (once PID's open descriptors are back to their count before)."""
import json
import os
import socket
import sys
import time

port, pid, rounds, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def rss():
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fds():
    return len(os.listdir("/proc/%s/fd" % pid))


fd0 = fds()
for r in range(rounds):
    before = rss()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for s in socks:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    peak = rss()
    for k in range(30):
        for s in socks:
            try:
                s.sendall(b"X-Slow-%d: " % k + b"a" * 1000 + b"\r\n")
            except OSError:
                pass  # refused (431) past the per-connection limit
        time.sleep(0.1)
        peak = max(peak, rss())
    for s in socks:
        s.close()
    for _ in range(100):  # until the server has closed its side too (at most 10 s)
        if fds() <= fd0:
            break
        time.sleep(0.1)
    time.sleep(0.3)
    print(json.dumps({"round": r, "before": before, "peak": peak, "after": rss(), "fds": fds(), "fds0": fd0}), flush=True)
