"""TLS helpers for test_tls.py: certificates made at test time with the
`openssl` CLI (never committed), a RawClient over a Python ssl socket, an
`openssl s_client` runner and a TLS origin (an Upstream behind ssl).

Certificates (Certs.make(dir)), all but `rogue` signed by one test CA:
  default  RSA 2048, CN=default.test, SAN default.test api.test   (the listener's default)
  ec       ECDSA P-256, CN=ec.test, SAN ec.test *.wild.test
  other    RSA 2048, CN=other.test, SAN other.test exact.wild.test
  reloaded RSA 2048, CN=reloaded.test, SAN reloaded.test api.test  (for the reload test)
  ipsan    ECDSA P-256, CN=ip.test, SAN ip.test IP:127.0.0.1
  expired  ECDSA P-256, CN=api.test, SAN api.test, valid 2020-01-01 .. 2020-02-01
  client   ECDSA P-256, CN=client.test, clientAuth
  rogue    self-signed RSA, CN=api.test, SAN api.test (another "CA": itself)
"""

import os
import socket
import ssl
import subprocess
import threading

from conftest import RawClient, t
from upstream import Upstream, UpConn

CA_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = Moongate Test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""

CA_DB_CONF = """\
[ca]
default_ca = test_ca
[test_ca]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
"""


def _run(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), p.stdout.decode("latin-1")))


def _newkey(kind):
    if kind == "ec":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    return ["-newkey", "rsa:2048"]


class Certs:
    """Paths of the generated files: certs.crt(name), certs.key(name), certs.ca."""

    LEAVES = {
        # name: (key kind, CN, SAN, extendedKeyUsage)
        "default": ("rsa", "default.test", "DNS:default.test,DNS:api.test", "serverAuth"),
        "ec": ("ec", "ec.test", "DNS:ec.test,DNS:*.wild.test", "serverAuth"),
        "other": ("rsa", "other.test", "DNS:other.test,DNS:exact.wild.test", "serverAuth"),
        "reloaded": ("rsa", "reloaded.test", "DNS:reloaded.test,DNS:api.test", "serverAuth"),
        "ipsan": ("ec", "ip.test", "DNS:ip.test,IP:127.0.0.1", "serverAuth"),
        "client": ("ec", "client.test", None, "clientAuth"),
    }

    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")

    def crt(self, name):
        return os.path.join(self.dir, name + ".crt")

    def key(self, name):
        return os.path.join(self.dir, name + ".key")

    def both(self, name):
        """(cert, key): the arguments of Python's load_cert_chain."""
        return self.crt(name), self.key(name)

    @classmethod
    def make(cls, d):
        os.makedirs(d, exist_ok=True)
        c = cls(d)
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(CA_CONF)
        _run(["req", "-x509", "-config", "ca.cnf", "-extensions", "v3_ca", "-newkey", "rsa:2048",
              "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-sha256"], d)
        for name, (kind, cn, san, eku) in cls.LEAVES.items():
            c._leaf(name, kind, cn, san, eku)
        c._expired()
        # the rogue: self-signed, the right name, another issuer
        _run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key",
              "-out", "rogue.crt", "-days", "30", "-subj", "/CN=api.test",
              "-addext", "subjectAltName=DNS:api.test"], d)
        return c

    def _ext(self, name, san, eku):
        path = os.path.join(self.dir, name + ".ext")
        lines = ["basicConstraints = CA:FALSE", "keyUsage = critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage = " + eku]
        if san:
            lines.append("subjectAltName = " + san)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _leaf(self, name, kind, cn, san, eku):
        d = self.dir
        _run(["req", "-new"] + _newkey(kind) + ["-nodes", "-keyout", name + ".key",
                                                 "-out", name + ".csr", "-subj", "/CN=" + cn], d)
        _run(["x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", "30", "-sha256", "-extfile", self._ext(name, san, eku),
              "-out", name + ".crt"], d)

    def _expired(self):
        d = self.dir
        with open(os.path.join(d, "index.txt"), "w"):
            pass
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(d, "ca_db.cnf"), "w") as f:
            f.write(CA_DB_CONF.format(dir=d))
        _run(["req", "-new"] + _newkey("ec") + ["-nodes", "-keyout", "expired.key",
                                                 "-out", "expired.csr", "-subj", "/CN=api.test"], d)
        _run(["ca", "-batch", "-config", "ca_db.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
              "-in", "expired.csr", "-out", "expired.crt", "-notext",
              "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
              "-extfile", self._ext("expired", "DNS:api.test", "serverAuth")], d)


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------

