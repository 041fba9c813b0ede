"""A recording backend for the request-smuggling tests (test_smuggling.py).

A plain threaded TCP server on 127.0.0.1. For every accepted connection it keeps
every raw byte received, and it parses what arrives STRICTLY and independently of
the gateway (and of upstream.py's lenient parser):

  - CRLF line ends only: any bare CR or bare LF is a protocol error;
  - request line `token SP visible-target SP HTTP/1.x`, no leading empty lines;
  - field lines `token ":" OWS value OWS`, values of VCHAR/obs-text/SP/HTAB only,
    no obs-fold, no whitespace before the colon, no empty name;
  - exactly one Host;
  - framing: at most one Content-Length (digits only) or exactly one
    `Transfer-Encoding: chunked`, never both;
  - chunked bodies per RFC 9112 section 7.1: 1-16 hex digits, chunk-ext grammar
    (extensions and trailers are recorded so a test can require none), data
    followed by exactly CRLF, trailer field lines as strict as the head's.

Each request parsed cleanly is recorded and answered with
    HTTP/1.1 200 OK / X-Seen: <method> <target> <sha256 of body> / body "seen <n>"
(n counts requests over the whole server, from 1). Bytes that cannot be parsed
as a clean request are recorded as a protocol error on the connection, which is
then closed; bytes left over when the peer closes mid-request are recorded as
`incomplete`. A `responder(conn, req)` may return other bytes to send instead
(scripted responses), or None for the default answer.
"""

import hashlib
import re
import socket
import threading
import time

TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_LINE_RE = re.compile(rb"^(" + TOKEN + rb") ([\x21-\x7e]+) (HTTP/1\.[01])$")
FIELD_RE = re.compile(rb"^(" + TOKEN + rb"):[ \t]*(.*?)[ \t]*$", re.S)
VALUE_RE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_EXT_RE = re.compile(rb"^(?:[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb"|"
                          + QUOTED + rb"))?)*$")
CHUNK_SIZE_RE = re.compile(rb"^([0-9A-Fa-f]{1,16})(.*)$", re.S)
MAX_LINE = 1 << 16
MAX_HEAD = 1 << 20


class NeedMore(Exception):
    pass


class ProtocolError(Exception):
    pass


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class RecordedRequest:
    def __init__(self):
        self.conn_serial = 0
        self.index = 0
        self.raw = b""            # every byte of this request (head and framed body)
        self.raw_head = b""
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []         # [(name, value)] as bytes decoded latin-1
        self.framing = "none"     # none | length | chunked
        self.body = b""
        self.chunk_exts = []      # extensions seen on chunk-size lines
        self.trailers = []

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header(self, name):
        v = self.header_all(name)
        return v[0] if v else None

    @property
    def seen(self):
        return "%s %s %s" % (self.method, self.target, sha256(self.body))

    def __repr__(self):
        return "<Req #%d conn=%d %s %s %s body=%r exts=%r trailers=%r>" % (
            self.index, self.conn_serial, self.method, self.target, self.framing, self.body[:80],
            self.chunk_exts, self.trailers)


def _line(buf, pos, limit=MAX_LINE):
    """One CRLF-terminated line from buf[pos:]: (line, next pos)."""
    j = buf.find(b"\n", pos)
    if j < 0:
        rest = buf[pos:]
        k = rest.find(b"\r")
        if k >= 0 and k != len(rest) - 1:
            raise ProtocolError("bare CR in %r" % bytes(rest[:200]))
        if len(rest) > limit:
            raise ProtocolError("line over %d bytes" % limit)
        raise NeedMore()
    if j == pos or buf[j - 1] != 0x0D:
        raise ProtocolError("bare LF in %r" % bytes(buf[pos:j + 1][-200:]))
    line = bytes(buf[pos:j - 1])
    if b"\r" in line:
        raise ProtocolError("bare CR in %r" % line[:200])
    if len(line) > limit:
        raise ProtocolError("line over %d bytes" % limit)
    return line, j + 1


def _field(line):
    if line[:1] in (b" ", b"\t"):
        raise ProtocolError("obs-fold %r" % line[:200])
    m = FIELD_RE.match(line)
    if not m:
        raise ProtocolError("bad field line %r" % line[:200])
    if not VALUE_RE.match(m.group(2)):
        raise ProtocolError("control character in field value %r" % line[:200])
    return m.group(1).decode("latin-1"), m.group(2).decode("latin-1")


