"""Resilience beyond the peers (issue 22, DESIGN section 10.7): per-try
timeouts, upstream Retry-After, deadline propagation and priority shedding,
through the real binary against real upstreams. Kept fast: short timeouts."""

import datetime
import email.utils
import re
import threading
import time

import pytest

from conftest import IS_ASAN, assert_error, fetch, ms, t, wait_until

ALLOW = [r"(?i)upstream", r"(?i)per-try", r"(?i)bulkhead"]


def slow_handler(seconds, body=b"slow"):
    def handler(conn, req):
        conn.read_body(req)
        time.sleep(seconds)
        conn.respond(200, body)
    return handler


# ------------------------------------------------------------ timeouts.per_try

PER_TRY = """\
upstreams:
  u:
    targets: [{address: "$a"}, {address: "$b"}]
    timeouts: {per_try: $per_try}
    retry: {max_retries: $retries, backoff: {base: 1ms, max: 2ms}}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: u
    timeout: $timeout
"""


def test_per_try_timeout_retries_on_the_other_target(gateway, upstream):
    slow, fast = upstream(slow_handler(t(1.0))), upstream()
    gw = gateway(PER_TRY, a=slow, b=fast, per_try=ms(0.15), retries=2, timeout=ms(3),
                 allow_errors=ALLOW)
    for i in range(2):
        start = time.monotonic()
        r = fetch(gw.port, "GET", "/p%d" % i)
        assert r.status == 200, r.body
        assert time.monotonic() - start < t(0.7)  # far below the slow target's 1 s
    assert len(slow.requests) >= 1 and len(fast.requests) == 2
    assert "per-try timeout" in gw.log()
    # counted as a timeout of the slow target
    assert metric(gw, "moongate_upstream_requests_total",
                  'target="%s",outcome="timeout"' % slow.address) == len(slow.requests)


def test_per_try_timeouts_end_at_max_retries_within_the_deadline(gateway, upstream):
    a, b = upstream(slow_handler(t(1.0))), upstream(slow_handler(t(1.0)))
    gw = gateway(PER_TRY, a=a, b=b, per_try=ms(0.1), retries=2, timeout=ms(3),
                 allow_errors=ALLOW)
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/x")
    took = time.monotonic() - start
    assert_error(r, "upstream_timeout", 504)
    assert t(0.25) <= took < t(0.9)  # three tries of 100 ms, not the 3 s deadline
    assert len(a.requests) + len(b.requests) == 3


def test_per_try_null_is_the_default(gateway, upstream):
    a, b = upstream(slow_handler(t(0.3))), upstream(slow_handler(t(0.3)))
    gw = gateway(PER_TRY, a=a, b=b, per_try="null", retries=0, timeout=ms(3), allow_errors=ALLOW)
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.body == b"slow"


# ------------------------------------------------------------ honor_retry_after

RETRY_AFTER = """\
upstreams:
  u:
    targets: [$targets]
    retry: {max_retries: 2, on: [connect_failure, 503, 429], backoff: {base: 1ms, max: 2ms}}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
    honor_retry_after: {max: $max}
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: u
    timeout: $timeout
"""


def busy_handler(status, retry_after, times=1 << 30):
    """Answers `status` with Retry-After (a callable gives the value) the first
    `times` requests, then echoes."""
    count = [0]

    def handler(conn, req):
        conn.read_body(req)
        count[0] += 1
        if count[0] <= times:
            value = retry_after() if callable(retry_after) else retry_after
            conn.respond(status, b"busy", headers=[("Retry-After", value)])
        else:
            conn.respond(200, b"ok")
    return handler


def test_retry_after_takes_the_target_out_of_rotation(gateway, upstream):
    busy, good = upstream(busy_handler(503, "20")), upstream()
    gw = gateway(RETRY_AFTER.replace("$targets", '{address: "$a"}, {address: "$b"}'), a=busy, b=good,
                 max=ms(0.4), timeout=ms(3), allow_errors=ALLOW)
    for i in range(6):
        r = fetch(gw.port, "GET", "/r%d" % i)
        assert r.status == 200, r.body  # the 503 was retried on the other target
    assert len(busy.requests) == 1 and len(good.requests) == 6
    # capped at max (400 ms) although it asked for 20 s: back in rotation after
    time.sleep(t(0.5))
    for i in range(4):
        assert fetch(gw.port, "GET", "/s%d" % i).status == 200
    assert len(busy.requests) == 2


