"""HTTP/2 from clients (issue 16, DESIGN section 10.2): h2c with prior knowledge
and h2 by ALPN on listeners with `http2: true`, each stream an exchange.

Real clients: curl (--http2-prior-knowledge, --http2 over TLS), h2load
(nghttp2-client) for many streams, and python3-h2 over raw sockets for exact
frames and the hostile patterns (rapid reset, CONTINUATION flood,
connection-specific fields, a window that never opens). What the upstream
received is checked byte for byte (upstream.py keeps each raw head)."""

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest

from conftest import free_port, ms, samples, t, wait_until
from tls_fixture import Certs
from upstream import pattern_sha256

PREFACE_CONF = """\
listen:
  - {address: "127.0.0.1:$port", http2: true}
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: $access_log
drain_timeout: $drain_timeout
client: {body_timeout: $body_timeout, max_body_size: 64m}
http2: {initial_window_size: $window, idle_timeout: $idle, max_resets_per_second: 20}
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - name: all
    upstream: u
"""


def start(gateway, upstream, handler=None, window="16k", idle="10s", body_timeout="1s",
          access_log="off", extra="", **kw):
    up = upstream(handler)
    gw = gateway(PREFACE_CONF + extra, full=True, up=up, window=window, idle=idle,
                 body_timeout=body_timeout, access_log=access_log, **kw)
    return gw, up


def curl(args, timeout=20):
    p = subprocess.run(["curl", "-sS", "--max-time", str(int(t(timeout)))] + args,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=t(timeout + 10))
    return p.returncode, p.stdout, p.stderr.decode("latin-1")


# ---------------------------------------------------------------------------
# a raw HTTP/2 client (python3-h2), permissive on what it sends
# ---------------------------------------------------------------------------

