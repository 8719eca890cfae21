"""The service's settings: typed, each from the environment variable of the same name."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .. import HOME
from ..schema import MAX_BATCH_ROWS


@dataclass(frozen=True)
class Settings:
    MODEL_DIR: str = str(HOME / "objs")
    MAX_BATCH_ROWS: int = MAX_BATCH_ROWS
    MAX_CONTENT_LENGTH: int = 64 * 1024 * 1024   # bytes; a 10,000-row batch is about 20 MB
    DRIFT_FLUSH_SECONDS: int = 5
    BODY_TIMEOUT: int = 10                       # seconds a request body may pause before 408
    AUTH_TOKENS_FILE: str = ""                   # token file (NAME SCOPES SHA256HEX lines); unset: open
    CERT_FILE: str = ""                          # TLS certificate and key for gunicorn; both or neither
    KEY_FILE: str = ""

    @classmethod
    def from_env(cls, environ: dict, overrides: dict | None = None) -> "Settings":
        """Settings from `environ` (os.environ), with `overrides` taking precedence; a value that
        is not a whole number where one is needed stops the service with a clear message."""
        values = {}
        for item in fields(cls):
            raw = (overrides or {}).get(item.name, environ.get(item.name))
            if raw is not None:
                try:
                    values[item.name] = int(raw) if item.type == "int" else str(raw)
                except ValueError:
                    raise SystemExit(f"configuration error: {item.name}={raw!r} is not a whole number") from None
        settings = cls(**values)
        settings._check_files()
        return settings

    def _check_files(self) -> None:
        """File settings name readable files (and the TLS pair comes whole); else one line."""
        allowed = {"AUTH_TOKENS_FILE": "a readable token file (lines NAME SCOPES SHA256HEX), or unset for no "
                                        "access control",
                   "CERT_FILE": "a readable PEM certificate, or unset for plain HTTP",
                   "KEY_FILE": "a readable PEM private key, or unset for plain HTTP"}
        for name, what in allowed.items():
            value = getattr(self, name)
            if value and not (os.path.isfile(value) and os.access(value, os.R_OK)):
                raise SystemExit(f"configuration error: {name}={value!r} is not a readable file; it must be {what}")
        if bool(self.CERT_FILE) != bool(self.KEY_FILE):
            given, missing = ("CERT_FILE", "KEY_FILE") if self.CERT_FILE else ("KEY_FILE", "CERT_FILE")
            raise SystemExit(f"configuration error: {given}={getattr(self, given)!r} without {missing}; "
                             "TLS needs both files, or neither for plain HTTP")