def test_retry_after_429_http_date_makes_the_retry_wait(gateway, upstream):
    def in_two_seconds():
        return email.utils.formatdate(time.time() + 2, usegmt=True)
    one = upstream(busy_handler(429, in_two_seconds, times=1))
    gw = gateway(RETRY_AFTER.replace("$targets", '{address: "$a"}'), a=one, max="30s", timeout=ms(5),
                 allow_errors=ALLOW)
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/d")
    took = time.monotonic() - start
    assert r.status == 200 and r.body == b"ok"
    assert 1.0 <= took < t(3.5)  # waited for the date (whole seconds), not the 2 ms backoff
    assert len(one.requests) == 2


def test_retry_after_beyond_the_deadline_answers_at_once(gateway, upstream):
    one = upstream(busy_handler(503, "10"))
    gw = gateway(RETRY_AFTER.replace("$targets", '{address: "$a"}'), a=one, max="30s", timeout=ms(1),
                 allow_errors=ALLOW)
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/d")
    assert r.status == 503 and r.body == b"busy" and r.header("Retry-After") == "10"
    assert time.monotonic() - start < t(0.5)
    assert len(one.requests) == 1
    # still out of rotation: the next request is refused without reaching it
    r = fetch(gw.port, "GET", "/e")
    assert_error(r, "circuit_open", 503)
    assert int(r.header("Retry-After")) >= 9
    assert len(one.requests) == 1


# ------------------------------------------------------------ deadline_header

DEADLINE = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    deadline_header: X-Request-Timeout-Ms
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: u
    timeout: 5s
"""


def test_remaining_deadline_is_sent_upstream(gateway, upstream):
    up = upstream()
    gw = gateway(DEADLINE, a=up)
    assert fetch(gw.port, "GET", "/a").status == 200
    sent = up.requests[-1].header_all("x-request-timeout-ms")
    assert len(sent) == 1 and 4000 < int(sent[0]) <= 5000


def test_client_deadline_can_only_shorten(gateway, upstream):
    up = upstream()
    gw = gateway(DEADLINE, a=up)
    assert fetch(gw.port, "GET", "/a", headers=[("X-Request-Timeout-Ms", "300")]).status == 200
    sent = up.requests[-1].header_all("x-request-timeout-ms")
    assert len(sent) == 1 and 0 < int(sent[0]) <= 300  # the gateway's value, not the client's
    assert fetch(gw.port, "GET", "/b", headers=[("x-request-timeout-ms", "99999999")]).status == 200
    sent = up.requests[-1].header_all("x-request-timeout-ms")
    assert len(sent) == 1 and int(sent[0]) <= 5000
    assert fetch(gw.port, "GET", "/c", headers=[("X-Request-Timeout-Ms", "soon")]).status == 200
    assert int(up.requests[-1].header("x-request-timeout-ms")) <= 5000


def test_client_deadline_ends_the_request(gateway, upstream):
    up = upstream()
    gw = gateway(DEADLINE, a=up, allow_errors=ALLOW)
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/slow/%d" % int(t(2) * 1000),
              headers=[("X-Request-Timeout-Ms", str(int(t(0.2) * 1000)))])
    assert_error(r, "upstream_timeout", 504)
    assert time.monotonic() - start < t(1)


# ------------------------------------------------------------ routes[].priority

PRIORITY = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    bulkhead: {max_concurrent: 1, max_queue: 1, queue_timeout: $qt}
routes:
  - name: critical
    match: {paths: ["/c/"]}
    strip_prefix: true
    upstream: u
    priority: critical
  - name: sheddable
    match: {paths: ["/s/"]}
    strip_prefix: true
    upstream: u
    priority: sheddable
"""


def call(port, path, results, key):
    try:
        start = time.monotonic()
        r = fetch(port, "GET", path)
        results[key] = (r.status, time.monotonic() - start,
                        r.json().get("error") if r.status >= 500 else None)
    except Exception as e:  # asserted by the test
        results[key] = repr(e)


