#!/bin/bash
# kernel_perf.sh: where a proxy's CPU per request goes, by kernel and user
# function, from `perf record -e cpu-clock` of the proxy's process only, with
# proxies measured in alternation (issue 23). Layout as bench/run.sh: proxy and
# three upstream nginx on CPU 0, h2load on CPU 1, in a private network
# namespace (unshare -n: no port collides with anyone's).
#
#   bench/kernel_perf.sh [--rounds 5] [--conns 256] [-n 30000] [--h2c] VARIANT...
#
# --h2c: the client speaks HTTP/2 with prior knowledge, 10 streams per
# connection (the proxies' h2c configurations of bench/run.sh --h2).
#
# VARIANT: moongate (build/moongate), haproxy, floor (build/relay_floor, the
# L4 relay of bench/relay_floor.c, built when missing), or NAME=PATH for another
# moongate binary or wrapper (e.g. shim=build/moongate-shim, see sockshim.c).
# Per variant: the median over rounds of CPU us/request under perf (one
# sample per 100 us of CPU; the machine's load inflates every column alike),
# the kernel's part, and the share of the socket-call entry layer (syscall
# entry down to sock_recvmsg/sock_sendmsg: read/write/writev through the VFS,
# or recv/send/sendmsg); then the functions whose us/request differ most
# between the first two variants. Needs root (perf, unshare), perf, h2load.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=5 CONNS=256 N=30000 H2C=0
VARIANTS=()
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    -n) N=$2; shift ;;
    --h2c) H2C=1 ;;
    -h | --help) sed -n 2,18p "$0"; exit 0 ;;
    *) VARIANTS+=("$1") ;;
  esac
  shift
done
((${#VARIANTS[@]})) || VARIANTS=(moongate haproxy)

if [[ -z ${KPERF_IN_NETNS:-} ]]; then
  exec env KPERF_IN_NETNS=1 unshare -n "$0" --rounds "$ROUNDS" --conns "$CONNS" -n "$N" $( ((H2C)) && echo --h2c) "${VARIANTS[@]}"
fi
NAME_PREFIX=kernel_perf
. "$HERE/netns_common.sh"
OUT=$HERE/results/$(date '+%Y%m%d-%H%M%S')-kernel-perf
mkdir -p "$OUT"

HCFG=haproxy.cfg MCFG=moongate.yaml LOAD=(--h1)
if ((H2C)); then HCFG=haproxy-h2c.cfg MCFG=moongate_h2c.yaml LOAD=(-m 10); fi
proxy_cmd() { # VARIANT -> CMD
  case $1 in
    haproxy) CMD=(haproxy -db -f "$(render $HCFG haproxy $PORT)") ;;
    moongate) CMD=("$ROOT/build/moongate" -c "$(render $MCFG moongate $PORT)") ;;
    floor) CMD=("$FLOOR" $PORT $((B + 1)) $((B + 2)) $((B + 3))) ;;
    *=*) CMD=("${1#*=}" -c "$(render $MCFG "${1%%=*}" $PORT)") ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

echo "# $(date -u '+%F %T') UTC, $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg); h2load ${LOAD[*]} -n $N -c $CONNS, $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
  for v in "${VARIANTS[@]}"; do
    name=${v%%=*}
    proxy_cmd "$v"
    taskset -c 0 "${CMD[@]}" >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    listening $PORT || { echo "$name did not start: $(tail -n 3 "$TMP/$name.log")" >&2; exit 1; }
    taskset -c 1 h2load "${LOAD[@]}" -n $((CONNS > 100 ? 20 * CONNS : 2000)) -c "$CONNS" -t 1 "http://127.0.0.1:$PORT/" >/dev/null 2>&1 || true
    perf record -q -e cpu-clock -c 100000 -p "$pid" -o "$OUT/$name-$r.perf" >/dev/null 2>&1 &
    ppid=$!
    sleep 0.3
    taskset -c 1 h2load "${LOAD[@]}" -n "$N" -c "$CONNS" -t 1 "http://127.0.0.1:$PORT/" >"$OUT/$name-$r.h2load" 2>&1 || true
    kill -INT "$ppid"; wait "$ppid" 2>/dev/null || true
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    ok=$(awk '/^status codes:/{print $3}' "$OUT/$name-$r.h2load")
    [[ $ok == "$N" ]] || echo "  $name round $r: only ${ok:-0} of $N answered 2xx" >&2
  done
done

names=()
for v in "${VARIANTS[@]}"; do names+=("${v%%=*}"); done
python3 "$HERE/kernel_perf.py" "$OUT" "$N" "${names[@]}"
echo "perf data: $OUT"
