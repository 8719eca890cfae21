"""Files read and written in record batches: CSV and Parquet, chosen by the file's extension.

Reading streams a file in blocks of a few megabytes (pyarrow's CSV and Parquet readers), so
memory stays flat whatever the file's size.  Writing goes to a temporary file beside the target
that replaces it only when everything is written: a failed run leaves nothing behind.
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import itertools
import math
import os
import queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..codecs.arrow_codec import READ_AS_MISSING
from ..schema import CATEGORICAL_FIELDS, FIELDS, MAX_MAGNITUDE, PLAIN_FIELDS, InputError, Problem

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# CSV pieces: larger ones spread each batch's fixed costs (a reader call, the checks' calls) over
# more rows, and cost memory (a few pieces are held at once) and a longer wait for the first.
CSV_BLOCK_BYTES = 8 << 20
PIECES_IN_HAND = 3               # CSV pieces being parsed or waiting to be handed on
# A piece is parsed in blocks of this size where its records allow: a block's cells then stay in
# the CPU's cache while the reader converts them, column by column.
PARSE_BLOCK_BYTES = 1 << 20
PARQUET_BATCH_ROWS = 16_384
# Column chunks read in slices of this size, not whole (pre_buffer off): memory then follows the
# number of columns, not the size of a row group.
PARQUET_READ_BYTES = 64 << 10


def file_format(path: Path) -> str:
    try:
        return FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise InputError(Problem.BAD_BODY, f"{path}: the extension must be one of {', '.join(FORMATS)}") from None


@dataclass
class Batch:
    """Records of a file with their data-row numbers (1 = the first record after the header).
    `vouched`: fields the reader has proven valid in every row (see ArrowDecoder.decode)."""

    records: pa.RecordBatch
    rows: np.ndarray
    vouched: frozenset[str] = frozenset()


_TYPED_PLAIN = frozenset(PLAIN_FIELDS)


class Source:
    """The records of a CSV or Parquet file, batch by batch; `id_column` (optional) is read too.
    `inputs`: the fields whose values the caller needs (the model's numeric inputs), always read."""

    def __init__(self, path: Path, id_column: str | None = None, inputs: Iterable[str] = ()) -> None:
        self.path, self.id_column = Path(path), id_column
        self.inputs = frozenset(inputs)
        self.format = file_format(self.path)
        self.columns = [*FIELDS, *([id_column] if id_column else [])]
        self._parquet_file = self._open_parquet() if self.format == "parquet" else None
        self.names = self._names()
        check_columns(self.path, self.names, id_column)

    def _open_parquet(self) -> pq.ParquetFile:
        # Opened once: a Parquet footer, parsed, can take tens of megabytes.
        try:
            return pq.ParquetFile(self.path, pre_buffer=False, buffer_size=PARQUET_READ_BYTES)
        except pa.ArrowException as exc:
            raise InputError(Problem.MALFORMED_CSV, f"{self.path}: cannot be read as Parquet: {_first_line(exc)}") \
                from None

    def _names(self) -> list[str]:
        if self._parquet_file is not None:
            return self._parquet_file.schema_arrow.names
        with open(self.path, "rb") as handle:
            line = handle.readline()
        try:
            header = next(csv.reader([line.decode("utf-8-sig")]), None)
        except UnicodeDecodeError:
            raise InputError(Problem.MALFORMED_CSV, f"{self.path}: line 1 is not valid UTF-8") from None
        except csv.Error as exc:
            raise InputError(Problem.MALFORMED_CSV, f"{self.path}: the header row cannot be read ({exc})") from None
        if header is None:
            raise InputError(Problem.MALFORMED_CSV, f"{self.path}: the file is empty; it needs a header row "
                                                    "naming x0..x99")
        return [name.strip() for name in header]

    @property
    def total_rows(self) -> int | None:
        """How many records there are, when the file says so cheaply (Parquet's footer)."""
        return self._parquet_file.metadata.num_rows if self._parquet_file is not None else None

    def __iter__(self) -> Iterator[Batch]:
        return self._parquet() if self.format == "parquet" else self._csv()

    def _parse(self, piece: pa.Buffer, block_size: int, typed: bool) -> pa.RecordBatch:
        """One piece of the file (whole records, no header) parsed by pyarrow's reader into one
        batch.  Typed: the plain numeric fields arrive as float64, converted by the reader; else
        every field arrives as text.  Categoricals arrive dictionary-encoded: each distinct
        spelling is stored once rather than once per row."""
        types = {name: pa.string() for name in self.columns}
        types.update((name, pa.dictionary(pa.int32(), pa.string())) for name in CATEGORICAL_FIELDS)
        if typed:
            types.update((name, pa.float64()) for name in PLAIN_FIELDS)
        table = pacsv.read_csv(
            piece,
            # One thread: pieces are parsed side by side instead (see _csv).
            read_options=pacsv.ReadOptions(column_names=self.names, block_size=block_size, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=self.columns,
                                                 null_values=READ_AS_MISSING, strings_can_be_null=True,
                                                 quoted_strings_can_be_null=True))
        if not table.num_rows:
            return pa.RecordBatch.from_pylist([], schema=table.schema)
        return table.combine_chunks().to_batches()[0]     # one chunk per block, joined into one batch

    def _read_piece(self, piece: pa.Buffer) -> tuple[pa.RecordBatch, bool, Exception | None]:
        """Typed where the piece proves clean (a cell the reader cannot convert, or a value whose
        text the schema must see, such as NaN, an infinity or beyond 1e300, makes it text).
        Parsed in small blocks first, and as one block when that fails: the reader refuses a
        record longer than a block."""
        whole = piece.size + 1
        error = None
        for block_size in [PARSE_BLOCK_BYTES, whole] if whole > PARSE_BLOCK_BYTES else [whole]:
            for typed in (True, False):
                try:
                    records = self._parse(piece, block_size, typed)
                except pa.ArrowInvalid as exc:
                    error = exc
                    continue
                if not typed or _proven_clean(records):
                    return records, typed, None
        return None, False, error

    def _csv(self) -> Iterator[Batch]:
        done = 0
        pending: collections.deque = collections.deque()
        # Two pieces parsed at a time by two threads (pyarrow releases the GIL): both cores parse,
        # and each piece is one batch, with no chunks to join.  At most PIECES_IN_HAND pieces
        # are held, fewer than _pieces' buffers.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for piece in itertools.chain(_pieces(self.path, CSV_BLOCK_BYTES, PIECES_IN_HAND + 1), [None]):
                if piece is not None:
                    pending.append((piece, pool.submit(self._read_piece, piece)))
                    if len(pending) < PIECES_IN_HAND:
                        continue
                while pending and (piece is None or len(pending) >= PIECES_IN_HAND):
                    data, future = pending.popleft()
                    records, typed, error = future.result()
                    if error is not None:
                        raise InputError(Problem.MALFORMED_CSV, self._csv_problem(data, error, done))
                    rows = np.arange(done + 1, done + 1 + records.num_rows, dtype=np.int64)
                    done += records.num_rows
                    # A blank line is a record of nulls only: skipped, but counted, so that a data
                    # row's number stays its line in the file less the header.
                    blank = _all_null(records)
                    if blank is not None:
                        records, rows = records.filter(pc.invert(blank)), rows[~np.asarray(blank)]
                    if records.num_rows:
                        yield Batch(records, rows, _TYPED_PLAIN if typed else frozenset())

    def _csv_problem(self, piece: pa.Buffer, exc: pa.ArrowInvalid, done: int) -> str:
        """Why a piece cannot be read, with the data row where the reader says it fails."""
        text = str(exc)
        if "UTF8" in text or "UTF-8" in text:
            return f"{self.path}: line {first_bad_utf8_line(self.path)} is not valid UTF-8"
        failed = []

        def note(row) -> str:                 # the reader counts the piece's records from 1
            failed.append(row.number)
            return "error"
        try:
            pacsv.read_csv(piece, read_options=pacsv.ReadOptions(column_names=self.names, use_threads=False),
                           parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False,
                                                            invalid_row_handler=note),
                           convert_options=pacsv.ConvertOptions(include_columns=self.columns,
                                                                column_types={n: pa.string() for n in self.columns}))
        except pa.ArrowInvalid:
            pass
        where = f"data row {done + failed[0]}" if failed and failed[0] is not None else f"after data row {done}"
        return f"{self.path}: {where} cannot be read as CSV: {_first_line(exc)}"

    def _parquet(self) -> Iterator[Batch]:
        """Row groups in runs that need the same columns: a plain field whose column statistics
        prove it valid in a row group is not read there at all (see _vouched_by_statistics)."""
        done = 0
        metadata = self._parquet_file.metadata
        runs: list[tuple[frozenset[str], list[int]]] = []
        for group in range(metadata.num_row_groups):
            vouched = _vouched_by_statistics(self._parquet_file.schema_arrow, metadata.row_group(group)) - self.inputs
            if runs and runs[-1][0] == vouched:
                runs[-1][1].append(group)
            else:
                runs.append((vouched, [group]))
        for vouched, groups in runs:
            columns = [name for name in self.columns if name not in vouched or name == self.id_column]
            batches = self._parquet_file.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups,
                                                      columns=columns)
            while True:
                try:
                    records = next(batches)
                except StopIteration:
                    break
                except pa.ArrowException as exc:            # a damaged page, say
                    raise InputError(Problem.MALFORMED_CSV, f"{self.path}: after data row {done}, the file "
                                                            f"cannot be read on: {_first_line(exc)}") from None
                rows = np.arange(done + 1, done + 1 + records.num_rows, dtype=np.int64)
                done += records.num_rows
                if records.num_rows:
                    yield Batch(records, rows, vouched)


