"""Every setting of the service, typed: each is read from the environment variable of the same
name, once, here, and checked at start.  A value that does not fit stops the service with one
line naming the variable, the value and what is allowed.  gunicorn.conf.py reads its settings
from here too; nothing else in the package reads the environment for a setting."""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from .. import HOME, machine_cores
from ..resources import DEFAULT_MODEL_DIR
from ..schema import FIELDS, MAX_BATCH_ROWS

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The decision log's settings (see ad_purchase/decisions).
DECISION_LOG_MODES = ("required", "best-effort", "off")
DATABASE_SCHEMES = ("sqlite://", "postgresql://", "postgres://", "postgresql+psycopg://")
DEFAULT_WORKER = "ad_purchase.serving.worker.SlowClientWorker"


@dataclass(frozen=True)
class Settings:
    PORT: int = 1313                             # 0: any free port
    MODEL_DIR: str = str(DEFAULT_MODEL_DIR)
    MAX_BATCH_ROWS: int = MAX_BATCH_ROWS
    MAX_CONTENT_LENGTH: int = 64 * 1024 * 1024   # bytes; a 10,000-row batch is about 20 MB
    BODY_TIMEOUT: int = 10                       # seconds a request body may pause before 408
    ID_FIELD: str = "customer_id"                # the key of the client's own record id
    # The decision log: an SQLite file (default: var/ beside the package) or postgresql://...
    DATABASE_URL: str = "sqlite:///" + str(HOME / "var" / "decisions.sqlite3")
    DATABASE_URL_FILE: str = ""                  # a file holding DATABASE_URL (a mounted Secret); wins
    DECISION_LOG: str = "required"               # required (503 when not recorded), best-effort, off
    DECISION_RETENTION_DAYS: int = 400           # decisions older than this are deleted
    LOG_LEVEL: str = "INFO"
    DRIFT_FLUSH_SECONDS: int = 5                 # 0: at every request
    # gunicorn
    WEB_CONCURRENCY: int = 0                     # worker processes; 0: one per core
    WORKER_CLASS: str = DEFAULT_WORKER
    WORKER_CONNECTIONS: int = 1000               # per worker, slow ones included
    THREADS: int = 4                             # gthread only
    TIMEOUT: int = 60                            # a 10,000-row batch takes well under 1 s
    GRACEFUL_TIMEOUT: int = 30                   # SIGTERM: in-flight requests finish
    KEEPALIVE: int = 5                           # idle keep-alive, and the time to send headers
    MAX_REQUESTS: int = 50_000                   # a worker is recycled after this many (0: never)
    MAX_REQUESTS_JITTER: int = 5_000
    WORKER_TMP_DIR: str = tempfile.gettempdir()  # heartbeat files
    PROMETHEUS_MULTIPROC_DIR: str = ""           # set by gunicorn.conf.py: metrics shared by workers
    # access and TLS
    AUTH_TOKENS_FILE: str = ""                   # token file (NAME SCOPES SHA256HEX lines); unset: open
    CERT_FILE: str = ""                          # TLS certificate and key for gunicorn; both or neither
    KEY_FILE: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, overrides: Mapping | None = None) -> "Settings":
        """Settings from `environ` (os.environ by default), `overrides` taking precedence."""
        environ = os.environ if environ is None else environ
        values = {}
        for item in fields(cls):
            raw = (overrides or {}).get(item.name, environ.get(item.name))
            if raw is None or raw == "":
                continue
            if item.type == "int":
                try:
                    values[item.name] = int(raw)
                except (TypeError, ValueError):
                    _refuse(item.name, raw, "a whole number")
            else:
                values[item.name] = str(raw)
        if values.get("DATABASE_URL_FILE"):
            try:
                values["DATABASE_URL"] = Path(values["DATABASE_URL_FILE"]).read_text().strip()
            except OSError as exc:
                _refuse("DATABASE_URL_FILE", values["DATABASE_URL_FILE"], f"a readable file ({exc.strerror})")
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Values in range; the first one that is not stops the service."""
        at_least = {"PORT": 0, "MAX_BATCH_ROWS": 1, "MAX_CONTENT_LENGTH": 1, "BODY_TIMEOUT": 1,
                    "DRIFT_FLUSH_SECONDS": 0, "WEB_CONCURRENCY": 0, "WORKER_CONNECTIONS": 1, "THREADS": 1,
                    "TIMEOUT": 1, "GRACEFUL_TIMEOUT": 0, "KEEPALIVE": 1, "MAX_REQUESTS": 0, "MAX_REQUESTS_JITTER": 0}
        for name, least in at_least.items():
            if getattr(self, name) < least:
                _refuse(name, getattr(self, name), f"a whole number of at least {least}")
        if self.PORT > 65535:
            _refuse("PORT", self.PORT, "a port number from 0 (any free port) to 65535")
        if self.LOG_LEVEL.upper() not in LOG_LEVELS:
            _refuse("LOG_LEVEL", self.LOG_LEVEL, "one of " + ", ".join(LOG_LEVELS))
        if self.ID_FIELD in FIELDS or not self.ID_FIELD.strip():
            _refuse("ID_FIELD", self.ID_FIELD, "a key other than the fields x0..x99")
        if self.DECISION_LOG not in DECISION_LOG_MODES:
            _refuse("DECISION_LOG", self.DECISION_LOG, "one of " + ", ".join(DECISION_LOG_MODES))
        if not self.DATABASE_URL.startswith(DATABASE_SCHEMES):     # the scheme only: a URL may hold a password
            _refuse("DATABASE_URL", self.DATABASE_URL.split("://")[0][:40] + "://...",
                    "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
        if self.DECISION_RETENTION_DAYS < 1:
            _refuse("DECISION_RETENTION_DAYS", self.DECISION_RETENTION_DAYS, "a whole number of days, 1 or more")
        files = {"AUTH_TOKENS_FILE": "a readable token file (lines NAME SCOPES SHA256HEX), or unset for no access "
                                     "control",
                 "CERT_FILE": "a readable PEM certificate, or unset for plain HTTP",
                 "KEY_FILE": "a readable PEM private key, or unset for plain HTTP"}
        for name, allowed in files.items():
            value = getattr(self, name)
            if value and not (os.path.isfile(value) and os.access(value, os.R_OK)):
                _refuse(name, value, allowed)
        if bool(self.CERT_FILE) != bool(self.KEY_FILE):
            given, missing = ("CERT_FILE", "KEY_FILE") if self.CERT_FILE else ("KEY_FILE", "CERT_FILE")
            _refuse(given, getattr(self, given), f"set together with {missing} (TLS needs both files, or neither)")

    @property
    def workers(self) -> int:
        return self.WEB_CONCURRENCY or machine_cores()

    @property
    def log_level(self) -> int:
        return getattr(logging, self.LOG_LEVEL.upper())


def _refuse(name: str, value, allowed: str) -> None:
    """Stop the service: the value as the environment spells it, and what is allowed."""
    raise SystemExit(f"configuration error: {name}={str(value)!r} is not allowed; expected {allowed}")
