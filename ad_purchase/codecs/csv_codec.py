"""CSV text to Arrow record batches for the decoding core, and record batches back to CSV text.

One reader serves a text/csv request and a CSV file alike: pyarrow's CSV reader, which parses in
C++ and can convert the plain numeric fields as it goes.  A piece of CSV is first read with
those fields typed as float64; where that fails, or a value comes out that the schema must see
as text (NaN, an infinity, anything beyond MAX_MAGNITUDE), the piece is read again with every
field as text, and the decoding core reads each cell by the schema's rules.  Categoricals arrive
dictionary-encoded: each distinct spelling is read once.

Rows are numbered as data rows: the first record after the header is row 1.  A blank line is a
record of nulls only: skipped, but counted, so a row's number stays its line less the header's.

One writer, pyarrow's, serves the API's CSV answer and score.py's CSV files: both write the same text.
"""
from __future__ import annotations

import csv
import io
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..core.decoding import Decoder, check_fields
from ..model import Scores
from ..schema import CATEGORICAL_FIELDS, FIELDS, MAX_MAGNITUDE, PLAIN_FIELDS, Columns, InputError, Problem, \
    missing_spellings
from .arrow_codec import encode

# Text the reader hands over as null: every case variant of the missing markers.  Spellings with
# spaces around them are not listed; the core reads those.
READ_AS_MISSING = missing_spellings()
# A piece is parsed in blocks of this size where its records allow: a block's cells then stay in
# the CPU's cache while the reader converts them, column by column.
PARSE_BLOCK_BYTES = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"


def _bad_csv(detail: str) -> InputError:
    return InputError(Problem.MALFORMED_CSV, detail)


class HeaderError(ValueError):
    """A header line that cannot be read: not UTF-8 (`utf8` false), or not CSV (the message says why)."""

    def __init__(self, reason: str, utf8: bool = True) -> None:
        super().__init__(reason)
        self.utf8 = utf8


def header_names(line: bytes) -> list[str]:
    """The names in a header line (a byte-order mark and spaces around names dropped)."""
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HeaderError("not valid UTF-8", utf8=False) from None
    try:
        names = next(csv.reader([text], strict=True), None)
    except csv.Error as exc:
        raise HeaderError(str(exc)) from None
    return [name.strip() for name in names or []]


def _parse(data, names: Sequence[str], columns: Sequence[str], block_size: int, typed: bool) -> pa.RecordBatch:
    """Records (no header) parsed into one batch; typed: the plain numeric fields as float64."""
    types = {name: pa.string() for name in columns}
    types.update((name, pa.dictionary(pa.int32(), pa.string())) for name in CATEGORICAL_FIELDS)
    if typed:
        types.update((name, pa.float64()) for name in PLAIN_FIELDS)
    table = pacsv.read_csv(
        data,
        # One thread: a file's pieces are parsed side by side instead.
        read_options=pacsv.ReadOptions(column_names=list(names), block_size=block_size, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(columns),
                                             null_values=READ_AS_MISSING, strings_can_be_null=True,
                                             quoted_strings_can_be_null=True))
    if not table.num_rows:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return table.combine_chunks().to_batches()[0]     # one chunk per block, joined into one batch


def read_records(data, names: Sequence[str], columns: Sequence[str]) -> tuple[pa.RecordBatch, bool]:
    """Records of a piece of CSV (no header) and whether its plain fields came typed.  Parsed in
    small blocks first, and as one block when that fails (the reader refuses a record longer than
    a block).  Raises pa.ArrowInvalid when the piece is not CSV (see `unreadable`)."""
    size = data.size if isinstance(data, pa.Buffer) else len(data)
    whole = size + 1
    error = None
    for block_size in [PARSE_BLOCK_BYTES, whole] if whole > PARSE_BLOCK_BYTES else [whole]:
        for typed in (True, False):
            try:
                records = _parse(data, names, columns, block_size, typed)
            except pa.ArrowInvalid as exc:
                error = exc
                continue
            if not typed or _proven_clean(records):
                return records, typed
    raise error


def _proven_clean(records: pa.RecordBatch) -> bool:
    """Whether every typed plain number is finite and at most MAX_MAGNITUDE in size: then the
    schema reads each cell's text as the same number (or as missing, where the reader gave null)."""
    for name in PLAIN_FIELDS:
        column = records.column(name)
        if not len(column):
            continue
        # The values buffer seen in place (null slots hold 0.0 or another number, which can only
        # make the answer "not proven"); a NaN makes min or max NaN and the comparison false.
        values = np.frombuffer(column.buffers()[1], dtype=np.float64, count=len(column), offset=column.offset * 8)
        if not (-MAX_MAGNITUDE <= values.min() and values.max() <= MAX_MAGNITUDE):
            return False
    return True


def unreadable(data, error: pa.ArrowInvalid, names: Sequence[str], columns: Sequence[str]) -> tuple[int | None, str]:
    """Why a piece cannot be read: the piece's first failing record (1-based, None when the
    reader cannot say) and the reason in words."""
    failed = []

    def note(row) -> str:
        failed.append(row)
        return "error"
    try:
        pacsv.read_csv(data, read_options=pacsv.ReadOptions(column_names=list(names), use_threads=False),
                       parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False,
                                                        invalid_row_handler=note),
                       convert_options=pacsv.ConvertOptions(include_columns=list(columns),
                                                            column_types={n: pa.string() for n in columns}))
    except pa.ArrowInvalid:
        pass
    if failed and failed[0].number is not None:
        row = failed[0]
        return row.number, f"it has {row.actual_columns} cells; the header has {row.expected_columns}"
    text = str(error).strip()
    return None, text.splitlines()[0][:300] if text else type(error).__name__


