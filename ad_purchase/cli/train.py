"""Train the purchase model and write the serving artifacts.

    python train.py --data rows.csv --out objs/ --force              # the client's rows, raw format
    python train.py --synthetic 40000 --seed 0 --out objs/ --force   # rows drawn from the published profile

Stages are printed as they run.  Bad data stops with a message naming rows and values, a
non-zero exit, and the output folder untouched.  A folder that already holds a model (its
metadata.json or any artifact) is replaced, atomically, only with --force.  Each model gets a
version that identifies it (from its artifacts' SHA-256 sums) unless --version names one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..model.artifacts import ARTIFACT_FILES, METADATA_FILE
from ..resources import Profile
from ..training import data as training_data
from ..training import fit, save, synthetic


class Stopwatch:
    """Prints each training stage with the time since the start, so long runs show progress."""

    def __init__(self, printer: Callable[[str], None] = print) -> None:
        self.start = time.perf_counter()
        self.printer = printer

    def __call__(self, message: str) -> None:
        self.printer(f"[{time.perf_counter() - self.start:6.1f}s] {message}")


def parse_args(argv: list[str] | None, prog: str = "train.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="CSV with columns x0..x99 and y in the client's raw format")
    source.add_argument("--synthetic", type=int, metavar="N", help="train on N rows drawn from the data profile")
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic rows and the held-out split")
    parser.add_argument("--out", type=Path, required=True, help="folder for the artifacts (replaced atomically)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even when it already holds a model (metadata.json or an artifact)")
    parser.add_argument("--version", "--model-version", dest="model_version", metavar="VERSION",
                        help="version recorded in metadata.json (default: from the artifacts' SHA-256 sums)")
    parser.add_argument("--no-report", action="store_true", help="skip the charts and REPORT.md")
    return parser.parse_args(argv)


def model_files_in(folder: Path) -> list[str]:
    """The names of a model's files (metadata.json and the artifacts) that `folder` holds."""
    return [name for name in (METADATA_FILE, *ARTIFACT_FILES) if (folder / name).exists()] if folder.is_dir() else []


def _report_writer(say: Callable[[str], None], outcome, profile: Profile) -> Callable[[Path, dict], None] | None:
    """What writes the model report into the artifact folder, or None (with a note) without matplotlib."""
    try:
        from ..training import report
    except ImportError as exc:      # matplotlib is a development requirement, the report optional
        say(f"note: no model report ({exc.name} is not installed; pip install -r requirements-dev.txt)")
        return None

    def write(folder: Path, metadata: dict) -> None:
        say("writing the model report")
        report.write_report(folder, outcome, metadata, profile)
    return write


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    args = parse_args(argv, prog)
    held = model_files_in(args.out)
    if held and not args.force:
        print(f"error: {args.out} already holds a model ({', '.join(held)}); pass --force to replace it",
              file=sys.stderr)
        return 2
    say = Stopwatch()
    try:
        if args.synthetic is not None:
            if args.synthetic < training_data.MIN_ROWS:
                raise training_data.TrainingDataError(f"--synthetic needs at least {training_data.MIN_ROWS} rows")
            say(f"generating {args.synthetic:,} synthetic rows (seed {args.seed})")
            with tempfile.TemporaryDirectory() as scratch:
                csv_path = Path(scratch) / "synthetic.csv"
                synthetic.generate(args.synthetic, seed=args.seed).to_csv(csv_path, index=False)
                raw = training_data.read_raw_csv(csv_path)
            source = f"synthetic:{args.synthetic}:seed={args.seed}"
        else:
            say(f"reading {args.data}")
            raw = training_data.read_raw_csv(args.data)
            source = str(args.data)
        say(f"checking and parsing {len(raw):,} rows")
        data = training_data.parse_raw(raw)
        training_data.check_size(data)
    except training_data.TrainingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"nothing was written; {args.out} is unchanged", file=sys.stderr)
        return 2

    outcome = fit.train(data, seed=args.seed, progress=say)
    metadata = save.build_metadata(outcome, data, source, args.model_version)
    profile = Profile.load()
    shared = [f for f in outcome.model.features if f in profile.coefficients]
    say(f"selected {len(shared)} of the {len(profile.coefficients)} published features; "
        f"cutoff {metadata['cutoff']:.4f}")
    say(f"writing artifacts to {args.out}")
    metadata = save.write_artifacts(outcome, metadata, args.out,
                                    extra=None if args.no_report else _report_writer(say, outcome, profile))
    say(f"done: model version {metadata['model_version']}, held-out AUC {outcome.held_out_auc:.4f}, "
        f"{metadata['rows']:,} rows")
    return 0
