#!/usr/bin/env python3
"""The kernel's share per request, from bench/run.sh --kernel.

    kernel_table.py RESULTS-kernel.tsv [STRACE_DIR]

Every count is per request: (count(N2) - count(N1)) / (N2 - N1) over two
h2load runs of N1 and N2 keep-alive requests at the same connection count, so
connection set-up, start-up and exit cancel out. The TSV holds the untraced
runs' counter deltas (TCP counters of the bench's network namespace, the
proxy's context switches, utime/stime ticks, schedstat run time, the segments
of its sockets towards the upstreams); STRACE_DIR the `strace -f -c -U
calls,errors,name` tables of the traced runs (ROW-strace-cC-nN.strace).
Prints a markdown table (paste into bench/README.md) and the syscalls by name.
"""
import os
import re
import sys

READS = ("read", "recvfrom", "recvmsg", "readv")
WRITES = ("write", "writev", "sendto", "sendmsg", "sendmmsg")


def read_tsv(path):
    runs, clk = {}, 100
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.search(r"CLK_TCK (\d+)", line)
            if line.startswith("#"):
                if m:
                    clk = int(m.group(1))
                continue
            cells = line.split("\t")
            if cells[0] == "row" or len(cells) < 5:
                continue
            row, conns, n, ok = cells[0], int(cells[1]), int(cells[2]), int(cells[3] or 0)
            counters = dict(kv.split("=", 1) for kv in cells[4].split() if "=" in kv)
            runs.setdefault((row, conns), {})[n] = (ok, {k: int(v) for k, v in counters.items()})
    return runs, clk


def strace_table(path):
    calls, errors = {}, {}
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit() or parts[-1] == "total":
                continue
            name = parts[-1]
            calls[name] = calls.get(name, 0) + int(parts[0])
            if len(parts) == 3:
                errors[name] = errors.get(name, 0) + int(parts[1])
    return calls, errors


def per_request(a, b, n1, n2):
    keys = set(a) | set(b)
    return {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in keys}


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    runs, clk = read_tsv(argv[1])
    trace_dir = argv[2] if len(argv) > 2 else None
    order = ["moongate", "moongate_ewma", "nginx", "nginx_lua", "haproxy"]
    keys = sorted(runs, key=lambda k: (k[1], order.index(k[0]) if k[0] in order else 99, k[0]))
    print("| conns | row | syscalls/req | reads | writes | epoll_wait | epoll_ctl | EAGAIN | "
          "segs/req | client side | upstream side | delayed ACKs | pure ACKs | ctx sw vol | "
          "ctx sw invol | user us/req | sys us/req | cpu us/req |")
    print("|---:|---|" + "---:|" * 16)
    names = []
    for key in keys:
        row, conns = key
        ns = sorted(runs[key])
        if len(ns) < 2:
            continue
        n1, n2 = ns[0], ns[-1]
        (ok1, c1), (ok2, c2) = runs[key][n1], runs[key][n2]
        if ok1 != n1 or ok2 != n2:
            print(f"| {conns} | {row} | h2load: {ok1}/{n1}, {ok2}/{n2} answered 2xx | " + "- |" * 15)
            continue
        d = per_request(c1, c2, n1, n2)
        sc = None
        if trace_dir:
            t1 = strace_table(os.path.join(trace_dir, f"{row}-strace-c{conns}-n{n1}.strace"))
            t2 = strace_table(os.path.join(trace_dir, f"{row}-strace-c{conns}-n{n2}.strace"))
            if t1 and t2:
                sc = per_request(t1[0], t2[0], n1, n2)
                se = per_request(t1[1], t2[1], n1, n2)
        tick_us = 1e6 / clk
        segs = d.get("TcpOutSegs", 0)
        up = d.get("up_out", 0) + d.get("up_in", 0)
        if sc:
            total = sum(sc.values())
            reads = sum(v for k, v in sc.items() if k in READS)
            writes = sum(v for k, v in sc.items() if k in WRITES)
            eagain = sum(v for k, v in se.items() if k in READS)
            sys_cols = (f"{total:.2f} | {reads:.2f} | {writes:.2f} | {sc.get('epoll_wait', 0):.2f} | "
                        f"{sc.get('epoll_ctl', 0):.2f} | {eagain:.2f}")
            names.append((conns, row, sc, se))
        else:
            sys_cols = " | ".join(["-"] * 6)
        print(f"| {conns} | {row} | {sys_cols} | {segs:.2f} | {segs - up:.2f} | {up:.2f} | "
              f"{d.get('TcpExtDelayedACKs', 0):.3f} | {d.get('TcpExtTCPPureAcks', 0):.2f} | "
              f"{d.get('vcs', 0):.3f} | {d.get('ivcs', 0):.3f} | {d.get('utime', 0) * tick_us:.2f} | "
              f"{d.get('stime', 0) * tick_us:.2f} | {d.get('run_ns', 0) / 1000:.2f} |")
    if names:
        print()
        print("syscalls per request by name (strace -f -c difference; errors in brackets; |x| >= 0.01)")
        for conns, row, sc, se in names:
            parts = []
            for k, v in sorted(sc.items(), key=lambda kv: -kv[1]):
                if abs(v) < 0.01:
                    continue
                e = se.get(k, 0)
                parts.append(f"{k} {v:.2f}" + (f" [{e:.2f} err]" if abs(e) >= 0.01 else ""))
            print(f"  c={conns:<4} {row:<10} " + "  ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
