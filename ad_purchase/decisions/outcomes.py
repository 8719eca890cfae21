"""Outcomes reported back by the client: read, checked, and attached to the decisions they belong to.

An outcome names its decision one of two ways:

    {"customer_id": "c-17", "outcome": 1}                 the client's record id (key: ID_FIELD)
    {"request_id": "3f2a...", "row": 0, "outcome": 0}     the request and row, for records sent without an id

with an optional `observed_at` (ISO 8601; a time without a zone is UTC).

Which decision an id's outcome belongs to, when the id was scored more than once: the latest
decision for that id made at or before `observed_at` (when the outcome was received, without one);
ties in time go to the later-recorded decision.  An id with no decision at or before that time is
unmatched.  request_id + row names one decision (a request id a client reused: its latest).

Applying a set of outcomes:
    - a decision without an outcome gets it (`recorded`);
    - the same value again changes nothing (`unchanged`): sending a file twice counts once;
    - a different value replaces the current one (`corrected`); the value it replaced moves to
      outcome_history with its own times and the time it was replaced, so nothing is lost.
Rows of one submission are applied in their order, so a later row corrects an earlier one.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text, case, select, update
from sqlalchemy.engine import Connection

from .store import bulk_insert, decisions, outcomes, time_converter, utcnow

MAX_ID_CHARS = 200
MAX_LISTED = 1000              # unmatched ids named in an answer; `unmatched_total` counts them all
MAX_ERRORS = 100


class OutcomeError(Exception):
    """A submission that cannot be applied: `status` 400 (its form) or 422 (its values), and the
    problems, each with its row and field."""

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None, total: int = 0) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors or []
        self.total_errors = total or len(self.errors)


@dataclass
class Outcomes:
    """Checked outcomes, one entry per row of the submission (columns, for bulk files)."""

    record_id: list = field(default_factory=list)        # str, or None when named by request + row
    request_id: list = field(default_factory=list)
    row: list = field(default_factory=list)
    outcome: list = field(default_factory=list)          # 0 or 1
    observed_at: list = field(default_factory=list)      # naive UTC datetime, or None

    def __len__(self) -> int:
        return len(self.outcome)

    def key(self, position: int, id_field: str) -> dict:
        if self.record_id[position] is not None:
            return {id_field: self.record_id[position]}
        return {"request_id": self.request_id[position], "row": self.row[position]}


# ---------------------------------------------------------------------------- reading and checking

MAX_ROW = 2**31 - 1               # the row column is a 32-bit integer
MAX_INT_ID = 2**63 - 1
_ABSENT = object()
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
                   r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?", re.ASCII)


def parse_time(value: Any) -> datetime:
    """An RFC 3339 date-time (or an ISO 8601 date, or a time without a zone, taken as UTC) as
    naive UTC.  Lower-case t and z, more than six decimals and a leap second (:60, read as :59)
    are RFC 3339 too; times before year 1 or after 9999 in UTC are clamped to those years."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    match = _TIME.fullmatch(value.strip())
    if match is None:
        raise ValueError("not an ISO 8601 time")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if int(year) == 0:
        return datetime.min
    moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), min(int(second or 0), 59),
                      int((fraction or "0")[:6].ljust(6, "0")))
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError("bad offset")
        shift = timedelta(hours=int(off_h), minutes=int(off_m))
        try:
            moment = moment - shift if sign == "+" else moment + shift
        except OverflowError:
            return datetime.min if sign == "+" else datetime.max
    return moment


def _id_value(value: Any, text: bool) -> str | None:
    """The client's record id as stored: a string of 1 to MAX_ID_CHARS characters as sent, or a
    whole number written out; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if -MAX_INT_ID - 1 <= value <= MAX_INT_ID else None
    if isinstance(value, str) and 1 <= len(value) <= MAX_ID_CHARS:
        return value
    return None


def _small_int(value: Any, text: bool, low: int, high: int) -> int | None:
    """A whole number in [low, high]: a JSON integer (not a boolean, not 1.0), or in a CSV cell
    its digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if low <= value <= high else None
    if text and isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        number = int(value.strip())
        return number if low <= number <= high else None
    return None


