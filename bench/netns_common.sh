# Sourced by bench/kernel_perf.sh and bench/upstream_cost.sh, which run in a
# private network namespace (unshare -n) so ports and TCP counters are theirs
# alone. Expects HERE and ROOT; sets TMP, PIDS, B (port base), PORT (the
# proxy's), UPS (the three upstream nginx pids, started pinned to CPU 0), and
# FLOOR (build/relay_floor, built when missing or older than its source).
# NAME_PREFIX names the temp dir.

ip link set lo up

TMP=$(mktemp -d "/tmp/${NAME_PREFIX:-bench}.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

B=31700 PORT=31710
render() { # TEMPLATE NAME PORT -> path
  local out=$TMP/$2.${1##*.}
  sed -e "s|@TMP@|$TMP|g; s|@NAME@|$2|g; s|@PORT@|$3|g; s|@MASTER_PROCESS@|off|g; s|@WORKERS@|1|g" \
      -e "s|@ADMIN_PORT@|$((B + 11))|g; s|@U1@|$((B + 1))|g; s|@U2@|$((B + 2))|g; s|@U3@|$((B + 3))|g" \
      -e "s|@NGINX_KEEPALIVE@|192|g" "$HERE/conf/$1" >"$out"
  echo "$out"
}
listening() {
  local i
  for ((i = 0; i < 100; i++)); do
    if ss -Hltn "sport = :$1" | grep -q .; then return 0; fi
    sleep 0.1
  done
  return 1
}

FLOOR=$ROOT/build/relay_floor
if [[ ! $FLOOR -nt $HERE/relay_floor.c ]]; then
  mkdir -p "$ROOT/build"
  cc -std=c11 -O2 -Wall -Wextra -o "$FLOOR" "$HERE/relay_floor.c"
fi

UPS=()
for i in 1 2 3; do
  conf=$(render upstream-nginx.conf "up$i" $((B + i)))
  taskset -c 0 nginx -p "$TMP/" -c "$conf" -e "$TMP/up$i.err" >"$TMP/up$i.log" 2>&1 &
  PIDS+=($!) UPS+=($!)
  listening $((B + i)) || { echo "upstream $i did not start" >&2; exit 1; }
done
