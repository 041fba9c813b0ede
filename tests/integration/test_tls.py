"""TLS (DESIGN section 10.1): termination on listeners (SNI by SAN, protocols,
ALPN, resumption, mTLS, X-Forwarded-Proto, streaming, hostile handshakes,
reload, -t) and TLS to upstreams (SNI, verification, pooling), with real
clients (curl, openssl s_client, Python ssl) and certificates generated at test
time by the openssl CLI (tls_fixture.py)."""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from conftest import (ASAN_ENV, BIN, IS_ASAN, IncompleteResponse, RssSampler, assert_error,
                      build_request, fetch, free_port, ms, rss_kb, samples, t, wait_until)
from tls_fixture import (Certs, TlsClient, TlsUpstream, client_context, client_hello, peer_cert,
                         s_client)
from upstream import pattern_sha256

MB = 1 << 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs.make(str(tmp_path_factory.mktemp("certs")))


def tls_conf(certs, names=("default", "ec", "other"), extra="", plain=False, upstreams=None,
             route_upstream="u"):
    """A whole config: a TLS listener on $port (first: the readiness probe uses
    it), optionally a plain one on $plain_port."""
    cert_lines = "".join('        - {cert: "%s", key: "%s"}\n' % (certs.crt(n), certs.key(n))
                         for n in names)
    listen = ("listen:\n"
              "  - address: \"127.0.0.1:$port\"\n"
              "    tls:\n"
              "      certificates:\n" + cert_lines +
              "".join("      %s\n" % line for line in extra.splitlines() if line))
    if plain:
        listen += "  - \"127.0.0.1:$plain_port\"\n"
    ups = upstreams or "  u: {targets: [{address: \"$up\"}]}\n"
    return (listen +
            "workers: 1\n"
            "admin: {listen: \"127.0.0.1:$admin_port\"}\n"
            "pid_file: \"$pid_file\"\n"
            "access_log: $access_log\n"
            "drain_timeout: $drain_timeout\n"
            "client: {max_body_size: 64m}\n"
            "upstreams:\n" + ups +
            "routes:\n"
            "  - name: all\n"
            "    upstream: %s\n" % route_upstream)


def start_tls(gateway, upstream, certs, **kw):
    up = upstream()
    plain = kw.pop("plain", False)
    subs = {"plain_port": free_port()} if plain else {}
    env = kw.pop("env", None)
    allow = kw.pop("allow_errors", ())
    gw = gateway(tls_conf(certs, plain=plain, **kw), full=True, up=up, env=env,
                 allow_errors=allow, **subs)
    return gw, up


def tls_fetch(gw, certs, method="GET", path="/", sni="api.test", body=b"", headers=(), **kw):
    with TlsClient(gw.port, client_context(certs, **kw), server_hostname=sni) as c:
        c.request(method, path, headers, body, host=sni or "gw.test")
        return c.read_response(method)


