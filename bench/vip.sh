#!/usr/bin/env bash
# Benchmark: client-observed outage of `hastack vip` vs keepalived (hard failure and graceful
# stop, adverts 1 s / 100 ms / 20 ms / 10 ms) and spurious transitions under CPU stress.
# Root only (network namespaces). Writes the vip section of docs/benchmarks.md (between its
# `<!-- bench:vip:begin/end -->` markers).
#
#   bench/vip.sh [--repeats N] [--stress-secs S] [--intervals 1000,100,20,10]
#
# Everything runs on this machine, in namespaces the script creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/vip.sh: must run as root (network namespaces)" >&2
  exit 1
fi

PACKAGES=(keepalived stress-ng iproute2 iptables iputils-ping)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# keepalived's own service must not run in the root namespace during the benchmark.
systemctl stop keepalived 2>/dev/null || true

echo "==> building (release)"
cargo build --release --locked -p hastack-cli --bin hastack
cargo build --release --locked -p hastack-vip --example vip_bench

CMD="bench/vip.sh $*"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "==> running (takes several minutes)"
target/release/examples/vip_bench --hastack target/release/hastack "$@" > "$out"
cat "$out"

# Replace (or append) the vip section of docs/benchmarks.md.
doc=docs/benchmarks.md
{
  echo "## vip"
  echo
  echo "Command: \`$CMD\` (as root; $(date -u +%Y-%m-%d), $(uname -r), keepalived $(keepalived --version 2>&1 | head -1 | awk '{print $2}'))."
  echo
  cat "$out"
} | python3 bench/lib/mdsection.py "$doc" vip
echo "==> wrote the ## vip section of $doc"
