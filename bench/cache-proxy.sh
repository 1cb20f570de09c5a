#!/usr/bin/env bash
# The sharding Redis proxy: redis-benchmark GET/SET, pipelined (-P 16) and not, through
# hastack cache proxy vs twemproxy (Debian nutcracker) over the same two redis-servers, and
# straight to one redis-server, same machine, same run. The proxy gets one core (CPU 0) and
# one worker thread; redis-benchmark and the redis-servers share the other (CPU 1). Runs are
# interleaved (direct, hastack, twemproxy, ...) and medians reported. Then a dead-shard
# check: 10,000 keys placed through hastack, one shard killed (kill -9), every key read back.
# Results go to docs/benchmarks.md (section "cache-proxy").
#
#   bench/cache-proxy.sh                         # defaults: REQUESTS=200000 REPEATS=5 CLIENTS=50
#   REQUESTS=20000 REPEATS=1 bench/cache-proxy.sh   # quick smoke run
#   HASTACK=target/debug/hastack ...             # use a prebuilt binary (figures then say so)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib/common.sh
need_root
apt_need redis-server redis-tools nutcracker python3-redis
REQUESTS=${REQUESTS:-200000}
REPEATS=${REPEATS:-5}
CLIENTS=${CLIENTS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ulimit -n "$(ulimit -Hn)"

if [ -z "${HASTACK:-}" ]; then
  cargo build --release -q -p hastack-cli
  HASTACK=$ROOT/target/release/hastack
  BUILD="release build"
else
  HASTACK=$(readlink -f "$HASTACK")
  BUILD="prebuilt binary $HASTACK (not necessarily a release build)"
fi
WORK=$(mktemp -d /tmp/hastack-bench-cache.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${PROXY_PID:-}" ] && kill -9 "$PROXY_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

A=21201; B=21202; PORT=21280; ADMIN=21290
start_redis() { # port (daemonized: no job-control noise when the dead-shard check kills it)
  taskset -c "$LOAD_CPU" redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis-$1.log" --daemonize yes --pidfile "$WORK/redis-$1.pid"
  wait_port 127.0.0.1 "$1"
  # Redis writes its pid file after it starts listening: wait for it too.
  for _ in $(seq 1 500); do [ -s "$WORK/redis-$1.pid" ] && break; sleep 0.01; done
  local pid
  pid=$(cat "$WORK/redis-$1.pid")
  PIDS+=("$pid")
  eval "REDIS_PID_$1=$pid"
}
start_redis $A
start_redis $B

cat > "$WORK/hastack.toml" <<TOML
[cache.proxy]
listen = "127.0.0.1:$PORT"
admin = "127.0.0.1:$ADMIN"
workers = 1
[cache.proxy.health]
interval = "1s"
[[cache.proxy.shards]]
name = "a"
master = "127.0.0.1:$A"
[[cache.proxy.shards]]
name = "b"
master = "127.0.0.1:$B"
TOML
# twemproxy as its docs suggest for Redis: one pipelined connection per server, no ejection
# (a dead server answers errors, like our dead shard; ejection would rehash).
cat > "$WORK/nutcracker.yml" <<YML
alpha:
  listen: 127.0.0.1:$PORT
  hash: fnv1a_64
  distribution: ketama
  redis: true
  timeout: 1000
  server_connections: 1
  auto_eject_hosts: false
  servers:
    - 127.0.0.1:$A:1
    - 127.0.0.1:$B:1
YML

start_target() {
  case $1 in
    direct) TARGET_PORT=$A; PROXY_PID= ;;
    hastack)
      HASTACK_LOG=warn taskset -c "$PROXY_CPU" "$HASTACK" cache proxy --config "$WORK/hastack.toml" &
      PROXY_PID=$!; TARGET_PORT=$PORT; wait_port 127.0.0.1 $PORT ;;
    twemproxy)
      taskset -c "$PROXY_CPU" nutcracker -c "$WORK/nutcracker.yml" -o "$WORK/nutcracker.log" -s 21291 &
      PROXY_PID=$!; TARGET_PORT=$PORT; wait_port 127.0.0.1 $PORT ;;
  esac
}
stop_target() {
  [ -n "$PROXY_PID" ] || return 0
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || break; sleep 0.02; done
  PROXY_PID=
}

# redis-benchmark --csv: "test","rps","avg","min","p50","p95","p99","max"
bench_one() { # port pipeline -> lines "TEST rps p99"
  taskset -c "$LOAD_CPU" redis-benchmark -h 127.0.0.1 -p "$1" -t set,get -n "$REQUESTS" \
    -c "$CLIENTS" -r 100000 -P "$2" --csv 2>/dev/null \
    | awk -F, 'NR>1 {gsub(/"/,""); print $1, $2, $7}'
}

TARGETS=(direct hastack twemproxy)
declare -A R
before=$(steal_snapshot)
for r in $(seq 1 "$REPEATS"); do
  for t in "${TARGETS[@]}"; do
    start_target "$t"
    for pl in 1 16; do
      while read -r test rps p99; do
        echo "run $r $t -P $pl $test: $rps req/s p99 ${p99}ms" >&2
        R[$t,$pl,$test,rps]+="$rps "; R[$t,$pl,$test,p99]+="$p99 "
      done < <(bench_one "$TARGET_PORT" "$pl")
    done
    stop_target
  done
done
after=$(steal_snapshot)
steal=$(steal_percent "$before" "$after")
med() { echo "$1" | tr ' ' '\n' | grep -v '^$' | median; }

