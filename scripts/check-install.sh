#!/usr/bin/env bash
# Checks the installable package as a new user meets it (DESIGN §17, issue 18):
#   1. cmake --install BUILD into a temporary prefix; the expected files are there;
#   2. examples/hello_worker and examples/hello_page built out of tree with find_package(swipc),
#      and hello_page with pkg-config (examples/hello_page/Makefile);
#   3. the installed sw_daemon, then hello_worker, serve a private scope in a private runtime
#      dir; hello_page asks each for its version; then as a new user would: page_client
#      --spawn-daemon starts the daemon, swctl status/clients/watch show the page, and
#      sw_daemon runs under systemd-socket-activate;
#   4. examples/user_test (a test written with the testing kit swipc::testing) built with
#      find_package(swipc COMPONENTS testing) and run: it starts the installed sw_daemon and
#      page_client itself;
#   5. cpack -G DEB; the .debs unpacked with dpkg-deb -x into a temporary root; hello_page built
#      against that root (find_package and pkg-config) and run against its sw_daemon; user_test
#      built against it and run.
# Exits non-zero on the first failure.
#   scripts/check-install.sh [BUILD_DIR]   (default: build; built already, with SWIPC_INSTALL=ON)
#   JOBS=N   build parallelism for the examples (default: nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/swipc-install.XXXXXX")"
DAEMON_PID=
LISTEN_PID=
cleanup() {
  if [ -n "$LISTEN_PID" ]; then kill -KILL "$LISTEN_PID" 2>/dev/null || true; fi
  if [ -n "$DAEMON_PID" ]; then kill -KILL "$DAEMON_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf -- '--- check-install: %s\n' "$*"; }
fail() { printf 'check-install: FAILED: %s\n' "$*" >&2; exit 1; }

# The daemons run for a private scope in a private runtime and state dir.
RUNTIME="$WORK/run"
mkdir -m 0700 "$RUNTIME"
export XDG_STATE_HOME="$WORK/state"
SCOPE=install-check

# start_daemon CMD...: runs it in the background, waits for the scope's socket (10 s).
start_daemon() {
  # A socket file left by the one before (an inherited socket is never unlinked by the daemon:
  # it belongs to whoever bound it) would make the wait below return too early.
  rm -f "$RUNTIME/$SCOPE/daemon.sock"
  "$@" >"$WORK/daemon.log" 2>&1 &
  DAEMON_PID=$!
  local i
  for i in $(seq 100); do
    [ -S "$RUNTIME/$SCOPE/daemon.sock" ] && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log" >&2; fail "$1 exited at start"; }
    sleep 0.1
  done
  cat "$WORK/daemon.log" >&2
  fail "$1: no socket after 10 s"
}
# stop_daemon: SIGTERM to the pid started last; it must exit 0 within 10 s.
stop_daemon() {
  kill -TERM "$DAEMON_PID"
  local i
  for i in $(seq 100); do
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$DAEMON_PID" 2>/dev/null && fail "daemon $DAEMON_PID still running 10 s after SIGTERM"
  local rc=0
  wait "$DAEMON_PID" || rc=$?
  DAEMON_PID=
  [ "$rc" -eq 0 ] || { cat "$WORK/daemon.log" >&2; fail "daemon exited $rc after SIGTERM"; }
}
# expect_version WANT PAGE...: runs the page, which must print WANT as the worker's version.
expect_version() {
  local want="$1" out
  shift
  out="$("$@" "$SCOPE" "$RUNTIME")" || fail "$1 exited $?"
  [ "$out" = "service worker version: $want" ] || fail "$1 printed '$out', want version '$want'"
  echo "$1: $out"
}

# ---- 1. cmake --install --------------------------------------------------------------------
step "cmake --install $BUILD"
PREFIX="$WORK/prefix"
cmake --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" || { cat "$WORK/install.log" >&2; fail "cmake --install"; }
LIBDIR="$(dirname "$(find "$PREFIX" -name 'libswipc.so' -print -quit)")"
[ -n "$LIBDIR" ] && [ "$LIBDIR" != . ] || fail "no libswipc.so under $PREFIX"
for f in include/swipc/client.h include/swipc/service_worker.h include/swipc/testing.h \
  bin/sw_daemon bin/page_client lib/systemd/user/swipc@.socket lib/systemd/user/swipc@.service; do
  [ -e "$PREFIX/$f" ] || fail "not installed: $f"
done
for f in cmake/swipc/swipcConfig.cmake cmake/swipc/swipcConfigVersion.cmake pkgconfig/swipc.pc \
  libswipc_testing.a cmake/swipc/swipcTestingTargets.cmake; do
  [ -e "$LIBDIR/$f" ] || fail "not installed: ${LIBDIR#"$PREFIX/"}/$f"
done
if command -v help2man >/dev/null 2>&1; then
  for f in sw_daemon page_client swctl; do
    [ ! -e "$PREFIX/bin/$f" ] || [ -e "$PREFIX/share/man/man1/$f.1" ] || fail "no man page $f.1"
  done
fi
# Nothing the tests or benchmarks built was installed with it.
if find "$PREFIX" -name '*_test' -o -name '*_bench' | grep -q .; then fail "test or bench binaries installed"; fi

# ---- 2. the examples, out of tree ------------------------------------------------------------
for example in hello_worker hello_page; do
  step "find_package build of examples/$example"
  cmake -S "$ROOT/examples/$example" -B "$WORK/$example" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$PREFIX" >"$WORK/$example.log" || { cat "$WORK/$example.log" >&2; fail "configure $example"; }
  cmake --build "$WORK/$example" -j "$JOBS" >>"$WORK/$example.log" || { cat "$WORK/$example.log" >&2; fail "build $example"; }
done
step "pkg-config build of examples/hello_page"
mkdir "$WORK/hello_page_pc"
PKG_CONFIG_PATH="$LIBDIR/pkgconfig" make -s -f "$ROOT/examples/hello_page/Makefile" -C "$WORK/hello_page_pc" RPATH=1 ||
  fail "pkg-config build of hello_page"

# ---- 3. run them ---------------------------------------------------------------------------
step "installed sw_daemon + hello_page"
start_daemon "$PREFIX/bin/sw_daemon" --scope "$SCOPE" --runtime-dir "$RUNTIME" --sw-version install-check-1
expect_version install-check-1 "$WORK/hello_page/hello_page"
expect_version install-check-1 "$WORK/hello_page_pc/hello_page"
stop_daemon

step "hello_worker + hello_page"
start_daemon "$WORK/hello_worker/hello_worker" "$SCOPE" "$RUNTIME"
expect_version "hello-worker 1.0" "$WORK/hello_page/hello_page"
stop_daemon

# ---- 3b. the new-user run: a page starts the daemon, swctl looks at it, socket activation -------
step "installed page_client --spawn-daemon, swctl clients / status / watch"
[ -x "$PREFIX/bin/swctl" ] || fail "not installed: bin/swctl"
SWCTL=("$PREFIX/bin/swctl" --scope "$SCOPE" --runtime-dir "$RUNTIME")
"$PREFIX/bin/page_client" --scope "$SCOPE" --runtime-dir "$RUNTIME" --spawn-daemon listen >"$WORK/listen.out" 2>&1 &
LISTEN_PID=$!
CLIENT_ID=
for i in $(seq 100); do
  CLIENT_ID="$(sed -n 's/.*"event":"attached","clientId":"\([0-9a-f]*\)".*/\1/p' "$WORK/listen.out" | head -1)"
  [ -n "$CLIENT_ID" ] && break
  kill -0 "$LISTEN_PID" 2>/dev/null || { cat "$WORK/listen.out" >&2; fail "page_client --spawn-daemon exited"; }
  sleep 0.1
done
[ -n "$CLIENT_ID" ] || { cat "$WORK/listen.out" >&2; fail "page_client --spawn-daemon never attached"; }
DAEMON_PID="$("${SWCTL[@]}" --json status | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')"
[ -n "$DAEMON_PID" ] || fail "swctl status --json: no daemon pid"
echo "spawned sw_daemon pid $DAEMON_PID, page $CLIENT_ID"
"${SWCTL[@]}" --json clients | grep -q "\"$CLIENT_ID\"" || fail "swctl clients --json does not list $CLIENT_ID"
"${SWCTL[@]}" clients | grep -q "${CLIENT_ID:0:8}" || fail "swctl clients (table) does not show $CLIENT_ID"
# watch (not a terminal: plain snapshots) until SIGINT; at least two snapshots must have come.
rc=0
timeout -s INT 2 "${SWCTL[@]}" --interval-ms 200 watch >"$WORK/watch.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -eq 130 ] || { cat "$WORK/watch.out" >&2; fail "swctl watch exited $rc"; }
[ "$(grep -c '^snapshot [0-9]* clients=1 ' "$WORK/watch.out")" -ge 2 ] ||
  { cat "$WORK/watch.out" >&2; fail "swctl watch: fewer than two snapshots showing the page"; }
kill -KILL "$LISTEN_PID" 2>/dev/null || true
wait "$LISTEN_PID" 2>/dev/null || true
LISTEN_PID=
# The spawned daemon is nobody's child here (its own session): SIGTERM, then it must be gone.
kill -TERM "$DAEMON_PID"
for i in $(seq 100); do
  kill -0 "$DAEMON_PID" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "spawned daemon $DAEMON_PID still running 10 s after SIGTERM"
DAEMON_PID=

if command -v systemd-socket-activate >/dev/null 2>&1; then
  step "installed sw_daemon under systemd-socket-activate + hello_page"
  mkdir -p -m 0700 "$RUNTIME/$SCOPE"
  start_daemon systemd-socket-activate --seqpacket -l "$RUNTIME/$SCOPE/daemon.sock" \
    "$PREFIX/bin/sw_daemon" --scope "$SCOPE" --runtime-dir "$RUNTIME" --sw-version activated-1
  expect_version activated-1 "$WORK/hello_page/hello_page"
  stop_daemon
fi

# ---- 4. a user's test written with swipc::testing -------------------------------------------
# run_user_test PREFIX NAME: builds examples/user_test against PREFIX into $WORK/NAME and runs it
# with ctest. The kit must start the sw_daemon and page_client of PREFIX: nothing else is given.
run_user_test() {
  local prefix="$1" dir="$WORK/$2"
  cmake -S "$ROOT/examples/user_test" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    >"$dir.log" && cmake --build "$dir" -j "$JOBS" >>"$dir.log" ||
    { cat "$dir.log" >&2; fail "build of examples/user_test against $prefix"; }
  (unset SWIPC_SW_DAEMON SWIPC_PAGE_CLIENT; ctest --test-dir "$dir" --output-on-failure -j "$JOBS") >>"$dir.log" 2>&1 ||
    { cat "$dir.log" >&2; fail "examples/user_test against $prefix"; }
  grep -E 'tests passed' "$dir.log" | tail -1
}
step "examples/user_test (swipc::testing) against the installed tree"
run_user_test "$PREFIX" user_test

# ---- 5. cpack -G DEB, unpacked into a temporary root ---------------------------------------
step "cpack -G DEB"
(cd "$WORK" && cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$WORK/deb" >"$WORK/cpack.log") ||
  { cat "$WORK/cpack.log" >&2; fail "cpack"; }
DEBS=("$WORK"/deb/swipc*.deb)
[ "${#DEBS[@]}" -eq 2 ] || fail "want swipc and swipc-dev .debs, got: ${DEBS[*]}"
DEBROOT="$WORK/debroot"
for deb in "${DEBS[@]}"; do
  echo "$(basename "$deb"): Depends: $(dpkg-deb -f "$deb" Depends)"
  [ -n "$(dpkg-deb -f "$deb" Depends)" ] || fail "$(basename "$deb") has no Depends"
  dpkg-deb -x "$deb" "$DEBROOT"
done
DEB_LIBDIR="$(dirname "$(find "$DEBROOT/usr" -name 'libswipc.so' -print -quit)")"
[ -n "$DEB_LIBDIR" ] && [ "$DEB_LIBDIR" != . ] || fail "no libswipc.so in the .debs"

step "hello_page against the unpacked .debs"
cmake -S "$ROOT/examples/hello_page" -B "$WORK/deb_hello_page" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$DEBROOT/usr" >"$WORK/deb_hello_page.log" &&
  cmake --build "$WORK/deb_hello_page" -j "$JOBS" >>"$WORK/deb_hello_page.log" ||
  { cat "$WORK/deb_hello_page.log" >&2; fail "find_package build against the .debs"; }
mkdir "$WORK/deb_hello_page_pc"
PKG_CONFIG_PATH="$DEB_LIBDIR/pkgconfig" make -s -f "$ROOT/examples/hello_page/Makefile" -C "$WORK/deb_hello_page_pc" RPATH=1 ||
  fail "pkg-config build against the .debs"
start_daemon "$DEBROOT/usr/bin/sw_daemon" --scope "$SCOPE" --runtime-dir "$RUNTIME" --sw-version deb-1
expect_version deb-1 "$WORK/deb_hello_page/hello_page"
expect_version deb-1 "$WORK/deb_hello_page_pc/hello_page"
stop_daemon
step "examples/user_test (swipc::testing) against the unpacked .debs"
run_user_test "$DEBROOT/usr" deb_user_test

step "ok"
