"""Hostile HTTP/2 clients and upstreams (attack pass): stream lifecycles that
end early, flow control after them, and exact frames. Each test names the
behaviour it pins down; the gateway runs with tiny windows so a leak of a few
stream windows shows at once."""

import json
import socket
import time

import h2.errors
import h2.events
import h2.settings

from conftest import t, wait_until
from test_http2 import H2, status

def frame(typ, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big") + payload


# ---------------------------------------------------------------------------
# Slowloris over HTTP/2: a header block that never ends (HEADERS without
# END_HEADERS, then silence). HTTP/1.1 heads get 408 after
# client.header_timeout; here the stream counts as open, so neither the
# header timeout, the body timeout (its head is not complete) nor the idle
# timeout (a stream is open) ever fires: one small packet holds a connection
# slot (client.max_connections) forever.
# ---------------------------------------------------------------------------

SLOW_CONF = """\
listen:
  - {address: "127.0.0.1:$port", http2: true}
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: off
drain_timeout: $drain_timeout
client: {header_timeout: 500ms, body_timeout: 500ms}
http2: {idle_timeout: 1s}
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - {name: all, upstream: u}
"""


def test_header_block_that_never_ends_is_cut(gateway, upstream):
    up = upstream()
    gw = gateway(SLOW_CONF, full=True, up=up)
    s = socket.create_connection(gw.address, timeout=t(5))
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") +
              frame(1, 0, 1, b"\x82\x86\x84\x41\x04gw.t"))  # no END_HEADERS, no CONTINUATION
    t0 = time.monotonic()
    s.settimeout(0.2)
    closed = None
    while closed is None and time.monotonic() - t0 < t(4):
        try:
            if s.recv(65536) == b"":
                closed = time.monotonic() - t0
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = time.monotonic() - t0
    s.close()
    assert closed is not None, (
        "an unfinished header block kept the connection open %.1fs (header_timeout 500ms, "
        "idle_timeout 1s)" % (time.monotonic() - t0))
    assert up.requests == []


# ---------------------------------------------------------------------------
# Heap use-after-free (ASan: pool.c pool_put) after a reload: the upstream's
# whole response sits in the stream, held back by the client's tiny window,
# its upstream connection parked in the pool while the stream pins its
# buffer. A reload retires the runtime; the client then resets the TCP
# connection: closing the stream releases the runtime's last hold (freed with
# its pools), and only afterwards h2_on_free drops the pieces' pins, which
# puts the parked connection back into the freed pool.
# ---------------------------------------------------------------------------

def test_client_gone_after_a_reload_while_its_response_waits_on_the_window(gateway, upstream):
    import signal

    up = upstream()
    gw = gateway(SLOW_CONF, full=True, up=up)
    for i in range(3):
        c = H2(gw.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
        sid = c.request("/stream/20000")  # whole in one read of the upstream's buffer
        c.wait(lambda: c.responses[sid]["headers"] is not None)
        before = gw.log().count("config reloaded")
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: gw.log().count("config reloaded") > before, t(5))
        time.sleep(0.1)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.sock.close()  # RST
        time.sleep(t(0.2))
        assert gw.alive(), "the gateway died:\n" + gw.log_tail(30)
    c = H2(gw.port)
    assert status(c.response(c.request("/after"))) == 200
    c.close()
