"""Fixtures of the integration suite: the real gateway binary, scripted upstreams
(upstream.py) and a raw-socket client that sends exact bytes and parses exactly
what comes back.

Environment (set by ctest, see tests/CMakeLists.txt):
  MOONGATE_BIN            the binary (default /work/main/build/moongate)
  MOONGATE_TIMEOUT_SCALE  multiply every wait and configured timeout (3 under ASan)
  MOONGATE_SOURCE_DIR     the source tree

Every gateway started by the `gateway` fixture is stopped with SIGTERM at
teardown; the teardown fails the test if the process died on its own, did not
exit 0, or wrote an "[error]" line that the test did not allow (or any
sanitizer report).
"""

import hashlib
import json
import os
import random
import re
import signal
import socket
import string
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import Upstream, UpstreamProtocolError  # noqa: E402

SCALE = float(os.environ.get("MOONGATE_TIMEOUT_SCALE") or "1")
BIN = os.environ.get("MOONGATE_BIN") or "/work/main/build/moongate"
SOURCE_DIR = os.environ.get("MOONGATE_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def _is_asan(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


IS_ASAN = _is_asan(BIN)


def t(seconds):
    """A wait in seconds, scaled for slow (sanitizer) builds."""
    return seconds * SCALE


def ms(seconds):
    """A configured duration (YAML), scaled: ms(0.5) -> '500ms' (x3 under ASan)."""
    return "%dms" % int(round(seconds * SCALE * 1000))


_handed_out = set()


def free_port():
    """A port for a test's listener, below the kernel's ephemeral range
    (net.ipv4.ip_local_port_range, 32768 and up here): a port the kernel
    picked for us from that range could be taken by any outgoing connection
    (the gateway's own, to an upstream) before the gateway binds it, which
    failed a CI run with "address already in use". Never the same port twice
    in one session; the port must be free for TCP and UDP (dnsmasq takes
    both)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(1000):
        port = rng.randrange(12000, 32000)
        if port in _handed_out:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                try:
                    s.bind(("127.0.0.1", port))
                finally:
                    s.close()
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_until(pred, timeout, interval=0.01):
    """Polls pred() until it is truthy or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples a process's VmRSS in a background thread while a transfer runs."""

    def __init__(self, pid, interval=0.02):
        self.pid = pid
        self.interval = interval
        self.max_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.max_kb = max(self.max_kb, rss_kb(self.pid))
                self.samples += 1
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(2)


# ---------------------------------------------------------------------------
# the gateway process
# ---------------------------------------------------------------------------

PREAMBLE = """\
listen: ["127.0.0.1:$port"]
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: $access_log
drain_timeout: $drain_timeout
"""

# The same on a listener that also takes h2c with prior knowledge, no access log.
H2_PREAMBLE = """\
listen:
  - {address: "127.0.0.1:$port", http2: true}
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: off
drain_timeout: $drain_timeout
"""

SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:")
ERROR_LINE_RE = re.compile(r"\[error\]")


class GatewayStartError(Exception):
    pass


class Gateway:
    def __init__(self, workdir, body, subs, allow_errors=(), env=None, access_log="off",
                 drain_timeout="1s", full=False):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.admin_port = free_port()
        self.pid_file = os.path.join(workdir, "moongate.pid")
        self.config_path = os.path.join(workdir, "moongate.yaml")
        self.log_path = os.path.join(workdir, "stderr.log")
        self.allow_errors = [re.compile(p) for p in allow_errors]
        self.env = env
        self.proc = None
        self.stopped_by_test = False
        self.subs = {k: str(v) for k, v in subs.items()}
        self.subs.update(port=self.port, admin_port=self.admin_port, pid_file=self.pid_file,
                         access_log=access_log, drain_timeout=drain_timeout, tmp=workdir)
        text = body if full else PREAMBLE + body
        self.config = string.Template(text).substitute(self.subs)
        with open(self.config_path, "w") as f:
            f.write(self.config)

    @property
    def pid(self):
        return self.proc.pid

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def start(self, timeout=None):
        timeout = timeout or t(10)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf, cwd=self.dir, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GatewayStartError("gateway exited with %s during startup:\n%s"
                                        % (self.proc.returncode, self.log_tail()))
            try:
                s = socket.create_connection(self.address, timeout=0.2)
                s.close()
            except OSError:
                time.sleep(0.01)
                continue
            # the pid file may be written just after the listener opens; `-s` needs it
            wait_until(self._pid_file_written, max(0.0, deadline - time.monotonic()))
            return self
        self.proc.kill()
        raise GatewayStartError("gateway did not accept on %d within %.1fs:\n%s"
                                % (self.port, timeout, self.log_tail()))

    def _pid_file_written(self):
        try:
            with open(self.pid_file) as f:
                return f.read().strip().isdigit()
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopped_by_test = True
        self.proc.send_signal(sig)

    def stop(self, timeout=None):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        self.stopped_by_test = True
        return self._terminate(timeout)

    def _terminate(self, timeout=None):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout or t(8))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode

    def error_lines(self):
        out = []
        for line in self.log().splitlines():
            if ERROR_LINE_RE.search(line) and not any(p.search(line) for p in self.allow_errors):
                out.append(line)
        return out

    def finish(self):
        """Teardown: returns a list of problems (empty when all is well)."""
        problems = []
        if self.proc is None:
            return problems
        died = self.proc.poll() is not None and not self.stopped_by_test
        if died:
            problems.append("gateway died during the test (exit %s)" % self.proc.returncode)
            rc = self.proc.returncode
        else:
            rc = self._terminate()
            if rc is None:
                problems.append("gateway did not exit within %.0fs of SIGTERM" % t(8))
            elif rc != 0 and not self.stopped_by_test:
                problems.append("gateway exited %s after SIGTERM (expected 0)" % rc)
        self._logf.close()
        log = self.log()
        bad = self.error_lines()
        if bad:
            problems.append("unexpected [error] lines in the gateway log:\n  " + "\n  ".join(bad[:20]))
        if SANITIZER_RE.search(log):
            problems.append("sanitizer report in the gateway log")
        if problems:
            problems.append("--- gateway log tail (%s) ---\n%s" % (self.log_path, self.log_tail(60)))
        return problems


