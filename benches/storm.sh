#!/usr/bin/env bash
# The reconnect storm: CLIENTS streams (default 10,000) in ROOMS rooms on one harness-hyper node
# with history in Redis (SSEIO_HISTORY=1000, on a redis-server started here without
# persistence), a sender posting RATE numbered messages per second to every room through the
# node's POST /_control/send (which answers once the message is recorded); the node is
# restarted (SIGTERM with no drain grace, so every stream ends at once, then a new process on the
# same port) and every client reconnects: all at once, then (a second run) each after the
# jittered `retry:` its stream ended with. Half the clients resume with Last-Event-ID, half by
# clientId as the official client does. Reports, per run: when every stream was open again and
# every client had caught up, what was lost or duplicated (target 0), and the CPU and peak RSS
# of the new node and of redis-server over the storm.
#
#   benches/storm.sh [OUTDIR]     # default OUTDIR: target/bench/storm-<timestamp>
#
# Environment: CLIENTS (10000), ROOMS (100), RATE (2), REPS (3 runs of each way of coming back,
# interleaved), WAITS ("at-once as-told"), CARGO_TARGET_DIR (the release build of the harness
# and of the driver, conformance-tests' sseio-storm), REDIS_SERVER. Needs taskset and jq. The
# node and redis-server are pinned to CPU 0, the driver (the clients and the sender) to CPU 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/bench/storm-$(date +%Y%m%d-%H%M%S)}
target=${CARGO_TARGET_DIR:-$root/target}
redis_server=${REDIS_SERVER:-redis-server}
clients=${CLIENTS:-10000}
rooms=${ROOMS:-100}
rate=${RATE:-2}
reps=${REPS:-3}
waits=${WAITS:-at-once as-told}
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.jsonl

# Each side holds a descriptor per stream, and the driver one per send in flight.
if [ "$(id -u)" = 0 ]; then ulimit -Hn 1048576 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)"
if [ "$(ulimit -Sn)" -lt $((clients + 2000)) ]; then
  echo "descriptor limit $(ulimit -Sn) is too low for $clients streams" >&2
  exit 1
fi

(cd "$root" && cargo build --release -q -p conformance-tests --bin harness-hyper --bin sseio-storm)

# The driver starts (and restarts) the node itself; this wrapper pins it to CPU 0.
cat >"$out/node.sh" <<EOF
#!/bin/sh
exec taskset -c 0 "$target/release/harness-hyper"
EOF
chmod +x "$out/node.sh"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 0 "$redis_server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$out" >"$out/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done

for rep in $(seq 1 "$reps"); do
  for wait in $waits; do
    echo "== run $rep, $wait" >&2
    redis-cli -p "$port" flushall >/dev/null
    RUST_LOG=error taskset -c 1 "$target/release/sseio-storm" --harness "$out/node.sh" \
      --redis-url "redis://127.0.0.1:$port/" --redis-pid "$redis_pid" \
      --clients "$clients" --rooms "$rooms" --rate "$rate" --wait "$wait" \
      >"$out/run-$rep-$wait.txt" 2>"$out/run-$rep-$wait.err"
    grep -v '^{' "$out/run-$rep-$wait.txt" >&2
    grep '^{' "$out/run-$rep-$wait.txt" | jq -c --arg rep "$rep" '. + {rep: ($rep | tonumber)}' >>"$results"
  done
done

# Median [min-max] per way of coming back.
jq -s -r '
  def stat(f): (map(f) | sort) as $v
    | "\($v[(($v | length) / 2 | floor)]) [\($v[0])–\($v[-1])]";
  group_by(.wait)[] |
  "\(.[0].wait): reopened \(stat(.reopened_s)) s, caught up \(stat(.caught_up_s)) s; " +
  "node CPU \(stat(.node_cpu_s)) s, peak RSS \(stat(.node_peak_rss_mib)) MiB; " +
  "redis-server CPU \(stat(.redis_cpu_s)) s, peak RSS \(stat(.redis_peak_rss_mib)) MiB; " +
  "lost \(map(.["Last-Event-ID"].lost + .clientId.lost) | add), " +
  "duplicated \(map(.["Last-Event-ID"].duplicated + .clientId.duplicated) | add), " +
  "resynced \(map(.["Last-Event-ID"].resynced + .clientId.resynced) | add) (over \(length) runs)"
' "$results"
echo "results: $results" >&2
