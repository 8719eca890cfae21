"""CSV bodies to Columns, and Scores to CSV: the same contract as JSON, for text/csv requests.

    decode_csv(data, input_fields, max_rows) -> Columns
    encode_csv(scores)                       -> str

A CSV has a header row naming the raw fields x0..x99 (in any order; other columns are
ignored).  Every field of every data row is read with the schema's rules, exactly as the JSON
careful path reads a string value, and the result is the same Columns the JSON decoder gives,
so the model returns the same numbers for the same rows however they arrived.

Rows are numbered as data lines: the first line after the header is row 1, so in the usual
one-line header a row's number is its file line number minus one.  Blank lines are skipped but
still counted, so the numbers keep pointing at the right lines.

Clean columns are converted in bulk: numpy reads a whole block of numeric text at once, and
the few spellings where its reading and the schema's could differ (underscores, infinities,
non-ASCII text) send that column to the per-cell reader, which is the authority and reports
every bad cell with its row, field and value.  The columns hold every numeric field, as the
JSON careful path's do, and values of the model's inputs beyond MAX_MAGNITUDE are refused
as the JSON decoder refuses them.
"""
from __future__ import annotations

import csv
import io
import itertools
import operator
from dataclasses import dataclass
from typing import Iterable, Sequence

import msgspec
import numpy as np

from ..model import Scores
from ..schema import (CATEGORICAL_FIELDS, FIELDS, FORMATTED_FIELDS, MAX_MAGNITUDE, MAX_REPORTED_ERRORS, NUMERIC_FIELDS,
                      PLAIN_FIELDS, Columns, FieldError, InputError, Problem, answer_fields, field_error, level_code,
                      missing_spellings, numeric_parser)

_FIELD_ORDER = {field: i for i, field in enumerate(FIELDS)}
# numpy reads "nan" as NaN, not the other missing markers: they are rewritten to it.
_MISSING_AS_NAN = dict.fromkeys(missing_spellings(), "nan")


@dataclass(frozen=True)
class Header:
    """Where each raw field sits in a row."""

    names: tuple[str, ...]
    positions: dict[str, int]          # field -> column index, for x0..x99
    lines: int                         # physical lines the header took

    @property
    def width(self) -> int:
        return len(self.names)


def _bad_csv(detail: str) -> InputError:
    return InputError(Problem.MALFORMED_CSV, detail)


def read_header(reader) -> Header:
    """The header row: every raw field present once."""
    try:
        names = next(reader, None)
        while names is not None and not names:      # blank lines before the header
            names = next(reader, None)
    except csv.Error as exc:
        raise _bad_csv(f"The header row cannot be read as CSV: {exc}.") from None
    if names is None:
        raise _bad_csv("The CSV is empty; send a header row naming x0..x99 and one or more data rows.")
    names = tuple(name.strip().lstrip("\ufeff").strip() for name in names)
    positions: dict[str, int] = {}
    repeated = set()
    for index, name in enumerate(names):
        if name in _FIELD_ORDER:
            if name in positions:
                repeated.add(name)
            positions[name] = index
    if repeated:
        raise _bad_csv("The header names these columns more than once: " + ", ".join(sorted(repeated)) + ".")
    missing = [field for field in FIELDS if field not in positions]
    if missing:
        raise _bad_csv(f"The header row lacks {len(missing)} required column(s): {', '.join(missing)}.")
    return Header(names, positions, reader.line_num)


def read_rows(reader, header: Header, limit: int) -> tuple[list[list[str]], list[int]]:
    """Up to `limit` data rows and the data-row number (file line minus header lines) of each.

    Blank lines are skipped; a row with a different number of cells than the header is an error.
    """
    rows: list[list[str]] = []
    numbers: list[int] = []
    width = header.width
    previous = reader.line_num
    try:
        for row in reader:
            if row:
                if len(row) != width:
                    line = previous + 1
                    raise _bad_csv(f"Row {line - header.lines} (line {line}) has {len(row)} cells; "
                                   f"the header has {width}.")
                rows.append(row)
                numbers.append(previous + 1 - header.lines)
                if len(rows) == limit:
                    break
            previous = reader.line_num
    except csv.Error as exc:
        line = previous + 1
        raise _bad_csv(f"Row {line - header.lines} (line {line}) cannot be read as CSV: {exc}.") from None
    return rows, numbers


