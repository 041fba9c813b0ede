#!/usr/bin/env bash
# Outlier scenario of issue 22: five targets (bench/knee_upstream.py, BASE_MS
# each, no knee within reach); FLIP s into the run one of them starts
# answering ERR_PCT % of its requests with 503. moongate balances round robin
# with `retry: {max_retries: 2}` (503 is retried by default) and
# `outlier_detection: {interval: INTERVAL}` (other keys default). The load is
# open-loop (bench/open_load.py, RATE/s for DURATION s). Prints the client's
# answers over the whole run, when the bad target stopped receiving requests
# (its request counter, polled every 100 ms, stalls for a second: ejected)
# counted from the flip, and the ejection lines of moongate's log.
#
#   bench/outlier.sh [--duration S] [--rate R] [--interval 5s]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${MOONGATE_BIN:-$ROOT/build/moongate}
DURATION=${BENCH_DURATION:-30}
RATE=${BENCH_RATE:-300}
FLIP=${BENCH_FLIP:-10}
ERR_PCT=${BENCH_ERR_PCT:-30}
INTERVAL=${BENCH_INTERVAL:-5s}
BASE_MS=${BENCH_BASE_MS:-2}
BASE=${BENCH_PORT:-19441}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/scenario.sh
. "$HERE/scenario.sh"

PROXY=$((BASE + 5)); ADMIN=$((BASE + 6))
targets=""
for i in 0 1 2 3 4; do
  python3 "$HERE/knee_upstream.py" $((BASE + i)) "$BASE_MS" 100000 & PIDS+=($!)
  targets="$targets{address: \"127.0.0.1:$((BASE + i))\"}, "
done
for i in 0 1 2 3 4; do
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$((BASE + i))/__count" >/dev/null && break; sleep 0.1; done
done

cat > "$TMP/moongate.yaml" <<YAML
listen: ["127.0.0.1:$PROXY"]
workers: 1
admin: {listen: "127.0.0.1:$ADMIN"}
pid_file: $TMP/moongate.pid
access_log: "off"
upstreams:
  u:
    targets: [${targets%, }]
    retry: {max_retries: 2}
    outlier_detection: {interval: $INTERVAL}
routes:
  - {name: all, upstream: u}
YAML
"$BIN" -c "$TMP/moongate.yaml" 2>"$TMP/moongate.log" & PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PROXY/" && break; sleep 0.1; done

BAD=$((BASE + 2))
echo "5 targets (${BASE_MS} ms), open loop $RATE/s for ${DURATION}s; at ${FLIP}s target 127.0.0.1:$BAD answers $ERR_PCT % 503; outlier_detection interval $INTERVAL, retry max_retries 2"
python3 "$HERE/open_load.py" "$PROXY" "$DURATION" 2 0 "/:$RATE" > "$TMP/load.out" &
LOADPID=$!
python3 - "$BAD" "$FLIP" "$ERR_PCT" "$DURATION" <<'PY'
import sys, time, urllib.request
bad, flip, pct, dur = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def count():
    return int(urllib.request.urlopen("http://127.0.0.1:%d/__count" % bad, timeout=2).read())
t0 = time.monotonic()
time.sleep(flip)
urllib.request.urlopen("http://127.0.0.1:%d/__fail?%s" % (bad, pct), timeout=2).read()
tf = time.monotonic()
c0 = count()
last_c, last_t, ejected = c0, tf, None
while time.monotonic() < t0 + dur - 0.5:
    time.sleep(0.1)
    c, t = count(), time.monotonic()
    if c != last_c:
        last_c, last_t = c, t
    elif ejected is None and t - last_t >= 1.0:
        ejected = last_t - tf
print("bad target: %d requests after the flip; last request before the stall %s" %
      (last_c - c0, "%.2f s after the flip" % ejected if ejected is not None else "never (not ejected)"))
PY
wait "$LOADPID"
read -r _ sent ok refused other timeout cerr offered good p50 p99 < "$TMP/load.out"
errs=$((sent - ok))
echo "client: sent $sent, ok $ok, 503 $refused, other $other, timeout $timeout, conn_err $cerr -> errors $(python3 -c "print('%.3f%%' % (100.0 * $errs / $sent))"); p50 $p50 ms, p99 $p99 ms"
curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -E '^moongate_(upstream_)?retries|^moongate_outlier|^moongate_circuit' | head -20 || true
grep -i "outlier\|circuit" "$TMP/moongate.log" | head -5 || true
