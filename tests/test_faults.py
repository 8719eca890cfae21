"""Failures of the deployed service: a worker killed under load, a tampered or missing model,
and shutdown during a large batch.  Each runs a real gunicorn (gunicorn.conf.py, 2 workers of the
default class) on a loopback port."""
from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from ad_purchase.training import synthetic
from gunicorn_support import GUNICORN, ROOT, SERVICE_VARIABLES, STARTUP_SECONDS, call, running, start, stop

pytestmark = pytest.mark.faults

SINGLE = (ROOT / "examples" / "single.json").read_bytes()
LOAD_THREADS = 4
LOAD_SECONDS = 10.0
MAX_REQUESTS_PER_THREAD = 3000


def _load(port: int, stop_at: float, outcomes: Counter, after_kill: Counter, killed: threading.Event) -> None:
    """Posts the single example until `stop_at` (or the request cap), counting outcomes."""
    for _ in range(MAX_REQUESTS_PER_THREAD):
        if time.monotonic() >= stop_at:
            return
        try:
            reply = call(port, "POST", "/predict", SINGLE, timeout=10)
            outcome = "ok" if reply.status == 200 else f"http {reply.status}"
        except (OSError, http.client.HTTPException) as exc:
            outcome = f"error {type(exc).__name__}"
        outcomes[outcome] += 1
        if killed.is_set():
            after_kill[outcome] += 1


def test_a_killed_worker_is_replaced_and_few_requests_fail(tmp_path):
    with running(tmp_path) as server:
        before = server.worker_pids()
        outcomes, after_kill, killed = Counter(), Counter(), threading.Event()
        stop_at = time.monotonic() + LOAD_SECONDS
        threads = [threading.Thread(target=_load, args=(server.port, stop_at, outcomes, after_kill, killed))
                   for _ in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        killed.set()
        server.wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2,
                        STARTUP_SECONDS, "a replacement worker")
        for thread in threads:
            thread.join(LOAD_SECONDS + 30)
        after = server.worker_pids()
        errors = sum(n for outcome, n in outcomes.items() if outcome != "ok")
        print(f"\nkill -9 of worker {victim} under load: workers {sorted(before)} -> {sorted(after)}; "
              f"outcomes {dict(outcomes)}; after the kill {dict(after_kill)}; errors {errors}")
        assert not any(thread.is_alive() for thread in threads)
        assert victim not in after and len(after) == 2 and len(after - before) == 1
        assert server.get("/ready").status == 200
        assert call(server.port, "POST", "/predict", SINGLE).status == 200
        # SIGKILL loses only what the killed worker had in hand: each client thread has one request
        # in flight at a time, and a gevent worker may hold all of them (a sync worker only one);
        # connections still in the listen queue go to the other worker.
        assert errors <= LOAD_THREADS, outcomes
        assert after_kill["ok"] > 0   # the surviving and the new worker went on serving
        assert "worker" in server.output().lower()


def test_a_tampered_artifact_keeps_the_service_unready(tmp_path):
    model_dir = tmp_path / "objs"
    shutil.copytree(ROOT / "objs", model_dir)
    target = model_dir / "imputer.pkl"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with running(tmp_path / "server", MODEL_DIR=model_dir) as server:
        ready = server.get("/ready")
        assert ready.status == 503
        assert ready.headers["content-type"] == "application/problem+json"
        assert "imputer.pkl" in ready.json()["detail"]
        scored = server.post("/predict", SINGLE)
        assert scored.status == 503 and scored.json()["status"] == 503
        assert server.get("/health").status == 200     # alive, so an orchestrator sees why it is unready
        output = server.output()
    assert "imputer.pkl" in output


def test_a_missing_model_folder_stops_gunicorn_with_a_clear_message(tmp_path):
    missing = tmp_path / "no-such-model"
    server = start(tmp_path / "server", MODEL_DIR=missing)
    try:
        started = time.monotonic()
        code = server.process.wait(timeout=STARTUP_SECONDS)
        elapsed = time.monotonic() - started
    finally:
        stop(server)
    output = server.output()
    print(f"\nmissing MODEL_DIR: exit {code} after {elapsed:.1f} s; output: {output.strip()[-300:]}")
    assert code != 0
    assert elapsed < 30
    assert str(missing) in output and "does not exist" in output
    assert "Traceback" not in output


