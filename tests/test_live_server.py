"""The service as deployed: gunicorn with the shipped configuration, spoken to over real HTTP on 127.0.0.1."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

import gunicorn_support

from api_support import (assert_matches, assert_result_shape, assert_safe_body, example, example_bytes,
                         reference_predict)

STARTUP_SECONDS = 30
SHUTDOWN_SECONDS = 30
# Loopback only, and never through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
    """gunicorn started as in production, one worker, on a free loopback port."""
    live = gunicorn_support.start(tmp_path_factory.mktemp("live"), WEB_CONCURRENCY=1)
    try:
        live.wait_for(lambda: live.answers("/health"), STARTUP_SECONDS, "/health")
        yield live
    finally:
        gunicorn_support.stop(live)


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


def test_live_server_reads_a_chunked_body(server):
    """A body sent without Content-Length (chunked) scores like the same body sent with it."""
    host, port = server.base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    body = example_bytes("batch")
    pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    connection.request("POST", "/predict", body=iter(pieces), encode_chunked=True,
                       headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    assert response.status == 200, answer[:500]
    assert json.loads(answer) == json.loads(request(server.base + "/predict", body, "application/json")[2])


def test_live_server_answers_a_body_shorter_than_declared_with_400(server):
    host, port = server.base.removeprefix("http://").split(":")
    body = example_bytes("single")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (len(body) + 50) + body)
        sock.shutdown(socket.SHUT_WR)     # a whole record, but 50 bytes short of what was declared
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert_safe_body(answer.decode(errors="replace"))
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