class H2:
    def __init__(self, port, settings=None, sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=t(5))
        cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.responses = {}   # stream id -> {"headers": [...], "data": bytearray, ...}
        self.events = []
        self.closed = False
        self.inbuf = b""
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="gw.test"):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", "http"), (":authority", authority),
              (":path", path)] + list(headers)
        self.conn.send_headers(sid, hs, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.responses[sid] = {"headers": None, "data": bytearray(), "ended": False,
                               "reset": None}
        self.flush()
        return sid

    def pump(self, timeout=None):
        """Reads once; False when the connection ended."""
        self.sock.settimeout(timeout if timeout is not None else t(5))
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return True
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.inbuf += data
        while len(self.inbuf) >= 9:
            end = 9 + int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < end:
                break
            frame, self.inbuf = self.inbuf[:end], self.inbuf[end:]
            self._frame(frame)
        try:
            self.flush()
        except OSError:
            pass
        return True

    def _frame(self, frame):
        """One frame at a time: python3-h2 4.1 closes its state machine on any
        GOAWAY, so the streams a graceful one lets finish are fed past it."""
        if self.conn.state_machine.state == h2.connection.ConnectionState.CLOSED and \
                self.goaway() is not None and self.goaway().error_code == 0:
            self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        for ev in self.conn.receive_data(frame):
            self.events.append(ev)
            r = self.responses.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived) and r is not None:
                r["headers"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                if r is not None:
                    r["data"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and r is not None:
                r["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r["reset"] = ev.error_code

    def wait(self, pred, timeout=None):
        deadline = time.monotonic() + (timeout or t(10))
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("timed out; events: %r" % self.events[-10:])
            if not self.pump(0.2) and not pred():
                raise AssertionError("connection closed; events: %r" % self.events[-10:])

    def response(self, sid, timeout=None):
        r = self.responses[sid]
        self.wait(lambda: r["ended"] or r["reset"] is not None, timeout)
        return r

    def goaway(self):
        for ev in self.events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                return ev
        return None

    def close(self):
        self.sock.close()


def status(r):
    return int(dict(r["headers"])[b":status"]) if r["headers"] else None


def header(r, name):
    return dict(r["headers"]).get(name.encode())


def resets(gw, reason):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=t(5)) as m:
        return samples(m.read().decode())[("moongate_http2_resets_total",
                                          frozenset({("reason", reason)}))]


def assert_serves(gw, path="/after"):
    c = H2(gw.port)
    r = c.response(c.request(path))
    c.close()
    assert status(r) == 200 and json.loads(bytes(r["data"]))["path"] == path


# ---------------------------------------------------------------------------
# selection: prior knowledge, ALPN, HTTP/1.1 beside them
# ---------------------------------------------------------------------------

def test_h2c_prior_knowledge_with_curl_and_http1_on_the_same_listener(gateway, upstream):
    gw, up = start(gateway, upstream)
    rc, out, err = curl(["--http2-prior-knowledge", "-i", "http://127.0.0.1:%d/h2?x=1" % gw.port])
    assert rc == 0, err
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), head
    assert b"\r\nvia: 1.1 moongate" in head and b"\r\nx-request-id: " in head
    doc = json.loads(body)
    assert doc["path"] == "/h2?x=1" and doc["version"] == "HTTP/1.1"
    rc, out, err = curl(["-i", "http://127.0.0.1:%d/h1" % gw.port])
    assert rc == 0 and out.startswith(b"HTTP/1.1 200"), (out, err)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs.make(str(tmp_path_factory.mktemp("certs")))


TLS_CONF = """\
listen:
  - address: "127.0.0.1:$port"
    http2: true
    tls: {certificates: [{cert: "$crt", key: "$key"}]}
  - address: "127.0.0.1:$h1_port"
    tls: {certificates: [{cert: "$crt", key: "$key"}]}
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: $access_log
drain_timeout: $drain_timeout
client: {max_body_size: 64m}
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - {name: all, upstream: u}
"""


def test_h2_over_tls_by_alpn_only_where_enabled(gateway, upstream, certs):
    up = upstream()
    h1_port = free_port()
    gw = gateway(TLS_CONF, full=True, up=up, crt=certs.crt("default"), key=certs.key("default"),
                 h1_port=h1_port)
    base = ["--cacert", certs.ca, "--resolve", "api.test:%d:127.0.0.1" % gw.port,
            "--resolve", "api.test:%d:127.0.0.1" % h1_port, "-o", "/dev/null",
            "-w", "%{http_version} %{http_code}"]
    rc, out, err = curl(base + ["--http2", "https://api.test:%d/tls" % gw.port])
    assert rc == 0 and out == b"2 200", (out, err)
    rc, out, err = curl(base + ["--http2", "https://api.test:%d/tls" % h1_port])
    assert rc == 0 and out == b"1.1 200", (out, err)
    rc, out, err = curl(base + ["--http1.1", "https://api.test:%d/tls" % gw.port])
    assert rc == 0 and out == b"1.1 200", (out, err)
    assert all(r.header("x-forwarded-proto") == "https" for r in up.requests)
    # the raw client over TLS: h2 chosen by ALPN
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), timeout=t(5)),
                        server_hostname="api.test")
    assert s.selected_alpn_protocol() == "h2"
    c = H2(gw.port, sock=s)
    r = c.response(c.request("/raw", authority="api.test"))
    assert status(r) == 200 and json.loads(bytes(r["data"]))["path"] == "/raw"
    c.close()
    # bodies both ways through TLS, and many streams
    n = 4 << 20
    rc, out, err = curl(["--http2", "--cacert", certs.ca, "--resolve",
                         "api.test:%d:127.0.0.1" % gw.port,
                         "https://api.test:%d/stream/%d" % (gw.port, n)])
    assert rc == 0 and hashlib.sha256(out).hexdigest() == pattern_sha256(n), err
    body = os.urandom(3 << 20)
    p = subprocess.run(["curl", "-sS", "--http2", "--cacert", certs.ca, "--resolve",
                        "api.test:%d:127.0.0.1" % gw.port, "--data-binary", "@-",
                        "https://api.test:%d/upload" % gw.port], input=body,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=t(30))
    assert p.returncode == 0, p.stderr
    assert up.requests[-1].body_sha256 == hashlib.sha256(body).hexdigest()
    p = subprocess.run(["h2load", "-n", "300", "-c", "3", "-m", "20",
                        "https://127.0.0.1:%d/many" % gw.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=t(60))
    out = p.stdout.decode()
    assert "300 succeeded" in out and "Application protocol: h2" in out, out


# ---------------------------------------------------------------------------
# many streams, translation, bodies
# ---------------------------------------------------------------------------

def test_many_concurrent_streams_each_get_their_response(gateway, upstream):
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    sids = {c.request("/slow/%d?i=%d" % (20 * (i % 5), i)): i for i in range(60)}
    for sid, i in sids.items():
        r = c.response(sid)
        assert status(r) == 200
        assert json.loads(bytes(r["data"]))["path"] == "/slow/%d?i=%d" % (20 * (i % 5), i)
    c.close()
    p = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "25",
                        "http://127.0.0.1:%d/load" % gw.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=t(60))
    out = p.stdout.decode()
    assert "400 succeeded" in out and "400 2xx" in out, out


