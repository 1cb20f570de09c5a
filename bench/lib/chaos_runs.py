#!/usr/bin/env python3
"""Tables for a repeated `hastack chaos compare`: medians (min-max) and every run.

usage: chaos_runs.py OUT REPEATS CLASSIC_NAME LOAD_BEFORE
Reads OUT/run-N/compare.json (N = 1..REPEATS, written by `hastack chaos compare --json`);
a run's two reports are told apart by scenario name (CLASSIC_NAME is the classic side's),
so the order of the two stacks may alternate between runs. Prints Markdown on stdout,
starting with a "provisional" warning when the 1-minute LOAD_BEFORE was above half the CPUs.
"""
import json
import os
import statistics
import sys

out, n, classic_name, load_before = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if float(load_before.split()[0]) > os.cpu_count() / 2:
    print(f"**Provisional: measured under load** (1-minute load average {load_before.split()[0]} on "
          f"{os.cpu_count()} CPUs, other jobs running); rerun on a quiet machine for final figures.\n")
runs = []
for i in range(1, n + 1):
    c = json.load(open(f"{out}/run-{i}/compare.json"))
    a, b = c["a"], c["b"]
    classic, hastack = (a, b) if a["scenario"] == classic_name else (b, a)
    runs.append({"classic": classic, "hastack": hastack, "same": c["same_timeline"]})
med = statistics.median


def spread(xs, f, unit=""):
    """`median unit (min-max)`, just `value unit` when every run agrees, `-` without values."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    lo, mid, hi = f(min(xs)), f(med(xs)), f(max(xs))
    if lo == hi:
        return f"{mid}{unit}"
    return f"{mid}{unit} ({lo}-{hi})"


def col(side, get):
    vals = []
    for r in runs:
        try:
            vals.append(get(r[side]))
        except (KeyError, TypeError, IndexError):
            vals.append(None)
    return vals


sec = lambda x: f"{x:.3f}"
num = lambda x: f"{x:g}"
pct = lambda x: f"{100 * x:.3f}"
ms = lambda x: f"{x:.1f}"
nines = lambda x: f"{x:.2f}"
score = lambda x: f"{x:.4f}"

rows = [
    ("failed requests", lambda r: r["requests"]["failed"], num, ""),
    ("lost request-seconds (failed / rate)", lambda r: r["lost_request_s"], sec, " s"),
    ("... of which unattributed", lambda r: r["unattributed"]["lost_request_s"], sec, " s"),
    ("availability", lambda r: r["availability"], pct, "%"),
    ("nines, 95% lower bound", lambda r: r["confidence"]["nines_supported"], nines, ""),
    ("recovery p50", lambda r: r["recovery"]["p50"], sec, " s"),
    ("recovery max", lambda r: r["recovery"]["max"], sec, " s"),
    ("latency p50", lambda r: r["latency"]["p50_ms"], ms, " ms"),
    ("latency p99", lambda r: r["latency"]["p99_ms"], ms, " ms"),
    ("latency max", lambda r: r["latency"]["max_ms"], ms, " ms"),
    ("fault score (lost request-min x weight)", lambda r: r["fault_score"], score, ""),
]
total = runs[0]["classic"]["requests"]["total"]
print(f"Medians (min-max) over {n} runs of {total} requests each; timelines identical in every run: "
      f"{'yes' if all(r['same'] for r in runs) else 'NO'}. The nines row is what one run of this size")
print(f"supports at 95% confidence (Wilson; at most {runs[0]['classic']['confidence']['nines_max']:.2f} "
      "with no failure at all).\n")
print("| | classic | hastack |")
print("|---|---:|---:|")
for name, get, f, unit in rows:
    print(f"| {name} | {spread(col('classic', get), f, unit)} | {spread(col('hastack', get), f, unit)} |")
print()
print("Every run (failed requests / lost request-seconds / latency p99):\n")
print("| run | classic | hastack |")
print("|---:|---:|---:|")
for i, r in enumerate(runs, 1):
    def cell(x):
        return f"{x['requests']['failed']} / {x['lost_request_s']:.3f} s / {x['latency']['p99_ms']:.1f} ms"
    print(f"| {i} | {cell(r['classic'])} | {cell(r['hastack'])} |")
print()
print("Per fault: lost request-seconds / failed requests, and detection (the component's own")
print("report that it noticed), medians over the runs:\n")
print("| fault | classic lost | hastack lost | classic detection | hastack detection |")
print("|---|---:|---:|---:|---:|")
for k, f in enumerate(runs[0]["hastack"]["faults"]):
    label = f["fault"]["label"]

    def lost(side):
        xs = col(side, lambda r: r["faults"][k]["lost_request_s"])
        fs = col(side, lambda r: r["faults"][k]["failed_requests"])
        return f"{spread(xs, sec, ' s')} / {spread(fs, num)}"

    def det(side):
        xs = col(side, lambda r: r["faults"][k]["detection_s"])
        seen = sum(x is not None for x in xs)
        return spread(xs, sec, " s") + ("" if seen in (0, n) else f", in {seen} of {n} runs")

    print(f"| {label} | {lost('classic')} | {lost('hastack')} | {det('classic')} | {det('hastack')} |")
