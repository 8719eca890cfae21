"""JSON bodies to raw columns for the decoding core, and predictions to JSON answers.

Reading has two ways that give the same answer.  The typed way lets msgspec decode and type-check
the JSON in C straight into typed records (numeric strings become floats there), so a clean batch
never becomes Python dicts.  When the decoding core finds any problem in what the typed way read,
or the typed way cannot read the body at all (an unusual missing marker such as "NA", a shape
error), the body is read again as plain JSON values and the core reads the values exactly as
sent, so every problem is reported with the value the client wrote.
"""
from __future__ import annotations

import itertools
import operator
import re
from typing import Any, Iterable, Sequence, Union

import msgspec
import numpy as np

from ..core.decoding import Decoder, sample_rows
from ..core.prediction import Prediction
from ..model import Scores
from ..schema import (ABSENT, CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, FIELDS, FORMATTED_FIELDS, PLAIN_FIELDS, Columns,
                      InputError, Problem, answer_fields, split_dummy)

UTF8_BOM = b"\xef\xbb\xbf"       # RFC 8259 lets a parser ignore one
# Client data holds an "f" every few thousand bytes; past one per this many bytes a body is
# searched whole in a lower-cased copy instead of letter by letter.
_BYTES_PER_F = 256
# JSON has no spelling for these; Python's json.dumps and some clients write them anyway.
_BARE_TOKENS = re.compile(rb"-?(?:NaN|Infinity)")
_AT_BYTE = re.compile(r"\(byte (\d+)\)")


class _ReadAsSent(Exception):
    """The typed way met something it does not decide on its own."""


class _FloatReader:
    """Reads float fields of typed records into a rows x fields matrix (NaN for null) in one pass:
    np.fromiter over each record's values in turn, so no list is built per field."""

    def __init__(self, fields: Iterable[str]) -> None:
        fields = tuple(fields)
        self.width = len(fields)
        # attrgetter gives a tuple for several fields, the bare value for one.
        self._getter = operator.attrgetter(*fields) if fields else None

    def row(self, record: Any) -> Sequence:
        """One record's values (None for null)."""
        if self.width < 2:
            return [self._getter(record)] if self.width else []
        return self._getter(record)

    def read(self, records: Sequence) -> np.ndarray:
        if not self.width:
            return np.empty((len(records), 0))
        read = map(self._getter, records)
        values = read if self.width == 1 else itertools.chain.from_iterable(read)
        return np.fromiter(values, float, len(records) * self.width).reshape(len(records), self.width)


def _record_type(id_field: str | None) -> type:
    """The typed record msgspec decodes into: every field required, extra keys ignored; the
    client's id, when records carry one, of any JSON type."""
    def kind(field: str) -> Any:
        if field in CATEGORICAL_LEVELS:
            return Union[str, None]
        if field in FORMATTED_FIELDS:
            return Union[str, float, None]
        return Union[float, None]
    fields: list = [(f, kind(f)) for f in FIELDS]
    if id_field:
        fields.append(("record_id", Any, None))
    return msgspec.defstruct("Record", fields, gc=False, rename={"record_id": id_field} if id_field else None)


