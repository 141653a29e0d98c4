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
  nginx-light  # tests/support/http_fixture.h starts its own nginx on a free 127.0.0.1 port
  systemd  # systemd-socket-activate: the socket-activation test (not made init by installing it)
  help2man  # man pages from --help (cmake/SwipcInstall.cmake)
  libnats-dev  # federation over NATS (sw_daemon --nats; libipc/src/federation, DESIGN §16)
  nats-server  # tests/support/nats_cluster.h starts its own 3-server cluster on 127.0.0.1
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

# The nginx package would start a system nginx on port 80 as it installs, and at every boot; the
# nats-server package a system NATS server on port 4222. The tests never use them (each starts its
# own), so keep them from starting: a policy-rc.d that denies service starts while apt runs
# (unless the machine already has one), and the units disabled afterwards. Only those this script
# installs: a system nginx or nats-server already there is somebody's and stays as it is.
services=()
for pkg in "${missing[@]}"; do
  case "$pkg" in
    nginx-light | nginx | nginx-common) services+=(nginx) ;;
    nats-server) services+=(nats-server) ;;
  esac
done
policy_rc_d=/usr/sbin/policy-rc.d
own_policy=0
if [ "${#services[@]}" -gt 0 ] && [ ! -e "$policy_rc_d" ]; then
  printf '#!/bin/sh\n# install-deps.sh: no service starts while apt runs\nexit 101\n' |
    "${SUDO[@]}" tee "$policy_rc_d" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy_rc_d"
  own_policy=1
  trap '"${SUDO[@]}" rm -f "$policy_rc_d"' EXIT
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"

for service in ${services[@]+"${services[@]}"}; do
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]}" systemctl disable --now "$service.service" >/dev/null 2>&1 || true
  elif [ "$own_policy" -eq 0 ] && command -v service >/dev/null 2>&1; then
    "${SUDO[@]}" service "$service" stop >/dev/null 2>&1 || true  # started despite an existing policy
  fi
done
