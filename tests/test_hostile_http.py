"""Hostile HTTP against the service as deployed (gunicorn, its config, the service's worker), on
127.0.0.1: broken chunked framing, unknown transfer codings, gunicorn's own error answers,
made-up methods, content codings, flasgger's bundled UI, and workers restarting one at a time.

Each reproducer is sent as raw bytes, so nothing in a client library tidies it up first."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import threading
import time
from datetime import datetime

import pytest

import gunicorn_support
from ad_purchase.serving.worker import RecycleGate

from api_support import example_bytes

TOKEN = "tok-hostile-tests-7f3e"
SINGLE = example_bytes("single")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    tokens = folder / "tokens.txt"
    tokens.write_text(f"tester score,ops {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    with gunicorn_support.running(folder, workers=1, AUTH_TOKENS_FILE=tokens) as live:
        yield live


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[bytes, bool]:
    """Send raw bytes; everything the server answers until it closes, and whether it closed
    (rather than the read timing out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return received, True
                received += chunk
        except ConnectionResetError:
            return received, True
        except socket.timeout:
            return received, False


def responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """The HTTP responses in `raw`, each (status, headers, body) framed by Content-Length."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", len(rest)))
        found.append((status, headers, rest[:length]))
        raw = rest[length:]
    return found


def the_answer(raw: bytes, status: int) -> dict:
    """Exactly one response, a problem detail with `status`; its body."""
    answers = responses(raw)
    assert len(answers) == 1, raw[:1000]
    got, headers, body = answers[0]
    assert got == status, raw[:1000]
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert b"Traceback" not in body and b"<html" not in body
    return problem


def post_chunked(chunked_body: bytes, token: str | None = TOKEN, coding: str = "chunked") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}"
            f"Transfer-Encoding: {coding}\r\n\r\n").encode() + chunked_body


BROKEN_CHUNKS = {
    "size zz": b"zz\r\n" + SINGLE + b"\r\n0\r\n\r\n",
    "size -1": b"-1\r\n" + SINGLE + b"\r\n0\r\n\r\n",
    "missing terminator": b"%x\r\n" % len(SINGLE) + SINGLE + b"XX0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN_CHUNKS))
def test_broken_chunked_framing_is_a_400_problem_and_the_connection_closes(server, case):
    raw, closed = exchange(server.port, post_chunked(BROKEN_CHUNKS[case]))
    problem = the_answer(raw, 400)
    assert "chunked framing is broken" in problem["detail"]
    assert closed, "the connection stayed open after a body that cannot be framed"
    assert "Traceback" not in server.output() and "unhandled error" not in server.output()


@pytest.mark.parametrize("case", sorted(BROKEN_CHUNKS))
def test_a_refused_request_with_a_broken_body_gets_one_answer_only(server, case):
    """The 401 is sent before the body is read; the broken rest must not produce a second answer."""
    raw, closed = exchange(server.port, post_chunked(BROKEN_CHUNKS[case], token=None))
    the_answer(raw, 401)
    assert closed


def test_a_good_chunked_body_is_scored(server):
    raw, _ = exchange(server.port, post_chunked(b"%x\r\n" % len(SINGLE) + SINGLE + b"\r\n0\r\n\r\n")
                      .replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n"))
    (status, _, body), = responses(raw)
    assert status == 200 and json.loads(body)["phat"] > 0


@pytest.mark.parametrize("coding", ["xchunked", "gzip, chunked", "identity"])
def test_an_unknown_transfer_coding_is_a_400_problem_not_501(server, coding):
    raw, closed = exchange(server.port, post_chunked(b"0\r\n\r\n", coding=coding))
    the_answer(raw, 400)
    assert closed


GUNICORN_ERRORS = {
    "request line too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    "header too large": (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    "too many headers": (b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200))
                         + b"\r\n", 431),
    "not HTTP": (b"GARBAGE\r\n\r\n", 400),
    "bad version": (b"GET /health HTTP/9.9\r\nHost: t\r\n\r\n", 400),
    "bad header name": (b"GET /health HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", sorted(GUNICORN_ERRORS))
def test_gunicorns_own_errors_are_problem_details(server, case):
    data, status = GUNICORN_ERRORS[case]
    raw, closed = exchange(server.port, data)
    the_answer(raw, status)
    assert closed


def test_made_up_methods_fold_into_one_metric_label(server):
    for number in range(40):
        server.get("/health")
        gunicorn_support.call(server.port, f"MADEUP{number}", "/health")
        gunicorn_support.call(server.port, f"X{number}", f"/no-such-path-{number}")
    text = server.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).body.decode()
    methods = set(re.findall(r'^http_requests_total\{[^}]*method="([^"]+)"', text, re.M))
    assert "other" in methods and not any(m.startswith(("MADEUP", "X")) for m in methods), methods
    routes = set(re.findall(r'^http_requests_total\{[^}]*route="([^"]+)"', text, re.M))
    assert not any("no-such-path" in r for r in routes), routes


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "GZIP", "gzip, identity"])
def test_a_content_encoding_is_refused_with_415_never_ignored(server, coding):
    for body in (SINGLE, gzip.compress(SINGLE)):          # neither a plain body labelled gzip nor a real one
        reply = server.post("/predict", body, headers={"Authorization": f"Bearer {TOKEN}", "Content-Encoding": coding})
        assert reply.status == 415 and reply.headers["content-type"] == "application/problem+json"
        assert reply.headers["accept-encoding"] == "identity"


def test_a_gzip_bomb_is_refused_within_a_second(server):
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)   # 200 MB inflated
    started = time.perf_counter()
    reply = server.post("/predict", bomb, headers={"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"})
    assert reply.status == 415 and time.perf_counter() - started < 1.0


def test_identity_encoding_is_scored(server):
    reply = server.post("/predict", SINGLE, headers={"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "identity"})
    assert reply.status == 200


@pytest.mark.parametrize("path", ["/flasgger_static/swagger-ui.css", "/flasgger_static/swagger-ui-bundle.js",
                                  "/flasgger_static/lib/jquery.min.js", "/static/x"])
def test_flasggers_bundled_ui_serves_nothing(server, path):
    reply = server.get(path)
    assert reply.status == 404 and reply.headers["content-type"] == "application/problem+json"


# ------------------------------------------------------------------ workers restart one at a time


def test_the_recycle_gate_gives_one_worker_a_turn_per_spacing(tmp_path):
    path = str(tmp_path / "recycle")
    first, second = RecycleGate(path, spacing=10), RecycleGate(path, spacing=10)
    assert first.may_restart(now=1000.0)
    assert not second.may_restart(now=1003.0)          # too soon after the first
    assert second.retry_at == 1010.0
    assert not second.may_restart(now=1009.9)
    assert second.may_restart(now=1010.0)
    assert not first.may_restart(now=1012.0)


RESTART = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) [+-]\d{4}\] \[(\d+)\] \[INFO\] Autorestarting worker", re.M)


def test_workers_under_load_never_restart_together(tmp_path):
    """Two workers, a limit of 60 requests each and no jitter: without turns they would restart
    within moments of each other, again and again.  Under 24 s of load every restart is at least
    the spacing after the previous one, and no request fails."""
    failures, answered = [], [0]
    with gunicorn_support.running(tmp_path, workers=2, MAX_REQUESTS=60, MAX_REQUESTS_JITTER=0) as live:
        deadline = time.monotonic() + 24

        def load():
            while time.monotonic() < deadline:
                try:
                    status = live.get("/health", timeout=10).status
                except OSError as exc:
                    failures.append(repr(exc))
                    continue
                if status != 200:
                    failures.append(status)
                answered[0] += 1

        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        output = live.output()
    restarts = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S") for stamp, _ in RESTART.findall(output)]
    gaps = [(b - a).total_seconds() for a, b in zip(restarts, restarts[1:])]
    print(f"\n{answered[0]} requests, {len(restarts)} restarts, gaps {gaps} s")
    assert not failures, failures[:10]
    assert len(restarts) >= 2, output[-2000:]
    assert min(gaps) >= 9, gaps         # log times are whole seconds; the spacing is 10 s
