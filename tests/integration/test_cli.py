"""Command line (DESIGN section 2): -V, -t with file:line:col errors, -s, signals."""

import re
import signal
import subprocess

from conftest import BIN, RawClient, fetch, ms, t, wait_until

GOOD = """\
listen: ["127.0.0.1:1"]
workers: 1
access_log: off
upstreams:
  u1:
    targets:
      - {address: "127.0.0.1:2", weight: 1}
    timeouts: {connect: 1s, send: 10s, read: 30s}
routes:
  - name: r1
    match:
      paths: ["/"]
    upstream: u1
"""


def run(*args, timeout=None):
    p = subprocess.run([BIN, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout or t(20))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def write(tmp_path, text, name="conf.yaml"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write(text)
    return path


def pos(text, needle, after=None):
    """1-based (line, col) of the first `needle` (after the first `after`)."""
    start = text.index(after) if after else 0
    i = text.index(needle, start)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def find_error(out, path):
    m = re.search(re.escape(path) + r":(\d+):(\d+): ([A-Za-z0-9_.\[\]-]+): (.+)", out)
    assert m, "no 'FILE:LINE:COL: key.path: message' error in the output:\n" + out
    return int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)


def validate_error(tmp_path, text):
    path = write(tmp_path, text)
    rc, out, err = run("-t", "-c", path)
    assert rc == 1, "expected exit 1, got %d\nstdout: %s\nstderr: %s" % (rc, out, err)
    assert "configuration ok" not in out + err
    return path, out + err


def test_version():
    rc, out, err = run("-V")
    assert rc == 0, err
    text = out if out.strip() else err
    assert text.splitlines()[0].startswith("moongate "), text


def test_validate_good_config(tmp_path):
    path = write(tmp_path, GOOD)
    rc, out, err = run("-t", "-c", path)
    assert rc == 0, out + err
    assert "configuration ok" in out + err


def test_validate_minimal_config(tmp_path):
    # every section but listen, upstreams and routes is optional; a route without
    # match matches everything
    path = write(tmp_path, 'listen: ["127.0.0.1:1"]\nupstreams:\n  u:\n    targets: [{address: "127.0.0.1:2"}]\n'
                           'routes:\n  - name: all\n    upstream: u\n')
    rc, out, err = run("-t", "-c", path)
    assert rc == 0, out + err
    assert "configuration ok" in out + err


def test_validate_bad_duration_names_file_line_col(tmp_path):
    text = GOOD.replace("connect: 1s", "connect: abc")
    path, out = validate_error(tmp_path, text)
    line, col, key, msg = find_error(out, path)
    kl, kc = pos(text, "connect: abc")
    vl, vc = pos(text, "abc")
    assert line == kl, out
    assert col in (kc, vc), out
    assert key == "upstreams.u1.timeouts.connect", out


def test_validate_bad_size(tmp_path):
    text = GOOD + "client:\n  max_body_size: 12xyz\n"
    path, out = validate_error(tmp_path, text)
    line, col, key, msg = find_error(out, path)
    kl, kc = pos(text, "max_body_size")
    assert line == kl, out
    assert col in (kc, pos(text, "12xyz")[1]), out
    assert key == "client.max_body_size", out


def test_validate_unknown_key(tmp_path):
    text = GOOD.replace("    timeouts: {", "    bogus_key: 1\n    timeouts: {")
    path, out = validate_error(tmp_path, text)
    line, col, key, msg = find_error(out, path)
    assert (line, col) == pos(text, "bogus_key"), out
    assert key in ("upstreams.u1.bogus_key", "upstreams.u1"), out
    assert "bogus_key" in key + msg, out


def test_validate_unknown_top_level_key(tmp_path):
    text = GOOD + "listne: []\n"
    path, out = validate_error(tmp_path, text)
    line, col, key, msg = find_error(out, path)
    assert (line, col) == pos(text, "listne"), out
    assert "listne" in key + msg, out


def test_validate_wrong_type(tmp_path):
    text = GOOD + "client:\n  header_timeout: [1s, 2s]\n"
    path, out = validate_error(tmp_path, text)
    line, col, key, msg = find_error(out, path)
    assert line == pos(text, "header_timeout")[0], out
    assert col in (pos(text, "header_timeout")[1], pos(text, "[1s, 2s]")[1]), out
    assert key == "client.header_timeout", out


def test_validate_route_naming_missing_upstream(tmp_path):
    text = GOOD.replace("    upstream: u1", "    upstream: nowhere")
    path, out = validate_error(tmp_path, text)
    line, col, key, msg = find_error(out, path)
    assert line == pos(text, "upstream: nowhere")[0], out
    assert col in (pos(text, "upstream: nowhere")[1], pos(text, "nowhere")[1]), out
    assert re.fullmatch(r"routes(\.0|\[0\]|\.r1)\.upstream", key), out
    assert "nowhere" in msg, out


def test_validate_missing_listen(tmp_path):
    text = GOOD.replace('listen: ["127.0.0.1:1"]\n', "")
    path, out = validate_error(tmp_path, text)
    assert path in out and "listen" in out, out


def test_validate_yaml_syntax_error(tmp_path):
    text = GOOD.replace("    upstream: u1", "    upstream: [u1")
    path, out = validate_error(tmp_path, text)
    assert re.search(re.escape(path) + r":\d+:\d+: ", out), out


def test_validate_missing_file(tmp_path):
    rc, out, err = run("-t", "-c", str(tmp_path / "nope.yaml"))
    assert rc == 1, out + err
    assert "nope.yaml" in out + err


# -- running, signals, -s -----------------------------------------------------

RUN_CONF = """\
upstreams:
  u1:
    targets: [{address: "$up"}]
routes:
  - name: r1
    match: {paths: ["/"]}
    upstream: u1
"""

RELOADED = RUN_CONF + """\
  - name: r2
    match: {paths: ["/new"]}
    strip_prefix: true
    upstream: u1
"""


def test_sigterm_graceful_exit_0_and_pid_file(gateway, upstream):
    up = upstream()
    gw = gateway(RUN_CONF, up=up)
    with open(gw.pid_file) as f:
        assert int(f.read().strip()) == gw.pid
    assert fetch(gw.port, "GET", "/x").status == 200
    assert gw.stop() == 0


def test_sigterm_finishes_in_flight_request(gateway, upstream):
    up = upstream()
    gw = gateway(RUN_CONF, up=up, drain_timeout=ms(5))
    with RawClient(gw.port) as c:
        c.request("GET", "/slow/%d" % int(t(0.5) * 1000))
        assert up.wait_requests(1, t(5))
        gw.signal(signal.SIGTERM)
        r = c.read_response()
        assert r.status == 200
    assert gw.proc.wait(t(8)) == 0


def test_signal_stop_command(gateway, upstream):
    up = upstream()
    gw = gateway(RUN_CONF, up=up)
    gw.stopped_by_test = True
    rc, out, err = run("-s", "stop", "-c", gw.config_path)
    assert rc == 0, out + err
    assert gw.proc.wait(t(8)) == 0


def test_signal_reload_command_applies_new_routes(gateway, upstream):
    up = upstream()
    gw = gateway(RUN_CONF, up=up)
    r = fetch(gw.port, "GET", "/new/x")
    assert r.json()["path"] == "/new/x"
    with open(gw.config_path, "w") as f:
        f.write(gw.config.replace(RUN_CONF.replace("$up", up.address),
                                  RELOADED.replace("$up", up.address)))
    rc, out, err = run("-s", "reload", "-c", gw.config_path)
    assert rc == 0, out + err

    def reloaded():
        return fetch(gw.port, "GET", "/new/x").json()["path"] == "/x"

    assert wait_until(reloaded, t(5), 0.05), gw.log_tail()


def test_invalid_reload_keeps_serving(gateway, upstream):
    up = upstream()
    gw = gateway(RUN_CONF, up=up, allow_errors=[r"config reload failed"])
    bad = gw.config + "bogus_key: 1\n"
    with open(gw.config_path, "w") as f:
        f.write(bad)
    gw.signal(signal.SIGHUP)
    line, col = pos(bad, "bogus_key")
    needle = "config reload failed: %s:%d:%d" % (gw.config_path, line, col)
    assert wait_until(lambda: needle in gw.log(), t(5), 0.05), gw.log_tail()
    assert gw.alive()
    assert fetch(gw.port, "GET", "/x").status == 200
