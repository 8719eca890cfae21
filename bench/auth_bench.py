#!/usr/bin/env python
"""What access control costs: single-record POST /predict with tokens on against tokens off.

Two servers run side by side on free loopback ports, both the default setting (the service's
gevent worker, 2 workers): one with no AUTH_TOKENS_FILE, one with a token file of 100 callers
whose scoring token is one of them.  Both are checked first (the secured one refuses the record
without its token, and both score it the same with it), warmed up, then measured with
`wrk --latency` in interleaved rounds whose order alternates.  The ratio (tokens on / tokens off)
is the median of the per-round ratios of requests/s, and in parentheses of the servers' CPU time
per request.  Target: at least 0.95.  `--control` starts the second server without tokens too
(an A/A run): its ratio shows how far the machine's noise alone moves the figure.

On a shared 2-core machine other work moves wrk's figures by tens of percent, so the same
comparison is also made in process, where scheduling matters little: the Flask app with and
without a token file answering the same POST /predict through its test client, CPU time per
request (time.process_time) in interleaved rounds.

Usage: .venv/bin/python bench/auth_bench.py [--quick] [--strict] [--seconds 2] [--rounds 6]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request

from benchlib import (BENCH_DIR, RESULTS_DIR, ROOT, Server, free_port, install_cleanup, median, meets, post,
                      print_table, save_results, say, status, stop_all_servers, tree_cpu_seconds, with_cpu)
from http_bench import parse_wrk

TARGET = 0.95
SINGLE_BODY = ROOT / "examples" / "single.json"
LUA = BENCH_DIR / "post_single_auth.lua"
TOKEN = "adp_bench-token-for-the-scoring-caller-0001"
CALLERS = 100


def token_file() -> str:
    path = RESULTS_DIR / "logs" / "auth-tokens.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"caller-{i:03d} score {hashlib.sha256(f'other-token-{i}'.encode()).hexdigest()}" for i in range(CALLERS - 1)]
    lines.insert(CALLERS // 2, f"bench score {hashlib.sha256(TOKEN.encode()).hexdigest()}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_wrk(server: Server, seconds: int, threads: int, connections: int) -> dict:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
               "-s", str(LUA), server.url + "/predict"]
    cpu_before = tree_cpu_seconds(server.process.pid)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 30,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BENCH_BODY": str(SINGLE_BODY),
                               "BENCH_TOKEN": TOKEN})
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    cpu = tree_cpu_seconds(server.process.pid) - cpu_before
    result["cpu_ms_per_req"] = cpu * 1e3 / result["requests"] if result["requests"] else None
    return result


def check(open_server: Server, secured: Server, control: bool) -> None:
    body = SINGLE_BODY.read_bytes()
    code, _ = post(secured.url + "/predict", body)
    if code != (200 if control else 401):
        raise RuntimeError(f"the secured server answered {code} to a record without a token, not 401")
    answers = []
    for server in (open_server, secured):
        request = urllib.request.Request(server.url + "/predict", data=body, method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append(json.loads(response.read()))
    if answers[0] != answers[1]:
        raise RuntimeError("the two servers score examples/single.json differently")


def in_process(rounds: int, requests: int, tokens_path: str | None) -> dict:
    """CPU microseconds per POST /predict through the app's test client, tokens off and on."""
    import logging

    from ad_purchase.serving.app import create_app

    logging.getLogger("api").setLevel(logging.ERROR)
    logging.getLogger("api.access").disabled = True          # the log line is the same for both
    body = SINGLE_BODY.read_bytes()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    second = {"AUTH_TOKENS_FILE": tokens_path} if tokens_path else {}      # none: the control run
    clients = {"off": create_app({}).test_client(), "on": create_app(second).test_client()}
    for client in clients.values():
        assert client.post("/predict", data=body, headers=headers).status_code == 200
    costs = {"off": [], "on": []}
    for round_no in range(rounds):
        for name in (("off", "on") if round_no % 2 == 0 else ("on", "off")):
            client = clients[name]
            started = time.process_time()
            for _ in range(requests):
                client.post("/predict", data=body, headers=headers)
            costs[name].append((time.process_time() - started) / requests * 1e6)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--control", action="store_true", help="both servers without tokens (noise floor)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.warmup = 1, 2, 1
    if shutil.which("wrk") is None:
        say("error: wrk is not on PATH; install it with: apt-get update && apt-get install -y wrk")
        return 2
    install_cleanup()
    started = time.monotonic()
    env = {"WORKER_CLASS": None, "WEB_CONCURRENCY": "2", "THREADS": None}
    logs = RESULTS_DIR / "logs"
    runs = {"off": [], "on": []}
    try:
        servers = {
            "off": Server("tokens off", "api:app", free_port(), {**env, "AUTH_TOKENS_FILE": None},
                          logs / "auth-off.log").start(),
            "on": Server("tokens on", "api:app", free_port(),
                         {**env, "AUTH_TOKENS_FILE": None if args.control else token_file()},
                         logs / "auth-on.log").start(),
        }
        for server in servers.values():
            server.wait_ready()
        check(servers["off"], servers["on"], args.control)
        say(f"== access control cost: wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x "
            f"{args.seconds} s per case; a {CALLERS}-caller token file; answers checked")
        for name, server in servers.items():
            warm = run_wrk(server, args.warmup, args.threads, args.connections)
            say(f"  warm-up tokens {name}: {warm['rps']:.0f} req/s")
        for round_no in range(args.rounds):
            for name in (("off", "on") if round_no % 2 == 0 else ("on", "off")):
                runs[name].append(run_wrk(servers[name], args.seconds, args.threads, args.connections))
            say(f"  round {round_no + 1}/{args.rounds}: tokens off {runs['off'][-1]['rps']:.0f}, "
                f"on {runs['on'][-1]['rps']:.0f} req/s")
    finally:
        stop_all_servers()
    errors = [f"tokens {name}: {r['non_2xx']} non-2xx, {r.get('socket_detail', 'no socket errors')}"
              for name, results in runs.items() for r in results if r["non_2xx"] or r["socket_errors"]]
    ratio = median([on["rps"] / off["rps"] for on, off in zip(runs["on"], runs["off"])])
    cpu_ratio = median([off["cpu_ms_per_req"] / on["cpu_ms_per_req"] for on, off in zip(runs["on"], runs["off"])
                        if on["cpu_ms_per_req"] and off["cpu_ms_per_req"]])
    verdict = status(meets(ratio, TARGET), meets(cpu_ratio, TARGET))
    rows = [{"case": f"tokens {name}", "rps": median([r["rps"] for r in results]),
             "p50_ms": median([r["p50_ms"] for r in results]), "p99_ms": median([r["p99_ms"] for r in results]),
             "cpu_ms_per_req": median([r["cpu_ms_per_req"] for r in results])} for name, results in runs.items()]
    say("")
    print_table(["case", "req/s", "p50 ms", "p99 ms", "server CPU ms/req"],
                [[row["case"], f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}",
                  f"{row['cpu_ms_per_req']:.3f}"] for row in rows])
    say(f"tokens {'off (control)' if args.control else 'on'} / tokens off: {with_cpu(ratio, cpu_ratio, 'x')} "
        f"(target >= {TARGET}): {verdict}")
    costs = in_process(10 if not args.quick else 2, 500 if not args.quick else 100,
                       None if args.control else token_file())
    process_ratio = median([off / on for on, off in zip(costs["on"], costs["off"])])
    say(f"in process (test client, CPU per request): tokens off {median(costs['off']):.0f} us, "
        f"on {median(costs['on']):.0f} us; off / on {process_ratio:.3f}")
    if errors:
        say("ERRORS reported by wrk:\n  " + "\n  ".join(errors))
    save_results("auth-control" if args.control else "auth", rows, {"per_round": runs, "in_process_us": costs,
                                                                    "in_process_ratio": process_ratio, "ratio": ratio, "cpu_ratio": cpu_ratio, "target": TARGET, "status": verdict,
                                "errors": errors, "seconds": round(time.monotonic() - started, 1),
                                "wrk": f"-t{args.threads} -c{args.connections} {args.rounds}x{args.seconds}s"})
    if errors:
        return 1
    return 1 if (args.strict and verdict != "ok") else 0


if __name__ == "__main__":
    raise SystemExit(main())
