#!/usr/bin/env python3
"""What the live dashboard costs: the page's weight, the /status/live poll
size, and the admin thread's CPU time (thread "mg-admin", CPU nanoseconds
from /proc/PID/task/TID/schedstat) while it only samples and while a real
headless Chromium keeps the page open (one poll a second), with light
traffic on --routes routes. Optionally saves a screenshot with two minutes
of history and one upstream failing (its breakers open).

    bench/dashboard_cost.py [--binary build/moongate] [--routes 20] [--seconds 60]
                            [--screenshot docs/dashboard.png]
"""

import argparse
import http.server
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from cdp import Browser  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fail = False

    def do_GET(self):
        time.sleep(random.expovariate(1 / 0.004))
        status = 502 if Handler.fail and "/pay" in self.path else 200
        body = b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def admin_cpu_ns(pid):
    """CPU time of the admin thread in ns (schedstat: finer than stat's ticks)."""
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() == "mg-admin":
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    return int(f.read().split()[0])
    raise SystemExit("no mg-admin thread")


def measure(pid, seconds):
    """Share of one core the admin thread used over `seconds`."""
    t0, c0 = time.monotonic(), admin_cpu_ns(pid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), admin_cpu_ns(pid)
    return (c1 - c0) / 1e9 / (t1 - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "build", "moongate"))
    ap.add_argument("--routes", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--screenshot")
    a = ap.parse_args()

    ups = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    for up in ups:
        threading.Thread(target=up.serve_forever, daemon=True).start()
    upaddrs = ["127.0.0.1:%d" % up.server_address[1] for up in ups]
    port, admin = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="mg-dash-")
    names = ["orders", "users", "search", "payments"] + ["svc%02d" % i for i in range(a.routes)]
    names = names[:a.routes]
    conf = ["listen: [\"127.0.0.1:%d\"]" % port, "workers: 2",
            "admin: {listen: \"127.0.0.1:%d\"}" % admin, "pid_file: %s/pid" % work,
            "upstreams:"]
    for n in names:
        conf += ["  %s:" % n, "    targets: [{address: \"%s\"}, {address: \"%s\"}]" % tuple(upaddrs),
                 "    retry: {max_retries: 0}",
                 "    circuit_breaker: {consecutive_failures: 5, open_for: 20s}"]
    conf.append("routes:")
    for n in names:
        conf.append("  - {name: %s, upstream: %s, match: {paths: [/%s]}}" % (n, n, n))
    with open(os.path.join(work, "gw.yaml"), "w") as f:
        f.write("\n".join(conf) + "\n")
    log = open(os.path.join(work, "gw.log"), "wb")
    gw = subprocess.Popen([a.binary, "-c", os.path.join(work, "gw.yaml")], stdout=log, stderr=log)
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            n = random.choice(names[:4] * 4 + names)
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/%s/x" % (port, n), timeout=2).read()
            except Exception:
                pass
            time.sleep(0.01)

    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", admin), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(open(os.path.join(work, "gw.log")).read())
        threads = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
        for th in threads:
            th.start()
        page_bytes = len(urllib.request.urlopen("http://127.0.0.1:%d/" % admin).read())
        full = len(urllib.request.urlopen("http://127.0.0.1:%d/status/live" % admin).read())
        print("page: %d bytes; /status/live with all history: %d bytes" % (page_bytes, full))
        print("admin thread, sampling only: %.3f%% of a core over %ds"
              % (100 * measure(gw.pid, a.seconds), a.seconds))
        with Browser() as b:
            page = b.page(1280, 800)
            page.goto("http://127.0.0.1:%d/" % admin)
            cpu = measure(gw.pid, a.seconds)
            live = "http://127.0.0.1:%d/status/live" % admin
            seq = int(urllib.request.urlopen(live).read().split(b'"seq":')[1].split(b",")[0])
            last = urllib.request.urlopen("%s?since=%d" % (live, seq - 1)).read()
            print("admin thread, sampling + the page polling 1/s in Chromium: %.3f%% of a core "
                  "over %ds; one poll (one new point): %d bytes" % (100 * cpu, a.seconds, len(last)))
            if a.screenshot:
                Handler.fail = True  # payments fails: its breaker opens
                time.sleep(8)
                page.screenshot(a.screenshot, full_page=False)
                print("screenshot:", a.screenshot)
            if b.console_errors:
                print("console errors:", b.console_errors)
    finally:
        stop.set()
        gw.terminate()
        gw.wait(10)
        for up in ups:
            up.shutdown()


if __name__ == "__main__":
    main()
