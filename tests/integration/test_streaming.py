"""Streaming with backpressure (DESIGN section 4): large bodies both ways go
through while the gateway's resident memory stays bounded, and a slow peer on
one side slows the other side down instead of filling the gateway's memory."""

import threading
import time

from conftest import ASAN_ENV, IS_ASAN, RawClient, RssSampler, build_request, fetch, rss_kb, t
from upstream import echo, pattern_blocks, pattern_sha256

MB = 1 << 20

CONF = """\
client:
  max_body_size: 1g
upstreams:
  u:
    targets: [{address: "$a"}]
routes:
  - name: all
    upstream: u
"""


def start(gateway, upstream, handler=None):
    up = upstream(handler)
    gw = gateway(CONF, a=up, env=ASAN_ENV if IS_ASAN else None)
    assert fetch(gw.port, "GET", "/warmup").status == 200
    return gw, up, rss_kb(gw.pid)


def rss_limit_kb(baseline_kb):
    """60 MB, or baseline + 40 MB for a fat binary (baseline + 64 MB under ASan).
    A gateway that buffers instead of streaming needs 100-200 MB here."""
    if IS_ASAN:
        return max(60 * 1024, baseline_kb + 64 * 1024)
    return max(60 * 1024, baseline_kb + 40 * 1024)


def wait_stable(get, timeout, quiet=0.3):
    """Polls get() until it stops changing for `quiet` seconds; returns the value."""
    deadline = time.monotonic() + timeout
    last, since = get(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        v = get()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def download(gw, n, chunked):
    with RawClient(gw.port, timeout=t(20)) as c:
        c.request("GET", "/stream/%d%s" % (n, "?chunked=1" if chunked else ""))
        with RssSampler(gw.pid) as s:
            r = c.read_response(sink=lambda b: None)
    return r, s


def test_large_response_streams_with_bounded_memory(gateway, upstream):
    gw, up, base = start(gateway, upstream)
    n = 200 * MB
    r, s = download(gw, n, chunked=False)
    assert r.status == 200 and r.body_length == n
    assert r.body_sha256 == pattern_sha256(n)
    assert s.samples > 5
    assert s.max_kb < rss_limit_kb(base), "gateway RSS reached %d kB (baseline %d kB)" % (s.max_kb, base)


def test_large_chunked_response_streams_with_bounded_memory(gateway, upstream):
    gw, up, base = start(gateway, upstream)
    n = 100 * MB + 12345
    r, s = download(gw, n, chunked=True)
    assert r.status == 200 and r.body_length == n
    assert r.body_sha256 == pattern_sha256(n)
    assert s.max_kb < rss_limit_kb(base), "gateway RSS reached %d kB (baseline %d kB)" % (s.max_kb, base)


def upload(gw, n, chunked_body, block=64 * 1024):
    """Sends an n-byte pattern body; returns (response, sampler)."""
    c = RawClient(gw.port, timeout=t(20))
    hdr = [("Transfer-Encoding", "chunked")] if chunked_body else [("Content-Length", str(n))]
    c.send(build_request("POST", "/upload", hdr))
    errors = []

    def send_body():
        try:
            for b in pattern_blocks(n, block):
                c.sock.sendall(b"%x\r\n" % len(b) + b + b"\r\n" if chunked_body else b)
            if chunked_body:
                c.sock.sendall(b"0\r\n\r\n")
        except OSError as e:
            errors.append(e)

    th = threading.Thread(target=send_body, daemon=True)
    with RssSampler(gw.pid) as s:
        th.start()
        try:
            r = c.read_response()
        finally:
            th.join(t(30))
            c.close()
    assert not errors, errors
    return r, s


def test_large_upload_streams_with_bounded_memory(gateway, upstream):
    gw, up, base = start(gateway, upstream)
    n = 100 * MB
    r, s = upload(gw, n, chunked_body=False)
    assert r.status == 200
    doc = r.json()
    assert doc["body_length"] == n and doc["body_sha256"] == pattern_sha256(n)
    assert s.max_kb < rss_limit_kb(base), "gateway RSS reached %d kB (baseline %d kB)" % (s.max_kb, base)


def test_large_chunked_upload_streams_with_bounded_memory(gateway, upstream):
    gw, up, base = start(gateway, upstream)
    n = 50 * MB + 777
    r, s = upload(gw, n, chunked_body=True, block=50000)
    assert r.status == 200
    doc = r.json()
    assert doc["body_length"] == n and doc["body_sha256"] == pattern_sha256(n, 50000)
    assert s.max_kb < rss_limit_kb(base), "gateway RSS reached %d kB (baseline %d kB)" % (s.max_kb, base)


def test_slow_client_reader_backpressures_upstream(gateway, upstream):
    gw, up, base = start(gateway, upstream)
    n = 200 * MB
    seen = {}

    def sink(data):
        # once 1 MB has arrived, stop reading until the upstream is blocked too
        if "sent" in seen or c.bytes_received < MB:
            return
        seen["sent"] = wait_stable(lambda: up.stream_sent, t(8))
        seen["rss"] = rss_kb(gw.pid)

    with RawClient(gw.port, timeout=t(20)) as c:
        c.request("GET", "/stream/%d" % n)
        r = c.read_response(sink=sink)
    assert r.status == 200 and r.body_length == n and r.body_sha256 == pattern_sha256(n)
    assert seen["sent"] < 64 * MB, (
        "upstream could send %d MB while the client had read 1 MB: the gateway does not "
        "apply backpressure" % (seen["sent"] // MB))
    assert seen["rss"] < rss_limit_kb(base), "gateway RSS %d kB (baseline %d kB)" % (seen["rss"], base)


def test_slow_upstream_reader_backpressures_client(gateway, upstream):
    release = threading.Event()

    def handler(conn, req):
        release.wait(t(30))  # read nothing of the body until the test says so
        echo(conn, req)

    release.set()  # let the warm-up request through, then arm
    gw, up, base = start(gateway, upstream, handler)
    release.clear()
    n = 100 * MB
    sent = [0]
    c = RawClient(gw.port, timeout=t(20))
    c.send(build_request("POST", "/upload", [("Content-Length", str(n))]))
    errors = []

    def send_body():
        try:
            for b in pattern_blocks(n):
                c.sock.sendall(b)
                sent[0] += len(b)
        except OSError as e:
            errors.append(e)

    th = threading.Thread(target=send_body, daemon=True)
    th.start()
    try:
        assert up.wait_requests(2, t(5))[-1].path == "/upload"
        stuck_at = wait_stable(lambda: sent[0], t(8))
        rss = rss_kb(gw.pid)
        release.set()
        r = c.read_response()
    finally:
        release.set()
        th.join(t(30))
        c.close()
    assert not errors, errors
    assert r.status == 200
    assert r.json()["body_length"] == n and r.json()["body_sha256"] == pattern_sha256(n)
    assert stuck_at < 64 * MB, (
        "the client could send %d MB while the upstream read nothing: the gateway buffers "
        "request bodies" % (stuck_at // MB))
    assert rss < rss_limit_kb(base), "gateway RSS %d kB (baseline %d kB)" % (rss, base)