def without_service_settings(**settings) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    return {**env, **settings}


def test_gunicorn_that_cannot_start_leaves_no_metrics_folder(tmp_path):
    """The metrics folder gunicorn.conf.py makes for itself goes when the server does, also when
    it stops before serving."""
    env = without_service_settings(MODEL_DIR=str(tmp_path / "no-such-model"), TMPDIR=str(tmp_path), PORT="0")
    result = subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "api:app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=STARTUP_SECONDS)
    assert result.returncode != 0 and "does not exist" in result.stdout + result.stderr
    assert not list(tmp_path.glob("ad-purchase-metrics-*"))


def test_run_api_with_a_missing_model_folder_fails_before_it_announces_anything(tmp_path):
    env = without_service_settings(MODEL_DIR=str(tmp_path / "no-such-model"), TMPDIR=str(tmp_path))
    result = subprocess.run([str(ROOT / "run_api.sh"), "--local"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "no-such-model" in result.stderr and "not a folder" in result.stderr
    assert "answers on" not in result.stdout + result.stderr and "serving" not in result.stdout
    assert not list(tmp_path.glob("ad-purchase-metrics-*"))


GRACEFUL_TIMEOUT = 20


def test_sigterm_lets_a_large_batch_finish(tmp_path):
    records = synthetic.to_records(synthetic.generate(10_000, seed=7))
    body = json.dumps(records).encode()
    with running(tmp_path, GRACEFUL_TIMEOUT=GRACEFUL_TIMEOUT) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            # ~20 MB is far more than loopback socket buffers hold: when request() returns, a worker
            # has accepted the connection and read most of the body, so the batch is in flight.
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            response = connection.getresponse()
            status, payload = response.status, response.read()
        finally:
            connection.close()
        try:
            code = server.process.wait(timeout=GRACEFUL_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            code = None
        exited_after = time.monotonic() - signalled
    print(f"\nSIGTERM during a 10,000-row batch ({len(body) / 1e6:.1f} MB): status {status}, "
          f"master exit {code} {exited_after:.1f} s after the signal")
    assert status == 200, payload[:300]
    results = json.loads(payload)
    assert isinstance(results, list) and len(results) == 10_000
    assert all(set(r) >= {"phat", "business_outcome"} for r in results)
    assert code == 0
    assert exited_after < GRACEFUL_TIMEOUT


def test_sigterm_while_the_workers_boot_stops_the_server_at_once(tmp_path):
    """A worker told to stop before it has set up its own signal handling still stops."""
    server = start(tmp_path, GRACEFUL_TIMEOUT=GRACEFUL_TIMEOUT)
    try:
        server.wait_for(lambda: server.worker_pids(), STARTUP_SECONDS, "the first worker")
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = server.process.wait(timeout=GRACEFUL_TIMEOUT + 10)
        seconds = time.monotonic() - signalled
    finally:
        stop(server)
    print(f"\nSIGTERM as the workers boot: exit {code} after {seconds:.1f} s")
    assert code == 0
    assert seconds < GRACEFUL_TIMEOUT / 2, server.output()[-2000:]


@pytest.mark.parametrize("queued, stops", [
    ([signal.SIGCHLD, signal.SIGTERM], True),        # a stop right after the fork, before any handler
    ([signal.SIGQUIT], True),
    ([signal.SIGCHLD, signal.SIGHUP], False),        # the master's own business
    ([], False),
])
def test_a_stop_sent_right_after_the_fork_is_not_lost(monkeypatch, queued, stops):
    """Between fork and the worker's first line, a signal reaches the master's handler, which
    only queues it (in the worker's copy of the queue): the worker must find it there."""
    from gunicorn.workers.ggevent import GeventWorker

    from ad_purchase.serving.worker import SlowClientWorker

    seen = {}
    monkeypatch.setattr(GeventWorker, "init_process", lambda self: seen.setdefault("alive", self.alive))
    monkeypatch.setattr(signal, "signal", lambda *args: None)     # this process keeps its handlers
    worker = SlowClientWorker.__new__(SlowClientWorker)
    worker.alive = True
    worker.early_signals = queue.SimpleQueue()
    for number in queued:
        worker.early_signals.put_nowait(number)
    worker.init_process()
    assert seen["alive"] is not stops
    assert worker.early_signals.empty()
