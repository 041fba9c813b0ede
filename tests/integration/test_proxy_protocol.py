"""PROXY protocol v1 and v2 on listeners with `proxy_protocol: true` (DESIGN
section 10.8): the headers are written by the tests over raw sockets, as an L4
load balancer (HAProxy, AWS NLB) writes them; the header's source becomes the
client address (X-Forwarded-For, the access log); connections without a valid
header are refused, slow ones cut at client.header_timeout; the header may
precede a TLS ClientHello in the same segment."""

import json
import socket
import ssl
import struct
import time

import pytest

from conftest import RawClient, build_request, free_port, ms, t, wait_until
from tls_fixture import Certs, client_context

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

CONF = """\
listen:
  - {address: "127.0.0.1:$port", proxy_protocol: true}
  - "127.0.0.1:$plain_port"
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: $access_log
drain_timeout: $drain_timeout
client: {header_timeout: $header_timeout}
$extra
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - {name: all, upstream: u}
"""


def v1(src, dst="127.0.0.1", sport=40000, dport=8080, fam=None):
    fam = fam or ("TCP6" if ":" in src else "TCP4")
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src=None, dst=None, sport=40000, dport=443, command=1, tlvs=b"", family=None):
    if src is None:
        body, fam = b"", 0x00
    elif ":" in src:
        body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst or "::1") +
                struct.pack(">HH", sport, dport))
        fam = 0x21
    else:
        body = (socket.inet_aton(src) + socket.inet_aton(dst or "127.0.0.1") +
                struct.pack(">HH", sport, dport))
        fam = 0x11
    if family is not None:
        fam = family
    body += tlvs
    return SIG + bytes([0x20 | command, fam]) + struct.pack(">H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack(">H", len(value)) + value


def start(gateway, upstream, extra="", header_timeout=1.0, access_log="off", **kw):
    up = upstream()
    gw = gateway(CONF, full=True, up=up, plain_port=free_port(), extra=extra,
                 header_timeout=ms(header_timeout), access_log=access_log, **kw)
    return gw, up


def get(c, path="/", headers=()):
    c.request("GET", path, headers)
    return c.read_final_response()[1]


def assert_refused(c, upstream):
    """The gateway closes without a byte of answer; nothing reached the upstream."""
    got = c.wait_closed(t(5))
    assert got == b"", got[:200]
    assert upstream.requests == []


# -- valid headers ------------------------------------------------------------

def test_v1_source_becomes_client_address(gateway, upstream, tmp_path):
    log = tmp_path / "access.log"
    gw, up = start(gateway, upstream, access_log='"%s"' % log)
    with RawClient(gw.port) as c:
        c.send(v1("203.0.113.7") + build_request("GET", "/one"))
        r = c.read_final_response()[1]
        assert r.status == 200
        r = get(c, "/two")  # keep-alive: the same address for every request
        assert r.status == 200
    assert [q.header_all("X-Forwarded-For") for q in up.requests] == [["203.0.113.7"]] * 2

    def lines():
        return [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    assert wait_until(lambda: len(lines()) == 2, t(5))
    assert [e["client_ip"] for e in lines()] == ["203.0.113.7"] * 2


def test_v1_tcp6_and_unknown(gateway, upstream):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(v1("2001:db8::7", "2001:db8::1"))
        assert get(c).status == 200
    with RawClient(gw.port) as c:
        c.send(b"PROXY UNKNOWN\r\n")
        assert get(c).status == 200
    assert [q.header("X-Forwarded-For") for q in up.requests] == ["2001:db8::7", "127.0.0.1"]


def test_v2_ipv4_ipv6_tlvs_and_local(gateway, upstream):
    gw, up = start(gateway, upstream)
    tlvs = (tlv(0x01, b"h2") + tlv(0x02, b"api.example") + tlv(0x05, b"\x01" * 32) +
            tlv(0x20, b"\x07\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3")) + tlv(0x04, b""))
    cases = [v2("198.51.100.9"), v2("2001:db8::9", tlvs=tlvs), v2(command=0),
             v2(command=0, family=0x11, tlvs=b"\xff" * 7),  # LOCAL: the rest is ignored
             v2(family=0x00)]
    for header in cases:
        with RawClient(gw.port) as c:
            c.send(header + build_request("GET", "/"))
            assert c.read_final_response()[1].status == 200
    assert [q.header("X-Forwarded-For") for q in up.requests] == [
        "198.51.100.9", "2001:db8::9", "127.0.0.1", "127.0.0.1", "127.0.0.1"]


def test_header_split_over_many_writes(gateway, upstream):
    gw, up = start(gateway, upstream)
    for header in (v1("192.0.2.44"), v2("192.0.2.45", tlvs=tlv(0x04, b"xyz"))):
        with RawClient(gw.port) as c:
            for i in range(len(header)):
                c.send(header[i:i + 1])
                time.sleep(0.002)
            assert get(c).status == 200
    assert [q.header("X-Forwarded-For") for q in up.requests] == ["192.0.2.44", "192.0.2.45"]


# -- refusals -----------------------------------------------------------------

@pytest.mark.parametrize("data", [
    build_request("GET", "/"),                                   # no header at all
    b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\n" + build_request("GET", "/"),  # LF alone
    b"PROXY TCP4 203.0.113.7  127.0.0.1 1 2\r\n",                # two spaces
    b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n",                 # family mismatch
    b"PROXY TCP4 203.0.113.7 127.0.0.1 65536 2\r\n",             # port out of range
    b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n",                    # longer than 107 bytes
    v2("192.0.2.1")[:12] + b"\x11\x11\x00\x0c" + bytes(12),      # version 1 in binary form
    v2("192.0.2.1", family=0x12),                                # UDP over IPv4
    v2("192.0.2.1")[:14] + b"\x00\x08" + bytes(8),               # too short for the addresses
    v2("192.0.2.1", tlvs=b"\x01\x00\x09ab"),                     # a TLV past the end
    v2("192.0.2.1", tlvs=tlv(0x03, b"\x00\x00\x00\x01")),        # a wrong CRC32c
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),  # a ClientHello, no header
    b"\x00" * 64,
], ids=["missing", "lf", "spaces", "family", "port", "long", "v2-version", "v2-udp",
        "v2-short", "v2-tlv", "v2-crc", "tls-without", "zeros"])
