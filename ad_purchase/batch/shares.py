"""An input cut into shares, one per Spark task, planned on the driver from what the files say
about themselves (sizes, CSV headers, Parquet footers) without reading their rows.

A CSV share is a byte range: it holds the lines that start within it (as Hadoop's line reader
cuts a text file), so no line is read twice or lost.  A Parquet share is a run of whole row
groups.  Rows are numbered per file: a Parquet share knows its first row from the footer; a CSV
share learns it from a count of line breaks (`count_lines`, run before scoring when rows need
numbers at all: on the driver for a local file, else by tasks next to the data).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .files import Part, Source, lines_starting_within
from .storage import Location

# Shares of about a core's part of the input, halved (a core that finishes early takes another
# share, so cores idle for at most about half a share at the end), within these bounds:
SHARES_PER_CORE = 2
MIN_SHARE_BYTES = 4 << 20           # smaller shares cost more to schedule than to read
MAX_SHARE_BYTES = 128 << 20         # Spark's own largest file split
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Share:
    """What one task reads: part of one file.  `rows_before_file`: data rows of the files
    before this one (the input's rows are numbered across its files, in name order); None
    while unknown, as is `part.rows_before` for a CSV share until its lines are counted."""

    index: int
    uri: str
    part: Part
    rows_before_file: int | None = 0

    @property
    def numbered(self) -> bool:
        return self.rows_before_file is not None

    def with_rows(self, rows_before: int, rows_before_file: int) -> "Share":
        return replace(self, part=replace(self.part, rows_before=rows_before), rows_before_file=rows_before_file)


def input_files(location: Location) -> list[Location]:
    """The file, or a folder's Parquet files (or, if it has none, its other files, read as CSV)."""
    files = location.files()
    return [f for f in files if f.path.lower().endswith(PARQUET_SUFFIXES)] or files


def plan(sources: list[Source], cores: int) -> list[Share]:
    """The shares of the input's files (opened, and so checked, as `sources`) for `cores`.
    Parquet shares are numbered from the footers; CSV shares wait for `numbered`."""
    sizes = [_bytes(source) for source in sources]
    share_bytes = min(MAX_SHARE_BYTES, max(MIN_SHARE_BYTES, sum(sizes) // (SHARES_PER_CORE * max(1, cores)) + 1))
    shares: list[Share] = []
    rows_before_file = 0
    for source, size in zip(sources, sizes):
        uri = source.location.address
        if source.format == "parquet":
            for groups, first_row in _group_runs(source, share_bytes):
                shares.append(Share(len(shares), uri, Part(groups=groups, rows_before=first_row), rows_before_file))
            rows_before_file += source.total_rows
        else:
            for start in range(source.header_bytes, size, share_bytes) or [source.header_bytes]:
                part = Part(start=start, end=min(start + share_bytes, size))
                shares.append(Share(len(shares), uri, part, rows_before_file=None))
    return shares


def numbered(shares: list[Share], lines: dict[int, int]) -> list[Share]:
    """CSV shares with their rows numbered, from each one's line count (`lines`, by index)."""
    done: list[Share] = []
    earlier_files = in_file = 0
    for number, share in enumerate(shares):
        if number and share.uri != shares[number - 1].uri:
            earlier_files, in_file = earlier_files + in_file, 0
        done.append(share.with_rows(in_file, earlier_files))
        in_file += lines[share.index]
    return done


def count_lines(share: Share) -> tuple[int, int]:
    """A CSV share's index and rows (the lines that start within it; a share starts after the
    header).  Run next to the data: a count of line breaks, without parsing."""
    if share.part.start >= share.part.end:
        return share.index, 0
    with Location.of(share.uri).open() as handle:
        return share.index, lines_starting_within(handle, share.part.start, share.part.end)


def _bytes(source: Source) -> int:
    if source.format == "parquet":
        metadata = source.parquet_metadata
        return sum(metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups))
    return source.location.size()


def _group_runs(source: Source, share_bytes: int):
    """Runs of consecutive row groups of about `share_bytes`, each with the rows before it."""
    metadata = source.parquet_metadata
    run: list[int] = []
    run_bytes = first_row = rows = 0
    for group in range(metadata.num_row_groups):
        if not run:
            first_row = rows
        run.append(group)
        run_bytes += metadata.row_group(group).total_byte_size
        rows += metadata.row_group(group).num_rows
        if run_bytes >= share_bytes:
            yield tuple(run), first_row
            run, run_bytes = [], 0
    if run:
        yield tuple(run), first_row
