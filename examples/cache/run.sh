#!/usr/bin/env bash
# Two Redis shard groups (a: 6379 + replica 6380, b: 6381 + replica 6382) and
# hastack cache proxy on 127.0.0.1:7000 (admin 7001), all on loopback, no persistence.
# Ctrl-C stops them all. Needs redis-server (apt-get install redis-server redis-tools).
#
#   examples/cache/run.sh                 # uses target/release/hastack (cargo build --release)
#   HASTACK=target/debug/hastack examples/cache/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HASTACK=${HASTACK:-target/release/hastack}
[ -x "$HASTACK" ] || { echo "no $HASTACK: run cargo build --release first" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
DIR=$(mktemp -d /tmp/hastack-cache-example.XXXXXX)
PIDS=()
stop() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap stop EXIT
trap 'exit 0' INT TERM
for port in 6379 6380 6381 6382 7000 7001; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use (a system redis-server? systemctl stop redis-server)" >&2
    exit 1
  fi
done
redis() { # port [replicaof-port]
  local extra=()
  [ $# -gt 1 ] && extra=(--replicaof 127.0.0.1 "$2")
  mkdir -p "$DIR/$1"
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR/$1" \
    --logfile "$DIR/$1/redis.log" "${extra[@]}" &
  PIDS+=($!)
}
redis 6379; redis 6381; redis 6380 6379; redis 6382 6381
"$HASTACK" check examples/cache/proxy.toml
"$HASTACK" cache proxy --config examples/cache/proxy.toml &
PIDS+=($!)
echo "cache proxy on 127.0.0.1:7000 (admin http://127.0.0.1:7001/status); Ctrl-C stops everything" >&2
wait
