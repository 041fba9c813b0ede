"""Worker threads, zero-drop SIGHUP reload and graceful drain (issue 3,
DESIGN section 2). Each test carries its configs inline."""

import http.client
import signal
import socket
import threading
import time

from conftest import RawClient, fetch, free_port, ms, t, wait_until

# Two workers: a reload must reach every one of them.
PREAMBLE2 = """\
listen: ["127.0.0.1:$port"]
workers: 2
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: $access_log
drain_timeout: $drain_timeout
"""

# Two configs that route /where differently: A strips nothing, B strips "/where".
CONF_A = PREAMBLE2 + """\
upstreams:
  u:
    targets: [{address: "$up"}]
routes:
  - name: main
    match: {paths: ["/"]}
    upstream: u
"""

CONF_B = PREAMBLE2 + """\
upstreams:
  u:
    targets: [{address: "$up"}]
routes:
  - name: main
    match: {paths: ["/where"]}
    strip_prefix: true
    upstream: u
  - name: rest
    match: {paths: ["/"]}
    upstream: u
"""


def write_config(gw, body, up):
    text = gw.config.split("upstreams:")[0] + "upstreams:" + \
        body.split("upstreams:")[1].replace("$up", up.address)
    with open(gw.config_path, "w") as f:
        f.write(text)


def load_loop(port, stop, results, keepalive):
    """Sends GET /where/x until told to stop; counts answers and failures and
    records which routing each answer showed."""
    conn = None
    while not stop.is_set():
        try:
            if conn is None or not keepalive:
                if conn:
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=t(5))
            conn.request("GET", "/where/x", headers={"Host": "gw.test"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                results["failed"].append((r.status, body[:200]))
                continue
            results["ok"] += 1
            results["paths"].add(r.getheader("X-Echo-Path") or body.split(b'"path": "')[1].split(b'"')[0].decode())
        except Exception as e:  # any exception is a dropped request
            results["failed"].append(repr(e))
            conn = None
    if conn:
        conn.close()


def test_reload_under_load_drops_nothing_and_switches_routing(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True)
    stop = threading.Event()
    results = [{"ok": 0, "failed": [], "paths": set()} for _ in range(4)]
    threads = [threading.Thread(target=load_loop, args=(gw.port, stop, results[i], i % 2 == 0))
               for i in range(4)]
    for th in threads:
        th.start()
    try:
        deadline = time.monotonic() + 10
        n = 0
        while time.monotonic() < deadline:
            write_config(gw, CONF_B if n % 2 == 0 else CONF_A, up)
            gw.signal(signal.SIGHUP)
            n += 1
            time.sleep(0.2)
    finally:
        stop.set()
        for th in threads:
            th.join(t(10))
    failed = [f for r in results for f in r["failed"]]
    ok = sum(r["ok"] for r in results)
    paths = set().union(*(r["paths"] for r in results))
    assert failed == [], failed[:5]
    assert ok > 100
    assert paths == {"/where/x", "/x"}, paths  # both routings were observed
    assert gw.log().count("config reloaded") >= n - 1
    assert gw.alive()


def test_broken_reload_keeps_old_routes(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_B, up=up, full=True, allow_errors=[r"config reload failed"])
    assert fetch(gw.port, "GET", "/where/x").json()["path"] == "/x"
    with open(gw.config_path, "a") as f:
        f.write("  - name: broken\n    upstream: nowhere\n")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reload failed: " + gw.config_path in gw.log(), t(5))
    for _ in range(20):
        assert fetch(gw.port, "GET", "/where/x").json()["path"] == "/x"


def test_in_flight_request_survives_reload(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True)
    with RawClient(gw.port) as c:
        c.request("GET", "/slow/%d" % int(t(2) * 1000))
        assert up.wait_requests(1, t(5))
        write_config(gw, CONF_B, up)
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: "config reloaded" in gw.log(), t(5))
        r = c.read_response()
        assert r.status == 200
        assert r.json()["path"] == "/slow/%d" % int(t(2) * 1000)  # routed by the old config
    assert fetch(gw.port, "GET", "/where/x").json()["path"] == "/x"  # new config now


def test_keepalive_connection_moves_to_new_config(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True)
    with RawClient(gw.port) as c:
        c.request("GET", "/where/x")
        assert c.read_response().json()["path"] == "/where/x"
        write_config(gw, CONF_B, up)
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: gw.log().count("config reloaded") >= 1, t(5))
        time.sleep(t(0.1))
        c.request("GET", "/where/x")
        assert c.read_response().json()["path"] == "/x"


def test_reload_adds_and_removes_listeners(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True)
    extra = free_port()
    text = gw.config.replace('listen: ["127.0.0.1:%d"]' % gw.port,
                             'listen: ["127.0.0.1:%d", "127.0.0.1:%d"]' % (gw.port, extra))
    assert text != gw.config, gw.config
    with open(gw.config_path, "w") as f:
        f.write(text)
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: _accepts(extra), t(5))
    assert fetch(extra, "GET", "/a").status == 200
    with open(gw.config_path, "w") as f:
        f.write(gw.config)
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: not _accepts(extra), t(5))
    assert fetch(gw.port, "GET", "/a").status == 200  # the kept listener never closed


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_sigterm_drains_in_flight_then_exits_0(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True, drain_timeout=ms(5))
    with RawClient(gw.port) as c:
        c.request("GET", "/slow/%d" % int(t(2) * 1000))
        assert up.wait_requests(1, t(5))
        gw.signal(signal.SIGTERM)
        assert wait_until(lambda: not _accepts(gw.port), t(2)), "still accepting after SIGTERM"
        r = c.read_response()
        assert r.status == 200
        assert r.header("Connection") == "close"
    assert gw.proc.wait(t(8)) == 0
    gw.stopped_by_test = True


def test_drain_timeout_bounds_the_exit(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True, drain_timeout=ms(0.5))
    with RawClient(gw.port) as c:
        c.request("GET", "/slow/%d" % int(t(30) * 1000))
        assert up.wait_requests(1, t(5))
        start = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert gw.proc.wait(t(8)) == 0
        assert time.monotonic() - start < t(3)
        # Answered (504, Connection: close) rather than an empty reply.
        assert c.wait_closed().startswith(b"HTTP/1.1 504 ")
    gw.stopped_by_test = True


def test_second_signal_stops_at_once(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True, drain_timeout=ms(30))
    with RawClient(gw.port) as c:
        c.request("GET", "/slow/%d" % int(t(30) * 1000))
        assert up.wait_requests(1, t(5))
        gw.signal(signal.SIGTERM)
        time.sleep(t(0.2))
        assert gw.alive()
        gw.signal(signal.SIGINT)
        assert gw.proc.wait(t(5)) == 0
    gw.stopped_by_test = True


def test_idle_keepalive_connections_close_on_sigterm(gateway, upstream):
    up = upstream()
    gw = gateway(CONF_A, up=up, full=True, drain_timeout=ms(5))
    with RawClient(gw.port) as c:
        c.request("GET", "/a")
        assert c.read_response().status == 200
        gw.signal(signal.SIGTERM)
        assert c.wait_closed(t(3)) == b""
    assert gw.proc.wait(t(8)) == 0
    gw.stopped_by_test = True
