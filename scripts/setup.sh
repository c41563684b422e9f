#!/usr/bin/env bash
# Installs what lockstep needs on a fresh Debian 12 machine, in two sets:
#   scripts/setup.sh runtime   what building and running the reflector needs (make run)
#   scripts/setup.sh test      that plus the test and benchmark toolchain (make test, make bench):
#                              GoogleTest, Google Benchmark, redis-server, Node/npm for the real
#                              clients, Chromium for the browser tests, promtool, ...
# Idempotent: packages already present are not touched, and apt is only consulted when
# something is missing. Safe to run as root (CI) or with sudo available.
set -euo pipefail
set_name=${1:-test}

runtime=(
  g++ make cmake ccache pkg-config
  libboost1.81-dev          # Asio + Beast (header-only, compiled once in src/common/asio_beast.cpp)
  nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  libssl-dev zlib1g-dev
  libhiredis-dev            # cluster mode's Redis client (the server itself is only for tests)
)
test=(
  libgtest-dev libgmock-dev libbenchmark-dev
  redis-server
  libjwt-dev                # JWT verification for access control (src/auth/)
  nodejs npm                # real npm clients for the compatibility and browser tests
  chromium                  # headless browser for the demo and admin page tests
  prometheus                # promtool: metrics and alert-rule checks
  python3 python3-yaml      # deploy/ and Dockerfile checks
  util-linux                # taskset for pinned benchmarks
  openssl socat             # test certificates and a TLS terminator for the SDK's wss:// test
  haproxy                   # the cluster failover test: a real balancer hashing the URL path
  nginx-light               # deploy/nginx/lockstep-cluster.conf run for real (ctest balancers)
)

case "$set_name" in
  runtime) packages=("${runtime[@]}") ;;
  test) packages=("${runtime[@]}" "${test[@]}") ;;
  *) echo "usage: $0 [runtime|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  # nodejs/npm may come from outside apt (e.g. a preinstalled toolchain): accept a working binary.
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup ($set_name): installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts nginx on port 80 when it is installed; the tests run their own.
  if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
    $SUDO service nginx stop >/dev/null 2>&1 || true
  fi
fi
