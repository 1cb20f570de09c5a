#!/usr/bin/env bash
# Failover under load: kill -9 one of three app servers behind hastack proxy, HAProxy and
# nginx (each with its best failover settings), same machine, same open-loop load, runs
# interleaved. Measures, per run:
#   * failed requests (the chaos harness's open-loop client: no coordinated omission);
#   * stall: the longest latency of any request sent in the 2 s after the kill (with an
#     open-loop client, requests sent during a stall all complete when it ends, so this is
#     the longest gap the client saw);
#   * p99 latency of the requests sent in the second after the kill;
#   * detection: when the proxy's own status showed the member down (hastack /status,
#     HAProxy stats; nginx has none), from the harness's 20 ms event poll;
#   * tries sent to the dead member after the first second (hastack and HAProxy counters;
#     for nginx, which has no active checks, every SYN to the dead port is a live request);
#   * SYNs to the dead port after the first second (probes included), by an iptables counter.
# Writes docs/benchmarks.md section "proxy-failover".
#
#   bench/proxy-failover.sh               # REPEATS=3 RATE=1000 DURATION=20
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib/common.sh
need_root
apt_need haproxy nginx-light iptables curl
ulimit -n "$(ulimit -Hn)"
REPEATS=${REPEATS:-3}
RATE=${RATE:-1000}
DURATION=${DURATION:-20}
KILL_AT=${KILL_AT:-5}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

cargo build --release -q -p hastack-cli
HASTACK=$ROOT/target/release/hastack
WORK=$(mktemp -d /tmp/hastack-bench-failover.XXXXXX)
RULE=(INPUT -p tcp -d 127.0.0.1 --dport 21302 --syn -m comment --comment hastack-bench-failover -j ACCEPT)
cleanup() {
  iptables -D "${RULE[@]}" 2>/dev/null || true
  pkill -f "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
iptables -I "${RULE[@]}"
syns() { iptables -nvxL INPUT | awk '/hastack-bench-failover/ {print $1; exit}'; }

# --- the front tiers -----------------------------------------------------------------------
cat > "$WORK/hastack.toml" <<TOML
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:21390"
[[proxy.listeners]]
listen = "127.0.0.1:21380"
pool = "app"
[proxy.pools.app]
members = [{ addr = "127.0.0.1:21301", name = "app1" }, { addr = "127.0.0.1:21302", name = "app2" }, { addr = "127.0.0.1:21303", name = "app3" }]
strategy = "round_robin"
connect_timeout = "1s"
try_timeout = "5s"
[proxy.pools.app.health]
type = "http"
path = "/health"
interval = "1s"
timeout = "500ms"
TOML
cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 5s
  timeout check 500ms
  option http-keep-alive
  http-reuse always
  retries 3
  option redispatch 1
  retry-on all-retryable-errors
frontend web
  bind 127.0.0.1:21380
  default_backend app
backend app
  balance roundrobin
  option httpchk GET /health
  default-server inter 1s fall 3 rise 2 observe layer4 error-limit 1 on-error mark-down
  server app1 127.0.0.1:21301 check
  server app2 127.0.0.1:21302 check
  server app3 127.0.0.1:21303 check
listen stats
  bind 127.0.0.1:21391
  stats enable
  stats uri /stats
HAP
cat > "$WORK/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off;
  upstream app { server 127.0.0.1:21301 max_fails=1 fail_timeout=10s;
                 server 127.0.0.1:21302 max_fails=1 fail_timeout=10s;
                 server 127.0.0.1:21303 max_fails=1 fail_timeout=10s; keepalive 64; }
  server { listen 127.0.0.1:21380;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_connect_timeout 1s; proxy_read_timeout 5s;
                 proxy_next_upstream error timeout http_502 http_503 http_504; } }
}
NGX

scenario() { # proxy -> scenario file
  local p=$1 lb events
  case $p in
    hastack) lb="command = \"taskset\"
