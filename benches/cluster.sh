#!/usr/bin/env bash
# What Redis adds to a send: sseload `fanout` against harness-hyper on its own (in-process
# delivery), as a node of a Redis cluster on a redis-server started here, and as a node on a
# Redis Cluster of three masters started here. Four configurations, REPS fresh runs of each
# point (fresh node processes per run, interleaved):
#
#   memory     one node, no REDIS_URL: POST /_control/send is delivered in-process
#   redis-1    one node with REDIS_URL, sends and clients on it: node -> PUBLISH -> redis-server ->
#              the same node -> local fan-out
#   redis-2    two nodes on the same redis-server: sends to node A, clients on node B
#   cluster-2  two nodes in sharded mode (SSEIO_REDIS_SHARDED=1) on a Redis Cluster of three
#              masters (no replicas; redis-cli --cluster create): sends to node A, clients on
#              node B, through SPUBLISH on the master of the room's slot
#
#   benches/cluster.sh [OUTDIR]     # default OUTDIR: target/bench/cluster-<timestamp>
#
# sseload has one --url-base for both its clients and its sends. For redis-2, a small
# LD_PRELOAD shim (C, built here with cc) rewrites the destination port of every connect()
# sseload makes after its C client streams (its probe and send connections) to node A. It acts
# once per connection, at connect time; nothing sits on the data path. The same shim snapshots
# the CPU time (/proc/PID/task/*/schedstat, ns) of the nodes and of redis-server when sseload
# opens its send connection (the start of its measured phase) and when it closes its first
# client stream (the end), so every process is billed over the same phase.
#
# Environment: SHARED (default ../shared next to the repository), REPS (3), POINTS (fanout
# argument lists, one per line), CONFIGS (default "memory redis-1 redis-2"), TOOLS_TARGET_DIR
# (sseload; default target/bench-tools), CARGO_TARGET_DIR (harness), REDIS_SERVER, REDIS_CLI.
# Needs jq, taskset, cc, python3. Nodes and redis-server are pinned to CPU 0, sseload to CPU 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$root/../shared}
out=${1:-$root/target/bench/cluster-$(date +%Y%m%d-%H%M%S)}
tools_target=${TOOLS_TARGET_DIR:-$root/target/bench-tools}
harness=${CARGO_TARGET_DIR:-$root/target}/release/harness-hyper
redis_server=${REDIS_SERVER:-redis-server}
redis_cli=${REDIS_CLI:-redis-cli}
reps=${REPS:-3}
configs=${CONFIGS:-memory redis-1 redis-2 cluster-2}
default_points='fanout --clients 1000 --messages 500 --payload 100
fanout --clients 100 --messages 2000 --payload 100
fanout --clients 1000 --messages 500 --payload 100 --inflight 16
fanout --clients 1000 --messages 250 --payload 100 --rate 50
fanout --clients 10 --messages 3000 --payload 100 --rate 1000'
points=${POINTS:-$default_points}
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.jsonl

if [ "$(id -u)" = 0 ]; then ulimit -Hn 1048576 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)"

(cd "$shared/tools/sseload" && CARGO_TARGET_DIR=$tools_target cargo build --release -q)
(cd "$root" && cargo build --release -q -p conformance-tests --bins)

# The shim: port rewrite after the first SHIM_AFTER connects, CPU snapshots at the phase edges.
cat >"$out/shim.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAXFD (1 << 20)
static unsigned char client_fd[MAXFD];
static atomic_long n_connects;
static atomic_int marked, ended;

static long env_long(const char *k, long d) {
  const char *v = getenv(k);
  return v && *v ? atol(v) : d;
}

/* CPU time of every thread of PID, in ns (first field of each task's schedstat). */
static long long cpu_ns(const char *pid) {
  char path[128], line[256];
  snprintf(path, sizeof path, "/proc/%s/task", pid);
  DIR *d = opendir(path);
  if (!d) return -1;
  long long sum = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/%s/task/%s/schedstat", pid, e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(line, sizeof line, f)) sum += atoll(line);
    fclose(f);
  }
  closedir(d);
  return sum;
}

