"""The Spark engine against the local engine on one file: steady rates with start-up taken off.

Each case is `score.py` run as a user runs it, in a child process, on the big file and on its
first 1,000 rows; the 1,000-row run is the case's fixed cost (the JVM, the session, the Python
workers, the model), and its steady rate is (rows - 1,000) / (time - fixed time).  Cases run in
interleaved rounds (the order rotates each round); a ratio is the median of the per-round
ratios.  Before timing, each Spark case's scores are checked against the local engine's (1e-12).

Targets (on the machine's 2 cores):
  * Spark local[2] on CSV at least 0.5x the local engine's steady rate on the same CSV;
  * local[1] -> local[2] at least 1.6x;
  * Parquet in at least as fast as CSV in (Spark local[2]).

    .venv/bin/python bench/spark_bench.py [--rows 1000000] [--rounds 2] [--strict]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import PYTHON, RESULTS_DIR, ROOT, TOLERANCE, fmt, median, print_table, save_results, say

import pyarrow.parquet as pq  # noqa: E402

from batch_bench import csv_file, parquet_file, spark_available  # noqa: E402

HEAD_ROWS = 1_000
TARGET_VS_LOCAL = 0.5
TARGET_SCALING = 1.6
TARGET_PARQUET_VS_CSV = 1.0

# name: (engine arguments, input format)
CASES = {
    "local engine, CSV": ([], "csv"),
    "spark local[1], CSV": (["--engine", "spark", "--master", "local[1]"], "csv"),
    "spark local[2], CSV": (["--engine", "spark", "--master", "local[2]"], "csv"),
    "spark local[2], Parquet": (["--engine", "spark", "--master", "local[2]"], "parquet"),
}


def _tree_cpu(root: int, seen: dict[int, float]) -> None:
    """Note the CPU seconds so far of `root` and every process under it (the JVM, its Python
    workers), read from /proc; a process keeps its last reading after it ends."""
    parents, times = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    for pid in tree & times.keys():
        seen[pid] = times[pid]


def run_score(arguments: list[str]) -> tuple[float, float]:
    """`score.py` in a child process: its wall time and the CPU time of it and everything it
    started (the JVM, the Python workers), which other work on the machine does not inflate."""
    seen: dict[int, float] = {}
    started = time.perf_counter()
    child = subprocess.Popen([str(PYTHON), str(ROOT / "score.py"), *arguments], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    while child.poll() is None:
        _tree_cpu(child.pid, seen)
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    stderr = child.stderr.read()
    if child.returncode:
        raise RuntimeError(f"score.py {' '.join(arguments)} failed ({child.returncode}):\n{stderr[-3000:]}")
    return seconds, sum(seen.values())


def source(kind: str, rows: int) -> Path:
    return csv_file(rows) if kind == "csv" else parquet_file(rows)


def output(scratch: Path, name: str, engine: list[str]) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return scratch / (slug if engine else f"{slug}.parquet")


def read_scores(path: Path):
    table = pq.ParquetDataset(path).read() if path.is_dir() else pq.read_table(path)
    return table.sort_by("row")


def check(rows: int, scratch: Path) -> None:
    """Every Spark case gives the local engine's scores, row for row, to 1e-12."""
    expected = None
    for name, (engine, kind) in CASES.items():
        out = output(scratch, name, engine)
        run_score([str(source(kind, rows)), "-o", str(out), "--no-progress", *engine])
        got = read_scores(out)
        if expected is None:
            expected = got
            continue
        assert got.column_names == expected.column_names, name
        assert got.column("row").equals(expected.column("row")), name
        worst = max(float(np.max(np.abs(got.column(c).to_numpy() - expected.column(c).to_numpy())))
                    for c in expected.column_names[1:] if c not in ("model_version", "scored_at"))
        assert worst <= TOLERANCE, f"{name}: differs from the local engine by {worst:g}"
        say(f"  {name}: {got.num_rows:,} rows equal the local engine's (largest difference {worst:.1e})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # A million rows: the steady part of a run (seconds) then outweighs the round-to-round noise
    # of the fixed part it is measured against.
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    reason = spark_available()
    if reason:
        say(f"Spark cannot run here: {reason}")
        return 1
    scratch = RESULTS_DIR / "spark-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = time.monotonic()
    times: dict[tuple[str, int], list[float]] = {(n, r): [] for n in CASES for r in (args.rows, HEAD_ROWS)}
    cpu: dict[tuple[str, int], list[float]] = {(n, r): [] for n in CASES for r in (args.rows, HEAD_ROWS)}
    try:
        say(f"== Spark against the local engine: {args.rows:,} rows and a {HEAD_ROWS:,}-row head, "
            f"{args.rounds} interleaved rounds")
        say(f"-- the check ({HEAD_ROWS * 20:,} rows)")
        check(HEAD_ROWS * 20, scratch)
        for kind in ("csv", "parquet"):           # every case reads files the system has cached
            for rows in (HEAD_ROWS, args.rows):
                with open(source(kind, rows), "rb") as handle:
                    while handle.read(1 << 24):
                        pass
        names = list(CASES)
        for number in range(args.rounds):
            order = names[number % len(names):] + names[:number % len(names)]
            for name in order:
                engine, kind = CASES[name]
                for rows in (HEAD_ROWS, args.rows):
                    out = output(scratch, name, engine)
                    seconds, used = run_score([str(source(kind, rows)), "-o", str(out), "--no-progress", *engine])
                    times[(name, rows)].append(seconds)
                    cpu[(name, rows)].append(used)
                fixed, whole = times[(name, HEAD_ROWS)][-1], times[(name, args.rows)][-1]
                cpu_steady = cpu[(name, args.rows)][-1] - cpu[(name, HEAD_ROWS)][-1]
                say(f"  round {number + 1}/{args.rounds}, {name}: {whole:.1f} s, fixed {fixed:.1f} s, "
                    f"steady {(args.rows - HEAD_ROWS) / max(whole - fixed, 1e-9):,.0f} rows/s; CPU {cpu_steady:.1f} s "
                    f"beyond the head's ({cpu[(name, HEAD_ROWS)][-1]:.1f} s)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def rate(name: str, i: int) -> float:
        return (args.rows - HEAD_ROWS) / max(times[(name, args.rows)][i] - times[(name, HEAD_ROWS)][i], 1e-9)

    def ratio(over: str, under: str) -> float:
        return median([rate(over, i) / rate(under, i) for i in range(args.rounds)])

    def cpu_ratio(over: str, under: str) -> float:       # rows per CPU-second, beyond the head's
        def spent(name, i):
            return cpu[(name, args.rows)][i] - cpu[(name, HEAD_ROWS)][i]
        return median([spent(under, i) / max(spent(over, i), 1e-9) for i in range(args.rounds)])

    targets = {
        "spark local[2], CSV": ("local engine, CSV", TARGET_VS_LOCAL),
        "spark local[1], CSV": None,
        "spark local[2], Parquet": ("spark local[2], CSV", TARGET_PARQUET_VS_CSV),
    }
    rows = []
    for name in CASES:
        row = {"case": name, "rows": args.rows, "fixed_s": median(times[(name, HEAD_ROWS)]),
               "whole_s": median(times[(name, args.rows)]),
               "steady_rows_per_s": median([rate(name, i) for i in range(args.rounds)]),
               "vs_local": ratio(name, "local engine, CSV"),
               "cpu_s": median([cpu[(name, args.rows)][i] - cpu[(name, HEAD_ROWS)][i] for i in range(args.rounds)]),
               "cpu_vs_local": cpu_ratio(name, "local engine, CSV")}
        target = targets.get(name)
        if target:
            row["compared_with"], row["ratio"], row["target"] = target[0], ratio(name, target[0]), target[1]
            row["status"] = "ok" if row["ratio"] >= target[1] else "MISSED"
        rows.append(row)
    scaling = ratio("spark local[2], CSV", "spark local[1], CSV")
    rows.append({"case": "spark local[1] -> local[2], CSV", "rows": args.rows, "ratio": scaling,
                 "compared_with": "spark local[1], CSV", "target": TARGET_SCALING,
                 "status": "ok" if scaling >= TARGET_SCALING else "MISSED"})
    say(f"\n== results ({time.monotonic() - started:.0f} s)")
    print_table(["case", "rows", "fixed s", "whole s", "steady rows/s", "CPU s", "x local (per CPU s)", "ratio",
                 "target", "status"],
                [[r["case"], fmt(r["rows"]), fmt(r.get("fixed_s"), ".1f"), fmt(r.get("whole_s"), ".1f"),
                  fmt(r.get("steady_rows_per_s"), "int"), fmt(r.get("cpu_s"), ".1f"),
                  f"{fmt(r.get('vs_local'), '.2f')} ({fmt(r.get('cpu_vs_local'), '.2f')})",
                  f"{r['ratio']:.2f} x {r['compared_with']}" if "ratio" in r else "-",
                  f">= {r['target']:g}" if "target" in r else "", r.get("status", "")] for r in rows])
    save_results("spark", rows, {"rounds": args.rounds, "head_rows": HEAD_ROWS})
    missed = [r for r in rows if r.get("status") == "MISSED"]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
