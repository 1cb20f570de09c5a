# Shared helpers for bench/*.sh (sourced).

need_root() {
  if [ "$(id -u)" != 0 ]; then echo "$0: run as root (installs packages, pins CPUs)" >&2; exit 1; fi
}

# apt_need PKG... : install missing Debian packages.
apt_need() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# cpu steal jiffies so far (8th field of the cpu line of /proc/stat) and total jiffies
steal_snapshot() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat; }
steal_percent() { # before-snapshot after-snapshot
  echo "$1 $2" | awk '{ds=$3-$1; dt=$4-$2; if (dt>0) printf "%.1f", 100*ds/dt; else print "0"}'
}

# wait until TCP port $2 on host $1 accepts, up to 10 s
wait_port() {
  for _ in $(seq 1 1000); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "port $1:$2 never opened" >&2; return 1
}

# wrk's latency value in ms ("812.00us", "1.20ms", "2.01s")
to_ms() {
  awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); printf "%.3f", v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.3f", v} else if (v ~ /s$/) {sub(/s$/,"",v); printf "%.3f", v*1000} else print v}'
}
