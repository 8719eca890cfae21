"""Arrow record batches to Columns, and Scores to record batches: the codec of batch scoring.

A batch holds the raw fields as a file gave them: text from a CSV (missing spellings already
null, see READ_AS_MISSING), or text and numbers from a Parquet file.  Every cell is read with the
schema's rules; the fast steps run in Arrow's C++ and numpy, and anything they cannot vouch for
goes to the schema's own parsers, which decide and word the error:

  * plain numeric text is cast to float64 by Arrow.  Where the cast succeeds and gives a finite
    number, the schema reads the same number (fuzzed in the tests); a cast that fails, a NaN or
    an infinity sends the cells in question to the schema's parser;
  * x12 and x63 go through the schema's whole-column reader;
  * a categorical column is dictionary-encoded, and only its few distinct spellings are read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..model import Scores
from ..schema import (CATEGORICAL_FIELDS, CURRENCY_FIELD, FIELDS, FORMATTED_FIELDS, MAX_MAGNITUDE, MISSING_CODE,
                      PERCENT_FIELD, SPACE, SPACE_CHARS, Columns, FieldError, answer_fields, currency_pattern,
                      field_error, level_code, missing_spellings, numeric_input_order, numeric_parser,
                      percent_pattern, split_dummy)

# Text a reader should hand over as null: every case variant of the missing markers.  Spellings
# with spaces around them are not listed; the schema's parser reads those.
READ_AS_MISSING = missing_spellings()
_ORDER = {name: i for i, name in enumerate(FIELDS)}


@dataclass
class Decoded:
    """A batch read: the rows without problems as Columns, which of the batch's rows those are
    (None: all), and every problem of the others (field_error entries whose `row` is the
    data-row number)."""

    columns: Columns
    kept: np.ndarray | None = None
    problems: list[dict] = field(default_factory=list)


class ArrowDecoder:
    """Record batches holding the fields x0..x99 (other columns are ignored) to Columns holding
    the model's numeric inputs, `input_fields`, and every categorical.  Every field is checked;
    values of the inputs must also be at most MAX_MAGNITUDE in size, as for a request."""

    def __init__(self, input_fields: Iterable[str]) -> None:
        self.numeric_fields = numeric_input_order(input_fields)

    def decode(self, batch: pa.RecordBatch, rows: np.ndarray, vouched: frozenset[str] = frozenset()) -> Decoded:
        """`rows` are the batch's data-row numbers (1 = the first record after a header).
        `vouched`: fields the reader has already proven valid for every row, the way the schema
        would (a typed column it checked, say); those that are not model inputs are not read
        again and may be absent from the batch."""
        names = set(batch.schema.names)
        missing = [f for f in FIELDS if f not in names and (f not in vouched or f in self.numeric_fields)]
        if missing:
            raise ValueError(f"the batch lacks {len(missing)} field(s): {', '.join(missing[:10])}")
        count = batch.num_rows
        problems: list[tuple[int, int, str, object, str]] = []     # (index, field order, field, value, message)
        numeric = np.empty((count, len(self.numeric_fields)))
        position = {name: i for i, name in enumerate(self.numeric_fields)}
        for order, name in enumerate(FIELDS):
            if name in CATEGORICAL_FIELDS or (name in vouched and name not in position):
                continue
            values, bad = self._numeric(name, batch.column(name), name in position)
            if name in position:
                numeric[:, position[name]] = values
            problems.extend((index, order, name, value, message) for index, value, message in bad)
        codes = np.empty((count, len(CATEGORICAL_FIELDS)), dtype=np.int8)
        for column, name in enumerate(CATEGORICAL_FIELDS):
            codes[:, column], bad = _codes(name, batch.column(name))
            problems.extend((index, _ORDER[name], name, value, message) for index, value, message in bad)

        if not problems:
            return Decoded(Columns(count, False, self.numeric_fields, numeric, codes))
        problems.sort(key=lambda p: (p[0], p[1]))
        keep = np.ones(count, dtype=bool)
        keep[[p[0] for p in problems]] = False
        errors = [field_error(int(rows[index]), name, message, value) for index, _, name, value, message in problems]
        kept = Columns(int(keep.sum()), False, self.numeric_fields, numeric[keep], codes[keep])
        return Decoded(kept, keep, errors)

    @staticmethod
    def _numeric(name: str, array: pa.Array, model_input: bool) -> tuple[np.ndarray | None, list]:
        """Floats of a numeric column (NaN where missing; None when not a model input and already
        known as valid) and the cells that cannot be read."""
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            values, bad = (_formatted if name in FORMATTED_FIELDS else _plain)(name, array)
        elif pa.types.is_floating(array.type) or pa.types.is_integer(array.type) or pa.types.is_null(array.type):
            if not pa.types.is_float64(array.type):
                array = array.cast(pa.float64())
            if not model_input:                            # only its validity matters
                if not pc.any(pc.is_inf(array)).as_py():
                    return None, []
            values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=float)
            bad = [(int(i), float(values[i]), "must be a finite number") for i in np.flatnonzero(np.isinf(values))]
        else:
            return np.full(len(array), np.nan), [(i, str(v), f"expected a number, not a {array.type} column")
                                                 for i, v in enumerate(array.to_pylist())]
        if model_input:
            with np.errstate(invalid="ignore"):
                large = np.flatnonzero(np.abs(values) > MAX_MAGNITUDE)
            too_large = f"must be at most {MAX_MAGNITUDE:g} in size"
            bad += [(int(i), _raw(array, i), too_large) for i in large if not np.isinf(values[i])]
        return values, bad


def _raw(array, index: int):
    """A cell as its file gave it: text or number."""
    return array[int(index)].as_py()


def _by_the_parser(name: str, array, indices: Iterable[int], values: np.ndarray) -> list:
    """The schema's parser over some cells of a text column: values stored, problems listed."""
    read = numeric_parser(name)
    bad = []
    for index in indices:
        raw = _raw(array, index)
        try:
            values[index] = read(raw)
        except FieldError as exc:
            values[index] = np.nan
            bad.append((int(index), raw, str(exc)))
    return bad


