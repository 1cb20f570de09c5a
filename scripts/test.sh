#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs the system packages the tests need
# (real peers: haproxy, nginx, keepalived, etcd and etcdctl, redis-server, nutcracker; iptables/iproute2 for network namespaces), checks
# formatting and lints, then runs every test. Must run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: must run as root (it installs packages and builds network namespaces)" >&2
  exit 1
fi

PACKAGES=(haproxy nginx-light keepalived iptables iproute2 iputils-ping iputils-arping procps psmisc curl
  etcd-server etcd-client redis-server redis-tools nutcracker python3-redis)
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

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test"
exec cargo test --workspace --locked "$@"
