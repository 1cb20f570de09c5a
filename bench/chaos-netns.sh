#!/usr/bin/env bash
# A redundant front tier in network namespaces, hastack vs the classic stack, under the
# identical fault timeline (the one of `hastack demo --netns --duration 60s`):
#   scenarios/netns-classic.toml  HAProxy 2.6 + keepalived 2.2.7 on lb1/lb2 (Debian packages),
#                                 keepalived fed every 100 ms through track files
#   scenarios/netns-hastack.toml  hastack proxy + hastack vip on lb1/lb2
# both in front of three hastack app servers on web1-web3, the load (200 req/s, open loop)
# from a client namespace to the virtual IP, with the same check intervals, timeouts and
# tries on both sides (a test checks they match). Runs `hastack chaos compare` REPEATS times
# (default 3, at least 3 for the docs), alternating which stack goes first, and writes the
# `## chaos (namespaces)` section of docs/benchmarks.md: medians (min-max) and every run.
#
# Usage: bench/chaos-netns.sh [--debug] [REPEATS]   (root; release build by default)
# Output: $OUT (default bench-results/chaos-netns): run-N/{a,b}/report.*, logs, compare.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/common.sh
source bench/lib/chaos_compare.sh
need_root
apt_need haproxy keepalived curl iproute2 iptables

PROFILE=release
if [ "${1:-}" = "--debug" ]; then PROFILE=debug; shift; fi
REPEATS=${1:-3}
if [ "$PROFILE" = debug ]; then cargo build -q -p hastack-cli; else cargo build -q --release -p hastack-cli; fi
BIN=target/$PROFILE/hastack
OUT=${OUT:-bench-results/chaos-netns}
rm -rf "$OUT"
mkdir -p "$OUT"
A=scenarios/netns-classic.toml
B=scenarios/netns-hastack.toml

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
steal0=$(steal_snapshot)
compare_runs "$BIN" "$A" "$B" "$OUT" "$REPEATS"
steal=$(steal_percent "$steal0" "$(steal_snapshot)")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# awk reads to the end: `head` would SIGPIPE the writer and trip pipefail.
haproxy_v=$(haproxy -v 2>/dev/null | awk 'NR==1{print $3}')
keepalived_v=$(keepalived -v 2>&1 | awk 'NR==1{print $2}')

{
  echo "## chaos (namespaces)"
  echo
  echo "A redundant front tier in network namespaces, hastack vs the classic stack, under the"
  echo "identical fault timeline of \`hastack demo --netns --duration 60s\` (60 s, 200 req/s open"
  echo "loop from a client namespace to the virtual IP, SLO 99.9% of requests answered under"
  echo "250 ms): kill app1 for 6 s, SIGSTOP app2 for 4.8 s, +400 ms on app3's answers for 6 s, then"
  echo "on the master lb1: kill its balancer, kill its VRRP daemon, take its link down, 3 s each."
  echo "Hosts lb1 and lb2 each run the balancer and the VRRP daemon (VRRPv3, 20 ms adverts,"
  echo "priority 150/100); three \`hastack app\` servers on web1-web3 behind fault proxies."
  echo "Classic: HAProxy $haproxy_v (\`balance leastconn\`, \`observe layer7\` + \`on-error mark-down\`,"
  echo "\`retry-on all-retryable-errors\`, \`option redispatch 1\`) + keepalived $keepalived_v, whose"
  echo "track files a watcher (\`track.sh\`) updates every 100 ms from HAProxy's \`monitor-uri\`"
  echo "(weight 0 = fault) and a \`monitor fail if { nbsrv(app) lt 1 }\` readiness page (weight -60)."
  echo "hastack: \`hastack proxy\` (\`p2c_ewma\`) + \`hastack vip\` (trackers every 100 ms on the proxy's"
  echo "listener, weight 0, and on its \`GET /ready\`, weight 60). Both balancers: checks every"
  echo "500 ms (125 ms in transition, fall 2 rise 2, 300 ms timeout), 200 ms try timeout, 3 tries, a"
  echo "member out after 5 errors in a row."
  echo
  echo "Command: \`bench/chaos-netns.sh$([ "$PROFILE" = debug ] && echo ' --debug') $REPEATS\` (root), i.e. $REPEATS x"
  echo "\`hastack chaos compare\` of the two files, alternating which runs first. Measured"
  echo "$(date -I), $PROFILE build, $(nproc) CPUs; load average $load_before before and $load_after after,"
  echo "CPU steal $steal%."
  echo
  python3 bench/lib/chaos_runs.py "$OUT" "$REPEATS" netns-classic "$load_before"
  echo
  echo "Detection of the front faults is lb2's \`hastack vip\` \`/status\` turning master; keepalived"
  echo "has no status endpoint, so the classic column is empty there. \`kill\` signals the process"
  echo "the harness started: for keepalived its parent, whose VRRP child then withdraws the VIP"
  echo "gracefully (priority 0), so this timeline does not show keepalived's known hole (a SIGKILLed"
  echo "or frozen VRRP child keeps the VIP; docs/vip.md). A moving VIP resets the client's keep-alive"
  echo "connections to the old holder (\`reset\`/\`closed\` failures), in both stacks."
} | tee "$OUT/section.md" >/dev/null
publish "$OUT" "$REPEATS" chaos-netns
