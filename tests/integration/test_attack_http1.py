"""Hostile HTTP/1.1 clients (attack pass): request targets the router and the
upstream read differently. What the upstream received is checked byte for byte."""

import pytest

from conftest import RawClient, assert_error, fetch, t

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


# ---------------------------------------------------------------------------
# a fragment in the request target (RFC 9112 section 3.2: origin-form has no
# fragment; HAProxy CVE-2023-45539): the router matched "/admin#x" as a path
# that is not "/admin", the upstream's URL parser (Python, Node, Rails...)
# drops the fragment and serves /admin: the route's key_auth was skipped.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/admin#x", b"/x#/admin"])
def test_fragment_in_request_target_is_refused(gateway, upstream, target):
    up = upstream()
    gw = gateway(CONF, up=up)
    assert fetch(gw.port, "GET", "/admin").status == 401  # the route is protected
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.read_response()
    assert r.status == 400, "target %r got %r; the upstream received %r" % (
        target, r, [q.raw_head.split(b"\r\n")[0] for q in up.requests])
    assert_error(r, "bad_request", 400)
    assert up.requests == []


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
    up = upstream()
    gw = gateway(CONF, up=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.read_response()
    assert r.status == 400, "target %r got %r; the upstream received %r" % (
        target, r, [q.raw_head.split(b"\r\n")[0] for q in up.requests])
    assert up.requests == []


# ---------------------------------------------------------------------------
# Percent-encoded unreserved characters (RFC 3986 section 6.2.2.2: "/%61dmin"
# and "/admin" are the same URI, and every upstream framework decodes it so):
# the router compared the raw bytes, so "/%61dmin" took the public route and
# the upstream served /admin without the route's key_auth.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/%61dmin", b"/adm%69n/users", b"/%61%64%6d%69%6e"])
def test_percent_encoded_unreserved_path_takes_the_decoded_route(gateway, upstream, target):
    up = upstream()
    gw = gateway(CONF, up=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.read_response()
    assert r.status in (400, 401), "target %r got %r; the upstream received %r" % (
        target, r, [q.raw_head.split(b"\r\n")[0] for q in up.requests])
    assert up.requests == []


STRIP = """\
upstreams:
  u: {targets: [{address: "$up"}], retry: {max_retries: 0}}
routes:
  - name: api
    match: {paths: ["/api/"]}
    upstream: u
    strip_prefix: true
  - name: admin
    match: {paths: ["/%61dmin"]}
    upstream: u
    plugins: [{name: key_auth, config: {keys: ["k"]}}]
  - name: all
    upstream: u
"""


@pytest.mark.parametrize("target,forwarded", [
    (b"/%61dmin/x?q=%61", b"/%61dmin/x?q=%61"),  # the bytes as received
    (b"/adm%69n", b"/adm%69n"),
    (b"/%61p%69/v1/%2fx", b"/v1/%2fx"),         # strip_prefix cuts the raw bytes of "/api"
    (b"/api/%76%31", b"/%76%31"),
])
def test_decoded_route_still_forwards_the_target_as_received(gateway, upstream, target, forwarded):
    up = upstream()
    gw = gateway(STRIP, up=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: gw.test\r\nX-Api-Key: k\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert up.requests[0].raw_head.split(b"\r\n")[0] == b"GET " + forwarded + b" HTTP/1.1"
    r = fetch(gw.port, "GET", "/admin")  # the configured "/%61dmin" is the /admin route
    assert r.status == 401
