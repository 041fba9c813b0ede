"""Idempotency-Key deduplication (DESIGN sections 3-5 and 7: routes[].idempotency,
the top-level `redis` and `idempotency_memory`), through the real binary against
scripted upstreams and, for `store: redis`, a real redis-server (redis_fixture.py).

The upstream application (App) counts what it executes: "forwarded once" and
"not contacted" are asserted on the upstream's own request log. The main cases
run on both stores (the `store` parameter).
"""

import collections
import json
import re
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import (BIN, RawClient, assert_error, chunked, fetch, free_port, ms, samples, t,
                      wait_until)
from redis_fixture import redis_server  # noqa: F401  (a fixture)
from upstream import pattern_blocks, pattern_sha256

KEY = "Idempotency-Key"
BIG = (1 << 20) + (128 << 10)     # a response body past the 1 MiB record bound

# gateway log lines the Redis failure tests produce on purpose
ALLOW = [r"(?i)redis", r"(?i)idempot", r"(?i)upstream"]


# ---------------------------------------------------------------------------
# the upstream application
# ---------------------------------------------------------------------------

class App:
    """A scripted upstream handler. Every request it receives is one execution;
    what it answers depends on the path (the last segments):

        .../status/NNN   that status, a small JSON body naming it
        .../chunked      201 with a chunked body
        .../big          201 with BIG pattern bytes (Content-Length)
        .../close        201 "closing N" with Connection: close, then closes
        .../hold         waits until `gate` is set, then the default answer
        .../slow         sleeps `slow` seconds, then the default answer
        .../status/204   (and 304) a head without a body or Content-Length
        anything else    201 + JSON {n, method, target, body, auth}, with
                         X-Order-Id, Location, Cache-Control, Content-Type
                         and two Set-Cookie

    `actions` (a deque) overrides the next requests in order: "reset" (RST
    before any response byte), "stall" (never answer), "502" (a 502 status),
    "close-mid-body" (a head with Content-Length, part of the body, then FIN).
    """

    def __init__(self, name="app", slow=0.3):
        self.name = name
        self.n = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.slow = slow
        self.actions = collections.deque()

    def __call__(self, conn, req):
        body = conn.read_body(req)
        with self.lock:
            self.n += 1
            n = self.n
            action = self.actions.popleft() if self.actions else None
        if action == "reset":
            conn.reset()
            return False
        if action == "stall":
            conn.stall(t(5))
            return False
        if action == "502":
            conn.respond(502, b"from 502")
            return None
        if action == "close-mid-body":
            conn.send_head(201, [("Content-Length", "100000"), ("X-Order-Id", "ord-%d" % n)])
            conn.send(b"x" * 5000)
            time.sleep(0.05)
            conn.close()
            return False
        p = req.path
        m = re.search(r"/status/(\d+)$", p)
        if m:
            code = int(m.group(1))
            if code in (204, 304):
                conn.send_head(code, [("X-Order-Id", "ord-%d" % n), ("ETag", '"e%d"' % n)])
                return None
            doc = ('{"upstream_status":%d,"n":%d}' % (code, n)).encode()
            conn.respond(code, doc, [("Content-Type", "application/json"),
                                     ("X-Order-Id", "ord-%d" % n)])
            return None
        if p.endswith("/chunked"):
            conn.send_head(201, [("Content-Type", "text/plain"), ("X-Order-Id", "ord-%d" % n),
                                 ("Transfer-Encoding", "chunked")])
            for part in (b"first part %d;" % n, b"second part;", b"x" * 3000):
                conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
            conn.send(b"0\r\n\r\n")
            return None
        if p.endswith("/big"):
            conn.send_head(201, [("Content-Type", "application/octet-stream"),
                                 ("X-Order-Id", "ord-%d" % n), ("Content-Length", str(BIG))])
            for b in pattern_blocks(BIG):
                conn.send(b)
            return None
        if p.endswith("/close"):
            conn.respond(201, b"closing %d" % n, [("Content-Type", "text/plain"),
                                                  ("X-Order-Id", "ord-%d" % n),
                                                  ("Connection", "close")])
            return False
        if p.endswith("/hold"):
            self.gate.wait(t(10))
        if p.endswith("/slow"):
            conn.server.stopped.wait(self.slow)
        doc = json.dumps({"n": n, "app": self.name, "method": req.method, "target": req.target,
                          "body": body.decode("latin-1"),
                          "auth": req.header("authorization") or ""}).encode()
        conn.respond(201, doc, [("Content-Type", "application/json"),
                                ("X-Order-Id", "ord-%d" % n),
                                ("Location", "/orders/%d" % n),
                                ("Cache-Control", "no-store"),
                                ("Set-Cookie", "a=%d; Path=/" % n),
                                ("Set-Cookie", "b=2; HttpOnly")])
        return None


# ---------------------------------------------------------------------------
# configuration and environment
# ---------------------------------------------------------------------------

IDEM_DEFAULTS = dict(ttl="10s", lock_ttl="5s", max_body="1k", scope='["header:Authorization"]')


def config(store, redis_section=True, idem=None, strict_store=None, extra_routes="",
           upstream_extra="", top="", redis_timeout=None):
    """The YAML body: upstream `u` ($up), routes pay (/pay), other (/other),
    strict (/strict, required key) with idempotency on `store`, and plain (/).
    idem: {option: yaml value} overriding IDEM_DEFAULTS for pay and other.
    redis_timeout: 1 s by default, so that a starved machine does not turn a
    slow Redis answer into a 503 where the test is not about that."""
    strict_store = strict_store or store
    redis_timeout = redis_timeout or ms(1.0)
    redis = ('redis: {address: "$redis", timeout: %s}\n' % redis_timeout) if redis_section else ""
    opts = dict(IDEM_DEFAULTS, store=store)
    opts.update(idem or {})
    common = ", ".join("%s: %s" % kv for kv in opts.items())
    return redis + top + """\
upstreams:
  u:
    targets: [{address: "$up"}]
    retry: {max_retries: 0}
    timeouts: {read: %(read)s}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
%(upstream_extra)s
routes:
  - name: pay
    match: {paths: ["/pay"]}
    upstream: u
    idempotency: {%(common)s}
  - name: other
    match: {paths: ["/other"]}
    upstream: u
    idempotency: {%(common)s}
  - name: strict
    match: {paths: ["/strict"]}
    upstream: u
    idempotency: {required: true, store: %(strict_store)s}
%(extra_routes)s
  - name: plain
    match: {paths: ["/"]}
    upstream: u
""" % dict(common=common, strict_store=strict_store, read=ms(1.5),
           extra_routes=extra_routes, upstream_extra=upstream_extra)


