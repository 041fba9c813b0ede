#!/usr/bin/env bash
# moongate benchmark harness: moongate vs nginx proxy_pass vs nginx +
# balancer_by_lua vs HAProxy vs wrk straight to an upstream, on loopback.
#
#   bench/run.sh                  throughput: 3 rounds x {64,256} conns x rows (~5 min)
#   bench/run.sh --quick          1 round, 2 s rows: smoke test of the script
#   bench/run.sh --instructions   callgrind instructions/request + strace syscalls/request
#   bench/run.sh --tls            the same over TLS 1.3 (moongate_tls nginx_tls haproxy_tls),
#                                 plus new-connection handshakes/s, full and resumed
#   bench/run.sh --h2             HTTP/2 from h2load (-c 64 -m 10): over TLS with ALPN h2
#                                 (moongate_h2 nginx_h2 haproxy_h2) and h2c with prior
#                                 knowledge (moongate_h2c nginx_h2c haproxy_h2c)
#   bench/run.sh --kernel         the kernel's share per request at 1, 64, 256 connections:
#                                 syscalls by type, EAGAIN reads, TCP segments per side,
#                                 context switches, utime/stime (in a private network
#                                 namespace, so the TCP counters are the bench's alone)
#   bench/run.sh --workers 2      proxies with 2 workers (nginx worker_processes, HAProxy
#                                 nbthread), the proxy allowed on every CPU
#   bench/run.sh --help           all options
#
# See bench/README.md for the method.  Results go to bench/results/ (gitignored).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CONF_DIR=$HERE/conf

# ---------------------------------------------------------------- defaults
ORIG_ARGS="$*"
ORIG_ARGV=("$@")
MODE=throughput
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-}          # seconds per measured row; default 8 (6 with 6 rows: < 6 min)
WARMUP=${BENCH_WARMUP:-1}             # seconds of unmeasured wrk before each row
CONNS=${BENCH_CONNS:-"64 256"}
ROWS=${BENCH_ROWS:-}                  # default: every row that can run here
MOONGATE=${MOONGATE:-$ROOT/build/moongate}
PORT_BASE=${BENCH_PORT_BASE:-19000}
PROXY_CPU=${BENCH_PROXY_CPU:-0}       # proxy + upstreams
LOAD_CPU=${BENCH_LOAD_CPU:-1}         # wrk / h2load alone
RESULTS_DIR=${BENCH_RESULTS_DIR:-$HERE/results}
KEEP_TMP=0
NOISY=${BENCH_NOISY:-30}              # a row is "noisy" when unaccounted CPU (other tenants) > this % of a core
NGINX_KEEPALIVE=${BENCH_NGINX_KEEPALIVE:-192}  # nginx `keepalive`: idle upstream conns per worker over ALL targets;
                                               # 192 = 3 targets x 64, the pool moongate gets from `keepalive: 64`
N1=${BENCH_N1:-1000}                  # --instructions: requests of the short run
N2=${BENCH_N2:-11000}                 #                 requests of the long run
ICONNS=${BENCH_ICONNS:-"1 8"}         #                 h2load connections
ITOOLS="callgrind strace"
TLS=0                                 # --tls: the TLS rows (and the handshake rows in throughput mode)
HS_SECONDS=${BENCH_HS_SECONDS:-5}     # --tls: seconds per handshake row
HS_PROCS=${BENCH_HS_PROCS:-4}         #        resumed: client processes of tls_handshakes.py
HS_CONNS=${BENCH_HS_CONNS:-16}        #        full: h2load connections
HS_FULL_RATE=${BENCH_HS_FULL_RATE:-1000}  #     full: h2load makes this many connections per --hs-seconds
H2=0                                  # --h2: the HTTP/2 rows (h2load instead of wrk)
STREAMS=${BENCH_STREAMS:-10}          # --h2: h2load -m (concurrent streams per connection)
CONNS_SET=0
KCONNS=${BENCH_KCONNS:-"1 64 256"}   # --kernel: h2load connections
KN1=${BENCH_KN1:-3000}                # --kernel: requests of the short run
KN2=${BENCH_KN2:-23000}               #           requests of the long run
WORKERS=${BENCH_WORKERS:-1}           # --workers: moongate workers, nginx worker_processes, HAProxy nbthread
PROXY_CPUS=${BENCH_PROXY_CPUS:-}      # CPUs the proxy may use (default: PROXY_CPU; with --workers > 1: all)

ALL_ROWS="moongate moongate_ewma nginx nginx_lua haproxy direct"
ALL_IROWS="moongate moongate_ewma nginx nginx_lua haproxy origin"
TLS_ROWS="moongate_tls nginx_tls haproxy_tls"
H2_ROWS="moongate_h2 nginx_h2 haproxy_h2 moongate_h2c nginx_h2c haproxy_h2c"

