"""Lua plugins that wait (issue 17, DESIGN section 10.3) through the real binary:
gw.sleep in access and log, timers and init_worker across a reload, clients
that leave while a plugin waits, shared dictionaries across workers and
reloads, rate_limit policy shared."""

import signal
import socket
import threading
import time

import pytest

from conftest import PREAMBLE, build_request, fetch, t, wait_until
from redis_fixture import redis_server  # noqa: F401 (a fixture)

ONE = """\
plugin_path: ["$plugins"]
upstreams:
  u:
    targets: [{address: "$up"}]
routes:
$routes
"""


def start(gateway, upstream, tmp_path, routes, plugins, extra="", allow_errors=(), workers=1,
          up=None):
    up = up or upstream(name="up")
    d = tmp_path / "plugins"
    d.mkdir(parents=True, exist_ok=True)
    for name, src in plugins.items():
        (d / (name + ".lua")).write_text(src)
    pre = PREAMBLE.replace("workers: 1", "workers: %d" % workers)
    gw = gateway(pre + extra + ONE, up=up, plugins=str(d), routes=routes,
                 allow_errors=allow_errors, full=True)
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
    for _ in range(5):  # log phases of several requests wait at once, each with its own ctx
        assert fetch(gw.port, "GET", "/x").status == 200
    assert wait_until(lambda: "logged after sleep 200 6" in gw.log(), t(2))


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
        gw.log("info", "tick of generation " .. conf.gen)
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
    old_ticks = gw.log().count("tick of generation 1")
    time.sleep(0.3)  # the retired generation's timer stopped: no more of its ticks
    assert gw.log().count("tick of generation 1") == old_ticks
    assert gw.log().count("tick of generation 2") >= 5


DICT = """
local P = {}
function P.access(ctx, conf)
    local d = gw.shared_dict("counters")
    local n = d:incr("hits", 1, 0)
    local first = d:add("first", gw.worker_id)
    ctx:respond(200, string.format("%d %s %s %d", n, tostring(d:get("first")), tostring(first),
                                   gw.worker_id))
end
return P
"""


