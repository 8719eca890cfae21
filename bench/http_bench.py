#!/usr/bin/env python
"""HTTP throughput of the service under gunicorn, against its own /health and the pandas app.

It starts, at once and on free loopback ports, the service (`gunicorn -c gunicorn.conf.py
api:app`) and the pandas yardstick (bench/pandas_app.py) under each gunicorn worker setting
(the default gevent worker x2, gthread 2 workers x 4 threads, sync x2, sync x4), the yardstick
with the same setting as the service beside it.  The targets are judged on the default setting.  Idle servers cost nothing, and having them all up lets every case be
measured in the same interleaved rounds, so the settings are compared side by side too.  Then:

  * checks that each service answers examples/single.json as its pandas app does (to 1e-12);
  * warms every /predict up with a short wrk run;
  * measures, in rounds whose order rotates, single-record POST /predict on the service
    (bench/post_single.lua), GET /health on the service, and POST /predict on the pandas
    app, each a short `wrk --latency` run; wrk's non-2xx and socket errors must be zero.
    Besides wrk's throughput, the server's CPU time per request (master and workers, from
    /proc) is recorded: on a shared machine it is the steadier measure of cost;
  * with the first setting, times sequential POSTs of one 10,000-row batch to the service and
    to its pandas app, interleaved, with http.client (wrk is not suited to 20 MB bodies).

Ratios are medians of per-round ratios.  Every server is stopped at the end, also on error or
Ctrl-C.  The script installs nothing: wrk must be on PATH (apt-get install -y wrk).

Named http_bench.py, not http.py: a file called http.py next to a script would shadow the
standard library's http package for it.

The service runs with its decision log off unless --decision-log sqlite: the targets are set for
the serving path, and bench/decision_log_bench.py measures what the log adds.

Usage: .venv/bin/python bench/http_bench.py [--quick] [--strict] [--seconds 2] [--rounds 6] [--decision-log off]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

from benchlib import (BENCH_DIR, RESULTS_DIR, ROOT, SEED, Server, check_same, fmt, free_port,
                      install_cleanup, median, meets, post, print_table, save_results, say, status, stop_all_servers,
                      tree_cpu_seconds, with_cpu)

TARGET_VS_HEALTH = 0.6
TARGET_VS_PANDAS = 30.0
TARGET_BATCH_VS_PANDAS = 4.0
SINGLE_BODY = ROOT / "examples" / "single.json"
LUA_SINGLE = BENCH_DIR / "post_single.lua"

# The first is the default serving mode, the one the targets are for; the others are for comparison
# (they need a buffering proxy in front to withstand slow clients).
CONFIGS = [
    ("default (gevent) 2 workers", {"WORKER_CLASS": None, "WEB_CONCURRENCY": "2", "THREADS": None}),
    ("gthread 2x4", {"WORKER_CLASS": "gthread", "WEB_CONCURRENCY": "2", "THREADS": "4"}),
    ("sync 2 workers", {"WORKER_CLASS": "sync", "WEB_CONCURRENCY": "2", "THREADS": "1"}),
    ("sync 4 workers", {"WORKER_CLASS": "sync", "WEB_CONCURRENCY": "4", "THREADS": "1"}),
]


# ---------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """Requests/sec, request count, p50/p99 latency (ms), non-2xx and socket errors."""
    result = {"socket_errors": 0, "non_2xx": 0}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    if not rate or not count:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    result["rps"] = float(rate.group(1))
    result["requests"] = int(count.group(1))
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", output, re.MULTILINE)
        result[f"p{pct}_ms"] = _ms(match.group(1)) if match else None
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets:
        result["socket_errors"] = sum(int(g) for g in sockets.groups())
        result["socket_detail"] = sockets.group(0)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        result["non_2xx"] = int(non_2xx.group(1))
    return result


def run_wrk(url: str, seconds: float, threads: int, connections: int, script: str | None,
            server: Server | None = None) -> dict:
    """One wrk run; with `server`, also the server's CPU time per request (all its processes)."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency"]
    if script:
        command += ["-s", script]
    command.append(url)
    cpu_before = tree_cpu_seconds(server.process.pid) if server else None
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 30,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BENCH_BODY": str(SINGLE_BODY)})
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if server:
        cpu = tree_cpu_seconds(server.process.pid) - cpu_before
        result["cpu_ms_per_req"] = cpu * 1e3 / result["requests"] if result["requests"] else None
    return result


# ---------------------------------------------------------------------------- steps