def test_invalid_or_missing_header_refused(gateway, upstream, data):
    gw, up = start(gateway, upstream)
    with RawClient(gw.port) as c:
        c.send(data)
        assert_refused(c, up)
    assert get_plain(gw).status == 200  # the gateway is fine


def test_truncated_header_then_close(gateway, upstream):
    gw, up = start(gateway, upstream)
    for part in (b"PROXY TCP4 203.0.113.7 127.0", v2("192.0.2.1")[:20]):
        with RawClient(gw.port) as c:
            c.send(part)
            c.sock.shutdown(socket.SHUT_WR)
            assert_refused(c, up)


def test_slow_header_cut_at_header_timeout(gateway, upstream):
    gw, up = start(gateway, upstream, header_timeout=0.4)
    with RawClient(gw.port) as c:
        began = time.monotonic()
        c.send(b"PROXY TCP4 ")
        assert_refused(c, up)
        took = time.monotonic() - began
    assert t(0.3) <= took <= t(3), took
    with RawClient(gw.port) as c:  # nothing at all: the same
        began = time.monotonic()
        assert_refused(c, up)
        assert time.monotonic() - began <= t(3)


def test_plain_listener_beside_is_unaffected(gateway, upstream):
    gw, up = start(gateway, upstream)
    assert get_plain(gw).status == 200
    with RawClient(int(gw.subs["plain_port"])) as c:  # a PROXY line there is a bad request
        c.send(v1("203.0.113.7") + build_request("GET", "/"))
        assert c.read_final_response()[1].status == 400


