"""A real DNS server (dnsmasq) for the service-discovery tests.

    from dns_fixture import dns_server      # the fixture, importable

    def test_x(dns_server):
        d = dns_server(hosts={"orders.test": ["127.0.0.2", "127.0.0.3"]},
                       srv=[("_http._tcp.svc.test", "a.test", 9001, 0, 3)])
        d.address                 # "127.0.0.1:PORT" for resolver.servers
        d.set_hosts({...})        # rewrites the addn-hosts file and SIGHUPs dnsmasq
        d.stop(); d.start()       # the server gone / back on the same port

dnsmasq answers only from its hosts file and --srv-host records (--no-resolv,
--no-hosts), with TTL 1 s (--local-ttl=1); names under .test that it does not
know get NXDOMAIN (--local=/test/). Every server is stopped at teardown.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def free_udp_tcp_port():
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq takes both)."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port for dnsmasq")


class DnsServer:
    def __init__(self, workdir, hosts, srv):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.hosts_path = os.path.join(workdir, "hosts")
        self.log_path = os.path.join(workdir, "dnsmasq.log")
        self.port = free_udp_tcp_port()
        self.address = "127.0.0.1:%d" % self.port
        self.srv = srv or []
        self.proc = None
        self._write_hosts(hosts or {})
        self.start()

    def _write_hosts(self, hosts):
        with open(self.hosts_path + ".tmp", "w") as f:
            for name, ips in hosts.items():
                for ip in ips:
                    f.write("%s %s\n" % (ip, name))
        os.rename(self.hosts_path + ".tmp", self.hosts_path)

    def _reads(self):
        try:
            with open(self.log_path) as f:
                return f.read().count("read %s" % self.hosts_path)
        except OSError:
            return 0

    def start(self, timeout=5.0):
        args = [DNSMASQ, "--no-daemon", "--port=%d" % self.port, "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/",
                "--addn-hosts=%s" % self.hosts_path, "--local-ttl=1", "--log-facility=-"]
        if os.geteuid() == 0:
            args.append("--user=root")  # the hosts file lives in the test's private tmp dir
        for name, target, port, prio, weight in self.srv:
            args.append("--srv-host=%s,%s,%d,%d,%d" % (name, target, port, prio, weight))
        before = self._reads()
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log)
        self._wait_read(before, timeout)

    def _wait_read(self, before, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited: %s" % open(self.log_path).read())
            if self._reads() > before:
                return
            time.sleep(0.01)
        raise RuntimeError("dnsmasq did not read its hosts file:\n%s" % open(self.log_path).read())

    def set_hosts(self, hosts):
        """New addresses, served from now on (dnsmasq re-reads on SIGHUP)."""
        self._write_hosts(hosts)
        before = self._reads()
        self.proc.send_signal(signal.SIGHUP)
        self._wait_read(before, 5.0)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self._log.close()
        self.proc = None


@pytest.fixture
def dns_server(tmp_path):
    made = []

    def make(hosts=None, srv=None):
        d = DnsServer(str(tmp_path / ("dns%d" % len(made))), hosts, srv)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