def test_shared_dict_across_workers_and_reload(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: r
    upstream: u
    plugins: [{name: dict}]
""", {"dict": DICT}, extra="shared_dicts: {counters: 64k}\n", workers=2)
    # new connections spread over both workers; one counter for the process
    bodies = [fetch(gw.port, "GET", "/x").body.decode() for _ in range(40)]
    counts = [int(b.split()[0]) for b in bodies]
    assert sorted(counts) == counts and len(set(counts)) == 40, counts
    assert {b.split()[3] for b in bodies} == {"0", "1"}, bodies  # both workers served
    assert sum(b.split()[2] == "true" for b in bodies) <= 1  # add: once per process
    gw.signal(signal.SIGHUP)  # same name and size: the contents stay
    assert wait_until(lambda: gw.log().count("config reloaded") >= 1, t(5))
    time.sleep(0.2)
    n = int(fetch(gw.port, "GET", "/x").body.split()[0])
    assert n > 40, n


RL_ROUTES = """\
  - name: r
    upstream: u
    plugins: [{name: rate_limit, config: {rate: 10, window: 1m, policy: shared, dict: limits}}]
"""


def test_rate_limit_shared_exactly_n_across_workers_and_reload(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, RL_ROUTES, {},
                   extra="shared_dicts: {limits: 1m}\n", workers=2)
    statuses = []
    for i in range(16):
        r = fetch(gw.port, "GET", "/x")
        statuses.append(r.status)
        if i == 0:
            assert r.header("RateLimit-Limit") == "10"
            assert r.header("RateLimit-Remaining") == "9"
            assert int(r.header("RateLimit-Reset")) in (6, 7)
        if r.status == 429:
            assert r.json()["error"] == "rate_limited"
            assert int(r.header("Retry-After")) >= 5
            assert r.header("RateLimit-Remaining") == "0"
    assert statuses.count(200) == 10 and statuses[:10] == [200] * 10, statuses
    gw.signal(signal.SIGHUP)  # the buckets survive a reload
    assert wait_until(lambda: gw.log().count("config reloaded") >= 1, t(5))
    time.sleep(0.2)  # the workers take the new generation
    assert fetch(gw.port, "GET", "/x").status == 429
    assert len(up.requests) == 10


def test_shared_dict_undeclared_is_a_config_error(gateway, upstream, tmp_path):
    import subprocess
    from conftest import BIN
    d = tmp_path / "plugins"
    d.mkdir()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listen: [\"127.0.0.1:1\"]\nupstreams: {u: {targets: [{address: \"127.0.0.1:2\"}]}}\n"
                   "routes:\n" + RL_ROUTES)
    p = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, timeout=t(20))
    assert p.returncode != 0
    assert b"needs the shared dictionary 'limits' under shared_dicts" in p.stderr + p.stdout
    cfg.write_text("shared_dicts: {limits: 10}\n" + cfg.read_text())
    p = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, timeout=t(20))
    assert p.returncode != 0 and b"bad.yaml:1:24: shared_dicts.limits: invalid size" in p.stderr + p.stdout


def auth_handler(conn, req):
    conn.read_body(req)
    token = req.header("Authorization")
    if token == "Bearer slow":
        conn.server.stopped.wait(0.5)
    if token in ("Bearer good", "Bearer slow"):
        assert req.header("X-Forwarded-Uri") == "/api/x?q=1"
        assert req.header("X-Forwarded-Method") == "GET"
        conn.respond(200, b"", headers=[("X-User", "alice"), ("X-Ignored", "1")])
    else:
        conn.respond(401, b'{"why":"nope"}', headers=[("Content-Type", "application/json"),
                                                       ("WWW-Authenticate", "Bearer")])
    return None


AUTH_CONF = """\
plugin_path: ["$plugins"]
upstreams:
  u:
    targets: [{address: "$up"}]
  auth:
    targets: [{address: "$auth"}]
  down:
    targets: [{address: "127.0.0.1:$closed"}]
routes:
  - name: api
    match: {paths: ["/api"]}
    upstream: u
    plugins:
      - name: forward_auth
        config: {upstream: auth, path: /check, forward_headers: [Authorization],
                 copy_headers: [X-User], timeout: 0.2}
  - name: down
    match: {paths: ["/down"]}
    upstream: u
    plugins: [{name: forward_auth, config: {upstream: down, on_error: 401}}]
  - name: other
    upstream: u
"""


def test_forward_auth_allow_deny_timeout_down(gateway, upstream, tmp_path):
    from conftest import free_port
    auth = upstream(auth_handler, name="auth")
    up = upstream(name="up")
    d = tmp_path / "plugins"
    d.mkdir()
    gw = gateway(AUTH_CONF, up=up, auth=auth, plugins=str(d), closed=free_port())
    r = fetch(gw.port, "GET", "/api/x?q=1", headers=[("Authorization", "Bearer good")])
    assert r.status == 200
    assert r.echo_header("X-User") == "alice" and r.echo_header("X-Ignored") is None
    assert auth.requests[-1].path == "/check"
    r = fetch(gw.port, "GET", "/api/x?q=1", headers=[("Authorization", "Bearer bad")])
    assert r.status == 401 and r.body == b'{"why":"nope"}'
    assert r.header("WWW-Authenticate") == "Bearer"
    assert r.header("Content-Type") == "application/json"
    t0 = time.monotonic()
    r = fetch(gw.port, "GET", "/api/x?q=1", headers=[("Authorization", "Bearer slow")])
    assert r.status == 503 and r.json()["error"] == "auth_unavailable"
    assert time.monotonic() - t0 < 0.45
    r = fetch(gw.port, "GET", "/down")
    assert r.status == 401 and r.json()["error"] == "unauthorized"
    assert len(up.requests) == 1  # only the allowed one reached the upstream
    assert "forward_auth: auth: timeout" in gw.log()
    assert "forward_auth: down: connect: connection refused" in gw.log()
    for _ in range(6):  # the upstream's breaker (5 consecutive failures) hears of each call
        assert fetch(gw.port, "GET", "/down").status == 401
    assert "forward_auth: down: circuit open" in gw.log()


def test_slow_auth_does_not_delay_other_routes(gateway, upstream, tmp_path):
    def slow_auth(conn, req):
        conn.read_body(req)
        conn.server.stopped.wait(0.2)
        conn.respond(200, b"")
        return None
    auth = upstream(slow_auth, name="auth")
    up = upstream(name="up")
    d = tmp_path / "plugins"
    d.mkdir()
    from conftest import free_port
    gw = gateway(AUTH_CONF.replace("timeout: 0.2", "timeout: 2"), up=up, auth=auth,
                 plugins=str(d), closed=free_port())
    base = []
    for _ in range(10):
        t0 = time.monotonic()
        fetch(gw.port, "GET", "/other")
        base.append(time.monotonic() - t0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        fetch(gw.port, "GET", "/api/x?q=1", headers=[("Authorization", "Bearer x")]).status))
        for _ in range(4)]
    for th in threads:
        th.start()
    time.sleep(0.03)
    lat = []
    for _ in range(10):
        t0 = time.monotonic()
        assert fetch(gw.port, "GET", "/other").status == 200
        lat.append(time.monotonic() - t0)
    for th in threads:
        th.join()
    assert results == [200] * 4
    assert max(lat) < max(0.1, 4 * max(base)), (lat, base)


REDIS_PLUGIN = """
local P = {}
local SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
function P.access(ctx, conf)
    local n, err = gw.redis:eval(SCRIPT, {"hits"}, {2})
    local v, err2 = gw.redis:call("GET", "hits")
    local none = gw.redis:call("GET", "absent")
    local _, bad = gw.redis:call("NOSUCHCOMMAND")
    ctx:respond(200, string.format("%s|%s|%s|%s|%s|%s", tostring(n), tostring(err), tostring(v),
        tostring(err2), tostring(none), tostring(bad)))
end
return P
"""


def test_redis_call_eval_and_outage(gateway, upstream, tmp_path, redis_server):
    rs = redis_server()
    if True:
        gw, up = start(gateway, upstream, tmp_path, """\
  - name: r
    upstream: u
    plugins: [{name: redisp}]
""", {"redisp": REDIS_PLUGIN}, extra='redis: {address: "%s", timeout: 200ms}\n' % rs.address,
            allow_errors=())
        b = fetch(gw.port, "GET", "/x").body.decode().split("|")
        assert b[0] == "2" and b[1] == "nil" and b[2] == "2" and b[4] == "nil", b
        assert "unknown command" in b[5].lower(), b
        b = fetch(gw.port, "GET", "/x").body.decode().split("|")
        assert b[0] == "4", b  # EVALSHA now (the script was loaded by the first EVAL)
        rs.kill()
        t0 = time.monotonic()
        b = fetch(gw.port, "GET", "/x").body.decode().split("|")
        assert b[0] == "nil" and b[1] != "nil", b  # an error returned, not raised
        assert time.monotonic() - t0 < t(1)
        rs.restart()
        assert wait_until(lambda: fetch(gw.port, "GET", "/x").body.startswith(b"2|"), t(3))


ROGUE_PLUGIN = """
local P = {}
function P.access(ctx, conf)
  local v, err = gw.redis:call("GET", "k")
  return ctx:respond(200, tostring(v) .. "|" .. tostring(err))
end
return P
"""


def rogue_redis(answer):
    """A 'Redis' that answers any command with answer() (a generator of
    chunks), sent until the connection closes."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve(s):
        try:
            if s.recv(65536):
                for chunk in answer():
                    s.sendall(chunk)
        except OSError:
            pass
        finally:
            s.close()

    def loop():
        while True:
            try:
                s, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(s,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls


def test_redis_reply_past_the_byte_bound_ends_the_connection(gateway, upstream, tmp_path):
    """A bulk string announced at 1 GB and sent without end: the reader stops
    buffering it at 64 MiB (hiredis 0.14 alone would buffer all of it), the
    call fails with the reason, and the next request is served."""
    def endless():
        yield b"$1000000000\r\n"
        block = b"x" * (1 << 20)
        for _ in range(1000):
            yield block

    ls = rogue_redis(endless)
    try:
        gw, _ = start(gateway, upstream, tmp_path, """\
  - name: r
    upstream: u
    plugins: [{name: rogue}]
""", {"rogue": ROGUE_PLUGIN}, extra='redis: {address: "127.0.0.1:%d", timeout: 5s}\n'
            % ls.getsockname()[1], allow_errors=[r"(?i)redis"])
        t0 = time.monotonic()
        r = fetch(gw.port, "GET", "/x")
        assert r.status == 200 and r.body.startswith(b"nil|"), r.body
        assert b"larger than 67108864 bytes" in r.body, r.body
        assert time.monotonic() - t0 < t(4)  # not the 5 s timeout: the bound ended it
        assert fetch(gw.port, "GET", "/x").status == 200
    finally:
        ls.close()


RL_REDIS = """\
  - name: r
    upstream: u
    plugins: [{name: rate_limit, config: {rate: 10, window: 1m, policy: redis,
                                          on_store_error: $ose}}]
"""


def test_rate_limit_redis_exactly_n_across_two_instances(gateway, upstream, tmp_path,
                                                          redis_server):
    rs = redis_server()
    up = upstream(name="up")
    extra = 'redis: {address: "%s", timeout: 200ms}\n' % rs.address
    gws = []
    for i in range(2):
        gw, _ = start(gateway, upstream, tmp_path / ("g%d" % i), RL_REDIS.replace("$ose", "deny"),
                      {}, extra=extra, workers=2, up=up)
        gws.append(gw)
    statuses = []
    for i in range(24):
        r = fetch(gws[i % 2].port, "GET", "/x")
        statuses.append(r.status)
        if r.status == 429:
            assert r.header("RateLimit-Remaining") == "0" and int(r.header("Retry-After")) >= 5
    assert statuses.count(200) == 10 and statuses[:10] == [200] * 10, statuses
    assert len(up.requests) == 10
    gws[0].signal(signal.SIGHUP)  # nothing is kept in the gateway: a reload changes nothing
    assert wait_until(lambda: "config reloaded" in gws[0].log(), t(5))
    assert fetch(gws[0].port, "GET", "/x").status == 429
    rs.kill()  # on_store_error: deny answers 503 at once
    t0 = time.monotonic()
    r = fetch(gws[1].port, "GET", "/x")
    assert r.status == 503 and r.json()["error"] == "rate_limit_unavailable"
    assert time.monotonic() - t0 < t(1)


SPIN_AFTER_WAIT = """
local P = {}
function P.access(ctx, conf)
    gw.sleep(0.3)          -- longer than the phase limit: waiting is not Lua time
    if ctx.path == "/spin" then
        while true do end  -- Lua time is: the guard stops it
    end
end
return P
"""


def test_runaway_guard_counts_lua_time_not_waiting(gateway, upstream, tmp_path):
    gw, up = start(gateway, upstream, tmp_path, """\
  - name: r
    upstream: u
    plugins: [{name: spinwait}]
""", {"spinwait": SPIN_AFTER_WAIT}, allow_errors=[r"plugin spinwait: access: .*time limit"])
    assert fetch(gw.port, "GET", "/ok").status == 200
    t0 = time.monotonic()
    r = fetch(gw.port, "GET", "/spin")
    assert r.status == 500 and r.json()["error"] == "plugin_error"
    assert time.monotonic() - t0 < t(2)
    assert "exceeded the 200 ms time limit" in gw.log()
    assert fetch(gw.port, "GET", "/ok").status == 200  # the VM and its coroutine pool go on


# gw.http.request over the upstream pools: keep-alive reuse, TLS, Connection: close

CALLER = """
local P = {}
function P.access(ctx, conf)
    local out = {}
    for i, path in ipairs(conf.paths) do
        local r, err = gw.http.request{upstream = conf.upstream, path = path, timeout = conf.timeout}
        if not r then
            out[#out + 1] = "err:" .. err
        else
            local c = r.headers["x-connection"]
            out[#out + 1] = r.status .. ":" .. (c and c[1] or "-") .. ":" .. #r.body
        end
    end
    ctx:respond(200, table.concat(out, " "))
end
return P
"""

CALLER_CONF = """\
plugin_path: ["$plugins"]
upstreams:
  u:
    targets: [{address: "$up"}]
$side
routes:
  - name: two
    match: {paths: ["/two"]}
    upstream: u
    plugins: [{name: caller, config: {upstream: side, paths: ["/a", "/b"]}}]
  - name: closing
    match: {paths: ["/closing"]}
    upstream: u
    plugins: [{name: caller, config: {upstream: side, paths: ["/close", "/c", "/d"]}}]
  - name: slow
    match: {paths: ["/slow"]}
    upstream: u
    plugins: [{name: caller, config: {upstream: side, paths: ["/slow/400"], timeout: 2}}]
  - name: tmo
    match: {paths: ["/tmo"]}
    upstream: u
    plugins: [{name: caller, config: {upstream: side, paths: ["/slow/300"], timeout: 0.05}}]
"""


def caller_gateway(gateway, upstream, tmp_path, side, **subs):
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / "caller.lua").write_text(CALLER)
    up = upstream(name="up")
    return gateway(CALLER_CONF, up=up, plugins=str(d), side=side, **subs)


def scrape_metrics(gw):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=t(5)) as r:
        return r.read().decode()


