#!/usr/bin/env bash
# Priority scenario of issue 22: one upstream (bench/knee_upstream.py, BASE_MS
# up to KNEE in flight, capacity KNEE / BASE_MS) behind two routes, /critical
# and /sheddable, offered together FACTOR x the capacity open-loop
# (bench/open_load.py): CRIT_SHARE of the capacity on /critical, the rest on
# /sheddable. Rows: `flat` (both routes `priority: default`), `prio` (critical
# and sheddable) with a static bulkhead at the knee (BULKHEAD), and
# `prio_adaptive` (critical and sheddable, `bulkhead: {adaptive: ...}`).
# Per route: offered/s, success (200) %, 503s, timeouts, p50/p99 of the 200s.
#
#   bench/priority.sh [--duration S] [--factor F] [--rows "flat prio prio_adaptive"]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${MOONGATE_BIN:-$ROOT/build/moongate}
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-5}
BASE_MS=${BENCH_BASE_MS:-40}
KNEE=${BENCH_KNEE:-16}
FACTOR=${BENCH_FACTOR:-3}
CRIT_SHARE=${BENCH_CRIT_SHARE:-0.4}
TIMEOUT=${BENCH_TIMEOUT:-1}
ROWS=${BENCH_ROWS:-"flat prio prio_adaptive"}
BULKHEAD=${BENCH_BULKHEAD:-"max_concurrent: $KNEE, max_queue: 32, queue_timeout: 500ms"}
ADAPTIVE=${BENCH_ADAPTIVE:-"max_queue: 32, queue_timeout: 500ms, adaptive: {min_limit: 4, max_limit: 512}"}
BASE=${BENCH_PORT:-19461}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --factor) FACTOR=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/scenario.sh
. "$HERE/scenario.sh"

U1=$BASE; PROXY=$((BASE + 1)); ADMIN=$((BASE + 2))
CAP=$(python3 -c "print(round($KNEE * 1000 / $BASE_MS))")
CRIT=$(python3 -c "print(round($CAP * $CRIT_SHARE))")
SHED=$(python3 -c "print(round($CAP * $FACTOR - $CAP * $CRIT_SHARE))")

start_upstream() {
  python3 "$HERE/knee_upstream.py" "$U1" "$BASE_MS" "$KNEE" & UPID=$!
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$U1/__count" >/dev/null && return 0; sleep 0.1; done
  echo "upstream did not start" >&2; return 1
}

moongate_conf() { # $1 bulkhead, $2 critical route's priority, $3 sheddable route's
  cat > "$TMP/moongate.yaml" <<YAML
listen: ["127.0.0.1:$PROXY"]
workers: 1
admin: {listen: "127.0.0.1:$ADMIN"}
pid_file: $TMP/moongate.pid
access_log: "off"
client: {max_connections: 20000}
upstreams:
  u:
    targets: [{address: "127.0.0.1:$U1"}]
    retry: {max_retries: 0}
    bulkhead: {$1}
routes:
  - {name: critical, match: {paths: ["/critical"]}, upstream: u, priority: $2}
  - {name: sheddable, match: {paths: ["/sheddable"]}, upstream: u, priority: $3}
YAML
}

echo "upstream: ${BASE_MS} ms up to $KNEE in flight, capacity $CAP/s; offered /critical $CRIT/s + /sheddable $SHED/s (${FACTOR}x), client timeout ${TIMEOUT}s, ${DURATION}s (first ${WARMUP}s not counted)"
printf "%-14s %-11s %9s %8s %9s %8s %8s %9s %8s %8s %6s\n" row route offered/s ok/s success refused timeout conn_err p50_ms p99_ms limit
for row in $ROWS; do
  kill "${UPID:-}" 2>/dev/null || true; wait "${UPID:-}" 2>/dev/null || true
  start_upstream
  case "$row" in
    flat) moongate_conf "$BULKHEAD" default default ;;
    prio) moongate_conf "$BULKHEAD" critical sheddable ;;
    prio_adaptive) moongate_conf "$ADAPTIVE" critical sheddable ;;
    *) echo "unknown row $row" >&2; continue ;;
  esac
  "$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/$row.log" & pid=$!; PIDS+=($pid)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PROXY/critical" && break; sleep 0.1; done
  python3 "$HERE/open_load.py" "$PROXY" "$DURATION" "$TIMEOUT" "$WARMUP" "/critical:$CRIT" "/sheddable:$SHED" > "$TMP/out"
  lim=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^moongate_bulkhead_limit/ && !n++ {print $2}')
  while read -r path sent ok refused other timeout cerr offered good p50 p99; do
    succ=$(python3 -c "print('%.2f%%' % (100.0 * $ok / max(1, $sent)))")
    printf "%-14s %-11s %9s %8s %9s %8s %8s %9s %8s %8s %6s\n" "$row" "$path" "$offered" "$good" "$succ" \
      "$refused" "$timeout" "$cerr" "$p50" "$p99" "$lim"
  done < "$TMP/out"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 0.5
done
