#!/usr/bin/env python3
"""Summaries for bench/run.sh result files.

    summarize.py [--noisy P] [--drop-noisy] RESULTS-throughput.tsv
        medians across rounds per (connections, row), per-round ratios against
        nginx and HAProxy for requests/s and CPU/request, issue-8 target checks.
        A sample is "noisy" when the busy CPU of both cores not charged to the
        bench's processes exceeds P % of one core (default 30; 5-20 is the
        softirq work of a quiet machine); --drop-noisy leaves those samples out
        of the medians and ratios.
    summarize.py --instructions RESULTS-instructions.tsv [TRACE_DIR]
        instructions and syscalls per request side by side with ratios against
        nginx, plus the per-syscall breakdown from the kept strace summaries.
        TLS rows (moongate_tls, ...) are compared with nginx_tls / haproxy_tls,
        HTTP/2 rows (moongate_h2, moongate_h2c) with nginx_h2 / nginx_h2c (per stream).
    summarize.py --handshakes RESULTS-handshakes.tsv
        bench/run.sh --tls: new TLS connections/s (full, resumed) and the
        proxy's CPU per connection, ratios against nginx_tls and haproxy_tls.
"""
import glob
import os
import statistics
import sys


def read_tsv(path):
    rows, header = [], None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cells = line.split("\t")
            if header is None:
                header = cells
            else:
                rows.append(dict(zip(header, cells)))
    return rows


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec):
    if v is None:
        width = spec.split(".")[0].rstrip("dfs")
        return "-".rjust(int(width)) if width.isdigit() else "-"
    return format(v, spec)


ROW_ORDER = ["moongate", "moongate_ewma", "nginx", "nginx_lua", "haproxy", "floor", "direct", "origin",
             "moongate_tls", "nginx_tls", "haproxy_tls",
             "moongate_h2", "nginx_h2", "haproxy_h2", "moongate_h2c", "nginx_h2c", "haproxy_h2c"]
FAMILIES = ("_tls", "_h2", "_h2c")


def family(row):
    """"" for the plain HTTP/1.1 rows, else the suffix: _tls, _h2 (TLS + ALPN h2), _h2c"""
    for suffix in FAMILIES:
        if row.endswith(suffix):
            return suffix
    return ""


def tls(row):
    return row.endswith("_tls")


def base_of(row, base):
    """the peer a row is compared with: nginx_tls for a TLS row, nginx_h2 for an h2 row..."""
    return base + family(row)


def ordered(names):
    return sorted(names, key=lambda n: (ROW_ORDER.index(n) if n in ROW_ORDER else 99, n))


def noise(d):
    """CPU of both cores not charged to the bench, % of one core (older files: others_pct)"""
    return num(d.get("unaccounted_pct", d.get("others_pct")))


def is_noisy(d, limit):
    return (noise(d) or 0) > limit


def check(label, value, op, limit):
    if value is None:
        print(f"  n/a   {label}")
        return
    ok = value >= limit if op == ">=" else value <= limit
    print(f"  {'PASS' if ok else 'FAIL'}  {label}: {value:.3f} (target {op} {limit})")


