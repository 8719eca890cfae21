#!/usr/bin/env python
"""In-process speed of the scoring hot path: request bytes in, response bytes out.

Cases, each at 10,000 rows, 1,000 rows and one record (synthetic rows, fixed seed):
  service  the service's request path (decode, predict, observe, encode): what a worker does per request
  floor    orjson.loads(body) + orjson.dumps(results)    parse the request and write a response
                                                         of the same size, and nothing else
  pandas   orjson.loads + PandasReference.predict + orjson.dumps   the plain pandas yardstick

Repetitions of the compared cases are interleaved (the order rotates every round) and every
ratio is the median of the per-round ratios, so drifting load on a shared machine hits all
cases alike.  Before timing, every case's output is checked against the pandas reference to
1e-12 (business_outcome exactly); every timed output must equal the checked one byte for byte.

RSS: the process's peak VmRSS while the case ran (VmHWM, reset before each call) and the
part of it added by the call itself.

Usage: .venv/bin/python bench/inprocess.py [--quick] [--strict]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time

from benchlib import (MODEL_DIR, SEED, check_same, scoring_path, fmt, hwm_mb, median, percentile, print_table,
                      meets, reset_peak, rss_mb, save_results, say, status, with_cpu)

import orjson  # noqa: E402  (benchlib puts the repository root on sys.path first)

from ad_purchase.training import synthetic  # noqa: E402
from pandas_reference import PandasReference  # noqa: E402

TARGET_FLOOR_RATIO = 1.0      # 10,000 rows: service time / floor time, at most
TARGET_BATCH_SPEEDUP = 8.0    # 10,000 rows: pandas time / service time, at least
TARGET_SINGLE_SPEEDUP = 50.0  # one record: pandas time / service time, at least
SINGLE_VARIANTS = 64          # distinct single records cycled through


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds-10k", type=int, default=9,
                        help="rounds of the 10,000-row cases (one round of each takes about 2.5 s)")
    parser.add_argument("--rounds-1k", type=int, default=15)
    parser.add_argument("--rounds-single", type=int, default=150,
                        help="rounds of the single-record cases; each runs the pandas case once")
    parser.add_argument("--per-round-single", type=int, default=20,
                        help="service and floor calls per single-record round")
    parser.add_argument("--quick", action="store_true", help="a few rounds only, to check the script")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds_10k, args.rounds_1k, args.rounds_single = 2, 3, 20

    say("== in-process benchmark: the request path vs JSON floor vs pandas reference")
    started = time.monotonic()
    model = scoring_path(MODEL_DIR)       # JSON request bytes -> JSON answer bytes
    reference = PandasReference(MODEL_DIR)

    say(f"building inputs with synthetic.generate (seed {SEED}) ...")
    records_10k = synthetic.to_records(synthetic.generate(10_000, seed=SEED))
    records_1k = synthetic.to_records(synthetic.generate(1_000, seed=SEED + 1))
    records_one = synthetic.to_records(synthetic.generate(SINGLE_VARIANTS, seed=SEED + 2))
    # Bodies as a Python client writes them (json.dumps, as requests' json= does).
    body_10k = json.dumps(records_10k).encode()
    body_1k = json.dumps(records_1k).encode()
    bodies_one = [json.dumps(record).encode() for record in records_one]
    say(f"  10,000-row body {len(body_10k) / 1e6:.1f} MB, 1,000-row body {len(body_1k) / 1e6:.2f} MB, "
        f"single bodies ~{len(bodies_one[0]) / 1e3:.1f} kB x {SINGLE_VARIANTS}")

    rows = []
    for label, body, n_rows, rounds in (("10k batch", body_10k, 10_000, args.rounds_10k),
                                         ("1k batch", body_1k, 1_000, args.rounds_1k)):
        rows += batch_cases(label, body, n_rows, rounds, model, reference)
    rows += single_cases(bodies_one, args.rounds_single, args.per_round_single, model, reference)

    say("")
    print_rows(rows)
    missed = [r for r in rows if r.get("status", "ok") != "ok"]
    save_results("inprocess", rows, {"seconds": round(time.monotonic() - started, 1),
                                     "peak_rss_mb": round(hwm_mb(), 1)})
    say(f"in-process benchmark done in {time.monotonic() - started:.0f} s")
    if missed:
        say("targets missed: " + "; ".join(f"{r['case']} {r['target']}" for r in missed))
    return 1 if (missed and args.strict) else 0


def service_case(model):
    return model


def pandas_case(reference):
    def run(body: bytes) -> bytes:
        decoded = orjson.loads(body)
        single = isinstance(decoded, dict)
        out = reference.predict([decoded] if single else decoded)
        return orjson.dumps(out[0] if single else out)
    return run


def floor_case(results_for):
    """orjson parse of the request, orjson write of the service's (parsed) response."""
    for body in results_for:
        hash(body)          # bytes cache their hash: the timed lookups do not hash 20 MB
    def run(body: bytes) -> bytes:
        orjson.loads(body)
        return orjson.dumps(results_for[body])
    return run


