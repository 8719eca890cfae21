"""Write synthetic rows in the client's raw format: a CSV to try score.py or the API with.

    python -m ad_purchase.cli.sample 100000 -o rows.csv [--seed 0] [--with-target]

Rows are drawn from the client's published profile (see ad_purchase.training.synthetic) and
written in chunks, so a file of any size takes the same memory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..schema import FIELDS, TARGET
from ..training import synthetic

CHUNK_ROWS = 50_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ad_purchase.cli.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=int, help="how many rows")
    parser.add_argument("-o", "--output", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same rows")
    parser.add_argument("--with-target", action="store_true", help="add the y column (for train.py --data)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("rows must be at least 1")
    columns = [*FIELDS, TARGET] if args.with_target else list(FIELDS)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="", encoding="utf-8") as out:
        for number, start in enumerate(range(0, args.rows, CHUNK_ROWS)):
            count = min(CHUNK_ROWS, args.rows - start)
            frame = synthetic.generate(count, seed=args.seed * 1_000_003 + number)
            frame[columns].to_csv(out, index=False, header=number == 0)
    print(f"wrote {args.rows:,} rows to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
