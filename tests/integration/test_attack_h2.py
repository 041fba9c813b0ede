"""Hostile HTTP/2 clients (attack pass): streams that end holding request
bytes (the connection window after them), resets the client provokes
(MadeYouReset), header blocks that never end, and a client that leaves after
a reload while its response waits on its window. The gateway runs with tiny
windows so a leak of a few stream windows shows at once."""

import json
import socket
import time

import h2.errors
import h2.events
import h2.settings

from conftest import H2_PREAMBLE, t, wait_until
from test_http2 import H2, status

CONF = H2_PREAMBLE + """\
plugin_path: ["$plugins"]
client: {body_timeout: 10s, max_body_size: 1m}
http2: {initial_window_size: 16k, max_concurrent_streams: $streams, idle_timeout: 10s,
        max_resets_per_second: 50}
upstreams:
  u: {targets: [{address: "$up"}], retry: {max_retries: 0}}
routes:
  - name: auth
    match: {paths: ["/auth"]}
    upstream: u
    plugins: [{name: key_auth, config: {keys: ["k"]}}]
  - name: nap
    match: {paths: ["/nap"]}
    upstream: u
    plugins: [{name: nap}]
  - name: all
    upstream: u
"""

NAP = """
local P = {}
function P.access(ctx, conf)
  gw.sleep(0.2)
end
return P
"""


def start(gateway, upstream, tmp_path, handler=None, streams=2, **kw):
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / "nap.lua").write_text(NAP)
    up = upstream(handler)
    gw = gateway(CONF, full=True, up=up, plugins=str(d), streams=streams, **kw)
    return gw, up


def room(c):
    """What the connection's window lets a new stream send now (at most 16000)."""
    c.pump(0.05)
    return min(16000, c.conn.outbound_flow_control_window)


def upload(c, path, body, timeout=None):
    """POSTs body on a new stream as flow control allows; returns the response.
    Fails when the gateway's windows stay shut."""
    sid = c.request(path, method="POST", body=None, end=False)
    c.responses[sid]["sent"] = 0
    deadline = time.monotonic() + (timeout or t(1))
    sent = 0
    while sent < len(body):
        r = c.responses[sid]
        if r["ended"] or r["reset"] is not None:
            break
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size,
                   len(body) - sent)
        if room > 0:
            c.conn.send_data(sid, body[sent:sent + room])
            c.flush()
            sent += room
            continue
        assert time.monotonic() < deadline, (
            "upload stuck after %d of %d bytes: the gateway never reopened its window "
            "(connection window %d, stream window %d)"
            % (sent, len(body), c.conn.outbound_flow_control_window,
               c.conn.local_flow_control_window(sid)))
        c.pump(0.05)
    if not (c.responses[sid]["ended"] or c.responses[sid]["reset"] is not None):
        c.conn.end_stream(sid)
        c.flush()
    return c.response(sid)


# ---------------------------------------------------------------------------
# the connection window after streams that ended with unread request bytes
# ---------------------------------------------------------------------------

def test_denied_uploads_give_the_connection_window_back(gateway, upstream, tmp_path):
    """A plugin refuses uploads (401 before any body is read); the DATA the
    stream had buffered must still count as consumed on the connection, or a
    few refused uploads shut the connection's window for every later one."""
    gw, up = start(gateway, upstream, tmp_path)
    c = H2(gw.port)
    for i in range(6):
        sid = c.request("/auth", method="POST", body=b"x" * room(c))
        r = c.response(sid)
        assert status(r) == 401, r
    r = upload(c, "/echo", b"y" * 40000)
    assert status(r) == 200 and json.loads(bytes(r["data"]))["body_length"] == 40000
    c.close()


def test_client_resets_give_the_connection_window_back(gateway, upstream, tmp_path):
    """The client resets streams whose body the gateway holds (a plugin
    waits): their bytes must be given back to the connection's window."""
    gw, up = start(gateway, upstream, tmp_path)
    c = H2(gw.port)
    for i in range(6):
        sid = c.request("/nap", method="POST", body=b"x" * room(c), end=False)
        c.pump(0.05)
        c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        c.pump(0.05)
    r = upload(c, "/echo", b"y" * 40000)
    assert status(r) == 200 and json.loads(bytes(r["data"]))["body_length"] == 40000
    c.close()


# ---------------------------------------------------------------------------
# "MadeYouReset" (CVE-2025-8671): resets the client makes the server send
# ---------------------------------------------------------------------------

def frame(typ, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big") + payload


def test_resets_the_client_provokes_count_like_its_own(gateway, upstream, tmp_path):
    """Each stream is opened (its request goes upstream), then made invalid
    (DATA past its content-length): nghttp2 resets it, the upstream request is
    abandoned, and the client never sent a RST_STREAM, so
    http2.max_resets_per_second (50 here) never fired: the rapid-reset
    amplification without the rapid reset."""
    gw, up = start(gateway, upstream, tmp_path, streams=100)
    c = H2(gw.port)
    sent = 0
    try:
        for i in range(300):
            sid = c.request("/slow/500?i=%d" % i, method="POST", headers=[("content-length", "1")],
                            end=False)
            c.pump(0.002)
            c.sock.sendall(frame(0, 1, sid, b"xx"))  # END_STREAM, one byte too many
            sent += 1
            if c.closed or c.goaway() is not None:
                break
    except OSError:
        pass
    deadline = time.monotonic() + t(2)
    while not c.closed and c.goaway() is None and time.monotonic() < deadline:
        c.pump(0.1)
    g = c.goaway()
    assert g is not None and g.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, (
        "%d streams reset by the gateway on the client's cue, %d requests sent upstream, "
        "no GOAWAY(ENHANCE_YOUR_CALM): %r" % (sent, len(up.requests), g))
    c.close()


# ---------------------------------------------------------------------------
# Slowloris over HTTP/2: a header block that never ends (HEADERS without
# END_HEADERS, then silence). HTTP/1.1 heads get 408 after
# client.header_timeout; here the stream counts as open, so neither the
# header timeout, the body timeout (its head is not complete) nor the idle
# timeout (a stream is open) ever fires: one small packet holds a connection
# slot (client.max_connections) forever.
# ---------------------------------------------------------------------------

SLOW_CONF = H2_PREAMBLE + """\
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