def expected_output(label: str, body: bytes, model, reference) -> dict[str, bytes]:
    """Each case's first output, checked against the reference computation."""
    decoded = json.loads(body)
    want = reference.predict([decoded] if isinstance(decoded, dict) else decoded)
    want = want[0] if isinstance(decoded, dict) else want
    service_out = model(body)
    worst = check_same(orjson.loads(service_out), want, f"{label} service")
    pandas_out = pandas_case(reference)(body)
    check_same(orjson.loads(pandas_out), want, f"{label} pandas")
    return {"service": service_out, "pandas": pandas_out, "worst": worst}


def timed(fn, body: bytes, track_memory: bool) -> tuple[float, float, bytes, float, float]:
    """(wall seconds, CPU seconds, output, peak RSS MB during the call, MB added over the RSS
    before it).  CPU time leaves out the time other processes hold the cores."""
    before = 0.0
    if track_memory:
        gc.collect()
        reset_peak()
        before = rss_mb()
    cpu_start = time.process_time()
    start = time.perf_counter()
    out = fn(body)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if track_memory:
        peak = hwm_mb()
        return elapsed, cpu, out, peak, peak - before
    return elapsed, cpu, out, 0.0, 0.0


def batch_cases(label: str, body: bytes, n_rows: int, rounds: int, model, reference) -> list[dict]:
    say(f"[{label}] checking outputs against the pandas reference ...")
    expected = expected_output(label, body, model, reference)
    results = orjson.loads(expected["service"])
    floor_out = orjson.dumps(results)
    if orjson.loads(floor_out) != results:
        raise AssertionError(f"{label} floor: orjson round trip changed the results")
    say(f"  outputs match (largest difference {expected['worst']:.2g}); response "
        f"{len(expected['service']) / 1e6:.2f} MB from the service, {len(floor_out) / 1e6:.2f} MB from orjson")
    wants = {"service": expected["service"], "floor": floor_out, "pandas": expected["pandas"]}
    cases = {"service": service_case(model), "floor": floor_case({body: results}),
             "pandas": pandas_case(reference)}
    names = list(cases)
    times = {name: [] for name in names}
    cpus = {name: [] for name in names}
    peaks = {name: [] for name in names}
    added = {name: [] for name in names}
    say(f"[{label}] timing {rounds} interleaved rounds of {', '.join(names)} ...")
    for round_no in range(rounds):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for name in order:
            seconds, cpu, out, peak, extra = timed(cases[name], body, track_memory=True)
            if out != wants[name]:
                raise AssertionError(f"{label} {name}: output of round {round_no} differs from the checked output")
            times[name].append(seconds)
            cpus[name].append(cpu)
            peaks[name].append(peak)
            added[name].append(extra)
        say(f"  round {round_no + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.1f} ms" for n in names))
    return summarise(label, n_rows, times, cpus, peaks, added, is_target=(n_rows == 10_000))


