"""A real Redis Sentinel deployment for the integration suite: one master, one
replica and three sentinels (Debian's redis-server and redis-sentinel), all on
free loopback ports in the test's tmp dir.

    from sentinel_fixture import sentinel_cluster   # the fixture, importable

    def test_x(sentinel_cluster):
        c = sentinel_cluster()        # started; the replica is in sync, the
                                      # sentinels know the master, the replica
                                      # and each other
        c.master, c.replica           # RedisServer objects (redis_fixture.py)
        c.sentinel_addresses          # ["127.0.0.1:P1", ...] for redis.sentinel
        c.master_addr()               # what the sentinels answer now
        c.kill_master()               # SIGKILL; returns time.monotonic() of the kill
        c.wait_failover(old, timeout) # polls until every sentinel names another
                                      # master that answers ROLE master

Fast failover settings: down-after-milliseconds 400, failover-timeout 2000,
quorum 2, so a killed master is replaced within a few seconds. Everything
started is killed at teardown.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import free_port
from redis_fixture import RedisError, RedisServer

REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 400
FAILOVER_TIMEOUT_MS = 2000


class Sentinel:
    def __init__(self, workdir, master_port, port=None):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = port or free_port()
        self.conf = os.path.join(workdir, "sentinel.conf")
        self.log_path = os.path.join(workdir, "sentinel.log")
        with open(self.conf, "w") as f:   # sentinel rewrites this file: it must be its own
            f.write("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
                    "dir %s\nlogfile %s\nsentinel resolve-hostnames no\n"
                    "sentinel monitor %s 127.0.0.1 %d 2\n"
                    "sentinel down-after-milliseconds %s %d\n"
                    "sentinel failover-timeout %s %d\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (self.port, workdir, self.log_path, MASTER_NAME, master_port,
                       MASTER_NAME, DOWN_AFTER_MS, MASTER_NAME, FAILOVER_TIMEOUT_MS, MASTER_NAME))
        self.proc = None
        # the RESP client of redis_fixture, pointed at the sentinel's port
        self.client = RedisServer(workdir, self.port)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen([REDIS_SENTINEL, self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-sentinel exited with %s:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            if self.client.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError("redis-sentinel did not answer on %d:\n%s" % (self.port, self.log_tail()))

    def cmd(self, *args, timeout=2.0):
        return self.client.cmd(*args, timeout=timeout)

    def master_addr(self):
        """The master this sentinel names now, "host:port", or None."""
        try:
            r = self.cmd("SENTINEL", "get-master-addr-by-name", MASTER_NAME, timeout=0.5)
        except (OSError, ConnectionError, RedisError):
            return None
        return "%s:%s" % (r[0].decode(), r[1].decode()) if r else None

    def info(self):
        """SENTINEL MASTER as a dict."""
        r = self.cmd("SENTINEL", "MASTER", MASTER_NAME)
        return {r[i].decode(): r[i + 1].decode() for i in range(0, len(r), 2)}

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=20):
        return "\n".join(self.log().splitlines()[-n:])


def role(server):
    try:
        r = server.cmd("ROLE", timeout=0.5)
    except (OSError, ConnectionError, RedisError):
        return None
    return r[0].decode() if isinstance(r[0], bytes) else r[0]


class Cluster:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.master = RedisServer(str(tmp_path / "master"))
        self.replica = None
        self.sentinels = []
        self.servers = [self.master]

    def start(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        self.master.start()
        self.replica = RedisServer(str(self.tmp / "replica"),
                                   extra_args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.servers.append(self.replica)
        self.replica.start()
        self._wait(lambda: b"master_link_status:up" in self.replica.cmd("INFO", "replication"),
                   deadline, "the replica did not sync")
        for i in range(3):
            s = Sentinel(str(self.tmp / ("sentinel%d" % i)), self.master.port)
            self.sentinels.append(s)
            s.start()
        # ready for a failover: each sentinel sees the replica and the two others
        self._wait(lambda: all(s.info().get("num-slaves") == "1"
                               and s.info().get("num-other-sentinels") == "2"
                               for s in self.sentinels), deadline,
                   "the sentinels did not discover the replica and each other")
        return self

    @staticmethod
    def _wait(pred, deadline, what):
        while time.monotonic() < deadline:
            try:
                if pred():
                    return
            except (OSError, ConnectionError, RedisError):
                pass
            time.sleep(0.05)
        raise RuntimeError(what)

    @property
    def sentinel_addresses(self):
        return [s.address for s in self.sentinels]

    def master_addr(self):
        for s in self.sentinels:
            a = s.master_addr()
            if a:
                return a
        return None

    def server(self, addr):
        for r in self.servers:
            if r.address == addr:
                return r
        return None

    def kill_master(self):
        """SIGKILLs the server the sentinels name as master; returns the kill time."""
        victim = self.server(self.master_addr())
        victim.kill()
        return time.monotonic()

    def wait_failover(self, old, timeout):
        """Polls until every sentinel names a master other than `old` and it
        answers ROLE master; returns (its address, time.monotonic())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = {s.master_addr() for s in self.sentinels}
            if len(names) == 1:
                (new,) = names
                if new and new != old and role(self.server(new)) == "master":
                    return new, time.monotonic()
            time.sleep(0.02)
        raise AssertionError("no failover within %.1fs; sentinel logs:\n%s"
                             % (timeout, "\n---\n".join(s.log_tail(15) for s in self.sentinels)))

    def stop(self):
        for s in self.sentinels:
            s.kill()
        for r in self.servers:
            r.resume()
            r.kill()


@pytest.fixture
def sentinel_cluster(tmp_path):
    made = []

    def make():
        c = Cluster(tmp_path)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()
