"""Admin listener, Prometheus golden signals and the JSON access log (issue 7,
DESIGN section 7): scripted traffic, then exact counts."""

import json
import os
import signal
import time
import urllib.request

from conftest import assert_error, fetch, free_port, ms, samples, t, wait_until

CONF = """\
upstreams:
  good:
    targets: [{address: "$good"}]
  flaky:
    targets: [{address: "$flaky"}]
    timeouts: {read: %s}
    retry: {max_retries: 1, backoff: {base: 1ms, max: 2ms}}
    circuit_breaker: {consecutive_failures: 3, failure_rate: 0, open_for: 30s}
  dead:
    targets: [{address: "127.0.0.1:$dead_port"}]
    retry: {max_retries: 0}
routes:
  - name: good
    match: {paths: ["/good"]}
    upstream: good
  - name: flaky
    match: {paths: ["/flaky"]}
    upstream: flaky
  - name: dead
    match: {paths: ["/dead"]}
    upstream: dead
""" % ms(0.3)

ALLOW = [r"(?i)upstream"]


def admin_get(gw, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (gw.admin_port, path), timeout=t(5)) as r:
        return r.status, r.headers, r.read().decode()


def value(s, name, **labels):
    return s.get((name, frozenset(labels.items())), 0.0)


def scripted_traffic(gw, flaky_state):
    assert fetch(gw.port, "GET", "/good/1").status == 200
    assert fetch(gw.port, "GET", "/good/2").status == 200
    assert_error(fetch(gw.port, "GET", "/nowhere"), "no_route", 404)
    assert_error(fetch(gw.port, "GET", "/dead/x"), "upstream_unavailable", 502)
    flaky_state["mode"] = "retry-once"
    assert fetch(gw.port, "GET", "/flaky/retry").status == 200     # 1 retry
    flaky_state["mode"] = "stall"
    assert_error(fetch(gw.port, "GET", "/flaky/slow"), "upstream_timeout", 504)  # 2 timeouts
    assert_error(fetch(gw.port, "GET", "/flaky/slow"), "circuit_open", 503)      # 3rd failure trips...


def make_flaky(upstream):
    state = {"mode": "ok", "n": 0}

    def handler(conn, req):
        conn.read_body(req)
        state["n"] += 1
        if state["mode"] == "retry-once":
            state["mode"] = "ok"
            conn.respond(502, b"once")
        elif state["mode"] == "stall":
            time.sleep(t(1))
            return False
        else:
            conn.respond(200, b"ok")
    return upstream(handler), state


def test_metrics_count_scripted_traffic_exactly(gateway, upstream):
    good = upstream()
    flaky, state = make_flaky(upstream)
    gw = gateway(CONF, good=good, flaky=flaky, dead_port=free_port(), allow_errors=ALLOW)
    scripted_traffic(gw, state)
    # An exchange is counted when it ends, which may be a moment after the
    # client read its last byte: scrape until the last request shows.
    scrape = {}

    def counted():
        scrape["r"] = admin_get(gw, "/metrics")
        return value(samples(scrape["r"][2]), "moongate_requests_total", route="flaky",
                     code="503") >= 1
    wait_until(counted, t(2), 0.05)
    status, headers, text = scrape["r"]
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    s = samples(text)
    assert value(s, "moongate_requests_total", route="good", code="200") == 2
    assert value(s, "moongate_requests_total", route="", code="404") == 1
    assert value(s, "moongate_requests_total", route="dead", code="502") == 1
    assert value(s, "moongate_requests_total", route="flaky", code="200") == 1
    assert value(s, "moongate_requests_total", route="flaky", code="504") == 1
    assert value(s, "moongate_requests_total", route="flaky", code="503") == 1
    assert value(s, "moongate_retries_total", upstream="flaky") >= 1
    assert value(s, "moongate_upstream_requests_total", upstream="dead",
                 target="127.0.0.1:%s" % gw.subs["dead_port"], outcome="connect_failure") == 1
    flaky_target = flaky.address
    assert value(s, "moongate_circuit_state", upstream="flaky", target=flaky_target) == 2
    assert value(s, "moongate_circuit_state", upstream="good", target=good.address) == 0
    # histograms: cumulative, +Inf == _count
    count = value(s, "moongate_request_duration_seconds_count", route="good")
    assert count == 2
    assert value(s, "moongate_request_duration_seconds_bucket", route="good", le="+Inf") == count
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in s.items()
                      if k[0] == "moongate_request_duration_seconds_bucket"
                      and dict(k[1]).get("route") == "good" and dict(k[1])["le"] != "+Inf"))
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert value(s, "moongate_request_duration_seconds_sum", route="good") > 0
    for family in ("requests_total", "request_duration_seconds", "requests_in_flight",
                   "upstream_requests_total", "connections"):
        assert text.count("# TYPE moongate_%s " % family) == 1, family


