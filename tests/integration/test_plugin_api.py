"""The plugin API of DESIGN.md 10.4 through the real binary (issue 18):
respond ends the phase, every header value, added headers, routing control,
balancer refusal, gw.json/base64/crypto/jwt, the bundled jwt_auth, cors,
ip_restriction, request_transformer and response_headers, and P.priority."""

import base64
import hashlib
import hmac
import json
import signal
import subprocess
import time
import urllib.request

from conftest import assert_error, fetch, t, wait_until

CONF = """\
plugin_path: ["$plugins"]
upstreams:
  u:
    targets: [{address: "$a"}]
  other:
    targets: [{address: "$b"}]
routes:
  - name: r
    upstream: u
$route_extra
"""


def start(gateway, upstream, tmp_path, route_extra, plugins=None, allow_errors=(),
          handler=None):
    a = upstream(handler, name="a")
    b = upstream(name="b")
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    for name, src in (plugins or {}).items():
        (d / (name + ".lua")).write_text(src)
    gw = gateway(CONF, a=a, b=b, plugins=str(d), route_extra=route_extra,
                 allow_errors=allow_errors)
    return gw, a, b


# ---------------------------------------------------------------- respond

RESPOND_TWICE = """
local P = {}
function P.access(ctx)
  pcall(ctx.respond, ctx, 403, "denied")   -- a swallowed respond still ends the chain
  ctx:respond(200, "overridden?")          -- no effect: the first respond is final
  error("not reached")
end
return P
"""

LATER = """
local P = {}
function P.access(ctx) ctx:respond(200, "later plugin ran") end
return P
"""

RESPOND_THEN_CODE = """
local P = {}
function P.access(ctx)
  if ctx:header("X-Deny") then ctx:respond(401, "no") end
  ctx:set_header("X-After", "ran")
end
return P
"""


def test_respond_is_final_and_ends_the_phase(gateway, upstream, tmp_path):
    gw, a, _ = start(gateway, upstream, tmp_path,
                     "    plugins: [{name: twice}, {name: later}]",
                     {"twice": RESPOND_TWICE, "later": LATER})
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 403 and r.body == b"denied"
    assert not a.requests
    assert "not reached" not in gw.log() and "plugin_error" not in gw.log()


def test_respond_without_return_stops_the_plugin(gateway, upstream, tmp_path):
    gw, a, _ = start(gateway, upstream, tmp_path, "    plugins: [{name: guard}]",
                     {"guard": RESPOND_THEN_CODE})
    r = fetch(gw.port, "GET", "/x", headers=[("X-Deny", "1")])
    assert r.status == 401 and not a.requests
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.echo_header("x-after") == "ran"


# ---------------------------------------------------------------- headers

HEADERS = """
local P = {}
function P.access(ctx)
  local v = ctx:headers("X-Multi")
  ctx:set_header("X-Seen", table.concat(v, "|"))
  ctx:add_header("X-Multi", "c")
  ctx:clear_header("X-Drop")
  assert(#ctx:headers("x-multi") == 3 and ctx:headers("x-none")[1] == nil)
end
function P.response(ctx)
  local c = ctx:response_headers("Set-Cookie")
  ctx:add_response_header("Set-Cookie", "third=3")
  ctx:set_response_header("X-Cookies", #c)
end
return P
"""


def cookies(conn, req):
    conn.read_body(req)
    body = json.dumps({"headers": req.headers}).encode()
    conn.send_head(200, [("Content-Length", str(len(body))), ("Set-Cookie", "a=1"),
                         ("Set-Cookie", "b=2")])
    conn.send(body)


def test_every_header_value_and_added_headers(gateway, upstream, tmp_path):
    gw, _, _ = start(gateway, upstream, tmp_path, "    plugins: [{name: h}]", {"h": HEADERS},
                     handler=cookies)
    r = fetch(gw.port, "GET", "/x", headers=[("X-Multi", "a"), ("X-Multi", "b"),
                                             ("X-Drop", "1")])
    assert r.status == 200, r.body
    assert r.echo_header("x-seen") == "a|b"
    assert r.echo_header_all("x-multi") == ["a", "b", "c"]
    assert r.echo_header("x-drop") is None
    assert r.header_all("set-cookie") == ["a=1", "b=2", "third=3"]
    assert r.header("x-cookies") == "2"


PREPARED = """
local P = {}
local tag = gw.header("X-Tag", "t1")
local same = gw.header("X-Tag", "t1")
local cookie = gw.header("Set-Cookie", "p=1")
local req = gw.header("X-Prepared-Req", 7)
local changed = gw.header("X-Changed", "kept")
local bad = {}
for _, args in ipairs({{"Bad Name", "v"}, {"X-Ok", "a\\r\\nb"}, {"Content-Length", "1"}, {1, "v"}}) do
  local ok, err = pcall(gw.header, args[1], args[2])
  bad[#bad + 1] = ok and "accepted" or err:match("invalid header name") and "name"
    or err:match("invalid value") and "value" or err:match("managed by") and "managed"
    or err:match("bad argument") and "arg" or err
end
function P.access(ctx)
  ctx:set_header(req)
  ctx:set_response_header(tag)
  ctx:add_response_header(cookie)
  ctx:set_response_header("X-Bad", table.concat(bad, ","))
  local ok = pcall(ctx.set_response_header, ctx, {name = "X-Fake", value = "1"})
  ctx:set_response_header("X-Same", tostring(tag == same) .. "," .. tostring(not ok))
  -- changing a prepared header's fields afterwards changes nothing: the
  -- edit uses the strings gw.header() checked (no injection past the check)
  changed.name, changed.value = "Content-Length", "1\\r\\nInjected: 1"
  ctx:set_response_header(changed)
end
function P.response(ctx)
  ctx:add_response_header(tag)         -- beside the first: two values
end
return P
"""


