#!/usr/bin/env bash
# 100,000 idle streams on one box, spread over several nodes of one Redis cluster (issue 18).
# One process may hold at most 20,000 descriptors here, so NODES harness-hyper nodes (default 5),
# each with REDIS_URL to one redis-server started here without persistence, hold
# STREAMS_PER_NODE streams each, opened by one holder process per node (conformance-tests'
# sseio-spread, client source addresses rotating over 127.0.0.1..=127.0.0.SRC_IPS). With the
# default 3 s heartbeats, it measures each node's RSS before and after its streams connect
# (bytes per stream = growth / streams) and its CPU time over an idle window (the heartbeats'
# cost); then BROADCASTS numbered messages, paced at RATE per second, go through node 0's
# POST /_control/send to one room of ROOM_SIZE streams split evenly over every node, and for
# each one the driver takes the time from just before the send until the last member, on any
# node, had it (p50/p99), and counts what was lost or duplicated (target 0).
#
#   benches/spread-100k.sh [OUTDIR]       # default OUTDIR: target/bench/spread-<timestamp>
#   NODES=2 STREAMS_PER_NODE=2000 ROOM_SIZE=200 BROADCASTS=20 IDLE_SECS=5 benches/spread-100k.sh
#
# Environment: NODES (5), STREAMS_PER_NODE (19950), ROOM_SIZE (5000, the room's members over
# every node), BROADCASTS (100), RATE (2), PAYLOAD (100 bytes), IDLE_SECS (30), SETTLE_SECS (5),
# SRC_IPS (64), REPS (1; a fresh set of nodes each), CARGO_TARGET_DIR, REDIS_SERVER. Needs
# taskset and python3. The nodes and redis-server are pinned to CPU 0, the driver and its holders
# to CPU 1. Figures and what they mean: BENCHMARKS.md, "100,000 streams on one box".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/bench/spread-$(date +%Y%m%d-%H%M%S)}
target=${CARGO_TARGET_DIR:-$root/target}
redis_server=${REDIS_SERVER:-redis-server}
nodes=${NODES:-5}
per_node=${STREAMS_PER_NODE:-19950}
room_size=${ROOM_SIZE:-5000}
broadcasts=${BROADCASTS:-100}
rate=${RATE:-2}
payload=${PAYLOAD:-100}
idle_secs=${IDLE_SECS:-30}
settle_secs=${SETTLE_SECS:-5}
src_ips=${SRC_IPS:-64}
reps=${REPS:-1}
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.jsonl

# A node holds a descriptor per stream plus about 20 of its own (listener, Redis, epoll, ...);
# so does a holder. Neither may pass the hard limit, which cannot be raised without root.
if [ "$(id -u)" = 0 ]; then ulimit -Hn 1048576 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)"
if [ $((per_node + 40)) -gt "$(ulimit -Sn)" ]; then
  echo "descriptor limit $(ulimit -Sn): at most $(($(ulimit -Sn) - 40)) streams per node" >&2
  exit 1
fi

(cd "$root" && cargo build --release -q -p conformance-tests --bin harness-hyper --bin sseio-spread)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