def test_request_translation_exact_upstream_bytes(gateway, upstream):
    """Pseudo-headers become the request line and Host (from :authority);
    cookie crumbs are joined with "; "; the framing is the gateway's own."""
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    sid = c.request("/t/a?b=1", method="POST",
                    headers=[("cookie", "a=1"), ("x-one", "1"), ("cookie", "b=2"),
                             ("te", "trailers"), ("content-length", "5")],
                    body=b"hello", authority="api.example:8443")
    r = c.response(sid)
    assert status(r) == 200, r
    raw = up.requests[-1].raw_head
    lines = raw.split(b"\r\n")
    assert lines[0] == b"POST /t/a?b=1 HTTP/1.1"
    assert b"cookie: a=1; b=2" in lines and b"x-one: 1" in lines
    assert b"Host: api.example:8443" in lines
    assert not any(l.startswith(b":") or l.lower().startswith(b"te:") for l in lines)
    assert b"Content-Length: 5" in lines and up.requests[-1].body == b"hello"
    # a body without content-length goes chunked
    sid = c.request("/t/chunked", method="PUT", body=b"x" * 1000)
    assert status(c.response(sid)) == 200
    assert up.requests[-1].chunked and up.requests[-1].body == b"x" * 1000
    c.close()


@pytest.mark.parametrize("field", [("connection", "keep-alive"), ("transfer-encoding", "chunked"),
                                   ("te", "gzip"), ("upgrade", "websocket"),
                                   ("keep-alive", "timeout=5")])
def test_connection_specific_field_is_a_stream_error(gateway, upstream, field):
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    r = c.response(c.request("/bad", headers=[field]))
    assert r["reset"] == 1, r  # PROTOCOL_ERROR
    # the connection goes on; the upstream never heard of the bad one
    r = c.response(c.request("/good"))
    assert status(r) == 200
    assert [q.path for q in up.requests] == ["/good"]
    c.close()


def test_pseudo_header_errors(gateway, upstream):
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                              (":path", "/x"), (":path", "/y")], end_stream=True)
    c.responses[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
    c.flush()
    assert c.response(sid)["reset"] == 1
    r = c.response(c.request("/../etc/passwd"))
    assert status(r) == 400
    assert up.requests == []
    c.close()


def test_head_204_304(gateway, upstream):
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    r = c.response(c.request("/stream/1000", method="HEAD"))
    assert status(r) == 200 and header(r, "content-length") == b"1000" and r["data"] == b""
    r = c.response(c.request("/status/204"))
    assert status(r) == 204 and r["data"] == b"" and header(r, "content-length") is None
    r = c.response(c.request("/status/304"))
    assert status(r) == 304 and r["data"] == b""
    c.close()


def test_large_response_streamed_with_small_windows(gateway, upstream):
    gw, up = start(gateway, upstream)
    n = 8 << 20
    c = H2(gw.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384})
    r = c.response(c.request("/stream/%d" % n), timeout=t(30))
    assert status(r) == 200 and len(r["data"]) == n
    assert hashlib.sha256(bytes(r["data"])).hexdigest() == pattern_sha256(n)
    c.close()
    rc, out, err = curl(["--http2-prior-knowledge", "http://127.0.0.1:%d/stream/%d?chunked=1"
                         % (gw.port, n)])
    assert rc == 0 and hashlib.sha256(out).hexdigest() == pattern_sha256(n), err


