#!/usr/bin/env python
"""Where the request path (predict_json: Service.predict then Service.answer) spends its time: a 10,000-row batch and a single record.

Default: pyinstrument, in this process; the call trees go to bench/results/profile-*.txt and
the top of each is printed.  With --py-spy it also samples a child process running the same
loop with py-spy (a sampling profiler outside the interpreter, so no profiling overhead in the
measured code) and prints each function's share of the samples, itself and with its callees.

With --server it starts the service under gunicorn (one worker of the default class, on a free loopback port),
loads it with wrk for --seconds + 2 seconds, first single-record POST /predict and then
GET /health, and samples the worker with py-spy meanwhile: where a request's time goes
besides predict_json (Flask, gunicorn, metrics, logging).

Every loop is bounded: --seconds per profile (default 4) and at most 50 batches or
200,000 single records.

Usage: .venv/bin/python bench/profile_hotpath.py [--py-spy] [--server] [--seconds 4]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchlib import BENCH_DIR, MODEL_DIR, PYTHON, RESULTS_DIR, SEED, say, scoring_path

MAX_CALLS = {"10k": 50, "single": 200_000}


def bodies(kind: str) -> bytes:
    from ad_purchase.training import synthetic

    rows = 10_000 if kind == "10k" else 1
    records = synthetic.to_records(synthetic.generate(rows, seed=SEED))
    return json.dumps(records if kind == "10k" else records[0]).encode()


def loop(model, body: bytes, kind: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    calls = 0
    while calls < MAX_CALLS[kind] and time.monotonic() < deadline:
        model(body)
        calls += 1
    return calls


def with_pyinstrument(kind: str, seconds: float, lines: int) -> None:
    from pyinstrument import Profiler

    model = scoring_path(MODEL_DIR)
    body = bodies(kind)
    model(body)
    profiler = Profiler(interval=0.0002 if kind == "single" else 0.001)
    profiler.start()
    calls = loop(model, body, kind, seconds)
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"profile-{kind}.txt"
    path.write_text(text)
    say(f"-- pyinstrument, predict_json, {kind} ({calls} calls); full tree in {path.relative_to(BENCH_DIR.parent)}")
    tree = [line for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(tree) if "predict_json" in line), 0)
    print("\n".join(tree[start:start + lines]))


def with_py_spy(kind: str, seconds: float, top: int) -> None:
    py_spy = Path(PYTHON).parent / "py-spy"
    if not py_spy.exists():
        say("py-spy is not installed in .venv (pip install -r bench/requirements-bench.txt); skipped")
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    raw = RESULTS_DIR / f"py-spy-{kind}.txt"
    command = [str(py_spy), "record", "--rate", "1000", "--format", "raw", "--output", str(raw), "--",
               str(PYTHON), __file__, "--child", kind, "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0 or not raw.exists():
        say(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return
    say(f"-- py-spy, predict_json, {kind}; share of predict_json's samples "
        f"(raw stacks in {raw.relative_to(BENCH_DIR.parent)})")
    summarise_raw(raw, "predict_json", top)


def summarise_raw(raw: Path, anchor: str | None, top: int, inclusive_top: int = 0) -> None:
    """Each function's share of py-spy's samples, itself and with its callees; with `anchor`,
    only stacks through that function, cut at it."""
    inclusive, own, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if anchor:
            at = next((i for i, frame in enumerate(frames) if anchor in frame), None)
            if at is None:
                continue
            frames = frames[at:]
        count = int(count)
        total += count
        names = [re.sub(r"\s*\((.*?):\d+\)", r" (\1)", frame) for frame in frames]
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    if not total:
        say("  no samples")
        return
    if inclusive_top:
        print(f"{'total %':>8}  function (with callees; frames in every sample left out)")
        shown = [(n, c) for n, c in inclusive.most_common() if c < total][:inclusive_top]
        for name, count in shown:
            print(f"{100 * count / total:8.1f}  {name}")
    print(f"{'self %':>7} {'total %':>8}  function")
    for name, count in own.most_common(top):
        print(f"{100 * count / total:7.1f} {100 * inclusive[name] / total:8.1f}  {name}")


def profile_server(seconds: float) -> None:
    """py-spy on one gunicorn worker of the service while wrk loads it: /predict, then /health."""
    import shutil

    from benchlib import ROOT, Server, free_port, install_cleanup, stop_all_servers

    py_spy = Path(PYTHON).parent / "py-spy"
    if not py_spy.exists() or shutil.which("wrk") is None:
        say("the server profile needs py-spy in .venv and wrk on PATH; skipped")
        return
    install_cleanup()
    env = {"WEB_CONCURRENCY": "1", "THREADS": None, "WORKER_CLASS": None}     # the default worker class
    server = Server("service (profile)", "api:app", free_port(), env,
                    RESULTS_DIR / "logs" / "service-profile.log").start()
    try:
        server.wait_ready()
        worker = server.workers()[0]
        for path, script in (("/predict", str(BENCH_DIR / "post_single.lua")), ("/health", None)):
            raw = RESULTS_DIR / f"py-spy-server{path.replace('/', '-')}.txt"
            command = ["wrk", "-t1", "-c4", f"-d{round(seconds) + 2}s"] + (["-s", script] if script else [])
            load = subprocess.Popen(command + [server.url + path], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    env={"PATH": "/usr/bin:/bin", "BENCH_BODY": str(ROOT / "examples" / "single.json")})
            try:
                time.sleep(1)
                subprocess.run([str(py_spy), "record", "--pid", str(worker), "--duration", f"{seconds:g}",
                                "--rate", "500", "--format", "raw", "--output", str(raw)],
                               capture_output=True, timeout=seconds + 60)
                output, _ = load.communicate(timeout=seconds + 30)
            finally:
                if load.poll() is None:
                    load.kill()
            rate = re.search(r"Requests/sec:\s+([\d.]+)", output or "")
            say(f"-- py-spy, a gunicorn worker serving {path} under wrk -c4 "
                f"({rate.group(1) if rate else '?'} req/s); raw stacks in {raw.relative_to(BENCH_DIR.parent)}")
            if raw.exists():
                summarise_raw(raw, "handle_request", top=12, inclusive_top=25)
    finally:
        stop_all_servers()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--lines", type=int, default=40, help="lines of each call tree to print")
    parser.add_argument("--py-spy", action="store_true", help="also profile with py-spy")
    parser.add_argument("--server", action="store_true",
                        help="also profile a gunicorn worker of the service under wrk load (py-spy)")
    parser.add_argument("--child", choices=("10k", "single"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:                     # the process py-spy samples
        model = scoring_path(MODEL_DIR)
        body = bodies(args.child)
        loop(model, body, args.child, args.seconds)
        return 0
    say("== profile of the request path (predict_json)")
    for kind in ("10k", "single"):
        with_pyinstrument(kind, args.seconds, args.lines)
        if args.py_spy:
            with_py_spy(kind, args.seconds, top=15)
    if args.server:
        profile_server(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
