#!/usr/bin/env bash
# Instructions per request that a bundled plugin adds (bench/README.md,
# "Plugin API costs"): moongate under callgrind, one route, one keep-alive
# connection (h2load --h1 -c 1), an nginx origin answering 200 itself;
# per request = (I(N2) - I(N1)) / (N2 - N1), the bench/run.sh --instructions
# method.  Usage: bench/plugin_cost.sh [ROW ...]
#   rows: none empty cors (one target); jwt_hs256 jwt_hs256_nocache jwt_es256
#   jwt_es256_nocache (the jwt rows send one token over and over, so with
#   jwt_auth's token cache (default) they measure a hit, and the _nocache rows
#   (cache: 0) a full verify); jwt_miss_py and jwt_nocache_py (N requests over
#   one keep-alive connection from a Python client, each with a different token:
#   the cache's miss path, and with cache: 0; their difference is what the cache
#   adds to a miss); rr p2c_ewma lua_first (three targets: the C round robin,
#   the Lua p2c_ewma balancer and a Lua balancer returning 1, over the same
#   three ports of the origin; their differences are what the Lua balancer and
#   the bridge alone cost)
#   MOONGATE=path/to/moongate  BENCH_N1=200  BENCH_N2=1200  BENCH_REPEAT=2
#   (each count is the smallest of BENCH_REPEAT runs, see least())
#   rl_local rl_shared rl_redis: rate_limit's policies (rl_redis starts its
#   own redis-server)
#   none_origin, none_bearer: no plugin, but the request cors's row sends
#   (an Origin header) or the jwt_hs256 rows send (the Authorization header):
#   the fair baselines for those rows, since parsing a header costs the same
#   with or without the plugin that reads it
#   dns: the `none` row with its target written as a host name that a
#   dnsmasq started here resolves (issue 19: discovery costs nothing per
#   request; TTL 300 s, so no lookup falls inside a run)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
MOONGATE=${MOONGATE:-$ROOT/build/moongate}
N1=${BENCH_N1:-200}
N2=${BENCH_N2:-1200}
ROWS=${*:-none empty cors jwt_hs256}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/moongate-plugincost.XXXXXX")
ORIGIN_PID=
REDIS_PID=
DNS_PID=
cleanup() {
  if [[ -n $ORIGIN_PID ]]; then kill "$ORIGIN_PID" 2>/dev/null || true; fi
  if [[ -n $DNS_PID ]]; then kill "$DNS_PID" 2>/dev/null || true; fi
  if [[ -n $REDIS_PID ]]; then kill "$REDIS_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 300); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

UP=$(free_port)
UP2=$(free_port)
UP3=$(free_port)
sed -e "s|@TMP@|$TMP|g; s|@NAME@|origin|g; s|@PORT@|$UP|g; s|@MASTER_PROCESS@|off|g" \
  -e "s|^\( *\)listen 127.0.0.1:$UP \(.*\)|&\n\1listen 127.0.0.1:$UP2;\n\1listen 127.0.0.1:$UP3;|" \
  "$HERE/conf/upstream-nginx.conf" >"$TMP/origin.conf"
nginx -p "$TMP/" -c "$TMP/origin.conf" -e "$TMP/origin.error.log" &
ORIGIN_PID=$!
wait_port "$UP"
wait_port "$UP3"
if [[ " $ROWS " == *" rl_redis "* ]]; then
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$TMP" >"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_port "$REDIS_PORT"
fi

if [[ " $ROWS " == *" dns "* ]]; then
  DNS_PORT=$(free_port)
  echo "127.0.0.1 origin.bench.test" >"$TMP/hosts"
  dns_user=()
  if [[ $(id -u) == 0 ]]; then dns_user=(--user=root); fi
  dnsmasq --no-daemon --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces \
    --no-resolv --no-hosts --local=/test/ --addn-hosts="$TMP/hosts" --local-ttl=300 \
    "${dns_user[@]}" >"$TMP/dnsmasq.log" 2>&1 &
  DNS_PID=$!
  wait_port "$DNS_PORT"
fi

SECRET=bench-secret-0123456789
TOKEN=$(/usr/bin/python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": "user-42", "iss": "https://issuer.example", "aud": "api",
                  "exp": 4102444800, "iat": 1700000000}).encode())