class _Checker:
    """Checks outcome records one by one and gathers them, or every problem with its row.

    JSON records must follow the published schema exactly (every key present is checked, null is
    not a value); in `text` records (CSV cells, bulk files) an empty cell is an absent value and
    numbers may be written as digits."""

    def __init__(self, id_field: str, first_row: int, text: bool = False) -> None:
        self.id_field, self.first_row, self.text = id_field, first_row, text
        self.errors: list[dict] = []
        self.total = 0
        self.result = Outcomes()

    def error(self, row: int, name: str, message: str, value: Any = _ABSENT) -> None:
        self.total += 1
        if len(self.errors) < MAX_ERRORS:
            entry: dict[str, Any] = {"row": row + self.first_row, "field": name}
            if value is not _ABSENT:
                entry["value"] = value[:200] if isinstance(value, str) else value
            entry["message"] = message
            self.errors.append(entry)

    def _get(self, record: dict, key: str) -> Any:
        value = record.get(key, _ABSENT)
        if self.text and (value is None or value == ""):
            return _ABSENT
        return value

    def add(self, row: int, record: dict) -> None:
        name = self.id_field
        raw_id, raw_request, raw_row = self._get(record, name), self._get(record, "request_id"), self._get(record, "row")
        record_id = request_id = position = None
        if raw_id is not _ABSENT:
            record_id = _id_value(raw_id, self.text)
            if record_id is None:
                self.error(row, name, f"expected a string of 1 to {MAX_ID_CHARS} characters or a whole number",
                           _shown(raw_id))
        if raw_request is not _ABSENT:
            if isinstance(raw_request, str) and 1 <= len(raw_request) <= 128:
                request_id = raw_request
            else:
                self.error(row, "request_id", "expected the X-Request-ID of the scoring request (1 to 128 characters)",
                           _shown(raw_request))
        if raw_row is not _ABSENT:
            position = _small_int(raw_row, self.text, 0, MAX_ROW)
            if position is None:
                self.error(row, "row", "expected the record's 0-based row in its scoring request", _shown(raw_row))
        if raw_id is _ABSENT:
            if raw_request is _ABSENT and raw_row is _ABSENT:
                self.error(row, name, f"missing: give {name}, or request_id and row")
            elif raw_row is _ABSENT:
                self.error(row, "row", "missing: request_id needs the row it names")
            elif raw_request is _ABSENT:
                self.error(row, "request_id", "missing: row needs the request_id it belongs to")
        else:
            request_id = position = None                  # the record id names the decision
        raw_outcome = self._get(record, "outcome")
        value = None
        if raw_outcome is _ABSENT:
            self.error(row, "outcome", "missing: expected 0 or 1")
        else:
            value = _small_int(raw_outcome, self.text, 0, 1)
            if value is None:
                self.error(row, "outcome", "expected 0 or 1", _shown(raw_outcome))
        observed = None
        raw_time = self._get(record, "observed_at")
        if raw_time is not _ABSENT:
            try:
                observed = parse_time(raw_time)
            except ValueError:
                self.error(row, "observed_at", "expected an ISO 8601 date or time such as 2026-11-30T14:05:00Z",
                           _shown(raw_time))
        result = self.result
        result.record_id.append(record_id)
        result.request_id.append(request_id)
        result.row.append(position)
        result.outcome.append(value)
        result.observed_at.append(observed)

    def done(self) -> Outcomes:
        if self.total:
            rows = sorted({error["row"] for error in self.errors})
            shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 or self.total > len(self.errors) else "")
            raise OutcomeError(422, f"{self.total} invalid value(s) in row(s) {shown}; nothing was stored.",
                               self.errors, self.total)
        return self.result