/* Appends "TAG t NS" and "TAG ROLE NS" for each ROLE=PID of SHIM_PIDS to SHIM_OUT. */
static void snapshot(const char *tag) {
  const char *out = getenv("SHIM_OUT"), *pids = getenv("SHIM_PIDS");
  if (!out || !pids) return;
  FILE *f = fopen(out, "a");
  if (!f) return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  fprintf(f, "%s t %lld\n", tag, ts.tv_sec * 1000000000LL + ts.tv_nsec);
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", pids);
  for (char *save, *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq) continue;
    *eq = 0;
    fprintf(f, "%s %s %lld\n", tag, tok, cpu_ns(eq + 1));
  }
  fclose(f);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real)(int, const struct sockaddr *, socklen_t);
  if (!real) real = dlsym(RTLD_NEXT, "connect");
  long after = env_long("SHIM_AFTER", -1);
  if (after < 0 || !addr || addr->sa_family != AF_INET) return real(fd, addr, len);
  long n = ++n_connects;
  if (n <= after) { /* a client stream */
    if (fd >= 0 && fd < MAXFD) client_fd[fd] = 1;
    return real(fd, addr, len);
  }
  if (n == after + 2 && !atomic_exchange(&marked, 1)) snapshot("start"); /* the send connection */
  long to = env_long("SHIM_TO_PORT", 0);
  if (to <= 0) return real(fd, addr, len);
  struct sockaddr_in a;
  memcpy(&a, addr, sizeof a);
  a.sin_port = htons((unsigned short)to);
  return real(fd, (const struct sockaddr *)&a, sizeof a);
}

int close(int fd) {
  static int (*real)(int);
  if (!real) real = dlsym(RTLD_NEXT, "close");
  if (fd >= 0 && fd < MAXFD && client_fd[fd]) {
    if (atomic_load(&marked)) {
      if (!atomic_exchange(&ended, 1)) snapshot("end");
    } else {
      client_fd[fd] = 0; /* a client that failed before the phase: its number may be reused */
    }
  }
  return real(fd);
}
EOF
cc -O2 -shared -fPIC -o "$out/shim.so" "$out/shim.c" -ldl

# sseload behind the shim: adds {"cluster": {"window_secs", "cpu_secs": {ROLE: s}}} to its JSON.
cat >"$out/sseload-shim.sh" <<'EOF'
#!/usr/bin/env bash
# sseload with the shim preloaded; adds the shim's CPU figures to its JSON line as "cluster".
set -uo pipefail
clients='' pid=''
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
  case ${args[i]} in --clients) clients=${args[i + 1]} ;; --pid) pid=${args[i + 1]} ;; esac
done
snap=$(mktemp) log=$(mktemp)
SHIM_AFTER=$clients SHIM_OUT=$snap SHIM_PIDS="node=$pid ${CLUSTER_PIDS:-}" \
  SHIM_TO_PORT=${CLUSTER_TO_PORT:-0} LD_PRELOAD=$CLUSTER_SHIM "$CLUSTER_SSELOAD" "$@" >"$log"