class Env:
    def __init__(self, gw, up, app, redis):
        self.gw, self.up, self.app, self.redis = gw, up, app, redis

    @property
    def count(self):
        """Requests the upstream received (= executions)."""
        return len(self.up.requests)

    def post(self, path="/pay/orders", key="k1", body=b'{"amount":1}', headers=(),
             method="POST", gw=None, **kw):
        hs = [(KEY, key)] if key is not None else []
        hs += list(headers)
        return fetch((gw or self.gw).port, method, path, hs, body, **kw)

    def metrics(self):
        return scrape(self.gw)


def start_env(gateway, upstream, redis_server, store, conf=None, allow=(), app=None, **kw):
    app = app or App()
    up = upstream(app)
    redis = redis_server() if store == "redis" else None
    body = conf if conf is not None else config(store, redis_section=redis is not None, **kw)
    subs = dict(up=up)
    if redis is not None:
        subs["redis"] = redis.address
    gw = gateway(body, allow_errors=list(allow) + ALLOW, **subs)
    return Env(gw, up, app, redis)


@pytest.fixture(params=["memory", "redis"])
def store(request):
    return request.param


@pytest.fixture
def env(gateway, upstream, redis_server, store):
    return start_env(gateway, upstream, redis_server, store)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def scrape(gw):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=t(5)) as r:
        return r.read().decode()


def idem_counts(text, route):
    """{result: value} of moongate_idempotency_total for one route (non-zero only)."""
    out = {}
    for (name, labels), v in samples(text).items():
        d = dict(labels)
        if name == "moongate_idempotency_total" and d.get("route") == route and v:
            out[d["result"]] = v
    return out


def assert_replay_of(orig, rep, request_id=None):
    """rep is orig replayed: status, body bytes, end-to-end headers, the marker,
    Content-Length framing."""
    assert orig.header("Idempotent-Replayed") is None, orig.headers
    assert rep.status == orig.status, (rep, rep.body[:200])
    assert rep.header("Idempotent-Replayed") == "true", rep.headers
    assert rep.body == orig.body
    for h in ("Content-Type", "X-Order-Id", "Location", "Cache-Control", "Set-Cookie", "ETag",
              "Via"):
        assert rep.header_all(h) == orig.header_all(h), (h, orig.headers, rep.headers)
    if rep.status in (204, 304):
        assert rep.header("Content-Length") is None, rep.headers  # RFC 9110 8.6
    else:
        assert rep.framing == "length", rep.headers
        assert rep.header_all("Content-Length") == [str(len(orig.body))]
    assert rep.header("Transfer-Encoding") is None
    if request_id is not None:
        assert rep.header("X-Request-Id") == request_id, rep.headers