def _vouched_by_statistics(schema: pa.Schema, row_group) -> frozenset[str]:
    """Plain numeric fields that hold only valid values in this row group, proven without
    reading them: an integer column (always finite), or a floating-point column whose
    statistics give a finite minimum and maximum (NaN, read as missing, is left out of them).
    Leaving such columns unread keeps memory to the columns the model needs."""
    vouched = []
    for index in range(row_group.num_columns):
        chunk = row_group.column(index)
        name = chunk.path_in_schema
        if name not in _TYPED_PLAIN:
            continue
        kind = schema.field(name).type
        if pa.types.is_integer(kind):
            vouched.append(name)
        elif pa.types.is_floating(kind):
            stats = chunk.statistics
            if stats is not None and stats.has_min_max and math.isfinite(stats.min) and math.isfinite(stats.max):
                vouched.append(name)
            elif stats is not None and stats.has_null_count and stats.null_count == row_group.num_rows:
                vouched.append(name)                # only nulls: all missing
    return frozenset(vouched)


def check_columns(path, names: list[str], id_column: str | None) -> None:
    """The file names every field once, and the id column if one is asked for."""
    seen, repeated = set(), set()
    for name in names:
        (repeated if name in seen else seen).add(name)
    repeated &= {*FIELDS, id_column}
    if repeated:
        raise InputError(Problem.MALFORMED_CSV, f"{path}: the header names these columns more than once: "
                                                f"{', '.join(sorted(repeated))}")
    missing = [name for name in (*FIELDS, *([id_column] if id_column else [])) if name not in seen]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InputError(Problem.MALFORMED_CSV, f"{path}: the file lacks {len(missing)} required column(s): "
                                                f"{', '.join(missing[:10])}{more}")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _proven_clean(records: pa.RecordBatch | pa.Table) -> bool:
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


