"""Attacks that held up (attack pass), kept as regression tests for what no
other test pinned: an h2 stream whose upstream answers before its body, bytes
an upstream sends after its response while the connection idles in the pool,
request bodies left unread by an early answer, TLS renegotiation, h2 header
values no HTTP/1.1 field may carry, unsolicited 101s, MadeYouReset's
connection-level primitives."""

import json
import struct
import subprocess
import time

import h2.errors
import pytest

from conftest import IncompleteResponse, RawClient, fetch, t
from test_attack_h2 import H2, room, start, status, upload
from test_tls import assert_healthy, certs, start_tls, tls_origin  # noqa: F401 (fixtures)
from upstream import default_handler, echo


# ---------------------------------------------------------------------------
# HTTP/2
# ---------------------------------------------------------------------------

def early(conn, req):
    conn.respond(200, b"early", headers=[("Connection", "close")])
    return False


def test_early_upstream_answers_give_the_connection_window_back(gateway, upstream, tmp_path):
    """The upstream answers before reading the body (then closes): the
    connection's window must not shrink by the bytes the stream held."""
    gw, up = start(gateway, upstream, tmp_path, handler=early)
    c = H2(gw.port)
    for i in range(6):
        sid = c.request("/early", method="POST", body=b"x" * room(c), end=False)
        r = c.response(sid)
        assert status(r) == 200 and bytes(r["data"]) == b"early"
    up.handler = default_handler
    r = upload(c, "/echo", b"y" * 40000)
    assert status(r) == 200 and json.loads(bytes(r["data"]))["body_length"] == 40000
    c.close()


