#!/usr/bin/env bash
# Installs every Debian 12 package swipc needs to build, test and benchmark.
# Idempotent: does nothing (not even apt-get update) when all packages are already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  capnproto libcapnp-dev
  libboost-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  libsqlite3-dev libcurl4-openssl-dev libbenchmark-dev libssl-dev
  procps
  systemd  # systemd-socket-activate: the socket-activation test (not made init by installing it)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root, no sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
