"""Forwarding headers and the real client address (DESIGN section 10.8):
`forwarded.trusted_proxies`, `x_forwarded_for: append | replace | off`,
RFC 7239 `Forwarded`. A client's X-Forwarded-For is believed only from a
trusted peer, and then only up to the first untrusted hop from the right;
the real address is what the access log, ctx.client_ip, rate limiting and
consistent hashing by `ip` see."""

import json

from conftest import RawClient, build_request, t, wait_until

CONF = """\
$forwarded
upstreams:
  u:
    targets: [$targets]
routes:
  - name: all
    upstream: u
$route_extra
"""


def start(gateway, upstream, forwarded="", route_extra="", access_log="off", n_up=1):
    ups = [upstream(name="up%d" % i) for i in range(n_up)]
    targets = ", ".join('{address: "%s"}' % u for u in ups)
    gw = gateway(CONF, forwarded=forwarded, targets=targets, route_extra=route_extra,
                 access_log=access_log)
    return gw, ups[0] if n_up == 1 else ups


def send(gw, headers=(), path="/"):
    with RawClient(gw.port) as c:
        c.request("GET", path, headers)
        return c.read_final_response()[1]


def xff_seen(up):
    return [q.header_all("X-Forwarded-For") for q in up.requests]


def log_lines(path):
    try:
        text = open(path).read()
    except OSError:
        return []
    return [json.loads(x) for x in text.splitlines() if x.strip()]


TRUST_LOCAL = 'forwarded: {trusted_proxies: ["127.0.0.0/8", "10.0.0.0/8"]}'


def test_untrusted_peer_cannot_spoof(gateway, upstream, tmp_path):
    log = str(tmp_path / "a.log")
    gw, up = start(gateway, upstream, access_log='"%s"' % log)
    send(gw, [("X-Forwarded-For", "6.6.6.6")])
    assert xff_seen(up) == [["6.6.6.6, 127.0.0.1"]]  # append, as before
    assert wait_until(lambda: len(log_lines(log)) == 1, t(5))
    assert log_lines(log)[0]["client_ip"] == "127.0.0.1"


def test_trusted_peer_gives_first_untrusted_hop_from_the_right(gateway, upstream, tmp_path):
    log = str(tmp_path / "a.log")
    gw, up = start(gateway, upstream, TRUST_LOCAL, access_log='"%s"' % log)
    cases = [
        ([("X-Forwarded-For", "6.6.6.6")], "6.6.6.6"),
        # a client putting an address at the left changes nothing
        ([("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 10.0.0.5")], "2.2.2.2"),
        # every line of the field is one list; ports and brackets as proxies write them
        ([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "3.3.3.3:5678, 10.1.1.1")], "3.3.3.3"),
        ([("X-Forwarded-For", "[2001:db8::5]:443")], "2001:db8::5"),
        ([("X-Forwarded-For", "::ffff:4.4.4.4,, 10.9.9.9")], "4.4.4.4"),
        # garbage stops the walk: the trusted hop after it is the answer
        ([("X-Forwarded-For", "1.1.1.1, unknown, 10.0.0.7")], "10.0.0.7"),
        ([("X-Forwarded-For", "1.1.1.1, 1.2.3.04")], "127.0.0.1"),
        # only trusted hops: the leftmost one
        ([("X-Forwarded-For", "10.0.0.1, 10.0.0.2")], "10.0.0.1"),
        ([], "127.0.0.1"),
    ]
    for headers, want in cases:
        assert send(gw, headers).status == 200
    assert wait_until(lambda: len(log_lines(log)) == len(cases), t(5))
    assert [e["client_ip"] for e in log_lines(log)] == [w for _, w in cases]
    # append mode: the client's list (joined into one line), then the peer
    assert xff_seen(up)[0] == ["6.6.6.6, 127.0.0.1"]
    assert xff_seen(up)[2] == ["1.1.1.1, 3.3.3.3:5678, 10.1.1.1, 127.0.0.1"]
    assert xff_seen(up)[-1] == ["127.0.0.1"]


def test_client_listing_xff_in_connection_is_not_believed(gateway, upstream):
    gw, up = start(gateway, upstream, TRUST_LOCAL + "\n" + "  " * 0)
    send(gw, [("Connection", "X-Forwarded-For"), ("X-Forwarded-For", "6.6.6.6")])
    assert xff_seen(up) == [["127.0.0.1"]]


def test_replace_sends_only_the_real_address(gateway, upstream):
    gw, up = start(gateway, upstream, 'forwarded: {trusted_proxies: ["127.0.0.1"], '
                                      'x_forwarded_for: replace}')
    send(gw, [("X-Forwarded-For", "9.9.9.9, 8.8.8.8")])
    send(gw, [])
    assert xff_seen(up) == [["8.8.8.8"], ["127.0.0.1"]]