def get_plain(gw):
    with RawClient(int(gw.subs["plain_port"])) as c:
        return get(c)


def test_trusted_proxies_limit_who_may_send_it(gateway, upstream):
    gw, up = start(gateway, upstream, extra='forwarded: {trusted_proxies: ["10.0.0.0/8"]}')
    with RawClient(gw.port) as c:
        c.send(v1("203.0.113.7") + build_request("GET", "/"))
        assert_refused(c, up)
    gw2, up2 = start(gateway, upstream, extra='forwarded: {trusted_proxies: ["127.0.0.0/8"]}')
    with RawClient(gw2.port) as c:
        c.send(v1("203.0.113.7") + build_request("GET", "/"))
        assert c.read_final_response()[1].status == 200
    assert up2.requests[0].header("X-Forwarded-For") == "203.0.113.7"


# -- in front of TLS -----------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs.make(str(tmp_path_factory.mktemp("certs")))


TLS_CONF = """\
listen:
  - address: "127.0.0.1:$port"
    proxy_protocol: true
    tls:
      certificates: [{cert: "$crt", key: "$key"}]
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: $access_log
drain_timeout: $drain_timeout
upstreams:
  u: {targets: [{address: "$up"}]}
routes:
  - {name: all, upstream: u}
"""


class BioSock:
    """A TLS client over memory BIOs, so the PROXY header and the ClientHello
    leave in one segment (the gateway reads them in one read)."""

    def __init__(self, port, header, ctx):
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=t(10))
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="api.test")
        first = True
        while True:
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = self.out.read()
            if first:
                data, first = header + data, False
            if data:
                self.raw.sendall(data)
            if done:
                return
            got = self.raw.recv(65536)
            if not got:
                raise ConnectionError("closed during the handshake")
            self.inc.write(got)

    def sendall(self, data):
        self.obj.write(data)
        self.raw.sendall(self.out.read())

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                got = self.raw.recv(65536)
                if not got:
                    return b""
                self.inc.write(got)
            except ssl.SSLZeroReturnError:
                return b""

    def setsockopt(self, *a):
        pass

    def close(self):
        self.raw.close()


def bio_client(port, header, ctx):
    c = RawClient.__new__(RawClient)
    c.timeout = t(10)
    c.sock = BioSock(port, header, ctx)
    c.buf, c.eof, c.reset, c.bytes_received = bytearray(), False, False, 0
    return c


def test_header_before_tls_client_hello(gateway, upstream, certs):
    up = upstream()
    gw = gateway(TLS_CONF, full=True, up=up, crt=certs.crt("default"), key=certs.key("default"))
    ctx = client_context(certs)
    for header, want in ((v1("203.0.113.70"), "203.0.113.70"),
                         (v2("2001:db8::70", tlvs=tlv(0x01, b"http/1.1")), "2001:db8::70"),
                         (v2(command=0), "127.0.0.1")):
        c = bio_client(gw.port, header, ctx)
        try:
            r = get(c)
            assert r.status == 200
            assert r.echo_header("X-Forwarded-For") == want
            assert r.echo_header("X-Forwarded-Proto") == "https"
        finally:
            c.close()
    # the header in its own segment, then an ordinary TLS client
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=t(10))
    raw.sendall(v1("203.0.113.71"))
    time.sleep(0.05)
    s = ctx.wrap_socket(raw, server_hostname="api.test")
    s.sendall(build_request("GET", "/"))
    c = RawClient.__new__(RawClient)
    c.timeout, c.sock, c.buf, c.eof, c.reset, c.bytes_received = t(10), s, bytearray(), False, False, 0
    r = c.read_final_response()[1]
    s.close()
    assert r.echo_header("X-Forwarded-For") == "203.0.113.71"
    # a TLS client without the header is refused before any handshake
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=t(10))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        ctx.wrap_socket(raw, server_hostname="api.test")
    raw.close()