def conns(body):
    return [part.split(":")[1] for part in body.decode().split(" ")]


def test_http_request_to_upstream_reuses_pooled_connection(gateway, upstream, tmp_path):
    side = upstream(name="side")
    gw = caller_gateway(gateway, upstream, tmp_path,
                        "  side:\n    targets: [{address: \"%s\"}]\n" % side.address)
    r = fetch(gw.port, "GET", "/two")
    assert r.status == 200 and r.body.decode().startswith("200:"), r.body
    r2 = fetch(gw.port, "GET", "/two")
    assert conns(r.body) + conns(r2.body) == ["1"] * 4, (r.body, r2.body)
    assert side.connection_count == 1
    assert all(not q.wants_close() for q in side.requests)
    r = fetch(gw.port, "GET", "/tmo")
    assert r.body == b"err:timeout", r.body
    io = {}
    for line in scrape_metrics(gw).splitlines():
        if line.startswith("moongate_plugin_io_total{"):
            io[line.split("{")[1].split("}")[0]] = float(line.rsplit(" ", 1)[1])
    assert io['plugin="caller",kind="http",result="ok"'] == 4, io
    assert io['plugin="caller",kind="http",result="timeout"'] == 1, io
    assert not any('kind="redis"' in k for k in io), io


def test_http_request_body_announced_past_the_bound_fails_at_once(gateway, upstream, tmp_path):
    """A Content-Length past the body bound (1 MiB) fails the call when the
    head arrives, not when the bytes or the timeout do."""
    def huge(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\nxx")
        time.sleep(t(2.5))

    side = upstream(huge, name="side")
    side.expect_errors = True
    gw = caller_gateway(gateway, upstream, tmp_path,
                        "  side:\n    targets: [{address: \"%s\"}]\n" % side.address)
    t0 = time.monotonic()
    r = fetch(gw.port, "GET", "/slow")
    assert r.status == 200 and b"larger than 1048576 bytes" in r.body, r.body
    assert time.monotonic() - t0 < t(1.5)  # the call's timeout is 2 s


def test_http_request_connection_close_is_not_reused(gateway, upstream, tmp_path):
    side = upstream(name="side")
    gw = caller_gateway(gateway, upstream, tmp_path,
                        "  side:\n    targets: [{address: \"%s\"}]\n" % side.address)
    r = fetch(gw.port, "GET", "/closing")
    assert r.status == 200
    # /close answers with Connection: close; the next calls need a new one, then share it
    assert conns(r.body) == ["1", "2", "2"], r.body
    assert side.connection_count == 2


def test_http_request_client_gone_mid_call_leaks_nothing(gateway, upstream, tmp_path):
    side = upstream(name="side")
    gw = caller_gateway(gateway, upstream, tmp_path,
                        "  side:\n    targets: [{address: \"%s\"}]\n" % side.address)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(build_request("GET", "/slow"))
        wait_until(lambda: any(q.path == "/slow/400" for q in side.requests), t(2))
        s.close()
    time.sleep(0.1)
    # the abandoned calls' connections were closed, not pooled with a late answer
    r = fetch(gw.port, "GET", "/two")
    assert r.status == 200 and r.body.decode().startswith("200:"), r.body
    assert len(set(conns(r.body))) == 1 and conns(r.body)[0] not in ("1", "2", "3", "4", "5")
    assert gw.alive()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from tls_fixture import Certs
    return Certs.make(str(tmp_path_factory.mktemp("certs")))


def test_http_request_to_tls_upstream_verifies_and_pools(gateway, upstream, tmp_path, certs):
    from tls_fixture import TlsUpstream
    o = TlsUpstream(*certs.both("default"), name="tls-side")
    try:
        side = ("  side:\n    targets: [{address: \"%s\"}]\n"
                "    tls: {enabled: true, verify: true, sni: api.test, ca: \"%s\"}\n"
                % (o.address, certs.ca))
        gw = caller_gateway(gateway, upstream, tmp_path, side)
        r = fetch(gw.port, "GET", "/two")
        r2 = fetch(gw.port, "GET", "/two")
        assert r.status == 200 and r.body.decode().startswith("200:"), r.body
        assert conns(r.body) + conns(r2.body) == ["1"] * 4, (r.body, r2.body)
        assert (o.accepted, o.handshakes) == (1, 1)
        assert o.sni_names == ["api.test"]
    finally:
        o.stop()


def test_http_request_tls_upstream_with_untrusted_certificate_fails(gateway, upstream, tmp_path,
                                                                   certs):
    from tls_fixture import TlsUpstream
    o = TlsUpstream(*certs.both("rogue"), name="tls-rogue")
    try:
        side = ("  side:\n    targets: [{address: \"%s\"}]\n"
                "    tls: {enabled: true, verify: true, sni: api.test, ca: \"%s\"}\n"
                % (o.address, certs.ca))
        gw = caller_gateway(gateway, upstream, tmp_path, side)
        r = fetch(gw.port, "GET", "/two")
        assert r.status == 200 and r.body.decode().startswith("err:connect"), r.body
        assert o.requests == []
    finally:
        o.stop()


def test_http_request_retries_a_pooled_connection_closed_before_answering(gateway, upstream,
                                                                         tmp_path):
    from upstream import echo

    def stale_on_second(conn, req):  # as if it timed out idle just as the request came
        conn.read_body(req)
        conn.n = getattr(conn, "n", 0) + 1
        if conn.n == 2:
            conn.close()
            return False
        echo(conn, req)
        return None
    side = upstream(stale_on_second, name="side")
    gw = caller_gateway(gateway, upstream, tmp_path,
                        "  side:\n    targets: [{address: \"%s\"}]\n" % side.address)
    r = fetch(gw.port, "GET", "/two")
    assert r.status == 200 and conns(r.body) == ["1", "2"], r.body
    assert [q.path for q in side.requests] == ["/a", "/b", "/b"]