def test_replace_without_trust_drops_spoofed_list(gateway, upstream):
    gw, up = start(gateway, upstream, "forwarded: {x_forwarded_for: replace}")
    send(gw, [("X-Forwarded-For", "9.9.9.9")])
    assert xff_seen(up) == [["127.0.0.1"]]


def test_off_passes_the_client_header_untouched(gateway, upstream):
    gw, up = start(gateway, upstream, 'forwarded: {x_forwarded_for: "off"}')
    send(gw, [("X-Forwarded-For", "5.5.5.5"), ("X-Forwarded-For", "6.6.6.6")])
    send(gw, [])
    assert xff_seen(up) == [["5.5.5.5", "6.6.6.6"], []]
    assert up.requests[1].header("X-Forwarded-Proto") == "http"  # the others are still set


def test_rfc7239_forwarded(gateway, upstream):
    gw, up = start(gateway, upstream, "forwarded: {forwarded_header: true}")
    send(gw, [("Forwarded", 'for=192.0.2.60;proto=https'), ("Host", "api.test:8080")])
    send(gw, [])
    assert up.requests[0].header_all("Forwarded") == [
        'for=192.0.2.60;proto=https, for=127.0.0.1;host="api.test:8080";proto=http']
    assert up.requests[1].header_all("Forwarded") == ['for=127.0.0.1;host="gw.test";proto=http']
    # X-Forwarded-For is still appended
    assert xff_seen(up)[1] == ["127.0.0.1"]


def test_rfc7239_forwarded_replace_quotes_ipv6(gateway, upstream):
    gw, up = start(gateway, upstream, 'forwarded: {trusted_proxies: ["127.0.0.0/8"], '
                                      'x_forwarded_for: replace, forwarded_header: true}')
    send(gw, [("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "2001:db8::60")])
    assert up.requests[0].header_all("Forwarded") == ['for="[2001:db8::60]";host="gw.test";proto=http']
    assert xff_seen(up) == [["2001:db8::60"]]


def test_forwarded_without_the_option_passes_untouched(gateway, upstream):
    gw, up = start(gateway, upstream)
    send(gw, [("Forwarded", "for=192.0.2.60")])
    assert up.requests[0].header_all("Forwarded") == ["for=192.0.2.60"]


RATE = '    plugins: [{name: rate_limit, config: {rate: 0.01, burst: 2, key: ip, headers: false}}]'


def test_rate_limit_by_real_address(gateway, upstream):
    gw, up = start(gateway, upstream, TRUST_LOCAL, route_extra=RATE)
    a, b = [("X-Forwarded-For", "1.1.1.1, 203.0.113.1")], [("X-Forwarded-For", "203.0.113.2")]
    assert [send(gw, a).status for _ in range(3)] == [200, 200, 429]
    # a client spoofing another address at the left is still itself
    assert send(gw, [("X-Forwarded-For", "203.0.113.9, 203.0.113.1")]).status == 429
    assert [send(gw, b).status for _ in range(3)] == [200, 200, 429]


def test_rate_limit_without_trust_keys_the_peer(gateway, upstream):
    gw, up = start(gateway, upstream, route_extra=RATE)
    assert send(gw, [("X-Forwarded-For", "203.0.113.1")]).status == 200
    assert send(gw, [("X-Forwarded-For", "203.0.113.2")]).status == 200
    assert send(gw, [("X-Forwarded-For", "203.0.113.3")]).status == 429


HASH = "    balancer: {name: consistent_hash, config: {key: ip}}"


def test_consistent_hash_by_real_address(gateway, upstream):
    gw, ups = start(gateway, upstream, TRUST_LOCAL, route_extra=HASH, n_up=2)
    clients = ["198.51.100.%d" % i for i in range(1, 25)]
    first = {}
    for ip in clients + clients:
        r = send(gw, [("X-Forwarded-For", ip)], path="/c")
        assert r.status == 200
        owner = [u.name for u in ups if u.requests and u.requests[-1].header("X-Forwarded-For").startswith(ip + ",")]
        first.setdefault(ip, set()).update(owner)
    assert all(len(v) == 1 for v in first.values()), first  # each client sticks to one target
    assert all(ups[i].requests for i in range(2))  # and the clients spread over both


def test_consistent_hash_without_trust_keys_the_peer(gateway, upstream):
    gw, ups = start(gateway, upstream, route_extra=HASH, n_up=2)
    for i in range(1, 13):
        send(gw, [("X-Forwarded-For", "198.51.100.%d" % i)])
    assert sorted(len(u.requests) for u in ups) == [0, 12]
