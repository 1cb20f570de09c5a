#!/usr/bin/env bash
# Picker micro-benchmarks (criterion, crates/balance/benches/pick.rs): ns per pick for every
# strategy with 3, 10 and 100 candidates, with and without one excluded member, and the cost
# of rebuilding a picker. Writes a markdown table between the `pickers` markers of
# docs/benchmarks.md (creating the section if missing) and prints it.
#
# Usage: bench/pickers.sh            (run from anywhere; needs only cargo)
# Pinning: set PIN_CPU=1 to run the benchmark on CPU 1 (taskset), away from other work.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT

read -r _ u0 n0 s0 i0 w0 q0 sq0 st0 _ < /proc/stat
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cmd=(cargo bench -p hastack-balance --bench pick)
if [ "${PIN_CPU:-}" != "" ]; then
  cmd=(taskset -c "$PIN_CPU" "${cmd[@]}")
fi
echo "==> ${cmd[*]}" >&2
"${cmd[@]}" 2>&1 | tee "$out" >&2
read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ < /proc/stat
total=$(( (u1+n1+s1+i1+w1+q1+sq1+st1) - (u0+n0+s0+i0+w0+q0+sq0+st0) ))
steal_pct=$(awk -v s=$((st1-st0)) -v t="$total" 'BEGIN { printf "%.1f", (t > 0 ? 100*s/t : 0) }')
busy_pct=$(awk -v i=$(( (i1+w1) - (i0+w0) )) -v t="$total" 'BEGIN { printf "%.0f", (t > 0 ? 100*(1-i/t) : 0) }')

# "name ... time: [lo mid hi]" -> name<TAB>mid unit (criterion prints the name on its own line
# when it is long).
results=$(awk '
  /^(pick|pick_excluding_one|build|load)\// { name = $1 }
  /time:/ { for (i = 1; i <= NF; i++) if ($i == "time:") { print name "\t" $(i+3) " " $(i+4) } }
' "$out")

table() {
  local group=$1
  printf '| strategy | 3 | 10 | 100 |\n|---|---|---|---|\n'
  for s in round_robin random least_conn p2c_ewma maglev ketama; do
    printf '| %s' "$s"
    for n in 3 10 100; do
      v=$(printf '%s\n' "$results" | awk -F'\t' -v k="$group/$s/$n" '$1 == k { print $2 }')
      printf ' | %s' "${v:-?}"
    done
    printf ' |\n'
  done
}

lookup() {
  printf '%s\n' "$results" | awk -F'\t' -v k="$1" '$1 == k { print $2 }'
}

section=$(cat <<MD
<!-- pickers:begin -->
## Pickers (hastack-balance)

Criterion medians, one thread, picks over 3 / 10 / 100 candidates with mixed weights and
loads. \`pick\` is the common case; \`pick_excluding_one\` is a retry that excludes one member
(member 0); \`build\` is \`Picker::new\` (paid on health transitions, slow-start steps and
reloads, never per request).

Command: \`bench/pickers.sh\` (= \`${cmd[*]}\`), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown).
Machine during the run: load average ${load_before} before, ${busy_pct}% of all CPU time busy, ${steal_pct}% steal.

**pick** (time per pick)

$(table pick)

**pick_excluding_one**

$(table pick_excluding_one)

**build** (\`Picker::new\`)

$(table build)

**Load** (per member, on the data plane's path): \`Load::cost\` $(lookup load/cost),
\`Load::observe\` $(lookup load/observe).
<!-- pickers:end -->
MD
)

mkdir -p docs
doc=docs/benchmarks.md
[ -f "$doc" ] || printf '# Benchmarks\n' > "$doc"
if grep -q '<!-- pickers:begin -->' "$doc"; then
  tmp=$(mktemp)
  awk -v repl="$section" '
    /<!-- pickers:begin -->/ { print repl; skip = 1; next }
    /<!-- pickers:end -->/ { skip = 0; next }
    !skip { print }
  ' "$doc" > "$tmp"
  mv "$tmp" "$doc"
else
  printf '\n%s\n' "$section" >> "$doc"
fi
printf '%s\n' "$section"
