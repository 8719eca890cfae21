#!/usr/bin/env python
"""Batch scoring of files: speed against the input's floor, and memory whatever the file's size.

Cases, on synthetic rows in the client's raw format (fixed seed):
  floor            pyarrow.csv.read_csv(file) with every column as text: merely reading the CSV
  csv -> csv       score_file(rows.csv, scores.csv), what `score.py rows.csv -o scores.csv` runs
  parquet -> pq    score_file(rows.parquet, scores.parquet); the Parquet file holds the plain
                   numeric fields as doubles and the rest as text, as a data team keeps a table

Speed: the three cases are run in interleaved rounds (the order rotates every round) and each
ratio is the median of the per-round ratios, from wall time and from CPU time (this process's,
all threads).  Before timing, the first rows of both outputs are checked against the API's JSON
answers for the same records (the service's request path) to 1e-12.

Memory: `score.py` runs as a child process on 100,000 and on 1,000,000 rows, CSV to CSV and
Parquet to Parquet; its peak RSS is its own VmHWM, read as it exits.

Spark (--spark, needs PySpark and Java): `score.py --engine spark` on the CSV with
--master local[1] and local[2]: rows/s of the job as score.py reports it (once Spark has
started), and the whole command's time beside it.

Usage: .venv/bin/python bench/batch_bench.py [--quick] [--spark] [--strict]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import (MODEL_DIR, PYTHON, RESULTS_DIR, ROOT, SEED, check_same, fmt, median, meets, print_table,
                      save_results, say, scoring_path, status, with_cpu)

import pyarrow as pa  # noqa: E402  (benchlib puts the repository root on sys.path first)
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from ad_purchase.batch.local import score_file  # noqa: E402
from ad_purchase.codecs.csv_codec import READ_AS_MISSING  # noqa: E402
from ad_purchase.model import load_model  # noqa: E402
from ad_purchase.schema import FIELDS, PLAIN_FIELDS
from ad_purchase.training import synthetic  # noqa: E402

TARGET_CSV_VS_FLOOR = 0.5          # CSV -> CSV rows/s over the floor's rows/s, at least
TARGET_PARQUET_VS_CSV = 1.0        # Parquet -> Parquet rows/s over CSV -> CSV rows/s, at least
TARGET_PEAK_MB = 500.0             # peak RSS of score.py, any file size
TARGET_PEAK_GROWTH = 1.25          # peak at 1,000,000 rows over peak at 100,000 rows, at most
CHECKED_ROWS = 2_000               # rows of each output compared with the API's answers
DATA_DIR = RESULTS_DIR / "data"
BASE_ROWS = 100_000                # generated once; larger files repeat its rows
PARQUET_ROW_GROUP = 100_000        # rows per row group of the Parquet inputs


# ---------------------------------------------------------------------------- the input files

def base_frame_csv() -> Path:
    path = DATA_DIR / f"rows-{BASE_ROWS}-seed{SEED}.csv"
    if not path.exists():
        say(f"  generating {BASE_ROWS:,} synthetic rows -> {path.relative_to(ROOT)}")
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        synthetic.generate(BASE_ROWS, seed=SEED)[list(FIELDS)].to_csv(partial, index=False)
        partial.replace(path)
    return path


def csv_file(rows: int) -> Path:
    """A CSV of `rows` rows: the base rows repeated (and cut) to length; made once, then kept."""
    base = base_frame_csv()
    if rows == BASE_ROWS:
        return base
    path = DATA_DIR / f"rows-{rows}-seed{SEED}.csv"
    if path.exists():
        return path
    say(f"  writing {rows:,} rows -> {path.relative_to(ROOT)}")
    with open(base, "rb") as handle:
        header = handle.readline()
        body = handle.read().splitlines(keepends=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        out.write(header)
        left = rows
        while left:
            out.writelines(body[:left])
            left -= min(left, len(body))
    partial.replace(path)
    return path


def parquet_file(rows: int) -> Path:
    """The same rows as Parquet: plain numeric fields as doubles (missing as null), the rest as
    text, row groups of PARQUET_ROW_GROUP rows, pyarrow's other defaults (statistics on)."""
    path = DATA_DIR / f"rows-{rows}-seed{SEED}.parquet"
    if path.exists():
        return path
    source = csv_file(rows)
    say(f"  converting -> {path.relative_to(ROOT)}")
    types = {name: pa.string() for name in FIELDS}
    types.update((name, pa.float64()) for name in PLAIN_FIELDS)
    reader = pacsv.open_csv(source, convert_options=pacsv.ConvertOptions(
        column_types=types, null_values=READ_AS_MISSING, strings_can_be_null=True))
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, reader.schema, compression="zstd") as writer:
        pending: list[pa.RecordBatch] = []
        for batch in [*reader, None]:
            if batch is not None:
                pending.append(batch)
            if pending and (batch is None or sum(b.num_rows for b in pending) >= PARQUET_ROW_GROUP):
                writer.write_table(pa.Table.from_batches(pending), row_group_size=PARQUET_ROW_GROUP)
                pending = []
    partial.replace(path)
    return path


