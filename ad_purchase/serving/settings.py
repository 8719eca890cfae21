"""The service's settings: typed, each from the environment variable of the same name."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from .. import HOME
from ..schema import MAX_BATCH_ROWS

# The decision log's settings, checked at start (see ad_purchase/decisions).
DECISION_LOG_MODES = ("required", "best-effort", "off")
DATABASE_SCHEMES = ("sqlite://", "postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass(frozen=True)
class Settings:
    MODEL_DIR: str = str(HOME / "objs")
    MAX_BATCH_ROWS: int = MAX_BATCH_ROWS
    MAX_CONTENT_LENGTH: int = 64 * 1024 * 1024   # bytes; a 10,000-row batch is about 20 MB
    DRIFT_FLUSH_SECONDS: int = 5
    BODY_TIMEOUT: int = 10                       # seconds a request body may pause before 408
    DATABASE_URL: str = "sqlite:///" + str(HOME / "var" / "decisions.sqlite3")   # the decision log
    DATABASE_URL_FILE: str = ""                  # a file holding DATABASE_URL (a mounted Secret); wins
    DECISION_LOG: str = "required"               # required (503 when not recorded), best-effort, off
    DECISION_RETENTION_DAYS: int = 400           # decisions older than this are deleted
    ID_FIELD: str = "customer_id"                # the key of the client's record id in a record

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
        if values.get("DATABASE_URL_FILE"):
            try:
                values["DATABASE_URL"] = Path(values["DATABASE_URL_FILE"]).read_text().strip()
            except OSError as exc:
                raise SystemExit(f"configuration error: DATABASE_URL_FILE={values['DATABASE_URL_FILE']!r} "
                                 f"cannot be read ({exc.strerror}); it must name a readable file") from None
        settings = cls(**values)
        settings._check_decision_settings()
        return settings

    def _check_decision_settings(self) -> None:
        """One line naming the variable, its value and what is allowed, for a value that cannot work."""
        if self.DECISION_LOG not in DECISION_LOG_MODES:
            raise SystemExit(f"configuration error: DECISION_LOG={self.DECISION_LOG!r} is not one of "
                             f"{', '.join(DECISION_LOG_MODES)}")
        if not self.DATABASE_URL.startswith(DATABASE_SCHEMES):
            raise SystemExit("configuration error: DATABASE_URL must start with sqlite:/// or postgresql://, "
                             f"not {self.DATABASE_URL.split('://')[0][:40]!r}")
        if self.DECISION_RETENTION_DAYS < 1:
            raise SystemExit(f"configuration error: DECISION_RETENTION_DAYS={self.DECISION_RETENTION_DAYS} "
                             "must be a whole number of days, 1 or more")
        if not self.ID_FIELD.strip() or self.ID_FIELD in {f"x{i}" for i in range(100)}:
            raise SystemExit(f"configuration error: ID_FIELD={self.ID_FIELD!r} must be a non-empty key other "
                             "than the model's input fields x0..x99")
