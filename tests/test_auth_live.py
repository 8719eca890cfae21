"""Access control and TLS on the service as deployed (gunicorn with its config file) on 127.0.0.1:
the token file reloaded by SIGHUP under load without a failed request, a bad file stopping the
server at start (and not at reload), and TLS with a self-signed certificate made here."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time

import pytest

import gunicorn_support

from api_support import ROOT, example_bytes

SINGLE = example_bytes("single")
KEPT, ADDED, REMOVED = "tok-kept-4a1d", "tok-added-92c0", "tok-removed-0e77"


def line(name: str, scopes: str, token: str) -> str:
    return f"{name} {scopes} {hashlib.sha256(token.encode()).hexdigest()}\n"


def predict(server, token: str) -> int:
    return server.post("/predict", SINGLE, headers={"Authorization": f"Bearer {token}"}, timeout=10).status


def steadily(server, token: str, status: int, times: int = 12) -> bool:
    """`times` fresh connections in a row get `status` (so every worker answers that way)."""
    return all(predict(server, token) == status for _ in range(times))


def test_sighup_reloads_the_token_file_under_load_without_a_failed_request(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# before\n" + line("steady", "score,ops", KEPT) + line("leaving", "score", REMOVED))
    failures, answered = [], [0]
    with gunicorn_support.running(tmp_path / "server", workers=2, AUTH_TOKENS_FILE=tokens) as server:
        assert predict(server, ADDED) == 401 and predict(server, REMOVED) == 200
        workers_before = server.worker_pids()
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    status = predict(server, KEPT)
                except OSError as exc:
                    failures.append(repr(exc))
                    continue
                if status != 200:
                    failures.append(status)
                answered[0] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            before = answered[0]
            tokens.write_text("# after\n" + line("steady", "score,ops", KEPT) + line("arriving", "score", ADDED))
            server.process.send_signal(signal.SIGHUP)
            server.wait_for(lambda: steadily(server, ADDED, 200) and steadily(server, REMOVED, 401), 60,
                            "the new token file in force on every worker")
            server.wait_for(lambda: not (server.worker_pids() & workers_before), 60, "the old workers gone")
            time.sleep(1.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        print(f"\n{answered[0]} requests under load ({before} before the SIGHUP); failures: {failures[:5]}")
        assert not failures
        assert answered[0] > before > 0
        metrics = server.get("/metrics", headers={"Authorization": f"Bearer {KEPT}"}).body.decode()
        scored = sum(float(v) for v in re.findall(r'^http_requests_total\{[^}]*route="/predict"[^}]*status="200"\} (\S+)',
                                                  metrics, re.M))
        assert scored >= answered[0], "the reload lost the metric files of the workers that served before it"
        output = server.output()
        assert "token file reloaded: 2 token(s)" in output and "arriving" in output
        assert ADDED not in output and KEPT not in output


def test_a_bad_file_at_sighup_keeps_the_tokens_in_force(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line("steady", "score", KEPT))
    with gunicorn_support.running(tmp_path / "server", workers=1, AUTH_TOKENS_FILE=tokens) as server:
        tokens.write_text(line("steady", "score", KEPT) + "broken line\n")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for(lambda: "token file not reloaded" in server.output(), 30, "the reload refused")
        assert f"AUTH_TOKENS_FILE {tokens} line 2" in server.output()
        assert steadily(server, KEPT, 200, 4)


def test_a_malformed_token_file_stops_gunicorn_with_one_line(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line("fine", "ops", KEPT) + "second score 1234\n")
    server = gunicorn_support.start(tmp_path / "server", AUTH_TOKENS_FILE=tokens)
    try:
        code = server.process.wait(timeout=gunicorn_support.STARTUP_SECONDS)
    finally:
        gunicorn_support.stop(server)
    output = server.output()
    assert code != 0
    complaint = [text for text in output.splitlines() if "AUTH_TOKENS_FILE" in text]
    assert len(complaint) == 1 and f"AUTH_TOKENS_FILE {tokens} line 2:" in complaint[0], output[-2000:]
    assert "Traceback" not in output and "ready: serving" not in output


def image_healthcheck(port: int, **settings) -> int:
    """The exit code of the image's HEALTHCHECK command (from the Dockerfile) run here."""
    text = (ROOT / "Dockerfile").read_text()
    command = json.loads(re.search(r"^HEALTHCHECK .*\\\n\s*CMD (\[.*\])$", text, re.M).group(1))
    assert command[0] == "python"
    env = {**{k: v for k, v in os.environ.items() if k not in gunicorn_support.SERVICE_VARIABLES},
           "PORT": str(port), **settings}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode


def test_without_a_token_file_the_log_says_the_service_is_open(tmp_path):
    with gunicorn_support.running(tmp_path, workers=1) as server:
        assert predict(server, "anything") == 200
        assert "access control is off" in server.output()
        assert image_healthcheck(server.port) == 0
    assert image_healthcheck(server.port) != 0          # the check fails once nothing answers


# ------------------------------------------------------------------ TLS


def self_signed(folder) -> tuple[str, str]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_cert_file_and_key_file(tmp_path):
    cert, key = self_signed(tmp_path)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line("steady", "score", KEPT))
    context = ssl.create_default_context(cafile=cert)
    server = gunicorn_support.start(tmp_path / "server", WEB_CONCURRENCY=1, CERT_FILE=cert, KEY_FILE=key,
                                    AUTH_TOKENS_FILE=tokens)

    def https(method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def up() -> bool:
        try:
            return https("GET", "/health")[0] == 200
        except OSError:
            return False

    try:
        server.wait_for(up, gunicorn_support.STARTUP_SECONDS, "/health over TLS")
        status, body = https("POST", "/predict", SINGLE, {"Content-Type": "application/json",
                                                          "Authorization": f"Bearer {KEPT}"})
        assert status == 200 and b"phat" in body
        assert image_healthcheck(server.port, CERT_FILE=cert, KEY_FILE=key) == 0   # the image's check speaks TLS
        assert image_healthcheck(server.port) != 0                                 # plain HTTP gets no answer
        with pytest.raises((OSError, http.client.HTTPException)):     # plain HTTP gets no answer
            reply = server.get("/health", timeout=5)
            assert reply.status != 200
            raise OSError("answered plain HTTP with an error status")
    finally:
        gunicorn_support.stop(server)


def test_a_certificate_without_its_key_stops_the_service_with_one_line(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked before the pair is complete\n")
    server = gunicorn_support.start(tmp_path / "server", CERT_FILE=cert)
    try:
        code = server.process.wait(timeout=gunicorn_support.STARTUP_SECONDS)
    finally:
        gunicorn_support.stop(server)
    output = server.output()
    assert code != 0 and f"configuration error: CERT_FILE='{cert}' is not allowed; expected set together with KEY_FILE" \
        in output, output[-2000:]
    assert "Traceback" not in output


# ------------------------------------------------------------------ every route, over real HTTP


LIVE_ROUTES = {"/predict": "score", "/model": "ops", "/model/drift": "ops", "/metrics": "ops", "/health": "",
               "/ready": "", "/apidocs/": "", "/apispec.json": "", "/apidocs/ui/swagger-ui.css": ""}
HOLDERS = {"score": "tok-live-scorer-11", "ops": "tok-live-operator-22"}


def test_every_route_against_every_caller_over_http(tmp_path):
    """The in-process matrix of test_auth.py, once through gunicorn: the header reaches the app
    as sent, and each answer is what the route's scope calls for."""
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line("scorer", "score", HOLDERS["score"]) + line("operator", "ops", HOLDERS["ops"]))
    outcomes = {}
    with gunicorn_support.running(tmp_path / "server", workers=1, AUTH_TOKENS_FILE=tokens) as server:
        for path, scope in LIVE_ROUTES.items():
            right = HOLDERS.get(scope, HOLDERS["ops"])
            other = HOLDERS["ops"] if scope == "score" else HOLDERS["score"]
            cases = {"no token": (path, {}), "unknown token": (path, {"Authorization": "Bearer tok-nobody"}),
                     "basic scheme": (path, {"Authorization": f"Basic {right}"}),
                     "token in query string": (f"{path}?access_token={right}", {}),
                     "token without scope": (path, {"Authorization": f"Bearer {other}"}),
                     "right token": (path, {"Authorization": f"Bearer {right}"})}
            for case, (target, headers) in cases.items():
                method, body = ("POST", SINGLE) if path == "/predict" else ("GET", None)
                reply = gunicorn_support.call(server.port, method, target, body, headers)
                outcomes[(path, case)] = reply.status
                if reply.status in (401, 403):
                    assert reply.headers["content-type"] == "application/problem+json"
                    assert reply.headers["www-authenticate"].startswith('Bearer realm="ad-purchase-api"')
        output = server.output()
    for (path, case), status in outcomes.items():
        scope = LIVE_ROUTES[path]
        expected = 200 if not scope or case == "right token" else 403 if case == "token without scope" else 401
        assert status == expected, (path, case, status)
    assert '"caller": "scorer"' in output and '"caller": "operator"' in output
    assert all(token not in output for token in HOLDERS.values())
