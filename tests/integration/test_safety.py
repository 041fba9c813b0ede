"""Hostile and broken peers (DESIGN section 4): request smuggling defences,
size and time limits on the client side, broken upstreams. Every test ends by
checking that the gateway still proxies a normal request."""

import time

import pytest

from conftest import (IncompleteResponse, RawClient, assert_error, assert_serves, build_request,
                      fetch, free_port, ms, t, wait_until)
from upstream import default_handler, raw_reply

CONF = """\
client:
  header_timeout: $header_timeout
  body_timeout: $body_timeout
  keepalive_timeout: $keepalive_timeout
  max_header_size: 4k
  max_body_size: 1k
upstreams:
  u:
    targets: [{address: "$a"}]
    timeouts: {connect: 1s, send: 5s, read: $read_timeout}
    retry: {max_retries: 0}
  dead:
    targets: [{address: "127.0.0.1:$dead_port"}]
    retry: {max_retries: 0}
routes:
  - name: dead
    match: {paths: ["/dead"]}
    upstream: dead
  - name: all
    upstream: u
"""

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1.0
READ_TIMEOUT = 0.5

# Upstream failures are worth an error line in the gateway's log; client garbage is not.
UPSTREAM_ERRORS = [r"(?i)upstream|127\.0\.0\.1:\d+"]


def start(gateway, upstream, handler=None, allow_errors=(), read_timeout=READ_TIMEOUT):
    up = upstream(handler)
    gw = gateway(CONF, a=up, dead_port=free_port(), header_timeout=ms(HEADER_TIMEOUT),
                 body_timeout=ms(BODY_TIMEOUT), keepalive_timeout=ms(KEEPALIVE_TIMEOUT),
                 read_timeout=ms(read_timeout), allow_errors=allow_errors)
    return gw, up


def still_serves(gw, up, upstream_saw=()):
    """The gateway proxies a normal request; the upstream saw exactly the paths
    `upstream_saw` before it (plus the health request)."""
    assert_serves(gw, "/healthy")
    paths = [r.target for r in up.requests]
    assert paths == list(upstream_saw) + ["/healthy"], "upstream saw %r" % paths


def rejected(gw, data, status=400, name="bad_request", closes=True):
    with RawClient(gw.port) as c:
        c.send(data)
        r = c.read_response()
        assert_error(r, name, status)
        if closes:
            extra = c.wait_closed()
            assert extra == b"", "bytes after the error response: %r" % extra[:200]
        return r


H = "Host: gw.test\r\n"

SMUGGLING = {
    "cl_and_te": "POST / HTTP/1.1\r\n" + H + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + "\r\n",
    "te_and_cl": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"
                 "0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + "\r\n",
    "duplicate_differing_cl": "POST / HTTP/1.1\r\n" + H + "Content-Length: 5\r\nContent-Length: 30\r\n\r\n"
                              "helloGET /smuggled HTTP/1.1\r\n\r\n",
    "cl_list": "POST / HTTP/1.1\r\n" + H + "Content-Length: 5, 30\r\n\r\nhello",
    "cl_negative": "POST / HTTP/1.1\r\n" + H + "Content-Length: -1\r\n\r\nhello",
    "cl_plus": "POST / HTTP/1.1\r\n" + H + "Content-Length: +5\r\n\r\nhello",
    "te_not_chunked_last": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_unknown": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: gzip\r\n\r\nhello",
    "obs_fold_space": "GET / HTTP/1.1\r\n" + H + "X-A: b\r\n c\r\n\r\n",
    "obs_fold_tab": "GET / HTTP/1.1\r\n" + H + "X-A: b\r\n\tc\r\n\r\n",
    "obs_fold_transfer_encoding": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: \r\n chunked\r\n\r\n0\r\n\r\n",
    "space_before_colon_host": "GET / HTTP/1.1\r\nHost : gw.test\r\n\r\n",
    "space_before_colon_other": "GET / HTTP/1.1\r\n" + H + "X-Foo : y\r\n\r\n",
    "tab_before_colon": "GET / HTTP/1.1\r\n" + H + "X-Foo\t: y\r\n\r\n",
    "bare_cr_in_value": "GET / HTTP/1.1\r\n" + H + "X-A: b\rc\r\n\r\n",
    "bare_lf_line_ends": "GET / HTTP/1.1\n" + H.replace("\r\n", "\n") + "\n",
    "nul_in_value": "GET / HTTP/1.1\r\n" + H + "X-A: a\x00b\r\n\r\n",
    "bad_header_name": "GET / HTTP/1.1\r\n" + H + "X(A): b\r\n\r\n",
    "chunk_size_not_hex": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n",
    "chunk_size_negative": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_trailing_space": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    "chunk_data_without_crlf": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "te_chunked_twice": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "0\r\n\r\n",
    "te_identity": "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: identity\r\n\r\nhello",
    "space_before_first_header": "GET / HTTP/1.1\r\n X-A: b\r\n" + H + "\r\n",
    "lowercase_method": "get / HTTP/1.1\r\n" + H + "\r\n",
    "missing_host": "GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "host_with_space": "GET / HTTP/1.1\r\nHost: gw.test evil.test\r\n\r\n",
    "host_with_slash": "GET / HTTP/1.1\r\nHost: gw.test/evil\r\n\r\n",
    "two_hosts": "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
}

