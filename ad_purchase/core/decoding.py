r"""The one decoding core: raw field values, however they arrived, to checked Columns.

Every way in hands the core raw columns, one per field, and gets back Columns or the problems:

    JSON request    typed floats msgspec read, or the values as sent  --+
    CSV request     Arrow arrays (pyarrow's CSV reader)                  |
    CSV, Parquet    Arrow record batches                                 +--> Decoder --> Columns
    Spark tasks     Arrow record batches (the same file reader, a share  |             \-> problems
                    of the file each)                                    |
    training data   Arrow record batches (the same file reader)        --+

A raw column is an Arrow array (text, numbers, or nulls), a float64 numpy array (numbers a reader
already typed: NaN is missing), or a list of Python values (as a JSON body held them; ABSENT for
a key the record lacks).  Each kind of field has one rule, written here once:

  * a number: a JSON number, or text in the schema's number shape; missing spellings read as NaN;
    never infinite; a model input at most MAX_MAGNITUDE in size;
  * x12, an amount, and x63, a percentage: text in their shapes, or a number;
  * a level: one of the field's levels, in any case, spaces around ignored; missing is -1.

The per-value readers below are the authority.  The column readers run the same rule in bulk
(Arrow's compute kernels and numpy) and hand every cell they cannot vouch for to the per-value
reader, which decides and words the error.  `Decoder.decode_record` is the one shortcut: one
record read value by value, for the single-record request, proven equal to `decode` by a test.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import (ABSENT, AMOUNT_MARKS, CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, CURRENCY_FIELD, FIELDS,
                      FORMATTED_FIELDS, LEVEL_CODES, MAX_MAGNITUDE, MAX_REPORTED_ERRORS, MISSING_CODE, MISSING_STRINGS,
                      NEGATIVE_CLOSE, NEGATIVE_OPEN, NUMERIC_FIELDS, PERCENT_FIELD, PERCENT_MARK, PLAIN_FIELDS, SPACE,
                      SPACE_CHARS, Columns, InputError, Problem, currency_pattern, field_error,
                      number_pattern, numeric_input_order, percent_pattern)

_FIELD_ORDER = {name: i for i, name in enumerate(FIELDS)}
_ALL_FIELDS = frozenset(FIELDS)
_NUMERIC_POSITION = {name: i for i, name in enumerate(NUMERIC_FIELDS)}
_MISSING = float("nan")
# Where each of NUMERIC_FIELDS sits in a record's plain fields followed by its formatted ones.
_SAMPLE_ORDER = [(*PLAIN_FIELDS, *FORMATTED_FIELDS).index(name) for name in NUMERIC_FIELDS]
_FIRST_ROW = np.zeros(1, dtype=np.intp)


# =========================================================================== per-value rules

class FieldError(ValueError):
    """A raw value that cannot be read; the message says what was expected."""


NUMBER_MESSAGE = "expected a number or a numeric string"
BOOLEAN_MESSAGE = "expected a number, not a boolean"
FINITE_MESSAGE = "must be a finite number"
MAGNITUDE_MESSAGE = f"must be at most {MAX_MAGNITUDE:g} in size"
ABSENT_MESSAGE = "required field is missing"
CURRENCY_MESSAGE = ("expected a currency amount such as \"$6,882.34\" or \"($5,032.58)\" "
                    "(commas only between groups of three digits before the decimal point)")
PERCENT_MESSAGE = "expected a percentage such as \"62.59%\" or \"45.85\""
TARGET_MESSAGE = "the target must be 0 or 1"


def level_message(field: str) -> str:
    return "expected one of " + ", ".join(CATEGORICAL_LEVELS[field])


_NUMBER = re.compile(f"{SPACE}*({number_pattern()}){SPACE}*")
_PERCENT = re.compile(f"{SPACE}*({number_pattern()})(?:{SPACE}*{re.escape(PERCENT_MARK)})?{SPACE}*")
_CURRENCY = re.compile(f"{SPACE}*{currency_pattern()}{SPACE}*")
# A well-formed amount without its marks and spaces is a signed number; "(5)" is -5.
_AMOUNT_TO_NUMBER = str.maketrans({**dict.fromkeys(AMOUNT_MARKS + SPACE_CHARS + NEGATIVE_CLOSE), NEGATIVE_OPEN: "-"})

# The per-value readers try the well-formed spelling first (one regular expression) and look at
# the rarer cases, missing markers and errors, only when that fails.


def is_missing(value: Any) -> bool:
    """null, a missing marker string, or a float NaN (how a reader hands over an empty cell)."""
    if isinstance(value, str):
        return value.strip(SPACE_CHARS).lower() in MISSING_STRINGS
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise FieldError(FINITE_MESSAGE)
    return number


def _not_text(value: Any) -> float:
    """A value that is not a string: a finite number, or missing."""
    if is_missing(value):
        return _MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(BOOLEAN_MESSAGE if isinstance(value, bool) else NUMBER_MESSAGE)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise FieldError(FINITE_MESSAGE) from None
    return _finite(number)


def _text(value: str, pattern: re.Pattern, message: str) -> float:
    match = pattern.fullmatch(value)
    if match:
        return _finite(float(match.group(1)))
    if is_missing(value):
        return _MISSING
    raise FieldError(message)


def parse_number(value: Any) -> float:
    """A plain numeric field: a number, a numeric string, or missing (NaN)."""
    return _text(value, _NUMBER, NUMBER_MESSAGE) if isinstance(value, str) else _not_text(value)


def parse_currency(value: Any) -> float:
    """x12: "$6,882.34", "$-5,032.58", "($5,032.58)" (negative), "3709.93" or a number.

    A comma must separate groups of exactly three digits before the decimal point, so an amount
    written with other separators ("$1.234,56", "12,34") is refused rather than misread.
    Parentheses or a minus sign make the amount negative (both at once are refused)."""
    if not isinstance(value, str):
        return _not_text(value)
    if _CURRENCY.fullmatch(value):
        return _finite(float(value.translate(_AMOUNT_TO_NUMBER)))
    if is_missing(value):
        return _MISSING
    raise FieldError(CURRENCY_MESSAGE)


def parse_percent(value: Any) -> float:
    """x63: "62.59%", "45.85" or a number, all on the 0-100 scale."""
    if not isinstance(value, str):
        return _not_text(value)
    return _text(value, _PERCENT, PERCENT_MESSAGE)


def numeric_parser(field: str):
    """The reader for a numeric field: the amount and the percentage have their own."""
    return {CURRENCY_FIELD: parse_currency, PERCENT_FIELD: parse_percent}.get(field, parse_number)


_FORMATTED_READERS = [numeric_parser(name) for name in FORMATTED_FIELDS]


_LEVEL_LOOKUP: dict[str, dict[str, str]] = {
    field: {level.lower(): level for level in levels} for field, levels in CATEGORICAL_LEVELS.items()}


def parse_level(field: str, value: Any) -> str | None:
    """A categorical value as its canonical level, or None when missing."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        level = _LEVEL_LOOKUP[field].get(value.strip(SPACE_CHARS).lower())
        if level is not None:
            return level
    raise FieldError(level_message(field))


