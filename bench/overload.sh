#!/usr/bin/env bash
# Overload scenario of issue 22: one upstream (bench/knee_upstream.py) whose
# service time is BASE_MS up to KNEE requests in flight and grows linearly
# beyond (capacity KNEE / BASE_MS), offered FACTOR x its capacity open-loop
# (bench/open_load.py, clients give up after TIMEOUT s). Rows: moongate with
# the default static bulkhead (256 + queue 128), moongate with no limit,
# moongate with a static limit at the true knee (the reference an adaptive
# limit should reach), moongate with `bulkhead: {adaptive: ...}`, nginx and HAProxy (defaults: no
# limit, no queue). For each: offered/s, goodput (200 within the client's
# timeout) against capacity, refusals, timeouts, p50/p99 of the admitted
# (200) requests against the unloaded service time, and for moongate the
# bulkhead limit (/metrics moongate_bulkhead_limit, sampled every 0.5 s of
# the measured part: min/median/max).
#
#   bench/overload.sh [--duration S] [--factor F] [--rows "moongate_static moongate_nolimit moongate_knee moongate_adaptive nginx haproxy"]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${MOONGATE_BIN:-$ROOT/build/moongate}
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-5}
BASE_MS=${BENCH_BASE_MS:-40}
KNEE=${BENCH_KNEE:-16}
FACTOR=${BENCH_FACTOR:-3}
TIMEOUT=${BENCH_TIMEOUT:-1}
ROWS=${BENCH_ROWS:-"moongate_static moongate_nolimit moongate_knee moongate_adaptive nginx haproxy"}
ADAPTIVE=${BENCH_ADAPTIVE:-"{min_limit: 4, max_limit: 512, smoothing: 0.2}"}
QUEUE=${BENCH_QUEUE:-"max_queue: 16, queue_timeout: 50ms"} # of the adaptive row
BASE=${BENCH_PORT:-19421}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --factor) FACTOR=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/scenario.sh
. "$HERE/scenario.sh"

U1=$BASE; PROXY=$((BASE + 1)); ADMIN=$((BASE + 2))
CAP=$(python3 -c "print(round($KNEE * 1000 / $BASE_MS))")
RATE=$(python3 -c "print(round($CAP * $FACTOR))")

start_upstream() {
  python3 "$HERE/knee_upstream.py" "$U1" "$BASE_MS" "$KNEE" & UPID=$!
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$U1/__count" >/dev/null && return 0; sleep 0.1; done
  echo "upstream did not start" >&2; return 1
}

moongate_conf() { # $1: bulkhead line
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
$1
routes:
  - {name: all, upstream: u}
YAML
}

start_row() {
  case "$1" in
    moongate_static) moongate_conf ""
      "$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/$1.log" & PIDS+=($!) ;;
    moongate_nolimit) moongate_conf "    bulkhead: {max_concurrent: 100000, max_queue: 0}"
      "$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/$1.log" & PIDS+=($!) ;;
    moongate_knee) moongate_conf "    bulkhead: {max_concurrent: $KNEE, $QUEUE}"
      "$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/$1.log" & PIDS+=($!) ;;
    moongate_adaptive) moongate_conf "    bulkhead: {$QUEUE, adaptive: $ADAPTIVE}"
      "$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/$1.log" & PIDS+=($!) ;;
    nginx) scenario_nginx "$1" "$PROXY" "$U1" ;;
    haproxy) scenario_haproxy "$1" "$PROXY" "$U1" ;;
  esac
  scenario_wait "$1" "http://127.0.0.1:$PROXY/"
}

limit() {
  curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^moongate_bulkhead_limit/ && !n++ {print $2}'
}

echo "upstream: ${BASE_MS} ms up to $KNEE in flight, capacity $CAP/s; offered $RATE/s (${FACTOR}x), client timeout ${TIMEOUT}s, ${DURATION}s (first ${WARMUP}s not counted)"
start_upstream
read -r _ _ _ _ _ _ _ _ _ u50 u99 < <(python3 "$HERE/open_load.py" "$U1" 5 "$TIMEOUT" 1 "/:$((CAP / 4))")
echo "unloaded (upstream direct, $((CAP / 4))/s): p50 $u50 ms, p99 $u99 ms"
printf "%-18s %8s %8s %8s %9s %8s %8s %9s %8s %8s %8s %s\n" row offered/s goodput/s %cap refused other timeout conn_err p50_ms p99_ms p99/unl limit_min/med/max
for row in $ROWS; do
  if ! command -v "${row%%_*}" >/dev/null 2>&1 && [ "${row%%_*}" != moongate ]; then
    echo "$row: skipped (not installed)"; continue
  fi
  # a fresh upstream per row: requests a previous row left behind would load it
  kill "$UPID" 2>/dev/null || true; wait "$UPID" 2>/dev/null || true
  start_upstream
  start_row "$row" || continue
  pid=${PIDS[-1]}
  python3 "$HERE/open_load.py" "$PROXY" "$DURATION" "$TIMEOUT" "$WARMUP" "/:$RATE" > "$TMP/out" &
  load=$!
  : > "$TMP/limits"
  if [ "${row%%_*}" = moongate ]; then # the limit every 0.5 s of the measured part
    sleep "$WARMUP"
    while kill -0 "$load" 2>/dev/null; do limit >> "$TMP/limits"; sleep 0.5; done
  fi
  wait "$load"
  read -r _ sent ok refused other timeout cerr offered good p50 p99 < "$TMP/out"
  lim=-
  [ -s "$TMP/limits" ] && lim=$(sort -n "$TMP/limits" | awk '{v[NR]=$1} END {print v[1] "/" v[int((NR+1)/2)] "/" v[NR]}')
  pct=$(python3 -c "print('%.0f%%' % (100.0 * $good / $CAP))")
  ratio=$(python3 -c "import sys; a, b = sys.argv[1:]; print('-' if a == '-' else '%.1fx' % (float(a) / float(b)))" "$p99" "$u99")
  printf "%-18s %8s %8s %8s %9s %8s %8s %9s %8s %8s %8s %s\n" "$row" "$offered" "$good" "$pct" \
    "$refused" "$other" "$timeout" "$cerr" "$p50" "$p99" "$ratio" "$lim"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 0.5
done
kill "$UPID" 2>/dev/null || true
