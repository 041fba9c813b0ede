"""Scriptable upstream servers for the integration suite.

An `Upstream` is a real HTTP/1.1 server on a raw loopback socket, one thread
per accepted connection, keep-alive by default. It records every request it
received (raw head bytes, parsed head, body length/sha256 and the body itself
up to a limit) so tests can assert what the gateway actually forwarded, and it
numbers its connections: every response carries `X-Connection: <serial>` so
keep-alive reuse is visible from the client side.

What it answers is chosen by a handler `fn(conn, req)` (per test), or by the
default handler, which dispatches on the request path:

    /stream/N[?chunked=1]     N bytes of a deterministic pattern (see pattern_sha256)
    /stall                    read the request, never answer (until the test ends)
    /stall-body               send a head with Content-Length and a few bytes, then stall
    /reset                    read the request, then close with RST (SO_LINGER 0)
    /reset-mid-body           head + part of the body, then RST
    /close-mid-body[?chunked=1]  head + part of the body, then a clean FIN
    /slow/MS                  sleep MS milliseconds, then echo
    /status/CODE              an empty response with that status (204, 304, ...)
    /ws                       WebSocket upgrade (101), then echo every byte back
    /malformed                a response that is not HTTP
    /hop                      a response full of hop-by-hop headers
    /close                    echo with `Connection: close`, then close
    anything else             JSON echo (see `echo`)

A handler receives the request with its body NOT yet read (so it can send
`100 Continue`, read slowly, or not at all); `conn.read_body(req)` reads it.
Every wait is bounded, and `stop()` wakes every thread.
"""

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
import urllib.parse

MAX_HEAD = 1 << 20
BLOCK = 1 << 16
STALL_MAX = 120.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_FILLER = bytes((i * 7 + 3) & 0xFF for i in range(BLOCK))


def pattern_blocks(n, block=BLOCK):
    """Yields the deterministic test body of n bytes in blocks. Each block starts
    with its index, so a reordered or duplicated block changes the hash."""
    i = 0
    sent = 0
    while sent < n:
        b = struct.pack(">Q", i) + _FILLER[8:block]
        take = min(len(b), n - sent)
        yield b if take == len(b) else b[:take]
        sent += take
        i += 1


_sha_cache = {}


def pattern_sha256(n, block=BLOCK):
    if (n, block) not in _sha_cache:
        h = hashlib.sha256()
        for b in pattern_blocks(n, block):
            h.update(b)
        _sha_cache[(n, block)] = h.hexdigest()
    return _sha_cache[(n, block)]


class UpstreamProtocolError(Exception):
    pass


class Request:
    """One request as the upstream received it."""

    def __init__(self):
        self.conn_serial = 0
        self.index = 0                # order of arrival at this upstream (0-based)
        self.raw_head = b""          # exact bytes of the head, CRLFCRLF included
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []            # [(name, value)] as received, in order
        self.body = b""              # kept up to Upstream.store_body_limit bytes
        self.body_length = 0
        self.body_sha256 = None
        self.body_complete = False
        self.chunked = False
        self.trailers = []
        self.received_at = time.monotonic()

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

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        return urllib.parse.parse_qs(self.target.split("?", 1)[1]) if "?" in self.target else {}

    def connection_tokens(self):
        toks = []
        for v in self.header_all("connection"):
            toks += [t.strip().lower() for t in v.split(",") if t.strip()]
        return toks

    def wants_close(self):
        toks = self.connection_tokens()
        if "close" in toks:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in toks

    def __repr__(self):
        return "<Request #%d conn=%d %s %s>" % (self.index, self.conn_serial, self.method, self.target)