def level_code(field: str, value: Any) -> int:
    """A categorical value as its level code (MISSING_CODE when missing)."""
    level = parse_level(field, value)
    return MISSING_CODE if level is None else LEVEL_CODES[field][level]


# The spellings most records use, read with one dictionary lookup; others go through level_code.
_COMMON_CODES: dict[str, dict[Any, int]] = {
    field: {**codes, None: MISSING_CODE, "": MISSING_CODE, "nan": MISSING_CODE, "NaN": MISSING_CODE}
    for field, codes in LEVEL_CODES.items()}


# =========================================================================== column rules
# Each returns the column's values and its bad cells as (index, value as sent, message).

Bad = list[tuple[int, Any, str]]


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _cell(column, index: int) -> Any:
    """A cell as its reader gave it: text, a number or None."""
    if isinstance(column, (list, tuple)):
        return column[index]
    if isinstance(column, np.ndarray):
        return float(column[index])
    return column[int(index)].as_py()


def _by_value(read, column, indices: Iterable[int], values: np.ndarray, missing: float = _MISSING) -> Bad:
    """The per-value reader over some cells: values stored (`missing` where bad), problems listed."""
    bad = []
    for index in indices:
        raw = _cell(column, index)
        if raw is ABSENT:
            values[index] = missing
            bad.append((int(index), ABSENT, ABSENT_MESSAGE))
            continue
        try:
            values[index] = read(raw)
        except FieldError as exc:
            values[index] = missing
            bad.append((int(index), raw, str(exc)))
    return bad


