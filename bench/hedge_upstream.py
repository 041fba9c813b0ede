#!/usr/bin/env python3
"""Upstream for bench/hedge.sh: HTTP/1.1 keep-alive, answers `ok` after 1 ms,
except a random SLOW_PCT % of requests that take SLOW_MS. GET /__count answers
the number of other requests seen (so the bench can compute extra upstream
requests). Usage: hedge_upstream.py PORT [SLOW_PCT] [SLOW_MS]"""

import asyncio
import random
import sys

PORT = int(sys.argv[1])
SLOW_PCT = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
SLOW_MS = float(sys.argv[3]) if len(sys.argv) > 3 else 200.0
seen = 0


async def serve(reader, writer):
    global seen
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /__count"):
                body = b"%d" % seen
            else:
                seen += 1
                slow = random.random() * 100 < SLOW_PCT
                await asyncio.sleep(SLOW_MS / 1000 if slow else 0.001)
                body = b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT, backlog=1024)
    async with server:
        await server.serve_forever()


asyncio.run(main())
