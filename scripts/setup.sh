#!/usr/bin/env bash
# Installs what lockstep needs to build, test and benchmark on a fresh Debian 12 machine.
# Idempotent: packages already present are not touched, and apt is only consulted when
# something is missing. Safe to run as root (CI) or with sudo available.
set -euo pipefail

packages=(
  g++ make cmake ccache pkg-config
  libboost1.81-dev          # Asio + Beast (header-only, compiled once in src/common/asio_beast.cpp)
  nlohmann-json3-dev libspdlog-dev libfmt-dev
  libssl-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libhiredis-dev redis-server
  libjwt-dev                # JWT verification for access control (src/auth/)
  nodejs npm                # real npm clients for the compatibility tests
  util-linux                # taskset for pinned benchmarks
  openssl socat             # test certificates and a TLS terminator for the SDK's wss:// test
)

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
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