def decision_log(mode: str, index: int) -> dict:
    """Settings for the service's decision log: off, or a SQLite file per server (servers sharing
    one file would measure their contention for its lock)."""
    if mode == "off":
        return {"DECISION_LOG": "off"}
    return {"DATABASE_URL": f"sqlite:///{RESULTS_DIR}/http-bench-{index}.sqlite3"}


def start_pair(label: str, env: dict) -> tuple[Server, Server]:
    logs = RESULTS_DIR / "logs"
    tag = re.sub(r"\W+", "-", label)
    service = Server(f"service ({label})", "api:app", free_port(), env, logs / f"service-{tag}.log").start()
    pandas = Server(f"pandas app ({label})", "pandas_app:app", free_port(), env, logs / f"pandas-{tag}.log",
                    extra_args=["--pythonpath", str(BENCH_DIR)]).start()
    return service, pandas


def check_single(service: Server, pandas: Server) -> None:
    body = SINGLE_BODY.read_bytes()
    answers = {}
    for server in (service, pandas):
        status_code, out = post(server.url + "/predict", body)
        if status_code != 200:
            raise RuntimeError(f"{server.name} answered {status_code} to examples/single.json: {out[:300]!r}")
        answers[server.name] = json.loads(out)
    check_same(answers[service.name], answers[pandas.name], "HTTP single record, service vs pandas app")


def single_cases(label: str, service: Server, pandas: Server) -> dict:
    return {
        (label, "service /predict"): (service.url + "/predict", str(LUA_SINGLE), service),
        (label, "service /health"): (service.url + "/health", None, service),
        (label, "pandas /predict"): (pandas.url + "/predict", str(LUA_SINGLE), pandas),
    }


def single_rounds(cases: dict, args) -> dict:
    """Every case once per round, in an order that rotates from round to round."""
    for key, (url, script, _) in cases.items():
        if key[1].endswith("/predict"):
            warm = run_wrk(url, args.warmup, args.threads, args.connections, script)
            say(f"  warm-up {key[0]}: {key[1]} {warm['rps']:.0f} req/s")
    runs = {key: [] for key in cases}
    # The same case under each setting back to back, so settings are compared over seconds, not minutes.
    keys = sorted(cases, key=lambda key: [name for _, name in cases].index(key[1]))
    for round_no in range(args.rounds):
        shift = round_no * len(keys) // max(args.rounds, 1)
        for key in keys[shift:] + keys[:shift]:
            url, script, server = cases[key]
            runs[key].append(run_wrk(url, args.seconds, args.threads, args.connections, script, server))
        labels = list(dict.fromkeys(k[0] for k in keys))
        for label in labels:
            say(f"  round {round_no + 1}/{args.rounds} [{label}] " +
                ", ".join(f"{k[1]} {runs[k][-1]['rps']:.0f}" for k in keys if k[0] == label) + " req/s")
    return runs


