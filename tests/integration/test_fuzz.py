"""Garbage in: random bytes and random mutations of valid requests on many
connections (bounded count and time, fixed seed). The gateway must answer only
with well-formed HTTP (or close), stay alive and keep serving."""

import os
import random
import select
import socket
import time

from conftest import IncompleteResponse, RawClient, ResponseParseError, assert_serves, t
from upstream import default_handler, echo

CONF = """\
client:
  header_timeout: 1s
  body_timeout: 1s
  max_header_size: 8k
  max_body_size: 64k
upstreams:
  u:
    targets: [{address: "$a"}]
    timeouts: {read: 2s}
routes:
  - name: fuzz
    match: {paths: ["/"]}
    upstream: u
"""

SEED = int(os.environ.get("MOONGATE_FUZZ_SEED") or "20261128")
CONNECTIONS = 1000
BATCH = 50

TEMPLATES = [
    b"GET /fuzz/a?x=1 HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: f\r\nAccept: */*\r\n\r\n",
    b"POST /fuzz/b HTTP/1.1\r\nHost: gw.test\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /fuzz/c HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"GET /fuzz/d HTTP/1.0\r\nHost: gw.test\r\nConnection: keep-alive\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
    b"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /p1 HTTP/1.1\r\nHost: gw.test\r\n\r\nGET /p2 HTTP/1.1\r\nHost: gw.test\r\n\r\n",
]

TOKENS = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b":", b" ", b"\t", b"\x00", b"\xff", b",", b";",
          b"chunked", b"Content-Length: 99\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
          b"Connection: close\r\n", b"Expect: 100-continue\r\n", b"ffffffffffffffffff", b"-1", b"%00",
          b"HTTP/1.1", b"\r\n \r\n", b"Host: \r\n", b"A" * 9000]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2 and data:
            del data[pos:pos + rng.randint(1, 16)]
        elif op == 3:
            data[pos:pos] = rng.choice(TOKENS)
        else:
            end = min(len(data), pos + rng.randint(1, 32))
            data[pos:pos] = data[pos:end]
    return bytes(data)


def make_case(rng):
    kind = rng.randrange(10)
    if kind == 9:  # garbage behind a valid request on the same connection
        return rng.choice(TEMPLATES[:4]) + mutate(rng, rng.choice(TEMPLATES))
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
    if kind == 1:
        return rng.choice(TEMPLATES)  # valid traffic mixed in
    return mutate(rng, rng.choice(TEMPLATES))


def run_batch(port, cases, deadline_s):
    socks = {}
    for data in cases:
        s = socket.create_connection(("127.0.0.1", port), timeout=t(5))
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        s.setblocking(False)
        socks[s] = bytearray()
    replies = []
    open_socks = set(socks)
    deadline = time.monotonic() + deadline_s
    while open_socks and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_socks), [], [], 0.1)
        for s in ready:
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                if len(socks[s]) < 65536:
                    socks[s] += data
            else:
                open_socks.discard(s)
    for s, got in socks.items():
        replies.append(bytes(got))
        s.close()
    return replies


def test_garbage_and_mutations_do_not_hurt(gateway, upstream):
    up = upstream(echo)
    gw = gateway(CONF, a=up)
    rng = random.Random(SEED)
    started = time.monotonic()
    bad = []
    for b in range(CONNECTIONS // BATCH):
        cases = [make_case(rng) for _ in range(BATCH)]
        for data, reply in zip(cases, run_batch(gw.port, cases, t(2.5))):
            if reply and not reply.startswith(b"HTTP/1."):
                bad.append((data[:120], reply[:120]))
        assert gw.alive(), "gateway died during fuzz batch %d (seed %d):\n%s" % (b, SEED, gw.log_tail())
        if time.monotonic() - started > t(40):
            break
    assert not bad, "replies that are not HTTP (seed %d): %r" % (SEED, bad[:5])
    assert_serves(gw, "/after-fuzz")
    assert gw.alive()


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited body",
]

UPSTREAM_REQUESTS = 150


def test_garbage_from_upstream_does_not_hurt(gateway, upstream):
    """Mutated upstream responses: the client gets a parsable response or a
    closed connection, never bytes that do not parse as HTTP."""
    rng = random.Random(SEED + 1)

    def handler(conn, req):
        conn.read_body(req)
        if req.path == "/healthy":
            return default_handler(conn, req)
        data = rng.choice(RESPONSES)
        conn.send(mutate(rng, data) if rng.randrange(5) else data)
        conn.close()
        return False

    up = upstream(handler)
    # Breakers off and no retries: every garbage response must reach the parser,
    # not be cut short by an open circuit (tested on its own in test_resilience.py).
    gw = gateway(CONF.replace("timeouts: {read: 2s}",
                              "timeouts: {read: 300ms}\n    retry: {max_retries: 0}\n"
                              "    circuit_breaker: {consecutive_failures: 1000000, failure_rate: 0}"),
                 a=up,
                 allow_errors=[r"(?i)upstream"])
    bad = []
    started = time.monotonic()
    for i in range(UPSTREAM_REQUESTS):
        with RawClient(gw.port, timeout=t(5)) as c:
            c.request("GET", "/fuzz/%d" % i, [("Connection", "close")])
            try:
                c.read_response()
            except IncompleteResponse:
                pass  # the upstream broke off mid-response: a close is the right signal
            except ResponseParseError as e:
                bad.append((i, str(e)[:200]))
        assert gw.alive(), "gateway died on upstream response %d:\n%s" % (i, gw.log_tail())
        if time.monotonic() - started > t(40):
            break
    assert not bad, "unparsable responses relayed to the client (seed %d): %r" % (SEED + 1, bad[:5])
    assert_serves(gw, "/healthy")