def handshakes(path):
    """bench/run.sh --tls: new TLS connections per second, full and resumed"""
    data = read_tsv(path)
    if not data:
        print("no rows in", path)
        return
    by = {}  # (mode, row) -> {round: record}
    for d in data:
        by.setdefault((d["mode"], d["row"]), {})[int(d["round"])] = d
    rounds = sorted({int(d["round"]) for d in data})
    rows = ordered({r for _, r in by})
    modes = [m for m in ("full", "resumed") if any(k[0] == m for k in by)]

    def val(mode, row, rnd, key):
        d = by.get((mode, row), {}).get(rnd)
        return num(d[key]) if d is not None and num(d["conns"]) else None

    print(f"== new TLS connections: medians over {len(rounds)} round(s)")
    print(f"{'row':<14} {'mode':<8} {'conns/s':>9} {'resumed%':>8} {'failed':>6} {'cpu_us/conn':>11} {'cpu%':>6} {'client%':>7} {'unacct%':>7}")
    for mode in modes:
        for row in rows:
            if (mode, row) not in by:
                continue
            conns = med([val(mode, row, r, "conns") for r in rounds])
            res = med([val(mode, row, r, "resumed") for r in rounds])
            print(f"{row:<14} {mode:<8} {fmt(med([val(mode, row, r, 'conns_per_s') for r in rounds]), '9.0f')}"
                  f" {fmt(100 * res / conns if conns else None, '8.1f')}"
                  f" {sum(int(num(d['failed']) or 0) for d in by[(mode, row)].values()):>6}"
                  f" {fmt(med([val(mode, row, r, 'cpu_us_per_conn') for r in rounds]), '11.1f')}"
                  f" {fmt(med([val(mode, row, r, 'proc_cpu_pct') for r in rounds]), '6.1f')}"
                  f" {fmt(med([val(mode, row, r, 'client_cpu_pct') for r in rounds]), '7.0f')}"
                  f" {fmt(med([val(mode, row, r, 'unaccounted_pct') for r in rounds]), '7.0f')}")
    ratios = {}
    for base in ("nginx_tls", "haproxy_tls"):
        if base not in rows:
            continue
        print()
        print(f"== per-round ratios against {base}; median last")
        for mode in modes:
            for row in rows:
                if row == base or (mode, row) not in by:
                    continue
                parts = []
                for key, label in (("conns_per_s", "conns/s"), ("cpu_us_per_conn", "cpu/conn")):
                    rs = []
                    for r in rounds:
                        a, b = val(mode, row, r, key), val(mode, base, r, key)
                        rs.append(a / b if a is not None and b else None)
                    ratios[(mode, row, base, key)] = med(rs)
                    parts.append(f"{label} " + " ".join(fmt(x, '5.2f') for x in rs) + f"  (median {fmt(med(rs), '.2f')})")
                print(f"{row:<14} {mode:<8} " + "   ".join(parts))
    if "moongate_tls" in rows:
        print()
        print("== issue 15 targets, handshakes/s (medians of the per-round ratios)")
        for mode in modes:
            for base in ("nginx_tls", "haproxy_tls"):
                check(f"{mode} moongate_tls conns/s vs {base}", ratios.get((mode, "moongate_tls", base, "conns_per_s")), ">=", 1.0)
        print("(the client is on one core: when client% is near 100 the rate is the client's,")
        print(" and cpu_us/conn, the proxy's CPU per connection, is the comparison that holds)")


