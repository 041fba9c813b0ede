"""Hostile HTTP/1.1 clients (attack pass): request targets the router and the
upstream read differently, and protocol switches the design does not offer.
What the upstream received is checked byte for byte."""

import time

import pytest

from conftest import H2_PREAMBLE, RawClient, assert_error, fetch, t
from test_http2 import H2, status

CONF = """\
upstreams:
  u: {targets: [{address: "$up"}], retry: {max_retries: 0}}
routes:
  - name: admin
    match: {paths: ["/admin"]}
    upstream: u
    plugins: [{name: key_auth, config: {keys: ["k"]}}]
  - name: all
    upstream: u
"""


def raw_get(gateway, upstream, target, allowed):
    """GET target, sent as is, to a gateway whose /admin route has key_auth:
    asserts the status is one of `allowed` and that nothing reached the
    upstream; returns the response."""
    up = upstream()
    gw = gateway(CONF, up=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.read_response()
    assert r.status in allowed, "target %r got %r; the upstream received %r" % (
        target, r, [q.raw_head.split(b"\r\n")[0] for q in up.requests])
    assert up.requests == []
    return r, gw


# ---------------------------------------------------------------------------
# a fragment in the request target (RFC 9112 section 3.2: origin-form has no
# fragment; HAProxy CVE-2023-45539): the router matched "/admin#x" as a path
# that is not "/admin", the upstream's URL parser (Python, Node, Rails...)
# drops the fragment and serves /admin: the route's key_auth was skipped.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/admin#x", b"/x#/admin"])
def test_fragment_in_request_target_is_refused(gateway, upstream, target):
    r, gw = raw_get(gateway, upstream, target, (400,))
    assert_error(r, "bad_request", 400)
    assert fetch(gw.port, "GET", "/admin").status == 401  # the route is protected


H2CONF = H2_PREAMBLE + """\
""" + CONF


def test_fragment_in_h2_path_is_refused(gateway, upstream):
    up = upstream()
    gw = gateway(H2CONF, full=True, up=up)
    c = H2(gw.port)
    r = c.response(c.request("/admin"))
    assert status(r) == 401
    r = c.response(c.request("/admin#x"))
    assert status(r) == 400 or r["reset"] is not None, (r, [q.raw_head for q in up.requests])
    assert up.requests == []
    c.close()


# ---------------------------------------------------------------------------
# Upgrade: h2c (the "h2c smuggling" class): the design tunnels WebSocket
# upgrades; an h2c upgrade forwarded to an upstream that accepts it turns the
# client's connection into a raw tunnel to the upstream, past every route,
# plugin and limit of the gateway for all the requests that follow on it.
# ---------------------------------------------------------------------------

def record_raw(conn, seconds):
    """Keeps every byte that reaches the upstream's connection from now on (in
    conn.server.ws_received) until it closes or stays quiet for `seconds`;
    returns False: the connection is done."""
    conn.sock.settimeout(seconds)
    try:
        while True:
            d = conn.sock.recv(65536)
            if not d:
                break
            conn.server.ws_received += d
    except OSError:
        pass
    return False


def accept_any_upgrade(conn, req):
    """An upstream that switches to whatever is asked, then records every
    byte that reaches it raw."""
    up = req.header("upgrade")
    if not up:
        conn.respond(200, b"plain")
        return None
    conn.send(("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
               % up).encode())
    return record_raw(conn, 1.0)


def test_h2c_upgrade_is_not_tunnelled(gateway, upstream):
    up = upstream(accept_any_upgrade)
    gw = gateway(CONF, up=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        r = c.read_response()
        # whatever the answer, what follows must be read as requests by the gateway
        c.send(b"GET /admin HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        try:
            r2 = c.read_response()
        except Exception:
            r2 = None
    time.sleep(t(0.2))
    heads = [q.raw_head for q in up.requests]
    assert not any(b"upgrade: h2c" in h.lower() for h in heads), (
        "the h2c upgrade was forwarded: %r (client got %r)" % (heads, r))
    assert b"/admin" not in bytes(up.ws_received), (
        "a request for the protected route reached the upstream through the tunnel: %r"
        % bytes(up.ws_received))
    assert r.status != 101 and (r2 is None or r2.status == 401), (r, r2)


# ---------------------------------------------------------------------------
# Header names that CGI-style upstreams (WSGI, PHP, Rack: HTTP_X_FORWARDED_PROTO)
# read as the gateway's own: "X-Forwarded_Proto: https" beside the gateway's
# "X-Forwarded-Proto: http" is the same variable there, and the gateway
# forwards both (nginx drops names with '_' by default; gunicorn 22 refuses
# them). test_client_cannot_spoof_forwarded_proto pins the dash spelling only.
# ---------------------------------------------------------------------------

def cgi_name(name):
    return name.upper().replace("-", "_")


@pytest.mark.parametrize("name,value", [
    ("X-Forwarded_Proto", "https"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("X-Forwarded_Host", "admin.internal"),
    ("X_Request_Id", "chosen-by-the-client"),
])
def test_underscore_spelling_of_gateway_fields_does_not_reach_the_upstream(gateway, upstream,
                                                                           name, value):
    up = upstream()
    gw = gateway(CONF, up=up)
    r = fetch(gw.port, "GET", "/x", [(name, value)])
    if r.status == 400:  # refusing such names is a fix too
        assert up.requests == []
        return
    assert r.status == 200
    req = up.requests[0]
    same = [(k, v) for k, v in req.headers if cgi_name(k) == cgi_name(name)]
    assert not any(v == value for _, v in same), (
        "the client's %s: %s reached the upstream beside the gateway's own: %r"
        % (name, value, same))


def test_underscore_spelling_of_gateway_fields_over_h2_does_not_reach_the_upstream(gateway,
                                                                                  upstream):
    up = upstream()
    gw = gateway(H2CONF, full=True, up=up)
    c = H2(gw.port)
    r = c.response(c.request("/x", headers=[("x_forwarded_for", "6.6.6.6"),
                                            ("x-forwarded_proto", "https")]))
    assert status(r) == 200
    req = up.requests[0]
    assert req.header("x_forwarded_for") is None and req.header("x-forwarded_proto") is None
    assert "6.6.6.6" not in (req.header("x-forwarded-for") or "")
    c.close()


# ---------------------------------------------------------------------------
# Status codes below 100 from the upstream (RFC 9110 section 15: outside
# 100..599 is invalid, and a client SHOULD treat it as a 5xx): the gateway
# passed "HTTP/1.1 000" and "099" on to HTTP/1.1 clients and ":status: 0" /
# "99" (not three digits, a malformed HTTP/2 response) to HTTP/2 clients.
# ---------------------------------------------------------------------------

def status_upstream(code):
    def handler(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 " + code + b" Odd\r\nContent-Length: 5\r\n\r\nhello")
    return handler


@pytest.mark.parametrize("code", [b"000", b"099"])
def test_upstream_status_below_100_is_not_relayed(gateway, upstream, code):
    up = upstream(status_upstream(code))
    gw = gateway(H2CONF, full=True, up=up, allow_errors=[r"(?i)upstream|status"])
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.read_response()
    assert r.raw_head[9:12] != code and r.status == 502, r.raw_head
    c2 = H2(gw.port)
    r2 = c2.response(c2.request("/x"))
    got = dict(r2["headers"] or [])[b":status"]
    assert len(got) == 3 and got == b"502", "HTTP/2 :status %r" % got
    c2.close()


# ---------------------------------------------------------------------------
# Dot segments in the spellings upstreams end a segment with: "..;" (Tomcat,
# Spring, Jetty drop path parameters: "/x/..;/admin" is /admin there, the
# "..;/" bypass), "..%2f" and "%2e%2e%2f" (servers that decode %2F before
# normalising), "..\" and "..%5c" (Windows servers, IIS). The gateway refuses
# "/a/../b" and "/a/%2e%2e/b" (test_smuggling: path_dotdot, path_pct_dotdot)
# but passed these: routed by the literal path (public "/x"), served as
# /admin, past the route's key_auth.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/x/..;/admin", b"/x/..%2fadmin", b"/x/%2e%2e%2fadmin",
                                    b"/x/..%5cadmin", b"/x/..\\admin"])
def test_dot_segments_ended_the_upstream_way_are_refused(gateway, upstream, target):
    # 400, or 401 when the gateway normalised the path and routed it to /admin
    raw_get(gateway, upstream, target, (400, 401))


# ---------------------------------------------------------------------------
# Percent-encoded unreserved characters (RFC 3986 section 6.2.2.2: "/%61dmin"
# and "/admin" are the same URI, and every upstream framework decodes it so):
# the router compared the raw bytes, so "/%61dmin" took the public route and
# the upstream served /admin without the route's key_auth.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/%61dmin", b"/adm%69n/users", b"/%61%64%6d%69%6e"])
def test_percent_encoded_unreserved_path_takes_the_decoded_route(gateway, upstream, target):
    raw_get(gateway, upstream, target, (400, 401))


# ---------------------------------------------------------------------------
# Raw bytes >= 0x80 in the target (not percent-encoded): the target is ASCII
# (RFC 9112 section 3.2, RFC 3986 section 2.1); HAProxy refuses them unless
# told otherwise. Forwarded raw, upstreams read them as UTF-8, Latin-1 or an
# error, and a router that matched the raw bytes and an upstream that
# normalises them (Unicode full-width "／" or "．") disagree on the path. Both
# codecs refuse them (400; a stream error or 400 on h2), in the path and the
# query alike.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/caf\xc3\xa9", b"/x?q=\xff", b"/\xef\xbc\x8e\xef\xbc\x8e/admin",
                                    b"/x/\x80"])
def test_raw_non_ascii_bytes_in_the_target_are_refused(gateway, upstream, target):
    r, gw = raw_get(gateway, upstream, target, (400,))
    assert_error(r, "bad_request", 400)


def test_raw_non_ascii_bytes_in_an_h2_path_are_refused(gateway, upstream):
    up = upstream()
    gw = gateway(H2CONF, full=True, up=up)
    c = H2(gw.port)
    try:
        for path in ["/caf\u00e9", "/x?q=\u00ff", "/\uff0e\uff0e/admin"]:
            r = c.response(c.request(path))
            assert status(r) == 400 or r["reset"] is not None, (path, r)
        assert up.requests == [], [q.raw_head for q in up.requests]
        r = c.response(c.request("/caf%C3%A9"))  # percent-encoded: served
        assert status(r) == 200
        assert [q.raw_head.split(b"\r\n")[0] for q in up.requests] == [b"GET /caf%C3%A9 HTTP/1.1"]
    finally:
        c.close()