def test_upload_flow_control_is_the_backpressure(gateway, upstream):
    """The upstream stops reading: the client's window closes instead of the
    gateway buffering the body; once it reads, every byte arrives intact."""
    import threading
    go = threading.Event()

    def handler(conn, req):
        go.wait(t(10))
        conn.read_body(req)
        conn.respond(200, b"got %d" % req.body_length)

    gw, up = start(gateway, upstream, handler=handler)
    n = 16 << 20
    body = os.urandom(n)
    c = H2(gw.port)
    sid = c.request("/up", method="POST", headers=[("content-length", str(n))], end=False)
    sent = 0
    deadline = time.monotonic() + t(1.5)
    while time.monotonic() < deadline:
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if room > 0 and sent < n:
            k = min(room, n - sent)
            c.conn.send_data(sid, body[sent:sent + k])
            sent += k
            c.flush()
        else:
            c.pump(0.05)
    stalled_at = sent
    assert stalled_at < n // 2, "the window kept opening while the upstream read nothing"
    go.set()
    deadline = time.monotonic() + t(30)
    while sent < n:
        assert time.monotonic() < deadline, "upload stuck at %d of %d (stalled at %d)" % (
            sent, n, stalled_at)
        room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if room > 0:
            k = min(room, n - sent)
            c.conn.send_data(sid, body[sent:sent + k], end_stream=sent + k == n)
            sent += k
            c.flush()
        else:
            c.pump(0.05)
    r = c.response(sid, timeout=t(30))
    assert status(r) == 200 and bytes(r["data"]) == b"got %d" % n
    assert up.requests[-1].body_sha256 == hashlib.sha256(body).hexdigest()
    c.close()


def test_client_reset_mid_body_closes_the_upstream_connection(gateway, upstream):
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    sid = c.request("/stall-body")
    c.wait(lambda: c.responses[sid]["headers"] is not None)
    c.conn.reset_stream(sid, 8)  # CANCEL
    c.flush()
    r = c.response(c.request("/next"))
    assert status(r) == 200
    # the stalled connection was not reused for /next
    assert json.loads(bytes(r["data"]))["connection"] != up.requests[0].conn_serial
    c.close()


# ---------------------------------------------------------------------------
# defences
# ---------------------------------------------------------------------------

def test_rapid_reset_gets_goaway_enhance_your_calm(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=())
    c = H2(gw.port)
    try:
        for i in range(200):
            sid = c.request("/slow/200?i=%d" % i)
            c.conn.reset_stream(sid, 8)
            c.flush()
            if i % 20 == 0:
                c.pump(0.001)
    except (OSError, h2.exceptions.ProtocolError):
        # closed by the gateway, as it should be: the socket fails, or the
        # client library has already taken the GOAWAY and refuses new streams
        pass
    while not c.closed and c.goaway() is None:
        c.pump(0.2)
    g = c.goaway()
    assert g is not None and g.error_code == 11, c.events[-5:]  # ENHANCE_YOUR_CALM
    c.close()
    assert len(up.requests) < 200
    assert gw.alive()
    assert_serves(gw)
    assert resets(gw, "rapid_reset") == 1 and resets(gw, "window_stall") == 0


