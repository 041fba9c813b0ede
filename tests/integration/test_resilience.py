"""Retries, circuit breakers, bulkheads and the route deadline (issue 4,
DESIGN sections 3-5), through the real binary against real upstreams."""

import threading
import time

from conftest import RawClient, assert_error, fetch, free_port, ms, t

UPSTREAMS_AB = """\
upstreams:
  u:
    targets: [{address: "$a"}, {address: "$b"}]
    retry: {max_retries: 2, backoff: {base: 1ms, max: 5ms}}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: u
"""

ALLOW = [r"(?i)upstream"]


def status_handler(code):
    def handler(conn, req):
        conn.read_body(req)
        conn.respond(code, b"from %d" % code)
    return handler


def test_get_retried_on_502_on_the_other_target(gateway, upstream):
    bad, good = upstream(status_handler(502)), upstream()
    gw = gateway(UPSTREAMS_AB, a=bad, b=good, allow_errors=ALLOW)
    for i in range(4):
        r = fetch(gw.port, "GET", "/r%d" % i)
        assert r.status == 200, r.body
    # each request tried the bad target at most once and then the good one
    assert len(bad.requests) <= 4 and len(good.requests) == 4


def test_post_not_retried_on_a_status(gateway, upstream):
    bad, good = upstream(status_handler(503)), upstream(status_handler(503))
    gw = gateway(UPSTREAMS_AB, a=bad, b=good, allow_errors=ALLOW)
    r = fetch(gw.port, "POST", "/pay", body=b"x" * 10)
    assert r.status == 503 and r.body == b"from 503"  # the upstream's own answer
    assert len(bad.requests) + len(good.requests) == 1


def test_post_retried_after_connect_failure(gateway, upstream):
    good = upstream()
    gw = gateway(UPSTREAMS_AB, a="127.0.0.1:%d" % free_port(), b=good, allow_errors=ALLOW)
    for i in range(3):
        r = fetch(gw.port, "POST", "/pay/%d" % i, body=b"hello")
        assert r.status == 200
        assert r.json()["body_length"] == 5 if "body_length" in r.json() else True
    assert len(good.requests) == 3
    assert all(req.body == b"hello" for req in good.requests)


def test_retry_resends_the_body(gateway, upstream):
    calls = []

    def flaky(conn, req):
        body = conn.read_body(req)
        calls.append(body)
        if len(calls) == 1:
            conn.reset()
            return False
        conn.respond(200, b"got " + body)
    one = upstream(flaky)
    gw = gateway(UPSTREAMS_AB.replace('{address: "$b"}', '{address: "$a"}').replace(
        "targets: [{address: \"$a\"}, {address: \"$a\"}]", "targets: [{address: \"$a\"}]"),
        a=one, allow_errors=ALLOW)
    r = fetch(gw.port, "PUT", "/doc", body=b"payload-123")
    assert r.status == 200 and r.body == b"got payload-123"
    assert calls == [b"payload-123", b"payload-123"]


def test_retries_stop_at_max_retries(gateway, upstream):
    bad = upstream(status_handler(502))
    conf = UPSTREAMS_AB.replace('targets: [{address: "$a"}, {address: "$b"}]',
                                'targets: [{address: "$a"}]')
    gw = gateway(conf, a=bad, allow_errors=ALLOW)
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 502 and r.body == b"from 502"  # the last try's answer is relayed
    assert len(bad.requests) == 3  # 1 + max_retries


def test_retry_budget_caps_retries(gateway, upstream):
    bad = upstream(status_handler(502))
    conf = UPSTREAMS_AB.replace('targets: [{address: "$a"}, {address: "$b"}]',
                                'targets: [{address: "$a"}]').replace(
        "retry: {max_retries: 2, backoff: {base: 1ms, max: 5ms}}",
        "retry: {max_retries: 2, backoff: {base: 1ms, max: 5ms}, "
        "budget: {ratio: 0.1, min_per_second: 1}}")
    gw = gateway(conf, a=bad, allow_errors=ALLOW)
    n = 40
    for i in range(n):
        assert fetch(gw.port, "GET", "/x%d" % i).status == 502
    retries = len(bad.requests) - n
    # ratio 0.1 of 40 requests + 1/s over the 10 s window: far below 2 per request
    assert retries <= 0.1 * n + 10 + 1, retries


