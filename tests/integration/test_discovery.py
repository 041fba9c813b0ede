"""Service discovery (DESIGN.md section 10.5): upstream targets that follow DNS.

A real dnsmasq (dns_fixture.py) serves the names with TTL 1 s; the tests change
its records while clients keep sending, and check what the gateway does: new
targets get traffic, removed ones stop getting it, nothing fails, the last good
set survives a DNS outage, SRV records give ports and weights, and a name that
does not resolve yet answers 503 no_targets until it does.
"""

import json
import signal
import subprocess
import threading
import time
import urllib.request

from conftest import BIN, PREAMBLE, assert_error, fetch, ms, t, wait_until, samples
from dns_fixture import dns_server  # noqa: F401  (the fixture)
from redis_fixture import redis_server  # noqa: F401  (the fixture)

RESOLVER = """\
resolver: {servers: ["$dns"], min_ttl: 1s, max_ttl: 5s, timeout: %s}
""" % ms(0.5)


def admin(gw, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (gw.admin_port, path),
                                timeout=t(5)) as r:
        return r.read().decode()


def status_targets(gw, name):
    doc = json.loads(admin(gw, "/status"))
    up = next(u for u in doc["upstreams"] if u["name"] == name)
    return up


def addresses(gw, name):
    return sorted(tg["address"] for tg in status_targets(gw, name)["targets"])


def same_port_upstreams(upstream, n):
    """n upstreams on 127.0.0.2, .3, ... all on one port (one name, many A records)."""
    first = upstream(name="u2", host="127.0.0.2")
    ups = [first]
    for i in range(3, n + 2):
        ups.append(upstream(name="u%d" % i, host="127.0.0.%d" % i, port=first.port))
    return ups


class Load:
    """Clients sending GET / in a loop, counting every answer that is not 200."""

    def __init__(self, gw, threads=4):
        self.gw = gw
        self.stop_ev = threading.Event()
        self.ok = 0
        self.bad = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for th in self.threads:
            th.start()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                r = fetch(self.gw.port, "GET", "/")
                good = r.status == 200
                what = (r.status, r.body[:200])
            except Exception as e:  # noqa: BLE001  (any failure counts)
                good, what = False, repr(e)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.bad.append(what)

    def stop(self):
        self.stop_ev.set()
        for th in self.threads:
            th.join(t(10))


def test_targets_follow_dns_under_load(gateway, upstream, dns_server):
    ups = same_port_upstreams(upstream, 5)  # 127.0.0.2 .. 127.0.0.6
    ips = [u.host for u in ups]
    dns = dns_server(hosts={"orders.test": ips[:3]})
    gw = gateway(PREAMBLE.replace("workers: 1", "workers: 2") + RESOLVER + """\
upstreams:
  orders:
    targets: [{address: "orders.test:$upport", weight: 1}]
routes:
  - {name: r, upstream: orders}
""", dns=dns.address, upport=ups[0].port, full=True)  # the change reaches both workers
    assert addresses(gw, "orders") == ["%s:%d" % (ip, ups[0].port) for ip in ips[:3]]
    assert status_targets(gw, "orders")["targets"][0]["source"] == "orders.test"
    load = Load(gw)
    try:
        assert wait_until(lambda: all(u.requests for u in ups[:3]), t(5))
        # 3 -> 5: the new ones get traffic within 2 x TTL.
        changed = time.monotonic()
        dns.set_hosts({"orders.test": ips})
        assert wait_until(lambda: ups[3].requests and ups[4].requests, t(4)), addresses(gw, "orders")
        assert time.monotonic() - changed < t(2) + 0.5  # 2 x TTL (1 s), and a little slack
        # 5 -> 2: the removed ones get nothing new once the change is applied.
        dns.set_hosts({"orders.test": ips[3:]})
        want = ["%s:%d" % (ip, ups[0].port) for ip in ips[3:]]
        assert wait_until(lambda: addresses(gw, "orders") == want, t(4)), addresses(gw, "orders")
        time.sleep(t(0.3))  # requests in flight on the old set finish
        removed = [len(u.requests) for u in ups[:3]]
        kept = [len(u.requests) for u in ups[3:]]
        time.sleep(t(1))
        assert [len(u.requests) for u in ups[:3]] == removed
        assert [len(u.requests) for u in ups[3:]] != kept
    finally:
        load.stop()
    assert load.bad == [], load.bad[:5]
    assert load.ok > 50
    m = samples(admin(gw, "/metrics"))
    assert m[("moongate_upstream_targets", frozenset({("upstream", "orders")}))] == 2
    ok = m[("moongate_discovery_resolutions_total",
            frozenset({("upstream", "orders"), ("result", "success")}))]
    assert ok >= 3
    assert "now gives 5 target(s) (+2 -0)" in gw.log()
    assert "now gives 2 target(s) (+0 -3)" in gw.log()