def test_continuation_flood_closes_the_connection(gateway, upstream):
    gw, up = start(gateway, upstream)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=t(5))
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    # HEADERS without END_HEADERS, then CONTINUATION frames that never end
    block = b"\x82\x86\x84\x41\x04gw.t"
    s.sendall(len(block).to_bytes(3, "big") + b"\x01\x01" + (1).to_bytes(4, "big") + block)
    closed = False
    try:
        for i in range(2000):
            crumb = b"\x40\x01a\x01b"  # literal with indexing: a: b
            s.sendall(len(crumb).to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big") + crumb)
    except OSError:
        closed = True
    s.settimeout(t(3))
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            data += d
    except (socket.timeout, OSError) as e:
        closed = closed or not isinstance(e, socket.timeout)
    assert closed, "the connection survived a CONTINUATION flood"
    assert b"\x07\x00\x00\x00\x00\x00" in data or data == b"" or closed  # GOAWAY (type 7)
    s.close()
    assert up.requests == []
    assert_serves(gw)
    assert resets(gw, "protocol") == 1


def test_header_list_over_max_header_size_gets_431(gateway, upstream):
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    r = c.response(c.request("/big", headers=[("x-big-%d" % i, "v" * 1000) for i in range(20)]))
    assert status(r) == 431 or r["reset"] is not None, r
    assert up.requests == []
    r = c.response(c.request("/ok"))
    assert status(r) == 200
    c.close()


def test_zero_window_stall_times_out(gateway, upstream):
    gw, up = start(gateway, upstream, body_timeout="500ms")
    c = H2(gw.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sid = c.request("/stream/100000")
    # never opens the stream's window: the gateway resets the stream
    r = c.response(sid, timeout=t(5))
    assert r["reset"] is not None and r["data"] == b"", r
    c.close()
    assert_serves(gw)
    assert resets(gw, "window_stall") == 1


def test_response_made_in_a_timer_goes_out_at_once(gateway, upstream, tmp_path):
    # A plugin answers after gw.sleep: the response is made in a timer
    # callback. Frames are written at the end of a loop turn (a check handle),
    # which does not wake the poll: without an idle handle they waited for the
    # connection's next tick, up to a second later.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nap.lua").write_text(
        "local P = {}\n"
        "function P.access(ctx, conf)\n"
        "  gw.sleep(0.05)\n"
        "  return ctx:respond(200, 'rested')\n"
        "end\n"
        "return P\n")
    conf = PREFACE_CONF.replace("    upstream: u\n",
                                "    upstream: u\n    plugins: [{name: nap}]\n")
    conf = "plugin_path: [\"%s\"]\n" % plugins + conf
    up = upstream()
    gw = gateway(conf, full=True, up=up, window="16k", idle="10s", body_timeout="1s",
                 access_log="off")
    c = H2(gw.port)
    took = []
    for i in range(5):
        start_at = time.monotonic()
        sid = c.request("/nap/%d" % i)
        r = c.response(sid, t(3))
        took.append(time.monotonic() - start_at)
        assert status(r) == 200 and r["data"] == b"rested", r
    c.close()
    assert max(took) < 0.05 + t(0.3), took


def test_idle_timeout_sends_goaway(gateway, upstream):
    gw, up = start(gateway, upstream, idle="300ms")
    c = H2(gw.port)
    assert status(c.response(c.request("/x"))) == 200
    began = time.monotonic()
    c.wait(lambda: c.closed, t(5))
    assert time.monotonic() - began < t(3)
    assert c.goaway() is not None and c.goaway().error_code == 0
    assert resets(gw, "idle") == 1


def test_goaway_on_drain_and_the_stream_in_flight_finishes(gateway, upstream):
    gw, up = start(gateway, upstream, drain_timeout=ms(5))  # noqa
    c = H2(gw.port)
    sid = c.request("/slow/600")
    wait_until(lambda: len(up.requests) == 1, t(3))
    gw.signal(signal.SIGTERM)
    c.wait(lambda: c.goaway() is not None, t(3))
    r = c.response(sid, timeout=t(5))
    assert status(r) == 200 and json.loads(bytes(r["data"]))["path"] == "/slow/600"
    assert gw.proc.wait(t(5)) == 0


# ---------------------------------------------------------------------------
# plugins, access log, metrics
# ---------------------------------------------------------------------------

PROTO_PLUGIN = """
local P = {}
function P.access(ctx, conf)
  ctx:set_response_header("X-Protocol", ctx.protocol)
end
return P
"""


def test_plugin_access_log_and_metrics_see_h2(gateway, upstream, tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "proto.lua").write_text(PROTO_PLUGIN)
    log = tmp_path / "access.log"
    up = upstream()
    conf = PREFACE_CONF.replace("    upstream: u\n",
                                "    upstream: u\n    plugins: [{name: proto}]\n")
    conf = conf.replace("routes:", 'plugin_path: ["%s"]\nroutes:' % d)
    gw = gateway(conf, full=True, up=up, window="64k", idle="10s", body_timeout="1s",
                 access_log=str(log))
    c = H2(gw.port)
    r = c.response(c.request("/p2"))
    assert status(r) == 200 and header(r, "x-protocol") == b"h2"
    c.close()
    rc, out, err = curl(["-sS", "-D", "-", "-o", "/dev/null", "--http1.1",
                         "http://127.0.0.1:%d/p1" % gw.port])
    assert b"X-Protocol: http/1.1" in out, out
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, t(3))
    lines = {json.loads(l)["path"]: json.loads(l) for l in log.read_text().splitlines()}
    assert lines["/p2"]["protocol"] == "h2" and lines["/p1"]["protocol"] == "http/1.1"
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=t(5)) as m:
        text = m.read().decode()
    total = sum(v for (name, labels), v in samples(text).items()
                if name == "moongate_requests_total" and ("route", "all") in labels)
    assert total == 2, text


