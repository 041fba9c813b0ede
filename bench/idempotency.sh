#!/usr/bin/env bash
# What Idempotency-Key deduplication costs: moongate with the same route three
# ways, measured alternately under the same wrk load of keyed POSTs.
#
#   none    no idempotency section (the key header is forwarded, nothing stored)
#   memory  idempotency {store: memory}
#   redis   idempotency {store: redis}, a local redis-server (--save "" --appendonly no)
#
#   bench/idempotency.sh                 3 rounds x 10 s per variant, wrk -t1 -c16
#   bench/idempotency.sh --quick         1 round x 3 s (a smoke test of the script)
#   bench/idempotency.sh --help          every option
#
# Every request carries a fresh key (bench/idem.lua, mode "unique"): each one
# takes the lock, is forwarded and has its response stored, the most expensive
# path; `--mode replay` reuses one key per wrk thread instead (every request
# after the first is a replay, nothing reaches the upstream).
#
# Processes: one nginx upstream answering 200 "ok" (bench/conf/upstream-nginx.conf;
# a python upstream if nginx is missing), redis-server, and 3 moongate processes
# (workers: 1, access_log off). Server side pinned to CPU $PROXY_CPU, wrk to
# $LOAD_CPU, as bench/run.sh does. Everything runs under a temp dir on 127.0.0.1
# and is stopped on exit. Ports: a free block from $PORT_BASE (default 29200).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNS:-16}
THREADS=${BENCH_THREADS:-1}
MODE=${BENCH_MODE:-unique}
BODY=${BENCH_BODY:-64}
TTL=${BENCH_TTL:-60s}
VARIANTS=${BENCH_VARIANTS:-"none memory redis"}
MOONGATE=${MOONGATE:-$ROOT/build/moongate}
PORT_BASE=${BENCH_PORT_BASE:-29200}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
KEEP_TMP=0

usage() {
  cat <<EOF
usage: bench/idempotency.sh [options]
  --quick            1 round of 3 s (+1 s warmup)
  --rounds N         rounds, variants alternating (rotated) in each (default $ROUNDS)
  --duration S       seconds per measured run (default $DURATION)
  --warmup S         unmeasured seconds before each run (default $WARMUP)
  --conns N          wrk connections (default $CONNS)
  --threads N        wrk threads (default $THREADS)
  --mode M           unique (a new key per request) | replay (one key per wrk thread)
  --body N           request body bytes (default $BODY)
  --ttl D            idempotency ttl of the stored records (default $TTL)
  --variants "V .."  subset/order of: none memory redis
  --moongate PATH    binary (default build/moongate)
  --port-base P      ports P+1..P+12 (default $PORT_BASE; moved up by 100 until free)
  --keep-tmp         keep the temp dir (configs, logs)
Environment: BENCH_ROUNDS BENCH_DURATION BENCH_WARMUP BENCH_CONNS BENCH_THREADS
BENCH_MODE BENCH_BODY BENCH_TTL BENCH_VARIANTS MOONGATE BENCH_PORT_BASE
BENCH_PROXY_CPU BENCH_LOAD_CPU
EOF
}

while (($#)); do
  case "$1" in
    --quick) ROUNDS=1; DURATION=3; WARMUP=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --mode) MODE=$2; shift ;;
    --body) BODY=$2; shift ;;
    --ttl) TTL=$2; shift ;;
    --variants) VARIANTS=$2; shift ;;
    --moongate) MOONGATE=$2; shift ;;
    --port-base) PORT_BASE=$2; shift ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case $MODE in unique|replay) ;; *) die "--mode must be unique or replay" ;; esac
for v in $VARIANTS; do
  case $v in none|memory|redis) ;; *) die "unknown variant: $v" ;; esac
done
for tool in wrk taskset ss curl timeout awk; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh --bench installs the bench tools)"
done
[[ -x $MOONGATE ]] || die "$MOONGATE not built (make build)"
if [[ " $VARIANTS " == *" redis "* ]]; then
  command -v redis-server >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
  command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install -y redis-server)"
fi
NCPU=$(nproc)
((NCPU >= 2)) || { log "warning: $NCPU CPU: wrk and the gateway share it"; LOAD_CPU=$PROXY_CPU; }

# ---------------------------------------------------------------- processes
TMP=$(mktemp -d "${TMPDIR:-/tmp}/moongate-idem-bench.XXXXXX")
PIDS=()

