"""The service as deployed: gunicorn with the shipped configuration, spoken to over real HTTP on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from api_support import (ROOT, assert_matches, assert_result_shape, assert_safe_body, example, example_bytes,
                         reference_predict)

STARTUP_SECONDS = 30
SHUTDOWN_SECONDS = 30
# Loopback only, and never through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Server:
    process: subprocess.Popen
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 10):
    """(status, content type, body bytes) for a GET, or a POST when `body` is given."""
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type is not None:
        req.add_header("Content-Type", content_type)
    try:
        with _opener.open(req, timeout=timeout) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get_content_type(), error.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MODEL_DIR", "MAX_BATCH_ROWS", "MAX_CONTENT_LENGTH", "GUNICORN_CMD_ARGS")}
    env.update(PORT=str(port), WEB_CONCURRENCY="1", PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"))
    log_path = folder / "gunicorn.log"
    command = [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "gunicorn.conf.py",
               # a private control socket, so the test never touches another instance's
               "--control-socket", str(folder / "control.sock"), "api:app"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    live = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode} during start:\n{live.output()}")
            try:
                if request(live.base + "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer /health within {STARTUP_SECONDS} s:\n{live.output()}")
            time.sleep(0.2)
        yield live
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=SHUTDOWN_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_live_server_is_ready(server):
    status, content_type, body = request(server.base + "/ready")
    assert status == 200 and content_type == "application/json"
    assert json.loads(body)["status"] == "ready"


@pytest.mark.parametrize("name", ["single", "batch"])
def test_live_server_scores_the_users_examples(server, name):
    status, content_type, body = request(server.base + "/predict", example_bytes(name), "application/json")
    assert status == 200, body[:500]
    assert content_type == "application/json"
    assert_safe_body(body.decode())
    result = json.loads(body)
    payload = example(name)
    if isinstance(payload, dict):
        assert isinstance(result, dict)
        results, records = [result], [payload]
    else:
        assert isinstance(result, list) and len(result) == len(payload)
        results, records = result, payload
    for item in results:
        assert_result_shape(item)
    assert_matches(results, reference_predict(records))


def test_live_server_answers_errors_as_problems(server):
    status, content_type, body = request(server.base + "/predict", b"{", "application/json")
    assert (status, content_type) == (400, "application/problem+json")
    assert_safe_body(body.decode())
    # urllib labels a body as a form unless told otherwise
    status, content_type, body = request(server.base + "/predict", example_bytes("single"))
    assert (status, content_type) == (415, "application/problem+json")
    status, content_type, body = request(server.base + "/no-such-page")
    assert (status, content_type) == (404, "application/problem+json")
    assert request(server.base + "/ready")[0] == 200


def test_live_server_stops_cleanly_on_sigterm(server):
    """Runs last: the orchestrator's stop signal ends the server promptly and successfully."""
    assert server.process.poll() is None
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn still running {SHUTDOWN_SECONDS} s after SIGTERM:\n{server.output()}")
    assert code == 0, server.output()