# ---------------------------------------------------------------------------- checks

def read_output(path: Path, rows: int) -> list[dict]:
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    # The answer's columns: less the row id, and the model version and time every row carries.
    return table.slice(0, rows).drop_columns(["row", "model_version", "scored_at"]).to_pylist()


def check_outputs(source: Path, outputs: list[Path]) -> None:
    """The first rows of every output equal the API's JSON answers for the same records."""
    options = pacsv.ConvertOptions(column_types={name: pa.string() for name in FIELDS}, strings_can_be_null=False)
    records = pacsv.read_csv(source, convert_options=options).slice(0, CHECKED_ROWS).to_pylist()
    expected = json.loads(scoring_path(MODEL_DIR)(json.dumps(records).encode()))
    for output in outputs:
        worst = check_same(read_output(output, CHECKED_ROWS), expected, f"{output.name} vs the API")
        say(f"  {output.name}: first {CHECKED_ROWS:,} rows equal the API's answers (largest difference {worst:.1e})")


# ---------------------------------------------------------------------------- speed

def timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def speed(rows: int, rounds: int, model, scratch: Path) -> list[dict]:
    csv_in, parquet_in = csv_file(rows), parquet_file(rows)
    csv_out, parquet_out = scratch / "scores.csv", scratch / "scores.parquet"
    text = pacsv.ConvertOptions(column_types={name: pa.string() for name in FIELDS})
    cases = {
        "floor": lambda: pacsv.read_csv(csv_in, convert_options=text),
        "csv -> csv": lambda: score_file(csv_in, csv_out, model),
        "parquet -> parquet": lambda: score_file(parquet_in, parquet_out, model),
    }
    for call in cases.values():                 # warm-up: file cache, imports, the outputs to check
        call()
    check_outputs(csv_in, [csv_out, parquet_out])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    names = list(cases)
    for number in range(rounds):
        order = names[number % len(names):] + names[:number % len(names)]
        for name in order:
            times[name].append(timed(cases[name]))
        say(f"  round {number + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1][0]:.2f} s" for n in names))

    def ratio(over: str, under: str, which: int) -> float:     # rows/s of `over` / rows/s of `under`
        return median([u[which] / o[which] for o, u in zip(times[over], times[under])])

    results = []
    for name in names:
        wall = median([t[0] for t in times[name]])
        cpu = median([t[1] for t in times[name]])
        row = {"case": name, "rows": rows, "median_s": wall, "cpu_s": cpu, "rows_per_s": rows / wall,
               "vs_floor": ratio(name, "floor", 0), "cpu_vs_floor": ratio(name, "floor", 1)}
        if name == "csv -> csv":
            row["target"] = f"vs floor >= {TARGET_CSV_VS_FLOOR:g}"
            row["status"] = status(meets(row["vs_floor"], TARGET_CSV_VS_FLOOR),
                                   meets(row["cpu_vs_floor"], TARGET_CSV_VS_FLOOR))
        if name == "parquet -> parquet":
            row["vs_csv"], row["cpu_vs_csv"] = ratio(name, "csv -> csv", 0), ratio(name, "csv -> csv", 1)
            row["target"] = f"vs csv -> csv >= {TARGET_PARQUET_VS_CSV:g}"
            row["status"] = status(meets(row["vs_csv"], TARGET_PARQUET_VS_CSV),
                                   meets(row["cpu_vs_csv"], TARGET_PARQUET_VS_CSV))
        results.append(row)
    return results


# ---------------------------------------------------------------------------- memory

# Runs a script and then reports its own peak RSS: a child's ru_maxrss would start from this
# process's size at fork, not from the script's.
PEAK_WRAPPER = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print("peak-rss-kb", peak.split()[1], file=sys.stderr)
"""


def run_score(arguments: list[str]) -> tuple[float, float, str]:
    """`score.py` in a child process: (wall seconds, its peak RSS in MB, what it printed to stderr)."""
    started = time.perf_counter()
    done = subprocess.run([str(PYTHON), "-c", PEAK_WRAPPER, str(ROOT / "score.py"), *arguments], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"score.py {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr}")
    peak = re.search(r"^peak-rss-kb (\d+)$", done.stderr, re.MULTILINE)
    return seconds, int(peak.group(1)) / 1024, done.stderr


def memory(sizes: list[int], scratch: Path) -> list[dict]:
    results = []
    for kind, out_name in (("csv", "scores.csv"), ("parquet", "scores.parquet")):
        peaks = {}
        for rows in sizes:
            source = csv_file(rows) if kind == "csv" else parquet_file(rows)
            seconds, peak, _ = run_score([str(source), "-o", str(scratch / out_name), "--no-progress"])
            peaks[rows] = peak
            say(f"  score.py {kind} -> {kind}, {rows:,} rows: peak RSS {peak:.0f} MB ({seconds:.1f} s)")
            row = {"case": f"score.py {kind} -> {kind} peak", "rows": rows, "peak_mb": peak, "seconds": seconds}
            if rows == max(sizes):
                growth = peak / peaks[min(sizes)]
                row.update(growth=growth, target=f"<= {TARGET_PEAK_MB:g} MB, x{TARGET_PEAK_GROWTH:g} of "
                                                 f"{min(sizes):,} rows at most")
                ok = max(peaks.values()) <= TARGET_PEAK_MB and growth <= TARGET_PEAK_GROWTH
                row["status"] = "ok" if ok else "MISSED"
            results.append(row)
    return results


# ---------------------------------------------------------------------------- Spark

def spark_available() -> str | None:
    """Why Spark cannot run here, or None when it can."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "PySpark is not installed (pip install -r requirements-dev.txt)"
    if shutil.which("java") is None:
        return "no Java runtime on PATH (apt-get install openjdk-17-jre-headless)"
    return None