def test_breaker_opens_and_answers_503_without_touching_upstream(gateway, upstream):
    bad = upstream(status_handler(503))
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    retry: {max_retries: 0}
    circuit_breaker: {consecutive_failures: 3, failure_rate: 0, open_for: 30s}
routes:
  - name: all
    upstream: u
"""
    gw = gateway(conf, a=bad, allow_errors=ALLOW)
    for i in range(3):
        assert fetch(gw.port, "GET", "/x").status == 503
    r = fetch(gw.port, "GET", "/x")
    assert_error(r, "circuit_open", 503)
    assert 1 <= int(r.header("Retry-After")) <= 30
    assert len(bad.requests) == 3


def test_breaker_half_open_probe_closes_it(gateway, upstream):
    state = {"fail": True}

    def handler(conn, req):
        conn.read_body(req)
        conn.respond(502 if state["fail"] else 200, b"x")
    up = upstream(handler)
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    retry: {max_retries: 0}
    circuit_breaker: {consecutive_failures: 2, failure_rate: 0, open_for: %s}
routes:
  - name: all
    upstream: u
""" % ms(0.3)
    gw = gateway(conf, a=up, allow_errors=ALLOW)
    for _ in range(2):
        assert fetch(gw.port, "GET", "/x").status == 502
    assert_error(fetch(gw.port, "GET", "/x"), "circuit_open", 503)
    state["fail"] = False
    time.sleep(t(0.4))
    assert fetch(gw.port, "GET", "/x").status == 200  # the probe
    for _ in range(5):
        assert fetch(gw.port, "GET", "/x").status == 200  # closed again


def test_open_target_is_skipped_by_the_balancer(gateway, upstream):
    bad, good = upstream(status_handler(503)), upstream()
    conf = UPSTREAMS_AB.replace(
        "retry: {max_retries: 2, backoff: {base: 1ms, max: 5ms}}", "retry: {max_retries: 0}").replace(
        "circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}",
        "circuit_breaker: {consecutive_failures: 2, failure_rate: 0, open_for: 30s}")
    gw = gateway(conf, a=bad, b=good, allow_errors=ALLOW)
    for i in range(10):
        fetch(gw.port, "GET", "/x%d" % i)
    assert len(bad.requests) == 2
    for i in range(10):
        assert fetch(gw.port, "GET", "/y%d" % i).status == 200
    assert len(bad.requests) == 2


BULKHEAD = """\
upstreams:
  slow:
    targets: [{address: "$a"}]
    bulkhead: {max_concurrent: 2, max_queue: $queue, queue_timeout: $qt}
  fast:
    targets: [{address: "$b"}]
routes:
  - name: slow
    match: {paths: ["/slow"]}
    upstream: slow
  - name: fast
    match: {paths: ["/"]}
    upstream: fast
"""


def hold(port, path, results, i):
    try:
        results[i] = fetch(port, "GET", path).status
    except Exception as e:  # recorded, asserted by the test
        results[i] = repr(e)


def test_bulkhead_full_rejects_at_once_with_retry_after(gateway, upstream):
    slow, fast = upstream(), upstream()
    gw = gateway(BULKHEAD, a=slow, b=fast, queue=0, qt="1s")
    results = {}
    threads = [threading.Thread(target=hold, args=(gw.port, "/slow/%d" % int(t(1.5) * 1000),
                                                   results, i)) for i in range(2)]
    for th in threads:
        th.start()
    assert slow.wait_requests(2, t(5))
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/slow/1")
    assert time.monotonic() - start < t(0.5)
    assert_error(r, "bulkhead_full", 503)
    assert r.header("Retry-After") == "1"
    for th in threads:
        th.join(t(10))
    assert list(results.values()) == [200, 200]


