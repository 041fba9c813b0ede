"""Chaos under load (issue 9): upstreams killed and restarted in a loop, an
upstream that misbehaves at random, and a SIGHUP storm with invalid configs
mixed in, each while client threads send tagged requests without pause.

Invariants checked in every test:
  * the gateway process never dies;
  * no request hangs past its deadline: the client gives up a little after the
    route's timeout, and a request that needs longer is a failure;
  * every request gets a complete response or a closed connection, never a wrong
    one: each request carries a unique tag (X-Tag and the path), the upstreams
    echo it (X-Echo-Tag and the JSON body), and a 200 must carry the tag of the
    request it answers; anything else must be one of the gateway's JSON errors;
  * the gateway's RSS comes back near its baseline afterwards.
"""

import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import threading
import time

from conftest import (IS_ASAN, IncompleteResponse, RawClient, ResponseParseError, fetch,
                      free_port, ms, rss_kb, t, wait_until)

# Upstream trouble is worth a warning (or an error line) in the gateway's log.
UPSTREAM_ERRORS = [r"(?i)upstream|127\.0\.0\.1:\d+"]

ASAN_ENV = {"ASAN_OPTIONS": ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                                 "quarantine_size_mb=16") if x)}

GATEWAY_ERRORS = {"upstream_unavailable": 502, "upstream_timeout": 504, "circuit_open": 503,
                  "bulkhead_full": 503}


# ---------------------------------------------------------------------------
# tagged load
# ---------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.errors = {}       # gateway error name -> count
        self.closed = 0        # connection closed instead of (or in the middle of) a response
        self.closed_detail = []
        self.wrong = []        # a response that does not answer the request: never allowed
        self.hung = []         # no answer within the deadline: never allowed
        self.by_upstream = {}  # upstream name -> 200s it answered
        self.total = 0
        self.max_elapsed = 0.0

    def add(self, kind, detail=None, elapsed=0.0):
        with self.lock:
            self.total += 1
            self.max_elapsed = max(self.max_elapsed, elapsed)
            if kind == "ok":
                self.ok += 1
                self.by_upstream[detail] = self.by_upstream.get(detail, 0) + 1
            elif kind == "error":
                self.errors[detail] = self.errors.get(detail, 0) + 1
            elif kind == "closed":
                self.closed += 1
                if len(self.closed_detail) < 20:
                    self.closed_detail.append(detail)
            elif kind == "wrong":
                self.wrong.append(detail)
            else:
                self.hung.append(detail)

    def summary(self):
        return "%d requests: %d ok %r, errors %r, %d closed, %d wrong, %d hung, max %.2fs" % (
            self.total, self.ok, self.by_upstream, self.errors, self.closed, len(self.wrong),
            len(self.hung), self.max_elapsed)

    def details(self):
        return "\n".join("  closed: %s" % d for d in self.closed_detail)

    def check(self, min_ok):
        assert not self.wrong, "responses that do not answer their request:\n  " + \
            "\n  ".join(map(str, self.wrong[:10]))
        assert not self.hung, "requests past their deadline:\n  " + "\n  ".join(map(str, self.hung[:10]))
        assert self.ok >= min_ok, self.summary()


def classify(r, tag, method, body):
    """('ok', upstream) | ('error', name) | ('wrong', why) for a final response."""
    if r.status == 200:
        try:
            doc = r.json()
        except ValueError:
            return "wrong", "200 with a non-JSON body %r" % r.body[:200]
        if r.header("x-echo-tag") != tag or doc.get("tag") != tag or not doc.get("path", "").endswith(tag):
            return "wrong", "request %s got the answer to %s/%s (%s)" % (
                tag, r.header("x-echo-tag"), doc.get("tag"), doc.get("path"))
        if doc.get("method") != method or doc.get("body_length") != len(body):
            return "wrong", "request %s %s (%d body bytes) echoed as %s with %s" % (
                method, tag, len(body), doc.get("method"), doc.get("body_length"))
        return "ok", doc.get("upstream")
    try:
        doc = r.json()
    except ValueError:
        return "wrong", "status %d with a non-JSON body %r" % (r.status, r.body[:200])
    name = doc.get("error")
    if GATEWAY_ERRORS.get(name) != r.status or doc.get("status") != r.status or not doc.get("request_id"):
        return "wrong", "status %d body %r" % (r.status, r.body[:200])
    return "error", name