class _Errors:
    """Invalid cells: the first MAX_REPORTED_ERRORS per field are kept, all are counted."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, int, str, str, str]] = []
        self.total = 0

    def add(self, field: str, problems: list[tuple[int, str, str]], total: int) -> None:
        order = _FIELD_ORDER[field]
        self.kept.extend((row, order, field, value, message) for row, value, message in problems)
        self.total += total

    def raise_if_any(self) -> None:
        if not self.total:
            return
        self.kept.sort(key=operator.itemgetter(0, 1))
        errors = [field_error(row, field, message, value)
                  for row, _, field, value, message in self.kept[:MAX_REPORTED_ERRORS]]
        raise InputError.invalid_values(errors, self.total)


def _cell_by_cell(field: str, cells: Sequence[str], numbers: Sequence[int], read, errors: _Errors) -> list:
    """Every cell through the schema's reader; bad cells go to `errors`, their result is None."""
    out = []
    problems: list[tuple[int, str, str]] = []
    total = 0
    for cell, number in zip(cells, numbers):
        try:
            out.append(read(cell))
        except FieldError as exc:
            out.append(None)
            total += 1
            if len(problems) < MAX_REPORTED_ERRORS:
                problems.append((number, cell, str(exc)))
    if total:
        errors.add(field, problems, total)
    return out


def _bulk_numbers(cells: list[str], width: int) -> np.ndarray | None:
    """Row-major text cells to a (rows, width) float array with numpy, or None when any cell
    needs the schema's own reading.

    numpy reads ASCII text with the schema's number grammar plus underscores between digits
    and infinities; a block holding an underscore, an infinity or any non-ASCII character is
    left to the per-cell reader, which decides.  NaN comes only from the spellings of "nan",
    all of them missing markers.
    """
    flat = "".join(cells)
    if "_" in flat or not flat.isascii():
        return None
    del flat
    try:
        numbers = np.array(cells, dtype=float)
    except ValueError:
        try:
            numbers = np.array([_MISSING_AS_NAN.get(c, c) for c in cells], dtype=float)
        except ValueError:
            return None
    if np.isinf(numbers).any():
        return None
    return numbers.reshape(-1, width)


def _plain_columns(field_cells: dict[str, Sequence[str]], numbers: Sequence[int],
                   errors: _Errors) -> dict[str, np.ndarray]:
    """Column by column: the clean ones in bulk, the others cell by cell (bad cells become NaN)."""
    out = {}
    for field, cells in field_cells.items():
        bulk = _bulk_numbers(list(cells), len(cells))
        if bulk is None:
            values = _cell_by_cell(field, cells, numbers, numeric_parser(field), errors)
            out[field] = np.array([np.nan if v is None else v for v in values], dtype=float)
        else:
            out[field] = bulk[0]
    return out


def _check_magnitude(field: str, values: np.ndarray, rows: Sequence[Sequence[str]], position: int,
                     numbers: Sequence[int], errors: _Errors) -> None:
    """A model input beyond MAX_MAGNITUDE is refused, as the JSON decoder refuses it."""
    too_large = np.flatnonzero(np.abs(values) > MAX_MAGNITUDE)
    if too_large.size:
        message = f"must be at most {MAX_MAGNITUDE:g} in size"
        errors.add(field, [(numbers[i], rows[i][position], message) for i in too_large[:MAX_REPORTED_ERRORS]],
                   int(too_large.size))


def _level_codes(field: str, cells: Sequence[str], numbers: Sequence[int], errors: _Errors) -> np.ndarray:
    """Level codes (-1 missing) for a categorical column: each distinct spelling is read once."""
    lookup: dict[str, int] = {}
    bad = False
    for spelling in set(cells):
        try:
            lookup[spelling] = level_code(field, spelling)
        except FieldError:
            bad = True
    if bad:
        _cell_by_cell(field, cells, numbers, lambda value: level_code(field, value), errors)
        return np.zeros(len(cells), dtype=np.int8)
    return np.fromiter(map(lookup.__getitem__, cells), dtype=np.int8, count=len(cells))