def test_critical_request_displaces_a_queued_sheddable_one(gateway, upstream):
    up = upstream()
    gw = gateway(PRIORITY, a=up, qt=ms(3), allow_errors=ALLOW)
    results = {}
    hold = "/slow/%d" % int(t(0.8) * 1000)
    holder = threading.Thread(target=call, args=(gw.port, "/c" + hold, results, "holder"))
    holder.start()
    assert up.wait_requests(1, t(5))
    shed = threading.Thread(target=call, args=(gw.port, "/s/shed", results, "queued_sheddable"))
    shed.start()
    time.sleep(t(0.15))  # queued (the queue is now full)
    crit = threading.Thread(target=call, args=(gw.port, "/c/crit", results, "critical"))
    crit.start()
    shed.join(t(5))
    # displaced at once, long before the holder ends or the queue times out
    status, took, err = results["queued_sheddable"]
    assert (status, err) == (503, "bulkhead_full") and took < t(0.6), results
    time.sleep(t(0.05))
    # the queue is full of a critical request: a new sheddable one is refused at once
    call(gw.port, "/s/late", results, "late_sheddable")
    assert results["late_sheddable"][0] == 503 and results["late_sheddable"][1] < t(0.3)
    for th in (holder, crit):
        th.join(t(5))
    assert results["holder"][0] == 200 and results["critical"][0] == 200, results
    assert sorted(r.path for r in up.requests) == ["/crit", hold]


def test_sheddable_request_does_not_displace_a_critical_one(gateway, upstream):
    up = upstream()
    gw = gateway(PRIORITY, a=up, qt=ms(3), allow_errors=ALLOW)
    results = {}
    hold = "/slow/%d" % int(t(0.5) * 1000)
    holder = threading.Thread(target=call, args=(gw.port, "/s" + hold, results, "holder"))
    holder.start()
    assert up.wait_requests(1, t(5))
    crit = threading.Thread(target=call, args=(gw.port, "/c/crit", results, "critical"))
    crit.start()
    time.sleep(t(0.15))
    call(gw.port, "/s/late", results, "late_sheddable")
    assert results["late_sheddable"][0] == 503 and results["late_sheddable"][2] == "bulkhead_full"
    for th in (holder, crit):
        th.join(t(5))
    assert results["holder"][0] == 200 and results["critical"][0] == 200, results


# ------------------------------------------------------------ hedge

HEDGE = """\
upstreams:
  u:
    targets: [{address: "$a"}, {address: "$b"}]
    hedge: {after: $after, max: 1}
    retry: {max_retries: 2, backoff: {base: 1ms, max: 2ms}}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: u
    timeout: 5s
"""


def metric(gw, name, labels):
    import urllib.request
    url = "http://127.0.0.1:%d/metrics" % gw.admin_port
    with urllib.request.urlopen(url, timeout=t(5)) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") and labels in line:
                return int(float(line.rsplit(" ", 1)[1]))
    return None


def hedges(gw):
    import urllib.request
    url = "http://127.0.0.1:%d/metrics" % gw.admin_port
    with urllib.request.urlopen(url, timeout=t(5)) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("moongate_hedges_total{"):
            result = line.split('result="')[1].split('"')[0]
            out[result] = int(float(line.rsplit(" ", 1)[1]))
    return out


def test_hedge_wins_over_a_slow_target(gateway, upstream):
    slow, fast = upstream(slow_handler(t(0.8), b"slow")), upstream()
    gw = gateway(HEDGE, a=slow, b=fast, after=ms(0.15))
    for i in range(4):
        start = time.monotonic()
        r = fetch(gw.port, "GET", "/h%d" % i)
        assert r.status == 200 and r.body != b"slow"
        assert time.monotonic() - start < t(0.5)
    # requests 0 and 2 went to the slow target first, then were hedged
    assert len(slow.requests) == 2 and len(fast.requests) == 4
    assert hedges(gw) == {"won": 2, "lost": 0, "cancelled": 0}