def client_context(certs=None, verify=True, cert=None, version=None, alpn=None):
    """A client SSLContext: trusts the test CA (names are checked by the tests,
    on the subject and SAN, not by ssl), optional client cert, optional pinned
    protocol version ("1.2" / "1.3")."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if verify and certs is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.ca)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(*cert)
    if version:
        v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
        ctx.minimum_version = ctx.maximum_version = v
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TlsClient(RawClient):
    """RawClient over TLS: the same strict HTTP parsing on an ssl socket."""

    def __init__(self, port, ctx, server_hostname="api.test", timeout=None):
        self.timeout = timeout if timeout is not None else t(10)
        raw = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.bytes_received = 0

    def _fill(self, n=1 << 20):
        try:
            return super()._fill(n)
        except ssl.SSLZeroReturnError:
            self.eof = True
            return False

    def _recv_direct(self, n):
        try:
            return super()._recv_direct(n)
        except ssl.SSLZeroReturnError:
            self.eof = True
            return b""

    def peer_subject_cn(self):
        return subject_cn(self.sock.getpeercert())


def subject_cn(cert):
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def peer_cert(port, certs, server_hostname, version=None):
    """(CN, sorted SAN list, protocol) of the certificate served for that SNI
    (None: no SNI at all)."""
    ctx = client_context(certs, version=version)
    with socket.create_connection(("127.0.0.1", port), timeout=t(5)) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            cert = s.getpeercert()
            return (subject_cn(cert), sorted(v for _, v in cert.get("subjectAltName", ())),
                    s.version())


def s_client(port, args, stdin=b"", timeout=None):
    """Runs `openssl s_client -connect 127.0.0.1:PORT ARGS`; returns (rc, output)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout or t(15))
    return p.returncode, p.stdout.decode("latin-1")


def client_hello(server_hostname="api.test"):
    """The bytes of a real ClientHello (Python's ssl, TLS 1.2-1.3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


# ---------------------------------------------------------------------------
# a TLS origin
# ---------------------------------------------------------------------------

class TlsUpstream(Upstream):
    """An Upstream whose connections are TLS (server side, Python ssl): it
    counts accepted TCP connections and completed handshakes, and records the
    SNI name of every handshake (None when none was sent)."""

    def __init__(self, cert, key, handler=None, client_ca=None, **kw):
        self.ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_ctx.load_cert_chain(cert, key)
        if client_ca:
            self.ssl_ctx.verify_mode = ssl.CERT_REQUIRED
            self.ssl_ctx.load_verify_locations(client_ca)
        self.ssl_ctx.set_alpn_protocols(["http/1.1"])
        self.ssl_ctx.sni_callback = self._on_sni
        self.sni_names = []
        self.alpn = []
        self.reused = []          # per handshake: was the session resumed
        self.client_cns = []      # per handshake: the client certificate's CN (mTLS)
        self.accepted = 0
        self.handshakes = 0
        self.handshake_errors = []
        super().__init__(handler, **kw)

    def _on_sni(self, sslobj, name, ctx):
        with self.lock:
            self.sni_names.append(name)
        return None

    def _accept_loop(self):
        while not self.stopped.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                self.accepted += 1
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            th = threading.Thread(target=self._handshake_and_serve, args=(s,), daemon=True)
            th.start()
            self.threads.append(th)

    def _handshake_and_serve(self, raw):
        raw.settimeout(5)
        try:
            s = self.ssl_ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.handshake_errors.append(e)
            raw.close()
            return
        s.settimeout(self.conn_timeout)
        with self.cond:
            self.handshakes += 1
            self.alpn.append(s.selected_alpn_protocol())
            self.reused.append(s.session_reused)
            self.client_cns.append(subject_cn(s.getpeercert() or {}))
            conn = UpConn(self, s, len(self.conns) + 1)
            self.conns.append(conn)
            self.cond.notify_all()
        self._serve(conn)