def batch_rounds(service: Server, pandas: Server, body: bytes, rounds: int) -> dict:
    """Sequential 10,000-row POSTs, interleaved between the two servers."""
    times = {"service": [], "pandas": []}
    cpus = {"service": [], "pandas": []}
    first = {}
    servers = {"service": service, "pandas": pandas}
    for round_no in range(rounds + 1):            # round 0 warms up and checks the answers
        order = ["service", "pandas"] if round_no % 2 == 0 else ["pandas", "service"]
        for name in order:
            cpu_before = tree_cpu_seconds(servers[name].process.pid)
            start = time.perf_counter()
            code, out = post(servers[name].url + "/predict", body, timeout=300)
            elapsed = time.perf_counter() - start
            cpu = tree_cpu_seconds(servers[name].process.pid) - cpu_before
            if code != 200:
                raise RuntimeError(f"{servers[name].name} answered {code} to the 10,000-row batch: {out[:300]!r}")
            if round_no == 0:
                first[name] = out
            else:
                times[name].append(elapsed)
                cpus[name].append(cpu)
        if round_no == 0:
            worst = check_same(json.loads(first["service"]), json.loads(first["pandas"]),
                               "HTTP 10,000-row batch, service vs pandas app")
            say(f"  batch answers match (largest difference {worst:.2g}); timing {rounds} rounds ...")
        else:
            say(f"  round {round_no}/{rounds}: service {times['service'][-1] * 1e3:.0f} ms, "
                f"pandas {times['pandas'][-1] * 1e3:.0f} ms")
    return {"times": times, "cpu": cpus}


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=2,
                        help="length of each measured wrk run (whole seconds, as wrk takes them)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of every case")
    parser.add_argument("--warmup", type=int, default=3, help="wrk warm-up seconds per server")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--batch-rounds", type=int, default=3)
    parser.add_argument("--configs", default="all", help="comma-separated indexes into the settings (0,1,2,3)")
    parser.add_argument("--quick", action="store_true", help="short runs, to check the script")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--decision-log", choices=("off", "sqlite"), default="off",
                        help="off (default): the serving path alone, as the targets are set; sqlite: each server "
                             "records its decisions in a database of its own (bench/decision_log_bench.py "
                             "measures the log's cost against log-off)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.warmup, args.batch_rounds = 1, 1, 1, 1

    if shutil.which("wrk") is None:
        say("error: wrk is not on PATH; install it with: apt-get update && apt-get install -y wrk")
        return 2
    install_cleanup()
    configs = CONFIGS if args.configs == "all" else [CONFIGS[int(i)] for i in args.configs.split(",")]
    started = time.monotonic()
    say(f"== HTTP benchmark: wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x "
        f"{args.seconds:g} s per case, {len(configs)} gunicorn settings")

    from ad_purchase.training import synthetic

    batch_body = json.dumps(synthetic.to_records(synthetic.generate(10_000, seed=SEED))).encode()
    rows, errors = [], []
    try:
        say(f"starting the service and the pandas app under {len(configs)} settings at once "
            f"(idle servers use no CPU; interleaving makes the settings comparable) ...")
        pairs = {label: start_pair(label, {**env, **decision_log(args.decision_log, index)})
                 for index, (label, env) in enumerate(configs)}
        for service, pandas in pairs.values():
            service.wait_ready()
            pandas.wait_ready()
        cases = {}
        for label, (service, pandas) in pairs.items():
            check_single(service, pandas)
            say(f"  {label}: service :{service.port} workers {service.workers()}, "
                f"pandas app :{pandas.port} workers {pandas.workers()}; single-record answers match")
            cases.update(single_cases(label, service, pandas))
        runs = single_rounds(cases, args)
        for (label, name), results in runs.items():
            for result in results:
                if result["socket_errors"] or result["non_2xx"]:
                    errors.append(f"{label} {name}: {result['non_2xx']} non-2xx, "
                                  f"{result.get('socket_detail', 'no socket errors')}")
        for label, _ in configs:
            rows += single_rows(label, {name: runs[(label, name)] for (lab, name) in runs if lab == label},
                                judged=label == CONFIGS[0][0])
        label = configs[0][0]
        service, pandas = pairs[label]
        say(f"[{label}] 10,000-row batch ({len(batch_body) / 1e6:.1f} MB), sequential POSTs ...")
        rows += batch_rows(label, batch_rounds(service, pandas, batch_body, args.batch_rounds))
    finally:
        stop_all_servers()
    ranking = rank_configs(runs, [label for label, _ in configs])

    best = ranking[0]["config"] if ranking else None
    say("")
    print_rows(rows)
    if ranking:
        say("single-record /predict throughput by setting (median req/s; median per-round ratio to "
            f"{ranking[0]['baseline']}): " + "; ".join(
                f"{r['config']} {r['rps']:.0f} req/s ({r['vs_baseline']:.2f}x)" for r in ranking))
        say(f"best setting for single-record throughput: {best}")
    if errors:
        say("ERRORS reported by wrk:\n  " + "\n  ".join(errors))
    save_results("http", rows, {"best_config": best, "ranking": ranking, "errors": errors,
                                "seconds": round(time.monotonic() - started, 1),
                                "wrk": f"-t{args.threads} -c{args.connections} {args.rounds}x{args.seconds:g}s"})
    say(f"HTTP benchmark done in {time.monotonic() - started:.0f} s")
    missed = [r for r in rows if r.get("status", "ok") != "ok"]
    if errors:
        return 1
    return 1 if (missed and args.strict) else 0


