#!/usr/bin/env python
"""One table from the results the benchmark scripts left in bench/results/*.json."""
from __future__ import annotations

import os
import platform
import sys

from benchlib import fmt, load_results, print_table, with_cpu

HEADERS = ["suite", "case", "rows", "median ms", "p99 ms", "CPU ms", "throughput", "speedup vs pandas (CPU)",
           "ratio to floor/health (CPU)", "RSS MB", "+MB", "errors", "target", "status"]


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}; " \
           f"Python {platform.python_version()}; load average now {load}"


def table_rows() -> list[list[str]]:
    out = []
    inprocess = load_results("inprocess")
    for r in (inprocess or {}).get("rows", []):
        out.append(["in-process", r["case"], fmt(r["rows"]), fmt(r["median_ms"], "ms"), fmt(r["p99_ms"], "ms"),
                    fmt(r["cpu_ms"], "ms"), f"{fmt(r['rows_per_s'], 'int')} rows/s",
                    with_cpu(r["speedup_vs_pandas"], r.get("cpu_speedup_vs_pandas"), "x"),
                    with_cpu(r["ratio_to_floor"], r.get("cpu_ratio_to_floor"), ".2f"),
                    fmt(r.get("peak_rss_mb"), ".0f"), fmt(r.get("added_mb"), ".0f"),
                    "-", r.get("target", ""), r.get("status", "")])
    http = load_results("http")
    for r in (http or {}).get("rows", []):
        out.append(["http", r["case"], fmt(r.get("rows")), fmt(r["median_ms"], "ms"), fmt(r["p99_ms"], "ms"),
                    fmt(r.get("cpu_ms_per_req"), ".3f"), f"{fmt(r['rate'], 'int')} {r['rate_unit']}",
                    with_cpu(r.get("speedup_vs_pandas"), r.get("cpu_speedup_vs_pandas"), "x"),
                    with_cpu(r.get("ratio_to_health"), r.get("cpu_ratio_to_health"), ".2f"),
                    "-", "-", fmt(r.get("errors")),
                    r.get("target", ""), r.get("status", "")])
    memory = load_results("memory")
    for r in (memory or {}).get("rows", []):
        out.append(["memory", r["case"], fmt(r.get("rows")), "-", "-", "-", "-", "-", "-", fmt(r["rss_mb"], ".0f"),
                    fmt(r.get("added_mb"), ".0f"), "-", r.get("target", ""), r.get("status", "")])
    batch = load_results("batch")
    for r in (batch or {}).get("rows", []):
        ratio = with_cpu(r["vs_floor"], r.get("cpu_vs_floor"), ".2f") if "vs_floor" in r else "-"
        if "vs_csv" in r:
            ratio = f"{ratio}; x csv: {with_cpu(r['vs_csv'], r.get('cpu_vs_csv'), '.2f')}"
        if "vs_one_core" in r:
            ratio = f"x local[1]: {r['vs_one_core']:.2f}"
        out.append(["batch", r["case"], fmt(r.get("rows")), fmt(r["median_s"] * 1000, "ms") if "median_s" in r else "-",
                    "-", fmt(r["cpu_s"] * 1000, "ms") if "cpu_s" in r else "-",
                    f"{fmt(r['rows_per_s'], 'int')} rows/s" if "rows_per_s" in r else "-", "-", ratio,
                    fmt(r.get("peak_mb"), ".0f"), "-", "-", r.get("target", ""), r.get("status", "")])
    tricks = load_results("tricks")
    for r in (tricks or {}).get("rows", []):
        out.append(["trick", f"{r['trick']} ({r['path']})", "-", "-", "-", "-", "-", "-",
                    f"saves {r['share_cpu']:.0%} CPU, {r['share_wall']:.0%} wall", "-", "-", "-",
                    "saves >= 10% of its path", "ok" if r["share_cpu"] >= 0.10 else "MISSED"])
    return out


def main() -> int:
    rows = table_rows()
    if not rows:
        print("no results yet in bench/results/; run bench/run_all.sh")
        return 1
    print(f"machine: {machine()}")
    print("ratios are medians of per-round ratios of interleaved runs, from wall time and (in parentheses)\n"
          "from CPU time: in-process the benchmark's own, over HTTP the server's (master and workers) per\n"
          "request; CPU-time ratios are steadier when other work shares the cores.  HTTP latencies are wrk's p50/p99.")
    print_table(HEADERS, rows)
    http = load_results("http") or {}
    if http.get("best_config"):
        print(f"best gunicorn setting for single-record throughput: {http['best_config']}")
    if http.get("errors"):
        print("HTTP errors: " + "; ".join(http["errors"]))
    judged = [r for r in rows if r[-1]]
    met = [r for r in judged if r[-1] == "ok"]
    split = [r for r in judged if r[-1].startswith("ok by")]
    missed = [r for r in judged if r not in met and r not in split]
    print(f"targets: {len(met)} met, {len(split)} met by one measure only, {len(missed)} missed")
    for label, group in (("met by one measure only", split), ("missed", missed)):
        for r in group:
            print(f"  {label}: {r[1]} ({r[-2]}): {r[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