def send_raw_headers(c, fields, end=True):
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields],
                        end_stream=end)
    c.responses[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
    c.flush()
    return sid


PSEUDO = [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test"), (":path", "/v")]


@pytest.mark.parametrize("fields", [
    [("x-a", "a\r\nX-Injected: 1")], [("x-a", "a\nX-Injected: 1")], [("x-a", "a\rb")],
    [("x-a", "a\x00b")], [("x-a", " lead")], [("x-a", "trail ")], [("x:a", "b")], [("X-A", "b")],
    [("host", "a.test"), ("host", "b.test")], [("te", "gzip")],
], ids=["crlf", "lf", "cr", "nul", "lead", "trail", "colon", "upper", "two-hosts", "te"])
def test_h2_fields_an_http1_head_cannot_carry_are_refused(gateway, upstream, tmp_path, fields):
    gw, up = start(gateway, upstream, tmp_path, streams=8)
    c = H2(gw.port)
    r = c.response(send_raw_headers(c, PSEUDO + fields))
    assert r["reset"] is not None or (status(r) or 0) >= 400, r
    assert up.requests == []
    r = c.response(c.request("/after"))
    assert status(r) == 200
    c.close()


@pytest.mark.parametrize("path", ["*", "http://evil.test/x", "", "/a b", "/a\x01b", "?x",
                                  "/a/../b", "/a/%2e%2e/b"])
def test_h2_path_forms_outside_origin_form_are_refused(gateway, upstream, tmp_path, path):
    gw, up = start(gateway, upstream, tmp_path, streams=8)
    c = H2(gw.port)
    r = c.response(send_raw_headers(c, PSEUDO[:3] + [(":path", path)]))
    assert r["reset"] is not None or status(r) == 400, r
    assert up.requests == []
    c.close()


def frame(typ, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big") + payload


@pytest.mark.parametrize("bad", ["window_update_0", "data_on_closed"])
def test_madeyoureset_connection_primitives_end_the_session(gateway, upstream, tmp_path, bad):
    """The MadeYouReset primitives nghttp2 treats as connection errors: one
    ends the connection with GOAWAY; the request never reaches the upstream."""
    gw, up = start(gateway, upstream, tmp_path, streams=8)
    c = H2(gw.port)
    sid = c.request("/slow/300")
    if bad == "window_update_0":
        c.sock.sendall(frame(8, 0, sid, struct.pack(">I", 0)))
    else:
        c.sock.sendall(frame(0, 0, sid, b"x"))
    deadline = time.monotonic() + t(3)
    while not c.closed and c.goaway() is None and time.monotonic() < deadline:
        c.pump(0.1)
    g = c.goaway()
    assert g is not None and g.error_code in (h2.errors.ErrorCodes.PROTOCOL_ERROR,
                                              h2.errors.ErrorCodes.STREAM_CLOSED), g
    c.close()


def unsolicited_101(conn, req):
    conn.read_body(req)
    conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
              b"RAW-BYTES-AFTER-101")
    time.sleep(0.2)
    return False


def test_unsolicited_101_is_502_over_both_protocols(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, handler=unsolicited_101, streams=8)
    c = H2(gw.port)
    r = c.response(c.request("/x"))
    assert status(r) == 502 and b"RAW-BYTES" not in bytes(r["data"]), r
    c.close()
    with RawClient(gw.port, timeout=t(3)) as c1:
        c1.send(b"GET /y HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r1 = c1.read_response()
    assert r1.status == 502 and b"RAW-BYTES" not in r1.body


# ---------------------------------------------------------------------------
# HTTP/1.1
# ---------------------------------------------------------------------------

POOL_CONF = """\
upstreams:
  u: {targets: [{address: "$up"}], keepalive: 4}
routes:
  - name: all
    upstream: u
"""


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_bytes_an_upstream_sends_late_never_answer_the_next_client(gateway, upstream, method):
    """test_extra_bytes_after_upstream_response_do_not_desync_the_pool sends
    the planted response in the same write; here it comes 100 ms later, when
    the connection idles in the pool (a HEAD answered with a body, too)."""
    first = [True]

    def handler(conn, req):
        conn.read_body(req)
        if first[0]:
            first[0] = False
            if req.method == "HEAD":
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
            else:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            time.sleep(0.1)
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Planted: 1\r\n\r\nPOISONED")
            return None
        return echo(conn, req)

    up = upstream(handler)
    gw = gateway(POOL_CONF, up=up)
    assert fetch(gw.port, method, "/first").status == 200
    time.sleep(t(0.3))
    r = fetch(gw.port, "GET", "/victim")
    assert r.header("x-planted") is None and r.json()["path"] == "/victim", r.body[:200]


EARLY_CONF = """\
plugin_path: ["$plugins"]
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - name: admin
    match: {paths: ["/admin"]}
    upstream: u
    plugins: [{name: key_auth, config: {keys: ["k"]}}]
  - name: buf
    match: {paths: ["/buf"]}
    upstream: u
    plugins: [{name: bufp}]
  - name: all
    upstream: u
"""
BUFP = """
local P = {body = {max = "64"}}
function P.access(ctx, conf) if ctx:body() == "deny" then ctx:respond(403, "no") end end
return P
"""
SM = b"GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"
EARLY = [
    ("length", b"POST /admin HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n" % len(SM) + SM, 401),
    ("chunked", b"POST /admin HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n"
     % len(SM) + SM + b"\r\n0\r\n\r\n", 401),
    ("expect", b"POST /admin HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\nContent-Length: %d"
     b"\r\n\r\n" % len(SM) + SM, 401),
    ("over_p_body", b"POST /buf HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n" % (len(SM) + 70)
     + b"x" * 70 + SM, 413),
    ("chunked_over_p_body", b"POST /buf HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"46\r\n" + b"x" * 70 + b"\r\n%x\r\n" % len(SM) + SM + b"\r\n0\r\n\r\n", 413),
]


@pytest.mark.parametrize("name,data,want", EARLY, ids=[e[0] for e in EARLY])
def test_a_body_left_unread_by_an_early_answer_is_never_read_as_a_request(gateway, upstream,
                                                                          tmp_path, name, data, want):
    """A plugin answers (401, 413) before the body was read; a body shaped
    like a request must not become the connection's next request."""
    up = upstream()
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "bufp.lua").write_text(BUFP)
    gw = gateway(EARLY_CONF, up=up, plugins=str(d))
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(data)
        _, r = c.read_final_response()
        assert r.status == want
        extra = c.wait_closed(t(3))
    assert extra == b"", extra[:200]
    assert up.requests == []


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------

def test_client_initiated_renegotiation_is_refused(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs)
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % gw.port, "-tls1_2",
                          "-servername", "api.test", "-CAfile", certs.ca],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(t(0.3))
        p.stdin.write(b"R\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=t(5))
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    assert b"RENEGOTIATING" in err and b"no renegotiation" in err, err[-400:]
    assert up.requests == []
    assert_healthy(gw, certs)


def test_close_delimited_body_ended_by_close_notify_is_complete(gateway, certs, tls_origin):
    """The counterpart of test_attack_tls.py: with close_notify before the FIN
    the close-delimited body is whole and reaches the client complete."""
    from test_attack_tls import close_delimited
    from test_tls import plain_gateway
    o = tls_origin(certs, "default", handler=close_delimited(clean=True))
    gw = plain_gateway(gateway, certs, o)
    r = fetch(gw.port, "GET", "/list")
    assert r.status == 200 and r.framing == "chunked" and r.body == b'{"items": [1, 2'


# ---------------------------------------------------------------------------
# Plugins: header injection through every edit API, in every phase that has it
# ---------------------------------------------------------------------------

INJECT = r"""
local P = {}
local values = {"a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rb", "a\0b", "a\127b"}
local names = {"X-Inj\r\nX-Injected", "X Inj", "X:Inj", "", "X-\0", "Content-Length",
               "Transfer-Encoding", "Connection"}
local function probe(ctx, phase)
  local took = {}
  for _, m in ipairs({"set_header", "add_header", "set_response_header", "add_response_header"}) do
    if (phase == "access" or m:find("response")) then
      for i, v in ipairs(values) do
        if pcall(ctx[m], ctx, "X-V" .. i, v) then took[#took + 1] = phase .. ":" .. m .. ":v" .. i end
      end
      for i, n in ipairs(names) do
        if pcall(ctx[m], ctx, n, "x") then took[#took + 1] = phase .. ":" .. m .. ":n" .. i end
      end
    end
  end
  for i, v in ipairs(values) do
    if pcall(gw.header, "X-G", v) then took[#took + 1] = phase .. ":gw.header:v" .. i end
  end
  return took
end
function P.access(ctx, conf)
  local took = probe(ctx, "access")
  if ctx.path == "/respond" then
    for i, v in ipairs(values) do
      if pcall(ctx.respond, ctx, 200, "made", {["X-R"] = v}) then took[#took + 1] = "respond:v" .. i end
    end
    for i, n in ipairs(names) do
      if pcall(ctx.respond, ctx, 200, "made", {[n] = "v"}) then took[#took + 1] = "respond:n" .. i end
    end
    ctx:respond(200, "took[" .. table.concat(took, ",") .. "]")
  end
  ctx.vars.took = table.concat(took, ",")
end
function P.response(ctx, conf)
  local took = probe(ctx, "response")
  ctx:set_response_header("X-Took", "[" .. ctx.vars.took .. "][" .. table.concat(took, ",") .. "]")
end
return P
"""


def test_no_header_edit_api_takes_a_control_character_or_a_managed_name(gateway, upstream,
                                                                        tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "inject.lua").write_text(INJECT)
    up = upstream()
    gw = gateway('plugin_path: ["$plugins"]\nupstreams:\n  u: {targets: [{address: "$up"}]}\n'
                 'routes:\n  - {name: all, upstream: u, plugins: [{name: inject}]}\n',
                 up=up, plugins=str(d))
    r = fetch(gw.port, "GET", "/proxied")
    assert r.status == 200 and r.header("x-took") == "[][]", r.header("x-took")
    assert b"X-Injected" not in r.raw_head and b"X-Injected" not in up.requests[0].raw_head
    r = fetch(gw.port, "GET", "/respond")
    assert r.status == 200 and r.body == b"took[]", r.body
    assert b"X-Injected" not in r.raw_head


def refuse_upgrade_then_record(conn, req):
    """Refuses the upgrade but keeps the connection, recording raw bytes: a
    gateway that tunnelled anyway would deliver the client's next request here
    past routing."""
    conn.read_body(req)
    if not req.header("upgrade"):
        return echo(conn, req)
    conn.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    from test_attack_http1 import record_raw
    return record_raw(conn, 0.5)


def test_bytes_after_a_refused_upgrade_are_not_tunnelled(gateway, upstream):
    from test_attack_http1 import CONF
    up = upstream(refuse_upgrade_then_record)
    gw = gateway(CONF, up=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert c.read_response().status == 403
        c.send(b"GET /admin HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        try:
            r2 = c.read_response()
            assert r2.status == 401  # routed again, through the route's key_auth
        except IncompleteResponse:
            pass  # or the connection closed after the refused upgrade
    time.sleep(t(0.6))
    assert bytes(up.ws_received) == b"" and [q.target for q in up.requests] == ["/ws"]
