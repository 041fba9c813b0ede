"""Lua plugins that wait (issue 17, DESIGN section 10.3) through the real binary:
gw.sleep in access and log, timers and init_worker across a reload, clients
that leave while a plugin waits, shared dictionaries across workers and
reloads, rate_limit policy shared."""

import signal
import socket
import threading
import time

from conftest import build_request, fetch, t, wait_until

ONE = """\
plugin_path: ["$plugins"]
upstreams:
  u:
    targets: [{address: "$up"}]
routes:
$routes
"""


def start(gateway, upstream, tmp_path, routes, plugins, extra="", allow_errors=(), **kw):
    up = upstream(name="up")
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    for name, src in plugins.items():
        (d / (name + ".lua")).write_text(src)
    gw = gateway(extra + ONE, up=up, plugins=str(d), routes=routes, allow_errors=allow_errors,
                 **kw)
    return gw, up


SLEEPY = """
local P = {}
function P.access(ctx, conf)
    local t0 = gw.now()
    gw.sleep(conf.s)
    ctx:set_header("X-Slept", string.format("%.3f", gw.now() - t0))
    if conf.deny then ctx:respond(403, "slept then denied") end
end
return P
"""


def test_sleep_in_access_waits_then_forwards(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: slow
    match: {paths: ["/slow"]}
    upstream: u
    plugins: [{name: sleepy, config: {s: 0.15}}]
  - name: deny
    match: {paths: ["/deny"]}
    upstream: u
    plugins: [{name: sleepy, config: {s: 0.05, deny: true}}]
""", {"sleepy": SLEEPY})
    t0 = time.monotonic()
    r = fetch(gw.port, "GET", "/slow")
    took = time.monotonic() - t0
    assert r.status == 200
    assert float(r.echo_header("X-Slept")) >= 0.14
    assert took >= 0.14
    r = fetch(gw.port, "GET", "/deny")
    assert r.status == 403 and r.body == b"slept then denied"
    assert len(up.requests) == 1


def test_sleep_does_not_block_other_requests_on_the_worker(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: slow
    match: {paths: ["/slow"]}
    upstream: u
    plugins: [{name: sleepy, config: {s: 0.4}}]
  - name: fast
    upstream: u
""", {"sleepy": SLEEPY})
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(gw.port, "GET", "/slow").status))
               for _ in range(5)]
    for th in threads:
        th.start()
    time.sleep(0.05)
    lat = []
    for _ in range(20):  # workers: 1, so these share the loop with the sleepers
        t0 = time.monotonic()
        assert fetch(gw.port, "GET", "/fast").status == 200
        lat.append(time.monotonic() - t0)
    for th in threads:
        th.join()
    assert results == [200] * 5
    assert max(lat) < 0.2, lat


def test_client_gone_while_plugin_waits(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: slow
    upstream: u
    plugins: [{name: sleepy, config: {s: 0.2}}]
""", {"sleepy": SLEEPY})
    for _ in range(20):  # the body never comes: the exchange is aborted, not finished
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(build_request("POST", "/x", headers=[("Content-Length", "10")])
                  + b"12345")
        time.sleep(0.005)
        s.close()
    time.sleep(0.3)
    assert len(up.requests) == 0  # abandoned while waiting: never forwarded
    assert fetch(gw.port, "GET", "/x").status == 200
    assert gw.alive()


def test_wait_beyond_route_deadline_is_ended(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: slow
    upstream: u
    timeout: 150ms
    plugins: [{name: sleepy, config: {s: 30}}]
""", {"sleepy": SLEEPY})
    t0 = time.monotonic()
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 504 and time.monotonic() - t0 < t(2)
    assert len(up.requests) == 0


LOG_SLEEPY = """
local P = {}
function P.log(ctx, conf)
    local st = ctx.status
    gw.sleep(0.05)
    gw.shared.n = (gw.shared.n or 0) + 1
    gw.log("info", "logged after sleep", st, gw.shared.n)
end
return P
"""


def test_log_phase_waits_after_the_response(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: r
    upstream: u
    plugins: [{name: logsleep}]
""", {"logsleep": LOG_SLEEPY})
    t0 = time.monotonic()
    assert fetch(gw.port, "GET", "/x").status == 200
    assert time.monotonic() - t0 < 0.05 * 3  # the response does not wait for the log phase
    assert wait_until(lambda: "logged after sleep 200 1" in gw.log(), t(2))


NOWAIT = """
local P = {}
function P.access(ctx, conf)
    local ok, err = pcall(gw.sleep, 0.01)
    ctx:set_header("X-Err", tostring(err))
end
return P
"""

TICKER = """
local P = {waits = false}
function P.init_worker(conf)
    gw.timer.every(conf.every, function()
        gw.shared.ticks = (gw.shared.ticks or 0) + 1
    end)
    gw.timer.at(0.01, function(tag)
        gw.sleep(0.02)
        gw.log("info", "one-shot timer ran", tag, conf.gen)
    end, "tagged")
end
function P.access(ctx, conf)
    ctx:set_header("X-Ticks", tostring(gw.shared.ticks or 0))
    ctx:set_header("X-Gen", tostring(conf.gen))
end
return P
"""


def test_sleep_refused_in_direct_call(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: r
    upstream: u
    plugins: [{name: nowait}]
""", {"nowait": NOWAIT.replace("local P = {}", "local P = {waits = false}")})
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200
    assert "cannot wait here" in r.echo_header("X-Err")


def test_timers_run_and_stop_after_reload(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: r
    upstream: u
    plugins: [{name: ticker, config: {every: 0.05, gen: 1}}]
""", {"ticker": TICKER})
    assert wait_until(lambda: "one-shot timer ran tagged 1" in gw.log(), t(2))
    time.sleep(0.3)
    ticks = int(fetch(gw.port, "GET", "/x").echo_header("X-Ticks"))
    assert 3 <= ticks <= 8, ticks
    with open(gw.config_path) as f:
        conf = f.read()
    with open(gw.config_path, "w") as f:
        f.write(conf.replace("gen: 1", "gen: 2"))
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: fetch(gw.port, "GET", "/x").echo_header("X-Gen") == "2", t(3))
    assert wait_until(lambda: "one-shot timer ran tagged 2" in gw.log(), t(2))
    time.sleep(0.2)
    # the new generation's VM starts with an empty gw.shared: only its own timer counts
    ticks = int(fetch(gw.port, "GET", "/x").echo_header("X-Ticks"))
    assert 2 <= ticks <= 7, ticks
    assert gw.log().count("one-shot timer ran tagged 1") == 1