RESPOND_PLUGIN = """
local P = {}
function P.access(ctx, conf)
  if ctx.path == "/made" then
    return ctx:respond(201, "made by a plugin", {["X-Made"] = "yes"})
  end
end
return P
"""


def test_idempotency_and_plugin_responses_over_h2(gateway, upstream, tmp_path):
    """A replay (record memory) and a plugin-made response reach an h2 client
    whole; the upstream sees the first request only."""
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "maker.lua").write_text(RESPOND_PLUGIN)
    up = upstream()
    conf = PREFACE_CONF.replace(
        "    upstream: u\n",
        "    upstream: u\n    plugins: [{name: maker}]\n"
        "    idempotency: {methods: [POST]}\n")
    conf = conf.replace("routes:", 'plugin_path: ["%s"]\nroutes:' % d)
    gw = gateway(conf, full=True, up=up, window="64k", idle="10s", body_timeout="1s")
    c = H2(gw.port)
    key = [("idempotency-key", "k-123"), ("content-length", "7")]
    first = c.response(c.request("/pay", method="POST", headers=key, body=b"order=1"))
    again = c.response(c.request("/pay", method="POST", headers=key, body=b"order=1"))
    assert status(first) == 200 and status(again) == 200
    assert header(again, "idempotent-replayed") == b"true"
    assert bytes(again["data"]) == bytes(first["data"]) and len(first["data"]) > 0
    assert len(up.requests) == 1
    r = c.response(c.request("/made"))
    assert status(r) == 201 and bytes(r["data"]) == b"made by a plugin"
    assert header(r, "x-made") == b"yes" and header(r, "content-length") == b"16"
    c.close()


def test_expect_100_continue_is_an_interim_head(gateway, upstream):
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    sid = c.request("/cont", method="POST", headers=[("expect", "100-continue"),
                                                     ("content-length", "4")], end=False)
    c.wait(lambda: any(isinstance(e, h2.events.InformationalResponseReceived) and
                       dict(e.headers)[b":status"] == b"100" for e in c.events))
    c.conn.send_data(sid, b"body", end_stream=True)
    c.flush()
    r = c.response(sid)
    assert status(r) == 200 and up.requests[-1].body == b"body"
    assert not up.requests[-1].has_header("expect")
    c.close()


def test_ping_flood_without_reading_ends_the_session(gateway, upstream):
    """PINGs whose ACKs the client never reads: past nghttp2's bound on queued
    ACKs (1000) the session ends (CVE-2019-9512), the process stays well."""
    gw, up = start(gateway, upstream)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=t(5))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
    closed = False
    try:
        for i in range(200):
            s.sendall(ping * 500)
    except OSError:
        closed = True
    if not closed:
        s.settimeout(t(3))
        try:
            while s.recv(1 << 16):
                pass
            closed = True
        except socket.timeout:
            pass
        except OSError:
            closed = True
    s.close()
    assert closed, "100000 unread PINGs did not end the session"
    assert resets(gw, "protocol") >= 1
    assert_serves(gw)


