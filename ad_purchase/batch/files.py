"""Files read and written in record batches: CSV and Parquet, chosen by the file's extension.

Reading streams a file in pieces of a few megabytes (the CSV codec's reader, pyarrow's Parquet
reader), so memory stays flat whatever the file's size.  Writing goes to a file staged beside
the target that replaces it only when everything is written: a failed run leaves nothing behind.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import math
import os
import queue
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .. import machine_cores
from ..atomic import Staged
from ..codecs.csv_codec import CSV_WRITE_OPTIONS, HeaderError, first_bad_utf8_line, header_names, read_records, \
    unreadable, without_blank_lines
from ..core.decoding import check_fields
from ..schema import FIELDS, PLAIN_FIELDS, InputError, Problem
from .storage import Location, reason

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# CSV pieces: larger ones spread each batch's fixed costs (a reader call, the checks' calls) over
# more rows, and cost memory (a few pieces are held at once) and a longer wait for the first.
CSV_BLOCK_BYTES = 8 << 20
PIECES_IN_HAND = 3               # CSV pieces being parsed or waiting to be handed on
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


_TYPED_PLAIN = frozenset(PLAIN_FIELDS)     # what a typed CSV piece or Parquet statistics can vouch for


@dataclass(frozen=True)
class Part:
    """A share of one file, read on its own (by a Spark task): the CSV lines that start at byte
    offsets in [start, end), or the Parquet row groups `groups`; `rows_before` data rows
    precede it in the file (the numbering of its rows)."""

    start: int = 0
    end: int = 0
    groups: tuple[int, ...] = ()
    rows_before: int = 0


class Source:
    """The records of a CSV or Parquet file, batch by batch; `id_column` (optional) and `extra`
    columns (the training target) are read too.  `inputs`: the fields whose values the caller
    needs (the model's numeric inputs), always read.  `threads`: the cores it may keep busy
    (default: the machine's)."""

    def __init__(self, path: Path | Location, id_column: str | None = None, inputs: Iterable[str] = (),
                 extra: Sequence[str] = (), text_by_default: bool = False, threads: int | None = None) -> None:
        """`text_by_default`: a file whose name does not say Parquet is read as CSV."""
        self.location = path if isinstance(path, Location) else Location.of(path)
        self.path = path if isinstance(path, Location) else Path(path)     # as messages name it
        self.id_column = id_column
        self.inputs = frozenset(inputs)
        self.threads = threads or machine_cores()
        suffix = Path(self.location.path).suffix.lower()
        self.format = ("csv" if FORMATS.get(suffix) != "parquet" else "parquet") \
            if text_by_default else file_format(Path(self.location.path))
        self.also = [*([id_column] if id_column else []), *extra]
        self.columns = [*FIELDS, *self.also]
        self._parquet_file = self._open_parquet() if self.format == "parquet" else None
        self.header_bytes = 0                          # a CSV's header line, with its line break
        self.names = self._names()
        check_fields(self.names, f"{self.path}: the file", self.also)

    def _open_parquet(self) -> pq.ParquetFile:
        # Opened once: a Parquet footer, parsed, can take tens of megabytes.
        try:
            return self.location.parquet(pre_buffer=False, buffer_size=PARQUET_READ_BYTES)
        except pa.ArrowException as exc:
            raise InputError(Problem.MALFORMED_CSV, f"{self.path}: cannot be read as Parquet: {reason(exc)}") \
                from None

    def _names(self) -> list[str]:
        if self._parquet_file is not None:
            return self._parquet_file.schema_arrow.names
        line = self.location.first_line()
        self.header_bytes = len(line)
        try:
            names = header_names(line)
        except HeaderError as exc:
            raise InputError(Problem.MALFORMED_CSV, f"{self.path}: the header row cannot be read as CSV ({exc})"
                             if exc.utf8 else f"{self.path}: line 1 is not valid UTF-8") from None
        if not names:
            raise InputError(Problem.MALFORMED_CSV, f"{self.path}: the file is empty; it needs a header row "
                                                    "naming x0..x99")
        return names

    @property
    def total_rows(self) -> int | None:
        """How many records there are, when the file says so cheaply (Parquet's footer)."""
        return self._parquet_file.metadata.num_rows if self._parquet_file is not None else None

    @property
    def parquet_metadata(self) -> pq.FileMetaData | None:
        return self._parquet_file.metadata if self._parquet_file is not None else None

    def __iter__(self) -> Iterator[Batch]:
        return self.read()

    def read(self, part: Part | None = None) -> Iterator[Batch]:
        """The whole file's records, or those of one part of it."""
        if self.format == "parquet":
            groups = part.groups if part is not None else range(self._parquet_file.metadata.num_row_groups)
            return self._parquet(groups, part.rows_before if part is not None else 0)
        return self._csv(part)

    def _read_piece(self, piece: pa.Buffer) -> tuple[pa.RecordBatch | None, bool, Exception | None]:
        try:
            records, typed = read_records(piece, self.names, self.columns)
        except pa.ArrowInvalid as exc:
            return None, False, exc
        return records, typed, None

    def _parsed(self, pieces: Iterator[pa.Buffer]) -> Iterator[tuple[pa.Buffer, tuple]]:
        """Each piece with what _read_piece makes of it, in order."""
        if self.threads == 1:                      # one core: no thread to hand the work to
            for piece in pieces:
                yield piece, self._read_piece(piece)
            return
        pending: collections.deque = collections.deque()
        # Pieces parsed side by side, a thread per core (pyarrow releases the GIL), and each piece
        # is one batch, with no chunks to join.  At most PIECES_IN_HAND pieces are held.
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.threads, PIECES_IN_HAND)) as pool:
            for piece in itertools.chain(pieces, [None]):
                if piece is not None:
                    pending.append((piece, pool.submit(self._read_piece, piece)))
                    if len(pending) < PIECES_IN_HAND:
                        continue
                while pending and (piece is None or len(pending) >= PIECES_IN_HAND):
                    data, future = pending.popleft()
                    yield data, future.result()

    def _csv(self, part: Part | None) -> Iterator[Batch]:
        done = part.rows_before if part is not None else 0
        with self.location.open() as handle:
            for data, (records, typed, error) in self._parsed(_pieces(handle, self.header_bytes, part)):
                if error is not None:
                    raise InputError(Problem.MALFORMED_CSV, self._csv_problem(data, error, done))
                if part is not None and records.num_rows != _lines_in(data):
                    # A part's rows were numbered by counting line breaks (Part.rows_before).
                    raise InputError(Problem.MALFORMED_CSV, f"{self.path}: near data row {done + 1}, a quoted "
                                                            "value holds a line break, which a share of the file "
                                                            "cannot be cut around: score this file with the "
                                                            "local engine")
                rows = np.arange(done + 1, done + 1 + records.num_rows, dtype=np.int64)
                done += records.num_rows
                # A blank line is skipped, but counted, so that a data row's number stays its
                # line in the file less the header.
                records, rows = without_blank_lines(data, records, rows)
                if records.num_rows:
                    yield Batch(records, rows, _TYPED_PLAIN if typed else frozenset())

    def _csv_problem(self, piece: pa.Buffer, exc: pa.ArrowInvalid, done: int) -> str:
        """Why a piece cannot be read, with the data row where the reader says it fails."""
        text = str(exc)
        if "UTF8" in text or "UTF-8" in text:
            return f"{self.path}: line {first_bad_utf8_line(self.location.lines())} is not valid UTF-8"
        row, why = unreadable(piece, exc, self.names, self.columns)
        where = f"data row {done + row}" if row is not None else f"after data row {done}"
        return f"{self.path}: {where} cannot be read as CSV: {why}"

    def _parquet(self, groups: Iterable[int], done: int) -> Iterator[Batch]:
        """Row groups in runs that need the same columns: a plain field whose column statistics
        prove it valid in a row group is not read there at all (see _vouched_by_statistics)."""
        metadata = self._parquet_file.metadata
        runs: list[tuple[frozenset[str], list[int]]] = []
        for group in groups:
            vouched = _vouched_by_statistics(self._parquet_file.schema_arrow, metadata.row_group(group)) - self.inputs
            if runs and runs[-1][0] == vouched:
                runs[-1][1].append(group)
            else:
                runs.append((vouched, [group]))
        for vouched, groups in runs:
            columns = [name for name in self.columns if name not in vouched or name == self.id_column]
            batches = self._parquet_file.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups,
                                                      columns=columns, use_threads=self.threads > 1)
            while True:
                try:
                    records = next(batches)
                except StopIteration:
                    break
                except pa.ArrowException as exc:            # a damaged page, say
                    raise InputError(Problem.MALFORMED_CSV, f"{self.path}: after data row {done}, the file "
                                                            f"cannot be read on: {reason(exc)}") from None
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