alive() { kill -0 "$1" 2>/dev/null; }

stop_pid() {    # stop_pid PID [SIGNAL]: signal, wait up to 3 s, then SIGKILL
  local pid=$1 sig=${2:-TERM} i
  alive "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  set +e
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}" TERM; done
  if ((KEEP_TMP)); then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM

start() {       # start NAME CMD...: background, output to $TMP/NAME.log; sets LAST_PID
  local name=$1; shift
  "$@" >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

wait_listen() { # wait_listen PORT PID SECONDS
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    listening "$1" && return 0
    alive "$2" || return 1
    sleep 0.05
  done
  return 1
}

# ---------------------------------------------------------------- ports
OFFSETS="1 2 3 4 5 6 7 8"
for ((attempt = 0; attempt < 20; attempt++)); do
  ok=1
  for o in $OFFSETS; do listening $((PORT_BASE + o)) && { ok=0; break; }; done
  ((ok)) && break
  PORT_BASE=$((PORT_BASE + 100))
done
((ok)) || die "no free port range found"
UP_PORT=$((PORT_BASE + 1))
REDIS_PORT=$((PORT_BASE + 2))
declare -A PORT=([none]=$((PORT_BASE + 3)) [memory]=$((PORT_BASE + 4)) [redis]=$((PORT_BASE + 5)))
declare -A ADMIN=([none]=$((PORT_BASE + 6)) [memory]=$((PORT_BASE + 7)) [redis]=$((PORT_BASE + 8)))

# ---------------------------------------------------------------- upstream
start_upstream() {
  if command -v nginx >/dev/null; then
    sed -e "s|@TMP@|$TMP|g; s|@NAME@|upstream|g; s|@PORT@|$UP_PORT|g; s|@MASTER_PROCESS@|on|g" \
      "$HERE/conf/upstream-nginx.conf" >"$TMP/upstream.conf"
    start upstream taskset -c "$PROXY_CPU" nginx -p "$TMP/" -c "$TMP/upstream.conf" -e "$TMP/upstream.error.log"
    UPSTREAM_KIND="nginx (return 200 \"ok\")"
  else
    cat >"$TMP/upstream.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _ok(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    do_GET = do_POST = do_PUT = do_PATCH = _ok
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
    start upstream taskset -c "$PROXY_CPU" python3 "$TMP/upstream.py" "$UP_PORT"
    UPSTREAM_KIND="python http.server (nginx not installed: absolute numbers are low)"
  fi
  wait_listen "$UP_PORT" "$LAST_PID" 10 || die "upstream did not start: $(tail -n 5 "$TMP/upstream.log" "$TMP/upstream.error.log" 2>/dev/null)"
}

start_redis() {
  start redis taskset -c "$PROXY_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no --protected-mode no --daemonize no --dir "$TMP" \
    --logfile "$TMP/redis-server.log"
  REDIS_PID=$LAST_PID
  local i
  for ((i = 0; i < 100; i++)); do
    [[ $(redis-cli -p "$REDIS_PORT" PING 2>/dev/null) == PONG ]] && return 0
    alive "$REDIS_PID" || break
    sleep 0.05
  done
  die "redis-server did not answer PING: $(tail -n 5 "$TMP/redis-server.log" 2>/dev/null)"
}

# ---------------------------------------------------------------- moongate
write_config() {   # write_config VARIANT -> prints the path
  local v=$1 out=$TMP/moongate-$1.yaml idem=""
  case $v in
    memory) idem="    idempotency: {store: memory, ttl: $TTL, max_body: 64k}" ;;
    redis) idem="    idempotency: {store: redis, ttl: $TTL, max_body: 64k}" ;;
  esac
  {
    echo "listen: [\"127.0.0.1:${PORT[$v]}\"]"
    echo "workers: 1"
    echo "access_log: off"
    echo "admin: {listen: \"127.0.0.1:${ADMIN[$v]}\"}"
    echo "pid_file: $TMP/moongate-$v.pid"
    if [[ $v == redis ]]; then echo "redis: {address: \"127.0.0.1:$REDIS_PORT\", timeout: 250ms}"; fi
    echo "upstreams:"
    echo "  up:"
    echo "    targets: [{address: \"127.0.0.1:$UP_PORT\"}]"
    echo "    keepalive: 64"
    echo "routes:"
    echo "  - name: pay"
    echo "    match: {paths: [\"/\"]}"
    echo "    upstream: up"
    if [[ -n $idem ]]; then echo "$idem"; fi
  } >"$out"
  echo "$out"
}

