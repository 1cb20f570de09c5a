#!/usr/bin/env bash
# Overload benchmark of the guards: a backend of fixed capacity driven at 2x that capacity,
# adaptive concurrency off vs on (gradient2, vegas). Prints a markdown table for
# docs/benchmarks.md, plus the machine load and hypervisor steal seen during the run.
#
#   bench/overload.sh            # full run, ~90 s
#   bench/overload.sh --quick    # ~30 s, for a smoke test
set -euo pipefail
cd "$(dirname "$0")/.."

steal() { awk '/^cpu /{print $9}' /proc/stat; }
ticks() { awk '/^cpu /{s=0; for(i=2;i<=NF;i++) s+=$i; print s}' /proc/stat; }

cargo bench -p hastack-guard --bench overload --no-run >/dev/null 2>&1 || \
    cargo bench -p hastack-guard --bench overload --no-run
s0=$(steal); t0=$(ticks)
cargo bench -p hastack-guard --bench overload -- "$@"
s1=$(steal); t1=$(ticks)
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); steal during run: $(( 100 * (s1 - s0) / (t1 - t0 + 1) ))%; cpus: $(nproc)"