def test_interim_103_reaches_the_h2_client_before_the_final_response(gateway, upstream):
    # RFC 9110 section 15.2 and RFC 9113 section 8.1: the upstream's 103 goes
    # out as a HEADERS frame without END_STREAM while its 200 does not exist yet.
    seen = threading.Event()

    def handler(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n"
                  b"Connection: x-hop\r\nX-Hop: 1\r\n\r\n")
        seen.wait(t(5))
        conn.respond(200, b"late" if seen.is_set() else b"too early")
    gw, up = start(gateway, upstream, handler)
    c = H2(gw.port)
    try:
        sid = c.request("/hints")
        infos = lambda: [ev for ev in c.events
                         if isinstance(ev, h2.events.InformationalResponseReceived)]
        c.wait(lambda: infos())
        hints = dict((k.decode() if isinstance(k, bytes) else k,
                      v.decode() if isinstance(v, bytes) else v) for k, v in infos()[0].headers)
        assert hints[":status"] == "103" and hints["link"] == "</a.js>; rel=preload"
        assert "x-hop" not in hints and "connection" not in hints
        assert not c.responses[sid]["ended"]
        seen.set()
        r = c.response(sid)
        assert status(r) == 200 and bytes(r["data"]) == b"late"
    finally:
        c.close()


def test_request_ids_stay_out_of_the_hpack_table(gateway, upstream):
    # A new value on every response would evict the client's useful HPACK
    # entries (and cost the encoder a lookup against each): never indexed,
    # but for the one response in a while that puts the name in the table
    # (the others refer to it), so at most one entry.
    gw, up = start(gateway, upstream)
    c = H2(gw.port)
    try:
        ids = set()
        for i in range(20):
            r = c.response(c.request("/id/%d" % i))
            assert status(r) == 200
            ids.add(header(r, "x-request-id"))
        assert len(ids) == 20 and None not in ids
        names = [n for n, _ in c.conn.decoder.header_table.dynamic_entries]
        rids = [n for n in names if n in (b"x-request-id", "x-request-id")]
        assert len(rids) <= 1, names
        assert names, "the table holds the fields that repeat"
    finally:
        c.close()


FILL_PLUGIN = """
local P = {}
local BIG, SMALL = string.rep("B", 20000), string.rep("S", 3000)
function P.access(ctx, conf)
  return ctx:respond(200, ctx.path:sub(1, 4) == "/big" and BIG or SMALL)
end
return P
"""


def read_frames(sock, until, timeout):
    """Raw frames (type, flags, stream id, payload) until until(frames)."""
    frames, buf = [], b""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while not until(frames):
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %d frames" % len(frames))
        try:
            data = sock.recv(1 << 16)
        except socket.timeout:
            continue
        assert data, "the gateway closed the connection"
        buf += data
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff,
                           buf[9:9 + n]))
            buf = buf[9 + n:]
    return frames