def _pieces(handle, header_bytes: int, part: Part | None = None, size: int | None = None) -> Iterator[pa.Buffer]:
    """The records of a CSV (the header line left out), or of one part of it, in pieces of about
    `size` bytes, each cut after a line break that is not inside a quoted value (an even number
    of quotes before it).  Each piece is read on its own (a record cut off at its end is read
    again with the next), so memory holds a few pieces whatever the file's size."""
    size = size or CSV_BLOCK_BYTES
    quotes = np.empty(size, dtype=bool)                    # scratch for _last_cut
    end_of_file = _size(handle)
    start, stop = header_bytes, end_of_file
    if part is not None:                                   # the lines that start within the part
        start, stop = _line_start(handle, max(part.start, header_bytes)), _line_start(handle, part.end)
    while start < stop:
        buffer = bytearray(min(size, stop - start))
        length = _read_at(handle, buffer, start)
        while True:
            if start + length >= stop:
                cut = length - 1
            else:
                if len(quotes) < length:
                    quotes = np.empty(length, dtype=bool)
                cut = _last_cut(buffer, length, quotes)
            if cut != -1:
                break
            # One record longer than the piece: read on into a larger buffer.
            buffer.extend(bytes(min(size, stop - start - length)))
            length += _read_at(handle, memoryview(buffer)[length:], start + length)
        yield pa.py_buffer(memoryview(buffer)[:cut + 1])
        start += cut + 1