def throughput(path, noisy=30.0, drop=False):
    data = read_tsv(path)
    if not data:
        print("no rows in", path)
        return
    by = {}  # (conns, row) -> {round: record}
    for d in data:
        by.setdefault((int(d["conns"]), d["row"]), {})[int(d["round"])] = d
    conns_list = sorted({c for c, _ in by})
    rounds = sorted({int(d["round"]) for d in data})
    rows = ordered({r for _, r in by})

    def val(c, row, rnd, key):
        d = by.get((c, row), {}).get(rnd)
        if d is None or num(d["requests"]) in (None, 0):
            return None
        if drop and is_noisy(d, noisy):
            return None
        return num(d[key])

    def median_of(c, row, key):
        return med([val(c, row, r, key) for r in rounds])

    print(f"== summary: medians over {len(rounds)} round(s)"
          + (f", leaving out noisy samples (unacct% > {noisy:g})" if drop else ""))
    print(f"{'row':<14} {'conns':>5} {'req/s':>9} {'p50_ms':>8} {'p99_ms':>8} {'errors':>7}"
          f" {'cpu_us/rq':>9} {'cpu%':>6} {'rss_MB':>7} {'unacct%':>7} {'noisy':>5}")
    for c in conns_list:
        for row in rows:
            if (c, row) not in by:
                continue
            errs = sum(int(num(d["non2xx"]) or 0) + int(num(d["sock_errors"]) or 0)
                       for d in by[(c, row)].values())
            rps = median_of(c, row, "rps")
            p50 = median_of(c, row, "p50_us")
            p99 = median_of(c, row, "p99_us")
            print(f"{row:<14} {c:>5} {fmt(rps, '9.0f')} {fmt(p50 and p50 / 1000, '8.2f')}"
                  f" {fmt(p99 and p99 / 1000, '8.2f')} {errs:>7} {fmt(median_of(c, row, 'cpu_us_per_req'), '9.2f')}"
                  f" {fmt(median_of(c, row, 'proc_cpu_pct'), '6.1f')}"
                  f" {fmt((median_of(c, row, 'rss_kb') or 0) / 1024, '7.1f')}"
                  f" {fmt(med([noise(d) for d in by[(c, row)].values()]), '7.0f')}"
                  f" {sum(is_noisy(d, noisy) for d in by[(c, row)].values()):>3}/{len(by[(c, row)])}")
    print("(direct: wrk straight to upstream 1; its cpu_us/rq and rss are that nginx origin's own;")
    print(" unacct%: busy CPU of both cores not charged to the bench's processes, in % of one core:")
    print(f" 5-20 on a quiet machine (softirq charged to no task), more = other tenants; noisy: > {noisy:g})")

    n_noisy = sum(is_noisy(d, noisy) for d in data)
    if n_noisy and not drop:
        print(f"{n_noisy} of {len(data)} samples noisy; medians over the quiet ones only:"
              f" python3 bench/summarize.py --drop-noisy {path}")

    ratios = {}  # (c, row, base, key) -> median ratio
    for base in ("nginx", "haproxy") + tuple(b + f for f in FAMILIES for b in ("nginx", "haproxy")):
        if base not in rows:
            continue
        print()
        print(f"== per-round ratios against {base} (row / {base}); median last")
        for c in conns_list:
            for row in rows:
                if row == base or (c, row) not in by or family(row) != family(base):
                    continue
                parts = []
                for key, label in (("rps", "req/s"), ("cpu_us_per_req", "cpu/req")):
                    rs = []
                    for r in rounds:
                        a, b = val(c, row, r, key), val(c, base, r, key)
                        rs.append(a / b if a is not None and b else None)
                    m = med(rs)
                    ratios[(c, row, base, key)] = m
                    parts.append(f"{label} " + " ".join(fmt(x, '5.2f') for x in rs) + f"  (median {fmt(m, '.2f')})")
                print(f"{row:<14} {c:>5}  " + "   ".join(parts))

    if "moongate_tls" in rows:
        print()
        print("== issue 15 targets, keep-alive TLS (medians of the per-round ratios)")
        for c in conns_list:
            check(f"c={c} moongate_tls req/s vs nginx_tls", ratios.get((c, "moongate_tls", "nginx_tls", "rps")), ">=", 1.0)
            check(f"c={c} moongate_tls req/s vs haproxy_tls", ratios.get((c, "moongate_tls", "haproxy_tls", "rps")), ">=", 1.0)
    h2 = [r for r in ("moongate_h2", "moongate_h2c") if r in rows]
    if h2:
        print()
        print("== issue 16 targets, HTTP/2 from the client (medians of the per-round ratios)")
        for c in conns_list:
            for row in h2:
                f = family(row)
                check(f"c={c} {row} req/s vs nginx{f}", ratios.get((c, row, "nginx" + f, "rps")), ">=", 1.2)
                check(f"c={c} {row} req/s vs haproxy{f}", ratios.get((c, row, "haproxy" + f, "rps")), ">=", 1.0)
        print("(h2 rows: h2load has no percentiles: p50_ms is its mean time per request, p99 is not known)")
    if "moongate" not in rows:
        return
    print()
    print("== issue 8 targets (medians of the per-round ratios)")

    for c in conns_list:
        check(f"c={c} moongate req/s vs nginx", ratios.get((c, "moongate", "nginx", "rps")), ">=", 1.2)
        check(f"c={c} moongate req/s vs haproxy", ratios.get((c, "moongate", "haproxy", "rps")), ">=", 1.0)
        check(f"c={c} moongate cpu/req vs haproxy", ratios.get((c, "moongate", "haproxy", "cpu_us_per_req")), "<=", 1.0)
        if "moongate_ewma" in rows:
            rs = [(val(c, "moongate_ewma", r, "rps") or 0) / v for r in rounds
                  if (v := val(c, "moongate", r, "rps"))]
            check(f"c={c} moongate_ewma req/s vs moongate", med(rs), ">=", 0.95)
            if "nginx_lua" in rows:
                rs = [(val(c, "moongate_ewma", r, "rps") or 0) / v for r in rounds
                      if (v := val(c, "nginx_lua", r, "rps"))]
                check(f"c={c} moongate_ewma req/s vs nginx_lua", med(rs), ">=", 1.5)
    if 64 in conns_list:
        peers = [median_of(64, p, "p99_us") for p in ("nginx", "nginx_lua", "haproxy") if p in rows]
        peers = [p for p in peers if p]
        mine = median_of(64, "moongate", "p99_us")
        if peers and mine:
            check("c=64 moongate p99 / best peer p99", mine / min(peers), "<=", 1.0)


