"""TLS seen from plugins, the access log, /metrics and active health checks
(issue 15, DESIGN 10.1): ctx.tls, the tls_protocol/tls_cipher log fields,
moongate_tls_handshakes_total / moongate_tls_handshake_duration_seconds, and
health checks that speak TLS to a TLS origin.

Certificates are made at test time with the openssl CLI (never committed)."""

import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import fetch, free_port, ms, samples, t, wait_until

PREAMBLE = """\
listen:
  - "127.0.0.1:$port"
  - address: "127.0.0.1:$tls_port"
    tls:
      certificates: [{cert: "$crt", key: "$key"}]
      handshake_timeout: $hs_timeout
$client_ca
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
access_log: $access_log
drain_timeout: $drain_timeout
"""


def _openssl(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, "openssl %s:\n%s" % (" ".join(args), p.stdout.decode("latin-1"))


class Certs:
    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")
        self.crt, self.key = os.path.join(d, "srv.crt"), os.path.join(d, "srv.key")
        self.client_crt, self.client_key = os.path.join(d, "cli.crt"), os.path.join(d, "cli.key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for api.test and 127.0.0.1, a client one."""
    d = str(tmp_path_factory.mktemp("tlsobs-certs"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
              "-subj", "/CN=Obs Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    for name, cn, ext in (("srv", "api.test", "subjectAltName=DNS:api.test,IP:127.0.0.1\n"
                                              "extendedKeyUsage=serverAuth\n"),
                          ("cli", "client.test", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ext)
        _openssl(["req", "-new"] + ec + ["-keyout", name + ".key", "-out", name + ".csr",
                  "-subj", "/O=Moongate Tests/CN=" + cn], d)
        _openssl(["x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                  "-CAcreateserial", "-days", "2", "-extfile", name + ".ext",
                  "-out", name + ".crt"], d)
    return Certs(d)


def start(gateway, certs, body, client_ca=False, hs_timeout="10s", **kw):
    tls_port = free_port()
    ca_line = '      client_ca: "%s"' % certs.ca if client_ca else ""
    gw = gateway(PREAMBLE + body, full=True, tls_port=tls_port, crt=certs.crt, key=certs.key,
                 client_ca=ca_line, hs_timeout=hs_timeout, **kw)
    gw.tls_port = tls_port
    return gw


def client_ctx(certs, client_cert=False, max_version=None):
    ctx = ssl.create_default_context(cafile=certs.ca)
    if client_cert:
        ctx.load_cert_chain(certs.client_crt, certs.client_key)
    if max_version:
        ctx.maximum_version = max_version
    return ctx


class Seen:
    """What the client's side of a TLS connection saw (kept past its close)."""

    def __init__(self, s):
        self._version, self._cipher = s.version(), s.cipher()
        self.session, self.session_reused = s.session, s.session_reused

    def version(self):
        return self._version

    def cipher(self):
        return self._cipher


def tls_get(port, ctx, path="/", sni="api.test", session=None):
    """One request over TLS on a fresh connection, read to EOF. Returns
    (status, headers dict lowercased, body, Seen)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=t(5))
    s = ctx.wrap_socket(raw, server_hostname=sni, session=session)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
                   % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        seen = Seen(s)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body, seen


def admin_get(gw, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (gw.admin_port, path),
                                timeout=t(5)) as r:
        return r.read().decode()


# ---------------------------------------------------------------------------
# ctx.tls
# ---------------------------------------------------------------------------

TLS_ECHO = """
local P = {}
local function show(v) return v == nil and "nil" or v end
function P.access(ctx, conf)
  local t = ctx.tls
  if t == nil then
    return ctx:respond(200, "plain", {["X-Tls"] = "nil"})
  end
  assert(ctx.tls == t, "ctx.tls is one table per request")
  ctx:respond(200, "tls", {
    ["X-Tls"] = type(t),
    ["X-Tls-Protocol"] = show(t.protocol),
    ["X-Tls-Cipher"] = show(t.cipher),
    ["X-Tls-Sni"] = show(t.sni),
    ["X-Tls-Subject"] = show(t.client_subject),
  })
end
return P
"""

PLUGIN_BODY = """\
plugin_path: ["$plugins"]
upstreams:
  u:
    targets: [{address: "127.0.0.1:$dead_port"}]
routes:
  - name: r
    upstream: u
    plugins: [{name: tls_echo}]
"""


def write_plugin(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / "tls_echo.lua").write_text(TLS_ECHO)
    return str(d)


def test_ctx_tls_on_tls_and_plain_listeners(gateway, certs, tmp_path):
    gw = start(gateway, certs, PLUGIN_BODY, client_ca=True, plugins=write_plugin(tmp_path),
               dead_port=free_port())
    # plain listener: nil
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.header("X-Tls") == "nil"
    # TLS with a client certificate (mTLS) and SNI
    status, h, body, s = tls_get(gw.tls_port, client_ctx(certs, client_cert=True))
    assert status == 200 and body == b"tls" and h["x-tls"] == "table"
    assert h["x-tls-protocol"] == s.version() == "TLSv1.3"
    assert h["x-tls-cipher"] == s.cipher()[0]
    assert h["x-tls-sni"] == "api.test"
    assert h["x-tls-subject"] == "/O=Moongate Tests/CN=client.test"
    # TLS 1.2, and no SNI (an IP literal is never sent as a server name)
    status, h, _, s = tls_get(gw.tls_port, client_ctx(certs, True, ssl.TLSVersion.TLSv1_2),
                              sni="127.0.0.1")
    assert status == 200 and h["x-tls-protocol"] == "TLSv1.2" == s.version()
    assert h["x-tls-cipher"] == s.cipher()[0] and h["x-tls-sni"] == "nil"


# ---------------------------------------------------------------------------
# access log
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mtls", [False, True])
def test_access_log_has_tls_protocol_cipher_and_client_subject(gateway, upstream, certs, tmp_path,
                                                              mtls):
    up = upstream()
    log = tmp_path / "access.log"
    gw = start(gateway, certs, 'upstreams:\n  u:\n    targets: [{address: "$a"}]\n'
               'routes:\n  - name: r\n    upstream: u\n', client_ca=mtls, a=up,
               access_log=str(log))
    assert fetch(gw.port, "GET", "/plain").status == 200
    status, _, _, s = tls_get(gw.tls_port, client_ctx(certs, client_cert=mtls), "/secure")
    assert status == 200
    assert wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, t(3))
    lines = {l["path"]: l for l in map(json.loads, log.read_text().splitlines())}
    plain, secure = lines["/plain"], lines["/secure"]
    assert plain["tls_protocol"] is None and plain["tls_cipher"] is None
    assert plain["tls_client_subject"] is None
    assert secure["tls_protocol"] == s.version() == "TLSv1.3"
    assert secure["tls_cipher"] == s.cipher()[0]
    expected = "/O=Moongate Tests/CN=client.test" if mtls else None
    assert secure["tls_client_subject"] == expected


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------

def test_tls_handshake_metrics_count_exactly(gateway, upstream, certs):
    up = upstream()
    gw = start(gateway, certs, 'upstreams:\n  u:\n    targets: [{address: "$a"}]\n'
               'routes:\n  - name: r\n    upstream: u\n', a=up, hs_timeout=ms(0.3))
    listener = "127.0.0.1:%d" % gw.tls_port
    # three full handshakes (TLS 1.2: the session exists right after it)
    v12 = client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2)
    for _ in range(3):
        status, _, _, s = tls_get(gw.tls_port, v12)
        assert status == 200 and not s.session_reused
    # one resumed (the client offers the last session, the ticket of the same process)
    status, _, _, s2 = tls_get(gw.tls_port, v12, session=s.session)
    assert status == 200 and s2.session_reused
    # one failed: plaintext HTTP to the TLS port
    with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=t(5)) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            while c.recv(4096):
                pass
        except ConnectionResetError:
            pass
    # one timeout: a ClientHello that never comes (handshake_timeout 0.3s)
    with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=t(5)) as c:
        c.sendall(b"\x16\x03\x01")
        try:
            while c.recv(4096):
                pass
        except ConnectionResetError:
            pass
    # a TCP connect without a byte (a load balancer's probe) is no handshake
    socket.create_connection(("127.0.0.1", gw.tls_port), timeout=t(5)).close()

    def counts():
        s = samples(admin_get(gw, "/metrics"))
        return {r: s.get(("moongate_tls_handshakes_total",
                          frozenset({("listener", listener), ("result", r)})))
                for r in ("ok", "failed", "timeout", "resumed")}
    want = {"ok": 3.0, "failed": 1.0, "timeout": 1.0, "resumed": 1.0}
    assert wait_until(lambda: counts() == want, t(3)), counts()
    time.sleep(t(0.3))  # nothing more trickles in
    text = admin_get(gw, "/metrics")
    s = samples(text)
    assert counts() == want
    lab = frozenset({("listener", listener)})
    assert s[("moongate_tls_handshake_duration_seconds_count", lab)] == 4
    assert s[("moongate_tls_handshake_duration_seconds_bucket",
              lab | {("le", "+Inf")})] == 4
    assert s[("moongate_tls_handshake_duration_seconds_sum", lab)] > 0
    # the plain listener has no series
    assert "127.0.0.1:%d\"" % gw.port not in "".join(
        l for l in text.splitlines() if l.startswith("moongate_tls_"))
    assert text.count("# TYPE moongate_tls_handshakes_total counter") == 1
    assert text.count("# TYPE moongate_tls_handshake_duration_seconds histogram") == 1


# ---------------------------------------------------------------------------
# health checks over TLS
# ---------------------------------------------------------------------------

class TlsOrigin:
    """A TLS origin answering every request 200 (Connection: close), recording
    the server names asked for. tls=False serves plain HTTP on the same code."""

    def __init__(self, certs, tls=True):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.snis, self.requests, self.lock = [], 0, threading.Lock()
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(certs.crt, certs.key)
            self.ctx.sni_callback = self._sni
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sni(self, sslobj, name, ctx):
        with self.lock:
            self.snis.append(name)

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(5)
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            with self.lock:
                self.requests += 1
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def origins(certs):
    made = []

    def make(**kw):
        o = TlsOrigin(certs, **kw)
        made.append(o)
        return o
    yield make
    for o in made:
        o.stop()


HEALTH_BODY = """\
upstreams:
  good:
    targets: [{address: "$good"}]
    tls: {enabled: true, sni: api.test, ca: "$ca"}
    health_check: {path: /healthz, interval: %(iv)s, timeout: %(to)s, healthy_after: 1, unhealthy_after: 1}
  wrong_name:
    targets: [{address: "$wrong"}]
    tls: {enabled: true, sni: other.test, ca: "$ca"}
    health_check: {path: /healthz, interval: %(iv)s, timeout: %(to)s, healthy_after: 1, unhealthy_after: 1}
  untrusted:
    targets: [{address: "$untrusted"}]
    tls: {enabled: true, sni: api.test}
    health_check: {path: /healthz, interval: %(iv)s, timeout: %(to)s, healthy_after: 1, unhealthy_after: 1}
  plain_origin:
    targets: [{address: "$plain"}]
    tls: {enabled: true, sni: api.test, ca: "$ca"}
    health_check: {path: /healthz, interval: %(iv)s, timeout: %(to)s, healthy_after: 1, unhealthy_after: 1}
  unverified:
    targets: [{address: "$unverified"}]
    tls: {enabled: true, verify: false}
    health_check: {path: /healthz, interval: %(iv)s, timeout: %(to)s, healthy_after: 1, unhealthy_after: 1}
routes:
  - name: r
    upstream: good
"""


def test_health_checks_speak_tls(gateway, certs, origins):
    good, wrong, untrusted = origins(), origins(), origins()
    plain, unverified = origins(tls=False), origins()
    gw = start(gateway, certs, HEALTH_BODY % {"iv": ms(0.1), "to": ms(1)}, good=good.address,
               wrong=wrong.address, untrusted=untrusted.address, plain=plain.address,
               unverified=unverified.address, ca=certs.ca)

    def health():
        doc = json.loads(admin_get(gw, "/status"))
        return {u["name"]: u["targets"][0]["health"] for u in doc["upstreams"]}
    want = {"good": "healthy", "wrong_name": "unhealthy", "untrusted": "unhealthy",
            "plain_origin": "unhealthy", "unverified": "healthy"}
    assert wait_until(lambda: health() == want and good.requests >= 2, t(5)), health()
    # the probe asked for the configured name and got its answer over TLS
    assert set(good.snis) == {"api.test"} and good.requests >= 2
    assert set(wrong.snis) == {"other.test"} and wrong.requests == 0
    assert untrusted.requests == 0 and plain.requests == 0
    assert unverified.snis == [] or set(unverified.snis) == {None}
    assert unverified.requests >= 1
    # and the proxy still routes to the healthy TLS target
    status, _, body, _ = tls_get(gw.tls_port, client_ctx(certs), "/through")
    assert status == 200 and body == b"ok"