def _plain(name: str, array) -> tuple[np.ndarray, list]:
    """A plain numeric text column: Arrow's cast where it vouches for the value, else the schema."""
    try:
        values = np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    except pa.ArrowInvalid:             # some cell Arrow cannot read: the schema reads them all
        values = np.empty(len(array))
        return values, _by_the_parser(name, array, range(len(array)), values)
    # A NaN from a cell that was not null, or an infinity: the text decides ("nan" is missing,
    # "inf" and "nan(1)" are errors), so the schema's parser reads just those cells.
    odd = np.flatnonzero(~np.isfinite(values))
    if odd.size:
        odd = odd[np.asarray(pc.is_valid(array).to_numpy(zero_copy_only=False))[odd]]
    if not odd.size:
        return values, []
    values = values.copy()                  # Arrow's buffer, seen without a copy, is read-only
    return values, _by_the_parser(name, array, odd, values)


# x12 and x63 as Arrow reads them: the schema's shapes (RE2 reads the plain form in linear time),
# and what to drop from a well-formed value to leave a signed number Arrow casts.
_SHAPES = {CURRENCY_FIELD: f"^{SPACE}*(?:{currency_pattern()}){SPACE}*$",
           PERCENT_FIELD: f"^{SPACE}*(?:{percent_pattern()}){SPACE}*$"}
_DROPPED = {CURRENCY_FIELD: r"[$,) \t\n\r\f\v]", PERCENT_FIELD: r"[% \t\n\r\f\v]"}


def _as_number(name: str, shaped_text) -> np.ndarray:
    """Well-formed x12/x63 text as floats (NaN where null); raises ArrowInvalid for text the
    cast refuses.  In a well-formed value, '%', ')' and spaces stand only at the ends, except
    spaces after '$', '(' or a sign: those remain, and the cast refuses them, which sends the
    column the general way (a regular expression replace that walks every character, the slow
    step this avoids for the usual spellings)."""
    if name == PERCENT_FIELD:
        return pc.cast(pc.utf8_trim(shaped_text, characters=f"%{SPACE_CHARS}"), pa.float64()).to_numpy(
            zero_copy_only=False)
    text = pc.replace_substring(pc.replace_substring(shaped_text, ",", ""), "$", "")
    text = pc.utf8_trim(text, characters=SPACE_CHARS)
    # "(5)" is read as 5 and negated after the cast: cheaper than joining a "-" onto the text.
    negative = np.asarray(pc.fill_null(pc.starts_with(text, "("), False).to_numpy(zero_copy_only=False))
    values = pc.cast(pc.utf8_trim(text, characters=f"(){SPACE_CHARS}"), pa.float64()).to_numpy(zero_copy_only=False)
    if negative.any():
        values = np.where(negative, -values, values)
    return values


