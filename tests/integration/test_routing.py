"""Routing (DESIGN sections 3 and 4): hosts exact and wildcard, longest prefix,
methods, strip_prefix, 404 no_route."""

from conftest import assert_error, fetch

HOSTS = """\
upstreams:
  exact: {targets: [{address: "$a"}]}
  wild: {targets: [{address: "$b"}]}
  other: {targets: [{address: "$c"}]}
routes:
  - name: by-exact-host
    match: {hosts: ["api.example.com"], paths: ["/"]}
    upstream: exact
  - name: by-wildcard-host
    match: {hosts: ["*.example.org"], paths: ["/"]}
    upstream: wild
  - name: any-host
    match: {paths: ["/"]}
    upstream: other
"""


def hosts_gateway(gateway, upstream):
    a, b, c = upstream(name="exact"), upstream(name="wild"), upstream(name="other")
    return gateway(HOSTS, a=a, b=b, c=c)


def served_by(gw, path="/", host="gw.test", method="GET"):
    r = fetch(gw.port, method, path, host=host)
    assert r.status == 200, (r, r.body[:200])
    return r.header("X-Upstream")


def test_exact_host(gateway, upstream):
    gw = hosts_gateway(gateway, upstream)
    assert served_by(gw, host="api.example.com") == "exact"


def test_exact_host_ignores_case_and_port(gateway, upstream):
    gw = hosts_gateway(gateway, upstream)
    assert served_by(gw, host="API.Example.COM:%d" % gw.port) == "exact"


def test_wildcard_host(gateway, upstream):
    gw = hosts_gateway(gateway, upstream)
    assert served_by(gw, host="eu.example.org") == "wild"


def test_wildcard_does_not_match_bare_domain(gateway, upstream):
    gw = hosts_gateway(gateway, upstream)
    assert served_by(gw, host="example.org") == "other"


def test_unlisted_host_falls_to_route_without_hosts(gateway, upstream):
    gw = hosts_gateway(gateway, upstream)
    assert served_by(gw, host="api.example.com.evil.test") == "other"


PREFIXES = """\
upstreams:
  v1: {targets: [{address: "$a"}]}
  v2: {targets: [{address: "$b"}]}
routes:
  - name: api
    match: {paths: ["/api"]}
    upstream: v1
  - name: api-v2
    match: {paths: ["/api/v2"]}
    upstream: v2
"""


def prefix_gateway(gateway, upstream):
    return gateway(PREFIXES, a=upstream(name="v1"), b=upstream(name="v2"))


def test_longest_prefix_wins(gateway, upstream):
    gw = prefix_gateway(gateway, upstream)
    assert served_by(gw, "/api/v2/items") == "v2"
    assert served_by(gw, "/api/v2") == "v2"
    assert served_by(gw, "/api/v1/items") == "v1"
    assert served_by(gw, "/api") == "v1"


def test_prefix_matches_at_segment_boundary(gateway, upstream):
    gw = prefix_gateway(gateway, upstream)
    assert served_by(gw, "/api/v2x") == "v1"
    assert served_by(gw, "/api/v2?x=1") == "v2"


def test_no_route_is_404_json(gateway, upstream):
    gw = prefix_gateway(gateway, upstream)
    r = fetch(gw.port, "GET", "/apix")
    doc = assert_error(r, "no_route", 404)
    assert r.header("X-Request-Id") == doc["request_id"]


def test_no_route_other_path(gateway, upstream):
    gw = prefix_gateway(gateway, upstream)
    assert_error(fetch(gw.port, "GET", "/"), "no_route", 404)


def test_no_route_keeps_connection_usable(gateway, upstream):
    from conftest import RawClient
    gw = prefix_gateway(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/nothing-here")
        assert_error(c.read_response(), "no_route", 404)
        c.request("GET", "/api/x")
        r = c.read_response()
        assert r.status == 200 and r.header("X-Upstream") == "v1"


METHODS = """\
upstreams:
  reads: {targets: [{address: "$a"}]}
  writes: {targets: [{address: "$b"}]}
routes:
  - name: read
    match: {paths: ["/m"], methods: [GET, HEAD]}
    upstream: reads
  - name: write
    match: {paths: ["/m"], methods: [POST]}
    upstream: writes
"""


def test_methods_select_route(gateway, upstream):
    gw = gateway(METHODS, a=upstream(name="reads"), b=upstream(name="writes"))
    assert served_by(gw, "/m") == "reads"
    r = fetch(gw.port, "POST", "/m", body=b"x")
    assert r.status == 200 and r.header("X-Upstream") == "writes"


def test_method_not_listed_is_no_route(gateway, upstream):
    gw = gateway(METHODS, a=upstream(name="reads"), b=upstream(name="writes"))
    assert_error(fetch(gw.port, "DELETE", "/m"), "no_route", 404)


STRIP = """\
upstreams:
  svc: {targets: [{address: "$a"}]}
routes:
  - name: stripped
    match: {paths: ["/svc"]}
    strip_prefix: true
    upstream: svc
  - name: kept
    match: {paths: ["/keep"]}
    strip_prefix: false
    upstream: svc
"""


def test_strip_prefix(gateway, upstream):
    gw = gateway(STRIP, a=upstream())
    assert fetch(gw.port, "GET", "/svc/items/7?x=1&y=2").json()["path"] == "/items/7?x=1&y=2"


def test_strip_prefix_whole_path_becomes_root(gateway, upstream):
    gw = gateway(STRIP, a=upstream())
    assert fetch(gw.port, "GET", "/svc").json()["path"] == "/"
    assert fetch(gw.port, "GET", "/svc?q=1").json()["path"] == "/?q=1"


def test_no_strip_keeps_path(gateway, upstream):
    gw = gateway(STRIP, a=upstream())
    assert fetch(gw.port, "GET", "/keep/a?b=c").json()["path"] == "/keep/a?b=c"


CATCH_ALL = """\
upstreams:
  u: {targets: [{address: "$a"}]}
routes:
  - name: all
    upstream: u
"""


def test_route_without_match_takes_everything(gateway, upstream):
    gw = gateway(CATCH_ALL, a=upstream())
    for path in ("/", "/a/b/c", "/x?y=z"):
        assert fetch(gw.port, "GET", path, host="whatever.test").json()["path"] == path
    assert fetch(gw.port, "PATCH", "/p", body=b"1").status == 200


def test_head_error_response_has_no_body(gateway, upstream):
    from conftest import RawClient
    gw = prefix_gateway(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("HEAD", "/nothing-here")
        r = c.read_response("HEAD")
        assert r.status == 404
        assert c.is_open(0.3) and not c.buf, "a body followed the HEAD error: %r" % bytes(c.buf[:100])
        c.request("GET", "/api/x")
        assert c.read_response().status == 200


def test_no_route_for_http10_client_closes(gateway, upstream):
    from conftest import RawClient
    gw = prefix_gateway(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/nothing-here", version="HTTP/1.0")
        assert_error(c.read_response(), "no_route", 404)
        assert c.wait_closed() == b""