class UpConn:
    """The server side of one accepted connection."""

    def __init__(self, server, sock, serial):
        self.server = server
        self.sock = sock
        self.serial = serial
        self.buf = bytearray()
        self.received = bytearray()   # every byte received, up to server.raw_limit
        self.sent_bytes = 0
        self.closed = False
        self.eof = False

    # -- input --------------------------------------------------------------
    def _fill(self, n=BLOCK):
        data = self.sock.recv(n)
        if not data:
            self.eof = True
            raise EOFError("peer closed")
        if len(self.received) < self.server.raw_limit:
            self.received += data[: self.server.raw_limit - len(self.received)]
        self.buf += data
        return len(data)

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self, limit=MAX_HEAD):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if len(self.buf) > limit:
                raise UpstreamProtocolError("line too long")
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill(min(1 << 22, max(BLOCK, n - len(self.buf))))
        return self._take(n)

    def read_head(self, idle_timeout=None):
        """Returns a Request, or None on a clean EOF/idle timeout between requests."""
        if idle_timeout is not None and not self.buf:
            self.sock.settimeout(idle_timeout)
            try:
                self._fill()
            except (socket.timeout, EOFError, OSError):
                return None
            finally:
                self.sock.settimeout(self.server.conn_timeout)
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > MAX_HEAD:
                raise UpstreamProtocolError("head too large")
            try:
                self._fill()
            except EOFError:
                if self.buf:
                    raise UpstreamProtocolError("EOF inside a request head: %r" % bytes(self.buf[:200]))
                return None
        raw = self._take(i + 4)
        req = Request()
        req.raw_head = raw
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            raise UpstreamProtocolError("bad request line %r" % lines[0])
        req.method, req.target, req.version = parts
        for line in lines[1:]:
            if b":" not in line:
                raise UpstreamProtocolError("bad header line %r" % line)
            k, v = line.split(b":", 1)
            req.headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        te = ",".join(req.header_all("transfer-encoding")).lower()
        req.chunked = "chunked" in te
        return req

    def read_body(self, req, delay_per_block=0.0):
        """Reads the request body (Content-Length or chunked), hashing it and
        keeping up to server.store_body_limit bytes. Returns the body kept."""
        h = hashlib.sha256()
        keep = bytearray()
        limit = self.server.store_body_limit

        def got(data):
            h.update(data)
            req.body_length += len(data)
            if len(keep) < limit:
                keep.extend(data[: limit - len(keep)])
            if delay_per_block:
                self.server.stopped.wait(delay_per_block)

        if req.chunked:
            while True:
                line = self.read_line(4096)
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise UpstreamProtocolError("bad chunk size line %r" % line)
                if size == 0:
                    break
                left = size
                while left:
                    if not self.buf:
                        self._fill(min(1 << 20, max(BLOCK, left)))
                    take = min(left, len(self.buf))
                    got(self._take(take))
                    left -= take
                if self.read_exact(2) != b"\r\n":
                    raise UpstreamProtocolError("chunk not followed by CRLF")
            while True:
                line = self.read_line(MAX_HEAD)
                if not line:
                    break
                k, _, v = line.partition(b":")
                req.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        else:
            cl = req.header("content-length")
            left = int(cl) if cl is not None else 0
            while left:
                if not self.buf:
                    self._fill(min(1 << 20, max(BLOCK, left)))
                take = min(left, len(self.buf))
                got(self._take(take))
                left -= take
        req.body = bytes(keep)
        req.body_sha256 = h.hexdigest()
        req.body_complete = True
        return req.body

    # -- output -------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)
        self.sent_bytes += len(data)

    def send_head(self, status, headers=(), reason=None, version="HTTP/1.1"):
        reason = reason if reason is not None else REASONS.get(status, "Status")
        out = ["%s %d %s\r\n" % (version, status, reason)]
        out.append("X-Connection: %d\r\n" % self.serial)
        if self.server.name:
            out.append("X-Upstream: %s\r\n" % self.server.name)
        for k, v in headers:
            out.append("%s: %s\r\n" % (k, v))
        out.append("\r\n")
        self.send("".join(out).encode("latin-1"))

    def respond(self, status, body=b"", headers=(), reason=None):
        if isinstance(body, str):
            body = body.encode()
        hs = list(headers)
        if not any(k.lower() == "content-length" for k, _ in hs):
            hs.append(("Content-Length", str(len(body))))
        self.send_head(status, hs, reason)
        if body:
            self.send(body)

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.sock.close()

    def reset(self):
        """Closes with RST instead of FIN."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.sock.close()

    def stall(self, seconds=STALL_MAX):
        """Waits until the test ends (stop()) or `seconds` pass."""
        self.server.stopped.wait(seconds)


REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
           204: "No Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


# -- behaviours --------------------------------------------------------------

def maybe_continue(conn, req):
    if (req.header("expect") or "").lower() == "100-continue":
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")


def echo_document(conn, req):
    return {
        "method": req.method,
        "path": req.target,
        "version": req.version,
        "headers": req.headers,
        "body_length": req.body_length,
        "body_sha256": req.body_sha256,
        "body": req.body.decode("latin-1") if req.body_length <= 4096 else None,
        "chunked": req.chunked,
        "trailers": req.trailers,
        "connection": conn.serial,
        "upstream": conn.server.name,
    }


def echo(conn, req, extra_headers=()):
    """JSON echo of what arrived. HEAD gets the same head without the body."""
    maybe_continue(conn, req)
    conn.read_body(req)
    body = json.dumps(echo_document(conn, req)).encode()
    hs = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    hs += list(extra_headers)
    conn.send_head(200, hs)
    if req.method != "HEAD":
        conn.send(body)


def stream(conn, req, n, chunked=False, block=BLOCK, pause_event=None):
    """Sends n pattern bytes; content-length or chunked. Never holds n bytes."""
    conn.read_body(req)
    if chunked:
        conn.send_head(200, [("Content-Type", "application/octet-stream"),
                             ("Transfer-Encoding", "chunked")])
    else:
        conn.send_head(200, [("Content-Type", "application/octet-stream"),
                             ("Content-Length", str(n))])
    if req.method == "HEAD":
        return
    for b in pattern_blocks(n, block):
        if conn.server.stopped.is_set():
            raise EOFError("stopped")
        if chunked:
            conn.send(b"%x\r\n" % len(b) + b + b"\r\n")
        else:
            conn.send(b)
        conn.server.stream_sent += len(b)
    if chunked:
        conn.send(b"0\r\n\r\n")


def websocket(conn, req, greeting=b""):
    """Answers a WebSocket upgrade with 101, sends `greeting` in the same write as
    the head, then echoes every byte back until EOF."""
    key = req.header("sec-websocket-key") or ""
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    head = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\nX-Connection: %d\r\n\r\n" % (accept, conn.serial)).encode()
    conn.send(head + greeting)
    conn.server.ws_upgraded.set()
    pending = bytes(conn.buf)
    conn.buf.clear()
    if pending:
        conn.server.ws_received += pending
        conn.send(pending)
    while True:
        try:
            data = conn.sock.recv(BLOCK)
        except OSError:
            break
        if not data:
            conn.server.ws_closed.set()
            break
        conn.server.ws_received += data[:1 << 20]
        conn.send(data)
    return False


def hop_by_hop(conn, req):
    conn.read_body(req)
    body = b"hop"
    conn.send_head(200, [
        ("Connection", "X-Secret, X-Other-Secret"),
        ("X-Secret", "upstream-secret"),
        ("X-Other-Secret", "upstream-secret-2"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Trailer"),
        ("Upgrade", "h2c"),
        ("X-Kept", "yes"),
        ("Content-Length", str(len(body))),
    ])
    conn.send(body)


def default_handler(conn, req):
    p = req.path
    m = re.search(r"/stream/(\d+)$", p)
    if m:
        return stream(conn, req, int(m.group(1)), chunked="chunked" in req.query)
    if p.endswith("/stall"):
        conn.read_body(req)
        conn.stall()
        return False
    if p.endswith("/stall-body"):
        conn.read_body(req)
        conn.send_head(200, [("Content-Length", "100000")])
        conn.send(b"x" * 1000)
        conn.stall()
        return False
    if p.endswith("/reset"):
        conn.read_body(req)
        conn.reset()
        return False
    if p.endswith("/reset-mid-body"):
        conn.read_body(req)
        conn.send_head(200, [("Content-Length", "100000")])
        conn.send(b"x" * 5000)
        time.sleep(0.05)
        conn.reset()
        return False
    if p.endswith("/close-mid-body"):
        conn.read_body(req)
        if "chunked" in req.query:
            conn.send_head(200, [("Transfer-Encoding", "chunked")])
            conn.send(b"1388\r\n" + b"x" * 5000 + b"\r\n")
        else:
            conn.send_head(200, [("Content-Length", "100000")])
            conn.send(b"x" * 5000)
        time.sleep(0.05)
        conn.close()
        return False
    m = re.search(r"/slow/(\d+)$", p)
    if m:
        conn.server.stopped.wait(int(m.group(1)) / 1000.0)
        return echo(conn, req)
    m = re.search(r"/status/(\d+)$", p)
    if m:
        conn.read_body(req)
        code = int(m.group(1))
        hs = [("ETag", '"v1"')] if code == 304 else []
        if code not in (204, 304) and not 100 <= code < 200:
            hs.append(("Content-Length", "0"))
        conn.send_head(code, hs)
        return None
    if p.endswith("/ws"):
        return websocket(conn, req)
    if p.endswith("/malformed"):
        conn.read_body(req)
        conn.send(b"THIS IS NOT HTTP\r\n\r\n")
        conn.close()
        return False
    if p.endswith("/hop"):
        return hop_by_hop(conn, req)
    if p.endswith("/close"):
        echo(conn, req, extra_headers=[("Connection", "close")])
        return False
    return echo(conn, req)


def raw_reply(data, close=True):
    """A handler that reads the request and answers exactly `data`."""
    def handler(conn, req):
        conn.read_body(req)
        conn.send(data)
        if close:
            time.sleep(0.05)
            conn.close()
            return False
        return None
    return handler


class Upstream:
    """A threaded HTTP/1.1 upstream on 127.0.0.1:<ephemeral port>.

    handler(conn, req) -> None/True to keep the connection, False to close it.
    idle_close: close a keep-alive connection idle for that many seconds.
    """

    def __init__(self, handler=None, name="up", idle_close=None, store_body_limit=1 << 20,
                 raw_limit=1 << 20, conn_timeout=120.0, host="127.0.0.1", port=0):
        self.handler = handler or default_handler
        self.name = name
        self.idle_close = idle_close
        self.store_body_limit = store_body_limit
        self.raw_limit = raw_limit
        self.conn_timeout = conn_timeout
        self.requests = []
        self.conns = []
        self.errors = []               # exceptions raised while serving (protocol errors...)
        self.stream_sent = 0
        self.ws_received = bytearray()
        self.ws_upgraded = threading.Event()
        self.ws_closed = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))  # another loopback address (127.0.0.N): DNS tests
        self.lsock.listen(256)
        self.lsock.settimeout(0.2)
        self.host = host
        self.port = self.lsock.getsockname()[1]
        self.address = "%s:%d" % (host, self.port)
        self.threads = []
        t = threading.Thread(target=self._accept_loop, name="upstream-accept-%s" % name, daemon=True)
        t.start()
        self.threads.append(t)

    def __str__(self):
        return self.address

    @property
    def connection_count(self):
        with self.lock:
            return len(self.conns)

    def _accept_loop(self):
        while not self.stopped.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(self.conn_timeout)
            with self.cond:
                conn = UpConn(self, s, len(self.conns) + 1)
                self.conns.append(conn)
                self.cond.notify_all()
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                 name="upstream-%s-%d" % (self.name, conn.serial))
            t.start()
            self.threads.append(t)

    def _serve(self, conn):
        try:
            while not self.stopped.is_set():
                req = conn.read_head(idle_timeout=self.idle_close)
                if req is None:
                    break
                req.conn_serial = conn.serial
                with self.cond:
                    req.index = len(self.requests)
                    self.requests.append(req)
                    self.cond.notify_all()
                keep = self.handler(conn, req)
                with self.cond:
                    self.cond.notify_all()
                if keep is False or conn.closed or req.wants_close() or not req.body_complete:
                    break
        except (EOFError, ConnectionError, socket.timeout, OSError) as e:
            if not self.stopped.is_set() and not isinstance(e, (EOFError, ConnectionError)):
                self.errors.append(e)
        except Exception as e:  # protocol errors and handler bugs are reported
            self.errors.append(e)
        finally:
            conn.close()
            with self.cond:
                self.cond.notify_all()

    def wait_requests(self, n, timeout):
        """Waits until at least n requests arrived; returns the list."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.requests)

    def wait_connections(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.conns)

    def stop(self):
        self.stopped.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
        except OSError:
            pass
        for t in self.threads[:1]:
            t.join(1.0)
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(2.0)