def single_cases(bodies: list[bytes], rounds: int, per_round: int, model, reference) -> list[dict]:
    label = "single record"
    say(f"[{label}] checking {len(bodies)} records against the pandas reference ...")
    wants = {"service": {}, "floor": {}, "pandas": {}}
    results_for = {}
    worst = 0.0
    for body in bodies:
        expected = expected_output(label, body, model, reference)
        worst = max(worst, expected["worst"])
        results_for[body] = orjson.loads(expected["service"])
        wants["service"][body] = expected["service"]
        wants["pandas"][body] = expected["pandas"]
        wants["floor"][body] = orjson.dumps(results_for[body])
    say(f"  outputs match (largest difference {worst:.2g})")
    cases = {"service": service_case(model), "floor": floor_case(results_for), "pandas": pandas_case(reference)}
    calls = {"service": per_round, "floor": per_round, "pandas": 1}
    names = list(cases)
    times = {name: [] for name in names}
    cpus = {name: [] for name in names}
    round_medians = {name: [] for name in names}
    round_cpu = {name: [] for name in names}
    peaks = {name: [] for name in names}
    added = {name: [] for name in names}
    say(f"[{label}] timing {rounds} interleaved rounds ({per_round} service, {per_round} floor, 1 pandas call each) ...")
    for round_no in range(rounds):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for name in order:
            this_round, this_cpu = [], []
            for k in range(calls[name]):
                body = bodies[(round_no * calls[name] + k) % len(bodies)]
                seconds, cpu, out, peak, extra = timed(cases[name], body,
                                                       track_memory=(k == 0 and round_no % 10 == 0))
                if out != wants[name][body]:
                    raise AssertionError(f"{label} {name}: output of round {round_no} differs from the checked output")
                this_round.append(seconds)
                this_cpu.append(cpu)
                if peak:
                    peaks[name].append(peak)
                    added[name].append(extra)
            times[name] += this_round
            cpus[name] += this_cpu
            round_medians[name].append(median(this_round))
            round_cpu[name].append(median(this_cpu))
        if (round_no + 1) % max(1, rounds // 4) == 0:
            say(f"  round {round_no + 1}/{rounds}: " +
                ", ".join(f"{n} {round_medians[n][-1] * 1e3:.3f} ms" for n in names))
    return summarise(label, 1, times, cpus, peaks, added, is_target=True,
                     round_medians=round_medians, round_cpu=round_cpu)


def summarise(label, n_rows, times, cpus, peaks, added, is_target, round_medians=None,
              round_cpu=None) -> list[dict]:
    """Table rows; ratios are medians of per-round ratios (paired measurements), from wall
    time and, separately, from CPU time."""
    per_round = round_medians or times
    per_round_cpu = round_cpu or cpus
    rounds = len(per_round["service"])

    def paired(numerator, denominator, source=per_round):
        return median([source[numerator][i] / source[denominator][i] for i in range(rounds)
                       if source[denominator][i] > 0])

    rows = []
    for name in ("service", "floor", "pandas"):
        med = median(times[name])
        row = {
            "suite": "in-process", "case": f"{label}: {name}", "rows": n_rows,
            "median_ms": med * 1e3, "p99_ms": percentile(times[name], 99) * 1e3,
            "samples": len(times[name]), "rows_per_s": n_rows / med,
            "speedup_vs_pandas": paired("pandas", name), "ratio_to_floor": paired(name, "floor"),
            "cpu_ms": median(cpus[name]) * 1e3,
            "cpu_speedup_vs_pandas": paired("pandas", name, per_round_cpu),
            "cpu_ratio_to_floor": paired(name, "floor", per_round_cpu),
            "peak_rss_mb": max(peaks[name]) if peaks[name] else None,
            "added_mb": max(added[name]) if added[name] else None,
        }
        if name == "service" and is_target:
            if n_rows == 10_000:
                row["target"] = f"floor ratio <= {TARGET_FLOOR_RATIO:g}, speedup >= {TARGET_BATCH_SPEEDUP:g}x"
                for prefix in ("", "cpu_"):
                    row[prefix + "ok"] = (meets(row[prefix + "ratio_to_floor"], TARGET_FLOOR_RATIO, at_most=True)
                                          and meets(row[prefix + "speedup_vs_pandas"], TARGET_BATCH_SPEEDUP))
            else:
                row["target"] = f"speedup >= {TARGET_SINGLE_SPEEDUP:g}x"
                for prefix in ("", "cpu_"):
                    row[prefix + "ok"] = meets(row[prefix + "speedup_vs_pandas"], TARGET_SINGLE_SPEEDUP)
            row["status"] = status(row.pop("ok"), row.pop("cpu_ok"))
        rows.append(row)
    return rows


HEADERS = ["case", "rows", "median ms", "p99 ms", "CPU ms", "rows/s", "speedup vs pandas (CPU)",
           "ratio to floor (CPU)", "peak RSS MB", "+MB", "target", "status"]


def print_rows(rows: list[dict]) -> None:
    print_table(HEADERS, [[
        r["case"], fmt(r["rows"]), fmt(r["median_ms"], "ms"), fmt(r["p99_ms"], "ms"), fmt(r["cpu_ms"], "ms"),
        fmt(r["rows_per_s"], "int"), with_cpu(r["speedup_vs_pandas"], r["cpu_speedup_vs_pandas"], "x"),
        with_cpu(r["ratio_to_floor"], r["cpu_ratio_to_floor"], ".2f"),
        fmt(r["peak_rss_mb"], ".0f"), fmt(r["added_mb"], ".0f"), r.get("target", ""), r.get("status", ""),
    ] for r in rows])


if __name__ == "__main__":
    sys.exit(main())
