"""Slow and idle clients against a running server, and what a fresh client sees meanwhile.

    .venv/bin/python tests/slow_clients.py --port 1313 [--seconds 60]

Three kinds of connection are opened and kept at their number for the whole run: idle ones that
send nothing, ones that stop in the middle of the request headers, and ones that send complete
headers declaring a 100 KB body and then stop after its first byte.  When the server closes one,
another of the same kind takes its place, as a determined client would do.  Meanwhile a fresh
client asks for /ready and scores examples/single.json once a second, each on a new connection
with a short timeout.  The report says how each fresh request fared and how long the server let
each kind of slow connection live.
"""
from __future__ import annotations

import argparse
import http.client
import json
import selectors
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINGLE = (ROOT / "examples" / "single.json").read_bytes()
DECLARED_BODY = 100 * 1024
KINDS = ("idle", "stalled_headers", "stalled_body")


def opening_bytes(kind: str, host: str) -> bytes:
    """What a slow connection of `kind` sends before it stops."""
    if kind == "idle":
        return b""
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n").encode()
    if kind == "stalled_headers":
        return head + b"Content-Len"
    return head + f"Content-Length: {DECLARED_BODY}\r\n\r\n".encode() + b"["


@dataclass
class KindReport:
    opened: int = 0
    closed_by_server: int = 0
    lifetimes: list[float] = field(default_factory=list)     # seconds from open to the server's close
    answers: dict[str, int] = field(default_factory=dict)    # first status line the server sent, if any

    def summary(self) -> dict:
        return {"opened": self.opened, "closed_by_server": self.closed_by_server,
                "median_lifetime_s": round(statistics.median(self.lifetimes), 2) if self.lifetimes else None,
                "max_lifetime_s": round(max(self.lifetimes), 2) if self.lifetimes else None,
                "answers": dict(self.answers)}


class SlowClients:
    """Keeps `counts[kind]` connections of each kind open until `stop()`, reopening closed ones."""

    def __init__(self, host: str, port: int, counts: dict[str, int]) -> None:
        self.host, self.port, self.counts = host, port, counts
        self.reports = {kind: KindReport() for kind in counts}
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def __enter__(self) -> "SlowClients":
        for kind, count in self.counts.items():
            for _ in range(count):
                self._open(kind)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def open_now(self) -> int:
        return len(self._selector.get_map() or {})

    def _open(self, kind: str) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.sendall(opening_bytes(kind, self.host))
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, (kind, time.monotonic()))
        self.reports[kind].opened += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                kind, opened = key.data
                try:
                    data = key.fileobj.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                report = self.reports[kind]
                if data:
                    status = data.split(b"\r\n", 1)[0].decode("latin-1")
                    report.answers[status] = report.answers.get(status, 0) + 1
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
                report.closed_by_server += 1
                report.lifetimes.append(time.monotonic() - opened)
                if not self._stop.is_set():
                    try:
                        self._open(kind)
                    except OSError:        # the server refused a new one: try again on the next turn
                        time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for key in list((self._selector.get_map() or {}).values()):
            self._selector.unregister(key.fileobj)
            key.fileobj.close()
        self._selector.close()


def fresh_request(host: str, port: int, method: str, path: str, body: bytes | None, timeout: float) -> tuple:
    """(status or the error's name, seconds) of one request on a new connection."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError as exc:
        return type(exc).__name__, time.monotonic() - started
    finally:
        connection.close()


def run(host: str, port: int, seconds: float, idle: int = 256, stalled_headers: int = 64, stalled_body: int = 64,
        timeout: float = 2.0, interval: float = 1.0) -> dict:
    """Hold the slow connections for `seconds` while probing /ready and /predict; the findings."""
    counts = {"idle": idle, "stalled_headers": stalled_headers, "stalled_body": stalled_body}
    probes = []
    with SlowClients(host, port, counts) as slow:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            turn = time.monotonic()
            for method, path, body in (("GET", "/ready", None), ("POST", "/predict", SINGLE)):
                status, took = fresh_request(host, port, method, path, body, timeout)
                probes.append({"path": path, "status": status, "seconds": round(took, 3),
                               "slow_open": slow.open_now()})
            time.sleep(max(0.0, interval - (time.monotonic() - turn)))
    bad = [p for p in probes if p["status"] != 200 or p["seconds"] > timeout]
    return {"seconds": seconds, "probes": len(probes), "failed_probes": bad,
            "slowest_probe_s": max(p["seconds"] for p in probes),
            "median_probe_s": round(statistics.median(p["seconds"] for p in probes), 4),
            "slow_clients": {kind: report.summary() for kind, report in slow.reports.items()}}


def problems(report: dict, keepalive: float, body_timeout: float, probe_timeout: float = 2.0,
             margin: float = 5.0) -> list[str]:
    """What went wrong in a `run`: a fresh request that failed or took longer than `probe_timeout`,
    or a kind of slow connection the server did not close within its timeout (plus `margin`
    seconds for a busy machine); a stalled body must be answered 408."""
    found = [f"fresh request failed: {probe}" for probe in report["failed_probes"][:10]]
    if report["slowest_probe_s"] > probe_timeout:
        found.append(f"slowest fresh request took {report['slowest_probe_s']} s")
    kinds = report["slow_clients"]
    for kind, limit in (("idle", keepalive), ("stalled_headers", keepalive), ("stalled_body", body_timeout)):
        seen = kinds.get(kind)
        if seen and seen["opened"] and not seen["closed_by_server"]:
            found.append(f"{kind}: the server closed none of {seen['opened']}")
        elif seen and seen["closed_by_server"] and seen["max_lifetime_s"] > limit + margin:
            found.append(f"{kind}: one lived {seen['max_lifetime_s']} s, over {limit} s + {margin} s")
    answers = set(kinds.get("stalled_body", {}).get("answers", {}))
    if answers - {"HTTP/1.1 408 REQUEST TIMEOUT"}:
        found.append(f"stalled bodies were answered {sorted(answers)}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1313)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--idle", type=int, default=256)
    parser.add_argument("--stalled-headers", type=int, default=64)
    parser.add_argument("--stalled-body", type=int, default=64)
    args = parser.parse_args()
    result = run(args.host, args.port, args.seconds, args.idle, args.stalled_headers, args.stalled_body)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
