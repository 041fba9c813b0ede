#!/usr/bin/env bash
# Tail scenario of issue 22: two upstream targets where SLOW_PCT % of requests
# take SLOW_MS (the rest 1 ms). Rows: moongate without hedging, moongate with
# `hedge: {after: p95, budget: 5}`, nginx and HAProxy (round robin, no hedging). For each:
# client p50/p90/p99/p99.9 (bench/hedge_load.py) and the extra upstream requests (%) the proxy
# sent beyond the client's. Loopback only; every process started is stopped.
#
#   bench/hedge.sh [--duration S] [--conns N] [--rows "moongate moongate_hedge nginx haproxy"]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${MOONGATE_BIN:-$ROOT/build/moongate}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-8}
SLOW_PCT=${BENCH_SLOW_PCT:-2}
SLOW_MS=${BENCH_SLOW_MS:-200}
ROWS=${BENCH_ROWS:-"moongate moongate_hedge nginx haproxy"}
HEDGE_AFTER=${BENCH_HEDGE_AFTER:-p95}  # hedge.after of the moongate_hedge row
HEDGE_BUDGET=${BENCH_HEDGE_BUDGET:-5}  # hedge.budget (%) of the moongate_hedge row
BASE=${BENCH_PORT:-19401}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/scenario.sh
. "$HERE/scenario.sh"

U1=$BASE; U2=$((BASE + 1)); PROXY=$((BASE + 2)); ADMIN=$((BASE + 3))
python3 "$HERE/hedge_upstream.py" "$U1" "$SLOW_PCT" "$SLOW_MS" & PIDS+=($!)
python3 "$HERE/hedge_upstream.py" "$U2" "$SLOW_PCT" "$SLOW_MS" & PIDS+=($!)
count() { curl -s "http://127.0.0.1:$1/__count"; }
for _ in $(seq 50); do
  count "$U1" >/dev/null && count "$U2" >/dev/null && break
  sleep 0.1
done

moongate_conf() { # $1: extra upstream lines
  cat > "$TMP/moongate.yaml" <<YAML
listen: ["127.0.0.1:$PROXY"]
workers: 1
admin: {listen: "127.0.0.1:$ADMIN"}
pid_file: $TMP/moongate.pid
access_log: "off"
upstreams:
  u:
    targets: [{address: "127.0.0.1:$U1"}, {address: "127.0.0.1:$U2"}]
    retry: {max_retries: 1}
$1
routes:
  - {name: all, upstream: u}
YAML
}

start_row() {
  case "$1" in
    moongate) moongate_conf ""; "$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/$1.log" & PIDS+=($!) ;;
    moongate_hedge) moongate_conf "    hedge: {after: $HEDGE_AFTER, max: 1, budget: $HEDGE_BUDGET}"
      "$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/$1.log" & PIDS+=($!) ;;
    nginx) scenario_nginx "$1" "$PROXY" "$U1" "$U2" ;;
    haproxy) scenario_haproxy "$1" "$PROXY" "$U1" "$U2" ;;
  esac
  scenario_wait "$1" "http://127.0.0.1:$PROXY/"
}

printf "%-16s %9s %7s %9s %9s %9s %9s %15s\n" row requests errors p50_ms p90_ms p99_ms p99.9_ms extra_upstream
for row in $ROWS; do
  if ! command -v "${row%%_*}" >/dev/null 2>&1 && [ "${row%%_*}" != moongate ]; then
    echo "$row: skipped (not installed)"; continue
  fi
  start_row "$row" || continue
  pid=${PIDS[-1]}
  # warm-up: fills pools and, with hedging, the latency window
  python3 "$HERE/hedge_load.py" "$PROXY" "$CONNS" 2 >/dev/null
  before=$(( $(count "$U1") + $(count "$U2") ))
  read -r reqs errs p50 p90 p99 p999 < <(python3 "$HERE/hedge_load.py" "$PROXY" "$CONNS" "$DURATION")
  sleep 0.3 # hedges still in flight reach the upstream
  after=$(( $(count "$U1") + $(count "$U2") ))
  extra=$(python3 -c "print('%.2f%%' % (100.0 * ($after - $before - $reqs) / $reqs))")
  printf "%-16s %9s %7s %9s %9s %9s %9s %15s\n" "$row" "$reqs" "$errs" "$p50" "$p90" "$p99" "$p999" "$extra"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 0.3
done
