#!/usr/bin/env bash
# The front-tier fault timeline on loopback, HAProxy 2.6 vs hastack proxy, each configured as
# strongly as its documentation allows with the same check intervals, timeouts and tries
# (scenarios/classic-haproxy.toml and scenarios/hastack-proxy.toml; a test checks they match).
# Runs `hastack chaos compare` REPEATS times (default 3, at least 3 for the docs), alternating
# which stack goes first, and writes the `## chaos` section of docs/benchmarks.md: medians
# (min-max) and every run.
#
# Usage: bench/chaos-classic.sh [--debug] [REPEATS]   (release build by default)
# Output: $OUT (default bench-results/chaos): run-N/{a,b}/report.*, logs, compare.json.
# Uses fixed loopback ports 8080, 9001-9003, 9900-9901, 19001-19003: run one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/common.sh
source bench/lib/chaos_compare.sh
command -v haproxy >/dev/null || { echo "needs HAProxy: apt-get install -y haproxy" >&2; exit 1; }

PROFILE=release
if [ "${1:-}" = "--debug" ]; then PROFILE=debug; shift; fi
REPEATS=${1:-3}
if [ "$PROFILE" = debug ]; then cargo build -q -p hastack-cli; else cargo build -q --release -p hastack-cli; fi
BIN=target/$PROFILE/hastack
OUT=${OUT:-bench-results/chaos}
rm -rf "$OUT"
mkdir -p "$OUT"
A=scenarios/classic-haproxy.toml
B=scenarios/hastack-proxy.toml

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
steal0=$(steal_snapshot)
compare_runs "$BIN" "$A" "$B" "$OUT" "$REPEATS"
steal=$(steal_percent "$steal0" "$(steal_snapshot)")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
haproxy_v=$(haproxy -v 2>/dev/null | awk 'NR==1{print $3}')

{
  echo "## chaos: the classic stack vs hastack on loopback"
  echo
  echo "The front-tier fault timeline of \`scenarios/classic-haproxy.toml\` and"
  echo "\`scenarios/hastack-proxy.toml\` (60 s, 200 req/s open loop, SLO 99.9% of requests answered"
  echo "under 250 ms; kill -9 app1 for 6 s, SIGSTOP app2 for 4 s, +400 ms on app3's answers for 6 s,"
  echo "reset app1's connections for 2 s, black-hole app2's link for 4 s, drop half of app3's new"
  echo "connections for 3 s) against one HAProxy $haproxy_v and one \`hastack proxy\`, each in front of"
  echo "the same three \`hastack app\` servers behind fault proxies. Both sides get the same check"
  echo "intervals (500 ms, 125 ms in transition, fall 2 rise 2, 300 ms check timeout), a 200 ms try"
  echo "timeout (under the SLO latency), 3 tries, and take a member out after 5 errors in a row;"
  echo "HAProxy runs \`balance leastconn\`, \`observe layer7\` + \`on-error mark-down\`,"
  echo "\`retry-on all-retryable-errors\`, \`option redispatch 1\`; hastack its \`p2c_ewma\` picker"
  echo "(docs/chaos.md, \"Side by side\", says where each setting comes from)."
  echo
  echo "Command: \`bench/chaos-classic.sh$([ "$PROFILE" = debug ] && echo ' --debug') $REPEATS\`, i.e. $REPEATS x"
  echo "\`hastack chaos compare\` of the two files, alternating which runs first. Measured"
  echo "$(date -I), $PROFILE build, $(nproc) CPUs; load average $load_before before and $load_after after,"
  echo "CPU steal $steal%."
  echo
  python3 bench/lib/chaos_runs.py "$OUT" "$REPEATS" classic-haproxy "$load_before"
} | tee "$OUT/section.md" >/dev/null
publish "$OUT" "$REPEATS" chaos
