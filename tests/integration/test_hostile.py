"""Hostile clients at scale (issue 9): thousands of slowloris connections, many
slow readers of large responses at once, 10,000 idle keep-alive connections and
a connection flood over client.max_connections. The gateway must keep serving
normal clients, keep its memory bounded, and refuse what is over its limits
cleanly.

The crowds are driven without a thread per socket: non-blocking sockets in one
epoll loop (`mass_round_trips`), and the slowloris crowd in a subprocess so that
its work does not hold this process's GIL while latencies are being measured.
Sockets of a crowd are closed with RST (SO_LINGER 0) so that thousands of client
TIME_WAIT entries do not pile up on the machine between tests."""

import errno
import hashlib
import json
import os
import random
import re
import resource
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import (ASAN_ENV, IS_ASAN, RawClient, RssSampler, assert_serves, fetch, rss_kb, t,
                      wait_until)
from upstream import default_handler, pattern_sha256

MB = 1 << 20

CONF = """\
client:
  header_timeout: $header_timeout
  max_connections: $max_connections
upstreams:
  u:
    targets: [{address: "$a"}]
routes:
  - name: all
    upstream: u
"""


def start(gateway, upstream, handler=None, max_connections=20000, header_timeout="30s", **kw):
    up = upstream(handler)
    gw = gateway(CONF, a=up, max_connections=max_connections, header_timeout=header_timeout,
                 env=ASAN_ENV if IS_ASAN else None, **kw)
    return gw, up


def raise_nofile(need):
    """Raises this process's soft RLIMIT_NOFILE (the gateway started afterwards
    inherits it); skips the test when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else need, hard))


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def p99(samples):
    s = sorted(samples)
    return s[max(0, -(-len(s) * 99 // 100) - 1)]


# ---------------------------------------------------------------------------
# many connections in one epoll loop
# ---------------------------------------------------------------------------

CL_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)


class Outcome:
    """What happened to one connection: kind is 'response' (a complete
    response, `status` set), 'closed' (EOF or RST; `data` holds what arrived
    before it) or 'timeout'."""

    __slots__ = ("sock", "kind", "status", "data", "head")

    def __init__(self, sock):
        self.sock = sock
        self.kind = None
        self.status = 0
        self.data = b""
        self.head = b""

    def __repr__(self):
        return "<%s %s %r>" % (self.kind, self.status, self.data[:120])


def _complete(buf):
    """(status, head) when buf holds a complete Content-Length response, else None."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return None
    head = bytes(buf[:i + 4])
    m = CL_RE.search(head)
    n = int(m.group(1)) if m else 0
    if len(buf) < i + 4 + n:
        return None
    return int(head[9:12]), head


def mass_round_trips(port, n=None, socks=None, request=None, window=64, timeout=None):
    """One request and its response on each of `n` new connections (or on each
    of the open sockets `socks`), at most `window` exchanges at a time, all in
    one epoll loop. Connections that got a response stay open (keep-alive);
    the others are closed. Returns one Outcome per connection, in order."""
    timeout = timeout if timeout is not None else t(10)
    request = request or b"GET /mass HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    total = len(socks) if socks is not None else n
    outcomes = [None] * total
    sel = selectors.DefaultSelector()
    nxt = 0
    live = {}   # fd -> [index, outcome, state, buf, deadline]

    def finish(fd, kind, status=0, keep=False):
        idx, o, _, buf, _ = live.pop(fd)
        sel.unregister(o.sock)
        o.kind, o.status = kind, status
        if kind == "response":
            o.head = _complete(buf)[1]
        else:
            o.data = bytes(buf)
        if not keep:
            rst_close(o.sock)
        outcomes[idx] = o

    def launch(idx):
        if socks is not None:
            s = socks[idx]
            s.setblocking(False)
            o = Outcome(s)
            state = "send"
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                o = Outcome(s)
                o.kind = "closed"
                rst_close(s)
                outcomes[idx] = o
                return
            o = Outcome(s)
            state = "connect"
        live[s.fileno()] = [idx, o, state, bytearray(), time.monotonic() + timeout]
        sel.register(s, selectors.EVENT_WRITE)

    while nxt < total or live:
        while nxt < total and len(live) < window:
            launch(nxt)
            nxt += 1
        if not live:
            continue
        for key, _ in sel.select(0.05):
            fd = key.fd
            entry = live.get(fd)
            if entry is None:
                continue
            o = entry[1]
            if entry[2] in ("connect", "send"):
                if entry[2] == "connect" and o.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    finish(fd, "closed")
                    continue
                try:
                    o.sock.send(request)   # small: goes out in one send
                except OSError:
                    finish(fd, "closed")
                    continue
                entry[2] = "read"
                sel.modify(o.sock, selectors.EVENT_READ)
                continue
            try:
                data = o.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except BlockingIOError:
                continue
            if not data:
                finish(fd, "closed")
                continue
            entry[3] += data
            done = _complete(entry[3])
            if done:
                finish(fd, "response", done[0], keep=True)
        now = time.monotonic()
        for fd in [fd for fd, e in live.items() if e[4] < now]:
            finish(fd, "timeout")
    sel.close()
    for o in outcomes:
        if o.kind == "response":
            o.sock.setblocking(True)
    return outcomes


