"""Metrics of Lua plugins that wait (issue 17): moongate_plugin_io_total
{plugin,kind,result} and moongate_plugin_io_wait_seconds{plugin,kind}, from a
real scrape of /metrics while plugins call a real upstream (gw.http.request)
and a real redis-server (gw.redis), checked by `promtool check metrics`."""

import shutil
import subprocess
import urllib.request

import pytest

from conftest import PREAMBLE, fetch, samples, t
from redis_fixture import redis_server  # noqa: F401 (a fixture)

CALLS = """
local P = {}
function P.access(ctx, conf)
    for _ = 1, conf.http do
        local r, err = gw.http.request{upstream = "side", path = conf.path,
                                       timeout = conf.timeout}
        if not r and err ~= "timeout" then error(err) end
    end
    for _ = 1, conf.redis do
        gw.redis:call("INCR", "io-metrics")
    end
    if conf.sleep then gw.sleep(conf.sleep) end
end
return P
"""

CONF = """\
plugin_path: ["$plugins"]
redis: {address: "$redis", timeout: 200ms}
upstreams:
  u:
    targets: [{address: "$up"}]
  side:
    targets: [{address: "$side"}]
routes:
  - name: a
    match: {paths: ["/a"]}
    upstream: u
    plugins: [{name: request_id},
              {name: io_a, config: {http: 2, redis: 1, path: "/ok"}}]
  - name: b
    match: {paths: ["/b"]}
    upstream: u
    plugins: [{name: io_b, config: {http: 1, redis: 0, path: "/slow/400", timeout: 0.05,
                                    sleep: 0.01}}]
"""


def scrape(gw):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port,
                                timeout=t(5)) as r:
        return r.read().decode()


def test_io_total_and_wait_histogram_per_plugin(gateway, upstream, tmp_path, redis_server):
    rs = redis_server()
    d = tmp_path / "plugins"
    d.mkdir()
    for name in ("io_a", "io_b"):
        (d / (name + ".lua")).write_text(CALLS)
    gw = gateway(PREAMBLE + CONF, full=True, up=upstream(name="up"), side=upstream(name="side"),
                 plugins=str(d), redis=rs.address,
                 allow_errors=[r"(?i)gw\.redis", r"(?i)redis"])
    for _ in range(3):
        assert fetch(gw.port, "GET", "/a").status == 200
    for _ in range(2):
        assert fetch(gw.port, "GET", "/b").status == 200
    rs.kill()  # the next INCR fails (connection lost or refused at once): result error
    assert fetch(gw.port, "GET", "/a").status == 200

    text = scrape(gw)
    promtool = shutil.which("promtool")
    if promtool is not None:
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=t(20))
        assert p.returncode == 0, p.stdout + p.stderr
    s = samples(text)

    def io(plugin, kind, result):
        return s.get(("moongate_plugin_io_total", frozenset(
            {("plugin", plugin), ("kind", kind), ("result", result)})))

    def wait(plugin, kind, part):
        return s.get(("moongate_plugin_io_wait_seconds_" + part,
                      frozenset({("plugin", plugin), ("kind", kind)})))

    assert (io("io_a", "http", "ok"), io("io_a", "http", "error"),
            io("io_a", "http", "timeout")) == (8, 0, 0)
    assert (io("io_a", "redis", "ok"), io("io_a", "redis", "error")) == (3, 1)
    assert (io("io_b", "http", "timeout"), io("io_b", "http", "ok")) == (2, 0)
    assert io("io_b", "sleep", "ok") == 2
    # series only for what a plugin waited for: bounded by plugins x kinds used
    assert io("io_a", "sleep", "ok") is None and io("io_b", "redis", "ok") is None
    assert not [k for k in s if k[0].startswith("moongate_plugin_io")
                and ("plugin", "request_id") in k[1]]
    # the histogram counts every operation the counter does
    for plugin, kind, n in (("io_a", "http", 8), ("io_a", "redis", 4), ("io_b", "http", 2),
                            ("io_b", "sleep", 2)):
        assert wait(plugin, kind, "count") == n, (plugin, kind)
        inf = s[("moongate_plugin_io_wait_seconds_bucket",
                 frozenset({("plugin", plugin), ("kind", kind), ("le", "+Inf")}))]
        assert inf == n
    assert wait("io_b", "http", "sum") >= 2 * 0.05 * 0.9
    assert wait("io_b", "sleep", "sum") >= 2 * 0.01 * 0.9
    # ...and the plugin's duration stays Lua time, without the waits
    dur = s[("moongate_plugin_duration_seconds_sum",
             frozenset({("plugin", "io_b"), ("phase", "access")}))]
    assert dur < wait("io_b", "http", "sum") / 2, dur