usage() {
  cat <<EOF
usage: bench/run.sh [options]
  --quick               1 round, 2 s rows, 1 s warmup (smoke test);
                        with --instructions: N1=200, N2=1200
  --instructions        deterministic counts: callgrind instructions/request and
                        strace syscalls/request at --iconns connections
  --rounds N            rounds (default $ROUNDS)
  --duration S          measured seconds per row (default 8, or less to keep the
                        run under ~5.5 min: 6 when the 6 rows run)
  --warmup S            unmeasured seconds before each row (default $WARMUP)
  --conns "A B"         wrk connections (default "$CONNS")
  --rows "R ..."        subset/order of: $ALL_ROWS, floor
                        (--instructions: $ALL_IROWS)
  --n1 N --n2 N         --instructions request counts (default $N1 / $N2)
  --iconns "A B"        --instructions h2load connections (default "$ICONNS")
  --tools "T ..."       --instructions tools: callgrind strace (default both)
  --kernel              the kernel's share per request (rows default "moongate nginx
                        haproxy"; --kconns connections, default "$KCONNS"): strace -f -c
                        by syscall with errors (EAGAIN), TCP segments in and out and
                        per side, delayed/pure ACKs (nstat in a private network
                        namespace), the proxy's context switches and utime/stime;
                        each the difference of a $KN1- and a $KN2-request h2load run
  --kconns "A B"        --kernel connections (default "$KCONNS")
  --kn1 N --kn2 N       --kernel request counts (default $KN1 / $KN2)
  --workers N           proxies with N workers: moongate \`workers\`, nginx
                        worker_processes, HAProxy nbthread (default $WORKERS); with
                        N > 1 the proxy may run on every CPU (BENCH_PROXY_CPUS), the
                        upstreams and the load generator stay pinned
  --tls                 rows $TLS_ROWS (same upstreams, TLS 1.3
                        to the proxy with one ECDSA P-256 certificate made by the
                        script); throughput mode adds new-connection handshakes/s,
                        full (h2load) and resumed (bench/tls_handshakes.py); with
                        --instructions, counts per keep-alive TLS request.
                        TLS rows may also be named in --rows next to plain ones.
  --h2                  rows $H2_ROWS:
                        HTTP/2 from the client (h2load -c C -m $STREAMS -D S instead of
                        wrk; default --conns 64), over TLS 1.3 with ALPN h2 (*_h2) and
                        h2c by prior knowledge (*_h2c), same HTTP/1.1 upstreams; with
                        --instructions, counts per stream (h2load -n N -c C -m M).
  --streams M           --h2: concurrent streams per connection (default $STREAMS)
  --hs-seconds S        --tls: seconds per handshake row (default $HS_SECONDS; full
                        handshakes: S x $HS_FULL_RATE connections, BENCH_HS_FULL_RATE)
  --hs-procs N          --tls: resumed-handshake client processes (default $HS_PROCS)
  --hs-conns N          --tls: full-handshake h2load connections (default $HS_CONNS)
  --moongate PATH       binary (default build/moongate)
  --port-base P         ports P+1..P+60 on 127.0.0.1 (default $PORT_BASE; bumped if busy)
  --nginx-keepalive N   nginx upstream keepalive (default $NGINX_KEEPALIVE; a per-worker
                        total over all targets, moongate's keepalive is per target)
  --keep-tmp            keep the temp dir (configs, logs) for inspection
Environment: BENCH_ROUNDS BENCH_DURATION BENCH_WARMUP BENCH_CONNS BENCH_ROWS
MOONGATE BENCH_PORT_BASE BENCH_PROXY_CPU BENCH_LOAD_CPU BENCH_RESULTS_DIR
BENCH_N1 BENCH_N2 BENCH_ICONNS BENCH_NGINX_KEEPALIVE BENCH_NOISY BENCH_HS_SECONDS
BENCH_HS_PROCS BENCH_HS_CONNS BENCH_HS_FULL_RATE BENCH_STREAMS;
BENCH_UPSTREAM_WRAP: a command the upstream nginx are started under, for
experiments on the layout (e.g. "chrt -b 0": upstreams that never preempt
the proxy on wake-up; see bench/README.md, 2026-12-07 08:40)
EOF
}

while (($#)); do
  case "$1" in
    --quick) ROUNDS=1; DURATION=2; WARMUP=1; N1=200; N2=1200 ;;
    --instructions) MODE=instructions ;;
    --kernel) MODE=kernel ;;
    --kconns) KCONNS=$2; shift ;;
    --kn1) KN1=$2; shift ;;
    --kn2) KN2=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --conns) CONNS=$2; CONNS_SET=1; shift ;;
    --rows) ROWS=$2; shift ;;
    --n1) N1=$2; shift ;;
    --n2) N2=$2; shift ;;
    --iconns) ICONNS=$2; shift ;;
    --tools) ITOOLS=$2; shift ;;
    --tls) TLS=1 ;;
    --h2) H2=1 ;;
    --streams) STREAMS=$2; shift ;;
    --hs-seconds) HS_SECONDS=$2; shift ;;
    --hs-procs) HS_PROCS=$2; shift ;;
    --hs-conns) HS_CONNS=$2; shift ;;
    --moongate) MOONGATE=$2; shift ;;
    --port-base) PORT_BASE=$2; shift ;;
    --nginx-keepalive) NGINX_KEEPALIVE=$2; shift ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

log() { printf '%s\n' "$*" >&2; }
# --kernel runs in a network namespace of its own (loopback only): nstat's TCP
# counters then count this bench's segments, not those of every other process
# on a shared machine. Needs unshare(CLONE_NEWNET) (root or a user namespace).
if [[ $MODE == kernel && -z ${BENCH_IN_NETNS:-} ]]; then
  if unshare -n true 2>/dev/null; then
    # shellcheck disable=SC2016  # $0 and $@ are the inner shell's
    exec unshare -n -- env BENCH_IN_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "${ORIG_ARGV[@]}"
  fi
  printf '%s\n' "warning: no private network namespace (unshare -n failed): TCP counters are machine-wide" >&2
fi
# --h2: 64 connections x 10 streams (issue 16) unless --conns/BENCH_CONNS says otherwise
if ((H2 && !CONNS_SET)) && [[ -z ${BENCH_CONNS:-} ]]; then CONNS=64; fi
die() { log "error: $*"; exit 1; }

if [[ -z $PROXY_CPUS ]]; then
  if ((WORKERS > 1)); then PROXY_CPUS=0-$(($(nproc) - 1)); else PROXY_CPUS=$PROXY_CPU; fi
fi
for tool in nginx haproxy wrk taskset ss pgrep timeout curl python3 openssl; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh --bench installs the bench tools)"
done
if [[ $MODE == instructions || $MODE == kernel ]] || ((H2)); then
  for tool in valgrind strace h2load; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y valgrind strace nghttp2-client)"
  done
fi
NCPU=$(nproc)
((NCPU >= 2)) || log "warning: $NCPU CPU(s): wrk and the proxy will share a core"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- processes
TMP=$(mktemp -d "${TMPDIR:-/tmp}/moongate-bench.XXXXXX")
PIDS=()         # every live process started by this script (killed on exit)

# "pid ppid ticks" for every process (ticks = utime+stime), one pass over /proc
proc_snapshot() {
  # (processes come and go while cat runs: its status is not an error)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
    s = $0; p = 0
    while ((j = index(substr(s, p + 1), ") ")) > 0) p += j   # comm may hold ") "
    split(substr(s, p + 2), f, " ")
    print $1, f[2], f[12] + f[13] }'
}

# descendants ROOT... < SNAPSHOT: the roots and all their descendants
descendants() {
  awk -v roots="$*" '{ par[$1] = $2 }
    END { n = split(roots, r, " "); for (i = 1; i <= n; i++) if (!(r[i] in out)) { out[r[i]] = 1; print r[i] }
          do { more = 0; for (c in par) if (!(c in out) && (par[c] in out)) { out[c] = 1; print c; more = 1 } } while (more) }'
}

# pid followed by all its descendants
proc_tree() { proc_snapshot | descendants "$1"; }

alive() { kill -0 "$1" 2>/dev/null; }

# kill_tree PID [SIGNAL] [GRACE_SECONDS]: signal the process, wait, then SIGKILL
# it and everything it had started.
kill_tree() {
  local pid=$1 sig=${2:-TERM} grace=${3:-3} tree i
  alive "$pid" || return 0
  tree=$(proc_tree "$pid")
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $tree 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

# forget PID: a reaped child's pid may be reused by anyone: never signal it again
forget() {
  local rest=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || rest+=("$p"); done
  PIDS=("${rest[@]}")
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  set +e   # kill everything even if one step fails
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill_tree "${PIDS[i]}" TERM 2; done
  # anything else still running below this script (a wrk or h2load in flight)
  local left
  left=$(proc_tree $$ | grep -vx "$$" | tr '\n' ' ')
  # shellcheck disable=SC2086
  [[ -z ${left// /} ]] || kill -TERM $left 2>/dev/null
  if ((KEEP_TMP)); then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: run in the background, output to $TMP/NAME.log; sets LAST_PID
start() {
  local name=$1; shift
  "$@" >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# wait_listen PORT PID TIMEOUT: polls the socket table (no connection is made,
# so the proxy serves no extra request and the instruction counts stay exact)
wait_listen() {
  local port=$1 pid=$2 t=$3 i
  for ((i = 0; i < t * 20; i++)); do
    listening "$port" && return 0
    alive "$pid" || return 1
    sleep 0.05
  done
  return 1
}

# ---------------------------------------------------------------- ports
port_free() { ! listening "$1"; }
PORT_OFFSETS="1 2 3 10 11 12 13 14 15 16 17 20 22 24 26 30 40 42 44 46 50 51 58"
for ((attempt = 0; attempt < 20; attempt++)); do
  ok=1
  for o in $PORT_OFFSETS; do port_free $((PORT_BASE + o)) || { ok=0; break; }; done
  ((ok)) && break
  PORT_BASE=$((PORT_BASE + 100))
done
((ok)) || die "no free port range found"
U1=$((PORT_BASE + 1)) U2=$((PORT_BASE + 2)) U3=$((PORT_BASE + 3))
declare -A PORT=(
  [moongate]=$((PORT_BASE + 10)) [moongate_ewma]=$((PORT_BASE + 50))
  [nginx]=$((PORT_BASE + 20)) [nginx_lua]=$((PORT_BASE + 30))
  [haproxy]=$((PORT_BASE + 40)) [direct]=$U1 [origin]=$((PORT_BASE + 20))
  [floor]=$((PORT_BASE + 58))
  [moongate_tls]=$((PORT_BASE + 12)) [nginx_tls]=$((PORT_BASE + 22)) [haproxy_tls]=$((PORT_BASE + 42))
  [moongate_h2]=$((PORT_BASE + 14)) [nginx_h2]=$((PORT_BASE + 24)) [haproxy_h2]=$((PORT_BASE + 44))
  [moongate_h2c]=$((PORT_BASE + 16)) [nginx_h2c]=$((PORT_BASE + 26)) [haproxy_h2c]=$((PORT_BASE + 46))
)
declare -A ADMIN_PORT=([moongate]=$((PORT_BASE + 11)) [moongate_ewma]=$((PORT_BASE + 51))
  [moongate_tls]=$((PORT_BASE + 13)) [moongate_h2]=$((PORT_BASE + 15)) [moongate_h2c]=$((PORT_BASE + 17)))

is_tls() { [[ $1 == *_tls || $1 == *_h2 ]]; }
is_h2() { [[ $1 == *_h2 || $1 == *_h2c ]]; }
# url ROW: what the load generators ask for
url() { if is_tls "$1"; then echo "https://127.0.0.1:${PORT[$1]}/"; else echo "http://127.0.0.1:${PORT[$1]}/"; fi; }

# The certificate every TLS row serves: ECDSA P-256, self-signed, made fresh
# in the temp dir (tls.crt + tls.key; tls.pem = both, for HAProxy's `crt`).
make_cert() {
  [[ -f $TMP/tls.pem ]] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TMP/tls.key" -out "$TMP/tls.crt" -days 7 -subj /CN=bench.moongate.test \
    -addext "subjectAltName=DNS:bench.moongate.test,IP:127.0.0.1" >"$TMP/openssl-req.log" 2>&1 ||
    die "openssl req failed: $(tail -n 3 "$TMP/openssl-req.log")"
  cat "$TMP/tls.crt" "$TMP/tls.key" >"$TMP/tls.pem"
}

# render TEMPLATE NAME PORT [MASTER_PROCESS] -> prints the path of the config
render() {
  local tpl=$1 name=$2 port=$3 master=${4:-on} out
  out=$TMP/$name.${tpl##*.}
  sed -e "s|@TMP@|$TMP|g; s|@NAME@|$name|g; s|@PORT@|$port|g" \
      -e "s|@U1@|$U1|g; s|@U2@|$U2|g; s|@U3@|$U3|g" \
      -e "s|@MASTER_PROCESS@|$master|g; s|@ADMIN_PORT@|${ADMIN_PORT[$name]:-0}|g" \
      -e "s|@NGINX_KEEPALIVE@|$NGINX_KEEPALIVE|g; s|@WORKERS@|$WORKERS|g" \
      "$CONF_DIR/$tpl" >"$out"
  echo "$out"
}

# ---------------------------------------------------------------- availability
declare -A SKIP=()   # row -> reason

check_lua() {
  local mod=/usr/lib/nginx/modules/ngx_http_lua_module.so ndk=/usr/lib/nginx/modules/ndk_http_module.so
  if [[ ! -f $mod || ! -f $ndk ]]; then
    local cand
    cand=$(apt-cache policy libnginx-mod-http-lua 2>/dev/null | awk '/Candidate:/{print $2}')
    echo "libnginx-mod-http-lua/ndk not installed (apt candidate: ${cand:-none}; apt-get install -y libnginx-mod-http-lua lua-resty-core)"
    return 1
  fi
  if [[ ! -f /usr/share/lua/5.1/resty/core.lua ]]; then
    echo "lua-resty-core not installed (needed by ngx.balancer; apt-get install -y lua-resty-core)"
    return 1
  fi
  local conf err
  conf=$(render nginx-lua.conf nginx_lua_check "${PORT[nginx_lua]}")
  if ! err=$(nginx -t -p "$TMP/" -c "$conf" -e "$TMP/nginx_lua_check.err" 2>&1); then
    echo "nginx -t fails with the lua module: $(tail -n 2 <<<"$err" | tr '\n' ' ')"
    return 1
  fi
}

# the `floor` row: bench/relay_floor.c, an L4 relay (what the kernel alone charges)
FLOOR_BIN=$ROOT/build/relay_floor
build_floor() {
  [[ $FLOOR_BIN -nt $HERE/relay_floor.c ]] && return 0
  mkdir -p "$(dirname "$FLOOR_BIN")"
  cc -std=c11 -O2 -Wall -Wextra -o "$FLOOR_BIN" "$HERE/relay_floor.c" 2>&1 | tail -n 3 || true
  [[ -x $FLOOR_BIN ]] || { echo "cc could not build bench/relay_floor.c"; return 1; }
}

check_moongate() {
  [[ -x $MOONGATE ]] || { echo "$MOONGATE not built (make build)"; return 1; }
  local conf err
  conf=$(render "$1.yaml" "$1" "${PORT[$1]}")
  if ! err=$(timeout 10 "$MOONGATE" -t -c "$conf" 2>&1); then
    echo "moongate -t rejects the bench config: $(head -c 300 <<<"$err" | tr '\n' ' ')"
    return 1
  fi
}

# live_rows "ROWS": the rows that can run, in LIVE; the others are reported
live_rows() {
  local row
  LIVE=()
  for row in $1; do
    if [[ -n ${SKIP[$row]:-} ]]; then echo "skipped: $row: ${SKIP[$row]}"; else LIVE+=("$row"); fi
  done
  ((${#LIVE[@]})) || die "nothing to measure"
}

check_rows() {   # fills SKIP for the rows that cannot run
  local r reason
  for r in $1; do if is_tls "$r"; then make_cert; break; fi; done
  for r in $1; do
    case $r in
      moongate | moongate_ewma | moongate_tls | moongate_h2 | moongate_h2c)
        if [[ $r == moongate_ewma && ! -f $ROOT/plugins/p2c_ewma.lua ]]; then
          SKIP[$r]="plugins/p2c_ewma.lua not there yet"; continue
        fi
        reason=$(check_moongate "$r") || SKIP[$r]=$reason ;;
      nginx_lua) reason=$(check_lua) || SKIP[$r]=$reason ;;
      floor) reason=$(build_floor) || SKIP[$r]=$reason ;;
      nginx | haproxy | direct | origin | nginx_tls | haproxy_tls | nginx_h2 | haproxy_h2 | nginx_h2c | haproxy_h2c)
        if is_h2 "$r" && ! command -v h2load >/dev/null; then SKIP[$r]="h2load not found (apt-get install -y nghttp2-client)"; fi ;;
      *) die "unknown row: $r" ;;
    esac
  done
}

# ---------------------------------------------------------------- starting
declare -A PID=()    # row -> pid whose tree is measured

start_upstreams() {
  local i port conf
  for i in 1 2 3; do
    port=$((PORT_BASE + i))
    conf=$(render upstream-nginx.conf "upstream$i" "$port" on)
    start "upstream$i" ${BENCH_UPSTREAM_WRAP:-} taskset -c "$PROXY_CPU" nginx -p "$TMP/" -c "$conf" -e "$TMP/upstream$i.error.log"
    PID[upstream$i]=$LAST_PID
  done
  for i in 1 2 3; do
    wait_listen $((PORT_BASE + i)) "${PID[upstream$i]}" 10 || die "upstream $i did not start: $(tail -n 5 "$TMP/upstream$i.log" "$TMP/upstream$i.error.log" 2>/dev/null)"
  done
  PID[direct]=${PID[upstream1]}
}

# proxy_cmd ROW MASTER_PROCESS -> sets CMD (array) and STOPSIG
proxy_cmd() {
  local row=$1 master=${2:-on} conf
  case $row in
    moongate | moongate_ewma | moongate_tls | moongate_h2 | moongate_h2c)
      conf=$(render "$row.yaml" "$row" "${PORT[$row]}")
      CMD=("$MOONGATE" -c "$conf"); STOPSIG=TERM ;;
    nginx)
      conf=$(render nginx-proxy.conf nginx "${PORT[nginx]}" "$master")
      CMD=(nginx -p "$TMP/" -c "$conf" -e "$TMP/nginx.error.log"); STOPSIG=QUIT ;;
    nginx_lua)
      conf=$(render nginx-lua.conf nginx_lua "${PORT[nginx_lua]}" "$master")
      CMD=(nginx -p "$TMP/" -c "$conf" -e "$TMP/nginx_lua.error.log"); STOPSIG=QUIT ;;
    haproxy)
      conf=$(render haproxy.cfg haproxy "${PORT[haproxy]}")
      CMD=(haproxy -db -f "$conf"); STOPSIG=TERM ;;
    nginx_tls)
      conf=$(render nginx-proxy-tls.conf nginx_tls "${PORT[nginx_tls]}" "$master")
      CMD=(nginx -p "$TMP/" -c "$conf" -e "$TMP/nginx_tls.error.log"); STOPSIG=QUIT ;;
    haproxy_tls)
      conf=$(render haproxy-tls.cfg haproxy_tls "${PORT[haproxy_tls]}")
      CMD=(haproxy -db -f "$conf"); STOPSIG=TERM ;;
    nginx_h2 | nginx_h2c)
      conf=$(render "nginx-proxy-${row#nginx_}.conf" "$row" "${PORT[$row]}" "$master")
      CMD=(nginx -p "$TMP/" -c "$conf" -e "$TMP/$row.error.log"); STOPSIG=QUIT ;;
    haproxy_h2 | haproxy_h2c)
      conf=$(render "haproxy-${row#haproxy_}.cfg" "$row" "${PORT[$row]}")
      CMD=(haproxy -db -f "$conf"); STOPSIG=TERM ;;
    floor)
      CMD=("$FLOOR_BIN" "${PORT[floor]}" "$U1" "$U2" "$U3"); STOPSIG=TERM ;;
    origin)   # an nginx upstream answering `return 200` itself, as a reference
      conf=$(render upstream-nginx.conf origin "${PORT[origin]}" "$master")
      CMD=(nginx -p "$TMP/" -c "$conf" -e "$TMP/origin.error.log"); STOPSIG=QUIT ;;
    *) die "no command for $row" ;;
  esac
}

# check that a request through the row answers 200 "ok" (h2 rows: over HTTP/2,
# negotiated by ALPN on TLS, prior knowledge on h2c)
probe() {
  local out opt=()
  if [[ $1 == *_h2 ]]; then opt=(--http2); elif [[ $1 == *_h2c ]]; then opt=(--http2-prior-knowledge); fi
  out=$(curl -sk "${opt[@]}" --max-time 3 -w ' %{http_version}' "$(url "$1")" 2>/dev/null) || return 1
  if is_h2 "$1"; then [[ $out == "ok 2" ]]; else [[ $out == ok\ * ]]; fi
}

start_proxy() {   # start_proxy ROW: starts it pinned, or records why it is skipped
  local row=$1
  [[ $row == direct ]] && return 0
  proxy_cmd "$row" on
  start "$row" taskset -c "$PROXY_CPUS" "${CMD[@]}"
  PID[$row]=$LAST_PID
  if ! wait_listen "${PORT[$row]}" "$LAST_PID" 15; then
    SKIP[$row]="did not start listening: $(tail -n 3 "$TMP/$row.log" | tr '\n' ' ')"
    kill_tree "$LAST_PID" KILL 0; return 0
  fi
  local i
  for ((i = 0; i < 20; i++)); do probe "$row" && return 0; sleep 0.1; done
  SKIP[$row]="GET / through it does not answer 200 \"ok\": $(curl -sk -o /dev/null -w '%{http_code}' --max-time 3 "$(url "$row")" || true)"
  kill_tree "$LAST_PID" KILL 0
}

# ---------------------------------------------------------------- /proc readers
tree_mem_kb() {  # "RSS PSS" in kB summed over the process tree
  local p rss=0 pss=0 v
  for p in $(proc_tree "$1"); do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || true)
    rss=$((rss + ${v:-0}))
    v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    pss=$((pss + ${v:-0}))
  done
  echo "$rss $pss"
}

cpu_stat() {     # "busy total" jiffies of one CPU from /proc/stat
  # (columns: user nice system idle iowait irq softirq steal ...; busy = all but idle, iowait)
  awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# snap_deltas SNAP0 SNAP1 SELF ROOT...: one line "foreign d1 d2 ...": dN is the
# CPU ticks used between the two snapshots by the tree of the Nth ROOT, and
# foreign those of user processes outside SELF's tree (other tenants of a
# shared machine; kernel threads are left out, ksoftirqd works for us too).
# A lower bound: processes that exit before the second snapshot are missed
# (counting the parents' cutime instead would charge whole lifetimes).
snap_deltas() {
  local s0=$1 s1=$2 self=$3; shift 3
  awk -v self="$self" -v roots="$*" '
    FNR == NR { before[$1] = $3; par[$1] = $2; next }
    { after[$1] = $3; par[$1] = $2 }
    function tree(root, set,   c, more) {
      set[root] = 1
      do { more = 0; for (c in par) if (!(c in set) && (par[c] in set)) { set[c] = 1; more = 1 } } while (more)
    }
    function delta(p,   d) { d = after[p] - ((p in before) ? before[p] : 0); return d > 0 ? d : 0 }
    END {
      split("", mine); tree(self, mine)
      for (p in after) if (!(p in mine) && par[p] != 2 && p != 2) foreign += delta(p)
      line = foreign + 0
      n = split(roots, r, " ")
      for (i = 1; i <= n; i++) {
        split("", set); tree(r[i], set); t = 0
        for (p in set) if (p in after) t += delta(p)
        line = line " " t
      }
      print line
    }' "$s0" "$s1"
}

# ---------------------------------------------------------------- throughput
# measure ROW CONNS -> prints one TSV line (without the leading columns)
run_wrk() {      # run_wrk URL CONNS SECONDS
  # --foreground: wrk stays in our process group, so Ctrl-C reaches it too
  timeout --foreground -k 5 $(($3 + 30)) taskset -c "$LOAD_CPU" \
    wrk -t1 -c"$2" -d"$3s" --timeout 5s -s "$HERE/wrk-report.lua" "$1" 2>&1 || true
}

# run_h2load URL CONNS SECONDS: HTTP/2 (TLS: ALPN h2; http: prior knowledge),
# STREAMS concurrent streams per connection, one thread; prints wrk-report.lua's
# BENCH line. h2load gives no percentiles: p50 holds its mean time per request,
# p90 mean + 1 sd, max its max (p99 0: unknown).
run_h2load() {
  timeout --foreground -k 5 $(($3 + 30)) taskset -c "$LOAD_CPU" \
    h2load -t 1 -c "$2" -m "$STREAMS" -D "$3" "$1" 2>&1 | awk '
    function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return 1000 * v; if (v ~ /s$/) return 1e6 * v; return v }
    /^finished in/ { d = $3; sub(/,$/, "", d); dur = us(d) }
    /^requests:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^succeeded/) ok = $(i - 1); if ($(i) ~ /^errored/) er = $(i - 1); if ($(i) ~ /^timeout/) to = $(i - 1) } }
    /^status codes:/ { s3 = $5; s4 = $7; s5 = $9 }
    /^time for request:/ { mn = us($4); mx = us($5); mean = us($6); sd = us($7) }
    { print > "/dev/stderr" }
    END { if (dur > 0) printf "BENCH requests=%d duration_us=%d bytes=0 connect=0 read=%d write=0 status=%d timeout=%d p50=%d p90=%d p99=0 p999=0 max=%d mean=%d\n",
            ok, dur, er, s3 + s4 + s5, to, mean, mean + sd, mx, mean }' 2>&1 || true
}

# measure ROW CONNS -> prints the TSV fields after round/conns/row
measure() {
  local row=$1 c=$2 port pid=${PID[$1]} out a0 b0 a1 b1 la0 lb0 la1 lb1 mem
  port=$(url "$row")   # (a URL)
  local run=run_wrk
  if is_h2 "$row"; then run=run_h2load; fi
  $run "$port" "$c" "$WARMUP" >/dev/null
  local w0 w1
  proc_snapshot >"$TMP/snap0"
  w0=$(date +%s%N)
  read -r a0 b0 < <(cpu_stat "$PROXY_CPU"); read -r la0 lb0 < <(cpu_stat "$LOAD_CPU")
  # `time` reports the CPU of waited-for descendants: timeout -> taskset -> wrk
  local TIMEFORMAT='%3U %3S' wu ws
  { time $run "$port" "$c" "$DURATION" >"$TMP/wrk.cur"; } 2>"$TMP/wrk.time"
  out=$(<"$TMP/wrk.cur")
  read -r wu ws <"$TMP/wrk.time" || true
  read -r a1 b1 < <(cpu_stat "$PROXY_CPU"); read -r la1 lb1 < <(cpu_stat "$LOAD_CPU")
  w1=$(date +%s%N)
  proc_snapshot >"$TMP/snap1"
  local foreign dt d1 d2 d3
  read -r foreign dt d1 d2 d3 < <(snap_deltas "$TMP/snap0" "$TMP/snap1" $$ "$pid" \
    "${PID[upstream1]}" "${PID[upstream2]}" "${PID[upstream3]}")
  mem=$(tree_mem_kb "$pid")
  printf '%s\n' "$out" >>"$TMP/wrk-$row-$c.out"
  # how the upstreams' CPU was split: a proxy must spread the load over all 3
  local split
  split=$(awk -v a="$d1" -v b="$d2" -v c="$d3" 'BEGIN { t = a + b + c; if (t == 0) t = 1
    printf "%.0f/%.0f/%.0f", 100 * a / t, 100 * b / t, 100 * c / t }')
  if [[ $row != direct ]] && awk -v a="$d1" -v b="$d2" -v c="$d3" 'BEGIN { t = a + b + c; m = a; if (b < m) m = b; if (c < m) m = c
      exit !(t > 10 && m < 0.15 * t) }'; then
    log "  warning: $row c=$c: uneven load on the 3 upstreams (CPU split $split %)"
  fi
  local line
  line=$(grep '^BENCH ' <<<"$out" | tail -n 1 || true)
  if [[ -z $line ]]; then
    log "  $row c=$c: wrk printed no result: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    line="BENCH requests=0 duration_us=1 bytes=0 connect=0 read=0 write=0 status=0 timeout=0 p50=0 p90=0 p99=0 p999=0 max=0 mean=0"
  fi
  # others% = CPU of processes outside this bench during the row, in % of one
  # core (wrk's own CPU comes from `time`, for the load core's headroom)
  awk -v line="$line" -v dt="$dt" -v hz="$CLK_TCK" -v mem="$mem" -v wu="${wu:-0}" -v ws="${ws:-0}" \
      -v foreign="$foreign" -v wall=$(((w1 - w0) / 1000)) -v usplit="$split" \
      -v ups=$((d1 + d2 + d3)) -v isdirect="$([[ $row == direct ]] && echo 1 || echo 0)" \
      -v pb=$((a1 - a0)) -v pt=$((b1 - b0)) -v lb=$((la1 - la0)) -v lt=$((lb1 - lb0)) 'BEGIN {
    n = split(line, f, " ")
    for (i = 2; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
    req = v["requests"]; secs = v["duration_us"] / 1e6
    rps = (secs > 0) ? req / secs : 0
    sock = v["connect"] + v["read"] + v["write"] + v["timeout"]
    cpu_us = dt * 1e6 / hz
    others = (wall > 0) ? 100 * foreign / hz / (wall / 1e6) : 0
    wrk_pct = (secs > 0) ? 100 * (wu + ws) / secs : 0
    # unacct% = busy time of both cores not charged to the bench (proxy, upstreams,
    # wrk), in % of one core: other tenants, short-lived processes included,
    # plus softirq work charged to no task
    ours = (isdirect ? ups : dt + ups) / hz + wu + ws
    unacct = (pt > 0 && lt > 0) ? 100 * (pb / pt + lb / lt) - 100 * ours / (wall / 1e6) : 0
    split(mem, m, " ")
    printf "%.0f\t%d\t%.3f\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.1f\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%.0f\n",
      rps, req, secs, v["p50"], v["p90"], v["p99"], v["max"], v["status"], sock,
      (req > 0) ? cpu_us / req : 0, (secs > 0) ? 100 * cpu_us / 1e6 / secs : 0,
      m[1], m[2], (pt > 0) ? 100 * pb / pt : 0, (lt > 0) ? 100 * lb / lt : 0, wrk_pct, others, usplit, unacct
  }'
}

TSV_HEADER="round	conns	row	rps	requests	seconds	p50_us	p90_us	p99_us	max_us	non2xx	sock_errors	cpu_us_per_req	proc_cpu_pct	rss_kb	pss_kb	core_proxy_busy_pct	core_load_busy_pct	wrk_cpu_pct	others_pct	upstream_cpu_split	unaccounted_pct"

print_row_header() {
  printf '%-14s %5s %9s %8s %8s %7s %7s %9s %6s %7s %5s %6s %5s %6s\n' \
    row conns req/s p50_ms p99_ms non2xx sockerr cpu_us/rq cpu% rss_MB "cpu$PROXY_CPU%" "cpu$LOAD_CPU%" wrk% unacct%
}
print_row() {    # print_row ROW CONNS TSVFIELDS
  local IFS=$'\t' f
  read -r -a f <<<"$3"
  awk -v r="$1" -v c="$2" -v rps="${f[0]}" -v p50="${f[3]}" -v p99="${f[5]}" -v s="${f[7]}" -v e="${f[8]}" \
      -v cpu="${f[9]}" -v pct="${f[10]}" -v rss="${f[11]}" -v b0="${f[13]}" -v b1="${f[14]}" -v o="${f[15]}" -v lo="${f[18]}" \
      -v lim="$NOISY" 'BEGIN {
    printf "%-14s %5d %9d %8.2f %8.2f %7d %7d %9.2f %6.1f %7.1f %5d %5d %5d %7d%s\n", r, c, rps, p50 / 1000, p99 / 1000, s, e,
      cpu, pct, rss / 1024, b0, b1, o, lo, (lo > lim) ? "  noisy" : "" }'
}

machine_info() {
  echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# command: bench/run.sh $ORIG_ARGS"
  echo "# machine: $(uname -srm), $NCPU CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# pinning: proxy on CPU $PROXY_CPUS, upstreams on CPU $PROXY_CPU, load generator on CPU $LOAD_CPU; workers $WORKERS; CLK_TCK $CLK_TCK; nginx keepalive $NGINX_KEEPALIVE"
  echo "# versions: $(nginx -v 2>&1 | tr -d '\n'); $(haproxy -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)$( [[ -x $MOONGATE ]] && echo "; moongate: $(timeout 5 "$MOONGATE" -V 2>&1 | head -n 1 || true)")"
}

throughput() {
  local rows row c r i n
  if [[ -n $ROWS ]]; then rows=$ROWS; elif ((H2)); then rows=$H2_ROWS; elif ((TLS)); then rows=$TLS_ROWS; else rows=$ALL_ROWS; fi
  check_rows "$rows"
  local live=()
  for row in $rows; do [[ -n ${SKIP[$row]:-} ]] || live+=("$row"); done
  if [[ -z $DURATION ]]; then
    # 8 s per row, less when more rows would take the default run past ~5.5 min
    local nc; nc=$(wc -w <<<"$CONNS")
    DURATION=$(awk -v n=$((ROUNDS * nc * ${#live[@]})) -v w="$WARMUP" 'BEGIN {
      d = int(320 / n - w - 1.5); if (d > 8) d = 8; if (d < 2) d = 2; print d }')
  fi

  start_upstreams
  for row in "${live[@]}"; do start_proxy "$row"; done
  sleep 0.5
  IDLE_RSS="# idle RSS after start-up (one probe request), MB:"
  for row in "${live[@]}"; do
    [[ -n ${SKIP[$row]:-} || $row == direct ]] && continue
    IDLE_RSS+=" $row $(tree_mem_kb "${PID[$row]}" | awk '{printf "%.1f", $1 / 1024}')"
  done
  live_rows "$rows"   # again: a proxy that failed to start is skipped now
  live=("${LIVE[@]}")

  n=${#live[@]}
  local nconns; nconns=$(wc -w <<<"$CONNS")
  local est=$((ROUNDS * nconns * n * (DURATION + WARMUP + 1) + 10))
  mkdir -p "$RESULTS_DIR"
  local stamp; stamp=$(date '+%Y%m%d-%H%M%S')
  local tsv=$RESULTS_DIR/$stamp-throughput.tsv
  { machine_info; echo "$IDLE_RSS"; echo "$TSV_HEADER"; } >"$tsv"
  machine_info; echo "$IDLE_RSS"
  echo "# rows: ${live[*]}; conns: $CONNS; $ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warmup) per row; about ${est}s"

  for ((r = 1; r <= ROUNDS; r++)); do
    local order=()
    for ((i = 0; i < n; i++)); do order+=("${live[(i + r - 1) % n]}"); done   # rotate each round
    echo
    echo "== round $r/$ROUNDS: ${order[*]}"
    print_row_header
    for c in $CONNS; do
      for row in "${order[@]}"; do
        if ! alive "${PID[$row]}"; then
          echo "$row died (see $TMP/$row.log)"; continue
        fi
        local fields
        if ! fields=$(measure "$row" "$c") || [[ -z $fields ]]; then
          log "  $row c=$c: measurement failed"; continue
        fi
        printf '%s\t%s\t%s\t%s\n' "$r" "$c" "$row" "$fields" >>"$tsv"
        print_row "$row" "$c" "$fields"
      done
    done
  done
  echo
  python3 "$HERE/summarize.py" --noisy "$NOISY" "$tsv" | tee "${tsv%.tsv}-summary.txt"
  local hs_rows=()
  for row in "${live[@]}"; do if [[ $row == *_tls ]]; then hs_rows+=("$row"); fi; done
  if ((TLS && ${#hs_rows[@]})); then
    handshakes "$stamp" "${hs_rows[@]}"
  fi
  echo
  echo "results: $tsv"
}

# ---------------------------------------------------------------- handshakes
# hs_client ROW MODE SECONDS -> one line "HS conns=N resumed=R failed=F seconds=S rate=X".
# full: h2load, HS_CONNS connections that each send one `Connection: close`
# request and reconnect (a full TLS 1.3 handshake each: h2load keeps no
# session), HS_FULL_RATE x SECONDS connections in all (h2load's -D duration
# mode hangs with reconnecting clients: nghttp2 1.52); resumed:
# tls_handshakes.py (Python's ssl) for SECONDS, each connection offering the
# ticket of its process's previous one. h2load costs less than half the client
# CPU per connection of the Python client, hence two clients.
hs_client() {
  local row=$1 mode=$2 secs=$3
  if [[ $mode == full ]]; then
    timeout --foreground -k 5 $((secs + 60)) taskset -c "$LOAD_CPU" h2load --h1 -n $((secs * HS_FULL_RATE)) -c "$HS_CONNS" -t 1 \
      -H 'Connection: close' "$(url "$row")" 2>&1 | awk '
      /^finished in/ { s = $3; sub(/s,$/, "", s) }
      /^requests:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^succeeded/) ok = $(i - 1); if ($(i) ~ /^failed/) bad = $(i - 1) } }
      END { if (s > 0) printf "HS conns=%d resumed=0 failed=%d seconds=%.3f rate=%.1f\n", ok, bad, s, ok / s }'
  else
    timeout --foreground -k 5 $((secs + 60)) taskset -c "$LOAD_CPU" python3 "$HERE/tls_handshakes.py" \
      "${PORT[$row]}" "$secs" "$HS_PROCS" "$mode" 2>&1
  fi
}

# measure_hs ROW MODE -> prints the TSV fields after round/mode/row: new TLS
# connections (handshake + one GET with Connection: close) on the load core,
# and the proxy's CPU per connection.
measure_hs() {
  local row=$1 mode=$2 pid=${PID[$1]} out a0 b0 a1 b1 la0 lb0 la1 lb1 w0 w1
  hs_client "$row" "$mode" 1 >/dev/null || true   # warm-up
  proc_snapshot >"$TMP/snap0"
  w0=$(date +%s%N)
  read -r a0 b0 < <(cpu_stat "$PROXY_CPU"); read -r la0 lb0 < <(cpu_stat "$LOAD_CPU")
  local TIMEFORMAT='%3U %3S' cu cs
  { time hs_client "$row" "$mode" "$HS_SECONDS" >"$TMP/hs.cur"; } 2>"$TMP/hs.time" || true
  read -r a1 b1 < <(cpu_stat "$PROXY_CPU"); read -r la1 lb1 < <(cpu_stat "$LOAD_CPU")
  w1=$(date +%s%N)
  proc_snapshot >"$TMP/snap1"
  read -r cu cs <"$TMP/hs.time" || true
  out=$(grep '^HS ' "$TMP/hs.cur" | tail -n 1 || true)
  [[ -n $out ]] || { log "  $row $mode: no result: $(tail -n 3 "$TMP/hs.cur" | tr '\n' ' ')"; return 1; }
  local foreign dt d1 d2 d3
  read -r foreign dt d1 d2 d3 < <(snap_deltas "$TMP/snap0" "$TMP/snap1" $$ "$pid" \
    "${PID[upstream1]}" "${PID[upstream2]}" "${PID[upstream3]}")
  awk -v line="$out" -v dt="$dt" -v ups=$((d1 + d2 + d3)) -v hz="$CLK_TCK" -v cu="${cu:-0}" -v cs="${cs:-0}" \
      -v wall=$(((w1 - w0) / 1000)) -v pb=$((a1 - a0)) -v pt=$((b1 - b0)) -v lb=$((la1 - la0)) -v lt=$((lb1 - lb0)) 'BEGIN {
    n = split(line, f, " ")
    for (i = 2; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
    conns = v["conns"]; secs = v["seconds"]
    cpu_us = dt * 1e6 / hz
    ours = (dt + ups) / hz + cu + cs
    unacct = (pt > 0 && lt > 0) ? 100 * (pb / pt + lb / lt) - 100 * ours / (wall / 1e6) : 0
    printf "%.1f\t%d\t%d\t%d\t%.3f\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\n", v["rate"], conns, v["resumed"], v["failed"], secs,
      (conns > 0) ? cpu_us / conns : 0, (secs > 0) ? 100 * cpu_us / 1e6 / secs : 0,
      (pt > 0) ? 100 * pb / pt : 0, (lt > 0) ? 100 * lb / lt : 0, (secs > 0) ? 100 * (cu + cs) / secs : 0, unacct
  }'
}

HS_HEADER="round	mode	row	conns_per_s	conns	resumed	failed	seconds	cpu_us_per_conn	proc_cpu_pct	core_proxy_busy_pct	core_load_busy_pct	client_cpu_pct	unaccounted_pct"

handshakes() {   # handshakes STAMP ROW...
  local stamp=$1; shift
  local rows=("$@") n=$# r i mode row fields
  local tsv=$RESULTS_DIR/$stamp-handshakes.tsv
  { machine_info; echo "# clients: full: h2load --h1 -c $HS_CONNS -H 'Connection: close'; resumed: bench/tls_handshakes.py, $HS_PROCS processes; ${HS_SECONDS}s per row (+1 s warm-up)"; echo "$HS_HEADER"; } >"$tsv"
  echo
  echo "== new TLS connections (handshake + GET / + close): $ROUNDS round(s) x {full, resumed}, ${HS_SECONDS}s per row; full: h2load -c $HS_CONNS, resumed: tls_handshakes.py x $HS_PROCS; on CPU $LOAD_CPU"
  printf '%-14s %-8s %9s %8s %7s %12s %6s %5s %5s %7s %7s\n' row mode conns/s resumed failed cpu_us/conn cpu% "cpu$PROXY_CPU%" "cpu$LOAD_CPU%" client% unacct%
  for ((r = 1; r <= ROUNDS; r++)); do
    for mode in full resumed; do
      for ((i = 0; i < n; i++)); do
        row=${rows[(i + r - 1) % n]}
        alive "${PID[$row]}" || { echo "$row died (see $TMP/$row.log)"; continue; }
        fields=$(measure_hs "$row" "$mode") || continue
        printf '%s\t%s\t%s\t%s\n' "$r" "$mode" "$row" "$fields" >>"$tsv"
        local IFS=$'\t' f
        read -r -a f <<<"$fields"
        unset IFS
        printf '%-14s %-8s %9.0f %8d %7d %12.1f %6.1f %5d %5d %7d %7d%s\n' "$row" "$mode" "${f[0]}" "${f[2]}" "${f[3]}" \
          "${f[5]}" "${f[6]}" "${f[7]}" "${f[8]}" "${f[9]}" "${f[10]}" "$( ((${f[10]%.*} > NOISY)) && echo '  noisy' || true)"
      done
    done
  done
  echo
  python3 "$HERE/summarize.py" --handshakes "$tsv" | tee "${tsv%.tsv}-summary.txt"
  echo "handshake results: $tsv"
}

# ---------------------------------------------------------------- instructions
# one traced run: trace_run ROW TOOL CONNS N -> sets TRACE_RESULT to the count
# (instructions or syscalls) for the whole life of the process, or NA.  Not run
# in a $(...) subshell, so that the cleanup trap knows every process started.
trace_run() {
  local row=$1 tool=$2 c=$3 n=$4 tag="$1-$2-c$3-n$4" pid target out i
  TRACE_RESULT=NA
  proxy_cmd "$row" off
  case $tool in
    callgrind)
      out=$TMP/$tag.callgrind
      start "$tag" taskset -c "$PROXY_CPU" valgrind --tool=callgrind -q --callgrind-out-file="$out" "${CMD[@]}"
      pid=$LAST_PID; target=$pid ;;
    strace)
      out=$TMP/$tag.strace
      start "$tag" taskset -c "$PROXY_CPU" strace -f -c -U calls,errors,name -o "$out" "${CMD[@]}"
      pid=$LAST_PID ;;
    *) die "unknown tool $tool" ;;
  esac
  if ! wait_listen "${PORT[$row]}" "$pid" 60; then
    log "  $tag: did not start: $(tail -n 3 "$TMP/$tag.log" | tr '\n' ' ')"
    kill_tree "$pid" KILL 0; return 0
  fi
  if [[ $tool == strace ]]; then target=$(pgrep -P "$pid" | head -n 1 || true); fi
  local h ok st2
  local proto=(--h1)
  if is_h2 "$row"; then proto=(-m "$STREAMS"); fi   # HTTP/2: N streams, M at a time per connection
  h=$(timeout --foreground -k 5 600 taskset -c "$LOAD_CPU" h2load "${proto[@]}" -n "$n" -c "$c" -t 1 "$(url "$row")" 2>&1 || true)
  echo "$h" >"$TMP/$tag.h2load"
  ok=$(awk '/^requests:/{for (i = 1; i <= NF; i++) if ($(i) ~ /^succeeded/) print $(i - 1)}' <<<"$h")
  st2=$(awk '/^status codes:/{print $3}' <<<"$h")
  # graceful stop, so that callgrind / strace write their totals at exit
  kill "-$STOPSIG" "${target:-$pid}" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "  $tag: did not exit within 60 s of SIG$STOPSIG"; kill_tree "$pid" KILL 0; return 0
  fi
  wait "$pid" 2>/dev/null || true
  forget "$pid"
  if [[ ${ok:-0} != "$n" || ${st2:-0} != "$n" ]]; then
    log "  $tag: h2load: ${ok:-0}/$n succeeded, ${st2:-0} 2xx"; return 0
  fi
  local count=
  case $tool in
    callgrind) count=$(awk '/^summary:/{print $2}' "$out" 2>/dev/null || true) ;;
    strace) count=$(awk '$NF == "total" {print $1}' "$out" 2>/dev/null || true) ;;
  esac
  TRACE_RESULT=${count:-NA}
}

instructions() {
  local rows row tool c
  if [[ -n $ROWS ]]; then rows=$ROWS; elif ((H2)); then rows=$H2_ROWS; elif ((TLS)); then rows=$TLS_ROWS; else rows=$ALL_IROWS; fi
  check_rows "$rows"
  live_rows "$rows"
  local live=("${LIVE[@]}")
  ((N2 > N1)) || die "--n2 must be larger than --n1"
  start_upstreams
  mkdir -p "$RESULTS_DIR"
  local stamp; stamp=$(date '+%Y%m%d-%H%M%S')
  local tsv=$RESULTS_DIR/$stamp-instructions.tsv keep=$RESULTS_DIR/$stamp-traces
  mkdir -p "$keep"
  { machine_info; printf 'row\ttool\tconns\tn1\tn2\tcount1\tcount2\tper_request\n'; } >"$tsv"
  machine_info
  echo "# rows: ${live[*]}; tools: $ITOOLS; connections: $ICONNS$( ((H2)) && echo " x $STREAMS streams (HTTP/2 rows)"); per request = (count(N2) - count(N1)) / (N2 - N1), N1=$N1 N2=$N2"
  for row in "${live[@]}"; do
    for tool in $ITOOLS; do
      for c in $ICONNS; do
        local v1 v2 per
        trace_run "$row" "$tool" "$c" "$N1"; v1=$TRACE_RESULT
        trace_run "$row" "$tool" "$c" "$N2"; v2=$TRACE_RESULT
        per=$(awk -v a="$v1" -v b="$v2" -v n1="$N1" -v n2="$N2" 'BEGIN {
          if (a == "NA" || b == "NA" || a == "" || b == "") print "NA"; else printf "%.2f", (b - a) / (n2 - n1) }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$tool" "$c" "$N1" "$N2" "$v1" "$v2" "$per" >>"$tsv"
        printf '  %-14s %-9s c=%-3s %s -> %s : %s per request\n' "$row" "$tool" "$c" "$v1" "$v2" "$per"
        # keep the traces of the long run (callgrind_annotate FILE, per-syscall table)
        for f in "$TMP/$row-$tool-c$c-n$N1".* "$TMP/$row-$tool-c$c-n$N2".*; do
          if [[ -f $f ]]; then cp "$f" "$keep/"; fi
        done
      done
    done
  done
  echo
  python3 "$HERE/summarize.py" --instructions "$tsv" "$keep" | tee "${tsv%.tsv}-summary.txt"
  echo
  echo "results: $tsv (traces: $keep; e.g. callgrind_annotate $keep/${live[0]}-callgrind-c1-n$N2.callgrind)"
}

# ---------------------------------------------------------------- kernel share
# ksnap PID -> "key=value ..." absolute counters: TCP (nstat, the whole network
# namespace), the proxy's context switches (all its threads), utime/stime
# (clock ticks) and run time (schedstat, ns), and the segments of the proxy's
# sockets towards the upstreams (ss: established ones; a socket closed between
# two snapshots takes its counts with it).
KSTATS="TcpOutSegs TcpInSegs TcpExtDelayedACKs TcpExtDelayedACKLost TcpExtTCPPureAcks TcpExtTCPHPAcks TcpExtTCPAutoCorking TcpExtTCPOrigDataSent"
ksnap() {
  local pid=$1
  # shellcheck disable=SC2086
  nstat -asz $KSTATS 2>/dev/null | awk '$1 !~ /^#/ && NF >= 2 { printf "%s=%s ", $1, $2 }'
  cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 }
    END { printf "vcs=%d ivcs=%d ", v, n }'
  awk '{ s = $0; p = 0; while ((j = index(substr(s, p + 1), ") ")) > 0) p += j
    split(substr(s, p + 2), f, " "); printf "utime=%d stime=%d ", f[12], f[13] }' /proc/"$pid"/stat
  cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{ t += $1 } END { printf "run_ns=%d ", t }'
  ss -Htin state established "( dport = :$U1 or dport = :$U2 or dport = :$U3 )" 2>/dev/null | awk '
    { for (i = 1; i <= NF; i++) { split($i, kv, ":")
        if (kv[1] == "segs_out") o += kv[2]; else if (kv[1] == "segs_in") n += kv[2] } }
    END { printf "up_out=%d up_in=%d", o, n }'
}

# kdelta "A" "B" -> "key=B-A ..."
kdelta() {
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); for (i = 1; i <= n; i++) { split(x[i], kv, "="); v[kv[1]] = kv[2] }
    n = split(b, y, " "); for (i = 1; i <= n; i++) { split(y[i], kv, "="); printf "%s%s=%d", (i > 1 ? " " : ""), kv[1], kv[2] - v[kv[1]] } }'
}

# kernel_counts ROW CONNS: the untraced runs (TCP, context switches, CPU)
kernel_counts() {
  local row=$1 c=$2 pid tag="k-$1-c$2" n s0 s1 h ok
  proxy_cmd "$row" off
  start "$tag" taskset -c "$PROXY_CPUS" "${CMD[@]}"
  pid=$LAST_PID
  if ! wait_listen "${PORT[$row]}" "$pid" 30; then
    log "  $tag: did not start: $(tail -n 3 "$TMP/$tag.log" | tr '\n' ' ')"; kill_tree "$pid" KILL 0; return 0
  fi
  # warm-up: upstream pools filled, caches and (nginx) worker state settled
  timeout --foreground -k 5 300 taskset -c "$LOAD_CPU" h2load --h1 -n $((c > 100 ? 20 * c : 2000)) -c "$c" -t 1 "$(url "$row")" >/dev/null 2>&1 || true
  for n in "$KN1" "$KN2"; do
    s0=$(ksnap "$pid")
    h=$(timeout --foreground -k 5 600 taskset -c "$LOAD_CPU" h2load --h1 -n "$n" -c "$c" -t 1 "$(url "$row")" 2>&1 || true)
    s1=$(ksnap "$pid")
    ok=$(awk '/^status codes:/{print $3}' <<<"$h")
    printf '%s\t%s\t%s\t%s\t%s\n' "$row" "$c" "$n" "${ok:-0}" "$(kdelta "$s0" "$s1")" >>"$KTSV"
  done
  kill "-$STOPSIG" "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  kill_tree "$pid" KILL 0
}

kernel() {
  local rows row c
  rows=${ROWS:-"moongate nginx haproxy"}
  check_rows "$rows"
  live_rows "$rows"
  local live=("${LIVE[@]}")
  ((KN2 > KN1)) || die "--kn2 must be larger than --kn1"
  start_upstreams
  mkdir -p "$RESULTS_DIR"
  local stamp; stamp=$(date '+%Y%m%d-%H%M%S')
  KTSV=$RESULTS_DIR/$stamp-kernel.tsv
  local keep=$RESULTS_DIR/$stamp-kernel-traces
  mkdir -p "$keep"
  { machine_info; echo "# netns: ${BENCH_IN_NETNS:+private (unshare -n)}${BENCH_IN_NETNS:-machine-wide}"
    printf 'row\tconns\tn\tok\tcounters\n'; } >"$KTSV"
  machine_info
  echo "# rows: ${live[*]}; connections: $KCONNS; per request = (count(N2) - count(N1)) / (N2 - N1), N1=$KN1 N2=$KN2"
  for row in "${live[@]}"; do
    for c in $KCONNS; do
      log "  $row c=$c"
      kernel_counts "$row" "$c"
      local v1 v2
      trace_run "$row" strace "$c" "$KN1"; v1=$TRACE_RESULT
      trace_run "$row" strace "$c" "$KN2"; v2=$TRACE_RESULT
      for f in "$TMP/$row-strace-c$c-n$KN1.strace" "$TMP/$row-strace-c$c-n$KN2.strace"; do
        if [[ -f $f ]]; then cp "$f" "$keep/"; fi
      done
      log "    syscalls: $v1 -> $v2"
    done
  done
  echo
  python3 "$HERE/kernel_table.py" "$KTSV" "$keep" | tee "${KTSV%.tsv}-summary.txt"
  echo
  echo "results: $KTSV (strace tables: $keep)"
}

case $MODE in
  instructions) instructions ;;
  kernel) kernel ;;
  *) throughput ;;
esac