def kinds(outcomes):
    out = {}
    for o in outcomes:
        k = o.kind if o.kind != "response" else "response %d" % o.status
        out[k] = out.get(k, 0) + 1
    return out


# ---------------------------------------------------------------------------
# slowloris
# ---------------------------------------------------------------------------

# Runs in its own process: opens N connections, sends each the first byte of a
# request head that never ends, then one more byte per connection every PERIOD
# seconds (spread evenly) until its stdin closes (at most DURATION seconds),
# and reports on stdout.
SLOWLORIS = r"""
import errno, json, resource, select, socket, struct, sys, time
port, n, duration, period = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
head = b"GET /slowloris HTTP/1.1\r\nHost: gw.test\r\nX-Drip: " + b"a" * 4000
socks, pos, closed = [], [], set()
ep = select.epoll()
for i in range(n):
    s = socket.socket(); s.setblocking(False)
    rc = s.connect_ex(("127.0.0.1", port))
    if rc not in (0, errno.EINPROGRESS):
        print(json.dumps({"error": "connect %d: %s" % (i, errno.errorcode.get(rc, rc))}), flush=True)
        sys.exit(1)
    socks.append(s); pos.append(0)
    ep.register(s.fileno(), select.EPOLLOUT)
pending, deadline = n, time.monotonic() + 30
by_fd = {s.fileno(): i for i, s in enumerate(socks)}
while pending and time.monotonic() < deadline:
    for fd, ev in ep.poll(0.1):
        i = by_fd[fd]
        ep.unregister(fd); pending -= 1
        if socks[i].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            closed.add(i)
if pending:
    print(json.dumps({"error": "%d connections not established" % pending}), flush=True)
    sys.exit(1)
def drip(i):
    if i in closed:
        return
    try:
        socks[i].send(head[pos[i]:pos[i] + 1]); pos[i] += 1
    except OSError:
        closed.add(i)
for i in range(n):
    drip(i)
print(json.dumps({"ready": n, "closed": len(closed)}), flush=True)
# runs for `duration` at most, or until stdin is closed (the measurement is over)
stop = select.epoll(); stop.register(sys.stdin.fileno(), select.EPOLLIN | select.EPOLLHUP)
t0 = time.monotonic(); tick = 0.02; k = 0
while time.monotonic() - t0 < duration:
    if stop.poll(tick):
        break
    want = int((time.monotonic() - t0) / period * n)
    while k < want:
        drip(k % n); k += 1
# a connection the gateway closed has become readable (EOF, maybe after a 408)
for i, s in enumerate(socks):
    if i not in closed:
        ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
for fd, ev in ep.poll(0):
    closed.add(by_fd[fd])
for s in socks:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
print(json.dumps({"done": n, "closed": len(closed), "bytes": sum(pos)}), flush=True)
"""


