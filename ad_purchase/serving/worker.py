"""The gunicorn worker the service runs in by default: gevent's, with slow clients in the log.

With gevent every connection is a greenlet, so a client that connects and stalls holds a socket
and a few kilobytes, never one of a handful of threads: idle and slow clients cannot keep the
scoring code from fresh requests.  gunicorn gives each request's headers `keepalive` seconds and
then drops the connection without a word; this worker says in the log when it does that to a
connection that never completed a request (an idle connect or stalled headers).  Stalled bodies
are the application's to time out (see the service's BODY_TIMEOUT).  Connections take turns:
after each request the worker lets its other connections run before reading the next one.

Workers restart one at a time: gunicorn recycles a worker after max_requests requests, and under
an even load every worker gets there at about the same moment, so all of them would stop
accepting together.  A worker that reaches its limit within RECYCLE_SPACING seconds of another
worker's restart (noted in a small file shared by the server's workers) keeps serving until the
spacing has passed.
"""
from __future__ import annotations

import fcntl
import os
import queue
import signal
import time

import gevent
from gevent.local import local
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from . import http_guard


class _Connection(local):
    """What this greenlet's connection has done so far."""

    peer = None
    requests = 0


_connection = _Connection()


class _HeaderDeadline:
    """`keepalive` seconds to read a request's headers; on expiry the connection is closed."""

    def __init__(self, seconds: float, log) -> None:
        self.seconds, self.log = seconds, log
        self.timeout = gevent.Timeout(seconds)

    def __enter__(self) -> None:
        self.timeout.start()

    def __exit__(self, kind, exc, traceback) -> bool:
        self.timeout.close()
        if exc is not self.timeout:
            return False
        if _connection.requests:          # a kept-alive connection the client no longer uses
            self.log.debug("closed idle kept-alive connection from %s", _peer())
        else:
            self.log.info("closed connection from %s: no complete request headers within %g s",
                          _peer(), self.seconds)
        return True                       # the worker sees no request and closes the connection


def _asked_to_stop(queued) -> bool:
    """Whether a queue of signal numbers (drained here) holds a request to stop."""
    stops = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
    found = False
    while queued is not None:
        try:
            found |= queued.get_nowait() in stops
        except queue.Empty:
            break
    return found


RECYCLE_SPACING = 10.0        # seconds between two workers' restarts for max_requests


class RecycleGate:
    """Turns at restarting, shared by a server's workers through a file holding the time of the
    last restart (read and written under an exclusive lock)."""

    def __init__(self, path: str, spacing: float = RECYCLE_SPACING) -> None:
        self.path, self.spacing = path, spacing
        self.retry_at = 0.0               # time.time() before which asking again is pointless

    def may_restart(self, now: float | None = None) -> bool:
        """Whether this worker may restart now; if so, the restart is noted for the others."""
        now = time.time() if now is None else now
        if now < self.retry_at:
            return False
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            text = os.read(descriptor, 64)
            try:
                last = float(text) if text else 0.0
            except ValueError:
                last = 0.0
            if now - last < self.spacing:
                self.retry_at = last + self.spacing
                return False
            os.lseek(descriptor, 0, os.SEEK_SET)
            os.ftruncate(descriptor, 0)
            os.write(descriptor, repr(now).encode())
            return True
        finally:
            os.close(descriptor)        # closing releases the lock


def _peer() -> str:
    peer = _connection.peer
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


class SlowClientWorker(GeventWorker):
    """gevent worker that logs connections closed for sending no complete request in time and
    lets its connections take turns."""

    # Set by gunicorn.conf.py's post_fork hook: this process's copy of the master's signal queue,
    # and the file through which the server's workers take turns restarting.
    early_signals = None
    recycle_file = None
    _recycle_gate = None
    _deferred = False

    def init_process(self):
        # Until gunicorn installs the worker's own handlers (after gevent has patched the standard
        # library, which takes a moment), a stop would reach the master's inherited handler and be
        # lost, and the worker would only go when the master kills it after graceful_timeout.
        # A stop that came even earlier, right after the fork, sits in the inherited queue.
        signal.signal(signal.SIGTERM, self._stop_before_serving)
        if _asked_to_stop(self.early_signals):
            self.alive = False
        super().init_process()

    def _stop_before_serving(self, signum, frame):
        self.alive = False

    def handle(self, listener, client, addr):
        _connection.peer, _connection.requests = addr, 0
        super().handle(listener, client, addr)

    def handle_request(self, listener_name, req, sock, addr):
        _connection.requests += 1
        if self.nr + 1 >= self.max_requests and self.alive and self.recycle_file:
            self._recycle_gate = self._recycle_gate or RecycleGate(self.recycle_file)
            try:
                allowed = self._recycle_gate.may_restart()
            except OSError as exc:        # no turn-taking without the file; restart as gunicorn would
                self.log.warning("cannot use %s to take turns restarting: %s", self.recycle_file, exc)
                allowed = True
            if not allowed:               # gunicorn restarts the worker when nr reaches max_requests
                if not self._deferred:                    # said once, not at each request after
                    self._deferred = True
                    self.log.info("max requests reached; restarting once no other worker has restarted for "
                                  "%g s", self._recycle_gate.spacing)
                self.max_requests = self.nr + 2
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            # A kept-alive client whose next request is already buffered would be served again
            # without a switch, while every other connection of this worker waits: let the
            # others (and the accept loop) run first.
            gevent.idle()

    def timeout_ctx(self):
        return _HeaderDeadline(self.cfg.keepalive, self.log)

    def handle_error(self, req, client, addr, exc):
        """gunicorn's answer to a request it could not parse (or a failure outside the app), as a
        problem detail instead of an HTML page; logged as gunicorn logs it."""
        answer = http_guard.classify(exc)
        peer = (addr or ("", -1))[0]
        if answer is None:
            self.log.debug("TLS error from %s: %s", peer, exc)
            return
        if req is None and isinstance(exc, http_guard.CHUNK_ERRORS):
            # Raised while skipping the unread body of a request already answered (a 401, say):
            # a second answer would be taken for the next request's, so the connection just closes.
            self.log.info("closed connection from %s: the body of an answered request is malformed (%s)",
                          peer, exc)
            return
        status, detail = answer
        if status < 500:
            self.log.warning("Invalid request from ip=%s: %s", peer, exc)
        else:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        try:
            util.write_nonblock(client, http_guard.error_answer(status, detail))
        except Exception:
            self.log.debug("Failed to send error message.")
