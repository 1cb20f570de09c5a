#!/usr/bin/env bash
# Coordination benchmarks: the embedded store (`hastack coord`, one process) vs a 3-member
# etcd 3.4 cluster (Debian's etcd-server), in the same run, on loopback:
#   * CAS (get + compare-and-swap txn) latency and throughput, 1 and 16 clients;
#   * lease keep-alive latency and throughput, 1 and 16 clients;
#   * watch fan-out: 1,000 watchers on one key, put -> the last watcher sees it;
#   * etcd: kill -9 of the leader -> first successful CAS of a client looping on CAS.
# Writes a markdown table between the `coord` markers of docs/benchmarks.md and prints it.
#
# Usage: bench/coord.sh                 (root: installs etcd-server with apt-get if missing)
#   BENCH_SECS=5 BENCH_KILLS=3 BENCH_WATCHERS=1000   per-measurement seconds, leader kills, watchers
#   SMOKE=1                                          1 s per measurement, 1 kill, 100 watchers,
#                                                    debug build, docs left untouched
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/common.sh

apt_need etcd-server

if [ "${SMOKE:-}" = 1 ]; then
  export BENCH_SECS=1 BENCH_KILLS=1 BENCH_WATCHERS=100
  cargo build -q -p hastack-cli
  export HASTACK_BIN=$PWD/target/debug/hastack
  profile=(--profile dev)
else
  cargo build -q --release -p hastack-cli
  export HASTACK_BIN=$PWD/target/release/hastack
  profile=()
fi
export BENCH_SECS=${BENCH_SECS:-5} BENCH_KILLS=${BENCH_KILLS:-3} BENCH_WATCHERS=${BENCH_WATCHERS:-1000}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
s0=$(steal_snapshot)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "==> cargo bench -p hastack-coord --bench coord (${BENCH_SECS}s per measurement)" >&2
cargo bench -q "${profile[@]}" -p hastack-coord --bench coord | tee "$out"
s1=$(steal_snapshot)
steal=$(steal_percent "$s0" "$s1")

if [ "${SMOKE:-}" = 1 ]; then
  echo "(smoke run: docs/benchmarks.md not updated)" >&2
  exit 0
fi

{
  cat <<MD
## coord: embedded store vs 3-member etcd

\`bench/coord.sh\` (BENCH_SECS=$BENCH_SECS, BENCH_KILLS=$BENCH_KILLS, BENCH_WATCHERS=$BENCH_WATCHERS), release build,
$(etcd --version | head -1), loopback, fsync on (etcd's default; redb's commits), 2 vCPUs
shared by the clients and the servers. Load average before: $load_before; CPU steal during the run: ${steal}%.
CAS = a get and a compare-and-swap transaction (a conflict retries); each client on its own
connection and key. Fan-out: watchers spread over 10 connections, one put, time until the
last watcher has the event. Leader kill: a client loops get+CAS on one key with a 500 ms
attempt timeout, preferring the leader's endpoint; time from kill -9 to the first CAS that
succeeds after it (etcd's election timeout is 1 s).

MD
  grep '^|' "$out"
} | python3 bench/lib/mdsection.py docs/benchmarks.md coord
echo "==> docs/benchmarks.md (coord section) updated" >&2