def test_hedge_loses_to_the_first_head(gateway, upstream):
    first, hedge = upstream(slow_handler(t(0.25), b"first")), upstream(slow_handler(t(1.5), b"h"))
    gw = gateway(HEDGE, a=first, b=hedge, after=ms(0.05))
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.body == b"first"
    assert hedge.wait_requests(1, t(2))
    assert hedges(gw) == {"won": 0, "lost": 1, "cancelled": 0}
    # the loser's connection was closed, not pooled: the next try on that target
    # (first or hedged, as the round robin goes) opens a new one
    r = fetch(gw.port, "GET", "/y")
    assert r.body == b"first"
    assert hedge.wait_requests(2, t(2))
    assert hedge.requests[1].conn_serial != hedge.requests[0].conn_serial
    h = hedges(gw)
    assert h["won"] + h["lost"] == 2 and h["cancelled"] == 0


def test_hedge_wins_while_the_first_try_holds_half_a_head(gateway, upstream):
    # The first try sends part of its head, then stalls; the hedge answers whole.
    # Each try gathers its own head: the hedge's must not be appended to the
    # first try's bytes (that made a malformed head and a 502).
    def half_head(conn, req):
        conn.read_body(req)
        conn.send(b"HTTP/1.1 200 OK\r\nX-From: first\r\nContent-Le")
        time.sleep(t(1.0))
        conn.send(b"ngth: 5\r\n\r\nfirst")
    first, hedge = upstream(half_head), upstream(slow_handler(0, b"hedge"))
    gw = gateway(HEDGE, a=first, b=hedge, after=ms(0.1))
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/half")
    assert (r.status, r.body) == (200, b"hedge")
    assert r.header("X-From") is None
    assert time.monotonic() - start < t(0.8)
    assert hedges(gw) == {"won": 1, "lost": 0, "cancelled": 0}


def resets_first(delay, body):
    """Resets its first request after `delay`, answers the others."""
    done = []

    def handler(conn, req):
        conn.read_body(req)
        if not done:
            done.append(1)
            time.sleep(delay)
            conn.reset()
            return False
        conn.respond(200, body)
    return handler


def test_hedge_takes_over_when_the_first_try_fails(gateway, upstream):
    # the first try is reset while the hedge is on its way: the exchange waits
    # for the hedge instead of starting a third try
    first, hedge = upstream(resets_first(t(0.2), b"a")), upstream(slow_handler(t(0.6), b"h"))
    gw = gateway(HEDGE, a=first, b=hedge, after=ms(0.05), allow_errors=ALLOW)
    start = time.monotonic()
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.body == b"h"
    assert time.monotonic() - start < t(1.0)
    assert len(first.requests) == 1 and len(hedge.requests) == 1
    assert hedges(gw) == {"won": 1, "lost": 0, "cancelled": 0}
    assert "the hedge to" in gw.log() and "takes over" in gw.log()


def test_hedge_takes_over_a_retried_status(gateway, upstream):
    def fails_503(conn, req):
        conn.read_body(req)
        time.sleep(t(0.2))
        conn.respond(503, b"busy")
    first, hedge = upstream(fails_503), upstream(slow_handler(t(0.5), b"h"))
    gw = gateway(HEDGE, a=first, b=hedge, after=ms(0.05), allow_errors=ALLOW)
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.body == b"h"
    assert len(first.requests) == 1 and len(hedge.requests) == 1
    assert hedges(gw)["won"] == 1
    assert "waiting for the hedge" in gw.log()


def test_failed_hedge_after_a_take_over_is_retried(gateway, upstream):
    # both the first try and the hedge that took over are reset: the retry
    # policy applies to the hedge as to any try, and the third try answers
    first, hedge = upstream(resets_first(t(0.2), b"a")), upstream(resets_first(t(0.4), b"b"))
    gw = gateway(HEDGE, a=first, b=hedge, after=ms(0.05), allow_errors=ALLOW)
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.body in (b"a", b"b")
    assert len(first.requests) + len(hedge.requests) == 3
    assert hedges(gw)["won"] == 1


LAST_AVAILABLE = """
local P = {}
function P.balance(ctx, conf, targets)
  for i = #targets, 1, -1 do
    if targets[i].available then return i end
  end
end
return P
"""