def instructions(path, trace_dir=None):
    data = read_tsv(path)
    if not data:
        print("no rows in", path)
        return
    val = {(d["row"], d["tool"], d["conns"]): num(d["per_request"]) for d in data}
    rows = ordered({d["row"] for d in data})
    conns = sorted({d["conns"] for d in data}, key=int)
    tools = [t for t in ("callgrind", "strace") if any(d["tool"] == t for d in data)]
    label = {"callgrind": "instr/req", "strace": "syscalls/req"}
    cols = [(t, c) for t in tools for c in conns]
    print("== per request (HTTP/2 rows: per stream): (count(N2) - count(N1)) / (N2 - N1);"
          " ratio = row / nginx (TLS rows: / nginx_tls, h2: / nginx_h2, h2c: / nginx_h2c)")
    head = f"{'row':<14}" + "".join(f" {label[t] + ' c=' + c:>17} {'ratio':>6}" for t, c in cols)
    print(head)
    for row in rows:
        line = f"{row:<14}"
        for t, c in cols:
            v, b = val.get((row, t, c)), val.get((base_of(row, "nginx"), t, c))
            spec = "17.0f" if t == "callgrind" else "17.2f"
            line += f" {fmt(v, spec)} {fmt(v / b if v is not None and b else None, '6.2f')}"
        print(line)
    if "origin" in rows:
        print("(origin: an nginx answering `return 200` itself, no proxying)")
    if "moongate_tls" in rows:
        print()
        print("== issue 15 targets")
        for c in conns:
            v, b = val.get(("moongate_tls", "callgrind", c)), val.get(("nginx_tls", "callgrind", c))
            if v is not None and b:
                check(f"c={c} instr per keep-alive TLS request {v:.0f} vs nginx_tls {b:.0f}", v / b, "<=", 0.8)

    h2 = [r for r in ("moongate_h2", "moongate_h2c") if r in rows]
    if h2:
        print()
        print("== issue 16 targets")
        for row in h2:
            for c in conns:
                base = "nginx" + family(row)
                v, b = val.get((row, "callgrind", c)), val.get((base, "callgrind", c))
                if v is not None and b:
                    check(f"c={c} {row} instr per stream {v:.0f} vs {base} {b:.0f}", v / b, "<=", 0.8)

    if "moongate" in rows:
        print()
        print("== issue 8 targets")
        for c in conns:
            v, b = val.get(("moongate", "callgrind", c)), val.get(("nginx", "callgrind", c))
            if v is not None and b:
                print(f"  {'PASS' if v <= 0.75 * b else 'FAIL'}  c={c} instr/req {v:.0f} vs nginx {b:.0f}: {v / b:.2f} (target <= 0.75)")
            s = val.get(("moongate", "strace", c))
            limit = {"1": 6.0, "8": 4.5}.get(c)
            if s is not None and limit is not None:
                print(f"  {'PASS' if s <= limit else 'FAIL'}  c={c} syscalls/req {s:.2f} (target <= {limit})")

    if not trace_dir or not os.path.isdir(trace_dir):
        return
    print()
    print("== syscalls per request by name (strace -c difference, |x| >= 0.01)")
    n1 = {d["row"] + d["conns"]: (int(d["n1"]), int(d["n2"])) for d in data if d["tool"] == "strace"}
    for row in rows:
        for c in conns:
            key = row + c
            if key not in n1:
                continue
            a, b = n1[key]
            f1 = os.path.join(trace_dir, f"{row}-strace-c{c}-n{a}.strace")
            f2 = os.path.join(trace_dir, f"{row}-strace-c{c}-n{b}.strace")
            if not (os.path.exists(f1) and os.path.exists(f2)):
                continue
            s1, s2 = strace_counts(f1), strace_counts(f2)
            per = {k: (s2.get(k, 0) - s1.get(k, 0)) / (b - a) for k in set(s1) | set(s2)}
            per = sorted(((v, k) for k, v in per.items() if abs(v) >= 0.01), reverse=True)
            print(f"{row:<14} c={c:<3} " + "  ".join(f"{k} {v:.2f}" for v, k in per))
    cg = {(d["row"], d["conns"]): (int(d["n1"]), int(d["n2"])) for d in data if d["tool"] == "callgrind"}
    for row in rows:
        c = conns[0]
        if (row, c) not in cg or row not in ("moongate", "moongate_ewma", "nginx", "haproxy", "nginx_lua") + tuple(
                b + f for f in FAMILIES for b in ("moongate", "nginx", "haproxy")):
            continue
        a, b = cg[(row, c)]
        f1 = os.path.join(trace_dir, f"{row}-callgrind-c{c}-n{a}.callgrind")
        f2 = os.path.join(trace_dir, f"{row}-callgrind-c{c}-n{b}.callgrind")
        if not (os.path.exists(f1) and os.path.exists(f2)):
            continue
        p1, p2 = callgrind_functions(f1), callgrind_functions(f2)
        if not p1 or not p2:
            continue
        per = sorted((((p2.get(k, 0) - p1.get(k, 0)) / (b - a), k) for k in set(p1) | set(p2)), reverse=True)
        total = sum(v for v, _ in per)
        print()
        print(f"== {row} c={c}: top functions, instructions per request (self cost, difference of the two runs)")
        for v, k in per[:12]:
            print(f"  {v:9.0f} {100 * v / total:5.1f}%  {k}")
    files = sorted(glob.glob(os.path.join(trace_dir, "*-callgrind-*.callgrind")))
    if files:
        print()
        print(f"callgrind profiles kept in {trace_dir}: callgrind_annotate FILE | head -40")