def test_prepared_headers(gateway, upstream, tmp_path):
    """gw.header(): checked once at load (bad names, values and managed headers
    are refused there), then set/added like a string pair, in any phase that
    allows the edit; a table that gw.header() did not make is refused, and
    changing a prepared header's fields afterwards does not change its edit."""
    gw, _, _ = start(gateway, upstream, tmp_path, "    plugins: [{name: p}]", {"p": PREPARED},
                     handler=cookies)
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200, r.body
    assert r.echo_header("x-prepared-req") == "7"
    assert r.header_all("x-tag") == ["t1", "t1"]
    assert r.header_all("set-cookie") == ["a=1", "b=2", "p=1"]
    assert r.header("x-bad") == "name,value,managed,arg"
    assert r.header("x-same") == "true,true"
    assert r.header("x-changed") == "kept"
    assert r.header("injected") is None


# ---------------------------------------------------------------- routing

ROUTING = """
local P = {}
function P.access(ctx)
  if ctx.path == "/canary" then
    ctx:set_upstream("other")
    ctx:set_path("/rewritten")
    ctx:set_query("x=1")
    assert(ctx.path == "/rewritten" and ctx.query == "x=1")
  elseif ctx.path == "/noquery" then
    ctx:set_query(nil)
  elseif ctx.path == "/bad" then
    ctx:set_upstream("nope")
  end
end
return P
"""


def test_set_path_query_and_upstream(gateway, upstream, tmp_path):
    gw, a, b = start(gateway, upstream, tmp_path, "    plugins: [{name: routing}]",
                     {"routing": ROUTING}, allow_errors=[r"no upstream named 'nope'"])
    r = fetch(gw.port, "GET", "/canary?y=2")
    assert r.status == 200 and r.json()["upstream"] == "b"
    assert r.json()["path"] == "/rewritten?x=1"
    r = fetch(gw.port, "GET", "/noquery?y=2")
    assert r.json()["upstream"] == "a" and r.json()["path"] == "/noquery"
    r = fetch(gw.port, "GET", "/plain?k=v")
    assert r.json()["path"] == "/plain?k=v"
    assert_error(fetch(gw.port, "GET", "/bad"), "plugin_error", 500)
    assert "ctx:set_upstream: no upstream named 'nope'" in gw.log()


REFUSE = """
local P = {}
function P.balance(ctx, conf, targets)
  if ctx:header("X-Refuse") then return nil, 503 end
  return 1
end
return P
"""


def test_balancer_may_refuse(gateway, upstream, tmp_path):
    gw, a, _ = start(gateway, upstream, tmp_path, "    balancer: {name: refuse}",
                     {"refuse": REFUSE})
    assert_error(fetch(gw.port, "GET", "/x", headers=[("X-Refuse", "1")]),
                 "balancer_refused", 503)
    assert not a.requests
    assert fetch(gw.port, "GET", "/x").status == 200


# ---------------------------------------------------------------- gw helpers

CODECS = """
local P = {}
function P.access(ctx)
  local t = gw.json.decode('{"a":[1,2,null,"\\\\u00e9"],"b":{"c":true}}')
  assert(t.a[3] == gw.json.null and t.a[4] == "\\195\\169" and t.b.c == true)
  assert(gw.json.decode("[1,]") == nil)
  local enc = gw.json.encode({x = {1, 2, 3}, s = "q\\"\\n"})
  assert(gw.json.decode(enc).s == "q\\"\\n")
  local data = ctx:header("X-Data")
  ctx:respond(200, gw.json.encode({
    sha = gw.base64.encode(gw.crypto.sha256(data)),
    hmac = gw.base64.encode(gw.crypto.hmac("sha256", "k", data), true),
    rand = #gw.crypto.random_bytes(16),
    eq = {gw.crypto.equal("abc", "abc"), gw.crypto.equal("abc", "abd")},
    dec = gw.base64.decode("aGk="), bad = gw.base64.decode("a*==") == nil,
  }))
end
return P
"""


def test_json_base64_crypto(gateway, upstream, tmp_path):
    gw, _, _ = start(gateway, upstream, tmp_path, "    plugins: [{name: codecs}]",
                     {"codecs": CODECS})
    r = fetch(gw.port, "GET", "/x", headers=[("X-Data", "hello")])
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["sha"] == base64.b64encode(hashlib.sha256(b"hello").digest()).decode()
    mac = hmac.new(b"k", b"hello", hashlib.sha256).digest()
    assert doc["hmac"] == base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert doc["rand"] == 16 and doc["eq"] == [True, False]
    assert doc["dec"] == "hi" and doc["bad"] is True


# ---------------------------------------------------------------- jwt_auth

def b64u(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def hs_token(claims, secret=b"s3cret", alg="HS256", header=None):
    h = header or {"alg": alg, "typ": "JWT"}
    si = b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(claims).encode())
    md = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return si + "." + b64u(hmac.new(secret, si.encode(), md).digest())


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True,
                          check=True).stdout


