"""gw.redis in sentinel mode (issue 17): with `redis.sentinel`, a plugin's
calls go to the master the sentinels name, and after the master is killed and
the sentinels fail over, to the new one. Real redis-server and redis-sentinel
processes (sentinel_fixture.py), the real gateway binary."""

import signal
import time

from conftest import PREAMBLE, fetch, t, wait_until
from sentinel_fixture import MASTER_NAME, sentinel_cluster  # noqa: F401 (a fixture)

PLUGIN = """
local P = {}
function P.access(ctx, conf)
    local v, err = gw.redis:call("INCR", "sentinel-hits")
    ctx:respond(200, v and tostring(v) or ("err:" .. tostring(err)))
end
return P
"""

CONF = """\
plugin_path: ["$plugins"]
redis:
  sentinel: {master: %s, addresses: [%s]}
  timeout: 250ms
upstreams:
  u:
    targets: [{address: "$up"}]
routes:
  - name: r
    upstream: u
    plugins: [{name: incr}]
"""


def hit(gw):
    return fetch(gw.port, "GET", "/x").body.decode()


def test_gw_redis_follows_the_master_across_a_failover(gateway, upstream, tmp_path,
                                                       sentinel_cluster):
    cluster = sentinel_cluster()
    old = cluster.master_addr()
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "incr.lua").write_text(PLUGIN)
    conf = CONF % (MASTER_NAME, ", ".join('"%s"' % a for a in cluster.sentinel_addresses))
    gw = gateway(PREAMBLE + conf, full=True, up=upstream(name="up"), plugins=str(d),
                 allow_errors=[r"(?i)redis", r"(?i)sentinel"])
    # the first call waits for the sentinels' answer and ROLE, then is sent
    assert hit(gw) == "1"
    assert hit(gw) == "2"
    assert cluster.server(old).cmd("GET", "sentinel-hits") == b"2"
    assert wait_until(lambda: cluster.replica.cmd("GET", "sentinel-hits") == b"2", t(2))

    cluster.kill_master()
    new, _ = cluster.wait_failover(old, t(20))
    t0 = time.monotonic()
    # errors while the old connection breaks, then the new master answers
    assert wait_until(lambda: not hit(gw).startswith("err:"), t(5), interval=0.05), hit(gw)
    print("\ngw.redis on the new master %.3fs after the sentinels agreed"
          % (time.monotonic() - t0))
    v = int(hit(gw))
    assert v >= 4  # the replica's 2, then this gateway's INCRs on the new master
    assert cluster.server(new).cmd("GET", "sentinel-hits") == str(v).encode()
    # a reload retires the VM with its sentinel connections; the new one finds the master
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reloaded" in gw.log(), t(5))
    assert hit(gw) == str(v + 1)
    # no sentinel answers: a call fails within redis.timeout, nothing hangs
    for s in cluster.sentinels:
        s.kill()
    gw.signal(signal.SIGHUP)  # a fresh VM: it must ask the (dead) sentinels
    assert wait_until(lambda: gw.log().count("config reloaded") >= 2, t(5))
    t0 = time.monotonic()
    assert hit(gw).startswith("err:redis unavailable")
    assert time.monotonic() - t0 < t(1.5)
    assert gw.alive()