def read_numbers(field: str, column) -> tuple[np.ndarray, Bad]:
    """Floats of a numeric column, NaN where missing (and where bad)."""
    if isinstance(column, np.ndarray):
        return _typed_numbers(column, column)
    if isinstance(column, list):
        if field in FORMATTED_FIELDS:
            return _formatted(field, column)
        values = np.empty(len(column))
        return values, _by_value(parse_number, column, range(len(column)), values)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if _is_text(kind):
        return _formatted(field, column.to_pylist()) if field in FORMATTED_FIELDS else _plain(column)
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind):
        typed = column if pa.types.is_float64(kind) else column.cast(pa.float64())
        return _typed_numbers(np.asarray(typed.to_numpy(zero_copy_only=False), dtype=float), column)
    return np.full(len(column), np.nan), [(i, None if v is None else str(v), f"expected a number, not a {kind} column")
                                          for i, v in enumerate(column.to_pylist())]


def _typed_numbers(values: np.ndarray, column) -> tuple[np.ndarray, Bad]:
    """Numbers a reader typed: NaN is missing, an infinity is refused."""
    infinite = np.isinf(values)
    if not infinite.any():
        return values, []
    infinite = np.flatnonzero(infinite)
    values = values.copy()
    values[infinite] = np.nan
    return values, [(int(i), _cell(column, i), FINITE_MESSAGE) for i in infinite]