s = b(hmac.new(sys.argv[1].encode(), h + b"." + p, hashlib.sha256).digest())
print((h + b"." + p + b"." + s).decode())
PY
)

# ES256: a P-256 key pair made here, the token signed by the openssl CLI
openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/ec.key" 2>/dev/null
openssl ec -in "$TMP/ec.key" -pubout -out "$TMP/ec.pub" 2>/dev/null
ES_TOKEN=$(/usr/bin/python3 - "$TMP/ec.key" <<'PY'
import base64, json, subprocess, sys
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
h = b(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": "user-42", "iss": "https://issuer.example", "aud": "api",
                  "exp": 4102444800, "iat": 1700000000}).encode())
der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", sys.argv[1]], input=h + b"." + p,
                     capture_output=True, check=True).stdout
# DER ECDSA-Sig-Value -> r || s, 32 bytes each
def ints(d):
    i, out = 2 + (d[1] & 0x80 and d[1] & 0x7f), []
    while i < len(d):
        n = d[i + 1]; out.append(int.from_bytes(d[i + 2:i + 2 + n], "big")); i += 2 + n
    return out
r, s = ints(der)
print((h + b"." + p + b"." + b(r.to_bytes(32, "big") + s.to_bytes(32, "big"))).decode())
PY
)

route_plugins() {
  case $1 in
    # rate_limit never refuses here (a bucket of a million): the cost of taking a token
    rl_local) echo "    plugins: [{name: rate_limit, config: {rate: 1000000}}]" ;;
    rl_shared) echo "    plugins: [{name: rate_limit, config: {rate: 1000000, policy: shared}}]" ;;
    rl_redis) echo "    plugins: [{name: rate_limit, config: {rate: 1000000, policy: redis}}]" ;;
    none | none_origin | none_bearer) echo "" ;;
    empty) echo "    plugins: [{name: bench_empty}]" ;;
    cors) echo "    plugins: [{name: cors, config: {origins: [\"https://a.example\", \"https://b.example\"]}}]" ;;
    jwt_hs256) echo "    plugins: [{name: jwt_auth, config: {key: \"$SECRET\", iss: \"https://issuer.example\", aud: api, claims_to_headers: {sub: X-User}}}]" ;;
    jwt_hs256_nocache) echo "    plugins: [{name: jwt_auth, config: {key: \"$SECRET\", iss: \"https://issuer.example\", aud: api, claims_to_headers: {sub: X-User}, cache: 0}}]" ;;
    jwt_miss_py) echo "    plugins: [{name: jwt_auth, config: {key: \"$SECRET\", iss: \"https://issuer.example\", aud: api, claims_to_headers: {sub: X-User}}}]" ;;
    jwt_nocache_py) echo "    plugins: [{name: jwt_auth, config: {key: \"$SECRET\", iss: \"https://issuer.example\", aud: api, claims_to_headers: {sub: X-User}, cache: 0}}]" ;;
    jwt_es256) echo "    plugins: [{name: jwt_auth, config: {alg: [ES256], key_file: \"$TMP/ec.pub\", iss: \"https://issuer.example\", aud: api, claims_to_headers: {sub: X-User}}}]" ;;
    jwt_es256_nocache) echo "    plugins: [{name: jwt_auth, config: {alg: [ES256], key_file: \"$TMP/ec.pub\", iss: \"https://issuer.example\", aud: api, claims_to_headers: {sub: X-User}, cache: 0}}]" ;;
    rr | dns) echo "" ;;
    p2c_ewma) echo "    balancer: {name: p2c_ewma}" ;;
    lua_first) echo "    balancer: {name: bench_first}" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}
