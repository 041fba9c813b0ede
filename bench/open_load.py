#!/usr/bin/env python3
"""Open-loop load for bench/overload.sh, bench/priority.sh, bench/outlier.sh:
for each PATH:RATE stream, GET PATH is started RATE times a second on schedule
whatever the answers do (an idle keep-alive connection is reused, else a new
one is opened), each with a TIMEOUT (s) after which the client gives up and
closes that connection. Requests scheduled in the first WARMUP seconds are sent
but not counted. Latency runs from the scheduled start (generator lag included).
Prints one line per stream:
  path sent ok refused other timeout conn_err offered/s goodput/s p50_ms p99_ms
(ok = 200, refused = 503, goodput = ok answers per second of the measured part,
p50/p99 over the ok answers).
Usage: open_load.py PORT SECONDS TIMEOUT WARMUP PATH:RATE [PATH:RATE ...]"""

import asyncio
import sys
import time

PORT, SECONDS, TIMEOUT, WARMUP = (int(sys.argv[1]), float(sys.argv[2]),
                                  float(sys.argv[3]), float(sys.argv[4]))
STREAMS = [(a.rsplit(":", 1)[0], float(a.rsplit(":", 1)[1])) for a in sys.argv[5:]]
MAX_CONNS = 6000


class Stream:
    def __init__(self, path, rate):
        self.path, self.rate = path, rate
        self.req = b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path.encode()
        self.idle = []
        self.c = dict(sent=0, ok=0, refused=0, other=0, timeout=0, conn_err=0)
        self.lat = []


open_conns = [0]


async def exchange(s, conn):
    reader, writer = conn
    writer.write(s.req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    close = b"connection: close" in head.lower()
    return status, close


async def one(s, sched, counted):
    conn = s.idle.pop() if s.idle else None
    try:
        if conn is None:
            if open_conns[0] >= MAX_CONNS:
                raise ConnectionError("client connection cap")
            open_conns[0] += 1
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", PORT), TIMEOUT)
            except BaseException:
                open_conns[0] -= 1
                raise
        left = max(0.001, sched + TIMEOUT - time.monotonic())
        status, close = await asyncio.wait_for(exchange(s, conn), left)
    except asyncio.TimeoutError:
        if conn is not None:
            conn[1].transport.abort()
            open_conns[0] -= 1
        if counted:
            s.c["timeout"] += 1
        return
    except (OSError, asyncio.IncompleteReadError, ValueError, ConnectionError):
        if conn is not None:
            conn[1].transport.abort()
            open_conns[0] -= 1
        if counted:
            s.c["conn_err"] += 1
        return
    if close:
        conn[1].transport.abort()
        open_conns[0] -= 1
    else:
        s.idle.append(conn)
    if not counted:
        return
    if status == 200:
        s.c["ok"] += 1
        s.lat.append(time.monotonic() - sched)
    elif status == 503:
        s.c["refused"] += 1
    else:
        s.c["other"] += 1


async def main():
    streams = [Stream(p, r) for p, r in STREAMS]
    start = time.monotonic()
    end = start + SECONDS
    nth = [0] * len(streams)
    tasks = set()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for i, s in enumerate(streams):
            while start + nth[i] / s.rate <= now:
                sched = start + nth[i] / s.rate
                nth[i] += 1
                counted = sched - start >= WARMUP
                if counted:
                    s.c["sent"] += 1
                t = asyncio.ensure_future(one(s, sched, counted))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        await asyncio.sleep(0.001)
    if tasks:
        await asyncio.wait(list(tasks), timeout=TIMEOUT + 1)
    span = SECONDS - WARMUP
    for s in streams:
        s.lat.sort()

        def q(p):
            return "%.1f" % (1000 * s.lat[min(len(s.lat) - 1, int(len(s.lat) * p))]) if s.lat else "-"

        c = s.c
        print(s.path, c["sent"], c["ok"], c["refused"], c["other"], c["timeout"], c["conn_err"],
              "%.0f" % (c["sent"] / span), "%.0f" % (c["ok"] / span), q(0.5), q(0.99))
    for s in streams:
        for _, w in s.idle:
            w.transport.abort()


asyncio.run(main())