declare -A GW_PID=()
start_gateway() {
  local v=$1 conf err
  conf=$(write_config "$v")
  err=$(timeout 10 "$MOONGATE" -t -c "$conf" 2>&1) || die "moongate -t rejects the $v config: $err"
  start "moongate-$v" taskset -c "$PROXY_CPU" "$MOONGATE" -c "$conf"
  GW_PID[$v]=$LAST_PID
  wait_listen "${PORT[$v]}" "$LAST_PID" 10 || die "moongate ($v) did not start: $(tail -n 5 "$TMP/moongate-$v.log")"
  # one keyed POST through it must answer 200 "ok"
  local body
  body=$(curl -s --max-time 3 -X POST -H "Idempotency-Key: probe-$v-$$" --data x \
    "http://127.0.0.1:${PORT[$v]}/pay" 2>/dev/null) || true
  [[ $body == ok ]] || die "moongate ($v): probe POST did not answer \"ok\": ${body:0:200}"
}

# ---------------------------------------------------------------- measuring
REPLAY_KEY=replay-$$-$RANDOM
run_wrk() {        # run_wrk PORT SECONDS
  timeout --foreground -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" \
    wrk -t"$THREADS" -c"$CONNS" -d"$2s" --timeout 5s -s "$HERE/idem.lua" \
    "http://127.0.0.1:$1/" -- "$MODE" /pay "$BODY" "$REPLAY_KEY" 2>&1 || true
}

prime_replay() {   # replay mode: execute the key once, so the run only replays
  curl -s -o /dev/null --max-time 3 -X POST -H "Idempotency-Key: $REPLAY_KEY" \
    -H "Content-Type: application/json" --data-binary "$(head -c "$BODY" /dev/zero | tr '\0' b)" \
    "http://127.0.0.1:$1/pay" || true
}

RESULTS=$TMP/results.tsv   # variant round rps p50_us p99_us errors non2xx
: >"$RESULTS"

measure() {        # measure VARIANT ROUND
  local v=$1 r=$2 out line
  if [[ $v == redis ]]; then redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null; fi
  if [[ $MODE == replay ]]; then prime_replay "${PORT[$v]}"; fi
  run_wrk "${PORT[$v]}" "$WARMUP" >/dev/null
  out=$(run_wrk "${PORT[$v]}" "$DURATION")
  printf '%s\n' "$out" >>"$TMP/wrk-$v.out"
  line=$(grep '^BENCH ' <<<"$out" | tail -n 1 || true)
  if [[ -z $line ]]; then
    log "  $v: wrk printed no result: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    return
  fi
  awk -v line="$line" -v v="$v" -v r="$r" 'BEGIN {
    n = split(line, f, " ")
    for (i = 2; i <= n; i++) { split(f[i], kv, "="); x[kv[1]] = kv[2] }
    secs = x["duration_us"] / 1e6
    rps = secs > 0 ? x["requests"] / secs : 0
    err = x["connect"] + x["read"] + x["write"] + x["timeout"]
    printf "%s\t%d\t%.0f\t%d\t%d\t%d\t%d\n", v, r, rps, x["p50"], x["p99"], err, x["status"]
  }' | tee -a "$RESULTS" | awk -F'\t' '{
    printf "  %-7s round %d: %8.0f req/s   p50 %7.3f ms   p99 %7.3f ms   sock errors %d   non-2xx %d\n",
      $1, $2, $3, $4 / 1000, $5 / 1000, $6, $7 }'
}

store_stats() {    # a line about what the store holds after the runs
  local v=$1
  [[ $v == none ]] && return 0
  # what the idempotency layer did (store_error: Redis slower than redis.timeout, or down)
  curl -s --max-time 3 "http://127.0.0.1:${ADMIN[$v]}/metrics" 2>/dev/null |
    awk -F'[{}]' '/^moongate_idempotency_total\{/ { split($3, a, " "); if (a[1] + 0 > 0) {
      match($2, /result="[^"]*"/); printf "%s=%s ", substr($2, RSTART + 8, RLENGTH - 9), a[1] } }
      END { print "" }' | sed 's/^/results: /'
  case $v in
    memory)
      curl -s --max-time 3 "http://127.0.0.1:${ADMIN[$v]}/metrics" 2>/dev/null |
        awk '/^moongate_idempotency_memory_(bytes|budget_bytes|entries|evictions_total)/ { printf "%s=%s ", $1, $2 } END { print "" }' ;;
    redis)
      echo "keys=$(redis-cli -p "$REDIS_PORT" DBSIZE) used_memory=$(redis-cli -p "$REDIS_PORT" INFO memory | awk -F: '/^used_memory_human/ { gsub("\r", ""); print $2 }')" ;;
  esac
}

