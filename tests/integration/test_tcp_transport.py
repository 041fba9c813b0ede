"""The plain TCP transport (net/tcp.c: uv_poll on the socket, recv/send):
resets, half-closed and idle sockets, backpressure and pipelining through
the real binary, with no busy loop while the gateway waits."""

import os
import socket
import struct
import time

from conftest import ASAN_ENV, IS_ASAN, IncompleteResponse, RawClient, build_request, fetch, t
from upstream import echo, pattern_sha256

MB = 1 << 20

CONF = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    timeouts: {connect: 300ms}
routes:
  - name: all
    upstream: u
"""

UPSTREAM_ERRORS = [r"(?i)upstream|127\.0\.0\.1:\d+"]


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid, seconds):
    """CPU seconds the gateway used over `seconds` of the test waiting."""
    before = cpu_s(pid)
    time.sleep(seconds)
    return cpu_s(pid) - before


def start(gateway, upstream, handler=None, **kw):
    up = upstream(handler, **kw)
    gw = gateway(CONF, a=up, allow_errors=UPSTREAM_ERRORS, env=ASAN_ENV if IS_ASAN else None)
    assert fetch(gw.port, "GET", "/warmup").status == 200
    return gw, up


def test_slow_reader_large_response(gateway, upstream):
    gw, up = start(gateway, upstream)
    n = 32 * MB
    with RawClient(gw.port, timeout=t(20)) as c:
        c.request("GET", "/stream/%d" % n)
        time.sleep(0.3)
        spent = idle_cpu(gw.pid, 1.0)
        r = c.read_response(sink=lambda b: None)
    assert r.status == 200 and r.body_length == n and r.body_sha256 == pattern_sha256(n)
    assert spent < 0.3, "gateway used %.2fs of CPU waiting for a slow reader" % spent


def rst_after(nbytes):
    def handler(conn, req):
        if req.path != "/x":
            return echo(conn, req)
        conn.read_body(req)
        conn.send_head(200, [("Content-Length", str(nbytes * 4))])
        conn.send(b"x" * nbytes)
        time.sleep(0.2)
        conn.reset()
        return False
    return handler


def test_upstream_reset_while_client_is_not_reading(gateway, upstream):
    gw, up = start(gateway, upstream, rst_after(8 * MB))
    with RawClient(gw.port, timeout=t(10)) as c:
        c.request("GET", "/x")
        time.sleep(0.5)
        spent = idle_cpu(gw.pid, 1.0)
        t0 = time.monotonic()
        try:
            r = c.read_response(sink=lambda b: None)
            raise AssertionError("a complete response after an upstream reset: %r" % r.status)
        except IncompleteResponse:
            pass
        elapsed = time.monotonic() - t0
    assert spent < 0.3, "gateway used %.2fs of CPU after an upstream reset" % spent
    assert elapsed < t(5)
    assert fetch(gw.port, "GET", "/after").status == 200


def test_idle_pooled_connection_closed_by_upstream(gateway, upstream):
    gw, up = start(gateway, upstream, idle_close=0.2)
    for i in range(3):
        time.sleep(0.5)
        spent = idle_cpu(gw.pid, 0.2)
        assert fetch(gw.port, "GET", "/again%d" % i).status == 200
        assert spent < 0.1


def test_pipelined_requests(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port, timeout=t(10)) as c:
        c.send(b"".join(build_request("GET", "/p%d" % i) for i in range(100)))
        for i in range(100):
            r = c.read_response()
            assert r.status == 200 and b"/p%d" % i in r.body


def test_client_resets_mid_response_many_times(gateway, upstream):
    gw, up = start(gateway, upstream)
    for i in range(30):
        s = socket.create_connection(gw.address)
        s.sendall(build_request("GET", "/stream/%d" % (4 * MB)))
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert idle_cpu(gw.pid, 0.5) < 0.2
    assert fetch(gw.port, "GET", "/after").status == 200


def test_connect_refused(gateway):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    gw = gateway(CONF.replace('"$a"', '"127.0.0.1:%d"' % port), allow_errors=UPSTREAM_ERRORS)
    for i in range(5):
        r = fetch(gw.port, "GET", "/refused")
        assert r.status in (502, 503)
    assert idle_cpu(gw.pid, 0.3) < 0.1


def test_connect_timeout_then_close(gateway):
    """A listener that never accepts, its backlog full: SYNs go unanswered."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(lsock.getsockname())
        fillers.append(f)
    try:
        gw = gateway(CONF.replace('"$a"', '"127.0.0.1:%d"' % lsock.getsockname()[1]),
                     allow_errors=UPSTREAM_ERRORS)
        for i in range(3):
            t0 = time.monotonic()
            r = fetch(gw.port, "GET", "/timeout")
            assert r.status in (502, 503, 504)
            assert time.monotonic() - t0 < t(3)
        assert idle_cpu(gw.pid, 0.3) < 0.1
    finally:
        for f in fillers:
            f.close()
        lsock.close()


def test_request_then_half_close(gateway, upstream):
    """The client sends its request and shuts its side: the answer still comes."""
    gw, up = start(gateway, upstream)
    for path in ("/half", "/slow/200", "/stream/%d" % (4 * MB)):
        with RawClient(gw.port, timeout=t(10)) as c:
            c.request("GET", path)
            c.sock.shutdown(socket.SHUT_WR)
            r = c.read_response(sink=lambda b: None)
            assert r.status == 200
    assert idle_cpu(gw.pid, 0.3) < 0.1
