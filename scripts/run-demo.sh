#!/usr/bin/env bash
# `make run`: two demo upstreams on 9001/9002 and the gateway on the given config,
# all in the foreground; Ctrl-C stops everything.
set -euo pipefail
bin=${1:-build/moongate}
conf=${2:-conf/moongate.yaml}
here=$(cd "$(dirname "$0")" && pwd)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for port in 9001 9002; do
  /usr/bin/python3 "$here/demo_upstream.py" "$port" & pids+=($!)
done
"$bin" -t -c "$conf"
echo "gateway on :8080 -> demo upstreams 9001, 9002; try: curl -i localhost:8080/hello" >&2
"$bin" -c "$conf" & pids+=($!)
wait "${pids[-1]}"