def test_bulkhead_queue_waits_for_a_slot(gateway, upstream):
    slow, fast = upstream(), upstream()
    gw = gateway(BULKHEAD, a=slow, b=fast, queue=2, qt=ms(3))
    results = {}
    threads = [threading.Thread(target=hold, args=(gw.port, "/slow/%d" % int(t(0.3) * 1000),
                                                   results, i)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(10))
    assert sorted(results.values()) == [200, 200, 200, 200]
    assert len(slow.requests) == 4


def test_bulkhead_queue_timeout(gateway, upstream):
    slow, fast = upstream(), upstream()
    gw = gateway(BULKHEAD, a=slow, b=fast, queue=1, qt=ms(0.2))
    results = {}
    threads = [threading.Thread(target=hold, args=(gw.port, "/slow/%d" % int(t(1.5) * 1000),
                                                   results, i)) for i in range(2)]
    for th in threads:
        th.start()
    assert slow.wait_requests(2, t(5))
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/slow/1")
    waited = time.monotonic() - start
    assert_error(r, "bulkhead_full", 503)
    assert t(0.15) <= waited < t(1.2)
    for th in threads:
        th.join(t(10))


def test_bulkhead_isolates_upstreams(gateway, upstream):
    slow, fast = upstream(), upstream()
    gw = gateway(BULKHEAD, a=slow, b=fast, queue=0, qt="1s")
    results = {}
    threads = [threading.Thread(target=hold, args=(gw.port, "/slow/stall", results, i))
               for i in range(2)]
    slow_stall = "/slow/%d" % int(t(3) * 1000)
    threads = [threading.Thread(target=hold, args=(gw.port, slow_stall, results, i))
               for i in range(2)]
    for th in threads:
        th.start()
    assert slow.wait_requests(2, t(5))
    assert_error(fetch(gw.port, "GET", "/slow/1"), "bulkhead_full", 503)
    worst = 0.0
    for i in range(50):
        start = time.monotonic()
        assert fetch(gw.port, "GET", "/other/%d" % i).status == 200
        worst = max(worst, time.monotonic() - start)
    assert worst < t(0.25), worst
    for th in threads:
        th.join(t(10))


def test_route_deadline_covers_retries(gateway, upstream):
    stall = upstream()
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    timeouts: {read: %s}
    retry: {max_retries: 5, backoff: {base: 1ms, max: 1ms}}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
routes:
  - name: all
    upstream: u
    timeout: %s
""" % (ms(0.3), ms(0.7))
    gw = gateway(conf, a=stall, allow_errors=ALLOW)
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/stall")
    took = time.monotonic() - start
    assert_error(r, "upstream_timeout", 504)
    assert t(0.6) <= took < t(1.5), took
    assert 2 <= len(stall.requests) <= 3


def test_active_health_check_takes_a_target_out_and_back(gateway, upstream):
    state = {"sick": True}

    def handler(conn, req):
        conn.read_body(req)
        if req.path == "/healthz":
            conn.respond(500 if state["sick"] else 200, b"hc")
        else:
            conn.respond(200, b"sick-one")
    sick, good = upstream(handler), upstream()
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}, {address: "$b"}]
    health_check: {path: /healthz, interval: %s, timeout: %s, healthy_after: 1, unhealthy_after: 2}
routes:
  - name: all
    upstream: u
""" % (ms(0.05), ms(0.5))
    gw = gateway(conf, a=sick, b=good, allow_errors=ALLOW)
    time.sleep(t(0.5))
    before = len([r for r in sick.requests if r.path != "/healthz"])
    for i in range(10):
        assert fetch(gw.port, "GET", "/x%d" % i).status == 200
    assert len([r for r in sick.requests if r.path != "/healthz"]) == before
    assert all(r.header("User-Agent") == "moongate-health" for r in sick.requests
               if r.path == "/healthz")
    state["sick"] = False
    time.sleep(t(0.5))
    bodies = {fetch(gw.port, "GET", "/y%d" % i).body for i in range(10)}
    assert b"sick-one" in bodies  # back in rotation
    assert "is down" in gw.log() and "is up" in gw.log()


def test_all_targets_unhealthy_is_circuit_open(gateway, upstream):
    def handler(conn, req):
        conn.read_body(req)
        conn.respond(503 if req.path == "/healthz" else 200, b"x")
    up = upstream(handler)
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    health_check: {path: /healthz, interval: %s, timeout: %s, unhealthy_after: 1}
routes:
  - name: all
    upstream: u
""" % (ms(0.05), ms(0.5))
    gw = gateway(conf, a=up, allow_errors=ALLOW)
    time.sleep(t(0.4))
    assert_error(fetch(gw.port, "GET", "/x"), "circuit_open", 503)


def test_target_dying_mid_load_is_ejected_and_readmitted(gateway, upstream):
    state = {"dead": False}

    def toggled(conn, req):
        if state["dead"]:
            conn.reset()
            return False
        conn.read_body(req)
        conn.respond(200, b"b")
    a, b, c = upstream(), upstream(toggled), upstream()
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}, {address: "$b"}, {address: "$c"}]
    retry: {max_retries: 2, backoff: {base: 1ms, max: 2ms}}
    circuit_breaker: {consecutive_failures: 3, failure_rate: 0, open_for: %s, max_open_for: %s}
routes:
  - name: all
    upstream: u
""" % (ms(0.5), ms(0.5))
    gw = gateway(conf, a=a, b=b, c=c, allow_errors=ALLOW)
    errors = 0
    for i in range(60):
        errors += fetch(gw.port, "GET", "/warm/%d" % i).status != 200
    served_before = len(b.requests)
    assert served_before >= 15  # b takes its share while healthy
    state["dead"] = True
    for i in range(90):
        errors += fetch(gw.port, "GET", "/dead/%d" % i).status != 200
    hits_while_dead = len(b.requests) - served_before
    assert hits_while_dead <= 3 + 2, hits_while_dead  # ejected after 3 failures (+ probes)
    state["dead"] = False
    time.sleep(t(0.6))
    before = len(b.requests)
    for i in range(60):
        errors += fetch(gw.port, "GET", "/back/%d" % i).status != 200
    assert len(b.requests) - before >= 10  # re-admitted through half-open
    assert errors == 0


def test_one_of_three_targets_dead_gets_almost_no_errors(gateway, upstream):
    a, c = upstream(), upstream()
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}, {address: "127.0.0.1:$dead"}, {address: "$c"}]
    retry: {max_retries: 2, backoff: {base: 1ms, max: 5ms}}
routes:
  - name: all
    upstream: u
"""
    gw = gateway(conf, a=a, c=c, dead=free_port(), allow_errors=ALLOW)
    n = 1000
    errors = sum(fetch(gw.port, "GET", "/x/%d" % i).status != 200 for i in range(n))
    assert errors / n < 0.001, errors


def test_backoff_delays_stay_within_jitter_bounds(gateway, upstream):
    bad = upstream(status_handler(503))
    conf = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    retry: {max_retries: 3, backoff: {base: %s, max: %s}, budget: {ratio: 1, min_per_second: 100}}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
routes:
  - name: all
    upstream: u
""" % (ms(0.1), ms(0.1))
    gw = gateway(conf, a=bad, allow_errors=ALLOW)
    totals = []
    for i in range(8):
        start = time.monotonic()
        assert fetch(gw.port, "GET", "/x%d" % i).status == 503
        totals.append(time.monotonic() - start)
    assert len(bad.requests) == 8 * 4
    # three sleeps of random(0, 100ms) each: never above 300ms (+ request time),
    # and not all zero (the mean of a sum of three is 150ms)
    assert max(totals) < t(0.3) + t(0.15), totals
    assert sum(totals) / len(totals) > t(0.04), totals