def curl(port, url_host, path, certs, extra=()):
    """curl with --cacert and --resolve (so SNI and the name check use url_host);
    returns (exit code, status, body)."""
    p = subprocess.run(["curl", "-sS", "--max-time", str(int(t(10))), "--cacert", certs.ca,
                        "--resolve", "%s:%d:127.0.0.1" % (url_host, port),
                        "-o", "-", "-w", "\n%{http_code}"] + list(extra) +
                       ["https://%s:%d%s" % (url_host, port, path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=t(20))
    out, _, code = p.stdout.rpartition(b"\n")
    return p.returncode, int(code or 0), out, p.stderr.decode("latin-1")


def assert_healthy(gw, certs):
    """A normal TLS request works, the process is alive, no [error] line."""
    assert gw.alive(), "gateway process is gone:\n" + gw.log_tail()
    r = tls_fetch(gw, certs, path="/after")
    assert r.status == 200 and r.json()["path"] == "/after", r
    assert gw.error_lines() == [], gw.log_tail()


# ---------------------------------------------------------------------------
# certificates by SNI
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("host,cn", [("api.test", "default.test"), ("ec.test", "ec.test"),
                                     ("foo.wild.test", "ec.test"), ("other.test", "other.test")])
def test_curl_gets_200_with_the_right_certificate(gateway, upstream, certs, host, cn):
    gw, up = start_tls(gateway, upstream, certs)
    rc, status, body, err = curl(gw.port, host, "/hello?x=1", certs)
    assert rc == 0, "curl failed (certificate for %s not accepted?): %s" % (host, err)
    assert status == 200
    doc = json.loads(body)
    assert doc["path"] == "/hello?x=1"
    # curl verified the name; the subject is checked by Python ssl
    assert peer_cert(gw.port, certs, host)[0] == cn


@pytest.mark.parametrize("sni,cn,sans", [
    (None, "default.test", ["api.test", "default.test"]),               # no SNI: the default
    ("unknown.test", "default.test", ["api.test", "default.test"]),     # no match: the default
    ("api.test", "default.test", ["api.test", "default.test"]),
    ("ec.test", "ec.test", ["*.wild.test", "ec.test"]),
    ("EC.Test", "ec.test", ["*.wild.test", "ec.test"]),                 # case-insensitive
    ("a.wild.test", "ec.test", ["*.wild.test", "ec.test"]),             # wildcard
    ("a.b.wild.test", "default.test", ["api.test", "default.test"]),    # one label only
    ("wild.test", "default.test", ["api.test", "default.test"]),        # not the bare domain
    ("exact.wild.test", "other.test", ["exact.wild.test", "other.test"]),  # exact beats wildcard
    ("other.test", "other.test", ["exact.wild.test", "other.test"]),
])
def test_sni_selects_certificate_by_san(gateway, upstream, certs, sni, cn, sans):
    gw, up = start_tls(gateway, upstream, certs)
    for version in ("1.2", "1.3"):
        got = peer_cert(gw.port, certs, sni, version=version)
        assert got == (cn, sans, "TLSv" + version), (sni, version, got)


def test_ecdsa_certificate_with_openssl_s_client(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs)
    rc, out = s_client(gw.port, ["-servername", "a.wild.test", "-CAfile", certs.ca,
                                 "-verify_return_error", "-verify_hostname", "a.wild.test",
                                 "-tls1_2"], b"")
    assert rc == 0, out
    assert re.search(r"subject=CN ?= ?ec\.test", out), out
    assert "Verify return code: 0 (ok)" in out, out
    assert re.search(r"Cipher is ECDHE-ECDSA-", out), out
    assert "Peer signature type: ECDSA" in out, out


# ---------------------------------------------------------------------------
# protocols, ALPN
# ---------------------------------------------------------------------------

REQ_CLOSE = b"GET /proto HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_s_client_modern_protocols(gateway, upstream, certs, flag, version):
    gw, up = start_tls(gateway, upstream, certs)
    rc, out = s_client(gw.port, [flag, "-servername", "api.test", "-CAfile", certs.ca,
                                 "-verify_return_error", "-ign_eof", "-alpn", "http/1.1"],
                       REQ_CLOSE)
    assert rc == 0, out
    assert re.search(r"Protocol *: %s" % re.escape(version), out), out
    assert "ALPN protocol: http/1.1" in out, out
    assert "HTTP/1.1 200 OK" in out, out
    assert '"path": "/proto"' in out, out


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_s_client_old_protocols_refused(gateway, upstream, certs, flag):
    gw, up = start_tls(gateway, upstream, certs)
    # SECLEVEL=0 lets this OpenSSL client offer TLS 1.0/1.1 at all
    rc, out = s_client(gw.port, [flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-servername",
                                 "api.test"], REQ_CLOSE)
    if "no protocols available" in out or "unsupported protocol" in out.lower() and \
            "alert" not in out:
        pytest.skip("the local OpenSSL client refuses to offer %s" % flag)
    assert rc != 0, out
    assert "HTTP/1.1" not in out, out
    assert re.search(r"alert protocol version|wrong version number|unsupported protocol", out), out
    assert up.requests == []
    assert_healthy(gw, certs)


def test_protocols_option_limits_versions(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs, extra="protocols: [TLSv1.3]")
    assert peer_cert(gw.port, certs, "api.test", version="1.3")[2] == "TLSv1.3"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        peer_cert(gw.port, certs, "api.test", version="1.2")
    assert_healthy(gw, certs)


@pytest.mark.parametrize("offer,picked", [(["http/1.1"], "http/1.1"),
                                          (["h2", "http/1.1"], "http/1.1"),
                                          (["http/1.0"], "http/1.0"),
                                          (None, None)])
def test_alpn(gateway, upstream, certs, offer, picked):
    gw, up = start_tls(gateway, upstream, certs)
    with TlsClient(gw.port, client_context(certs, alpn=offer)) as c:
        assert c.sock.selected_alpn_protocol() == picked
        c.request("GET", "/alpn", host="api.test")
        assert c.read_response().status == 200


def test_alpn_h2_only_refused(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs)
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        TlsClient(gw.port, client_context(certs, alpn=["h2"]))
    assert_healthy(gw, certs)


# ---------------------------------------------------------------------------
# resumption
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["tickets", "cache"])
@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_session_resumption(gateway, upstream, certs, tmp_path, mode, flag):
    extra = ("session_tickets: true\nsession_cache: 0" if mode == "tickets"
             else "session_tickets: false\nsession_cache: 1m")
    gw, up = start_tls(gateway, upstream, certs, extra=extra)
    sess = str(tmp_path / "sess.pem")
    common = [flag, "-servername", "api.test", "-CAfile", certs.ca, "-ign_eof"]
    ticket_arg = [] if mode == "tickets" else ["-no_ticket"]
    rc, out = s_client(gw.port, common + ticket_arg + ["-sess_out", sess], REQ_CLOSE)
    assert rc == 0 and "HTTP/1.1 200 OK" in out, out
    assert re.search(r"^New, TLSv1\.[23]", out, re.M), out
    if mode == "tickets":
        assert "TLS session ticket lifetime hint" in out, out
    assert os.path.getsize(sess) > 0
    rc, out = s_client(gw.port, common + ticket_arg + ["-sess_in", sess], REQ_CLOSE)
    assert rc == 0 and "HTTP/1.1 200 OK" in out, out
    assert re.search(r"^Reused, TLSv1\.%s" % flag[-1], out, re.M), out


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_ticket_resumes_across_reload(gateway, upstream, certs, tmp_path, flag):
    """Ticket keys are process-wide and the session id context hashes the
    certificates: a ticket from before a reload that kept them resumes after."""
    gw, up = start_tls(gateway, upstream, certs, extra="session_cache: 0")
    sess = str(tmp_path / "sess.pem")
    common = [flag, "-servername", "api.test", "-CAfile", certs.ca, "-ign_eof"]
    rc, out = s_client(gw.port, common + ["-sess_out", sess], REQ_CLOSE)
    assert rc == 0 and re.search(r"^New, TLSv1", out, re.M), out
    with open(gw.config_path, "w") as f:
        f.write(gw.config.replace("  - name: all\n", "  - name: extra\n    match: {paths: [/extra]}\n"
                                  "    upstream: u\n  - name: all\n"))
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reloaded" in gw.log(), t(5), 0.05), gw.log_tail()
    rc, out = s_client(gw.port, common + ["-sess_in", sess], REQ_CLOSE)
    assert rc == 0 and "HTTP/1.1 200 OK" in out, out
    assert re.search(r"^Reused, TLSv1\.%s" % flag[-1], out, re.M), out


def test_no_resumption_when_both_off(gateway, upstream, certs, tmp_path):
    gw, up = start_tls(gateway, upstream, certs, extra="session_tickets: false\nsession_cache: 0")
    sess = str(tmp_path / "sess.pem")
    common = ["-tls1_2", "-servername", "api.test", "-CAfile", certs.ca, "-ign_eof"]
    rc, out = s_client(gw.port, common + ["-sess_out", sess], REQ_CLOSE)
    assert rc == 0 and "HTTP/1.1 200 OK" in out, out
    assert "TLS session ticket" not in out, out
    m = re.search(r"Session-ID: *(\S*)", out)
    assert m and m.group(1) == "", out  # no session id: nothing to resume
    if os.path.exists(sess):  # s_client writes only resumable sessions
        rc, out = s_client(gw.port, common + ["-sess_in", sess], REQ_CLOSE)
        assert rc == 0 and "HTTP/1.1 200 OK" in out, out
        assert re.search(r"^New, TLSv1\.2", out, re.M), out


# ---------------------------------------------------------------------------
# mTLS
# ---------------------------------------------------------------------------

def mtls_attempt(gw, certs, version, cert):
    """Handshake and one request; returns the status, or the exception."""
    try:
        with TlsClient(gw.port, client_context(certs, cert=cert, version=version)) as c:
            c.request("GET", "/mtls", host="api.test")
            return c.read_response().status
    except (ssl.SSLError, ConnectionResetError, IncompleteResponse) as e:
        return e


def assert_refused(r, reason_re):
    assert isinstance(r, Exception), "served: %r" % r
    if isinstance(r, ssl.SSLError):  # else a reset or EOF raced the alert
        assert re.search(reason_re, str(r)), r


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_mtls(gateway, upstream, certs, version):
    gw, up = start_tls(gateway, upstream, certs, extra='client_ca: "%s"' % certs.ca)
    # without a certificate
    assert_refused(mtls_attempt(gw, certs, version, None),
                   "HANDSHAKE_FAILURE|CERTIFICATE_REQUIRED")
    # the rogue (self-signed) one
    assert_refused(mtls_attempt(gw, certs, version, certs.both("rogue")), "UNKNOWN_CA")
    assert up.requests == [], "a request without a valid client certificate reached the upstream"
    # the CA-signed one
    assert mtls_attempt(gw, certs, version, certs.both("client")) == 200
    assert [rq.path for rq in up.requests] == ["/mtls"]
    assert gw.alive() and gw.error_lines() == [], gw.log_tail()


def test_mtls_advertises_the_client_ca(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs, extra='client_ca: "%s"' % certs.ca)
    rc, out = s_client(gw.port, ["-tls1_2", "-servername", "api.test", "-cert", certs.crt("client"),
                                 "-key", certs.key("client"), "-ign_eof"], REQ_CLOSE)
    assert rc == 0 and "HTTP/1.1 200 OK" in out, out
    m = re.search(r"Acceptable client certificate CA names\n(.*)\n", out)
    assert m and re.search(r"CN ?= ?Moongate Test CA", m.group(1)), out


# ---------------------------------------------------------------------------
# X-Forwarded-Proto
# ---------------------------------------------------------------------------

def test_x_forwarded_proto(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs, plain=True)
    plain_port = int(gw.subs["plain_port"])
    spoof = [("X-Forwarded-Proto", "ftp")]
    r = tls_fetch(gw, certs, path="/xfp", headers=spoof)
    assert r.status == 200 and r.echo_header_all("x-forwarded-proto") == ["https"], r.body
    r = fetch(plain_port, "GET", "/xfp", headers=spoof)
    assert r.status == 200 and r.echo_header_all("x-forwarded-proto") == ["http"], r.body


# ---------------------------------------------------------------------------
# keep-alive, pipelining, streaming
# ---------------------------------------------------------------------------

def test_keepalive_and_pipelining(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs)
    with TlsClient(gw.port, client_context(certs)) as c:
        for i in range(3):  # keep-alive, one at a time
            c.request("GET", "/ka/%d" % i, host="api.test")
            r = c.read_response()
            assert r.status == 200 and r.json()["path"] == "/ka/%d" % i
        # pipelined: five requests (one with a body) in one send
        batch = b"".join(build_request("GET", "/pipe/%d" % i, host="api.test") for i in range(4))
        batch += build_request("POST", "/pipe/4", body=b"z" * 3000, host="api.test")
        c.send(batch)
        for i in range(5):
            r = c.read_response()
            assert r.status == 200, r
            doc = r.json()
            assert doc["path"] == "/pipe/%d" % i, doc
        assert doc["body_length"] == 3000 and doc["body"] == "z" * 3000
        # a request dribbled in tiny TLS records
        req = build_request("GET", "/dribble", host="api.test")
        for i in range(0, len(req), 7):
            c.send(req[i:i + 7])
        r = c.read_response()
        assert r.status == 200 and r.json()["path"] == "/dribble"
        assert c.is_open(0.2)
    assert len(up.requests) == 9


def test_deep_pipelining_beyond_the_read_buffer(gateway, upstream, certs):
    """120 pipelined requests (~100 KB, more than a connection's 32 KB read
    buffer) in one send: the plaintext OpenSSL holds while the gateway is not
    reading must still be delivered once it reads again."""
    gw, up = start_tls(gateway, upstream, certs)
    pad = [("X-Pad", "p" * 800)]
    n = 120
    with TlsClient(gw.port, client_context(certs), timeout=t(15)) as c:
        c.send(b"".join(build_request("GET", "/deep/%d" % i, pad, host="api.test")
                        for i in range(n)))
        paths = [c.read_response().json()["path"] for _ in range(n)]
    assert paths == ["/deep/%d" % i for i in range(n)]


def test_client_close_notify_closes_the_connection(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs)
    c = TlsClient(gw.port, client_context(certs))
    try:
        c.request("GET", "/bye", host="api.test")
        assert c.read_response().status == 200
        c.sock.settimeout(t(3))
        raw = c.sock.unwrap()  # sends close_notify, waits for the gateway's
        assert raw.recv(100) == b""  # and then the TCP connection ends
        raw.close()
    finally:
        c.close()
    assert_healthy(gw, certs)


@pytest.mark.parametrize("chunked", [False, True])
def test_large_download(gateway, upstream, certs, chunked):
    gw, up = start_tls(gateway, upstream, certs)
    n = 10 * MB
    with TlsClient(gw.port, client_context(certs), timeout=t(20)) as c:
        c.request("GET", "/stream/%d%s" % (n, "?chunked=1" if chunked else ""), host="api.test")
        r = c.read_response(sink=lambda b: None)
        assert r.status == 200 and r.framing == ("chunked" if chunked else "length")
        assert r.body_length == n and r.body_sha256 == pattern_sha256(n)
        c.request("GET", "/after-stream", host="api.test")  # the connection is still good
        assert c.read_response().json()["path"] == "/after-stream"


@pytest.mark.parametrize("chunked", [False, True])
def test_large_upload(gateway, upstream, certs, chunked):
    gw, up = start_tls(gateway, upstream, certs)
    n = 2 * MB
    body = os.urandom(n)
    with TlsClient(gw.port, client_context(certs), timeout=t(20)) as c:
        if chunked:
            head = build_request("PUT", "/up", [("Transfer-Encoding", "chunked")], host="api.test")
            c.send(head)
            for i in range(0, n, 100000):
                part = body[i:i + 100000]
                c.send(b"%x\r\n" % len(part) + part + b"\r\n")
            c.send(b"0\r\n\r\n")
        else:
            c.request("PUT", "/up", body=body, host="api.test")
        r = c.read_response()
    assert r.status == 200, r
    doc = r.json()
    assert doc["body_length"] == n and doc["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_slow_reader_backpressure(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs, env=ASAN_ENV if IS_ASAN else None)
    assert tls_fetch(gw, certs, path="/warmup").status == 200
    base = rss_kb(gw.pid)
    limit = max(60 * 1024, base + (64 if IS_ASAN else 40) * 1024)
    n = 96 * MB
    seen = {}

    def stable(get, timeout, quiet=0.3):
        deadline = time.monotonic() + timeout
        last, since = get(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            v = get()
            if v != last:
                last, since = v, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last

    def sink(data):
        if "sent" in seen or c.bytes_received < MB:
            return
        seen["sent"] = stable(lambda: up.stream_sent, t(8))
        seen["rss"] = rss_kb(gw.pid)

    with TlsClient(gw.port, client_context(certs), timeout=t(30)) as c:
        c.request("GET", "/stream/%d" % n, host="api.test")
        with RssSampler(gw.pid) as s:
            r = c.read_response(sink=sink)
    assert r.status == 200 and r.body_length == n and r.body_sha256 == pattern_sha256(n)
    assert seen["sent"] < 32 * MB, (
        "the upstream could send %d MB while the TLS client had read 1 MB: no backpressure"
        % (seen["sent"] // MB))
    assert seen["rss"] < limit and s.max_kb < limit, (
        "gateway RSS %d kB / max %d kB (baseline %d kB)" % (seen["rss"], s.max_kb, base))


# ---------------------------------------------------------------------------
# hostile input on the TLS port
# ---------------------------------------------------------------------------

def closed_after(sock, timeout):
    """Seconds until the peer closed (EOF/RST); raises if still open at timeout.
    Returns (seconds, bytes received)."""
    start = time.monotonic()
    got = b""
    sock.settimeout(0.05)
    while time.monotonic() - start < timeout:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, got
        if not data:
            return time.monotonic() - start, got
        got += data
    raise AssertionError("still open after %.1fs (received %r)" % (timeout, got[:100]))


HS = 1.0  # handshake_timeout, seconds (scaled by ms()/t())


@pytest.mark.parametrize("case", ["plaintext", "garbage", "truncated_hello", "silent",
                                  "slowloris"])
def test_hostile_handshakes(gateway, upstream, certs, case):
    gw, up = start_tls(gateway, upstream, certs, extra="handshake_timeout: %s" % ms(HS))
    s = socket.create_connection(gw.address, timeout=t(5))
    try:
        hello = client_hello()
        if case == "plaintext":
            s.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        elif case == "garbage":
            s.sendall(b"\xde\xad\xbe\xef" + os.urandom(2000))
        elif case == "truncated_hello":
            s.sendall(hello[:len(hello) // 2])
            s.shutdown(socket.SHUT_WR)
        elif case == "slowloris":
            # one byte of a real ClientHello every 100 ms: it never completes in time
            stop_at = time.monotonic() + t(HS) * 3
            start = time.monotonic()
            i = 0
            closed = None
            while time.monotonic() < stop_at and i < len(hello) - 1:
                try:
                    s.sendall(hello[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed = time.monotonic() - start
                    break
                i += 1
                s.settimeout(0.1)
                try:
                    if s.recv(100) == b"":
                        closed = time.monotonic() - start
                        break
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed = time.monotonic() - start
                    break
            assert closed is not None, "slowloris handshake still open after %.1fs" % (t(HS) * 3)
            assert t(HS) * 0.8 <= closed <= t(HS) * 2.5, closed
        if case != "slowloris":
            took, got = closed_after(s, t(HS) * 4)
            assert b"HTTP/" not in got, got
            if case == "silent":
                assert t(HS) * 0.8 <= took <= t(HS) * 2.5, took
            else:
                # an immediate failure, not the handshake timeout
                assert took < t(HS) * 0.9, took
    finally:
        s.close()
    assert up.requests == []
    assert_healthy(gw, certs)


def test_many_aborted_handshakes_leave_it_healthy(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs, extra="handshake_timeout: %s" % ms(HS))
    hello = client_hello()
    for i in range(60):
        s = socket.create_connection(gw.address, timeout=t(5))
        if i % 3 == 0:
            s.sendall(hello)  # then vanish mid-handshake with a RST
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif i % 3 == 1:
            s.sendall(hello[:10])
        s.close()
    assert_healthy(gw, certs)

    def client_conns():
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.admin_port,
                                    timeout=t(5)) as r:
            s = samples(r.read().decode())
        return sum(v for (name, labels), v in s.items()
                   if name == "moongate_connections" and ("side", "client") in labels)

    assert wait_until(lambda: client_conns() == 0, t(HS) * 3, 0.05), \
        "client connections still open: %s" % client_conns()


def test_handshake_timeout_does_not_cut_established_connections(gateway, upstream, certs):
    gw, up = start_tls(gateway, upstream, certs, extra="handshake_timeout: %s" % ms(HS))
    with TlsClient(gw.port, client_context(certs)) as c:
        time.sleep(t(HS) * 1.5)
        c.request("GET", "/idle-then", host="api.test")
        assert c.read_response().json()["path"] == "/idle-then"


# ---------------------------------------------------------------------------
# reload
# ---------------------------------------------------------------------------

def test_reload_changes_certificate_and_keeps_old_connections(gateway, upstream, certs, tmp_path):
    allow = [r"config reload failed"]
    gw, up = start_tls(gateway, upstream, certs, names=("default",), allow_errors=allow)
    assert peer_cert(gw.port, certs, "api.test")[0] == "default.test"
    old = TlsClient(gw.port, client_context(certs))
    try:
        old.request("GET", "/before", host="api.test")
        assert old.read_response().status == 200
        new_conf = gw.config.replace(certs.crt("default"), certs.crt("reloaded")).replace(
            certs.key("default"), certs.key("reloaded"))
        assert new_conf != gw.config
        with open(gw.config_path, "w") as f:
            f.write(new_conf)
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: peer_cert(gw.port, certs, "api.test")[0] == "reloaded.test",
                          t(5), 0.05), gw.log_tail()
        assert peer_cert(gw.port, certs, "reloaded.test")[0] == "reloaded.test"
        # the connection opened before keeps working, on its certificate
        assert old.peer_subject_cn() == "default.test"
        for i in range(3):
            old.request("GET", "/old/%d" % i, host="api.test")
            r = old.read_response()
            assert r.status == 200 and r.json()["path"] == "/old/%d" % i

        # a reload whose key file is missing fails and keeps the last good one
        missing = str(tmp_path / "missing.key")
        bad = new_conf.replace(certs.key("reloaded"), missing)
        with open(gw.config_path, "w") as f:
            f.write(bad)
        gw.signal(signal.SIGHUP)
        i = bad.index(missing)
        line = bad.count("\n", 0, i) + 1
        col = i - bad.rfind("\n", 0, i)
        pat = re.compile(r"config reload failed: %s:%d:(\d+): listen\[0\]\.tls\.certificates\[0\]\.key: "
                         r".*%s.*no such file" % (re.escape(gw.config_path), line, re.escape(missing)),
                         re.I)
        assert wait_until(lambda: pat.search(gw.log()), t(5), 0.05), gw.log_tail()
        logged_col = int(pat.search(gw.log()).group(1))
        assert logged_col in (col, col - 1), (logged_col, col, gw.log_tail())  # value (or its quote)
        assert peer_cert(gw.port, certs, "api.test")[0] == "reloaded.test"
        old.request("GET", "/old/after-failed", host="api.test")
        assert old.read_response().status == 200
    finally:
        old.close()
    assert gw.alive()


def test_certificate_swaps_under_load_lose_no_request(gateway, upstream, certs):
    """wrk keeps 8 TLS connections busy (and opens new ones: every 50th request
    asks to close) while SIGHUP swaps the certificate back and forth: no socket
    error, no non-2xx answer, and new handshakes see each new certificate."""
    gw, up = start_tls(gateway, upstream, certs, names=("default",))
    confs = [gw.config,
             gw.config.replace(certs.crt("default"), certs.crt("reloaded")).replace(
                 certs.key("default"), certs.key("reloaded"))]
    script = gw.config_path + ".wrk.lua"
    with open(script, "w") as f:
        f.write('local n = 0\nrequest = function()\n  n = n + 1\n'
                '  local h = {Host = "api.test"}\n'
                '  if n % 50 == 0 then h["Connection"] = "close" end\n'
                '  return wrk.format("GET", "/swap/" .. n, h)\nend\n')
    duration = 4 if not IS_ASAN else 6
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d%ds" % duration, "-s", script,
                            "https://127.0.0.1:%d/" % gw.port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        for i in range(1, 5):
            with open(gw.config_path, "w") as f:
                f.write(confs[i % 2])
            gw.signal(signal.SIGHUP)
            want = "reloaded.test" if i % 2 else "default.test"
            assert wait_until(lambda: peer_cert(gw.port, certs, "api.test")[0] == want,
                              t(5), 0.05), gw.log_tail()
            time.sleep(0.3)
        out, _ = wrk.communicate(timeout=duration + t(20))
    finally:
        if wrk.poll() is None:
            wrk.kill()
    assert wrk.returncode == 0 and "wrk.lua" not in out, out  # the script ran
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    done = int(re.search(r"(\d+) requests in", out).group(1))
    assert done > 200, out
    assert gw.alive()


# ---------------------------------------------------------------------------
# moongate -t
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["cert", "key", "mismatch", "client_ca"])
def test_validate_bad_certificate_names_file_line_col(tmp_path, certs, what):
    cert, key, ca = certs.crt("default"), certs.key("default"), None
    if what == "cert":
        cert = str(tmp_path / "nope.crt")
    elif what == "key":
        key = str(tmp_path / "nope.key")
    elif what == "mismatch":
        key = certs.key("other")
    else:
        ca = str(tmp_path / "nope-ca.crt")
    text = ("listen:\n"
            "  - address: \"127.0.0.1:%d\"\n"
            "    tls:\n"
            "      certificates:\n"
            "        - {cert: \"%s\", key: \"%s\"}\n" % (free_port(), cert, key) +
            ("      client_ca: \"%s\"\n" % ca if ca else "") +
            "upstreams:\n  u: {targets: [{address: \"127.0.0.1:1\"}]}\n"
            "routes:\n  - {name: r, upstream: u}\n")
    path = str(tmp_path / "bad.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([BIN, "-t", "-c", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=t(10))
    out = p.stdout.decode("latin-1")
    assert p.returncode == 1, out
    needle = {"cert": cert, "key": key, "mismatch": key, "client_ca": ca}[what]
    keypath = {"cert": r"listen\[0\]\.tls\.certificates\[0\]\.cert",
               "key": r"listen\[0\]\.tls\.certificates\[0\]\.key",
               "mismatch": r"listen\[0\]\.tls\.certificates\[0\]\.key",
               "client_ca": r"listen\[0\]\.tls\.client_ca"}[what]
    i = text.index('"%s"' % needle, text.index(what.split("_")[0] if what != "mismatch" else "key:"))
    line = text.count("\n", 0, i) + 1
    col = i - text.rfind("\n", 0, i)
    m = re.search(re.escape(path) + r":(\d+):(\d+): (%s): (.+)" % keypath, out)
    assert m, out
    assert int(m.group(1)) == line, (line, col, out)
    assert int(m.group(2)) in (col, col + 1), (line, col, out)
    reason = m.group(4)
    if what == "mismatch":
        assert "does not match" in reason, out
    else:
        assert needle in reason and "no such file" in reason.lower(), out


# ---------------------------------------------------------------------------
# upstream TLS
# ---------------------------------------------------------------------------

@pytest.fixture
def tls_origin():
    made = []

    def make(certs, name, handler=None, **kw):
        o = TlsUpstream(*certs.both(name), handler=handler, name="tls-" + name, **kw)
        made.append(o)
        return o

    yield make
    for o in made:
        o.stop()


def upstream_conf(verify=True, sni="api.test", ca=True, certs=None, extra=""):
    fields = ["enabled: true", "verify: %s" % ("true" if verify else "false")]
    if sni:
        fields.append("sni: %s" % sni)
    if ca:
        fields.append('ca: "%s"' % certs.ca)
    if extra:
        fields.append(extra)
    return ("  o:\n"
            "    targets: [{address: \"$origin\"}]\n"
            "    tls: {%s}\n" % ", ".join(fields))


def plain_gateway(gateway, certs, origin, **kw):
    """A plain listener routing to the TLS origin `o`."""
    body = ("client: {max_body_size: 64m}\n"
            "upstreams:\n" + upstream_conf(certs=certs, **kw) +
            "routes:\n  - name: all\n    upstream: o\n")
    return gateway(body, origin=origin.address,
                   allow_errors=[r"(?i)upstream|tls|certificate|handshake|verify"])


def test_upstream_tls_requests_sni_and_pooling(gateway, certs, tls_origin):
    o = tls_origin(certs, "default")
    gw = plain_gateway(gateway, certs, o)
    for i in range(20):
        r = fetch(gw.port, "GET", "/via-tls/%d" % i)
        assert r.status == 200, (r, r.body[:300])
        doc = r.json()
        assert doc["path"] == "/via-tls/%d" % i
        assert doc["connection"] == 1, "request %d on origin connection %d" % (i, doc["connection"])
    assert o.sni_names == ["api.test"], o.sni_names
    assert o.alpn == ["http/1.1"], o.alpn
    assert (o.accepted, o.handshakes) == (1, 1), (o.accepted, o.handshakes)
    assert gw.error_lines() == []


def test_upstream_tls_large_bodies(gateway, certs, tls_origin):
    o = tls_origin(certs, "default")
    gw = plain_gateway(gateway, certs, o)
    n = 10 * MB
    r = fetch(gw.port, "GET", "/stream/%d" % n)
    assert r.status == 200 and r.body_length == n and r.body_sha256 == pattern_sha256(n)
    body = os.urandom(2 * MB)
    r = fetch(gw.port, "POST", "/upload", body=body)
    assert r.status == 200
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("served,why", [("ec", "another name"), ("rogue", "another CA"),
                                        ("expired", "expired")])
def test_upstream_tls_verification_failure_is_502(gateway, certs, tls_origin, served, why):
    o = tls_origin(certs, served)
    gw = plain_gateway(gateway, certs, o)
    r = fetch(gw.port, "GET", "/verify")
    assert_error(r, "upstream_unavailable", 502)
    assert o.requests == [], "the request reached an origin with a bad certificate (%s)" % why
    assert o.handshakes == 0


@pytest.mark.parametrize("served", ["ec", "rogue", "expired"])
def test_upstream_tls_verify_off_accepts_any_certificate(gateway, certs, tls_origin, served):
    o = tls_origin(certs, served)
    gw = plain_gateway(gateway, certs, o, verify=False, ca=False)
    r = fetch(gw.port, "GET", "/noverify")
    assert r.status == 200 and r.json()["path"] == "/noverify"
    assert o.sni_names == ["api.test"]


def test_upstream_tls_ip_target_with_ip_san_verifies(gateway, certs, tls_origin):
    o = tls_origin(certs, "ipsan")
    gw = plain_gateway(gateway, certs, o, sni=None)
    r = fetch(gw.port, "GET", "/ip")
    assert r.status == 200
    assert o.sni_names == [None], "SNI must not carry an IP address: %r" % o.sni_names


def test_upstream_tls_ip_target_checks_the_name(gateway, certs, tls_origin):
    o = tls_origin(certs, "ec")  # CA-signed, for ec.test / *.wild.test, no IP SAN
    gw = plain_gateway(gateway, certs, o, sni=None)
    r = fetch(gw.port, "GET", "/ip")
    assert_error(r, "upstream_unavailable", 502)


def test_upstream_tls_and_tls_listener_end_to_end(gateway, certs, tls_origin):
    o = tls_origin(certs, "default")
    ups = upstream_conf(certs=certs)
    gw = gateway(tls_conf(certs, upstreams=ups, route_upstream="o"), full=True, origin=o.address)
    for i in range(5):
        r = tls_fetch(gw, certs, path="/e2e/%d" % i)
        assert r.status == 200 and r.echo_header("x-forwarded-proto") == "https"
    assert (o.accepted, o.handshakes) == (1, 1)


def test_upstream_tls_session_resumed_on_reconnect(gateway, certs, tls_origin):
    o = tls_origin(certs, "default", idle_close=t(0.2))
    gw = plain_gateway(gateway, certs, o)
    assert fetch(gw.port, "GET", "/first").status == 200
    # the origin closes the idle pooled connection; the next request reconnects
    assert wait_until(lambda: all(c.closed for c in o.conns), t(3), 0.02)
    time.sleep(0.1)
    r = fetch(gw.port, "GET", "/second")
    assert r.status == 200 and r.json()["path"] == "/second"
    assert o.handshakes == 2, o.handshakes
    assert o.reused == [False, True], "the second upstream handshake was not resumed: %r" % o.reused


@pytest.mark.parametrize("with_cert", [True, False])
def test_upstream_mtls(gateway, certs, tls_origin, with_cert):
    o = tls_origin(certs, "default", client_ca=certs.ca)
    extra = 'cert: "%s", key: "%s"' % certs.both("client") if with_cert else ""
    gw = plain_gateway(gateway, certs, o, extra=extra)
    r = fetch(gw.port, "GET", "/upstream-mtls")
    if with_cert:
        assert r.status == 200 and r.json()["path"] == "/upstream-mtls"
        assert o.client_cns == ["client.test"]
    else:
        assert_error(r, "upstream_unavailable", 502)
        assert o.requests == []
