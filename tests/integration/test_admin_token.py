"""The admin listener's bearer token and its own connection budget (issue 21,
DESIGN 10.6): /healthz stays open, everything else needs the token, and idle
admin connections cannot make /healthz fail."""

import json
import signal
import socket
import urllib.error
import urllib.request

from conftest import t, wait_until

CONF = """\
listen: ["127.0.0.1:$port"]
workers: 1
admin: {listen: "127.0.0.1:$admin_port", %s}
pid_file: "$pid_file"
drain_timeout: 100ms
upstreams:
  a: {targets: [{address: "$up"}]}
routes:
  - {name: a, upstream: a}
"""


def admin(gw, path, token=None, auth=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (gw.admin_port, path))
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    if auth is not None:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=t(5)) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_token_required_except_healthz(gateway, upstream):
    gw = gateway(CONF % 'token: "s3cr3t-t0ken"', full=True, up=upstream())
    assert admin(gw, "/healthz")[0] == 200
    for path in ("/metrics", "/status", "/", "/status/live", "/nowhere"):
        status, headers, body = admin(gw, path)
        assert status == 401, path
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": "unauthorized", "status": 401}
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert admin(gw, "/metrics", token="s3cr3t-t0ke")[0] == 401      # a prefix
    assert admin(gw, "/metrics", token="s3cr3t-t0ken!")[0] == 401    # longer
    assert admin(gw, "/metrics", auth="Basic czNjcjN0LXQwa2Vu")[0] == 401
    status, _, body = admin(gw, "/metrics", token="s3cr3t-t0ken")
    assert status == 200 and "moongate_build_info" in body
    assert admin(gw, "/status", auth="bearer s3cr3t-t0ken")[0] == 200  # scheme is case-insensitive
    assert admin(gw, "/nowhere", token="s3cr3t-t0ken")[0] == 404


def test_token_file(gateway, upstream, tmp_path):
    (tmp_path / "admin.token").write_text("from-a-file\n")
    gw = gateway(CONF % 'token_file: "%s"' % (tmp_path / "admin.token"), full=True, up=upstream())
    assert admin(gw, "/metrics")[0] == 401
    assert admin(gw, "/metrics", token="from-a-file")[0] == 200


def test_no_token_configured_means_open(gateway, upstream):
    gw = gateway(CONF % "token: null", full=True, up=upstream())
    assert admin(gw, "/metrics")[0] == 200


def test_idle_admin_connections_cannot_make_healthz_fail(gateway, upstream):
    gw = gateway(CONF % 'token: "x"', full=True, up=upstream())
    idle = []
    try:
        for i in range(100):  # more than the admin budget (64)
            s = socket.create_connection(("127.0.0.1", gw.admin_port), timeout=t(5))
            if i % 2:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # an unfinished head
            idle.append(s)
        for _ in range(3):
            status, _, body = admin(gw, "/healthz")
            assert status == 200 and body.strip() == "ok"
    finally:
        for s in idle:
            s.close()


def test_reload_changes_the_token(gateway, upstream):
    gw = gateway(CONF % 'token: "old"', full=True, up=upstream())
    assert admin(gw, "/metrics", token="old")[0] == 200
    with open(gw.config_path, "w") as f:
        f.write(gw.config.replace('token: "old"', 'token: "new"'))
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reloaded" in gw.log(), t(5))
    assert wait_until(lambda: admin(gw, "/metrics", token="new")[0] == 200, t(3))
    assert admin(gw, "/metrics", token="old")[0] == 401
