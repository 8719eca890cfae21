"""Write synthetic rows in the client's raw format: a file to try score.py or the API with.

    python -m ad_purchase.cli.sample 100000 -o rows.csv [--seed 0] [--with-target]
    python -m ad_purchase.cli.sample 100000 -o rows.parquet

Rows are drawn from the client's published profile (see ad_purchase.training.synthetic) and
written in chunks, so a file of any size takes the same memory.  The file's extension picks the
format: .csv is the client's text as it is; .parquet or .pq holds the plain numeric fields as
doubles and the rest as text, with every missing value as null.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..batch.files import FORMATS
from ..schema import FIELDS, PLAIN_FIELDS, TARGET
from ..training import synthetic

CHUNK_ROWS = 50_000
EXIT_USAGE = 2


def chunks(rows: int, seed: int, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The rows in frames of CHUNK_ROWS at most, each drawn with its own seed."""
    for number, start in enumerate(range(0, rows, CHUNK_ROWS)):
        count = min(CHUNK_ROWS, rows - start)
        yield synthetic.generate(count, seed=seed * 1_000_003 + number)[columns]


def write_csv(path: Path, frames: Iterator[pd.DataFrame]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        for number, frame in enumerate(frames):
            frame.to_csv(out, index=False, header=number == 0)


def parquet_schema(columns: list[str]) -> pa.Schema:
    plain = set(PLAIN_FIELDS)
    return pa.schema([(name, pa.int8() if name == TARGET else pa.float64() if name in plain else pa.string())
                      for name in columns])


def write_parquet(path: Path, frames: Iterator[pd.DataFrame], columns: list[str]) -> None:
    """One row group per chunk; the schema is fixed up front, so a chunk where a column happens
    to be all missing has the same types as the others."""
    schema = parquet_schema(columns)
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for frame in frames:
            arrays = []
            for field in schema:
                column = frame[field.name]
                if pa.types.is_floating(field.type):
                    column = column.astype("float64")                    # "nan" -> NaN -> null
                elif pa.types.is_string(field.type):
                    column = column.where(column != "nan", None)
                arrays.append(pa.array(column, type=field.type, from_pandas=True))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


def main(argv: list[str] | None = None, prog: str = "python -m ad_purchase.cli.sample") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=int, help="how many rows")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help=f"file to write: {', '.join(FORMATS)} (the extension picks the format)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same rows")
    parser.add_argument("--with-target", action="store_true", help="add the y column (for train.py --data)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("rows must be at least 1")
    kind = FORMATS.get(args.output.suffix.lower())
    if kind is None:
        print(f"error: {args.output}: the file name must end in {' or '.join(FORMATS)} (CSV or Parquet)",
              file=sys.stderr)
        return EXIT_USAGE
    columns = [*FIELDS, TARGET] if args.with_target else list(FIELDS)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    frames = chunks(args.rows, args.seed, columns)
    if kind == "parquet":
        write_parquet(args.output, frames, columns)
    else:
        write_csv(args.output, frames)
    print(f"wrote {args.rows:,} rows to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
