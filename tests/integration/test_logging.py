"""Logs an operator expects (issue 21, DESIGN 10.8): the error log's level and
format from the config, breaker and bulkhead changes logged once per change,
and access_log_fields choosing the access log's fields and their order."""

import json
import signal
import threading
import time

from conftest import assert_error, fetch, free_port, t, wait_until

PRE = """\
listen: ["127.0.0.1:$port"]
admin: {listen: "127.0.0.1:$admin_port"}
workers: 1
pid_file: "$pid_file"
drain_timeout: 100ms
"""

SIMPLE = PRE + """\
log: {level: %s, format: %s}
upstreams:
  a: {targets: [{address: "$up"}]}
routes:
  - {name: a, upstream: a}
"""


def test_json_format_and_level_from_config(gateway, upstream):
    gw = gateway(SIMPLE % ("info", "json"), full=True, up=upstream())
    assert wait_until(lambda: "listening on" in gw.log(), t(3))
    lines = [json.loads(l) for l in gw.log().splitlines()]
    assert any(l["level"] == "info" and l["msg"].startswith("listening on") for l in lines)
    assert all(set(l) == {"time", "level", "msg"} and l["time"].endswith("Z") for l in lines)


def test_level_warn_hides_info_and_environment_overrides(gateway, upstream):
    gw = gateway(SIMPLE % ("warn", "text"), full=True, up=upstream())
    assert fetch(gw.port, "GET", "/x").status == 200
    gw.signal(signal.SIGHUP)  # a reload is logged at info: hidden too
    time.sleep(0.3)
    assert "[info]" not in gw.log(), gw.log()
    gw2 = gateway(SIMPLE % ("error", "text"), full=True, up=upstream(),
                  env={"MOONGATE_LOG_LEVEL": "info"})
    assert wait_until(lambda: "[info] listening on" in gw2.log(), t(3))


def test_reload_switches_the_format(gateway, upstream):
    gw = gateway(SIMPLE % ("info", "text"), full=True, up=upstream())
    with open(gw.config_path, "w") as f:
        f.write(gw.config.replace("format: text", "format: json"))
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: '"msg":"config reloaded' in gw.log(), t(3)), gw.log_tail()


BREAKER = PRE + """\
upstreams:
  dead:
    targets: [{address: "127.0.0.1:$dead"}]
    retry: {max_retries: 0}
    circuit_breaker: {consecutive_failures: 2, failure_rate: 0, open_for: 300ms}
  ok:
    targets: [{address: "$up"}]
    circuit_breaker: {consecutive_failures: 1, failure_rate: 0, open_for: 100ms}
routes:
  - {name: dead, upstream: dead, match: {paths: ["/dead"]}}
  - {name: ok, upstream: ok}
"""


def test_breaker_changes_logged_once_each(gateway, upstream):
    state = {"fail": True}

    def handler(conn, req):
        conn.read_body(req)
        conn.respond(503 if state["fail"] else 200, b"x")

    gw = gateway(BREAKER, full=True, up=upstream(handler), dead=free_port(),
                 allow_errors=[r"upstream"])
    for _ in range(10):  # 2 failures trip it, 8 answered 503 circuit_open
        fetch(gw.port, "GET", "/dead/x")
    log = gw.log()
    assert log.count("circuit breaker open: upstream dead target 127.0.0.1:") == 1, log
    # ok: one 503 trips it; after open_for a probe succeeds and closes it.
    assert fetch(gw.port, "GET", "/ok").status == 503
    state["fail"] = False
    assert wait_until(lambda: fetch(gw.port, "GET", "/ok").status == 200, t(3))
    for _ in range(5):
        assert fetch(gw.port, "GET", "/ok").status == 200
    log = gw.log()
    target = "upstream ok target "
    assert log.count("circuit breaker open: " + target) == 1, log
    assert log.count("circuit breaker half-open: " + target) == 1, log
    assert log.count("circuit breaker closed: " + target) == 1, log
    assert log.index("open: " + target) < log.index("half-open: " + target) < \
        log.index("closed: " + target)


BULKHEAD = PRE + """\
upstreams:
  slow:
    targets: [{address: "$up"}]
    bulkhead: {max_concurrent: 1, max_queue: 0}
routes:
  - {name: slow, upstream: slow}
"""


def test_bulkhead_saturation_logged_once_per_change(gateway, upstream):
    release = threading.Event()

    def handler(conn, req):
        conn.read_body(req)
        if req.path.startswith("/hold"):
            release.wait(t(5))
        conn.respond(200, b"ok")

    gw = gateway(BULKHEAD, full=True, up=upstream(handler))
    held = threading.Thread(target=lambda: fetch(gw.port, "GET", "/hold"))
    held.start()
    try:
        time.sleep(0.2)  # the held request has its slot
        for _ in range(20):
            assert_error(fetch(gw.port, "GET", "/x"), "bulkhead_full", 503)
    finally:
        release.set()
        held.join(t(5))
    assert fetch(gw.port, "GET", "/x").status == 200
    log = gw.log()
    assert log.count("bulkhead full: upstream slow") == 1, log
    assert log.count("bulkhead: upstream slow admits requests again (20 rejected") == 1, log


FIELDS = PRE + """\
access_log: "$log"
access_log_fields: [status, host, user_agent, upstream_status, protocol, tls, route, duration]
upstreams:
  a: {targets: [{address: "$up"}]}
routes:
  - {name: a, upstream: a}
"""


def test_access_log_fields_choose_and_order(gateway, upstream, tmp_path):
    log = tmp_path / "access.log"

    def handler(conn, req):
        conn.read_body(req)
        conn.respond(201, b"made")

    gw = gateway(FIELDS, full=True, up=upstream(handler), log=str(log))
    fetch(gw.port, "GET", "/x", headers=[("User-Agent", "probe/1.0")], host="api.example.org")
    fetch(gw.port, "GET", "/y", version="HTTP/1.0", host="old.example.org")
    assert wait_until(lambda: log.exists() and log.read_text().count("\n") == 2, t(3))
    a, b = [json.loads(l) for l in log.read_text().splitlines()]
    assert list(a) == ["status", "host", "user_agent", "upstream_status", "protocol",
                       "tls_protocol", "tls_cipher", "tls_client_subject", "route", "duration"]
    assert a["status"] == 201 and a["upstream_status"] == 201 and a["host"] == "api.example.org"
    assert a["user_agent"] == "probe/1.0" and a["protocol"] == "http/1.1"
    assert a["tls_protocol"] is None and a["route"] == "a"
    assert b["protocol"] == "http/1.0" and b["user_agent"] is None