def test_hedge_goes_through_the_lua_balancer(gateway, upstream, tmp_path):
    # the balancer picks the last available target: the first try goes to the
    # slow one (third), the hedge to the second; round robin would also pick
    # the first
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "last.lua").write_text(LAST_AVAILABLE)
    b, c, slow = upstream(), upstream(), upstream(slow_handler(t(0.8), b"slow"))
    conf = ("plugin_path: [\"$plugins\"]\n" +
            HEDGE.replace('{address: "$b"}]', '{address: "$b"}, {address: "$c"}]')
                 .replace("    timeout: 5s", "    timeout: 5s\n    balancer: {name: last}"))
    gw = gateway(conf, a=b, b=c, c=slow, after=ms(0.1), plugins=str(d))
    for i in range(3):
        r = fetch(gw.port, "GET", "/l%d" % i)
        assert r.status == 200 and r.body != b"slow"
    assert len(slow.requests) == 3 and len(c.requests) == 3 and len(b.requests) == 0
    assert hedges(gw)["won"] == 3


def test_unsafe_requests_are_not_hedged(gateway, upstream):
    slow, fast = upstream(slow_handler(t(0.3), b"slow")), upstream()
    gw = gateway(HEDGE, a=slow, b=fast, after=ms(0.05))
    r = fetch(gw.port, "POST", "/pay", body=b"x")
    assert r.status == 200 and r.body == b"slow"
    assert len(fast.requests) == 0 and hedges(gw) == {"won": 0, "lost": 0, "cancelled": 0}


def test_no_hedge_once_the_response_started(gateway, upstream):
    def slow_body(conn, req):
        conn.read_body(req)
        conn.send_head(200, [("Content-Length", "4")])
        conn.send(b"ab")
        time.sleep(t(0.5))
        conn.send(b"cd")
    first, other = upstream(slow_body), upstream()
    gw = gateway(HEDGE, a=first, b=other, after=ms(0.15))
    r = fetch(gw.port, "GET", "/x")
    assert r.status == 200 and r.body == b"abcd"
    assert len(other.requests) == 0


def test_hedge_after_a_percentile(gateway, upstream):
    taken = []

    def first_q100_is_slow(conn, req):
        conn.read_body(req)
        if req.path == "/q100" and not taken:
            taken.append(req.path)  # the first try of /q100, wherever it went
            time.sleep(t(1.0))
        conn.respond(200, b"a")
    ups = [upstream(first_q100_is_slow) for _ in range(3)]
    gw = gateway(HEDGE.replace('{address: "$b"}', '{address: "$b"}, {address: "$c"}'),
                 a=ups[0], b=ups[1], c=ups[2], after="p90")
    slowest = 0
    for i in range(160):
        start = time.monotonic()
        assert fetch(gw.port, "GET", "/q%d" % i).status == 200
        slowest = max(slowest, time.monotonic() - start)
    assert slowest < t(0.6)  # the 1 s answer was hedged
    assert hedges(gw)["won"] >= 1


# ------------------------------------------------------------ outlier_detection

OUTLIER = """\
upstreams:
  u:
    targets: [{address: "$a"}, {address: "$b"}, {address: "$c"}]
    retry: {max_retries: 0}
    circuit_breaker: {consecutive_failures: 1000, failure_rate: 0}
    outlier_detection: {interval: $interval, min_requests: 10, base_ejection: $base,
                        max_ejection_percent: $pct}
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: u
"""


def every_third_fails():
    n = [0]

    def handler(conn, req):
        conn.read_body(req)
        n[0] += 1
        conn.respond(503 if n[0] % 3 == 0 else 200, b"x")
    return handler


EJECTED_RE = re.compile(r"^(\S+)Z \[warn\] outlier detection: target (\S+) of upstream u "
                        r"ejected for (\d+) ms", re.M)


def ejection(gw, target):
    """(wall-clock start, duration in s) of the latest ejection of target the
    log shows, or None."""
    found = [m for m in EJECTED_RE.finditer(gw.log()) if m.group(2) == target]
    if not found:
        return None
    when = datetime.datetime.fromisoformat(found[-1].group(1)).replace(tzinfo=datetime.timezone.utc)
    return when.timestamp(), int(found[-1].group(3)) / 1000


