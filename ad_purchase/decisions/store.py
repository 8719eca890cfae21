"""Where decisions and outcomes live: the tables, the engines, migrations and retention.

Three tables, SQLAlchemy Core only:

    decisions        one row per scored record: when, which model version, phat, the business
                     outcome, the request id and the row in it, the caller, the client's record id
    outcomes         the current outcome of a decision (at most one per decision)
    outcome_history  each value a correction replaced, with its times and when it was replaced

No input field of a customer is stored.  Times are UTC, stored without a zone.

SQLite (the default) runs in WAL mode with synchronous=FULL, so a commit is on disk when it
returns; writers take the write lock at BEGIN (BEGIN IMMEDIATE) so that two processes never
deadlock upgrading a read lock.  PostgreSQL is used as it comes.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import (BigInteger, Column, DateTime, Engine, Float, ForeignKey, Index, Integer, MetaData,
                        SmallInteger, Table, Text, create_engine, delete, event, select)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

log = logging.getLogger("api.decisions")

metadata = MetaData()
# SQLite only makes an INTEGER PRIMARY KEY the rowid (autoincrementing); elsewhere a BIGINT.
_ID = BigInteger().with_variant(Integer, "sqlite")

decisions = Table(
    "decisions", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("decided_at", DateTime(), nullable=False),
    Column("model_version", Text, nullable=False),
    Column("phat", Float(precision=53), nullable=False),
    Column("business_outcome", SmallInteger, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("row", Integer, nullable=False),
    Column("caller", Text, nullable=True),
    Column("record_id", Text, nullable=True),
    Index("ix_decisions_record_time", "record_id", "decided_at"),
    Index("ix_decisions_request_row", "request_id", "row"),
    Index("ix_decisions_time", "decided_at"),
)

outcomes = Table(
    "outcomes", metadata,
    Column("decision_id", _ID, ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True),
    Column("outcome", SmallInteger, nullable=False),
    Column("observed_at", DateTime(), nullable=True),
    Column("received_at", DateTime(), nullable=False),
    Column("corrections", Integer, nullable=False, default=0),
)

outcome_history = Table(
    "outcome_history", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("decision_id", _ID, ForeignKey("decisions.id", ondelete="CASCADE"), nullable=False),
    Column("outcome", SmallInteger, nullable=False),         # the value that was replaced
    Column("observed_at", DateTime(), nullable=True),        # its times
    Column("received_at", DateTime(), nullable=False),
    Column("replaced_at", DateTime(), nullable=False),       # when the correction arrived
    Index("ix_outcome_history_decision", "decision_id"),
)

SQLITE_BUSY_MS = 10_000          # how long a writer waits for another process's write lock
PG_CONNECT_SECONDS = 3           # a PostgreSQL server that does not answer fails this fast
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    """Now, in UTC without a zone: how every time is stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 (SQLAlchemy would pick psycopg2, which is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def describe(url: str) -> str:
    """The database in words, for logs and problem details: no password, no file system path."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {Path(parsed.database or ':memory:').name}"
    return f"PostgreSQL database {parsed.database or ''} at {parsed.host or 'localhost'}:{parsed.port or 5432}"


def make_engine(url: str, writer: bool = False) -> Engine:
    """An engine without a pool: the writer keeps its one connection open itself, and the other
    uses (outcomes, reports) are rare enough to connect each time.  `writer` engines on SQLite
    begin every transaction with BEGIN IMMEDIATE."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError:                   # connecting fails then, and says why
                pass
        engine = create_engine(url, poolclass=NullPool,
                               connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000})
        _sqlite_setup(engine, immediate=writer)
        return engine
    return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": PG_CONNECT_SECONDS})


def _sqlite_setup(engine: Engine, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, record) -> None:
        dbapi_connection.isolation_level = None       # transactions begun below, not by the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA temp_store=MEMORY")        # scratch tables of outcome loads
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (Alembic, run in this process)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def purge(engine: Engine, days: int, now: datetime | None = None, chunk: int = 10_000) -> int:
    """Delete decisions older than `days` days, with their outcomes, a chunk per transaction (so
    writers wait at most one chunk); returns how many decisions went."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    removed = 0
    while True:
        with engine.begin() as connection:
            ids = connection.execute(select(decisions.c.id).where(decisions.c.decided_at < cutoff)
                                     .limit(chunk)).scalars().all()
            if not ids:
                return removed
            connection.execute(delete(outcome_history).where(outcome_history.c.decision_id.in_(ids)))
            connection.execute(delete(outcomes).where(outcomes.c.decision_id.in_(ids)))
            connection.execute(delete(decisions).where(decisions.c.id.in_(ids)))
        removed += len(ids)


def default_url(home: Path) -> str:
    """The default DATABASE_URL: an SQLite file in var/ beside the package."""
    return "sqlite:///" + os.fspath(home / "var" / "decisions.sqlite3")


def _sqlite_time(moment: datetime | None) -> str | None:
    # The text SQLAlchemy's SQLite DateTime writes and reads: always with microseconds, so that
    # times compare correctly as text.
    return None if moment is None else moment.isoformat(" ", "microseconds")


def time_converter(connection):
    """A function giving a datetime as the driver should receive it for this connection's
    database (text for SQLite, remembered for repeated times; the datetime itself elsewhere)."""
    if connection.dialect.name != "sqlite":
        return lambda moment: moment
    seen: dict = {None: None}

    def as_text(moment):
        text = seen.get(moment)
        if text is None and moment is not None:
            text = seen[moment] = _sqlite_time(moment)
        return text

    return as_text


def bulk_insert(connection, table: str, names: tuple[str, ...], rows: list[tuple],
                times: tuple[int, ...] = ()) -> None:
    """INSERT many rows straight through the driver (SQLAlchemy's per-row parameter handling
    costs more than SQLite's insert itself).  `times`: the positions of datetime values."""
    if not rows:
        return
    sqlite = connection.dialect.name == "sqlite"
    marker = "?" if sqlite else "%s"
    if sqlite and times:
        as_text = time_converter(connection)
        converted = []
        for row in rows:
            row = list(row)
            for i in times:
                row[i] = as_text(row[i])
            converted.append(tuple(row))
        rows = converted
    quoted = ", ".join(connection.dialect.identifier_preparer.quote(name) for name in names)
    connection.exec_driver_sql(f"INSERT INTO {table} ({quoted}) VALUES ({', '.join([marker] * len(names))})", rows)