def client_loop(port, stop, tally, deadline, seed, keepalive, prefix="/chaos"):
    """Sends tagged requests until `stop` is set; `deadline` bounds each one."""
    rng = random.Random(seed)
    c = None
    prev = None
    seq = 0
    while not stop.is_set():
        seq += 1
        tag = "t%d-%d-%08x" % (seed, seq, rng.getrandbits(32))
        method = "POST" if rng.random() < 0.3 else "GET"
        body = (tag.encode() * rng.randint(1, 40)) if method == "POST" else b""
        t0 = time.monotonic()
        if c is None:
            try:
                c = RawClient(port, timeout=deadline)
            except OSError as e:   # the gateway always accepts
                tally.add("wrong", "connecting to the gateway: %r" % e, time.monotonic() - t0)
                time.sleep(0.01)
                continue
            prev = None
        try:
            c.request(method, "%s/%s" % (prefix, tag), [("X-Tag", tag)], body)
            _, r = c.read_final_response(method)
        except socket.timeout:
            tally.add("hung", "%s %s: no answer within %.1fs" % (method, tag, deadline),
                      time.monotonic() - t0)
            c.close()
            c = None
            continue
        except (IncompleteResponse, ConnectionError) as e:
            # closed before or in the middle of the response (a truncated one
            # never looks complete: IncompleteResponse)
            partial = getattr(e, "response", None)
            tally.add("closed", "%s %s: %s (status %s, %d body bytes; previous request on "
                      "this connection: %s)" % (method, tag, e, partial.status if partial else None,
                                                partial.body_length if partial else 0, prev),
                      time.monotonic() - t0)
            if c:
                c.close()
            c = None
            time.sleep(rng.uniform(0.002, 0.01))
            continue
        except (ResponseParseError, ValueError, OSError) as e:
            tally.add("wrong", "%s %s: %r" % (method, tag, e), time.monotonic() - t0)
            if c:
                c.close()
            c = None
            continue
        elapsed = time.monotonic() - t0
        kind, detail = classify(r, tag, method, body)
        if elapsed > deadline:
            kind, detail = "hung", "%s %s answered after %.2fs" % (method, tag, elapsed)
        tally.add(kind, detail, elapsed)
        prev = tag
        if kind != "ok":
            time.sleep(rng.uniform(0.002, 0.01))   # as a client would: no busy loop on errors
        if not keepalive or (r.header("connection") or "").lower() == "close":
            c.close()
            c = None
    if c:
        c.close()


class Load:
    """`n` client threads running client_loop; half keep their connections alive."""

    def __init__(self, port, n, deadline, prefix="/chaos", seed=0):
        self.stop = threading.Event()
        self.tally = Tally()
        self.threads = [threading.Thread(target=client_loop, daemon=True,
                                         args=(port, self.stop, self.tally, deadline, seed + i,
                                               i % 2 == 0, prefix))
                        for i in range(n)]

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(60)
        assert not any(th.is_alive() for th in self.threads), "a client thread is stuck"


