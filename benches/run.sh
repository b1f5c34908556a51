#!/usr/bin/env bash
# Runs the standard sseload matrix (three fresh runs of each point, servers interleaved) against
# every adapter's harness server and, in the same run, against rawsse, the yardstick for what this
# machine can push at all. Prints Markdown tables of medians [min-max] and ratios to rawsse.
#
#   benches/run.sh [OUTDIR]            # default OUTDIR: target/bench/<timestamp>
#
# Environment: SHARED (the shared/ directory with tools/sseload and tools/rawsse; default ../shared
# next to the repository), REPS (default 3), POINTS (sseload argument lists, one per line; default
# the standard matrix of tools/sseload/baseline.sh), ADAPTERS (default: every harness-* binary, each
# the way it serves by default, and hyper, warp, poem and salvo also served by their framework's own
# server as `<name>-framework`, SSEIO_SERVE=framework; e.g. ADAPTERS="warp warp-framework").
# Needs jq and taskset (Debian: jq, util-linux). The server is pinned to CPU 0, the load
# generator to CPU 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$root/../shared}
out=${1:-$root/target/bench/$(date +%Y%m%d-%H%M%S)}
tools_target=${TOOLS_TARGET_DIR:-$root/target/bench-tools}
mkdir -p "$out"

# Many thousands of sockets on each side: raise the descriptor limit here, not in the library.
if [ "$(id -u)" = 0 ]; then ulimit -Hn 1048576 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)"

(cd "$shared/tools/sseload" && CARGO_TARGET_DIR=$tools_target cargo build --release -q)
(cd "$shared/tools/rawsse" && CARGO_TARGET_DIR=$tools_target cargo build --release -q)
(cd "$root" && cargo build --release -q -p conformance-tests --bins)

servers=()
wanted() { [ -z "${ADAPTERS:-}" ] || [[ " $ADAPTERS " == *" $1 "* ]]; }
for bin in "$root"/target/release/harness-*; do
  [ -x "$bin" ] || continue
  name=${bin##*/harness-}
  if wanted "$name"; then servers+=("$name=$bin"); fi
  # The harnesses served both ways (conformance-tests/HARNESS.md): their framework's own server
  # too. `env` execs the harness, so the measured process is the harness itself.
  case $name in
    hyper | warp | poem | salvo)
      if wanted "$name-framework"; then
        servers+=("$name-framework=env SSEIO_SERVE=framework $bin")
      fi
      ;;
  esac
done
servers+=("rawsse=$tools_target/release/rawsse")

SSELOAD=$tools_target/release/sseload "$shared/tools/sseload/baseline.sh" "$out" "${servers[@]}"

summary=$out/summary.md
: >"$summary"
for spec in "${servers[@]}"; do
  name=${spec%%=*}
  [ "$name" = rawsse ] && continue
  { echo "## $name vs rawsse"; "$shared/tools/sseload/summarize.py" "$out/results.jsonl" rawsse "$name"; echo; } >>"$summary"
done
cat "$summary"
echo "results: $out/results.jsonl, summary: $summary"
