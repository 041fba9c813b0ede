"""Forwarding (DESIGN section 4): bodies, keep-alive both sides, balancing,
chunked both ways, HTTP/1.0, pipelining, 100-continue, bodiless responses,
hop-by-hop removal, X-Forwarded-*, Via, X-Request-Id."""

import re
import threading
import time

from conftest import RawClient, build_request, chunked, fetch, t
from upstream import echo, pattern_sha256

ONE = """\
upstreams:
  u:
    targets: [{address: "$a"}]
routes:
  - name: all
    upstream: u
"""

TWO = """\
upstreams:
  pair:
    targets:
      - {address: "$a", weight: $wa}
      - {address: "$b", weight: $wb}
routes:
  - name: all
    upstream: pair
"""


def one(gateway, upstream, **kw):
    up = upstream(**kw)
    return gateway(ONE, a=up), up


def tokens(value):
    return [x.strip().lower() for x in (value or "").split(",") if x.strip()]


# -- plain forwarding ---------------------------------------------------------

def test_get_forwarded(gateway, upstream):
    gw, up = one(gateway, upstream)
    r = fetch(gw.port, "GET", "/hello/world?x=1&y=%2F")
    assert r.status == 200
    doc = r.json()
    assert doc["method"] == "GET"
    assert doc["path"] == "/hello/world?x=1&y=%2F"
    assert doc["version"] == "HTTP/1.1"
    assert doc["body_length"] == 0
    assert r.header("Content-Type") == "application/json"


def test_post_body_forwarded(gateway, upstream):
    gw, up = one(gateway, upstream)
    body = bytes(range(256)) * 40
    r = fetch(gw.port, "POST", "/submit", [("Content-Type", "application/octet-stream")], body)
    assert r.status == 200
    assert up.requests[0].body == body
    assert r.json()["body_length"] == len(body)


def test_upstream_status_reason_and_headers_pass_through(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        conn.respond(201, b"made", [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                                    ("X-Custom", "v")], reason="Created")
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    r = fetch(gw.port, "POST", "/things", body=b"{}")
    assert (r.status, r.body) == (201, b"made")
    assert r.header_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.header("X-Custom") == "v"


def test_upstream_500_is_passed_through_not_rewritten(gateway, upstream):
    up = upstream(lambda conn, req: (conn.read_body(req), conn.respond(500, b"upstream says no"))[1])
    gw = gateway(ONE, a=up)
    r = fetch(gw.port, "GET", "/")
    assert (r.status, r.body) == (500, b"upstream says no")


def test_duplicate_request_headers_preserved_in_order(gateway, upstream):
    gw, up = one(gateway, upstream)
    fetch(gw.port, "GET", "/", [("X-Multi", "one"), ("X-Multi", "two")])
    vals = up.requests[0].header_all("X-Multi")
    assert ", ".join(vals) == "one, two", vals


def test_large_header_under_limit_forwarded(gateway, upstream):
    gw, up = one(gateway, upstream)
    big = "v" * 8000
    assert fetch(gw.port, "GET", "/", [("X-Big", big)]).status == 200
    assert up.requests[0].header("X-Big") == big


# -- keep-alive and pooling ---------------------------------------------------

def test_keepalive_reuses_one_upstream_connection(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        serials = []
        for i in range(3):
            c.request("GET", "/k/%d" % i)
            r = c.read_response()
            assert r.status == 200 and r.json()["path"] == "/k/%d" % i
            serials.append(r.header("X-Connection"))
    assert serials == ["1", "1", "1"]
    assert up.connection_count == 1


def test_pool_keeps_surplus_connections_briefly(gateway, upstream):
    # keepalive: 1, yet a burst of 6 concurrent requests followed at once by
    # another reuses the 6 connections (closing 5 would make every burst
    # reconnect); a second or so after the burst the pool is back to 1.
    import threading
    up = upstream()
    gw = gateway("""\
upstreams:
  u:
    targets: [{address: "$a"}]
    keepalive: 1
routes:
  - name: all
    upstream: u
""", a=up)

    def burst():
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            fetch(gw.port, "GET", "/slow/300").status)) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert statuses == [200] * 6

    burst()
    assert up.connection_count == 6
    burst()
    assert up.connection_count == 6, "surplus idle connections were closed at once"
    time.sleep(t(2.5))
    burst()
    assert up.connection_count == 11, "the pool did not shrink back to keepalive: 1"