def _plain(text: pa.Array) -> tuple[np.ndarray, Bad]:
    """Plain numeric text: Arrow's cast where it vouches for the value, the per-value reader
    elsewhere.  Where the cast succeeds with a finite number the schema reads the same number
    (fuzzed in the tests); a NaN or an infinity sends the cell to the per-value reader ("nan"
    is missing, "inf" and "nan(1)" are errors), and so does a column the cast refuses."""
    try:
        values = np.asarray(pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    except pa.ArrowInvalid:
        values = np.empty(len(text))
        return values, _by_value(parse_number, text, range(len(text)), values)
    odd = np.flatnonzero(~np.isfinite(values))
    if odd.size:
        odd = odd[np.asarray(pc.is_valid(text).to_numpy(zero_copy_only=False))[odd]]
    if not odd.size:
        return values, []
    values = values.copy()                  # Arrow's buffer, seen without a copy, is read-only
    return values, _by_value(parse_number, text, odd, values)


# x12 and x63 in bulk: the values joined by line breaks and checked by one regular expression
# (their shapes, matched possessively: linear time), then the marks dropped and the rest read
# by numpy as signed numbers.  Values it does not vouch for (other missing markers, numbers,
# spaces other than blanks, infinities, errors) go to the per-value reader, which decides.
_NAN, _BLANK = "[nN][aA][nN]", r"[ \t]"
_LINE = {CURRENCY_FIELD: currency_pattern(space=_BLANK, possessive=True),
         PERCENT_FIELD: percent_pattern(space=_BLANK, possessive=True)}
_COLUMN = {field: re.compile(rf"(?:{_BLANK}*+(?:{shape}|{_NAN}){_BLANK}*+\n)*+{_BLANK}*+(?:{shape}|{_NAN}){_BLANK}*+")
           for field, shape in _LINE.items()}
_COLUMN_TO_NUMBERS = {     # keeps the line breaks between values
    CURRENCY_FIELD: str.maketrans({**dict.fromkeys(AMOUNT_MARKS + NEGATIVE_CLOSE + " \t"), NEGATIVE_OPEN: "-"}),
    PERCENT_FIELD: str.maketrans(dict.fromkeys(PERCENT_MARK + " \t"))}


def _formatted(field: str, values: list) -> tuple[np.ndarray, Bad]:
    """x12 or x63 as the values a reader gave (text, numbers, None)."""
    try:
        joined = "\n".join(["nan" if value is None else value for value in values])
    except TypeError:                  # numbers among the text
        joined = None
    if joined is not None and _COLUMN[field].fullmatch(joined):
        parts = joined.translate(_COLUMN_TO_NUMBERS[field]).split("\n")
        if len(parts) == len(values):  # no value held a line break of its own
            numbers = np.array(parts, dtype=float)
            if not np.isinf(numbers).any():
                return numbers, []
    numbers = np.empty(len(values))
    return numbers, _by_value(numeric_parser(field), values, range(len(values)), numbers)


def read_levels(field: str, column) -> tuple[np.ndarray, Bad]:
    """Level codes of a categorical column: the common spellings by one lookup each (a list of
    values), or each distinct spelling read once (an Arrow column, dictionary-encoded)."""
    if isinstance(column, list):
        try:
            codes = list(map(_COMMON_CODES[field].get, column))
        except TypeError:              # an object or array among the values: each is read alone
            codes = [None] * len(column)
        if None not in codes:
            return np.array(codes, dtype=np.int8), []
        found = np.array([MISSING_CODE if code is None else code for code in codes], dtype=np.int8)
        return found, _by_value(lambda value: level_code(field, value), column,
                                [i for i, code in enumerate(codes) if code is None], found, MISSING_CODE)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):
        return np.full(len(column), MISSING_CODE, dtype=np.int8), []
    text = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not _is_text(text):
        return np.full(len(column), MISSING_CODE, dtype=np.int8), [
            (i, v, f"expected a level, not a {column.type} value") for i, v in enumerate(column.to_pylist())
            if v is not None]
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    table = np.empty(len(encoded.dictionary) + 1, dtype=np.int8)
    refused = {}
    for code, spelling in enumerate(encoded.dictionary.to_pylist()):
        try:
            table[code] = level_code(field, spelling)
        except FieldError as exc:
            table[code], refused[code] = MISSING_CODE, str(exc)
    table[-1] = MISSING_CODE                                 # where the cell is null
    indices = np.asarray(encoded.indices.fill_null(len(table) - 1).to_numpy(zero_copy_only=False))
    bad = [(int(i), _cell(column, i), refused[int(indices[i])])
           for i in np.flatnonzero(np.isin(indices, list(refused)))] if refused else []
    return table[indices], bad


