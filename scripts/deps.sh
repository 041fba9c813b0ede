#!/usr/bin/env bash
# Installs the Debian packages of DESIGN.md section 1 that are missing.
# Idempotent and quiet when everything is already there.
set -euo pipefail
PACKAGES=(
  build-essential cmake pkg-config
  libuv1-dev node-llhttp libluajit2-5.1-dev libhiredis-dev libyaml-dev libssl-dev
  libnghttp2-dev                # the HTTP/2 server codec (gateway/conn/h2server.c)
  nghttp2-client python3-h2     # tests/integration/test_http2.py: nghttp and raw HTTP/2 frames
  libcmocka-dev uthash-dev libxxhash-dev
  libc-ares-dev                 # gateway/discovery: async DNS for upstream targets
  dnsmasq-base                  # tests/integration/test_discovery.py: a real DNS server
  python3 python3-pytest redis-server redis-sentinel curl valgrind
  clang libclang-rt-14-dev
  chromium                      # tests/integration/test_dashboard.py: the dashboard in a real browser
  libsystemd-dev systemd wrk    # sd_notify; test_operation.py: systemd-analyze verify, wrk under drain and reload
  python3-yaml                  # test_operation.py: the Kubernetes manifests parse
  prometheus                    # promtool: tests/integration/test_metrics_families.py checks a scrape
)
if [[ "${1:-}" == "--bench" ]]; then
  PACKAGES+=(wrk nginx-light haproxy valgrind strace nghttp2-client libnginx-mod-http-lua lua-resty-core sslscan)
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
