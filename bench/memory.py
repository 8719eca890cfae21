#!/usr/bin/env python
"""Memory of the gunicorn workers: RSS after start, and the peak a 10,000-row batch adds.

Starts the service (`gunicorn -c gunicorn.conf.py api:app`, its default worker class, 2 workers
unless WEB_CONCURRENCY/THREADS/WORKER_CLASS say otherwise) on a free loopback port, reads every
worker's /proc/<pid>/status (VmRSS) and smaps_rollup (PSS, which splits the pages the
preloaded app shares copy-on-write among the workers) once it is ready, then POSTs the same
10,000-row batch a few times.  Before each POST the workers' peak counters (VmHWM) are reset
to their current RSS; after it, the worker that answered shows how far its RSS rose.  A
sampler thread also reads VmRSS every 5 ms while the request runs, as a cross-check.

"Added" is measured against the worker's RSS at idle after start (target: <= 150 MB), and,
separately, against its RSS just before that request.  The pandas app is measured the same
way for comparison (fewer requests: it is slow).  "Retained" is how far above idle a worker's
RSS stays once the requests are over (memory the allocator keeps rather than returns).

Usage: .venv/bin/python bench/memory.py [--requests 3] [--strict]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from benchlib import (BENCH_DIR, RESULTS_DIR, SEED, Server, fmt, free_port, hwm_mb, install_cleanup,
                      post, print_table, pss_mb, reset_peak, rss_mb, save_results, say, stop_all_servers)

TARGET_ADDED_MB = 150.0


def worker_memory(server: Server) -> dict[int, dict]:
    return {pid: {"rss": rss_mb(pid), "pss": pss_mb(pid)} for pid in server.workers()}


def measure(server: Server, body: bytes, requests: int) -> dict:
    """Idle memory, then per request the peak each worker reached."""
    master = server.process.pid
    idle = worker_memory(server)
    say(f"  master {master}: RSS {rss_mb(master):.0f} MB, PSS {pss_mb(master) or 0:.0f} MB")
    for pid, values in idle.items():
        say(f"  worker {pid}: RSS {values['rss']:.0f} MB, PSS {values['pss'] or 0:.0f} MB (idle after start)")
    per_request = []
    for number in range(1, requests + 1):
        workers = server.workers()
        if set(workers) != set(idle):
            raise RuntimeError(f"the workers changed during the run ({sorted(idle)} -> {workers}); "
                               f"see {server.log_path}")
        before = {pid: rss_mb(pid) for pid in workers}
        if not all(reset_peak(pid) for pid in workers):
            raise RuntimeError("cannot reset VmHWM through /proc/<pid>/clear_refs; run as the servers' user")
        sampled = {pid: before[pid] for pid in workers}
        stop = threading.Event()

        def sample():
            deadline = time.monotonic() + 600
            while not stop.is_set() and time.monotonic() < deadline:
                for pid in workers:
                    try:
                        sampled[pid] = max(sampled[pid], rss_mb(pid))
                    except OSError:
                        pass
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        try:
            status, out = post(server.url + "/predict", body, timeout=300)
        finally:
            stop.set()
            sampler.join(timeout=5)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"{server.name} answered {status}: {out[:300]!r}")
        if len(json.loads(out)) != 10_000:
            raise RuntimeError(f"{server.name} did not answer 10,000 records")
        peaks = {pid: hwm_mb(pid) for pid in workers}
        after = {pid: rss_mb(pid) for pid in workers}
        busy = max(workers, key=lambda pid: peaks[pid] - before[pid])   # the worker that answered
        record = {
            "request": number, "worker": busy, "seconds": elapsed,
            "rss_before_mb": before[busy], "peak_mb": peaks[busy], "sampled_peak_mb": sampled[busy],
            "rss_after_mb": after[busy],
            "added_over_idle_mb": peaks[busy] - idle[busy]["rss"],
            "added_over_before_mb": peaks[busy] - before[busy],
        }
        per_request.append(record)
        say(f"  request {number}: worker {busy} RSS {before[busy]:.0f} -> peak {peaks[busy]:.0f} MB "
            f"(sampled {sampled[busy]:.0f}) -> {after[busy]:.0f} MB after; "
            f"+{record['added_over_idle_mb']:.0f} MB over idle, {elapsed:.2f} s")
    return {"master_rss_mb": rss_mb(master), "master_pss_mb": pss_mb(master), "idle": idle,
            "requests": per_request, "final": worker_memory(server)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=6, help="10,000-row POSTs to the service")
    parser.add_argument("--pandas-requests", type=int, default=2, help="the same to the pandas app (0: skip)")
    parser.add_argument("--quick", action="store_true", help="two service requests, one to the pandas app")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.pandas_requests = 2, 1
    install_cleanup()
    started = time.monotonic()
    # Unset WORKER_CLASS and THREADS leave gunicorn.conf.py's defaults: the default serving mode.
    env = {"WORKER_CLASS": os.environ.get("WORKER_CLASS"), "THREADS": os.environ.get("THREADS"),
           "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2")}
    setting = f"{env['WORKER_CLASS'] or 'default worker class'}, {env['WEB_CONCURRENCY']} workers"
    say(f"== memory benchmark: gunicorn {setting}")

    from ad_purchase.training import synthetic

    body = json.dumps(synthetic.to_records(synthetic.generate(10_000, seed=SEED))).encode()
    say(f"  10,000-row body {len(body) / 1e6:.1f} MB")
    logs = RESULTS_DIR / "logs"
    results = {}
    try:
        for name, app, count, extra in (("service", "api:app", args.requests, []),
                                        ("pandas app", "pandas_app:app", args.pandas_requests,
                                         ["--pythonpath", str(BENCH_DIR)])):
            if count <= 0:
                continue
            say(f"[{name}] starting ...")
            server = Server(name, app, free_port(), env, logs / f"memory-{name.replace(' ', '-')}.log",
                            extra_args=extra).start()
            server.wait_ready()
            results[name] = measure(server, body, count)
            server.stop()
    finally:
        stop_all_servers()

    rows = []
    for name, result in results.items():
        idle_rss = [v["rss"] for v in result["idle"].values()]
        idle_pss = [v["pss"] for v in result["idle"].values() if v["pss"] is not None]
        rows.append({"suite": "memory", "case": f"{name}: worker idle after start", "rows": None,
                     "rss_mb": max(idle_rss), "pss_mb": max(idle_pss) if idle_pss else None,
                     "detail": f"{len(idle_rss)} workers, master RSS {result['master_rss_mb']:.0f} MB"})
        worst = max(result["requests"], key=lambda r: r["added_over_idle_mb"])
        first = result["requests"][0]
        row = {"suite": "memory", "case": f"{name}: 10k batch, peak added", "rows": 10_000,
               "rss_mb": worst["peak_mb"], "added_mb": worst["added_over_idle_mb"],
               "added_first_mb": first["added_over_idle_mb"],
               "added_vs_before_mb": max(r["added_over_before_mb"] for r in result["requests"]),
               "retained_mb": max(result["final"][pid]["rss"] - result["idle"][pid]["rss"] for pid in result["final"]),
               "detail": f"{len(result['requests'])} requests; sampled peak {worst['sampled_peak_mb']:.0f} MB"}
        if name == "service":
            row["target"] = f"added <= {TARGET_ADDED_MB:g} MB"
            row["status"] = "ok" if worst["added_over_idle_mb"] <= TARGET_ADDED_MB else "MISSED"
        rows.append(row)
    say("")
    print_rows(rows)
    save_results("memory", rows, {"setting": setting, "raw": results,
                                  "seconds": round(time.monotonic() - started, 1)})
    say(f"memory benchmark done in {time.monotonic() - started:.0f} s")
    missed = [r for r in rows if r.get("status", "ok") != "ok"]
    return 1 if (missed and args.strict) else 0


HEADERS = ["case", "RSS MB", "PSS MB", "added MB (max)", "added MB (1st)", "retained MB", "detail",
           "target", "status"]


def print_rows(rows: list[dict]) -> None:
    print_table(HEADERS, [[
        r["case"], fmt(r["rss_mb"], ".0f"), fmt(r.get("pss_mb"), ".0f"), fmt(r.get("added_mb"), ".0f"),
        fmt(r.get("added_first_mb"), ".0f"), fmt(r.get("retained_mb"), ".0f"), r.get("detail", ""),
        r.get("target", ""), r.get("status", ""),
    ] for r in rows])


if __name__ == "__main__":
    sys.exit(main())
