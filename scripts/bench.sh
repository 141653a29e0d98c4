#!/usr/bin/env bash
# Builds swipc in Release and runs every benchmark program in build-release/bench/, printing one
# JSON line per result (DESIGN §10). Extra arguments are passed to every benchmark.
#   JOBS=N  build parallelism (default: nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
BUILD=build-release

echo "=== install dependencies ===" >&2
bash scripts/install-deps.sh >&2

echo "=== configure + build (Release, $BUILD/) ===" >&2
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSWIPC_BUILD_TESTS=OFF -DSWIPC_BUILD_BENCH=ON \
  -DSWIPC_SANITIZE= >&2
cmake --build "$BUILD" -j "$JOBS" >&2

# Every benchmark accepts --daemon PATH (those that do not start a daemon ignore it).
DAEMON="$ROOT/$BUILD/sw_daemon/sw_daemon"
status=0
ran=0
for prog in "$BUILD"/bench/*; do
  if [ ! -f "$prog" ] || [ ! -x "$prog" ]; then
    continue
  fi
  name="$(basename "$prog")"
  echo "=== $name ===" >&2
  if ! "$prog" --daemon "$DAEMON" "$@"; then
    echo "bench.sh: $name failed" >&2
    status=1
  fi
  ran=$((ran + 1))
done

if [ "$ran" -eq 0 ]; then
  echo "bench.sh: no benchmark programs in $BUILD/bench/" >&2
  exit 1
fi
exit "$status"
