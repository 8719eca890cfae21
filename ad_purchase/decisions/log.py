r"""The decision log: every scored record written to the database before its answer is sent.

    request --record()--> queue --writer thread--> one INSERT per batch, COMMIT --> wake the requests

Requests put their rows on a queue and wait.  One writer per process takes what is queued,
waits at most BATCH_WAIT seconds from the first row for more (or stops at BATCH_ROWS rows),
writes the batch in one transaction and wakes every request in it with the outcome of that
commit: a request answers only once its rows are durable, so a worker killed at any moment has
not answered for any decision that is not in the database.

The writer is a real OS thread.  Under gunicorn's gevent worker a greenlet that blocked on the
database would stop every connection of the worker, so the thread is started from the
unpatched `_thread` module, waits on a C queue (`_queue.SimpleQueue`, which gevent does not
replace), and wakes a waiting greenlet through its hub's thread-safe callback.  Without gevent
(the tests' client, gthread workers) requests wait on plain threading events.

When a commit fails the requests of that batch learn why: with DECISION_LOG=required they are
answered 503 (DecisionLogUnavailable), with best-effort they are answered anyway and the rows are
counted as unrecorded (metric and log line).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import _queue
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import text

from . import store

log = logging.getLogger("api.decisions")

MODES = ("required", "best-effort", "off")
BATCH_ROWS = 1000            # a batch closes at this many rows ...
BATCH_WAIT = 0.002           # ... or this many seconds after its first request arrived
WAIT_SECONDS = 10.0          # longest a request waits for its commit before giving up
IDLE_PING_SECONDS = 15.0     # an idle writer checks the database this often (the up gauge stays true)
PURGE_SECONDS = 3600.0       # retention runs this often in each process
CLOSE_SECONDS = 5.0          # longest a process waits at exit for its writer's last commit


class DecisionLogUnavailable(Exception):
    """The decisions of a request could not be recorded; `cause` says why, in words a client may read."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _original(module: str, name: str):
    """The standard library's own `module.name`, also after gevent has patched it."""
    try:
        from gevent import monkey
    except ImportError:                # pragma: no cover - gevent is a requirement
        return getattr(__import__(module), name)
    return monkey.get_original(module, name)


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:                # pragma: no cover
        return False
    return monkey.is_module_patched("threading")


class _ThreadWaiter:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class _GreenletWaiter:
    """Waited on by a greenlet, woken from the writer thread through the greenlet's hub."""

    __slots__ = ("_event", "_loop")

    def __init__(self) -> None:
        import gevent
        from gevent.event import Event
        self._event = Event()
        self._loop = gevent.get_hub().loop

    def wake(self) -> None:
        self._loop.run_callback_threadsafe(self._event.set)

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


@dataclass
class _Item:
    """One request's rows (or, with `task`, a job for the writer), and how it went."""

    waiter: Any
    arrived: float
    rows: int = 0
    values: tuple = ()
    task: Callable | None = None
    error: str | None = None
    result: Any = None


_STOP = object()


@dataclass
class Health:
    up: bool | None = None          # None: not tried yet in this process
    error: str = ""
    checked: float = 0.0