def decode_rows(rows: Sequence[Sequence[str]], numbers: Sequence[int], header: Header,
                input_fields: Iterable[str]) -> Columns:
    """Validated columns from parsed rows; raises InputError (422) listing the bad cells.

    Like the JSON decoder's careful path, the columns hold every numeric field (all are parsed
    anyway) and every categorical; values of `input_fields`, the model's inputs, must also be at
    most MAX_MAGNITUDE in size.
    """
    wanted = set(input_fields)
    count = len(rows)
    errors = _Errors()
    numeric: dict[str, np.ndarray] = {}

    plain_positions = [header.positions[f] for f in PLAIN_FIELDS]
    block = list(map(operator.itemgetter(*plain_positions), rows))
    bulk = _bulk_numbers(list(itertools.chain.from_iterable(block)), len(plain_positions))
    if bulk is not None:
        numeric.update(zip(PLAIN_FIELDS, bulk.T))
    else:                                       # find the column(s) at fault, one at a time
        numeric.update(_plain_columns(dict(zip(PLAIN_FIELDS, zip(*block))), numbers, errors))
    del block, bulk

    for field in FORMATTED_FIELDS:
        cells = [row[header.positions[field]] for row in rows]
        read = numeric_parser(field)
        try:
            numeric[field] = np.array([read(cell) for cell in cells], dtype=float)
        except FieldError:
            values = _cell_by_cell(field, cells, numbers, read, errors)
            numeric[field] = np.array([np.nan if v is None else v for v in values], dtype=float)

    for field in NUMERIC_FIELDS:
        if field in wanted:
            _check_magnitude(field, numeric[field], rows, header.positions[field], numbers, errors)

    codes = {}
    for field in CATEGORICAL_FIELDS:
        cells = [row[header.positions[field]] for row in rows]
        codes[field] = _level_codes(field, cells, numbers, errors)

    errors.raise_if_any()
    return Columns(count, False, NUMERIC_FIELDS, np.column_stack([numeric[f] for f in NUMERIC_FIELDS]),
                   np.column_stack([codes[f] for f in CATEGORICAL_FIELDS]))


def text_of(data: bytes | str) -> str:
    """The body as text: UTF-8, with a leading byte-order mark dropped."""
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _bad_csv(f"The CSV is not valid UTF-8 (byte {exc.start}, line {line}).") from None


def decode_csv(data: bytes | str, input_fields: Iterable[str], max_rows: int) -> Columns:
    """A CSV body (header row naming x0..x99, then 1..max_rows data rows) as validated Columns.

    Raises InputError: malformed CSV for text that is not UTF-8 or not CSV, a header lacking
    fields, or no data rows; too many rows beyond `max_rows`; invalid values listing every bad cell
    (row, field, value, message; the first MAX_REPORTED_ERRORS of them) with `total_errors`
    counting all.
    """
    reader = csv.reader(io.StringIO(text_of(data), newline=""), strict=True)
    header = read_header(reader)
    rows, numbers = read_rows(reader, header, max_rows + 1)
    if not rows:
        raise _bad_csv("The CSV has a header row but no data rows; send one or more rows.")
    if len(rows) > max_rows:
        raise InputError(Problem.TOO_MANY_ROWS,
                         f"The CSV has more than {max_rows} data rows; the limit is {max_rows}.")
    return decode_rows(rows, numbers, header, input_fields)


def encode_csv(scores: Scores) -> str:
    """Scores as CSV: the answer's fields as the header, floats in their shortest round-trip text
    (they read back exactly), business_outcome as 0/1."""
    fields = answer_fields(scores.names)
    position = {name: i for i, name in enumerate(scores.names)}
    floats = np.empty((len(scores.phat), len(fields) - 1))
    for column, name in enumerate(fields[1:]):            # business_outcome comes first
        floats[:, column] = scores.phat if name == "phat" else scores.inputs[:, position[name]]
    lines = [f"{outcome},{row}\n" for outcome, row in zip(scores.outcome.tolist(), _float_rows(floats))]
    return ",".join(fields) + "\n" + "".join(lines)


def _float_rows(floats: np.ndarray) -> list[str]:
    """Each row of a float matrix as comma-separated text, every value in its shortest round-trip
    form (the digits repr() gives, so each cell reads back as the same float).

    msgspec writes the whole matrix as JSON in C with exactly those digits; cutting the brackets
    off each row of that text spares a Python call per value.  It would write NaN or infinity as
    null, so a matrix holding one goes through repr() instead.
    """
    if not len(floats):
        return []
    if np.isfinite(floats).all():
        return msgspec.json.encode(floats.tolist())[2:-2].decode("ascii").split("],[")
    return [repr(row)[1:-1].replace(", ", ",") for row in floats.tolist()]
