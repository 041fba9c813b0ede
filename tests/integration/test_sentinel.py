"""Idempotency across a Redis failover (redis.sentinel, redis.min_replicas_ack):
real redis-server master and replica, three real redis-sentinel processes
(sentinel_fixture.py), the real gateway binary, a scripted upstream that
records which Idempotency-Key it executed.

Measured and printed (pytest -s shows them): the unavailability window each
gateway saw around the killed master, and the latency cost of
min_replicas_ack: 1 (median and p90 of a keyed POST, with and without WAIT).
"""

import json
import re
import statistics
import threading
import time
import urllib.request

from conftest import RawClient, assert_error, ms, samples, t, wait_until
from redis_fixture import redis_server  # noqa: F401  (a fixture)
from sentinel_fixture import MASTER_NAME, sentinel_cluster  # noqa: F401  (a fixture)

KEY = "Idempotency-Key"
REDIS_TIMEOUT = 0.25
ROUTE_TIMEOUT = 2.0
# gateway log lines the failover produces on purpose
ALLOW = [r"(?i)redis", r"(?i)idempot", r"(?i)sentinel"]


class App:
    """Upstream: 201 with the key in the body; counts executions per key."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_key = {}

    def __call__(self, conn, req):
        conn.read_body(req)
        key = req.header(KEY) or ""
        with self.lock:
            self.by_key[key] = self.by_key.get(key, 0) + 1
            n = self.by_key[key]
        conn.respond(201, json.dumps({"key": key, "n": n}).encode(),
                     [("Content-Type", "application/json")])
        return None

    def executions(self, key):
        with self.lock:
            return self.by_key.get(key, 0)


def config(cluster, min_acks=0, on_error="reject"):
    sentinels = ", ".join('"%s"' % a for a in cluster.sentinel_addresses)
    return """\
redis:
  sentinel: {master: %(name)s, addresses: [%(sentinels)s]}
  timeout: %(timeout)s
  min_replicas_ack: %(acks)d
upstreams:
  u:
    targets: [{address: "$up"}]
    retry: {max_retries: 0}
    circuit_breaker: {consecutive_failures: 100000, failure_rate: 0}
routes:
  - name: pay
    match: {paths: ["/pay"]}
    upstream: u
    timeout: %(route_timeout)s
    idempotency: {store: redis, on_store_error: %(on_error)s, ttl: 60s, lock_ttl: 3s}
