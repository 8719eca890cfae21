"""JSON bodies to Columns, and Scores to JSON answers.

Decoding has two paths that give the same answer.  The fast path lets msgspec decode and
type-check the JSON in C straight into typed records (numeric strings become floats there), so a
clean batch never becomes Python dicts.  Anything the fast path does not accept as-is (a bad
value, an unusual missing marker such as "NA", a shape error) is decoded again by the careful
path, which applies the schema's rules to every field of every row and either returns the same
columns or reports every problem with its row, field and value.
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, Iterable, Sequence, Union

import msgspec
import numpy as np

from ..model import Scores
from ..schema import (CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, COMMON_CODES, FIELDS, FORMATTED_FIELDS,
                      MAX_MAGNITUDE, MAX_REPORTED_ERRORS, NUMERIC_FIELDS, PLAIN_FIELDS, ABSENT, Columns, FieldError,
                      InputError, Problem, answer_fields, field_error, level_code, numeric_input_order, numeric_parser,
                      parse_column, split_dummy)

UTF8_BOM = b"\xef\xbb\xbf"       # RFC 8259 lets a parser ignore one
_TEXT_FIELDS = (*FORMATTED_FIELDS, *CATEGORICAL_FIELDS)
_NUMERIC_COLUMN = {field: column for column, field in enumerate(NUMERIC_FIELDS)}
_CATEGORICAL_COLUMN = {field: column for column, field in enumerate(CATEGORICAL_FIELDS)}


class _UseCarefulPath(Exception):
    """The fast path met something it does not decide on its own."""


class _FloatReader:
    """Reads float fields of typed records into a rows x fields matrix (NaN for null) in one pass:
    np.fromiter over each record's values in turn, so no list is built per field."""

    def __init__(self, fields: Iterable[str]) -> None:
        fields = tuple(fields)
        self.width = len(fields)
        # attrgetter gives a tuple for several fields, the bare value for one.
        self._getter = operator.attrgetter(*fields) if fields else None

    def row(self, record: Any) -> list:
        """One record's values as a list (None for null)."""
        if self.width < 2:
            return [self._getter(record)] if self.width else []
        return list(self._getter(record))

    def read(self, records: Sequence) -> np.ndarray:
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
        if field in FORMATTED_FIELDS:
            return Union[str, float, None]
        return Union[float, None]
    return msgspec.defstruct("Record", [(f, kind(f)) for f in FIELDS], gc=False)


