#!/usr/bin/env bash
# The README's "Across hosts" demo (DESIGN §16): a 3-server NATS cluster and three daemons of one
# scope on this machine as three hosts (each its own runtime and state dir, --nats at a different
# server, --node n1/n2/n3), a short BroadcastChannel demo across them, then everything stopped.
#   scripts/cluster.sh     build (Release, if needed) and run the demo
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/release-build.sh
source scripts/release-build.sh
NATS_SERVER="$(command -v nats-server || echo /usr/sbin/nats-server)"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/swipc-cluster.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
# N free TCP ports on 127.0.0.1
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
# wait_for CMD...: polls CMD for up to 10 s
wait_for() {
  for _ in $(seq 1 200); do "$@" && return 0; sleep 0.05; done
  echo "cluster.sh: timed out waiting for: $*" >&2
  return 1
}

say "1. A 3-server NATS cluster with JetStream on 127.0.0.1"
read -r -a P <<<"$(free_ports 9)"
for i in 0 1 2; do
  routes=""
  for j in 0 1 2; do [ "$j" != "$i" ] && routes+="${routes:+, }nats-route://127.0.0.1:${P[j*3+1]}"; done
  mkdir -p "$DIR/s$((i + 1))"
  cat >"$DIR/s$((i + 1)).conf" <<CONF
server_name: s$((i + 1))
listen: 127.0.0.1:${P[i*3]}
http: 127.0.0.1:${P[i*3+2]}
jetstream { store_dir: "$DIR/s$((i + 1))", max_memory_store: 64MB, max_file_store: 256MB }
cluster { name: swipc-demo, listen: 127.0.0.1:${P[i*3+1]}, routes: [ $routes ] }
CONF
  "$NATS_SERVER" -c "$DIR/s$((i + 1)).conf" 2>"$DIR/s$((i + 1)).log" &
  PIDS+=($!)
done
routed() { python3 -c "import json,sys,urllib.request as u; sys.exit(0 if json.load(u.urlopen('http://127.0.0.1:$1/routez'))['num_routes']>=2 else 1)" 2>/dev/null; }
for i in 0 1 2; do wait_for routed "${P[i*3+2]}"; done
echo "   servers: nats://127.0.0.1:${P[0]} nats://127.0.0.1:${P[3]} nats://127.0.0.1:${P[6]} (routed to each other)"

say "2. Three daemons of scope 'demo' as three hosts (n1, n2, n3), each on a different server"
for i in 0 1 2; do
  n=$((i + 1))
  "$DAEMON" --scope demo --runtime-dir "$DIR/host$n/run" --state-dir "$DIR/host$n/state" \
    --nats "nats://127.0.0.1:${P[i*3]}" --node "n$n" --log-level debug 2>"$DIR/n$n.log" &
  PIDS+=($!)
done
joined() { grep -q "node $2 joined" "$DIR/$1.log"; }
for a in n1 n2 n3; do for b in n1 n2 n3; do [ "$a" != "$b" ] && wait_for joined "$a" "$b"; done; done
grep -h " info .*federation:" "$DIR"/n?.log | sed -E 's/^[^ ]+ //' | sed 's/^/   /'

say "3. Pages on n2 and n3 open BroadcastChannel 'news'; a page on n1 posts three messages"
for n in 2 3; do
  (echo '{"op":"bc.open","id":1,"bc":"b","name":"news"}'; sleep 8) |
    "$PAGE" --scope demo --runtime-dir "$DIR/host$n/run" script >"$DIR/page$n.out" 2>/dev/null &
  PIDS+=($!)
done
for n in 2 3; do wait_for grep -q '"id":1' "$DIR/page$n.out"; done
# A remote object is a destination once its node has announced it (n1 logs that at debug level).
for n in 2 3; do wait_for grep -q "node n$n wants 'news'" "$DIR/n1.log"; done
"$PAGE" --scope demo --runtime-dir "$DIR/host1/run" script <<'OPS' >/dev/null
{"op":"bc.open","id":1,"bc":"b","name":"news"}
{"op":"bc.post","bc":"b","data":{"from":"n1","n":1}}
{"op":"bc.post","bc":"b","data":{"from":"n1","n":2}}
{"op":"bc.post","id":2,"bc":"b","data":{"from":"n1","n":3}}
{"op":"exit","code":0}
OPS
for n in 2 3; do wait_for test "$(grep -c bc.message "$DIR/page$n.out")" -ge 3; done
for n in 2 3; do grep bc.message "$DIR/page$n.out" | sed "s/^/   page on n$n < /"; done

say "4. A page on n1 asks its service worker for every client of the scope (MATCH_ALL, includeRemote)"
"$PAGE" --scope demo --runtime-dir "$DIR/host1/run" message-sw \
  '{"type":"MATCH_ALL","options":{"includeRemote":true}}' |
  python3 -c 'import json,sys; [print("   %s  %s  %s" % (c["node"], c["id"], c["url"])) for c in json.load(sys.stdin)["clients"]]'

say "5. A page on n1 registers Background Sync tag 'upload' (kept in JetStream): one node runs it, once"
# (a forming cluster may take some seconds to grant the queue its 3 replicas)
js_ready() { grep -q "JetStream ready" "$DIR/$1.log"; }
for n in n1 n2 n3; do
  for _ in $(seq 1 600); do js_ready "$n" && break; sleep 0.05; done
  wait_for js_ready "$n"
done
"$PAGE" --scope demo --runtime-dir "$DIR/host1/run" sync upload --data '{"file":"a.txt"}'
fired() { grep -l "firing 'upload' here" "$DIR"/n?.log >/dev/null 2>&1; }
wait_for fired
grep -h "firing 'upload' here" "$DIR"/n?.log | sed -E 's/^[^ ]+ //' | sed 's/^/   /'
grep -l "firing 'upload' here" "$DIR"/n?.log | sed -E 's|.*/(n[0-9]).log|   ran on \1|'

say "6. Counters of n2 (SIGUSR1): posts taken from other nodes, posts missed"
kill -USR1 "${PIDS[4]}"
wait_for grep -q "counters clients" "$DIR/n2.log"
grep -o '"federation[A-Za-z]*":[0-9]*' "$DIR/n2.log" | tr '\n' ' ' | sed 's/^/   /'
echo

say "Done: stopping the daemons and the servers"