# ---------------------------------------------------------------- main
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); machine: $(uname -srm), $NCPU CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# moongate: $(timeout 5 "$MOONGATE" -V 2>&1 | head -n 1 || true); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $(redis-server --version 2>/dev/null | cut -d' ' -f1-3)"
echo "# load: wrk -t$THREADS -c$CONNS, ${DURATION}s (+${WARMUP}s warmup) per run, $ROUNDS round(s), mode $MODE, body ${BODY} B, ttl $TTL"
echo "# pinning: upstream, redis, moongate on CPU $PROXY_CPU; wrk on CPU $LOAD_CPU"
if awk -v n="$NCPU" '{ exit !($1 > n / 2) }' /proc/loadavg; then
  echo "# warning: load average $(cut -d' ' -f1 /proc/loadavg) on $NCPU CPUs before the start: other work competes, numbers will be noisy"
fi

start_upstream
echo "# upstream: $UPSTREAM_KIND"
if [[ " $VARIANTS " == *" redis "* ]]; then start_redis; fi
read -r -a LIVE <<<"$VARIANTS"
for v in "${LIVE[@]}"; do start_gateway "$v"; done
sleep 0.3

n=${#LIVE[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  order=()
  for ((i = 0; i < n; i++)); do order+=("${LIVE[(i + r - 1) % n]}"); done   # rotate each round
  echo
  echo "== round $r/$ROUNDS: ${order[*]}"
  for v in "${order[@]}"; do
    alive "${GW_PID[$v]}" || die "moongate ($v) died: $(tail -n 5 "$TMP/moongate-$v.log")"
    measure "$v" "$r"
  done
done

echo
echo "== summary (median over rounds; extra = variant - none)"
awk -F'\t' -v order="${LIVE[*]}" '
  function median(list,   a, k, m, i, j) {
    k = split(list, a, " ")
    if (k == 0) return 0
    # insertion sort: k is small
    for (i = 2; i <= k; i++) { m = a[i] + 0; j = i - 1; while (j > 0 && a[j] + 0 > m) { a[j + 1] = a[j]; j-- } a[j + 1] = m }
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  { rps[$1] = rps[$1] " " $3; p50[$1] = p50[$1] " " $4; p99[$1] = p99[$1] " " $5
    err[$1] += $6; non2xx[$1] += $7 }
  END {
    n = split(order, vs, " ")
    printf "%-8s %10s %10s %10s %12s %12s %8s %8s\n", "variant", "req/s", "p50_ms", "p99_ms", "+p50_ms", "+p99_ms", "req/s%", "errors"
    has_none = ("none" in rps)
    if (has_none) { b_rps = median(rps["none"]); b50 = median(p50["none"]); b99 = median(p99["none"]) }
    for (i = 1; i <= n; i++) {
      v = vs[i]
      if (!(v in rps)) { printf "%-8s (no result)\n", v; continue }
      mr = median(rps[v]); m50 = median(p50[v]); m99 = median(p99[v])
      if (has_none && v != "none")
        printf "%-8s %10.0f %10.3f %10.3f %+12.3f %+12.3f %+7.1f%% %8d\n", v, mr, m50 / 1000, m99 / 1000,
          (m50 - b50) / 1000, (m99 - b99) / 1000, (b_rps > 0 ? 100 * (mr - b_rps) / b_rps : 0), err[v] + non2xx[v]
      else
        printf "%-8s %10.0f %10.3f %10.3f %12s %12s %8s %8d\n", v, mr, m50 / 1000, m99 / 1000, "-", "-", "-", err[v] + non2xx[v]
    }
  }' "$RESULTS"
for v in "${LIVE[@]}"; do
  s=$(store_stats "$v" | tr '\n' ' ')
  [[ -n ${s// /} ]] && echo "# $v after the runs: $s"
done
exit 0
