"""Routes match the path with escaped unreserved characters decoded
(RFC 3986 section 6.2.2.2; README "request handling"), while the target is
forwarded byte for byte and strip_prefix cuts the raw bytes that matched.
The refusals (dot segments, '#') are in test_attack_http1 and test_smuggling."""

import pytest

from conftest import RawClient, fetch, t


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
