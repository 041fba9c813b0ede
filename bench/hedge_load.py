#!/usr/bin/env python3
"""Closed-loop load for bench/hedge.sh: CONNS keep-alive connections, each
sending GET / back to back for SECONDS; prints `requests errors p50 p90 p99
p99.9` (ms) of every request's own latency (wrk's distribution corrects for
coordinated omission, which turns a 2 % tail into a p75 of 85 ms on a closed
loop; here each request is timed as the client saw it).
Usage: hedge_load.py PORT CONNS SECONDS"""

import http.client
import sys
import threading
import time

PORT, CONNS, SECONDS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
lat, errors, lock = [], [0], threading.Lock()


def run(deadline):
    mine, bad = [], 0
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            if r.status != 200:
                bad += 1
        except (OSError, http.client.HTTPException):
            bad += 1
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
            continue
        mine.append(time.monotonic() - t0)
    with lock:
        lat.extend(mine)
        errors[0] += bad


deadline = time.monotonic() + SECONDS
threads = [threading.Thread(target=run, args=(deadline,)) for _ in range(CONNS)]
for th in threads:
    th.start()
for th in threads:
    th.join()
lat.sort()


def q(p):
    return "%.2f" % (1000 * lat[min(len(lat) - 1, int(len(lat) * p))]) if lat else "-"


print(len(lat), errors[0], q(0.5), q(0.9), q(0.99), q(0.999))
