#!/usr/bin/env bash
# Availability of a redundant front tier in network namespaces, hastack vs the classic stack,
# under the identical fault timeline (the one of `hastack demo --netns --duration 60s`):
#   scenarios/netns-classic.toml  HAProxy 2.6 + keepalived 2.2.7 on lb1/lb2 (Debian packages)
#   scenarios/netns-hastack.toml  hastack proxy + hastack vip on lb1/lb2
# both in front of three hastack app servers on web1-web3, the load (200 req/s, open loop)
# from a client namespace to the virtual IP. Runs `hastack chaos compare` REPEATS times
# (default 3; the two stacks alternate within each run), takes medians, and writes the
# `## chaos (namespaces)` section of docs/benchmarks.md.
#
# Usage: bench/chaos-netns.sh [--debug] [REPEATS]   (root; release build by default)
# Output: $OUT (default bench-results/chaos-netns): run-N/{a,b}/report.*, logs, compare.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/common.sh
need_root
apt_need haproxy keepalived curl iproute2 iptables

PROFILE=release
if [ "${1:-}" = "--debug" ]; then PROFILE=debug; shift; fi
REPEATS=${1:-3}
if [ "$PROFILE" = debug ]; then
  cargo build -q -p hastack-cli
else
  cargo build -q --release -p hastack-cli
fi
BIN=target/$PROFILE/hastack
OUT=${OUT:-bench-results/chaos-netns}
rm -rf "$OUT"
mkdir -p "$OUT"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
steal0=$(steal_snapshot)
for i in $(seq 1 "$REPEATS"); do
  echo "==> run $i/$REPEATS (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$BIN" --log warn chaos compare scenarios/netns-classic.toml scenarios/netns-hastack.toml \
    --out "$OUT/run-$i" --json "$OUT/run-$i/compare.json" >"$OUT/run-$i.txt" 2>"$OUT/run-$i.err"
  tail -n 25 "$OUT/run-$i.txt" >&2
done
steal=$(steal_percent "$steal0" "$(steal_snapshot)")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# awk reads to the end: `head` would SIGPIPE the writer and trip pipefail.
haproxy_v=$(haproxy -v 2>/dev/null | awk 'NR==1{print $3}')
keepalived_v=$(keepalived -v 2>&1 | awk 'NR==1{print $2}')

python3 - "$OUT" "$REPEATS" "$PROFILE" "$load_before" "$load_after" "$steal" "$haproxy_v" "$keepalived_v" \
  <<'PY' | tee "$OUT/section.md" | python3 bench/lib/mdsection.py docs/benchmarks.md chaos-netns
import json, statistics, sys, datetime
out, n, profile, load0, load1, steal, hv, kv = sys.argv[1:9]
n = int(n)
runs = [json.load(open(f"{out}/run-{i}/compare.json")) for i in range(1, n + 1)]
med = statistics.median

def col(side, f):
    return [f(r[side]) for r in runs]

def fmt_s(xs):
    return f"{med(xs):.3f} s" + ("" if len(xs) == 1 else f" ({min(xs):.3f}-{max(xs):.3f})")

def fmt_pct(xs):
    return f"{100 * med(xs):.3f}%" + ("" if len(xs) == 1 else f" ({100 * min(xs):.3f}-{100 * max(xs):.3f})")

def fmt_n(xs):
    return f"{med(xs):g}" + ("" if len(xs) == 1 else f" ({min(xs):g}-{max(xs):g})")