def test_surviving_target_keeps_its_breaker_and_pool(gateway, upstream, dns_server):
    ups = same_port_upstreams(upstream, 3)
    ips = [u.host for u in ups]
    dns = dns_server(hosts={"orders.test": ips[:2]})
    gw = gateway(RESOLVER + """\
upstreams:
  orders:
    targets: [{address: "orders.test:$upport"}]
    retry: {max_retries: 0}
    circuit_breaker: {consecutive_failures: 1, open_for: 1m, max_open_for: 1m}
routes:
  - {name: r, upstream: orders}
""", dns=dns.address, upport=ups[0].port)
    # Trip the breaker of 127.0.0.2 (it resets the connection), keep-alive on .3.
    broken = ups[0]
    broken.handler = lambda conn, req: conn.reset()
    for _ in range(4):
        fetch(gw.port, "GET", "/")
    circuits = {tg["address"]: tg["circuit"] for tg in status_targets(gw, "orders")["targets"]}
    assert circuits["%s:%d" % (ips[0], ups[0].port)] == "open"
    conns_before = len(ups[1].conns)
    dns.set_hosts({"orders.test": ips})  # a third one comes
    assert wait_until(lambda: len(addresses(gw, "orders")) == 3, t(4))
    circuits = {tg["address"]: tg["circuit"] for tg in status_targets(gw, "orders")["targets"]}
    assert circuits["%s:%d" % (ips[0], ups[0].port)] == "open"  # kept its state
    assert circuits["%s:%d" % (ips[2], ups[0].port)] == "closed"  # fresh
    tried = len(broken.requests)
    for _ in range(6):
        assert fetch(gw.port, "GET", "/").status == 200
    assert len(broken.requests) == tried  # still open: offered nothing
    assert ups[2].requests
    assert len(ups[1].conns) == conns_before  # its pooled connection was reused


def test_last_good_set_kept_while_dns_is_down(gateway, upstream, dns_server):
    ups = same_port_upstreams(upstream, 2)
    dns = dns_server(hosts={"orders.test": [u.host for u in ups]})
    gw = gateway(RESOLVER + """\
upstreams:
  orders:
    targets: [{address: "orders.test:$upport"}]
routes:
  - {name: r, upstream: orders}
""", dns=dns.address, upport=ups[0].port)
    dns.stop()
    load = Load(gw, threads=2)
    try:
        time.sleep(t(3))  # several TTLs and failed lookups
    finally:
        load.stop()
    assert load.bad == [], load.bad[:5]
    assert all(u.requests for u in ups)
    assert len(addresses(gw, "orders")) == 2
    m = samples(admin(gw, "/metrics"))
    failed = m[("moongate_discovery_resolutions_total",
                frozenset({("upstream", "orders"), ("result", "failure")}))]
    assert failed >= 1
    assert "keeping the last good targets" in gw.log()
    disc = status_targets(gw, "orders")["discovery"]
    assert disc["last_result"] == "failure" and disc["resolutions"]["failure"] >= 1