def parallel(fn, args_list, timeout):
    """Runs fn(*args) in one thread each; returns the results (exceptions as values).
    A thread still running after timeout is reported as 'HUNG'."""
    results = [None] * len(args_list)

    def run(i, args):
        try:
            results[i] = fn(*args)
        except Exception as e:  # noqa: BLE001 - reported to the test
            results[i] = e
    threads = [threading.Thread(target=run, args=(i, a), daemon=True) for i, a in enumerate(args_list)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    for i, th in enumerate(threads):
        th.join(max(0.0, deadline - time.monotonic()))
        if th.is_alive():
            results[i] = "HUNG"
    return results


def is_error(resp, name, status):
    if resp.status != status:
        return False
    try:
        return resp.json().get("error") == name
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# replay (both stores)
# ---------------------------------------------------------------------------

def test_first_forwarded_then_replayed(env):
    a = env.post(key="order-1", headers=[("X-Request-Id", "rid-first-1")])
    assert a.status == 201, (a, a.body)
    assert a.header("X-Order-Id") == "ord-1" and a.json()["n"] == 1
    assert a.header("X-Request-Id") == "rid-first-1"
    assert env.count == 1
    # the upstream got the request (key header included) unchanged
    assert env.up.requests[0].body == b'{"amount":1}'
    b = env.post(key="order-1", headers=[("X-Request-Id", "rid-second-2")])
    assert_replay_of(a, b, request_id="rid-second-2")
    # the quoted sf-string form names the same key
    c = env.post(key='"order-1"')
    assert_replay_of(a, c)
    assert c.header("X-Request-Id") not in (None, "rid-first-1", "rid-second-2")
    # the same bytes sent chunked are the same body
    with RawClient(env.gw.port) as cl:
        cl.request("POST", "/pay/orders", [(KEY, "order-1"), ("Transfer-Encoding", "chunked")],
                   chunked(b'{"amo', b'unt":1}'))
        d = cl.read_response("POST")
    assert_replay_of(a, d)
    assert env.count == 1, env.up.requests
    # a different key executes again
    e = env.post(key="order-2")
    assert e.status == 201 and e.json()["n"] == 2 and e.header("Idempotent-Replayed") is None
    assert env.count == 2
    if env.redis is not None:
        assert wait_until(lambda: len(env.redis.keys()) == 2, t(2)), env.redis.keys()
        keys = env.redis.keys()
        for k in keys:   # stored for ttl (10 s), no longer the lock's 5 s
            assert 5000 < env.redis.pttl(k) <= 10000, (k, env.redis.pttl(k))


def test_replay_on_a_keep_alive_connection(env):
    """A replay is framed so the connection goes on: three requests on one connection."""
    with RawClient(env.gw.port) as c:
        got = []
        for i in range(3):
            c.request("POST", "/pay/ka", [(KEY, "ka-1")], b"same")
            got.append(c.read_response("POST"))
        c.request("GET", "/plain/after")
        last = c.read_response("GET")
    assert got[0].status == 201
    assert_replay_of(got[0], got[1])
    assert_replay_of(got[0], got[2])
    assert last.status == 201 and last.json()["method"] == "GET"
    assert env.count == 2


def test_upstream_closing_its_connection(env):
    """The upstream answers with Connection: close and closes. The client gets
    the body intact (its end is held until the store has the record: the closed
    upstream connection's buffer must outlive that), and the Connection header,
    hop-by-hop, is neither stored nor replayed."""
    for i in range(8):
        with RawClient(env.gw.port) as c:
            got = []
            for _ in range(3):
                c.request("POST", "/pay/kc%d/close" % i, [(KEY, "kc-%d" % i)], b"same")
                got.append(c.read_response("POST"))
        assert got[0].status == 201
        assert got[0].body == b"closing %d" % (i + 1), "corrupted body: %r" % got[0].body
        for r in got[1:]:
            assert_replay_of(got[0], r)
            assert r.header("Connection") is None, r.headers
    assert env.count == 8


def test_http10_client_gets_a_framed_replay(env):
    def once():
        with RawClient(env.gw.port) as c:
            c.request("POST", "/pay/h10", [(KEY, "h10-1")], b"ten", version="HTTP/1.0")
            r = c.read_response("POST")
            c.wait_closed(t(5))
        return r
    a = once()
    assert a.status == 201
    b = once()
    assert_replay_of(a, b)
    assert b.version == "HTTP/1.1" or b.version == "HTTP/1.0"
    assert env.count == 1


def test_client_leaving_does_not_allow_a_second_execution(env):
    """A client that disconnects after its request was forwarded: the upstream
    executes it anyway, so the key stays locked while it runs (a retry gets 409)
    and the response is stored (a later retry gets the replay): never two
    executions (Stripe's behaviour). (README says a client that leaves early
    releases the key; releasing while the upstream still runs would let a retry
    execute the request a second time.)"""
    env.app.gate.clear()
    try:
        c = RawClient(env.gw.port)
        c.request("POST", "/pay/x/hold", [(KEY, "gone-1")], b"g")
        assert len(env.up.wait_requests(1, t(5))) == 1
        c.close()
        time.sleep(0.2)
        assert_error(env.post("/pay/x/hold", key="gone-1", body=b"g"), "idempotency_conflict", 409)
    finally:
        env.app.gate.set()
    r = wait_until(lambda: (lambda x: x if x.status == 201 else None)(
        env.post("/pay/x/hold", key="gone-1", body=b"g")), t(5), interval=0.05)
    assert r is not None and r.header("Idempotent-Replayed") == "true", r
    assert r.json()["n"] == 1
    assert env.count == 1


def test_client_reset_after_forwarding_keeps_the_key_locked(env):
    """A client that resets its connection after the request was forwarded never
    gets the response. The upstream may have executed it, so the key is not
    released: a retry gets 409 until lock_ttl (or the replay), never a second
    execution."""
    import socket
    import struct
    env.app.gate.clear()
    try:
        c = RawClient(env.gw.port)
        c.request("POST", "/pay/x/hold", [(KEY, "reset-1")], b"r")
        assert len(env.up.wait_requests(1, t(5))) == 1
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    finally:
        env.app.gate.set()
    time.sleep(t(0.5))  # the upstream answers; the write to the reset client fails
    r = env.post("/pay/x/hold", key="reset-1", body=b"r")
    # Either the lock is still held (409), or the response was stored before the
    # failed write (the end of a keyed response waits for the store): a replay.
    if r.status == 409:
        assert_error(r, "idempotency_conflict", 409)
    else:
        assert r.status == 201 and r.header("Idempotent-Replayed") == "true", r
        assert r.json()["n"] == 1
    assert env.count == 1


def test_chunked_response_replayed_with_content_length(env):
    a = env.post("/pay/x/chunked", key="ch-1")
    assert a.status == 201 and a.framing == "chunked", a
    b = env.post("/pay/x/chunked", key="ch-1")
    assert_replay_of(a, b)
    assert b.body.startswith(b"first part 1;second part;") and len(b.body) == len(a.body)
    assert env.count == 1


def test_in_flight_key_is_a_conflict(env):
    env.app.gate.clear()
    first = {}

    def run_first():
        first["r"] = env.post("/pay/x/hold", key="busy-1")
    th = threading.Thread(target=run_first, daemon=True)
    th.start()
    try:
        assert len(env.up.wait_requests(1, t(5))) == 1
        if env.redis is not None:
            keys = env.redis.keys()
            assert len(keys) == 1 and 0 < env.redis.pttl(keys[0]) <= 5000   # the lock
        r = env.post("/pay/x/hold", key="busy-1", headers=[("X-Request-Id", "rid-conflict")])
        doc = assert_error(r, "idempotency_conflict", 409)
        assert doc["request_id"] == "rid-conflict"
        ra = r.header("Retry-After")
        assert ra is not None and ra.isdigit() and 1 <= int(ra) <= 5, r.headers
        assert env.count == 1
    finally:
        env.app.gate.set()
    th.join(t(10))
    assert first["r"].status == 201 and first["r"].header("Idempotent-Replayed") is None
    again = env.post("/pay/x/hold", key="busy-1")
    assert_replay_of(first["r"], again)
    assert env.count == 1


def test_different_payload_is_a_mismatch(env):
    a = env.post("/pay/m?x=1", key="mm-1", body=b"body-a")
    assert a.status == 201
    cases = [
        dict(path="/pay/m?x=1", body=b"body-b"),               # body
        dict(path="/pay/m?x=1", body=b""),                     # no body
        dict(path="/pay/m2?x=1", body=b"body-a"),              # path
        dict(path="/pay/m?x=2", body=b"body-a"),               # query
        dict(path="/pay/m", body=b"body-a"),                   # query gone
        dict(path="/pay/m?x=1", body=b"body-a", method="PATCH"),  # method
    ]
    for c in cases:
        r = env.post(key="mm-1", **c)
        assert_error(r, "idempotency_mismatch", 422)
    assert env.count == 1
    # the stored response is still there for the right payload
    assert_replay_of(a, env.post("/pay/m?x=1", key="mm-1", body=b"body-a"))


def test_mismatch_while_in_flight_is_422(env):
    env.app.gate.clear()
    th = threading.Thread(target=lambda: env.post("/pay/x/hold", key="mmf-1", body=b"A"), daemon=True)
    th.start()
    try:
        assert len(env.up.wait_requests(1, t(5))) == 1
        assert_error(env.post("/pay/x/hold", key="mmf-1", body=b"B"), "idempotency_mismatch", 422)
    finally:
        env.app.gate.set()
    th.join(t(10))
    assert env.count == 1


def test_scope_and_route_namespace_keys(env):
    a1 = env.post(key="shared", headers=[("Authorization", "Bearer tenant-a")])
    b1 = env.post(key="shared", headers=[("Authorization", "Bearer tenant-b")])
    assert a1.status == b1.status == 201
    assert a1.header("Idempotent-Replayed") is None and b1.header("Idempotent-Replayed") is None
    assert (a1.json()["n"], b1.json()["n"]) == (1, 2)
    assert_replay_of(a1, env.post(key="shared", headers=[("Authorization", "Bearer tenant-a")]))
    assert_replay_of(b1, env.post(key="shared", headers=[("Authorization", "Bearer tenant-b")]))
    assert env.count == 2
    # the same key and payload on another route is another key
    o1 = env.post("/other/orders", key="shared", headers=[("Authorization", "Bearer tenant-a")])
    assert o1.status == 201 and o1.header("Idempotent-Replayed") is None and o1.json()["n"] == 3
    assert_replay_of(o1, env.post("/other/orders", key="shared",
                                  headers=[("Authorization", "Bearer tenant-a")]))
    assert env.count == 3


def test_5xx_releases_the_key(env):
    for code in (500, 503):
        path = "/pay/x/status/%d" % code
        before = env.count
        r1 = env.post(path, key="fail-%d" % code)
        assert r1.status == code and r1.json()["upstream_status"] == code
        if env.redis is not None:   # the release may reach Redis just after the response
            assert wait_until(lambda: env.redis.dbsize() == 0, t(2)), env.redis.keys()
        r2 = env.post(path, key="fail-%d" % code)
        assert r2.status == code and r2.header("Idempotent-Replayed") is None
        assert env.count == before + 2
    # dedup is on for this route: a success is kept
    ok = env.post("/pay/x", key="fail-500")
    assert ok.status == 201
    assert_replay_of(ok, env.post("/pay/x", key="fail-500"))
    assert env.count == 5


def test_upstream_failure_and_timeout_release_the_key(env):
    # reset before any response byte -> 502; the same request again executes
    env.app.actions.extend(["reset"])
    assert_error(env.post(key="rst-1"), "upstream_unavailable", 502)
    r = env.post(key="rst-1")
    assert r.status == 201 and r.header("Idempotent-Replayed") is None
    assert env.count == 2
    # read timeout -> 504; again executes
    env.app.actions.extend(["stall"])
    t0 = time.monotonic()
    assert_error(env.post(key="slow-1"), "upstream_timeout", 504)
    assert time.monotonic() - t0 < t(4)
    r = env.post(key="slow-1")
    assert r.status == 201 and r.header("Idempotent-Replayed") is None
    assert env.count == 4
    assert_replay_of(r, env.post(key="slow-1"))
    assert env.count == 4


def test_unreachable_upstream_releases_the_key(gateway, upstream, redis_server, store):
    dead = """\
  - name: dead
    match: {paths: ["/dead"]}
    upstream: d
    idempotency: {store: %s}
""" % store
    extra_up = '  d:\n    targets: [{address: "127.0.0.1:%d"}]\n    retry: {max_retries: 0}\n' % free_port()
    e = start_env(gateway, upstream, redis_server, store, extra_routes=dead,
                  upstream_extra=extra_up)
    for _ in range(3):
        assert_error(e.post("/dead/x", key="dead-1"), "upstream_unavailable", 502)
    if e.redis is not None:
        assert wait_until(lambda: e.redis.dbsize() == 0, t(2)), e.redis.keys()
    assert e.count == 0
    # each try took the key (dedup is on for the route) and gave it back
    assert idem_counts(e.metrics(), "dead") == {"new": 3}


def test_4xx_is_stored_and_replayed(env):
    for code in (400, 409, 422):
        path = "/pay/x/status/%d" % code
        a = env.post(path, key="c4-%d" % code)
        assert a.status == code and a.json()["upstream_status"] == code
        b = env.post(path, key="c4-%d" % code)
        assert_replay_of(a, b)
        assert b.json() == a.json()     # the upstream's own 4xx, not a gateway error
    assert env.count == 3


def test_ttl_expiry_executes_again(gateway, upstream, redis_server, store):
    e = start_env(gateway, upstream, redis_server, store, idem={"ttl": ms(1.0)})
    t0 = time.monotonic()
    a = e.post(key="ttl-1")
    assert a.status == 201
    b = e.post(key="ttl-1")
    if b.header("Idempotent-Replayed") is None and time.monotonic() - t0 > t(0.9):
        pytest.skip("the replay came after the ttl (a very slow machine)")
    assert_replay_of(a, b)
    time.sleep(t(1.0) + 0.3)
    c = e.post(key="ttl-1")
    assert c.status == 201 and c.header("Idempotent-Replayed") is None and c.json()["n"] == 2
    assert e.count == 2
    assert_replay_of(c, e.post(key="ttl-1"))


def test_large_response_cannot_be_replayed(env):
    with RawClient(env.gw.port) as c:
        c.request("POST", "/pay/x/big", [(KEY, "big-1")], b"big")
        a = c.read_response("POST", keep_limit=0)
    assert a.status == 201 and a.body_length == BIG and a.body_sha256 == pattern_sha256(BIG)
    for _ in range(2):
        r = env.post("/pay/x/big", key="big-1", body=b"big")
        doc = assert_error(r, "idempotency_replay_unavailable", 409)
        assert doc.get("original_status") == 201, doc
        assert r.header("Retry-After") is None, r.headers
        assert r.header("Idempotent-Replayed") is None
    assert env.count == 1
    # a different payload under that key is still a mismatch
    assert_error(env.post("/pay/x/big", key="big-1", body=b"other"), "idempotency_mismatch", 422)


def test_bodyless_statuses_are_replayed(env):
    a = env.post("/pay/x/status/204", key="nc-1")
    assert a.status == 204 and a.body == b""
    b = env.post("/pay/x/status/204", key="nc-1")
    assert_replay_of(a, b)
    assert env.count == 1


def test_failure_mid_body_releases_the_key(env):
    """The response broke after it started: the client connection is closed and
    nothing truncated is ever replayed; the key is free again."""
    env.app.actions.append("close-mid-body")
    with RawClient(env.gw.port) as c:
        c.request("POST", "/pay/orders", [(KEY, "mid-1")], b"m")
        with pytest.raises(Exception):
            c.read_response("POST")
    r = env.post(key="mid-1", body=b"m")
    assert r.status == 201 and r.header("Idempotent-Replayed") is None, (r, r.body[:100])
    assert env.count == 2
    assert_replay_of(r, env.post(key="mid-1", body=b"m"))


def test_expect_100_continue_and_pipelining(env):
    def expect_request(c):
        c.send(b"POST /pay/e HTTP/1.1\r\nHost: gw.test\r\nIdempotency-Key: exp-1\r\n"
               b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = c.read_response("POST")
        assert interim.status == 100, interim
        c.send(b"hello")
        return c.read_final_response("POST")[1]
    with RawClient(env.gw.port) as c:
        a = expect_request(c)
    assert a.status == 201 and a.json()["body"] == "hello"
    with RawClient(env.gw.port) as c:       # the replay needs the body too
        assert_replay_of(a, expect_request(c))
    # two identical keyed requests pipelined: executed once, answered in order
    req = b"POST /pay/p HTTP/1.1\r\nHost: gw.test\r\nIdempotency-Key: pipe-1\r\n" \
          b"Content-Length: 3\r\n\r\nabc"
    with RawClient(env.gw.port) as c:
        c.send(req * 2)
        first = c.read_response("POST")
        second = c.read_response("POST")
    assert first.status == 201
    assert_replay_of(first, second)
    assert env.count == 2


def test_key_syntaxes_name_the_same_key(env):
    pairs = [('"a\\"b"', 'a"b'), ('"q\\\\z"', "q\\z"), ('"plain"', "plain"),
             ("\tspaced\t", "spaced")]
    for i, (quoted, bare) in enumerate(pairs):
        path = "/pay/syntax/%d" % i
        a = env.post(path, key=quoted)
        assert a.status == 201 and a.header("Idempotent-Replayed") is None, (quoted, a.body)
        assert_replay_of(a, env.post(path, key=bare))
    assert env.count == len(pairs)


def assert_own_body(r, target, body):
    """r is the App's default answer to (target, body), byte for byte its own."""
    try:
        doc = json.loads(r.body)
    except ValueError:
        doc = None
    assert doc is not None and doc.get("target") == target and doc.get("body") == body.decode(), \
        "the client got a corrupted or foreign body for %s: %r" % (target, r.body[:160])


def test_records_survive_a_reload(gateway, upstream, redis_server, store):
    """A reload keeps completed and in-flight keys, and a keyed exchange that
    spans the reload still delivers its own response intact (its end is held
    until the store has the record: that must not outlive the buffer it lives in)."""
    e = start_env(gateway, upstream, redis_server, store)
    a = e.post(key="rl-1")
    assert a.status == 201
    for i in range(8):
        e.app.gate.clear()
        holder = {}
        path = "/pay/x%d/hold" % i
        th = threading.Thread(target=lambda: holder.setdefault("r", e.post(path, key="rl-h%d" % i)),
                              daemon=True)
        th.start()
        try:
            assert len(e.up.wait_requests(2 + i, t(5))) == 2 + i
            before = e.gw.log().count("config reloaded")
            e.gw.signal(signal.SIGHUP)
            assert wait_until(lambda: e.gw.log().count("config reloaded") > before, t(5)), \
                e.gw.log_tail()
            # a reload must not forget a completed key, nor an in-flight one
            assert_replay_of(a, e.post(key="rl-1"))
            assert_error(e.post(path, key="rl-h%d" % i), "idempotency_conflict", 409)
        finally:
            e.app.gate.set()
        th.join(t(10))
        r = holder["r"]
        assert r.status == 201
        assert_own_body(r, path, b'{"amount":1}')
        assert_replay_of(r, e.post(path, key="rl-h%d" % i))
    assert e.count == 9


def test_held_response_end_is_not_overwritten(gateway, upstream, redis_server):
    """While a keyed response waits for the store (here a Redis that stopped
    answering after the upstream answered), its upstream connection must not
    serve another exchange whose bytes would land in the held buffer."""
    redis_box = {}

    class PausingApp(App):
        def __call__(self, conn, req):
            if req.path.endswith("/pause-redis"):
                redis_box["r"].pause()
            return App.__call__(self, conn, req)
    e = start_env(gateway, upstream, redis_server, "redis", app=PausingApp(),
                  redis_timeout=ms(0.25))
    redis_box["r"] = e.redis
    for i in range(4):
        holder = {}
        path = "/pay/a%d/pause-redis" % i
        th = threading.Thread(
            target=lambda: holder.setdefault("a", e.post(path, key="held-%d" % i, body=b"AAAA")),
            daemon=True)
        th.start()
        try:
            assert len(e.up.wait_requests(2 * i + 1, t(5))) == 2 * i + 1
            time.sleep(0.05)   # A's response is in; its end waits for the paused Redis
            b = e.post("/plain/b%d" % i, key=None, body=b"BBBB")
            th.join(t(10))
        finally:
            e.redis.resume()
        assert b.status == 201
        assert_own_body(b, "/plain/b%d" % i, b"BBBB")
        assert holder["a"].status == 201
        assert_own_body(holder["a"], path, b"AAAA")


# ---------------------------------------------------------------------------
# key syntax, methods, body limit (memory store: the store plays no part)
# ---------------------------------------------------------------------------

@pytest.fixture
def menv(gateway, upstream, redis_server):
    return start_env(gateway, upstream, redis_server, "memory")


def test_invalid_keys_are_400(menv):
    bad = ["", " ", "a b", "x" * 256, '"unterminated', '"a b"', '""', '"k";p=1',
           "caf\xe9"]
    for k in bad:
        r = menv.post(key=k)
        assert_error(r, "idempotency_key_invalid", 400)
    assert menv.count == 0
    # the longest valid key, and surrounding whitespace is not part of the value
    ok = menv.post(key="y" * 255)
    assert ok.status == 201
    assert_replay_of(ok, menv.post(key="y" * 255))
    with RawClient(menv.gw.port) as c:   # "Idempotency-Key:   y...y  " (OWS both sides)
        c.send(b"POST /pay/orders HTTP/1.1\r\nHost: gw.test\r\nIdempotency-Key:   " + b"y" * 255
               + b"  \r\nContent-Length: 12\r\n\r\n{\"amount\":1}")
        assert_replay_of(ok, c.read_response("POST"))
    assert menv.count == 1
    assert idem_counts(menv.metrics(), "pay") == {"key_invalid": len(bad), "new": 1,
                                                   "replayed": 2}


def test_repeated_key_header_is_invalid(menv):
    for values in (("k1", "k2"), ("k1", "k1")):
        r = menv.post(key=None, headers=[(KEY, v) for v in values])
        assert_error(r, "idempotency_key_invalid", 400)
    assert menv.count == 0


def test_lock_ttl_bounds_the_in_flight_lock(gateway, upstream, redis_server, store):
    """A request running longer than lock_ttl loses its lock: the same key is
    executed again, and only the owner of the current lock stores its response."""
    e = start_env(gateway, upstream, redis_server, store, idem={"lock_ttl": ms(0.5)})
    e.app.gate.clear()
    out = {}
    threads = []
    try:
        th = threading.Thread(target=lambda: out.setdefault(1, e.post("/pay/x/hold", key="lt-1")),
                              daemon=True)
        th.start()
        threads.append(th)
        assert len(e.up.wait_requests(1, t(5))) == 1
        assert_error(e.post("/pay/x/hold", key="lt-1"), "idempotency_conflict", 409)
        time.sleep(t(0.5) + 0.3)
        th = threading.Thread(target=lambda: out.setdefault(2, e.post("/pay/x/hold", key="lt-1")),
                              daemon=True)
        th.start()
        threads.append(th)
        assert len(e.up.wait_requests(2, t(5))) == 2
    finally:
        e.app.gate.set()
    for th in threads:
        th.join(t(10))
    assert out[1].status == 201 and out[2].status == 201
    r = e.post("/pay/x/hold", key="lt-1")
    assert r.header("Idempotent-Replayed") == "true"
    assert r.body == out[2].body
    assert e.count == 2


def test_missing_key(menv):
    # not required: forwarded every time, no dedup, no marker
    for i in range(2):
        r = menv.post(key=None)
        assert r.status == 201 and r.header("Idempotent-Replayed") is None
    assert menv.count == 2
    # required: 400 without touching the upstream; with a key: served
    assert_error(menv.post("/strict/x", key=None), "idempotency_key_missing", 400)
    assert menv.count == 2
    a = menv.post("/strict/x", key="s-1")
    assert a.status == 201
    assert_replay_of(a, menv.post("/strict/x", key="s-1"))
    assert menv.count == 3


def test_methods_outside_the_list_are_not_deduplicated(menv):
    for method in ("GET", "PUT", "DELETE"):
        for _ in range(2):
            r = menv.post("/pay/res", key="m-1", method=method, body=b"")
            assert r.status == 201 and r.header("Idempotent-Replayed") is None
            assert r.json()["method"] == method
    assert menv.count == 6
    # PATCH is in the default list
    a = menv.post("/pay/res", key="m-2", method="PATCH")
    assert_replay_of(a, menv.post("/pay/res", key="m-2", method="PATCH"))
    assert menv.count == 7


def test_body_over_max_body_is_413(menv):
    r = menv.post(key="big-body-1", body=b"x" * 1025)
    assert_error(r, "body_too_large", 413)
    with RawClient(menv.gw.port) as c:
        c.request("POST", "/pay/orders", [(KEY, "big-body-2"), ("Transfer-Encoding", "chunked")],
                  chunked(b"y" * 600, b"y" * 600))
        assert_error(c.read_response("POST"), "body_too_large", 413)
    assert menv.count == 0
    # exactly max_body passes and is deduplicated
    a = menv.post(key="big-body-3", body=b"z" * 1024)
    assert a.status == 201 and menv.up.requests[0].body_length == 1024
    assert_replay_of(a, menv.post(key="big-body-3", body=b"z" * 1024))
    # the rejected keys were not kept
    b = menv.post(key="big-body-1", body=b"x" * 10)
    assert b.status == 201 and b.header("Idempotent-Replayed") is None
    assert menv.count == 2


def test_auth_plugin_runs_before_a_replay(gateway, upstream):
    """A stored response is never handed to a client the route's access plugins
    would refuse: key_auth answers 401 before the key is looked up."""
    app = App()
    up = upstream(app)
    conf = """\
upstreams:
  u:
    targets: [{address: "$up"}]
routes:
  - name: pay
    upstream: u
    plugins: [{name: key_auth, config: {keys: ["secret-1"]}}]
    idempotency: {store: memory}
"""
    gw = gateway(conf, up=up, allow_errors=ALLOW)
    a = fetch(gw.port, "POST", "/pay", [(KEY, "auth-1"), ("X-Api-Key", "secret-1")], b"x")
    assert a.status == 201
    for hs in ([], [("X-Api-Key", "wrong")]):
        r = fetch(gw.port, "POST", "/pay", [(KEY, "auth-1")] + hs, b"x")
        assert r.status == 401 and r.header("Idempotent-Replayed") is None, (r, r.body[:200])
        assert r.json()["error"] == "unauthorized"
    assert_replay_of(a, fetch(gw.port, "POST", "/pay", [(KEY, "auth-1"), ("X-Api-Key", "secret-1")], b"x"))
    assert len(up.requests) == 1


# ---------------------------------------------------------------------------
# retries (resilience layer)
# ---------------------------------------------------------------------------

def test_keyed_post_is_retried_unkeyed_is_not(gateway, upstream):
    bad_app, good_app = App("bad"), App("good")
    bad_app.actions.extend(["502"] * 100)
    bad, good = upstream(bad_app), upstream(good_app)
    conf = """\
upstreams:
  u:
    targets: [{address: "$bad"}, {address: "$good"}]
    retry: {max_retries: 1, on: [502], backoff: {base: 1ms, max: 5ms}}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
routes:
  - name: pay
    match: {paths: ["/pay"]}
    upstream: u
    idempotency: {store: memory}
"""
    gw = gateway(conf, bad=bad, good=good, allow_errors=ALLOW)
    results = []
    for i in range(4):
        r = fetch(gw.port, "POST", "/pay/r%d" % i, [(KEY, "retry-%d" % i)], b"pay")
        assert r.status == 201 and r.json()["app"] == "good", (r, r.body)
        results.append(r)
    assert len(good.requests) == 4 and 1 <= len(bad.requests) <= 4
    # the replay is the final (retried) answer
    assert_replay_of(results[0], fetch(gw.port, "POST", "/pay/r0", [(KEY, "retry-0")], b"pay"))
    nbad, ngood = len(bad.requests), len(good.requests)
    statuses = [fetch(gw.port, "POST", "/pay/n%d" % i, body=b"pay").status for i in range(4)]
    assert 502 in statuses and 201 in statuses, statuses
    assert len(bad.requests) + len(good.requests) == nbad + ngood + 4   # no retry


# ---------------------------------------------------------------------------
# Redis: shared by gateways, failures
# ---------------------------------------------------------------------------

def test_two_gateways_share_one_redis(gateway, upstream, redis_server):
    app = App(slow=0.3)
    up = upstream(app)
    redis = redis_server()
    conf = config("redis")
    gws = [gateway(conf, up=up, redis=redis.address, allow_errors=ALLOW) for _ in range(2)]
    n = 50

    def one(i):
        return fetch(gws[i % 2].port, "POST", "/pay/x/slow", [(KEY, "shared-50")], b"once")
    results = parallel(one, [(i,) for i in range(n)], timeout=t(15))
    hung = [r for r in results if r == "HUNG"]
    assert not hung, "%d clients hung" % len(hung)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    assert len(up.requests) == 1, up.requests
    ok = [r for r in results if r.status == 201]
    conflicts = [r for r in results if is_error(r, "idempotency_conflict", 409)]
    assert len(ok) + len(conflicts) == n, [(r.status, r.body[:80]) for r in results]
    originals = [r for r in ok if r.header("Idempotent-Replayed") is None]
    assert len(originals) == 1
    for r in ok:
        assert r.body == originals[0].body
    for r in conflicts:
        assert (r.header("Retry-After") or "").isdigit()
    # afterwards both gateways replay it
    for g in gws:
        assert_replay_of(originals[0], fetch(g.port, "POST", "/pay/x/slow", [(KEY, "shared-50")], b"once"))
    assert len(up.requests) == 1


def redis_env(gateway, upstream, redis_server, on_error):
    """redis.timeout 250 ms: the failure tests check that it bounds every wait."""
    return start_env(gateway, upstream, redis_server, "redis", idem={"on_store_error": on_error},
                     redis_timeout=ms(0.25))


def test_redis_down_reject_then_recovers(gateway, upstream, redis_server):
    e = redis_env(gateway, upstream, redis_server, "reject")
    a = e.post(key="before-1")
    assert a.status == 201
    e.redis.kill()
    for i in range(3):
        t0 = time.monotonic()
        r = e.post(key="down-%d" % i)
        assert_error(r, "idempotency_store_unavailable", 503)
        assert time.monotonic() - t0 < t(1.0)
    # the stored response is gone with the store: reject too, not re-executed
    assert_error(e.post(key="before-1"), "idempotency_store_unavailable", 503)
    t0 = time.monotonic()
    results = parallel(lambda i: e.post(key="par-%d" % i), [(i,) for i in range(10)], timeout=t(5))
    assert all(not isinstance(r, (str, Exception)) and is_error(r, "idempotency_store_unavailable", 503)
               for r in results), results
    assert time.monotonic() - t0 < t(2.0)
    # requests without a key and routes without idempotency do not need the store
    assert e.post(key=None).status == 201
    assert e.post("/plain/x", key="whatever").status == 201
    assert e.count == 3
    e.redis.restart()
    assert e.redis.dbsize() == 0
    got = wait_until(lambda: e.post(key="after-1").status == 201, t(6), interval=0.1)
    assert got, "dedup did not come back within %.0fs of the restart" % t(6)
    first = e.count
    r = e.post(key="after-1")
    assert r.status == 201 and r.header("Idempotent-Replayed") == "true"
    assert e.count == first
    assert e.redis.dbsize() == 1
    assert idem_counts(e.metrics(), "pay").get("store_error", 0) >= 3 + 1 + 10


def test_redis_down_pass_forwards_without_dedup(gateway, upstream, redis_server):
    e = redis_env(gateway, upstream, redis_server, "pass")
    e.redis.kill()
    for _ in range(2):
        t0 = time.monotonic()
        r = e.post(key="pass-1")
        assert r.status == 201 and r.header("Idempotent-Replayed") is None
        assert time.monotonic() - t0 < t(1.0)
    assert e.count == 2
    e.redis.restart()
    ok = wait_until(lambda: e.post(key="pass-2").header("Idempotent-Replayed") == "true", t(6),
                    interval=0.1)
    assert ok, "dedup did not come back after the restart"
    assert idem_counts(e.metrics(), "pay").get("store_error", 0) >= 2


def test_redis_hung_is_bounded_by_its_timeout(gateway, upstream, redis_server):
    e = redis_env(gateway, upstream, redis_server, "reject")
    assert e.post(key="h-0").status == 201
    e.redis.pause()
    try:
        results = parallel(lambda i: (time.monotonic(), e.post(key="hung-%d" % i), time.monotonic()),
                           [(i,) for i in range(5)], timeout=t(5))
        for res in results:
            assert not isinstance(res, (str, Exception)), results
            t0, r, t1 = res
            assert_error(r, "idempotency_store_unavailable", 503)
            assert t1 - t0 < t(1.5), t1 - t0
    finally:
        e.redis.resume()
    assert e.count == 1
    ok = wait_until(lambda: e.post(key="h-1").status == 201, t(8), interval=0.1)
    assert ok, "dedup did not come back after the pause"
    r = e.post(key="h-1")
    assert r.header("Idempotent-Replayed") == "true"


# ---------------------------------------------------------------------------
# memory budget, metrics
# ---------------------------------------------------------------------------

def test_memory_store_stays_within_its_budget(gateway, upstream):
    app = App()
    up = upstream(app)
    gw = gateway(config("memory", redis_section=False, top="idempotency_memory: 256k\n"),
                 up=up, allow_errors=ALLOW)
    n, conns = 3000, 4
    pad = b"p" * 900   # echoed back: ~1.1 KiB responses

    def worker(w):
        bad = []
        with RawClient(gw.port) as c:
            for i in range(w, n, conns):
                c.request("POST", "/pay/b", [(KEY, "mem-%05d" % i)], pad)
                r = c.read_response("POST")
                if r.status != 201 or r.header("Idempotent-Replayed") is not None:
                    bad.append((i, r.status, r.body[:100]))
        return bad
    t0 = time.monotonic()
    results = parallel(worker, [(w,) for w in range(conns)], timeout=t(40))
    assert all(r == [] for r in results), [r if isinstance(r, (str, Exception)) else r[:3] for r in results]
    took = time.monotonic() - t0
    assert len(up.requests) == n
    s = samples(scrape(gw))
    get = {(name, labels): v for (name, labels), v in s.items() if "idempotency_memory" in name}
    used = get.get(("moongate_idempotency_memory_bytes", frozenset()))
    budget = get.get(("moongate_idempotency_memory_budget_bytes", frozenset()))
    evicted = get.get(("moongate_idempotency_memory_evictions_total",
                       frozenset({("reason", "evicted")})))
    assert None not in (used, budget, evicted), "memory gauges missing: %r" % get
    assert budget == 262144, get
    assert 0 < used <= budget, get
    assert evicted > 0, get
    # a new record still fits and is replayed (the oldest ones make room); the
    # first keys were evicted long ago, so they execute again
    a = fetch(gw.port, "POST", "/pay/b", [(KEY, "mem-final")], pad)
    assert a.status == 201 and a.header("Idempotent-Replayed") is None, (a, took)
    assert_replay_of(a, fetch(gw.port, "POST", "/pay/b", [(KEY, "mem-final")], pad))
    assert len(up.requests) == n + 1
    r = fetch(gw.port, "POST", "/pay/b", [(KEY, "mem-00000")], pad)
    assert r.status == 201 and r.header("Idempotent-Replayed") is None
    assert len(up.requests) == n + 2
    assert fetch(gw.port, "GET", "/plain").status == 201
    s = samples(scrape(gw))
    assert s[("moongate_idempotency_memory_bytes", frozenset())] <= 262144


def test_memory_store_full_of_locks_refuses_new_keys(gateway, upstream):
    """In-flight locks are never evicted: when they alone fill the budget, a new
    key is a store error (on_store_error: reject -> 503), the locked requests
    finish normally, and the store takes new keys again afterwards."""
    app = App()
    up = upstream(app)
    gw = gateway(config("memory", redis_section=False, top="idempotency_memory: 4k\n"),
                 up=up, allow_errors=ALLOW)
    app.gate.clear()
    n = 30
    results = [None] * n

    def one(i):
        results[i] = fetch(gw.port, "POST", "/pay/f%d/hold" % i, [(KEY, "full-%d" % i)], b"x")
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    try:
        for th in threads:
            th.start()
        # every request either holds a lock (reached the upstream) or was refused
        assert wait_until(lambda: len(up.requests) + sum(r is not None for r in results) == n,
                          t(5)), (len(up.requests), results)
        held = len(up.requests)
        refused = [r for r in results if r is not None]
        assert held >= 1 and refused, (held, len(refused))
        for r in refused:
            assert_error(r, "idempotency_store_unavailable", 503)
    finally:
        app.gate.set()
    for th in threads:
        th.join(t(10))
    assert sum(1 for r in results if r.status == 201) == held
    s = samples(scrape(gw))
    assert s[("moongate_idempotency_memory_bytes", frozenset())] <= 4096
    assert s[("moongate_idempotency_memory_evictions_total", frozenset({("reason", "refused")}))] \
        == len(refused)
    r = fetch(gw.port, "POST", "/pay/after", [(KEY, "after-full")], b"x")
    assert r.status == 201
    assert_replay_of(r, fetch(gw.port, "POST", "/pay/after", [(KEY, "after-full")], b"x"))


def test_metrics_count_each_result_once(gateway, upstream, redis_server):
    dead_redis = free_port()
    extra = """\
  - name: rpass
    match: {paths: ["/rpass"]}
    upstream: u
    idempotency: {store: redis, on_store_error: pass}
"""
    app = App()
    up = upstream(app)
    body = config("memory", redis_section=True, extra_routes=extra)
    gw = gateway(body, up=up, redis="127.0.0.1:%d" % dead_redis, allow_errors=ALLOW)
    e = Env(gw, up, app, None)
    assert e.post(key="n-1").status == 201                                   # new
    assert e.post(key="n-1").header("Idempotent-Replayed") == "true"         # replayed
    assert_error(e.post(key="n-1", body=b"other"), "idempotency_mismatch", 422)
    assert_error(e.post(key="a b"), "idempotency_key_invalid", 400)
    app.gate.clear()
    th = threading.Thread(target=lambda: e.post("/pay/x/hold", key="n-2"), daemon=True)
    th.start()
    try:
        assert len(up.wait_requests(2, t(5))) == 2                           # new
        assert_error(e.post("/pay/x/hold", key="n-2"), "idempotency_conflict", 409)
    finally:
        app.gate.set()
    th.join(t(10))
    with RawClient(gw.port) as c:                                            # new
        c.request("POST", "/pay/x/big", [(KEY, "n-3")])
        assert c.read_response("POST", keep_limit=0).status == 201
    assert_error(e.post("/pay/x/big", key="n-3", body=b""), "idempotency_replay_unavailable", 409)
    assert_error(e.post("/strict/x", key=None), "idempotency_key_missing", 400)
    r = e.post("/rpass/x", key="p-1")                                        # store down, pass
    assert r.status == 201
    # neither a keyless POST nor a GET counts
    assert e.post(key=None).status == 201
    assert e.post(key="n-1", method="GET", body=b"").status == 201
    text = e.metrics()
    assert idem_counts(text, "pay") == {"new": 3, "replayed": 1, "mismatch": 1, "key_invalid": 1,
                                        "conflict": 1, "replay_unavailable": 1}, text
    assert idem_counts(text, "strict") == {"key_missing": 1}
    assert idem_counts(text, "rpass") == {"store_error": 1}
    assert idem_counts(text, "other") == {}
    # every result label is exposed for every idempotent route (zeros included),
    # and the route without idempotency has none
    results = {"new", "replayed", "conflict", "mismatch", "key_missing", "key_invalid",
               "store_error", "replay_unavailable"}
    for route in ("pay", "other", "strict", "rpass"):
        seen = {dict(l)["result"] for (name, l), v in samples(text).items()
                if name == "moongate_idempotency_total" and dict(l).get("route") == route}
        assert seen == results, (route, seen)
    assert not any(name == "moongate_idempotency_total" and dict(l).get("route") == "plain"
                   for (name, l) in samples(text))


def test_config_validation(tmp_path):
    base = """\
listen: ["127.0.0.1:1"]
workers: 1
%s
upstreams:
  u: {targets: [{address: "127.0.0.1:2"}]}
routes:
  - name: r
    upstream: u
    idempotency: {store: %s}
"""
    cases = [
        ("idempotency_memory: 256k", "memory", 0, None),
        ("idempotency_memory: lots", "memory", 1, "idempotency_memory"),
        ("", "redis", 1, "redis"),
        ('redis: {address: "127.0.0.1:6379", timeout: 250ms}', "redis", 0, None),
        ('redis: {address: "127.0.0.1:6379"}', "dynamo", 1, "store"),
    ]
    for i, (top, store, rc, needle) in enumerate(cases):
        path = str(tmp_path / ("c%d.yaml" % i))
        with open(path, "w") as f:
            f.write(base % (top, store))
        p = subprocess.run([BIN, "-t", "-c", path], capture_output=True, timeout=t(20))
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        assert p.returncode == rc, (top, store, out)
        if needle:
            assert re.search(re.escape(path) + r":\d+:\d+: .*" + needle, out), out
