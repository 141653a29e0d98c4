#!/usr/bin/env bash
# The README's "run" command.
#   scripts/run.sh               build (Release, if needed) and run a short demo of the scope "demo"
#   scripts/run.sh daemon [ARGS] run just sw_daemon in the foreground (default --scope demo)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/release-build.sh
source scripts/release-build.sh

if [ "${1:-}" = "daemon" ]; then
  shift
  case " $* " in
    *" --scope "*) exec "$DAEMON" "$@" ;;
    *) exec "$DAEMON" --scope demo "$@" ;;
  esac
fi

RT="$(mktemp -d "${TMPDIR:-/tmp}/swipc-demo.XXXXXX")"
DAEMON_PID=""
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  rm -rf "$RT"
}
trap cleanup EXIT

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
page() { "$PAGE" --scope demo --runtime-dir "$RT" "$@"; }

say "1. Start the service worker daemon for scope 'demo' (version 1.0.0)"
"$DAEMON" --scope demo --runtime-dir "$RT" --sw-version 1.0.0 --log-level info 2>"$RT/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 1 100); do
  if page --timeout-ms 100 message-sw '{"type":"GET_VERSION"}' >/dev/null 2>&1; then break; fi
done
echo "   sw_daemon pid $DAEMON_PID, socket $RT/demo/daemon.sock"

say "2. messageSW: a page asks its service worker for the version (Workbox messageSW)"
echo "   \$ page_client message-sw '{\"type\":\"GET_VERSION\"}'"
echo "   reply: $(page message-sw '{"type":"GET_VERSION"}')"

say "3. controller.postMessage: the SW answers event.source (a 'message' event at the page)"
echo "   page B (script mode, JSON lines in and out):"
page script <<'OPS' | sed 's/^/   < /'
{"op":"startMessages"}
{"op":"post","id":"p1","data":{"type":"ECHO","text":"hello from page B"}}
{"op":"messageSW","id":"v","data":{"type":"GET_VERSION"}}
{"op":"messageSW","id":"barrier","data":{"type":"ECHO","note":"everything before me has arrived"}}
{"op":"exit","code":0}
OPS

say "4. A page that is killed (kill -9) is noticed and reclaimed at once"
"$PAGE" --scope demo --runtime-dir "$RT" listen >/dev/null 2>&1 &
VICTIM=$!
for _ in $(seq 1 100); do grep -q "pid=$VICTIM" "$RT/daemon.log" && break; sleep 0.02; done
kill -9 "$VICTIM"; wait "$VICTIM" 2>/dev/null || true
for _ in $(seq 1 100); do grep -q "detached client=.* pid=$VICTIM" "$RT/daemon.log" && break; sleep 0.02; done
grep "pid=$VICTIM" "$RT/daemon.log" | sed -E "s/^[^ ]+ //" | sed 's/^/   daemon log: /'

say "5. The daemon restarts: pages re-attach by themselves and keep their client id"
"$PAGE" --scope demo --runtime-dir "$RT" listen >"$RT/listen.out" 2>/dev/null &
LISTENER=$!
for _ in $(seq 1 100); do grep -q attached "$RT/listen.out" && break; sleep 0.02; done
kill -9 "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true
"$DAEMON" --scope demo --runtime-dir "$RT" --sw-version 1.0.1 --log-level info 2>>"$RT/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 1 150); do [ "$(grep -c controllerchange "$RT/listen.out")" -ge 2 ] && break; sleep 0.02; done
sed 's/^/   listener: /' "$RT/listen.out"
grep "resumed=true" "$RT/daemon.log" | sed -E "s/^[^ ]+ //" | sed 's/^/   daemon log: /' || true
echo "   new version: $(page message-sw '{"type":"GET_VERSION"}')"
kill -TERM "$LISTENER" 2>/dev/null || true
wait "$LISTENER" 2>/dev/null || true

# Pages driven over JSON lines through fifos, so they stay attached between steps.
start_page() {  # start_page NAME URL
  mkfifo "$RT/$1.in"
  "$PAGE" --scope demo --runtime-dir "$RT" --url "$2" script <"$RT/$1.in" >"$RT/$1.out" 2>/dev/null &
  eval "PID_$1=$!"
  eval "exec {FD_$1}>\"$RT/$1.in\""
}
send() { local fd="FD_$1"; echo "$2" >&"${!fd}"; }
wait_for() {  # wait_for NAME PATTERN: until the page printed a matching line (bounded)
  for _ in $(seq 1 250); do grep -q "$2" "$RT/$1.out" && return 0; sleep 0.02; done
  echo "   (timed out waiting for $2 from $1)"
}
urls() { "$PAGE" --scope demo --runtime-dir "$RT" --type worker message-sw '{"type":"MATCH_ALL"}' |
  grep -o '"url":"[^"]*"' | sed 's/"url"://' | tr '\n' ' '; }