# requests rejected on their head alone: the upstream must see nothing at all
HEAD_ONLY = {"cl_and_te", "te_and_cl", "duplicate_differing_cl", "cl_list", "cl_negative", "cl_plus",
             "te_not_chunked_last", "te_unknown", "obs_fold_space", "obs_fold_tab",
             "obs_fold_transfer_encoding", "space_before_colon_host", "space_before_colon_other",
             "tab_before_colon", "bare_cr_in_value", "bare_lf_line_ends", "nul_in_value",
             "bad_header_name", "missing_host", "two_hosts", "te_chunked_twice", "te_identity",
             "space_before_first_header", "lowercase_method", "host_with_space", "host_with_slash"}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_malformed_request_is_400_and_closed(gateway, upstream, case):
    gw, up = start(gateway, upstream)
    rejected(gw, SMUGGLING[case].encode("latin-1"))
    if case in HEAD_ONLY:
        still_serves(gw, up)
    else:
        # body framing errors: the head may have been streamed upstream already, but
        # no second request may come out of it
        assert_serves(gw, "/healthy")
        assert all(r.path in ("/", "/healthy") for r in up.requests), up.requests


@pytest.mark.parametrize("filler", ["", "X"])
def test_bare_cr_header_end_does_not_smuggle(gateway, upstream, filler):
    # CVE-2023-30589: llhttp 8.1.0 ends the head at "\r\n\r" + any byte
    gw, up = start(gateway, upstream)
    data = ("GET /first HTTP/1.1\r\n" + H + "\r" + filler + "GET /smuggled HTTP/1.1\r\n" + H + "\r\n")
    rejected(gw, data.encode())
    still_serves(gw, up)


def test_smuggled_request_behind_valid_one_never_reaches_upstream(gateway, upstream):
    # a valid request followed, in the same write, by one with CL+TE: the first is
    # answered, the second gets 400 and nothing of it goes upstream
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("GET", "/ok") + SMUGGLING["cl_and_te"].encode())
        assert c.read_response().json()["path"] == "/ok"
        assert_error(c.read_response(), "bad_request", 400)
        c.wait_closed()
    still_serves(gw, up, ["/ok"])


# -- size limits ----------------------------------------------------------------

def test_header_too_large_is_431(gateway, upstream):
    gw, up = start(gateway, upstream)
    rejected(gw, build_request("GET", "/", [("X-Big", "a" * 5000)]), 431, "header_too_large", closes=False)
    still_serves(gw, up)