def _size(handle) -> int:
    return handle.size() if hasattr(handle, "size") else os.fstat(handle.fileno()).st_size


def _read_at(handle, into, offset: int) -> int:
    """Fill `into` from `offset` (less at the end of the file); the bytes read."""
    handle.seek(offset)
    view, done = memoryview(into), 0
    while done < len(view):
        got = handle.readinto(view[done:])
        if not got:
            break
        done += got
    return done


def _line_start(handle, offset: int, step: int = 1 << 16) -> int:
    """The first offset at or after `offset` where a line starts (the end of the file if none)."""
    end_of_file = _size(handle)
    if offset <= 0 or offset >= end_of_file:
        return min(max(offset, 0), end_of_file)
    scratch = bytearray(step)
    at = offset - 1                                        # a line starts after a line break
    while at < end_of_file:
        length = _read_at(handle, scratch, at)
        found = scratch.find(b"\n", 0, length)
        if found != -1:
            return at + found + 1
        at += length
    return end_of_file


def lines_starting_within(handle, start: int, end: int, step: int = 1 << 22) -> int:
    """How many lines start at offsets in [start, end) (start > 0): the line breaks in
    [start - 1, end - 1).  A part's row count, without parsing it."""
    end = min(end, _size(handle))
    lines, at = 0, start - 1
    scratch = bytearray(step)
    while at < end - 1:
        length = _read_at(handle, memoryview(scratch)[:min(step, end - 1 - at)], at)
        if not length:
            break
        lines += _lines_in(memoryview(scratch)[:length], ends=False)
        at += length
    return lines


def _lines_in(data, ends: bool = True) -> int:
    """Line breaks in `data`, plus one for a last line without one when `ends`."""
    codes = np.frombuffer(data, dtype=np.uint8)
    breaks = int(np.count_nonzero(codes == ord("\n")))
    return breaks + (1 if ends and len(codes) and codes[-1] != ord("\n") else 0)


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


class Sink:
    """Record batches written to a CSV or Parquet file that appears only when `commit` is called:
    written under a name of its own beside the target, renamed at the end."""

    def __init__(self, path: Path | Location) -> None:
        self.location = path if isinstance(path, Location) else Location.of(path)
        self.format = file_format(Path(self.location.path))
        if self.location.local:
            self._staged = Staged(self.location.path)
            self.temporary = Location.of(str(self._staged.path))
        else:                                          # another file system: no temporary files there
            self._staged = None
            self.temporary = self.location.beside(f".{Path(self.location.path).name}.{uuid.uuid4().hex}.partial")
        self._writer = None
        self.rows = 0

    def write(self, records: pa.RecordBatch) -> None:
        if self._writer is None:
            target = self.temporary.path if self.temporary.local else self.temporary.output_stream()
            if self.format == "parquet":
                self._writer = pq.ParquetWriter(target, records.schema, compression="zstd")
            else:
                self._writer = pacsv.CSVWriter(target, records.schema, write_options=CSV_WRITE_OPTIONS)
        self._writer.write_batch(records)
        self.rows += records.num_rows

    def write_empty(self, schema: pa.Schema) -> None:
        """A file with the columns and no rows (nothing was set aside, say)."""
        if self._writer is None:
            self.write(pa.RecordBatch.from_pylist([], schema=schema))

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._staged is not None:
            self._staged.commit()
        else:
            self.temporary.move_to(self.location)

    def discard(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            if self._staged is not None:
                self._staged.discard()
            else:
                self.temporary.delete()


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