@pytest.fixture
def upstream():
    """upstream(handler=None, name=..., idle_close=...) -> a started Upstream."""
    made = []

    def make(handler=None, **kw):
        u = Upstream(handler, **kw)
        u.expect_errors = False
        made.append(u)
        return u

    yield make
    problems = []
    for u in made:
        u.stop()
        errs = [e for e in u.errors if isinstance(e, UpstreamProtocolError)]
        if errs and not u.expect_errors:
            problems.append("upstream %s received unparsable bytes from the gateway: %r"
                            % (u.name, errs[:3]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def gateway(tmp_path, upstream):
    """gateway(yaml_body, allow_errors=(regex, ...), **substitutions) -> a running Gateway.

    yaml_body is appended to a preamble (listen, workers: 1, admin, pid_file,
    access_log: off, drain_timeout: 1s) and `$name` placeholders are replaced by
    the keyword arguments (Upstream objects become their address). full=True
    uses yaml_body as the whole file (the preamble's $port etc. still work)."""
    started = []

    def start(body, allow_errors=(), env=None, access_log="off", drain_timeout=None,
              full=False, **subs):
        drain_timeout = drain_timeout or ms(1)
        last = None
        for attempt in range(3):  # a free port can be taken by someone else meanwhile
            gw = Gateway(str(tmp_path / ("gw%d" % len(started))), body, subs, allow_errors,
                         env, access_log, drain_timeout, full)
            started.append(gw)
            try:
                return gw.start()
            except GatewayStartError as e:
                last = e
                gw.stopped_by_test = True
                if "in use" not in gw.log():
                    break
        raise last

    yield start
    problems = []
    for gw in started:
        problems += gw.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# a raw HTTP/1.1 client
# ---------------------------------------------------------------------------

class IncompleteResponse(Exception):
    """The connection ended before the response was complete."""

    def __init__(self, msg, response=None):
        super().__init__(msg)
        self.response = response


class ResponseParseError(Exception):
    pass


class Response:
    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []
        self.raw_head = b""
        self.body = b""
        self.body_length = 0
        self.body_sha256 = None
        self.framing = None         # "none" | "length" | "chunked" | "close"
        self.trailers = []

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body)

    def echo_header(self, name):
        """For echo responses: the value of header `name` as the upstream received it."""
        name = name.lower()
        vals = [v for k, v in self.json()["headers"] if k.lower() == name]
        return vals[0] if vals else None

    def echo_header_all(self, name):
        name = name.lower()
        return [v for k, v in self.json()["headers"] if k.lower() == name]

    def __repr__(self):
        return "<Response %s %d %s framing=%s len=%d>" % (
            self.version, self.status, self.reason, self.framing, self.body_length)


def build_request(method, path, headers=(), body=b"", host="gw.test", version="HTTP/1.1",
                  content_length=True):
    if isinstance(body, str):
        body = body.encode()
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {k.lower() for k, _ in hs}
    lines = ["%s %s %s" % (method, path, version)]
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    for k, v in hs:
        lines.append("%s: %s" % (k, v))
    if content_length and body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts):
    out = b""
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n\r\n"