def spark(rows: int, rounds: int, scratch: Path) -> list[dict]:
    """rows/s of the job itself (what score.py reports, after Spark has started) and of the
    whole command, JVM start included."""
    source = csv_file(rows)
    job: dict[str, list[float]] = {"local[1]": [], "local[2]": []}
    whole: dict[str, list[float]] = {"local[1]": [], "local[2]": []}
    for number in range(rounds):
        for master in (list(job) if number % 2 == 0 else list(reversed(job))):
            out = scratch / f"spark-{master[-2]}"
            seconds, _, printed = run_score([str(source), "-o", str(out), "--engine", "spark", "--master", master,
                                             "--no-progress"])
            scored = pq.ParquetDataset(out).read(columns=["row"]).num_rows
            if scored != rows:
                raise RuntimeError(f"Spark {master} scored {scored:,} rows of {rows:,}")
            job[master].append(float(re.search(r"scored [\d,]+ rows in ([\d.]+) s", printed).group(1)))
            whole[master].append(seconds)
            say(f"  Spark {master}, {rows:,} rows: job {job[master][-1]:.1f} s ({rows / job[master][-1]:,.0f} rows/s),"
                f" whole command {seconds:.1f} s")
    one = median(job["local[1]"])
    return [{"case": f"spark {master}", "rows": rows, "median_s": median(t), "rows_per_s": rows / median(t),
             "whole_s": median(whole[master]), "vs_one_core": one / median(t)} for master, t in job.items()]


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the speed cases (default 200000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the speed cases")
    parser.add_argument("--spark", action="store_true", help="also run the Spark engine in local[1] and local[2]")
    parser.add_argument("--spark-rows", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="short runs, to check the script")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    memory_sizes = [100_000, 1_000_000]
    spark_rounds = 2
    if args.quick:
        args.rows, args.rounds, args.spark_rows, spark_rounds = 100_000, 2, 20_000, 1
        memory_sizes = [20_000, 200_000]

    say("== batch scoring benchmark: score_file against pyarrow's CSV reader; score.py's memory")
    started = time.monotonic()
    model = load_model(MODEL_DIR)
    scratch = RESULTS_DIR / "batch-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        say(f"-- speed, {args.rows:,} rows, {args.rounds} interleaved rounds")
        rows = speed(args.rows, args.rounds, model, scratch)
        say(f"-- memory, score.py at {' and '.join(f'{n:,}' for n in memory_sizes)} rows")
        rows += memory(memory_sizes, scratch)
        extra = {}
        if args.spark:
            reason = spark_available()
            if reason:
                say(f"-- Spark skipped: {reason}")
                extra["spark_skipped"] = reason
            else:
                say(f"-- Spark, {args.spark_rows:,} rows, local[1] and local[2]")
                rows += spark(args.spark_rows, spark_rounds, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    say(f"\n== results ({time.monotonic() - started:.0f} s)")
    print_table(["case", "rows", "median s", "rows/s", "vs floor (CPU)", "other", "target", "status"],
                [[r["case"], fmt(r["rows"]), fmt(r.get("median_s"), ".2f"), fmt(r.get("rows_per_s"), "int"),
                  with_cpu(r.get("vs_floor"), r.get("cpu_vs_floor"), ".2f") if "vs_floor" in r else "-",
                  other(r), r.get("target", ""), r.get("status", "")] for r in rows])
    save_results("batch", rows, extra)
    missed = [r for r in rows if r.get("status") and r["status"] != "ok"]
    return 1 if args.strict and missed else 0


def other(row: dict) -> str:
    if "vs_csv" in row:
        return f"{with_cpu(row['vs_csv'], row['cpu_vs_csv'], '.2f')} x csv -> csv"
    if "peak_mb" in row:
        growth = f", x{row['growth']:.2f} of the smaller file" if "growth" in row else ""
        return f"peak {row['peak_mb']:.0f} MB{growth}"
    if "vs_one_core" in row:
        return f"{row['vs_one_core']:.2f} x local[1]; {row['whole_s']:.0f} s with start-up"
    return "-"


if __name__ == "__main__":
    sys.exit(main())
