#!/usr/bin/env bash
# Availability under the chaos timeline of scenarios/classic-haproxy.toml: HAProxy 2.6 in front
# of three hastack app servers. When this build has `hastack proxy`, the identical timeline
# also runs against it (scenarios/hastack-proxy.toml) and both are printed side by side.
#
# Usage: bench/chaos-classic.sh [--debug]   (release build by default)
# Output: $OUT (default bench-results/chaos): reports, charts, logs, compare.txt.
# Uses fixed loopback ports 8080, 9001-9003, 9900-9901, 19001-19003: run one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v haproxy >/dev/null || { echo "needs HAProxy: apt-get install -y haproxy" >&2; exit 1; }
if [ "${1:-}" = "--debug" ]; then
  cargo build -q -p hastack-cli
  BIN=target/debug/hastack
else
  cargo build -q --release -p hastack-cli
  BIN=target/release/hastack
fi
OUT=${OUT:-bench-results/chaos}
mkdir -p "$OUT"

cpu() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5, $9}' /proc/stat; }
read -r t0 idle0 steal0 < <(cpu)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

if "$BIN" proxy --help >/dev/null 2>&1; then
  "$BIN" --log warn chaos compare scenarios/classic-haproxy.toml scenarios/hastack-proxy.toml \
    --out "$OUT" --json "$OUT/compare.json"
else
  echo "this build has no \`hastack proxy\` yet: running the classic stack only" >&2
  "$BIN" --log warn chaos run scenarios/classic-haproxy.toml --out "$OUT/classic" \
    --json "$OUT/classic.json"
fi

read -r t1 idle1 steal1 < <(cpu)
dt=$((t1 - t0))
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); during the run: idle $((100 * (idle1 - idle0) / dt))%, steal $((100 * (steal1 - steal0) / dt))%"