class RawClient:
    """One client connection: send exact bytes, parse responses strictly."""

    def __init__(self, port, timeout=None, host="127.0.0.1"):
        self.timeout = timeout if timeout is not None else t(10)
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.bytes_received = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, method, path, headers=(), body=b"", **kw):
        self.send(build_request(method, path, headers, body, **kw))

    def _fill(self, n=1 << 20):
        """Reads more bytes; returns False on EOF. A reset counts as EOF but is remembered."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
            return False
        self.bytes_received += len(data)
        self.buf += data
        return True

    def _recv_direct(self, n):
        """Receives up to n bytes bypassing the buffer (large bodies); b'' on EOF."""
        if self.eof:
            return b""
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
        self.bytes_received += len(data)
        return data

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self, resp, limit=1 << 16):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if len(self.buf) > limit:
                raise ResponseParseError("line too long")
            if not self._fill(16384):
                raise IncompleteResponse("EOF inside a line", resp)

    def read_head(self):
        resp = Response()
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > (1 << 20):
                raise ResponseParseError("response head too large")
            if not self._fill():
                if self.buf:
                    raise IncompleteResponse("EOF inside the response head: %r" % bytes(self.buf[:300]), resp)
                raise IncompleteResponse("connection closed before any response", resp)
        raw = self._take(i + 4)
        resp.raw_head = raw
        lines = raw[:-4].split(b"\r\n")
        m = re.match(rb"^(HTTP/1\.[01]) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise ResponseParseError("bad status line %r" % lines[0])
        resp.version = m.group(1).decode()
        resp.status = int(m.group(2))
        resp.reason = (m.group(3) or b"").decode("latin-1")
        for line in lines[1:]:
            m = re.match(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$", line)
            if not m or b"\r" in line or b"\n" in line:
                raise ResponseParseError("bad header line %r in %r" % (line, raw))
            resp.headers.append((m.group(1).decode("latin-1"), m.group(2).decode("latin-1")))
        return resp

    def read_response(self, method="GET", sink=None, keep_limit=1 << 26):
        """Reads one complete response. `sink(bytes)` receives the body instead of
        keeping it. Raises IncompleteResponse when the connection ends early."""
        resp = self.read_head()
        h = hashlib.sha256()
        keep = bytearray()

        def got(data):
            resp.body_length += len(data)
            h.update(data)
            if sink is not None:
                sink(data)
            elif len(keep) < keep_limit:
                keep.extend(data)

        te = [x.strip().lower() for v in resp.header_all("transfer-encoding") for x in v.split(",")]
        cls = resp.header_all("content-length")
        if method == "HEAD" or 100 <= resp.status < 200 or resp.status in (204, 304):
            resp.framing = "none"
        elif te:
            if te[-1] != "chunked":
                raise ResponseParseError("transfer-encoding without chunked last: %r" % te)
            if cls:
                raise ResponseParseError("response with both Content-Length and Transfer-Encoding")
            resp.framing = "chunked"
            while True:
                line = self._line(resp)
                size_s = line.split(b";", 1)[0].strip()
                if not re.match(rb"^[0-9A-Fa-f]+$", size_s):
                    raise ResponseParseError("bad chunk size %r" % line)
                size = int(size_s, 16)
                if size == 0:
                    break
                left = size
                while left:
                    if not self.buf:
                        data = self._recv_direct(min(left, 1 << 20))
                        if not data:
                            resp.body = bytes(keep)
                            raise IncompleteResponse("EOF inside a chunk", resp)
                        got(data)
                        left -= len(data)
                        continue
                    take = min(left, len(self.buf))
                    got(self._take(take))
                    left -= take
                crlf = self._line(resp)
                if crlf != b"":
                    raise ResponseParseError("chunk data not followed by CRLF")
            while True:
                line = self._line(resp)
                if not line:
                    break
                k, _, v = line.partition(b":")
                resp.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        elif cls:
            if len(set(cls)) != 1 or not cls[0].isdigit():
                raise ResponseParseError("bad Content-Length %r" % cls)
            resp.framing = "length"
            left = int(cls[0])
            while left:
                if not self.buf:
                    data = self._recv_direct(min(left, 1 << 20))
                    if not data:
                        resp.body = bytes(keep)
                        raise IncompleteResponse("EOF after %d of %s body bytes"
                                                 % (resp.body_length, cls[0]), resp)
                    got(data)
                    left -= len(data)
                    continue
                take = min(left, len(self.buf))
                got(self._take(take))
                left -= take
        else:
            resp.framing = "close"
            while True:
                if self.buf:
                    got(self._take(len(self.buf)))
                if not self._fill():
                    break
            if self.reset:
                resp.body = bytes(keep)
                raise IncompleteResponse("connection reset during a close-delimited body", resp)
        resp.body = bytes(keep)
        resp.body_sha256 = h.hexdigest()
        return resp

    def read_final_response(self, method="GET", **kw):
        """Skips 1xx interim responses; returns (interim list, final response)."""
        interim = []
        for _ in range(10):
            r = self.read_response(method, **kw)
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            return interim, r
        raise ResponseParseError("too many interim responses")

    def wait_closed(self, timeout=None):
        """Waits for EOF/RST. Returns the bytes that arrived before it; raises
        AssertionError when the connection is still open after timeout."""
        timeout = timeout if timeout is not None else t(5)
        deadline = time.monotonic() + timeout
        extra = bytes(self.buf)
        self.buf.clear()
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                if self._fill():
                    extra += bytes(self.buf)
                    self.buf.clear()
            except socket.timeout:
                pass
            finally:
                self.sock.settimeout(self.timeout)
        return extra

    def is_open(self, wait=0.2):
        """True when the connection did not end within `wait` seconds (bytes that
        arrive meanwhile stay buffered)."""
        if self.eof:
            return False
        self.sock.settimeout(wait)
        try:
            return self._fill()
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(self.timeout)


def samples(text):
    """{(name, frozenset(labels)): value} from the exposition format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "bad sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


