#!/usr/bin/env bash
# Throughput and latency through hastack proxy, HAProxy and nginx in front of the same
# backends, same machine, same run. Each proxy gets one core (CPU 0) and one worker thread;
# wrk and the backends share the other core (CPU 1). Runs are interleaved (A B C A B C ...)
# and medians reported. Results go to docs/benchmarks.md (section "proxy").
#
#   bench/proxy.sh                      # defaults: DURATION=10 REPEATS=5 CONNS=64
#   DURATION=5 REPEATS=1 bench/proxy.sh # quick smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib/common.sh
need_root
apt_need haproxy nginx-light wrk
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-5}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-0}
ulimit -n "$(ulimit -Hn)"
LOAD_CPU=${LOAD_CPU:-1}

cargo build --release -q -p hastack-cli
HASTACK=$ROOT/target/release/hastack
WORK=$(mktemp -d /tmp/hastack-bench-proxy.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- backends: one nginx, three ports, tiny fixed answer -------------------------------
cat > "$WORK/backend.conf" <<NGX
daemon off; worker_processes 1; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:21101 reuseport; location / { return 200 "b1\n"; } }
  server { listen 127.0.0.1:21102 reuseport; location / { return 200 "b2\n"; } }
  server { listen 127.0.0.1:21103 reuseport; location / { return 200 "b3\n"; } }
}
NGX
taskset -c "$LOAD_CPU" nginx -c "$WORK/backend.conf" -p "$WORK" &
PIDS+=($!)
wait_port 127.0.0.1 21103

# --- the three proxies, comparable settings ---------------------------------------------
cat > "$WORK/hastack.toml" <<TOML
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:21190"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:21180"
pool = "app"
[proxy.pools.app]
members = ["127.0.0.1:21101", "127.0.0.1:21102", "127.0.0.1:21103"]
strategy = "round_robin"
[proxy.pools.app.health]
type = "http"
path = "/"
interval = "2s"
TOML
cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend web
  bind 127.0.0.1:21180
  default_backend app
backend app
  balance roundrobin
  option httpchk GET /
  server b1 127.0.0.1:21101 check inter 2s
  server b2 127.0.0.1:21102 check inter 2s
  server b3 127.0.0.1:21103 check inter 2s
HAP
cat > "$WORK/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 10000; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:21101; server 127.0.0.1:21102; server 127.0.0.1:21103; keepalive 128; }
  server { listen 127.0.0.1:21180;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } }
}
NGX

start_proxy() {
  case $1 in
    hastack) HASTACK_LOG=warn taskset -c "$PROXY_CPU" "$HASTACK" proxy --config "$WORK/hastack.toml" & ;;
    haproxy) taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" & ;;
    nginx)   taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -p "$WORK" & ;;
  esac
  PROXY_PID=$!
  wait_port 127.0.0.1 21180
  sleep 0.5
}
stop_proxy() {
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  # nginx master/worker and haproxy exit on SIGTERM; make sure the port is free
  for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/21180) 2>/dev/null || break; sleep 0.02; done
}

# CPU time (user+sys, clock ticks) of the process doing the proxying: for nginx its worker.
proxy_pid() {
  case $1 in
    nginx) pgrep -P "$PROXY_PID" | head -1 ;;
    *) echo "$PROXY_PID" ;;
  esac
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_wrk() { # proxy -> "rps p50ms p99ms non2xx cpu_us_per_request"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s http://127.0.0.1:21180/ >/dev/null  # warm-up
  local out pid c0 c1 hz
  pid=$(proxy_pid "$1")
  hz=$(getconf CLK_TCK)
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency http://127.0.0.1:21180/)
  c1=$(cpu_ticks "$pid")
  local rps p50 p99 bad
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  bad=$(echo "$out" | awk '/Non-2xx/ {print $5} END {}' | head -1)
  local n cpu
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v n="$n" 'BEGIN{printf "%.2f", (b-a)/hz*1e6/n}')
  echo "$rps $p50 $p99 ${bad:-0} $cpu"
}

