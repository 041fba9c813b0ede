"""What a plugin sets obeys the rules a client's request obeys (attack pass).

- ctx:set_path (and request_transformer's rewrite_path, and gw.http.request's
  path) refuse what the request codecs refuse in a client's target: dot
  segments in every spelling, '\\', '%00', '#', raw bytes >= 0x80. A plugin
  doing ctx:set_path("/static/" .. user_input) must not forward
  "/static/../admin": the plugin's error is a 500 and nothing reaches the
  upstream (its raw bytes are checked).
- header values a plugin sets lose their leading and trailing SP/HTAB (RFC
  9110 section 5.5; RFC 9113 section 8.2.1 makes them malformed over h2), so
  h1 and h2 clients receive the same value.
"""

import pytest

from conftest import H2_PREAMBLE, RawClient, assert_error, fetch, t
from test_http2 import H2, header, status

CONF = H2_PREAMBLE + """\
plugin_path: ["$plugins"]
upstreams:
  u: {targets: [{address: "$up"}], retry: {max_retries: 0}}
routes:
  - name: static
    match: {paths: ["/static"]}
    upstream: u
    plugins: [{name: rewrite}]
  - name: rt
    match: {paths: ["/v1"]}
    upstream: u
    plugins: [{name: request_transformer,
               config: {rewrite_path: {pattern: "^/v1/([^-]*)%-(.*)$$", replacement: "/api/%1/%2"}}}]
  - name: hdr
    match: {paths: ["/hdr"]}
    upstream: u
    plugins: [{name: spaces}]
  - name: sub
    match: {paths: ["/sub"]}
    upstream: u
    plugins: [{name: sub}]
"""

# The file name the client asks for lands in the path: what an unwary
# plugin does.
REWRITE = """
local P = {}
function P.access(ctx)
  local ok, err = pcall(ctx.set_path, ctx, "/files/" .. ctx:header("X-File"))
  if not ok then
    ctx:respond(500, "refused: " .. tostring(err))
  end
end
return P
"""

SPACES = """
local P = {}
function P.access(ctx)
  ctx:set_header("X-Req", " \\t padded req \\t ")
  if ctx:header("X-Respond") then
    ctx:respond(200, "own", {["X-Own"] = "  own value\\t"})
  end
end
function P.response(ctx)
  ctx:set_response_header("X-Set", "  set value  ")
  ctx:add_response_header("X-Add", "\\tadded\\t")
  ctx:set_response_header(gw.header("X-Prep", " prepared "))
  ctx:set_response_header("X-Inner", "a  b")
  ctx:set_response_header("X-Blank", "   ")
end
return P
"""

SUB = """
local P = {}
function P.access(ctx)
  local ok, err = pcall(gw.http.request, {upstream = "u", path = ctx:header("X-Sub")})
  ctx:respond(200, ok and "sent" or ("refused: " .. tostring(err)))
end
return P
"""


def start(gateway, upstream, tmp_path):
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / "rewrite.lua").write_text(REWRITE)
    (d / "spaces.lua").write_text(SPACES)
    (d / "sub.lua").write_text(SUB)
    up = upstream()
    gw = gateway(CONF, full=True, up=up, plugins=str(d), allow_errors=[r"ctx:set_path"])
    return gw, up


def targets(up):
    return [q.raw_head.split(b"\r\n")[0] for q in up.requests]


BAD_NAMES = ["../admin", "..;/admin", "%2e%2e/admin", "%2E./admin", "..%2fadmin",
             "..%5cadmin", "..\\admin", "a\\b", "x/./y", "..", "a%00", "a#b",
             "caf\xc3\xa9", "a?b"]


def test_set_path_refuses_what_a_client_target_may_not_hold(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path)
    for name in BAD_NAMES:
        r = fetch(gw.port, "GET", "/static", headers=[("X-File", name)])
        assert r.status == 500, (name, r.status, r.body, targets(up))
        assert b"ctx:set_path" in r.body and b"refused" in r.body, (name, r.body)
    assert up.requests == [], targets(up)  # nothing was forwarded, in any spelling
    r = fetch(gw.port, "GET", "/static", headers=[("X-File", "../admin")])
    assert b"dot segment" in r.body, r.body  # the error says why
    r = fetch(gw.port, "GET", "/static", headers=[("X-File", "caf\xc3\xa9")])
    assert b">= 0x80" in r.body, r.body
    # a normal rewrite still goes through, byte for byte
    r = fetch(gw.port, "GET", "/static?q=1", headers=[("X-File", "a.css")])
    assert r.status == 200, r.body
    assert targets(up) == [b"GET /files/a.css?q=1 HTTP/1.1"]


def test_request_transformer_rewrite_cannot_forward_a_dot_segment(gateway, upstream, tmp_path):
    """"/v1/..-admin" is a clean target (its segment is "..-admin"); the route's
    rewrite makes "/api/../admin" of it: refused, as the same target from a
    client would be."""
    gw, up = start(gateway, upstream, tmp_path)
    assert fetch(gw.port, "GET", "/v1/users-7").status == 200
    assert targets(up) == [b"GET /api/users/7 HTTP/1.1"]
    for path in ["/v1/..-admin", "/v1/.-admin", "/v1/%2e%2e-admin"]:
        assert_error(fetch(gw.port, "GET", path), "plugin_error", 500)
    assert targets(up) == [b"GET /api/users/7 HTTP/1.1"]
    assert "ctx:set_path (refused: it holds a dot segment" in gw.log()


def test_gw_http_request_path_obeys_the_same_rules(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path)
    for bad in ["/check/../admin", "/check/%2e%2e%2fadmin", "/check\\x", "/caf\xc3\xa9",
                "/a#b", "check"]:
        r = fetch(gw.port, "GET", "/sub", headers=[("X-Sub", bad)])
        assert r.status == 200 and r.body.startswith(b"refused: "), (bad, r.body)
        assert b"path is refused" in r.body, r.body
    assert up.requests == [], targets(up)
    r = fetch(gw.port, "GET", "/sub", headers=[("X-Sub", "/check?u=/../x")])
    assert r.body == b"sent", r.body  # a query is not a path: no dot segment there
    assert targets(up) == [b"GET /check?u=/../x HTTP/1.1"]


def test_plugin_header_values_lose_surrounding_whitespace_on_h1(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(b"GET /hdr HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    head = r.raw_head
    for line in (b"\r\nX-Set: set value\r\n", b"\r\nX-Add: added\r\n",
                 b"\r\nX-Prep: prepared\r\n", b"\r\nX-Inner: a  b\r\n", b"\r\nX-Blank: \r\n"):
        assert line in head, (line, head)
    assert b"\r\nX-Req: padded req\r\n" in up.requests[0].raw_head, up.requests[0].raw_head
    r = fetch(gw.port, "GET", "/hdr", headers=[("X-Respond", "1")])
    assert r.header("x-own") == "own value"
    assert b"\r\nX-Own: own value\r\n" in r.raw_head, r.raw_head


def test_plugin_header_values_lose_surrounding_whitespace_on_h2(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path)
    c = H2(gw.port)
    try:
        r = c.response(c.request("/hdr"))
        assert status(r) == 200
        assert header(r, "x-set") == b"set value"
        assert header(r, "x-add") == b"added"
        assert header(r, "x-prep") == b"prepared"
        assert header(r, "x-inner") == b"a  b"
        assert header(r, "x-blank") == b""
        r = c.response(c.request("/hdr", headers=[("x-respond", "1")]))
        assert header(r, "x-own") == b"own value"
    finally:
        c.close()