def test_srv_gives_ports_and_weights(gateway, upstream, dns_server):
    a, b = upstream(name="a"), upstream(name="b")
    dns = dns_server(hosts={"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]},
                     srv=[("_http._tcp.svc.test", "a.test", a.port, 0, 3),
                          ("_http._tcp.svc.test", "b.test", b.port, 0, 1),
                          ("_http._tcp.svc.test", "b.test", 1, 10, 1)])  # a backup: unused
    gw = gateway(RESOLVER + """\
upstreams:
  svc:
    discovery: {type: srv, name: _http._tcp.svc.test}
routes:
  - {name: r, upstream: svc}
""", dns=dns.address)
    up = status_targets(gw, "svc")
    got = {tg["address"]: tg["weight"] for tg in up["targets"]}
    assert got == {a.address: 3, b.address: 1}
    assert {tg["source"] for tg in up["targets"]} == {"_http._tcp.svc.test"}
    assert up["discovery"]["type"] == "srv"
    for _ in range(40):
        assert fetch(gw.port, "GET", "/").status == 200
    assert (len(a.requests), len(b.requests)) == (30, 10)  # smooth weighted round robin


def test_name_that_does_not_resolve_yet(gateway, upstream, dns_server):
    up = upstream()
    dns = dns_server(hosts={"other.test": ["127.0.0.1"]})
    gw = gateway(RESOLVER + """\
upstreams:
  late:
    targets: [{address: "late.test:$upport"}]
routes:
  - {name: r, upstream: late}
""", dns=dns.address, upport=up.port)
    assert "late.test does not resolve" in gw.log()
    assert "503 no_targets until it does" in gw.log()
    assert_error(fetch(gw.port, "GET", "/"), "no_targets", 503)
    assert status_targets(gw, "late")["targets"] == []
    dns.set_hosts({"late.test": ["127.0.0.1"]})
    # The failed name is retried on a doubling delay from min_ttl (1 s, 2 s).
    assert wait_until(lambda: fetch(gw.port, "GET", "/").status == 200, t(6), interval=0.1)
    assert up.requests


CHECK = """\
listen: ["127.0.0.1:1"]
resolver: {servers: ["%s"], timeout: 300ms}
upstreams:
  late:
    targets: [{address: "late.test:80"}]
    %s
routes:
  - {name: r, upstream: late}
"""


def test_check_warns_or_fails_when_required(tmp_path, dns_server):
    dns = dns_server(hosts={"other.test": ["127.0.0.1"]})
    path = tmp_path / "c.yaml"
    path.write_text(CHECK % (dns.address, ""))
    p = subprocess.run([BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 0, p.stderr
    assert "configuration ok" in p.stdout
    assert "[warn]" in p.stderr and "late.test does not resolve" in p.stderr
    path.write_text((CHECK % (dns.address, "discovery: {name: _http._tcp.late.test, required: true}")))
    p = subprocess.run([BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 1
    assert "upstreams.late.discovery: SRV name _http._tcp.late.test does not resolve" in p.stderr
    assert "required is true" in p.stderr


def owners(gw, ups, keys):
    """Which upstream serves each key (requests sent one at a time)."""
    out = {}
    for k in keys:
        before = [len(u.requests) for u in ups]
        assert fetch(gw.port, "GET", "/", headers=[("X-User", k)]).status == 200
        after = [len(u.requests) for u in ups]
        out[k] = next(i for i in range(len(ups)) if after[i] > before[i])
    return out


def test_consistent_hash_moves_only_keys_of_targets_that_came_or_went(gateway, upstream,
                                                                      dns_server):
    ups = same_port_upstreams(upstream, 4)
    ips = [u.host for u in ups]
    dns = dns_server(hosts={"orders.test": ips[:3]})
    gw = gateway(RESOLVER + """\
upstreams:
  orders:
    targets: [{address: "orders.test:$upport"}]
routes:
  - name: r
    upstream: orders
    balancer: {name: consistent_hash, config: {key: "header:X-User"}}
""", dns=dns.address, upport=ups[0].port)
    keys = ["user-%d" % i for i in range(60)]
    first = owners(gw, ups, keys)
    assert set(first.values()) == {0, 1, 2}
    dns.set_hosts({"orders.test": ips})  # one more target
    assert wait_until(lambda: len(addresses(gw, "orders")) == 4, t(4))
    second = owners(gw, ups, keys)
    moved = [k for k in keys if second[k] != first[k]]
    assert moved and all(second[k] == 3 for k in moved), (moved, second)  # only to the new one
    dns.set_hosts({"orders.test": ips[1:]})  # the first one goes
    assert wait_until(lambda: len(addresses(gw, "orders")) == 3, t(4))
    third = owners(gw, ups, keys)
    for k in keys:
        if second[k] != 0:
            assert third[k] == second[k], k  # keys of targets that stayed do not move


def test_reload_keeps_discovered_targets_while_dns_is_down(gateway, upstream, dns_server):
    ups = same_port_upstreams(upstream, 2)
    dns = dns_server(hosts={"orders.test": [u.host for u in ups]})
    gw = gateway(RESOLVER + """\
upstreams:
  orders:
    targets: [{address: "orders.test:$upport"}]
routes:
  - {name: r, upstream: orders}
""", dns=dns.address, upport=ups[0].port)
    dns.stop()
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log().count("config reloaded") == 1, t(5))
    assert len(addresses(gw, "orders")) == 2
    for _ in range(6):
        assert fetch(gw.port, "GET", "/").status == 200
    assert all(u.requests for u in ups)


def test_redis_address_as_a_name(gateway, upstream, dns_server, redis_server):
    up = upstream()
    redis = redis_server()
    redis_port = int(redis.address.rsplit(":", 1)[1])
    dns = dns_server(hosts={"redis.test": ["127.0.0.1"]})
    gw = gateway(RESOLVER + """\
redis: {address: "redis.test:$redis_port", timeout: %s}
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - name: r
    upstream: u
    idempotency: {store: redis}
""" % ms(0.5), dns=dns.address, up=up, redis_port=redis_port)
    key = [("Idempotency-Key", "k-1")]
    first = fetch(gw.port, "POST", "/pay", key, b"x")
    assert first.status == 200
    again = fetch(gw.port, "POST", "/pay", key, b"x")
    assert again.header("idempotent-replayed") == "true"
    assert len(up.requests) == 1
    assert redis.keys("*")  # the record went to the server the name gave


def test_redis_name_must_resolve(tmp_path, dns_server):
    dns = dns_server(hosts={"other.test": ["127.0.0.1"]})
    path = tmp_path / "c.yaml"
    path.write_text("""\
listen: ["127.0.0.1:1"]
resolver: {servers: ["%s"], timeout: 300ms}
redis: {address: "nowhere.test:6379"}
upstreams:
  u: {targets: [{address: "127.0.0.1:1"}]}
routes:
  - {name: r, upstream: u, idempotency: {store: redis}}
""" % dns.address)
    p = subprocess.run([BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 1
    assert "redis.address: cannot resolve 'nowhere.test'" in p.stderr


def test_health_checks_follow_discovered_targets(gateway, upstream, dns_server):
    def sick_handler(conn, req):
        conn.respond(500 if req.path == "/healthz" else 200, b"sick")

    ups = same_port_upstreams(upstream, 2)
    ups[1].handler = sick_handler
    dns = dns_server(hosts={"orders.test": [ups[0].host]})
    gw = gateway(RESOLVER + """\
upstreams:
  orders:
    targets: [{address: "orders.test:$upport"}]
    health_check: {path: /healthz, interval: %s, timeout: %s, healthy_after: 1, unhealthy_after: 1}
routes:
  - {name: r, upstream: orders}
""" % (ms(0.05), ms(0.5)), dns=dns.address, upport=ups[0].port)
    dns.set_hosts({"orders.test": [u.host for u in ups]})  # the sick one comes
    sick = "%s:%d" % (ups[1].host, ups[1].port)

    def health_of_sick():
        return {tg["address"]: tg["health"] for tg in status_targets(gw, "orders")["targets"]}.get(sick)
    assert wait_until(lambda: health_of_sick() == "unhealthy", t(4)), status_targets(gw, "orders")
    assert any(r.path == "/healthz" for r in ups[1].requests)  # probed as soon as it came
    before = len([r for r in ups[1].requests if r.path != "/healthz"])
    for _ in range(6):
        assert fetch(gw.port, "GET", "/").status == 200
    assert len([r for r in ups[1].requests if r.path != "/healthz"]) == before


def test_change_not_applied_is_retried(gateway, upstream, dns_server, tmp_path):
    """A change whose plugin VMs cannot be made (a plugin file gone) is applied
    once they can."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "noop.lua").write_text("local P = {}\nfunction P.access(ctx, conf) end\nreturn P\n")
    ups = same_port_upstreams(upstream, 2)
    dns = dns_server(hosts={"orders.test": [ups[0].host]})
    gw = gateway(RESOLVER + """\
plugin_path: ["$plugins"]
upstreams:
  orders:
    targets: [{address: "orders.test:$upport"}]
routes:
  - {name: r, upstream: orders, plugins: [{name: noop}]}
""", dns=dns.address, upport=ups[0].port, plugins=str(plugins),
                 allow_errors=[r"discovered targets not applied"])
    (plugins / "noop.lua").rename(plugins / "gone.lua")
    dns.set_hosts({"orders.test": [u.host for u in ups]})
    assert wait_until(lambda: "discovered targets not applied" in gw.log(), t(4))
    assert len(addresses(gw, "orders")) == 1  # the old set serves meanwhile
    assert fetch(gw.port, "GET", "/").status == 200
    (plugins / "gone.lua").rename(plugins / "noop.lua")
    assert wait_until(lambda: len(addresses(gw, "orders")) == 2, t(8))
