"""Lua plugins through the real binary (issue 5, DESIGN section 6): phases,
short-circuits, header edits, errors, the runaway guard, bundled balancers,
config-time errors and reload."""

import collections
import signal
import subprocess
import time
import urllib.request

from conftest import BIN, assert_error, fetch, t, wait_until


def run_cli(*args):
    p = subprocess.run([BIN, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=t(20))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

TWO = """\
plugin_path: ["$plugins"]
upstreams:
  u:
    targets: [{address: "$a"}, {address: "$b"}]
routes:
  - name: r
    upstream: u
$route_extra
"""


def write_plugin(tmp_path, name, source):
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / (name + ".lua")).write_text(source)
    return str(d)


def start(gateway, upstream, tmp_path, route_extra, plugins=None, allow_errors=()):
    a, b = upstream(name="a"), upstream(name="b")
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    for name, src in (plugins or {}).items():
        (d / (name + ".lua")).write_text(src)
    gw = gateway(TWO, a=a, b=b, plugins=str(d), route_extra=route_extra,
                 allow_errors=allow_errors)
    return gw, a, b


def test_key_auth_rejects_without_touching_upstream(gateway, upstream, tmp_path):
    gw, a, b = start(gateway, upstream, tmp_path,
                     '    plugins: [{name: key_auth, config: {keys: ["s3cret"]}}]')
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 401 and r.json()["error"] == "unauthorized"
    assert len(a.requests) + len(b.requests) == 0
    r = fetch(gw.port, "GET", "/x", headers=[("X-Api-Key", "s3cret")])
    assert r.status == 200


ECHO_PLUGIN = """
local P = {}
function P.access(ctx, conf)
  ctx.vars.seen = ctx.method .. " " .. ctx.path
  ctx:set_header("X-From-Plugin", conf.tag)
  ctx:set_header("X-Drop-Me", nil)
end
function P.response(ctx, conf)
  ctx:set_response_header("X-Vars", ctx.vars.seen)
  ctx:set_response_header("X-Upstream-Status", tostring(ctx.status))
end
return P
"""


def test_header_edits_both_ways_and_shared_vars(gateway, upstream, tmp_path):
    gw, a, b = start(gateway, upstream, tmp_path,
                     '    plugins: [{name: edit, config: {tag: "t1"}}]', {"edit": ECHO_PLUGIN})
    r = fetch(gw.port, "GET", "/p?q=1", headers=[("X-Drop-Me", "yes")])
    assert r.status == 200
    assert r.header("X-Vars") == "GET /p"
    assert r.header("X-Upstream-Status") == "200"
    req = (a.requests + b.requests)[0]
    assert req.header("X-From-Plugin") == "t1"
    assert req.header("X-Drop-Me") is None


RAISER = """
local P = {}
function P.access(ctx, conf)
  if ctx.path == "/boom" then error("kaboom") end
end
return P
"""


def test_plugin_error_is_500_and_worker_keeps_serving(gateway, upstream, tmp_path):
    gw, a, b = start(gateway, upstream, tmp_path, "    plugins: [{name: raiser}]",
                     {"raiser": RAISER}, allow_errors=[r"kaboom", r"plugin"])
    assert_error(fetch(gw.port, "GET", "/boom"), "plugin_error", 500)
    assert "kaboom" in gw.log()
    for _ in range(5):
        assert fetch(gw.port, "GET", "/fine").status == 200
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port,
                                     timeout=t(5)).read().decode()
    assert 'moongate_plugin_errors_total{plugin="raiser",phase="access"} 1' in metrics
    assert 'moongate_plugin_duration_seconds_count{plugin="raiser",phase="access"} 6' in metrics


RUNAWAY = """
local P = {}
function P.access(ctx, conf)
  if ctx.path == "/spin" then while true do end end
end
return P
"""


