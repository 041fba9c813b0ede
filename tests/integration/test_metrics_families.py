"""The metric families an operator expects (issue 21, DESIGN 10.8): a real
scrape passes `promtool check metrics` (Debian package prometheus), lists the
families below, and the new ones count real traffic."""

import shutil
import subprocess
import time

import pytest

from conftest import fetch, samples, t
from test_admin_token import admin

CONF = """\
listen: ["127.0.0.1:$port"]
workers: 1
admin: {listen: "127.0.0.1:$admin_port"}
pid_file: "$pid_file"
drain_timeout: 100ms
upstreams:
  api:
    targets: [{address: "$up"}]
routes:
  - {name: api, upstream: api}
"""

FAMILIES = {
    "moongate_requests_total", "moongate_request_duration_seconds", "moongate_requests_in_flight",
    "moongate_errors_total", "moongate_upstream_requests_total", "moongate_retries_total",
    "moongate_bulkhead_in_use", "moongate_bulkhead_queued", "moongate_bulkhead_rejected_total",
    "moongate_upstream_response_duration_seconds", "moongate_circuit_state",
    "moongate_connections", "moongate_config_reloads_total", "moongate_build_info",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
    "process_max_fds", "process_start_time_seconds",
}

BOUNDS = ["0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
          "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"]


def test_scrape_passes_promtool_and_lists_the_families(gateway, upstream):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus, scripts/deps.sh) is not installed")
    before = time.time()
    gw = gateway(CONF, full=True, up=upstream())
    for i in range(3):
        assert fetch(gw.port, "GET", "/r/%d" % i).status == 200
    # An exchange records its metrics as it ends, which may be just after the
    # client has read the response: scrape until the third one is counted.
    up = "moongate_upstream_response_duration_seconds"
    key = (up + "_count", frozenset({("upstream", "api")}))
    deadline = time.monotonic() + t(3)
    while True:
        status, headers, text = admin(gw, "/metrics")
        assert status == 200
        if samples(text).get(key, 0) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=t(20))
    assert p.returncode == 0, p.stdout + p.stderr
    families = {l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")}
    assert FAMILIES <= families, FAMILIES - families

    s = samples(text)
    assert s[key] == 3
    les = [l.split('le="')[1].split('"')[0] for l in text.splitlines()
           if l.startswith(up + "_bucket")]
    assert les == BOUNDS
    rd = [l.split('le="')[1].split('"')[0] for l in text.splitlines()
          if l.startswith('moongate_request_duration_seconds_bucket{route="api"')]
    assert rd == BOUNDS
    build = [k for k in s if k[0] == "moongate_build_info"]
    assert len(build) == 1 and dict(build[0][1])["version"] and s[build[0]] == 1
    start = s[("process_start_time_seconds", frozenset())]
    assert before - 5 <= start <= time.time() + 1
    assert s[("process_open_fds", frozenset())] >= 4
    assert s[("process_max_fds", frozenset())] >= s[("process_open_fds", frozenset())]
    assert s[("process_resident_memory_bytes", frozenset())] > 1 << 20
    assert s[("process_cpu_seconds_total", frozenset())] >= 0