def test_status_reflects_a_tripped_breaker(gateway, upstream):
    good = upstream()
    flaky, state = make_flaky(upstream)
    gw = gateway(CONF, good=good, flaky=flaky, dead_port=free_port(), allow_errors=ALLOW)
    scripted_traffic(gw, state)
    status, _, body = admin_get(gw, "/status")
    assert status == 200
    doc = json.loads(body)
    ups = {u["name"]: u for u in doc["upstreams"]}
    assert ups["flaky"]["targets"][0]["circuit"] in ("open", 2)
    assert ups["good"]["targets"][0]["circuit"] in ("closed", 0)
    assert doc["config"]["version"] >= 1


def test_healthz(gateway, upstream):
    gw = gateway(CONF, good=upstream(), flaky=upstream(), dead_port=free_port())
    status, _, body = admin_get(gw, "/healthz")
    assert status == 200 and body.strip() == "ok"


def test_access_log_lines_match_requests(gateway, upstream, tmp_path):
    good = upstream()
    log = tmp_path / "access.log"
    gw = gateway(CONF, good=good, flaky=upstream(), dead_port=free_port(), access_log=str(log),
                 allow_errors=ALLOW)
    fetch(gw.port, "GET", "/good/a?x=1", headers=[("X-Request-Id", "req-abc")])
    fetch(gw.port, "GET", "/nowhere")
    fetch(gw.port, "GET", "/dead/x")
    assert wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, t(3))
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    a, b, c = lines
    assert a["request_id"] == "req-abc" and a["method"] == "GET" and a["path"] == "/good/a?x=1"
    assert a["status"] == 200 and a["route"] == "good" and a["upstream"] == good.address
    assert a["attempts"] == 1 and a["error"] is None and a["duration"] >= a["upstream_duration"] >= 0
    assert b["status"] == 404 and b["route"] is None and b["error"] == "no_route"
    assert c["status"] == 502 and c["error"] == "upstream_unavailable"
    for l in lines:
        assert set(l) >= {"time", "request_id", "client_ip", "method", "path", "status",
                          "bytes_in", "bytes_out", "route", "upstream", "attempts", "duration",
                          "upstream_duration", "error"}


def test_access_log_reopens_on_sigusr1(gateway, upstream, tmp_path):
    log = tmp_path / "access.log"
    gw = gateway(CONF, good=upstream(), flaky=upstream(), dead_port=free_port(),
                 access_log=str(log))
    fetch(gw.port, "GET", "/good/1")
    assert wait_until(lambda: log.exists() and log.read_text().count("\n") == 1, t(3))
    os.rename(log, tmp_path / "access.log.1")
    gw.signal(signal.SIGUSR1)
    assert wait_until(lambda: "access log reopened" in gw.log(), t(3))
    fetch(gw.port, "GET", "/good/2")
    assert wait_until(lambda: log.exists() and "/good/2" in log.read_text(), t(3))
    assert "/good/2" not in (tmp_path / "access.log.1").read_text()


def test_reload_is_counted(gateway, upstream):
    gw = gateway(CONF, good=upstream(), flaky=upstream(), dead_port=free_port(),
                 allow_errors=[r"config reload failed"])
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reloaded" in gw.log(), t(3))
    with open(gw.config_path, "a") as f:
        f.write("bogus: 1\n")
    gw.signal(signal.SIGHUP)
    assert wait_until(lambda: "config reload failed" in gw.log(), t(3))
    s = samples(admin_get(gw, "/metrics")[2])
    assert value(s, "moongate_config_reloads_total", result="success") == 1
    assert value(s, "moongate_config_reloads_total", result="failure") == 1
