"""Request bytes to validated columns: the service's input contract, with no HTTP in it.

Two paths give the same answer.  The fast path lets msgspec decode and type-check the JSON in
C straight into typed records (numeric strings become floats there), so a clean batch never
becomes Python dicts.  Anything the fast path does not accept as-is (a bad value, an
unusual missing marker such as "NA", a shape error) is decoded again by the careful path,
which applies the schema's rules to every field of every row and either returns the same
columns or reports every problem with its row, field and value.
"""
from __future__ import annotations

import itertools
import math
import operator
import reprlib
from dataclasses import dataclass
from typing import Any, Iterable, Union

import msgspec
import numpy as np

from schema import (CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, CURRENCY_FIELD, FIELDS, NUMERIC_FIELDS,
                    PERCENT_FIELD, FieldError, numeric_parser, parse_column, parse_level)

MAX_REPORTED_ERRORS = 100
MAX_ECHOED_CHARS = 200          # of a value quoted back in an error
ABSENT = object()               # a key the record does not have
UTF8_BOM = b"\xef\xbb\xbf"     # RFC 8259 lets a parser ignore one
# Keys other serving tools wrap records in: named in the error when a body looks wrapped.
_WRAPPED = "send the records themselves (an object or an array of objects), not an object with key {key!r}"
# A model input larger than this would overflow to infinity once standardised and weighted, so
# it is reported like any other unusable value.
MAX_MAGNITUDE = 1e300
# Fields whose text always needs the schema's own reading, in every row.
_FORMATTED_FIELDS = (CURRENCY_FIELD, PERCENT_FIELD)
_TEXT_FIELDS = (*_FORMATTED_FIELDS, *CATEGORICAL_FIELDS)
_NUMERIC_COLUMN = {field: column for column, field in enumerate(NUMERIC_FIELDS)}
_CATEGORICAL_COLUMN = {field: column for column, field in enumerate(CATEGORICAL_FIELDS)}
_LEVEL_CODES = {field: {level: code for code, level in enumerate(levels)}
                for field, levels in CATEGORICAL_LEVELS.items()}
# The same plus the usual missing spellings (-1), for the fast path's one-lookup-per-value pass.
_FAST_CODES = {field: {**codes, None: -1, "nan": -1, "NaN": -1, "": -1} for field, codes in _LEVEL_CODES.items()}


class _UseCarefulPath(Exception):
    """The fast path met something it does not decide on its own."""


class RequestError(Exception):
    """The body cannot be used.  `status` is the HTTP status the contract gives it."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict] | None = None,
                 total_errors: int = 0) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.total_errors = total_errors or len(self.errors)


@dataclass
class Batch:
    """Validated rows as two matrices, the shape the model consumes them in.

    `numeric` holds floats (NaN when missing), one column per name in `numeric_fields`: the
    model's numeric inputs on the fast path, all 96 numeric fields on the careful path and for
    CSV (they parse every field anyway).  `codes` holds level codes (index into the schema's
    levels, -1 when missing), one column per field of CATEGORICAL_FIELDS."""

    rows: int
    single: bool                       # the body was one object, not an array
    numeric_fields: tuple[str, ...]
    numeric: np.ndarray                # rows x len(numeric_fields), float64
    codes: np.ndarray                  # rows x len(CATEGORICAL_FIELDS), int8
    records: list | None = None        # the decoded records, kept by the fast path for sampling

    def column(self, field: str) -> np.ndarray:
        """One field's values: floats for a numeric field, level codes for a categorical one."""
        if field in CATEGORICAL_LEVELS:
            return self.codes[:, _CATEGORICAL_COLUMN[field]]
        return self.numeric[:, self.numeric_fields.index(field)]


def numeric_input_order(fields: Iterable[str]) -> tuple[str, ...]:
    """The order the fast path builds numeric model inputs in, and so the order the model takes
    them in: plain numeric fields (which msgspec reads as floats) in schema order, then x12 and x63
    (read from their text separately).  The model's input plan uses the same order, so the
    decoded matrix needs no reordering."""
    wanted = set(fields)
    if not wanted <= set(NUMERIC_FIELDS):
        raise ValueError(f"not numeric fields: {', '.join(sorted(wanted - set(NUMERIC_FIELDS)))}")
    plain = [f for f in NUMERIC_FIELDS if f in wanted and f not in _FORMATTED_FIELDS]
    return (*plain, *(f for f in _FORMATTED_FIELDS if f in wanted))


class _FloatReader:
    """Reads float fields of typed records into a rows x fields matrix (NaN for null) in one pass
    over the records: np.fromiter over each record's values in turn, with no list per field."""

    def __init__(self, fields: Iterable[str]) -> None:
        fields = tuple(fields)
        self.width = len(fields)
        # attrgetter gives a tuple for several fields, the bare value for one.
        self._getter = operator.attrgetter(*fields) if fields else None

    def read(self, records: list) -> np.ndarray:
        if not self.width:
            return np.empty((len(records), 0))
        read = map(self._getter, records)
        values = read if self.width == 1 else itertools.chain.from_iterable(read)
        return np.fromiter(values, float, len(records) * self.width).reshape(len(records), self.width)