def test_runaway_plugin_is_stopped(gateway, upstream, tmp_path):
    gw, a, b = start(gateway, upstream, tmp_path, "    plugins: [{name: runaway}]",
                     {"runaway": RUNAWAY}, allow_errors=[r"plugin", r"runaway", r"limit"])
    start_t = time.monotonic()
    assert_error(fetch(gw.port, "GET", "/spin"), "plugin_error", 500)
    assert time.monotonic() - start_t < t(5)
    assert fetch(gw.port, "GET", "/fine").status == 200


def test_p2c_ewma_prefers_the_fast_target(gateway, upstream, tmp_path):
    def slow(conn, req):
        conn.read_body(req)
        # well above what a loaded machine adds to the fast one's answers
        time.sleep(0.15)
        conn.respond(200, b"slow")
    fast = upstream(name="fast")
    slow_up = upstream(slow, name="slow")
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    gw = gateway(TWO, a=fast, b=slow_up, plugins=str(d),
                 route_extra="    balancer: {name: p2c_ewma}")
    for i in range(60):
        assert fetch(gw.port, "GET", "/x%d" % i).status == 200
    assert len(fast.requests) > 2 * len(slow_up.requests), (len(fast.requests), len(slow_up.requests))


def test_consistent_hash_keeps_keys_on_one_target(gateway, upstream, tmp_path):
    gw, a, b = start(gateway, upstream, tmp_path,
                     '    balancer: {name: consistent_hash, config: {key: "header:X-User"}}')
    owner = {}
    for user in ("alice", "bob", "carol", "dave", "erin"):
        for i in range(4):
            fetch(gw.port, "GET", "/u/%s/%d" % (user, i), headers=[("X-User", user)])
    by_user = collections.defaultdict(set)
    for up in (a, b):
        for req in up.requests:
            by_user[req.header("X-User")].add(up.name)
    assert all(len(v) == 1 for v in by_user.values()), dict(by_user)


def test_missing_plugin_is_a_config_error(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("""listen: ["127.0.0.1:1"]
upstreams:
  u:
    targets: [{address: "127.0.0.1:2"}]
routes:
  - name: r
    upstream: u
    plugins:
      - {name: does_not_exist}
""")
    rc, out, err = run_cli("-t", "-c", str(conf))
    assert rc == 1
    assert "%s:9:9: routes[0].plugins[0]: plugin does_not_exist" % conf in out + err


def test_init_rejecting_config_names_route_and_position(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("""listen: ["127.0.0.1:1"]
upstreams:
  u:
    targets: [{address: "127.0.0.1:2"}]
routes:
  - name: r
    upstream: u
    plugins:
      - {name: key_auth, config: {nope: 1}}
""")
    rc, out, err = run_cli("-t", "-c", str(conf))
    assert rc == 1
    assert "routes[0].plugins[0]: plugin key_auth:" in out + err
    assert "nope" in out + err


def test_syntax_error_is_a_config_error(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "broken.lua").write_text("local P = {\nreturn P\n")
    conf = tmp_path / "c.yaml"
    conf.write_text("""listen: ["127.0.0.1:1"]
plugin_path: ["%s"]
upstreams:
  u:
    targets: [{address: "127.0.0.1:2"}]
routes:
  - name: r
    upstream: u
    plugins: [{name: broken}]
""" % d)
    rc, out, err = run_cli("-t", "-c", str(conf))
    assert rc == 1 and "plugin broken" in out + err


V1 = """
local P = {}
function P.response(ctx, conf) ctx:set_response_header("X-Version", "1") end
return P
"""
V2 = V1.replace('"1"', '"2"')


def test_reload_loads_plugins_fresh(gateway, upstream, tmp_path):
    gw, a, b = start(gateway, upstream, tmp_path, "    plugins: [{name: ver}]", {"ver": V1})
    assert fetch(gw.port, "GET", "/x").header("X-Version") == "1"
    (tmp_path / "plugins" / "ver.lua").write_text(V2)
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: fetch(gw.port, "GET", "/x").header("X-Version") == "2", t(5))