def _all_null(records: pa.RecordBatch):
    """A boolean mask of the records whose every column is null, or None when there are none."""
    blank = None
    for column in records.columns:
        nulls = pc.is_null(column)
        blank = nulls if blank is None else pc.and_(blank, nulls)
        if not pc.any(blank).as_py():
            return None
    return blank


def _pieces(path: Path, size: int, slots: int) -> Iterator[pa.Buffer]:
    """The records of a CSV (the header line left out) in pieces of about `size` bytes, each cut
    after a line break that is not inside a quoted value (an even number of quotes before it).
    Each piece is read on its own (a record cut off at its end is read again with the next), so
    memory holds a few pieces whatever the file's size.

    Pieces are read into `slots` buffers in turn, so a piece's bytes are overwritten `slots`
    pieces later: the caller may hold at most `slots - 1` earlier pieces (parsing copies what it
    keeps).  Reusing buffers avoids a fresh allocation, and its page faults, for every piece."""
    buffers = [bytearray(size) for _ in range(slots)]
    quotes = np.empty(size, dtype=bool)                    # scratch for _last_cut
    with open(path, "rb") as handle:
        start = len(handle.readline())                     # the header, read by Source._names
        end_of_file = os.fstat(handle.fileno()).st_size
        for turn in itertools.count():
            if start >= end_of_file:
                return
            buffer = buffers[turn % slots]
            length = os.preadv(handle.fileno(), [buffer], start)
            while True:
                if start + length >= end_of_file:
                    cut = length - 1
                else:
                    if len(quotes) < length:
                        quotes = np.empty(length, dtype=bool)
                    cut = _last_cut(buffer, length, quotes)
                if cut != -1:
                    break
                # One record longer than the buffer: a larger one takes this slot from now on.
                larger = bytearray(len(buffer) + size)
                larger[:length] = memoryview(buffer)[:length]
                buffer = buffers[turn % slots] = larger
                length += os.preadv(handle.fileno(), [memoryview(buffer)[length:]], start + length)
            yield pa.py_buffer(memoryview(buffer)[:cut + 1])
            start += cut + 1


def _last_cut(data: bytearray, length: int, quotes: np.ndarray) -> int:
    """The last line break of data[:length] outside quoted values (-1 if none); `quotes` is
    scratch space of at least `length` booleans."""
    cut = data.rfind(b"\n", 0, length)
    if data.find(b'"', 0, cut) == -1:          # no quoted values before it: nothing to count
        return cut
    # Quotes counted by numpy's vectorised compare (bytes.count goes a byte at a time).
    marks = np.equal(np.frombuffer(data, dtype=np.uint8, count=length), ord('"'), out=quotes[:length])
    while cut != -1 and np.count_nonzero(marks[:cut]) % 2:    # an odd count before it: inside quotes
        cut = data.rfind(b"\n", 0, cut)
    return cut


