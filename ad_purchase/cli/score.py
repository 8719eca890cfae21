"""Score a file of any size with the served model: the service's pipeline, offline.

    python score.py rows.csv -o scores.csv [--model-dir objs] [--id-column NAME] [--rejects bad.csv]
    python score.py rows.parquet -o scores.parquet
    python score.py rows.csv -o scores/ --engine spark [--master local[*]]

CSV or Parquet in, CSV or Parquet out, by the files' extensions.  Every cell is read with the
same rules as a request and scored by the same model core; the output carries an id per row
(the --id-column's value, or else the row's 1-based data-row number in a column named `row`)
followed by the columns of the API's CSV answer.

A bad value stops the run (exit 2) with the data row, field and value, and nothing is written:
output goes to a temporary file beside the target that is renamed only at the end.  With
--rejects PATH, rows with bad values are written there instead (one line per problem: the id,
field, value and why) and every other row is scored.  With --engine spark the same scoring
core runs in Spark's tasks, each scoring a share of the input into a Parquet part file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import HOME
from ..batch.files import FORMATS
from ..batch.local import Stopped, score_file
from ..model import ArtifactError, load_model

EXIT_INVALID_INPUT = 2
EXIT_MODEL = 1
EXIT_IO = 1


def parse_args(argv: list[str] | None, prog: str = "score.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="CSV or Parquet file with the fields x0..x99 (with --engine spark: a file "
                                      "or folder, a path every executor sees or a URI: hdfs://, s3://, gs://, abfs://)")
    parser.add_argument("-o", "--output", required=True, help="CSV or Parquet file to write the scores to "
                                                              "(with --engine spark: a folder of Parquet parts)")
    parser.add_argument("--model-dir", type=Path, default=HOME / "objs", help="model folder (default: objs)")
    parser.add_argument("--id-column", metavar="NAME",
                        help="input column copied to the output as each row's id "
                             "(default: the 1-based data-row number, in a column named 'row')")
    parser.add_argument("--rejects", metavar="PATH",
                        help="write rows with bad values here (one line per problem) and score the rest")
    parser.add_argument("--chunk-rows", type=int, default=10_000,
                        help="rows read, validated and scored at a time at most (default: 10000)")
    parser.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    parser.add_argument("--engine", choices=("local", "spark"), default="local",
                        help="local: this process (default); spark: a Spark job (pip install pyspark)")
    parser.add_argument("--master", default="local[*]",
                        help="with --engine spark: the Spark master (default: local[*]; under spark-submit, "
                             "the one spark-submit was given)")
    args = parser.parse_args(argv)
    if args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    if args.engine == "local":
        for name, path in (("input", args.input), ("-o", args.output), ("--rejects", args.rejects)):
            if path is not None and Path(path).suffix.lower() not in FORMATS:
                parser.error(f"{name} {path}: the file name must end in {' or '.join(FORMATS)}")
    return args


def count_lines(path: Path, block: int = 1 << 22) -> int:
    """Lines in a file (a last line without a newline counts): the progress bar's total for a CSV."""
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while data := handle.read(block):
            lines += data.count(b"\n")
            last = data[-1:]
    return lines + (last != b"\n")


def rows_in(path: Path) -> int | None:
    """The progress bar's total: a CSV's lines less the header, or a Parquet file's row count."""
    if FORMATS[path.suffix.lower()] == "csv":
        return max(count_lines(path) - 1, 0)
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError):
        return None                                # the scorer says what is wrong with the file


def run_local(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    source = Path(args.input)
    if not source.is_file():
        raise Stopped(f"{source}: no such file")
    try:
        model = load_model(args.model_dir)
    except ArtifactError as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return EXIT_MODEL
    total = None if args.no_progress else rows_in(source)
    with tqdm(total=total, unit=" rows", unit_scale=True, file=sys.stderr, mininterval=0.5,
              disable=args.no_progress, desc="scoring") as bar:
        outcome = score_file(source, Path(args.output), model, id_column=args.id_column,
                             rejects_path=Path(args.rejects) if args.rejects else None,
                             chunk_rows=args.chunk_rows, progress=bar.update)
        bar.total = bar.n
    rate = outcome.rows_scored / outcome.seconds if outcome.seconds else 0.0
    aside = (f"; set aside {outcome.rows_set_aside:,} row(s) with {outcome.problems:,} problem(s) in {args.rejects}"
             if args.rejects else "")
    print(f"scored {outcome.rows_scored:,} rows in {outcome.seconds:.1f} s ({rate:,.0f} rows/s); wrote {args.output}"
          f"{aside}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str = "score.py") -> int:
    args = parse_args(argv, prog)
    try:
        if args.engine == "spark":
            from ..batch import spark
            return spark.run(args)
        return run_local(args)
    except Stopped as exc:
        print(f"error: {exc}\nerror: stopped; no output was written", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_IO