def read_target(column) -> tuple[np.ndarray, Bad]:
    """The training target: 0 or 1, as text or as a number; nothing else, missing included."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    text = pc.fill_null(pc.utf8_trim(column.cast(pa.string()), characters=SPACE_CHARS), "")
    ok = np.asarray(pc.is_in(text, value_set=pa.array(["0", "1"])).to_numpy(zero_copy_only=False))
    target = np.asarray(pc.equal(text, "1").to_numpy(zero_copy_only=False)).astype(np.int64)
    return target, [(int(i), _cell(column, i), TARGET_MESSAGE) for i in np.flatnonzero(~ok)]


# =========================================================================== the decoder

def sample_rows(rows: int, size: int) -> np.ndarray:
    """Which rows monitoring sees of a batch: all of a small one, `size` evenly spaced ones of a
    big one."""
    if rows <= size:
        return np.arange(rows, dtype=np.intp)
    return np.linspace(0, rows - 1, size).astype(np.intp)


@dataclass
class Decoded:
    """A batch decoded: the rows without problems as Columns, which of the batch's rows those are
    (None: all of them), and the problems of the others, in row and field order, as
    (row index, field, value as sent, message); `total` counts them all where `problems` keeps
    only the first ones (see Decoder's `cap`)."""

    columns: Columns
    kept: np.ndarray | None = None
    problems: list[tuple[int, str, Any, str]] = field(default_factory=list)
    total: int = 0

    def errors(self, rows: Sequence[int] | np.ndarray | None = None) -> list[dict]:
        """The problems as error entries; `row` is the batch index, or rows[index] when given."""
        return [field_error(int(index if rows is None else rows[index]), name, message, value)
                for index, name, value, message in self.problems]

    def refuse(self, rows: Sequence[int] | np.ndarray | None = None) -> None:
        """Raise the refusal of a batch with problems (all or nothing: a request, a training file)."""
        if self.total:
            errors = self.errors(rows)[:MAX_REPORTED_ERRORS]
            raise InputError.invalid_values(errors, self.total)


class Decoder:
    """Raw columns to Columns holding the model's numeric inputs, `inputs`, and every categorical.
    Every field is checked.  `cap`: problems kept per field (all are counted); None keeps every
    one (a batch run that sets rows aside needs each)."""

    def __init__(self, inputs: Iterable[str], cap: int | None = MAX_REPORTED_ERRORS, sample: int = 0) -> None:
        self.numeric_fields = numeric_input_order(inputs)
        self.cap, self.sample = cap, sample
        self._position = {name: i for i, name in enumerate(self.numeric_fields)}
        self._plain_inputs = [name for name in self.numeric_fields if name not in FORMATTED_FIELDS]
        self._formatted_inputs = [FORMATTED_FIELDS.index(name) for name in self.numeric_fields
                                  if name in FORMATTED_FIELDS]

    def decode(self, raw: Mapping[str, Any], count: int, *, vouched: Sequence[str] = (),
               vouched_sample: np.ndarray | None = None, single: bool = False, ids: list | None = None) -> Decoded:
        """`raw`: a column per field (Arrow array, float64 numpy array, or list of values).
        `vouched`: fields the reader proved valid in every row; those that are not model inputs
        may be left out of `raw`.  `vouched_sample`: their values at the sample rows, a column per
        field of `vouched` (when the decoder keeps a sample)."""
        vouched = frozenset(vouched)
        lacking = _ALL_FIELDS.difference(raw.keys()).difference(vouched.difference(self._position))
        if lacking:
            raise ValueError(f"the batch lacks {len(lacking)} field(s): {', '.join(sorted(lacking)[:10])}")
        problems: dict[str, Bad] = {}
        numeric = np.empty((count, len(self.numeric_fields)))
        picked = sample_rows(count, self.sample) if self.sample else None
        sample = np.full((len(picked), len(NUMERIC_FIELDS)), np.nan) if picked is not None else None
        for name, position, place in self._reading(frozenset(raw.keys()), vouched):
            values, bad = read_numbers(name, raw[name])
            if position is not None:
                numeric[:, position] = values
            if sample is not None:
                sample[:, place] = values[picked]
            if bad:
                problems[name] = bad
        if sample is not None and vouched_sample is not None:
            sample[:, self._left_out(vouched.difference(self._position, raw.keys()))] = vouched_sample
        # The size limit of the model's inputs, over all of them at once.
        with np.errstate(invalid="ignore"):
            large = np.abs(numeric) > MAX_MAGNITUDE
        if large.any():
            for name, position in self._position.items():
                rows = np.flatnonzero(large[:, position])
                if rows.size:
                    problems[name] = sorted(problems.get(name, []) + [
                        (int(i), _cell(raw[name], i), MAGNITUDE_MESSAGE) for i in rows], key=lambda bad: bad[0])
        codes = np.empty((count, len(CATEGORICAL_FIELDS)), dtype=np.int8)
        for position, name in enumerate(CATEGORICAL_FIELDS):
            codes[:, position], bad = read_levels(name, raw[name])
            if bad:
                problems[name] = bad
        if not problems:
            return Decoded(Columns(count, self.numeric_fields, numeric, codes, single, ids, picked, sample))

        total = sum(len(bad) for bad in problems.values())
        found = sorted(((index, _FIELD_ORDER[name], name, value, message)
                        for name, bad in problems.items() for index, value, message in bad[:self.cap]),
                       key=lambda p: (p[0], p[1]))
        keep = np.ones(count, dtype=bool)
        keep[[p[0] for p in found]] = False
        if self.cap is not None and len(found) > self.cap:
            found = found[:self.cap]
        kept_ids = [i for i, k in zip(ids, keep) if k] if ids is not None else None
        kept = Columns(int(keep.sum()), self.numeric_fields, numeric[keep], codes[keep], single, kept_ids)
        return Decoded(kept, keep, [(index, name, value, message) for index, _, name, value, message in found], total)

    @functools.lru_cache(maxsize=64)
    def _reading(self, given: frozenset, vouched: frozenset) -> tuple:
        """The numeric fields to read, each with its column among the inputs (None: not an input)
        and in the sample: those given, less the vouched ones that are not model inputs.  A reader
        gives the same fields every time."""
        return tuple((name, self._position.get(name), _NUMERIC_POSITION[name]) for name in NUMERIC_FIELDS
                     if name in given and (name not in vouched or name in self._position))

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _left_out(fields: frozenset) -> np.ndarray:
        """Where the vouched fields a reader left out sit in NUMERIC_FIELDS, in that order (the
        order a reader gives their sample in); a reader leaves out the same ones every time."""
        return np.array([_NUMERIC_POSITION[name] for name in NUMERIC_FIELDS if name in fields], dtype=np.intp)

    def decode_record(self, plain: Sequence[float | None], formatted: Sequence[Any], levels: Sequence[Any],
                      sample: Sequence[float | None] | None = None, record_id: Any = None) -> Columns | None:
        """One record whose plain model inputs a reader already typed (`plain`, in the order of the
        plain inputs; None for missing), with its raw x12 and x63 (`formatted`) and its raw levels:
        the same rules as `decode`, one value at a time, since numpy and Arrow's per-call costs
        exceed the work on one row.  `sample`: the record's plain fields, when a sample is kept.
        None when anything is unusual: `decode` then reads the record and words the problems."""
        try:
            amounts = [read(value) for read, value in zip(_FORMATTED_READERS, formatted)]
        except FieldError:
            return None
        row = [_MISSING if value is None else value for value in plain]
        row += [amounts[i] for i in self._formatted_inputs]
        if not all(abs(value) <= MAX_MAGNITUDE for value in row if value == value):   # value == value: not NaN
            return None
        codes = [_COMMON_CODES[name].get(value) for name, value in zip(CATEGORICAL_FIELDS, levels)]
        if None in codes:                                       # other spellings, or unknown levels
            try:
                codes = [level_code(name, value) for name, value in zip(CATEGORICAL_FIELDS, levels)]
            except FieldError:
                return None
        picked = drift = None
        if sample is not None and self.sample:
            picked = _FIRST_ROW
            values = (*sample, *amounts)                    # PLAIN_FIELDS, then FORMATTED_FIELDS
            drift = np.array([[values[i] for i in _SAMPLE_ORDER]], dtype=float)     # None becomes NaN
        return Columns(1, self.numeric_fields, np.array([row], dtype=float), np.array([codes], dtype=np.int8), True,
                       None if record_id is None else [record_id], picked, drift)


# =========================================================================== which columns

def fields_of(records: pa.RecordBatch) -> dict[str, pa.Array]:
    """The raw fields a record batch holds, as `Decoder.decode` takes them."""
    names = set(records.schema.names)
    return {name: records.column(name) for name in FIELDS if name in names}


def check_fields(names: Sequence[str], where: str, also: Sequence[str] = ()) -> None:
    """A header or a file's columns: every raw field (and each of `also`) present, none twice.
    `where` starts the message ("The header row", "rows.csv: the file")."""
    seen, repeated = set(), set()
    for name in names:
        (repeated if name in seen else seen).add(name)
    repeated &= {*FIELDS, *also}
    if repeated:
        raise InputError(Problem.MALFORMED_CSV, f"{where} names these columns more than once: "
                                                f"{', '.join(sorted(repeated))}.")
    lacking = [name for name in (*FIELDS, *also) if name not in seen]
    if lacking:
        raise InputError(Problem.MALFORMED_CSV, f"{where} lacks {len(lacking)} required column(s): "
                                                f"{', '.join(lacking)}.")
