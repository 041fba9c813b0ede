#!/bin/bash
# upstream_cost.sh: what a proxy costs the upstreams that share its core (issue 23).
#
# In bench/run.sh's layout the proxy and its three upstream nginx share CPU 0,
# so req/s is 1 / (proxy CPU + upstream CPU) per request, and the upstreams'
# part is not fixed: how many requests an upstream finds each time it wakes
# depends on how long the proxy runs between the scheduler's preemptions. This
# prints, per variant, CPU us per request of the proxy and of the three
# upstreams together (schedstat run time of every thread) and their voluntary
# and involuntary context switches per request (an upstream's voluntary
# switch is one sleep in epoll_wait, i.e. one wake-up).
#
#   bench/upstream_cost.sh [--conns 64] [-n 60000] VARIANT...
#
# VARIANT: moongate, moongate_ewma, haproxy, nginx, floor (bench/relay_floor.c,
# built when missing), or NAME=PATH for another moongate
# binary or wrapper. Each variant: a warm-up of n/3 requests, then n counted
# (h2load --h1 -t 1 on CPU 1), in a private network namespace (needs root).
# Counts are exact; the us columns are timings on a shared machine: alternate
# variants (list them twice) and compare within one run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
CONNS=64 N=60000
VARIANTS=()
while (($#)); do
  case $1 in
    --conns) CONNS=$2; shift ;;
    -n) N=$2; shift ;;
    -h | --help) sed -n 2,20p "$0"; exit 0 ;;
    *) VARIANTS+=("$1") ;;
  esac
  shift
done
((${#VARIANTS[@]})) || VARIANTS=(moongate floor haproxy nginx)

if [[ -z ${UPCOST_IN_NETNS:-} ]]; then
  exec env UPCOST_IN_NETNS=1 unshare -n "$0" --conns "$CONNS" -n "$N" "${VARIANTS[@]}"
fi
NAME_PREFIX=upstream_cost
. "$HERE/netns_common.sh"

# "voluntary involuntary run_ns" summed over every thread of the PIDs
counters() {
  local p t v=0 iv=0 ns=0 a b
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      a=$(awk '/^voluntary_ctxt_switches/{print $2}' "$t/status")
      b=$(awk '/^nonvoluntary_ctxt_switches/{print $2}' "$t/status")
      v=$((v + a)) iv=$((iv + b)) ns=$((ns + $(cut -d' ' -f1 "$t/schedstat")))
    done
  done
  echo "$v $iv $ns"
}

proxy_cmd() { # VARIANT -> CMD
  case $1 in
    floor) CMD=("$FLOOR" $PORT $((B + 1)) $((B + 2)) $((B + 3))) ;;
    haproxy) CMD=(haproxy -db -f "$(render haproxy.cfg haproxy $PORT)") ;;
    nginx) CMD=(nginx -p "$TMP/" -c "$(render nginx-proxy.conf nginx $PORT)" -e "$TMP/nginx.err") ;;
    moongate | moongate_ewma) CMD=("$ROOT/build/moongate" -c "$(render "$1.yaml" "$1" $PORT)") ;;
    *=*) CMD=("${1#*=}" -c "$(render moongate.yaml "${1%%=*}" $PORT)") ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

echo "# $(date -u '+%F %T') UTC, loadavg $(cut -d' ' -f1-3 /proc/loadavg); h2load --h1 -n $N -c $CONNS -t 1; proxy and 3 upstream nginx on CPU 0"
printf '%-14s %8s | %9s %8s %8s | %12s %8s %8s\n' variant req/s "proxy us" vol invol "upstream us" vol invol
for v in "${VARIANTS[@]}"; do
  name=${v%%=*}
  proxy_cmd "$v"
  taskset -c 0 "${CMD[@]}" >"$TMP/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  listening $PORT || { echo "$name did not start: $(tail -n 3 "$TMP/$name.log")" >&2; exit 1; }
  taskset -c 1 h2load --h1 -n $((N / 3)) -c "$CONNS" -t 1 "http://127.0.0.1:$PORT/" >/dev/null 2>&1 || true
  read -r pv0 pi0 pn0 <<<"$(counters "$pid")"
  read -r uv0 ui0 un0 <<<"$(counters "${UPS[@]}")"
  taskset -c 1 h2load --h1 -n "$N" -c "$CONNS" -t 1 "http://127.0.0.1:$PORT/" >"$TMP/h2load.out" 2>&1 || true
  read -r pv1 pi1 pn1 <<<"$(counters "$pid")"
  read -r uv1 ui1 un1 <<<"$(counters "${UPS[@]}")"
  ok=$(awk '/^status codes:/{print $3}' "$TMP/h2load.out")
  [[ $ok == "$N" ]] || echo "  $name: only ${ok:-0} of $N answered 2xx" >&2
  awk -v n="$N" -v v="$name" -v rps="$(awk '/^finished in/{print $4}' "$TMP/h2load.out")" \
    -v pv=$((pv1 - pv0)) -v pi=$((pi1 - pi0)) -v pn=$((pn1 - pn0)) \
    -v uv=$((uv1 - uv0)) -v ui=$((ui1 - ui0)) -v un=$((un1 - un0)) 'BEGIN {
      printf "%-14s %8.0f | %9.2f %8.3f %8.3f | %12.2f %8.3f %8.3f\n", v, rps,
        pn / n / 1000, pv / n, pi / n, un / n / 1000, uv / n, ui / n }'
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  while listening_now=$(ss -Hltn "sport = :$PORT") && [[ -n $listening_now ]]; do sleep 0.1; done
done