def test_outlier_is_ejected_then_returns(gateway, upstream):
    # interval: whole intervals restart the count, and a starved machine has
    # sent fewer than min_requests per target in 0.2 s, so nothing was judged.
    bad, b, c = upstream(every_third_fails()), upstream(), upstream()
    gw = gateway(OUTLIER, a=bad, b=b, c=c, interval=ms(1), base=ms(2), pct=50,
                 allow_errors=ALLOW)
    assert wait_until(lambda: fetch(gw.port, "GET", "/w") and ejection(gw, bad.address), t(15),
                      interval=0), "never ejected"
    # Out of rotation while the ejection lasts, timed from the gateway's log
    # line (a fixed 30 requests after the test saw the line once outlasted a
    # 1 s ejection the line had been late for): at most 30 requests sent in
    # the first 3/4 of it, at least 6 (2 for `bad` in the round-robin).
    start, length = ejection(gw, bad.address)
    seen, sent = len(bad.requests), 0
    while sent < 30 and time.time() < start + 0.75 * length:
        assert fetch(gw.port, "GET", "/e%d" % sent).status == 200
        sent += 1
    assert len(bad.requests) == seen, "an ejected target got %d of %d requests" % (
        len(bad.requests) - seen, sent)
    assert sent >= 6, "only %d requests within the ejection: nothing proven" % sent
    # base_ejection over: back in rotation (waited for, not slept for)
    n = [0]

    def bad_serves_again():
        n[0] += 1
        fetch(gw.port, "GET", "/r%d" % n[0])
        return len(bad.requests) > seen

    assert wait_until(bad_serves_again, length + t(5), interval=0.05), "never back in rotation"


def test_outlier_ejection_respects_max_percent(gateway, upstream):
    bad, b, c = upstream(every_third_fails()), upstream(), upstream()
    gw = gateway(OUTLIER, a=bad, b=b, c=c, interval=ms(0.2), base=ms(2), pct=0,
                 allow_errors=ALLOW)
    deadline = time.monotonic() + t(0.8)
    while time.monotonic() < deadline:
        fetch(gw.port, "GET", "/w")
    seen = len(bad.requests)
    for i in range(9):
        fetch(gw.port, "GET", "/e%d" % i)
    assert len(bad.requests) == seen + 3  # never ejected: 0 % may be out
    assert "ejected" not in gw.log()


# ------------------------------------------------------------ bulkhead.adaptive

ADAPTIVE = """\
upstreams:
  u:
    targets: [{address: "$a"}]
    bulkhead: {max_concurrent: 64, max_queue: 256, queue_timeout: 5s,
               adaptive: {min_limit: 8, max_limit: 64, smoothing: 0.5}}
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: u
"""


# Under ASan the gateway's own slowness, not the upstream's knee, sets the
# latency the limiter sees (32 Python clients cannot push the upstream past 4
# in flight), so the limit rightly does not fall; the limiter's arithmetic is
# unit-tested (test_gradient) and this runs on the native build.
@pytest.mark.skipif(IS_ASAN, reason="latency-driven: the sanitizer build is the bottleneck")
def test_adaptive_limit_falls_under_overload(gateway, upstream):
    lock, state = threading.Lock(), {"in": 0}

    def knee_at_4(conn, req):
        """5 ms up to 4 in flight, then proportionally slower."""
        conn.read_body(req)
        with lock:
            state["in"] += 1
            n = state["in"]
        time.sleep(0.005 * max(1, n / 4))
        with lock:
            state["in"] -= 1
        conn.respond(200, b"k")
    up = upstream(knee_at_4)
    gw = gateway(ADAPTIVE, a=up)
    stop = time.monotonic() + t(1.5)
    codes = []

    def client():
        while time.monotonic() < stop:
            codes.append(fetch(gw.port, "GET", "/").status)
    threads = [threading.Thread(target=client) for _ in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(10))
    limit = metric(gw, "moongate_bulkhead_limit", 'upstream="u"')
    # starts at 5 x min_limit = 40; 32 clients against a knee of 4 push it down
    # (it settles near 6 + sqrt(limit) = limit, about 9)
    assert 8 <= limit < 30, limit
    assert codes and all(c == 200 for c in codes)  # queued, not refused