def test_reset_streams_keep_their_queued_bytes_until_written(gateway, upstream, tmp_path):
    """Streams whose first DATA (a plugin body over the 1 KiB copy threshold,
    so queued by reference into the exchange's memory) waits on a socket the
    client does not read, and whose rest waits for a window the client never
    opens, are reset by the client; new streams then answer while that DATA
    is still queued. The queued frames must still carry their own stream's
    bytes: a reset stream's memory must not go to a new stream before it is
    written (b354f4c; without it this test sees the new streams' bytes under
    the reset streams' ids). Under ASan, where every arena allocation is its
    own malloc, writev's interceptor would also catch the freed buffer."""
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "fill.lua").write_text(FILL_PLUGIN)
    conf = PREFACE_CONF.replace("    upstream: u\n", "    upstream: u\n    plugins: [{name: fill}]\n")
    conf = conf.replace("max_resets_per_second: 20",
                        "max_resets_per_second: 100000, max_concurrent_streams: 1000")
    conf = conf.replace("routes:", 'plugin_path: ["%s"]\nroutes:' % d)
    up = upstream()
    gw = gateway(conf, full=True, up=up, window="16k", idle="10s", body_timeout="1s",
                 access_log="off")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    s.connect(("127.0.0.1", gw.port))
    c = H2(gw.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384}, sock=s)
    c.conn.increment_flow_control_window((1 << 31) - 1 - 65535)
    c.flush()
    # 600 x 16 kB (each stream's window) of by-reference DATA: more than the
    # kernel's socket buffers take, so most of it waits in the write queue
    big = [c.request("/big/%d" % i) for i in range(600)]
    time.sleep(t(0.5))
    for sid in big:
        c.conn.reset_stream(sid, 8)  # CANCEL
    c.flush()
    time.sleep(t(0.2))
    small = [c.request("/small/%d" % i) for i in range(200)]
    time.sleep(t(0.3))
    ended, seen = set(), [0]

    def all_small_ended(frames):
        for typ, flags, sid, _ in frames[seen[0]:]:
            if typ in (0, 1) and flags & 1 and sid in small:
                ended.add(sid)
        seen[0] = len(frames)
        return len(ended) == len(small)

    frames = read_frames(s, all_small_ended, t(20))
    got = {}
    for typ, flags, sid, payload in frames:
        if typ == 0:
            got.setdefault(sid, bytearray()).extend(payload)
    for sid in big:
        assert set(got.get(sid, b"")) <= {ord("B")}, "reset stream %d carried %r" % (
            sid, bytes(got[sid][:40]))
    queued = sum(len(got.get(sid, b"")) for sid in big)
    assert queued > (4 << 20), "only %d bytes of the reset streams: nothing waited queued" % queued
    for sid in small:
        assert bytes(got.get(sid, b"")) == b"S" * 3000, sid
    s.close()
    assert gw.alive()
    c = H2(gw.port)
    r = c.response(c.request("/small/after"))
    c.close()
    assert status(r) == 200 and bytes(r["data"]) == b"S" * 3000
def test_body_end_arriving_after_its_bytes_is_an_empty_data_frame(gateway, upstream, tmp_path):
    # The upstream's chunked body ends in a later read than its last bytes:
    # those bytes leave as DATA without END_STREAM, then the end as an empty
    # DATA frame with END_STREAM. The gateway must see that frame go even
    # while the client's side of the stream is still open (a request body
    # not finished): the exchange ends at once and resets the rest of the
    # request with NO_ERROR (RFC 9113 section 8.1), long before the body
    # timeout.
    go = threading.Event()
    log = tmp_path / "access.log"

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n")
        go.wait(t(5))
        conn.send(b"0\r\n\r\n")
    gw, up = start(gateway, upstream, handler, body_timeout="20s", access_log=str(log))
    c = H2(gw.port)
    try:
        sid = c.request("/late-end", method="POST", end=False)
        c.wait(lambda: bytes(c.responses.get(sid, {}).get("data", b"")) == b"part")
        assert not c.responses[sid]["ended"]
        go.set()
        c.wait(lambda: c.responses[sid]["ended"], t(5))
        r = c.responses[sid]
        assert status(r) == 200 and bytes(r["data"]) == b"part"
        ends = [ev for ev in c.events if isinstance(ev, h2.events.DataReceived)
                and ev.stream_id == sid and ev.stream_ended is not None]
        assert ends and ends[-1].data == b"", ends
        c.wait(lambda: r["reset"] is not None, t(5))
        assert r["reset"] == 0
        wait_until(lambda: log.exists() and "/late-end" in log.read_text(), t(3))
    finally:
        c.close()


def test_unknown_and_rtsp_methods_are_refused_and_the_gateway_stays(gateway, upstream, tmp_path):
    # llhttp_method_name aborts on a number its map skips: the method lookup
    # once walked every number, so ":method: FOO" took the whole gateway down
    # (found by fuzz_h2). RTSP's methods are not HTTP's either. The access
    # log, which names each request's method, is on.
    log = tmp_path / "access.log"
    gw, up = start(gateway, upstream, access_log='"%s"' % log)
    c = H2(gw.port)
    for method in ("FOO", "DESCRIBE", "PRI", "get"):
        r = c.response(c.request("/m", method=method))
        assert status(r) in (400, 501), (method, r)
    r = c.response(c.request("/after", method="PATCH"))
    assert status(r) == 200
    c.close()
    assert gw.alive()
    assert [req.method for req in up.requests] == ["PATCH"]
    assert wait_until(lambda: log.exists() and log.read_text().count("\n") >= 5, t(5))
