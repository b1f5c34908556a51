#!/usr/bin/env bash
# Holds N idle SSE streams (default 100,000) open on one harness server with the default 3 s
# heartbeats, and reports the server's RSS per stream and the share of one core it spends while
# the streams are idle (which is the heartbeat's cost: one shared timer queueing a comment on
# every stream every 3 s).
#
#   benches/idle-100k.sh [HARNESS_BINARY] [N]     # default: target/release/harness-hyper 100000
#
# The server is pinned to CPU 0, sseload to CPU 1. Needs root to raise the descriptor limit past
# its hard limit, and taskset (Debian: util-linux).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$root/../shared}
tools_target=${TOOLS_TARGET_DIR:-$root/target/bench-tools}
server=${1:-$root/target/release/harness-hyper}
n=${2:-100000}
settle_ms=30000

if [ "$(id -u)" = 0 ]; then ulimit -Hn 1048576 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)"
# Each side needs a descriptor per stream. Where the hard limit cannot be raised (a container
# without CAP_SYS_RESOURCE), hold as many streams as it allows and say so.
max=$(( $(ulimit -Hn) - 1000 ))
if [ "$n" -gt "$max" ]; then
  echo "descriptor hard limit $(ulimit -Hn): holding $max streams instead of $n" >&2
  n=$max
fi
(cd "$shared/tools/sseload" && CARGO_TARGET_DIR=$tools_target cargo build --release -q)
[ -x "$server" ] || (cd "$root" && cargo build --release -q -p conformance-tests --bins)

log=$(mktemp)
PORT=0 taskset -c 0 "$server" >"$log" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q '^listening' "$log" && break; sleep 0.05; done
port=$(awk '/^listening/ {print $2; exit}' "$log")

ticks() { awk '{print $14 + $15}' "/proc/$spid/stat"; }
hz=$(getconf CLK_TCK)

out=$(mktemp)
taskset -c 1 "$tools_target/release/sseload" idle --url-base "http://127.0.0.1:$port" --pid "$spid" \
  --conns "$n" --rooms 1000 --src-ips 32 --settle-ms "$settle_ms" >"$out" 2>&1 &
lpid=$!
until grep -q 'connected in' "$out" 2>/dev/null; do
  kill -0 "$lpid" 2>/dev/null || { cat "$out"; exit 1; }
  sleep 0.2
done
sleep 5
t0=$(ticks); s0=$(date +%s.%N)
sleep 20
t1=$(ticks); s1=$(date +%s.%N)
wait "$lpid" || true
grep -v '^{' "$out"
echo "idle CPU over $(echo "$s1 - $s0" | bc | cut -c1-5) s with $n streams: $(echo "scale=2; 100 * ($t1 - $t0) / $hz / ($s1 - $s0)" | bc) % of one core"
grep '^{' "$out" | tail -n 1 | jq -c '{ok, connected, bytes_per_conn, connect_rate, heartbeats, log}'
