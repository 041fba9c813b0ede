"""Upgrade (WebSocket) tunnelling (DESIGN section 4)."""

import base64
import hashlib
import os
import struct
import threading

from conftest import RawClient, build_request, fetch, t
from upstream import WS_GUID, websocket

CONF = """\
upstreams:
  u:
    targets: [{address: "$a"}]
routes:
  - name: all
    upstream: u
"""

GREETING = b"\x81\x05hello"  # an unmasked server text frame "hello"


def ws_frame(payload, opcode=0x2):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def read_exact(c, n):
    while len(c.buf) < n:
        if not c._fill():
            raise AssertionError("tunnel closed after %d of %d bytes" % (len(c.buf), n))
    return c._take(n)


def upgrade(c, path="/ws"):
    key = base64.b64encode(os.urandom(16)).decode()
    c.send(build_request("GET", path, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                       ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
    r = c.read_response()
    return key, r


def start(gateway, upstream, handler=None):
    up = upstream(handler or (lambda conn, req: websocket(conn, req, GREETING)))
    return gateway(CONF, a=up), up


def test_upgrade_returns_101_with_accept(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        key, r = upgrade(c)
        assert r.status == 101, r
        assert (r.header("Upgrade") or "").lower() == "websocket"
        assert "upgrade" in [x.strip().lower() for x in (r.header("Connection") or "").split(",")]
        expect = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        assert r.header("Sec-WebSocket-Accept") == expect


def test_upgrade_headers_reach_upstream(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        key, r = upgrade(c)
        assert r.status == 101
    req = up.requests[0]
    assert (req.header("Upgrade") or "").lower() == "websocket"
    assert "upgrade" in req.connection_tokens()
    assert req.header("Sec-WebSocket-Key") == key
    assert req.header("Sec-WebSocket-Version") == "13"


def test_tunnel_carries_bytes_both_directions(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        key, r = upgrade(c)
        assert r.status == 101
        # the upstream sent its greeting in the same write as the 101 head
        assert read_exact(c, len(GREETING)) == GREETING
        frame = ws_frame(b"ping from client")
        c.send(frame)
        assert read_exact(c, len(frame)) == frame
        assert bytes(up.ws_received[:len(frame)]) == frame


def test_tunnel_carries_a_megabyte_each_way(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port, timeout=t(10)) as c:
        key, r = upgrade(c)
        assert r.status == 101
        assert read_exact(c, len(GREETING)) == GREETING
        payload = os.urandom(1 << 20)
        # write from another thread: the echo comes back while we are still sending
        th = threading.Thread(target=c.send, args=(payload,), daemon=True)
        th.start()
        got = read_exact(c, len(payload))
        th.join(t(10))
        assert got == payload


def test_client_close_reaches_upstream(gateway, upstream):
    gw, up = start(gateway, upstream)
    c = RawClient(gw.port)
    key, r = upgrade(c)
    assert r.status == 101
    assert up.ws_upgraded.wait(t(5))
    c.close()
    assert up.ws_closed.wait(t(5)), "the upstream side of the tunnel stayed open"


def test_upstream_close_reaches_client(gateway, upstream):
    def handler(conn, req):
        key = req.header("sec-websocket-key") or ""
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        conn.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode() + b"\x88\x00")
        conn.close()
        return False

    gw, up = start(gateway, upstream, handler)
    with RawClient(gw.port) as c:
        key, r = upgrade(c)
        assert r.status == 101
        assert c.wait_closed() == b"\x88\x00"


def test_upgrade_refused_by_upstream_is_plain_response(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        conn.respond(426, b"no upgrade for you")
    gw, up = start(gateway, upstream, handler)
    with RawClient(gw.port) as c:
        key, r = upgrade(c, "/plain")
        assert r.status == 426 and r.body == b"no upgrade for you"
    assert fetch(gw.port, "GET", "/x").status == 426


def test_bytes_sent_with_the_upgrade_request_are_delivered(gateway, upstream):
    # the client does not wait for 101 before its first frame (same write)
    gw, up = start(gateway, upstream, lambda conn, req: websocket(conn, req))
    frame = ws_frame(b"eager")
    with RawClient(gw.port) as c:
        c.send(build_request("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                            ("Sec-WebSocket-Version", "13")]) + frame)
        r = c.read_response()
        assert r.status == 101
        assert read_exact(c, len(frame)) == frame
