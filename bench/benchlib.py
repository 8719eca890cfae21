"""Helpers shared by the benchmark scripts: paths, memory readings, output checks, servers.

Every comparison in these benchmarks is a ratio of cases measured side by side in one run,
with their repetitions interleaved, because the machine is small, shared and noisy.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = ROOT / ".venv" / "bin" / "python"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
MODEL_DIR = ROOT / "objs"
SEED = 20240917          # fixed: the same synthetic rows on every run
TOLERANCE = 1e-12

for folder in (ROOT, ROOT / "tests"):   # the package; the pandas yardstick lives with the tests
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# The pickled scaler was fitted on an array; the reference hands it a DataFrame, and
# scikit-learn warns about that on every call.  The warning says nothing about speed.
warnings.filterwarnings("ignore", message="X has feature names")


def say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------- memory (/proc)

def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and friends from /proc/<pid>/status, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Vm") or line.startswith("Rss"):
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0])
    return values


def rss_mb(pid: int | str = "self") -> float:
    return proc_status(pid)["VmRSS"] / 1024


def hwm_mb(pid: int | str = "self") -> float:
    return proc_status(pid)["VmHWM"] / 1024


def pss_mb(pid: int | str) -> float | None:
    """Proportional set size: shared (copy-on-write) pages split among the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs).  False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/stat") as handle:
        stat = handle.read()
    # the command name is in parentheses and may hold spaces; the state follows it
    return stat[stat.rindex(")") + 2:].split()


def tree_cpu_seconds(master: int) -> float:
    """CPU time (user + system) of a gunicorn master, its live workers, and its exited workers
    (added to the master's children times when reaped), so recycled workers are not lost."""
    fields = _stat_fields(master)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))     # utime stime cutime cstime
    for pid in child_pids(master):
        try:
            worker = _stat_fields(pid)
        except OSError:
            continue
        total += int(worker[11]) + int(worker[12])
    return total / _TICK


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent` (gunicorn's workers of a master)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return sorted(found)


# ---------------------------------------------------------------------------- statistics

def median(values) -> float:
    return statistics.median(values)


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------- output checks

class MismatchError(AssertionError):
    pass


def check_same(actual, expected, label: str, tolerance: float = TOLERANCE) -> float:
    """`actual` and `expected` (a record dict or a list of them) hold the same keys in every
    record, the same business_outcome, and every other value within `tolerance`.
    Returns the largest difference; raises MismatchError naming the first one too large."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise MismatchError(f"{label}: expected one object, got {type(actual).__name__}")
        actual, expected = [actual], [expected]
    if not isinstance(actual, list) or len(actual) != len(expected):
        got = len(actual) if isinstance(actual, list) else type(actual).__name__
        raise MismatchError(f"{label}: expected {len(expected)} records, got {got}")
    worst = 0.0
    for row, (got, want) in enumerate(zip(actual, expected)):
        if set(got) != set(want):
            raise MismatchError(f"{label}: row {row} keys differ: "
                                f"missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}")
        for key, wanted in want.items():
            value = got[key]
            if key == "business_outcome":
                if value != wanted or isinstance(value, bool):
                    raise MismatchError(f"{label}: row {row} business_outcome {value!r} != {wanted!r}")
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise MismatchError(f"{label}: row {row} {key} is {value!r}, not a number")
            diff = abs(float(value) - float(wanted))
            if not diff <= tolerance:      # also catches NaN
                raise MismatchError(f"{label}: row {row} {key} = {value!r}, reference {wanted!r} "
                                    f"(difference {diff:.3g} > {tolerance:g})")
            worst = max(worst, diff)
    return worst


# ---------------------------------------------------------------------------- results and table

def save_results(name: str, rows: list[dict], extra: dict | None = None) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"rows": rows, **(extra or {})}, indent=1))
    return path


def load_results(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(value, spec: str = ".3g") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if spec == "ms":
            return f"{value:.3f}" if value < 10 else f"{value:.1f}"
        if spec == "x":
            return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"
        if spec == "int":
            return f"{value:,.0f}"
        return format(value, spec)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def with_cpu(wall, cpu, spec: str) -> str:
    """A ratio from wall time, and in parentheses the same ratio from CPU time."""
    return fmt(wall, spec) + (f" ({fmt(cpu, spec)})" if cpu else "")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    sys.stdout.flush()


def meets(value: float | None, target: float, at_most: bool = False) -> bool | None:
    if value is None:
        return None
    return value <= target if at_most else value >= target


def status(by_wall: bool | None, by_cpu: bool | None) -> str:
    """A target's verdict from the wall-time and the CPU-time ratio.  On a loaded machine a long
    call is preempted more often than a short one, so the two can disagree; say so."""
    if by_cpu is None:
        return "ok" if by_wall else "MISSED"
    if by_wall and by_cpu:
        return "ok"
    if not by_wall and not by_cpu:
        return "MISSED"
    return "ok by CPU only" if by_cpu else "ok by wall only"


# ---------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One gunicorn master (and its workers) started by this process, in its own session."""

    name: str
    app: str
    port: int
    env: dict
    log_path: Path
    process: subprocess.Popen | None = None
    extra_args: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_dir(self) -> Path:
        return self.log_path.parent / f"metrics-{self.port}"

    def start(self) -> "Server":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The service's gunicorn.conf.py keeps Prometheus files in PROMETHEUS_MULTIPROC_DIR;
        # give each server its own folder, removed when it stops.
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir), **self.env,
               "PORT": str(self.port)}
        env = {name: value for name, value in env.items() if value is not None}   # None: gunicorn.conf.py's default
        command = [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"),
                   "--bind", f"127.0.0.1:{self.port}", *self.extra_args, self.app]
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        _RUNNING.append(self)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} while starting; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200 and len(self.workers()) >= int(self.env.get("WEB_CONCURRENCY", 1)):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer /health within {timeout:.0f} s; see {self.log_path}")

    def workers(self) -> list[int]:
        return child_pids(self.process.pid) if self.process else []

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if self in _RUNNING:
                _RUNNING.remove(self)
            return
        group = self.process.pid      # start_new_session: the group id is the master's pid
        try:
            self.process.send_signal(signal.SIGTERM)    # gunicorn stops its workers first
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(group, signal.SIGKILL)             # anything of this group still left
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=5)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if self in _RUNNING:
            _RUNNING.remove(self)


_RUNNING: list[Server] = []


def stop_all_servers() -> None:
    for server in list(_RUNNING):
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            print(f"warning: could not stop {server.name}: {exc}", file=sys.stderr)


def install_cleanup() -> None:
    """Stop every server this process started on exit, Ctrl-C or SIGTERM."""
    import atexit

    atexit.register(stop_all_servers)

    def on_signal(signum, _frame):
        stop_all_servers()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


def post(url: str, body: bytes, timeout: float = 120.0) -> tuple[int, bytes]:
    """One POST of a JSON body with http.client (a fresh connection), returning status and bytes."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def scoring_path(model_dir):
    """The service's request-to-answer path in this process: JSON request bytes to JSON answer
    bytes (decode, score, encode), as a worker runs it for /predict, without HTTP or monitoring."""
    from ad_purchase.serving.service import Service
    from ad_purchase.serving.settings import Settings
    service = Service.start(Settings(MODEL_DIR=str(model_dir)))

    def predict_json(body: bytes) -> bytes:     # the name the profiles look for
        return service.answer(service.predict(body))
    return predict_json
