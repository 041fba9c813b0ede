# Shared by the issue 22 scenarios (hedge.sh, overload.sh, outlier.sh,
# priority.sh); sourced, not run. Sets TMP (removed at exit) and PIDS (every
# process started, stopped at exit), and starts the peers' rows: nginx and
# HAProxy with their default limits (none towards the upstream, no queue),
# round robin over the given upstream ports.

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# scenario_nginx ROW PROXY_PORT UPSTREAM_PORT... (worker_connections raised
# only so that nginx does not fail for want of descriptors)
scenario_nginx() {
  local row=$1 proxy=$2 servers="" p
  shift 2
  for p in "$@"; do servers+="server 127.0.0.1:$p; "; done
  mkdir -p "$TMP/nginx/logs"
  cat > "$TMP/nginx/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $TMP/nginx/nginx.pid; error_log $TMP/nginx/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 16000; }
http { access_log off;
  upstream u { ${servers}keepalive 64; }
  server { listen 127.0.0.1:$proxy;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
  nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>"$TMP/$row.log" & PIDS+=($!)
}

# scenario_haproxy ROW PROXY_PORT UPSTREAM_PORT...
scenario_haproxy() {
  local row=$1 proxy=$2 i=0 p
  shift 2
  cat > "$TMP/haproxy.cfg" <<HAP
global
  nbthread 1
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$proxy
  default_backend b
backend b
  balance roundrobin
  http-reuse always
HAP
  for p in "$@"; do i=$((i + 1)); echo "  server s$i 127.0.0.1:$p" >> "$TMP/haproxy.cfg"; done
  haproxy -f "$TMP/haproxy.cfg" 2>"$TMP/$row.log" & PIDS+=($!)
}

# scenario_wait ROW URL: up to 5 s for URL to answer; else the row's log.
scenario_wait() {
  local _
  for _ in $(seq 50); do
    curl -s -o /dev/null "$2" && return 0
    sleep 0.1
  done
  echo "row $1 did not start: $(tail -3 "$TMP/$1.log")" >&2
  return 1
}