def latencies(port, n, gap):
    """n sequential requests, each on a fresh connection; returns seconds each."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        r = fetch(port, "GET", "/normal/%d" % i)
        out.append(time.perf_counter() - t0)
        assert r.status == 200, (r, r.body[:200])
        time.sleep(gap)
    return out


SLOWLORIS_CONNS = 3000


def test_slowloris_crowd_does_not_starve_normal_clients(gateway, upstream):
    raise_nofile(SLOWLORIS_CONNS + 1000)
    # header_timeout well above the attack so the crowd stays connected throughout
    gw, up = start(gateway, upstream, header_timeout="%ds" % int(t(60)))
    for _ in range(50):
        assert fetch(gw.port, "GET", "/warmup").status == 200
    # 200 requests 20 ms apart: ~4.5 s, during which each slowloris connection
    # sends 3 bytes
    gap = 0.02
    unloaded = latencies(gw.port, 200, gap)

    fds_before = fd_count(gw.pid)
    drip_for = t(20)   # at most: the crowd stops when the measurement is over
    proc = subprocess.Popen([sys.executable, "-c", SLOWLORIS, str(gw.port), str(SLOWLORIS_CONNS),
                             str(drip_for), "1.5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        ready = json.loads(proc.stdout.readline() or b"{}")
        assert ready.get("ready") == SLOWLORIS_CONNS and ready.get("closed") == 0, (
            ready, proc.stderr.read().decode() if proc.poll() is not None else "")
        # the gateway really holds the crowd (else nothing is being measured);
        # a few fds counted before may have closed meanwhile (pooled upstream
        # connections past their idle time), hence the small slack
        held = fds_before + SLOWLORIS_CONNS - 10
        assert wait_until(lambda: fd_count(gw.pid) >= held, t(5)), (
            "gateway holds %d fds, expected >= %d" % (fd_count(gw.pid), held))
        t_start = time.monotonic()
        loaded = latencies(gw.port, 200, gap)
        if p99(loaded) > bound(p99(unloaded)):
            # once more before concluding: other tenants of a shared machine cause
            # bursts of latency too, but a starved gateway is slow both times
            again = latencies(gw.port, 200, gap)
            if p99(again) < p99(loaded):
                loaded = again
        measured_for = time.monotonic() - t_start
        assert proc.poll() is None, "the slowloris crowd ended before the measurement did"
        proc.stdin.close()
        report = json.loads(proc.stdout.readline() or b"{}")
        assert proc.wait(t(10)) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert report.get("closed") == 0, "the gateway dropped slowloris connections before header_timeout: %r" % report
    assert report["bytes"] >= SLOWLORIS_CONNS * 3, report   # the crowd kept dripping
    assert measured_for < drip_for
    u99, l99 = p99(unloaded), p99(loaded)
    print("p99 unloaded %.2f ms, during slowloris (%d conns) %.2f ms" % (u99 * 1e3, SLOWLORIS_CONNS, l99 * 1e3))
    limit = bound(u99)
    assert l99 <= limit, (
        "p99 latency during slowloris %.1f ms vs %.1f ms unloaded" % (l99 * 1e3, u99 * 1e3))
    assert_serves(gw)


def bound(unloaded_p99):
    """Within 2x of the unloaded p99, plus an absolute 20 ms (scaled) so that
    scheduler noise on a shared 2-core machine (the crowd's own process competes
    for the CPUs) does not fail the test: unloaded p99 is ~1-2 ms, so a gateway
    that serves the crowd before new clients (a blocked accept loop, a connection
    cap, per-byte O(n) work) shows up as tens to hundreds of ms, or timeouts."""
    return 2 * unloaded_p99 + t(0.020)


# ---------------------------------------------------------------------------
# many slow readers of large responses at once
# ---------------------------------------------------------------------------

def wait_stable(get, timeout, quiet=0.3):
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


SLOW_READERS = 16
STREAM = 200 * MB


class SlowReader:
    """A client of one /stream response that reads only when told to, hashing
    every body byte it takes."""

    def __init__(self, port, i):
        self.c = RawClient(port, timeout=t(30))
        self.c.request("GET", "/r%d/stream/%d" % (i, STREAM))
        self.h = hashlib.sha256()
        self.got = 0
        self.status = None

    def read(self, n):
        """Reads up to n body bytes (blocking for at least one); False at EOF."""
        c = self.c
        if self.status is None:
            self.status = c.read_head().status
        data = c._take(min(n, len(c.buf))) if c.buf else c._recv_direct(n)
        self.h.update(data)
        self.got += len(data)
        return bool(data)

    def read_until(self, total):
        while self.got < total and self.read(min(1 << 20, total - self.got)):
            pass
        return self.got

    def close(self, rst=False):
        if rst:
            rst_close(self.c.sock)
        else:
            self.c.close()


def test_many_slow_readers_of_large_responses_keep_memory_bounded(gateway, upstream):
    # test_streaming covers one slow reader; this is a crowd of them at once, each
    # on a 200 MB response: reading 1 MB and then nothing, then trickling, then
    # most of them going away mid-body while two read to the end.
    active = [0]
    lock = threading.Lock()

    def handler(conn, req):
        if "/stream/" not in req.path:
            return default_handler(conn, req)
        with lock:
            active[0] += 1
        try:
            return default_handler(conn, req)
        finally:
            with lock:
                active[0] -= 1

    gw, up = start(gateway, upstream, handler)
    assert fetch(gw.port, "GET", "/warmup").status == 200
    base = rss_kb(gw.pid)
    readers = []
    try:
        with RssSampler(gw.pid) as sampler:
            readers = [SlowReader(gw.port, i) for i in range(SLOW_READERS)]
            # 1. each reads 1 MB of its body, then nothing
            for r in readers:
                assert r.read_until(MB) == MB and r.status == 200
            sent_stuck = wait_stable(lambda: up.stream_sent, t(10), quiet=0.5)
            rss_stuck = rss_kb(gw.pid)
            # 2. trickle: 16 kB per reader every 50 ms for 2 s
            trickle_from = up.stream_sent
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                for r in readers:
                    r.read(16384)
                time.sleep(0.05)
            trickled = up.stream_sent - trickle_from
        assert sampler.samples > 10
        per_reader = sent_stuck / SLOW_READERS
        print("stuck: upstream sent %.1f MB per reader (%.1f MB more while trickling); gateway RSS "
              "%d kB at rest, %d kB stuck, max %d kB"
              % (per_reader / MB, trickled / SLOW_READERS / MB, base, rss_stuck, sampler.max_kb))
        # What is in flight per reader is the kernel's socket buffers on both sides
        # (a few MB each), not the 200 MB body.
        assert per_reader < 64 * MB, (
            "the upstream could send %.0f MB per reader while each had read 1 MB: no backpressure"
            % (per_reader / MB))
        # the trickle (~0.6 MB per reader) moves the upstream by about as much
        assert trickled < SLOW_READERS * 16 * MB, trickled
        # 16 connections' worth of 32 kB buffers is well under a MB; a gateway that
        # buffers what its readers do not take needs hundreds of MB here
        limit = base + (48 if IS_ASAN else 24) * 1024
        assert sampler.max_kb < limit, "gateway RSS reached %d kB (baseline %d kB)" % (sampler.max_kb, base)

        # 3. the others go away mid-body (half with RST, half with FIN); two read
        # to the end and get the exact body
        for i, r in enumerate(readers[2:]):
            r.close(rst=bool(i % 2))
        for r in readers[:2]:
            assert r.read_until(STREAM) == STREAM
            assert r.h.hexdigest() == pattern_sha256(STREAM)
    finally:
        for r in readers:
            r.close()
    # every upstream stream ended: the gateway closed (or finished) the upstream
    # side of each abandoned exchange instead of leaving it stuck
    assert wait_until(lambda: active[0] == 0, t(15)), "%d upstream streams still open" % active[0]
    assert_serves(gw)
    settled = wait_stable(lambda: rss_kb(gw.pid), t(5))
    assert settled < base + (32 if IS_ASAN else 16) * 1024, (
        "gateway RSS %d kB after the readers left (baseline %d kB)" % (settled, base))


# ---------------------------------------------------------------------------
# 10,000 idle keep-alive connections
# ---------------------------------------------------------------------------

IDLE_CONNS = 10000


def test_10k_idle_keepalive_connections_cost_under_40mb(gateway, upstream):
    raise_nofile(IDLE_CONNS + 2000)
    gw, up = start(gateway, upstream, max_connections=IDLE_CONNS + 1000)
    # warm up what does not scale with idle connections: the upstream pool, read
    # buffers in flight at the window's concurrency, the allocator's arenas
    warm = mass_round_trips(gw.port, 500, window=64)
    assert kinds(warm) == {"response 200": 500}, kinds(warm)
    for o in warm:
        rst_close(o.sock)
    time.sleep(0.3)
    base_rss = wait_stable(lambda: rss_kb(gw.pid), t(3))
    base_fds = fd_count(gw.pid)

    idle = []
    try:
        t0 = time.monotonic()
        outs = mass_round_trips(gw.port, IDLE_CONNS, window=64, timeout=t(20))
        idle = [o.sock for o in outs if o.kind == "response"]
        took = time.monotonic() - t0
        assert kinds(outs) == {"response 200": IDLE_CONNS}, kinds(outs)
        rss = wait_stable(lambda: rss_kb(gw.pid), t(3))
        fds = fd_count(gw.pid)
        delta_mb = (rss - base_rss) / 1024.0
        print("%d idle keep-alive connections (opened in %.1fs): gateway RSS %d -> %d kB "
              "(+%.1f MB, %.2f kB each), fds %d -> %d"
              % (IDLE_CONNS, took, base_rss, rss, delta_mb, (rss - base_rss) / IDLE_CONNS, base_fds, fds))
        # the gateway really holds them all
        assert fds >= base_fds + IDLE_CONNS, (base_fds, fds)
        # the budget: 40 MB for 10k idle connections (ASan's allocator
        # adds redzones and metadata to every allocation: 3x there)
        budget = 40 * (3 if IS_ASAN else 1)
        assert delta_mb < budget, (
            "10k idle keep-alive connections cost %.1f MB of RSS (%.1f kB each; budget %d MB)"
            % (delta_mb, (rss - base_rss) / IDLE_CONNS, budget))
        # they are live keep-alive connections: a sample takes a second request
        sample = random.Random(9).sample(idle, 300)
        again = mass_round_trips(gw.port, socks=sample, window=64)
        assert kinds(again) == {"response 200": 300}, kinds(again)
        # and a new client still gets in
        assert fetch(gw.port, "GET", "/new").status == 200
    finally:
        for s in idle:
            rst_close(s)
    assert wait_until(lambda: fd_count(gw.pid) <= base_fds + 10, t(10)), (
        "gateway still holds %d fds after the clients left (%d before)" % (fd_count(gw.pid), base_fds))
    assert_serves(gw)


# ---------------------------------------------------------------------------
# a flood over client.max_connections
# ---------------------------------------------------------------------------

LIMIT = 100
FLOOD = 2000


def open_held(port, n):
    """n keep-alive connections, each after one completed request, opened one
    at a time (a refused one is retried: the gateway may not have seen an
    earlier close yet)."""
    held = []
    for _ in range(n):
        for attempt in range(50):
            o = mass_round_trips(port, 1, timeout=t(5))[0]
            if o.kind == "response" and o.status == 200:
                held.append(o.sock)
                break
            time.sleep(0.05)
        else:
            raise AssertionError("could not open connection %d of %d: %r" % (len(held) + 1, n, o))
    return held


def test_flood_over_max_connections_is_refused_cleanly_and_recovers(gateway, upstream):
    raise_nofile(FLOOD + LIMIT + 1000)
    gw, up = start(gateway, upstream, max_connections=LIMIT)
    held = open_held(gw.port, LIMIT)
    flood = []
    try:
        # the flood and the held connections' next requests at the same time
        res = {}

        def held_requests():
            res["held"] = mass_round_trips(gw.port, socks=held, window=LIMIT, timeout=t(10))

        th = threading.Thread(target=held_requests)
        th.start()
        t0 = time.monotonic()
        flood = mass_round_trips(gw.port, FLOOD, window=FLOOD, timeout=t(10))
        took = time.monotonic() - t0
        th.join(t(30))
        print("flood of %d over max_connections %d: %r in %.2fs" % (FLOOD, LIMIT, kinds(flood), took))
        # within the limit: every held connection keeps working
        assert kinds(res["held"]) == {"response 200": LIMIT}, kinds(res["held"])
        # over it: closed at once (or a gateway error), never served, never left hanging
        for o in flood:
            if o.kind == "response":
                assert o.status == 503 and b"application/json" in o.head.lower(), o.head
            else:
                assert o.kind == "closed", "flood connection: %r" % o
                assert o.data == b"" or o.data.startswith(b"HTTP/1.1 503 "), o.data[:200]
        assert not [o for o in flood if o.kind == "response" and o.status == 200]
        assert gw.alive()
    finally:
        for o in flood:
            if o.kind == "response":
                rst_close(o.sock)
    # recovery: half the held connections go; exactly that many new ones get in
    # (the count of open connections neither leaked up nor down)...
    for s in held[LIMIT // 2:]:
        rst_close(s)
    held = held[:LIMIT // 2] + open_held(gw.port, LIMIT - LIMIT // 2)
    # ...and the limit still holds
    extra = mass_round_trips(gw.port, 20, window=20, timeout=t(5))
    assert all(o.kind == "closed" or o.status == 503 for o in extra), kinds(extra)
    for s in held:
        rst_close(s)
    # all gone: a full LIMIT of fresh connections is served again
    held = open_held(gw.port, LIMIT)
    for s in held:
        rst_close(s)
    assert gw.alive()