def der_to_rs(der, n):
    """ECDSA-Sig-Value DER -> JOSE r||s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        ln = der[i + 1]
        v = der[i + 2:i + 2 + ln].lstrip(b"\0")
        out += v.rjust(n, b"\0")
        i += 2 + ln
    return out


def pk_token(key, alg, claims, kid=None):
    h = {"alg": alg, "typ": "JWT"}
    if kid:
        h["kid"] = kid
    si = (b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(claims).encode())).encode()
    md = {"RS256": "-sha256", "ES256": "-sha256", "ES384": "-sha384"}[alg]
    sig = openssl("dgst", md, "-sign", key, data=si)
    if alg.startswith("ES"):
        sig = der_to_rs(sig, 32 if alg == "ES256" else 48)
    return si.decode() + "." + b64u(sig)


def test_jwt_auth_hs256(gateway, upstream, tmp_path):
    gw, a, _ = start(gateway, upstream, tmp_path,
                     '    plugins: [{name: jwt_auth, config: {alg: [HS256], key: "s3cret",'
                     ' iss: "https://idp", aud: api, claims_to_headers: {sub: X-User}}}]')
    now = int(time.time())
    good = {"sub": "alice", "iss": "https://idp", "aud": ["api", "x"], "exp": now + 60}
    r = fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + hs_token(good))])
    assert r.status == 200 and r.echo_header("x-user") == "alice"
    cases = {
        "missing token": None,
        "invalid signature": hs_token(good, secret=b"wrong"),
        "token expired": hs_token(dict(good, exp=now - 100)),
        "not yet valid": hs_token(dict(good, nbf=now + 100)),
        "issuer not allowed": hs_token(dict(good, iss="https://evil")),
        "audience not allowed": hs_token(dict(good, aud="other")),
        "alg none not allowed": hs_token(good, header={"alg": "none"}).rsplit(".", 1)[0] + ".",
        "alg HS512 not allowed": hs_token(good, alg="HS512"),
        "malformed": "abc.def",
    }
    for why, tok in cases.items():
        hs = [("Authorization", "Bearer " + tok)] if tok else []
        doc = assert_error(fetch(gw.port, "GET", "/x", headers=hs), "unauthorized", 401)
        assert why.split()[0] in doc["message"] or why == "malformed", (why, doc)
    # within the default 30 s leeway
    r = fetch(gw.port, "GET", "/x",
              headers=[("Authorization", "Bearer " + hs_token(dict(good, exp=now - 5)))])
    assert r.status == 200


def test_jwt_auth_token_cache_rechecks_time_and_bytes(gateway, upstream, tmp_path):
    """A cached token is served from the cache (one verify) but still expires
    on time, and a token that differs in any byte (a forged signature of the
    same length, another token, the same bytes in other header forms) never
    matches the cached one."""
    gw, _, _ = start(gateway, upstream, tmp_path,
                     '    plugins: [{name: jwt_auth, config: {key: "s3cret", leeway: 0,'
                     ' claims_to_headers: {sub: X-User, n: X-N}, cache: 8}}]')
    exp = int(time.time()) + 3  # margin for a loaded machine; the test sleeps until then
    tok = hs_token({"sub": "alice", "n": 7, "exp": exp})
    for _ in range(3):
        r = fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + tok)])
        assert r.status == 200 and r.echo_header("x-user") == "alice", r.status
        assert r.echo_header("x-n") == "7"
    # the same token in another accepted form is the same cached token
    r = fetch(gw.port, "GET", "/x", headers=[("Authorization", "bearer  " + tok + " ")])
    assert r.status == 200 and r.echo_header("x-user") == "alice"
    head, payload, sig = tok.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    for bad in (head + "." + payload + "." + flipped, tok + "x", "x" + tok[1:],
                "Bearer " + tok, tok + " " + tok):
        doc = assert_error(fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + bad)]),
                           "unauthorized", 401)
        assert doc["message"] != "", bad
    other = hs_token({"sub": "bob", "exp": exp})
    r = fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + other)])
    assert r.status == 200 and r.echo_header("x-user") == "bob"
    # exp is re-checked on every hit: once past it, the cached token is refused
    time.sleep(max(0.0, exp + 1.1 - time.time()))
    doc = assert_error(fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + tok)]),
                       "unauthorized", 401)
    assert doc["message"] == "token expired", doc
    # a token that is not yet valid is not served early by the cache either
    nbf = int(time.time()) + 2
    later = hs_token({"sub": "carol", "nbf": nbf})
    doc = assert_error(fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + later)]),
                       "unauthorized", 401)
    assert doc["message"] == "token not yet valid", doc


class JwksServer:
    """A small JWKS endpoint: serves self.body at any path; counts fetches."""

    def __init__(self):
        import http.server
        import threading
        outer = self
        self.body, self.fetches = b"{}", 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def set_keys(self, *secrets):
        keys = [{"kty": "oct", "kid": "k%d" % i, "k": b64u(k)} for i, k in enumerate(secrets)]
        self.body = json.dumps({"keys": keys}).encode()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_jwt_auth_jwks_url_refreshed_by_a_timer(gateway, upstream, tmp_path):
    jwks = JwksServer()
    try:
        jwks.set_keys(b"first-secret")
        gw, _, _ = start(gateway, upstream, tmp_path,
                         '    plugins: [{name: jwt_auth, config: {jwks_url: "http://127.0.0.1:%d/jwks",'
                         ' jwks_refresh: 1, claims_to_headers: {sub: X-User}}}]' % jwks.port)
        first = hs_token({"sub": "alice"}, secret=b"first-secret")
        second = hs_token({"sub": "bob"}, secret=b"second-secret")

        def status(tok):
            return fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + tok)]).status

        deadline = time.time() + 5
        while status(first) != 200 and time.time() < deadline:
            time.sleep(0.05)
        assert status(first) == 200 and jwks.fetches >= 1
        assert status(second) == 401
        # the issuer rotates: the next refresh drops the old key and flushes the
        # token cache, so the cached first token is refused too
        jwks.set_keys(b"second-secret")
        deadline = time.time() + 5
        while status(second) != 200 and time.time() < deadline:
            time.sleep(0.1)
        assert status(second) == 200
        assert status(first) == 401
        # a broken answer keeps the keys
        jwks.body = b"not json"
        n = jwks.fetches
        deadline = time.time() + 5
        while jwks.fetches < n + 2 and time.time() < deadline:
            time.sleep(0.1)
        assert jwks.fetches >= n + 2 and status(second) == 200
    finally:
        jwks.close()
    assert "not a JWK set" in gw.log()


def test_jwt_auth_rs256_es256_and_jwks(gateway, upstream, tmp_path):
    rsa, ec = str(tmp_path / "rsa.pem"), str(tmp_path / "ec.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ec)
    rsa_pub, ec_pub = tmp_path / "rsa.pub", tmp_path / "ec.pub"
    rsa_pub.write_bytes(openssl("pkey", "-in", rsa, "-pubout"))
    ec_pub.write_bytes(openssl("pkey", "-in", ec, "-pubout"))
    modulus = openssl("rsa", "-pubin", "-in", str(rsa_pub), "-noout", "-modulus")
    n = bytes.fromhex(modulus.decode().strip().split("=", 1)[1])
    point = openssl("pkey", "-pubin", "-in", str(ec_pub), "-outform", "DER")[-64:]
    jwks = {"keys": [
        {"kty": "RSA", "kid": "r1", "n": b64u(n), "e": b64u((65537).to_bytes(3, "big"))},
        {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64u(point[:32]), "y": b64u(point[32:])},
    ]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    extra = ("    plugins: [{name: jwt_auth, config: {alg: [RS256, ES256], jwks_file: \"%s\"}}]\n"
             "  - name: pem\n    match: {paths: [/pem]}\n    upstream: u\n"
             "    plugins: [{name: jwt_auth, config: {alg: [RS256, HS256], key_file: \"%s\"}}]"
             % (tmp_path / "jwks.json", rsa_pub))
    gw, _, _ = start(gateway, upstream, tmp_path, extra)
    claims = {"sub": "bob", "exp": int(time.time()) + 60}
    for tok in (pk_token(rsa, "RS256", claims, "r1"), pk_token(ec, "ES256", claims, "e1"),
                pk_token(ec, "ES256", claims)):
        r = fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + tok)])
        assert r.status == 200, (tok, r.body)
    tok = pk_token(rsa, "RS256", claims)
    assert fetch(gw.port, "GET", "/pem/x", headers=[("Authorization", "Bearer " + tok)]).status == 200
    # alg confusion: an HS256 token whose secret is the public key's PEM text
    forged = hs_token(claims, secret=rsa_pub.read_bytes())
    doc = assert_error(fetch(gw.port, "GET", "/pem/x",
                             headers=[("Authorization", "Bearer " + forged)]), "unauthorized", 401)
    assert "signature" in doc["message"]
    # a tampered payload
    h, p, s = tok.split(".")
    bad = h + "." + b64u(json.dumps(dict(claims, sub="mallory")).encode()) + "." + s
    assert_error(fetch(gw.port, "GET", "/pem/x", headers=[("Authorization", "Bearer " + bad)]),
                 "unauthorized", 401)


def test_jwt_auth_claims_read_lazily_and_headers_from_c(gateway, upstream, tmp_path):
    """A new HMAC token is verified in one C call (cache: 0: every request);
    claims_to_headers copies string and number claims (escaped strings too,
    by the full verify), and a later plugin reads ctx.vars.jwt_claims, built
    on its first read, with every claim (nested ones, and for pairs())."""
    reader = (
        "local P = {}\nP.priority = 10\n"
        "function P.access(ctx, conf)\n"
        "  local c = ctx.vars.jwt_claims\n"
        "  local n = 0\n"
        "  for _ in pairs(gw.jwt.claims(c)) do n = n + 1 end\n"
        "  ctx:set_header('X-Count', tostring(n))\n"
        "  ctx:set_header('X-Sub', tostring(c.sub))\n"
        "  ctx:set_header('X-Deep', tostring(c.x and c.x.y[2]))\n"
        "end\nreturn P\n")
    gw, _, _ = start(gateway, upstream, tmp_path,
                     '    plugins: [{name: jwt_auth, config: {key: "s3cret", aud: api, cache: 0,'
                     ' claims_to_headers: {sub: X-User, n: X-N, x: X-X}}}, {name: reader}]',
                     plugins={"reader": reader})
    now = int(time.time())
    for claims, user, n in (
            ({"sub": "alice", "aud": "api", "n": 42, "x": {"y": [1, "two"]}, "exp": now + 60},
             "alice", "42"),
            ({"sub": 'al"ice', "aud": ["z", "api"], "n": 1.5, "x": {"y": [0, "two"]}},
             'al"ice', "1.5")):
        raw = json.dumps(claims)  # al\"ice: an escape, so the full verify
        for _ in range(2):
            r = fetch(gw.port, "GET", "/x", headers=[("Authorization", "Bearer " + hs_token(claims))])
            assert r.status == 200, raw
            assert r.echo_header("x-user") == user
            assert r.echo_header("x-n") == n and r.echo_header("x-x") is None
            assert r.echo_header("x-sub") == user
            assert r.echo_header("x-count") == str(len(claims))
            assert r.echo_header("x-deep") == "two"
    doc = assert_error(fetch(gw.port, "GET", "/x", headers=[
        ("Authorization", "Bearer " + hs_token({"aud": "api", "exp": now - 100}))]),
        "unauthorized", 401)
    assert "expired" in doc["message"]


KEYS_CONF = """\
upstreams:
  u:
    targets: [{address: "$a"}]