class JsonDecoder:
    """Request bodies to Columns holding `input_fields` (the model's numeric inputs) and every
    categorical; at most `max_rows` records."""

    def __init__(self, input_fields: Iterable[str], max_rows: int) -> None:
        self.max_rows = max_rows
        self.numeric_fields = numeric_input_order(input_fields)
        record = _record_type()
        # strict=False lets msgspec turn numeric strings (and "nan") into floats as it decodes.
        self._fast = msgspec.json.Decoder(Union[record, list[record]], strict=False)
        self._formatted_inputs = [f for f in FORMATTED_FIELDS if f in self.numeric_fields]
        self._plain_inputs = _FloatReader(self.numeric_fields[:len(self.numeric_fields) - len(self._formatted_inputs)])
        self._text_getters = {f: operator.attrgetter(f) for f in _TEXT_FIELDS}
        self._formatted_readers = [(f, self._text_getters[f], numeric_parser(f)) for f in FORMATTED_FIELDS]
        self._categoricals = operator.attrgetter(*CATEGORICAL_FIELDS)
        self._plain_fields = _FloatReader(PLAIN_FIELDS)
        # An index array: numpy would convert a list of 94 indices again at every assignment.
        self._plain_columns = np.array([_NUMERIC_COLUMN[f] for f in PLAIN_FIELDS], dtype=np.intp)

    def decode(self, body: bytes) -> Columns:
        if body.startswith(UTF8_BOM):
            body = body[len(UTF8_BOM):]
        try:
            return self._decode_fast(body)
        except (msgspec.DecodeError, FieldError, RecursionError, _UseCarefulPath):
            return self._decode_careful(body)

    # ------------------------------------------------------------------ fast path

    def _decode_fast(self, body: bytes) -> Columns:
        # Lax decoding reads "inf"/"Infinity" strings as infinite floats, and skips ignored keys
        # without checking their UTF-8; only the careful path rejects those, so a body that could
        # hold such text (an "nf", an escape sequence that could spell one, a non-ASCII byte)
        # goes there.  Each check is one C-speed scan of the body.
        if b"\\" in body or not body.isascii() or _may_spell_infinity(body):
            raise _UseCarefulPath
        decoded = self._fast.decode(body)
        if not isinstance(decoded, list):
            return self._decode_one(decoded)
        records = decoded
        if not records:
            raise _UseCarefulPath
        self._check_count(len(records))
        values = self._text_values(records)
        for field in FORMATTED_FIELDS:                     # validated even when the model skips them
            values[field] = parse_column(field, values[field])
        numeric = self._plain_inputs.read(records)
        if self._formatted_inputs:
            numeric = np.concatenate((numeric, *(values[f][:, None] for f in self._formatted_inputs)), axis=1)
        if np.count_nonzero(np.abs(numeric) > MAX_MAGNITUDE):    # ndarray.any() adds a Python-level call
            raise _UseCarefulPath
        return Columns(len(records), False, self.numeric_fields, numeric, self._codes(values),
                       read_all_numeric=lambda rows: self._all_numeric([records[i] for i in rows]))

    def _decode_one(self, record: Any) -> Columns:
        """The fast path for a one-record body, the most common request: the same parsers and
        checks on Python values, since numpy's per-call cost exceeds the work on one row."""
        self._check_count(1)
        formatted = {field: parse(getter(record)) for field, getter, parse in self._formatted_readers}
        row = self._plain_inputs.row(record) + [formatted[field] for field in self._formatted_inputs]
        if any(value is not None and abs(value) > MAX_MAGNITUDE for value in row):
            raise _UseCarefulPath
        levels = self._categoricals(record)
        codes = [COMMON_CODES[field].get(value) for field, value in zip(CATEGORICAL_FIELDS, levels)]
        if None in codes:                                       # other spellings, or unknown levels
            codes = [level_code(field, value) for field, value in zip(CATEGORICAL_FIELDS, levels)]
        return Columns(1, True, self.numeric_fields, np.array([row], dtype=float), np.array([codes], dtype=np.int8),
                       read_all_numeric=lambda rows: self._all_numeric([record] * len(rows)))

    def _text_values(self, records: list) -> dict[str, list]:
        return {f: list(map(getter, records)) for f, getter in self._text_getters.items()}

    def _codes(self, values: dict[str, list]) -> np.ndarray:
        """rows x 4 level codes of the categorical values a fast-path decode read."""
        return np.array([self._field_codes(f, values[f]) for f in CATEGORICAL_FIELDS], dtype=np.int8).T

    @staticmethod
    def _field_codes(field: str, values: list[str | None]) -> list[int]:
        codes = list(map(COMMON_CODES[field].get, values))     # canonical spellings: the common case
        if None in codes:                                       # other spellings, or unknown levels
            codes = [level_code(field, value) if code is None else code for code, value in zip(codes, values)]
        return codes

    def _all_numeric(self, records: list) -> np.ndarray:
        """All 96 numeric fields of typed records the fast path accepted (validated already)."""
        numeric = np.empty((len(records), len(NUMERIC_FIELDS)))
        numeric[:, self._plain_columns] = self._plain_fields.read(records)
        for field in FORMATTED_FIELDS:
            numeric[:, _NUMERIC_COLUMN[field]] = parse_column(field, list(map(self._text_getters[field], records)))
        return numeric

    # ------------------------------------------------------------------ careful path

    def _decode_careful(self, body: bytes) -> Columns:
        decoded = _parse(body)
        single = isinstance(decoded, dict)
        if single:
            records = [decoded]
        elif isinstance(decoded, list):
            records = decoded
        else:
            raise InputError(Problem.BAD_BODY, "Expected a JSON object (one record) or an array of objects, "
                                               f"got {_json_kind(decoded)}.")
        if not records:
            raise InputError(Problem.BAD_BODY, "The array is empty; send 1 or more records.")
        self._check_count(len(records))
        wrapper = _wrapper_key(records[0])
        if wrapper is not None:
            raise InputError(Problem.BAD_BODY, "The body looks wrapped: send the records themselves (an object or "
                                               f"an array of objects), not an object with key {wrapper!r}"
                                               + ("." if single else " (row 0 is such an object)."))
        not_objects = [i for i, r in enumerate(records) if not isinstance(r, dict)]
        if not_objects:
            shown = ", ".join(str(i) for i in not_objects[:10])
            raise InputError(Problem.BAD_BODY, f"Every array element must be a JSON object; rows {shown} are not.")

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
            raise InputError.invalid_values(errors, total)
        return Columns(len(records), single, NUMERIC_FIELDS, numeric, codes)

    def _store(self, row: int, field: str, value: Any, numeric: np.ndarray, codes: np.ndarray) -> None:
        if field in CATEGORICAL_LEVELS:
            codes[row, _CATEGORICAL_COLUMN[field]] = level_code(field, value)
        else:
            number = numeric_parser(field)(value)
            if abs(number) > MAX_MAGNITUDE and field in self.numeric_fields:
                raise FieldError(f"must be at most {MAX_MAGNITUDE:g} in size")
            numeric[row, _NUMERIC_COLUMN[field]] = number

    def _check_count(self, rows: int) -> None:
        if rows > self.max_rows:
            raise InputError(Problem.TOO_MANY_ROWS, f"The batch has {rows} records; the limit is {self.max_rows}.")