def wait_stable(get, timeout, quiet=0.5):
    deadline = time.monotonic() + timeout
    last, since = get(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        v = get()
        if abs(v - last) > 256:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def warm_up(gw, seconds, prefix="/chaos"):
    """Runs the same load against healthy upstreams so that pools, free lists and
    allocator arenas reach their working size; returns the settled RSS."""
    with Load(gw.port, 4, t(5), prefix=prefix, seed=1000) as load:
        time.sleep(seconds)
    load.tally.check(min_ok=20)
    assert not load.tally.errors and not load.tally.closed, load.tally.summary()
    return wait_stable(lambda: rss_kb(gw.pid), t(3))


def rss_bound_kb(base):
    return base + (48 if IS_ASAN else 16) * 1024


def assert_recovers(gw, prefix="/chaos"):
    """Once the chaos is over, a request is served again (breakers close)."""
    def served():
        try:
            return fetch(gw.port, "GET", prefix + "/after", headers=[("X-Tag", "after")]).status == 200
        except (OSError, IncompleteResponse):
            return False
    assert wait_until(served, t(10), 0.05), "no request served after the chaos:\n" + gw.log_tail()


# ---------------------------------------------------------------------------
# 1. upstreams killed and restarted in a loop
# ---------------------------------------------------------------------------

# A separate process so that it can be SIGKILLed: the kernel then closes its
# sockets under the gateway's feet, as when a real backend crashes.
UPSTREAM_PROC = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # head and body go out in two writes
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        tag = self.headers.get("X-Tag") or ""
        out = json.dumps({"tag": tag, "path": self.path, "method": self.command,
                          "body_length": len(body), "upstream": sys.argv[2]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Echo-Tag", tag)
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = answer
    def log_message(self, *a):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = True
s = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
s.serve_forever()
"""


class KillableUpstream:
    def __init__(self, port, name):
        self.port = port
        self.name = name
        self.proc = None
        self.starts = 0

    def start(self):
        for _ in range(50):
            self.proc = subprocess.Popen([sys.executable, "-c", UPSTREAM_PROC, str(self.port), self.name],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL)
            if self.proc.stdout.readline().strip() == b"ready":
                self.starts += 1
                return
            self.proc.wait()   # the port was still held: try again
            time.sleep(0.05)
        raise AssertionError("upstream %s could not bind 127.0.0.1:%d" % (self.name, self.port))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None


KILL_CONF = """\
upstreams:
  u:
    targets: [{address: "127.0.0.1:$p1"}, {address: "127.0.0.1:$p2"}]
    keepalive: 16
    timeouts: {connect: $connect, send: $io, read: $io}
    retry:
      max_retries: 2
      backoff: {base: 10ms, max: 50ms}
      budget: {ratio: 0.5, min_per_second: 50}
    circuit_breaker: {consecutive_failures: 3, open_for: 200ms, max_open_for: 1s, window: 2s,
                      min_requests: 20}
routes:
  - name: all
    upstream: u
    timeout: $route_timeout
"""

ROUTE_TIMEOUT = 1.5
DEADLINE = ROUTE_TIMEOUT + 1.5   # the client's patience: the route timeout + 1.5 s


def test_upstreams_killed_and_restarted_under_load(gateway):
    ups = [KillableUpstream(free_port(), "k1"), KillableUpstream(free_port(), "k2")]
    try:
        for u in ups:
            u.start()
        gw = gateway(KILL_CONF, p1=ups[0].port, p2=ups[1].port, connect=ms(0.5), io=ms(1),
                     route_timeout=ms(ROUTE_TIMEOUT), allow_errors=UPSTREAM_ERRORS,
                     env=ASAN_ENV if IS_ASAN else None)
        base = warm_up(gw, 1.0)
        rng = random.Random(7)
        kills = 0
        with Load(gw.port, 4, t(DEADLINE)) as load:
            end = time.monotonic() + 8
            while time.monotonic() < end:
                time.sleep(rng.uniform(0.2, 0.6))
                victims = ups if rng.random() < 0.2 else [rng.choice(ups)]   # sometimes both
                for u in victims:
                    u.kill()
                    kills += 1
                time.sleep(rng.uniform(0.05, 0.4))
                for u in victims:
                    u.start()
                assert gw.alive(), "gateway died:\n" + gw.log_tail()
            time.sleep(0.5)   # a calm end: requests in flight finish against live upstreams
        tally = load.tally
        print("%d kills: %s" % (kills, tally.summary()))
        print(tally.details())
        assert gw.alive(), "gateway died:\n" + gw.log_tail()
        tally.check(min_ok=200)
        assert set(tally.by_upstream) <= {"k1", "k2"}, tally.by_upstream
        assert_recovers(gw)
        rss = wait_stable(lambda: rss_kb(gw.pid), t(3))
        print("gateway RSS %d kB after warm-up, %d kB after the chaos" % (base, rss))
        assert rss < rss_bound_kb(base), "gateway RSS %d kB after the chaos, %d kB before" % (rss, base)
    finally:
        for u in ups:
            u.kill()


# ---------------------------------------------------------------------------
# 2. an upstream that misbehaves at random
# ---------------------------------------------------------------------------

def tagged_echo_body(conn, req):
    tag = req.header("x-tag") or ""
    return tag, json.dumps({"tag": tag, "path": req.target, "method": req.method,
                            "body_length": req.body_length, "upstream": conn.server.name}).encode()


def tagged_echo(conn, req, chunked=False, extra=b"", interim=False):
    """Answers the tag; `extra` bytes follow the response in the same write."""
    conn.read_body(req)
    tag, body = tagged_echo_body(conn, req)
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", "X-Echo-Tag: " + tag]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        payload = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
    else:
        head.append("Content-Length: %d" % len(body))
        payload = body
    out = ("\r\n".join(head) + "\r\n\r\n").encode() + payload + extra
    if interim:
        out = b"HTTP/1.1 100 Continue\r\n\r\n" + out
    conn.send(out)


def evil_response(tag):
    """A complete, plausible response to somebody else's request."""
    body = json.dumps({"tag": "evil-" + tag, "path": "/evil", "method": "GET", "body_length": 0,
                       "upstream": "evil"}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo-Tag: evil-%s\r\n"
            b"Content-Length: %d\r\n\r\n" % (tag.encode(), len(body))) + body


def head_then(conn, req, then):
    """Sends a head announcing 20000 body bytes and 5000 of them, then `then`."""
    conn.read_body(req)
    tag, _ = tagged_echo_body(conn, req)
    conn.send(b"HTTP/1.1 200 OK\r\nX-Echo-Tag: %s\r\nContent-Length: 20000\r\n\r\n" % tag.encode()
              + b"x" * 5000)
    time.sleep(0.02)
    return then()


GARBAGE = [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-Custom : v\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\rXok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 99999 Nope\r\nContent-Length: 0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
]


def chaos_handler(seed):
    """A handler that picks a behaviour at random for each request it gets; it
    records the behaviours per tag in `handler.seen`."""
    rng = random.Random(seed)
    lock = threading.Lock()
    seen = {}

    def pick():
        with lock:
            return rng.choices(BEHAVIOURS, weights=[w for _, w in BEHAVIOURS])[0][0], rng.random()

    def handler(conn, req):
        name, x = pick()
        tag = req.header("x-tag") or ""
        with lock:
            seen.setdefault(tag, []).append(name)
        if name == "ok":
            return tagged_echo(conn, req)
        if name == "ok_chunked":
            return tagged_echo(conn, req, chunked=True)
        if name == "ok_interim":
            return tagged_echo(conn, req, interim=True)
        if name == "slow_ok":
            conn.read_body(req)
            conn.server.stopped.wait(0.05 + 0.2 * x)
            return tagged_echo(conn, req)
        if name == "ok_then_evil":
            # a desync attempt: a second, complete response right behind the
            # real one in the same write; the connection then stays open
            return tagged_echo(conn, req, extra=evil_response(tag))
        conn.read_body(req)
        if name == "reset":
            conn.reset()
            return False
        if name == "close":
            conn.close()
            return False
        if name == "stall":
            conn.stall(5)
            return False
        if name == "garbage":
            conn.send(GARBAGE[int(x * len(GARBAGE))])
            time.sleep(0.02)
            conn.close()
            return False
        if name == "close_mid_body":
            return head_then(conn, req, lambda: conn.close()) and False
        if name == "reset_mid_body":
            return head_then(conn, req, lambda: conn.reset()) and False
        if name == "stall_mid_body":
            return head_then(conn, req, lambda: conn.stall(5)) and False
        raise AssertionError(name)

    handler.seen = seen
    return handler


BEHAVIOURS = [("ok", 40), ("ok_chunked", 8), ("ok_interim", 3), ("slow_ok", 5), ("ok_then_evil", 5),
              ("reset", 8), ("close", 5), ("stall", 3), ("garbage", 9), ("close_mid_body", 5),
              ("reset_mid_body", 5), ("stall_mid_body", 3)]

MISBEHAVING_CONF = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    keepalive: 16
    timeouts: {connect: $io, send: $io, read: $io}
    retry:
      max_retries: 1
      backoff: {base: 5ms, max: 20ms}
      budget: {ratio: 0.5, min_per_second: 100}
    circuit_breaker: {consecutive_failures: 6, failure_rate: 0.9, window: 2s, min_requests: 50,
                      open_for: 100ms, max_open_for: 400ms}
routes:
  - name: all
    upstream: u
    timeout: $route_timeout
"""


def test_randomly_misbehaving_upstream_under_load(gateway, upstream):
    handler = chaos_handler(seed=11)
    up = upstream(lambda conn, req: tagged_echo(conn, req), name="ok")
    gw = gateway(MISBEHAVING_CONF, a=up, io=ms(0.4), route_timeout=ms(ROUTE_TIMEOUT),
                 allow_errors=UPSTREAM_ERRORS, env=ASAN_ENV if IS_ASAN else None)
    base = warm_up(gw, 1.0)
    up.name = "chaos"
    up.handler = handler
    with Load(gw.port, 6, t(DEADLINE)) as load:
        end = time.monotonic() + 8
        while time.monotonic() < end:
            time.sleep(0.2)
            assert gw.alive(), "gateway died:\n" + gw.log_tail()
    tally = load.tally
    counts = {}
    for names in handler.seen.values():
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    print("upstream behaviours %r" % counts)
    print(tally.summary())
    for d in tally.closed_detail[:5]:
        print("  closed: %s; the upstream did %r" % (d, handler.seen.get(d.split()[1].rstrip(":"))))
    assert gw.alive(), "gateway died:\n" + gw.log_tail()
    tally.check(min_ok=100)   # stalls hold clients for the read timeout: ~600 ok here, ~250 under ASan
    assert set(counts) == {n for n, _ in BEHAVIOURS}, counts   # every behaviour was exercised
    up.handler = lambda conn, req: tagged_echo(conn, req)
    assert_recovers(gw)
    rss = wait_stable(lambda: rss_kb(gw.pid), t(3))
    print("gateway RSS %d kB after warm-up, %d kB after the chaos" % (base, rss))
    assert rss < rss_bound_kb(base), "gateway RSS %d kB after the chaos, %d kB before" % (rss, base)


# ---------------------------------------------------------------------------
# 3. a SIGHUP storm, with invalid configs mixed in
# ---------------------------------------------------------------------------

# Two workers: every reload must reach both. Each valid variant loads Lua
# plugins, so every reload builds fresh VMs (and must free the old ones).
STORM_PREAMBLE = """\
listen: ["127.0.0.1:$port"]
workers: 2
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: off
drain_timeout: $drain_timeout
"""

STORM_UPSTREAMS = """\
upstreams:
  a: {targets: [{address: "$a"}], keepalive: 8}
  b: {targets: [{address: "$b"}], keepalive: 8}
  ab:
    targets: [{address: "$a"}, {address: "$b", weight: 2}]
"""

STORM_VALID = {
    "to_a": """\
routes:
  - name: storm
    match: {paths: ["/storm"]}
    upstream: a
    timeout: $route_timeout
    plugins: [{name: request_id}]
""",
    "to_b": """\
routes:
  - name: storm
    match: {paths: ["/storm"]}
    upstream: b
    timeout: $route_timeout
    balancer: {name: p2c_ewma}
    plugins:
      - {name: request_id}
      - {name: rate_limit, config: {rate: 1000000, burst: 1000000}}
""",
    "to_ab": """\
routes:
  - name: other
    match: {paths: ["/other"]}
    upstream: a
  - name: storm
    match: {paths: ["/storm"]}
    upstream: ab
    timeout: $route_timeout
    balancer: {name: least_conn}
""",
}

STORM_INVALID = {
    "yaml_syntax": """\
routes: [
  - name: storm
    upstream: a
""",
    "unknown_key": """\
routes:
  - name: storm
    upstream: a
    bogus_key: 1
""",
    "unknown_upstream": """\
routes:
  - name: storm
    upstream: nowhere
""",
    "bad_duration": """\
routes:
  - name: storm
    upstream: a
    timeout: soon
""",
    "plugin_init_fails": """\
routes:
  - name: storm
    upstream: a
    plugins: [{name: rate_limit, config: {rate: -5}}]
""",
    "unknown_plugin": """\
routes:
  - name: storm
    upstream: a
    plugins: [{name: no_such_plugin}]
""",
    "empty": "",
}


def storm_config(gw, variant, route_timeout):
    body = STORM_VALID.get(variant, STORM_INVALID.get(variant))
    text = STORM_PREAMBLE + STORM_UPSTREAMS + body if variant != "empty" else ""
    subs = {k: str(v) for k, v in gw.subs.items()}
    text = string.Template(text).substitute(subs, route_timeout=route_timeout)
    tmp = gw.config_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, gw.config_path)   # the gateway never reads a half-written file


def storm(gw, rng, seconds, interval, route_timeout):
    """SIGHUPs every `interval` s for `seconds`, 60% valid configs; returns counts."""
    sent = {"valid": 0, "invalid": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if rng.random() < 0.6:
            storm_config(gw, rng.choice(sorted(STORM_VALID)), route_timeout)
            sent["valid"] += 1
        else:
            storm_config(gw, rng.choice(sorted(STORM_INVALID)), route_timeout)
            sent["invalid"] += 1
        gw.signal(signal.SIGHUP)
        time.sleep(interval)
        assert gw.alive(), "gateway died:\n" + gw.log_tail()
    return sent


def test_sighup_storm_with_invalid_configs_under_load(gateway, upstream):
    a = upstream(lambda conn, req: tagged_echo(conn, req), name="A")
    b = upstream(lambda conn, req: tagged_echo(conn, req), name="B")
    rt = ms(ROUTE_TIMEOUT)
    gw = gateway(STORM_PREAMBLE + STORM_UPSTREAMS + STORM_VALID["to_a"], full=True, a=a, b=b,
                 route_timeout=rt, allow_errors=[r"config reload failed"],
                 env=ASAN_ENV if IS_ASAN else None)
    rng = random.Random(5)
    warm_up(gw, 0.5, prefix="/storm")
    storm(gw, rng, 1.0, 0.02, rt)   # warm-up: VM churn reaches its working size
    time.sleep(0.3)
    base = wait_stable(lambda: rss_kb(gw.pid), t(3))
    reloads_before = gw.log().count("config reloaded")
    failed_before = gw.log().count("config reload failed")

    with Load(gw.port, 4, t(DEADLINE), prefix="/storm") as load:
        sent = storm(gw, rng, 5.0, 0.02, rt)
        time.sleep(0.3)
    tally = load.tally
    log = gw.log()
    reloaded = log.count("config reloaded") - reloads_before
    failed = log.count("config reload failed") - failed_before
    print("SIGHUPs %r -> %d reloads, %d failed reloads; %s" % (sent, reloaded, failed, tally.summary()))
    assert gw.alive(), "gateway died:\n" + gw.log_tail()
    # a reload never fails a request: not one error or closed connection
    tally.check(min_ok=200)
    assert tally.ok == tally.total, tally.summary()
    assert set(tally.by_upstream) == {"A", "B"}, tally.by_upstream   # the routing did switch
    # signals may coalesce, but both outcomes happened many times
    assert reloaded >= 10 and failed >= 5, (reloaded, failed)

    # the last valid config wins: everything goes to B (once the reload is logged,
    # and both workers have switched: 20 requests in a row on B)
    done_before = gw.log().count("config reloaded")
    storm_config(gw, "to_b", rt)
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log().count("config reloaded") > done_before, t(5)), gw.log_tail()

    def on_b():
        for _ in range(20):
            r = fetch(gw.port, "GET", "/storm/final", headers=[("X-Tag", "final")])
            if r.status != 200 or r.json()["upstream"] != "B":
                return False
        return True
    assert wait_until(on_b, t(5), 0.05), gw.log_tail()
    with Load(gw.port, 2, t(DEADLINE), prefix="/storm", seed=50) as load:
        time.sleep(0.5)
    load.tally.check(min_ok=20)
    assert load.tally.by_upstream == {"B": load.tally.total}, load.tally.summary()

    rss = wait_stable(lambda: rss_kb(gw.pid), t(3))
    print("gateway RSS %d kB after the warm-up storm, %d kB after %d more reloads" % (base, rss, reloaded))
    assert rss < rss_bound_kb(base), (
        "gateway RSS grew from %d to %d kB over %d reloads" % (base, rss, reloaded))