def single_rows(label: str, runs: dict, judged: bool) -> list[dict]:
    """Rows of one gunicorn setting; `judged`: the targets apply to it (the default setting)."""
    rounds = len(runs["service /predict"])

    def rps(name):
        return [r["rps"] for r in runs[name]]

    def paired(a, b):
        return median([x / y for x, y in zip(rps(a), rps(b))])

    vs_health = paired("service /predict", "service /health")
    vs_pandas = paired("service /predict", "pandas /predict")

    def cpu(name):
        values = [r["cpu_ms_per_req"] for r in runs[name] if r.get("cpu_ms_per_req")]
        return median(values) if values else None

    def cpu_ratio(numerator, denominator):
        a, b = cpu(numerator), cpu(denominator)
        return a / b if a and b else None

    rows = []
    for name in runs:
        p50 = [r["p50_ms"] for r in runs[name] if r["p50_ms"] is not None]
        p99 = [r["p99_ms"] for r in runs[name] if r["p99_ms"] is not None]
        row = {"suite": "http", "config": label, "case": f"{label}: {name}",
               "rows": 1 if "predict" in name else None,
               "median_ms": median(p50) if p50 else None, "p99_ms": median(p99) if p99 else None,
               "rate": median(rps(name)), "rate_unit": "req/s",
               "requests": sum(r["requests"] for r in runs[name]), "rounds": rounds,
               "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs[name]),
               "cpu_ms_per_req": cpu(name)}
        if name == "service /predict":
            row.update(speedup_vs_pandas=vs_pandas, ratio_to_health=vs_health,
                       cpu_speedup_vs_pandas=cpu_ratio("pandas /predict", name),
                       cpu_ratio_to_health=cpu_ratio("service /health", name))
            if not judged:
                rows.append(row)
                continue
            row["target"] = f"vs health >= {TARGET_VS_HEALTH:g}, vs pandas >= {TARGET_VS_PANDAS:g}x"
            by_cpu = None
            if row["cpu_speedup_vs_pandas"] and row["cpu_ratio_to_health"]:
                by_cpu = (meets(row["cpu_ratio_to_health"], TARGET_VS_HEALTH)
                          and meets(row["cpu_speedup_vs_pandas"], TARGET_VS_PANDAS))
            row["status"] = status(meets(vs_health, TARGET_VS_HEALTH) and meets(vs_pandas, TARGET_VS_PANDAS),
                                   by_cpu)
            if row["errors"]:
                row["status"] = "ERRORS"
        elif name == "pandas /predict":
            row.update(speedup_vs_pandas=1.0)
        rows.append(row)
    return rows


def batch_rows(label: str, measured: dict) -> list[dict]:
    times, cpus = measured["times"], measured["cpu"]
    speedup = median([p / s for s, p in zip(times["service"], times["pandas"])])
    cpu = {name: median(cpus[name]) for name in cpus}
    rows = []
    for name in ("service", "pandas"):
        med = median(times[name])
        row = {"suite": "http", "config": label, "case": f"{label}: {name} 10k batch", "rows": 10_000,
               "median_ms": med * 1e3, "p99_ms": max(times[name]) * 1e3, "rate": 10_000 / med,
               "rate_unit": "rows/s", "errors": 0, "cpu_ms_per_req": cpu[name] * 1e3,
               "speedup_vs_pandas": speedup if name == "service" else 1.0,
               "cpu_speedup_vs_pandas": (cpu["pandas"] / cpu[name]) if cpu[name] else None}
        if name == "service":
            row.update(target=f"vs pandas >= {TARGET_BATCH_VS_PANDAS:g}x",
                       status=status(meets(speedup, TARGET_BATCH_VS_PANDAS),
                                     meets(row["cpu_speedup_vs_pandas"], TARGET_BATCH_VS_PANDAS)))
        rows.append(row)
    return rows


def rank_configs(runs: dict, labels: list[str]) -> list[dict]:
    """Settings by single-record /predict throughput, each with its per-round ratio to the first."""
    baseline = [r["rps"] for r in runs[(labels[0], "service /predict")]]
    ranking = []
    for label in labels:
        rates = [r["rps"] for r in runs[(label, "service /predict")]]
        ranking.append({"config": label, "rps": median(rates), "baseline": labels[0],
                        "vs_baseline": median([a / b for a, b in zip(rates, baseline)])})
    return sorted(ranking, key=lambda r: r["vs_baseline"], reverse=True)


HEADERS = ["case", "rows", "p50/median ms", "p99 ms", "throughput", "server CPU ms/req", "speedup vs pandas",
           "ratio to health", "errors", "target", "status"]


def print_rows(rows: list[dict]) -> None:
    print_table(HEADERS, [[
        r["case"], fmt(r.get("rows")), fmt(r["median_ms"], "ms"), fmt(r["p99_ms"], "ms"),
        f"{fmt(r['rate'], 'int')} {r['rate_unit']}", fmt(r.get("cpu_ms_per_req"), ".3f"),
        with_cpu(r.get("speedup_vs_pandas"), r.get("cpu_speedup_vs_pandas"), "x"),
        with_cpu(r.get("ratio_to_health"), r.get("cpu_ratio_to_health"), ".2f"),
        fmt(r.get("errors")), r.get("target", ""), r.get("status", ""),
    ] for r in rows])


if __name__ == "__main__":
    sys.exit(main())
