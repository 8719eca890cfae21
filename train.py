#!/usr/bin/env python3
"""Train the purchase model and write the serving artifacts.

    python train.py --data rows.csv --out objs/              # the client's rows, raw format
    python train.py --synthetic 40000 --seed 0 --out objs/   # rows drawn from the published profile

Stages are printed as they run.  Bad data stops with a message naming rows and values, a
non-zero exit, and the output folder untouched.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import report
import synthetic
import training
from schema import Profile

DEFAULT_VERSION = "1.0.0"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="CSV with columns x0..x99 and y in the client's raw format")
    source.add_argument("--synthetic", type=int, metavar="N", help="train on N rows drawn from the data profile")
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic rows and the held-out split")
    parser.add_argument("--out", type=Path, required=True, help="folder for the artifacts (replaced atomically)")
    parser.add_argument("--model-version", default=DEFAULT_VERSION, help="version recorded in metadata.json")
    parser.add_argument("--no-report", action="store_true", help="skip the charts and REPORT.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = training.Stopwatch()
    try:
        if args.synthetic is not None:
            if args.synthetic < 100:
                raise training.TrainingDataError("--synthetic needs at least 100 rows")
            say(f"generating {args.synthetic:,} synthetic rows (seed {args.seed})")
            with tempfile.TemporaryDirectory() as scratch:
                csv_path = Path(scratch) / "synthetic.csv"
                synthetic.generate(args.synthetic, seed=args.seed).to_csv(csv_path, index=False)
                raw = training.read_raw_csv(csv_path)
            source = f"synthetic:{args.synthetic}:seed={args.seed}"
        else:
            say(f"reading {args.data}")
            raw = training.read_raw_csv(args.data)
            source = str(args.data)
        say(f"checking and parsing {len(raw):,} rows")
        data = training.parse_raw(raw)
        training.check_size(data)
    except training.TrainingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"nothing was written; {args.out} is unchanged", file=sys.stderr)
        return 2

    outcome = training.train(data, seed=args.seed, progress=say)
    metadata = training.build_metadata(outcome, data, source, args.model_version)
    profile = Profile.load()
    shared = [f for f in outcome.model.features if f in profile.coefficients]
    say(f"selected {len(shared)} of the {len(profile.coefficients)} published features; "
        f"cutoff {metadata['cutoff']:.4f}")

    def add_report(folder: Path) -> None:
        if not args.no_report:
            say("writing the model report")
            report.write_report(folder, outcome, metadata, profile)

    say(f"writing artifacts to {args.out}")
    training.write_artifacts(outcome, metadata, args.out, extra=add_report)
    say(f"done: held-out AUC {outcome.held_out_auc:.4f}, {metadata['rows']:,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