args = [\"-c\", \"$PROXY_CPU\", \"$HASTACK\", \"proxy\", \"--config\", \"$WORK/hastack.toml\"]
env = { HASTACK_LOG = \"warn\" }"
      events="[[chaos.events]]
type = \"json\"
url = \"http://127.0.0.1:21390/status\"
interval = \"20ms\"
members = \"/pools/app/members\"
name_field = \"name\"
state_field = \"state\"
down_states = [\"down\", \"ejected\"]" ;;
    haproxy) lb="command = \"taskset\"
args = [\"-c\", \"$PROXY_CPU\", \"haproxy\", \"-db\", \"-f\", \"$WORK/haproxy.cfg\"]"
      events="[[chaos.events]]
type = \"haproxy\"
url = \"http://127.0.0.1:21391/stats;csv\"
interval = \"20ms\"" ;;
    nginx) lb="command = \"taskset\"
args = [\"-c\", \"$PROXY_CPU\", \"nginx\", \"-c\", \"$WORK/nginx.conf\", \"-p\", \"$WORK\"]"
      events="" ;;
  esac
  cat > "$WORK/$p.scenario.toml" <<TOML
[chaos]
name = "failover-$p"
description = "kill -9 app2 of three behind $p"
duration = "${DURATION}s"
seed = 1
[chaos.load]
protocol = "http"
targets = ["127.0.0.1:21380"]
rate = $RATE
path = "/"
timeout = "5s"
connect_timeout = "1s"
[chaos.slo]
# Errors only: slowness is reported separately (stall, p99).
availability = 99.9
latency = "6s"
[chaos.report]
restore_window = "1s"
restore_ratio = 0.99
$(for i in 1 2 3; do printf '[[chaos.process]]\nname = "app%s"\ncommand = "%s"\nargs = ["app", "--listen", "127.0.0.1:2130%s", "--name", "app%s"]\nenv = { HASTACK_LOG = "warn" }\nready = { tcp = "127.0.0.1:2130%s" }\n\n' $i "$HASTACK" $i $i $i; done)
[[chaos.process]]
name = "lb"
$lb
ready = { http = "http://127.0.0.1:21380/" }
$events
[[chaos.timeline]]
at = "${KILL_AT}s"
target = "app2"
fault = "kill"
TOML
  echo "$WORK/$p.scenario.toml"
}

counter() { # proxy -> tries sent to app2 so far
  case $1 in
    hastack) curl -s 127.0.0.1:21390/metrics | awk -F' ' '/^hastack_proxy_member_requests_total\{pool="app",member="app2"\}/ {print $2}' ;;
    haproxy) curl -s "127.0.0.1:21391/stats;csv" | awk -F, '$1=="app" && $2=="app2" {print $8}' ;;
    nginx) echo "-" ;;
  esac
}

run_one() { # proxy run -> appends a result line
  local p=$1 r=$2 sc out
  sc=$(scenario "$p")
  out=$WORK/out-$p-$r
  mkdir -p "$out"
  taskset -c "$LOAD_CPU" "$HASTACK" --log warn chaos run "$sc" --out "$out" --json "$out/r.json" >"$out.log" 2>&1 &
  local harness=$!
  # Watch for the kill, then read the counters 1 s later and near the end.
  local t0 c1 s1 c2 s2
  # app2 must first be up (the harness starts it), then gone (the kill).
  until pgrep -f "listen 127.0.0.1:21302" >/dev/null; do sleep 0.01; done
  while pgrep -f "listen 127.0.0.1:21302" >/dev/null; do sleep 0.01; done
  t0=$(date +%s.%N)
  sleep 1
  c1=$(counter "$p" || echo 0); s1=$(syns)
  sleep "$(awk -v d="$DURATION" -v k="$KILL_AT" 'BEGIN{print d-k-1.8}')"
  c2=$(counter "$p" || echo 0); s2=$(syns)
  wait "$harness" || { echo "harness failed:" >&2; tail -5 "$out.log" >&2; }
  python3 - "$out/r.json" "$p" "$KILL_AT" "$c1" "$c2" "$s1" "$s2" >>"$WORK/results" <<'PY'
import json, sys
path, p, kill_at, c1, c2, s1, s2 = sys.argv[1], sys.argv[2], float(sys.argv[3]), *sys.argv[4:]
d = json.load(open(path))
failed = d["requests"]["failed"]
f = d["faults"][0]
win = [w for w in d["timeline"] if kill_at - 0.001 <= w["t_s"] < kill_at + 2]
stall = max((w["latency"]["max_ms"] or 0) for w in win)
p99 = [w["latency"]["p99_ms"] for w in d["timeline"] if abs(w["t_s"] - int(kill_at)) < 0.001][0]
det = f.get("detection_s")
tries = "-" if c1 == "-" else str(int(float(c2 or 0)) - int(float(c1 or 0)))
print(json.dumps({"proxy": p, "failed": failed, "stall_ms": stall, "p99_ms": p99,
                  "detect_ms": None if det is None else det * 1000, "tries": tries,
                  "syns": int(s2) - int(s1), "requests": d["requests"]["total"]}))
PY
  tail -1 "$WORK/results" >&2
}