rows = [
    ("failed requests (of 12000)", lambda r: r["requests"]["failed"], fmt_n),
    ("availability", lambda r: r["availability"], fmt_pct),
    ("failover p50", lambda r: r["failover"]["p50"], fmt_s),
    ("failover max", lambda r: r["failover"]["max"], fmt_s),
    ("fault score (min x weight)", lambda r: r["fault_score"], lambda xs: f"{med(xs):.4f}"),
    ("latency p99", lambda r: r["latency"]["p99_ms"], lambda xs: f"{med(xs):.1f} ms"),
]
same = all(r["same_timeline"] for r in runs)
today = datetime.date.today().isoformat()
print("## chaos (namespaces)\n")
print("A redundant front tier in network namespaces, hastack vs the classic stack, under the")
print("identical fault timeline of `hastack demo --netns --duration 60s` (60 s, 200 req/s open")
print("loop from a client namespace to the virtual IP, SLO 99.9% of requests answered under")
print("250 ms). Hosts lb1 and lb2 each run the balancer and the VRRP daemon (VRRPv3, 20 ms")
print("adverts, priority 150/100); three `hastack app` servers on web1-web3 behind fault proxies.")
print("Classic: HAProxy " + hv + " (health checks every 500 ms, fall 2 rise 2, 3 retries +")
print("redispatch, `timeout server 2s`) + keepalived " + kv + " (`vrrp_script` curl of HAProxy's")
print("monitor-uri every 1 s, keepalived's shortest interval, weight 0 = fault; a second one on a")
print("`monitor fail if { nbsrv(app) lt 1 }` frontend, weight -60). hastack: `hastack proxy`")
print("(probes every 500 ms, 1 s try timeout) + `hastack vip` (trackers every 100 ms on the local")
print("proxy's listener, weight 0, and on its `GET /ready`, weight 60). Scenario files:")
print("`scenarios/netns-classic.toml`, `scenarios/netns-hastack.toml`.\n")
print(f"Command: `bench/chaos-netns.sh{' --debug' if profile == 'debug' else ''} {n}` (root), i.e. {n} x")
print("`hastack chaos compare scenarios/netns-classic.toml scenarios/netns-hastack.toml`;")
print(f"medians (min-max) over {n} run(s); timelines identical: {'yes' if same else 'NO'}.\n")
print(f"Measured {today}, {profile} build, 2 vCPUs; load average {load0} before and {load1} after")
print(f"the runs, CPU steal {steal}%.\n")
print("| | classic (HAProxy + keepalived) | hastack (proxy + vip) |")
print("|---|---|---|")
for name, f, fm in rows:
    print(f"| {name} | {fm(col('a', f))} | {fm(col('b', f))} |")
print()
print("Client-observed downtime per fault (median over runs; detection = the component's own")
print("report: HAProxy's stats page / hastack proxy's `/status` for app faults, lb2's `hastack vip`")
print("`/status` turning master for front faults; keepalived has no status endpoint):\n")
print("| fault | classic downtime | hastack downtime | classic detection | hastack detection |")
print("|---|---|---|---|---|")
labels = [f["fault"]["label"] for f in runs[0]["b"]["faults"]]
for k, label in enumerate(labels):
    def dt(side):
        return fmt_s([r[side]["faults"][k]["downtime_s"] for r in runs])
    def det(side):
        xs = [r[side]["faults"][k]["detection_s"] for r in runs]
        xs = [x for x in xs if x is not None]
        return "-" if not xs else f"{med(xs):.3f} s"
    print(f"| {label} | {dt('a')} | {dt('b')} | {det('a')} | {det('b')} |")
print()
print("Notes: `kill` signals the process the harness started. For keepalived that is its parent")
print("process, whose VRRP child then withdraws the VIP gracefully (priority 0), so this timeline")
print("does not show keepalived's known hole (a SIGKILLed or frozen VRRP child keeps the VIP).")
print("A moving VIP resets the client's keep-alive connections to the old holder (counted as")
print("`reset`/`closed` failures), in both stacks. Both stacks track their balancer's readiness")
print("(a usable app server) with a weight larger than the priority gap, so lb1 does not preempt")
print("the VIP after its link comes back until its balancer has re-admitted the app servers.")
PY
echo "wrote the chaos-netns section of docs/benchmarks.md (also $OUT/section.md)" >&2