def _formatted(name: str, array) -> tuple[np.ndarray, list]:
    """x12 or x63: every value checked against the schema's shape, then cast by Arrow; values
    of another shape (or infinite) go to the schema's parser, which reads or refuses them."""
    shaped = pc.fill_null(pc.match_substring_regex(array, _SHAPES[name]), True)     # null is missing
    shaped_text = pc.if_else(shaped, array, None)
    try:
        values = _as_number(name, shaped_text)
    except pa.ArrowInvalid:
        text = pc.replace_substring_regex(shaped_text, _DROPPED[name], "")
        values = pc.cast(pc.replace_substring(text, "(", "-") if name == CURRENCY_FIELD else text,
                         pa.float64()).to_numpy(zero_copy_only=False)
    odd = np.flatnonzero(~np.asarray(shaped.to_numpy(zero_copy_only=False)) | np.isinf(values))
    if not odd.size:
        return values, []
    values = values.copy()                  # Arrow's buffer, seen without a copy, is read-only
    return values, _by_the_parser(name, array, odd, values)


def _codes(name: str, array) -> tuple[np.ndarray, list]:
    """Level codes of a categorical column: each distinct spelling is read once."""
    if pa.types.is_null(array.type):
        return np.full(len(array), MISSING_CODE, dtype=np.int8), []
    text = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    if not (pa.types.is_string(text) or pa.types.is_large_string(text)):
        return np.full(len(array), MISSING_CODE, dtype=np.int8), [
            (i, v, f"expected a level, not a {array.type} value") for i, v in enumerate(array.to_pylist())
            if v is not None]
    encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    table = np.empty(len(encoded.dictionary) + 1, dtype=np.int8)
    refused = {}
    for code, spelling in enumerate(encoded.dictionary.to_pylist()):
        try:
            table[code] = level_code(name, spelling)
        except FieldError as exc:
            table[code], refused[code] = MISSING_CODE, str(exc)
    table[-1] = MISSING_CODE                                 # where the cell is null
    indices = np.asarray(encoded.indices.fill_null(len(table) - 1).to_numpy(zero_copy_only=False))
    codes = table[indices]
    bad = []
    if refused:
        for index in np.flatnonzero(np.isin(indices, list(refused))):
            bad.append((int(index), _raw(array, index), refused[int(indices[index])]))
    return codes, bad


# ---------------------------------------------------------------------------------- answers

def encode(scores: Scores, ids: pa.Array, id_column: str, indicators_as_integers: bool = False) -> pa.RecordBatch:
    """Scores as a record batch: the id column, then the answer's columns.  With
    `indicators_as_integers`, the 0/1 inputs are int8: a CSV writer gives them the same text
    ("0", "1") without formatting a float each."""
    position = {name: i for i, name in enumerate(scores.names)}
    columns, names = [ids], [id_column]
    for name in answer_fields(scores.names):
        if name == "business_outcome":
            columns.append(pa.array(scores.outcome, type=pa.int64()))
        elif name == "phat":
            columns.append(pa.array(scores.phat, type=pa.float64()))
        elif indicators_as_integers and split_dummy(name) is not None:
            columns.append(pa.array(scores.inputs[:, position[name]].astype(np.int8), type=pa.int8()))
        else:
            columns.append(pa.array(scores.inputs[:, position[name]], type=pa.float64()))
        names.append(name)
    return pa.RecordBatch.from_arrays(columns, names=names)


REJECT_SCHEMA_FIELDS = ("field", "value", "message")


def encode_rejects(problems: list[dict], ids: dict[int, object], id_column: str) -> pa.RecordBatch:
    """One line per problem: the row's id (or data-row number), field, value as text, and why."""
    return pa.RecordBatch.from_arrays(
        [pa.array([ids.get(p["row"], p["row"]) for p in problems]),
         pa.array([p["field"] for p in problems], type=pa.string()),
         pa.array(["" if "value" not in p or p["value"] is None else str(p["value"]) for p in problems],
                  type=pa.string()),
         pa.array([p["message"] for p in problems], type=pa.string())],
        names=[id_column, *REJECT_SCHEMA_FIELDS])
