"""Every kind of problem the contract names, and the error a codec raises for input it refuses.

Each kind has its slug (the problem type URI ends with it) and title; the service maps each to
its HTTP status, the commands turn them into messages, and the OpenAPI document lists them.
"""
from __future__ import annotations

import math
import reprlib
from enum import Enum
from typing import Any

from .limits import MAX_ECHOED_CHARS, MAX_MAGNITUDE, SHOWN_ROWS


class Problem(Enum):
    """What is wrong with input, whichever way it came in."""

    MALFORMED_JSON = ("malformed-json", "Malformed JSON")
    MALFORMED_CSV = ("malformed-csv", "Malformed CSV")           # also a file that is not CSV or Parquet
    BAD_BODY = ("bad-request-body", "Bad request body")          # not records, or not the expected shape
    TOO_MANY_ROWS = ("batch-too-large", "Batch too large")
    INVALID_VALUES = ("invalid-field-values", "Invalid field values")

    def __init__(self, slug: str, title: str) -> None:
        self.slug, self.title = slug, title


class InputError(Exception):
    """Input that cannot be scored: its kind, what is wrong, and (for invalid values) each problem
    with its row, field and value."""

    def __init__(self, kind: Problem, detail: str, errors: list[dict] | None = None, total_errors: int = 0) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail
        self.errors = errors or []
        self.total_errors = total_errors or len(self.errors)

    @classmethod
    def invalid_values(cls, errors: list[dict], total: int) -> "InputError":
        """The 422 for `errors` (the ones kept, in row order) out of `total` found."""
        rows = sorted({error["row"] for error in errors})
        more = len(rows) > SHOWN_ROWS or total > len(errors)
        shown = ", ".join(map(str, rows[:SHOWN_ROWS])) + (" ..." if more else "")
        return cls(Problem.INVALID_VALUES, f"{total} invalid value(s) in row(s) {shown}; nothing was scored.",
                   errors, total)


ABSENT = object()               # a key the record does not have


def field_error(row: int, field: str, message: str, value: Any = ABSENT) -> dict:
    """One entry of a 422's `errors`: where, what was sent and why.  The value is echoed cut to
    MAX_ECHOED_CHARS characters (the message says so); an absent key has no `value` at all, so
    it cannot be mistaken for the missing marker null."""
    error: dict[str, Any] = {"row": row, "field": field}
    if value is not ABSENT:
        if isinstance(value, float) and not math.isfinite(value):
            value = repr(value)                    # JSON has no spelling for it
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
            value = str(value)                     # hundreds of digits: shortened below
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            value = reprlib.repr(value)            # an object or array: a short description of it
        if isinstance(value, str) and len(value) > MAX_ECHOED_CHARS:
            message += f" (value shortened to its first {MAX_ECHOED_CHARS} of {len(value):,} characters)"
            value = value[:MAX_ECHOED_CHARS]
        error["value"] = value
    error["message"] = message
    return error
