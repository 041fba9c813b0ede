#!/usr/bin/env bash
# What rate_limit's policy costs in time (bench/README.md, "rate_limit
# policies"): one moongate per row (workers: 1, one route, a bucket that never
# runs dry), an nginx origin answering 200 itself, a real redis-server for the
# redis policy; wrk -c CONNS for SECONDS per row, rows interleaved within each
# of ROUNDS rounds. Prints each round, then the medians of req/s, p50 and p99
# and of the per-round ratios against the `local` row.
#   Usage: bench/rate_limit.sh [ROW ...]   (rows: none local shared redis)
#   MOONGATE=path/to/moongate  ROUNDS=3  SECONDS_PER_ROW=5  CONNS=8
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
MOONGATE=${MOONGATE:-$ROOT/build/moongate}
ROUNDS=${ROUNDS:-3}
DUR=${SECONDS_PER_ROW:-5}
CONNS=${CONNS:-8}
ROWS=${*:-none local shared redis}
# TMP, PIDS and their cleanup at exit
# shellcheck source=bench/scenario.sh
. "$HERE/scenario.sh"

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

UP=$(free_port)
sed -e "s|@TMP@|$TMP|g; s|@NAME@|origin|g; s|@PORT@|$UP|g; s|@MASTER_PROCESS@|off|g" \
  "$HERE/conf/upstream-nginx.conf" >"$TMP/origin.conf"
nginx -p "$TMP/" -c "$TMP/origin.conf" -e "$TMP/origin.error.log" & PIDS+=($!)
wait_port "$UP"
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
  >"$TMP/redis.log" 2>&1 & PIDS+=($!)
wait_port "$REDIS_PORT"

declare -A PORT
for row in $ROWS; do
  case $row in
    none) plugins="" ;;
    local | shared | redis)
      plugins="    plugins: [{name: rate_limit, config: {rate: 1000000000, policy: $row}}]" ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  PORT[$row]=$(free_port)
  cat >"$TMP/$row.yaml" <<YAML
listen: ["127.0.0.1:${PORT[$row]}"]
workers: 1
access_log: off
pid_file: "$TMP/$row.pid"
shared_dicts: {rate_limit: 10m}
redis: {address: "127.0.0.1:$REDIS_PORT", timeout: 1s}
upstreams:
  origin:
    targets: [{address: "127.0.0.1:$UP"}]
    keepalive: 64
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: origin
$plugins
YAML
  "$MOONGATE" -c "$TMP/$row.yaml" >"$TMP/$row.log" 2>&1 & PIDS+=($!)
  wait_port "${PORT[$row]}" || { cat "$TMP/$row.log" >&2; exit 1; }
  # warm-up (the JIT, pools, Redis's script cache)
  wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${PORT[$row]}/" >/dev/null
done

: >"$TMP/results"
for round in $(seq 1 "$ROUNDS"); do
  for row in $ROWS; do
    line=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$HERE/wrk-report.lua" \
      "http://127.0.0.1:${PORT[$row]}/" | grep '^BENCH')
    echo "round=$round row=$row $line" | tee -a "$TMP/results"
  done
done

/usr/bin/python3 - "$TMP/results" <<'PY'
import re, statistics, sys
rows, per = [], {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    r, n = kv["row"], int(kv["round"])
    if r not in rows:
        rows.append(r)
    bad = int(kv["status"]) + int(kv["timeout"]) + int(kv["connect"]) + int(kv["read"])
    per.setdefault(r, {})[n] = (int(kv["requests"]) / (int(kv["duration_us"]) / 1e6),
                                int(kv["p50"]), int(kv["p99"]), bad)
med = lambda xs: statistics.median(xs)
print("\n%-8s %10s %9s %9s %8s  %s" % ("row", "req/s", "p50_us", "p99_us", "errors",
                                       "vs local (median of per-round ratios)"))
for r in rows:
    v = per[r]
    rps, p50, p99 = (med([x[i] for x in v.values()]) for i in range(3))
    vs = ""
    if "local" in per and r != "local":
        rounds = sorted(set(v) & set(per["local"]))
        q = lambda i: med([v[n][i] / per["local"][n][i] for n in rounds])
        vs = "req/s x%.2f, p50 x%.2f, p99 x%.2f" % (q(0), q(1), q(2))
    print("%-8s %10.0f %9.0f %9.0f %8d  %s" % (r, rps, p50, p99,
                                               sum(x[3] for x in v.values()), vs))
PY