routes:
  - name: one
    upstream: u
    match: {paths: ["/one"]}
    plugins: [{name: jwt_auth, config: {alg: [HS256, HS384], key: "%s", claims_to_headers: {sub: X-User}}}]
  - name: two
    upstream: u
    match: {paths: ["/two"]}
    plugins: [{name: jwt_auth, config: {alg: [HS256, HS384], key: "%s", claims_to_headers: {sub: X-User}, cache: 0}}]
  - name: three
    upstream: u
    match: {paths: ["/three"]}
    plugins: [{name: jwt_auth, config: {key: "%s", cache: 0}}]
"""


def test_jwt_auth_keys_per_route_and_rotated_on_reload(gateway, upstream, tmp_path):
    """Each key's prepared HMAC state (its padded SHA-2 states, made once per
    key) verifies only its own tokens: two routes with two keys (one with the
    token cache, one without), a third route sharing the first key, a token
    under the wrong key refused on each; after a reload that swaps the keys
    the old tokens are refused and the new ones accepted."""
    a = upstream(name="a")
    gw = gateway(KEYS_CONF % ("key-one", "key-two", "key-one"), a=a,
                 allow_errors=[r"config reload"])
    exp = int(time.time()) + 600

    def status(path, secret, alg="HS256", sub="u"):
        tok = hs_token({"sub": sub, "exp": exp}, secret=secret, alg=alg)
        r = fetch(gw.port, "GET", path, headers=[("Authorization", "Bearer " + tok)])
        if r.status == 200:
            assert r.echo_header("x-user") in (sub, None), r.echo_header("x-user")
        return r.status

    def check(first, second):
        for n in range(3):  # again: cached (route one) and not (route two)
            for alg in ("HS256", "HS384"):
                sub = "u%d" % n
                assert status("/one", first, alg, sub) == 200, (alg, n)
                assert status("/two", second, alg, sub) == 200, (alg, n)
                assert status("/one", second, alg, sub) == 401, (alg, n)
                assert status("/two", first, alg, sub) == 401, (alg, n)
            assert status("/three", first, sub=sub) == 200
            assert status("/three", second, sub=sub) == 401
            assert status("/one", b"key-on", sub=sub) == 401  # a prefix of the key

    check(b"key-one", b"key-two")
    with open(gw.config_path, "w") as f:
        f.write(gw.config.replace('key: "key-one"', 'key: "KEY-A"').replace(
            'key: "key-two"', 'key: "key-one"').replace('key: "KEY-A"', 'key: "key-two"'))
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reloaded" in gw.log(), t(5)), gw.log_tail()
    check(b"key-two", b"key-one")


def test_jwt_auth_config_errors(gateway, upstream, tmp_path):
    from conftest import BIN
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listen: [\"127.0.0.1:1\"]\nupstreams:\n  u:\n    targets: [{address: \"127.0.0.1:2\"}]\n"
                   "routes:\n  - name: r\n    upstream: u\n"
                   "    plugins: [{name: jwt_auth, config: {alg: [none], key: k}}]\n")
    p = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, timeout=20)
    assert p.returncode != 0 and b"alg 'none' is never accepted" in p.stderr
    for plugin, msg in [
        ('{jwks_url: "https://idp.example/jwks"}', b"config.jwks_url must be http://IP:port/path"),
        ('{key: k, jwks_url: "http://127.0.0.1:1/j"}', b"exactly one of config.key"),
    ]:
        cfg.write_text(cfg.read_text().rsplit("    plugins:", 1)[0]
                       + "    plugins: [{name: jwt_auth, config: %s}]\n" % plugin)
        p = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, timeout=20)
        assert p.returncode != 0 and msg in p.stderr, p.stderr


# ---------------------------------------------------------------- other bundled plugins

def test_cors(gateway, upstream, tmp_path):
    gw, a, _ = start(gateway, upstream, tmp_path,
                     '    plugins: [{name: cors, config: {origins: ["https://a.example"],'
                     ' expose: [X-Total], credentials: true, max_age: 60}}]')
    r = fetch(gw.port, "OPTIONS", "/x", headers=[
        ("Origin", "https://a.example"), ("Access-Control-Request-Method", "PUT"),
        ("Access-Control-Request-Headers", "X-Token")])
    assert r.status == 204 and not a.requests
    assert r.header("access-control-allow-origin") == "https://a.example"
    assert r.header("access-control-allow-headers") == "X-Token"
    assert r.header("access-control-max-age") == "60"
    assert r.header("access-control-allow-credentials") == "true"
    r = fetch(gw.port, "GET", "/x", headers=[("Origin", "https://a.example")])
    assert r.status == 200 and r.header("access-control-allow-origin") == "https://a.example"
    assert r.header("access-control-expose-headers") == "X-Total"
    assert "Origin" in r.header_all("vary")
    r = fetch(gw.port, "GET", "/x", headers=[("Origin", "https://evil.example")])
    assert r.status == 200 and r.header("access-control-allow-origin") is None


def test_ip_restriction(gateway, upstream, tmp_path):
    gw, a, _ = start(gateway, upstream, tmp_path,
                     '    plugins: [{name: ip_restriction, config: {allow: ["127.0.0.0/8", "::1"]}}]\n'
                     '  - name: deny\n    match: {paths: [/deny]}\n    upstream: u\n'
                     '    plugins: [{name: ip_restriction, config: {deny: ["10.0.0.0/8", "127.0.0.1/32"]}}]\n'
                     '  - name: v6\n    match: {paths: [/v6]}\n    upstream: u\n'
                     '    plugins: [{name: ip_restriction, config: {allow: ["2001:db8::/32"]}}]')
    assert fetch(gw.port, "GET", "/x").status == 200
    assert_error(fetch(gw.port, "GET", "/deny/x"), "forbidden", 403)
    assert_error(fetch(gw.port, "GET", "/v6/x"), "forbidden", 403)
    assert len(a.requests) == 1


def test_request_transformer_and_response_headers(gateway, upstream, tmp_path):
    gw, a, _ = start(gateway, upstream, tmp_path,
                     '    plugins:\n'
                     '      - {name: request_transformer, config: {remove: [X-Debug], rename: {X-Old: X-New},'
                     ' set: {X-Env: prod}, add: {X-Tag: b}, rewrite_path: {pattern: "^/v1/(.*)",'
                     ' replacement: "/api/%1"}}}\n'
                     '      - {name: response_headers, config: {remove: [X-Connection],'
                     ' set: {X-Frame-Options: DENY}, add: {Set-Cookie: ["s=1", "t=2"]}}}')
    r = fetch(gw.port, "GET", "/v1/items?q=1", headers=[
        ("X-Debug", "1"), ("X-Old", "o1"), ("X-Old", "o2"), ("X-Env", "dev"), ("X-Tag", "a")])
    assert r.status == 200
    doc = r.json()
    assert doc["path"] == "/api/items?q=1"
    assert r.echo_header("x-debug") is None and r.echo_header("x-old") is None
    assert r.echo_header_all("x-new") == ["o1", "o2"]
    assert r.echo_header_all("x-env") == ["prod"]
    assert r.echo_header_all("x-tag") == ["a", "b"]
    assert r.header("x-connection") is None and r.header("x-frame-options") == "DENY"
    assert r.header_all("set-cookie") == ["s=1", "t=2"]


# ---------------------------------------------------------------- ordering

def prio(name, p):
    return ("local P = {priority = %d}\n"
            "function P.access(ctx)\n"
            "  local v = ctx:header('X-Order')\n"
            "  ctx:set_header('X-Order', (v and v .. ',' or '') .. '%s')\n"
            "end\nreturn P\n" % (p, name))


def test_priority_orders_the_chain(gateway, upstream, tmp_path):
    gw, _, _ = start(gateway, upstream, tmp_path,
                     "    plugins: [{name: low}, {name: high}, {name: mid}, {name: mid2}]",
                     {"low": prio("low", 1), "high": prio("high", 100), "mid": prio("mid", 50),
                      "mid2": prio("mid2", 50)})
    r = fetch(gw.port, "GET", "/x")
    assert r.echo_header("x-order") == "high,mid,mid2,low"


# ---------------------------------------------------------------- global plugins, schemas

GLOBAL_CONF = """\
plugin_path: ["$plugins"]
plugins:
  - {name: tagger, config: {tag: g}}
  - {name: low}
