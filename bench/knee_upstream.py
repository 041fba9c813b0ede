#!/usr/bin/env python3
"""Upstream for bench/overload.sh, bench/priority.sh and bench/outlier.sh:
HTTP/1.1 keep-alive, answers `ok` after a service time that depends on the
requests in flight: BASE_MS up to KNEE in flight, then BASE_MS * n / KNEE
(processor sharing: throughput stays at KNEE / BASE_MS, latency grows linearly
with the queue). The time is drawn when the request arrives; a request whose
client left still runs to its end (the server does not notice). ERR_PCT % of
requests are answered 503 instead (after the same time).
GET /__count answers the requests seen (other than these), /__inflight the
requests in flight, /__fail?PCT sets ERR_PCT. Usage: knee_upstream.py PORT [BASE_MS] [KNEE] [ERR_PCT]"""

import asyncio
import random
import sys

PORT = int(sys.argv[1])
BASE_MS = float(sys.argv[2]) if len(sys.argv) > 2 else 40.0
KNEE = int(sys.argv[3]) if len(sys.argv) > 3 else 16
err_pct = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
seen = 0
inflight = 0


def reply(writer, status, body):
    writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))


async def serve(reader, writer):
    global seen, inflight, err_pct
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /__count"):
                reply(writer, b"200 OK", b"%d" % seen)
            elif head.startswith(b"GET /__inflight"):
                reply(writer, b"200 OK", b"%d" % inflight)
            elif head.startswith(b"GET /__fail?"):
                err_pct = float(head.split(b"?", 1)[1].split(b" ", 1)[0])
                reply(writer, b"200 OK", b"ok")
            else:
                seen += 1
                inflight += 1
                try:
                    await asyncio.sleep(BASE_MS / 1000.0 * max(1.0, inflight / KNEE))
                finally:
                    inflight -= 1
                if random.random() * 100 < err_pct:
                    reply(writer, b"503 Service Unavailable", b"err")
                else:
                    reply(writer, b"200 OK", b"ok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