row_targets() {
  case $1 in
    rr | p2c_ewma | lua_first) echo "[{address: \"127.0.0.1:$UP\"}, {address: \"127.0.0.1:$UP2\"}, {address: \"127.0.0.1:$UP3\"}]" ;;
    dns) echo "[{address: \"origin.bench.test:$UP\"}]" ;;
    *) echo "[{address: \"127.0.0.1:$UP\"}]" ;;
  esac
}
row_top() { # top-level config a row needs
  case $1 in
    rl_shared) echo "shared_dicts: {rate_limit: 1m}" ;;
    rl_redis) echo "redis: {address: \"127.0.0.1:$REDIS_PORT\", timeout: 1s}" ;;
    dns) echo "resolver: {servers: [\"127.0.0.1:$DNS_PORT\"], min_ttl: 300s, family: ipv4}" ;;
    *) echo "" ;;
  esac
}
row_headers() {
  case $1 in
    cors | none_origin) echo "-H origin:https://b.example" ;;
    jwt_hs256) echo "-H authorization:Bearer_$TOKEN" | tr _ ' ' ;;
    *) echo "" ;;
  esac
}
mkdir -p "$TMP/plugins"
printf 'local P = {}\nfunction P.access(ctx, conf) end\nreturn P\n' >"$TMP/plugins/bench_empty.lua"
printf 'local P = {}\nfunction P.balance(ctx, conf, t) return 1 end\nreturn P\n' >"$TMP/plugins/bench_first.lua"

run() { # run ROW N -> instructions of the whole process
  local row=$1 n=$2 port pid out
  port=$(free_port)
  cat >"$TMP/$row.yaml" <<YAML
listen: ["127.0.0.1:$port"]
workers: 1
access_log: off
pid_file: $TMP/$row-$n.pid
plugin_path: ["$TMP/plugins"]
$(row_top "$row")
upstreams:
  origin:
    targets: $(row_targets "$row")
    keepalive: 8
routes:
  - name: all
    match: {paths: ["/"]}
    upstream: origin
$(route_plugins "$row")
YAML
  out=$TMP/$row-$n.callgrind
  valgrind --tool=callgrind -q --callgrind-out-file="$out" "$MOONGATE" -c "$TMP/$row.yaml" \
    >"$TMP/$row.log" 2>&1 &
  pid=$!
  wait_port "$port" || { cat "$TMP/$row.log" >&2; exit 1; }
  local -a hdr
  read -r -a hdr <<<"$(row_headers "$row")"
  case $row in
    jwt_hs256* | none_bearer) hdr=(-H "authorization: Bearer $TOKEN") ;;
    jwt_es256*) hdr=(-H "authorization: Bearer $ES_TOKEN") ;;
  esac
  local h
  if [[ $row == *_py ]]; then
    h=$(/usr/bin/python3 "$HERE/jwt_client.py" "$port" "$n" "$SECRET" 2>&1)
    [[ $h == "ok $n" ]] || { echo "$row: $h" >&2; exit 1; }
  else
    h=$(h2load --h1 -n "$n" -c 1 -t 1 "${hdr[@]}" "http://127.0.0.1:$port/" 2>&1)
    grep -q "status codes: $n 2xx" <<<"$h" || { echo "$row: not all 2xx: $h" >&2; exit 1; }
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:/{print $2}' "$out"
  if [[ -n ${KEEP:-} ]]; then cp "$out" "$KEEP/"; fi
}

# The fewest of REPEAT runs: libuv's uv_async close spins (sched_yield) at
# exit for a random while, which once added ~280k instructions to one run
# (~280 per request at these N); the smallest count has the least of it.
REPEAT=${BENCH_REPEAT:-2}
least() { # least ROW N
  local best= v
  for _ in $(seq 1 "$REPEAT"); do
    v=$(run "$1" "$2")
    if [[ -z $best ]] || ((v < best)); then best=$v; fi
  done
  echo "$best"
}

printf '%-10s %14s %14s %12s\n' row "I($N1)" "I($N2)" per_request
for row in $ROWS; do
  a=$(least "$row" "$N1")
  b=$(least "$row" "$N2")
  printf '%-10s %14s %14s %12.0f\n' "$row" "$a" "$b" "$(( (b - a) / (N2 - N1) ))"
done