say "5b. clients.matchAll(): windows ordered by most recent focus"
start_page A app://demo/window-a
start_page B app://demo/window-b
wait_for A attached; wait_for B attached
echo "   two windows attached, neither focused yet: $(urls)"
send A '{"op":"setFocus","id":"fa","focused":true}'; wait_for A '"id":"fa"'
echo "   window A takes focus:                 $(urls)"
send B '{"op":"setFocus","id":"fb","focused":true}'; wait_for B '"id":"fb"'
echo "   window B takes focus:                 $(urls)"
FIRST=$("$PAGE" --scope demo --runtime-dir "$RT" --type worker message-sw '{"type":"MATCH_ALL"}' |
  grep -o '"id":"[0-9a-f]*"' | head -1 | sed 's/"id":"\([0-9a-f]*\)"/\1/')
send A '{"op":"startMessages"}'; send B '{"op":"startMessages"}'
"$PAGE" --scope demo --runtime-dir "$RT" --type worker message-sw \
  "{\"type\":\"POST_TO\",\"id\":\"$FIRST\",\"data\":\"hello, most recently focused window\"}" >/dev/null
wait_for B '"event":"message"'
echo "   the SW posts to matchAll()[0]; window B prints: $(grep '"event":"message"' "$RT/B.out")"

say "5c. MessageChannel: the page hands the service worker a port (PORT_INITIALIZATION)"
echo "   window A: channel = new MessageChannel(); controller.postMessage(PORT_INITIALIZATION, [port2])"
send A '{"op":"channel.create","id":"cc","port1":"port1","port2":"port2"}'
send A '{"op":"port.start","port":"port1"}'
send A '{"op":"post","id":"init","data":{"type":"PORT_INITIALIZATION"},"transfer":["port2"]}'
wait_for A 'PORT_READY'
echo "   then INCREASE_COUNT twice through the controller; the SW answers on the port it kept:"
send A '{"op":"post","data":{"type":"INCREASE_COUNT"}}'
send A '{"op":"post","data":{"type":"INCREASE_COUNT"}}'
wait_for A '"count":2'
grep '"event":"port.message"' "$RT/A.out" | sed 's/^/     /' || true
send A '{"op":"post","id":"again","data":{"type":"PORT_INITIALIZATION"},"transfer":["port2"]}'
wait_for A '"id":"again"'
echo "   port2 now lives in the service worker; transferring it again is refused:"
grep '"id":"again"' "$RT/A.out" | sed 's/^/     /' || true

say "5d. BroadcastChannel 'count-channel': two pages share the same counter (it goes on from 2)"
send A '{"op":"bc.open","id":"oa","bc":"c","name":"count-channel"}'
send B '{"op":"bc.open","id":"ob","bc":"c","name":"count-channel"}'
wait_for A '"id":"oa"'; wait_for B '"id":"ob"'
send A '{"op":"bc.post","bc":"c","data":{"type":"INCREASE_COUNT"}}'
wait_for B '"count":3'
send B '{"op":"bc.post","bc":"c","data":{"type":"INCREASE_COUNT"}}'
wait_for A '"count":4'; wait_for B '"count":4'
echo "   window A sees:"; grep bc.message "$RT/A.out" | sed 's/^/     /'
echo "   window B sees:"; grep bc.message "$RT/B.out" | sed 's/^/     /'

say "5e. RELAY_PORT: the service worker passes a port from window A to window B; they talk directly"
ID_B=$(grep -o '"clientId":"[0-9a-f]*"' "$RT/B.out" | head -1 | sed 's/"clientId":"\([0-9a-f]*\)"/\1/')
send A '{"op":"channel.create","port1":"mine","port2":"theirs"}'
send A '{"op":"port.start","port":"mine"}'
send A "{\"op\":\"post\",\"data\":{\"type\":\"RELAY_PORT\",\"to\":\"$ID_B\"},\"transfer\":[\"theirs\"]}"
wait_for A '"relayed"'; wait_for B '"type":"PORT"'
echo "   window A hears back from the SW: $(grep '"relayed"' "$RT/A.out")"
echo "   window B receives the port:      $(grep '"type":"PORT"' "$RT/B.out")"
send B '{"op":"port.start","port":"in1"}'
send B '{"op":"port.post","port":"in1","data":{"text":"hello A, this is B"}}'
wait_for A 'this is B'
send A '{"op":"port.post","port":"mine","data":{"text":"hello B, A here"}}'
wait_for B 'A here'
send A '{"op":"port.close","port":"mine"}'
wait_for B '"event":"port.close"'
echo "   window A: $(grep 'this is B' "$RT/A.out")"
echo "   window B: $(grep 'A here' "$RT/B.out")"
echo "   window A closes its end; window B: $(grep '"event":"port.close"' "$RT/B.out")"
send A '{"op":"exit"}'; send B '{"op":"exit"}'
wait "$PID_A" "$PID_B" 2>/dev/null || true

say "6. Stop the daemon gracefully (SIGTERM): nothing is left behind"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=""
tail -n 1 "$RT/daemon.log" | sed 's/^/   daemon log: /'
echo "   files left in the scope dir: $(ls "$RT/demo" | grep -v daemon.lock | wc -l) (the lock file stays; no /dev/shm objects are ever created)"