started=()
cleanup() {
  for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

rport=$(free_port)
taskset -c 0 "$redis_server" --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$out" >"$out/redis.log" 2>&1 &
redis_pid=$!
started+=("$redis_pid")
for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$rport" ping >/dev/null 2>&1 || { echo "redis-server did not start" >&2; exit 1; }

for rep in $(seq 1 "$reps"); do
  echo "== run $rep: $nodes nodes x $per_node streams, room of $room_size; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  redis-cli -p "$rport" flushall >/dev/null
  urls=() pids=()
  for i in $(seq 0 $((nodes - 1))); do
    log=$out/node-$rep-$i.log
    REDIS_URL=redis://127.0.0.1:$rport/ PORT=0 SSEIO_SHUTDOWN_GRACE_MS=200 \
      taskset -c 0 "$target/release/harness-hyper" >"$log" 2>&1 &
    pid=$!
    started+=("$pid")
    for _ in $(seq 1 200); do grep -q '^listening' "$log" && break; sleep 0.05; done
    port=$(awk '/^listening/ {print $2; exit}' "$log")
    [ -n "$port" ] || { echo "node $i did not start:" >&2; tail "$log" >&2; exit 1; }
    urls+=("http://127.0.0.1:$port") pids+=("$pid")
  done
  sleep 1 # each node's Redis connection settles before its empty RSS is read
  taskset -c 1 "$target/release/sseio-spread" run \
    --urls "$(IFS=,; echo "${urls[*]}")" --pids "$(IFS=,; echo "${pids[*]}")" \
    --redis-pid "$redis_pid" --streams-per-node "$per_node" --room-size "$room_size" \
    --broadcasts "$broadcasts" --rate "$rate" --payload "$payload" --idle-secs "$idle_secs" \
    --settle-secs "$settle_secs" --src-ips "$src_ips" --details "$out/details-$rep.jsonl" \
    >"$out/run-$rep.txt" 2>"$out/run-$rep.err" || {
      echo "run $rep failed:" >&2; tail -n 5 "$out/run-$rep.err" >&2; }
  grep -v '^{' "$out/run-$rep.txt" >&2 || true
  grep '^{' "$out/run-$rep.txt" | tail -n 1 >>"$results" || true
  for pid in "${pids[@]}"; do
    alive=$(kill -0 "$pid" 2>/dev/null && echo yes || echo no)
    [ "$alive" = yes ] || echo "!! node pid $pid died during run $rep" >&2
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  sleep 2 # let the closed connections' TIME_WAITs and the nodes' exits settle
done

[ -s "$results" ] || { echo "no run completed" >&2; exit 1; }
python3 - "$results" <<'EOF'
import json, statistics, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
mib = lambda b: b / 1048576

def cell(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.median(values)
    return fmt(m) if len(values) == 1 else f"{fmt(m)} [{fmt(min(values))}–{fmt(max(values))}]"

n = runs[0]
rows = [
    ("streams held", [r["streams"] for r in runs], lambda x: f"{x:,.0f}"),
    ("connect time, every stream (s)", [r["connect_s"] for r in runs], lambda x: f"{x:.1f}"),
    ("total RSS of the nodes, empty (MiB)", [mib(r["total_rss_empty"]) for r in runs], lambda x: f"{x:.1f}"),
    ("total RSS of the nodes, streams held (MiB)", [mib(r["total_rss_connected"]) for r in runs], lambda x: f"{x:.1f}"),
    ("RSS per node, streams held (MiB)", [mib(nd["rss_connected"]) for r in runs for nd in r["node"]], lambda x: f"{x:.1f}"),
    ("bytes per stream (RSS growth / streams)", [r["bytes_per_stream"] for r in runs], lambda x: f"{x:,.0f}"),
    ("bytes per stream, per node", [nd["bytes_per_stream"] for r in runs for nd in r["node"]], lambda x: f"{x:,.0f}"),
    (f"idle CPU per node, % of a core ({n['idle_window_s']:.0f} s window)", [nd["idle_cpu_pct"] for r in runs for nd in r["node"]], lambda x: f"{x:.2f}"),
    ("idle CPU, every node together, % of a core", [100 * r["idle_cpu_s"] / r["idle_window_s"] for r in runs], lambda x: f"{x:.1f}"),
    ("redis-server idle CPU, % of a core", [None if r["redis_idle_cpu_s"] is None else 100 * r["redis_idle_cpu_s"] / r["idle_window_s"] for r in runs], lambda x: f"{x:.2f}"),
    ("redis-server RSS (MiB)", [None if r["redis_rss"] is None else mib(r["redis_rss"]) for r in runs], lambda x: f"{x:.1f}"),
    ("CPU while broadcasting: every node together, % of a core", [100 * r["broadcast_cpu_s"] / r["broadcast_window_s"] for r in runs], lambda x: f"{x:.1f}"),
    ("CPU while broadcasting: the holders together, % of a core", [100 * r["holders_broadcast_cpu_s"] / r["broadcast_window_s"] for r in runs], lambda x: f"{x:.1f}"),
    ("send to last delivery, p50 (ms)", [r["latency_last_ms"]["p50"] for r in runs], lambda x: f"{x:.2f}"),
    ("send to last delivery, p99 (ms)", [r["latency_last_ms"]["p99"] for r in runs], lambda x: f"{x:.2f}"),
    ("send to last delivery, max (ms)", [r["latency_last_ms"]["max"] for r in runs], lambda x: f"{x:.2f}"),
    ("send to first delivery, p50 (ms)", [r["latency_first_ms"]["p50"] for r in runs], lambda x: f"{x:.2f}"),
    ("lost / duplicated / out of order", None, None),
]
print(f"\n{n['nodes']} nodes x {n['streams_per_node']:,} streams, room of {n['room_size']:,}, "
      f"{n['broadcasts']} broadcasts at {n['rate']:g}/s, {len(runs)} run(s)"
      + (" (medians [min–max]; per-node rows over every node of every run)" if len(runs) > 1 else "") + "\n")
print("| measure | value |\n|---|---|")
for name, values, fmt in rows:
    if values is None:
        print(f"| {name} | {sum(r['lost'] for r in runs)} / {sum(r['duplicates'] for r in runs)} / "
              f"{sum(r['out_of_order'] for r in runs)} (of {sum(r['broadcasts'] * r['room_size'] for r in runs):,} deliveries) |")
    else:
        print(f"| {name} | {cell(values, fmt)} |")
print("\nload average before/after each run: " + "; ".join(f"{r['loadavg_before']} / {r['loadavg_after']}" for r in runs))
bad = [i + 1 for i, r in enumerate(runs) if not r["ok"]]
if bad:
    print(f"runs not clean (failed connects, losses, non-200 sends, streams ended early): {bad}")
print(json.dumps({"runs": len(runs), "results": runs}, separators=(",", ":")))
EOF
echo "results: $results" >&2