class JsonDecoder:
    """Request bodies (one record or an array of 1 to `max_rows`) to checked Columns, read by
    `decoder`; `id_field` names the key of the client's own record id (ignored by the model)."""

    def __init__(self, decoder: Decoder, max_rows: int, id_field: str | None = None) -> None:
        self.decoder, self.max_rows, self.id_field = decoder, max_rows, id_field
        inputs = decoder.numeric_fields
        record = _record_type(id_field)
        # strict=False lets msgspec turn numeric strings (and "nan") into floats as it decodes.
        self._typed = msgspec.json.Decoder(Union[record, list[record]], strict=False)
        self._plain_inputs = [f for f in inputs if f not in FORMATTED_FIELDS]
        self._plain_reader = _FloatReader(self._plain_inputs)
        self._vouched = [f for f in PLAIN_FIELDS if f not in inputs]      # typed by msgspec, not model inputs
        self._vouched_reader = _FloatReader(self._vouched)
        self._all_plain = _FloatReader(PLAIN_FIELDS)
        self._formatted = operator.attrgetter(*FORMATTED_FIELDS)
        self._levels = operator.attrgetter(*CATEGORICAL_FIELDS)
        self._text_getters = {f: operator.attrgetter(f) for f in (*FORMATTED_FIELDS, *CATEGORICAL_FIELDS)}
        self._id = operator.attrgetter("record_id") if id_field else None

    def decode(self, body: bytes) -> Columns:
        if body.startswith(UTF8_BOM):
            body = body[len(UTF8_BOM):]
        try:
            return self._decode_typed(body)
        except (msgspec.DecodeError, RecursionError, _ReadAsSent):
            return self._decode_as_sent(body)

    # ------------------------------------------------------------------ typed

    def _decode_typed(self, body: bytes) -> Columns:
        # Lax decoding reads "inf"/"Infinity" strings as infinite floats, and skips ignored keys
        # without checking their UTF-8: a body that could hold such text (an "nf", an escape
        # sequence that could spell one, a non-ASCII byte) is read as sent.
        if b"\\" in body or not body.isascii() or _may_spell_infinity(body):
            raise _ReadAsSent
        decoded = self._typed.decode(body)
        if not isinstance(decoded, list):
            return self._decode_one(decoded)
        records = decoded
        if not records:
            raise _ReadAsSent
        self._check_count(len(records))
        count = len(records)
        raw: dict[str, Any] = dict(zip(self._plain_inputs, self._plain_reader.read(records).T))
        raw.update((f, list(map(getter, records))) for f, getter in self._text_getters.items())
        sample = None
        if self.decoder.sample:
            sample = self._vouched_reader.read([records[i] for i in sample_rows(count, self.decoder.sample)])
        decoded = self.decoder.decode(raw, count, vouched=self._vouched, vouched_sample=sample, ids=self._ids(records))
        if decoded.total:
            raise _ReadAsSent
        return decoded.columns

    def _decode_one(self, record: Any) -> Columns:
        """A one-record body, the most common request, through the core's one-record reading."""
        self._check_count(1)
        columns = self.decoder.decode_record(
            self._plain_reader.row(record), self._formatted(record), self._levels(record),
            self._all_plain.row(record) if self.decoder.sample else None,
            self._id(record) if self._id is not None else None)
        if columns is None:
            raise _ReadAsSent
        return columns

    def _ids(self, records: list) -> list | None:
        if self._id is None:
            return None
        ids = list(map(self._id, records))
        return ids if any(i is not None for i in ids) else None

    # ------------------------------------------------------------------ as sent

    def _decode_as_sent(self, body: bytes) -> Columns:
        return self.decode_values(_parse(body))

    def decode_values(self, decoded: Any) -> Columns:
        """JSON values as sent (a dict, or a list of them) to checked Columns; InputError lists
        every problem."""
        single = isinstance(decoded, dict)
        if single:
            records = [decoded]
        elif isinstance(decoded, list):
            records = decoded
        else:
            raise InputError(Problem.BAD_BODY, "Expected a JSON object (one record) or an array of objects, "
                                               f"got {_json_kind(decoded)}." + _encoded_twice(decoded))
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
            raise InputError(Problem.BAD_BODY, f"Every array element must be a JSON object; rows {shown} are not."
                             + (_encoded_twice(records[not_objects[0]]) if len(records) == 1 else ""))
        raw = {field: [record.get(field, ABSENT) for record in records] for field in FIELDS}
        ids = None
        if self.id_field:
            ids = [record.get(self.id_field) for record in records]
            ids = ids if any(i is not None for i in ids) else None
        decoded = self.decoder.decode(raw, len(records), single=single, ids=ids)
        decoded.refuse()
        return decoded.columns

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
            raise InputError(Problem.MALFORMED_JSON, f"The body is not valid JSON: {exc}{_bare_token(body, exc)}") \
                from None
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

    Lax decoding reads the strings "inf" and "Infinity" as infinite floats; both spell "nf", which
    the client's data never does, so a body without it cannot hold an infinity.  Finding each "f"
    is a memchr, and a body has few; one with many (a long text in an ignored key) is searched
    whole in a lower-cased copy instead, so no body costs more than a few passes over it."""
    seen, most = 0, max(64, len(body) // _BYTES_PER_F)
    for letter in b"fF":
        at = body.find(letter, 1)
        while at != -1:
            if body[at - 1] in b"nN":
                return True
            seen += 1
            if seen > most:
                return b"nf" in body.lower()
            at = body.find(letter, at + 1)
    return False


def _bare_token(body: bytes, error: msgspec.DecodeError) -> str:
    """A hint when the parser stopped at a bare NaN or Infinity, which JSON does not have."""
    where = _AT_BYTE.search(str(error))
    if where is None:
        return ""
    at = int(where.group(1))
    token = (at > 0 and _BARE_TOKENS.match(body, at - 1)) or _BARE_TOKENS.match(body, at)   # "-" read already
    if not token:
        return ""
    return (f". The token {token.group().decode()} at byte {token.start()} is not JSON: send null for a missing "
            "value (Python's json.dumps writes NaN unless told allow_nan=False).")


def _encoded_twice(value: Any) -> str:
    """A hint when a string holds JSON records: the body was encoded twice."""
    if not isinstance(value, str):
        return ""
    try:
        inner = msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return ""
    if isinstance(inner, (dict, list)):
        return (" The string holds JSON records: the body was JSON-encoded twice. Send the object or array "
                "itself, not a string that contains it.")
    return ""


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

    def encode(self, prediction: Prediction) -> bytes:
        """The answer: an object for a one-object request, else an array in request order."""
        records = self.records(prediction.scores, prediction.contributions)
        return msgspec.json.encode(records[0] if prediction.single else records)
