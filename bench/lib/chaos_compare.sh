# Repeated `hastack chaos compare` for bench/chaos-*.sh (sourced).

# compare_runs BIN A B OUT REPEATS: REPEATS comparisons of scenarios A and B into
# OUT/run-N/ (compare.json, reports, logs), alternating which one runs first so that drift
# on a shared machine does not favour one side.
compare_runs() {
  local bin=$1 a=$2 b=$3 out=$4 repeats=$5 first second i
  for i in $(seq 1 "$repeats"); do
    if [ $((i % 2)) = 1 ]; then first=$a second=$b; else first=$b second=$a; fi
    echo "==> run $i/$repeats: $first then $second (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$bin" --log warn chaos compare "$first" "$second" \
      --out "$out/run-$i" --json "$out/run-$i/compare.json" >"$out/run-$i.txt" 2>"$out/run-$i.err"
    tail -n 22 "$out/run-$i.txt" >&2
  done
}

# publish OUT REPEATS SECTION: the section to docs/benchmarks.md when there are at least 3
# runs (a comparison is medians of at least 3), else only to OUT/section.md.
publish() {
  local out=$1 repeats=$2 section=$3
  if [ "$repeats" -ge 3 ]; then
    python3 bench/lib/mdsection.py docs/benchmarks.md "$section" <"$out/section.md"
    echo "wrote the $section section of docs/benchmarks.md (also $out/section.md)" >&2
  else
    echo "fewer than 3 runs: $out/section.md only, docs/benchmarks.md untouched" >&2
  fi
  cat "$out/section.md"
}
