"""Slow and idle clients against a real gunicorn started as in production (gunicorn.conf.py).

A fresh client must be served within two seconds, every time, while hundreds of connections sit
idle or stall mid-request; the stalled ones are closed in bounded time (408 for a stalled body),
and the log says so.  The same probe runs against the image in test_container.py.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

import slow_clients
from gunicorn_support import call, running

pytestmark = pytest.mark.slow_clients

HOLD_SECONDS = 60
MARGIN = 5.0                      # seconds a stalled connection may outlive its timeout on a busy machine
KEEPALIVE, BODY_TIMEOUT = 5, 10   # gunicorn.conf.py's and the service's defaults


def test_slow_and_idle_clients_do_not_keep_a_fresh_client_waiting(tmp_path):
    with running(tmp_path) as server:
        report = slow_clients.run("127.0.0.1", server.port, HOLD_SECONDS)
        print(f"\n{HOLD_SECONDS} s of 256 idle, 64 stalled-header, 64 stalled-body connections: "
              f"{report['probes']} probes, slowest {report['slowest_probe_s']} s, median "
              f"{report['median_probe_s']} s; slow connections {report['slow_clients']}")
        assert not slow_clients.problems(report, KEEPALIVE, BODY_TIMEOUT), report
        assert server.get("/ready").status == 200
        log = server.output()
    assert f"no complete request headers within {KEEPALIVE} s" in log
    assert f"no part of the body arrived for {BODY_TIMEOUT} s; answered 408" in log


def test_a_stalled_body_gets_408_and_a_stalled_header_a_closed_connection(tmp_path):
    with running(tmp_path, BODY_TIMEOUT=1, KEEPALIVE=1) as server:
        body_client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        header_client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            started = time.monotonic()
            body_client.sendall(slow_clients.opening_bytes("stalled_body", "127.0.0.1"))
            header_client.sendall(slow_clients.opening_bytes("stalled_headers", "127.0.0.1"))
            answer = b""
            while chunk := body_client.recv(65536):       # the server answers, then closes
                answer += chunk
            body_seconds = time.monotonic() - started
            assert header_client.recv(65536) == b""         # closed without an answer
            header_seconds = time.monotonic() - started
        finally:
            body_client.close()
            header_client.close()
        head, _, problem = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"application/problem+json" in head
        assert b'"status":408' in problem
        assert 1 <= body_seconds <= 1 + MARGIN and header_seconds <= 1 + MARGIN
        assert call(server.port, "GET", "/ready").status == 200
        log = server.output()
    assert "no complete request headers within 1 s" in log
    assert "no part of the body arrived for 1 s; answered 408" in log


def test_the_probe_sees_a_server_whose_threads_slow_clients_hold(tmp_path):
    """The harness can fail: gunicorn's thread worker without a proxy in front is starved by
    sixteen connections that stop mid-headers, and the probe says so."""
    with running(tmp_path, WORKER_CLASS="gthread", THREADS=4) as server:
        report = slow_clients.run("127.0.0.1", server.port, 8, idle=0, stalled_headers=16, stalled_body=0)
    assert report["failed_probes"], report
    assert all(probe["status"] != 200 for probe in report["failed_probes"])


def test_a_client_that_keeps_its_connection_busy_does_not_hold_the_others(tmp_path):
    """One worker, one connection with a thousand pipelined requests (the next one always
    buffered), then a second client: its request is served among the first, not after all."""
    pipelined = 1000
    with running(tmp_path, workers=1) as server:
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        received = bytearray()
        reader = threading.Thread(target=lambda: _read_until_closed(busy, received), daemon=True)
        try:
            reader.start()
            busy.sendall(b"".join(f"GET /health HTTP/1.1\r\nHost: t\r\nX-Request-ID: busy-{i}\r\n\r\n".encode()
                                  for i in range(pipelined)))
            reply = call(server.port, "GET", "/ready", headers={"X-Request-ID": "fresh"}, timeout=30)
            assert reply.status == 200
            busy.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            reader.join(timeout=60)
        finally:
            busy.close()
        assert received.count(b"HTTP/1.1 200") == pipelined + 1
        order = [json.loads(line)["request_id"] for line in server.output().splitlines()
                 if line.startswith("{") and '"request_id"' in line]
    assert order.index("fresh") < pipelined / 10, f"served after {order.index('fresh')} pipelined requests"


def _read_until_closed(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(1 << 16):
        into += chunk