def first_bad_utf8_line(lines: Iterable[bytes]) -> int:
    """The 1-based number of the first line that is not valid UTF-8 (0 if none is); `lines` as a
    binary file or bytes.splitlines(keepends=True) gives them."""
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return 0


def _all_null(records: pa.RecordBatch) -> np.ndarray | None:
    """A mask of the records whose every column is null, or None when none is."""
    nulls = None
    for column in records.columns:
        column_nulls = pc.is_null(column)
        nulls = column_nulls if nulls is None else pc.and_(nulls, column_nulls)
        if not pc.any(nulls).as_py():
            return None
    return np.asarray(nulls)


def _empty_lines(data) -> np.ndarray:
    """Whether each record of CSV text is an empty line: records end at line breaks outside
    quoted values (an even number of quotes before them)."""
    text = np.frombuffer(data, dtype=np.uint8)
    outside = np.bitwise_xor.accumulate((text == ord('"')).view(np.uint8)) == 0
    ends = np.flatnonzero((text == ord("\n")) & outside)
    if not len(ends) or ends[-1] != len(text) - 1:
        ends = np.append(ends, len(text))                # a last record without a line break
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
    carriage = (lengths > 0) & (text[np.maximum(ends - 1, 0)] == ord("\r"))
    return lengths - carriage == 0


def without_blank_lines(data, records: pa.RecordBatch, rows: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """The records of `data` less its blank lines, which the reader gives as records of nulls;
    a record of empty cells (",,,") is a record of missing values and stays."""
    nulls = _all_null(records)
    if nulls is None:
        return records, rows
    blank = _empty_lines(data)
    blank = nulls & blank if len(blank) == len(nulls) else nulls    # cannot tell: taken as blank
    return records.filter(pa.array(~blank)), rows[~blank]


# ---------------------------------------------------------------------------- a request body

def decode_csv(data: bytes | str, decoder: Decoder, max_rows: int, id_field: str | None = None) -> Columns:
    """A text/csv body (a header naming x0..x99 in any order, then 1..max_rows records) as checked
    Columns; extra columns are ignored, but for `id_field`, read as the records' ids."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    start, lines = 0, 0
    while True:                                   # blank lines before the header are skipped
        end = data.find(b"\n", start)
        line = data[start:] if end == -1 else data[start:end + 1]
        lines += 1
        if line.strip() or end == -1:
            break
        start = end + 1
    if not line.strip():
        raise _bad_csv("The CSV is empty; send a header row naming x0..x99 and one or more data rows.")
    try:
        names = header_names(line)
    except HeaderError as exc:
        raise _bad_csv(f"The header row cannot be read as CSV: {exc}." if exc.utf8 else
                       f"The CSV is not valid UTF-8 (line {lines}).") from None
    check_fields(names, "The header row")
    body = data[start + len(line):]
    if not body.strip():
        raise _bad_csv("The CSV has a header row but no data rows; send one or more rows.")
    wanted = [*FIELDS, *([id_field] if id_field and id_field in names and id_field not in FIELDS else [])]
    try:
        records, _ = read_records(pa.py_buffer(body), names, wanted)
    except pa.ArrowInvalid as exc:
        line = first_bad_utf8_line(data.splitlines(keepends=True))
        if line:
            raise _bad_csv(f"The CSV is not valid UTF-8 (line {line}).") from None
        row, why = unreadable(pa.py_buffer(body), exc, names, wanted)
        where = f"Row {row} (line {row + lines})" if row is not None else "A row"
        raise _bad_csv(f"{where} cannot be read as CSV: {why}.") from None
    records, rows = without_blank_lines(body, records, np.arange(1, records.num_rows + 1))
    if not records.num_rows:
        raise _bad_csv("The CSV has a header row but no data rows; send one or more rows.")
    if records.num_rows > max_rows:
        raise InputError(Problem.TOO_MANY_ROWS, f"The CSV has {records.num_rows} data rows; the limit is {max_rows}.")
    ids = records.column(id_field).to_pylist() if len(wanted) > len(FIELDS) else None
    decoded = decoder.decode({name: records.column(name) for name in FIELDS}, records.num_rows, ids=ids)
    decoded.refuse(rows)
    return decoded.columns


# ---------------------------------------------------------------------------- CSV text

CSV_WRITE_OPTIONS = pacsv.WriteOptions(quoting_header="none")   # names as they are, text quoted


def encode_csv(scores: Scores, contributions: np.ndarray | None = None) -> bytes:
    """Scores as the CSV answer: the answer's fields as the header (then the contributions, when
    given, as contribution_<input> columns), one line per row, written by the writer score.py's
    CSV files are written with, so both give the same text."""
    out = io.BytesIO()
    pacsv.write_csv(encode(scores, contributions=contributions, for_csv=True), out, write_options=CSV_WRITE_OPTIONS)
    return out.getvalue()