def _shown(value: Any) -> Any:
    """A value as a problem echoes it: JSON scalars as sent, anything else described briefly."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return msgspec.json.encode(value)[:200].decode(errors="replace")


def parse_json(body: bytes, id_field: str, max_rows: int) -> Outcomes:
    try:
        records = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise OutcomeError(400, f"The body is not valid JSON: {exc}") from None
    if not isinstance(records, list) or not records:
        raise OutcomeError(400, "Send a non-empty JSON array of outcome objects, or a CSV.")
    if len(records) > max_rows:
        raise OutcomeError(413, f"{len(records):,} outcomes in one request; at most {max_rows:,}.")
    checker = _Checker(id_field, 0)
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            checker.error(row, "", "expected an object with an id and an outcome", _shown(record))
            continue
        checker.add(row, record)
    return checker.done()


def parse_csv(body: bytes, id_field: str, max_rows: int) -> Outcomes:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OutcomeError(400, "The CSV is not UTF-8 text.") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if "outcome" not in header or (id_field not in header and not {"request_id", "row"} <= set(header)):
        raise OutcomeError(400, f"The CSV header must name outcome and {id_field} (or request_id and row); "
                           f"it names {', '.join(header[:20]) or 'nothing'}.")
    checker = _Checker(id_field, 1, text=True)
    count = 0
    try:
        for row, record in enumerate(reader):
            count += 1
            if count > max_rows:
                raise OutcomeError(413, f"More than {max_rows:,} outcomes in one request.")
            checker.add(row, record)
    except csv.Error as exc:
        raise OutcomeError(400, f"Malformed CSV: {exc}") from None
    if not count:
        raise OutcomeError(400, "The CSV has a header and no outcomes.")
    return checker.done()


def _well_formed(columns: dict[str, list], id_field: str) -> Outcomes | None:
    """The common bulk file (ids as text or whole numbers, outcomes 0/1, times or none) checked
    column by column; None when anything needs the row-by-row checks and their messages."""
    ids, values = columns.get(id_field), columns["outcome"]
    if ids is None or "request_id" in columns:
        return None
    if not all(type(v) is int and (v == 0 or v == 1) for v in values):
        if not all(type(v) is str and v.strip() in ("0", "1") for v in values):
            return None
        values = [int(v) for v in values]
    if all(type(v) is str and 0 < len(v) <= MAX_ID_CHARS for v in ids):
        record_id = list(ids)
    elif all(type(v) is int and -MAX_INT_ID - 1 <= v <= MAX_INT_ID for v in ids):
        record_id = [str(v) for v in ids]
    else:
        return None
    observed = columns.get("observed_at") or [None] * len(values)
    seen: dict = {None: None, "": None}
    try:
        for text in observed:
            if text not in seen:
                seen[text] = parse_time(text)
    except (TypeError, ValueError):
        return None
    empty = [None] * len(values)
    return Outcomes(record_id, empty, empty, values, [seen[text] for text in observed])


def from_columns(columns: dict[str, list], id_field: str) -> Outcomes:
    """Bulk files: the same checks, column by column (a file is read with pyarrow)."""
    fast = _well_formed(columns, id_field)
    if fast is not None:
        return fast
    rows = len(columns["outcome"])
    checker = _Checker(id_field, 1, text=True)
    names = [name for name in (id_field, "request_id", "row", "outcome", "observed_at") if name in columns]
    for position in range(rows):
        checker.add(position, {name: columns[name][position] for name in names})
    return checker.done()


# ---------------------------------------------------------------------------- attaching

_incoming = Table(
    "incoming_outcomes", MetaData(),
    Column("pos", Integer, primary_key=True),
    Column("record_id", Text),
    Column("request_id", Text),
    Column("row", Integer),
    Column("at", DateTime()),
    Column("decision_id", BigInteger),
    prefixes=["TEMPORARY"],
)


@dataclass
class Applied:
    received: int = 0
    matched: int = 0
    recorded: int = 0
    corrected: int = 0
    unchanged: int = 0
    unmatched: list[int] = field(default_factory=list)     # positions in the submission

    def answer(self, items: Outcomes, id_field: str) -> dict:
        return {"received": self.received, "matched": self.matched, "recorded": self.recorded,
                "corrected": self.corrected, "unchanged": self.unchanged,
                "unmatched": [items.key(position, id_field) for position in self.unmatched[:MAX_LISTED]],
                "unmatched_total": len(self.unmatched)}


def apply(connection: Connection, items: Outcomes, start: int = 0, stop: int | None = None,
          now: datetime | None = None) -> Applied:
    """Attach items[start:stop] to their decisions in the open transaction of `connection`."""
    now = now or utcnow()
    stop = len(items) if stop is None else stop
    when = time_converter(connection)          # times as the driver takes them, converted once each
    stamp = when(now)
    result = Applied(received=stop - start)
    _incoming.create(connection)
    try:
        bulk_insert(connection, "incoming_outcomes", ("pos", "record_id", "request_id", "row", "at"),
                    [(p, items.record_id[p], items.request_id[p], items.row[p], when(items.observed_at[p]) or stamp)
                     for p in range(start, stop)])
        d = decisions
        by_id = (select(d.c.id).where(d.c.record_id == _incoming.c.record_id, d.c.decided_at <= _incoming.c.at)
                 .order_by(d.c.decided_at.desc(), d.c.id.desc()).limit(1).scalar_subquery())
        by_request = (select(d.c.id).where(d.c.request_id == _incoming.c.request_id, d.c.row == _incoming.c.row)
                      .order_by(d.c.id.desc()).limit(1).scalar_subquery())
        connection.execute(update(_incoming).values(
            decision_id=case((_incoming.c.record_id.is_not(None), by_id), else_=by_request)))
        query = (select(_incoming.c.pos, _incoming.c.decision_id, outcomes.c.outcome, outcomes.c.observed_at,
                        outcomes.c.received_at, outcomes.c.corrections)
                 .select_from(_incoming.outerjoin(outcomes, outcomes.c.decision_id == _incoming.c.decision_id))
                 .order_by(_incoming.c.pos))
        cursor = connection.connection.cursor()        # plain tuples: no per-row result objects
        try:
            cursor.execute(str(query.compile(dialect=connection.dialect)))
            found = cursor.fetchall()
        finally:
            cursor.close()
    finally:
        _incoming.drop(connection)
    # decision -> [outcome, observed_at, received_at, corrections, stored before, changed]; the
    # times as the driver gives and takes them
    current: dict[int, list] = {}
    history = []                             # superseded values, with their times and when replaced
    for position, decision, stored, observed_then, received_then, corrections in found:
        if decision is None:
            result.unmatched.append(position)
            continue
        result.matched += 1
        value = items.outcome[position]
        state = current.get(decision)
        if state is None:
            state = current[decision] = [stored, observed_then, received_then, corrections or 0, stored is not None,
                                         False]
        if state[0] == value:
            result.unchanged += 1
            continue
        if state[0] is None:
            result.recorded += 1
        else:
            result.corrected += 1
            history.append((decision, state[0], state[1], state[2], stamp))
            state[3] += 1
        state[0], state[1], state[2], state[5] = value, when(items.observed_at[position]), stamp, True
    bulk_insert(connection, "outcomes", ("decision_id", "outcome", "observed_at", "received_at", "corrections"),
                [(k, s[0], s[1], s[2], s[3]) for k, s in current.items() if s[5] and not s[4]])
    changed = [(s[0], s[1], s[2], s[3], k) for k, s in current.items() if s[5] and s[4]]
    if changed:
        marker = "?" if connection.dialect.name == "sqlite" else "%s"
        connection.exec_driver_sql(f"UPDATE outcomes SET outcome = {marker}, observed_at = {marker}, "
                                   f"received_at = {marker}, corrections = {marker} WHERE decision_id = {marker}",
                                   changed)
    bulk_insert(connection, "outcome_history", ("decision_id", "outcome", "observed_at", "received_at",
                                                "replaced_at"), history)
    return result


def submit(engine, items: Outcomes, chunk: int | None = None) -> Applied:
    """Apply all `items`: in one transaction, or (bulk loads) one per `chunk` rows so that the
    decision log's writers never wait long for the database."""
    total = Applied()
    step = chunk or max(len(items), 1)
    with engine.connect() as connection:
        for start in range(0, len(items), step):
            with connection.begin():
                part = apply(connection, items, start, min(start + step, len(items)))
            total.received += part.received
            total.matched += part.matched
            total.recorded += part.recorded
            total.corrected += part.corrected
            total.unchanged += part.unchanged
            total.unmatched.extend(part.unmatched)
    return total