class DecisionLog:
    """The decision log of one service (its engines, its writer, its metrics)."""

    def __init__(self, url: str, mode: str = "required", retention_days: int = 365,
                 registry: CollectorRegistry | None = None, batch_rows: int = BATCH_ROWS,
                 batch_wait: float = BATCH_WAIT, wait_seconds: float = WAIT_SECONDS) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.url, self.mode, self.retention_days = url, mode, retention_days
        self.where = store.describe(url)
        self.batch_rows, self.batch_wait, self.wait_seconds = batch_rows, batch_wait, wait_seconds
        off = mode == "off"
        self.read_engine = None if off else store.make_engine(url)
        self.write_engine = None if off else store.make_engine(url, writer=True)
        self.health = Health()
        self._migrated = False
        self._pid: int | None = None
        self._queue = None
        self._stopped = None
        self._start_lock = _original("_thread", "allocate_lock")()
        self._greenlets = False
        self._next_purge = 0.0
        registry = registry if registry is not None else CollectorRegistry()
        self.recorded = Counter("decisions_recorded_total", "Decisions written to the decision log",
                                registry=registry)
        self.unrecorded = Counter("decisions_unrecorded_total", "Scored rows the decision log could not record "
                                  "(answered anyway in best-effort mode, 503 in required mode)", registry=registry)
        self.commit_seconds = Histogram("decision_log_commit_seconds", "Time to write and commit one batch",
                                        buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5),
                                        registry=registry)
        self.batch_size = Histogram("decision_log_batch_rows", "Rows per committed batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000, 10000), registry=registry)
        # Across gunicorn's processes the most recent write or check speaks (a process that never
        # tried, such as the master after start, does not hold the figure at a stale value).
        self.up = Gauge("decision_log_database_up", "1 when the decision database answered the last write or "
                        "check, 0 when it did not", registry=registry, multiprocess_mode="livemostrecent")
        if mode != "off":
            try:
                self._migrate()
                self._purge()
                self._set_health(True)
            except Exception as exc:      # the service starts; requests and /ready report the cause
                self._set_health(False, exc)
                log.error("decision log: %s is not usable at start (%s); will retry on the first request",
                          self.where, self.health.error)

    @classmethod
    def from_settings(cls, settings, registry: CollectorRegistry | None = None) -> "DecisionLog":
        return cls(settings.DATABASE_URL, settings.DECISION_LOG, settings.DECISION_RETENTION_DAYS, registry)

    # ------------------------------------------------------------------ the request side

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def record(self, model_version: str, request_id: str, caller: str | None, ids: Sequence | None,
               phat: Any, business_outcome: Any) -> None:
        """Write one request's decisions (row i: phat[i], business_outcome[i], ids[i]); return once
        they are committed.  Raises DecisionLogUnavailable when they are not and the mode is
        `required`; in `best-effort` counts them and returns."""
        if self.mode == "off":
            return
        rows = len(phat)
        item = self._submit(_Item(self._waiter(), time.monotonic(), rows,
                                  (store.utcnow(), model_version, request_id, caller, ids, phat, business_outcome)))
        if item.error is None:
            return
        self.unrecorded.inc(rows)
        if self.mode == "required":
            raise DecisionLogUnavailable(item.error if item.error.startswith(self.where)
                                         else f"{self.where}: {item.error}")
        log.warning("decision log: %d decision(s) of request %s not recorded (best-effort): %s",
                    rows, request_id, item.error)

    def check(self) -> Health:
        """Ask the database through the writer (SELECT 1); the health it found."""
        if self.mode != "off":
            self._submit(_Item(self._waiter(), time.monotonic(), task=self._ping))
        return self.health

    def run(self, function: Callable, *args) -> Any:
        """`function(*args)` where blocking on the database is harmless: in a thread of gevent's
        hub pool under gevent, directly otherwise."""
        if _gevent_patched():
            import gevent
            return gevent.get_hub().threadpool.apply(function, args)
        return function(*args)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Commit what is queued and stop this process's writer (at exit; SIGTERM goes through here).
        Every answered request's rows are committed already; this is for rows queued by requests
        that will not be answered.  Bounded, so that a stuck database never holds a worker past
        gunicorn's graceful timeout."""
        if self._pid != os.getpid() or self._queue is None:
            return
        self._queue.put(_STOP)
        if self._stopped.acquire(True, timeout):
            self._stopped.release()
        else:
            log.warning("decision log: the writer did not finish within %g s at exit", timeout)
        self._pid = None

    # ------------------------------------------------------------------ internals

    def _waiter(self):
        self._ensure_writer()
        return _GreenletWaiter() if self._greenlets else _ThreadWaiter()

    def _submit(self, item: _Item) -> _Item:
        self._queue.put(item)
        if not item.waiter.wait(self.wait_seconds):
            item.error = f"{self.where} did not confirm the write within {self.wait_seconds:g} s"
        return item

    def _ensure_writer(self) -> None:
        """Start this process's writer on first use (after gunicorn's fork and gevent's patching)."""
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._greenlets = _gevent_patched()
            self._queue = _queue.SimpleQueue()
            self._stopped = _original("_thread", "allocate_lock")()
            self._stopped.acquire()
            if self._greenlets:       # a real thread, not one of gevent's greenlets
                _original("_thread", "start_new_thread")(self._writer, (self._queue, self._stopped))
            else:                     # (threading's own threads are real; tracers and debuggers see them)
                threading.Thread(target=self._writer, args=(self._queue, self._stopped), daemon=True,
                                 name="decision-log-writer").start()
            self._pid = os.getpid()
            atexit.register(self.close)

    def _writer(self, queue, stopped) -> None:
        connection = None
        try:
            while True:
                try:
                    first = queue.get(True, IDLE_PING_SECONDS)
                except _queue.Empty:
                    connection = self._idle(connection)
                    continue
                if first is _STOP:
                    return
                batch, tasks, stop = self._gather(queue, first)
                connection = self._run_batch(connection, batch)
                for task in tasks:
                    connection = self._run_batch(connection, [task])
                if stop:
                    return
                self._purge_if_due()          # a busy writer is never idle: retention runs here too
        finally:
            if connection is not None:
                connection.close()
            stopped.release()

    def _gather(self, queue, first: _Item) -> tuple[list[_Item], list[_Item], bool]:
        """The batch `first` opens: what is queued, up to batch_rows rows or batch_wait seconds;
        jobs met on the way run after it, each on its own."""
        if first.task is not None:
            return [first], [], False
        batch, tasks, rows = [first], [], first.rows
        deadline = first.arrived + self.batch_wait
        while rows < self.batch_rows:
            remaining = deadline - time.monotonic()
            try:
                item = queue.get(True, remaining) if remaining > 0 else queue.get_nowait()
            except _queue.Empty:
                break
            if item is _STOP:
                return batch, tasks, True
            if item.task is not None:
                tasks.append(item)
                continue
            batch.append(item)
            rows += item.rows
        return batch, tasks, False

    def _run_batch(self, connection, batch: list[_Item]):
        started = time.perf_counter()
        try:
            if connection is None:
                self._migrate()
                connection = self.write_engine.connect()
            if batch[0].task is not None:
                batch[0].result = batch[0].task(connection)
            else:
                rows = [row for item in batch for row in _rows(*item.values)]
                with connection.begin():
                    store.bulk_insert(connection, "decisions", DECISION_COLUMNS, rows, times=(0,))
                self.recorded.inc(len(rows))
                self.commit_seconds.observe(time.perf_counter() - started)
                self.batch_size.observe(len(rows))
            self._set_health(True)
            error = None
        except Exception as exc:
            self._set_health(False, exc)
            error = self.health.error
            log.error("decision log: %s failed: %s", self.where, error)
            if connection is not None:
                try:
                    connection.invalidate()
                    connection.close()
                except Exception:           # already broken: nothing more to release
                    pass
            connection = None
        for item in batch:
            item.error = error
            item.waiter.wake()
        return connection

    def _idle(self, connection):
        item = _Item(_NoWaiter(), time.monotonic(), task=self._ping)
        connection = self._run_batch(connection, [item])
        self._purge_if_due()
        if connection is not None:          # an idle writer holds no connection (nor its files)
            connection.close()
        return None

    def _purge_if_due(self) -> None:
        if time.monotonic() >= self._next_purge and self.health.up:
            try:
                self._purge()
            except Exception as exc:
                self._next_purge = time.monotonic() + PURGE_SECONDS
                log.error("decision log: retention failed: %s", _cause(exc))

    def _ping(self, connection) -> None:
        connection.execute(text("SELECT 1"))
        connection.rollback()

    def _migrate(self) -> None:
        if not self._migrated:
            store.migrate(self.write_engine)
            self._migrated = True

    def _purge(self) -> None:
        removed = store.purge(self.write_engine, self.retention_days)
        self._next_purge = time.monotonic() + PURGE_SECONDS
        if removed:
            log.info("decision log: removed %d decision(s) older than %d days", removed, self.retention_days)

    def _set_health(self, up: bool, exc: BaseException | None = None) -> None:
        self.health = Health(up, "" if up else _cause(exc), time.time())
        self.up.set(1 if up else 0)


class _NoWaiter:
    def wake(self) -> None:
        pass


def _cause(exc: BaseException | None) -> str:
    """An exception in one line a client may read: the driver's message, without SQL or paths."""
    if exc is None:
        return "unknown error"
    inner = getattr(exc, "orig", None) or exc
    message = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return f"{type(inner).__name__}: {message}"[:300]


DECISION_COLUMNS = ("decided_at", "model_version", "phat", "business_outcome", "request_id", "row", "caller",
                    "record_id")


def _rows(decided_at, model_version, request_id, caller, ids, phat, outcome) -> list[tuple]:
    phat = np.asarray(phat, dtype=float).tolist()
    outcome = np.asarray(outcome).astype(int).tolist()
    return [(decided_at, model_version, p, o, request_id, i, caller,
             None if ids is None or ids[i] is None else str(ids[i]))
            for i, (p, o) in enumerate(zip(phat, outcome))]