rc=$?
cluster=$(awk '$1 == "start" { s[$2] = $3 } $1 == "end" { e[$2] = $3 }
  END {
    printf "{\"window_secs\": %s, \"cpu_secs\": {", ("t" in e && "t" in s) ? (e["t"] - s["t"]) / 1e9 : "null"
    sep = ""
    for (r in s) if (r != "t" && (r in e) && s[r] >= 0 && e[r] >= 0) { printf "%s\"%s\": %.6f", sep, r, (e[r] - s[r]) / 1e9; sep = ", " }
    printf "}}"
  }' "$snap")
last=$(grep -n '^{' "$log" | tail -n 1 | cut -d: -f1)
if [ -n "$last" ]; then
  head -n $((last - 1)) "$log"
  sed -n "${last}p" "$log" | jq -c --argjson c "$cluster" '. + {cluster: $c}'
else
  cat "$log"
fi
rm -f "$snap" "$log"
exit $rc
EOF
chmod +x "$out/sseload-shim.sh"
export CLUSTER_SHIM=$out/shim.so CLUSTER_SSELOAD=$tools_target/release/sseload

free_port() { # a port in 10000-19999 nobody listens on (bench.sh picks its own in 20000-31999)
  local p
  while :; do
    p=$((10000 + RANDOM % 10000))
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}

pids_started=()
cleanup() {
  for p in "${pids_started[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

rport=$(free_port)
taskset -c 0 "$redis_server" --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --logfile "$out/redis.log" &
rpid=$!
pids_started+=("$rpid")
for _ in $(seq 1 100); do "$redis_cli" -p "$rport" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
"$redis_cli" -p "$rport" ping 2>/dev/null | grep -q PONG || { echo "redis-server did not start:" >&2; tail "$out/redis.log" >&2; exit 1; }
redis_url=redis://127.0.0.1:$rport/
echo "redis-server pid $rpid on port $rport ($("$redis_server" --version | cut -d' ' -f3))"

# The Redis Cluster: three masters, each its own redis-server, pinned like the single one.
cluster_pids=''
if [[ " $configs " == *" cluster-2 "* ]]; then
  cports=()
  for i in 1 2 3; do
    cport=$(free_port)
    mkdir -p "$out/cluster-$i"
    taskset -c 0 "$redis_server" --port "$cport" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --dir "$out/cluster-$i" \
      --daemonize no --logfile "$out/cluster-$i/redis.log" &
    pids_started+=("$!")
    cluster_pids+=" c$i=$!"
    cports+=("$cport")
  done
  for cport in "${cports[@]}"; do
    for _ in $(seq 1 100); do "$redis_cli" -p "$cport" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  done
  "$redis_cli" --cluster create "${cports[@]/#/127.0.0.1:}" --cluster-yes >"$out/cluster-create.log" 2>&1
  for _ in $(seq 1 200); do
    "$redis_cli" -p "${cports[0]}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.05
  done
  "$redis_cli" -p "${cports[0]}" cluster info | grep -q 'cluster_state:ok' || { echo "the Redis Cluster is not ok:" >&2; cat "$out/cluster-create.log" >&2; exit 1; }
  cluster_url=redis://127.0.0.1:${cports[0]}/
  echo "Redis Cluster of three masters on ports ${cports[*]}"
fi

start_node_a() { # starts node A with the environment "$@" (REDIS_URL, ...), sets apid and aport
  aport=$(free_port)
  env "$@" PORT=$aport taskset -c 0 "$harness" >"$out/node-a-$aport.log" 2>&1 &
  apid=$!
  pids_started+=("$apid")
  for _ in $(seq 1 200); do grep -q '^listening' "$out/node-a-$aport.log" && return; sleep 0.05; done
  echo "node A did not start:" >&2; tail "$out/node-a-$aport.log" >&2; exit 1
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

checked_numsub=false
for rep in $(seq 1 "$reps"); do
  while IFS= read -r point; do
    [ -n "$point" ] || continue
    for config in $configs; do
      server=$harness apid='' checker=''
      unset CLUSTER_TO_PORT
      case $config in
        memory) export CLUSTER_PIDS='' ;;
        redis-1) server="env REDIS_URL=$redis_url $harness"; export CLUSTER_PIDS="redis=$rpid" ;;
        redis-2)
          server="env REDIS_URL=$redis_url $harness"
          start_node_a REDIS_URL="$redis_url"
          export CLUSTER_PIDS="a=$apid redis=$rpid" CLUSTER_TO_PORT=$aport
          if ! $checked_numsub && [[ $point == *--rate* ]]; then
            # Once, while the clients are connected: which channels have how many subscribers
            # (node A has no clients, so it must not be subscribed to the room's channel).
            checked_numsub=true
            (for _ in $(seq 1 300); do
               "$redis_cli" -p "$rport" pubsub channels '*:room:*' | grep -q . && break
               sleep 0.1
             done
             for ch in $("$redis_cli" -p "$rport" pubsub channels '*'); do
               echo "$ch: $("$redis_cli" -p "$rport" pubsub numsub "$ch" | tail -n 1) subscriber(s)"
             done >"$out/numsub.txt") &
            checker=$!
          fi
          ;;
        cluster-2)
          server="env REDIS_URL=$cluster_url SSEIO_REDIS_SHARDED=1 $harness"
          start_node_a REDIS_URL="$cluster_url" SSEIO_REDIS_SHARDED=1
          export CLUSTER_PIDS="a=$apid$cluster_pids" CLUSTER_TO_PORT=$aport
          ;;
        *) echo "unknown config $config" >&2; exit 2 ;;
      esac
      # shellcheck disable=SC2086 # the point is a word list on purpose
      SSELOAD=$out/sseload-shim.sh "$shared/tools/sseload/bench.sh" -l "$config" -o "$results" \
        -s "$server" -- $point || echo "!! $config: '$point' failed (rep $rep)" >&2
      if [ -n "$checker" ]; then wait "$checker"; fi
      if [ -n "$apid" ]; then stop_pid "$apid"; fi
    done
  done <<<"$points"
done

summary=$out/summary.md
python3 - "$results" >"$summary" <<'EOF'
import json, statistics, sys