PROXIES=(hastack haproxy nginx)
declare -A RPS P50 P99 CPU
before=$(steal_snapshot)
for r in $(seq 1 "$REPEATS"); do
  for p in "${PROXIES[@]}"; do
    start_proxy "$p"
    read -r rps p50 p99 bad cpu < <(run_wrk "$p")
    stop_proxy
    echo "run $r $p: $rps req/s p50 ${p50}ms p99 ${p99}ms non-2xx $bad cpu ${cpu}us/req" >&2
    RPS[$p]+="$rps "; P50[$p]+="$p50 "; P99[$p]+="$p99 "; CPU[$p]+="$cpu "
  done
done
after=$(steal_snapshot)
steal=$(steal_percent "$before" "$after")

med() { echo "$1" | tr ' ' '\n' | grep -v '^$' | median; }
declare -A MR MP50 MP99 MCPU
for p in "${PROXIES[@]}"; do MR[$p]=$(med "${RPS[$p]}"); MP50[$p]=$(med "${P50[$p]}"); MP99[$p]=$(med "${P99[$p]}"); MCPU[$p]=$(med "${CPU[$p]}"); done
ratio_cpu=$(awk -v a="${MCPU[hastack]}" -v b="${MCPU[haproxy]}" 'BEGIN{printf "%.2f", a/b}')
ratio_rps=$(awk -v a="${MR[hastack]}" -v b="${MR[haproxy]}" 'BEGIN{printf "%.2f", a/b}')
ratio_p99=$(awk -v a="${MP99[hastack]}" -v b="${MP99[haproxy]}" 'BEGIN{printf "%.2f", a/b}')
ratio_rps_nginx=$(awk -v a="${MR[hastack]}" -v b="${MR[nginx]}" 'BEGIN{printf "%.2f", a/b}')

{
  echo "## proxy: throughput and latency"
  echo
  echo "Command: \`DURATION=$DURATION REPEATS=$REPEATS CONNS=$CONNS bench/proxy.sh\` on $(date -u +%Y-%m-%d), $(nproc) vCPUs, CPU steal during the run ${steal}%."
  echo "Each proxy: one worker thread pinned to CPU $PROXY_CPU; wrk (1 thread, $CONNS keep-alive connections) and the"
  echo "three nginx backends (\`return 200\`) pinned to CPU $LOAD_CPU; round robin; X-Forwarded-For added by all three;"
  echo "runs interleaved, medians of $REPEATS runs of ${DURATION}s."
  echo
  echo "| proxy | req/s (median) | p50 ms | p99 ms | proxy CPU per request, us (median) | all runs req/s |"
  echo "|---|---:|---:|---:|---:|---|"
  for p in "${PROXIES[@]}"; do
    name=$p; [ "$p" = haproxy ] && name="HAProxy $(haproxy -v | awk 'NR==1{print $3}')"; [ "$p" = nginx ] && name="nginx $(nginx -v 2>&1 | sed 's#.*/##')"
    echo "| $name | ${MR[$p]} | ${MP50[$p]} | ${MP99[$p]} | ${MCPU[$p]} | ${RPS[$p]}|"
  done
  echo
  echo "**hastack / HAProxy: throughput ${ratio_rps}x, p99 ${ratio_p99}x, CPU per request ${ratio_cpu}x** (target: throughput >= 1.0x, p99 <= 1.0x). hastack / nginx throughput: ${ratio_rps_nginx}x."
  echo
  echo "Both CPUs are saturated during every run (the proxy's, and the one wrk shares with the backends), so"
  echo "req/s moves by +-10% from run to run for every proxy; the CPU time the proxy spends per request"
  echo "(user + system, from /proc, for nginx its worker) is the steadier comparison."
} | python3 bench/lib/mdsection.py docs/benchmarks.md proxy
echo "wrote docs/benchmarks.md (section proxy)" >&2
