# Sourced by scripts/run.sh and scripts/cluster.sh (run from the repository root): installs the
# dependencies, builds sw_daemon and page_client in Release (configuring $SWIPC_BUILD_DIR,
# default build-release, the first time) and sets DAEMON and PAGE to them.
BUILD="${SWIPC_BUILD_DIR:-build-release}"

bash scripts/install-deps.sh >/dev/null
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSWIPC_BUILD_TESTS=OFF -DSWIPC_BUILD_BENCH=OFF >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" --target sw_daemon page_client >/dev/null
DAEMON="$BUILD/sw_daemon/sw_daemon"
PAGE="$BUILD/page_client/page_client"