# Under ASan freed memory sits in a quarantine; keep it small so RSS stays meaningful.
ASAN_ENV = {"ASAN_OPTIONS": ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                                 "quarantine_size_mb=16") if x)}


def fetch(port, method="GET", path="/", headers=(), body=b"", read_method=None, **kw):
    """One request on a fresh connection; returns the final Response."""
    with RawClient(port) as c:
        c.request(method, path, headers, body, **kw)
        return c.read_final_response(read_method or method)[1]


def assert_error(resp, name, status):
    """Asserts a gateway error: status, JSON content type and the documented body."""
    assert resp.status == status, "expected %d %s, got %r: %r" % (status, name, resp, resp.body[:300])
    ctype = resp.header("content-type") or ""
    assert ctype.split(";")[0].strip().lower() == "application/json", "content-type %r" % ctype
    doc = resp.json()
    assert doc.get("error") == name, doc
    assert doc.get("status") == status, doc
    assert isinstance(doc.get("request_id"), str) and doc["request_id"], doc
    return doc


def assert_serves(gw, path="/", host="gw.test"):
    """The gateway still proxies a normal request (after something nasty)."""
    assert gw.alive(), "gateway process is gone:\n" + gw.log_tail()
    r = fetch(gw.port, "GET", path, host=host)
    assert r.status == 200, "normal request after the test got %r %r" % (r, r.body[:200])
    return r
