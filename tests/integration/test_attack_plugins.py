"""Plugins against hostile inputs and peers (attack pass): body filters over
HTTP/2, plugin I/O against peers that hang, talk garbage or close."""

import socket
import threading
import time

import h2.exceptions
import pytest

from conftest import H2_PREAMBLE, fetch, t
from test_http2 import H2, header, status

H2CONF = H2_PREAMBLE + """\
plugin_path: ["$plugins"]
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - {name: all, upstream: u, plugins: [{name: grow}]}
"""

GROW = """
local P = {}
function P.body_filter(ctx, conf, chunk, eof)
  if eof then return "<appended by the filter>" end
end
return P
"""


def h2_response_with_framing(c, sid):
    """The response, failing clearly when its DATA contradicts its content-length
    (python-h2 refuses such a stream, as nghttp2 and browsers do)."""
    try:
        return c.response(sid)
    except h2.exceptions.InvalidBodyLengthError as e:
        pytest.fail("HTTP/2 response with a content-length its DATA frames do not match: %s" % e)


@pytest.mark.parametrize("path,upstream_body", [("/stream/10", 10), ("/status/200", 0)])
def test_h2_body_filter_does_not_keep_the_upstream_content_length(gateway, upstream, tmp_path,
                                                                  path, upstream_body):
    """HTTP/1.1 clients get the filtered body chunked; over HTTP/2 the head kept
    the upstream's content-length while the DATA carried the filter's bytes:
    a protocol error for every client, and two responses for an h2-to-h1
    proxy that frames by that length."""
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "grow.lua").write_text(GROW)
    up = upstream()
    gw = gateway(H2CONF, full=True, up=up, plugins=str(d))
    r1 = fetch(gw.port, "GET", path)
    assert r1.framing == "chunked" and r1.body.endswith(b"<appended by the filter>")
    c = H2(gw.port)
    r = h2_response_with_framing(c, c.request(path))
    assert status(r) == 200
    body = bytes(r["data"])
    assert body.endswith(b"<appended by the filter>") and len(body) == upstream_body + 24
    cl = header(r, "content-length")
    assert cl is None or int(cl) == len(body), "content-length %r, %d bytes of DATA" % (cl, len(body))
    c.close()


# ---------------------------------------------------------------------------
# gw.http.request and interim (1xx) answers: an auth service that sends 103
# Early Hints (or 100 Continue) before its final answer is legal HTTP; the
# call returned the 1xx as if it were the answer, so forward_auth refused
# every request with 503 ("status 103") and a plugin saw no body.
# ---------------------------------------------------------------------------

AUTH_CONF = """\
plugin_path: ["$plugins"]
upstreams:
  u: {targets: [{address: "$up"}]}
  auth: {targets: [{address: "$auth"}]}
routes:
  - name: api
    upstream: u
    plugins:
      - name: forward_auth
        config: {upstream: auth, path: /check, copy_headers: [X-User], timeout: 1}
"""


def interim_then_allow(conn, req):
    conn.read_body(req)
    conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nX-User: alice\r\nContent-Length: 0\r\n\r\n")
    return None


def test_forward_auth_reads_past_an_interim_answer(gateway, upstream, tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    up = upstream(name="up")
    auth = upstream(interim_then_allow, name="auth")
    gw = gateway(AUTH_CONF, up=up, auth=auth, plugins=str(d), allow_errors=[r"forward_auth"])
    r = fetch(gw.port, "GET", "/api/x")
    assert r.status == 200, "the auth service allowed (200 after a 103), the client got %r %r" % (
        r, r.body[:200])
    assert r.echo_header("X-User") == "alice"
    assert len(auth.requests) == 1 and len(up.requests) == 1


# ---------------------------------------------------------------------------
# A Redis reply that announces two billion elements ("*2000000000\r\n"):
# hiredis 0.14 callocs 16 GB of element pointers and, when the connection
# goes, frees the partial reply element by element on the worker's loop: the
# worker serves nobody for many seconds (and SIGTERM cannot stop it). A Redis
# reached in plain text, a rogue sentinel's "master", or a broken proxy in
# front of Redis is enough.
# ---------------------------------------------------------------------------

REDIS_PLUGIN = """
local P = {}
function P.access(ctx, conf)
  local v, err = gw.redis:call("GET", "k")
  return ctx:respond(200, "v=" .. tostring(v) .. " err=" .. tostring(err))
end
return P
"""


def huge_array_redis():
    """A server that answers any command with a multi-bulk header of 2e9
    elements, then closes."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(0.2)
    stop = threading.Event()

    def serve(s):
        try:
            s.settimeout(1)
            if s.recv(65536):
                s.sendall(b"*2000000000\r\n")
                time.sleep(0.1)
        except OSError:
            pass
        finally:
            s.close()

    def loop():
        while not stop.is_set():
            try:
                s, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(s,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls, stop


def test_redis_reply_with_two_billion_elements_does_not_stall_the_worker(gateway, upstream,
                                                                         tmp_path):
    from conftest import RawClient
    ls, stop = huge_array_redis()
    try:
        d = tmp_path / "plugins"
        d.mkdir()
        (d / "rcall.lua").write_text(REDIS_PLUGIN)
        up = upstream()
        gw = gateway("""\
plugin_path: ["$plugins"]
redis: {address: "127.0.0.1:$rport", timeout: 300ms}
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - {name: r, match: {paths: ["/r"]}, upstream: u, plugins: [{name: rcall}]}
  - {name: all, upstream: u}
""", up=up, plugins=str(d), rport=ls.getsockname()[1], allow_errors=[r"(?i)redis"])
        r = fetch(gw.port, "GET", "/r")
        assert r.status == 200 and b"v=nil" in r.body
        # the same worker must keep serving requests that never touch Redis
        for i in range(10):
            t0 = time.monotonic()
            try:
                with RawClient(gw.port, timeout=t(2)) as c:
                    c.request("GET", "/plain/%d" % i)
                    assert c.read_response().status == 200
            except socket.timeout:
                pytest.fail("a plain request waited more than %.1fs: the worker is stuck "
                            "freeing the announced reply" % t(2))
            assert time.monotonic() - t0 < t(1)
            time.sleep(0.05)
    finally:
        stop.set()
        ls.close()


# ---------------------------------------------------------------------------
# Two Host fields upstream: ctx:add_header("Host", v) (and request_transformer
# `add: {Host: ...}`, a plain config) adds a second Host beside the client's.
# RFC 9112 section 3.2: a request with two Host lines must be refused, and
# servers that do take it disagree on which one counts (first or last): the
# gateway and the upstream then see different hosts.
# ---------------------------------------------------------------------------

ADD_HOST = """
local P = {}
function P.access(ctx, conf)
  ctx:add_header("Host", "internal.svc")
end
return P
"""


def test_added_host_never_makes_two_host_fields(gateway, upstream, tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "addhost.lua").write_text(ADD_HOST)
    up = upstream()
    gw = gateway("""\
plugin_path: ["$plugins"]
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - name: rt
    match: {paths: ["/rt"]}
    upstream: u
    plugins: [{name: request_transformer, config: {add: {Host: "internal.svc"}}}]
  - {name: all, upstream: u, plugins: [{name: addhost}]}
""", up=up, plugins=str(d), allow_errors=[r"(?i)host"])
    for path in ("/rt", "/plugin"):
        r = fetch(gw.port, "GET", path)
        if r.status == 200:
            hosts = up.requests[-1].header_all("host")
            assert len(hosts) == 1, "%s: the upstream got Host %r" % (path, hosts)
        else:
            assert r.status == 500, r  # refusing the edit as a plugin error is fine too
