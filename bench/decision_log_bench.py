#!/usr/bin/env python
"""What the decision log costs: single-record POST /predict throughput with the log off, on
SQLite and on PostgreSQL, under the default gunicorn setting (gevent worker x2).

It starts the three servers at once on free loopback ports (PostgreSQL: the URL given with
--postgres-url, else a throwaway server from Debian's package, as the tests start it), warms each
up, then measures in rounds whose order rotates: a short `wrk --latency` run per server
(bench/post_single.lua, examples/single.json).  Reported per server: requests/s, p50/p99
latency, server CPU per request, and the throughput ratio to the log-off server (median of the
per-round ratios; target >= 0.7).  wrk's non-2xx and socket errors must be zero, and after the
runs every server's database holds one row per answered request (wrk's count, at least).

Usage: .venv/bin/python bench/decision_log_bench.py [--seconds 3] [--rounds 3] [--connections 16]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchlib import (RESULTS_DIR, Server, free_port, install_cleanup, median, print_table, save_results, say,
                      stop_all_servers)
from http_bench import LUA_SINGLE, run_wrk

TARGET = 0.7


def count_rows(url: str) -> int:
    from sqlalchemy import create_engine, text

    from ad_purchase.decisions.store import normalize_url
    engine = create_engine(normalize_url(url))
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM decisions")).scalar()
    engine.dispose()
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database (default: start a throwaway server)")
    args = parser.parse_args(argv)
    install_cleanup()
    scratch = Path(tempfile.mkdtemp(prefix="decision-bench-"))
    postgres = None
    pg_url = args.postgres_url
    if pg_url is None:
        from postgres_server import PostgresServer
        postgres = PostgresServer.start()
        pg_url = postgres.new_database()
    cases = {"log off": {"DECISION_LOG": "off"},
             "SQLite": {"DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}"},
             "PostgreSQL": {"DATABASE_URL": pg_url}}
    servers = {}
    try:
        for name, env in cases.items():
            servers[name] = Server(f"service ({name})", "api:app", free_port(), {"WEB_CONCURRENCY": "2", **env},
                                   RESULTS_DIR / "logs" / f"decisions-{name.replace(' ', '-')}.log").start()
        for server in servers.values():
            server.wait_ready()
        say("warming up")
        for server in servers.values():
            run_wrk(server.url, 1, 2, args.connections, str(LUA_SINGLE))
        results = {name: [] for name in servers}
        names = list(servers)
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                result = run_wrk(servers[name].url, args.seconds, 2, args.connections, str(LUA_SINGLE), servers[name])
                if result["non_2xx"] or result["socket_errors"]:
                    raise RuntimeError(f"{name}: {result['non_2xx']} non-2xx, {result.get('socket_detail')}")
                results[name].append(result)
            say(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
                f"{name} {results[name][-1]['rps']:.0f}/s" for name in names))
        rows, saved = [], []
        for name in names:
            runs = results[name]
            ratio = median([run["rps"] / base["rps"] for run, base in zip(runs, results["log off"])])
            recorded = None if name == "log off" else count_rows(cases[name]["DATABASE_URL"])
            answered = sum(run["requests"] for run in runs)
            if recorded is not None and recorded < answered:
                raise RuntimeError(f"{name}: {recorded} rows recorded for {answered} answered requests")
            entry = {"case": name, "rps": median([r["rps"] for r in runs]), "p50_ms": median([r["p50_ms"] for r in runs]),
                     "p99_ms": median([r["p99_ms"] for r in runs]),
                     "cpu_ms_per_req": median([r["cpu_ms_per_req"] for r in runs]), "ratio": ratio,
                     "recorded": recorded}
            saved.append(entry)
            rows.append([name, f"{entry['rps']:.0f}", f"{entry['p50_ms']:.2f}", f"{entry['p99_ms']:.2f}",
                         f"{entry['cpu_ms_per_req']:.3f}", f"{ratio:.2f}",
                         "-" if name == "log off" else ("meets" if ratio >= TARGET else "MISSES"),
                         "-" if recorded is None else f"{recorded:,}"])
        print_table(["case", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "vs off", f">= {TARGET}", "rows"], rows)
        save_results("decision_log", saved, {"connections": args.connections, "seconds": args.seconds,
                                             "rounds": args.rounds})
        return 0 if all(e["ratio"] >= TARGET for e in saved) else 1
    finally:
        stop_all_servers()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