def first_bad_utf8_line(path: Path) -> int:
    """The 1-based number of the first line that is not valid UTF-8 (0 if none is)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


class Sink:
    """Record batches written to a CSV or Parquet file that appears only when `commit` is called."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.format = file_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, self.temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial")
        os.close(handle)
        os.chmod(self.temporary, 0o666 & ~_umask())     # mkstemp's 0600 would outlive the rename
        self._writer = None
        self.rows = 0

    def write(self, records: pa.RecordBatch) -> None:
        if self._writer is None:
            if self.format == "parquet":
                self._writer = pq.ParquetWriter(self.temporary, records.schema, compression="zstd")
            elif CsvTextWriter.writes(records.schema):
                self._writer = CsvTextWriter(self.temporary, records.schema)
            else:
                self._writer = pacsv.CSVWriter(self.temporary, records.schema,
                                               write_options=pacsv.WriteOptions(quoting_header="none"))
        self._writer.write_batch(records)
        self.rows += records.num_rows

    def write_empty(self, schema: pa.Schema) -> None:
        """A file with the columns and no rows (nothing was set aside, say)."""
        if self._writer is None:
            self.write(pa.RecordBatch.from_pylist([], schema=schema))

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            Path(self.temporary).unlink(missing_ok=True)


class CsvTextWriter:
    """Record batches as CSV text, byte for byte what pyarrow's CSV writer writes (the header's
    names unquoted, text always quoted, nulls empty), for numbers and text only.

    The difference is in columns whose every value is a single digit, such as the 0/1
    indicators of an answer: a run of them is laid out by numpy as one block of fixed width,
    instead of formatting each value on its own."""

    def __init__(self, path: str, schema: pa.Schema) -> None:
        self._file = open(path, "wb")
        self._file.write((",".join(schema.names) + "\n").encode())

    @staticmethod
    def writes(schema: pa.Schema) -> bool:
        return all(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
                   for kind in schema.types)

    def write_batch(self, records: pa.RecordBatch) -> None:
        if not records.num_rows:
            return
        parts, digits = [], []
        for column in records.columns:
            if _single_digits(column):
                digits.append(column)
                continue
            if digits:
                parts.append(_digit_block(digits))
                digits = []
            parts.append(_as_text(column))
        if digits:
            parts.append(_digit_block(digits))
        lines = pc.binary_join_element_wise(*parts, ",", null_handling="replace", null_replacement="")
        lines = pc.binary_join_element_wise(lines, "\n", "")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
        self._file.write(memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]])

    def close(self) -> None:
        self._file.close()


def _single_digits(column: pa.Array) -> bool:
    if not pa.types.is_integer(column.type) or column.null_count:
        return False
    least, most = pc.min_max(column).values()
    return least.as_py() >= 0 and most.as_py() <= 9


def _digit_block(columns: list[pa.Array]) -> pa.Array:
    """Columns of single digits as one text column, "d,d,...,d" in every row: a byte matrix
    seen as strings of equal length, built without formatting a value."""
    rows, width = len(columns[0]), 2 * len(columns) - 1
    text = np.full((rows, width), ord(","), dtype=np.uint8)
    for place, column in enumerate(columns):
        text[:, 2 * place] = column.to_numpy(zero_copy_only=False) + ord("0")
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(text))


def _as_text(column: pa.Array) -> pa.Array:
    """A column's values as the CSV writer writes them: numbers as Arrow formats them, text in
    quotes with its quotes doubled; nulls stay null (written empty)."""
    if pa.types.is_string(column.type):
        return pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
    return pc.cast(column, pa.string())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_ahead(batches: Iterator, depth: int = 2) -> Iterator:
    """The same batches, read by a thread of their own up to `depth` ahead: pyarrow parses with
    the GIL released, so reading the next batch overlaps working on this one."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def offer(item) -> bool:
        """Queue `item` unless the consumer has stopped listening (then never block on a full queue)."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as exc:            # handed to the consumer, raised there
            offer(exc)

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class WriteBehind:
    """Writes record batches to `sink` in a thread of its own (pyarrow's writers run with the GIL
    released), at most `depth` behind; `close` waits for them and raises what writing raised."""

    def __init__(self, sink: "Sink", depth: int = 2) -> None:
        self.sink = sink
        self._slots: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (records := self._slots.get()) is not None:
            if self._error is None:
                try:
                    self.sink.write(records)
                except BaseException as exc:
                    self._error = exc

    def write(self, records: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
        self._slots.put(records)

    def close(self) -> None:
        self._slots.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