def key(r):
    k = f"C={r['clients']} M={r['messages']} {r['payload']} B"
    if r.get("inflight", 1) != 1:
        k += f", {r['inflight']} in flight"
    if r.get("rate"):
        k += f", paced {r['rate']:g}/s"
    return k

def cpu(r, roles):
    c = (r.get("cluster") or {}).get("cpu_secs") or {}
    if not r.get("received") or any(x not in c for x in roles):
        return None
    return 1e6 * sum(c[x] for x in roles) / r["received"]

# The processes billed in each configuration: the nodes, and Redis (one server, or the cluster's
# three masters).
NODES = {"memory": ["node"], "redis-1": ["node"], "redis-2": ["node", "a"], "cluster-2": ["node", "a"]}
REDIS = {"memory": [], "redis-1": ["redis"], "redis-2": ["redis"], "cluster-2": ["c1", "c2", "c3"]}

METRICS = [
    ("deliveries/s", lambda r, l: r["deliveries_per_sec"]),
    ("node CPU µs/delivery", lambda r, l: cpu(r, NODES[l])),
    ("redis-server µs/delivery", lambda r, l: cpu(r, REDIS[l]) if REDIS[l] else None),
    ("total µs/delivery", lambda r, l: cpu(r, NODES[l] + REDIS[l])),
    ("p50 ms", lambda r, l: r["latency_ms"].get("p50")),
    ("p99 ms", lambda r, l: r["latency_ms"].get("p99")),
]

def fmt(x):
    if x is None: return "-"
    if abs(x) >= 1000: return f"{x:,.0f}"
    if abs(x) >= 10: return f"{x:.1f}"
    return f"{x:.3g}"

groups, order, problems = {}, [], []
for line in open(sys.argv[1]):
    rec = json.loads(line)
    r, l = rec["result"], rec["label"]
    if "mode" not in r:
        problems.append(f"{l}: {r.get('error')} (server alive: {rec['server_alive']})")
        continue
    k = key(r)
    if k not in order: order.append(k)
    groups.setdefault((k, l), []).append(r)
    bad = {f: r.get(f) for f in ("failed", "lost", "duplicates", "out_of_order", "bad_payload", "non_200", "ended_early") if r.get(f)}
    if not r.get("ok", True) or not rec["server_alive"] or bad:
        problems.append(f"{l} {k}: ok={r.get('ok')} server_alive={rec['server_alive']} {bad or ''} {r.get('send_error') or ''}")

labels = ["memory", "redis-1", "redis-2", "cluster-2"]
meds = {}
print("| point | config | runs | " + " | ".join(n for n, _ in METRICS) + " |")
print("|" + "---|" * (3 + len(METRICS)))
for k in order:
    for l in labels:
        runs = groups.get((k, l))
        if not runs: continue
        cells = []
        for n, f in METRICS:
            v = [x for x in (f(r, l) for r in runs) if x is not None]
            if not v:
                cells.append("-"); continue
            meds[(k, l, n)] = m = statistics.median(v)
            cells.append(f"{fmt(m)} [{fmt(min(v))}–{fmt(max(v))}]" if len(v) > 1 else fmt(m))
        print(f"| {k} | {l} | {len(runs)} | " + " | ".join(cells) + " |")

print("\nWhat Redis adds (differences of medians; CPU: total with Redis − node in memory):\n")
print("| point | config | CPU µs/delivery | CPU µs/send | p50 ms | p99 ms |")
print("|---|---|---|---|---|---|")
for k in order:
    c = int(k.split()[0][2:])
    for l in labels[1:]:
        def d(n):
            a, b = meds.get((k, "memory", n)), meds.get((k, l, n))
            return None if a is None or b is None else b - a
        base = meds.get((k, "memory", "node CPU µs/delivery"))
        tot = meds.get((k, l, "total µs/delivery"))
        t = None if base is None or tot is None else tot - base
        if t is None and d("p50 ms") is None: continue
        sg = lambda x: "-" if x is None else ("+" if x >= 0 else "") + fmt(x)
        print(f"| {k} | {l} | {sg(t)} | {sg(None if t is None else t * c)} | {sg(d('p50 ms'))} | {sg(d('p99 ms'))} |")

if problems:
    print("\nRuns that were not clean:\n")
    for p in problems: print(f"- {p}")
EOF
cat "$summary"
[ -s "$out/numsub.txt" ] && { echo; echo "redis-2, mid-run PUBSUB NUMSUB:"; cat "$out/numsub.txt"; }
echo "results: $results, summary: $summary"