def _record_type() -> type:
    """The typed record msgspec decodes into: every field required, extra keys ignored."""
    def kind(field: str) -> Any:
        if field in CATEGORICAL_LEVELS:
            return Union[str, None]
        if field in _FORMATTED_FIELDS:
            return Union[str, float, None]
        return Union[float, None]
    return msgspec.defstruct("Record", [(f, kind(f)) for f in FIELDS], gc=False)


class RequestDecoder:
    """Decodes request bodies into a `Batch` holding `numeric_fields` plus every categorical."""

    def __init__(self, numeric_fields: Iterable[str], max_rows: int) -> None:
        self.max_rows = max_rows
        self.numeric_fields = numeric_input_order(numeric_fields)
        record = _record_type()
        # strict=False lets msgspec turn numeric strings (and "nan") into floats as it decodes.
        self._fast = msgspec.json.Decoder(Union[record, list[record]], strict=False)
        self._formatted_inputs = [f for f in _FORMATTED_FIELDS if f in self.numeric_fields]
        plain_inputs = self.numeric_fields[:len(self.numeric_fields) - len(self._formatted_inputs)]
        self._plain_inputs = _FloatReader(plain_inputs)
        # Text fields are wanted as a list each: one C-level pass over the records per field.
        self._text_getters = {f: operator.attrgetter(f) for f in _TEXT_FIELDS}
        plain_numeric = [f for f in NUMERIC_FIELDS if f not in _TEXT_FIELDS]
        self._plain_numeric = _FloatReader(plain_numeric)
        self._plain_numeric_columns = [_NUMERIC_COLUMN[f] for f in plain_numeric]

    def decode(self, body: bytes) -> Batch:
        if body.startswith(UTF8_BOM):
            body = body[len(UTF8_BOM):]
        try:
            return self._decode_fast(body)
        except (msgspec.DecodeError, FieldError, RecursionError, _UseCarefulPath):
            return self._decode_careful(body)

    # ------------------------------------------------------------------ fast path

    def _decode_fast(self, body: bytes) -> Batch:
        # Lax decoding reads "inf"/"Infinity" strings as infinite floats, and skips ignored keys
        # without checking their UTF-8; only the careful path rejects those, so a body that could
        # hold such text (an "nf", an escape sequence that could spell one, a non-ASCII byte)
        # goes there.  Each check is a single C-speed scan.
        if b"\\" in body or not body.isascii() or _may_spell_infinity(body):
            raise _UseCarefulPath
        decoded = self._fast.decode(body)
        single = not isinstance(decoded, list)
        records = [decoded] if single else decoded
        if not records:
            raise _UseCarefulPath
        self._check_count(len(records))
        values = self._text_values(records)
        for field in _FORMATTED_FIELDS:                    # validated even when the model skips them
            values[field] = parse_column(field, values[field])
        numeric = self._plain_inputs.read(records)
        if self._formatted_inputs:
            numeric = np.concatenate((numeric, *(values[f][:, None] for f in self._formatted_inputs)), axis=1)
        if np.count_nonzero(np.abs(numeric) > MAX_MAGNITUDE):    # ndarray.any() adds a Python-level call
            raise _UseCarefulPath
        return Batch(len(records), single, self.numeric_fields, numeric, self._codes(values), records)

    def _text_values(self, records: list) -> dict[str, list]:
        return {f: list(map(getter, records)) for f, getter in self._text_getters.items()}

    def _codes(self, values: dict[str, list]) -> np.ndarray:
        """rows x 4 level codes of the categorical values a fast-path decode read."""
        return np.array([self._fast_codes(f, values[f]) for f in CATEGORICAL_FIELDS], dtype=np.int8).T

    @staticmethod
    def _fast_codes(field: str, values: list[str | None]) -> list[int]:
        codes = list(map(_FAST_CODES[field].get, values))    # canonical spellings: the common case
        if None in codes:                                      # other spellings, or unknown levels
            codes = [code if code is not None else
                     (-1 if (level := parse_level(field, value)) is None else _LEVEL_CODES[field][level])
                     for code, value in zip(codes, values)]
        return codes

    # ------------------------------------------------------------------ careful path

    def _decode_careful(self, body: bytes) -> Batch:
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            if "out of range" not in str(exc):
                raise RequestError(400, "Malformed JSON", f"The body is not valid JSON: {exc}") from None
            try:    # a number literal beyond the float range (1e400): valid JSON, an unusable value
                decoded = _LITERAL_FLOATS.decode(body)
            except msgspec.DecodeError as again:      # an integer too long for any reader
                raise RequestError(400, "Malformed JSON", f"The body is not valid JSON: {again}") from None
        except RecursionError:
            raise RequestError(400, "Malformed JSON", "The body is nested too deeply.") from None
        except UnicodeDecodeError:
            raise RequestError(400, "Malformed JSON", "The body is not valid UTF-8.") from None
        single = isinstance(decoded, dict)
        if single:
            records = [decoded]
        elif isinstance(decoded, list):
            records = decoded
        else:
            raise RequestError(400, "Bad request body",
                               f"Expected a JSON object (one record) or an array of objects, got {_json_kind(decoded)}.")
        if not records:
            raise RequestError(400, "Bad request body", "The array is empty; send 1 or more records.")
        self._check_count(len(records))
        wrapper = _wrapper_key(records[0])
        if wrapper is not None:
            raise RequestError(400, "Bad request body", "The body looks wrapped: " + _WRAPPED.format(key=wrapper)
                               + ("." if single else f" (row 0 is such an object)."))
        not_objects = [i for i, r in enumerate(records) if not isinstance(r, dict)]
        if not_objects:
            shown = ", ".join(str(i) for i in not_objects[:10])
            raise RequestError(400, "Bad request body",
                               f"Every array element must be a JSON object; rows {shown} are not.")

        errors: list[dict] = []
        total = 0
        numeric = np.empty((len(records), len(NUMERIC_FIELDS)))   # all: it parses them anyway
        codes = np.empty((len(records), len(CATEGORICAL_FIELDS)), dtype=np.int8)
        for row, record in enumerate(records):
            for field in FIELDS:
                value = record.get(field, ABSENT)
                if value is ABSENT:
                    problem = "required field is missing"
                else:
                    try:
                        self._store(row, field, value, numeric, codes)
                        continue
                    except FieldError as exc:
                        problem = str(exc)
                total += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(field_error(row, field, problem, value))
        if errors:
            rows = sorted({e["row"] for e in errors})
            shown = ", ".join(map(str, rows[:20])) + (" ..." if len(rows) > 20 else "")
            raise RequestError(422, "Invalid field values",
                               f"{total} invalid value(s) in row(s) {shown}; nothing was scored.",
                               errors, total)
        return Batch(len(records), single, NUMERIC_FIELDS, numeric, codes)

    def _store(self, row: int, field: str, value: Any, numeric: np.ndarray, codes: np.ndarray) -> None:
        if field in CATEGORICAL_LEVELS:
            level = parse_level(field, value)
            codes[row, _CATEGORICAL_COLUMN[field]] = -1 if level is None else _LEVEL_CODES[field][level]
        else:
            number = numeric_parser(field)(value)
            if abs(number) > MAX_MAGNITUDE and field in self.numeric_fields:
                raise FieldError(f"must be at most {MAX_MAGNITUDE:g} in size")
            numeric[row, _NUMERIC_COLUMN[field]] = number

    def monitoring_columns(self, records: list) -> tuple[np.ndarray, np.ndarray]:
        """All 96 numeric fields (rows x 96, NaN where missing) and the 4 level codes (rows x 4) of
        records the fast path decoded, for drift monitoring.  They were validated already."""
        numeric = np.empty((len(records), len(NUMERIC_FIELDS)))
        numeric[:, self._plain_numeric_columns] = self._plain_numeric.read(records)
        values = self._text_values(records)
        for field in _FORMATTED_FIELDS:
            numeric[:, _NUMERIC_COLUMN[field]] = parse_column(field, values[field])
        return numeric, self._codes(values)

    def _check_count(self, rows: int) -> None:
        if rows > self.max_rows:
            raise RequestError(413, "Batch too large",
                               f"The batch has {rows} records; the limit is {self.max_rows}.")


def _may_spell_infinity(body: bytes) -> bool:
    """Whether an "n" is followed by an "f" (any case) anywhere in the body.

    Lax decoding reads the strings "inf" and "Infinity" as infinite floats; both spell "nf",
    and the client's data never does, so a body without it cannot hold an infinity and the
    fast path may skip the finiteness check.  Finding each "f" is a memchr, so this costs a
    few milliseconds on a 20 MB batch; lower-casing and searching the whole body costs ten times more.
    """
    for letter in b"fF":
        at = body.find(letter, 1)
        while at != -1:
            if body[at - 1] in b"nN":
                return True
            at = body.find(letter, at + 1)
    return False


_LITERAL_FLOATS = msgspec.json.Decoder(float_hook=float)   # reads 1e400 as inf instead of failing


def _wrapper_key(record: Any) -> str | None:
    """The key of an object that holds records instead of being one: it has none of the fields
    and a key whose value is an object or an array ({"data": [...]}, {"instances": [...]})."""
    if not isinstance(record, dict) or any(field in record for field in FIELDS):
        return None
    return next((key for key, value in record.items() if isinstance(value, (dict, list))), None)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number"}.get(type(value), "a value")


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