def test_many_headers_too_large_is_431(gateway, upstream):
    gw, up = start(gateway, upstream)
    hs = [("X-H%03d" % i, "v" * 40) for i in range(120)]
    rejected(gw, build_request("GET", "/", hs), 431, "header_too_large", closes=False)
    still_serves(gw, up)


def test_long_request_line_is_431(gateway, upstream):
    gw, up = start(gateway, upstream)
    rejected(gw, build_request("GET", "/" + "p" * 5000), 431, "header_too_large", closes=False)
    still_serves(gw, up)


def test_body_over_limit_with_content_length_is_413(gateway, upstream):
    gw, up = start(gateway, upstream)
    # only the head is sent: the answer must not wait for the body
    rejected(gw, build_request("POST", "/", [("Content-Length", "2000")]), 413, "body_too_large",
             closes=False)
    still_serves(gw, up)


def test_body_over_limit_with_expect_gets_413_not_100(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/", [("Content-Length", "2000"), ("Expect", "100-continue")]))
        assert_error(c.read_response(), "body_too_large", 413)
    still_serves(gw, up)


def test_chunked_body_over_limit_is_413(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/big", [("Transfer-Encoding", "chunked")]))
        c.send(b"258\r\n" + b"a" * 600 + b"\r\n" + b"258\r\n" + b"b" * 600 + b"\r\n")
        assert_error(c.read_response(), "body_too_large", 413)
        c.wait_closed()
    assert_serves(gw, "/healthy")
    assert all(r.body_length <= 1024 and not (r.path == "/big" and r.body_complete)
               for r in up.requests), "the over-limit body reached the upstream complete"


def test_body_at_limit_passes(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("POST", "/cl", body=b"x" * 1024)
        assert c.read_response().json()["body_length"] == 1024
        c.send(build_request("POST", "/chunked", [("Transfer-Encoding", "chunked")])
               + b"200\r\n" + b"y" * 512 + b"\r\n200\r\n" + b"z" * 512 + b"\r\n0\r\n\r\n")
        assert c.read_response().json()["body_length"] == 1024


# -- client timeouts -------------------------------------------------------------

def test_slowloris_head_gets_408_and_close(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\n" + H.encode())
        r = None
        for i in range(int(t(HEADER_TIMEOUT + 3) / 0.2) + 1):  # one header line every 200 ms
            try:
                c.send(b"X-Drip-%d: z\r\n" % i)
            except OSError:
                break
            if not c.is_open(0.2) or c.buf:
                break
        r = c.read_response()
        elapsed = time.monotonic() - t0
        assert_error(r, "client_timeout", 408)
        c.wait_closed()
    assert t(HEADER_TIMEOUT) * 0.8 <= elapsed <= t(HEADER_TIMEOUT) + t(2), elapsed
    still_serves(gw, up)


def test_idle_connection_without_request_is_closed(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        extra = c.wait_closed(t(HEADER_TIMEOUT) + t(3))
        # a silent close or a 408 are both fine; anything else is not
        if extra:
            assert extra.startswith(b"HTTP/1.1 408 "), extra[:200]
    still_serves(gw, up)


def test_keepalive_timeout_closes_idle_connection(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.request("GET", "/once")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.wait_closed(t(KEEPALIVE_TIMEOUT) + t(3)) == b""
        assert time.monotonic() - t0 >= t(KEEPALIVE_TIMEOUT) * 0.8


def test_body_stall_gets_408(gateway, upstream):
    # the upstream read timeout is well above body_timeout: only the client is slow
    gw, up = start(gateway, upstream, read_timeout=BODY_TIMEOUT * 5)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/stalled-body", [("Content-Length", "100")]) + b"0123456789")
        t0 = time.monotonic()
        assert_error(c.read_response(), "client_timeout", 408)
        assert time.monotonic() - t0 >= t(BODY_TIMEOUT) * 0.8
        c.wait_closed()
    assert_serves(gw, "/healthy")


def test_body_stall_is_not_blamed_on_upstream(gateway, upstream):
    # Same stall with the upstream read timeout (0.5 s) below body_timeout (1 s):
    # the upstream is waiting for the rest of the body, so this is still the
    # client's timeout (408), not upstream_timeout (504, which would also count
    # as a failure against a healthy target's circuit breaker).
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/stalled-body", [("Content-Length", "100")]) + b"0123456789")
        assert_error(c.read_response(), "client_timeout", 408)
        c.wait_closed()
    assert_serves(gw, "/healthy")


def test_slow_upload_longer_than_upstream_read_timeout_succeeds(gateway, upstream):
    # Body bytes keep coming (gaps well under body_timeout) for longer than the
    # upstream read timeout. The upstream cannot answer before it has the body, so
    # its read timeout must not fire while the client is still sending.
    gw, up = start(gateway, upstream)
    pieces = 10
    gap = (READ_TIMEOUT * 3) / pieces  # total 3x the read timeout, each gap < body_timeout
    with RawClient(gw.port) as c:
        c.send(build_request("POST", "/slow-upload", [("Content-Length", str(pieces * 10))]))
        for i in range(pieces):
            time.sleep(t(gap))
            c.send(b"%010d" % i)
        r = c.read_response()
        assert r.status == 200, (r, r.body[:200])
        assert r.json()["body_length"] == pieces * 10


# -- broken upstreams ------------------------------------------------------------

BAD_RESPONSES = {
    "not_http": b"THIS IS NOT HTTP\r\n\r\n",
    "bad_content_length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok",
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "space_before_colon": b"HTTP/1.1 200 OK\r\nX-Custom : v\r\nContent-Length: 2\r\n\r\nok",
    "bare_cr_head_end": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\rXok",
}


@pytest.mark.parametrize("case", sorted(BAD_RESPONSES))
def test_malformed_upstream_response_is_502(gateway, upstream, case):
    gw, up = start(gateway, upstream, raw_reply(BAD_RESPONSES[case]), allow_errors=UPSTREAM_ERRORS)
    with RawClient(gw.port) as c:
        c.request("GET", "/bad")
        assert_error(c.read_response(), "upstream_unavailable", 502)
    up.handler = default_handler
    assert_serves(gw, "/healthy")


def test_upstream_connect_refused_is_502(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=UPSTREAM_ERRORS)
    with RawClient(gw.port) as c:
        c.request("GET", "/dead/x")
        doc = assert_error(c.read_response(), "upstream_unavailable", 502)
        assert doc["request_id"]
        c.request("GET", "/healthy")
        assert c.read_response().status == 200, "the client connection should survive a 502"


def test_upstream_reset_before_response_is_502(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=UPSTREAM_ERRORS)
    with RawClient(gw.port) as c:
        c.request("GET", "/reset")
        assert_error(c.read_response(), "upstream_unavailable", 502)
    assert_serves(gw, "/healthy")


def test_upstream_never_answers_is_504(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=UPSTREAM_ERRORS)
    with RawClient(gw.port) as c:
        t0 = time.monotonic()
        c.request("GET", "/stall")
        assert_error(c.read_response(), "upstream_timeout", 504)
        elapsed = time.monotonic() - t0
    assert t(READ_TIMEOUT) * 0.8 <= elapsed <= t(READ_TIMEOUT) + t(2), elapsed
    assert_serves(gw, "/healthy")


def expect_truncated(gw, path):
    """The response has started; the upstream fails: the client connection must
    be closed without anything that parses as a complete response."""
    with RawClient(gw.port) as c:
        c.request("GET", path)
        with pytest.raises(IncompleteResponse) as info:
            r = c.read_response()
            pytest.fail("got a complete-looking response %r (%d body bytes)" % (r, r.body_length))
        partial = info.value.response
        assert partial is not None and partial.status == 200
        return partial


def test_upstream_closes_mid_body_content_length(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=UPSTREAM_ERRORS)
    partial = expect_truncated(gw, "/close-mid-body")
    assert partial.body_length <= 5000
    assert_serves(gw, "/healthy")


def test_upstream_closes_mid_body_chunked(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=UPSTREAM_ERRORS)
    expect_truncated(gw, "/close-mid-body?chunked=1")
    assert_serves(gw, "/healthy")


def test_upstream_reset_mid_body(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=UPSTREAM_ERRORS)
    expect_truncated(gw, "/reset-mid-body")
    assert_serves(gw, "/healthy")


def test_upstream_stalls_mid_body_times_out_and_closes(gateway, upstream):
    gw, up = start(gateway, upstream, allow_errors=UPSTREAM_ERRORS)
    t0 = time.monotonic()
    expect_truncated(gw, "/stall-body")
    assert time.monotonic() - t0 <= t(READ_TIMEOUT) + t(3)
    assert_serves(gw, "/healthy")


MAXCONN = """\
client:
  max_connections: 4
upstreams:
  u:
    targets: [{address: "$a"}]
routes:
  - name: all
    upstream: u
"""


def test_max_connections_is_enforced(gateway, upstream):
    up = upstream()
    gw = gateway(MAXCONN, a=up)
    held = []
    extra = None
    try:
        # one at a time: each round trip also lets the gateway see earlier closes
        # (such as the fixture's readiness probe) before the next connection
        for _ in range(4):
            c = RawClient(gw.port)
            held.append(c)
            c.request("GET", "/held")
            assert c.read_response().status == 200
        extra = RawClient(gw.port, timeout=t(0.5))
        served = False
        try:
            extra.request("GET", "/extra")
            served = extra.read_response().status == 200
        except (OSError, IncompleteResponse):
            pass  # refused, closed or left waiting: all fine
        assert not served, "a 5th connection was served with max_connections: 4"
    finally:
        if extra:
            extra.close()
        for c in held:
            c.close()

    def serves():
        try:
            return fetch(gw.port, "GET", "/again").status == 200
        except (OSError, IncompleteResponse):
            return False

    assert wait_until(serves, t(5), 0.05), "no connection served after the others closed"


# -- fuzzer findings (tests/fuzz/corpus/*/crash-*), end to end ------------------

def test_interim_response_with_framing_cannot_split_the_response(gateway, upstream):
    # A 1xx never has a body (RFC 9110 section 15.2): the bytes after a 103's head
    # are the next response, whatever framing the 103 claims. The client must get
    # exactly one final response, never the 103's "body" passed through raw in
    # front of it (two responses to one request: response splitting).
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
    reply = (b"HTTP/1.1 103 Early Hints\r\nContent-Length: %d\r\n\r\n" % len(first) + first
             + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    gw, up = start(gateway, upstream, raw_reply(reply), allow_errors=UPSTREAM_ERRORS)
    with RawClient(gw.port) as c:
        c.request("GET", "/interim")
        interim, r = c.read_final_response()
        # the 103 is passed on (RFC 9110 section 15.2), without the framing it claimed
        assert [(i.status, i.header("Content-Length"), i.body) for i in interim] == [(103, None, b"")]
        assert (r.status, r.body) == (200, b"first")
        c.is_open(0.3)
        assert bytes(c.buf) == b"", "a second response followed: %r" % bytes(c.buf)


def test_status_line_without_reason_phrase(gateway, upstream):
    gw, up = start(gateway, upstream, raw_reply(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"))
    with RawClient(gw.port) as c:
        c.request("GET", "/noreason")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ok")


def test_request_trailers_are_not_forwarded_as_fields(gateway, upstream):
    # Trailer fields of a chunked request body are dropped: they never joined the
    # head the gateway checked, so they must not reach the upstream as fields.
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(b"POST /trailers HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2\r\nok\r\n0\r\nContent-Length: 0\r\nX-Trailer: t\r\n\r\n")
        assert c.read_response("POST").status == 200
    req = up.requests[-1]
    assert req.header("X-Trailer") is None and req.header("Content-Length") is None, req
