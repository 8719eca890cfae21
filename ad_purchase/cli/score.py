"""Score a CSV file of any size with the served model: the service's pipeline, offline.

    python score.py rows.csv -o scores.csv [--model-dir objs] [--chunk-rows 10000] [--id-column NAME]

The file is read in chunks of --chunk-rows rows, so memory stays bounded however large it is.
Each chunk is validated with the same rules as a request (the CSV codec), scored by the same model,
and appended to the output, which carries an id per row: the --id-column's value, or else the
row's 1-based data-row number in a column named `row`.

On the first invalid row the run stops with a message naming the file line, field and value,
and exits with status 2.  Output goes to a temporary file beside the target that is renamed
only when every row has been scored, so a failed run never leaves a partial file behind.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from .. import HOME
from ..codecs.csv_codec import csv_reader, decode_rows, read_header, read_rows, result_header, write_scores
from ..model import ArtifactError, load_model
from ..schema import InputError

EXIT_INVALID_INPUT = 2
EXIT_MODEL = 1
EXIT_IO = 1
ROW_ID_COLUMN = "row"
SHOWN_ERRORS = 10


class Stopped(Exception):
    """The input file cannot be scored; the message says where and why."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="score.py", description="Score a CSV of raw rows (header naming x0..x99) with the served model.")
    parser.add_argument("input", type=Path, help="CSV file with a header row naming x0..x99")
    parser.add_argument("-o", "--output", type=Path, required=True, help="CSV file to write the scores to")
    parser.add_argument("--model-dir", type=Path, default=HOME / "objs", help="model folder (default: objs)")
    parser.add_argument("--chunk-rows", type=int, default=10_000,
                        help="rows read, validated and scored at a time (default: 10000)")
    parser.add_argument("--id-column", metavar="NAME",
                        help="input column copied to the output as each row's id "
                             f"(default: the 1-based data-row number, in a column named '{ROW_ID_COLUMN}')")
    parser.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    args = parser.parse_args(argv)
    if args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    return args


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def count_lines(path: Path, block: int = 1 << 22) -> int:
    """Lines in the file (a last line without a newline counts): the progress bar's total."""
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while data := handle.read(block):
            lines += data.count(b"\n")
            last = data[-1:]
    return lines + (last != b"\n")


def first_bad_utf8_line(path: Path) -> int:
    """The 1-based number of the first line that is not valid UTF-8 (0 if none is)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def describe(exc: InputError, source: Path, header_lines: int) -> str:
    """An InputError from the CSV codec as a message for a person reading a terminal."""
    if not exc.errors:
        return f"{source}: {exc.detail}"
    lines = []
    for error in exc.errors[:SHOWN_ERRORS]:
        row = error["row"]
        lines.append(f"{source}: line {row + header_lines} (data row {row}), field {error['field']}, "
                     f"value {error['value']!r}: {error['message']}")
    more = exc.total_errors - len(lines)
    if more > 0:
        lines.append(f"... and {more} more invalid value(s) in the same chunk")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    source, target = args.input, args.output
    if not source.is_file():
        raise Stopped(f"{source}: no such file")
    try:
        model = load_model(args.model_dir)
    except ArtifactError as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return EXIT_MODEL

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.chmod(temporary, 0o666 & ~current_umask())     # mkstemp's 0600 would outlive the rename
    started = time.perf_counter()
    rows_done = 0
    header_lines = 1
    try:
        with open(handle, "w", encoding="utf-8", newline="") as sink, \
                open(source, encoding="utf-8-sig", newline="") as stream, \
                tqdm(total=max(count_lines(source) - 1, 0), unit=" rows", unit_scale=True, file=sys.stderr,
                     mininterval=0.5, disable=args.no_progress, desc="scoring") as bar:
            reader = csv_reader(stream)
            try:
                header = read_header(reader, args.id_column)
                header_lines = header.lines
                id_name = args.id_column or ROW_ID_COLUMN
                csv.writer(sink, lineterminator="\n").writerow(result_header(model.plan.names, id_name))
                while True:
                    rows, numbers = read_rows(reader, header, args.chunk_rows)
                    if not rows:
                        break
                    columns = decode_rows(rows, numbers, header, model.numeric_inputs)
                    ids = numbers if header.id_position is None else [r[header.id_position] for r in rows]
                    del rows
                    write_scores(sink, model.score(columns), ids, header=False)
                    rows_done += columns.rows
                    bar.update(columns.rows)
            except UnicodeDecodeError:
                raise Stopped(f"{source}: line {first_bad_utf8_line(source)} is not valid UTF-8") from None
            except InputError as exc:
                raise Stopped(describe(exc, source, header_lines)) from None
            if not rows_done:
                raise Stopped(f"{source}: the file has a header row but no data rows")
            bar.total = bar.n
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    elapsed = time.perf_counter() - started
    print(f"scored {rows_done:,} rows in {elapsed:.1f} s ({rows_done / elapsed:,.0f} rows/s); "
          f"wrote {target}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except Stopped as exc:
        print(f"error: {exc}\nerror: stopped; no output was written", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_IO