upstreams:
  u:
    targets: [{address: "$a"}]
routes:
  - name: off
    match: {paths: [/off]}
    upstream: u
    plugins: [{name: tagger, enabled: false}]
  - name: own
    match: {paths: [/own]}
    upstream: u
    plugins: [{name: tagger, config: {tag: own}}, {name: high}]
  - name: r
    upstream: u
"""

TAGGER = """
local P = {priority = 10}
P.schema = {fields = {tag = {type = "string", required = true, pattern = "^%l+$"},
                      mode = {type = "string", enum = {"a", "b"}, default = "a"}}}
function P.access(ctx, conf)
  local v = ctx:header('X-Order')
  ctx:set_header('X-Order', (v and v .. ',' or '') .. conf.tag .. ':' .. conf.mode)
end
return P
"""


def test_global_plugins_and_route_overrides(gateway, upstream, tmp_path):
    a = upstream(name="a")
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "tagger.lua").write_text(TAGGER)
    (d / "low.lua").write_text(prio("low", 1))
    (d / "high.lua").write_text(prio("high", 100))
    gw = gateway(GLOBAL_CONF, a=a, plugins=str(d))
    assert fetch(gw.port, "GET", "/x").echo_header("x-order") == "g:a,low"
    assert fetch(gw.port, "GET", "/off/x").echo_header("x-order") == "low"
    assert fetch(gw.port, "GET", "/own/x").echo_header("x-order") == "high,own:a,low"


def test_schema_errors_name_the_offending_value(tmp_path):
    from conftest import BIN
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "tagger.lua").write_text(TAGGER)
    base = ("listen: [\"127.0.0.1:1\"]\nplugin_path: [\"%s\"]\nupstreams:\n  u:\n"
            "    targets: [{address: \"127.0.0.1:2\"}]\nroutes:\n  - name: r\n    upstream: u\n"
            "    plugins:\n      - name: tagger\n        config:\n" % d)
    cases = [
        ("          tag: 12\n", ":12:16: routes[0].plugins[0]: plugin tagger: config.tag: a string expected"),
        ("          tag: ABC\n", ":12:16: routes[0].plugins[0]: plugin tagger: config.tag: does not match"),
        ("          tag: ok\n          mode: c\n", ":13:17: routes[0].plugins[0]: plugin tagger: config.mode: must be one of a, b"),
        ("          tag: ok\n          tog: 1\n", ":13:16: routes[0].plugins[0]: plugin tagger: config.tog: unknown key"),
        ("          mode: a\n", ":12:11: routes[0].plugins[0]: plugin tagger: config: 'tag' is required"),
    ]
    for body, want in cases:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(base + body)
        p = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, timeout=20)
        err = p.stderr.decode()
        assert p.returncode != 0 and (str(cfg) + want) in err, (want, err)


# ---------------------------------------------------------------- request bodies

BODY = """
local P = {body = {max = "1k"}}
function P.access(ctx)
  local b = ctx:body()
  ctx:set_header("X-Body-Len", #b)
  if ctx:header("X-Rewrite") then
    local doc = gw.json.decode(b)
    doc.added = true
    ctx:set_body(gw.json.encode(doc))
    assert(ctx:body():find("added"))
  end
  if b == "deny" then ctx:respond(403, "body says no") end
end
return P
"""

NOBODY = """
local P = {}
function P.access(ctx)
  local ok, err = pcall(ctx.body, ctx)
  ctx:set_header("X-Err", (not ok and err:find("not buffered")) and "yes" or "no")
end
return P
"""


def test_request_body_buffering_and_rewrite(gateway, upstream, tmp_path):
    from conftest import RawClient, chunked
    gw, a, _ = start(gateway, upstream, tmp_path,
                     "    plugins: [{name: body}]\n"
                     "  - name: plain\n    match: {paths: [/plain]}\n    upstream: u\n"
                     "    plugins: [{name: nobody}]",
                     {"body": BODY, "nobody": NOBODY})
    r = fetch(gw.port, "POST", "/x", body=b'{"a":1}',
              headers=[("Content-Type", "application/json"), ("X-Rewrite", "1")])
    assert r.status == 200, r.body
    doc = r.json()
    assert json.loads(doc["body"]) == {"a": 1, "added": True}
    assert r.echo_header("x-body-len") == "7"
    assert r.echo_header("content-length") == str(len(doc["body"]))
    # chunked in, buffered, sent on (still chunked: the core frames it)
    with RawClient(gw.port) as c:
        c.send(b"POST /x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked(b"hello ", b"world"))
        r = c.read_final_response("POST")[1]
    assert r.status == 200 and r.json()["body"] == "hello world"
    assert r.echo_header("x-body-len") == "11"
    # a GET has an empty body
    assert fetch(gw.port, "GET", "/x").echo_header("x-body-len") == "0"
    # the plugin sees the body before deciding
    r = fetch(gw.port, "POST", "/x", body=b"deny")
    assert r.status == 403 and r.body == b"body says no"
    # over P.body.max: 413, by Content-Length and by chunks
    n = len(a.requests)
    assert_error(fetch(gw.port, "POST", "/x", body=b"x" * 2000), "body_too_large", 413)
    with RawClient(gw.port) as c:
        c.send(b"POST /x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked(b"y" * 600, b"z" * 600))
        assert_error(c.read_final_response("POST")[1], "body_too_large", 413)
    assert len(a.requests) == n
    # a route without P.body: the body streams and ctx:body() says why it cannot
    r = fetch(gw.port, "POST", "/plain/x", body=b"abc")
    assert r.status == 200 and r.echo_header("x-err") == "yes" and r.json()["body"] == "abc"


def test_bundled_plugins_declare_schemas(tmp_path):
    from conftest import BIN
    base = ("listen: [\"127.0.0.1:1\"]\nupstreams:\n  u:\n    targets: [{address: \"127.0.0.1:2\"}]\n"
            "routes:\n  - name: r\n    upstream: u\n    plugins:\n")
    # (entry, the offending value as written, message): the error points at that value
    cases = [
        ("      - {name: cors, config: {origins: [a], credentials: yes-please}}\n", "yes-please",
         "plugin cors: config.credentials: a boolean expected"),
        ("      - {name: jwt_auth, config: {alg: [HS257], key: k}}\n", "HS257",
         "plugin jwt_auth: config.alg[1]: must be one of"),
        ("      - {name: ip_restriction, config: {allow: 10.0.0.0/8}}\n", "10.0.0.0/8",
         "plugin ip_restriction: config.allow: a list expected"),
        ("      - {name: request_transformer, config: {rewrite_path: {pattern: x}}}\n", "{pattern",
         "plugin request_transformer: config.rewrite_path: 'replacement' is required"),
        ("      - {name: response_headers, config: {sett: {}}}\n", "{}}",
         "plugin response_headers: config.sett: unknown key"),
    ]
    for body, token, msg in cases:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(base + body)
        p = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, timeout=20)
        err = p.stderr.decode()
        want = "%s:9:%d: routes[0].plugins[0]: %s" % (cfg, body.index(token) + 1, msg)
        assert p.returncode != 0 and want in err, (want, err)


# ---------------------------------------------------------------- JIT visibility

JITTY = """
local P = {}
local t = {a = 1, b = 2, c = 3}
function P.access(ctx)
  local n = 0
  for i = 1, 100 do
    for _, v in pairs(t) do n = n + v end
    if not pcall(error, i) then n = n + 1 end   -- a raised error: the trace aborts
  end
  local r = gw.jit_report().jitty
  ctx:set_header("X-Aborts", r and r.aborts or 0)
  ctx:set_header("X-Last", r and r.last or "")
end
return P
"""


def test_jit_report_counts_trace_aborts_per_plugin(gateway, upstream, tmp_path):
    gw, _, _ = start(gateway, upstream, tmp_path, "    plugins: [{name: jitty}]", {"jitty": JITTY})
    for _ in range(30):
        r = fetch(gw.port, "GET", "/x")
    assert r.status == 200
    assert int(r.echo_header("x-aborts")) > 0, r.json()["headers"]
    last = r.echo_header("x-last")
    assert "jitty.lua:" in last and "error " not in last, last  # a reason in words (jit.vmdef)


JITTY_CLOSURES = """
local P = {}
function P.access(ctx)
  local n = 0
  for i = 1, 5000 do
    local f = function() return i end   -- a closure per iteration: NYI, the trace aborts
    n = n + f()
  end
end
return P
"""


def test_status_shows_plugin_trace_aborts_per_worker(gateway, upstream, tmp_path):
    gw, _, _ = start(gateway, upstream, tmp_path,
                     "    plugins: [{name: jitty}, {name: calm}]",
                     {"jitty": JITTY_CLOSURES, "calm": "return {access = function(ctx) end}"})
    for _ in range(40):
        assert fetch(gw.port, "GET", "/x").status == 200
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % gw.admin_port, timeout=5) as r:
        status = json.loads(r.read())
    workers = status["plugins_jit"]
    assert [w["worker"] for w in workers] == [0], workers
    plugins = workers[0]["plugins"]
    assert "jitty" in plugins and "calm" not in plugins, plugins  # calm never aborts
    j = plugins["jitty"]
    assert j["aborts"] > 5, j
    assert "jitty.lua:6: NYI" in j["last"], j
    assert sum(j["reasons"].values()) == j["aborts"], j
    # the loop that keeps aborting is blacklisted: LuaJIT stops trying
    assert j["blacklisted"] >= 1, j
    assert len(json.dumps(workers)) < 4096


# ---------------------------------------------------------------- helper modules

HELPER = """
local M = {}
function M.greet(who) return "hello " .. who end
return M
"""

USES_HELPER = """
local util = require("util.greet")
local P = {}
function P.access(ctx)
  ctx:set_header("X-Greet", util.greet(ctx.route))
  local ok, err = pcall(require, "util.other")
  ctx:set_header("X-Late", ok and "loaded" or (err:find("load with the plugins") and "refused" or err))
end
return P
"""


def test_plugins_require_helpers_from_plugin_path(gateway, upstream, tmp_path):
    (tmp_path / "plugins" / "util").mkdir(parents=True)
    (tmp_path / "plugins" / "util" / "greet.lua").write_text(HELPER)
    (tmp_path / "plugins" / "util" / "other.lua").write_text(HELPER)
    gw, _, _ = start(gateway, upstream, tmp_path, "    plugins: [{name: uses}]", {"uses": USES_HELPER})
    r = fetch(gw.port, "GET", "/x")
    assert r.echo_header("x-greet") == "hello r"
    assert r.echo_header("x-late") == "refused"


# ---------------------------------------------------------------- response body filters

UPPER = """
local P = {priority = 10}
function P.body_filter(ctx, conf, chunk, eof)
  ctx.vars.seen = (ctx.vars.seen or 0) + #chunk
  if eof then return "[" .. ctx.vars.seen .. " bytes]" end
  return chunk:upper()
end
return P
"""

SUFFIX = """
local P = {priority = 1}
function P.body_filter(ctx, conf, chunk, eof)
  if ctx.path == "/boom" and not eof then error("filter failed") end
  if eof then return chunk .. "!" end
end
return P
"""


def test_body_filter_rewrites_response_bodies(gateway, upstream, tmp_path):
    from conftest import RawClient
    gw, _, _ = start(gateway, upstream, tmp_path,
                     "    plugins: [{name: suffix}, {name: upper}]",
                     {"upper": UPPER, "suffix": SUFFIX},
                     allow_errors=[r"filter failed"])
    r = fetch(gw.port, "GET", "/stream/100")
    assert r.status == 200 and r.framing == "chunked"
    from upstream import pattern_blocks
    want = b"".join(pattern_blocks(100)).upper() + b"[100 bytes]!"
    assert r.body == want
    r = fetch(gw.port, "GET", "/stream/70000?chunked=1")
    assert r.body.endswith(b"[70000 bytes]!") and len(r.body) == 70000 + len(b"[70000 bytes]!")
    # HTTP/1.0: no chunking, the close delimits the rewritten body
    with RawClient(gw.port) as c:
        c.send(b"GET /stream/10 HTTP/1.0\r\nHost: gw.test\r\n\r\n")
        r = c.read_final_response("GET")[1]
    assert r.status == 200 and r.header("content-length") is None and r.body.endswith(b"bytes]!")
    # HEAD: no body, no filter
    r = fetch(gw.port, "HEAD", "/stream/10")
    assert r.status == 200 and r.body == b""
    # a failing filter: 500 plugin_error while nothing was sent, else the
    # response is cut (never completed with altered or unfiltered bytes)
    from conftest import IncompleteResponse
    try:
        r = fetch(gw.port, "GET", "/boom")
        assert_error(r, "plugin_error", 500)
    except IncompleteResponse:
        pass
    assert fetch(gw.port, "GET", "/stream/5").status == 200


# ---------------------------------------------------------------- moongate test SPEC.lua

def test_moongate_test_runs_plugin_specs(tmp_path):
    import glob
    import os
    from conftest import BIN
    src = os.environ.get("MOONGATE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    specs = sorted(glob.glob(os.path.join(src, "plugins", "spec", "*_spec.lua")))
    assert len(specs) >= 4
    for spec in specs:
        p = subprocess.run([BIN, "test", spec], capture_output=True, timeout=60)
        out = p.stdout.decode()
        assert p.returncode == 0 and " 0 failed" in out, (spec, out, p.stderr.decode())
    bad = tmp_path / "bad_spec.lua"
    bad.write_text('config = [[\nupstreams: {u: {targets: [{address: "127.0.0.1:1"}]}}\n'
                   'routes: [{name: r, upstream: u, plugins: [{name: cors, config: {origins: ["*"]}}]}]\n]]\n'
                   'it("fails on purpose", function() assert.equal(1, 2) end)\n'
                   'it("answers", function() assert.equal(200, request{}.status) end)\n')
    p = subprocess.run([BIN, "test", str(bad)], capture_output=True, timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 1 and "FAILED fails on purpose" in out and "expected 1, got 2" in out
    assert "ok     answers" in out and "1 passed, 1 failed" in out
    bad.write_text("config = 'routes: ['\n")
    p = subprocess.run([BIN, "test", str(bad)], capture_output=True, timeout=60)
    assert p.returncode == 2 and b"YAML" in p.stderr