_LITERAL_FLOATS = msgspec.json.Decoder(float_hook=float)   # reads 1e400 as inf instead of failing


def _parse(body: bytes) -> Any:
    """The body as plain JSON values; 400 for anything that is not JSON."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        if "out of range" not in str(exc):
            raise InputError(Problem.MALFORMED_JSON, f"The body is not valid JSON: {exc}") from None
        try:    # a number literal beyond the float range (1e400): valid JSON, an unusable value
            return _LITERAL_FLOATS.decode(body)
        except msgspec.DecodeError as again:      # an integer too long for any reader
            raise InputError(Problem.MALFORMED_JSON, f"The body is not valid JSON: {again}") from None
    except RecursionError:
        raise InputError(Problem.MALFORMED_JSON, "The body is nested too deeply.") from None
    except UnicodeDecodeError:
        raise InputError(Problem.MALFORMED_JSON, "The body is not valid UTF-8.") from None


def _may_spell_infinity(body: bytes) -> bool:
    """Whether an "n" is followed by an "f" (any case) anywhere in the body.

    Lax decoding reads the strings "inf" and "Infinity" as infinite floats; both spell "nf", and
    the client's data never does, so a body without it cannot hold an infinity.  Finding each "f"
    is a memchr; lower-casing and searching the whole body would copy it first.
    """
    for letter in b"fF":
        at = body.find(letter, 1)
        while at != -1:
            if body[at - 1] in b"nN":
                return True
            at = body.find(letter, at + 1)
    return False


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


# ---------------------------------------------------------------------------------- answers

_ZERO_ONE = np.array([0.0, 1.0], dtype=object)   # an indicator's two values, indexed by it


def _result_struct(name: str, fields: tuple[str, ...]) -> type:
    kinds = {"business_outcome": int, "contributions": dict[str, float]}
    return msgspec.defstruct(name, [(f, kinds.get(f, float)) for f in fields], gc=False)


class JsonEncoder:
    """Scores to the JSON answer: per row business_outcome, phat and every model input, keys in
    alphabetical order, and with `explain` each input's contribution to the log-odds."""

    def __init__(self, input_names: Sequence[str]) -> None:
        self.input_names = tuple(input_names)
        self.result_fields = answer_fields(self.input_names)
        self._result = _result_struct("Result", self.result_fields)
        self._explained = _result_struct("ExplainedResult", tuple(sorted(("contributions", *self.result_fields))))
        self._order = sorted(range(len(self.input_names)), key=self.input_names.__getitem__)
        self._sorted_names = [self.input_names[i] for i in self._order]
        indicators = [split_dummy(name) is not None for name in self.input_names]
        self._numeric_count = indicators.index(True) if True in indicators else len(indicators)
        if not all(indicators[self._numeric_count:]):
            raise ValueError(f"input names {self.input_names} do not put the numeric inputs first")

    def records(self, scores: Scores, contributions: np.ndarray | None = None) -> list:
        """One result per row; `contributions` (rows x inputs, as scores.names) adds explanations."""
        if scores.names != self.input_names:
            raise ValueError("scores of another model")
        if len(scores.phat) == 1 and contributions is None:     # one row: no numpy calls per column
            row = scores.inputs[0].tolist()
            return [self._result(int(scores.outcome[0]), float(scores.phat[0]), *map(row.__getitem__, self._order))]
        columns = self._input_columns(scores.inputs)
        values = [scores.phat.tolist()] + [columns[i] for i in self._order]
        outcome = scores.outcome.tolist()
        if contributions is None:
            return list(map(self._result, outcome, *values))     # one C-level loop over the rows
        shares = contributions[:, self._order].tolist()
        return list(map(self._explained, outcome, (dict(zip(self._sorted_names, row)) for row in shares), *values))

    def _input_columns(self, inputs: np.ndarray) -> list[list]:
        """Each input column as a list, in two numpy calls whatever the number of columns (numeric
        inputs come first).  Indicator columns hold the two shared objects 0.0 and 1.0: a new float
        per row would have to be made, encoded from and freed again."""
        count = self._numeric_count
        indicators = _ZERO_ONE[inputs[:, count:].astype(np.intp)]
        return inputs[:, :count].T.tolist() + indicators.T.tolist()

    def encode(self, scores: Scores, single: bool, contributions: np.ndarray | None = None) -> bytes:
        """The answer: an object for a one-object request, else an array in request order."""
        records = self.records(scores, contributions)
        return msgspec.json.encode(records[0] if single else records)