# --- dead shard: placement before and after, misses, detection -------------------------
start_target hastack
# Debian's interpreter: python3-redis is installed for it (not for a pyenv/venv python).
DEAD=$(/usr/bin/python3 - "$PORT" "$A" "$B" "$ADMIN" "$REDIS_PID_21202" <<'PY'
import sys, time, os, signal, json, urllib.request
import redis
port, a, b, admin, bpid = (int(x) for x in sys.argv[1:])
p = redis.Redis(port=port); ra = redis.Redis(port=a); rb = redis.Redis(port=b)
ra.flushall(); rb.flushall()  # the benchmark's keys
N = 10000
keys = ["key:%d" % i for i in range(N)]
pipe = p.pipeline(transaction=False)
for k in keys: pipe.set(k, "v-" + k)
assert all(pipe.execute())
on_a = set(x.decode() for x in ra.scan_iter(count=1000))
on_b = set(x.decode() for x in rb.scan_iter(count=1000))
assert len(on_a) + len(on_b) == N and not (on_a & on_b)
b_key = next(iter(on_b))
os.kill(bpid, signal.SIGKILL)
t0 = time.monotonic()
while p.get(b_key) is not None: pass
first_miss_ms = (time.monotonic() - t0) * 1000
while json.load(urllib.request.urlopen("http://127.0.0.1:%d/status" % admin))["shards"][1]["state"] != "down":
    time.sleep(0.005)
marked_ms = (time.monotonic() - t0) * 1000
pipe = p.pipeline(transaction=False)
for k in keys: pipe.get(k)
vals = pipe.execute(raise_on_error=False)
a_ok = sum(1 for k, v in zip(keys, vals) if k in on_a and v == ("v-" + k).encode())
a_bad = sum(1 for k, v in zip(keys, vals) if k in on_a and v != ("v-" + k).encode())
b_miss = sum(1 for k, v in zip(keys, vals) if k in on_b and v is None)
b_other = sum(1 for k, v in zip(keys, vals) if k in on_b and v is not None)
after_a = set(x.decode() for x in ra.scan_iter(count=1000))
moved = len(after_a ^ on_a)
print(N, len(on_a), len(on_b), a_ok, a_bad, b_miss, b_other, moved, "%.1f" % first_miss_ms, "%.1f" % marked_ms)
PY
)
stop_target
read -r N NA NB AOK ABAD BMISS BOTHER MOVED FIRST MARKED <<<"$DEAD"

{
  echo "## cache-proxy: sharding Redis proxy vs twemproxy vs direct Redis"
  echo
  echo "Command: \`REQUESTS=$REQUESTS REPEATS=$REPEATS CLIENTS=$CLIENTS bench/cache-proxy.sh\` on $(date -u +%Y-%m-%d), $(nproc) vCPUs, CPU steal during the run ${steal}%; hastack: $BUILD."
  echo "Two redis-servers ($(redis-server --version | awk '{print $3}' | tr -d 'v=')) and redis-benchmark ($CLIENTS clients, random keys over 100,000) pinned to CPU $LOAD_CPU;"
  echo "hastack cache proxy (one worker) and twemproxy ($(nutcracker --version 2>&1 | awk '{print $NF}' | head -1), one connection per server) pinned to CPU $PROXY_CPU;"
  echo "\"direct\" is redis-benchmark against one of the two redis-servers. Runs interleaved, medians of $REPEATS."
  if [ -n "${PROVISIONAL:-}" ]; then
    echo
    echo "**Provisional: $PROVISIONAL.** Not a final figure; the final command is in the lead's list."
  fi
  echo
  echo "| target | pipeline | SET req/s | SET p99 ms | GET req/s | GET p99 ms | all runs GET req/s |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for pl in 1 16; do
    for t in "${TARGETS[@]}"; do
      echo "| $t | $pl | $(med "${R[$t,$pl,SET,rps]}") | $(med "${R[$t,$pl,SET,p99]}") | $(med "${R[$t,$pl,GET,rps]}") | $(med "${R[$t,$pl,GET,p99]}") | ${R[$t,$pl,GET,rps]}|"
    done
  done
  echo
  for pl in 1 16; do
    rs=$(awk -v a="$(med "${R[hastack,$pl,SET,rps]}")" -v b="$(med "${R[twemproxy,$pl,SET,rps]}")" 'BEGIN{printf "%.2f", a/b}')
    rg=$(awk -v a="$(med "${R[hastack,$pl,GET,rps]}")" -v b="$(med "${R[twemproxy,$pl,GET,rps]}")" 'BEGIN{printf "%.2f", a/b}')
    echo "**-P $pl: hastack / twemproxy throughput SET ${rs}x, GET ${rg}x** (target >= 1.0x)."
    echo
  done
  echo "Dead shard (kill -9 of shard b's redis-server under hastack, health interval 1s): $N keys placed ($NA on a, $NB on b);"
  echo "first miss for a b-key ${FIRST} ms after the kill (passive detection), shard marked down in /status after ${MARKED} ms;"
  echo "a-keys read back intact: $AOK, wrong: $ABAD; b-keys answered as misses: $BMISS, otherwise: $BOTHER;"
  echo "keys moved on shard a (placement before vs after): $MOVED. **Keys of other shards affected: $ABAD** (target 0)."
} | python3 bench/lib/mdsection.py docs/benchmarks.md cache-proxy
echo "wrote docs/benchmarks.md (section cache-proxy)" >&2