: >"$WORK/results"
before=$(steal_snapshot)
for r in $(seq 1 "$REPEATS"); do
  for p in hastack haproxy nginx; do run_one "$p" "$r"; done
done
after=$(steal_snapshot)
steal=$(steal_percent "$before" "$after")

python3 - "$WORK/results" "$REPEATS" "$RATE" "$DURATION" "$KILL_AT" "$steal" "$(haproxy -v | awk 'NR==1{print $3}')" "$(nginx -v 2>&1 | sed 's#.*/##')" <<'PY' | python3 bench/lib/mdsection.py docs/benchmarks.md proxy-failover
import json, statistics, sys, datetime
path, repeats, rate, duration, kill_at, steal, hv, nv = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
def col(p, k):
    return [r[k] for r in rows if r["proxy"] == p]
def med(v):
    v = [x for x in v if isinstance(x, (int, float))]
    return statistics.median(v) if v else None
def fmt(x, nd=1):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))
names = {"hastack": "hastack proxy", "haproxy": f"HAProxy {hv} (retries 3, redispatch, retry-on all-retryable-errors, observe layer4 mark-down, inter 1s)", "nginx": f"nginx {nv} (proxy_next_upstream error timeout, max_fails=1 fail_timeout=10s)"}
print("## proxy: failover under load (kill -9 of one of three members)")
print()
print(f"Command: `REPEATS={repeats} RATE={rate} DURATION={duration} bench/proxy-failover.sh` on {datetime.date.today()}, CPU steal during the run {steal}%.")
print(f"Open-loop load of {rate} req/s (the chaos harness; latency counted from the intended send time) through one proxy")
print(f"worker pinned to its own CPU; three `hastack app` members; member app2 killed with SIGKILL at {kill_at} s and left dead.")
print("Medians of the runs (all runs in brackets).")
print()
print("| proxy | failed requests | stall: max latency in the 2 s after the kill (ms) | p99 in the second after the kill (ms) | detection by the proxy (ms) | tries sent to the dead member after the first second | SYNs to the dead port after the first second (probes included) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for p in ["hastack", "haproxy", "nginx"]:
    def cell(k, nd=1):
        vals = col(p, k)
        m = med(vals)
        allv = ", ".join(fmt(v, nd) if not isinstance(v, str) else v for v in vals)
        return f"{fmt(m, nd)} [{allv}]"
    tries = col(p, "tries")
    tries_cell = "- (no counter; see SYNs)" if all(t == "-" for t in tries) else f"{fmt(med([int(t) for t in tries if t != '-']), 0)} [{', '.join(tries)}]"
    print(f"| {names[p]} | {cell('failed', 0)} | {cell('stall_ms')} | {cell('p99_ms')} | {cell('detect_ms', 0)} | {tries_cell} | {cell('syns', 0)} |")
PY
echo "wrote docs/benchmarks.md (section proxy-failover)" >&2