def test_pool_reused_across_client_connections(gateway, upstream):
    gw, up = one(gateway, upstream)
    serials = [fetch(gw.port, "GET", "/p/%d" % i).header("X-Connection") for i in range(3)]
    assert serials == ["1", "1", "1"]
    assert up.connection_count == 1


def test_upstream_connection_close_is_not_reused(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/first/close")
        r1 = c.read_response()
        assert r1.status == 200 and r1.header("X-Connection") == "1"
        assert c.is_open(0.2), "client connection must survive the upstream closing its own"
        c.request("GET", "/second")
        r2 = c.read_response()
        assert r2.status == 200 and r2.header("X-Connection") == "2"


def test_stale_pooled_connection_is_not_used(gateway, upstream):
    # the upstream closes idle keep-alive connections after 200 ms
    gw, up = one(gateway, upstream, idle_close=0.2)
    assert fetch(gw.port, "GET", "/a").header("X-Connection") == "1"
    assert up.wait_connections(1, t(2)) == 1
    deadline = time.monotonic() + t(5)
    while up.conns[0].closed is False and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # let the FIN reach the gateway's pool
    r = fetch(gw.port, "GET", "/b")
    assert r.status == 200, (r, r.body)
    assert r.header("X-Connection") == "2"


def test_client_connection_close_closes_after_response(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/bye", [("Connection", "close")])
        assert c.read_response().status == 200
        assert c.wait_closed() == b""


def test_round_robin_two_targets(gateway, upstream):
    a, b = upstream(name="a"), upstream(name="b")
    gw = gateway(TWO, a=a, b=b, wa=1, wb=1)
    seq = [fetch(gw.port, "GET", "/rr/%d" % i).header("X-Upstream") for i in range(4)]
    assert sorted(seq) == ["a", "a", "b", "b"], seq
    assert seq[0] != seq[1] and seq[1] != seq[2] and seq[2] != seq[3], seq
    assert len(a.requests) == 2 and len(b.requests) == 2


def test_weighted_round_robin(gateway, upstream):
    a, b = upstream(name="a"), upstream(name="b")
    gw = gateway(TWO, a=a, b=b, wa=1, wb=2)
    seq = [fetch(gw.port, "GET", "/w/%d" % i).header("X-Upstream") for i in range(6)]
    assert seq.count("a") == 2 and seq.count("b") == 4, seq


def test_round_robin_on_one_client_connection(gateway, upstream):
    a, b = upstream(name="a"), upstream(name="b")
    gw = gateway(TWO, a=a, b=b, wa=1, wb=1)
    with RawClient(gw.port) as c:
        seq = []
        for i in range(4):
            c.request("GET", "/c/%d" % i)
            seq.append(c.read_response().header("X-Upstream"))
    assert sorted(seq) == ["a", "a", "b", "b"], seq


# -- chunked, HTTP/1.0, pipelining, 100-continue ------------------------------

def test_chunked_request_body_arrives_intact(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/chunky", [("Transfer-Encoding", "chunked")])
               + chunked("hello ", "chunked ", "x" * 5000, " world"))
        r = c.read_response()
    assert r.status == 200
    assert up.requests[0].body == b"hello chunked " + b"x" * 5000 + b" world"


def test_chunked_request_body_sent_in_pieces(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/pieces", [("Transfer-Encoding", "chunked")]))
        for piece in (b"5\r\nab", b"cde\r", b"\n3;ext=1\r\nxyz\r\n", b"0\r", b"\n\r\n"):
            c.send(piece)
            time.sleep(0.02)
        r = c.read_response()
    assert r.status == 200
    assert up.requests[0].body == b"abcdexyz"


def test_chunked_response_streamed_and_connection_kept(gateway, upstream):
    gw, up = one(gateway, upstream)
    n = 300000
    with RawClient(gw.port) as c:
        c.request("GET", "/stream/%d?chunked=1" % n)
        r = c.read_response()
        assert r.status == 200
        assert r.body_length == n and r.body_sha256 == pattern_sha256(n)
        assert r.framing == "chunked", "unknown-length response to an HTTP/1.1 client should stay chunked"
        c.request("GET", "/after")
        assert c.read_response().json()["path"] == "/after"


def test_content_length_response_streamed(gateway, upstream):
    gw, up = one(gateway, upstream)
    n = 1000003
    r = fetch(gw.port, "GET", "/stream/%d" % n)
    assert r.status == 200 and r.framing == "length"
    assert r.header("Content-Length") == str(n)
    assert r.body_sha256 == pattern_sha256(n)


def test_http10_client_gets_unchunked_response_and_close(gateway, upstream):
    gw, up = one(gateway, upstream)
    n = 70000
    with RawClient(gw.port) as c:
        c.request("GET", "/stream/%d?chunked=1" % n, version="HTTP/1.0")
        r = c.read_response()
        assert r.status == 200
        assert r.framing in ("close", "length"), "HTTP/1.0 client must not get chunked: %r" % r
        assert r.body_length == n and r.body_sha256 == pattern_sha256(n)
        c.wait_closed()


def test_http10_client_content_length_response_then_close(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/ten", version="HTTP/1.0")
        r = c.read_response()
        assert r.status == 200 and r.framing in ("close", "length")
        assert r.json()["path"] == "/ten"
        assert c.wait_closed() == b""


def test_pipelined_requests_answered_in_order(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("GET", "/slow/200") + build_request("GET", "/p2")
               + build_request("POST", "/p3", body=b"third"))
        paths = [c.read_response().json()["path"] for _ in range(3)]
    assert paths == ["/slow/200", "/p2", "/p3"]
    assert up.requests[2].body == b"third"


def test_pipelined_requests_split_across_writes(gateway, upstream):
    gw, up = one(gateway, upstream)
    data = b"".join(build_request("GET", "/s/%d" % i) for i in range(5))
    with RawClient(gw.port) as c:
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
        paths = [c.read_response().json()["path"] for _ in range(5)]
    assert paths == ["/s/%d" % i for i in range(5)]


def test_expect_100_continue(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/upload", [("Expect", "100-continue"), ("Content-Length", "11")]))
        first = c.read_response()
        assert first.status == 100, "expected 100 Continue before sending the body, got %r" % first
        assert first.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n")
        c.send(b"hello world")
        interim, final = c.read_final_response()
        assert final.status == 200
        assert final.json()["body"] == "hello world"
        c.request("GET", "/next")
        assert c.read_response().json()["path"] == "/next"


# -- responses without a body --------------------------------------------------

def assert_nothing_more_then_usable(c):
    assert c.is_open(0.3) and not c.buf, "stray bytes after a bodiless response: %r" % bytes(c.buf[:100])
    c.request("GET", "/after")
    r = c.read_response()
    assert r.status == 200 and r.json()["path"] == "/after"


def test_head_response_has_no_body(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("HEAD", "/stream/5000")
        r = c.read_response("HEAD")
        assert r.status == 200
        assert r.header("Content-Length") == "5000"
        assert_nothing_more_then_usable(c)


def test_204_has_no_body(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("DELETE", "/status/204")
        r = c.read_response()
        assert r.status == 204
        assert not r.has_header("Transfer-Encoding") and not r.has_header("Content-Length"), r.headers
        assert_nothing_more_then_usable(c)


def test_304_has_no_body(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/status/304", [("If-None-Match", '"v1"')])
        r = c.read_response()
        assert r.status == 304 and r.header("ETag") == '"v1"'
        assert not r.has_header("Transfer-Encoding"), r.headers
        assert_nothing_more_then_usable(c)


# -- hop-by-hop headers --------------------------------------------------------

HOP_BY_HOP = ("keep-alive", "proxy-connection", "te", "trailer", "upgrade")


def test_hop_by_hop_request_headers_removed(gateway, upstream):
    gw, up = one(gateway, upstream)
    fetch(gw.port, "GET", "/", [
        ("Connection", "keep-alive, X-Secret, X-Other"),
        ("X-Secret", "client-secret"),
        ("X-Other", "client-other"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Trailer"),
        ("Upgrade", "foo/1"),
        ("X-Normal", "kept"),
    ])
    req = up.requests[0]
    for name in HOP_BY_HOP + ("x-secret", "x-other"):
        assert not req.has_header(name), "%s reached the upstream:\n%s" % (name, req.raw_head.decode())
    assert "x-secret" not in req.connection_tokens() and "x-other" not in req.connection_tokens()
    assert req.header("X-Normal") == "kept"


def test_client_cannot_strip_gateway_headers_via_connection(gateway, upstream):
    gw, up = one(gateway, upstream)
    r = fetch(gw.port, "GET", "/", [
        ("Connection", "X-Forwarded-For, Via, X-Request-Id, X-Forwarded-Proto, X-Forwarded-Host"),
        ("X-Forwarded-For", "6.6.6.6"),
    ])
    req = up.requests[0]
    assert req.header_all("X-Forwarded-For") == ["127.0.0.1"], req.raw_head.decode()
    assert tokens(req.header("Via"))[-1:] == ["1.1 moongate"], req.raw_head.decode()
    assert req.header("X-Forwarded-Proto") == "http"
    assert req.header("X-Forwarded-Host") == "gw.test"
    assert req.header("X-Request-Id") and req.header("X-Request-Id") == r.header("X-Request-Id")


def test_hop_by_hop_response_headers_removed(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/hop")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hop"
        for name in HOP_BY_HOP + ("x-secret", "x-other-secret"):
            assert not r.has_header(name), "%s reached the client:\n%s" % (name, r.raw_head.decode())
        conn_tokens = tokens(",".join(r.header_all("Connection")))
        assert "x-secret" not in conn_tokens and "x-other-secret" not in conn_tokens
        assert r.header("X-Kept") == "yes"
        c.request("GET", "/again")
        assert c.read_response().status == 200


# -- X-Forwarded-*, Via, X-Request-Id ------------------------------------------

def test_x_forwarded_headers_set(gateway, upstream):
    gw, up = one(gateway, upstream)
    fetch(gw.port, "GET", "/", host="shop.test:8080")
    req = up.requests[0]
    assert req.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert req.header_all("X-Forwarded-Proto") == ["http"]
    assert req.header_all("X-Forwarded-Host") == ["shop.test:8080"]


def test_x_forwarded_for_ends_with_client_address(gateway, upstream):
    gw, up = one(gateway, upstream)
    fetch(gw.port, "GET", "/", [("X-Forwarded-For", "10.1.2.3")])
    xff = tokens(",".join(up.requests[0].header_all("X-Forwarded-For")))
    assert xff[-1] == "127.0.0.1", xff


def test_client_cannot_spoof_forwarded_proto(gateway, upstream):
    gw, up = one(gateway, upstream)
    fetch(gw.port, "GET", "/", [("X-Forwarded-Proto", "https")])
    assert up.requests[0].header_all("X-Forwarded-Proto") == ["http"]


def test_via_added_both_ways(gateway, upstream):
    gw, up = one(gateway, upstream)
    r = fetch(gw.port, "GET", "/")
    assert tokens(up.requests[0].header("Via")) == ["1.1 moongate"]
    assert tokens(",".join(r.header_all("Via")))[-1:] == ["1.1 moongate"], r.headers


def test_via_appended_to_existing(gateway, upstream):
    gw, up = one(gateway, upstream)
    fetch(gw.port, "GET", "/", [("Via", "1.0 fred")])
    assert tokens(",".join(up.requests[0].header_all("Via"))) == ["1.0 fred", "1.1 moongate"]


def test_request_id_kept(gateway, upstream):
    gw, up = one(gateway, upstream)
    r = fetch(gw.port, "GET", "/", [("X-Request-Id", "req-abc-123")])
    assert up.requests[0].header_all("X-Request-Id") == ["req-abc-123"]
    assert r.header_all("X-Request-Id") == ["req-abc-123"]


def test_request_id_generated_and_unique(gateway, upstream):
    gw, up = one(gateway, upstream)
    r1 = fetch(gw.port, "GET", "/1")
    r2 = fetch(gw.port, "GET", "/2")
    id1, id2 = up.requests[0].header("X-Request-Id"), up.requests[1].header("X-Request-Id")
    assert id1 and id2 and id1 != id2
    assert re.fullmatch(r"[\x21-\x7e]{8,200}", id1), id1
    assert r1.header("X-Request-Id") == id1 and r2.header("X-Request-Id") == id2


def test_invalid_request_id_is_replaced(gateway, upstream):
    gw, up = one(gateway, upstream)
    for bad in ('has space and "quotes"', "x" * 1000):
        r = fetch(gw.port, "GET", "/", [("X-Request-Id", bad)])
        sent = up.requests[-1].header_all("X-Request-Id")
        assert len(sent) == 1 and sent[0] != bad and sent[0], sent
        assert r.header("X-Request-Id") == sent[0]


def test_absolute_form_request_target(gateway, upstream):
    # RFC 9112 section 3.2.2: a server MUST accept the absolute form
    gw, up = one(gateway, upstream)
    r = fetch(gw.port, "GET", "http://gw.test/abs/path?q=1")
    assert r.status == 200, (r, r.body[:200])
    assert up.requests[0].target == "/abs/path?q=1"


# -- unusual upstream responses -------------------------------------------------

def test_upstream_trailers_keep_chunked_response_valid(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        conn.send_head(200, [("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum")])
        conn.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n")
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port) as c:
        c.request("GET", "/t")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"hello world")
        c.request("GET", "/t2")
        assert c.read_response().body == b"hello world"


def test_upstream_close_delimited_response(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"until close " * 1000)
        conn.close()
        return False
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port) as c:
        c.request("GET", "/old")
        r = c.read_response()
        assert r.status == 200 and r.body == b"until close " * 1000
        if r.framing != "close":  # re-framed for the client: the connection goes on
            c.request("GET", "/old")
            assert c.read_response().body == b"until close " * 1000
    assert up.connection_count >= 1


def test_upstream_interim_1xx_then_final(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n"
                  b"Connection: X-Hop\r\nX-Hop: 1\r\n\r\n")
        conn.respond(200, b"final")
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port) as c:
        c.request("GET", "/hints")
        interim, final = c.read_final_response()
        assert (final.status, final.body) == (200, b"final")
        assert [(r.status, r.reason, r.headers) for r in interim] == [
            (103, "Early Hints", [("Link", "</style.css>; rel=preload")])]
        c.request("GET", "/again")
        assert c.read_final_response()[1].body == b"final"


def test_reason_phrase_with_control_bytes_is_replaced(gateway, upstream):
    # llhttp 8.1 passes NUL and DEL in the status text; RFC 9112 section 4 allows
    # only HTAB, SP, VCHAR and obs-text there. Such a phrase must not reach the
    # client: the gateway writes its own (interim and final alike), while a
    # valid phrase with obs-text and a tab passes through unchanged.
    def handler(conn, req):
        conn.read_body(req)
        if req.path == "/bad":
            conn.send(b"HTTP/1.1 103 Ear\x00ly\r\nLink: </a.js>; rel=preload\r\n\r\n"
                      b"HTTP/1.1 200 O\x7fK\x01\r\nContent-Length: 2\r\n\r\nok")
        else:
            conn.send(b"HTTP/1.1 200 Tr\xe8s\tbien\r\nContent-Length: 2\r\n\r\nok")
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port) as c:
        c.request("GET", "/bad")
        interim, final = c.read_final_response()
        assert [(r.status, r.reason) for r in interim] == [(103, "Early Hints")]
        assert (final.status, final.reason, final.body) == (200, "OK", b"ok")
        c.request("GET", "/good")
        interim, final = c.read_final_response()
        assert (final.status, final.reason, final.body) == (200, "Tr\xe8s\tbien", b"ok")


def test_103_reaches_the_client_before_the_final_response_exists(gateway, upstream):
    # RFC 9110 section 15.2: a proxy forwards 1xx responses. The upstream sends
    # 103 and holds its 200 until the client has seen the 103.
    seen = threading.Event()

    def handler(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 102 Processing\r\n\r\n"
                  b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n")
        seen.wait(t(5))
        conn.respond(200, b"late" if seen.is_set() else b"too early")
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port) as c:
        c.request("GET", "/hints")
        assert c.read_response().status == 102
        hints = c.read_response()
        assert (hints.status, hints.header("Link")) == (103, "</a.js>; rel=preload")
        seen.set()
        final = c.read_response()
        assert (final.status, final.body) == (200, b"late")


def test_interim_not_sent_to_http10_clients_nor_upstream_100(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\n")
        conn.respond(200, b"final")
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port) as c:  # HTTP/1.0 knows no 1xx (RFC 9110 section 15.2)
        c.request("GET", "/old", version="HTTP/1.0")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"final")
    with RawClient(gw.port) as c:  # a 100 nobody asked the gateway for is not passed on
        c.request("GET", "/new")
        interim, final = c.read_final_response()
        assert [r.status for r in interim] == [103]
    with RawClient(gw.port) as c:  # Expect: the gateway's own 100, then the upstream's 103
        c.send(build_request("POST", "/up", [("Expect", "100-continue"), ("Content-Length", "2")]))
        assert c.read_response().status == 100
        c.send(b"hi")
        interim, final = c.read_final_response("POST")
        assert [r.status for r in interim] == [103]
        assert final.status == 200


def test_early_upstream_response_is_relayed_before_body_is_sent(gateway, upstream):
    def handler(conn, req):
        conn.respond(403, b"forbidden early")  # answers on the head alone ...
        conn.read_body(req)                     # ... then drains the body
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.send(build_request("POST", "/early", [("Content-Length", "20000")]))
        r = c.read_response()
        assert (r.status, r.body) == (403, b"forbidden early")
        try:
            c.send(b"z" * 20000)
        except OSError:
            pass  # the gateway may close instead of reading the rest
    assert fetch(gw.port, "GET", "/after").status == 403


# -- clients that go away -------------------------------------------------------

def test_client_abort_mid_download_does_not_poison_the_pool(gateway, upstream):
    gw, up = one(gateway, upstream)
    c = RawClient(gw.port)
    c.request("GET", "/stream/%d" % (50 << 20))
    c.read_head()
    c._fill()
    c.close()
    for i in range(3):
        r = fetch(gw.port, "GET", "/next/%d" % i)
        assert r.status == 200 and r.json()["path"] == "/next/%d" % i, (r, r.body[:100])


def test_client_abort_mid_upload(gateway, upstream):
    gw, up = one(gateway, upstream)
    c = RawClient(gw.port)
    c.send(build_request("POST", "/partial", [("Content-Length", "100000")]) + b"a" * 5000)
    assert up.wait_requests(1, t(5))
    c.close()
    for i in range(3):
        r = fetch(gw.port, "POST", "/next/%d" % i, body=b"b" * 100)
        assert r.status == 200 and r.json()["body_length"] == 100


# -- more framing -----------------------------------------------------------------

def test_get_with_body_forwarded(gateway, upstream):
    gw, up = one(gateway, upstream)
    r = fetch(gw.port, "GET", "/search", body=b'{"q":"x"}')
    assert r.status == 200 and up.requests[0].body == b'{"q":"x"}'


def test_chunked_request_with_trailers(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/tr", [("Transfer-Encoding", "chunked"), ("Trailer", "X-Sum")])
               + b"3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n")
        assert c.read_response().status == 200
        c.request("GET", "/after")
        assert c.read_response().json()["path"] == "/after"
    assert up.requests[0].body == b"abc"


def test_pipelined_connection_close_stops_the_pipeline(gateway, upstream):
    gw, up = one(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("GET", "/a") + build_request("GET", "/b", [("Connection", "close")])
               + build_request("GET", "/c"))
        assert c.read_response().json()["path"] == "/a"
        assert c.read_response().json()["path"] == "/b"
        assert c.wait_closed() == b""
    assert [r.path for r in up.requests] == ["/a", "/b"]


def test_concurrent_clients_get_their_own_responses(gateway, upstream):
    import threading
    a, b = upstream(name="a"), upstream(name="b")
    gw = gateway(TWO, a=a, b=b, wa=1, wb=1)
    errors = []

    def client(n):
        try:
            with RawClient(gw.port) as c:
                for i in range(10):
                    body = b"%d-%d" % (n, i) * (i + 1)
                    c.request("POST", "/c%d/r%d" % (n, i), body=body)
                    r = c.read_response()
                    doc = r.json()
                    if r.status != 200 or doc["path"] != "/c%d/r%d" % (n, i) or doc["body"] != body.decode():
                        errors.append((n, i, r.status, doc.get("path")))
        except Exception as e:  # reported below
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(24)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(30))
    assert not any(th.is_alive() for th in threads), "clients still running"
    assert not errors, errors[:5]
    assert len(a.requests) + len(b.requests) == 240


def test_extra_bytes_after_upstream_response_do_not_desync_the_pool(gateway, upstream):
    # The upstream answers its first request with a complete response followed by
    # unsolicited bytes shaped like a second response. They must not reach the
    # client, and that connection must not be reused (or the next client would
    # get the planted response).
    first = [True]

    def handler(conn, req):
        conn.read_body(req)
        if first[0]:
            first[0] = False
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Connection: %d\r\n\r\nhello"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED" % conn.serial)
            return None
        return echo(conn, req)

    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port) as c:
        c.request("GET", "/first")
        assert c.read_response().body == b"hello"
        c.request("GET", "/second")
        r = c.read_response()
        assert r.body != b"POISONED" and r.json()["path"] == "/second", r.body[:200]
    r = fetch(gw.port, "GET", "/third")
    assert r.body != b"POISONED" and r.json()["path"] == "/third", r.body[:200]


def test_304_with_content_length_has_no_body(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        if req.path == "/cached":
            conn.send_head(304, [("ETag", '"x"'), ("Content-Length", "1234")])
        else:
            conn.respond(200, b"fresh")
    up = upstream(handler)
    gw = gateway(ONE, a=up)
    with RawClient(gw.port, timeout=t(3)) as c:
        c.request("GET", "/cached")
        r = c.read_response()
        assert r.status == 304
        c.request("GET", "/other")
        assert c.read_response().body == b"fresh"


def test_obs_text_header_value_forwarded_byte_exact(gateway, upstream):
    gw, up = one(gateway, upstream)
    value = "caf\xc3\xa9 \xff"  # latin-1 view of raw bytes
    assert fetch(gw.port, "GET", "/", [("X-Raw", value)]).status == 200
    assert up.requests[0].header("X-Raw") == value