def parse_request(buf):
    """Parses one request from the start of buf. Returns (RecordedRequest, bytes
    used); raises NeedMore or ProtocolError."""
    req = RecordedRequest()
    line, pos = _line(buf, 0)
    m = REQUEST_LINE_RE.match(line)
    if not m:
        raise ProtocolError("bad request line %r" % line[:200])
    req.method, req.target, req.version = (g.decode("latin-1") for g in m.groups())
    while True:
        line, pos = _line(buf, pos)
        if pos > MAX_HEAD:
            raise ProtocolError("head too large")
        if line == b"":
            break
        req.headers.append(_field(line))
    req.raw_head = bytes(buf[:pos])
    if len(req.header_all("host")) != 1:
        raise ProtocolError("%d Host fields" % len(req.header_all("host")))
    cls = req.header_all("content-length")
    tes = req.header_all("transfer-encoding")
    if cls and tes:
        raise ProtocolError("both Content-Length %r and Transfer-Encoding %r" % (cls, tes))
    if len(cls) > 1:
        raise ProtocolError("several Content-Length fields %r" % cls)
    if len(tes) > 1 or (tes and tes[0].lower() != "chunked"):
        raise ProtocolError("Transfer-Encoding other than one 'chunked': %r" % tes)
    if cls:
        if not re.match(r"^[0-9]+$", cls[0]):
            raise ProtocolError("bad Content-Length %r" % cls[0])
        n = int(cls[0])
        req.framing = "length"
        if len(buf) < pos + n:
            raise NeedMore()
        req.body = bytes(buf[pos:pos + n])
        pos += n
    elif tes:
        req.framing = "chunked"
        body = bytearray()
        while True:
            line, pos = _line(buf, pos)
            m = CHUNK_SIZE_RE.match(line)
            if not m:
                raise ProtocolError("bad chunk-size line %r" % line[:200])
            ext = m.group(2)
            if ext:
                if not CHUNK_EXT_RE.match(ext):
                    raise ProtocolError("bad chunk extension in %r" % line[:200])
                req.chunk_exts.append(ext.decode("latin-1"))
            size = int(m.group(1), 16)
            if size == 0:
                break
            if len(buf) < pos + size + 2:
                if len(buf) > pos + size and buf[pos + size] != 0x0D:
                    raise ProtocolError("chunk data not followed by CRLF")
                raise NeedMore()
            body += buf[pos:pos + size]
            pos += size
            if buf[pos:pos + 2] != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF: %r" % bytes(buf[pos:pos + 20]))
            pos += 2
        while True:
            line, pos = _line(buf, pos)
            if line == b"":
                break
            req.trailers.append(_field(line))
        req.body = bytes(body)
    req.raw = bytes(buf[:pos])
    return req, pos


class RecConn:
    def __init__(self, server, sock, serial):
        self.server = server
        self.sock = sock
        self.serial = serial
        self.raw = bytearray()
        self.buf = bytearray()
        self.requests = []
        self.error = None          # (message, the bytes that could not be parsed)
        self.incomplete = b""      # bytes of a request cut short by the peer's close
        self.closed = False

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def __repr__(self):
        return "<RecConn %d raw=%r error=%r incomplete=%r>" % (
            self.serial, bytes(self.raw[:600]), self.error, self.incomplete[:200])


def default_response(req, n):
    body = b"seen %d" % n
    head = ("HTTP/1.1 200 OK\r\nX-Seen: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            % (req.seen, len(body))).encode("latin-1")
    close = any(t.strip().lower() == "close" for v in req.header_all("connection")
                for t in v.split(","))
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + (b"" if req.method == "HEAD" else body), close


class RecordingUpstream:
    def __init__(self, responder=None):
        self.responder = responder
        self.conns = []
        self.requests = []
        self.stopped = threading.Event()
        self.cond = threading.Condition()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self.threads[0].start()

    def __str__(self):
        return self.address

    def _accept_loop(self):
        while not self.stopped.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(60)
            with self.cond:
                conn = RecConn(self, s, len(self.conns) + 1)
                self.conns.append(conn)
                self.cond.notify_all()
            th = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            th.start()
            self.threads.append(th)

    def _serve(self, conn):
        try:
            while not self.stopped.is_set():
                try:
                    data = conn.sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    if conn.buf:
                        conn.incomplete = bytes(conn.buf)
                    return
                with self.cond:
                    conn.raw += data
                    conn.buf += data
                while conn.buf:
                    try:
                        req, used = parse_request(conn.buf)
                    except NeedMore:
                        break
                    except ProtocolError as e:
                        with self.cond:
                            conn.error = (str(e), bytes(conn.buf[:2000]))
                        return
                    del conn.buf[:used]
                    with self.cond:
                        req.conn_serial = conn.serial
                        req.index = len(self.requests)
                        self.requests.append(req)
                        conn.requests.append(req)
                        self.cond.notify_all()
                    custom = self.responder(conn, req) if self.responder else None
                    if custom is not None:
                        conn.send(custom)
                        continue
                    out, close = default_response(req, req.index + 1)
                    conn.send(out)
                    if close:
                        return
        finally:
            conn.close()
            with self.cond:
                self.cond.notify_all()

    # -- for the tests -----------------------------------------------------------
    def snapshot(self):
        with self.cond:
            return list(self.requests), list(self.conns)

    def errors(self):
        with self.cond:
            return [(c.serial, c.error) for c in self.conns if c.error]

    def wait_requests(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.requests)

    def wait_quiet(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def describe(self):
        with self.cond:
            lines = []
            for c in self.conns:
                lines.append("  backend conn %d: raw=%r" % (c.serial, bytes(c.raw[:1500])))
                if c.error:
                    lines.append("    PROTOCOL ERROR: %s; unparsed bytes %r" % (c.error[0], c.error[1][:400]))
                if c.incomplete:
                    lines.append("    incomplete at EOF: %r" % c.incomplete[:400])
                for r in c.requests:
                    lines.append("    %r" % r)
            return "\n".join(lines) or "  (backend received no connection)"

    def stop(self):
        self.stopped.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.threads[0].join(1.0)
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.cond:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for th in self.threads[1:]:
            th.join(2.0)