def callgrind_functions(path):
    """self instructions by function, from callgrind_annotate"""
    import re
    import subprocess
    try:
        out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    counts = {}
    pat = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)(?: \[(.*)\])?$")
    for line in out.splitlines():
        m = pat.match(line)
        if not m or m.group(2) == "PROGRAM TOTALS":
            continue
        name = m.group(2)
        fn = name.rsplit(":", 1)[-1] if ":" in name else name
        obj = os.path.basename(m.group(3) or "")
        key = f"{fn} ({obj})" if obj else fn
        counts[key] = counts.get(key, 0) + int(m.group(1).replace(",", ""))
    return counts


def strace_counts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or not parts[0].isdigit() or parts[-1] == "total":
                continue
            counts[parts[-1]] = counts.get(parts[-1], 0) + int(parts[0])
    return counts


def main(argv):
    if len(argv) == 3 and argv[1] == "--handshakes":
        handshakes(argv[2])
    elif len(argv) >= 2 and argv[1] == "--instructions":
        instructions(argv[2], argv[3] if len(argv) > 3 else None)
    elif len(argv) >= 2:
        args, noisy, drop = argv[1:], 30.0, False
        while args and args[0].startswith("--"):
            if args[0] == "--noisy":
                noisy = float(args[1]); args = args[2:]
            elif args[0] == "--drop-noisy":
                drop = True; args = args[1:]
            else:
                print(__doc__, file=sys.stderr)
                return 2
        if len(args) != 1:
            print(__doc__, file=sys.stderr)
            return 2
        throughput(args[0], noisy, drop)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
