"""A real redis-server for the integration suite (the idempotency `store: redis`).

    from redis_fixture import RedisServer, redis_server   # the fixture, importable

    def test_x(redis_server):
        r = redis_server()            # started on a free port in the test's tmp dir
        r.address                     # "127.0.0.1:PORT", for the gateway's redis.address
        r.cmd("SET", "k", "v")        # a tiny RESP client (one connection per call)
        r.dbsize(); r.keys("*"); r.flushall(); r.pttl("k"); r.get("k")
        r.kill()                      # SIGKILL: connections die with RST/FIN at once
        r.pause(); r.resume()         # SIGSTOP / SIGCONT: connections stay up, no answers
        r.restart()                   # a fresh, empty server on the SAME port

The server runs with `--save "" --appendonly no` (nothing on disk survives a
restart), `--bind 127.0.0.1`, `--protected-mode no`, its own dir and log file.
Every server the fixture started is killed at teardown.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (-ERR ...) from the server."""


class RedisStartError(Exception):
    pass


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a)
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("redis closed the connection")
        self.buf += data

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            self._fill()

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.exact(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.reply() for _ in range(n)]
        raise ConnectionError("bad RESP reply line %r" % line)


class RedisServer:
    def __init__(self, workdir, port=None, extra_args=()):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.paused = False
        self.starts = 0
        self.log_path = os.path.join(workdir, "redis.log")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def __str__(self):
        return self.address

    # -- process ----------------------------------------------------------
    def _argv(self):
        return [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--protected-mode", "no",
                "--daemonize", "no", "--dir", self.dir, "--logfile", self.log_path,
                "--loglevel", "notice", "--databases", "16"] + self.extra_args

    def start(self, timeout=10.0):
        """Starts the server and waits until PING answers PONG."""
        if self.alive():
            return self
        self.starts += 1
        self.paused = False
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisStartError("redis-server exited with %s on port %d:\n%s"
                                      % (self.proc.returncode, self.port, self.log_tail()))
            try:
                if self.cmd("PING", timeout=0.5) == "PONG":
                    return self
            except (OSError, ConnectionError, RedisError):
                pass
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait(5)
        raise RedisStartError("redis-server did not answer PING on %d within %.1fs:\n%s"
                              % (self.port, timeout, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=5.0):
        """SIGTERM (a clean shutdown, nothing saved) and wait."""
        if not self.alive():
            return
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self):
        """SIGKILL and reap: the kernel closes every client connection at once."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(5)
        self.paused = False

    def pause(self):
        """SIGSTOP: the sockets stay open but nothing is answered (a hung server)."""
        if self.alive() and not self.paused:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.alive() and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def restart(self, timeout=10.0):
        """Kills the server if it runs and starts an empty one on the same port
        (redis sets SO_REUSEADDR, so the old connections' TIME_WAIT is no obstacle;
        a port still held by someone else is retried until timeout)."""
        self.kill()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(timeout=max(0.5, deadline - time.monotonic()))
            except RedisStartError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- client -----------------------------------------------------------
    def cmd(self, *args, timeout=2.0):
        """Sends one command on a fresh connection; returns the decoded reply
        (str for +, int for :, bytes or None for $, list for *). Error replies
        raise RedisError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(_encode(args))
            rep = _Reader(s).reply()
        if isinstance(rep, RedisError):
            raise rep
        return rep

    def ping(self, timeout=0.5):
        try:
            return self.cmd("PING", timeout=timeout) == "PONG"
        except (OSError, ConnectionError, RedisError):
            return False

    def dbsize(self):
        return self.cmd("DBSIZE")

    def keys(self, pattern="*"):
        return sorted(k.decode("latin-1") for k in self.cmd("KEYS", pattern))

    def flushall(self):
        return self.cmd("FLUSHALL")

    def pttl(self, key):
        return self.cmd("PTTL", key)

    def get(self, key):
        return self.cmd("GET", key)

    def client_count(self):
        """Connected clients, this probe's connection excluded."""
        return len(self.cmd("CLIENT", "LIST").splitlines()) - 1


@pytest.fixture
def redis_server(tmp_path):
    """redis_server(**kw) -> a started RedisServer in the test's tmp dir."""
    made = []

    def make(port=None, extra_args=()):
        last = None
        for attempt in range(3):  # a free port can be taken by someone else meanwhile
            r = RedisServer(str(tmp_path / ("redis%d" % len(made))), port, extra_args)
            made.append(r)
            try:
                return r.start()
            except RedisStartError as e:
                last = e
                if port is not None or "in use" not in r.log_tail():
                    break
        raise last

    yield make
    for r in made:
        r.resume()
        r.kill()
