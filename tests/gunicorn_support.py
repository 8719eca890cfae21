"""A real gunicorn master for the fault, soak and observability tests, and plain HTTP to it.

The server is started exactly as in production (`gunicorn -c gunicorn.conf.py api:app` from the
repository root, PORT from the environment) on a free loopback port; every request goes to
127.0.0.1 and never through a proxy.  Waits are bounded; the server is always stopped.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
STARTUP_SECONDS = 60
STOP_SECONDS = 40
# Settings the service reads from the environment: a test sets the ones it wants, no others leak in.
SERVICE_VARIABLES = ("MODEL_DIR", "MAX_BATCH_ROWS", "MAX_CONTENT_LENGTH", "DRIFT_FLUSH_SECONDS", "PORT",
                     "WEB_CONCURRENCY", "THREADS", "WORKER_CLASS", "GRACEFUL_TIMEOUT", "TIMEOUT", "MAX_REQUESTS",
                     "MAX_REQUESTS_JITTER", "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS", "LOG_LEVEL",
                     "BODY_TIMEOUT", "KEEPALIVE", "WORKER_CONNECTIONS", "AUTH_TOKENS_FILE", "CERT_FILE", "KEY_FILE",
                     "DATABASE_URL", "DECISION_LOG", "DECISION_RETENTION_DAYS", "ID_FIELD", "DATABASE_URL_FILE")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> Reply:
    """One HTTP request to 127.0.0.1:`port` on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, **kwargs) -> Reply:
        return call(self.port, "GET", path, **kwargs)

    def post(self, path: str, body: bytes, **kwargs) -> Reply:
        return call(self.port, "POST", path, body, **kwargs)

    def worker_pids(self) -> set[int]:
        """The master's live child processes (its workers)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return {int(p) for p in children.read_text().split()}
        except OSError:
            return set()

    def wait_for(self, predicate, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited ({self.process.returncode}) while waiting for {what}:\n"
                                     + self.output()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {seconds} s waiting for {what}:\n" + self.output()[-3000:])
            time.sleep(0.1)

    def answers(self, path: str, status: int = 200) -> bool:
        try:
            return self.get(path, timeout=2).status == status
        except OSError:
            return False


def rss_kib(pid: int) -> int:
    """Resident set size of a process from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def environment(port: int, metrics_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(PORT=str(port), WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
               DATABASE_URL=f"sqlite:///{metrics_dir.parent / 'decisions.sqlite3'}")
    env.update({k: str(v) for k, v in settings.items()})
    return env


def start(folder: Path, **settings) -> Server:
    """Start gunicorn in the background; the caller waits for what it needs."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "gunicorn.log"
    command = [str(GUNICORN), "-c", "gunicorn.conf.py", "--no-control-socket", "api:app"]
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=environment(port, folder / "metrics", **settings),
                                   stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Server(process, port, log)


def stop(server: Server) -> int:
    """SIGTERM, a bounded wait, then SIGKILL of the master and any worker left; the exit code."""
    if server.process.poll() is None:
        workers = server.worker_pids()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
        for pid in workers:  # only if still ours: a gunicorn of this checkout
            try:
                if str(GUNICORN).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
    return server.process.returncode


@contextmanager
def running(folder: Path, workers: int = 2, **settings):
    """A started gunicorn that answers /health with `workers` workers up; stopped on exit."""
    server = start(folder, WEB_CONCURRENCY=workers, **settings)
    try:
        server.wait_for(lambda: server.answers("/health"), STARTUP_SECONDS, "/health")
        server.wait_for(lambda: len(server.worker_pids()) == workers, STARTUP_SECONDS, f"{workers} workers")
        yield server
    finally:
        stop(server)