""" % dict(name=MASTER_NAME, sentinels=sentinels, timeout=ms(REDIS_TIMEOUT), acks=min_acks,
           route_timeout=ms(ROUTE_TIMEOUT), on_error=on_error)


def admin_get(gw, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (gw.admin_port, path),
                                timeout=t(5)) as r:
        return r.read().decode()


def redis_metrics(gw):
    s = samples(admin_get(gw, "/metrics"))
    return (s.get(("moongate_redis_up", frozenset())),
            s.get(("moongate_redis_failovers_total", frozenset())))


def redis_status(gw):
    return json.loads(admin_get(gw, "/status"))["redis"]


def is_up(gw):
    return redis_metrics(gw)[0] == 1


def post(gw, key, timeout=None):
    with RawClient(gw.port, timeout=timeout) as c:
        c.request("POST", "/pay/orders", [(KEY, key)], b'{"amount":1}')
        return c.read_final_response("POST")[1]


def start(gateway, upstream, cluster, n=1, **kw):
    app = App()
    up = upstream(app)
    gws = [gateway(config(cluster, **kw), up=up, allow_errors=ALLOW) for _ in range(n)]
    for g in gws:
        assert wait_until(lambda: is_up(g), t(5)), "gateway never connected:\n" + g.log_tail()
    return app, gws


def replayed(r):
    return r.status == 201 and r.header("Idempotent-Replayed") == "true"


class Traffic:
    """Clients sending keyed POSTs with new keys, alternating between gateways.
    A key answered 503 (or 409, its lock cut by the failover) is sent again
    until it gets 201, as a client following Retry-After would. Every attempt
    is logged as (key, gateway index, start, end, status, error name)."""

    def __init__(self, gws, clients=4):
        self.gws = gws
        self.log = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(clients)]

    def run(self, i):
        j = 0
        while not self.stop.is_set():
            key = "c%d-%d" % (i, j)
            g = (i + j) % len(self.gws)
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = post(self.gws[g], key, timeout=t(REDIS_TIMEOUT + ROUTE_TIMEOUT + 5))
                    status, err = r.status, None
                    if r.status != 201:
                        err = r.json().get("error")
                except Exception as e:  # noqa: BLE001 - reported by the test
                    status, err = "EXC", repr(e)
                t1 = time.monotonic()
                with self.lock:
                    self.log.append((key, g, t0, t1, status, err))
                if status == 201:
                    break
                self.stop.wait(0.02)
            j += 1

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(t(REDIS_TIMEOUT + ROUTE_TIMEOUT + 10))

    def fresh_ok_after(self, g, when):
        with self.lock:
            return any(e[1] == g and e[2] > when and e[4] == 201 for e in self.log)


def test_failover_under_traffic(gateway, upstream, sentinel_cluster):
    """Two gateways, steady keyed traffic, the master SIGKILLed: every answer
    comes within the Redis timeout plus the route deadline, requests in the
    gap get 503, no key runs twice, and dedup works again on the new master."""
    cluster = sentinel_cluster()
    old = cluster.master_addr()
    app, gws = start(gateway, upstream, cluster, n=2)
    with Traffic(gws) as traffic:
        assert wait_until(lambda: all(traffic.fresh_ok_after(g, 0) for g in range(2)), t(5))
        time.sleep(0.5)  # steady state before the kill
        t_synced = replicated(cluster, old)
        t_before_kill = time.monotonic()
        t_kill = cluster.kill_master()
        new, t_sentinels = cluster.wait_failover(old, t(20))
        back = wait_until(lambda: all(traffic.fresh_ok_after(g, t_sentinels) for g in range(2)),
                          t(10), interval=0.02)
        assert back, "a gateway did not serve again after the failover"
        time.sleep(0.3)
    log = traffic.log
    assert all(e[4] != "EXC" for e in log), [e for e in log if e[4] == "EXC"][:5]
    # bounded: nothing waits past the Redis timeout plus the route deadline
    bound = t(REDIS_TIMEOUT + ROUTE_TIMEOUT)
    slowest = max(e[3] - e[2] for e in log)
    assert slowest < bound, "a request took %.3fs (bound %.3fs)" % (slowest, bound)
    # only 201, or 503/409 in the gap, each the documented error
    odd = [e for e in log if (e[4], e[5]) not in ((201, None), (503, "idempotency_store_unavailable"),
                                                  (409, "idempotency_conflict"))]
    assert not odd, odd[:5]
    # no key ran twice; every key that got 201 ran exactly once
    keys = {e[0] for e in log}
    assert all(app.executions(k) <= 1 for k in keys), \
        [(k, app.executions(k)) for k in keys if app.executions(k) > 1]
    done = {e[0] for e in log if e[4] == 201}
    assert all(app.executions(k) == 1 for k in done)
    gap = [e for e in log if e[4] != 201]
    assert gap, "the kill produced no store error at all: was Redis in use?"
    # a 503 needs the kill: the request was still in flight when it began (one
    # sent just before may meet the dead master; a starved client has sent one
    # 50 ms before the kill that did)
    assert all(e[3] >= t_before_kill for e in gap if e[4] == 503), "503 before the kill"
    # measured unavailability: from the kill to the first new key served, per gateway
    windows = []
    for g in range(2):
        first_ok = min(e[3] for e in log if e[1] == g and e[2] > t_kill and e[4] == 201)
        windows.append(first_ok - t_kill)
    print("\nfailover: sentinels agreed %.3fs after the kill; unavailability per gateway: %s; "
          "%d requests, %d answered 503/409 during the gap"
          % (t_sentinels - t_kill, ", ".join("%.3fs" % w for w in windows), len(log), len(gap)))
    # dedup works on the new master, across both gateways
    a = post(gws[0], "after-failover")
    assert a.status == 201 and a.header("Idempotent-Replayed") is None
    b = post(gws[1], "after-failover")
    assert replayed(b) and b.body == a.body
    assert app.executions("after-failover") == 1
    assert cluster.server(new).dbsize() > 0
    # /status and metrics: the new master, one failover, up
    for g in gws:
        st = redis_status(g)
        assert st["mode"] == "sentinel" and st["master_name"] == MASTER_NAME, st
        assert st["master"] == new and st["up"] is True and st["failovers"] == 1, st
        assert st["last_failover"]["from"] == old and st["last_failover"]["to"] == new, st
        print("gateway %d: /status last_failover %s" % (gws.index(g), st["last_failover"]))
        assert redis_metrics(g) == (1, 1)
    # a record completed before the replica was seen to hold all the master
    # had written is replayed (async replication: a fixed 0.3 s before the kill
    # is not "replicated" on a starved machine)
    early = [e[0] for e in log if e[4] == 201 and e[3] < t_synced][:20]
    assert early
    for k in early:
        r = post(gws[1], k)
        assert replayed(r), (k, r.status, r.body[:200])
        assert app.executions(k) == 1


def repl_offset(server, field):
    info = server.cmd("INFO", "replication").decode()
    return int(re.search(r"^%s:(\d+)" % field, info, re.M).group(1))


def replicated(cluster, master_addr):
    """Waits until the replica has applied everything the master had written
    when called; returns that time (records completed before it are on both)."""
    master = cluster.server(master_addr)
    replica = [r for r in cluster.servers if r is not master][0]
    t0 = time.monotonic()
    offset = repl_offset(master, "master_repl_offset")
    assert wait_until(lambda: repl_offset(replica, "slave_repl_offset") >= offset, t(5)), \
        "the replica did not catch up"
    return t0


def latencies(gw, prefix, n):
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        r = post(gw, "%s-%d" % (prefix, i))
        out.append(time.perf_counter() - t0)
        assert r.status == 201 and r.header("Idempotent-Replayed") is None, r
    return out


def test_min_replicas_ack_keeps_records_across_failover(gateway, upstream, sentinel_cluster):
    """With min_replicas_ack: 1 every response reaches the client only once the
    replica holds its record, so every key answered before the kill is replayed
    after the failover. Also measures what that WAIT costs per request."""
    cluster = sentinel_cluster()
    old = cluster.master_addr()
    _, (plain,) = start(gateway, upstream, cluster, n=1, min_acks=0)
    app, (acked,) = start(gateway, upstream, cluster, n=1, min_acks=1)
    n = 200
    latencies(plain, "warm0", 20)
    latencies(acked, "warm1", 20)
    l0, l1 = [], []
    for rnd in range(4):  # interleaved rounds: the machine's noise hits both alike
        l0 += latencies(plain, "p%d" % rnd, n // 4)
        l1 += latencies(acked, "a%d" % rnd, n // 4)

    def q(v, p):
        return sorted(v)[int(p * (len(v) - 1))] * 1000
    print("\nmin_replicas_ack latency over %d keyed POSTs each: 0 -> median %.3f ms p90 %.3f ms; "
          "1 -> median %.3f ms p90 %.3f ms; cost %.3f ms at the median"
          % (n, q(l0, 0.5), q(l0, 0.9), q(l1, 0.5), q(l1, 0.9), q(l1, 0.5) - q(l0, 0.5)))
    assert statistics.median(l1) < statistics.median(l0) + t(0.05)
    # records written right up to the kill
    keys = ["kept-%d" % i for i in range(40)]
    first = {}
    for k in keys:
        first[k] = post(acked, k)
        assert first[k].status == 201
    t_kill = cluster.kill_master()
    new, _ = cluster.wait_failover(old, t(20))
    assert wait_until(lambda: is_up(acked), t(5), interval=0.02)
    print("min_replicas_ack 1: back %.3fs after the kill" % (time.monotonic() - t_kill))
    for k in keys:
        r = post(acked, k)
        assert replayed(r), (k, r.status, r.body[:200])
        assert r.body == first[k].body
        assert app.executions(k) == 1
    st = redis_status(acked)
    assert st["master"] == new and st["failovers"] == 1


def test_switch_master_is_followed_without_an_error(gateway, upstream, sentinel_cluster):
    """SENTINEL FAILOVER demotes a live master: no connection breaks, so only
    the +switch-master subscription moves the gateway, within about a second;
    it then writes to the new master only."""
    cluster = sentinel_cluster()
    old = cluster.master_addr()
    app, (gw,) = start(gateway, upstream, cluster)
    assert post(gw, "before-switch").status == 201
    assert cluster.sentinels[0].cmd("SENTINEL", "FAILOVER", MASTER_NAME) == "OK"
    new, t_switch = cluster.wait_failover(old, t(20))
    moved = wait_until(lambda: redis_status(gw)["master"] == new, t(3), interval=0.02)
    assert moved, redis_status(gw)
    lag = time.monotonic() - t_switch
    print("\n+switch-master followed within %.3fs of the sentinels agreeing" % lag)
    assert lag < t(1.5)
    assert wait_until(lambda: is_up(gw), t(2), interval=0.02)
    r = post(gw, "before-switch")
    assert replayed(r)   # replicated before the switch
    a = post(gw, "after-switch")
    assert a.status == 201 and a.header("Idempotent-Replayed") is None
    assert replayed(post(gw, "after-switch"))
    assert app.executions("after-switch") == 1
    assert cluster.server(new).cmd("EXISTS", *cluster.server(new).keys("*")) >= 2
    assert redis_metrics(gw) == (1, 1)


def test_no_sentinel_reachable_is_a_store_error(gateway, upstream, sentinel_cluster):
    """Every sentinel down at start: keyed requests get 503 at once (reject),
    nothing hangs; when a sentinel comes back, dedup starts."""
    cluster = sentinel_cluster()
    for s in cluster.sentinels:
        s.kill()
    app = App()
    up = upstream(app)
    gw = gateway(config(cluster), up=up, allow_errors=ALLOW)
    for i in range(3):
        t0 = time.monotonic()
        assert_error(post(gw, "nos-%d" % i), "idempotency_store_unavailable", 503)
        assert time.monotonic() - t0 < t(REDIS_TIMEOUT * 3 + 1)
    assert redis_metrics(gw)[0] == 0
    assert app.executions("nos-0") == 0
    cluster.sentinels[1].start()
    assert wait_until(lambda: is_up(gw), t(8), interval=0.05), gw.log_tail()
    assert post(gw, "nos-0").status == 201
    assert replayed(post(gw, "nos-0"))
