"""A bounded soak: wrk posts the single example to a real gunicorn for two equal rounds.

Every response must be 2xx with no socket errors, and the workers' resident memory must not keep
growing: round 1 warms everything up (imports, caches, allocator pools), so the growth from the
end of round 1 to the end of round 2 is what a leak would show.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from gunicorn_support import ROOT, rss_kib, running

pytestmark = pytest.mark.soak

ROUND_SECONDS = int(os.environ.get("SOAK_SECONDS", "15"))
THREADS, CONNECTIONS = 2, 8
MAX_GROWTH_KIB = 30 * 1024          # per worker, from the end of round 1 to the end of round 2
SUMMARY_MARK = "SOAK-SUMMARY "

# wrk runs this script: POST the example, and at the end print the counts as one JSON line.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local handle = assert(io.open(os.getenv("SOAK_BODY"), "rb"))
wrk.body = handle:read("*a")
handle:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "seconds": %.3f, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\\n',
    "__MARK__", summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
""".replace("__MARK__", SUMMARY_MARK)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed (apt-get install wrk); CI must install it")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    return found


def run_wrk(wrk: str, script, port: int) -> tuple[dict, str]:
    command = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{ROUND_SECONDS}s", "--timeout", "10s", "--latency",
               "-s", str(script), f"http://127.0.0.1:{port}/predict"]
    env = {**os.environ, "SOAK_BODY": str(ROOT / "examples" / "single.json")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=ROUND_SECONDS + 60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [l for l in done.stdout.splitlines() if l.startswith(SUMMARY_MARK)]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0][len(SUMMARY_MARK):]), done.stdout


def non_2xx(text: str) -> int:
    """wrk's own line, printed only when some responses were not 2xx or 3xx."""
    for line in text.splitlines():
        if "Non-2xx or 3xx responses:" in line:
            return int(line.split(":")[1])
    return 0


def test_soak_has_no_errors_and_bounded_memory(tmp_path):
    wrk = wrk_binary()
    script = tmp_path / "post.lua"
    script.write_text(LUA)
    # MAX_REQUESTS=0: no worker recycling, which would hide a leak by restarting the worker.
    with running(tmp_path / "server", MAX_REQUESTS=0) as server:
        workers = sorted(server.worker_pids())
        start = {pid: rss_kib(pid) for pid in workers}
        rounds = []
        for _ in range(2):
            summary, text = run_wrk(wrk, script, server.port)
            summary["non_2xx"] = non_2xx(text)
            summary["rss_kib"] = {pid: rss_kib(pid) for pid in workers}
            rounds.append(summary)
            print(f"\nwrk round: {summary['requests']} requests in {summary['seconds']:.1f} s "
                  f"({summary['requests'] / summary['seconds']:.0f} req/s), p50 {summary['p50_ms']:.2f} ms, "
                  f"p99 {summary['p99_ms']:.2f} ms, max {summary['max_ms']:.1f} ms; non-2xx {summary['non_2xx']}; "
                  f"errors connect/read/write/status/timeout {summary['connect']}/{summary['read']}/"
                  f"{summary['write']}/{summary['status']}/{summary['timeout']}")
            print(text)
        assert sorted(server.worker_pids()) == workers, "a worker died or was replaced during the soak"
        assert server.get("/ready").status == 200
    growth = {pid: rounds[1]["rss_kib"][pid] - rounds[0]["rss_kib"][pid] for pid in workers}
    print("worker RSS KiB: start", start, "after round 1", rounds[0]["rss_kib"], "after round 2",
          rounds[1]["rss_kib"], "growth round 1 -> 2", growth)
    for summary in rounds:
        assert summary["requests"] > 0
        assert summary["non_2xx"] == 0 and summary["status"] == 0, summary
        assert summary["connect"] == summary["read"] == summary["write"] == summary["timeout"] == 0, summary
    assert all(kib < MAX_GROWTH_KIB for kib in growth.values()), growth
