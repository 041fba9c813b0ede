"""Config variables, secret files and includes (issue 21, DESIGN 10.8) through
the real binary: `moongate -t` reports an error inside an included file with
that file's own path:line:col, and a reload with a broken include keeps the old
config serving."""

import os
import signal
import subprocess

from conftest import BIN, fetch, t, wait_until

MAIN = """\
listen: ["127.0.0.1:$port"]
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
drain_timeout: 100ms
include: ["../inc/*.yaml"]
upstreams:
  a: {targets: [{address: "$${MG_T_UP_A}"}]}
routes:
  - {name: a, upstream: a, match: {paths: ["/a"]}}
"""

INC_B = """\
upstreams:
  b:
    targets: [{address: "%s"}]
routes:
  - {name: b, upstream: b, match: {paths: ["/b"]}}
"""


def run_t(path, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([BIN, "-t", "-c", str(path)], capture_output=True, text=True, env=e,
                       timeout=t(10))
    return p.returncode, p.stdout + p.stderr


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_variables_and_included_files_serve(gateway, upstream, tmp_path):
    a, b = upstream(), upstream()
    write(tmp_path / "inc" / "b.yaml", INC_B % b.address)
    gw = gateway(MAIN, full=True, env={"MG_T_UP_A": a.address})
    assert fetch(gw.port, "GET", "/a/1").status == 200
    assert fetch(gw.port, "GET", "/b/1").status == 200
    assert len(a.requests) == 1 and len(b.requests) == 1


def test_t_names_unset_variable_with_its_position(tmp_path):
    conf = write(tmp_path / "gw.yaml", 'listen: ["127.0.0.1:1"]\n'
                                       'upstreams:\n  a: {targets: [{address: "${MG_T_NOPE}"}]}\n'
                                       'routes: [{name: r, upstream: a}]\n')
    env = dict(os.environ)
    env.pop("MG_T_NOPE", None)
    p = subprocess.run([BIN, "-t", "-c", str(conf)], capture_output=True, text=True, env=env,
                       timeout=t(10))
    assert p.returncode == 1
    assert p.stderr.startswith("%s:3:27: environment variable 'MG_T_NOPE' is not set" % conf), \
        p.stderr
    rc, out = run_t(conf, {"MG_T_NOPE": "127.0.0.1:9"})
    assert rc == 0 and "configuration ok" in out


def test_t_reports_error_in_included_file_with_its_own_position(tmp_path):
    main = write(tmp_path / "main.yaml", 'include: "conf.d/*.yaml"\nlisten: ["127.0.0.1:1"]\n'
                                         'upstreams:\n  a: {targets: [{address: "127.0.0.1:2"}]}\n'
                                         'routes: [{name: r, upstream: a}]\n')
    bad = write(tmp_path / "conf.d" / "20-bad.yaml",
                "# comment\nupstreams:\n  c:\n    targets: [{address: \"127.0.0.1:3\"}]\n"
                "    keepalive: lots\n")
    write(tmp_path / "conf.d" / "10-ok.yaml", "routes: [{name: r2, upstream: a}]\n")
    rc, out = run_t(main)
    assert rc == 1
    assert out.startswith("%s:5:16: upstreams.c.keepalive: invalid integer 'lots'" % bad), out
    # The same upstream in two files is an error naming both places.
    bad.write_text("upstreams:\n  a: {targets: [{address: \"127.0.0.1:3\"}]}\n")
    rc, out = run_t(main)
    assert rc == 1
    assert out.startswith("%s:2:3: upstreams.a: defined twice (first at %s:4:3)" % (bad, main)), out
    bad.unlink()
    rc, out = run_t(main)
    assert rc == 0, out


def test_reload_with_broken_include_keeps_old_config(gateway, upstream, tmp_path):
    a, b = upstream(), upstream()
    inc = write(tmp_path / "inc" / "b.yaml", INC_B % b.address)
    inc = inc.resolve()
    gw = gateway(MAIN, full=True, env={"MG_T_UP_A": a.address},
                 allow_errors=[r"config reload failed"])
    assert fetch(gw.port, "GET", "/b/1").status == 200
    inc.write_text("routes:\n  - {name: b2, upstream: nowhere}\n")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reload failed: %s:2:" % inc in gw.log(), t(5)), gw.log_tail()
    assert fetch(gw.port, "GET", "/b/2").status == 200  # the old routes still serve
    assert len(b.requests) == 2
    inc.write_text(INC_B % b.address + "  - {name: c, upstream: a, match: {paths: [\"/c\"]}}\n")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reloaded" in gw.log(), t(5)), gw.log_tail()
    assert fetch(gw.port, "GET", "/c/1").status == 200
    assert len(a.requests) == 1


def test_t_names_included_file_for_a_plugin_error(tmp_path):
    main = write(tmp_path / "main.yaml", 'include: [routes.yaml]\nlisten: ["127.0.0.1:1"]\n'
                                         'upstreams:\n  a: {targets: [{address: "127.0.0.1:2"}]}\n'
                                         'routes: []\n')
    routes = write(tmp_path / "routes.yaml",
                   "routes:\n  - name: r\n    upstream: a\n    plugins:\n"
                   "      - {name: does_not_exist}\n")
    rc, out = run_t(main)
    assert rc == 1
    assert "%s:5:9: routes[0].plugins[0]: plugin does_not_exist" % routes in out, out
